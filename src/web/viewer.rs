//! The OHIF viewer at `/`: OHIF's prebuilt single-page app (`[dicomweb] viewer_dir`, fetched by
//! `scripts/fetch-viewer.sh`) served from the same origin as `/dicomweb`, so the browser needs
//! no CORS. vcnode serves its own `/app-config.js` (`viewer/app-config.js`, compiled in) instead
//! of the one OHIF ships: it points OHIF at this node's DICOMweb and registers the mammography
//! hanging protocol (each LE image beside its synthetic RC).
//!
//! Without the viewer folder, `/` answers a short page saying how to install it; the DICOMweb
//! API is unaffected.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::{WebError, WebState};
use crate::config::Config;

/// OHIF's configuration as vcnode serves it (`window.config`).
pub const APP_CONFIG_JS: &str = include_str!("../../viewer/app-config.js");

/// Content-hashed build outputs never change under their name: browsers may keep them.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else (index.html, the app config, unhashed assets) is revalidated on each use,
/// so a new viewer or a changed configuration shows on the next reload.
const REVALIDATE: &str = "no-cache";

pub(super) fn routes(config: &Config) -> Router<Arc<WebState>> {
    let router = Router::new().route("/app-config.js", get(app_config));
    match config.dicomweb.viewer_root() {
        Some(root) => {
            let viewer = Viewer::new(root);
            router.fallback(move |request: Request| {
                let viewer = viewer.clone();
                async move { viewer.serve(request).await }
            })
        }
        None => router.route("/", get(not_installed)),
    }
}

async fn app_config() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, REVALIDATE),
        ],
        APP_CONFIG_JS,
    )
        .into_response()
}

async fn not_installed() -> Response {
    (
        [(header::CACHE_CONTROL, REVALIDATE)],
        Html(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>vcnode: viewer not installed</title></head><body>\
             <h1>The viewer is not installed</h1>\
             <p>vcnode serves the OHIF viewer here once it is installed. In the vcnode checkout, run \
             <code>scripts/fetch-viewer.sh</code> (or <code>scripts/setup.sh</code>, which calls it), \
             then restart vcnode. A viewer elsewhere can be configured with \
             <code>[dicomweb] viewer_dir</code>.</p>\
             <p>The DICOMweb API is available at <a href=\"/dicomweb/studies\">/dicomweb</a>.</p>\
             </body></html>",
        ),
    )
        .into_response()
}

/// The viewer's files. Paths whose last segment has no extension are the app's own routes
/// (`/`, `/viewer?StudyInstanceUIDs=…`, `/segmentation`…): they get `index.html` and the app
/// routes in the browser. A missing file (`/x.js`) is a 404, not the app.
#[derive(Clone)]
struct Viewer {
    files: ServeDir,
    index: ServeFile,
}

impl Viewer {
    fn new(root: PathBuf) -> Viewer {
        // scripts/fetch-viewer.sh writes `name.gz` beside what the viewer loads at start
        // (17 MB of script shrink to 3 MB); a file without one is sent as it is.
        Viewer {
            index: ServeFile::new(root.join("index.html")).precompressed_gzip(),
            files: ServeDir::new(root).precompressed_gzip(),
        }
    }

    async fn serve(self, request: Request) -> Result<Response, Infallible> {
        let path = request.uri().path().to_string();
        // The API's unknown paths must stay errors, never the app's HTML.
        if ["/dicomweb", "/api"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        {
            return Ok(WebError::not_found("no such resource").into_response());
        }
        let name = path.rsplit('/').next().unwrap_or_default();
        let response = if name.contains('.') {
            self.files.oneshot(request).await?.map(Body::new)
        } else {
            self.index.oneshot(request).await?.map(Body::new)
        };
        Ok(with_caching(response, name))
    }
}

fn with_caching(mut response: Response, name: &str) -> Response {
    if response.status() == StatusCode::OK || response.status() == StatusCode::NOT_MODIFIED {
        let policy = if is_content_hashed(name) {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
        // The same URL answers gzipped or not, by the request's Accept-Encoding.
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// OHIF's build names its chunks `N.bundle.<16 hex>.js` and its WebAssembly `<16 hex>.wasm`.
fn is_content_hashed(name: &str) -> bool {
    let mut parts = name.rsplit('.');
    let ext = parts.next().unwrap_or_default();
    let stem = parts.next().unwrap_or_default();
    matches!(ext, "js" | "wasm" | "css") && stem.len() == 16 && stem.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hashed_names() {
        assert!(is_content_hashed("app.bundle.0f6159c501addfe9.js"));
        assert!(is_content_hashed("0ddf166f7a343eda.wasm"));
        assert!(!is_content_hashed("app-config.js"));
        assert!(!is_content_hashed("index.html"));
        assert!(!is_content_hashed("1602.css"));
        assert!(!is_content_hashed(""));
    }

    #[test]
    fn app_config_points_at_this_node() {
        for needle in [
            "@ohif/extension-default.dataSourcesModule.dicomweb",
            "'/dicomweb'",
            "imageRendering: 'wadors'",
            "thumbnailRendering: 'wadors'",
            "relativeResolution: 'studies'",
            "supportsFuzzyMatching: false",
            "supportsWildcard: true",
            "@vcnode/mammo-le-rc",
        ] {
            assert!(APP_CONFIG_JS.contains(needle), "app-config.js lacks {needle}");
        }
        // No public demo servers.
        assert!(!APP_CONFIG_JS.contains("https://"));
    }
}
