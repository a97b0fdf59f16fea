//! The lease queue and the supervisor against a real node: a job that aborts the process ends
//! `dead` instead of crash-looping the SCP, and SIGTERM stops the node cleanly without losing
//! acknowledged work.
//!
//! The crash comes from a test-only fault hook (`fault-hooks` feature, which `cargo test` turns
//! on through the crate's dev-dependency on itself): VCNODE_FAULT_ABORT_ON_SOURCE=<UID> aborts
//! the process when that instance's job is processed, as a crashing codec would.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_aborts_the_process_ends_dead_and_the_scp_accepts_between_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let le: Vec<PathBuf> = phantom_pairs(dir.path(), 90, 416, 320)
        .into_iter()
        .map(|(le, _)| le)
        .collect();
    let poison = sop_instance_uid(&le[0]);
    let env = [("VCNODE_FAULT_ABORT_ON_SOURCE", poison.as_str())];
    // One worker, so that the crash takes no other job's lease with it. The backoff after a
    // worker death (2.25 to 3 s, then 4.5 to 6 s) is the window in which the restarted SCP
    // must accept.
    let config = write_config_with_model(
        dir.path(),
        "[jobs]\nmax_attempts = 3\nworkers = 1\nretry_base_ms = 3000\nretry_cap_s = 6",
        shipped_model().to_str().unwrap(),
        "",
    );
    let mut node = Node::start_with_env(dir.path(), config.clone(), &env);
    // The poison is acknowledged or not, depending on whether the response beats the abort;
    // its row is committed before either.
    let _ = storescu(&node, "MODALITY", &[], &le[..1]);

    let max_attempts = 3;
    for restart in 1..=max_attempts {
        let status = node
            .wait_exit(LIMIT)
            .unwrap_or_else(|| panic!("the node did not abort on the poison job; log:\n{}", node.log()));
        assert_eq!(
            status.signal(),
            Some(6),
            "SIGABRT from the fault hook: {status:?}"
        );
        node = Node::start_with_env(dir.path(), config.clone(), &env);
        // Between the crashes a legitimate C-STORE succeeds.
        let out = storescu(&node, "MODALITY", &[], &le[restart..restart + 1]);
        assert_eq!(successes(&out), 1, "restart {restart}: {}", text(&out));
    }

    // The third death spent the attempts: dead, not claimed again, and the node stays up.
    let dead = wait_count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'dead'", 1, LIMIT).await;
    assert_eq!(dead, 1, "{}\n{}", node.jobs_cli(), node.log());
    let done = wait_count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'done'", 3, LIMIT).await;
    assert_eq!(done, 3, "the other jobs complete:\n{}", node.jobs_cli());
    let listing = node.jobs_cli();
    let line = listing
        .lines()
        .find(|l| l.contains(&poison))
        .expect("the poison job is listed");
    assert!(
        line.contains(" dead ") && line.contains("worker died 3 times") && line.contains("3/3"),
        "{line}"
    );
    assert!(
        node.wait_exit(Duration::from_millis(500)).is_none(),
        "the node keeps running"
    );
    assert!(text(&echoscu(&node, "MODALITY", "VCNODE")).contains("Received Echo Response (Success)"));

    // `vcnode jobs retry ID` gives it a fresh attempt count: it kills the node again.
    let id = line.split_whitespace().next().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(["jobs", "retry", id, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        node.wait_exit(LIMIT).is_some(),
        "the requeued poison job runs again"
    );
    let q = vcnode::queue::Queue::open(&node.data_dir).await.unwrap();
    let attempts: i64 = sqlx::query_scalar("SELECT attempts FROM jobs WHERE source_uid = ?")
        .bind(&poison)
        .fetch_one(q.pool())
        .await
        .unwrap();
    q.close().await;
    assert_eq!(attempts, 1, "retried from a fresh count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_processing_exits_cleanly_and_the_work_completes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // No grace: the workers give their jobs back at once, so the release path is what runs.
    let mut node = Node::start_processing(dir.path(), "[jobs]\nshutdown_grace_s = 0", "");
    store_until_processing(&node, dir.path(), 91, LIMIT).await;

    let signalled = std::time::Instant::now();
    node.terminate();
    let status = node
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no exit within 60 s of SIGTERM; log:\n{}", node.log()));
    eprintln!("exit {:?} after SIGTERM", signalled.elapsed());
    assert_eq!(status.code(), Some(0), "a clean exit: {status:?}\n{}", node.log());
    let log = node.log();
    assert!(log.contains("vcnode stopped"), "{log}");
    assert!(log.contains("shutdown: job released"), "{log}");
    for table in ["jobs", "exports"] {
        let held = count(
            &node,
            &format!("SELECT COUNT(*) FROM {table} WHERE state = 'running' OR lease_owner IS NOT NULL"),
        )
        .await;
        assert_eq!(held, 0, "no {table} lease left held:\n{}", node.jobs_cli());
    }
    let done_before = count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'done'").await;
    assert!(done_before < 4, "all jobs finished before SIGTERM");

    let node = restart_until_done(&node, dir.path(), 4, LIMIT).await;
    let with_result = count(
        &node,
        "SELECT COUNT(*) FROM jobs j WHERE j.state = 'done' AND (SELECT COUNT(*) FROM instances i
           WHERE i.origin = 'derived' AND i.source_uid = j.source_uid) = 1",
    )
    .await;
    assert_eq!(with_result, 4, "each LE job done with its one derived instance");
    // A release is not an attempt, and a clean stop leaves no lease to expire.
    assert_eq!(count(&node, "SELECT MAX(attempts) FROM jobs").await, 1);
    assert!(!node.log().contains("worker died"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_export_releases_it_without_counting_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    // A destination that accepts the TCP connection and never answers the A-ASSOCIATE-RQ:
    // the export is in flight, held by its exporter, when SIGTERM comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    let extra = format!(
        "[jobs]\nshutdown_grace_s = 0\n[export]\ntimeout_s = 120\n\
         [[destinations]]\nname = \"silent\"\nkind = \"dimse\"\nae_title = \"SILENT\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         [[routes]]\nfrom_ae = \"*\"\nto = [\"silent\"]\n"
    );
    let mut node = Node::start_processing(dir.path(), &extra, "");
    let le = phantom_pairs(dir.path(), 92, 416, 320).remove(0).0;
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &[le])), 1);
    let sending = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE state = 'running'",
        1,
        LIMIT,
    )
    .await;
    assert_eq!(sending, 1, "{}", node.jobs_cli());

    node.terminate();
    let status = node
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no exit within 60 s of SIGTERM; log:\n{}", node.log()));
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", node.log());
    assert!(
        node.log().contains("shutdown: exports released"),
        "{}",
        node.log()
    );
    let q = vcnode::queue::Queue::open(&node.data_dir).await.unwrap();
    let (state, attempts, owner): (String, i64, Option<String>) =
        sqlx::query_as("SELECT state, attempts, lease_owner FROM exports")
            .fetch_one(q.pool())
            .await
            .unwrap();
    q.close().await;
    assert_eq!((state.as_str(), attempts, owner), ("queued", 0, None));
}
