//! [`SigningKeySource`]: for an issuer that signs its own tokens with keys jwkd manages.
//!
//! It pulls `GET /v1/signing-keys` (`{"current": K, "next": K|null}`) in the background,
//! switches to `next` at its `activates_at` on its own clock (no call is needed at that
//! instant), and keeps signing through a daemon outage until the pulled key's
//! `deactivates_at`. It signs exactly the claims it is given: setting `exp` (within
//! the daemon's `max_token_lifetime`), `iss` and `aud` is the caller's job.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::error::{BuildError, SignError};
use crate::fetch::{self, Endpoint};
use crate::jwk::PrivateJwk;
use crate::jwks::TaskGuard;
use crate::jws::JwsSigner;
use crate::keyset::Algorithm;
use crate::rfc3339;

const MAX_RESPONSE: usize = 64 * 1024;

/// The body of `GET /v1/signing-keys` (CONTRACT §6.4): the daemon serializes this
/// type and [`SigningKeySource`] parses it.
///
/// Members are declared in sorted order, as the document has always been written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SigningKeysDocument {
    /// The key that signs now.
    pub current: SigningKeyDocument,
    /// The key that takes over at its `activates_at`, if one has been made.
    pub next: Option<SigningKeyDocument>,
}

/// One key of a [`SigningKeysDocument`]. Times are RFC 3339 UTC strings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SigningKeyDocument {
    /// When the key starts signing.
    pub activates_at: String,
    /// The JWS algorithm.
    pub alg: String,
    /// When it stops signing; `null` while it has no successor (it keeps signing).
    pub deactivates_at: Option<String>,
    /// The private key.
    pub jwk: PrivateJwk,
    /// The key's kid (its RFC 7638 thumbprint).
    pub kid: String,
}

/// Signs tokens with the signing key jwkd hands out, switching keys on schedule.
///
/// Cheap to clone; the background pull stops when the last clone is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use jwkd_client::SigningKeySource;
///
/// let issuer = SigningKeySource::builder(
///     "https://jwkd.internal.example:8081/v1/signing-keys",
///     "billing-issuer",
///     "s3cret",
/// )
/// .build()?;
/// issuer.ready().await?;
/// let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
/// let token = issuer.sign(&serde_json::json!({
///     "iss": "https://billing.internal.example",
///     "sub": "invoice-runner",
///     "aud": "payments",
///     "iat": now,
///     "exp": now + 300,
/// }))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SigningKeySource {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

impl fmt::Debug for SigningKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeySource")
            .field("url", &self.shared.url.as_str())
            .field("kid", &self.current_kid())
            .finish_non_exhaustive()
    }
}

struct Shared {
    http: reqwest::Client,
    url: Url,
    authorization: HeaderValue,
    timeout: Duration,
    refresh_interval: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    typ: String,
    keys: ArcSwapOption<Pulled>,
    last_error: Mutex<Option<SignError>>,
    attempts: watch::Sender<u64>,
    pulls: AtomicU64,
}

struct Pulled {
    current: SigningKey,
    next: Option<SigningKey>,
}

struct SigningKey {
    activates_at: SystemTime,
    deactivates_at: Option<SystemTime>,
    signer: JwsSigner,
    /// The encoded protected header, built once per key.
    header: String,
}

/// Configures a [`SigningKeySource`].
#[must_use]
pub struct SigningKeySourceBuilder {
    endpoint: Endpoint,
    refresh_interval: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    typ: String,
}

impl fmt::Debug for SigningKeySourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.endpoint.debug_builder("SigningKeySourceBuilder", f)
    }
}

impl SigningKeySource {
    /// Starts configuring a source pulling from `url` (jwkd: `/v1/signing-keys` on the
    /// public or private listener) as a client with the `issuer` role. The daemon
    /// refuses to hand keys out over plain `http` unless it sits behind a
    /// TLS-terminating proxy.
    pub fn builder(
        url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> SigningKeySourceBuilder {
        SigningKeySourceBuilder {
            endpoint: Endpoint::new(url, client_id, client_secret),
            refresh_interval: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            typ: "JWT".into(),
        }
    }

    /// Waits for the first pull to finish.
    ///
    /// # Errors
    /// The pull's error if it failed; pulling goes on in the background.
    pub async fn ready(&self) -> Result<(), SignError> {
        let mut attempts = self.shared.attempts.subscribe();
        // The sender lives in `shared`, which we hold: it cannot be dropped.
        let _ = attempts.wait_for(|attempts| *attempts >= 1).await;
        match self.shared.keys.load().as_ref() {
            Some(_) => Ok(()),
            None => Err(self
                .last_error()
                .unwrap_or(SignError::NotReady { last_error: None })),
        }
    }

    /// Signs `claims` (which must serialize to a JSON object) with the key that is
    /// current now, as a compact JWS with header `{"alg","kid","typ"}`.
    ///
    /// # Errors
    /// [`SignError::NotReady`] before the first successful pull,
    /// [`SignError::NoActiveKey`] once the pulled keys have all been deactivated,
    /// [`SignError::InvalidClaims`] if the claims are not a JSON object.
    pub fn sign<T: Serialize + ?Sized>(&self, claims: &T) -> Result<String, SignError> {
        self.sign_at(claims, SystemTime::now())
    }

    /// Signs as of `now` (the `_at` form of [`SigningKeySource::sign`]).
    ///
    /// # Errors
    /// As [`SigningKeySource::sign`].
    pub fn sign_at<T: Serialize + ?Sized>(
        &self,
        claims: &T,
        now: SystemTime,
    ) -> Result<String, SignError> {
        let payload = serde_json::to_vec(claims).map_err(|err| SignError::InvalidClaims {
            reason: err.to_string(),
        })?;
        if payload.first() != Some(&b'{') {
            return Err(SignError::InvalidClaims {
                reason: "not a JSON object".into(),
            });
        }
        let pulled = self.shared.keys.load();
        let Some(pulled) = pulled.as_ref() else {
            return Err(self.not_ready());
        };
        let key = pulled.key_at(now).ok_or(SignError::NoActiveKey)?;
        key.signer
            .sign_compact(&key.header, &payload)
            .map_err(|_| SignError::InvalidResponse {
                reason: format!("signing with key {:?} failed", key.signer.kid()),
            })
    }

    /// The kid that would sign now, if any.
    pub fn current_kid(&self) -> Option<String> {
        self.current_kid_at(SystemTime::now())
    }

    /// The kid that would sign at `now`, if any.
    pub fn current_kid_at(&self, now: SystemTime) -> Option<String> {
        let pulled = self.shared.keys.load();
        pulled
            .as_ref()
            .and_then(|pulled| pulled.key_at(now))
            .map(|key| key.signer.kid().to_owned())
    }

    /// Successful pulls since construction.
    pub fn pulls(&self) -> u64 {
        self.shared.pulls.load(Ordering::Relaxed)
    }

    /// Why the last pull failed, if it did.
    pub fn last_error(&self) -> Option<SignError> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn not_ready(&self) -> SignError {
        SignError::NotReady {
            last_error: self.last_error().map(Box::new),
        }
    }
}

impl Pulled {
    /// `next` from its `activates_at` on; before that `current`, until its `deactivates_at`.
    fn key_at(&self, now: SystemTime) -> Option<&SigningKey> {
        let live = |key: &SigningKey| key.deactivates_at.is_none_or(|end| now < end);
        if let Some(next) = &self.next
            && next.activates_at <= now
            && live(next)
        {
            return Some(next);
        }
        // The current key is used even if this clock reads a little before its
        // activates_at: the daemon says it is current.
        live(&self.current).then_some(&self.current)
    }
}

impl SigningKey {
    fn from_document(document: &SigningKeyDocument, typ: &str) -> Result<SigningKey, SignError> {
        let invalid = |reason: String| SignError::InvalidResponse { reason };
        let alg = Algorithm::from_name(&document.alg)
            .ok_or_else(|| invalid(format!("unsupported alg {:?}", document.alg)))?;
        if document.jwk.alg != document.alg || document.jwk.kid != document.kid {
            return Err(invalid(format!(
                "key {:?}: jwk kid/alg differ from the entry's",
                document.kid
            )));
        }
        let time =
            |text: &str| rfc3339::parse(text).ok_or_else(|| invalid(format!("bad time {text:?}")));
        let activates_at = time(&document.activates_at)?;
        let deactivates_at = document.deactivates_at.as_deref().map(time).transpose()?;
        let signer = JwsSigner::from_jwk(alg, document.kid.as_str(), &document.jwk.params)
            .map_err(|_| {
                invalid(format!(
                    "key {:?}: not a valid {alg} private key",
                    document.kid
                ))
            })?;
        Ok(SigningKey {
            activates_at,
            deactivates_at,
            header: signer.header(typ),
            signer,
        })
    }
}

impl SigningKeySourceBuilder {
    /// How often the keys are pulled while all is well (also right after the next key
    /// activates, to learn its successor). Defaults to 60 s.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Retry delays after a failed pull: doubling from `initial` to `max`, with jitter.
    /// Defaults to 1 s and 60 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// The `typ` header of signed tokens. Defaults to `JWT`.
    pub fn typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = typ.into();
        self
    }

    fetch::http_setters!(endpoint.http);

    /// Builds the source and starts pulling. Does not wait for the network.
    ///
    /// # Errors
    /// [`BuildError`] for an invalid or insecure URL, a bad option, unreadable roots,
    /// or when called outside a tokio runtime.
    pub fn build(self) -> Result<SigningKeySource, BuildError> {
        let endpoint = self.endpoint;
        let url = endpoint.url()?;
        if self.refresh_interval < Duration::from_millis(10) {
            return Err(BuildError::InvalidOption {
                name: "refresh_interval",
                reason: "at least 10 ms".into(),
            });
        }
        if self.backoff_initial.is_zero() || self.backoff_initial > self.backoff_max {
            return Err(BuildError::InvalidOption {
                name: "backoff",
                reason: "need 0 < initial <= max".into(),
            });
        }
        let credentials = Zeroizing::new(format!(
            "Bearer {}:{}",
            endpoint.client_id, *endpoint.client_secret
        ));
        let mut authorization =
            HeaderValue::from_str(&credentials).map_err(|_| BuildError::InvalidOption {
                name: "client_secret",
                reason: "cannot be sent in a header".into(),
            })?;
        authorization.set_sensitive(true);
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let shared = Arc::new(Shared {
            http: endpoint.http.client()?,
            url,
            authorization,
            timeout: endpoint.http.timeout,
            refresh_interval: self.refresh_interval,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            typ: self.typ,
            keys: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            attempts: watch::Sender::new(0),
            pulls: AtomicU64::new(0),
        });
        let task = runtime.spawn(puller(Arc::clone(&shared)));
        Ok(SigningKeySource {
            shared,
            _task: Arc::new(TaskGuard(task.abort_handle())),
        })
    }
}

async fn puller(shared: Arc<Shared>) {
    let mut failures: u32 = 0;
    loop {
        let result = shared.pull().await;
        let delay = match result {
            Ok(pulled) => {
                failures = 0;
                let mut delay = shared.refresh_interval;
                // Right after the next key activates, the daemon has a new next key.
                if let Some(next) = &pulled.next
                    && let Ok(until) = next.activates_at.duration_since(SystemTime::now())
                {
                    delay = delay.min(until + Duration::from_millis(500));
                }
                shared.keys.store(Some(pulled));
                *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                shared.pulls.fetch_add(1, Ordering::Relaxed);
                delay
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::warn!(failures, "signing-key pull failed: {err}");
                *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
                let exponent = failures.saturating_sub(1).min(30);
                shared
                    .backoff_initial
                    .saturating_mul(1 << exponent)
                    .min(shared.backoff_max)
                    .mul_f64(0.5 + 0.5 * fetch::random_unit())
            }
        };
        shared.attempts.send_modify(|attempts| *attempts += 1);
        tokio::time::sleep(delay).await;
    }
}

/// The [`SignError::NotExportable`] of a 409 body: the daemon's advice when
/// it says `keys_not_exportable`, ours otherwise.
fn not_exportable(body: &[u8]) -> SignError {
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: String,
        error_description: Option<String>,
    }
    let advice = serde_json::from_slice::<Refusal>(body)
        .ok()
        .filter(|refusal| refusal.error == "keys_not_exportable")
        .and_then(|refusal| refusal.error_description)
        .unwrap_or_else(|| {
            "the daemon holds this issuer's keys where they cannot be pulled: sign with its \
             POST /v1/sign"
                .to_owned()
        });
    // A daemon's description is short; a stranger's body is cut.
    SignError::NotExportable {
        advice: advice.chars().take(300).collect(),
    }
}

impl Shared {
    async fn pull(&self) -> Result<Arc<Pulled>, SignError> {
        let request = self
            .http
            .get(self.url.clone())
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, self.authorization.clone());
        let mut response = fetch::send(request, &self.url, MAX_RESPONSE, self.timeout).await?;
        let body = Zeroizing::new(std::mem::take(&mut response.body));
        match response.status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(SignError::Refused {
                    status: response.status.as_u16(),
                });
            }
            StatusCode::CONFLICT => {
                return Err(not_exportable(&body));
            }
            status => {
                return Err(crate::error::FetchError::Status {
                    status: status.as_u16(),
                }
                .into());
            }
        }
        let document: SigningKeysDocument =
            serde_json::from_slice(&body).map_err(|err| SignError::InvalidResponse {
                reason: err.to_string(),
            })?;
        let current = SigningKey::from_document(&document.current, &self.typ)?;
        let next = document
            .next
            .as_ref()
            .map(|next| SigningKey::from_document(next, &self.typ))
            .transpose()?;
        Ok(Arc::new(Pulled { current, next }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwk::PrivateJwkParams;

    fn key(
        params: PrivateJwkParams,
        alg: &str,
        deactivates_at: Option<&str>,
    ) -> SigningKeyDocument {
        SigningKeyDocument {
            activates_at: "2025-01-01T00:00:00Z".into(),
            alg: alg.into(),
            deactivates_at: deactivates_at.map(Into::into),
            jwk: PrivateJwk {
                params,
                kid: "k".into(),
                alg: alg.into(),
                use_: Some("sig".into()),
            },
            kid: "k".into(),
        }
    }

    /// The daemon used to write this document as a JSON map, whose members come
    /// out sorted; the typed document writes the same bytes.
    #[test]
    fn the_document_is_written_with_its_members_sorted() {
        let ec = PrivateJwkParams::Ec {
            crv: "P-256".into(),
            x: "X".into(),
            y: "Y".into(),
            d: "D".into(),
        };
        let rsa = PrivateJwkParams::Rsa {
            n: "N".into(),
            e: "E".into(),
            d: "D".into(),
            p: "P".into(),
            q: "Q".into(),
            dp: "DP".into(),
            dq: "DQ".into(),
            qi: "QI".into(),
        };
        let document = SigningKeysDocument {
            current: key(ec, "ES256", Some("2025-02-01T00:00:00Z")),
            next: Some(key(rsa, "RS256", None)),
        };
        let text = serde_json::to_string(&document).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"current":{"activates_at":"2025-01-01T00:00:00Z","alg":"ES256","#,
                r#""deactivates_at":"2025-02-01T00:00:00Z","jwk":{"alg":"ES256","crv":"P-256","#,
                r#""d":"D","kid":"k","kty":"EC","use":"sig","x":"X","y":"Y"},"kid":"k"},"#,
                r#""next":{"activates_at":"2025-01-01T00:00:00Z","alg":"RS256","#,
                r#""deactivates_at":null,"jwk":{"alg":"RS256","d":"D","dp":"DP","dq":"DQ","#,
                r#""e":"E","kid":"k","kty":"RSA","n":"N","p":"P","q":"Q","qi":"QI","use":"sig"},"#,
                r#""kid":"k"}}"#,
            )
        );
        let sorted = serde_json::to_string(&serde_json::to_value(&document).unwrap()).unwrap();
        assert_eq!(text, sorted);
        let parsed: SigningKeysDocument = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), text);

        let okp = PrivateJwkParams::Okp {
            crv: "Ed25519".into(),
            x: "X".into(),
            d: "D".into(),
        };
        let document = SigningKeysDocument {
            current: key(okp, "EdDSA", None),
            next: None,
        };
        assert_eq!(
            serde_json::to_string(&document).unwrap(),
            concat!(
                r#"{"current":{"activates_at":"2025-01-01T00:00:00Z","alg":"EdDSA","#,
                r#""deactivates_at":null,"jwk":{"alg":"EdDSA","crv":"Ed25519","d":"D","#,
                r#""kid":"k","kty":"OKP","use":"sig","x":"X"},"kid":"k"},"next":null}"#,
            )
        );
    }
}
