//! Jobs and exports as the Jobs API shows them (`/api/jobs`, `/api/exports`): filtered and
//! paged lists, and one row's history from `job_events` (written by [`super::LeaseQueue`]).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Kind, Queue, Result, State};

/// Which rows a list holds: every condition given must hold. Times are Unix ms on `created_at`,
/// the half-open range `[since, until)`. `calling_ae` applies to jobs (the AE title that sent
/// the source), `destination` to exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<State>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub calling_ae: Option<String>,
    pub destination: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

impl Default for ListFilter {
    fn default() -> ListFilter {
        ListFilter {
            state: None,
            since: None,
            until: None,
            calling_ae: None,
            destination: None,
            limit: 100,
            offset: 0,
        }
    }
}

/// A job: its source instance and where it stands, with the exports of what it derived.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobView {
    pub id: i64,
    pub source_uid: String,
    pub study_uid: String,
    pub calling_ae: Option<String>,
    pub state: State,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    /// When it is due (queued: its next attempt, after a failure's backoff).
    pub run_at: i64,
    /// The worker holding it while it runs.
    pub lease_owner: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    #[sqlx(skip)]
    pub exports: Vec<ExportView>,
}

/// An export of a derived instance to one destination, and the job that derived it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ExportView {
    pub id: i64,
    pub job_id: Option<i64>,
    pub instance_uid: String,
    pub destination: String,
    pub state: State,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    pub run_at: i64,
    pub lease_owner: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One change of a job's or an export's state (`job_events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Event {
    pub event: String,
    pub at: i64,
    pub owner: Option<String>,
    pub error: Option<String>,
    /// [`StageTimings`] as JSON, on the event that ended a job's successful attempt.
    #[serde(skip)]
    pub stages: Option<String>,
}

/// Where a job's attempt spent its time, in milliseconds (the names of the pipeline's log line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTimings {
    /// Reading the source, decoding its pixels, preprocessing them to the model's input.
    pub prepare_ms: u64,
    /// The generator, batch wait included.
    pub inference_ms: u64,
    /// Building the derived Secondary Capture objects.
    pub postprocess_ms: u64,
    /// Encoding and writing them durably.
    pub encode_ms: u64,
}

/// One attempt: how long the row waited to be claimed, and how long its worker held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub claimed_at: i64,
    pub owner: Option<String>,
    /// From queued (created, or the end of the previous attempt, or a retry) to claimed.
    pub waited_ms: i64,
    /// The event that ended it (done, failed, dead, expired, released); none while it runs.
    pub outcome: Option<String>,
    pub ended_at: Option<i64>,
    /// Claimed to ended: the work itself (for a job: decode, inference, encode and storing).
    pub processing_ms: Option<i64>,
    /// For a job's successful attempt: how its processing time divides between stages.
    pub stages: Option<StageTimings>,
    pub error: Option<String>,
}

/// The attempts in a row's events, the row created at `created_at`.
pub fn attempts_of(created_at: i64, events: &[Event]) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut queued_since = created_at;
    for e in events {
        match e.event.as_str() {
            "claimed" => attempts.push(Attempt {
                claimed_at: e.at,
                owner: e.owner.clone(),
                waited_ms: e.at - queued_since,
                outcome: None,
                ended_at: None,
                processing_ms: None,
                stages: None,
                error: None,
            }),
            "done" | "failed" | "dead" | "expired" | "released" => {
                if let Some(a) = attempts.last_mut().filter(|a| a.outcome.is_none()) {
                    a.outcome = Some(e.event.clone());
                    a.ended_at = Some(e.at);
                    a.processing_ms = Some(e.at - a.claimed_at);
                    a.error = e.error.clone();
                    a.stages = e.stages.as_deref().and_then(|s| serde_json::from_str(s).ok());
                }
                queued_since = e.at;
            }
            // retried, cancelled: queued again (or parked) from now
            _ => queued_since = e.at,
        }
    }
    attempts
}

/// The WHERE clause of both lists; binds ?1 state, ?2 since, ?3 until, ?4 AE or destination.
fn where_clause(kind: Kind) -> &'static str {
    match kind {
        Kind::Job => {
            "WHERE (?1 IS NULL OR j.state = ?1) AND (?2 IS NULL OR j.created_at >= ?2)
               AND (?3 IS NULL OR j.created_at < ?3) AND (?4 IS NULL OR i.calling_ae = ?4)"
        }
        Kind::Export => {
            "WHERE (?1 IS NULL OR e.state = ?1) AND (?2 IS NULL OR e.created_at >= ?2)
               AND (?3 IS NULL OR e.created_at < ?3) AND (?4 IS NULL OR e.destination = ?4)"
        }
    }
}

const JOBS_FROM: &str = "FROM jobs j JOIN instances i ON i.sop_instance_uid = j.source_uid";
const JOB_COLUMNS: &str =
    "j.id, j.source_uid, i.study_uid, i.calling_ae, j.state, j.attempts, j.max_attempts,
                           j.last_error, j.run_at, j.lease_owner, j.created_at, j.updated_at";
const EXPORTS_FROM: &str = "FROM exports e JOIN instances d ON d.sop_instance_uid = e.instance_uid
                            LEFT JOIN jobs j ON j.source_uid = d.source_uid";
const EXPORT_COLUMNS: &str = "e.id, j.id AS job_id, e.instance_uid, e.destination, e.state, e.attempts,
                              e.max_attempts, e.last_error, e.run_at, e.lease_owner, e.created_at,
                              e.updated_at";

impl Queue {
    /// The jobs `filter` selects, newest first, one page, with their exports; and how many
    /// it selects in all.
    pub async fn job_views(&self, filter: &ListFilter) -> Result<(i64, Vec<JobView>)> {
        let clause = where_clause(Kind::Job);
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {JOBS_FROM} {clause}"))
            .bind(filter.state)
            .bind(filter.since)
            .bind(filter.until)
            .bind(&filter.calling_ae)
            .fetch_one(&self.pool)
            .await?;
        let mut jobs: Vec<JobView> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} {JOBS_FROM} {clause} ORDER BY j.id DESC LIMIT ?5 OFFSET ?6"
        ))
        .bind(filter.state)
        .bind(filter.since)
        .bind(filter.until)
        .bind(&filter.calling_ae)
        .bind(filter.limit)
        .bind(filter.offset)
        .fetch_all(&self.pool)
        .await?;
        self.attach_exports(&mut jobs).await?;
        Ok((total, jobs))
    }

    /// One job with its exports.
    pub async fn job_view(&self, id: i64) -> Result<Option<JobView>> {
        let job: Option<JobView> =
            sqlx::query_as(&format!("SELECT {JOB_COLUMNS} {JOBS_FROM} WHERE j.id = ?"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let mut jobs: Vec<JobView> = job.into_iter().collect();
        self.attach_exports(&mut jobs).await?;
        Ok(jobs.pop())
    }

    async fn attach_exports(&self, jobs: &mut [JobView]) -> Result<()> {
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let exports: Vec<ExportView> = sqlx::query_as(&format!(
            "SELECT {EXPORT_COLUMNS} {EXPORTS_FROM}
              WHERE j.id IN (SELECT value FROM json_each(?)) ORDER BY e.id"
        ))
        .bind(serde_json::to_string(&ids).unwrap_or_default())
        .fetch_all(&self.pool)
        .await?;
        for e in exports {
            if let Some(job) = jobs.iter_mut().find(|j| Some(j.id) == e.job_id) {
                job.exports.push(e);
            }
        }
        Ok(())
    }

    /// The exports `filter` selects, newest first, one page; and how many it selects in all.
    pub async fn export_views(&self, filter: &ListFilter) -> Result<(i64, Vec<ExportView>)> {
        let clause = where_clause(Kind::Export);
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {EXPORTS_FROM} {clause}"))
            .bind(filter.state)
            .bind(filter.since)
            .bind(filter.until)
            .bind(&filter.destination)
            .fetch_one(&self.pool)
            .await?;
        let exports = sqlx::query_as(&format!(
            "SELECT {EXPORT_COLUMNS} {EXPORTS_FROM} {clause} ORDER BY e.id DESC LIMIT ?5 OFFSET ?6"
        ))
        .bind(filter.state)
        .bind(filter.since)
        .bind(filter.until)
        .bind(&filter.destination)
        .bind(filter.limit)
        .bind(filter.offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((total, exports))
    }

    pub async fn export_view(&self, id: i64) -> Result<Option<ExportView>> {
        Ok(
            sqlx::query_as(&format!("SELECT {EXPORT_COLUMNS} {EXPORTS_FROM} WHERE e.id = ?"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The state of one job or export; None when there is no such row.
    pub async fn work_state(&self, kind: Kind, id: i64) -> Result<Option<State>> {
        let row = sqlx::query(&format!("SELECT state FROM {} WHERE id = ?", kind.table()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("state")?)).transpose()
    }

    /// What happened to one job or export, oldest first.
    pub async fn events(&self, kind: Kind, id: i64) -> Result<Vec<Event>> {
        Ok(sqlx::query_as(
            "SELECT event, at, owner, error, stages FROM job_events WHERE kind = ? AND work_id = ? ORDER BY id",
        )
        .bind(kind.name())
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, at: i64, error: Option<&str>) -> Event {
        Event {
            event: event.into(),
            at,
            owner: Some("w".into()),
            error: error.map(Into::into),
            stages: None,
        }
    }

    #[test]
    fn attempts_time_the_wait_and_the_work_of_each_claim() {
        let events = [
            ev("claimed", 110, None),
            ev("failed", 150, Some("boom")),
            ev("claimed", 400, None),
            ev("done", 700, None),
        ];
        let a = attempts_of(100, &events);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].waited_ms, a[0].processing_ms), (10, Some(40)));
        assert_eq!(a[0].outcome.as_deref(), Some("failed"));
        assert_eq!(a[0].error.as_deref(), Some("boom"));
        assert_eq!((a[1].waited_ms, a[1].processing_ms), (250, Some(300)));
        assert_eq!(a[1].outcome.as_deref(), Some("done"));
        // A retry restarts the wait; an attempt still running has no outcome.
        let a = attempts_of(
            0,
            &[
                ev("cancelled", 5, None),
                ev("retried", 50, None),
                ev("claimed", 80, None),
            ],
        );
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].waited_ms, a[0].outcome.clone()), (30, None));
    }
}
