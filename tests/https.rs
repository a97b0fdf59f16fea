//! HTTPS on the HTTP port (issue 15 item 5, `node.http_tls`): certificates made by openssl,
//! QIDO-RS by reqwest, Python's requests and dicomweb-client trusting the node's CA; clients
//! that do not trust it, and plain HTTP to the port, fail while the node keeps serving.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use vcnode::fixture::MammogramSpec;

/// reqwest (rustls) trusting only `ca`.
fn client_trusting(ca: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GET /dicomweb/studies; the study UIDs and Retrieve URLs found.
async fn studies(client: &reqwest::Client, node: &Node) -> reqwest::Result<Vec<(String, String)>> {
    let rsp = client
        .get(format!("{}/dicomweb/studies", node.base_url()))
        .header("Accept", "application/dicom+json")
        .send()
        .await?
        .error_for_status()?;
    let found: Vec<serde_json::Value> = rsp.json().await?;
    Ok(found
        .iter()
        .map(|s| {
            let v = |tag: &str| s[tag]["Value"][0].as_str().unwrap_or_default().to_string();
            (v("0020000D"), v("00081190"))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicomweb_over_https_with_the_node_certificate_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let mut node = Node::start(
        dir.path(),
        &format!("http_tls = true\n{}", node_tls_section(&pki)),
    );
    assert_eq!(node.http_scheme, "https", "the DICOMweb line says https");
    let stdout = std::fs::read_to_string(dir.path().join("node.stdout")).unwrap();
    assert!(
        stdout.contains(&format!("vcnode DICOMweb on https://{}/dicomweb", node.http)),
        "{stdout}"
    );

    // An image in by C-STORE, found by QIDO-RS over HTTPS.
    let files: Vec<PathBuf> = write_fixtures(&dir.path().join("in"), &[MammogramSpec::low_energy(601)]);
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &files)), 1);
    let study = study_uid(&files[0]);

    let trusting = client_trusting(&pki.ca);
    let found = studies(&trusting, &node).await.expect("QIDO-RS over HTTPS");
    let (_, retrieve) = found
        .iter()
        .find(|(uid, _)| *uid == study)
        .unwrap_or_else(|| panic!("{study} not in {found:?}"));
    assert_eq!(
        retrieve,
        &format!("https://{}/dicomweb/studies/{study}", node.http),
        "URLs the server writes say https"
    );

    // Python's requests and dicomweb-client, trusting the CA (and refusing another).
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/https/qido_https.py");
    let out = Command::new(pytools_python())
        .arg(script)
        .arg(format!("{}/dicomweb", node.base_url()))
        .args([&pki.ca, &pki.other_ca])
        .arg(&study)
        .output()
        .unwrap();
    assert!(
        out.status.success() && text(&out).contains("ok"),
        "{}",
        text(&out)
    );

    // A client that trusts another CA refuses the certificate.
    let untrusting = client_trusting(&pki.other_ca);
    let err = studies(&untrusting, &node)
        .await
        .expect_err("a client trusting another CA must refuse the node");
    assert!(err.is_connect(), "{err:?}");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "refused for its certificate: {err:?}"
    );

    // Plain HTTP to the HTTPS port gets no HTTP answer: the handshake fails and the
    // connection ends.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(format!("http://{}/dicomweb/studies", node.http))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP to the HTTPS port: {plain:?}");
    let (status, body) = http_request("GET", &format!("http://{}/healthz", node.http));
    assert_ne!(status, "200", "curl over plain HTTP: {body}");

    // The node is still there and still serves HTTPS.
    assert!(node.exited().is_none(), "{}", node.log_tail(20));
    let again = studies(&trusting, &node).await.expect("HTTPS after the failures");
    assert!(again.iter().any(|(uid, _)| *uid == study));
    let rsp = trusting
        .get(format!("{}/healthz", node.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(
        node.plain_log().contains("HTTPS handshake failed"),
        "{}",
        node.log_tail(20)
    );
    // The key never appears in the node's log.
    let key = std::fs::read_to_string(&pki.server.1).unwrap();
    assert!(!node.log().contains(key.lines().nth(1).unwrap()));

    // SIGTERM stops the HTTPS server with the node, even with a connection that never
    // handshakes and an idle keep-alive one open.
    let _silent = std::net::TcpStream::connect(node.http).unwrap();
    let _idle = studies(&trusting, &node).await.unwrap();
    node.terminate();
    let status = node
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running after SIGTERM: {}", node.log_tail(20)));
    assert!(status.success(), "{status:?}: {}", node.log_tail(20));
    assert!(
        node.plain_log().contains("vcnode stopped"),
        "{}",
        node.log_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_the_node_certificate_stops_start_up_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http_tls = true\n");
    let out = Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = text(&out);
    assert!(
        text.contains("node.http_tls") && text.contains("[node.tls]"),
        "{text}"
    );
}
