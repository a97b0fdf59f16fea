//! The node's HTTP side on `node.http_port`: a DICOMweb server under `/dicomweb` (STOW-RS in,
//! QIDO-RS, WADO-RS), the OHIF viewer at `/`, and the on-demand processing API under `/api`.
//!
//! It is a second door into the same node as the DIMSE SCP: STOW-RS goes through the one
//! [`Ingest`] (same checks, same durability, same job queue), and queries and retrievals are
//! served from the same store and SQLite index.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::queue::Queue;
use crate::store::InstanceStore;

mod accept;
mod admin;
pub mod auth;
pub mod health;
mod https;
mod jobs;
mod process;
mod qido;
mod status;
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
    /// What `/readyz` reports of the SCP and the model, set by the node.
    pub readiness: Arc<health::Readiness>,
    /// Renders `/metrics` ([`crate::metrics::install`]).
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The audit log's queue ([`auth::audit_log`]; its writer runs under the supervisor).
    pub audit: tokio::sync::mpsc::Sender<auth::AuditEntry>,
    /// Peers, destinations and routes, live ([`crate::directory`]); the admin API edits them.
    pub directory: Arc<crate::directory::Directory>,
}

/// The media type of DICOM JSON (PS3.18 F).
pub const DICOM_JSON: &str = "application/dicom+json";

/// All routes: `/dicomweb/…`, `/api/…`, the viewer, `/login`, and `/healthz`, `/readyz`,
/// `/metrics`, without the layers and the state ([`router`] adds them). [`route_list`] reads
/// the same router, so a route added here is in the auth test's enumeration at once.
fn routes(config: &Config) -> Router<Arc<WebState>> {
    let dicomweb = Router::new()
        .merge(stow::routes())
        .merge(qido::routes())
        .merge(wado::routes());
    Router::new()
        .nest("/dicomweb", dicomweb)
        .nest("/api", process::routes())
        .nest("/api", jobs::routes())
        .nest("/api", admin::routes())
        .nest("/api", auth::api_routes())
        .merge(auth::routes())
        .merge(status::routes(config))
        .merge(viewer::routes(config))
        .merge(health::routes())
}

/// The served router: [`routes`] with the auth guard around every route (and the viewer's
/// fallback), so whatever is added under `/api` or `/dicomweb` needs a principal.
pub fn router(state: Arc<WebState>) -> Router {
    let cors = cors_layer(&state.config.dicomweb.cors_origins);
    let guard = auth::Guard::new(&state);
    routes(&state.config)
        // Requests counted by route template: noted inside routing, counted outside it.
        .route_layer(axum::middleware::from_fn(health::note_route))
        // Inside the counting (refusals are counted too), outside the CORS preflight answer
        // (a browser's preflight carries no credentials).
        .layer(axum::middleware::from_fn_with_state(guard, auth::guard))
        .layer(axum::middleware::from_fn(health::count_request))
        .layer(cors)
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// One route of the router: a method and a path template (`/dicomweb/studies/{study}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: axum::http::Method,
    pub path: String,
}

/// Every route [`router`] serves under `config`, read from the router itself (tests/auth.rs
/// checks each of them, so no route can be added without its check).
///
/// axum has no API to list a router's routes; its `Debug` output holds them (the path of each
/// route id, and each route's method endpoints). Parsing it is tied to axum 0.8's format, so
/// [`tests::route_list_reads_axums_router`] pins it: a changed format fails there, loudly.
pub fn route_list(config: &Config) -> Vec<RouteSpec> {
    routes_of(&routes(config))
}

fn routes_of<S>(router: &Router<S>) -> Vec<RouteSpec> {
    let text = format!("{router:?}");
    // `Router { path_router: PathRouter { routes: {RouteId(n): <endpoint>, …}, node: Node {
    // paths: {RouteId(n): "/path", …} } }, fallback_router: …`: the first `routes` and `paths`
    // maps are the path router's (the fallback router's come later).
    let Some(routes_at) = text.find("routes: {") else {
        return Vec::new();
    };
    let Some(paths_at) = text[routes_at..].find("paths: {").map(|i| i + routes_at) else {
        return Vec::new();
    };
    let endpoints = &text[routes_at..paths_at];
    let mut out = Vec::new();
    for (id, path) in quoted_entries(&text[paths_at + "paths: {".len()..]) {
        // This route's endpoint: from its id to the next id.
        let key = format!("RouteId({id}): ");
        let Some(start) = endpoints.find(&key) else {
            continue;
        };
        let rest = &endpoints[start + key.len()..];
        let endpoint = &rest[..rest.find("RouteId(").unwrap_or(rest.len())];
        let methods: Vec<axum::http::Method> = if endpoint.starts_with("MethodRouter(") {
            use axum::http::Method;
            [
                ("get", Method::GET),
                ("head", Method::HEAD),
                ("delete", Method::DELETE),
                ("options", Method::OPTIONS),
                ("patch", Method::PATCH),
                ("post", Method::POST),
                ("put", Method::PUT),
            ]
            .into_iter()
            .filter(|(name, _)| {
                let field = format!(" {name}: ");
                endpoint
                    .find(&field)
                    .is_some_and(|i| !endpoint[i + field.len()..].starts_with("None"))
            })
            .map(|(_, m)| m)
            .collect()
        } else {
            // A service for every method (nest_service, route_service): GET stands for it.
            vec![axum::http::Method::GET]
        };
        for method in methods {
            out.push(RouteSpec {
                method,
                path: path.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.path, a.method.as_str()).cmp(&(&b.path, b.method.as_str())));
    out
}
/// `RouteId(n): "text"` entries of a Debug-printed map, up to its closing brace (braces inside
/// the quoted paths, `{study}`, are not the end).
fn quoted_entries(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(after) = rest.trim_start().strip_prefix("RouteId(") {
        let Some((id, after)) = after.split_once("): \"") else {
            break;
        };
        // Route paths have no quotes or backslashes, so the next quote closes the string.
        let Some((path, after)) = after.split_once('"') else {
            break;
        };
        out.push((id.to_string(), path.to_string()));
        rest = after.trim_start().strip_prefix(',').unwrap_or(after);
    }
    out
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

/// Serves until `shutdown`, then lets requests in progress finish. With `tls` (HTTPS,
/// `node.http_tls`) every connection is handshaken first; one that fails (plain HTTP to this
/// port, a client that does not trust the certificate) is dropped and the server carries on.
pub async fn serve(
    listener: TcpListener,
    tls: Option<vcnode_scp::tls::TlsAcceptor>,
    state: Arc<WebState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let local: SocketAddr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(%local, scheme, "DICOMweb server listening (/dicomweb)");
    // Handlers see the listening address (ListenAddr), the scheme (ListenScheme) and the
    // peer's address (ConnectInfo, which STOW-RS hands to ingest as a C-STORE's peer).
    let app = router(state)
        .layer(axum::Extension(ListenAddr(local)))
        .layer(axum::Extension(ListenScheme(scheme)))
        .into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        // tap_io: axum gives ConnectInfo<SocketAddr> for a tapped listener's address; it has
        // no such impl for a listener of ours.
        Some(acceptor) => {
            axum::serve(https::TlsListener::new(listener, acceptor)?.tap_io(|_| ()), app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    }
}

/// "https" or "http": how clients reach this server, an extension of every request, so that
/// the URLs it writes carry the scheme they came by.
#[derive(Debug, Clone, Copy)]
pub struct ListenScheme(pub &'static str);

/// The address the server listens on, an extension of every request: URLs the server writes
/// (WADO-RS BulkDataURIs) need the port when a client's Host header leaves it out
/// (dicomweb-client 0.60 sends `Host: 127.0.0.1` to port 8042).
#[derive(Debug, Clone, Copy)]
pub struct ListenAddr(pub SocketAddr);

/// `{scheme}://{host}/dicomweb` as the client reached this server: the root of every URL the
/// server writes (QIDO-RS and STOW-RS Retrieve URLs, WADO-RS BulkDataURIs), by one rule.
pub struct BaseUrl(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<BaseUrl, Self::Rejection> {
        let port = parts.extensions.get::<ListenAddr>().map(|a| a.0.port());
        let https = parts
            .extensions
            .get::<ListenScheme>()
            .is_some_and(|s| s.0 == "https");
        Ok(BaseUrl(base_url(&parts.headers, port, https)))
    }
}

/// The [`BaseUrl`] of a request: the Host the
/// client used (a proxy's X-Forwarded-Host and -Proto first). A Host without a port on a
/// direct request gets the port the request came in on: some clients (dicomweb-client) leave
/// it out. `https`: the request came over HTTPS. Without a usable host the URLs are relative to
/// the origin.
fn base_url(headers: &HeaderMap, listen_port: Option<u16>, https: bool) -> String {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let forwarded_host = header_text("x-forwarded-host");
    let forwarded_proto = header_text("x-forwarded-proto");
    let proxied = forwarded_host.is_some() || forwarded_proto.is_some();
    let host = forwarded_host
        .or_else(|| header_text(header::HOST.as_str()))
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        });
    let proto = match forwarded_proto {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(_) => "http",
        None if https => "https",
        None => "http",
    };
    let default_port = if proto == "https" { 443 } else { 80 };
    match host {
        Some(h) => {
            // The port follows the last ':' outside an IPv6 literal's brackets.
            let has_port = h.rsplit_once(']').map_or(h, |(_, rest)| rest).contains(':');
            match listen_port {
                Some(port) if !has_port && !proxied && port != default_port => {
                    format!("{proto}://{h}:{port}/dicomweb")
                }
                _ => format!("{proto}://{h}/dicomweb"),
            }
        }
        None => "/dicomweb".to_string(),
    }
}

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
            response.headers_mut().insert(header::WARNING, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_list_reads_axums_router() {
        use axum::http::Method;
        use axum::routing::{get, post, put};
        let inner: Router<()> = Router::new()
            .route("/peers", get(|| async {}).post(|| async {}))
            .route("/peers/{ae_title}", put(|| async {}).delete(|| async {}));
        let router: Router<()> = Router::new()
            .nest("/api", inner)
            .route("/x/{a}/y", post(|| async {}))
            .fallback(|| async {})
            .route_layer(axum::middleware::from_fn(health::note_route));
        let got: Vec<(Method, String)> = routes_of(&router)
            .into_iter()
            .map(|r| (r.method, r.path))
            .collect();
        assert_eq!(
            got,
            vec![
                (Method::GET, "/api/peers".to_string()),
                (Method::POST, "/api/peers".to_string()),
                (Method::DELETE, "/api/peers/{ae_title}".to_string()),
                (Method::PUT, "/api/peers/{ae_title}".to_string()),
                (Method::POST, "/x/{a}/y".to_string()),
            ]
        );
    }

    #[test]
    fn the_real_router_lists_its_api_and_dicomweb_routes() {
        let config = Config::load_with_env(None, Vec::new()).unwrap();
        let routes = route_list(&config);
        let has = |m: &str, p: &str| routes.iter().any(|r| r.method.as_str() == m && r.path == p);
        assert!(has("GET", "/dicomweb/studies"), "{routes:?}");
        assert!(has("POST", "/dicomweb/studies"), "{routes:?}");
        assert!(
            has(
                "GET",
                "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
            ),
            "{routes:?}"
        );
        assert!(has("POST", "/api/jobs/{id}/retry"), "{routes:?}");
        assert!(has("GET", "/api/audit"), "{routes:?}");
        assert!(has("POST", "/login"), "{routes:?}");
    }

    #[test]
    fn metadata_urls_use_the_requests_origin() {
        let mut h = HeaderMap::new();
        assert_eq!(base_url(&h, Some(8042), false), "/dicomweb");
        h.insert(header::HOST, HeaderValue::from_static("pacs.example:8042"));
        assert_eq!(
            base_url(&h, Some(9000), false),
            "http://pacs.example:8042/dicomweb"
        );
        // A Host without its port, straight to the listener: the port it came in on.
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1"));
        assert_eq!(base_url(&h, Some(8042), false), "http://127.0.0.1:8042/dicomweb");
        assert_eq!(base_url(&h, Some(80), false), "http://127.0.0.1/dicomweb");
        h.insert(header::HOST, HeaderValue::from_static("[::1]"));
        assert_eq!(base_url(&h, Some(8042), false), "http://[::1]:8042/dicomweb");
        // Behind a proxy its headers say where the client is.
        h.insert("x-forwarded-host", HeaderValue::from_static("pacs.example"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(base_url(&h, Some(8042), false), "https://pacs.example/dicomweb");
        h.insert("x-forwarded-host", HeaderValue::from_static("evil/\"x"));
        assert_eq!(base_url(&h, Some(8042), false), "/dicomweb");
    }

    #[test]
    fn urls_of_an_https_server_say_https() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8443"));
        assert_eq!(base_url(&h, Some(8443), true), "https://127.0.0.1:8443/dicomweb");
        h.insert(header::HOST, HeaderValue::from_static("pacs.example"));
        assert_eq!(base_url(&h, Some(443), true), "https://pacs.example/dicomweb");
        assert_eq!(
            base_url(&h, Some(8443), true),
            "https://pacs.example:8443/dicomweb"
        );
        // A proxy's word on the scheme wins: it terminates the client's connection.
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert_eq!(base_url(&h, Some(8443), true), "http://pacs.example/dicomweb");
    }
}
