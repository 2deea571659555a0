//! `/healthz` and `/readyz` (CONTRACT §6.7).

use std::sync::Arc;

use warp::Reply;
use warp::http::StatusCode;

use super::error::ApiError;
use crate::state::Shared;

/// 200 while the process serves.
pub fn healthz() -> warp::reply::Response {
    warp::reply::json(&serde_json::json!({"status": "ok"})).into_response()
}

/// 200 when ready, 503 with the reason otherwise.
pub fn readyz(shared: &Arc<Shared>) -> warp::reply::Response {
    match shared.readiness_at(shared.clock.now()) {
        Ok(()) => warp::reply::json(&serde_json::json!({"status": "ready"})).into_response(),
        Err(reason) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason).into_response()
        }
    }
}

/// The Prometheus exposition.
pub fn metrics(shared: &Arc<Shared>) -> warp::reply::Response {
    let view = shared.view.load();
    let config = shared.config.load();
    let text = shared.metrics.render_at(
        &view.keyset,
        &config.keys.algorithms,
        &view.clock,
        shared.clock.now(),
    );
    let mut response = text.into_response();
    response.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
