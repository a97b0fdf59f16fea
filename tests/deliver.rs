//! Delivery of the derived series to a real PACS: Debian's Orthanc with its DICOMweb plugin,
//! started by the tests, checked through Orthanc's REST API.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Two LE images of one phantom patient.
fn le_files(dir: &Path, seed: u64) -> Vec<PathBuf> {
    phantom_pairs(dir, seed, 416, 320)
        .into_iter()
        .take(2)
        .map(|(le, _)| le)
        .collect()
}

fn dimse(name: &str, ae: &str, o: &Orthanc) -> String {
    dimse_destination(name, ae, o.dicom_port)
}

fn web(name: &str, o: &Orthanc, root: &str) -> String {
    format!(
        "[[destinations]]\nname = \"{name}\"\nkind = \"dicomweb\"\nurl = \"http://127.0.0.1:{}/{root}\"\n",
        o.http_port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_instances_reach_orthanc_by_c_store_and_by_stow_rs_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let pacs = Orthanc::start(&dir.path().join("pacs"));
    let webpacs = Orthanc::start(&dir.path().join("web"));
    let routing = format!(
        "{}{}[[routes]]\nfrom_ae = \"MODALITY\"\nto = [\"pacs\", \"web\"]\n",
        dimse("pacs", "ORTHANC", &pacs),
        web("web", &webpacs, "dicom-web")
    );
    let node = Node::start_processing(dir.path(), &routing, "");
    let files = le_files(dir.path(), 501);
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &files)), 2);
    let done = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE state = 'done'",
        4,
        LIMIT,
    )
    .await;
    assert_eq!(done, 4, "exports not done:\n{}\n{}", node.jobs_cli(), node.log());

    let ours = derived_uids(&node).await;
    assert_eq!(ours.len(), 2);
    assert_eq!(sorted_uids(&pacs), ours, "C-STORE destination");
    assert_eq!(sorted_uids(&webpacs), ours, "STOW-RS destination");
    for o in [&pacs, &webpacs] {
        for (id, _) in o.instance_uids() {
            let png = o.get(&format!("/instances/{id}/preview")).expect("a preview");
            assert_eq!(&png[1..4], b"PNG", "Orthanc must render the derived instance");
        }
    }
    // `vcnode destinations check` answers for both.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(["destinations", "check", "--config"])
        .arg(&node.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("pacs: ok") && text.contains("web: ok"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_pending_during_an_outage_and_a_restart_arrive_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut pacs = Orthanc::start(&dir.path().join("pacs"));
    // Quick retries keep the test short; the mechanism is the one with production delays.
    let routing = format!(
        "{}[[routes]]\nfrom_ae = \"*\"\nto = [\"pacs\"]\n[export]\nretry_base_ms = 200\nmax_attempts = 50\nmax_age_s = 3600\nworkers = 2\nbatch = 16\ntimeout_s = 10\n",
        dimse("pacs", "ORTHANC", &pacs)
    );
    pacs.stop();
    let mut node = Node::start_processing(dir.path(), &routing, "");
    let files = le_files(dir.path(), 502);
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &files)), 2);
    // The results are made, and their exports fail while the PACS is down.
    assert_eq!(
        wait_count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'done'", 2, LIMIT).await,
        2
    );
    let failing = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE attempts >= 1 AND state != 'done'",
        2,
        LIMIT,
    )
    .await;
    assert_eq!(failing, 2, "{}", node.jobs_cli());
    // vcnode restarts meanwhile (SIGKILL); then the PACS comes back.
    node.kill();
    let node = Node::start_with(dir.path(), node.config.clone());
    pacs.restart();
    assert_eq!(
        wait_count(
            &node,
            "SELECT COUNT(*) FROM exports WHERE state = 'done'",
            2,
            LIMIT
        )
        .await,
        2,
        "{}",
        node.jobs_cli()
    );
    assert_eq!(pacs.instance_uids().len(), 2);
    assert_eq!(sorted_uids(&pacs), derived_uids(&node).await);
    // Nothing is sent again later: the rows are done and stay done.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&node, "SELECT COUNT(*) FROM exports WHERE state != 'done'").await,
        0
    );
    assert_eq!(pacs.instance_uids().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_destination_ends_dead_with_its_reason_and_others_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let pacs = Orthanc::start(&dir.path().join("pacs"));
    let routing = format!(
        "{}{}{}[[routes]]\nfrom_ae = \"MODALITY\"\nto = [\"wrong-ae\", \"wrong-url\", \"good\"]\n",
        dimse("wrong-ae", "NOTORTHANC", &pacs),
        web("wrong-url", &pacs, "no-such-root"),
        dimse("good", "ORTHANC", &pacs)
    );
    let node = Node::start_processing(dir.path(), &routing, "");
    let files = le_files(dir.path(), 503);
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &files)), 2);
    assert_eq!(
        wait_count(
            &node,
            "SELECT COUNT(*) FROM exports WHERE state = 'dead'",
            4,
            LIMIT
        )
        .await,
        4,
        "{}",
        node.jobs_cli()
    );
    assert_eq!(
        wait_count(
            &node,
            "SELECT COUNT(*) FROM exports WHERE state = 'done'",
            2,
            LIMIT
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &node,
            "SELECT COUNT(*) FROM exports WHERE state = 'done' AND destination = 'good'"
        )
        .await,
        2
    );
    let listing = node.jobs_cli();
    let dead_ae: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains(" dead ") && l.contains("wrong-ae"))
        .collect();
    assert_eq!(dead_ae.len(), 2, "{listing}");
    assert!(
        dead_ae[0].to_lowercase().contains("called ae title"),
        "the reason should name the rejection: {listing}"
    );
    let dead_url: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains(" dead ") && l.contains("wrong-url"))
        .collect();
    assert_eq!(dead_url.len(), 2, "{listing}");
    assert!(dead_url[0].contains("404"), "{listing}");
    assert_eq!(pacs.instance_uids().len(), 2);
}
