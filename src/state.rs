//! What the rotator publishes and the HTTP server reads: immutable snapshots
//! swapped atomically, so a request never takes a lock or touches the store.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use std::collections::HashMap;

use crate::auth::Authenticator;
use crate::clock::{Clock, ClockView, SystemClock};
use crate::config::Config;
use crate::custody::{Custodian, TokenSigner};
use crate::keys::Algorithm;
use crate::keyset::Keyset;
use crate::metrics::{IssuerMetrics, Metrics};
use crate::timeline::{self, KeyState};

/// The JWKS response body and its validators, built once per change of the
/// published set.
#[derive(Clone, Debug)]
pub struct JwksDocument {
    /// The JSON body.
    pub body: Bytes,
    /// Strong ETag, quoted: a hash of the body.
    pub etag: String,
    /// When the published set last changed, as an HTTP date.
    pub last_modified: String,
    /// The same instant, for `If-Modified-Since` comparisons (whole seconds).
    pub last_modified_at: SystemTime,
}

impl JwksDocument {
    /// Builds the document for the keys published at `now`.
    pub fn build(
        keyset: &Keyset,
        families: &[crate::keys::Algorithm],
        now: DateTime<Utc>,
    ) -> JwksDocument {
        let published = timeline::published_at(keyset, families, now);
        let body = serde_json::to_vec(&Keyset::jwk_set(published)).expect("a JWK set serializes");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        let etag = format!(
            "\"{}\"",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                &digest.as_ref()[..18]
            )
        );
        // HTTP dates have whole seconds; keep the comparison value in step.
        let whole_seconds = SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(now.timestamp()).unwrap_or(0));
        JwksDocument {
            body: Bytes::from(body),
            etag,
            last_modified: httpdate::fmt_http_date(whole_seconds),
            last_modified_at: whole_seconds,
        }
    }
}

/// The published keyset: what the JWKS endpoint serves and signers sign with.
#[derive(Clone, Debug)]
pub struct KeysetView {
    /// The keyset as stored (never a key that was not acknowledged by the store).
    pub keyset: Arc<Keyset>,
    /// The prebuilt JWKS; `None` until a keyset has been loaded.
    pub jwks: Option<JwksDocument>,
    /// Parsed signing keys of every key that was next or current when published, by kid.
    pub signers: HashMap<String, Arc<TokenSigner>>,
    /// How the clock stood: key states are evaluated at `clock.time_at(now)`.
    pub clock: ClockView,
}

impl KeysetView {
    /// The instant key states are evaluated at when this host's clock says `now`.
    pub fn time_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.clock.time_at(now)
    }

    /// The signer of the current key of `alg` at `now`.
    pub fn current_signer_at(
        &self,
        alg: Algorithm,
        now: DateTime<Utc>,
    ) -> Option<Arc<TokenSigner>> {
        let key = timeline::current_at(&self.keyset, alg, self.time_at(now))?;
        self.signers.get(&key.kid).cloned()
    }
}

/// The health of the store as the rotator last saw it.
#[derive(Clone, Debug, Default)]
pub struct StoreStatus {
    /// When a read or write last succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// The last failure, if the most recent operation failed: the whole error,
    /// for the log and the rotator.
    pub last_error: Option<String>,
    /// The same failure for anyone who can reach `/readyz`: which check failed,
    /// without the store's location or the backend's error text.
    pub public_error: Option<&'static str>,
}

/// What every issuer of one daemon shares.
#[derive(Debug)]
pub struct Common {
    /// The metrics registry: every series, each issuer's with its label.
    pub metrics: Metrics,
    /// The per-source allowance of full credential checks: one allowance per
    /// source whichever issuer it asks, so more issuers are no more guesses.
    pub throttle: crate::throttle::Throttle,
    /// The wall clock the handlers read (the rotators', in the daemon).
    pub clock: Arc<dyn Clock>,
}

impl Common {
    /// The shared parts for the daemon of `config` (its `[server]` limits).
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Common {
        let allowance = |per_minute: u32| {
            std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN)
        };
        Common {
            metrics: Metrics::new(),
            throttle: crate::throttle::Throttle::new(
                allowance(config.server.auth_checks_per_minute),
                allowance(config.server.auth_checks_per_client_per_minute),
            ),
            clock,
        }
    }
}

/// One issuer's state, shared by its rotator (the only writer) and the HTTP
/// handlers (readers).
#[derive(Debug)]
pub struct Shared {
    /// The published keyset.
    pub view: ArcSwap<KeysetView>,
    /// The store's health.
    pub store_status: ArcSwap<StoreStatus>,
    /// The configuration in force (replaced on reload): this issuer's.
    pub config: ArcSwap<Config>,
    /// Client authentication for the configured clients (replaced on reload).
    pub auth: ArcSwap<Authenticator>,
    /// This issuer's counters.
    pub metrics: IssuerMetrics,
    /// Who holds its private keys (fixed for the life of the issuer: a
    /// change of `keys.custody` needs a restart).
    pub custodian: Custodian,
    /// What all issuers share: the metrics registry, the throttle (kept across
    /// reloads), the clock the handlers read.
    pub common: Arc<Common>,
}

impl Shared {
    /// Fresh state of a daemon with this one issuer: nothing loaded yet.
    ///
    /// # Errors
    /// When the authenticator cannot be set up (a hashing thread does not start).
    pub fn new(config: Config) -> Result<Shared, String> {
        Shared::with_clock(config, Arc::new(SystemClock))
    }

    /// Fresh state of a daemon with this one issuer, whose handlers read `clock`.
    ///
    /// # Errors
    /// When the authenticator cannot be set up (a hashing thread does not start).
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Shared, String> {
        let common = Arc::new(Common::new(&config, clock));
        Shared::for_issuer(config, common)
    }

    /// Fresh state of the issuer of `config` (its name labels its metrics), in
    /// the daemon whose shared parts are `common`.
    ///
    /// # Errors
    /// When the authenticator cannot be set up (a hashing thread does not start).
    pub fn for_issuer(config: Config, common: Arc<Common>) -> Result<Shared, String> {
        Ok(Shared {
            view: ArcSwap::from_pointee(KeysetView {
                keyset: Arc::new(Keyset::default()),
                jwks: None,
                signers: HashMap::new(),
                clock: ClockView::default(),
            }),
            store_status: ArcSwap::from_pointee(StoreStatus::default()),
            auth: ArcSwap::from_pointee(Authenticator::new(&config.clients)?),
            metrics: common.metrics.for_issuer(&config.name),
            custodian: Custodian::Local,
            config: ArcSwap::from_pointee(config),
            common,
        })
    }

    /// Whether the daemon is ready to serve (CONTRACT §6.7): a keyset is loaded,
    /// every family has a current and a next key, and the store answered recently.
    ///
    /// # Errors
    /// The reason it is not ready.
    pub fn readiness_at(&self, now: DateTime<Utc>) -> Result<(), String> {
        let view = self.view.load();
        if view.jwks.is_none() {
            return Err("no keyset loaded yet".into());
        }
        let config = self.config.load();
        // The store's health first: during an outage it is the cause of whatever
        // else is missing, and the reason an operator needs.
        let status = self.store_status.load();
        if let Some(error) = status.public_error {
            return Err(format!("{error} (the log says why)"));
        }
        if let Some(skew) = &view.clock.skew {
            return Err(skew.to_string());
        }
        if self.custodian.unavailable().is_some() {
            return Err("KMS cannot sign (the log says why)".into());
        }
        let states_at = view.time_at(now);
        for &alg in &config.keys.algorithms {
            let has = |state: KeyState| {
                view.keyset
                    .keys
                    .iter()
                    .any(|key| key.alg == alg && timeline::state_at(key, states_at) == state)
            };
            if !has(KeyState::Current) {
                return Err(format!("{alg} has no current key"));
            }
            if !has(KeyState::Next) {
                return Err(format!("{alg} has no next key"));
            }
        }
        let interval = config.store.refresh_interval;
        // The refresh itself takes a moment: allow a grace of up to 5 s past the interval.
        let allowed = interval + interval.min(std::time::Duration::from_secs(5));
        match status.last_success {
            Some(at) if (now - at).to_std().unwrap_or_default() <= allowed => Ok(()),
            Some(at) => Err(format!(
                "the store has not answered since {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            None => Err("the store has not answered yet".into()),
        }
    }
}
