//! Export rows: one per (derived instance, destination), leased like jobs (see the module
//! above). Claimed in batches of one destination and one series so that a DIMSE
//! destination gets one association per series.

use std::time::Duration;

use sqlx::Row;

use super::lease::{reap_expired, record_events};
use super::{now_ms, Kind, Queue, Result, RetryPolicy, State};

/// One instance to send, as claimed.
#[derive(Debug, Clone)]
pub struct ExportItem {
    pub id: i64,
    pub instance_uid: String,
    /// Relative to data_dir.
    pub path: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub created_at: i64,
}

/// A claimed batch: the same destination and series.
#[derive(Debug, Clone)]
pub struct ExportBatch {
    pub destination: String,
    pub owner: String,
    pub items: Vec<ExportItem>,
}

impl Queue {
    /// Claims up to `max` due exports of one destination and one series (see
    /// [`LeaseQueue::claim_exports`](super::LeaseQueue::claim_exports)), in one
    /// `BEGIN IMMEDIATE` transaction.
    pub(super) async fn claim_export_batch(
        &self,
        owner: &str,
        lease: Duration,
        max: usize,
        retry: &RetryPolicy,
    ) -> Result<Option<ExportBatch>> {
        let now = now_ms();
        let expires = now + lease.as_millis() as i64;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        reap_expired(&mut tx, Kind::Export, retry, now).await?;
        let first = sqlx::query(
            "SELECT e.destination, i.series_uid FROM exports e
               JOIN instances i ON i.sop_instance_uid = e.instance_uid
              WHERE e.state = 'queued' AND e.run_at <= ?1
              -- A destination that already holds a worker comes last: a PACS that stalls
              -- ties up one export worker, not all of them, while others have work.
              ORDER BY EXISTS (SELECT 1 FROM exports r
                                WHERE r.state = 'running' AND r.destination = e.destination),
                       e.run_at, e.id
              LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(first) = first else {
            tx.commit().await?;
            return Ok(None);
        };
        let destination: String = first.try_get("destination")?;
        let series: String = first.try_get("series_uid")?;
        let rows = sqlx::query(
            "UPDATE exports
                SET state = 'running', lease_owner = ?2, lease_expires_at = ?3, attempts = attempts + 1, updated_at = ?1
              WHERE id IN (SELECT e.id FROM exports e JOIN instances i ON i.sop_instance_uid = e.instance_uid
                            WHERE e.state = 'queued' AND e.run_at <= ?1 AND e.destination = ?4 AND i.series_uid = ?5
                            ORDER BY e.run_at, e.id LIMIT ?6)
          RETURNING id, instance_uid, attempts, max_attempts, created_at",
        )
        .bind(now)
        .bind(owner)
        .bind(expires)
        .bind(&destination)
        .bind(&series)
        .bind(max as i64)
        .fetch_all(&mut *tx)
        .await?;
        let ids = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<std::result::Result<Vec<i64>, _>>()?;
        record_events(&mut tx, Kind::Export, &ids, "claimed", now, Some(owner), None).await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            let instance_uid: String = r.try_get("instance_uid")?;
            let path: String = sqlx::query_scalar("SELECT path FROM instances WHERE sop_instance_uid = ?")
                .bind(&instance_uid)
                .fetch_one(&mut *tx)
                .await?;
            items.push(ExportItem {
                id: r.try_get("id")?,
                instance_uid,
                path,
                attempt: r.try_get("attempts")?,
                max_attempts: r.try_get("max_attempts")?,
                created_at: r.try_get("created_at")?,
            });
        }
        tx.commit().await?;
        items.sort_by_key(|i| i.id);
        Ok((!items.is_empty()).then(|| ExportBatch {
            destination,
            owner: owner.to_string(),
            items,
        }))
    }

    /// Counts exports per destination and state (the metrics, at scrape time).
    pub async fn export_counts(&self) -> Result<Vec<(String, State, i64)>> {
        let rows = sqlx::query(
            "SELECT destination, state, COUNT(*) AS n FROM exports GROUP BY destination, state ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("destination")?, r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }
}
