//! `/healthz`, `/readyz` and `/metrics` of a running node, against real peers: dcmtk's
//! storescu and echoscu send, curl asks, Prometheus's own Python parser reads `/metrics`, and
//! sqlite3 holds the database's write lock as an admin's session would.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use vcnode::fixture::MammogramSpec;

/// `GET http://{node.http}{path}` with curl: (status, body).
fn get(node: &Node, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .arg(format!("http://{}{path}", node.http))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// `/readyz`: (status, its JSON body).
fn readyz(node: &Node) -> (u16, Value) {
    let (status, body) = get(node, "/readyz");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/readyz body {body:?}: {e}"));
    (status, json)
}

/// One sample of `/metrics`, as Prometheus's Python parser read it.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `/metrics`, parsed by `prometheus_client.parser.text_string_to_metric_families`.
fn scrape(node: &Node) -> Vec<Sample> {
    let (status, text) = get(node, "/metrics");
    assert_eq!(status, 200, "{text}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metrics/parse.py");
    let mut parser = Command::new(pytools_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the Prometheus parser");
    parser.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus text-format parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: s["value"].as_f64().unwrap_or(f64::INFINITY),
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`; None when there is none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
}

/// A UID: digits and dots, several components (a version such as 0.1.0 is not one).
fn looks_like_uid(v: &str) -> bool {
    v.len() > 8 && v.matches('.').count() >= 3 && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[test]
fn metrics_count_what_was_sent_and_readiness_passes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");

    let (status, body) = get(&node, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, ready) = readyz(&node);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true);
    assert_eq!(check_names(&ready), ["database", "disk", "model", "scp"]);

    // N images in one association, then one association from a title the node does not know.
    let n = 3;
    let specs: Vec<MammogramSpec> = (0..n).map(|i| MammogramSpec::low_energy(40 + i)).collect();
    let files = write_fixtures(&dir.path().join("in"), &specs);
    let uid = sop_instance_uid(&files[0]);
    let sent = storescu(&node, "MODALITY", &[], &files);
    assert_eq!(successes(&sent), n as usize, "{}", text(&sent));
    let stranger = echoscu(&node, "STRANGER", "VCNODE");
    assert!(!stranger.status.success(), "{}", text(&stranger));
    // A request whose path holds a UID: counted by its route template.
    let (status, _) = get(&node, &format!("/dicomweb/studies/{uid}/series"));
    assert!(status < 500, "QIDO-RS answered {status}");

    // The association's end is counted once the SCP has finished with it, a moment after
    // storescu has its A-RELEASE-RP.
    let started = Instant::now();
    let samples = loop {
        let samples = scrape(&node);
        if value(&samples, "vcnode_associations_active", &[]) == Some(0.0)
            || started.elapsed() > Duration::from_secs(20)
        {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(value(&samples, "vcnode_associations_active", &[]), Some(0.0));
    assert_eq!(
        value(
            &samples,
            "vcnode_associations_total",
            &[("calling_ae", "MODALITY")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &samples,
            "vcnode_associations_rejected_total",
            &[("reason", "calling_ae_title")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the unknown calling AE title is counted as rejected"
    );
    assert_eq!(
        value(
            &samples,
            "vcnode_instances_received_total",
            &[("protocol", "dimse")]
        ),
        Some(n as f64)
    );
    let stored_bytes = futures_block_on(count(&node, "SELECT SUM(bytes) FROM instances"));
    assert!(stored_bytes > 0);
    assert_eq!(
        value(
            &samples,
            "vcnode_instances_received_bytes_total",
            &[("protocol", "dimse")]
        ),
        Some(stored_bytes as f64),
        "bytes received are the bytes stored"
    );
    // No model configured: the jobs wait.
    assert_eq!(
        value(&samples, "vcnode_jobs", &[("state", "queued")]),
        Some(n as f64)
    );
    assert_eq!(value(&samples, "vcnode_jobs", &[("state", "dead")]), Some(0.0));
    assert!(value(&samples, "vcnode_disk_free_bytes", &[]).unwrap() > 0.0);
    assert!(
        value(
            &samples,
            "vcnode_http_requests_total",
            &[("route", "/dicomweb/studies/{study}/series"), ("method", "GET")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "requests are counted by route template"
    );
    assert!(value(
        &samples,
        "vcnode_http_requests_total",
        &[("route", "/readyz"), ("status", "200")]
    )
    .is_some());

    // Labels are names and templates, never UIDs or paths.
    let data_dir = node.data_dir.to_string_lossy().into_owned();
    for s in &samples {
        for (k, v) in &s.labels {
            assert!(!looks_like_uid(v), "{} has a UID in label {k}={v:?}", s.name);
            assert!(!v.contains(&data_dir), "{} has a path in label {k}={v:?}", s.name);
            if k == "route" {
                assert!(
                    v == "other" || v.starts_with('/') && v.split('/').all(|seg| !seg.contains('.')),
                    "{} route label {v:?} is not a template",
                    s.name
                );
            } else {
                assert!(!v.contains('/'), "{} has a path in label {k}={v:?}", s.name);
            }
        }
    }
}

#[test]
fn readiness_fails_naming_the_disk_below_its_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "[storage]\nmin_free_mb = 1000000000");

    assert_eq!(get(&node, "/healthz").0, 200, "the process still answers");
    let (status, ready) = readyz(&node);
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["failing"], serde_json::json!(["disk"]), "{ready}");
    let disk = &ready["checks"][1];
    assert_eq!(disk["check"], "disk");
    assert!(
        disk["reason"].as_str().unwrap().contains("storage.min_free_mb"),
        "{disk}"
    );
    let samples = scrape(&node);
    assert_eq!(
        value(&samples, "vcnode_disk_min_free_bytes", &[]),
        Some(1_000_000_000.0 * 1048576.0)
    );
}

#[test]
fn readiness_fails_naming_the_database_while_another_writer_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");
    assert_eq!(readyz(&node).0, 200);

    // An admin's sqlite3 session in a write transaction: the node cannot write meanwhile.
    let mut sqlite = Command::new("sqlite3")
        .arg(node.data_dir.join(vcnode::queue::DB_FILE))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 must be installed");
    let mut stdin = sqlite.stdin.take().unwrap();
    writeln!(stdin, ".timeout 10000\nBEGIN IMMEDIATE;\nSELECT 'held';").unwrap();
    let mut line = String::new();
    BufReader::new(sqlite.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held", "sqlite3 did not take the write lock");

    let (status, ready) = readyz(&node);
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["failing"], serde_json::json!(["database"]), "{ready}");
    let database = &ready["checks"][0];
    assert!(
        database["reason"].as_str().unwrap().contains("locked"),
        "{database}"
    );
    assert!(
        !database.to_string().contains(&*node.data_dir.to_string_lossy()),
        "no path in the reason: {database}"
    );

    writeln!(stdin, "ROLLBACK;\n.quit").unwrap();
    drop(stdin);
    assert!(sqlite.wait().unwrap().success());
    let (status, ready) = readyz(&node);
    assert_eq!(status, 200, "ready again once the lock is gone: {ready}");
}

#[test]
fn latencies_and_exports_are_measured_and_stow_rs_is_its_own_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let results = Storescp::start(&dir.path().join("results"), "RESULTS");
    let routing = dimse_destination("results", "RESULTS", results.port) + &route_all_to(&["results"]);
    let node = Node::start_processing(dir.path(), &routing, "");
    let (status, ready) = readyz(&node);
    assert_eq!(status, 200, "the generator is loaded: {ready}");

    let le = phantom_pairs(dir.path(), 77, 416, 320).remove(0).0;
    let mut body = b"\r\n--vcnode-b\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(&std::fs::read(&le).unwrap());
    body.extend_from_slice(b"\r\n--vcnode-b--\r\n");
    let (status, answer) = http_post(
        &format!("http://{}/dicomweb/studies", node.http),
        "multipart/related; type=\"application/dicom\"; boundary=vcnode-b",
        &body,
    );
    assert_eq!(status, "200", "{answer}");

    // Processed and exported: the histograms have their one sample each.
    let wanted = |samples: &[Sample]| {
        value(samples, "vcnode_job_latency_seconds_count", &[]) == Some(1.0)
            && value(
                samples,
                "vcnode_export_latency_seconds_count",
                &[("destination", "results")],
            ) == Some(1.0)
    };
    let started = Instant::now();
    let samples = loop {
        let samples = scrape(&node);
        if wanted(&samples) || started.elapsed() > Duration::from_secs(180) {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(wanted(&samples), "{samples:#?}\n{}", node.log_tail(40));
    assert_eq!(
        value(
            &samples,
            "vcnode_instances_received_total",
            &[("protocol", "stow")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "vcnode_instances_received_total",
            &[("protocol", "dimse")]
        ),
        None,
        "nothing came by DIMSE"
    );
    assert_eq!(value(&samples, "vcnode_inference_seconds_count", &[]), Some(1.0));
    assert!(value(&samples, "vcnode_job_latency_seconds_sum", &[]).unwrap() > 0.0);
    assert_eq!(
        value(&samples, "vcnode_job_latency_seconds_bucket", &[("le", "+Inf")]),
        Some(1.0),
        "a histogram with buckets, not a summary"
    );
    assert_eq!(value(&samples, "vcnode_jobs", &[("state", "done")]), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "vcnode_exports",
            &[("destination", "results"), ("state", "done")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "vcnode_exports",
            &[("destination", "results"), ("state", "dead")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "vcnode_export_attempts_total",
            &[("destination", "results"), ("outcome", "stored")]
        ),
        Some(1.0)
    );
    assert_eq!(results.files().len(), 1);
}

/// Runs a future of the harness's async helpers from a synchronous test.
fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
