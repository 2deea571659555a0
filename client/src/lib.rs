//! jwkd-client: what a service needs to trust tokens signed by jwkd, to get tokens
//! from it, and (for an issuer) to sign with the keys it rotates.
//!
//! - A **verifying service** builds a [`RemoteJwks`] (the daemon's JWK Set, fetched
//!   and kept fresh in the background) and a [`Verifier`] over it, and calls
//!   [`Verifier::verify`] per request, or mounts the `warp` filter or the `tower`
//!   layer.
//! - A **calling service** gets access tokens from a [`TokenSource`]
//!   (client credentials, cached, renewed before expiry).
//! - An **issuer** signs its own tokens with a [`SigningKeySource`], which pulls the
//!   current and next signing keys and switches between them on schedule.
//!
//! # Getting started: a verifying service
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use jwkd_client::{Error, RemoteJwks, Verifier};
//!
//! #[derive(serde::Deserialize)]
//! struct Claims {
//!     sub: String,
//!     scope: String,
//! }
//!
//! // Once, at startup. Construction does not wait for the network.
//! let jwks = RemoteJwks::builder("https://auth.internal.example/.well-known/jwks.json").build()?;
//! let verifier = Verifier::builder(jwks)
//!     .issuer("https://auth.internal.example")
//!     .audience("payments")
//!     .typ("at+jwt")
//!     .build()?;
//!
//! // Per request.
//! # let token = "";
//! match verifier.verify::<Claims>(token).await {
//!     Ok(verified) => println!("{} may {}", verified.claims().sub, verified.claims().scope),
//!     Err(err) if err.is_keys_unavailable() => { /* 503: try again later */ }
//!     Err(Error::Expired { .. }) => { /* 401, and the caller should get a new token */ }
//!     Err(err) => println!("401: {err}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Getting started: a calling service
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use jwkd_client::TokenSource;
//!
//! let tokens = TokenSource::builder("https://auth.internal.example/oauth2/token", "orders", "s3cret")
//!     .audience("payments")
//!     .scope("payments:write")
//!     .build()?;
//! // Cached and renewed before expiry; concurrent callers share one request.
//! let token = tokens.token().await?;
//! let authorization = token.authorization(); // "Bearer eyJ..."
//! # let _ = authorization; Ok(()) }
//! ```
//!
//! # Getting started: an issuer
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use jwkd_client::SigningKeySource;
//! use std::time::{SystemTime, UNIX_EPOCH};
//!
//! let issuer = SigningKeySource::builder(
//!     "https://jwkd.internal.example:8081/v1/signing-keys",
//!     "billing-issuer",
//!     "s3cret",
//! )
//! .build()?;
//! issuer.ready().await?;
//! let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
//! let token = issuer.sign(&serde_json::json!({
//!     "iss": "https://billing.internal.example",
//!     "sub": "invoice-runner",
//!     "aud": "payments",
//!     "iat": now,
//!     "exp": now + 300,
//! }))?;
//! # let _ = token; Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`jwk`]: the JWK, private JWK and JWK Set types, shared with the daemon so both
//!   sides agree on one definition of what is published and handed out.
//! - [`keyset`]: [`Algorithm`] and [`KeySet`]: a JWK Set parsed key by key, each usable
//!   key parsed by the crypto backend (aws-lc-rs) once; unusable keys skipped with a
//!   [`SkipReason`].
//! - [`jwks`]: [`RemoteJwks`]: fetching (size-capped, deadline, no redirects, https),
//!   freshness from `Cache-Control`, conditional GET, unknown-kid refresh with a
//!   cooldown, bounded stale-if-error, and the one refresher task.
//! - [`verify`]: [`Verifier`] and the proof type [`Verified`].
//! - [`error`]: one error enum per kind of caller; [`Error`] has one variant per check.
//! - [`token_source`]: [`TokenSource`]. [`signing_keys`]: [`SigningKeySource`] and the
//!   signing-keys document, the one type the daemon writes and this crate reads.
//! - `jws` (hidden from these docs): the compact JWS signer, shared with the daemon so
//!   jwkd has one.
//! - `warp` (feature `warp`) and `tower` (feature `tower`): middleware.
//!
//! # What this crate deliberately does not do
//!
//! - The verifier never takes a key from the token: `jwk`, `jku`, `x5u` and `x5c`
//!   headers are ignored, and the algorithm comes from the key, not the header.
//! - It verifies asymmetric signatures only; `none` and HMAC cannot be configured.
//! - No option turns a check off, and there is no `dangerous` module.
//! - It does not generate keys. It signs only with keys jwkd hands to an issuer through
//!   [`SigningKeySource`]; a verifying service never holds a private key.
//! - It does not validate `x5c` certificate chains: jwkd's JWKS is trusted as a whole,
//!   through the TLS connection that fetched it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(feature = "warp", feature = "tower"))]
mod challenge;

/// `now + by`, saturating: durations from servers (`expires_in`, `max-age`) and
/// from options can be as large as a `u64` of seconds, which `Instant + Duration`
/// would panic on. Anything beyond a century is a century.
pub(crate) fn later<I: Instant>(now: I, by: std::time::Duration) -> I {
    const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(by.min(CENTURY))
        .or_else(|| now.checked_add(std::time::Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// std's and tokio's `Instant`, for [`later`].
pub(crate) trait Instant: Copy {
    fn checked_add(self, by: std::time::Duration) -> Option<Self>;
}

impl Instant for std::time::Instant {
    fn checked_add(self, by: std::time::Duration) -> Option<Self> {
        std::time::Instant::checked_add(&self, by)
    }
}

impl Instant for tokio::time::Instant {
    fn checked_add(self, by: std::time::Duration) -> Option<Self> {
        tokio::time::Instant::checked_add(&self, by)
    }
}
pub mod error;
mod fetch;
#[doc(hidden)]
pub use fetch::error_chain;
pub mod jwk;
pub mod jwks;
#[doc(hidden)]
pub mod jws;
pub mod keyset;
mod rfc3339;
pub mod signing_keys;
pub mod token_source;
#[cfg(feature = "tower")]
pub mod tower;
pub mod verify;
#[cfg(feature = "warp")]
pub mod warp;

pub use error::{BuildError, Error, FetchError, JwksError, SignError, TokenError, TokenPart};
pub use jwks::{JwksStats, RemoteJwks, RemoteJwksBuilder, Status};
pub use keyset::{Algorithm, KeySet, SkipReason, SkippedKey, UnknownAlgorithm};
pub use signing_keys::{SigningKeySource, SigningKeySourceBuilder};
pub use token_source::{AccessToken, TokenSource, TokenSourceBuilder};
pub use verify::{KeySource, Verified, Verifier, VerifierBuilder};
