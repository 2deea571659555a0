//! `GET /.well-known/jwks.json` (CONTRACT §6.1): the prebuilt body with
//! validators, conditional requests and content negotiation.

use std::sync::Arc;
use std::time::SystemTime;

use warp::http::{HeaderValue, Response, StatusCode, header};

use super::error::ApiError;
use crate::state::Shared;

/// The conditional and negotiation headers of a JWKS request.
#[derive(Debug, Default)]
pub struct Conditions {
    /// `If-None-Match`.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<String>,
    /// `Accept`.
    pub accept: Option<String>,
}

/// Answers a JWKS request from the published document.
///
/// # Errors
/// 503 before the first keyset is loaded.
pub fn reply(
    shared: &Arc<Shared>,
    conditions: &Conditions,
) -> Result<Response<bytes::Bytes>, ApiError> {
    let view = shared.view.load();
    let Some(document) = &view.jwks else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "no keyset has been loaded yet",
        ));
    };
    let config = shared.config.load();
    let max_age = config.keys.jwks_max_age.as_secs();
    // A cache may serve a stale set for max-age + stale-while-revalidate; keys are
    // served by every replica for jwks_max_age + clock_skew before they sign, so the
    // extra staleness allowed is the clock skew. stale-if-error only applies when jwkd cannot answer at all.
    let cache_control = format!(
        "public, max-age={max_age}, stale-while-revalidate={}, stale-if-error=86400",
        config.keys.clock_skew.as_secs()
    );
    let content_type = if conditions
        .accept
        .as_deref()
        .is_some_and(|accept| accept.contains("application/jwk-set+json"))
    {
        "application/jwk-set+json"
    } else {
        "application/json"
    };
    let not_modified = match (&conditions.if_none_match, &conditions.if_modified_since) {
        (Some(tags), _) => tags
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == document.etag),
        (None, Some(since)) => httpdate::parse_http_date(since)
            .is_ok_and(|since: SystemTime| document.last_modified_at <= since),
        (None, None) => false,
    };
    let builder = Response::builder()
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::ETAG, &document.etag)
        .header(header::LAST_MODIFIED, &document.last_modified)
        .header(header::VARY, HeaderValue::from_static("Accept"));
    let response = if not_modified {
        builder
            .status(StatusCode::NOT_MODIFIED)
            .body(bytes::Bytes::new())
    } else {
        builder
            .header(header::CONTENT_TYPE, content_type)
            .body(document.body.clone())
    };
    response.map_err(|err| {
        tracing::error!(%err, "cannot build the JWKS response");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        )
    })
}
