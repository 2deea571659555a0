//! Process plumbing for `serve`: signals and systemd notifications.
//!
//! SIGTERM and SIGINT cancel the shared token (graceful shutdown); SIGHUP asks the
//! caller to reload. Notifications go to `$NOTIFY_SOCKET` when systemd set it and
//! are a no-op otherwise, so the daemon runs unchanged outside systemd.
//!
//! The watchdog is not a timer of its own: [`Watchdog::ping`] is called by the
//! rotator's loop between passes, so a stuck loop stops the pings and systemd
//! restarts the service.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The signals `serve` handles, installed: from [`Signals::install`] on, SIGTERM
/// and SIGINT no longer end the process at once and SIGHUP no longer kills it;
/// each waits for [`Signals::run`]. Installed before `READY=1`, so that a
/// SIGTERM sent as soon as systemd hears it is a graceful shutdown.
#[derive(Debug)]
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    /// Installs the handlers (on the current tokio runtime).
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Cancels `shutdown` on SIGTERM/SIGINT, sends on `reload` for each SIGHUP.
    /// Returns when shutdown starts.
    pub async fn run(mut self, shutdown: CancellationToken, reload: mpsc::Sender<()>) {
        loop {
            tokio::select! {
                _ = self.terminate.recv() => break,
                _ = self.interrupt.recv() => break,
                _ = self.hangup.recv() => {
                    // A reload already queued covers this one too.
                    let _ = reload.try_send(());
                }
                () = shutdown.cancelled() => return,
            }
        }
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        shutdown.cancel();
    }
}

/// Seeds aws-lc's random generator on a blocking thread, off the path to
/// `READY=1`: the first draw in a process seeds it from CPU jitter (tens of
/// milliseconds of CPU), which a daemon on an existing keyset does not need
/// before it serves, and which would otherwise fall on the first request that
/// signs or authenticates. The runtime waits for it when it shuts down.
pub fn seed_randomness_in_background() {
    drop(tokio::task::spawn_blocking(|| {
        let mut byte = [0u8; 1];
        if aws_lc_rs::rand::fill(&mut byte).is_err() {
            tracing::warn!("cannot draw random bytes");
        }
    }));
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(%err, "cannot notify systemd");
    }
}

/// Tells systemd the daemon is serving.
pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is re-reading its configuration; [`notify_reloaded`] ends it.
pub fn notify_reloading() {
    // systemd 253+ wants the monotonic time with RELOADING=1 to match it to the signal.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Tells systemd a reload is over (applied or refused), with the new status if any.
pub fn notify_reloaded(status: Option<&str>) {
    match status {
        Some(status) => notify(&[NotifyState::Ready, NotifyState::Status(status)]),
        None => notify(&[NotifyState::Ready]),
    }
}

/// Updates the one-line status `systemctl status` shows.
pub fn notify_status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing requests in flight"),
    ]);
}

/// Proof of life for a watchdog, given by the loop that does the work.
#[derive(Clone)]
pub struct Watchdog {
    every: Duration,
    ping: Arc<dyn Fn() + Send + Sync>,
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// systemd's watchdog for a `timeout` of `WATCHDOG_USEC`: `WATCHDOG=1` every
    /// half timeout, as sd_watchdog_enabled(3) advises. `None` when not enabled.
    pub fn systemd(timeout: Option<Duration>) -> Option<Watchdog> {
        let timeout = timeout.filter(|timeout| !timeout.is_zero())?;
        Some(Watchdog::new(timeout / 2, || {
            notify(&[NotifyState::Watchdog]);
        }))
    }

    /// A watchdog that calls `ping` every `every` (tests use this one).
    ///
    /// # Panics
    /// If `every` is zero.
    pub fn new(every: Duration, ping: impl Fn() + Send + Sync + 'static) -> Watchdog {
        assert!(!every.is_zero(), "a watchdog interval must not be zero");
        Watchdog {
            every,
            ping: Arc::new(ping),
        }
    }

    /// How often to ping.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Says the caller's loop is alive.
    pub fn ping(&self) {
        (self.ping)();
    }
}

/// One watchdog kept alive by several loops (a rotator per issuer): it is
/// pinged once every member has pinged since the last time, so any one loop
/// that is stuck stops the pings.
#[derive(Clone, Debug)]
pub struct SharedWatchdog {
    watchdog: Watchdog,
    /// Each member, and whether it pinged since the watchdog last was.
    members: Arc<std::sync::Mutex<std::collections::BTreeMap<String, bool>>>,
}

impl SharedWatchdog {
    /// Shares `watchdog` among members yet to join.
    pub fn new(watchdog: Watchdog) -> SharedWatchdog {
        SharedWatchdog {
            watchdog,
            members: Arc::default(),
        }
    }

    /// The watchdog the loop `name` pings, at the shared one's interval.
    pub fn member(&self, name: &str) -> Watchdog {
        self.lock().insert(name.to_owned(), false);
        let shared = self.clone();
        let name = name.to_owned();
        Watchdog::new(self.watchdog.every(), move || shared.pinged(&name))
    }

    /// `name` has stopped: it no longer holds the pings back.
    pub fn leave(&self, name: &str) {
        self.lock().remove(name);
    }

    fn pinged(&self, name: &str) {
        let mut members = self.lock();
        if let Some(pinged) = members.get_mut(name) {
            *pinged = true;
        }
        if members.values().all(|pinged| *pinged) {
            members.values_mut().for_each(|pinged| *pinged = false);
            drop(members);
            self.watchdog.ping();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, bool>> {
        // A member's ping only flips flags: a poisoned lock holds nothing half-done.
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn send(signal: &str) {
        let me = std::process::id().to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &me])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal}");
    }

    // `serve` sends READY=1 between `install` and the first poll of `run`: a
    // signal sent then is neither lost nor fatal (SIGHUP's default is to end
    // the process, as SIGTERM's is).
    #[tokio::test]
    async fn signals_sent_after_install_wait_for_run() {
        let signals = Signals::install().unwrap();
        send("HUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let shutdown = CancellationToken::new();
        let (reload, mut reloads) = mpsc::channel(1);
        let running = tokio::spawn(signals.run(shutdown.clone(), reload));
        let reloaded = tokio::time::timeout(Duration::from_secs(10), reloads.recv()).await;
        assert_eq!(reloaded, Ok(Some(())), "the SIGHUP sent before `run`");
        assert!(!shutdown.is_cancelled());
        send("TERM");
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("SIGTERM did not stop `run`")
            .unwrap();
        assert!(shutdown.is_cancelled());
    }

    #[test]
    fn the_systemd_watchdog_pings_at_half_the_timeout() {
        assert!(Watchdog::systemd(None).is_none());
        assert!(Watchdog::systemd(Some(Duration::ZERO)).is_none());
        let watchdog = Watchdog::systemd(Some(Duration::from_secs(60))).unwrap();
        assert_eq!(watchdog.every(), Duration::from_secs(30));

        let count = Arc::new(AtomicUsize::new(0));
        let watchdog = Watchdog::new(Duration::from_millis(10), {
            let count = Arc::clone(&count);
            move || {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        watchdog.ping();
        watchdog.clone().ping();
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_shared_watchdog_is_pinged_once_every_member_has_pinged() {
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&pings);
        let shared = SharedWatchdog::new(Watchdog::new(Duration::from_secs(1), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        let default = shared.member("default");
        let billing = shared.member("billing");
        assert_eq!(default.every(), Duration::from_secs(1));
        default.ping();
        default.ping();
        assert_eq!(pings.load(Ordering::SeqCst), 0, "billing has not pinged");
        billing.ping();
        assert_eq!(pings.load(Ordering::SeqCst), 1);
        billing.ping();
        assert_eq!(
            pings.load(Ordering::SeqCst),
            1,
            "default has not pinged again"
        );
        // A member that leaves no longer holds the pings back.
        shared.leave("default");
        billing.ping();
        assert_eq!(pings.load(Ordering::SeqCst), 2);
    }
}
