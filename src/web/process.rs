//! TODO(issue 14): filled in by its own change.

use std::sync::Arc;

use axum::Router;

use super::WebState;

pub(super) fn routes() -> Router<Arc<WebState>> {
    Router::new()
}
