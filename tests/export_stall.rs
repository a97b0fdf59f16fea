//! Exports that must neither stall nor fail for transport reasons:
//! - a destination that stops reading must not hold back the others: a stalled PACS
//!   (associates, then never reads) next to dcmtk's storescp, both on every route, with one
//!   export worker so that only the time limits, not a spare worker, keep results flowing;
//! - STOW-RS over https reaches a real Orthanc behind a TLS-terminating proxy, and a
//!   certificate the node does not trust is refused with that reason.

mod common;

use std::time::Duration;

use common::*;

/// Generous: CPU inference of real-size images on a shared 2-core machine.
const LIMIT: Duration = Duration::from_secs(600);
/// Two small images: processing takes seconds.
const HTTPS_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pacs_times_out_alone_and_a_healthy_destination_gets_every_result() {
    let dir = tempfile::tempdir().unwrap();
    let stalled = StalledPacs::start();
    let healthy = Storescp::start(&dir.path().join("storescp"), "STORESCP");
    // Limits small enough for a test: each PDU or data set may take 2 s plus its size at
    // 80 Mbit/s. One worker: without time limits it would stay on the stalled PACS forever.
    let config = format!(
        "[[destinations]]\nname = \"stalled\"\nkind = \"dimse\"\nae_title = \"STALLED\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[destinations]]\nname = \"healthy\"\nkind = \"dimse\"\nae_title = \"STORESCP\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[routes]]\nfrom_ae = \"*\"\nto = [\"stalled\", \"healthy\"]\n\
         [export]\nworkers = 1\ntimeout_s = 2\nmin_rate_kbps = 80000\nretry_base_ms = 500\nmax_attempts = 100\nmax_age_s = 3600\n",
        stalled.port, healthy.port
    );
    let node = Node::start_processing(dir.path(), &config, "");
    // Real-size images: each derived instance (16-bit, the LE's rows and columns) is about
    // 4.3 MB, more than loopback's socket buffers hold, so the stalled PACS blocks the write.
    let le: Vec<_> = phantom_pairs(dir.path(), 601, 1664, 1280)
        .into_iter()
        .map(|(le, _)| le)
        .collect();
    let n = le.len() as i64;
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &le)) as i64, n);

    let healthy_done = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE destination = 'healthy' AND state = 'done'",
        n,
        LIMIT,
    )
    .await;
    assert_eq!(
        healthy_done,
        n,
        "the healthy destination's results are held back:\n{}\n{}",
        node.jobs_cli(),
        node.log()
    );
    // Each went through on its first attempt: never queued behind the stalled PACS long
    // enough to fail, never sent twice.
    assert_eq!(
        count(
            &node,
            "SELECT COUNT(*) FROM exports WHERE destination = 'healthy' AND attempts = 1"
        )
        .await,
        n,
        "{}",
        node.jobs_cli()
    );
    let mut received: Vec<String> = healthy.files().iter().map(|f| sop_instance_uid(f)).collect();
    received.sort();
    assert_eq!(
        received,
        derived_uids(&node).await,
        "storescp holds every derived instance once"
    );

    // The stalled PACS was reached (it accepted associations) and acknowledged nothing.
    assert!(stalled.accepted() >= 1, "the stalled PACS was never contacted");
    assert_eq!(
        count(
            &node,
            "SELECT COUNT(*) FROM exports WHERE destination = 'stalled' AND state = 'done'"
        )
        .await,
        0
    );
    // Its exports failed by a time limit, and `vcnode jobs` says so.
    let timed_out = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE destination = 'stalled' AND state != 'done' AND attempts >= 1 AND last_error LIKE '%timed out%'",
        1,
        LIMIT,
    )
    .await;
    assert!(timed_out >= 1, "{}", node.jobs_cli());
    let listing = node.jobs_cli();
    let stalled_rows: Vec<&str> = listing.lines().filter(|l| l.contains(" stalled ")).collect();
    assert_eq!(stalled_rows.len() as i64, n, "{listing}");
    assert!(
        stalled_rows.iter().any(|l| l.contains("timed out")),
        "the stalled export should show its time limit as the reason:\n{listing}"
    );
    assert!(
        stalled_rows
            .iter()
            .all(|l| !l.contains(" done ") && !l.contains(" dead ")),
        "a stalled destination is retried, not given up on:\n{listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stow_rs_over_https_reaches_orthanc_and_an_untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pacs = Orthanc::start(&dir.path().join("pacs"));
    let proxy = TlsProxy::start(&dir.path().join("tls"), pacs.http_port).await;
    // Credentials over https need no opt-in (Orthanc here ignores them).
    let config = format!(
        "[[destinations]]\nname = \"trusted\"\nkind = \"dicomweb\"\nurl = \"https://localhost:{port}/dicom-web\"\n\
         auth = {{ bearer = \"t0ken\" }}\ntls = {{ ca_file = \"{ca}\" }}\n\
         [[destinations]]\nname = \"untrusted\"\nkind = \"dicomweb\"\nurl = \"https://127.0.0.1:{port}/dicom-web\"\n\
         [[routes]]\nfrom_ae = \"*\"\nto = [\"trusted\", \"untrusted\"]\n\
         [export]\ntimeout_s = 10\nretry_base_ms = 500\nmax_attempts = 100\nmax_age_s = 3600\n",
        port = proxy.port,
        ca = proxy.ca.display()
    );
    let node = Node::start_processing(dir.path(), &config, "");
    let le: Vec<_> = phantom_pairs(dir.path(), 602, 416, 320)
        .into_iter()
        .take(2)
        .map(|(le, _)| le)
        .collect();
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &le)), 2);
    let done = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE destination = 'trusted' AND state = 'done'",
        2,
        HTTPS_LIMIT,
    )
    .await;
    assert_eq!(done, 2, "{}\n{}", node.jobs_cli(), node.log());
    assert_eq!(sorted_uids(&pacs), derived_uids(&node).await);

    // The same server, without its CA: the handshake fails and the reason says why.
    let refused = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE destination = 'untrusted' AND attempts >= 1 AND last_error LIKE '%certificate%'",
        2,
        HTTPS_LIMIT,
    )
    .await;
    assert_eq!(refused, 2, "{}", node.jobs_cli());
    assert_eq!(
        count(
            &node,
            "SELECT COUNT(*) FROM exports WHERE destination = 'untrusted' AND state = 'done'"
        )
        .await,
        0
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(["destinations", "check", "--config"])
        .arg(&node.config)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.lines().any(|l| l.starts_with("trusted: ok")), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("untrusted: FAILED") && l.contains("certificate")),
        "{listing}"
    );
    assert!(
        !out.status.success(),
        "the untrusted destination fails the check: {listing}"
    );
}
