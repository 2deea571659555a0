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
use crate::http::Api;
use crate::http::server::{self, Tls};
use crate::rotator::{Event, Rotator};
use crate::runtime::Watchdog;
use crate::state::Shared;
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

/// A running daemon: its servers and rotator run on the caller's tokio runtime
/// until the shutdown token is cancelled.
#[derive(Debug)]
pub struct Daemon {
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    tls: Option<Arc<Tls>>,
    public_addr: SocketAddr,
    private_addr: Option<SocketAddr>,
    status: String,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Daemon {
    /// Starts the daemon on `listeners`: publishes `snapshot` (the store's
    /// contents, just read), makes a first pass (the first keys of an empty
    /// store), so the JWKS is served from the first request on, then serves
    /// and runs the rotator until `shutdown` is cancelled. `watchdog` is
    /// pinged from the rotator's loop.
    ///
    /// # Errors
    /// When an address of a listener cannot be read, or the client
    /// authenticator cannot be set up (no randomness).
    pub async fn start(
        config: Config,
        store: Arc<dyn KeyStore>,
        snapshot: Snapshot,
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
        let shared = Arc::new(
            Shared::with_clock(config.clone(), Arc::clone(&clock)).map_err(anyhow::Error::msg)?,
        );
        let mut rotator = Rotator::new(store, Arc::clone(&clock), Arc::clone(&shared));
        rotator.set_watchdog(watchdog);
        rotator.prime(snapshot, clock.now());
        // The first pass makes the first keys if needed, so the JWKS is there when we say ready.
        let first_sleep = rotator.tick().await;
        let status = rotator.status_line(clock.now());

        let tracker = TaskTracker::new();
        let (events, events_rx) = mpsc::channel::<Event>(16);
        let api = Api {
            shared: Arc::clone(&shared),
            events: events.clone(),
        };
        let with_credentials = config.server.may_serve_credentials();
        tracker.spawn(server::serve(
            public,
            tls.clone(),
            crate::http::public_routes(&api, private.is_some(), with_credentials),
            config.server.limits,
            shutdown.clone().cancelled_owned(),
        ));
        if let Some(private) = private {
            tracker.spawn(server::serve(
                private,
                tls.clone(),
                crate::http::private_routes(&api),
                config.server.limits,
                shutdown.clone().cancelled_owned(),
            ));
        }
        tracker.spawn(rotator.run_loop_after(first_sleep, events_rx, shutdown.clone()));
        tracker.close();
        Ok(Daemon {
            shared,
            events,
            tls,
            public_addr,
            private_addr,
            status,
            shutdown,
            tracker,
        })
    }

    /// What the handlers read and the rotator publishes.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
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

    /// The status line after the first pass (systemd's `STATUS=` with `READY=1`).
    pub fn status(&self) -> &str {
        &self.status
    }

    /// Applies a new configuration, as a SIGHUP does once the file is read:
    /// clients and schedule at once, the keyset re-read under them, the TLS
    /// certificate re-read; says which changed settings need a restart. Returns
    /// the status line once the keyset is re-read and published (or the
    /// config refused); `None` when the daemon stops first.
    pub async fn reload(&self, config: Config) -> Option<String> {
        warn_restart_needed(&self.shared.config.load(), &config);
        if let Some(tls) = &self.tls
            && let Err(err) = tls.reload()
        {
            tracing::error!("TLS certificate not reloaded, keeping the old one: {err}");
        }
        let (done, done_rx) = oneshot::channel();
        if self
            .events
            .send(Event::Reload(Box::new(config), done))
            .await
            .is_err()
        {
            return None;
        }
        tokio::select! {
            reply = done_rx => reply.ok(),
            () = self.shutdown.cancelled() => None,
        }
    }

    /// Has the rotator make a pass now and waits until it is done and
    /// published: after moving a [`crate::clock::ManualClock`], which has no
    /// timers. False when the daemon stops first.
    pub async fn wake(&self) -> bool {
        let (done, done_rx) = oneshot::channel();
        if self.events.send(Event::Wake(done)).await.is_err() {
            return false;
        }
        tokio::select! {
            reply = done_rx => reply.is_ok(),
            () = self.shutdown.cancelled() => false,
        }
    }

    /// Starts a graceful shutdown: no new connections, requests in flight
    /// finish. The same as cancelling the token [`Daemon::start`] was given.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the servers and the rotator have stopped (after shutdown).
    pub async fn join(self) {
        self.tracker.wait().await;
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
    use crate::store::memory::MemoryStore;
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
        let store = Arc::new(MemoryStore::default());
        let config = config();
        let listeners = Listeners::bind(&config).await.unwrap();
        let shutdown = CancellationToken::new();
        let daemon = Daemon::start(
            config,
            store.clone(),
            Snapshot::default(),
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
