//! On-demand processing of a study pulled from a PACS (`vcnode pull`, `POST /api/process`):
//! a real Orthanc with its DICOMweb plugin holds a CESM study (LE and recombined images); the
//! node finds it by QIDO-RS, retrieves the LE images by WADO-RS, processes them and sends the
//! derived series where the source's route says, here back to Orthanc by C-STORE.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;
use vcnode::fixture::MammogramSpec;

const LIMIT: Duration = Duration::from_secs(120);

/// `vcnode pull` against the node at `node_url`.
fn pull(config: &Path, node_url: &str, source: &str, study: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(["pull", "--config"])
        .arg(config)
        .args(["--node", node_url, "--source", source, "--study", study])
        .env("VCNODE_LOG", "warn")
        .output()
        .unwrap()
}

/// The HTTP status and body of `POST /api/process`.
fn post_process(node: &Node, body: &str) -> (String, String) {
    http_post(
        &format!("http://{}/api/process", node.http),
        "application/json",
        body.as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_pulled_from_orthanc_is_processed_and_routed_once() {
    let dir = tempfile::tempdir().unwrap();
    let pacs = Orthanc::start_counting_receptions(&dir.path().join("pacs"));
    // Two views of one CESM study: LE and recombined image each.
    let pairs: Vec<(PathBuf, PathBuf)> = phantom_pairs(dir.path(), 901, 416, 320)
        .into_iter()
        .take(2)
        .collect();
    let le: Vec<PathBuf> = pairs.iter().map(|(le, _)| le.clone()).collect();
    let all: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|(le, rc)| [le.clone(), rc.clone()])
        .collect();
    pacs.upload(&all);
    let study = study_uid(&le[0]);
    let mut le_uids: Vec<String> = le.iter().map(|f| sop_instance_uid(f)).collect();
    le_uids.sort();

    let config = format!(
        "[[sources]]\nname = \"PACS\"\nurl = \"http://127.0.0.1:{}/dicom-web\"\n\
         [[destinations]]\nname = \"pacs\"\nkind = \"dimse\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[routes]]\nfrom_ae = \"PACS\"\nto = [\"pacs\"]\n",
        pacs.http_port, pacs.dicom_port
    );
    let node = Node::start_processing(dir.path(), &config, "");
    let node_url = format!("http://{}", node.http);

    let out = pull(&node.config, &node_url, "PACS", &study);
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", node.log());
    assert!(
        said.contains("4 instance(s) found, 2 selected, 0 already present, 2 retrieved, 2 stored, 0 failed; 2 job(s) queued"),
        "{said}"
    );
    // Only the LE images came over, recorded as sent by the source (so routed by its name).
    let db = DbReader::open(&node.data_dir).await;
    let mut pulled = db
        .strings("SELECT sop_instance_uid FROM instances WHERE origin = 'received' AND calling_ae = 'PACS'")
        .await;
    pulled.sort();
    assert_eq!(pulled, le_uids);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM instances WHERE origin = 'received'")
            .await,
        2
    );
    // Counted as pulled, not as sent by DIMSE (tests/health.rs checks /metrics in full).
    let metrics = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "10", &format!("{node_url}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("vcnode_instances_received_total{protocol=\"pull\"} 2\n"),
        "{metrics}"
    );

    // Processed, and the derived series reaches the destination routed from the source.
    let done = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE state = 'done'",
        2,
        LIMIT,
    )
    .await;
    assert_eq!(done, 2, "exports not done:\n{}\n{}", node.jobs_cli(), node.log());
    let derived = derived_uids(&node).await;
    assert_eq!(derived.len(), 2);
    let at_pacs = sorted_uids(&pacs);
    for uid in &derived {
        assert!(
            at_pacs.contains(uid),
            "derived {uid} not at the destination: {at_pacs:?}"
        );
    }
    assert_eq!(at_pacs.len(), 6, "4 acquired + 2 derived: {at_pacs:?}");
    let receptions = pacs.receptions().len();

    // Pulling again retrieves nothing, queues nothing, sends nothing: the derived instances now
    // in the study are not mammograms and the LE images are held already.
    let out = pull(&node.config, &node_url, "PACS", &study);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("6 instance(s) found, 2 selected, 2 already present, 0 retrieved, 0 stored, 0 failed; 0 job(s) queued"),
        "{said}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM jobs").await, 2);
    assert_eq!(derived_uids(&node).await, derived);
    assert_eq!(db.count("SELECT COUNT(*) FROM exports").await, 2);
    assert_eq!(sorted_uids(&pacs).len(), 6);
    assert_eq!(
        pacs.receptions().len(),
        receptions,
        "nothing sent to the destination again"
    );
    db.close().await;

    // Failures say what is wrong and exit non-zero.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let unknown_study = "1.2.826.0.1.3680043.10.999.1";
    for (url, source, study, says) in [
        (&node_url, "NOPE", study.as_str(), "no source named \"NOPE\""),
        (
            &node_url,
            "PACS",
            unknown_study,
            "study 1.2.826.0.1.3680043.10.999.1 not found on source \"PACS\"",
        ),
        (&node_url, "PACS", "not-a-uid", "not a valid Study Instance UID"),
        (&nobody, "PACS", study.as_str(), "vcnode is not running at"),
    ] {
        let out = pull(&node.config, url, source, study);
        let said = text(&out);
        assert!(
            !out.status.success() && said.contains(says),
            "{source} {study}: {said}"
        );
    }

    // The HTTP API's statuses.
    let (status, body) = post_process(
        &node,
        &format!("{{\"source\": \"PACS\", \"study\": \"{study}\"}}"),
    );
    assert_eq!(status, "200", "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["already_present"], 2, "{body}");
    assert_eq!(report["failed"], serde_json::json!([]), "{body}");
    let (status, body) = post_process(&node, "{\"source\": \"NOPE\", \"study\": \"1.2.3\"}");
    assert_eq!(status, "404", "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, _) = post_process(
        &node,
        "{\"source\": \"PACS\", \"study\": \"1.2.3\", \"extra\": 1}",
    );
    assert_eq!(status, "400");
    let (status, _) = post_process(&node, "not json");
    assert_eq!(status, "400");
}

/// An instance the node refuses is reported with its reason while the rest of the study is
/// stored; a source's credentials are sent; a source that refuses or does not answer is a 502
/// naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_instance_failures_credentials_and_refusing_or_unreachable_sources() {
    let dir = tempfile::tempdir().unwrap();
    // Its DICOMweb API wants credentials: a source's are sent, a source without gets 403.
    let pacs = Orthanc::start_requiring_basic_auth(&dir.path().join("pacs"), "vcnode", "s3cret");
    // One study: a small LE image and one of 2 MiB, over this node's 1 MiB limit.
    let small = MammogramSpec::low_energy(911);
    let large = MammogramSpec {
        rows: 1024,
        columns: 1024,
        ..MammogramSpec::low_energy(912)
    };
    let files = write_fixtures(&dir.path().join("fixtures"), &[small, large]);
    pacs.upload(&files);
    let study = study_uid(&files[0]);
    assert_eq!(study, study_uid(&files[1]));
    let config = format!(
        "[[sources]]\nname = \"PACS\"\nurl = \"http://127.0.0.1:{port}/dicom-web\"\n\
         auth = {{ basic = \"vcnode:s3cret\" }}\nallow_insecure_auth = true\n\
         [[sources]]\nname = \"NOAUTH\"\nurl = \"http://127.0.0.1:{port}/dicom-web\"\n\
         [[sources]]\nname = \"GONE\"\nurl = \"http://127.0.0.1:{gone}/dicom-web\"\n\
         [storage]\nmax_instance_mb = 1\n",
        port = pacs.http_port,
        gone = free_port()
    );
    let node = Node::start(dir.path(), &config);
    let node_url = format!("http://{}", node.http);

    let out = pull(&node.config, &node_url, "PACS", &study);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("2 selected, 0 already present, 1 retrieved, 1 stored, 1 failed; 1 job(s) queued"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "FAILED {}: instance larger than this node accepts",
            sop_instance_uid(&files[1])
        )),
        "{said}"
    );
    assert_eq!(count(&node, "SELECT COUNT(*) FROM jobs").await, 1);
    let spool: Vec<_> = std::fs::read_dir(node.data_dir.join("tmp")).unwrap().collect();
    assert!(spool.is_empty(), "spool files left: {spool:?}");

    let out = pull(&node.config, &node_url, "NOAUTH", &study);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("HTTP 502") && said.contains("source \"NOAUTH\" failed: QIDO-RS answered HTTP 403"),
        "{said}"
    );

    let out = pull(&node.config, &node_url, "GONE", &study);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("HTTP 502") && said.contains("source \"GONE\" is unreachable"),
        "{said}"
    );
}
