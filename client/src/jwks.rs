//! [`RemoteJwks`]: the key set a verifier trusts, fetched from a URL (or found through
//! issuer discovery) and kept fresh by one background task.
//!
//! Readers never lock: the current [`KeySet`] lives in an immutable snapshot behind
//! `arc-swap`, and the refresher is its only writer. The refresher wakes for three
//! reasons: the set is about to go stale (`Cache-Control: max-age`, clamped, with
//! jitter), the last attempt failed (capped, jittered backoff), or a verifier met an
//! unknown `kid` (at most once per cooldown, coalesced for every concurrent caller).
//! A failed refresh never wipes the set: it is served until `max_stale` past its
//! freshness, then verification fails closed with
//! [`Error::KeysUnavailable`](crate::Error::KeysUnavailable).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use reqwest::header::{
    ACCEPT, CACHE_CONTROL, ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED,
};
use reqwest::{StatusCode, Url};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::error::{BuildError, FetchError, JwksError};
use crate::fetch::{self, HttpSettings};
use crate::keyset::KeySet;

const JWKS_ACCEPT: &str = "application/jwk-set+json, application/json";
const DISCOVERY_MAX_BODY: usize = 64 * 1024;

/// A JWK Set fetched over HTTPS and refreshed in the background.
///
/// Cloning is cheap and every clone shares one key set and one refresher task; the
/// task stops when the last clone is dropped. Construction never waits for the
/// network: a set whose endpoint is down builds fine, reports
/// [`Status::Unavailable`], and keeps trying.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use jwkd_client::RemoteJwks;
///
/// let jwks = RemoteJwks::builder("https://auth.internal.example/.well-known/jwks.json").build()?;
/// jwks.ready().await?; // optional: wait for the first fetch
/// println!("{}", jwks.status());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteJwks {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("source", &self.shared.source)
            .field("status", &self.status())
            .finish()
    }
}

/// Aborts the refresher when the last handle goes (mini-redis `DbDropGuard`).
pub(crate) struct TaskGuard(pub(crate) tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
enum Source {
    Url(Url),
    Discovery { issuer: String, discovery_url: Url },
}

#[derive(Clone, Debug)]
struct Options {
    http: HttpSettings,
    max_body: usize,
    min_ttl: Duration,
    max_ttl: Duration,
    default_ttl: Duration,
    cooldown: Duration,
    refresh_wait: Duration,
    max_stale: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    negative_cache_size: usize,
}

struct Shared {
    source: Source,
    options: Options,
    http: reqwest::Client,
    snapshot: ArcSwap<Snapshot>,
    /// The JWKS URL found through discovery, once found.
    discovered: Mutex<Option<Url>>,
    coord: Mutex<Coord>,
    progress: watch::Sender<Progress>,
    wake: Notify,
    stats: Counters,
}

/// Bookkeeping for refreshes that callers ask for.
#[derive(Default)]
struct Coord {
    /// Sequence number of the latest requested refresh. A refresh attempt serves every
    /// request made before it started.
    requested: u64,
    /// When an unknown kid last triggered a refresh: the cooldown is counted from here.
    last_kid_refresh: Option<Instant>,
    /// Kids that were still unknown after a refresh, until when to answer at once.
    missed: HashMap<Box<str>, Instant>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// Completed refresh attempts, successful or not.
    attempts: u64,
    /// The `Coord::requested` value the latest completed attempt served.
    served: u64,
}

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    not_modified: AtomicU64,
    failures: AtomicU64,
    kid_refreshes: AtomicU64,
    cooldown_denials: AtomicU64,
    negative_hits: AtomicU64,
}

/// What readers see. Replaced whole by the refresher after every attempt.
#[derive(Clone, Default)]
struct Snapshot {
    keys: Option<Arc<KeySet>>,
    /// When the set was last confirmed by a 200 or 304.
    validated_at: Option<Instant>,
    fresh_until: Option<Instant>,
    /// `fresh_until + max_stale`: past this the set is not used.
    usable_until: Option<Instant>,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    last_error: Option<JwksError>,
}

/// Health of a [`RemoteJwks`], for readiness checks and logs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Status {
    /// The first fetch has not finished yet.
    Loading,
    /// The set is within its freshness lifetime.
    Fresh {
        /// Usable keys.
        keys: usize,
        /// Keys skipped as unusable.
        skipped: usize,
        /// Time since the set was last fetched or confirmed (304).
        age: Duration,
    },
    /// Refreshes are failing; the last good set is still served (until `max_stale`).
    Stale {
        /// Usable keys.
        keys: usize,
        /// How long the set has been past its freshness lifetime.
        stale_for: Duration,
        /// Why the last refresh failed.
        last_error: Option<JwksError>,
    },
    /// No set can be used: none was ever loaded, or the last one is past `max_stale`.
    /// Verification fails with [`Error::KeysUnavailable`](crate::Error::KeysUnavailable).
    Unavailable {
        /// Why the last refresh failed.
        last_error: Option<JwksError>,
    },
}

impl Status {
    /// True when tokens can be verified ([`Status::Fresh`] or [`Status::Stale`]).
    pub fn is_usable(&self) -> bool {
        matches!(self, Status::Fresh { .. } | Status::Stale { .. })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Loading => f.write_str("loading"),
            Status::Fresh { keys, skipped, age } => {
                write!(f, "fresh: {keys} keys ({skipped} skipped), age {age:?}")
            }
            Status::Stale {
                keys,
                stale_for,
                last_error,
            } => {
                write!(f, "stale for {stale_for:?}: {keys} keys")?;
                if let Some(err) = last_error {
                    write!(f, "; last error: {err}")?;
                }
                Ok(())
            }
            Status::Unavailable { last_error } => match last_error {
                Some(err) => write!(f, "unavailable: {err}"),
                None => f.write_str("unavailable"),
            },
        }
    }
}

/// Counters since construction, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwksStats {
    /// Refresh attempts (each is one HTTP request, plus one for discovery until it succeeds).
    pub fetches: u64,
    /// Attempts answered `304 Not Modified`.
    pub not_modified: u64,
    /// Attempts that failed (the last good set was kept).
    pub failures: u64,
    /// Refreshes triggered by an unknown kid (at most one per cooldown).
    pub kid_refreshes: u64,
    /// Unknown kids answered at once because the cooldown had not passed.
    pub cooldown_denials: u64,
    /// Unknown kids answered at once from the negative cache.
    pub negative_hits: u64,
}

/// Why a verifier could not use the set right now.
pub(crate) enum Unready {
    /// No attempt has finished yet: worth waiting for the first one.
    Cold,
    Unavailable(Option<JwksError>),
}

/// Configures a [`RemoteJwks`]. Every default is safe without tuning.
#[derive(Clone, Debug)]
#[must_use]
pub struct RemoteJwksBuilder {
    target: Target,
    options: Options,
}

#[derive(Clone, Debug)]
enum Target {
    Url(String),
    Issuer(String),
}

impl RemoteJwks {
    /// Starts configuring a set fetched from `url` (an `https` URL; `http` only on
    /// loopback unless [`RemoteJwksBuilder::allow_http`]).
    pub fn builder(url: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(Target::Url(url.into()))
    }

    /// Starts configuring a set found through discovery: `jwks_uri` is read from
    /// `{issuer}/.well-known/openid-configuration`, whose `issuer` must equal `issuer`
    /// exactly. A [`Verifier`](crate::Verifier) built on it checks `iss` against this
    /// issuer unless told otherwise. The discovered `jwks_uri` must pass the same
    /// scheme policy and is kept for the life of the set (discovery is retried only
    /// until it first succeeds).
    pub fn discover(issuer: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(Target::Issuer(issuer.into()))
    }

    /// The issuer this set was discovered from, if it was built with [`RemoteJwks::discover`].
    pub fn issuer(&self) -> Option<&str> {
        match &self.shared.source {
            Source::Discovery { issuer, .. } => Some(issuer),
            Source::Url(_) => None,
        }
    }

    /// The current health: fresh, stale (and since when), or unavailable (and why).
    pub fn status(&self) -> Status {
        let snapshot = self.shared.snapshot.load();
        let now = Instant::now();
        match (&snapshot.keys, snapshot.fresh_until, snapshot.usable_until) {
            (Some(keys), Some(fresh_until), Some(usable_until)) => {
                if now < fresh_until {
                    Status::Fresh {
                        keys: keys.len(),
                        skipped: keys.skipped().len(),
                        age: snapshot
                            .validated_at
                            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
                    }
                } else if now < usable_until {
                    Status::Stale {
                        keys: keys.len(),
                        stale_for: now.saturating_duration_since(fresh_until),
                        last_error: snapshot.last_error.clone(),
                    }
                } else {
                    Status::Unavailable {
                        last_error: snapshot.last_error.clone(),
                    }
                }
            }
            _ if self.shared.progress.borrow().attempts == 0 => Status::Loading,
            _ => Status::Unavailable {
                last_error: snapshot.last_error.clone(),
            },
        }
    }

    /// Counters since construction.
    pub fn stats(&self) -> JwksStats {
        let counters = &self.shared.stats;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        JwksStats {
            fetches: read(&counters.fetches),
            not_modified: read(&counters.not_modified),
            failures: read(&counters.failures),
            kid_refreshes: read(&counters.kid_refreshes),
            cooldown_denials: read(&counters.cooldown_denials),
            negative_hits: read(&counters.negative_hits),
        }
    }

    /// The key set in use, if one is loaded (it may be stale; see [`RemoteJwks::status`]).
    pub fn key_set(&self) -> Option<Arc<KeySet>> {
        self.shared.snapshot.load().keys.clone()
    }

    /// Waits for the first refresh attempt to finish.
    ///
    /// # Errors
    /// The attempt's error if it failed and no set is loaded. The refresher keeps
    /// retrying in the background either way.
    pub async fn ready(&self) -> Result<(), JwksError> {
        let mut progress = self.shared.progress.subscribe();
        // The sender lives in `shared`, which we hold: it cannot be dropped.
        let _ = progress.wait_for(|progress| progress.attempts >= 1).await;
        self.current_result()
    }

    /// Refreshes now and waits for the outcome. This is for operators (a reload
    /// signal, an admin endpoint); it does not use up the unknown-kid budget.
    ///
    /// # Errors
    /// The refresh's error. The last good set is kept.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let sequence = {
            let mut coord = lock(&self.shared.coord);
            coord.requested += 1;
            coord.requested
        };
        self.shared.wake.notify_one();
        let mut progress = self.shared.progress.subscribe();
        let _ = progress
            .wait_for(|progress| progress.served >= sequence)
            .await;
        self.current_result()
    }

    fn current_result(&self) -> Result<(), JwksError> {
        let snapshot = self.shared.snapshot.load();
        match (&snapshot.keys, &snapshot.last_error) {
            (_, Some(err)) => Err(err.clone()),
            (Some(_), None) => Ok(()),
            (None, None) => Err(JwksError::NoUsableKeys { skipped: 0 }),
        }
    }

    /// Runs `read` on the current set if it may be used. Never blocks and never holds
    /// anything across an await: this is the verifier's hot path.
    pub(crate) fn with_keys<T>(&self, read: impl FnOnce(&KeySet) -> T) -> Result<T, Unready> {
        let snapshot = self.shared.snapshot.load();
        match (&snapshot.keys, snapshot.usable_until) {
            (Some(keys), Some(usable_until)) if Instant::now() < usable_until => Ok(read(keys)),
            (Some(_), _) => Err(Unready::Unavailable(snapshot.last_error.clone())),
            (None, _) if self.shared.progress.borrow().attempts == 0 => Err(Unready::Cold),
            (None, _) => Err(Unready::Unavailable(snapshot.last_error.clone())),
        }
    }

    /// Waits (bounded) for the first refresh attempt of a set that has none yet.
    pub(crate) async fn wait_cold_start(&self) {
        let bound = self.shared.options.http.timeout * 2 + Duration::from_secs(1);
        let mut progress = self.shared.progress.subscribe();
        let _ =
            tokio::time::timeout(bound, progress.wait_for(|progress| progress.attempts >= 1)).await;
    }

    /// An unknown kid was seen. Decides whether it may trigger a refresh (or join one in
    /// flight) and waits a bounded time for it. Returns true if a refresh completed and
    /// the caller should look again.
    pub(crate) async fn refresh_for_kid(&self, kid: &str) -> bool {
        let shared = &self.shared;
        let now = Instant::now();
        let sequence = {
            let mut coord = lock(&shared.coord);
            if let Some(&until) = coord.missed.get(kid) {
                if now < until {
                    shared.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                coord.missed.remove(kid);
            }
            let served = shared.progress.borrow().served;
            if coord.requested > served {
                // A refresh is pending or in flight: join it for free.
                coord.requested
            } else if coord
                .last_kid_refresh
                .is_none_or(|last| now.saturating_duration_since(last) >= shared.options.cooldown)
            {
                coord.last_kid_refresh = Some(now);
                coord.requested += 1;
                shared.stats.kid_refreshes.fetch_add(1, Ordering::Relaxed);
                shared.wake.notify_one();
                coord.requested
            } else {
                shared
                    .stats
                    .cooldown_denials
                    .fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        let mut progress = shared.progress.subscribe();
        matches!(
            tokio::time::timeout(
                shared.options.refresh_wait,
                progress.wait_for(|progress| progress.served >= sequence),
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Remembers a kid that was still unknown after a refresh, so repeats of it are
    /// answered at once until the cooldown has passed. Bounded: when full, expired
    /// entries go, and if that is not enough the cache starts over (the cooldown
    /// still bounds the fetches).
    pub(crate) fn remember_miss(&self, kid: &str) {
        let options = &self.shared.options;
        if options.negative_cache_size == 0 {
            return;
        }
        let now = Instant::now();
        let mut coord = lock(&self.shared.coord);
        if coord.missed.len() >= options.negative_cache_size {
            coord.missed.retain(|_, until| *until > now);
            if coord.missed.len() >= options.negative_cache_size {
                coord.missed.clear();
            }
        }
        coord
            .missed
            .insert(kid.into(), crate::later(now, options.cooldown));
    }
}

/// The coordination state stays consistent under a panic elsewhere (every critical
/// section is a few assignments), so a poisoned lock is simply used.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RemoteJwksBuilder {
    fn new(target: Target) -> Self {
        RemoteJwksBuilder {
            target,
            options: Options {
                http: HttpSettings::default(),
                max_body: 256 * 1024,
                min_ttl: Duration::from_secs(30),
                max_ttl: Duration::from_secs(3600),
                default_ttl: Duration::from_secs(300),
                cooldown: Duration::from_secs(30),
                refresh_wait: Duration::from_secs(2),
                max_stale: Duration::from_secs(24 * 3600),
                backoff_initial: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
                negative_cache_size: 1024,
            },
        }
    }

    fetch::http_setters!(options.http);

    /// Largest JWKS body accepted, enforced while reading. Defaults to 256 KiB.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.options.max_body = bytes;
        self
    }

    /// Bounds for the freshness lifetime taken from `Cache-Control: max-age`.
    /// Defaults to 30 s and 1 h.
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.options.min_ttl = min;
        self.options.max_ttl = max;
        self
    }

    /// Freshness lifetime when the response has no `max-age` (then clamped to the
    /// bounds). Defaults to 5 min.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.options.default_ttl = ttl;
        self
    }

    /// Least time between two refreshes triggered by unknown kids; also how long a kid
    /// still unknown after a refresh is answered from the negative cache. Background
    /// refreshes are not counted against it. Defaults to 30 s.
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.options.cooldown = cooldown;
        self
    }

    /// How long a verification with an unknown kid waits for the refresh it triggered
    /// or joined before failing with `UnknownKid`. Defaults to 2 s.
    pub fn refresh_wait(mut self, wait: Duration) -> Self {
        self.options.refresh_wait = wait;
        self
    }

    /// How long past its freshness lifetime the last good set is still used while
    /// refreshes fail. Past it, verification fails closed with `KeysUnavailable`.
    /// Defaults to 24 h.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.options.max_stale = max_stale;
        self
    }

    /// Retry delays after a failed refresh: doubling from `initial` up to `max`, each
    /// with jitter (50-100 %). Defaults to 1 s and 60 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.options.backoff_initial = initial;
        self.options.backoff_max = max;
        self
    }

    /// Capacity of the negative cache of kids still unknown after a refresh.
    /// Defaults to 1024.
    pub fn negative_cache_size(mut self, entries: usize) -> Self {
        self.options.negative_cache_size = entries;
        self
    }

    /// Builds the set and starts its refresher. Does not wait for the network.
    ///
    /// # Errors
    /// [`BuildError`] for an invalid or insecure URL, an option out of range, unreadable
    /// root certificates, or when called outside a tokio runtime.
    pub fn build(self) -> Result<RemoteJwks, BuildError> {
        let options = self.options;
        options.http.check_timeout()?;
        let invalid = |name, reason: &str| BuildError::InvalidOption {
            name,
            reason: reason.to_owned(),
        };
        if options.min_ttl.is_zero() || options.min_ttl > options.max_ttl {
            return Err(invalid("ttl_bounds", "need 0 < min <= max"));
        }
        if options.cooldown.is_zero() {
            return Err(invalid("unknown_kid_cooldown", "must be positive"));
        }
        if options.refresh_wait > Duration::from_secs(30) {
            return Err(invalid("refresh_wait", "at most 30 s"));
        }
        if options.backoff_initial.is_zero() || options.backoff_initial > options.backoff_max {
            return Err(invalid("backoff", "need 0 < initial <= max"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&options.max_body) {
            return Err(invalid("max_body", "must be between 1 KiB and 16 MiB"));
        }
        let source = match self.target {
            Target::Url(url) => Source::Url(fetch::parse_url(&url, options.http.allow_http)?),
            Target::Issuer(issuer) => {
                let base = fetch::parse_url(&issuer, options.http.allow_http)?;
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    base.as_str().trim_end_matches('/')
                );
                Source::Discovery {
                    discovery_url: fetch::parse_url(&discovery, options.http.allow_http)?,
                    issuer,
                }
            }
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let shared = Arc::new(Shared {
            source,
            http: options.http.client()?,
            options,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            discovered: Mutex::new(None),
            coord: Mutex::new(Coord::default()),
            progress: watch::Sender::new(Progress::default()),
            wake: Notify::new(),
            stats: Counters::default(),
        });
        let task = runtime.spawn(refresher(Arc::clone(&shared)));
        Ok(RemoteJwks {
            shared,
            _task: Arc::new(TaskGuard(task.abort_handle())),
        })
    }
}

/// The one writer of the snapshot. Runs until the last [`RemoteJwks`] is dropped.
async fn refresher(shared: Arc<Shared>) {
    let mut next_at = Instant::now();
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep_until(next_at) => {}
        }
        let sequence = lock(&shared.coord).requested;
        let result = shared.attempt().await;
        let now = Instant::now();
        next_at = match result {
            Ok(ttl) => {
                if failures > 0 {
                    tracing::info!(source = ?shared.source, "JWKS refresh recovered");
                }
                failures = 0;
                // Refresh ahead of expiry, at 65-85 % of the lifetime, so that replicas
                // started together do not fetch together.
                crate::later(now, ttl.mul_f64(0.65 + 0.2 * fetch::random_unit()))
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::warn!(source = ?shared.source, failures, "JWKS refresh failed: {err}");
                crate::later(now, shared.backoff(failures))
            }
        };
        shared.progress.send_modify(|progress| {
            progress.attempts += 1;
            progress.served = sequence;
        });
    }
}

enum Fetched {
    New {
        keys: KeySet,
        ttl: Duration,
        etag: Option<HeaderValue>,
        last_modified: Option<HeaderValue>,
    },
    NotModified {
        ttl: Duration,
    },
}

impl Shared {
    fn backoff(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        let delay = self
            .options
            .backoff_initial
            .saturating_mul(1 << exponent)
            .min(self.options.backoff_max);
        delay.mul_f64(0.5 + 0.5 * fetch::random_unit())
    }

    /// One refresh attempt; publishes the outcome. Returns the freshness lifetime.
    async fn attempt(&self) -> Result<Duration, JwksError> {
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let previous = self.snapshot.load_full();
        let result = self.fetch(&previous).await;
        let now = Instant::now();
        let mut next = Snapshot::clone(&previous);
        let outcome = match result {
            Ok(Fetched::New {
                keys,
                ttl,
                etag,
                last_modified,
            }) => {
                for skipped in keys.skipped() {
                    tracing::warn!(
                        index = skipped.index,
                        kid = skipped.kid.as_deref().unwrap_or(""),
                        "JWKS key skipped: {}",
                        skipped.reason
                    );
                }
                next.keys = Some(Arc::new(keys));
                next.etag = etag;
                next.last_modified = last_modified;
                Ok(ttl)
            }
            Ok(Fetched::NotModified { ttl }) => {
                self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
                Ok(ttl)
            }
            Err(err) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        };
        match &outcome {
            Ok(ttl) => {
                next.validated_at = Some(now);
                next.fresh_until = Some(crate::later(now, *ttl));
                next.usable_until = Some(crate::later(
                    now,
                    ttl.saturating_add(self.options.max_stale),
                ));
                next.last_error = None;
            }
            Err(err) => next.last_error = Some(err.clone()),
        }
        self.snapshot.store(Arc::new(next));
        outcome
    }

    async fn fetch(&self, previous: &Snapshot) -> Result<Fetched, JwksError> {
        let url = self.jwks_url().await?;
        let mut request = self.http.get(url.clone()).header(ACCEPT, JWKS_ACCEPT);
        if previous.keys.is_some() {
            if let Some(etag) = &previous.etag {
                request = request.header(IF_NONE_MATCH, etag.clone());
            }
            if let Some(last_modified) = &previous.last_modified {
                request = request.header(IF_MODIFIED_SINCE, last_modified.clone());
            }
        }
        let response = fetch::send(
            request,
            &url,
            self.options.max_body,
            self.options.http.timeout,
        )
        .await?;
        let ttl = self.ttl(&response.headers);
        match response.status {
            StatusCode::OK => Ok(Fetched::New {
                keys: KeySet::from_json(&response.body)?,
                ttl,
                etag: response.headers.get(ETAG).cloned(),
                last_modified: response.headers.get(LAST_MODIFIED).cloned(),
            }),
            StatusCode::NOT_MODIFIED if previous.keys.is_some() => Ok(Fetched::NotModified { ttl }),
            status => Err(FetchError::Status {
                status: status.as_u16(),
            }
            .into()),
        }
    }

    /// `max-age` (or 0 for `no-cache`/`no-store`) clamped to the bounds.
    fn ttl(&self, headers: &HeaderMap) -> Duration {
        let mut max_age = None;
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let directive = directive.trim();
                let (name, argument) = directive.split_once('=').unwrap_or((directive, ""));
                let name = name.trim();
                if name.eq_ignore_ascii_case("max-age") {
                    if let Ok(seconds) = argument.trim().trim_matches('"').parse::<u64>() {
                        max_age = Some(Duration::from_secs(seconds));
                    }
                } else if name.eq_ignore_ascii_case("no-cache")
                    || name.eq_ignore_ascii_case("no-store")
                {
                    max_age = Some(Duration::ZERO);
                }
            }
        }
        max_age
            .unwrap_or(self.options.default_ttl)
            .clamp(self.options.min_ttl, self.options.max_ttl)
    }

    async fn jwks_url(&self) -> Result<Url, JwksError> {
        let (issuer, discovery_url) = match &self.source {
            Source::Url(url) => return Ok(url.clone()),
            Source::Discovery {
                issuer,
                discovery_url,
            } => (issuer, discovery_url),
        };
        if let Some(url) = lock(&self.discovered).clone() {
            return Ok(url);
        }
        let request = self
            .http
            .get(discovery_url.clone())
            .header(ACCEPT, "application/json");
        let response = fetch::send(
            request,
            discovery_url,
            DISCOVERY_MAX_BODY,
            self.options.http.timeout,
        )
        .await?;
        if response.status != StatusCode::OK {
            return Err(FetchError::Status {
                status: response.status.as_u16(),
            }
            .into());
        }
        let invalid = |reason: &str| JwksError::InvalidDiscovery {
            reason: reason.to_owned(),
        };
        let document: serde_json::Value =
            serde_json::from_slice(&response.body).map_err(|err| invalid(&err.to_string()))?;
        let found = document
            .get("issuer")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid("no issuer"))?;
        if found != issuer {
            return Err(JwksError::IssuerMismatch {
                expected: issuer.clone(),
                found: found.to_owned(),
            });
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid("no jwks_uri"))?;
        let url = Url::parse(jwks_uri).map_err(|err| invalid(&format!("jwks_uri: {err}")))?;
        fetch::check_url(&url, self.options.http.allow_http)?;
        *lock(&self.discovered) = Some(url.clone());
        Ok(url)
    }
}
