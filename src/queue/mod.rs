//! The durable queue in SQLite: instances, jobs and exports.
//!
//! The database lives at `data_dir/vcnode.sqlite`, in WAL mode with `synchronous = FULL`: a
//! committed row survives a crash and a power cut, which is what lets the SCP acknowledge.
//!
//! Jobs and exports are the two kinds of leased work and follow one policy, behind one
//! interface ([`LeaseQueue`]; this SQLite implementation is [`Queue`]): a [`State`] per row, an
//! atomic claim (`BEGIN IMMEDIATE`, so two claimers never race into SQLITE_BUSY) that counts an
//! attempt, a lease renewed while the work runs ([`keep_leases`]), exponential backoff with
//! jitter ([`RetryPolicy::backoff`]) and `dead` with the reason once the attempts are spent.
//! A lease that expires counts as an attempt too: its worker died (abort, out of memory,
//! SIGKILL), and work that keeps killing its worker must end `dead` ("worker died N times"),
//! not be retried first after every restart. A shutdown releases its leases instead: back to
//! `queued`, no attempt counted.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod exports;
mod health;
mod history;
pub mod index;
mod instances;
mod lease;
pub mod status;
pub use exports::{ExportBatch, ExportItem};
pub use health::probe_writable;
pub use history::{attempts_of, Attempt, Event, ExportView, JobView, ListFilter, StageTimings};
pub use index::IndexedAttributes;
pub use instances::StoredInstance;
pub use lease::{keep_leases, LeaseRenewal};

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

/// Where a job or an export stands. Stored as lowercase text (`'queued'`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(rename_all = "lowercase")]
pub enum State {
    /// Waiting for a worker; runnable once `run_at` has passed.
    Queued,
    /// Leased to a worker until `lease_expires_at`.
    Running,
    Done,
    /// Attempts spent or a permanent failure; `last_error` says why. `vcnode jobs retry`
    /// queues it again.
    Dead,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Done => "done",
            State::Dead => "dead",
        }
    }
}

impl serde::Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<State, String> {
        [State::Queued, State::Running, State::Done, State::Dead]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a state (queued, running, done, dead)"))
    }
}

impl PartialEq<&str> for State {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The two kinds of leased work; each has its table with the same lease columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Job,
    Export,
}

impl Kind {
    /// As `job_events.kind` stores it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Export => "export",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Export => "exports",
        }
    }
}

/// When to try again: exponential backoff from `base`, at most `cap`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): `base · 2^(attempt−1)`, at most `cap`,
    /// then shortened by up to a quarter at random so that retries after an outage spread out.
    pub fn backoff(&self, attempt: i64) -> Duration {
        let doublings = (attempt - 1).clamp(0, 30) as i32;
        let full = (self.base.as_secs_f64() * 2f64.powi(doublings)).min(self.cap.as_secs_f64());
        Duration::from_secs_f64(full * (0.75 + 0.25 * fastrand::f64()))
    }
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
    /// What QIDO-RS matches and returns (migration 0003), read from the data set.
    pub attrs: IndexedAttributes,
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
    /// When the job was queued (Unix ms): its instance's receipt.
    pub created_at: i64,
}

/// Which rows `vcnode jobs retry` queues again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// One row, if it is dead or queued (a running row belongs to its worker, a done one is done).
    One(i64),
    /// Every dead row.
    AllDead,
}

/// The claim, lease and state changes of jobs and exports. Workers see only this, so that a
/// queue shared by several nodes is a second implementation of it: on PostgreSQL a claim is
/// `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING …` and the reaping of
/// expired leases the same statements as here; only [`Queue::expire_leases_of_previous_run`]
/// is single-node (it would become "the leases of this node's id"). Every change of a leased
/// row checks that `owner` still holds it: a worker whose lease was lost changes nothing.
#[async_trait::async_trait]
pub trait LeaseQueue: Send + Sync {
    /// Claims the next due queued job for `owner` and counts the attempt. Expired leases are
    /// dealt with first (re-queued with backoff, or dead when their attempts are spent).
    async fn claim_job(&self, owner: &str, lease: Duration, retry: &RetryPolicy) -> Result<Option<JobLease>>;

    /// Claims up to `max` due exports of one destination and one series, as [`Self::claim_job`].
    async fn claim_exports(
        &self,
        owner: &str,
        lease: Duration,
        max: usize,
        retry: &RetryPolicy,
    ) -> Result<Option<ExportBatch>>;

    /// Extends `owner`'s leases on `ids` to `lease` from now; returns how many it still held.
    async fn renew(&self, kind: Kind, owner: &str, ids: &[i64], lease: Duration) -> Result<u64>;

    /// A failed attempt: `queued` again after `backoff`, or `dead` when `permanent` or out of
    /// attempts. None when `owner` no longer held the lease.
    async fn fail(
        &self,
        kind: Kind,
        owner: &str,
        id: i64,
        reason: &str,
        permanent: bool,
        backoff: Duration,
    ) -> Result<Option<State>>;

    /// Gives leases back unfinished (shutdown): `queued` in their old place, the attempt not
    /// counted. Returns how many were released.
    async fn release(&self, kind: Kind, owner: &str, ids: &[i64]) -> Result<u64>;

    /// The source file (relative to data_dir) of a job and the AE title that sent it.
    async fn job_source(&self, lease: &JobLease) -> Result<Option<(String, Option<String>)>>;

    /// Marks a held job done and records its derived instances, queueing their exports to
    /// `destinations`, in one transaction. A derived instance already recorded (a job redone
    /// after a crash: same deterministic UID) is kept once. False when the lease was lost
    /// meanwhile (nothing is written then). `note`: why a job ended done without the usual
    /// result (an input the out-of-distribution guard refused), kept as its `last_error` and
    /// on its `done` event, as [`Self::export_done`] keeps a destination's warning.
    #[allow(clippy::too_many_arguments)]
    async fn complete_with_derived(
        &self,
        lease: &JobLease,
        derived: &[NewInstance],
        source_uid: &str,
        destinations: &[String],
        export_max_attempts: u32,
        stages: &StageTimings,
        note: Option<&str>,
    ) -> Result<bool>;

    /// The destination acknowledged the instance (`note`: a warning it returned).
    async fn export_done(&self, id: i64, owner: &str, note: Option<&str>) -> Result<bool>;

    /// Queues rows again with a fresh attempt count. Returns how many.
    async fn requeue(&self, kind: Kind, which: Requeue) -> Result<u64>;

    /// An operator cancels a queued (or dead) row: it becomes `dead` with the reason
    /// [`CANCELLED`], so it is never claimed and [`Self::requeue`] can still bring it back.
    /// A running row belongs to its worker and a done one is done: false, nothing changed.
    async fn cancel(&self, kind: Kind, id: i64) -> Result<bool>;
}

/// The `last_error` of a row an operator cancelled. There is no state `cancelled`: `dead` is
/// already "terminal until an operator retries it", and a new state would mean rebuilding the
/// tables for their CHECK constraint.
pub const CANCELLED: &str = "cancelled by an operator";

/// The SQLite queue of one node (one node owns its data_dir and database file).
#[derive(Clone)]
pub struct Queue {
    pool: SqlitePool,
}

/// The SQLite implementation of [`LeaseQueue`].
pub type SqliteQueue = Queue;

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

    /// This queue as the interface the workers use.
    pub fn leases(&self) -> Arc<dyn LeaseQueue> {
        Arc::new(self.clone())
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
        let inserted = insert_instance(&mut tx, inst, "received", None, now).await?;
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

    /// At start-up: every lease still held belongs to this node's previous run, which is gone
    /// (one node owns the file), so let them expire now rather than after `lease_s`. The next
    /// claim counts each as a worker death. Returns how many.
    pub async fn expire_leases_of_previous_run(&self) -> Result<u64> {
        let mut n = 0;
        for kind in [Kind::Job, Kind::Export] {
            n += sqlx::query(&format!(
                "UPDATE {} SET lease_expires_at = 0 WHERE state = 'running'",
                kind.table()
            ))
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(n)
    }

    /// The file of an instance (relative to data_dir) and the AE title that sent it.
    pub async fn instance_source(&self, sop_instance_uid: &str) -> Result<Option<(String, Option<String>)>> {
        let row = sqlx::query("SELECT path, calling_ae FROM instances WHERE sop_instance_uid = ?")
            .bind(sop_instance_uid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get("path"), r.get("calling_ae"))))
    }

    /// Counts jobs per state, for the start-up log and `vcnode jobs`.
    pub async fn job_counts(&self) -> Result<Vec<(State, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Records an instance (`origin` 'received' or 'derived', the latter with its source) unless
/// its SOP Instance UID is held already. True when this inserted it.
async fn insert_instance(
    tx: &mut sqlx::SqliteConnection,
    inst: &NewInstance,
    origin: &str,
    source_uid: Option<&str>,
    now: i64,
) -> Result<bool> {
    let q = sqlx::query(&index::INSERT_INSTANCE)
        .bind(&inst.sop_instance_uid)
        .bind(&inst.sop_class_uid)
        .bind(&inst.study_uid)
        .bind(&inst.series_uid)
        .bind(&inst.transfer_syntax)
        .bind(origin)
        .bind(&inst.path)
        .bind(inst.bytes)
        .bind(&inst.image_type)
        .bind(&inst.calling_ae)
        .bind(source_uid)
        .bind(now);
    let n = index::bind_indexed(q, &inst.attrs)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    Ok(n == 1)
}

#[cfg(test)]
mod tests;
