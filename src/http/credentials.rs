//! Client credentials from a request: HTTP Basic (RFC 6749 §2.3.1, with the
//! form-urlencoded id and secret), `Bearer <client_id>:<client_secret>` on the
//! issuer and admin endpoints, or `client_id`/`client_secret` form fields.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use warp::http::StatusCode;

use super::error::ApiError;
use crate::auth::{ClientConfig, Role};
use crate::state::Shared;
use crate::throttle::{self, Topic};

/// A client id and secret as presented.
pub struct Presented {
    /// The client id.
    pub client_id: String,
    /// The secret; never logged.
    pub secret: zeroize::Zeroizing<String>,
}

/// One form-urlencoded component of Basic credentials (RFC 6749 §2.3.1): `+` is
/// a space, `%XX` a byte; `&`, `=` and `;` are themselves.
fn decode_component(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Reads the `Authorization` header: `Basic` always, `Bearer id:secret` when allowed.
///
/// # Errors
/// Why the header is present but cannot be read (never a part of it).
pub(crate) fn parse_header(
    header: Option<&str>,
    allow_bearer: bool,
) -> Result<Option<Presented>, &'static str> {
    let Some(header) = header else {
        return Ok(None);
    };
    let (scheme, value) = header.trim().split_once(' ').unwrap_or((header, ""));
    let pair = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or("the Basic credentials are not valid base64")?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or("the Basic credentials have no ':'")?;
        (decode_component(id), decode_component(secret))
    } else if allow_bearer && scheme.eq_ignore_ascii_case("bearer") {
        let (id, secret) = value
            .trim()
            .split_once(':')
            .ok_or("expected Bearer <client_id>:<client_secret>")?;
        (id.to_owned(), secret.to_owned())
    } else {
        return Err("unsupported authorization scheme");
    };
    // No configured client has an empty id: refuse it before any hashing.
    if pair.0.is_empty() {
        return Err("the credentials have no client id");
    }
    Ok(Some(Presented {
        client_id: pair.0,
        secret: zeroize::Zeroizing::new(pair.1),
    }))
}

/// The credentials in the request's `Authorization` header: `Basic` always,
/// `Bearer id:secret` when allowed.
///
/// # Errors
/// `invalid_client` when the header is present but cannot be read (logged).
pub fn from_header(
    shared: &Shared,
    request: &super::RequestAuth,
    allow_bearer: bool,
) -> Result<Option<Presented>, ApiError> {
    parse_header(request.authorization.as_deref(), allow_bearer).map_err(|reason| {
        log_failure(shared, request, None, Failure::Malformed(reason));
        invalid_client(reason)
    })
}

/// Why client authentication failed. Only the log tells these apart: the
/// peer gets the same answer for an unknown client and a wrong secret.
#[derive(Clone, Copy, Debug)]
pub enum Failure {
    /// No credentials at all.
    Missing,
    /// An `Authorization` header that cannot be read, and why.
    Malformed(&'static str),
    /// Credentials both in the header and in the form.
    SentTwice,
    /// No client has this id.
    UnknownClient,
    /// The client exists; the secret is not its secret.
    WrongSecret,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Missing => f.write_str("no credentials"),
            Failure::Malformed(reason) => write!(f, "malformed credentials: {reason}"),
            Failure::SentTwice => {
                f.write_str("credentials sent twice, in the header and in the form")
            }
            Failure::UnknownClient => f.write_str("unknown client"),
            Failure::WrongSecret => f.write_str("wrong secret"),
        }
    }
}

/// A presented client id as logged: control characters escaped, so that a
/// peer cannot forge log lines, and cut at 64 characters.
struct LoggedId<'a>(&'a str);

impl std::fmt::Display for LoggedId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX_CHARS: usize = 64;
        for c in self.0.chars().take(MAX_CHARS) {
            write!(f, "{}", c.escape_debug())?;
        }
        if self.0.chars().nth(MAX_CHARS).is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// Logs a failed authentication with the client id and the source, never the
/// secret: at most once a minute per source, so a guesser cannot flood the
/// log, and at once from a source not heard from in the last minute.
pub fn log_failure(
    shared: &Shared,
    request: &super::RequestAuth,
    client_id: Option<&str>,
    failure: Failure,
) {
    let config = shared.config.load();
    let source = throttle::source(
        request.peer,
        request.forwarded_for.as_deref(),
        &config.server.trusted_proxies,
    );
    let limited_as = source.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    if !shared.common.throttle.should_log(Topic::Failed, limited_as) {
        return;
    }
    let source = source.map_or_else(|| "unknown".to_owned(), |source| source.to_string());
    match client_id {
        Some(client_id) => tracing::warn!(
            client = %LoggedId(client_id),
            %source,
            "client authentication failed: {failure} (logged once a minute per source)"
        ),
        None => tracing::warn!(
            %source,
            "client authentication failed: {failure} (logged once a minute per source)"
        ),
    }
}

/// The 401 for failed client authentication (RFC 6749 §5.2).
pub fn invalid_client(description: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_client", description).with_header(
        "www-authenticate",
        "Basic realm=\"jwkd\", charset=\"UTF-8\"",
    )
}

/// Authenticates presented credentials; one answer for unknown clients and wrong
/// secrets. A secret remembered from an earlier check is accepted at once; any
/// other check takes one from the source's allowance first ([`throttle`]).
///
/// # Errors
/// `invalid_client` (401); 429 when the source's allowance is spent; 503 when
/// the queue of checks is full.
pub async fn authenticate(
    shared: &Arc<Shared>,
    presented: Option<Presented>,
    request: &super::RequestAuth,
) -> Result<Arc<ClientConfig>, ApiError> {
    let Some(presented) = presented else {
        log_failure(shared, request, None, Failure::Missing);
        return Err(invalid_client("client authentication is required"));
    };
    let auth = shared.auth.load_full();
    if let Some(client) = auth.remembered(&presented.client_id, &presented.secret) {
        return Ok(client);
    }
    let config = shared.config.load();
    let source = throttle::source(
        request.peer,
        request.forwarded_for.as_deref(),
        &config.server.trusted_proxies,
    );
    if let Some(source) = source
        && let Err(wait) = shared.common.throttle.take(source)
    {
        return Err(throttled(
            shared,
            &presented.client_id,
            source,
            wait,
            Allowance::Source(config.server.auth_checks_per_minute),
        ));
    }
    // A configured client id tried from addresses it never authenticated from
    // has an allowance of its own (unknown ids are bounded per source above).
    // The throttle serves every issuer: a client is known to it by issuer and id.
    let throttled_as = throttle_id(&config.name, &presented.client_id);
    if let Some(source) = source
        && auth.knows(&presented.client_id)
        && let Err(wait) = shared
            .common
            .throttle
            .take_for_client(&throttled_as, source)
    {
        return Err(throttled(
            shared,
            &presented.client_id,
            source,
            wait,
            Allowance::Client(config.server.auth_checks_per_client_per_minute),
        ));
    }
    let client = auth
        .authenticate(&presented.client_id, &presented.secret)
        .await
        .map_err(|busy| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                busy.to_string(),
            )
            .with_header("retry-after", "1")
        })?;
    let Some(client) = client else {
        // Told apart after the full check, which costs the same either way,
        // and only for the log: the answer is the same.
        let failure = if auth.knows(&presented.client_id) {
            Failure::WrongSecret
        } else {
            Failure::UnknownClient
        };
        log_failure(shared, request, Some(&presented.client_id), failure);
        return Err(invalid_client("client authentication failed"));
    };
    if let Some(source) = source {
        shared.common.throttle.succeeded(&throttled_as, source);
    }
    Ok(client)
}

/// How the throttle, shared by every issuer, knows a client: its id in the
/// default issuer, `issuer:id` in another (a client id may be two clients;
/// no id has a `:`, so no key is both).
fn throttle_id<'a>(issuer: &str, client_id: &'a str) -> std::borrow::Cow<'a, str> {
    if issuer == crate::config::DEFAULT_ISSUER {
        client_id.into()
    } else {
        format!("{issuer}:{client_id}").into()
    }
}

/// Which allowance a throttled check ran out of, and its size per minute.
enum Allowance {
    Source(u32),
    Client(u32),
}

/// The `429` for a check whose allowance is spent: counted, logged at most once
/// a minute per source, with `Retry-After` in whole seconds.
fn throttled(
    shared: &Shared,
    client_id: &str,
    source: std::net::IpAddr,
    wait: std::time::Duration,
    allowance: Allowance,
) -> ApiError {
    shared.metrics.auth_throttled.inc();
    let (per_minute, what, description) = match allowance {
        Allowance::Source(per_minute) => (
            per_minute,
            "throttling client authentication from this source",
            format!("too many client authentications from {source}"),
        ),
        Allowance::Client(per_minute) => (
            per_minute,
            "throttling client authentication: this client id is being tried from many new addresses",
            "too many authentications for this client from new addresses".to_owned(),
        ),
    };
    if shared.common.throttle.should_log(Topic::Throttled, source) {
        tracing::warn!(client = %LoggedId(client_id), %source, per_minute, "{what} (logged once a minute per source)");
    }
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        format!("{description}; retry in {seconds} s"),
    )
    .with_header("retry-after", seconds.to_string())
}

/// Authenticates the `Authorization` header and checks the role.
///
/// # Errors
/// 401 without valid credentials, 403 without the role.
pub async fn authorize(
    shared: &Arc<Shared>,
    request: super::RequestAuth,
    role: Role,
) -> Result<Arc<ClientConfig>, ApiError> {
    let presented = from_header(shared, &request, true)?;
    let client = authenticate(shared, presented, &request).await?;
    if !client.roles.contains(&role) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            format!("client {} does not have the {role} role", client.id),
        ));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fuzz/regressions/token_request/empty-client-id`):
    /// an empty client id used to reach a full credential check.
    #[test]
    fn an_empty_client_id_is_refused_before_any_check() {
        for (header, bearer) in [
            (
                format!("Basic {}", STANDARD.encode(":orders-secret")),
                false,
            ),
            ("Bearer :minter-secret".to_owned(), true),
        ] {
            let err = parse_header(Some(&header), bearer).err();
            assert_eq!(err, Some("the credentials have no client id"), "{header}");
        }
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("my%20client:p%3Ass+word"));
        let presented = parse_header(Some(&header), false).unwrap().unwrap();
        assert_eq!(presented.client_id, "my client");
        assert_eq!(presented.secret.as_str(), "p:ss word");
    }

    #[test]
    fn basic_credentials_keep_every_character_rfc_6749_allows() {
        for (id, secret, encoded) in [
            ("a&b", "c&d=e", "a%26b:c%26d%3De"),
            ("a&b", "c&d=e", "a&b:c&d=e"),
            ("a b", "p+q r", "a+b:p%2Bq+r"),
            ("100%", "50%:off", "100%25:50%25%3Aoff"),
            ("x", "s;t", "x:s;t"),
        ] {
            let header = format!("Basic {}", STANDARD.encode(encoded));
            let presented = parse_header(Some(&header), false).unwrap().unwrap();
            assert_eq!(
                (presented.client_id.as_str(), presented.secret.as_str()),
                (id, secret),
                "{encoded}"
            );
        }
    }

    #[test]
    fn logged_client_ids_cannot_forge_lines_or_fill_the_log() {
        assert_eq!(LoggedId("orders").to_string(), "orders");
        assert_eq!(
            LoggedId("x\n2026-01-01 INFO fake\u{1b}[0m").to_string(),
            "x\\n2026-01-01 INFO fake\\u{1b}[0m"
        );
        let long = "a".repeat(1000);
        assert_eq!(LoggedId(&long).to_string(), format!("{}…", "a".repeat(64)));
    }

    #[test]
    fn bearer_only_where_allowed() {
        assert!(parse_header(Some("Bearer a:b"), false).is_err());
        let presented = parse_header(Some("Bearer a:b:c"), true).unwrap().unwrap();
        assert_eq!(
            (presented.client_id.as_str(), presented.secret.as_str()),
            ("a", "b:c")
        );
        assert!(parse_header(Some("Basic !!!"), true).is_err());
        assert!(parse_header(None, true).unwrap().is_none());
    }
}
