//! [`TokenSource`]: client-credentials access tokens for a calling service (RFC 6749
//! §4.4), cached and renewed before they expire, with one request in flight however
//! many callers ask at once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::error::{BuildError, TokenError};
use crate::fetch::{self, Endpoint};

const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// After a failed renewal, callers keep the still-valid token and no new request is
/// made for this long, so an outage does not turn every call into a request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// Gets and caches access tokens from a token endpoint with the client-credentials grant.
///
/// Cheap to clone; clones share the cache.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use jwkd_client::TokenSource;
///
/// let tokens = TokenSource::builder("https://auth.internal.example/oauth2/token", "orders", "s3cret")
///     .audience("payments")
///     .build()?;
/// let token = tokens.token().await?;
/// let response = reqwest::Client::new()
///     .post("https://payments.internal.example/charge")
///     .header("authorization", token.authorization())
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_endpoint", &self.inner.url.as_str())
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    url: Url,
    client_id: String,
    authorization: HeaderValue,
    secret_post: Option<Zeroizing<String>>,
    audience: Option<String>,
    scope: Option<String>,
    timeout: Duration,
    cached: ArcSwapOption<AccessToken>,
    /// Held while a request is in flight: the single-flight guard.
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

/// An access token and when it stops being usable. `Debug` does not print the token.
#[derive(Clone)]
pub struct AccessToken {
    token: Arc<str>,
    scope: Option<String>,
    expires_at: Instant,
    /// When a fresh token is fetched instead of this one: three quarters of its lifetime.
    renew_at: Instant,
    /// Until when this token is still handed out if renewal fails: a margin before
    /// `expires_at` so it does not expire in flight.
    usable_until: Instant,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("scope", &self.scope)
            .field("expires_in", &self.expires_in())
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// The token itself (a JWS).
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// `Bearer <token>`, the value of an `Authorization` header.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// The granted scope, if the endpoint said.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Time left before the token expires.
    pub fn expires_in(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }
}

/// Configures a [`TokenSource`].
#[must_use]
pub struct TokenSourceBuilder {
    endpoint: Endpoint,
    audience: Option<String>,
    scope: Option<String>,
    secret_post: bool,
}

impl fmt::Debug for TokenSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.endpoint.debug_builder("TokenSourceBuilder", f)
    }
}

impl TokenSource {
    /// Starts configuring a source for `token_endpoint` (jwkd: `{issuer}/oauth2/token`).
    pub fn builder(
        token_endpoint: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> TokenSourceBuilder {
        TokenSourceBuilder {
            endpoint: Endpoint::new(token_endpoint, client_id, client_secret),
            audience: None,
            scope: None,
            secret_post: false,
        }
    }

    /// A valid token: the cached one, or a new one if the cached one is due for
    /// renewal. Concurrent callers share one request. If renewal fails while the
    /// cached token is still valid, the cached token is returned.
    ///
    /// # Errors
    /// [`TokenError`] when no valid token can be had.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        let inner = &*self.inner;
        if let Some(token) = inner.cached.load_full()
            && Instant::now() < token.renew_at
        {
            return Ok(AccessToken::clone(&token));
        }
        let mut retry_after = inner.refresh.lock().await;
        let now = Instant::now();
        let cached = inner.cached.load_full();
        if let Some(token) = &cached {
            let backing_off = retry_after.is_some_and(|at| now < at);
            if now < token.renew_at || (backing_off && now < token.usable_until) {
                return Ok(AccessToken::clone(token));
            }
        }
        match inner.request().await {
            Ok(token) => {
                *retry_after = None;
                inner.cached.store(Some(Arc::new(token.clone())));
                Ok(token)
            }
            Err(err) => {
                let failed_at = Instant::now();
                *retry_after = Some(crate::later(failed_at, RETRY_AFTER_FAILURE));
                match cached {
                    Some(token) if failed_at < token.usable_until => {
                        tracing::warn!("token renewal failed, using the cached token: {err}");
                        Ok(AccessToken::clone(&token))
                    }
                    _ => Err(err),
                }
            }
        }
    }

    /// Drops the cached token, so the next call fetches a new one (after the resource
    /// server refused it, for example).
    pub fn invalidate(&self) {
        self.inner.cached.store(None);
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    expires_in: Option<u64>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    error_description: Option<String>,
}

impl Inner {
    async fn request(&self) -> Result<AccessToken, TokenError> {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(audience) = &self.audience {
            form.push(("audience", audience));
        }
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let mut request = self
            .http
            .post(self.url.clone())
            .header(ACCEPT, "application/json");
        match &self.secret_post {
            Some(secret) => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret));
            }
            None => request = request.header(AUTHORIZATION, self.authorization.clone()),
        }
        let request = request.form(&form);
        let sent_at = Instant::now();
        let response = fetch::send(request, &self.url, MAX_TOKEN_RESPONSE, self.timeout).await?;
        if response.status != StatusCode::OK {
            return Err(
                match serde_json::from_slice::<ErrorResponse>(&response.body) {
                    Ok(error) => TokenError::Rejected {
                        status: response.status.as_u16(),
                        error: error.error,
                        description: error.error_description,
                    },
                    Err(_) => crate::error::FetchError::Status {
                        status: response.status.as_u16(),
                    }
                    .into(),
                },
            );
        }
        let invalid = |reason: &str| TokenError::InvalidResponse {
            reason: reason.to_owned(),
        };
        let body: TokenResponse =
            serde_json::from_slice(&response.body).map_err(|err| invalid(&err.to_string()))?;
        if !body.token_type.eq_ignore_ascii_case("bearer") {
            return Err(invalid("token_type is not Bearer"));
        }
        if body.access_token.is_empty() {
            return Err(invalid("empty access_token"));
        }
        let lifetime =
            Duration::from_secs(body.expires_in.ok_or_else(|| invalid("no expires_in"))?);
        if lifetime < Duration::from_secs(1) {
            return Err(invalid("expires_in is zero"));
        }
        // Lifetimes are counted from when the request was sent: the token cannot be
        // older than that.
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        Ok(AccessToken {
            token: body.access_token.into(),
            scope: body.scope,
            expires_at: crate::later(sent_at, lifetime),
            renew_at: crate::later(sent_at, lifetime.mul_f64(0.75)),
            usable_until: crate::later(sent_at, lifetime - margin),
        })
    }
}

impl TokenSourceBuilder {
    /// The `audience` to ask for (a jwkd audience the client may use). Defaults to
    /// none: the client's first configured audience.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The `scope` to ask for (space-separated). Defaults to none.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Sends the credentials as `client_id`/`client_secret` form fields instead of
    /// HTTP Basic. Defaults to false (Basic, with id and secret form-urlencoded first
    /// as RFC 6749 §2.3.1 says).
    pub fn client_secret_post(mut self, enabled: bool) -> Self {
        self.secret_post = enabled;
        self
    }

    fetch::http_setters!(endpoint.http);

    /// Builds the source. Does not contact the endpoint.
    ///
    /// # Errors
    /// [`BuildError`] for an invalid or insecure URL, a bad option, or unreadable roots.
    pub fn build(self) -> Result<TokenSource, BuildError> {
        let endpoint = self.endpoint;
        let url = endpoint.url()?;
        if endpoint.client_id.is_empty() {
            return Err(BuildError::InvalidOption {
                name: "client_id",
                reason: "empty".into(),
            });
        }
        let encode =
            |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let credentials = Zeroizing::new(format!(
            "{}:{}",
            encode(&endpoint.client_id),
            encode(&endpoint.client_secret)
        ));
        let mut authorization = HeaderValue::from_str(&format!(
            "Basic {}",
            STANDARD.encode(credentials.as_bytes())
        ))
        .map_err(|_| BuildError::InvalidOption {
            name: "client_secret",
            reason: "cannot be sent in a header".into(),
        })?;
        authorization.set_sensitive(true);
        Ok(TokenSource {
            inner: Arc::new(Inner {
                http: endpoint.http.client()?,
                url,
                authorization,
                secret_post: self.secret_post.then(|| endpoint.client_secret.clone()),
                audience: self.audience,
                scope: self.scope,
                timeout: endpoint.http.timeout,
                client_id: endpoint.client_id,
                cached: ArcSwapOption::empty(),
                refresh: tokio::sync::Mutex::new(None),
            }),
        })
    }
}
