use super::*;

fn instance(uid: &str) -> NewInstance {
    NewInstance {
        sop_instance_uid: uid.into(),
        sop_class_uid: vcnode_scp::MG_FOR_PRESENTATION.into(),
        study_uid: "1.2.3".into(),
        series_uid: "1.2.3.4".into(),
        transfer_syntax: vcnode_scp::EXPLICIT_VR_LE.into(),
        path: format!("instances/{uid}.dcm"),
        bytes: 10,
        image_type: Some("ORIGINAL\\PRIMARY\\\\\\LOW_ENERGY".into()),
        calling_ae: Some("MODALITY".into()),
    }
}

async fn queue() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).await.unwrap();
    (dir, q)
}

#[tokio::test]
async fn duplicate_instance_queues_no_second_job() {
    let (_dir, q) = queue().await;
    let first = q.record_received(&instance("1.1"), Some(3)).await.unwrap();
    assert!(first.new_instance && first.job_id.is_some());
    let again = q.record_received(&instance("1.1"), Some(3)).await.unwrap();
    assert_eq!(
        again,
        Recorded {
            new_instance: false,
            job_id: None
        }
    );
    let none = q.record_received(&instance("1.2"), None).await.unwrap();
    assert!(none.new_instance && none.job_id.is_none());
    assert_eq!(q.list_jobs(None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_job_is_claimed_once_and_an_expired_lease_is_claimable_again() {
    let (_dir, q) = queue().await;
    q.record_received(&instance("1.1"), Some(3)).await.unwrap();
    let lease = q
        .claim("worker-a", Duration::from_millis(100))
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(lease.source_uid, "1.1");
    assert_eq!(lease.attempt, 1);
    assert!(
        q.claim("worker-b", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "held by a"
    );
    // worker-a dies: its lease runs out and worker-b takes the job over
    tokio::time::sleep(Duration::from_millis(150)).await;
    let taken = q
        .claim("worker-b", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("expired lease");
    assert_eq!(taken.job_id, lease.job_id);
    assert_eq!(taken.attempt, 2);
    // the old holder can no longer complete it
    let done = |l| q.complete_with_derived(l, &[], "1.1", &[], 1);
    assert!(!done(&lease).await.unwrap());
    assert!(done(&taken).await.unwrap());
    assert_eq!(q.list_jobs(Some("done")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_the_same_job() {
    let (_dir, q) = queue().await;
    for i in 0..20 {
        q.record_received(&instance(&format!("1.{}", i + 1)), Some(3))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..4 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(l) = q.claim(&format!("w{w}"), Duration::from_secs(60)).await.unwrap() {
                got.push(l.job_id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, 20);
    assert_eq!(all.len(), 20);
}

#[tokio::test]
async fn failures_back_off_then_die_with_the_reason() {
    let (_dir, q) = queue().await;
    q.record_received(&instance("1.1"), Some(2)).await.unwrap();
    let l1 = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(
        q.fail(&l1, "decoder hiccup", Duration::from_secs(3600), false)
            .await
            .unwrap(),
        "queued"
    );
    assert!(
        q.claim("w", Duration::from_secs(60)).await.unwrap().is_none(),
        "backing off"
    );
    sqlx::query("UPDATE jobs SET run_at = 0")
        .execute(q.pool())
        .await
        .unwrap();
    let l2 = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(
        q.fail(&l2, "still broken", Duration::ZERO, false).await.unwrap(),
        "dead"
    );
    let jobs = q.list_jobs(Some("dead")).await.unwrap();
    assert_eq!(jobs[0].last_error.as_deref(), Some("still broken"));
    assert_eq!(jobs[0].attempts, 2);
}

#[tokio::test]
async fn rows_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Queue::open(dir.path()).await.unwrap();
        q.record_received(&instance("1.1"), Some(3)).await.unwrap();
        q.close().await;
    }
    let q = Queue::open(dir.path()).await.unwrap();
    assert!(q.instance_exists("1.1").await.unwrap());
    assert_eq!(q.job_counts().await.unwrap(), vec![("queued".to_string(), 1)]);
}

#[tokio::test]
async fn exports_are_queued_with_the_result_and_claimed_by_destination_and_series() {
    let (_dir, q) = queue().await;
    q.record_received(&instance("1.1"), Some(3)).await.unwrap();
    q.record_received(&instance("1.2"), Some(3)).await.unwrap();
    for _ in 0..2 {
        let lease = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
        let derived = NewInstance {
            sop_instance_uid: format!("9.{}", lease.source_uid),
            image_type: None,
            calling_ae: None,
            ..instance(&lease.source_uid)
        };
        let dests = ["pacs".to_string(), "web".to_string()];
        assert!(q
            .complete_with_derived(&lease, &[derived], &lease.source_uid, &dests, 5)
            .await
            .unwrap());
    }
    let batch = q
        .claim_exports("x", Duration::from_secs(60), 16)
        .await
        .unwrap()
        .expect("a batch");
    assert_eq!(
        batch.items.len(),
        2,
        "both instances of the series for one destination"
    );
    assert!(batch.items.iter().all(|i| i.path.starts_with("instances/")));
    let other = q
        .claim_exports("x", Duration::from_secs(60), 16)
        .await
        .unwrap()
        .expect("the other destination");
    assert_ne!(other.destination, batch.destination);
    assert!(q
        .claim_exports("x", Duration::from_secs(60), 16)
        .await
        .unwrap()
        .is_none());
    for item in &batch.items {
        assert!(q.export_done(item.id, "x", None).await.unwrap());
    }
    let state = q
        .export_failed(
            &other.items[0],
            "x",
            "refused",
            Duration::ZERO,
            true,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(state, "dead");
    let rows = q.list_exports().await.unwrap();
    assert_eq!(rows.iter().filter(|r| r.state == "done").count(), 2);
    assert_eq!(
        rows.iter()
            .find(|r| r.state == "dead")
            .unwrap()
            .last_error
            .as_deref(),
        Some("refused")
    );
}
