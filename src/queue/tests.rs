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
        attrs: Default::default(),
    }
}

async fn queue() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).await.unwrap();
    (dir, q)
}

/// Retries due at once, so that tests need not wait out a backoff.
const NOW: RetryPolicy = RetryPolicy {
    base: Duration::ZERO,
    cap: Duration::ZERO,
};
/// Retries far in the future.
const LATER: RetryPolicy = RetryPolicy {
    base: Duration::from_secs(3600),
    cap: Duration::from_secs(3600),
};

const STAGES: StageTimings = StageTimings {
    prepare_ms: 1,
    inference_ms: 2,
    postprocess_ms: 3,
    encode_ms: 4,
};

impl Queue {
    async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<JobLease>> {
        self.claim_job(owner, lease, &NOW).await
    }

    async fn job(&self, id: i64) -> JobView {
        self.job_view(id).await.unwrap().unwrap()
    }

    async fn list_jobs(&self, state: Option<State>) -> Result<Vec<JobView>> {
        let all = ListFilter {
            state,
            limit: i64::MAX,
            ..ListFilter::default()
        };
        Ok(self.job_views(&all).await?.1)
    }

    async fn list_exports(&self) -> Result<Vec<ExportView>> {
        let all = ListFilter {
            limit: i64::MAX,
            ..ListFilter::default()
        };
        Ok(self.export_views(&all).await?.1)
    }
}

/// Lets every lease held now expire, as if its worker had died.
async fn expire_leases(q: &Queue) {
    sqlx::query("UPDATE jobs SET lease_expires_at = 0 WHERE state = 'running'")
        .execute(q.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE exports SET lease_expires_at = 0 WHERE state = 'running'")
        .execute(q.pool())
        .await
        .unwrap();
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
async fn a_job_is_claimed_once_and_an_expired_lease_counts_as_an_attempt() {
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
    // worker-a dies: its lease runs out; the job is queued again (with the backoff of its
    // attempt: none here) and worker-b takes it over as attempt 2.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let taken = q
        .claim("worker-b", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("expired lease");
    assert_eq!(taken.job_id, lease.job_id);
    assert_eq!(taken.attempt, 2);
    assert_eq!(
        q.job(taken.job_id).await.last_error.as_deref(),
        Some("worker died 1 time")
    );
    // the old holder can no longer complete it
    let done = |l| q.complete_with_derived(l, &[], "1.1", &[], 1, &STAGES, None);
    assert!(!done(&lease).await.unwrap());
    assert!(done(&taken).await.unwrap());
    assert_eq!(q.list_jobs(Some(State::Done)).await.unwrap().len(), 1);
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
        q.fail(
            Kind::Job,
            "w",
            l1.job_id,
            "decoder hiccup",
            false,
            Duration::from_secs(3600)
        )
        .await
        .unwrap(),
        Some(State::Queued)
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
        q.fail(Kind::Job, "w", l2.job_id, "still broken", false, Duration::ZERO)
            .await
            .unwrap(),
        Some(State::Dead)
    );
    assert_eq!(
        q.fail(Kind::Job, "w", l2.job_id, "again", false, Duration::ZERO)
            .await
            .unwrap(),
        None,
        "a lease already given up changes nothing"
    );
    let jobs = q.list_jobs(Some(State::Dead)).await.unwrap();
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
    assert_eq!(q.job_counts().await.unwrap(), vec![(State::Queued, 1)]);
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
            .complete_with_derived(&lease, &[derived], &lease.source_uid, &dests, 5, &STAGES, None)
            .await
            .unwrap());
        // The job's history keeps where the successful attempt spent its time.
        let job = q.job(lease.job_id).await;
        let events = q.events(Kind::Job, lease.job_id).await.unwrap();
        let attempts = attempts_of(job.created_at, &events);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome.as_deref(), Some("done"));
        assert_eq!(attempts[0].stages, Some(STAGES));
    }
    let batch = q
        .claim_exports("x", Duration::from_secs(60), 16, &NOW)
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
        .claim_exports("x", Duration::from_secs(60), 16, &NOW)
        .await
        .unwrap()
        .expect("the other destination");
    assert_ne!(other.destination, batch.destination);
    assert!(q
        .claim_exports("x", Duration::from_secs(60), 16, &NOW)
        .await
        .unwrap()
        .is_none());
    for item in &batch.items {
        assert!(q.export_done(item.id, "x", None).await.unwrap());
    }
    let state = q
        .fail(
            Kind::Export,
            "x",
            other.items[0].id,
            "refused",
            true,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(state, Some(State::Dead));
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

#[tokio::test]
async fn an_expired_lease_with_attempts_left_backs_off_behind_other_work() {
    let (_dir, q) = queue().await;
    q.record_received(&instance("1.1"), Some(5)).await.unwrap();
    let crashed = q
        .claim_job("a", Duration::from_secs(60), &LATER)
        .await
        .unwrap()
        .unwrap();
    q.record_received(&instance("1.2"), Some(5)).await.unwrap();
    expire_leases(&q).await;
    // The job whose worker died waits out its backoff; the newer one goes first.
    let next = q
        .claim_job("b", Duration::from_secs(60), &LATER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.source_uid, "1.2");
    let row = q.job(crashed.job_id).await;
    assert_eq!(row.state, State::Queued);
    assert_eq!(row.attempts, 1, "the death counted as the attempt it was");
    assert!(
        row.run_at > now_ms() + 2_000_000,
        "backing off: {}",
        row.run_at - now_ms()
    );
    assert!(q
        .claim_job("b", Duration::from_secs(60), &LATER)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn work_that_keeps_killing_its_worker_ends_dead_with_the_count() {
    let (_dir, q) = queue().await;
    q.record_received(&instance("1.1"), Some(3)).await.unwrap();
    let mut poison = None;
    for _ in 0..3 {
        // Each restart: the poison job is claimed and kills its worker before it finishes.
        let l = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(l.source_uid, "1.1");
        poison = Some(l.job_id);
        expire_leases(&q).await;
    }
    // The next claim finds the third death: dead, and other work is served instead.
    q.record_received(&instance("1.2"), Some(3)).await.unwrap();
    let other = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(other.source_uid, "1.2");
    let row = q.job(poison.unwrap()).await;
    assert_eq!(row.state, State::Dead);
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_error.as_deref(), Some("worker died 3 times"));
    assert_eq!(row.lease_owner, None);

    // Exports follow the same policy.
    let derived = NewInstance {
        sop_instance_uid: "9.1".into(),
        ..instance("1.2")
    };
    assert!(q
        .complete_with_derived(&other, &[derived], "1.2", &["pacs".to_string()], 2, &STAGES, None)
        .await
        .unwrap());
    for _ in 0..2 {
        q.claim_exports("x", Duration::from_secs(60), 16, &NOW)
            .await
            .unwrap()
            .unwrap();
        expire_leases(&q).await;
    }
    assert!(q
        .claim_exports("x", Duration::from_secs(60), 16, &NOW)
        .await
        .unwrap()
        .is_none());
    let export = &q.list_exports().await.unwrap()[0];
    assert_eq!(export.state, State::Dead);
    assert_eq!(export.last_error.as_deref(), Some("worker died 2 times"));
}

#[tokio::test]
async fn retry_requeues_dead_work_with_a_fresh_attempt_count() {
    let (_dir, q) = queue().await;
    for uid in ["1.1", "1.2", "1.3"] {
        q.record_received(&instance(uid), Some(1)).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        let l = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
        q.fail(Kind::Job, "w", l.job_id, "broken", false, Duration::ZERO)
            .await
            .unwrap();
        ids.push(l.job_id);
    }
    let running = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(q.list_jobs(Some(State::Dead)).await.unwrap().len(), 2);
    // A running job belongs to its worker; a done one is done.
    assert_eq!(
        q.requeue(Kind::Job, Requeue::One(running.job_id)).await.unwrap(),
        0
    );
    assert_eq!(q.requeue(Kind::Job, Requeue::One(ids[0])).await.unwrap(), 1);
    let row = q.job(ids[0]).await;
    assert_eq!(
        (row.state, row.attempts, row.last_error),
        (State::Queued, 0, None)
    );
    assert_eq!(q.requeue(Kind::Job, Requeue::AllDead).await.unwrap(), 1);
    let again = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(again.attempt, 1, "a fresh attempt count");
    assert_eq!(q.job(running.job_id).await.state, State::Running);
}

#[tokio::test]
async fn a_released_lease_is_queued_in_its_place_without_counting_an_attempt() {
    let (_dir, q) = queue().await;
    q.record_received(&instance("1.1"), Some(3)).await.unwrap();
    q.record_received(&instance("1.2"), Some(3)).await.unwrap();
    let l = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(l.source_uid, "1.1");
    assert_eq!(
        q.release(Kind::Job, "other", &[l.job_id]).await.unwrap(),
        0,
        "not its lease"
    );
    assert_eq!(q.release(Kind::Job, "w", &[l.job_id]).await.unwrap(), 1);
    let row = q.job(l.job_id).await;
    assert_eq!(
        (row.state, row.attempts, row.lease_owner),
        (State::Queued, 0, None)
    );
    let again = q.claim("w2", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(
        (again.job_id, again.attempt),
        (l.job_id, 1),
        "first again, attempt 1"
    );
    // Renewal holds only for the owner.
    assert_eq!(
        q.renew(Kind::Job, "w", &[l.job_id], Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        q.renew(Kind::Job, "w2", &[l.job_id], Duration::from_secs(60))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_export_claims_neither_collide_nor_hit_a_locked_database() {
    let (_dir, q) = queue().await;
    // 60 derived instances in 30 series, 2 destinations: 120 exports.
    for i in 0..60 {
        let uid = format!("1.{}", i + 1);
        q.record_received(&instance(&uid), Some(3)).await.unwrap();
        let l = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
        let derived = NewInstance {
            sop_instance_uid: format!("9.{}", i + 1),
            series_uid: format!("2.{}", i % 30),
            ..instance(&uid)
        };
        let dests = ["pacs".to_string(), "web".to_string()];
        assert!(q
            .complete_with_derived(&l, &[derived], &uid, &dests, 3, &STAGES, None)
            .await
            .unwrap());
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("x{w}");
            let mut got = Vec::new();
            // Any error (SQLITE_BUSY among them) fails the test.
            while let Some(b) = q
                .claim_exports(&owner, Duration::from_secs(60), 3, &NOW)
                .await
                .unwrap()
            {
                for item in &b.items {
                    assert!(q.export_done(item.id, &owner, None).await.unwrap());
                    got.push(item.id);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let claimed = all.len();
    all.dedup();
    assert_eq!((claimed, all.len()), (120, 120));
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let p = RetryPolicy {
        base: Duration::from_secs(5),
        cap: Duration::from_secs(300),
    };
    for _ in 0..50 {
        let b1 = p.backoff(1).as_secs_f64();
        assert!((3.75..=5.0).contains(&b1), "{b1}");
        let b4 = p.backoff(4).as_secs_f64();
        assert!((30.0..=40.0).contains(&b4), "{b4}");
        let b40 = p.backoff(40).as_secs_f64();
        assert!((225.0..=300.0).contains(&b40), "{b40}");
    }
    let spread: std::collections::HashSet<u128> = (0..20).map(|_| p.backoff(3).as_millis()).collect();
    assert!(spread.len() > 1, "jittered");
}

#[tokio::test]
async fn a_renewed_lease_outlives_its_term_and_expires_once_renewal_stops() {
    let (_dir, q) = queue().await;
    q.record_received(&instance("1.1"), Some(3)).await.unwrap();
    let lease = Duration::from_millis(300);
    let held = q.claim("w", lease).await.unwrap().unwrap();
    let renewal = keep_leases(q.leases(), Kind::Job, "w".into(), vec![held.job_id], lease);
    tokio::time::sleep(lease * 3).await;
    assert!(q.claim("other", lease).await.unwrap().is_none(), "still held");
    drop(renewal);
    tokio::time::sleep(lease * 2).await;
    let taken = q
        .claim("other", lease)
        .await
        .unwrap()
        .expect("expired once renewal stopped");
    assert_eq!(taken.attempt, 2);
}

#[tokio::test]
async fn a_destination_already_being_sent_to_yields_to_another_with_due_work() {
    let (_dir, q) = queue().await;
    // Two series for "pacs", then one for "web", queued in that order.
    for (n, dest) in [(1, "pacs"), (2, "pacs"), (3, "web")] {
        q.record_received(&instance(&format!("1.{n}")), Some(3))
            .await
            .unwrap();
        let lease = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
        let derived = NewInstance {
            sop_instance_uid: format!("9.{n}"),
            series_uid: format!("8.{n}"),
            image_type: None,
            calling_ae: None,
            ..instance(&lease.source_uid)
        };
        assert!(q
            .complete_with_derived(
                &lease,
                &[derived],
                &lease.source_uid,
                &[dest.to_string()],
                5,
                &STAGES,
                None
            )
            .await
            .unwrap());
    }
    let claim = || async {
        q.claim_exports("x", Duration::from_secs(60), 16, &NOW)
            .await
            .unwrap()
            .unwrap()
    };
    let first = claim().await;
    assert_eq!(
        (first.destination.as_str(), first.items[0].instance_uid.as_str()),
        ("pacs", "9.1")
    );
    // "pacs" holds a worker (it may be stalled): "web" goes next although "pacs" 9.2 is older.
    let second = claim().await;
    assert_eq!(second.destination, "web");
    let third = claim().await;
    assert_eq!(third.items[0].instance_uid, "9.2");
}

#[tokio::test]
async fn every_state_change_of_jobs_and_exports_leaves_an_event() {
    let (_dir, q) = queue().await;
    let id = q
        .record_received(&instance("1.1"), Some(3))
        .await
        .unwrap()
        .job_id
        .unwrap();
    let names = |events: Vec<history::Event>| events.into_iter().map(|e| e.event).collect::<Vec<_>>();
    // claim → fail → claim → expire → claim → release → claim → done
    q.claim_job("w", Duration::from_secs(60), &NOW)
        .await
        .unwrap()
        .unwrap();
    q.fail(Kind::Job, "w", id, "boom", false, Duration::ZERO)
        .await
        .unwrap();
    q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
    expire_leases(&q).await;
    q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(q.release(Kind::Job, "w", &[id]).await.unwrap(), 1);
    let lease = q.claim("w", Duration::from_secs(60)).await.unwrap().unwrap();
    let derived = NewInstance {
        sop_instance_uid: "9.1".into(),
        ..instance("9.1")
    };
    assert!(q
        .complete_with_derived(&lease, &[derived], "1.1", &["pacs".to_string()], 5, &STAGES, None)
        .await
        .unwrap());
    let events = q.events(Kind::Job, id).await.unwrap();
    assert_eq!(
        names(events.clone()),
        ["claimed", "failed", "claimed", "expired", "claimed", "released", "claimed", "done"]
    );
    assert_eq!(events[1].error.as_deref(), Some("boom"));
    assert_eq!(events[3].error.as_deref(), Some("worker died 1 time"));
    let attempts = history::attempts_of(0, &events);
    assert_eq!(attempts.len(), 4);
    assert_eq!(attempts[3].outcome.as_deref(), Some("done"));

    // The export the job queued: claim → done; then an operator retries, cancels, retries.
    let (total, exports) = q
        .export_views(&ListFilter {
            destination: Some("pacs".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((total, exports[0].job_id), (1, Some(id)));
    let export = exports[0].id;
    let batch = q
        .claim_exports("x", Duration::from_secs(60), 8, &NOW)
        .await
        .unwrap()
        .unwrap();
    assert!(q
        .export_done(batch.items[0].id, "x", Some("warning"))
        .await
        .unwrap());
    assert!(
        !q.cancel(Kind::Export, export).await.unwrap(),
        "a done export is not cancelled"
    );
    assert_eq!(q.requeue(Kind::Export, Requeue::One(export)).await.unwrap(), 0);
    // As if its attempts were spent: dead rows are cancelled (kept dead) and retried.
    sqlx::query("UPDATE exports SET state = 'dead'")
        .execute(q.pool())
        .await
        .unwrap();
    assert!(q.cancel(Kind::Export, export).await.unwrap());
    assert_eq!(q.requeue(Kind::Export, Requeue::AllDead).await.unwrap(), 1);
    let events = q.events(Kind::Export, export).await.unwrap();
    assert_eq!(names(events.clone()), ["claimed", "done", "cancelled", "retried"]);
    assert_eq!(events[1].error.as_deref(), Some("warning"));
    assert_eq!(events[2].error.as_deref(), Some(CANCELLED));
    // The job lists the export it queued, and filters select it.
    assert_eq!(q.job_view(id).await.unwrap().unwrap().exports.len(), 1);
    let (total, _) = q
        .job_views(&ListFilter {
            state: Some(State::Done),
            calling_ae: Some("MODALITY".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(total, 1);
}
