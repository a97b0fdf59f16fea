//! The SQLite implementation of [`LeaseQueue`], and the renewal of leases while work runs.
//!
//! Claims run in `BEGIN IMMEDIATE` transactions: the write lock is taken before the first read,
//! so two claimers queue up on the busy timeout instead of one failing with SQLITE_BUSY when a
//! deferred read transaction tries to become a write transaction.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Row, SqliteConnection};
use tracing::warn;

use super::{
    insert_instance, now_ms, ExportBatch, JobLease, Kind, LeaseQueue, NewInstance, Queue, Requeue, Result,
    RetryPolicy, StageTimings, State, CANCELLED,
};

/// The ids as a JSON array, for `id IN (SELECT value FROM json_each(?))`.
fn id_list(ids: &[i64]) -> String {
    let items: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("[{}]", items.join(","))
}

/// Records that `event` happened to rows `ids` of `kind`, on the connection (transaction) of
/// the change itself, so that a change and its event are committed together or not at all.
pub(super) async fn record_events(
    conn: &mut SqliteConnection,
    kind: Kind,
    ids: &[i64],
    event: &str,
    at: i64,
    owner: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_events (kind, work_id, event, at, owner, error)
         SELECT ?1, value, ?2, ?3, ?4, ?5 FROM json_each(?6)",
    )
    .bind(kind.name())
    .bind(event)
    .bind(at)
    .bind(owner)
    .bind(error)
    .bind(id_list(ids))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn died(n: i64) -> String {
    format!("worker died {n} time{}", if n == 1 { "" } else { "s" })
}

/// Deals with the expired leases of `kind`: each is a worker that died holding it. With
/// attempts left the row is queued again after the backoff of its attempt (so a crash loop
/// slows down instead of being retried first); with none left it is dead.
pub(super) async fn reap_expired(
    conn: &mut SqliteConnection,
    kind: Kind,
    retry: &RetryPolicy,
    now: i64,
) -> Result<()> {
    let table = kind.table();
    let expired = sqlx::query(&format!(
        "SELECT id, attempts, max_attempts, lease_expiries, lease_owner FROM {table}
          WHERE state = 'running' AND lease_expires_at < ?"
    ))
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    for r in expired {
        let (id, attempts, max_attempts): (i64, i64, i64) = (
            r.try_get("id")?,
            r.try_get("attempts")?,
            r.try_get("max_attempts")?,
        );
        let deaths = r.try_get::<i64, _>("lease_expiries")? + 1;
        let owner: Option<String> = r.try_get("lease_owner")?;
        let (state, run_at) = if attempts >= max_attempts {
            (State::Dead, now)
        } else {
            (State::Queued, now + retry.backoff(attempts).as_millis() as i64)
        };
        let reason = died(deaths);
        sqlx::query(&format!(
            "UPDATE {table} SET state = ?1, run_at = ?2, lease_expiries = ?3, last_error = ?4,
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = ?5
              WHERE id = ?6"
        ))
        .bind(state)
        .bind(run_at)
        .bind(deaths)
        .bind(&reason)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        let event = if state == State::Dead { "dead" } else { "expired" };
        record_events(conn, kind, &[id], event, now, owner.as_deref(), Some(&reason)).await?;
        warn!(
            kind = table,
            id,
            owner = owner.as_deref().unwrap_or(""),
            attempt = attempts,
            max_attempts,
            state = %state,
            "lease expired: {reason}"
        );
    }
    Ok(())
}

#[async_trait::async_trait]
impl LeaseQueue for Queue {
    async fn claim_job(&self, owner: &str, lease: Duration, retry: &RetryPolicy) -> Result<Option<JobLease>> {
        let now = now_ms();
        let expires = now + lease.as_millis() as i64;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        reap_expired(&mut tx, Kind::Job, retry, now).await?;
        let row = sqlx::query(
            "UPDATE jobs
                SET state = 'running', lease_owner = ?1, lease_expires_at = ?2,
                    attempts = attempts + 1, updated_at = ?3
              WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND run_at <= ?3
                           ORDER BY run_at, id LIMIT 1)
          RETURNING id, source_uid, attempts, max_attempts, created_at",
        )
        .bind(owner)
        .bind(expires)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = &row {
            record_events(
                &mut tx,
                Kind::Job,
                &[r.try_get("id")?],
                "claimed",
                now,
                Some(owner),
                None,
            )
            .await?;
        }
        tx.commit().await?;
        row.map(|r| {
            Ok(JobLease {
                job_id: r.try_get("id")?,
                source_uid: r.try_get("source_uid")?,
                owner: owner.to_string(),
                attempt: r.try_get("attempts")?,
                max_attempts: r.try_get("max_attempts")?,
                expires_at: expires,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn claim_exports(
        &self,
        owner: &str,
        lease: Duration,
        max: usize,
        retry: &RetryPolicy,
    ) -> Result<Option<ExportBatch>> {
        self.claim_export_batch(owner, lease, max, retry).await
    }

    async fn renew(&self, kind: Kind, owner: &str, ids: &[i64], lease: Duration) -> Result<u64> {
        let now = now_ms();
        Ok(sqlx::query(&format!(
            "UPDATE {} SET lease_expires_at = ?1, updated_at = ?2
              WHERE id IN (SELECT value FROM json_each(?3)) AND state = 'running' AND lease_owner = ?4",
            kind.table()
        ))
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(id_list(ids))
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn fail(
        &self,
        kind: Kind,
        owner: &str,
        id: i64,
        reason: &str,
        permanent: bool,
        backoff: Duration,
    ) -> Result<Option<State>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let state: Option<State> = sqlx::query_scalar(&format!(
            "UPDATE {}
                SET state = CASE WHEN ?1 OR attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                    run_at = ?2, last_error = ?3, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4
              WHERE id = ?5 AND state = 'running' AND lease_owner = ?6
          RETURNING state",
            kind.table()
        ))
        .bind(permanent)
        .bind(now + backoff.as_millis() as i64)
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(state) = state {
            let event = if state == State::Dead { "dead" } else { "failed" };
            record_events(&mut tx, kind, &[id], event, now, Some(owner), Some(reason)).await?;
        }
        tx.commit().await?;
        Ok(state)
    }

    async fn release(&self, kind: Kind, owner: &str, ids: &[i64]) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let released: Vec<i64> = sqlx::query_scalar(&format!(
            "UPDATE {}
                SET state = 'queued', attempts = MAX(attempts - 1, 0), lease_owner = NULL,
                    lease_expires_at = NULL, updated_at = ?1
              WHERE id IN (SELECT value FROM json_each(?2)) AND state = 'running' AND lease_owner = ?3
          RETURNING id",
            kind.table()
        ))
        .bind(now)
        .bind(id_list(ids))
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        record_events(&mut tx, kind, &released, "released", now, Some(owner), None).await?;
        tx.commit().await?;
        Ok(released.len() as u64)
    }

    async fn job_source(&self, lease: &JobLease) -> Result<Option<(String, Option<String>)>> {
        self.instance_source(&lease.source_uid).await
    }

    async fn complete_with_derived(
        &self,
        lease: &JobLease,
        derived: &[NewInstance],
        source_uid: &str,
        destinations: &[String],
        export_max_attempts: u32,
        stages: &StageTimings,
        note: Option<&str>,
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, last_error = ?,
                    updated_at = ?
              WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )
        .bind(note)
        .bind(now)
        .bind(lease.job_id)
        .bind(&lease.owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        record_events(
            &mut tx,
            Kind::Job,
            &[lease.job_id],
            "done",
            now,
            Some(&lease.owner),
            note,
        )
        .await?;
        sqlx::query("UPDATE job_events SET stages = ? WHERE id = last_insert_rowid()")
            .bind(serde_json::to_string(stages).ok())
            .execute(&mut *tx)
            .await?;
        for d in derived {
            insert_instance(&mut tx, d, "derived", Some(source_uid), now).await?;
            for dest in destinations {
                sqlx::query(
                    "INSERT INTO exports (instance_uid, destination, max_attempts, run_at, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (instance_uid, destination) DO NOTHING",
                )
                .bind(&d.sop_instance_uid)
                .bind(dest)
                .bind(export_max_attempts as i64)
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn export_done(&self, id: i64, owner: &str, note: Option<&str>) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE exports SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, last_error = ?,
                    updated_at = ? WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )
        .bind(note)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            record_events(&mut tx, Kind::Export, &[id], "done", now, Some(owner), note).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn requeue(&self, kind: Kind, which: Requeue) -> Result<u64> {
        let now = now_ms();
        let (id, all_dead) = match which {
            Requeue::One(id) => (Some(id), false),
            Requeue::AllDead => (None, true),
        };
        let mut tx = self.pool.begin().await?;
        let requeued: Vec<i64> = sqlx::query_scalar(&format!(
            "UPDATE {}
                SET state = 'queued', attempts = 0, lease_expiries = 0, run_at = ?1, last_error = NULL,
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1
              WHERE (?2 AND state = 'dead') OR (id = ?3 AND state IN ('dead', 'queued'))
          RETURNING id",
            kind.table()
        ))
        .bind(now)
        .bind(all_dead)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        record_events(&mut tx, kind, &requeued, "retried", now, None, None).await?;
        tx.commit().await?;
        Ok(requeued.len() as u64)
    }

    async fn cancel(&self, kind: Kind, id: i64) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let cancelled = sqlx::query(&format!(
            "UPDATE {}
                SET state = 'dead', last_error = ?1, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?2
              WHERE id = ?3 AND state IN ('queued', 'dead')",
            kind.table()
        ))
        .bind(CANCELLED)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if cancelled {
            record_events(&mut tx, kind, &[id], "cancelled", now, None, Some(CANCELLED)).await?;
        }
        tx.commit().await?;
        Ok(cancelled)
    }
}

/// Renews leases every third of `lease` while the work runs; stops when dropped.
pub struct LeaseRenewal(tokio::task::JoinHandle<()>);

impl Drop for LeaseRenewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps `owner`'s leases on `ids` alive until the returned guard is dropped. A lost lease is
/// logged; the worker learns of it when its final state change finds nothing to change.
pub fn keep_leases(
    queue: Arc<dyn LeaseQueue>,
    kind: Kind,
    owner: String,
    ids: Vec<i64>,
    lease: Duration,
) -> LeaseRenewal {
    LeaseRenewal(tokio::spawn(async move {
        let every = lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match queue.renew(kind, &owner, &ids, lease).await {
                Ok(n) if n as usize == ids.len() => {}
                Ok(n) => {
                    warn!(?kind, owner, held = n, of = ids.len(), "lease lost while working");
                    if n == 0 {
                        return;
                    }
                }
                // A busy database is retried at the next tick; the lease has two more.
                Err(e) => warn!(?kind, owner, error = %e, "cannot renew a lease"),
            }
        }
    }))
}
