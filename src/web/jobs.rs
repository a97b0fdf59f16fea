//! The Jobs API (JSON under `/api`): jobs and exports listed with filters and paging, one
//! row's history, and an operator's retry and cancel.
//!
//! - `GET /api/jobs?state=&since=&until=&calling_ae=&limit=&offset=` →
//!   `{"total": n, "jobs": [job…]}`, newest first; each job with its exports.
//! - `GET /api/exports?state=&since=&until=&destination=&limit=&offset=` →
//!   `{"total": n, "exports": [export…]}`.
//! - `GET /api/jobs/{id}`, `GET /api/exports/{id}` → `{"job"|"export": …, "events": […],
//!   "attempts": […]}`: every state change (claimed, failed, expired, released, done, dead,
//!   retried, cancelled) with its time, worker and error, and per attempt the wait for a worker
//!   and the time the worker held it; a job's successful attempt also says how that time divides
//!   between its stages (`stages`: prepare_ms, inference_ms, postprocess_ms, encode_ms).
//! - `POST /api/jobs/{id}/retry` (as `vcnode jobs retry ID`: a dead or queued row queued again
//!   with fresh attempts) and `POST /api/jobs/{id}/cancel` (a queued or dead row becomes `dead`,
//!   "cancelled by an operator"); the same under `/api/exports/{id}/`. Both answer the row as
//!   it is then; 409 when it is running (retry after it ends) or done.
//!
//! Times, in answers and in `since`/`until`, are Unix milliseconds (UTC); `since`/`until` also
//! take RFC 3339 (`2026-12-03T14:00:00Z`). The range is half-open on `created_at`:
//! `since <= created_at < until`. `limit` is 100 by default, at most 1000. Unknown parameters
//! are refused (400) rather than ignored: a misspelt filter must not list everything.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{WebError, WebState};
use crate::queue::{attempts_of, Kind, LeaseQueue, ListFilter, Requeue, State as WorkState};

pub(super) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/exports", get(list_exports))
        .route("/exports/{id}", get(export))
        .route("/exports/{id}/retry", post(retry_export))
        .route("/exports/{id}/cancel", post(cancel_export))
}

pub const MAX_LIMIT: i64 = 1000;

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// Reads a list's query: `by` is the name of its third filter (`calling_ae` for jobs,
/// `destination` for exports).
fn parse_filter(pairs: &[(String, String)], by: &str) -> Result<ListFilter, WebError> {
    let mut f = ListFilter::default();
    for (key, value) in pairs {
        let number = |what: &str| {
            value
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| WebError::bad_request(format!("{what} must be a whole number >= 0")))
        };
        match key.as_str() {
            "state" => f.state = Some(value.parse().map_err(WebError::bad_request)?),
            "since" => f.since = Some(parse_time(value)?),
            "until" => f.until = Some(parse_time(value)?),
            "limit" => {
                f.limit = number("limit")?;
                if f.limit == 0 || f.limit > MAX_LIMIT {
                    return Err(WebError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")));
                }
            }
            "offset" => f.offset = number("offset")?,
            k if k == by && by == "calling_ae" => f.calling_ae = Some(value.clone()),
            k if k == by && by == "destination" => f.destination = Some(value.clone()),
            other => {
                return Err(WebError::bad_request(format!(
                    "unknown parameter {other:?} (state, since, until, {by}, limit, offset)"
                )))
            }
        }
    }
    Ok(f)
}

/// Unix milliseconds, or an RFC 3339 date-time with its offset.
pub(super) fn parse_time(value: &str) -> Result<i64, WebError> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            WebError::bad_request(format!(
                "{value:?} is not a time: Unix milliseconds or RFC 3339 (2026-12-03T14:00:00Z)"
            ))
        })
}

fn parse_id(kind: Kind, id: &str) -> Result<i64, WebError> {
    id.parse()
        .map_err(|_| WebError::bad_request(format!("{id:?} is not a {} id", kind.name())))
}

fn query_pairs(pairs: Pairs) -> Result<Vec<(String, String)>, WebError> {
    pairs
        .map(|Query(p)| p)
        .map_err(|e| WebError::bad_request(e.body_text()))
}

async fn list_jobs(State(state): State<Arc<WebState>>, pairs: Pairs) -> Result<Json<Value>, WebError> {
    let filter = parse_filter(&query_pairs(pairs)?, "calling_ae")?;
    let (total, jobs) = state.queue.job_views(&filter).await.map_err(WebError::internal)?;
    Ok(Json(json!({ "total": total, "jobs": jobs })))
}

async fn list_exports(State(state): State<Arc<WebState>>, pairs: Pairs) -> Result<Json<Value>, WebError> {
    let filter = parse_filter(&query_pairs(pairs)?, "destination")?;
    let (total, exports) = state
        .queue
        .export_views(&filter)
        .await
        .map_err(WebError::internal)?;
    Ok(Json(json!({ "total": total, "exports": exports })))
}

fn unknown(kind: Kind, id: i64) -> WebError {
    WebError::not_found(format!("no {} {id}", kind.name()))
}

/// The row with its events and attempts.
async fn history(state: &WebState, kind: Kind, id: i64) -> Result<Value, WebError> {
    let (row, created_at) = match kind {
        Kind::Job => {
            let j = state.queue.job_view(id).await.map_err(WebError::internal)?;
            let j = j.ok_or_else(|| unknown(kind, id))?;
            (serde_json::to_value(&j), j.created_at)
        }
        Kind::Export => {
            let e = state.queue.export_view(id).await.map_err(WebError::internal)?;
            let e = e.ok_or_else(|| unknown(kind, id))?;
            (serde_json::to_value(&e), e.created_at)
        }
    };
    let events = state.queue.events(kind, id).await.map_err(WebError::internal)?;
    let attempts = attempts_of(created_at, &events);
    Ok(json!({
        kind.name(): row.map_err(WebError::internal)?,
        "events": events,
        "attempts": attempts,
    }))
}

async fn job(State(state): State<Arc<WebState>>, Path(id): Path<String>) -> Result<Json<Value>, WebError> {
    Ok(Json(history(&state, Kind::Job, parse_id(Kind::Job, &id)?).await?))
}

async fn export(State(state): State<Arc<WebState>>, Path(id): Path<String>) -> Result<Json<Value>, WebError> {
    Ok(Json(
        history(&state, Kind::Export, parse_id(Kind::Export, &id)?).await?,
    ))
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Retry,
    Cancel,
}

type Acted = Result<Json<Value>, WebError>;

async fn retry_job(s: State<Arc<WebState>>, id: Path<String>) -> Acted {
    act(s, id, Kind::Job, Action::Retry).await
}
async fn cancel_job(s: State<Arc<WebState>>, id: Path<String>) -> Acted {
    act(s, id, Kind::Job, Action::Cancel).await
}
async fn retry_export(s: State<Arc<WebState>>, id: Path<String>) -> Acted {
    act(s, id, Kind::Export, Action::Retry).await
}
async fn cancel_export(s: State<Arc<WebState>>, id: Path<String>) -> Acted {
    act(s, id, Kind::Export, Action::Cancel).await
}

/// Retry or cancel through the queue's own state changes ([`LeaseQueue::requeue`], the code
/// `vcnode jobs retry` runs, and [`LeaseQueue::cancel`]); answers the row's history after it.
async fn act(
    State(state): State<Arc<WebState>>,
    Path(id): Path<String>,
    kind: Kind,
    action: Action,
) -> Result<Json<Value>, WebError> {
    let id = parse_id(kind, &id)?;
    let queue = &state.queue;
    let changed = match action {
        Action::Retry => queue.requeue(kind, Requeue::One(id)).await.map(|n| n == 1),
        Action::Cancel => queue.cancel(kind, id).await,
    }
    .map_err(WebError::internal)?;
    if !changed {
        let now = queue.work_state(kind, id).await.map_err(WebError::internal)?;
        let what = kind.name();
        return Err(match now {
            None => unknown(kind, id),
            Some(WorkState::Running) => WebError::new(
                StatusCode::CONFLICT,
                format!("{what} {id} is running; retry after it ends"),
            ),
            Some(s) => WebError::new(StatusCode::CONFLICT, format!("{what} {id} is {s}")),
        });
    }
    Ok(Json(history(&state, kind, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        let uri: axum::http::Uri = format!("/?{q}").parse().unwrap();
        Query::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn filters_are_read_or_refused_by_name() {
        let f = parse_filter(
            &pairs("state=dead&calling_ae=MODALITY&limit=2&offset=4"),
            "calling_ae",
        )
        .unwrap();
        assert_eq!(f.state, Some(WorkState::Dead));
        assert_eq!(f.calling_ae.as_deref(), Some("MODALITY"));
        assert_eq!((f.limit, f.offset), (2, 4));
        assert_eq!(parse_filter(&[], "calling_ae").unwrap(), ListFilter::default());
        assert_eq!(ListFilter::default().limit, 100);
        let f = parse_filter(&pairs("destination=PACS"), "destination").unwrap();
        assert_eq!(f.destination.as_deref(), Some("PACS"));
        for bad in [
            "state=lost",
            "limit=0",
            "limit=1001",
            "limit=ten",
            "offset=-1",
            "since=yesterday",
            "destination=PACS",
            "stat=dead",
        ] {
            let e = parse_filter(&pairs(bad), "calling_ae").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(parse_filter(&pairs("calling_ae=X"), "destination").is_err());
        assert_eq!(
            parse_filter(&pairs("limit=1000"), "calling_ae").unwrap().limit,
            MAX_LIMIT
        );
    }

    #[test]
    fn times_are_unix_ms_or_rfc_3339() {
        assert_eq!(parse_time("1764770400000").unwrap(), 1_764_770_400_000);
        assert_eq!(parse_time("2025-12-03T14:00:00Z").unwrap(), 1_764_770_400_000);
        assert_eq!(
            parse_time("2025-12-03T15:00:00.5+01:00").unwrap(),
            1_764_770_400_500
        );
        assert!(parse_time("2025-12-03").is_err());
        assert_eq!(
            parse_filter(&pairs("since=0&until=2025-12-03T14:00:00Z"), "calling_ae")
                .unwrap()
                .until,
            Some(1_764_770_400_000)
        );
    }
}
