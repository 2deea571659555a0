//! [`Verifier`]: checks one compact JWS against a key set, and [`Verified`], the proof
//! that it did.
//!
//! The order of checks is fixed and cheap-first: size, structure, header (algorithm
//! allow-list, `kid`, `crit`, `typ`), key lookup (the algorithm comes from the key and
//! must equal the header's), signature, then claims. Nothing from the token is
//! trusted before the signature verifies except what is needed to find the key, and
//! the key is never taken from the token: `jwk`, `jku`, `x5u` and `x5c` headers are
//! parsed over and ignored.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{BuildError, Error, TokenPart};
use crate::jwks::{RemoteJwks, Unready};
use crate::keyset::{Algorithm, Entry, KeySet};

/// Where a [`Verifier`] gets its keys: a [`RemoteJwks`] (the normal case) or a fixed
/// [`KeySet`] (pinned keys, tests, benchmarks), built with `From`; or one of those per
/// issuer ([`KeySource::per_issuer`]).
#[derive(Clone, Debug)]
pub struct KeySource(Keys);

#[derive(Clone, Debug)]
enum Keys {
    Remote(RemoteJwks),
    Static(Arc<KeySet>),
    /// Each issuer's own keys: the token's `iss` picks the set, and no other set is
    /// ever consulted for it.
    PerIssuer(Arc<[(String, Keys)]>),
}

impl KeySource {
    /// Keys for several issuers, each from its own source: a token is checked only
    /// against the keys of the issuer its `iss` names, so a key of one issuer can never
    /// vouch for a token claiming another. `iss` is read (strictly: a repeated claim is
    /// malformed) before any key lookup, and a token whose `iss` is not one of these
    /// issuers is refused with [`Error::WrongIssuer`] before any lookup or fetch.
    ///
    /// The issuers are the accepted ones: a [`VerifierBuilder`] over this source takes
    /// no [`VerifierBuilder::issuer`] or [`VerifierBuilder::any_issuer`], and a source
    /// built with [`RemoteJwks::discover`] must name the same issuer.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use jwkd_client::{KeySource, RemoteJwks, Verifier};
    ///
    /// let billing = RemoteJwks::builder("https://auth.internal.example/billing/jwks.json").build()?;
    /// let orders = RemoteJwks::builder("https://auth.internal.example/orders/jwks.json").build()?;
    /// let verifier = Verifier::builder(KeySource::per_issuer([
    ///     ("https://auth.internal.example/billing", billing),
    ///     ("https://auth.internal.example/orders", orders),
    /// ]))
    /// .audience("payments")
    /// .build()?;
    /// # Ok(()) }
    /// ```
    pub fn per_issuer<I, S, K>(issuers: I) -> KeySource
    where
        I: IntoIterator<Item = (S, K)>,
        S: Into<String>,
        K: Into<KeySource>,
    {
        KeySource(Keys::PerIssuer(
            issuers
                .into_iter()
                .map(|(issuer, keys)| (issuer.into(), keys.into().0))
                .collect(),
        ))
    }
}

impl From<RemoteJwks> for KeySource {
    fn from(jwks: RemoteJwks) -> Self {
        KeySource(Keys::Remote(jwks))
    }
}

impl From<KeySet> for KeySource {
    fn from(keys: KeySet) -> Self {
        KeySource(Keys::Static(Arc::new(keys)))
    }
}

impl From<Arc<KeySet>> for KeySource {
    fn from(keys: Arc<KeySet>) -> Self {
        KeySource(Keys::Static(keys))
    }
}

/// Verifies tokens: signature with a key from the key set, then the claims.
///
/// Cheap to clone (one `Arc`); share one per service. Verification of a token whose
/// kid is in the set takes no lock and does no I/O.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use jwkd_client::{Algorithm, RemoteJwks, Verifier};
///
/// let jwks = RemoteJwks::builder("https://auth.internal.example/.well-known/jwks.json").build()?;
/// let verifier = Verifier::builder(jwks)
///     .issuer("https://auth.internal.example")
///     .audience("payments")
///     .algorithms([Algorithm::Es256])
///     .build()?;
/// let verified = verifier.verify::<serde_json::Value>("eyJ...").await?;
/// println!("{}", verified.claims());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Verifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    keys: Keys,
    /// Bit set of allowed algorithms (`Algorithm::bit`).
    algorithms: u8,
    issuers: Vec<String>,
    audiences: Vec<String>,
    typ: Option<String>,
    leeway: f64,
    max_token_len: usize,
    max_kid_len: usize,
}

/// Largest encoded header accepted. Headers carrying certificate chains (ignored, but
/// legal) fit; anything larger is not a header this verifier needs to read.
const MAX_HEADER_LEN: usize = 4096;

/// Configures a [`Verifier`]. Every default is safe without tuning.
#[derive(Clone, Debug)]
#[must_use]
pub struct VerifierBuilder {
    keys: Keys,
    algorithms: Vec<Algorithm>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    typ: Option<String>,
    leeway: Duration,
    max_token_len: usize,
    max_kid_len: usize,
    any_issuer: bool,
    without_audience: bool,
}

impl Verifier {
    /// Starts configuring a verifier over `keys` (a [`RemoteJwks`] or a [`KeySet`]).
    pub fn builder(keys: impl Into<KeySource>) -> VerifierBuilder {
        VerifierBuilder {
            keys: keys.into().0,
            algorithms: Algorithm::ALL.to_vec(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            typ: None,
            leeway: Duration::from_secs(30),
            max_token_len: 8 * 1024,
            max_kid_len: 128,
            any_issuer: false,
            without_audience: false,
        }
    }

    /// Verifies `token` at the current time and deserializes its claims into `C`.
    ///
    /// Must be polled inside a tokio runtime when the key set is a [`RemoteJwks`]: an
    /// unknown kid waits (boundedly) for a refresh.
    ///
    /// # Errors
    /// The [`Error`] variant of the first check that failed.
    pub async fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<Verified<C>, Error> {
        self.verify_at(token, SystemTime::now()).await
    }

    /// Verifies `token` as of `now` (the `_at` form of [`Verifier::verify`]).
    ///
    /// # Errors
    /// The [`Error`] variant of the first check that failed.
    pub async fn verify_at<C: DeserializeOwned>(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Verified<C>, Error> {
        let inner = &*self.inner;
        let mut prepared = inner.prepare(token)?;
        let now = match now.duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => since_epoch.as_secs_f64(),
            Err(before_epoch) => -before_epoch.duration().as_secs_f64(),
        };
        let keys = match &inner.keys {
            Keys::PerIssuer(issuers) => {
                let iss = peek_issuer(prepared.payload)?;
                let Some((issuer, keys)) = issuers.iter().find(|(issuer, _)| *issuer == iss) else {
                    return Err(Error::WrongIssuer { found: Some(iss) });
                };
                prepared.issuer = Some(issuer.as_str());
                keys
            }
            keys => keys,
        };
        let jwks = match keys {
            Keys::Static(keys) => {
                return inner
                    .finish(keys, &prepared, now)
                    .unwrap_or_else(|| Err(unknown_kid(&prepared)));
            }
            Keys::Remote(jwks) => jwks,
            // `build` refuses a per-issuer source inside another.
            Keys::PerIssuer(_) => return Err(unknown_kid(&prepared)),
        };
        let refreshed = match jwks.with_keys(|keys| inner.finish(keys, &prepared, now)) {
            Ok(Some(result)) => return result,
            Ok(None) => jwks.refresh_for_kid(&prepared.kid).await,
            Err(Unready::Cold) => {
                jwks.wait_cold_start().await;
                true
            }
            Err(Unready::Unavailable(last_error)) => {
                return Err(Error::KeysUnavailable { last_error });
            }
        };
        // Look again even when no refresh was allowed: one may have completed between
        // the first look and the cooldown check.
        match jwks.with_keys(|keys| inner.finish(keys, &prepared, now)) {
            Ok(Some(result)) => result,
            Ok(None) => {
                if refreshed {
                    jwks.remember_miss(&prepared.kid);
                }
                Err(unknown_kid(&prepared))
            }
            Err(Unready::Cold) => Err(Error::KeysUnavailable { last_error: None }),
            Err(Unready::Unavailable(last_error)) => Err(Error::KeysUnavailable { last_error }),
        }
    }
}

fn unknown_kid(prepared: &Prepared<'_>) -> Error {
    Error::UnknownKid {
        kid: prepared.kid.clone(),
    }
}

impl VerifierBuilder {
    /// Accepts tokens whose `iss` is exactly `issuer` (no prefix or case folding). May
    /// be called more than once to accept several issuers. Defaults to the discovered
    /// issuer for a [`RemoteJwks::discover`] set; without either, [`build`] refuses,
    /// unless [`any_issuer`] says that is meant.
    ///
    /// [`build`]: VerifierBuilder::build
    /// [`any_issuer`]: VerifierBuilder::any_issuer
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts any `iss`. Only for a key set that signs for one issuer alone and
    /// that you trust whatever it writes there: otherwise a token minted for
    /// another trust domain whose keys share the set would pass.
    pub fn any_issuer(mut self) -> Self {
        self.any_issuer = true;
        self
    }

    /// Accepts tokens whose `aud` contains `audience`: this service's name. May be
    /// called more than once. Without it, [`build`] refuses, unless
    /// [`without_audience`] says that is meant.
    ///
    /// [`build`]: VerifierBuilder::build
    /// [`without_audience`]: VerifierBuilder::without_audience
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Accepts only tokens that carry no `aud` (and refuses every token that has
    /// one). Without an audience check, a token meant for any other service of the
    /// same issuer would be accepted here, which is why this must be asked for.
    pub fn without_audience(mut self) -> Self {
        self.without_audience = true;
        self
    }

    /// The algorithms accepted, replacing the list. Defaults to all of
    /// [`Algorithm::ALL`]: every one is asymmetric, and the algorithm is taken from the
    /// key, so the default cannot be confused into HMAC or `none`.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Requires the header's `typ`, compared as RFC 7515 says (case-insensitive, the
    /// `application/` prefix optional), e.g. `at+jwt` for RFC 9068 access tokens.
    /// Defaults to not checked.
    pub fn typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    /// Clock tolerance for `exp`, `nbf` and `iat`, at most 5 minutes. Defaults to 30 s.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Longest token accepted, in bytes (512 B to 64 KiB). Defaults to 8 KiB.
    pub fn max_token_len(mut self, bytes: usize) -> Self {
        self.max_token_len = bytes;
        self
    }

    /// Longest `kid` accepted, in bytes (16 to 1024). Defaults to 128.
    pub fn max_kid_len(mut self, bytes: usize) -> Self {
        self.max_kid_len = bytes;
        self
    }

    /// Builds the verifier.
    ///
    /// # Errors
    /// [`BuildError::InvalidOption`] for an empty algorithm list, a limit out of
    /// range, no expected issuer (and no [`VerifierBuilder::any_issuer`]), or no
    /// expected audience (and no [`VerifierBuilder::without_audience`]).
    pub fn build(mut self) -> Result<Verifier, BuildError> {
        let invalid = |name, reason: &str| BuildError::InvalidOption {
            name,
            reason: reason.to_owned(),
        };
        if self.algorithms.is_empty() {
            return Err(invalid("algorithms", "at least one algorithm is needed"));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(invalid("leeway", "at most 5 minutes"));
        }
        if !(512..=64 * 1024).contains(&self.max_token_len) {
            return Err(invalid("max_token_len", "must be between 512 B and 64 KiB"));
        }
        if !(16..=1024).contains(&self.max_kid_len) {
            return Err(invalid("max_kid_len", "must be between 16 and 1024"));
        }
        if let Keys::PerIssuer(issuers) = &self.keys {
            check_per_issuer(issuers, &self.issuers, self.any_issuer)?;
            self.issuers = issuers.iter().map(|(issuer, _)| issuer.clone()).collect();
        }
        if self.issuers.is_empty()
            && let Keys::Remote(jwks) = &self.keys
            && let Some(issuer) = jwks.issuer()
        {
            self.issuers.push(issuer.to_owned());
        }
        if self.issuers.is_empty() && !self.any_issuer {
            return Err(invalid(
                "issuer",
                "no expected issuer: call .issuer(..), or build the key set with \
                 RemoteJwks::discover, which sets it; .any_issuer() accepts every iss",
            ));
        }
        if self.audiences.is_empty() && !self.without_audience {
            return Err(invalid(
                "audience",
                "no expected audience: call .audience(..) with this service's name; \
                 .without_audience() accepts only tokens that carry no aud",
            ));
        }
        if !self.audiences.is_empty() && self.without_audience {
            return Err(invalid(
                "audience",
                ".audience(..) and .without_audience() contradict each other",
            ));
        }
        Ok(Verifier {
            inner: Arc::new(Inner {
                keys: self.keys,
                algorithms: self.algorithms.iter().fold(0, |bits, alg| bits | alg.bit()),
                issuers: self.issuers,
                audiences: self.audiences,
                typ: self.typ,
                leeway: self.leeway.as_secs_f64(),
                max_token_len: self.max_token_len,
                max_kid_len: self.max_kid_len,
            }),
        })
    }
}

/// What a per-issuer source must be: at least one issuer, each once, none nested,
/// discovered issuers equal to their names, and no issuer options beside it.
fn check_per_issuer(
    issuers: &[(String, Keys)],
    also_named: &[String],
    any_issuer: bool,
) -> Result<(), BuildError> {
    let invalid = |reason: String| BuildError::InvalidOption {
        name: "issuer",
        reason,
    };
    if !also_named.is_empty() || any_issuer {
        return Err(invalid(
            "a per-issuer key source names the accepted issuers itself: drop .issuer(..) \
             and .any_issuer()"
                .to_owned(),
        ));
    }
    if issuers.is_empty() {
        return Err(invalid(
            "a per-issuer key source needs at least one issuer".to_owned(),
        ));
    }
    for (idx, (issuer, keys)) in issuers.iter().enumerate() {
        if issuer.is_empty() {
            return Err(invalid(
                "an issuer of a per-issuer key source is empty".to_owned(),
            ));
        }
        if issuers[..idx].iter().any(|(earlier, _)| earlier == issuer) {
            return Err(invalid(format!("issuer {issuer:?} is given twice")));
        }
        match keys {
            Keys::PerIssuer(_) => {
                return Err(invalid(format!(
                    "the keys of issuer {issuer:?} are themselves per issuer"
                )));
            }
            Keys::Remote(jwks) => {
                if let Some(discovered) = jwks.issuer()
                    && discovered != issuer
                {
                    return Err(invalid(format!(
                        "the keys given for issuer {issuer:?} were discovered for {discovered:?}"
                    )));
                }
            }
            Keys::Static(_) => {}
        }
    }
    Ok(())
}

/// The token's `iss`, read before its signature is checked, only to pick whose keys
/// check it. Read with the parser the claims checks use, so the value is the one
/// they see (a repeated `iss` is refused by both).
fn peek_issuer(payload: &str) -> Result<String, Error> {
    let payload = decode(TokenPart::Payload, payload)?;
    let reason = Cell::new(None);
    let registered = parse_registered(&payload, &reason).map_err(|_| match reason.get() {
        Some(claim) => Error::InvalidClaimType { claim },
        None => malformed(TokenPart::Payload, "invalid JSON object"),
    })?;
    match registered.iss {
        None => Err(Error::WrongIssuer { found: None }),
        Some(Loose::Str(iss)) => Ok(iss.into_owned()),
        Some(_) => Err(Error::InvalidClaimType { claim: "iss" }),
    }
}

/// Claims that passed every check, with what was used to check them.
///
/// Only the verifier builds one, so a function that takes a `Verified<C>` knows its
/// claims were checked (the rustls proof-type pattern).
#[derive(Clone, Debug)]
pub struct Verified<C> {
    claims: C,
    kid: String,
    alg: Algorithm,
    exp: f64,
}

impl<C> Verified<C> {
    /// The claims.
    pub fn claims(&self) -> &C {
        &self.claims
    }

    /// The claims, consuming the proof.
    pub fn into_claims(self) -> C {
        self.claims
    }

    /// The kid of the key that verified the signature.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm of the key that verified the signature.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The token's `exp`.
    pub fn expires_at(&self) -> SystemTime {
        if self.exp >= 0.0 {
            UNIX_EPOCH + Duration::from_secs_f64(self.exp.min(1e12))
        } else {
            UNIX_EPOCH
        }
    }
}

/// A token whose structure and header passed: everything needed to find the key.
struct Prepared<'t> {
    alg: Algorithm,
    kid: String,
    signing_input: &'t str,
    payload: &'t str,
    signature: &'t str,
    /// The issuer whose keys were picked by the token's `iss` (per-issuer sources):
    /// the claims must name exactly it.
    issuer: Option<&'t str>,
}

fn malformed(part: TokenPart, reason: &'static str) -> Error {
    Error::Malformed { part, reason }
}

fn decode(part: TokenPart, encoded: &str) -> Result<Vec<u8>, Error> {
    // URL_SAFE_NO_PAD is strict: no padding, no whitespace, no `+` or `/`, and
    // non-canonical trailing bits are refused.
    URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| malformed(part, "not base64url"))
}

impl Inner {
    fn prepare<'t>(&self, token: &'t str) -> Result<Prepared<'t>, Error> {
        if token.len() > self.max_token_len {
            return Err(Error::TokenTooLarge {
                len: token.len(),
                max: self.max_token_len,
            });
        }
        let (header, rest) = token
            .split_once('.')
            .ok_or(malformed(TokenPart::Token, "not three dot-separated parts"))?;
        let (payload, signature) = rest
            .split_once('.')
            .ok_or(malformed(TokenPart::Token, "not three dot-separated parts"))?;
        if signature.contains('.') {
            return Err(malformed(TokenPart::Token, "more than two dots"));
        }
        if header.is_empty() || payload.is_empty() {
            return Err(malformed(TokenPart::Token, "empty part"));
        }
        if header.len() > MAX_HEADER_LEN {
            return Err(malformed(TokenPart::Header, "header too large"));
        }
        let header_json = decode(TokenPart::Header, header)?;
        let reason = Cell::new(None);
        let fields = parse_header(&header_json, &reason).map_err(|_| {
            malformed(
                TokenPart::Header,
                reason.get().unwrap_or("invalid JSON object"),
            )
        })?;

        let alg_name = fields.alg.ok_or(malformed(TokenPart::Header, "no alg"))?;
        let alg = Algorithm::from_name(&alg_name)
            .filter(|alg| self.algorithms & alg.bit() != 0)
            .ok_or_else(|| Error::AlgorithmNotAllowed {
                alg: alg_name.clone().into_owned(),
            })?;
        if let Some(crit) = fields.crit {
            // This verifier implements no extension, so any listed one is unknown. An
            // empty or non-string list is invalid (RFC 7515 §4.1.11).
            return Err(Error::UnsupportedCritical {
                name: crit.into_iter().next().unwrap_or_default(),
            });
        }
        if let Some(expected) = &self.typ {
            let matches = fields
                .typ
                .as_deref()
                .is_some_and(|found| typ_equal(found, expected));
            if !matches {
                return Err(Error::WrongType {
                    expected: expected.clone(),
                    found: fields.typ.map(Cow::into_owned),
                });
            }
        }
        // Checked after `alg`, so an unsecured (`alg: none`) token is reported as such.
        if signature.is_empty() {
            return Err(malformed(TokenPart::Signature, "empty"));
        }
        let kid = match fields.kid {
            None => return Err(Error::MissingKid),
            Some(kid) if kid.is_empty() => return Err(Error::MissingKid),
            Some(kid) => kid,
        };
        if kid.len() > self.max_kid_len {
            return Err(Error::KidTooLong {
                len: kid.len(),
                max: self.max_kid_len,
            });
        }
        let signing_input = &token[..header.len() + 1 + payload.len()];
        Ok(Prepared {
            alg,
            // The decoded header is dropped here, so the kid is copied (a few bytes).
            kid: kid.into_owned(),
            signing_input,
            payload,
            signature,
            issuer: None,
        })
    }

    /// Looks the kid up and, if found, finishes verification. `None` if the set has no
    /// key with this kid.
    fn finish<C: DeserializeOwned>(
        &self,
        keys: &KeySet,
        prepared: &Prepared<'_>,
        now: f64,
    ) -> Option<Result<Verified<C>, Error>> {
        let entry = keys.get(&prepared.kid)?;
        Some(self.check(entry, prepared, now))
    }

    fn check<C: DeserializeOwned>(
        &self,
        entry: &Entry,
        prepared: &Prepared<'_>,
        now: f64,
    ) -> Result<Verified<C>, Error> {
        let key = match entry {
            Entry::Key(key) => key,
            Entry::Ambiguous => {
                return Err(Error::AmbiguousKid {
                    kid: prepared.kid.clone(),
                });
            }
        };
        if key.alg != prepared.alg {
            return Err(Error::AlgorithmMismatch {
                header: prepared.alg,
                key: key.alg,
            });
        }
        let signature = decode(TokenPart::Signature, prepared.signature)?;
        key.key
            .verify_sig(prepared.signing_input.as_bytes(), &signature)
            .map_err(|_| Error::BadSignature)?;

        let payload = decode(TokenPart::Payload, prepared.payload)?;
        let reason = Cell::new(None);
        let registered = parse_registered(&payload, &reason).map_err(|_| match reason.get() {
            Some(claim) => Error::InvalidClaimType { claim },
            None => malformed(TokenPart::Payload, "invalid JSON object"),
        })?;
        let exp = self.check_claims(&registered, prepared.issuer, now)?;
        let claims = serde_json::from_slice::<C>(&payload).map_err(|err| Error::InvalidClaims {
            reason: err.to_string(),
        })?;
        Ok(Verified {
            claims,
            kid: prepared.kid.clone(),
            alg: key.alg,
            exp,
        })
    }

    fn check_claims(
        &self,
        claims: &Registered<'_>,
        picked_issuer: Option<&str>,
        now: f64,
    ) -> Result<f64, Error> {
        let exp = number_claim("exp", &claims.exp)?.ok_or(Error::MissingClaim { claim: "exp" })?;
        let nbf = number_claim("nbf", &claims.nbf)?;
        let iat = number_claim("iat", &claims.iat)?;
        let iss = match &claims.iss {
            None => None,
            Some(Loose::Str(iss)) => Some(&**iss),
            Some(_) => return Err(Error::InvalidClaimType { claim: "iss" }),
        };
        let audiences: Vec<&str> = match &claims.aud {
            None => Vec::new(),
            Some(Loose::Str(aud)) => vec![&**aud],
            Some(Loose::Strings(auds)) => auds.iter().map(|aud| &**aud).collect(),
            Some(_) => return Err(Error::InvalidClaimType { claim: "aud" }),
        };
        let seconds = |value: f64| value.floor() as i64;
        if now >= exp + self.leeway {
            return Err(Error::Expired {
                exp: seconds(exp),
                now: seconds(now),
            });
        }
        if let Some(nbf) = nbf
            && now + self.leeway < nbf
        {
            return Err(Error::NotYetValid {
                nbf: seconds(nbf),
                now: seconds(now),
            });
        }
        if let Some(iat) = iat
            && iat > now + self.leeway
        {
            return Err(Error::IssuedInFuture {
                iat: seconds(iat),
                now: seconds(now),
            });
        }
        let issuer_ok = match picked_issuer {
            // Keys were picked for this issuer: no other accepted issuer will do.
            Some(picked) => iss == Some(picked),
            None => {
                self.issuers.is_empty()
                    || iss.is_some_and(|iss| self.issuers.iter().any(|ok| ok == iss))
            }
        };
        if !issuer_ok {
            return Err(Error::WrongIssuer {
                found: iss.map(str::to_owned),
            });
        }
        let owned = || audiences.iter().map(|aud| (*aud).to_owned()).collect();
        if self.audiences.is_empty() {
            if claims.aud.is_some() {
                return Err(Error::UnexpectedAudience { found: owned() });
            }
        } else if !audiences
            .iter()
            .any(|aud| self.audiences.iter().any(|ok| ok == aud))
        {
            return Err(Error::WrongAudience { found: owned() });
        }
        Ok(exp)
    }
}

fn number_claim(claim: &'static str, value: &Option<Loose<'_>>) -> Result<Option<f64>, Error> {
    match value {
        None => Ok(None),
        Some(Loose::Number(number)) if number.is_finite() => Ok(Some(*number)),
        Some(_) => Err(Error::InvalidClaimType { claim }),
    }
}

/// RFC 7515 §4.1.9: media types are case-insensitive and `application/` may be omitted.
fn typ_equal(found: &str, expected: &str) -> bool {
    fn strip(typ: &str) -> &str {
        match typ.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
            _ => typ,
        }
    }
    strip(found).eq_ignore_ascii_case(strip(expected))
}

/// A string that borrows from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

struct HeaderFields<'de> {
    alg: Option<Cow<'de, str>>,
    kid: Option<Cow<'de, str>>,
    typ: Option<Cow<'de, str>>,
    /// Present (possibly with one empty name) if the header had `crit`.
    crit: Option<Vec<String>>,
}

fn parse_header<'de>(
    json: &'de [u8],
    reason: &Cell<Option<&'static str>>,
) -> Result<HeaderFields<'de>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let fields = deserializer.deserialize_map(HeaderVisitor { reason })?;
    deserializer.end()?;
    Ok(fields)
}

struct HeaderVisitor<'r> {
    reason: &'r Cell<Option<&'static str>>,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = HeaderFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JOSE header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = HeaderFields {
            alg: None,
            kid: None,
            typ: None,
            crit: None,
        };
        let fail = |reason: &'static str| {
            self.reason.set(Some(reason));
            de::Error::custom(reason)
        };
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            let slot = match &*name {
                "alg" => &mut fields.alg,
                "kid" => &mut fields.kid,
                "typ" => &mut fields.typ,
                "crit" => {
                    if fields.crit.is_some() {
                        return Err(fail("repeated member"));
                    }
                    let names: Loose<'de> = map.next_value()?;
                    fields.crit = Some(match names {
                        Loose::Strings(names) if !names.is_empty() => {
                            names.into_iter().map(Cow::into_owned).collect()
                        }
                        Loose::Str(name) => vec![name.into_owned()],
                        _ => vec![String::new()],
                    });
                    continue;
                }
                // Everything else, including jwk, jku, x5u, x5c and x5t, is ignored.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(fail("repeated member"));
            }
            let Text(value) = map
                .next_value::<Text<'de>>()
                .map_err(|_| fail("member is not a string"))?;
            *slot = Some(value);
        }
        Ok(fields)
    }
}

/// The registered claims, read loosely so a wrong type can be named precisely.
#[derive(Default)]
struct Registered<'de> {
    exp: Option<Loose<'de>>,
    nbf: Option<Loose<'de>>,
    iat: Option<Loose<'de>>,
    iss: Option<Loose<'de>>,
    aud: Option<Loose<'de>>,
}

fn parse_registered<'de>(
    json: &'de [u8],
    reason: &Cell<Option<&'static str>>,
) -> Result<Registered<'de>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let claims = deserializer.deserialize_map(ClaimsVisitor { reason })?;
    deserializer.end()?;
    Ok(claims)
}

struct ClaimsVisitor<'r> {
    reason: &'r Cell<Option<&'static str>>,
}

impl<'de> Visitor<'de> for ClaimsVisitor<'_> {
    type Value = Registered<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWT claims object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut claims = Registered::default();
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            let (claim, slot) = match &*name {
                "exp" => ("exp", &mut claims.exp),
                "nbf" => ("nbf", &mut claims.nbf),
                "iat" => ("iat", &mut claims.iat),
                "iss" => ("iss", &mut claims.iss),
                "aud" => ("aud", &mut claims.aud),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                self.reason.set(Some(claim));
                return Err(de::Error::custom("repeated claim"));
            }
            *slot = Some(map.next_value::<Loose<'de>>()?);
        }
        Ok(claims)
    }
}

/// Any JSON value, keeping only what the registered-claim checks need to tell apart.
enum Loose<'de> {
    Number(f64),
    Str(Cow<'de, str>),
    Strings(Vec<Cow<'de, str>>),
    /// `null`, a boolean, an object, or an array that is not all strings.
    Other,
}

impl<'de> de::Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Loose::Number(value as f64))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Loose::Number(value as f64))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(Loose::Number(value))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(text)))
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(text.to_owned())))
    }
    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(text)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut strings = Vec::new();
        let mut all_strings = true;
        while let Some(element) = seq.next_element::<Loose<'de>>()? {
            match element {
                Loose::Str(text) if all_strings => strings.push(text),
                _ => all_strings = false,
            }
        }
        Ok(if all_strings {
            Loose::Strings(strings)
        } else {
            Loose::Other
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
}
