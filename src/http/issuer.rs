//! The issuer endpoints: `GET /v1/signing-keys` and `POST /v1/sign`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use jwkd_client::jwk::PrivateJwk;
use jwkd_client::signing_keys::{SigningKeyDocument, SigningKeysDocument};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::credentials;
use super::error::ApiError;
use super::mint::Mint;
use crate::auth::{ClientConfig, Role};
use crate::keyset::KeyRecord;
use crate::state::Shared;
use crate::timeline;

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn signing_key(key: &KeyRecord) -> Result<SigningKeyDocument, ApiError> {
    let Some(private) = key.key.local() else {
        return Err(ApiError::not_exportable());
    };
    let params = private.private_jwk_params().map_err(|err| {
        tracing::error!(kid = %key.kid, %err, "cannot export a signing key");
        ApiError::internal()
    })?;
    Ok(SigningKeyDocument {
        activates_at: rfc3339(key.activates_at),
        alg: key.alg.name().to_owned(),
        deactivates_at: key.deactivates_at.map(rfc3339),
        jwk: PrivateJwk {
            params,
            kid: key.kid.clone(),
            alg: key.alg.name().to_owned(),
            use_: Some("sig".to_owned()),
        },
        kid: key.kid.clone(),
    })
}

/// `GET /v1/signing-keys`: the [`SigningKeysDocument`] of the client's family.
///
/// # Errors
/// 401/403, or 503 when the family has no current key.
pub async fn signing_keys(
    shared: Arc<Shared>,
    request: super::RequestAuth,
) -> Result<warp::reply::Response, ApiError> {
    let client = credentials::authorize(&shared, request, Role::Issuer).await?;
    if !shared.custodian.exportable() {
        return Err(ApiError::not_exportable());
    }
    let view = shared.view.load();
    let now = view.time_at(shared.common.clock.now());
    let current = timeline::current_at(&view.keyset, client.algorithm, now)
        .ok_or_else(|| ApiError::no_signing_key(client.algorithm))?;
    let next = timeline::next_at(&view.keyset, client.algorithm, now);
    tracing::info!(target: "jwkd::audit", client = %client.id, kid = %current.kid, "signing keys pulled");
    let document = SigningKeysDocument {
        current: signing_key(current)?,
        next: next.map(signing_key).transpose()?,
    };
    Ok(super::no_store(&document))
}

/// `POST /v1/sign`: claims in, a compact JWS out; `iat`, `nbf` and `jti` set,
/// `exp` capped at `iat + max_token_lifetime`. It signs only what the client may
/// claim: `aud` within the client's audiences (absent: the first), `iss` the
/// configured issuer (absent: filled in). The header `typ` is `JWT`, never
/// `at+jwt`, so no token signed here passes an RFC 9068 access-token check.
/// Every signature is audited with the client, kid, `sub`, `aud` and `jti`.
///
/// # Errors
/// 401/403, 400 for a body that is not a JSON object, a bad `exp`, an `aud` or
/// `iss` the client may not claim; 503 without a key.
pub async fn sign(
    shared: Arc<Shared>,
    request: super::RequestAuth,
    body: Bytes,
) -> Result<warp::reply::Response, ApiError> {
    let client = credentials::authorize(&shared, request, Role::Issuer).await?;
    let mut claims: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(claims)) => claims,
        Ok(_) => {
            return Err(ApiError::invalid_request(
                "the body must be a JSON object of claims",
            ));
        }
        Err(err) => {
            return Err(ApiError::invalid_request(format!(
                "the body is not JSON: {err}"
            )));
        }
    };
    let config = shared.config.load();
    let mint = Mint::begin(&shared)?;
    let (exp, exp_capped) = mint.expiry(requested_exp(claims.get("exp"))?)?;
    let audience = allowed_audience(&client, claims.get("aud"))?;
    claims.insert("aud".into(), audience);
    match (claims.get("iss"), &config.issuer.issuer) {
        (None, Some(issuer)) => {
            claims.insert("iss".into(), json!(issuer));
        }
        (None, None) => {}
        (Some(iss), Some(issuer)) if iss.as_str() == Some(issuer.as_str()) => {}
        (Some(_), Some(issuer)) => {
            return Err(ApiError::invalid_request(format!(
                "iss must be this jwkd's issuer {issuer:?} (or absent)"
            )));
        }
        (Some(_), None) => {
            return Err(ApiError::invalid_request(
                "iss is not allowed: this jwkd has no issuer.issuer configured",
            ));
        }
    }
    let minted = mint
        .sign(client.algorithm, "JWT", &mut claims, exp, &client.id)
        .await?;
    tracing::info!(
        target: "jwkd::audit",
        client = %client.id,
        kid = %minted.signer.kid(),
        sub = %claims.get("sub").map(ToString::to_string).unwrap_or_default(),
        aud = %claims["aud"],
        jti = %claims["jti"],
        "signed a token"
    );
    Ok(super::no_store(&SignResponse {
        exp,
        exp_capped,
        kid: minted.signer.kid(),
        token: &minted.token,
    }))
}

/// The answer of `/v1/sign`, serialized as it is: its members in the order they
/// have always been written (sorted).
#[derive(Serialize)]
struct SignResponse<'a> {
    exp: i64,
    exp_capped: bool,
    kid: &'a str,
    token: &'a str,
}

/// The `exp` a client asked for: a JSON number of seconds, fractions floored.
fn requested_exp(exp: Option<&Value>) -> Result<Option<i64>, ApiError> {
    match exp {
        None => Ok(None),
        Some(Value::Number(exp)) => exp
            .as_i64()
            .or_else(|| exp.as_f64().map(|exp| exp.floor() as i64))
            .map(Some)
            .ok_or_else(|| ApiError::invalid_request("exp is not a usable number")),
        Some(_) => Err(ApiError::invalid_request(
            "exp must be a number (seconds since the epoch)",
        )),
    }
}

/// The `aud` to sign for `client`: what it asked for if every audience in it is
/// one of the client's (`aud` may be a string or an array of strings), else the
/// client's first audience when it asked for none.
fn allowed_audience(client: &ClientConfig, requested: Option<&Value>) -> Result<Value, ApiError> {
    let allowed = |audience: &str| client.audiences.iter().any(|own| own == audience);
    let refuse = |audience: &str| {
        ApiError::invalid_request(format!(
            "aud {audience:?} is not one of client {}'s audiences",
            client.id
        ))
    };
    match requested {
        None => client
            .audiences
            .first()
            .map(|audience| json!(audience))
            .ok_or_else(|| {
                ApiError::invalid_request(format!(
                    "client {} has no audiences to sign for",
                    client.id
                ))
            }),
        Some(Value::String(audience)) if allowed(audience) => Ok(json!(audience)),
        Some(Value::String(audience)) => Err(refuse(audience)),
        Some(Value::Array(audiences)) if !audiences.is_empty() => {
            for audience in audiences {
                match audience.as_str() {
                    Some(audience) if allowed(audience) => {}
                    Some(audience) => return Err(refuse(audience)),
                    None => {
                        return Err(ApiError::invalid_request(
                            "aud must be a string or an array of strings",
                        ));
                    }
                }
            }
            Ok(Value::Array(audiences.clone()))
        }
        Some(_) => Err(ApiError::invalid_request(
            "aud must be a string or a non-empty array of strings",
        )),
    }
}
