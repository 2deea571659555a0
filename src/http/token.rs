//! `POST /oauth2/token`: the client-credentials grant (RFC 6749 §4.4) issuing
//! RFC 9068 access tokens signed by the current key of the client's family.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use warp::http::StatusCode;

use super::credentials::{self, Presented};
use super::error::ApiError;
use super::mint::Mint;
use crate::state::Shared;

/// The successful answer (RFC 6749 §5.1), serialized as it is: its members in
/// the order they have always been written (sorted).
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    expires_in: i64,
    scope: &'a str,
    token_type: &'static str,
}

/// The request parameters, each at most once (RFC 6749 §3.2).
pub(crate) fn parse_form(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let mut params = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        if params
            .insert(name.to_string(), Value::String(value.into_owned()))
            .is_some()
        {
            return Err(ApiError::invalid_request(format!(
                "parameter {name} is repeated"
            )));
        }
    }
    Ok(params)
}

fn param<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}

/// Handles a token request.
///
/// # Errors
/// RFC 6749 §5.2 errors.
pub async fn token(
    shared: Arc<Shared>,
    request: super::RequestAuth,
    content_type: Option<String>,
    body: Bytes,
) -> Result<warp::reply::Response, ApiError> {
    let form_type = content_type
        .as_deref()
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| {
            value
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(ApiError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = parse_form(&body)?;
    match param(&params, "grant_type") {
        None => return Err(ApiError::invalid_request("grant_type is required")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            ));
        }
    }
    let from_header = credentials::from_header(&shared, &request, false)?;
    let in_form = param(&params, "client_id").is_some() || params.contains_key("client_secret");
    let presented = match (from_header, in_form) {
        (Some(presented), true) => {
            credentials::log_failure(
                &shared,
                &request,
                Some(&presented.client_id),
                credentials::Failure::SentTwice,
            );
            return Err(ApiError::invalid_request(
                "use one client authentication method, not both",
            ));
        }
        (Some(presented), false) => Some(presented),
        (None, true) => Some(Presented {
            client_id: param(&params, "client_id").unwrap_or_default().to_owned(),
            secret: zeroize::Zeroizing::new(
                params
                    .get("client_secret")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
        }),
        (None, false) => None,
    };
    let client = credentials::authenticate(&shared, presented, &request).await?;

    let audience = match param(&params, "audience") {
        Some(audience) if client.audiences.iter().any(|allowed| allowed == audience) => {
            audience.to_owned()
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "the client may not ask for that audience",
            ));
        }
        None => client.audiences.first().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "the client has no audience configured",
            )
        })?,
    };
    let scopes: Vec<String> = match param(&params, "scope") {
        Some(requested) => {
            let requested: BTreeSet<&str> = requested
                .split(' ')
                .filter(|scope| !scope.is_empty())
                .collect();
            if let Some(denied) = requested
                .iter()
                .find(|scope| !client.scopes.iter().any(|allowed| allowed == *scope))
            {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    format!("the client may not ask for scope {denied:?}"),
                ));
            }
            requested.into_iter().map(str::to_owned).collect()
        }
        None => client.scopes.clone(),
    };
    let scope = scopes.join(" ");

    let config = shared.config.load();
    let mint = Mint::begin(&shared)?;
    let (exp, _) = mint.expiry(None)?;
    let expires_in = exp - mint.iat();
    let mut claims = Map::new();
    if let Some(issuer) = &config.issuer.issuer {
        claims.insert("iss".into(), json!(issuer));
    }
    claims.insert("sub".into(), json!(client.id));
    claims.insert("client_id".into(), json!(client.id));
    claims.insert("aud".into(), json!(audience));
    if !scope.is_empty() {
        claims.insert("scope".into(), json!(scope));
    }
    let access_token = mint
        .sign(client.algorithm, "at+jwt", &mut claims, exp, &client.id)
        .await?
        .token;
    let mut response = super::no_store(&TokenResponse {
        access_token: &access_token,
        expires_in,
        scope: &scope,
        token_type: "Bearer",
    });
    response
        .headers_mut()
        .insert("pragma", warp::http::HeaderValue::from_static("no-cache"));
    Ok(response)
}
