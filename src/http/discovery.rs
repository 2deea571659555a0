//! Discovery metadata: `/.well-known/openid-configuration` and
//! `/.well-known/oauth-authorization-server` (OpenID Discovery, RFC 8414).

use std::sync::Arc;

use serde_json::json;
use warp::Reply;
use warp::http::StatusCode;

use super::error::ApiError;
use crate::state::Shared;

/// The discovery document, with the algorithms of the live key families.
///
/// # Errors
/// 404 when no `[issuer]` is configured.
pub fn document(shared: &Arc<Shared>) -> Result<warp::reply::Response, ApiError> {
    let config = shared.config.load();
    let Some(issuer) = &config.issuer.issuer else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no [issuer] is configured",
        ));
    };
    let base = issuer.trim_end_matches('/');
    let algorithms: Vec<&str> = config
        .keys
        .algorithms
        .iter()
        .map(|alg| alg.name())
        .collect();
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": algorithms,
        "access_token_signing_alg_values_supported": algorithms,
        // No scopes_supported: the scopes granted to clients are nobody else's business.
        "claims_supported": ["iss", "sub", "client_id", "aud", "iat", "nbf", "exp", "jti", "scope"],
    });
    let mut response = warp::reply::json(&body).into_response();
    response.headers_mut().insert(
        "cache-control",
        warp::http::HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(response)
}
