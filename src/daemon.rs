//! The daemon, wired once: the listeners, the rotator, the admin and reload
//! paths, over a store, a clock and a shutdown token.
//!
//! `jwkd serve` ([`crate::commands`]) runs it with the configured store, the
//! system clock, the systemd watchdog, and signals for shutdown and reload. The
//! integration tests run the very same wiring in their own process, on a
//! memory or file store and a [`crate::clock::ManualClock`]: after moving the
//! clock they call [`Daemon::wake`], and when it returns the rotator has
//! re-derived and published everything for the new time.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::custody::Custodian;
use crate::http::server::{self, Tls};
use crate::http::{Api, Issuers};
use crate::rotator::{Event, Rotator};
use crate::runtime::{SharedWatchdog, Watchdog};
use crate::state::{Common, Shared};
use crate::store::memory::MemoryStore;
use crate::store::{KeyStore, Snapshot};

/// The daemon's listening sockets, bound before it starts, and the TLS
/// certificate they serve.
#[derive(Debug)]
pub struct Listeners {
    public: TcpListener,
    private: Option<TcpListener>,
    tls: Option<Arc<Tls>>,
}

impl Listeners {
    /// Loads the certificate of `server.tls_cert`/`server.tls_key`, if set, and
    /// binds `server.listen` and `server.private_listen` (port 0 picks one).
    ///
    /// # Errors
    /// A certificate or key that does not load (a [`ConfigError`] naming
    /// `server.tls_cert`), an address that cannot be bound.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => {
                Some(Arc::new(Tls::load(cert, key).map_err(|err| {
                    ConfigError::one(&config.file, "server.tls_cert", err)
                })?))
            }
            _ => None,
        };
        let public = bind(config.server.listen).await?;
        let private = match config.server.private_listen {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        Ok(Listeners {
            public,
            private,
            tls,
        })
    }
}

async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}

/// An issuer's store, opened, and what it held when it was first read.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn KeyStore>,
    /// Its contents, just read.
    pub snapshot: Snapshot,
    /// Who holds the issuer's private keys.
    pub custodian: Custodian,
}

/// The custodian of `config`'s issuer, whose keyset is at `location`.
///
/// # Errors
/// A [`ConfigError`] on `keys.custody` when KMS custody has no region.
async fn open_custodian(config: &Config, location: &str) -> Result<Custodian, ConfigError> {
    Custodian::open(config, location).await.map_err(|err| {
        let key = if config.name == crate::config::DEFAULT_ISSUER {
            "keys.custody".to_owned()
        } else {
            format!("issuer {}: keys.custody", config.name)
        };
        ConfigError::one(&config.file, &key, err.to_string())
    })
}

/// Where the daemon finds each issuer's store: at start, and for an issuer a
/// reload adds.
#[async_trait::async_trait]
pub trait Stores: Send + Sync + std::fmt::Debug {
    /// Opens and reads the store of `issuer` (one of [`Config::all_issuers`]).
    ///
    /// # Errors
    /// When the store cannot be opened or read: a [`ConfigError`] naming it.
    async fn open(&self, issuer: &Config) -> Result<Opened, ConfigError>;
}

/// The stores the config names (`jwkd serve`).
#[derive(Debug, Default)]
pub struct ConfiguredStores;

#[async_trait::async_trait]
impl Stores for ConfiguredStores {
    async fn open(&self, issuer: &Config) -> Result<Opened, ConfigError> {
        open_store(issuer).await
    }
}

/// A memory store per issuer, made when first opened: for tests and
/// simulations, where nothing outlives the process.
#[derive(Debug, Default)]
pub struct MemoryStores {
    stores: std::sync::Mutex<std::collections::BTreeMap<String, Arc<MemoryStore>>>,
    /// The KMS of the issuers with `keys.custody = "kms"`, instead of the
    /// one their config names (tests: an emulator with static credentials).
    kms: Option<crate::kms::Kms>,
}

impl MemoryStores {
    /// Memory stores whose KMS-custody issuers use `kms`.
    pub fn with_kms(kms: crate::kms::Kms) -> MemoryStores {
        MemoryStores {
            stores: std::sync::Mutex::default(),
            kms: Some(kms),
        }
    }

    /// The store of the issuer `name` (made empty if it has none yet).
    pub fn store(&self, name: &str) -> Arc<MemoryStore> {
        let mut stores = self
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(stores.entry(name.to_owned()).or_default())
    }
}

#[async_trait::async_trait]
impl Stores for MemoryStores {
    async fn open(&self, issuer: &Config) -> Result<Opened, ConfigError> {
        let store = self.store(&issuer.name);
        let snapshot = store
            .load()
            .await
            .map_err(|err| ConfigError::one(&issuer.file, &store_key(issuer), err.to_string()))?;
        let custodian = match (&self.kms, &issuer.keys.custody) {
            (Some(kms), crate::config::Custody::Kms { .. }) => Custodian::kms(
                kms.clone(),
                crate::custody::owner_of(issuer, &store.location()),
            ),
            _ => open_custodian(issuer, &store.location()).await?,
        };
        Ok(Opened {
            store,
            snapshot,
            custodian,
        })
    }
}

/// The config key that names an issuer's store: `store.path` or
/// `store.secret_id` (an `[[issuers]]` entry's own, or derived from them).
pub fn store_key(config: &Config) -> String {
    let key = match config.store.backend {
        crate::config::Backend::File { .. } => "store.path",
        crate::config::Backend::AwsSecretsManager { .. } => "store.secret_id",
    };
    if config.name == crate::config::DEFAULT_ISSUER {
        key.to_owned()
    } else {
        format!("issuer {}: {key}", config.name)
    }
}

/// Opens the store of `config`'s issuer and reads it: an unreadable store is a
/// config error (CONTRACT §3).
///
/// # Errors
/// A [`ConfigError`] naming the store's key.
pub async fn open_store(config: &Config) -> Result<Opened, ConfigError> {
    let key = store_key(config);
    let store = crate::store::open(&config.store)
        .await
        .map_err(|err| ConfigError::one(&config.file, &key, err.to_string()))?;
    let snapshot = store.load().await.map_err(|err| {
        let mut message = err.to_string();
        if matches!(err, crate::store::StoreError::Corrupt { .. }) {
            message
                .push_str("; `jwkd repair --dry-run` shows what a repair would change, if it can");
        }
        ConfigError::one(&config.file, &key, message)
    })?;
    let custodian = open_custodian(config, &store.location()).await?;
    Ok(Opened {
        store,
        snapshot,
        custodian,
    })
}

/// One issuer being served: its routes' view of it and its rotator's stop.
#[derive(Debug)]
struct Served {
    api: Api,
    /// Where its keyset is (`KeyStore::location`).
    location: String,
    /// Stops its rotator (a child of the daemon's shutdown).
    stop: CancellationToken,
}

/// What starting an issuer needs from the daemon.
#[derive(Debug)]
struct Wiring {
    common: Arc<Common>,
    clock: Arc<dyn Clock>,
    watchdog: Option<SharedWatchdog>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Wiring {
    /// Publishes `opened`, makes a first pass (the first keys of an empty
    /// store), and runs the issuer's rotator; returns it and its status line.
    async fn start_issuer(
        &self,
        config: Config,
        opened: Opened,
    ) -> anyhow::Result<(Served, String)> {
        let name = config.name.clone();
        let shared = Arc::new(Shared {
            custodian: opened.custodian,
            ..Shared::for_issuer(config, Arc::clone(&self.common)).map_err(anyhow::Error::msg)?
        });
        let location = opened.store.location();
        let mut rotator = Rotator::new(opened.store, Arc::clone(&self.clock), Arc::clone(&shared));
        rotator.set_watchdog(
            self.watchdog
                .as_ref()
                .map(|watchdog| watchdog.member(&name)),
        );
        rotator.prime(opened.snapshot, self.clock.now());
        // The first pass makes the first keys if needed, so the JWKS is there when we say ready.
        let first_sleep = rotator.tick().await;
        let status = rotator.status_line(self.clock.now());
        let (events, events_rx) = mpsc::channel::<Event>(16);
        let stop = self.shutdown.child_token();
        self.tracker
            .spawn(rotator.run_loop_after(first_sleep, events_rx, stop.clone()));
        Ok((
            Served {
                api: Api::new(shared, events),
                location,
                stop,
            },
            status,
        ))
    }
}

/// The status lines of several issuers as one: each under its name, unless
/// there is only the default one.
fn status_of(statuses: &[(String, String)]) -> String {
    match statuses {
        [(_, status)] => status.clone(),
        statuses => statuses
            .iter()
            .map(|(name, status)| format!("{name}: {status}"))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// A running daemon: its servers and rotators (one per issuer) run on the
/// caller's tokio runtime until the shutdown token is cancelled.
#[derive(Debug)]
pub struct Daemon {
    issuers: Arc<Issuers>,
    served: tokio::sync::Mutex<Vec<Served>>,
    stores: Arc<dyn Stores>,
    wiring: Wiring,
    tls: Option<Arc<Tls>>,
    public_addr: SocketAddr,
    private_addr: Option<SocketAddr>,
    status: String,
}

impl Daemon {
    /// Starts the daemon on `listeners`: opens each issuer's store from
    /// `stores` and publishes what it holds, makes a first pass for each (the
    /// first keys of an empty store), so every JWKS is served from the first
    /// request on, then serves and runs the rotators until `shutdown` is
    /// cancelled. `watchdog` is pinged once every rotator's loop has pinged.
    ///
    /// # Errors
    /// A store that cannot be opened or read (a [`ConfigError`]), an address
    /// of a listener that cannot be read, a client authenticator that cannot
    /// be set up (its hashing threads).
    pub async fn start(
        config: Config,
        stores: Arc<dyn Stores>,
        clock: Arc<dyn Clock>,
        listeners: Listeners,
        watchdog: Option<Watchdog>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Daemon> {
        let Listeners {
            public,
            private,
            tls,
        } = listeners;
        let public_addr = public.local_addr()?;
        let private_addr = match &private {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };
        let wiring = Wiring {
            common: Arc::new(Common::new(&config, Arc::clone(&clock))),
            clock,
            watchdog: watchdog.map(SharedWatchdog::new),
            shutdown: shutdown.clone(),
            tracker: TaskTracker::new(),
        };
        let mut served = Vec::new();
        let mut statuses = Vec::new();
        for issuer in config.all_issuers() {
            let opened = stores.open(issuer).await?;
            let (issuer_served, status) = wiring.start_issuer(issuer.clone(), opened).await?;
            statuses.push((issuer.name.clone(), status));
            served.push(issuer_served);
        }
        let issuers = Arc::new(Issuers::new(
            Arc::clone(&wiring.common),
            served.iter().map(|served| served.api.clone()).collect(),
        ));
        let with_credentials = config.server.may_serve_credentials();
        wiring.tracker.spawn(server::serve(
            public,
            tls.clone(),
            crate::http::public_routes(&issuers, private.is_some(), with_credentials),
            config.server.limits,
            shutdown.clone().cancelled_owned(),
        ));
        if let Some(private) = private {
            wiring.tracker.spawn(server::serve(
                private,
                tls.clone(),
                crate::http::private_routes(&issuers),
                config.server.limits,
                shutdown.clone().cancelled_owned(),
            ));
        }
        wiring.tracker.close();
        Ok(Daemon {
            issuers,
            served: tokio::sync::Mutex::new(served),
            stores,
            wiring,
            tls,
            public_addr,
            private_addr,
            status: status_of(&statuses),
        })
    }

    /// What the handlers read and the default issuer's rotator publishes.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.issuers.list()[0].shared)
    }

    /// What the handlers read and the rotator of the issuer `name` publishes.
    pub fn shared_of(&self, name: &str) -> Option<Arc<Shared>> {
        self.issuers
            .list()
            .iter()
            .find(|api| api.name() == name)
            .map(|api| Arc::clone(&api.shared))
    }

    /// Each issuer's name and where its keyset is, the default issuer first.
    pub async fn locations(&self) -> Vec<(String, String)> {
        self.served
            .lock()
            .await
            .iter()
            .map(|served| (served.api.name().to_owned(), served.location.clone()))
            .collect()
    }

    /// The public listener's address (the real port where the config says `:0`).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// The private listener's address (issuer and admin endpoints), if configured.
    pub fn private_addr(&self) -> Option<SocketAddr> {
        self.private_addr
    }

    /// Every address it listens on, as the startup line writes them:
    /// `http://127.0.0.1:8080`, then the private one followed by
    /// ` (issuer and admin)`; `https://` with TLS.
    pub fn addresses(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut addresses = vec![format!("{scheme}://{}", self.public_addr)];
        if let Some(private) = self.private_addr {
            addresses.push(format!("{scheme}://{private} (issuer and admin)"));
        }
        addresses
    }

    /// The status line after the first passes (systemd's `STATUS=` with `READY=1`).
    pub fn status(&self) -> &str {
        &self.status
    }

    /// Applies a new configuration, as a SIGHUP does once the file is read:
    /// for each issuer it keeps, clients and schedule at once and the keyset
    /// re-read under them; an issuer it adds starts on its store (an issuer
    /// whose store cannot be opened is not started, and the log says why); an
    /// issuer it removes stops being served, its store left as it is. The TLS
    /// certificate is re-read; settings that need a restart are named. Returns
    /// the status line once every keyset is re-read and published; `None` when
    /// the daemon stops first.
    pub async fn reload(&self, config: Config) -> Option<String> {
        let mut served = self.served.lock().await;
        if let Some(default) = served.first() {
            warn_restart_needed(&default.api.shared.config.load(), &config);
        }
        if let Some(tls) = &self.tls
            && let Err(err) = tls.reload()
        {
            tracing::error!("TLS certificate not reloaded, keeping the old one: {err}");
        }
        let mut kept = Vec::new();
        let mut statuses = Vec::new();
        for issuer in config.all_issuers() {
            let running = served
                .iter()
                .position(|served| served.api.name() == issuer.name)
                .map(|idx| served.remove(idx));
            let Some(running) = running else {
                match self.start_added(issuer).await {
                    Some((added, status)) => {
                        statuses.push((issuer.name.clone(), status));
                        kept.push(added);
                    }
                    None => statuses.push((issuer.name.clone(), "not started".to_owned())),
                }
                continue;
            };
            if issuer.name != crate::config::DEFAULT_ISSUER {
                warn_restart_needed(&running.api.shared.config.load(), issuer);
            }
            let (done, done_rx) = oneshot::channel();
            let event = Event::Reload(Box::new(issuer.clone()), done);
            if running.api.events.send(event).await.is_err() {
                return None;
            }
            let status = tokio::select! {
                reply = done_rx => reply.ok()?,
                () = self.wiring.shutdown.cancelled() => return None,
            };
            statuses.push((issuer.name.clone(), status));
            // Its URL, and so its path, may have changed with the config.
            kept.push(Served {
                api: Api::new(Arc::clone(&running.api.shared), running.api.events.clone()),
                ..running
            });
        }
        for removed in served.drain(..) {
            removed.stop.cancel();
            if let Some(watchdog) = &self.wiring.watchdog {
                watchdog.leave(removed.api.name());
            }
            tracing::info!(
                "issuer {} is no longer in {}: not served any more; its keyset is left as it is",
                removed.api.name(),
                config.file.display()
            );
        }
        self.issuers
            .replace(kept.iter().map(|served| served.api.clone()).collect());
        *served = kept;
        Some(status_of(&statuses))
    }

    /// Starts an issuer a reload added; `None` (logged) if its store cannot be
    /// opened or read.
    async fn start_added(&self, issuer: &Config) -> Option<(Served, String)> {
        let started = match self.stores.open(issuer).await {
            Ok(opened) => self
                .wiring
                .start_issuer(issuer.clone(), opened)
                .await
                .map_err(|err| format!("{err:#}")),
            Err(err) => Err(err.lines().collect::<Vec<_>>().join("; ")),
        };
        match started {
            Ok(started) => {
                tracing::info!("issuer {} added: serving it", issuer.name);
                Some(started)
            }
            Err(err) => {
                tracing::error!("issuer {} not started: {err}", issuer.name);
                None
            }
        }
    }

    /// Has every rotator make a pass now and waits until each is done and
    /// published: after moving a [`crate::clock::ManualClock`], which has no
    /// timers. False when the daemon stops first.
    pub async fn wake(&self) -> bool {
        let served = self.served.lock().await;
        for served in served.iter() {
            let (done, done_rx) = oneshot::channel();
            if served.api.events.send(Event::Wake(done)).await.is_err() {
                return false;
            }
            let woken = tokio::select! {
                reply = done_rx => reply.is_ok(),
                () = self.wiring.shutdown.cancelled() => false,
            };
            if !woken {
                return false;
            }
        }
        true
    }

    /// Starts a graceful shutdown: no new connections, requests in flight
    /// finish. The same as cancelling the token [`Daemon::start`] was given.
    pub fn shutdown(&self) {
        self.wiring.shutdown.cancel();
    }

    /// Waits until the servers and the rotators have stopped (after shutdown).
    pub async fn join(self) {
        self.wiring.tracker.wait().await;
    }
}

/// Settings a reload cannot apply to a running daemon: the listeners, TLS on or
/// off, and the store. Says so, so that nobody believes they changed.
fn warn_restart_needed(running: &Config, new: &Config) {
    let mut keys = Vec::new();
    if new.server.listen != running.server.listen {
        keys.push("server.listen");
    }
    if new.server.private_listen != running.server.private_listen {
        keys.push("server.private_listen");
    }
    if new.server.tls_cert != running.server.tls_cert
        || new.server.tls_key != running.server.tls_key
    {
        keys.push("server.tls_cert/tls_key");
    }
    if new.server.allow_plain_http != running.server.allow_plain_http {
        keys.push("server.allow_plain_http");
    }
    if new.store.backend != running.store.backend {
        keys.push("store");
    }
    if new.keys.custody != running.keys.custody {
        // The custodian holds the KMS client and the keys it signs with.
        keys.push("keys.custody/[kms]");
    }
    if !keys.is_empty() {
        tracing::warn!(
            "{} changed in {}: a reload does not apply this; restart jwkd to use it",
            keys.join(", "),
            new.file.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;
    use crate::clock::ManualClock;
    use crate::keys::Algorithm;
    use crate::timeline;

    fn config() -> Config {
        crate::config::fast_config_for_test(&["ES256"])
    }

    /// The current ES256 kid the daemon publishes at `now`.
    fn current_kid(daemon: &Daemon, now: chrono::DateTime<Utc>) -> Option<String> {
        let view = daemon.shared().view.load();
        timeline::current_at(&view.keyset, Algorithm::Es256, view.time_at(now))
            .map(|key| key.kid.clone())
    }

    // Tokio's clock is paused: a timer of the rotator's would fire while the test sleeps.
    #[tokio::test(start_paused = true)]
    async fn on_a_manual_clock_the_daemon_moves_when_woken_and_only_then() {
        let start = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let stores = Arc::new(MemoryStores::default());
        let store = stores.store(crate::config::DEFAULT_ISSUER);
        let config = config();
        let listeners = Listeners::bind(&config).await.unwrap();
        let shutdown = CancellationToken::new();
        let daemon = Daemon::start(
            config,
            stores.clone(),
            clock.clone(),
            listeners,
            None,
            shutdown.clone(),
        )
        .await
        .unwrap();
        let first = current_kid(&daemon, start).expect("a first key");
        let writes = store.writes.load(std::sync::atomic::Ordering::SeqCst);

        // The clock passes the rotation at 12:00:02; no timer stands for it.
        let later = clock.advance(std::time::Duration::from_secs(3));
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        assert_eq!(
            store.writes.load(std::sync::atomic::Ordering::SeqCst),
            writes
        );

        assert!(daemon.wake().await);
        let second = current_kid(&daemon, later).expect("a current key");
        assert_ne!(second, first, "no rotation at 12:00:02");
        assert!(
            store.writes.load(std::sync::atomic::Ordering::SeqCst) > writes,
            "published before stored"
        );

        daemon.shutdown();
        daemon.join().await;
        assert!(shutdown.is_cancelled());
    }
}
