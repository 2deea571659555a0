//! Every error this crate returns, one enum per kind of caller.
//!
//! - [`Error`]: why [`Verifier::verify`](crate::Verifier::verify) refused a token.
//!   One variant per failed check, so a caller (or a test) can branch on the exact reason.
//! - [`JwksError`]: why a key set could not be obtained or used.
//! - [`FetchError`]: what went wrong on the wire, shared by every HTTP call of the crate.
//! - [`BuildError`]: a builder was given an option it cannot accept.
//! - [`TokenError`] and [`SignError`]: the token and signing-key sources.
//!
//! `Display` is written for operators and for `WWW-Authenticate` descriptions: lowercase,
//! no trailing period, what failed and then why. It never prints a secret or a token.

use std::fmt;
use std::time::Duration;

use crate::keyset::Algorithm;

/// Which part of a compact JWS a [`Error::Malformed`] refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenPart {
    /// The token as a whole: its length, its dots, its characters.
    Token,
    /// The protected header.
    Header,
    /// The payload (the claims).
    Payload,
    /// The signature.
    Signature,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenPart::Token => "token",
            TokenPart::Header => "header",
            TokenPart::Payload => "payload",
            TokenPart::Signature => "signature",
        })
    }
}

/// Why a token was refused: one variant per check.
///
/// Every variant except [`Error::KeysUnavailable`] means "this token is not acceptable"
/// (an HTTP 401); `KeysUnavailable` means "no token can be checked right now" (a 503).
/// [`Error::is_keys_unavailable`] tells them apart.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The token is longer than the verifier's limit (8 KiB by default).
    /// Checked before anything else is read.
    TokenTooLarge {
        /// Length of the token in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The token is not a well-formed compact JWS: not exactly two dots, a part that is
    /// not strict base64url (padding, other alphabets, non-canonical trailing bits),
    /// JSON that does not parse or is not an object, a repeated header member, or a
    /// header over the size limit.
    Malformed {
        /// The part that is malformed.
        part: TokenPart,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The header's `alg` is not in the verifier's allow-list. `none` and the HMAC
    /// algorithms always land here: they cannot be allowed.
    AlgorithmNotAllowed {
        /// The `alg` of the header, as sent.
        alg: String,
    },
    /// The header's `alg` differs from the `alg` of the key its `kid` names. The
    /// algorithm is taken from the key, never from the token.
    AlgorithmMismatch {
        /// The `alg` of the header.
        header: Algorithm,
        /// The `alg` of the key.
        key: Algorithm,
    },
    /// The header has no `kid`. A kid is required: the verifier never tries several keys.
    MissingKid,
    /// The header's `kid` is longer than the verifier's limit (128 bytes by default).
    KidTooLong {
        /// Length of the kid in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// No key with this `kid` is in the key set, even after the refresh this miss was
    /// allowed to trigger (at most one per cooldown, shared by all callers).
    UnknownKid {
        /// The kid of the token.
        kid: String,
    },
    /// The key set holds several different keys under this `kid`; the verifier refuses
    /// to pick one.
    AmbiguousKid {
        /// The kid of the token.
        kid: String,
    },
    /// The header lists a `crit` extension this verifier does not understand (it
    /// understands none), or `crit` is not a non-empty array of names.
    UnsupportedCritical {
        /// The first extension name that is not understood.
        name: String,
    },
    /// The header's `typ` is not the one the verifier requires.
    WrongType {
        /// The required `typ`.
        expected: String,
        /// The `typ` of the header, if any.
        found: Option<String>,
    },
    /// The signature does not verify with the key named by `kid`. This includes ECDSA
    /// signatures whose `r` or `s` is zero or not below the group order (CVE-2022-21449),
    /// and signatures of the wrong length.
    BadSignature,
    /// A registered claim has the wrong JSON type: `exp`, `nbf` or `iat` that is not a
    /// number (a string `exp` is an error, never "absent"), `iss` that is not a string,
    /// `aud` that is neither a string nor an array of strings, or a claim repeated.
    InvalidClaimType {
        /// The claim.
        claim: &'static str,
    },
    /// A required claim is absent. `exp` is always required.
    MissingClaim {
        /// The claim.
        claim: &'static str,
    },
    /// `exp` is in the past, beyond the leeway.
    Expired {
        /// The token's `exp` (seconds since the Unix epoch).
        exp: i64,
        /// The verifier's clock (seconds since the Unix epoch).
        now: i64,
    },
    /// `nbf` is in the future, beyond the leeway.
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// `iat` is in the future, beyond the leeway.
    IssuedInFuture {
        /// The token's `iat`.
        iat: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// `iss` is absent or not exactly one of the configured issuers (no prefix or
    /// substring matching).
    WrongIssuer {
        /// The token's `iss`, if any.
        found: Option<String>,
    },
    /// `aud` is absent or contains none of the configured audiences.
    WrongAudience {
        /// The token's audiences.
        found: Vec<String>,
    },
    /// The token has an `aud` but the verifier was configured without an audience: a
    /// token meant for some service is not accepted by a verifier that did not say
    /// which service it is.
    UnexpectedAudience {
        /// The token's audiences.
        found: Vec<String>,
    },
    /// The claims are valid but do not deserialize into the caller's claims type.
    InvalidClaims {
        /// What serde said.
        reason: String,
    },
    /// No key set can be used: none was ever loaded, or the last good one is older than
    /// `max_stale`. Fail closed; this is a 503, not a 401.
    KeysUnavailable {
        /// Why the last refresh failed, if one did.
        last_error: Option<JwksError>,
    },
}

impl Error {
    /// True for [`Error::KeysUnavailable`]: the token was not judged, the keys were
    /// missing. Middleware maps this to 503 and everything else to 401.
    pub fn is_keys_unavailable(&self) -> bool {
        matches!(self, Error::KeysUnavailable { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TokenTooLarge { len, max } => {
                write!(f, "token too large: {len} bytes (limit {max})")
            }
            Error::Malformed { part, reason } => write!(f, "malformed token {part}: {reason}"),
            Error::AlgorithmNotAllowed { alg } => {
                write!(f, "algorithm not allowed: {}", printable(alg))
            }
            Error::AlgorithmMismatch { header, key } => {
                write!(f, "algorithm mismatch: header says {header}, key is {key}")
            }
            Error::MissingKid => f.write_str("token header has no kid"),
            Error::KidTooLong { len, max } => write!(f, "kid too long: {len} bytes (limit {max})"),
            Error::UnknownKid { kid } => write!(f, "unknown kid {}", printable(kid)),
            Error::AmbiguousKid { kid } => {
                write!(
                    f,
                    "kid {} names several keys in the key set",
                    printable(kid)
                )
            }
            Error::UnsupportedCritical { name } => {
                write!(f, "unsupported critical header {}", printable(name))
            }
            Error::WrongType { expected, found } => match found {
                Some(found) => write!(
                    f,
                    "wrong token type {} (expected {expected})",
                    printable(found)
                ),
                None => write!(f, "token has no typ (expected {expected})"),
            },
            Error::BadSignature => f.write_str("invalid signature"),
            Error::InvalidClaimType { claim } => write!(f, "claim {claim} has the wrong type"),
            Error::MissingClaim { claim } => write!(f, "missing claim {claim}"),
            Error::Expired { exp, now } => write!(f, "token expired at {exp} (now {now})"),
            Error::NotYetValid { nbf, now } => {
                write!(f, "token not valid before {nbf} (now {now})")
            }
            Error::IssuedInFuture { iat, now } => {
                write!(f, "token issued in the future at {iat} (now {now})")
            }
            Error::WrongIssuer { found } => match found {
                Some(found) => write!(f, "wrong issuer {}", printable(found)),
                None => f.write_str("token has no issuer"),
            },
            Error::WrongAudience { found } => {
                if found.is_empty() {
                    f.write_str("token has no audience")
                } else {
                    write!(f, "wrong audience {}", printable(&found.join(", ")))
                }
            }
            Error::UnexpectedAudience { found } => write!(
                f,
                "token has an audience ({}) but the verifier expects none",
                printable(&found.join(", "))
            ),
            Error::InvalidClaims { reason } => write!(f, "claims do not match: {reason}"),
            Error::KeysUnavailable { last_error } => match last_error {
                Some(err) => write!(f, "keys unavailable: {err}"),
                None => f.write_str("keys unavailable"),
            },
        }
    }
}

impl std::error::Error for Error {}

/// Token-supplied text shown in a message: at most 64 characters, control characters
/// replaced, so a hostile token cannot flood logs or forge log lines.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    format!("{out:?}")
}

/// What went wrong on the wire. Shared by the JWKS fetch, discovery, the token endpoint
/// and the signing-key pull.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not `https`, and it is neither a loopback `http` URL nor allowed by
    /// an explicit `allow_http(true)`.
    InsecureUrl {
        /// The URL.
        url: String,
    },
    /// The server answered with a redirect. Redirects are never followed: a JWKS or
    /// token endpoint that moves must be reconfigured.
    Redirected {
        /// The status code.
        status: u16,
        /// The `Location` header, if any.
        location: Option<String>,
    },
    /// The server answered with a status this call does not accept.
    Status {
        /// The status code.
        status: u16,
    },
    /// The body is over the limit (256 KiB for a JWKS). Enforced from `Content-Length`
    /// and again while reading, so a lying or chunked server cannot exceed it.
    TooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// The whole exchange (connect, headers, body) took longer than the deadline.
    Timeout {
        /// The deadline.
        after: Duration,
    },
    /// Could not connect.
    Connect {
        /// The cause.
        reason: String,
    },
    /// Any other transport failure (TLS, reset connection, invalid HTTP).
    Transport {
        /// The cause.
        reason: String,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::InsecureUrl { url } => write!(
                f,
                "refusing {url}: https required (http only on loopback or with allow_http)"
            ),
            FetchError::Redirected { status, location } => match location {
                Some(location) => write!(f, "redirect {status} to {location} refused"),
                None => write!(f, "redirect {status} refused"),
            },
            FetchError::Status { status } => write!(f, "unexpected HTTP status {status}"),
            FetchError::TooLarge { max } => write!(f, "response larger than {max} bytes"),
            FetchError::Timeout { after } => write!(f, "no complete response within {after:?}"),
            FetchError::Connect { reason } => write!(f, "cannot connect: {reason}"),
            FetchError::Transport { reason } => write!(f, "transport error: {reason}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Why a key set could not be obtained. The last one is kept in
/// [`Status`](crate::Status) and in [`Error::KeysUnavailable`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum JwksError {
    /// The HTTP exchange failed.
    Fetch(FetchError),
    /// The body is not a JWK Set: not JSON, or no `keys` array.
    InvalidDocument {
        /// What is wrong.
        reason: String,
    },
    /// The document parsed but no key in it is usable (every key was skipped, or the
    /// set is empty). The last good set is kept: a set is never replaced by an empty one.
    NoUsableKeys {
        /// How many keys were skipped.
        skipped: usize,
    },
    /// The discovery document's `issuer` is not exactly the configured issuer.
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The discovered issuer.
        found: String,
    },
    /// The discovery document is unusable: not JSON, or no usable `jwks_uri`.
    InvalidDiscovery {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::Fetch(err) => write!(f, "cannot fetch the key set: {err}"),
            JwksError::InvalidDocument { reason } => write!(f, "invalid JWK Set: {reason}"),
            JwksError::NoUsableKeys { skipped } => {
                write!(f, "no usable key in the JWK Set ({skipped} skipped)")
            }
            JwksError::IssuerMismatch { expected, found } => write!(
                f,
                "discovered issuer {found:?} is not the configured issuer {expected:?}"
            ),
            JwksError::InvalidDiscovery { reason } => {
                write!(f, "invalid discovery document: {reason}")
            }
        }
    }
}

impl std::error::Error for JwksError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JwksError::Fetch(err) => Some(err),
            _ => None,
        }
    }
}

impl From<FetchError> for JwksError {
    fn from(err: FetchError) -> Self {
        JwksError::Fetch(err)
    }
}

/// A builder was given something it cannot accept.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// The URL does not parse or has no host.
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The URL is `http` on a non-loopback host and `allow_http(true)` was not set.
    InsecureUrl {
        /// The URL.
        url: String,
    },
    /// An option is out of its range.
    InvalidOption {
        /// The option (the builder method's name).
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// A root certificate could not be read.
    InvalidCertificate {
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built (for example, no TLS roots).
    HttpClient {
        /// Why.
        reason: String,
    },
    /// The component starts a background task and was built outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidUrl { url, reason } => write!(f, "invalid URL {url:?}: {reason}"),
            BuildError::InsecureUrl { url } => write!(
                f,
                "refusing {url}: https required (http only on loopback or with allow_http)"
            ),
            BuildError::InvalidOption { name, reason } => write!(f, "invalid {name}: {reason}"),
            BuildError::InvalidCertificate { reason } => {
                write!(f, "invalid root certificate: {reason}")
            }
            BuildError::HttpClient { reason } => {
                write!(f, "cannot build the HTTP client: {reason}")
            }
            BuildError::NoRuntime => f.write_str("must be built inside a tokio runtime"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Why [`TokenSource::token`](crate::TokenSource::token) could not return a token.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TokenError {
    /// The HTTP exchange failed.
    Fetch(FetchError),
    /// The token endpoint refused the request with an RFC 6749 §5.2 error
    /// (`invalid_client`, `invalid_scope`, `invalid_target`, ...).
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The `error` code.
        error: String,
        /// The `error_description`, if any.
        description: Option<String>,
    },
    /// The token endpoint answered 200 with a body that is not a token response
    /// (missing `access_token`, `token_type` not `Bearer`, no `expires_in`).
    InvalidResponse {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Fetch(err) => write!(f, "cannot get a token: {err}"),
            TokenError::Rejected {
                status,
                error,
                description,
            } => match description {
                Some(description) => {
                    write!(f, "token request refused ({status} {error}): {description}")
                }
                None => write!(f, "token request refused ({status} {error})"),
            },
            TokenError::InvalidResponse { reason } => {
                write!(f, "invalid token response: {reason}")
            }
        }
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenError::Fetch(err) => Some(err),
            _ => None,
        }
    }
}

impl From<FetchError> for TokenError {
    fn from(err: FetchError) -> Self {
        TokenError::Fetch(err)
    }
}

/// Why a pull of `/v1/signing-keys` failed, or why
/// [`SigningKeySource::sign`](crate::SigningKeySource::sign) could not sign.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SignError {
    /// The HTTP exchange failed.
    Fetch(FetchError),
    /// The daemon refused the credentials (401) or the client lacks the `issuer` role (403).
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// The response is not a signing-keys document, or a key in it is unusable.
    InvalidResponse {
        /// What is wrong.
        reason: String,
    },
    /// The issuer's keys cannot be pulled by construction: the daemon holds
    /// them in AWS KMS (409 `keys_not_exportable`). Pulling again will not
    /// help; sign through the daemon's `POST /v1/sign` instead.
    NotExportable {
        /// The daemon's advice, as it gave it.
        advice: String,
    },
    /// No signing keys have been pulled yet.
    NotReady {
        /// Why the last pull failed, if one did.
        last_error: Option<Box<SignError>>,
    },
    /// No pulled key is current at this instant: the current key's `deactivates_at`
    /// has passed and no successor was pulled (the daemon has been unreachable).
    NoActiveKey,
    /// The claims do not serialize to a JSON object.
    InvalidClaims {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::Fetch(err) => write!(f, "cannot pull signing keys: {err}"),
            SignError::Refused { status } => write!(f, "signing keys refused with status {status}"),
            SignError::InvalidResponse { reason } => {
                write!(f, "invalid signing-keys response: {reason}")
            }
            SignError::NotExportable { advice } => {
                write!(f, "signing keys cannot be pulled: {advice}")
            }
            SignError::NotReady { last_error } => match last_error {
                Some(err) => write!(f, "no signing key yet: {err}"),
                None => f.write_str("no signing key yet"),
            },
            SignError::NoActiveKey => {
                f.write_str("no pulled signing key is current (the daemon has been unreachable)")
            }
            SignError::InvalidClaims { reason } => write!(f, "claims cannot be signed: {reason}"),
        }
    }
}

impl std::error::Error for SignError {}

impl From<FetchError> for SignError {
    fn from(err: FetchError) -> Self {
        SignError::Fetch(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_lowercase_line_and_quotes_token_text() {
        let err = Error::UnknownKid {
            kid: "a\nb".repeat(40),
        };
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("unknown kid \"a?b"), "{text}");
        assert!(text.len() < 100, "{text}");
    }
}
