//! One mapping from failures to JSON error bodies: `{"error", "error_description"}`.

use std::convert::Infallible;

use warp::http::StatusCode;
use warp::{Rejection, Reply};

/// An error answered to a client. Internal causes are logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code (RFC 6749 §5.2 style).
    pub error: &'static str,
    /// Human-readable text; never contains secrets or internal causes.
    pub description: String,
    /// Extra response headers, such as `WWW-Authenticate`.
    pub headers: Vec<(&'static str, String)>,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    /// An error with this status, code and description.
    pub fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            error,
            description: description.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    /// A 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// A 503 when no key can sign.
    pub fn no_signing_key(alg: crate::keys::Algorithm) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            format!("no current {alg} key is loaded"),
        )
    }

    /// A 503 while this host's clock is beyond `clock_skew` from the store's:
    /// a token it stamped would be rejected by verifiers, or outlive its key.
    pub fn clock_skew(skew: &crate::clock::Skew) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            format!("not signing: {skew}"),
        )
    }

    /// The 409 of `/v1/signing-keys` for an issuer whose keys KMS holds: there
    /// is nothing to pull, by construction.
    pub fn not_exportable() -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "keys_not_exportable",
            "this issuer's signing keys are held in AWS KMS and never leave it: sign with \
             POST /v1/sign instead",
        )
    }

    /// A 503 while KMS cannot sign: worth retrying shortly.
    pub fn kms_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the key service cannot sign now (KMS is unavailable); retry shortly",
        )
        .with_header("retry-after", "1")
    }

    /// A 503 when a signature would wait beyond jwkd's bound on KMS signatures
    /// (`kms.signs_per_second`, and each client's share of it): `reason` says
    /// which. KMS itself is fine, so `/readyz` is not affected.
    pub fn kms_busy(reason: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            format!("too many signatures waiting for KMS: {reason}; retry shortly"),
        )
        .with_header("retry-after", "1")
    }

    /// A 500 whose cause was logged.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        )
    }

    /// The 413 for request bodies over the limit.
    pub fn payload_too_large(limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    }
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        let body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        let headers = response.headers_mut();
        // Error answers are never worth caching, and some carry credentials' verdicts.
        headers.insert(
            "cache-control",
            warp::http::HeaderValue::from_static("no-store"),
        );
        for (name, value) in self.headers {
            if let Ok(value) = warp::http::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// Turns every rejection into a JSON error with the right status.
pub async fn handle_rejection(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    let error = if let Some(error) = rejection.find::<ApiError>() {
        ApiError {
            status: error.status,
            error: error.error,
            description: error.description.clone(),
            headers: error.headers.clone(),
        }
    } else if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not accept that method",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::payload_too_large(super::BODY_LIMIT)
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "unsupported content type",
        )
    } else {
        tracing::debug!(?rejection, "unhandled rejection");
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request could not be understood",
        )
    };
    Ok(error.into_response())
}
