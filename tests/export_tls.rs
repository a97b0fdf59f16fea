//! Export over DICOM TLS (issue 15 item 5) to a real PACS: Debian's Orthanc with
//! `DicomTlsEnabled`, which requires a client certificate signed by the test CA, so the node
//! presents its own `[node.tls]` certificate. A destination trusting another CA fails its
//! exports with the reason, and the node carries on.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

/// A dimse destination to Orthanc's (TLS-only) DICOM port, trusting `ca`.
fn tls_destination(name: &str, orthanc: &Orthanc, ca: &Path) -> String {
    format!(
        "{}tls = {{ ca_file = \"{}\" }}\n",
        dimse_destination(name, "ORTHANC", orthanc.dicom_port),
        ca.display()
    )
}

/// `vcnode destinations check` for `node`: (success, stdout).
fn check_destinations(node: &Node) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(["destinations", "check", "--config"])
        .arg(&node.config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_results_reach_orthanc_over_dicom_tls_and_a_destination_with_another_ca_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let pacs_cert = make_leaf(&pki.dir, "ca", "pacs", NODE_CERT_EXTENSIONS);
    let orthanc = Orthanc::start_with_dicom_tls(&dir.path().join("pacs"), &pacs_cert, &pki.ca);

    let config = format!(
        "{}{}{}[[routes]]\nfrom_ae = \"MODALITY\"\nto = [\"pacs\", \"wrongca\"]\n",
        node_tls_section(&pki),
        tls_destination("pacs", &orthanc, &pki.ca),
        tls_destination("wrongca", &orthanc, &pki.other_ca),
    );
    let mut node = Node::start_processing(dir.path(), &config, "");
    let le: Vec<_> = phantom_pairs(dir.path(), 701, 416, 320)
        .into_iter()
        .take(1)
        .map(|(le, _)| le)
        .collect();
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &le)), 1);

    // The derived instance arrives in Orthanc over DICOM TLS.
    let done = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE destination = 'pacs' AND state = 'done'",
        1,
        LIMIT,
    )
    .await;
    assert_eq!(done, 1, "{}\n{}", node.jobs_cli(), node.log_tail(30));
    let ours = derived_uids(&node).await;
    assert_eq!(ours.len(), 1);
    assert_eq!(sorted_uids(&orthanc), ours, "received by Orthanc over DICOM TLS");

    // The destination that trusts another CA refuses Orthanc's certificate: its export fails
    // with the reason recorded, and is retried (a CA can be fixed) rather than sent in clear.
    let refused = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE destination = 'wrongca' AND last_error IS NOT NULL",
        1,
        LIMIT,
    )
    .await;
    assert_eq!(refused, 1, "{}", node.log_tail(30));
    let db = DbReader::open(&node.data_dir).await;
    let errors = db
        .pairs("SELECT state, last_error FROM exports WHERE destination = 'wrongca'")
        .await;
    db.close().await;
    let (state, error) = &errors[0];
    assert_ne!(state, "done");
    assert!(
        error.contains("could not associate")
            && error.contains("over DICOM TLS")
            && error.contains("UnknownIssuer"),
        "a reason that names the certificate problem: {error}"
    );

    // `vcnode destinations check` echoes over DICOM TLS, and says why the other fails.
    let (ok, report) = check_destinations(&node);
    assert!(!ok, "one destination fails the check: {report}");
    assert!(
        report.contains("pacs: ok") && report.contains("over DICOM TLS"),
        "{report}"
    );
    assert!(
        report.contains("wrongca: FAILED") && report.contains("UnknownIssuer"),
        "{report}"
    );

    // The node keeps running and receiving.
    assert!(node.exited().is_none(), "{}", node.log_tail(30));
    let echo = echoscu(&node, "MODALITY", "VCNODE");
    assert!(echo.status.success(), "{}", text(&echo));
    let log = node.plain_log();
    let key = std::fs::read_to_string(&pki.server.1).unwrap();
    assert!(
        !log.contains(key.lines().nth(1).unwrap()),
        "no key material in the log"
    );
}
