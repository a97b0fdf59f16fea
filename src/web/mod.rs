//! The node's HTTP side on `node.http_port`: a DICOMweb server under `/dicomweb` (STOW-RS in,
//! QIDO-RS, WADO-RS), the OHIF viewer at `/`, and the on-demand processing API under `/api`.
//!
//! It is a second door into the same node as the DIMSE SCP: STOW-RS goes through the one
//! [`Ingest`] (same checks, same durability, same job queue), and queries and retrievals are
//! served from the same store and SQLite index.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::queue::Queue;
use crate::store::InstanceStore;

mod process;
mod qido;
mod stow;
mod viewer;
mod wado;

/// What every handler shares.
pub struct WebState {
    pub config: Arc<Config>,
    pub store: InstanceStore,
    pub queue: Queue,
    /// The one ingest, shared with the DIMSE SCP.
    pub ingest: Arc<Ingest>,
}

/// The media type of DICOM JSON (PS3.18 F).
pub const DICOM_JSON: &str = "application/dicom+json";

/// All routes: `/dicomweb/…`, `/api/…` and the viewer.
pub fn router(state: Arc<WebState>) -> Router {
    let dicomweb = Router::new()
        .merge(stow::routes())
        .merge(qido::routes())
        .merge(wado::routes());
    let cors = cors_layer(&state.config.dicomweb.cors_origins);
    Router::new()
        .nest("/dicomweb", dicomweb)
        .nest("/api", process::routes())
        .merge(viewer::routes(&state.config))
        .layer(cors)
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Origins allowed to call from a browser on another origin; none by default (same origin).
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods(tower_http::cors::Any)
        .allow_headers(tower_http::cors::Any)
}

/// Serves until `shutdown`, then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<WebState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local: SocketAddr = listener.local_addr()?;
    info!(%local, "DICOMweb server listening (/dicomweb)");
    axum::serve(listener, router(state).layer(axum::Extension(ListenAddr(local))))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The address the server listens on, an extension of every request: URLs the server writes
/// (WADO-RS BulkDataURIs) need the port when a client's Host header leaves it out
/// (dicomweb-client 0.60 sends `Host: 127.0.0.1` to port 8042).
#[derive(Debug, Clone, Copy)]
pub struct ListenAddr(pub SocketAddr);

/// A request the server refuses or cannot answer: an HTTP status and a reason that names what
/// is wrong (never a path of the node's or a patient's data). The reason goes in the body and,
/// as PS3.18 suggests, in a `Warning: 299` header.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct WebError {
    pub status: StatusCode,
    pub reason: String,
}

impl WebError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> WebError {
        WebError {
            status,
            reason: reason.into(),
        }
    }
    pub fn bad_request(reason: impl Into<String>) -> WebError {
        WebError::new(StatusCode::BAD_REQUEST, reason)
    }
    pub fn not_found(reason: impl Into<String>) -> WebError {
        WebError::new(StatusCode::NOT_FOUND, reason)
    }
    /// A fault of the node's: the cause goes to the log, the client learns only that it failed.
    pub fn internal(cause: impl std::fmt::Display) -> WebError {
        tracing::warn!(error = %cause, "DICOMweb request failed");
        WebError::new(StatusCode::INTERNAL_SERVER_ERROR, "vcnode internal error")
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.reason.clone()).into_response();
        // Warning header values are quoted text: keep it to printable ASCII without quotes.
        let text: String = self
            .reason
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("299 vcnode \"{text}\"")) {
            response.headers_mut().insert(axum::http::header::WARNING, v);
        }
        response
    }
}
