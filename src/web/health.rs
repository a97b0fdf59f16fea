//! Health, readiness and metrics for operators and their monitoring:
//! - `GET /healthz`: the process answers (200).
//! - `GET /readyz`: 200 when the node can take images, else 503; either way a JSON body that
//!   names each check and, for a failing one, why (`database`, `disk`, `model`, `scp`).
//! - `GET /metrics`: Prometheus text format ([`crate::metrics`]).
//!
//! They are open (no authentication): monitoring scrapes them without credentials. Issue 15's
//! tokens will add a configuration switch to protect them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::warn;

use super::WebState;
use crate::metrics as m;
use crate::queue::State as RowState;

/// What the node reports about itself as it starts and stops (set by [`crate::node::serve`]).
#[derive(Debug, Default)]
pub struct Readiness {
    /// The storage SCP is accepting associations.
    pub scp_listening: AtomicBool,
    /// The generator of `[inference] model` is loaded.
    pub model_loaded: AtomicBool,
}

/// How long the database check waits for a lock.
const DB_LOCK_WAIT: Duration = Duration::from_secs(1);
/// The database check as a whole (opening the file included).
const DB_CHECK_LIMIT: Duration = Duration::from_secs(3);

pub(super) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// One readiness check: None when it passes, else why not (never a path).
pub(super) type Check = (&'static str, Option<String>);

async fn readyz(State(state): State<Arc<WebState>>) -> Response {
    readiness_response(&readiness_checks(&state).await)
}

/// Every check `/readyz` makes (the status page shows them too).
pub(super) async fn readiness_checks(state: &WebState) -> Vec<Check> {
    vec![
        ("database", database_check(state).await),
        ("disk", disk_check(state)),
        ("model", model_check(state)),
        ("scp", scp_check(state)),
    ]
}

fn readiness_response(checks: &[Check]) -> Response {
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, why)| why.is_some())
        .map(|(name, _)| *name)
        .collect();
    let ready = failing.is_empty();
    let body = json!({
        "ready": ready,
        "failing": failing,
        "checks": checks.iter().map(|(name, why)| match why {
            None => json!({"check": name, "ok": true}),
            Some(why) => json!({"check": name, "ok": false, "reason": why}),
        }).collect::<Vec<_>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn database_check(state: &WebState) -> Option<String> {
    let probe = crate::queue::probe_writable(&state.config.node.data_dir, DB_LOCK_WAIT);
    match tokio::time::timeout(DB_CHECK_LIMIT, probe).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            warn!(error = %e, "readiness: the database cannot be written");
            // SQLite's own message ("database is locked", "attempt to write a readonly
            // database") names the cause without a path; anything else is said generically.
            Some(match &e {
                crate::queue::QueueError::Db(sqlx::Error::Database(db)) => {
                    format!("not writable: {}", db.message())
                }
                _ => "cannot open or write the database".to_string(),
            })
        }
        Err(_) => Some(format!("no write within {} s", DB_CHECK_LIMIT.as_secs())),
    }
}

fn disk_check(state: &WebState) -> Option<String> {
    let watermark_mb = state.config.storage.min_free_mb;
    match state.store.free_bytes() {
        Ok(free) if free >= watermark_mb.saturating_mul(1 << 20) => None,
        Ok(free) => Some(format!(
            "{} MiB free, below storage.min_free_mb ({watermark_mb} MiB)",
            free >> 20
        )),
        Err(e) => {
            warn!(error = %e, "readiness: cannot read data_dir's free space");
            Some("cannot read the free space of data_dir".to_string())
        }
    }
}

fn model_check(state: &WebState) -> Option<String> {
    // Without `[inference] model` the node stores and queues: nothing to wait for.
    let configured = state.config.inference.model_manifest().is_some();
    (configured && !state.readiness.model_loaded.load(Ordering::Acquire))
        .then(|| "[inference] model is not loaded".to_string())
}

fn scp_check(state: &WebState) -> Option<String> {
    (!state.readiness.scp_listening.load(Ordering::Acquire))
        .then(|| "the storage SCP is not accepting associations".to_string())
}

/// The states a row can be in, each reported (0 included) so a series never goes stale.
const STATES: [RowState; 4] = [
    RowState::Queued,
    RowState::Running,
    RowState::Done,
    RowState::Dead,
];

async fn metrics(State(state): State<Arc<WebState>>) -> Response {
    // What the database knows is read now, so it is right after a restart too.
    match state.queue.job_counts().await {
        Ok(counts) => {
            for s in STATES {
                let n = counts.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
                metrics::gauge!(m::JOBS, "state" => s.as_str()).set(n as f64);
            }
        }
        Err(e) => warn!(error = %e, "metrics: cannot count jobs"),
    }
    match state.queue.export_counts().await {
        Ok(counts) => {
            let mut destinations: Vec<String> = state
                .directory
                .snapshot()
                .destinations
                .iter()
                .map(|e| e.def.name.clone())
                .collect();
            destinations.extend(counts.iter().map(|(d, _, _)| d.clone()));
            destinations.sort();
            destinations.dedup();
            for d in destinations {
                for s in STATES {
                    let n = counts
                        .iter()
                        .find(|(dest, st, _)| *dest == d && *st == s)
                        .map_or(0, |(_, _, n)| *n);
                    metrics::gauge!(m::EXPORTS, "destination" => d.clone(), "state" => s.as_str())
                        .set(n as f64);
                }
            }
        }
        Err(e) => warn!(error = %e, "metrics: cannot count exports"),
    }
    match state.store.free_bytes() {
        Ok(free) => metrics::gauge!(m::DISK_FREE).set(free as f64),
        Err(e) => warn!(error = %e, "metrics: cannot read data_dir's free space"),
    }
    metrics::gauge!(m::DISK_MIN_FREE).set(state.config.storage.min_free_mb.saturating_mul(1 << 20) as f64);
    // Histogram samples are folded into their buckets here (and by the node's periodic upkeep).
    state.metrics.run_upkeep();
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        state.metrics.render(),
    )
        .into_response()
}

/// The route template a request matched (`/dicomweb/studies/{study}`), handed from
/// [`note_route`] (inside routing) to [`count_request`] (outside it) on the response.
#[derive(Debug, Clone)]
struct RouteTemplate(String);

/// A route layer: notes the matched route's template on the response.
pub(super) async fn note_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| RouteTemplate(p.as_str().to_string()));
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// Counts every request by method, route template (`other`: no route matched, e.g. the
/// viewer's files and 404s) and status. The request's path itself is never a label: it holds
/// UIDs.
pub(super) async fn count_request(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or_else(|| "other".to_string(), |r| r.0.clone());
    metrics::counter!(
        m::HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => response.status().as_str().to_string()
    )
    .increment(1);
    response
}

/// The standard methods by name; any other (a client may send any token) as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn readiness_names_each_failing_check() {
        let ready = readiness_response(&[("database", None), ("disk", None)]);
        assert_eq!(ready.status(), StatusCode::OK);
        let body = body_json(ready).await;
        assert_eq!(body["ready"], true);
        assert_eq!(body["failing"], json!([]));

        let unready = readiness_response(&[
            ("database", Some("not writable: database is locked".into())),
            ("disk", None),
            (
                "scp",
                Some("the storage SCP is not accepting associations".into()),
            ),
        ]);
        assert_eq!(unready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_json(unready).await;
        assert_eq!(body["ready"], false);
        assert_eq!(body["failing"], json!(["database", "scp"]));
        assert_eq!(body["checks"][0]["reason"], "not writable: database is locked");
        assert_eq!(body["checks"][1], json!({"check": "disk", "ok": true}));
    }

    #[test]
    fn unusual_methods_are_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
