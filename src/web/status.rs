//! The admin's status page:
//! - `GET /status`: a small static page (status.html, compiled in; no external assets) that
//!   polls the JSON below and the Jobs API every 2 s, and manages peers, destinations and
//!   routes through the Admin API (`/api/peers`, `/api/destinations`, `/api/routes`).
//! - `GET /api/status`: what the page shows, in one answer: throughput (instances received
//!   and derived in the last minute and the last 15 minutes, by sender), jobs and exports by
//!   state, each destination's health, the peers and routes (the live directory the Admin API
//!   edits), and the node's facts (AE title, ports, model, device, uptime, disk free against
//!   the watermark, the `/readyz` checks).
//!
//! `/api/status` is polled, so it reads only recent rows (src/queue/status.rs) and counts
//! that `/metrics` reads as well. Times are Unix milliseconds (UTC), as in the Jobs API.
//!
//! The instances table does not record the protocol an instance came by, so throughput is
//! split by sender: the calling AE title, or `[dicomweb] sender` for STOW-RS.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::{health, ListenAddr, WebError, WebState};
use crate::config::{Config, DestinationConfig, DestinationKind};
use crate::directory::Entries;
use crate::queue::status::LastOutcomes;
use crate::queue::{now_ms, State as WorkState};

/// The page, served as it is.
pub const STATUS_HTML: &str = include_str!("status.html");

/// The throughput windows: what is flowing now, and the recent trend.
const RECENT_S: i64 = 60;
const WINDOW_S: i64 = 15 * 60;

const STATES: [WorkState; 4] = [
    WorkState::Queued,
    WorkState::Running,
    WorkState::Done,
    WorkState::Dead,
];

/// What does not change while the node runs.
struct Facts {
    started: Instant,
    started_at: i64,
    /// The loaded generator's id (name and weights hash); never the manifest's path.
    model_id: Option<String>,
    /// Whether its manifest has the out-of-distribution guard's input profile.
    input_profile: bool,
}

pub(super) fn routes(config: &Config) -> Router<Arc<WebState>> {
    let manifest = config
        .inference
        .model_manifest()
        .and_then(|path| vcnode_models::manifest::Manifest::load(&path).ok());
    let facts = Arc::new(Facts {
        started: Instant::now(),
        started_at: now_ms(),
        model_id: manifest.as_ref().map(|m| m.model_id()),
        input_profile: manifest.is_some_and(|m| m.input_profile.is_some()),
    });
    Router::new().route("/status", get(page)).route(
        "/api/status",
        get(
            move |State(state): State<Arc<WebState>>, listen: Option<Extension<ListenAddr>>| {
                let facts = facts.clone();
                async move { status(&state, &facts, listen.map(|Extension(a)| a)).await }
            },
        ),
    )
}

async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            // The page's own inline script and style only, talking to its own origin; never
            // framed (its forms change the node's configuration).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            ),
        ],
        Html(STATUS_HTML),
    )
        .into_response()
}

async fn status(state: &WebState, facts: &Facts, listen: Option<ListenAddr>) -> Result<Response, WebError> {
    let now = now_ms();
    let queue = &state.queue;
    let arrivals = queue
        .arrivals(now - WINDOW_S * 1000, now - RECENT_S * 1000)
        .await
        .map_err(WebError::internal)?;
    let jobs = queue.job_counts().await.map_err(WebError::internal)?;
    let exports = queue.export_counts().await.map_err(WebError::internal)?;

    // The live directory (the file's entries and the Admin API's changes).
    let directory = state.directory.snapshot();
    let configured: Vec<&DestinationConfig> = directory.destinations.iter().map(|e| &e.def).collect();
    // Destinations: the configured ones, and any that still has exports after leaving the
    // directory.
    let mut names: Vec<String> = configured.iter().map(|d| d.name.clone()).collect();
    for (name, _, _) in &exports {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut destinations = Vec::with_capacity(names.len());
    for name in names {
        let counts: Vec<(WorkState, i64)> = exports
            .iter()
            .filter(|(d, _, _)| *d == name)
            .map(|(_, s, n)| (*s, *n))
            .collect();
        let outcomes = queue.last_outcomes(&name).await.map_err(WebError::internal)?;
        let def = configured.iter().copied().find(|d| d.name == name);
        destinations.push(destination(&name, def, &counts, &outcomes));
    }

    let export_counts: Vec<(WorkState, i64)> = exports.iter().map(|(_, s, n)| (*s, *n)).collect();

    let checks = health::readiness_checks(state).await;
    let body = json!({
        "now": now,
        "node": node(state, facts, listen, &checks),
        "throughput": throughput(&arrivals),
        "jobs": by_state(&jobs),
        "exports": by_state(&export_counts),
        "destinations": destinations,
        "peers": peers(&directory),
        "routes": directory.routes.iter()
            .map(|r| json!({"from_ae": r.def.from_ae, "to": r.def.to, "origin": r.origin.as_str()}))
            .collect::<Vec<_>>(),
    });
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// Every state, 0 included, so the page's numbers never go missing; rows of one state summed.
fn by_state(counts: &[(WorkState, i64)]) -> Value {
    let mut out = serde_json::Map::new();
    for s in STATES {
        let n = counts
            .iter()
            .filter(|(st, _)| *st == s)
            .map(|(_, n)| n)
            .sum::<i64>();
        out.insert(s.as_str().to_string(), json!(n));
    }
    Value::Object(out)
}

fn throughput(arrivals: &[crate::queue::status::Arrivals]) -> Value {
    let sum = |origin: &str, f: &dyn Fn(&crate::queue::status::Arrivals) -> i64| -> i64 {
        arrivals.iter().filter(|a| a.origin == origin).map(f).sum()
    };
    let senders: Vec<Value> = arrivals
        .iter()
        .filter(|a| a.origin == "received")
        .map(|a| {
            json!({
                "calling_ae": a.calling_ae,
                "last_minute": a.recent,
                "last_15_minutes": a.count,
                "bytes_last_minute": a.recent_bytes,
                "bytes_last_15_minutes": a.bytes,
            })
        })
        .collect();
    json!({
        "received": {
            "last_minute": sum("received", &|a| a.recent),
            "last_15_minutes": sum("received", &|a| a.count),
            "bytes_last_minute": sum("received", &|a| a.recent_bytes),
            "bytes_last_15_minutes": sum("received", &|a| a.bytes),
        },
        "derived": {
            "last_minute": sum("derived", &|a| a.recent),
            "last_15_minutes": sum("derived", &|a| a.count),
        },
        "by_sender": senders,
    })
}

/// One destination's counts, last outcomes and whether it looks healthy: it does unless its
/// newest outcome is a failure. Dead exports are counted apart: they wait for an operator.
fn destination(
    name: &str,
    configured: Option<&DestinationConfig>,
    counts: &[(WorkState, i64)],
    outcomes: &LastOutcomes,
) -> Value {
    let failing = match (outcomes.last_error_at, outcomes.last_success_at) {
        (Some(error), Some(success)) => error > success,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let health = if failing {
        "failing"
    } else if outcomes.last_success_at.is_some() {
        "ok"
    } else {
        "idle"
    };
    let mut v = by_state(counts);
    let o = v.as_object_mut().expect("an object");
    o.insert("name".into(), json!(name));
    o.insert("configured".into(), json!(configured.is_some()));
    o.insert("kind".into(), json!(configured.map(kind_name)));
    o.insert("target".into(), json!(configured.and_then(target)));
    o.insert("last_success_at".into(), json!(outcomes.last_success_at));
    o.insert("last_error_at".into(), json!(outcomes.last_error_at));
    o.insert("last_error".into(), json!(outcomes.last_error));
    o.insert("health".into(), json!(health));
    o.insert("healthy".into(), json!(!failing));
    v
}

fn kind_name(d: &DestinationConfig) -> &'static str {
    match d.kind {
        DestinationKind::Dimse => "dimse",
        DestinationKind::Dicomweb => "dicomweb",
    }
}

/// Where a destination is: `AE@host:port`, or a URL's scheme, host, port and path (never its
/// credentials or query).
fn target(d: &DestinationConfig) -> Option<String> {
    match d.kind {
        DestinationKind::Dimse => Some(format!(
            "{}@{}:{}",
            d.ae_title.as_deref().unwrap_or("?"),
            d.host.as_deref().unwrap_or("?"),
            d.port.map_or_else(|| "?".to_string(), |p| p.to_string())
        )),
        DestinationKind::Dicomweb => {
            let url = reqwest::Url::parse(d.url.as_deref()?).ok()?;
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            Some(format!(
                "{}://{}{port}{}",
                url.scheme(),
                url.host_str().unwrap_or_default(),
                url.path()
            ))
        }
    }
}

/// The peers as the Admin API lists them.
fn peers(directory: &Entries) -> Vec<Value> {
    directory
        .peers
        .iter()
        .map(|p| {
            json!({
                "ae_title": p.def.ae_title,
                "host": p.def.host.map(|h| h.to_string()),
                "enabled": p.def.enabled,
                "origin": p.origin.as_str(),
            })
        })
        .collect()
}

fn node(state: &WebState, facts: &Facts, listen: Option<ListenAddr>, checks: &[health::Check]) -> Value {
    let config = &state.config;
    let min_free = config.storage.min_free_mb.saturating_mul(1 << 20);
    let free = state.store.free_bytes().ok();
    json!({
        "ae_title": config.node.ae_title,
        "version": env!("CARGO_PKG_VERSION"),
        "dimse_port": config.node.dimse_port,
        "dimse_tls_port": config.node.dimse_tls_port,
        // The port this request came in on (the configured one may be 0: any free port).
        "http_port": listen.map_or(config.node.http_port, |a| a.0.port()),
        "model": facts.model_id,
        "device": config.inference.device.to_string(),
        // The out-of-distribution guard: configured action, whether the model can be guarded,
        // and the LE images it flagged and refused since the start.
        "ood": {
            "action": config.inference.ood.name(),
            "input_profile": facts.input_profile,
            "flagged": crate::metrics::ood_inputs_since_start().0,
            "refused": crate::metrics::ood_inputs_since_start().1,
        },
        "started_at": facts.started_at,
        "uptime_s": facts.started.elapsed().as_secs(),
        "disk": {
            "free_bytes": free,
            "min_free_bytes": min_free,
            "below_watermark": free.map(|f| f < min_free),
        },
        "ready": checks.iter().all(|(_, why)| why.is_none()),
        "checks": checks.iter().map(|(name, why)| json!({
            "check": name, "ok": why.is_none(), "reason": why,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_healthy_unless_its_newest_outcome_failed() {
        let health = |success: Option<i64>, error: Option<i64>| {
            let o = LastOutcomes {
                last_success_at: success,
                last_error_at: error,
                last_error: error.map(|_| "refused".to_string()),
            };
            let v = destination("PACS", None, &[(WorkState::Dead, 2)], &o);
            assert_eq!(v["dead"], 2);
            assert_eq!(v["queued"], 0);
            (
                v["health"].as_str().unwrap().to_string(),
                v["healthy"].as_bool().unwrap(),
            )
        };
        assert_eq!(health(None, None), ("idle".into(), true));
        assert_eq!(health(Some(5), None), ("ok".into(), true));
        assert_eq!(health(Some(5), Some(3)), ("ok".into(), true));
        assert_eq!(health(Some(5), Some(7)), ("failing".into(), false));
        assert_eq!(health(None, Some(7)), ("failing".into(), false));
    }

    #[test]
    fn the_page_is_self_contained() {
        // No external assets: the page must work on a hospital network without the internet.
        assert!(!STATUS_HTML.contains("http://") && !STATUS_HTML.contains("https://"));
        for needle in ["/api/status", "/api/jobs?limit=20", "/login?next=/status"] {
            assert!(STATUS_HTML.contains(needle), "status.html lacks {needle}");
        }
        assert!(STATUS_HTML.contains("credentials: 'same-origin'"));
    }
}
