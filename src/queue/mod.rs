//! The durable job queue in SQLite: instances, jobs and (later) exports.
//!
//! The database lives at `data_dir/vcnode.sqlite`, in WAL mode with `synchronous = FULL`: a
//! committed row survives a crash and a power cut, which is what lets the SCP acknowledge.
//! Jobs are claimed with one atomic `UPDATE … RETURNING`, under a lease that the worker renews;
//! a job whose lease expired (its worker died) is claimable again.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod exports;
pub use exports::{ExportBatch, ExportItem, ExportRow};

pub const DB_FILE: &str = "vcnode.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("job database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T> = std::result::Result<T, QueueError>;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A received instance to record, with where its file lies (relative to data_dir).
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub transfer_syntax: String,
    pub path: String,
    pub bytes: i64,
    pub image_type: Option<String>,
    pub calling_ae: Option<String>,
}

/// What recording an instance did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// False when the SOP Instance UID was already held (a duplicate C-STORE).
    pub new_instance: bool,
    pub job_id: Option<i64>,
}

/// A job claimed by a worker until `expires_at` (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    pub job_id: i64,
    pub source_uid: String,
    pub owner: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub expires_at: i64,
}

/// A job as `vcnode jobs` shows it.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub source_uid: String,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub lease_owner: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

#[derive(Clone)]
pub struct Queue {
    pool: SqlitePool,
}

impl Queue {
    /// Opens (creating if needed) the database under `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<Queue> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: fsync the WAL on every commit, so an acknowledged instance's row
            // survives power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Queue { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn instance_exists(&self, sop_instance_uid: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM instances WHERE sop_instance_uid = ?")
            .bind(sop_instance_uid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Records a received instance and, when `job_max_attempts` is given, queues its job, in one
    /// transaction. A duplicate SOP Instance UID records nothing and queues nothing.
    pub async fn record_received(
        &self,
        inst: &NewInstance,
        job_max_attempts: Option<u32>,
    ) -> Result<Recorded> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO instances (sop_instance_uid, sop_class_uid, study_uid, series_uid, transfer_syntax,
                                    origin, path, bytes, image_type, calling_ae, created_at)
             VALUES (?, ?, ?, ?, ?, 'received', ?, ?, ?, ?, ?)
             ON CONFLICT (sop_instance_uid) DO NOTHING",
        )
        .bind(&inst.sop_instance_uid)
        .bind(&inst.sop_class_uid)
        .bind(&inst.study_uid)
        .bind(&inst.series_uid)
        .bind(&inst.transfer_syntax)
        .bind(&inst.path)
        .bind(inst.bytes)
        .bind(&inst.image_type)
        .bind(&inst.calling_ae)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let mut job_id = None;
        if let (true, Some(max_attempts)) = (inserted, job_max_attempts) {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (source_uid, max_attempts, run_at, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(&inst.sop_instance_uid)
            .bind(max_attempts as i64)
            .bind(now)
            .bind(now)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            job_id = Some(id);
        }
        tx.commit().await?;
        Ok(Recorded {
            new_instance: inserted,
            job_id,
        })
    }

    /// Claims the next runnable job — queued and due, or running with an expired lease — for
    /// `owner`, in one atomic statement. Counts the attempt.
    pub async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<JobLease>> {
        let now = now_ms();
        let expires = now + lease.as_millis() as i64;
        let row = sqlx::query(
            "UPDATE jobs
                SET state = 'running', lease_owner = ?1, lease_expires_at = ?2,
                    attempts = attempts + 1, updated_at = ?3
              WHERE id = (SELECT id FROM jobs
                           WHERE (state = 'queued' AND run_at <= ?3)
                              OR (state = 'running' AND lease_expires_at < ?3)
                           ORDER BY run_at, id
                           LIMIT 1)
          RETURNING id, source_uid, attempts, max_attempts",
        )
        .bind(owner)
        .bind(expires)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| JobLease {
            job_id: r.get("id"),
            source_uid: r.get("source_uid"),
            owner: owner.to_string(),
            attempt: r.get("attempts"),
            max_attempts: r.get("max_attempts"),
            expires_at: expires,
        }))
    }

    /// Extends a lease the worker still holds. False when it was lost (expired and re-claimed).
    pub async fn renew(&self, lease: &mut JobLease, by: Duration) -> Result<bool> {
        let expires = now_ms() + by.as_millis() as i64;
        let n = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?, updated_at = ?
              WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )
        .bind(expires)
        .bind(now_ms())
        .bind(lease.job_id)
        .bind(&lease.owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 1 {
            lease.expires_at = expires;
        }
        Ok(n == 1)
    }

    /// Records a failed attempt: back to `queued` after `backoff`, or `dead` once the attempts
    /// are spent (or at once when `permanent`). Returns the new state.
    pub async fn fail(
        &self,
        lease: &JobLease,
        error: &str,
        backoff: Duration,
        permanent: bool,
    ) -> Result<String> {
        let now = now_ms();
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE jobs
                SET state = CASE WHEN ?1 OR attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                    run_at = ?2, last_error = ?3, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4
              WHERE id = ?5 AND state = 'running' AND lease_owner = ?6
          RETURNING state",
        )
        .bind(permanent)
        .bind(now + backoff.as_millis() as i64)
        .bind(error)
        .bind(now)
        .bind(lease.job_id)
        .bind(&lease.owner)
        .fetch_optional(&self.pool)
        .await?;
        Ok(state.unwrap_or_else(|| "lost".to_string()))
    }

    /// The file of an instance (relative to data_dir) and the AE title that sent it.
    pub async fn instance_source(&self, sop_instance_uid: &str) -> Result<Option<(String, Option<String>)>> {
        let row = sqlx::query("SELECT path, calling_ae FROM instances WHERE sop_instance_uid = ?")
            .bind(sop_instance_uid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get("path"), r.get("calling_ae"))))
    }

    /// Marks a held job done and records its derived instance, in one transaction. A derived
    /// instance already recorded (a job redone after a crash: same deterministic UID) is kept
    /// once. False when the lease was lost meanwhile (nothing is written then).
    /// Exports of the derived instances to `destinations` are queued in the same transaction.
    pub async fn complete_with_derived(
        &self,
        lease: &JobLease,
        derived: &[NewInstance],
        source_uid: &str,
        destinations: &[String],
        export_max_attempts: u32,
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, last_error = NULL,
                    updated_at = ?
              WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )
        .bind(now)
        .bind(lease.job_id)
        .bind(&lease.owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        for d in derived {
            sqlx::query(
                "INSERT INTO instances (sop_instance_uid, sop_class_uid, study_uid, series_uid, transfer_syntax,
                                        origin, path, bytes, image_type, source_uid, created_at)
                 VALUES (?, ?, ?, ?, ?, 'derived', ?, ?, ?, ?, ?)
                 ON CONFLICT (sop_instance_uid) DO NOTHING",
            )
            .bind(&d.sop_instance_uid)
            .bind(&d.sop_class_uid)
            .bind(&d.study_uid)
            .bind(&d.series_uid)
            .bind(&d.transfer_syntax)
            .bind(&d.path)
            .bind(d.bytes)
            .bind(&d.image_type)
            .bind(source_uid)
            .bind(now)
            .execute(&mut *tx)
            .await?;
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

    /// All jobs, newest first, optionally of one state.
    pub async fn list_jobs(&self, state: Option<&str>) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(
            "SELECT id, source_uid, state, attempts, max_attempts, run_at, lease_owner, last_error, updated_at
               FROM jobs WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC",
        )
        .bind(state)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| JobRow {
                id: r.get("id"),
                source_uid: r.get("source_uid"),
                state: r.get("state"),
                attempts: r.get("attempts"),
                max_attempts: r.get("max_attempts"),
                run_at: r.get("run_at"),
                lease_owner: r.get("lease_owner"),
                last_error: r.get("last_error"),
                updated_at: r.get("updated_at"),
            })
            .collect())
    }

    /// Counts jobs per state, for the start-up log and `vcnode jobs`.
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get("state"), r.get("n"))).collect())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;
