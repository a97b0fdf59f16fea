//! Export rows: one per (derived instance, destination), with attempts, backoff and a
//! dead-letter state. Claimed in batches of one destination and one series so that a DIMSE
//! destination gets one association per series.

use std::time::Duration;

use sqlx::Row;

use super::{now_ms, Queue, Result};

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

/// An export as `vcnode jobs` shows it.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub id: i64,
    pub instance_uid: String,
    pub destination: String,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
}

const DUE: &str =
    "((e.state = 'queued' AND e.run_at <= ?1) OR (e.state = 'running' AND e.lease_expires_at < ?1))";

impl Queue {
    /// Claims up to `max` due exports of one destination and one series.
    pub async fn claim_exports(
        &self,
        owner: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Option<ExportBatch>> {
        let now = now_ms();
        let expires = now + lease.as_millis() as i64;
        let mut tx = self.pool.begin().await?;
        let first = sqlx::query(&format!(
            "SELECT e.id, e.destination, i.series_uid FROM exports e
               JOIN instances i ON i.sop_instance_uid = e.instance_uid
              WHERE {DUE} ORDER BY e.run_at, e.id LIMIT 1"
        ))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(first) = first else {
            return Ok(None);
        };
        let destination: String = first.get("destination");
        let series: String = first.get("series_uid");
        let rows = sqlx::query(&format!(
            "UPDATE exports
                SET state = 'running', lease_owner = ?2, lease_expires_at = ?3, attempts = attempts + 1, updated_at = ?1
              WHERE id IN (SELECT e.id FROM exports e JOIN instances i ON i.sop_instance_uid = e.instance_uid
                            WHERE {DUE} AND e.destination = ?4 AND i.series_uid = ?5
                            ORDER BY e.run_at, e.id LIMIT ?6)
          RETURNING id, instance_uid, attempts, max_attempts, created_at"
        ))
        .bind(now)
        .bind(owner)
        .bind(expires)
        .bind(&destination)
        .bind(&series)
        .bind(max as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            let instance_uid: String = r.get("instance_uid");
            let path: String = sqlx::query_scalar("SELECT path FROM instances WHERE sop_instance_uid = ?")
                .bind(&instance_uid)
                .fetch_one(&mut *tx)
                .await?;
            items.push(ExportItem {
                id: r.get("id"),
                instance_uid,
                path,
                attempt: r.get("attempts"),
                max_attempts: r.get("max_attempts"),
                created_at: r.get("created_at"),
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

    /// The destination acknowledged the instance (`note`: a warning it returned).
    pub async fn export_done(&self, id: i64, owner: &str, note: Option<&str>) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE exports SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, last_error = ?,
                    updated_at = ? WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )
        .bind(note)
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A failed attempt: queued again after `backoff`, or dead when permanent, out of attempts,
    /// or older than `max_age`. Returns the new state.
    pub async fn export_failed(
        &self,
        item: &ExportItem,
        owner: &str,
        error: &str,
        backoff: Duration,
        permanent: bool,
        max_age: Duration,
    ) -> Result<String> {
        let now = now_ms();
        let too_old = now - item.created_at > max_age.as_millis() as i64;
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE exports
                SET state = CASE WHEN ?1 OR attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                    run_at = ?2, last_error = ?3, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4
              WHERE id = ?5 AND state = 'running' AND lease_owner = ?6
          RETURNING state",
        )
        .bind(permanent || too_old)
        .bind(now + backoff.as_millis() as i64)
        .bind(error)
        .bind(now)
        .bind(item.id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        Ok(state.unwrap_or_else(|| "lost".to_string()))
    }

    pub async fn list_exports(&self) -> Result<Vec<ExportRow>> {
        let rows = sqlx::query(
            "SELECT id, instance_uid, destination, state, attempts, max_attempts, last_error FROM exports ORDER BY id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ExportRow {
                id: r.get("id"),
                instance_uid: r.get("instance_uid"),
                destination: r.get("destination"),
                state: r.get("state"),
                attempts: r.get("attempts"),
                max_attempts: r.get("max_attempts"),
                last_error: r.get("last_error"),
            })
            .collect())
    }
}
