//! What the status page (`GET /api/status`, src/web/status.rs) reads from the database: recent
//! throughput and each destination's last success and last error. The page polls every 2 s,
//! so each query touches only the rows it reports on, never the whole history:
//!
//! - Rows are appended in time order (`rowid` grows with `created_at`, `job_events.id` with
//!   `at`), and none of these tables has an index on its time. A window is therefore found by
//!   walking the table backwards by rowid to the first row older than the window, then reading
//!   the rowid range after it: the cost is the rows in the window, however long the history.
//! - A destination's last outcome is its newest matching event, walking `job_events` backwards
//!   through at most the newest [`OUTCOME_LOOKBACK`] events (a destination that never failed
//!   would otherwise cost a walk through all of them at every poll).

use serde::Serialize;
use sqlx::Row;

use super::{Queue, Result};

/// Instances recorded since `since` (Unix ms): by origin and the sender they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arrivals {
    /// `received` (sent to the node) or `derived` (made by it).
    pub origin: String,
    /// The calling AE title of a received instance (`[dicomweb] sender` for STOW-RS); None for
    /// derived ones.
    pub calling_ae: Option<String>,
    /// In the short window (since `recent`).
    pub recent: i64,
    pub recent_bytes: i64,
    /// In the whole window (since `since`).
    pub count: i64,
    pub bytes: i64,
}

/// A destination's newest success and newest failure, from its exports' events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LastOutcomes {
    /// When an export to it was last acknowledged (Unix ms).
    pub last_success_at: Option<i64>,
    /// When an attempt last failed (Unix ms), and why.
    pub last_error_at: Option<i64>,
    pub last_error: Option<String>,
}

/// The window `[?1, now)` as a rowid range after a backward walk to its first older row; of it,
/// what is newer than `?2` counted apart.
const ARRIVALS: &str = "SELECT origin, calling_ae,
        COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b,
        COALESCE(SUM(created_at >= ?2), 0) AS rn,
        COALESCE(SUM(CASE WHEN created_at >= ?2 THEN bytes ELSE 0 END), 0) AS rb
   FROM instances
  WHERE rowid > COALESCE(
          (SELECT rowid FROM instances WHERE created_at < ?1 ORDER BY rowid DESC LIMIT 1), 0)
    AND created_at >= ?1
  GROUP BY origin, calling_ae
  ORDER BY origin DESC, calling_ae";

// Newest first by walking `job_events` backwards: CROSS JOIN keeps it the outer loop and `+`
// keeps SQLite from reading every export event through `job_events_of` and sorting them.
// ?1: the destination; ?2: the oldest event id to look at.
const LAST_SUCCESS: &str = "SELECT ev.at FROM job_events ev CROSS JOIN exports e ON e.id = ev.work_id
  WHERE ev.id >= ?2 AND +ev.kind = 'export' AND ev.event = 'done' AND e.destination = ?1
  ORDER BY ev.id DESC LIMIT 1";
const LAST_ERROR: &str = "SELECT ev.at, ev.error FROM job_events ev CROSS JOIN exports e ON e.id = ev.work_id
  WHERE ev.id >= ?2 AND +ev.kind = 'export' AND ev.event IN ('failed', 'dead', 'expired')
    AND ev.error IS NOT NULL AND e.destination = ?1
  ORDER BY ev.id DESC LIMIT 1";

/// How many of the newest events (of jobs and exports) a destination's last outcomes are
/// looked for in: a few days of a busy node's exports, a bounded walk at every poll.
pub const OUTCOME_LOOKBACK: i64 = 100_000;

impl Queue {
    /// Instances recorded since `since`, and of them since `recent` (`recent >= since`), by
    /// origin and sender. Cost: the rows since `since` (see the module's comment).
    pub async fn arrivals(&self, since: i64, recent: i64) -> Result<Vec<Arrivals>> {
        let rows = sqlx::query(ARRIVALS)
            .bind(since)
            .bind(recent)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Arrivals {
                    origin: r.try_get("origin")?,
                    calling_ae: r.try_get("calling_ae")?,
                    recent: r.try_get("rn")?,
                    recent_bytes: r.try_get("rb")?,
                    count: r.try_get("n")?,
                    bytes: r.try_get("b")?,
                })
            })
            .collect()
    }

    /// The newest acknowledged export to `destination` and the newest failed attempt (a
    /// failure queued again, a death, or a lost lease), among the newest
    /// [`OUTCOME_LOOKBACK`] events of `job_events`.
    pub async fn last_outcomes(&self, destination: &str) -> Result<LastOutcomes> {
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM job_events")
            .fetch_one(&self.pool)
            .await?;
        let oldest = newest - OUTCOME_LOOKBACK + 1;
        let success: Option<i64> = sqlx::query_scalar(LAST_SUCCESS)
            .bind(destination)
            .bind(oldest)
            .fetch_optional(&self.pool)
            .await?;
        let error = sqlx::query(LAST_ERROR)
            .bind(destination)
            .bind(oldest)
            .fetch_optional(&self.pool)
            .await?;
        let (last_error_at, last_error) = match error {
            Some(r) => (Some(r.try_get("at")?), Some(r.try_get("error")?)),
            None => (None, None),
        };
        Ok(LastOutcomes {
            last_success_at: success,
            last_error_at,
            last_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::queue::{now_ms, IndexedAttributes, LeaseQueue, NewInstance, RetryPolicy, StageTimings};

    fn instance(uid: &str, calling_ae: &str, bytes: i64) -> NewInstance {
        NewInstance {
            sop_instance_uid: uid.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.2".into(),
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            path: format!("{uid}.dcm"),
            bytes,
            image_type: None,
            calling_ae: Some(calling_ae.into()),
            attrs: IndexedAttributes::default(),
        }
    }

    async fn set_created(q: &Queue, uid: &str, at: i64) {
        sqlx::query("UPDATE instances SET created_at = ? WHERE sop_instance_uid = ?")
            .bind(at)
            .bind(uid)
            .execute(q.pool())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn arrivals_count_each_window_by_origin_and_sender() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).await.unwrap();
        let now = now_ms();
        // An hour ago, ten minutes ago, and now; recorded in that order, as ingest would.
        for (uid, ae, age_s) in [
            ("1", "OLD", 3600),
            ("2", "MODALITY", 600),
            ("3", "MODALITY", 5),
            ("4", "STOW", 1),
        ] {
            q.record_received(&instance(uid, ae, 100), None).await.unwrap();
            set_created(&q, uid, now - age_s * 1000).await;
        }
        let a = q.arrivals(now - 900_000, now - 60_000).await.unwrap();
        let by = |ae: &str| a.iter().find(|r| r.calling_ae.as_deref() == Some(ae)).cloned();
        assert!(by("OLD").is_none(), "{a:?}");
        let m = by("MODALITY").unwrap();
        assert_eq!((m.origin.as_str(), m.count, m.recent), ("received", 2, 1));
        assert_eq!((m.bytes, m.recent_bytes), (200, 100));
        assert_eq!((by("STOW").unwrap().count, by("STOW").unwrap().recent), (1, 1));
        // Nothing in the window: no rows, and a window before any row counts them all.
        assert!(q.arrivals(now + 1, now + 1).await.unwrap().is_empty());
        let all = q.arrivals(0, 0).await.unwrap();
        assert_eq!(all.iter().map(|r| r.count).sum::<i64>(), 4);

        q.close().await;
    }

    /// SQLite's plan for `sql` (one line per step).
    async fn plan(q: &Queue, sql: &str) -> String {
        let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
            .bind(0i64)
            .bind(0i64)
            .fetch_all(q.pool())
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn the_polled_queries_read_the_newest_rows_not_all_history() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).await.unwrap();
        let arrivals = plan(&q, ARRIVALS).await;
        assert!(
            arrivals.contains("SEARCH instances USING INTEGER PRIMARY KEY (rowid>?)"),
            "{arrivals}"
        );
        for sql in [LAST_SUCCESS, LAST_ERROR] {
            let p = plan(&q, sql).await;
            assert!(
                p.starts_with("SEARCH ev USING INTEGER PRIMARY KEY (rowid>?)"),
                "{p}"
            );
            assert!(!p.contains("TEMP B-TREE"), "sorts every event: {p}");
        }
        q.close().await;
    }

    #[tokio::test]
    async fn last_outcomes_follow_each_destinations_events() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).await.unwrap();
        let retry = RetryPolicy {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        };
        let lease = Duration::from_secs(60);
        q.record_received(&instance("src", "MODALITY", 10), Some(3))
            .await
            .unwrap();
        let job = q.claim_job("w", lease, &retry).await.unwrap().unwrap();
        let mut derived = instance("out", "MODALITY", 10);
        derived.calling_ae = None;
        assert!(q
            .complete_with_derived(
                &job,
                &[derived],
                "src",
                &["PACS".into(), "DOWN".into()],
                3,
                &StageTimings::default(),
                None
            )
            .await
            .unwrap());
        assert_eq!(q.last_outcomes("PACS").await.unwrap(), LastOutcomes::default());

        // Claim both exports (one batch per destination) and settle them.
        let mut settled = 0;
        while let Some(batch) = q.claim_exports("w", lease, 10, &retry).await.unwrap() {
            for item in &batch.items {
                if batch.destination == "PACS" {
                    assert!(q.export_done(item.id, "w", None).await.unwrap());
                } else {
                    q.fail(
                        crate::queue::Kind::Export,
                        "w",
                        item.id,
                        "association rejected",
                        true,
                        Duration::ZERO,
                    )
                    .await
                    .unwrap();
                }
                settled += 1;
            }
        }
        assert_eq!(settled, 2);
        let pacs = q.last_outcomes("PACS").await.unwrap();
        assert!(pacs.last_success_at.is_some());
        assert_eq!(pacs.last_error, None);
        let down = q.last_outcomes("DOWN").await.unwrap();
        assert_eq!(down.last_success_at, None);
        assert_eq!(down.last_error.as_deref(), Some("association rejected"));
        assert!(down.last_error_at.is_some());
        q.close().await;
    }
}
