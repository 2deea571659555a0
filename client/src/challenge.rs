//! What the middleware answers when it refuses a request: RFC 6750 §3 for a missing
//! or bad token (401 with `WWW-Authenticate: Bearer ...`), 503 when no keys can be used.
//! Bodies are JSON `{"error","error_description"}`, like every jwkd error body.

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};

use crate::error::Error;

/// A refusal, independent of the web framework.
pub(crate) struct Challenge {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: String,
}

impl Challenge {
    /// No credentials (RFC 6750 §3.1: no error code then).
    pub(crate) fn missing() -> Challenge {
        Challenge {
            status: StatusCode::UNAUTHORIZED,
            headers: vec![
                (WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            ],
            body: body("invalid_request", "missing bearer token"),
        }
    }

    pub(crate) fn for_error(error: &Error) -> Challenge {
        if error.is_keys_unavailable() {
            // The cause names internal URLs: it goes to the log, not to the caller.
            tracing::warn!("refusing a request: {error}");
            return Challenge {
                status: StatusCode::SERVICE_UNAVAILABLE,
                headers: vec![
                    (RETRY_AFTER, HeaderValue::from_static("5")),
                    (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                ],
                body: body("temporarily_unavailable", "signing keys unavailable"),
            };
        }
        let description = error_description(&error.to_string());
        let challenge =
            format!(r#"Bearer error="invalid_token", error_description="{description}""#);
        // error_description keeps only visible ASCII without quote or backslash, so the
        // header value is always valid.
        let challenge = HeaderValue::from_str(&challenge)
            .unwrap_or_else(|_| HeaderValue::from_static(r#"Bearer error="invalid_token""#));
        Challenge {
            status: StatusCode::UNAUTHORIZED,
            headers: vec![
                (WWW_AUTHENTICATE, challenge),
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            ],
            body: body("invalid_token", &description),
        }
    }
}

fn body(error: &str, description: &str) -> String {
    serde_json::json!({"error": error, "error_description": description}).to_string()
}

/// RFC 6750 §3: `error_description` is `%x20-21 / %x23-5B / %x5D-7E`.
fn error_description(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer a b"), None);
    }

    #[test]
    fn description_is_header_safe() {
        let challenge = Challenge::for_error(&Error::UnknownKid {
            kid: "x\"\\\u{e9}\n".into(),
        });
        let value = challenge.headers[0].1.to_str().unwrap();
        assert_eq!(
            value,
            r#"Bearer error="invalid_token", error_description="unknown kid 'x/'//??'""#
        );
    }
}
