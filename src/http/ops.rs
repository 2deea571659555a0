//! `/healthz` and `/readyz` (CONTRACT §6.7).

use warp::Reply;
use warp::http::StatusCode;

use super::Issuers;
use super::error::ApiError;
use crate::metrics::IssuerGauges;

/// 200 while the process serves.
pub fn healthz() -> warp::reply::Response {
    warp::reply::json(&serde_json::json!({"status": "ok"})).into_response()
}

/// 200 when every issuer is ready, 503 with the reasons otherwise. With
/// several issuers the body says each one's readiness under `issuers`, and
/// each reason names its issuer.
pub fn readyz(issuers: &Issuers) -> warp::reply::Response {
    let list = issuers.list();
    let now = issuers.common.clock.now();
    let readiness: Vec<(&str, Result<(), String>)> = list
        .iter()
        .map(|api| (api.name(), api.shared.readiness_at(now)))
        .collect();
    let several = readiness.len() > 1;
    let reasons: Vec<String> = readiness
        .iter()
        .filter_map(|(name, ready)| {
            let reason = ready.as_ref().err()?;
            Some(if several {
                format!("issuer {name}: {reason}")
            } else {
                reason.clone()
            })
        })
        .collect();
    if !reasons.is_empty() {
        let error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            reasons.join("; "),
        );
        if !several {
            return error.into_response();
        }
        let body = serde_json::json!({
            "error": error.error,
            "error_description": error.description,
            "issuers": issuer_states(&readiness),
        });
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), error.status).into_response();
        response.headers_mut().insert(
            "cache-control",
            warp::http::HeaderValue::from_static("no-store"),
        );
        return response;
    }
    let mut body = serde_json::json!({"status": "ready"});
    if several {
        body["issuers"] = issuer_states(&readiness);
    }
    warp::reply::json(&body).into_response()
}

/// Each issuer's readiness by name: `ready`, or why not.
fn issuer_states(readiness: &[(&str, Result<(), String>)]) -> serde_json::Value {
    readiness
        .iter()
        .map(|(name, ready)| {
            let state = match ready {
                Ok(()) => "ready".to_owned(),
                Err(reason) => reason.clone(),
            };
            ((*name).to_owned(), serde_json::Value::String(state))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The Prometheus exposition: every issuer's series.
pub fn metrics(issuers: &Issuers) -> warp::reply::Response {
    let list = issuers.list();
    let views: Vec<_> = list
        .iter()
        .map(|api| (api.shared.view.load_full(), api.shared.config.load_full()))
        .collect();
    let gauges: Vec<IssuerGauges<'_>> = list
        .iter()
        .zip(&views)
        .map(|(api, (view, config))| IssuerGauges {
            issuer: api.name(),
            keyset: &view.keyset,
            families: &config.keys.algorithms,
            clock: &view.clock,
            kms: api.shared.custodian.gauges(),
        })
        .collect();
    let text = issuers
        .common
        .metrics
        .render_at(&gauges, issuers.common.clock.now());
    let mut response = text.into_response();
    response.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
