//! The Jobs API on a real node: jobs listed with filters and paging, cancel and retry, one
//! job's history from the queue's events, and the refusals (400, 404, 409).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use vcnode::fixture::MammogramSpec;
use vcnode::queue::{Kind, LeaseQueue, Queue, RetryPolicy};

fn call(node: &Node, method: &str, path: &str) -> (u16, Value) {
    let (status, body) = http_request(method, &format!("http://{}{path}", node.http));
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status.parse().unwrap_or(0), json)
}

fn get(node: &Node, path: &str) -> Value {
    let (status, json) = call(node, "GET", path);
    assert_eq!(status, 200, "GET {path}: {json}");
    json
}

fn events(history: &Value) -> Vec<String> {
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn jobs_are_listed_filtered_paged_cancelled_retried_and_their_history_kept() {
    let dir = tempfile::tempdir().unwrap();
    // Store-only (no model): the jobs stay queued for the API to see and change.
    let node = Node::start(dir.path(), "");
    let started = vcnode::queue::now_ms();
    let specs: Vec<MammogramSpec> = (0..3).map(|i| MammogramSpec::low_energy(70 + i)).collect();
    let files = write_fixtures(&dir.path().join("in"), &specs);
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &files[..2])), 2);
    assert_eq!(successes(&storescu(&node, "ANYWHERE", &[], &files[2..])), 1);

    let all = get(&node, "/api/jobs");
    assert_eq!(all["total"], 3);
    let jobs = all["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    // Newest first, with what the list promises.
    let (newest, oldest) = (jobs[0]["id"].as_i64().unwrap(), jobs[2]["id"].as_i64().unwrap());
    assert!(newest > oldest);
    assert_eq!(jobs[0]["calling_ae"], "ANYWHERE");
    assert_eq!(jobs[0]["source_uid"], sop_instance_uid(&files[2]));
    assert!(jobs[0]["study_uid"].as_str().is_some_and(|s| !s.is_empty()));
    for j in jobs {
        assert_eq!(j["state"], "queued");
        assert_eq!(j["attempts"], 0);
        assert!(j["max_attempts"].as_i64().unwrap() > 0);
        assert!(j["created_at"].as_i64().unwrap() >= started - 1000);
        assert_eq!(j["exports"], Value::Array(vec![]));
    }

    assert_eq!(get(&node, "/api/jobs?state=queued")["total"], 3);
    assert_eq!(get(&node, "/api/jobs?state=dead")["total"], 0);
    assert_eq!(get(&node, "/api/jobs?calling_ae=MODALITY")["total"], 2);
    assert_eq!(
        get(&node, "/api/jobs?calling_ae=ANYWHERE&state=queued")["total"],
        1
    );
    let page = get(&node, "/api/jobs?limit=2&offset=2");
    assert_eq!(page["total"], 3);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["id"], oldest);
    assert_eq!(get(&node, &format!("/api/jobs?since={started}"))["total"], 3);
    assert_eq!(get(&node, "/api/jobs?until=2020-01-01T00:00:00Z")["total"], 0);
    assert_eq!(get(&node, "/api/jobs?since=2020-01-01T00:00:00Z")["total"], 3);
    assert_eq!(get(&node, "/api/exports")["total"], 0);

    // Cancel: dead with the operator's reason; retry: queued again with fresh attempts.
    let cancelled = get_after(&node, "POST", &format!("/api/jobs/{oldest}/cancel"));
    assert_eq!(cancelled["job"]["state"], "dead");
    assert_eq!(cancelled["job"]["last_error"], "cancelled by an operator");
    assert_eq!(get(&node, "/api/jobs?state=dead")["jobs"][0]["id"], oldest);
    let retried = get_after(&node, "POST", &format!("/api/jobs/{oldest}/retry"));
    assert_eq!(retried["job"]["state"], "queued");
    assert_eq!(retried["job"]["attempts"], 0);
    assert_eq!(retried["job"]["last_error"], Value::Null);
    assert_eq!(
        events(&get(&node, &format!("/api/jobs/{oldest}"))),
        ["cancelled", "retried"]
    );

    // A worker of another process claims a job through the same queue and fails it: the
    // history shows the attempt, its error and its timings; while it ran, no retry or cancel.
    let queue = Queue::open(&node.data_dir).await.unwrap();
    let retry = RetryPolicy {
        base: Duration::from_secs(3600),
        cap: Duration::from_secs(3600),
    };
    let lease = queue
        .claim_job("test-worker", Duration::from_secs(600), &retry)
        .await
        .unwrap()
        .expect("a queued job");
    let id = lease.job_id;
    for action in ["retry", "cancel"] {
        let (status, body) = call(&node, "POST", &format!("/api/jobs/{id}/{action}"));
        assert_eq!(status, 409, "{action} of a running job: {body}");
        assert!(body.as_str().unwrap().contains("running"), "{body}");
    }
    let running = get(&node, &format!("/api/jobs/{id}"));
    assert_eq!(running["job"]["state"], "running");
    assert_eq!(running["attempts"][0]["owner"], "test-worker");
    assert_eq!(running["attempts"][0]["outcome"], Value::Null);
    queue
        .fail(
            Kind::Job,
            "test-worker",
            id,
            "decoder fell over",
            false,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    queue.close().await;
    let failed = get(&node, &format!("/api/jobs/{id}"));
    assert_eq!(failed["job"]["state"], "queued");
    assert_eq!(failed["job"]["attempts"], 1);
    assert!(events(&failed).ends_with(&["claimed".into(), "failed".into()]));
    let attempt = &failed["attempts"][0];
    assert_eq!(attempt["outcome"], "failed");
    assert_eq!(attempt["error"], "decoder fell over");
    assert!(attempt["waited_ms"].as_i64().unwrap() >= 0);
    assert!(attempt["processing_ms"].as_i64().unwrap() >= 0);

    // Refusals: unknown ids, bad ids and filters.
    for (method, path, want) in [
        ("GET", "/api/jobs/999999", 404),
        ("POST", "/api/jobs/999999/retry", 404),
        ("POST", "/api/jobs/999999/cancel", 404),
        ("GET", "/api/exports/999999", 404),
        ("POST", "/api/exports/999999/retry", 404),
        ("GET", "/api/jobs/abc", 400),
        ("GET", "/api/jobs?state=lost", 400),
        ("GET", "/api/jobs?limit=1001", 400),
        ("GET", "/api/jobs?since=yesterday", 400),
        ("GET", "/api/jobs?destination=PACS", 400),
        ("GET", "/api/exports?calling_ae=MODALITY", 400),
    ] {
        let (status, body) = call(&node, method, path);
        assert_eq!(status, want, "{method} {path}: {body}");
    }
}

/// A POST that must succeed; its JSON.
fn get_after(node: &Node, method: &str, path: &str) -> Value {
    let (status, json) = call(node, method, path);
    assert_eq!(status, 200, "{method} {path}: {json}");
    json
}

/// On a processing node the history times the real work: the job claimed then done, and the
/// export of its result claimed then done, each with its wait and processing time.
#[tokio::test]
async fn a_processed_job_and_its_export_show_their_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let results = Storescp::start(&dir.path().join("results"), "RESULTS");
    let routing = dimse_destination("results", "RESULTS", results.port) + &route_all_to(&["results"]);
    let node = Node::start_processing(dir.path(), &routing, "");
    let le = phantom_pairs(dir.path(), 78, 416, 320).remove(0).0;
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &[le])), 1);
    let done = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE state = 'done'",
        1,
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(done, 1, "{}", node.log_tail(40));

    let jobs = get(&node, "/api/jobs?state=done");
    assert_eq!(jobs["total"], 1);
    let job = &jobs["jobs"][0];
    assert_eq!(job["exports"][0]["destination"], "results");
    assert_eq!(job["exports"][0]["state"], "done");
    let history = get(&node, &format!("/api/jobs/{}", job["id"]));
    assert_eq!(events(&history), ["claimed", "done"]);
    let attempt = &history["attempts"][0];
    assert_eq!(attempt["outcome"], "done");
    let processing = attempt["processing_ms"].as_i64().unwrap();
    // Where the time went: every stage is reported, the generator's time is real, and the
    // stages fit in the attempt (storing the result in the queue comes after them).
    let stages = &attempt["stages"];
    let stage = |name: &str| {
        stages[name]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} in {stages}"))
    };
    assert!(stage("inference_ms") > 0, "{stages}");
    let sum: i64 = ["prepare_ms", "inference_ms", "postprocess_ms", "encode_ms"]
        .iter()
        .map(|s| stage(s))
        .sum();
    assert!(sum <= processing + 1, "{stages} within {processing} ms");

    let exports = get(&node, "/api/exports?destination=results&state=done");
    assert_eq!(exports["total"], 1);
    assert_eq!(exports["exports"][0]["job_id"], job["id"]);
    let history = get(&node, &format!("/api/exports/{}", exports["exports"][0]["id"]));
    assert_eq!(events(&history), ["claimed", "done"]);
    assert_eq!(get(&node, "/api/exports?destination=elsewhere")["total"], 0);
    // A done export is neither retried nor cancelled.
    let (status, _) = call(
        &node,
        "POST",
        &format!("/api/exports/{}/cancel", exports["exports"][0]["id"]),
    );
    assert_eq!(status, 409);
}
