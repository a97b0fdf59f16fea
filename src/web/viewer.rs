//! TODO(issue 14): filled in by its own change.

use std::sync::Arc;

use axum::Router;

use super::WebState;
use crate::config::Config;

pub(super) fn routes(_config: &Config) -> Router<Arc<WebState>> {
    Router::new()
}
