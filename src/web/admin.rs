//! The admin API (JSON under `/api`): the directory's peers, destinations and routes
//! ([`crate::directory`]), listed, created, replaced and deleted. A change is checked like the
//! configuration file, stored in the database and applied at once (the SCP's next association
//! request, the next result's routes, the next export batch).
//!
//! - `GET /api/peers` → `{"peers": [{"ae_title", "host" (string|null), "enabled", "origin"}]}`;
//!   `POST /api/peers` with `{"ae_title", "host"?, "enabled"?}` → 201 and the peer, 409 if the
//!   AE title exists; `PUT /api/peers/{ae_title}` (the whole entry) → 200; `DELETE` → 204.
//! - `/api/destinations` (key `name`; the fields of a `[[destinations]]` table) and
//!   `/api/routes` (key `from_ae`; `{"from_ae", "to": [names]}`) alike. Deleting a destination
//!   that routes name is refused (409, naming them).
//!
//! `origin` is `config` (from the file, following it) or `api` (changed here or by the CLI;
//! the database wins over the file). Destination credentials are never answered: `auth` shows
//! `"***"`, and a PUT that sends `"***"` back keeps the stored secret. An invalid body gets 400
//! with the key and reason; an unknown key 404.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::WebState;
use crate::config::{DestinationConfig, PeerConfig, RouteConfig};
use crate::directory::{DirectoryError, Entry, Section};

pub(super) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/peers", get(list::<PeerConfig>).post(create::<PeerConfig>))
        .route(
            "/peers/{key}",
            get(one::<PeerConfig>)
                .put(replace::<PeerConfig>)
                .delete(remove::<PeerConfig>),
        )
        .route(
            "/destinations",
            get(list::<DestinationConfig>).post(create::<DestinationConfig>),
        )
        .route(
            "/destinations/{key}",
            get(one::<DestinationConfig>)
                .put(replace::<DestinationConfig>)
                .delete(remove::<DestinationConfig>),
        )
        .route("/routes", get(list::<RouteConfig>).post(create::<RouteConfig>))
        .route(
            "/routes/{key}",
            get(one::<RouteConfig>)
                .put(replace::<RouteConfig>)
                .delete(remove::<RouteConfig>),
        )
}

/// An answer's error: its status and `{"error": reason}`.
struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<DirectoryError> for AdminError {
    fn from(e: DirectoryError) -> Self {
        let status = match &e {
            DirectoryError::Invalid { .. } => StatusCode::BAD_REQUEST,
            DirectoryError::Exists(_) | DirectoryError::InUse(_) => StatusCode::CONFLICT,
            DirectoryError::NotFound(_) => StatusCode::NOT_FOUND,
            DirectoryError::Db(_) | DirectoryError::Unreadable { .. } => {
                tracing::warn!(error = %e, "admin API: the directory cannot be read or written");
                return AdminError(StatusCode::INTERNAL_SERVER_ERROR, "vcnode internal error".into());
            }
        };
        AdminError(status, e.to_string())
    }
}

/// An entry as answered: its fields (secrets hidden) and `origin`.
fn view<T: Section>(entry: &Entry<T>) -> Value {
    let mut v = serde_json::to_value(entry.def.public()).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut v {
        fields.insert("origin".into(), json!(entry.origin.as_str()));
    }
    v
}

/// Reads a body as an entry of `T`: a JSON object with the section's fields (`origin`, as a
/// GET answers it, is ignored). `key`: the path's key, filled in when the body leaves it out.
fn parse_body<T: Section>(body: &[u8], key: Option<&str>) -> Result<T, AdminError> {
    let bad = |reason: String| AdminError(StatusCode::BAD_REQUEST, reason);
    let mut v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let Value::Object(fields) = &mut v else {
        return Err(bad(format!("the body must be a JSON object (one {})", T::ONE)));
    };
    fields.remove("origin");
    if let Some(key) = key {
        let name = key_field::<T>();
        fields.entry(name).or_insert_with(|| json!(key));
    }
    // serde's messages name the field and the expected type, not the value.
    serde_json::from_value(v).map_err(|e| bad(format!("not a {}: {e}", T::ONE)))
}

/// The field that holds a section's key.
fn key_field<T: Section>() -> &'static str {
    match T::NAME {
        "peers" => "ae_title",
        "destinations" => "name",
        _ => "from_ae",
    }
}

async fn list<T: Section>(State(state): State<Arc<WebState>>) -> Json<Value> {
    let entries = state.directory.snapshot();
    let items: Vec<Value> = T::of(&entries).iter().map(view).collect();
    Json(json!({ T::NAME: items }))
}

async fn one<T: Section>(
    State(state): State<Arc<WebState>>,
    Path(key): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let entries = state.directory.snapshot();
    T::of(&entries)
        .iter()
        .find(|e| e.def.key() == key)
        .map(|e| Json(view(e)))
        .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no {} {key:?}", T::ONE)))
}

async fn create<T: Section>(State(state): State<Arc<WebState>>, body: Bytes) -> Result<Response, AdminError> {
    let def = parse_body::<T>(&body, None)?;
    let entry = state.directory.create(def).await?;
    Ok((StatusCode::CREATED, Json(view(&entry))).into_response())
}

async fn replace<T: Section>(
    State(state): State<Arc<WebState>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let def = parse_body::<T>(&body, Some(&key))?;
    let entry = state.directory.replace(&key, def).await?;
    Ok(Json(view(&entry)))
}

async fn remove<T: Section>(
    State(state): State<Arc<WebState>>,
    Path(key): Path<String>,
) -> Result<StatusCode, AdminError> {
    state.directory.remove::<T>(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}
