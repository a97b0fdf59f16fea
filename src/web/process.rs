//! `POST /api/process`: pull a study from a DICOMweb PACS in `[[sources]]` and process it
//! ([`crate::pull`]). `vcnode pull` is a client of this endpoint, so pulls run in the node
//! that owns the store and the queue.
//!
//! Request: `{"source": "NAME", "study": "STUDY INSTANCE UID"}`. Answer: the [`PullReport`] as
//! JSON, 200 when every selected instance is stored or was already present, 502 when instances
//! failed and none was stored; else `{"error": "..."}` with 400 (bad request or UID), 404
//! (unknown source or study), 502 (source unreachable or failing) or 500.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::{WebError, WebState};
use crate::pull::{pull_study, PullError, PullReport};

pub(super) fn routes() -> Router<Arc<WebState>> {
    Router::new().route("/process", post(process))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessRequest {
    source: String,
    study: String,
}

/// A failed request: the status, a JSON body `{"error": reason}` and the `Warning: 299` header
/// every other refusal of the node's HTTP side carries.
fn refusal(status: StatusCode, reason: String) -> Response {
    let mut response = WebError::new(status, reason.clone()).into_response();
    let body = Json(serde_json::json!({ "error": reason })).into_response();
    *response.body_mut() = body.into_body();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn process(
    State(state): State<Arc<WebState>>,
    request: Result<Json<ProcessRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(r) => r,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected JSON {{\"source\": NAME, \"study\": UID}}: {}",
                    e.body_text()
                ),
            )
        }
    };
    // In its own task: a client that hangs up does not cut an ingest short.
    let pulled = tokio::spawn(async move {
        let ingest = state.ingest.via(crate::metrics::Protocol::Pull);
        let node = crate::pull::PullContext {
            config: &state.config,
            store: &state.store,
            queue: &state.queue,
            ingest: &ingest,
        };
        pull_study(&node, &request.source, request.study.trim()).await
    })
    .await;
    let pulled = match pulled {
        Ok(p) => p,
        Err(e) => return WebError::internal(e).into_response(),
    };
    match pulled {
        Ok(report) => (status_of(&report), Json(report)).into_response(),
        Err(e) => {
            let status = match &e {
                PullError::UnknownSource(_) | PullError::StudyNotFound { .. } => StatusCode::NOT_FOUND,
                PullError::BadStudyUid(_) => StatusCode::BAD_REQUEST,
                PullError::Unreachable { .. } | PullError::SourceFailed { .. } => StatusCode::BAD_GATEWAY,
                PullError::Client { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                PullError::Queue(q) => return WebError::internal(q).into_response(),
            };
            refusal(status, e.to_string())
        }
    }
}

/// 502 when the source let every instance that had to come fail; 200 otherwise (failures of
/// some are listed in the report).
fn status_of(report: &PullReport) -> StatusCode {
    if !report.failed.is_empty() && report.stored == 0 {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    }
}
