//! The rotation task: the only writer of the keyset while `serve` runs.
//!
//! On every wake it re-derives everything from the stored times and the clock,
//! never from "the timer fired": it re-reads the store when the refresh interval
//! is due, asks the timeline what must change, writes that with a
//! compare-and-swap, and only then publishes the stored keyset. It sleeps until
//! the earliest of the next key transition, the next refresh and the next retry.
//!
//! Each write goes through [`update_store`] (see [`crate::operation`]), as the
//! CLI verbs' writes do, so a rotation made by `jwkd rotate` and one made by the
//! daemon go through the same code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, ClockView, Skew};
use crate::config::Config;
use crate::custody::{Custodian, TokenSigner};
use crate::keyset::Keyset;
use crate::operation::{Operation, OperationError, Planner, evidence_of, update_store};
use crate::runtime::Watchdog;
use crate::state::{JwksDocument, KeysetView, Shared, StoreStatus};
use crate::store::{KeyStore, Snapshot, StoreError};
use crate::timeline::{self, Change, KeyState};

/// First and largest delay between retries after a store failure.
const RETRY_INITIAL: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Requests to the rotator from the rest of the daemon.
#[derive(Debug)]
pub enum Event {
    /// Rotate now (admin API); the reply carries what changed.
    RotateNow(oneshot::Sender<Result<Vec<Change>, OperationError>>),
    /// Revoke a key now (admin API).
    Revoke(String, oneshot::Sender<Result<Vec<Change>, OperationError>>),
    /// Re-read the keyset, with this new configuration (SIGHUP); the reply, the
    /// status line, comes once the keyset has been re-read and published (or the
    /// config refused).
    Reload(Box<Config>, oneshot::Sender<String>),
    /// Re-derive everything now: the clock moved (a [`crate::clock::ManualClock`]
    /// has no timers). The reply comes once that pass is done and published.
    Wake(oneshot::Sender<()>),
}

/// The rotation task's state.
pub struct Rotator {
    store: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    planner: Planner,
    /// The last keyset read from or acknowledged by the store.
    snapshot: Option<Snapshot>,
    /// When the store was last read.
    last_refresh: Option<DateTime<Utc>>,
    /// Delay before the next retry after a failure; `None` while healthy.
    retry_delay: Option<Duration>,
    /// Pinged from [`Rotator::run_loop_after`] between passes, so a stuck pass stops the pings.
    watchdog: Option<Watchdog>,
    /// The last status line handed out, so only changes are sent to systemd.
    status: Option<String>,
    /// Set while this host's clock is beyond `clock_skew` from the store or
    /// the stored document: no writes until it clears.
    skew: Option<Skew>,
    /// The store failures since the last success, so a recovery can say how
    /// long the outage lasted.
    outage: Option<Outage>,
    /// The last write failed: a read that succeeds does not end the outage
    /// (a store can answer reads and fail every write).
    write_failing: bool,
}

/// Store operations failing in a row.
#[derive(Clone, Copy, Debug)]
struct Outage {
    /// When the first of them failed.
    since: DateTime<Utc>,
    /// How many failed.
    failed_attempts: u64,
}

impl Rotator {
    /// A rotator over `store` publishing into `shared`.
    pub fn new(store: Arc<dyn KeyStore>, clock: Arc<dyn Clock>, shared: Arc<Shared>) -> Rotator {
        let planner = Planner::new(&shared.config.load());
        Rotator {
            store,
            clock,
            shared,
            planner,
            snapshot: None,
            last_refresh: None,
            retry_delay: None,
            watchdog: None,
            status: None,
            skew: None,
            outage: None,
            write_failing: false,
        }
    }

    /// Pings `watchdog` from the loop, between passes (systemd's `WatchdogSec=`).
    pub fn set_watchdog(&mut self, watchdog: Option<Watchdog>) {
        self.watchdog = watchdog;
    }

    /// The status line at `now`: each family's current key and its next rotation,
    /// and why the daemon is not ready, if it is not. Remembered, so the loop
    /// only reports changes.
    pub fn status_line(&mut self, now: DateTime<Utc>) -> String {
        let status = self.status_at(now);
        self.status = Some(status.clone());
        status
    }

    fn status_at(&self, now: DateTime<Utc>) -> String {
        let view = self.shared.view.load();
        if view.jwks.is_none() {
            return "starting: no keyset loaded yet".to_owned();
        }
        let states_at = view.time_at(now);
        let families: Vec<String> = self
            .planner
            .families()
            .iter()
            .map(
                |&alg| match timeline::current_at(&view.keyset, alg, states_at) {
                    Some(key) => match key.deactivates_at {
                        Some(at) => format!(
                            "{alg} current {}, next rotation {}",
                            key.kid,
                            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ),
                        None => format!("{alg} current {}, no successor yet", key.kid),
                    },
                    None => format!("{alg} has no current key"),
                },
            )
            .collect();
        let mut status = format!("serving; {}", families.join("; "));
        if let Err(reason) = self.shared.readiness_at(now) {
            status.push_str("; not ready: ");
            status.push_str(&reason);
        }
        status
    }

    /// Sends the status line to systemd if it changed.
    fn report_status(&mut self) {
        let status = self.status_at(self.clock.now());
        if self.status.as_ref() != Some(&status) {
            crate::runtime::notify_status(&status);
            self.status = Some(status);
        }
    }

    /// Starts from a snapshot the caller has just read, saving a second read.
    pub fn prime(&mut self, snapshot: Snapshot, read_at: DateTime<Utc>) {
        self.snapshot = Some(snapshot);
        self.last_refresh = Some(read_at);
        self.record_success();
    }

    /// One pass: refresh if due, maintain the timeline, publish. Returns how long
    /// to sleep before the next pass.
    pub async fn tick(&mut self) -> Duration {
        let now = self.clock.now();
        let refresh_interval = self.shared.config.load().store.refresh_interval;
        let refresh_due = self.snapshot.is_none()
            || self
                .last_refresh
                .is_none_or(|last| (now - last).to_std().unwrap_or_default() >= refresh_interval);
        // A failed refresh means the store is unreachable: a write from the stale
        // snapshot could only fail too, so wait for the retry instead.
        let store_reachable = !refresh_due || self.refresh(now).await;
        if store_reachable && let Some(snapshot) = self.snapshot.take() {
            match update_store(
                self.store.as_ref(),
                &self.planner,
                &self.shared.custodian,
                self.clock.as_ref(),
                &Operation::Maintain,
                Some(snapshot.clone()),
            )
            .await
            {
                Ok((stored, changes)) => {
                    self.clock_agrees();
                    self.count_changes(&changes);
                    if !changes.is_empty() || self.write_failing {
                        self.write_failing = false;
                        self.record_success();
                    }
                    self.snapshot = Some(stored);
                }
                Err(OperationError::Clock(skew)) => {
                    self.clock_disagrees(skew);
                    self.snapshot = Some(snapshot);
                }
                Err(err) => {
                    self.shared.metrics.rotation_failures.inc();
                    self.write_failing = true;
                    self.record_failure(&err.to_string(), public_reason(&err));
                    // Keep the last good keyset: never publish what was not stored.
                    self.snapshot = Some(snapshot);
                }
            }
        }
        let now = self.clock.now();
        let states_at = self.publish(now);
        self.look_after_kms(now, states_at).await;
        self.sleep_after(now, states_at, refresh_interval)
    }

    /// Under KMS custody: while signing fails, asks KMS whether it can sign
    /// again; and when a sweep is due, sweeps in the background (listing the
    /// account's keys can take a while, and a pass must not).
    async fn look_after_kms(&self, now: DateTime<Utc>, states_at: DateTime<Utc>) {
        let (Custodian::Kms(custody), Some(snapshot)) = (&self.shared.custodian, &self.snapshot)
        else {
            return;
        };
        custody.probe_if_failing(&snapshot.keyset, states_at).await;
        if custody.sweep_due(now) {
            let custody = Arc::clone(custody);
            let keyset = snapshot.keyset.clone();
            tokio::spawn(async move {
                if let Err(err) = custody.sweep(&keyset, now).await {
                    tracing::warn!(%err, "cannot look for KMS keys to sweep");
                }
            });
        }
    }

    /// Our clock agrees with the others again (or always did).
    fn clock_agrees(&mut self) {
        if let Some(skew) = self.skew.take() {
            tracing::info!(was = %skew, "this host's clock agrees with the store and the keyset again: writes resume");
        }
    }

    /// Our clock is beyond the tolerance: say so when that starts or the
    /// witness changes, and write nothing.
    fn clock_disagrees(&mut self, skew: Skew) {
        let news = self
            .skew
            .as_ref()
            .is_none_or(|previous| previous.witness != skew.witness);
        if news {
            tracing::error!("{skew}; serving the last good keyset");
        }
        self.skew = Some(skew);
    }

    /// Re-reads the store; false if that failed.
    async fn refresh(&mut self, now: DateTime<Utc>) -> bool {
        match self.store.load().await {
            Ok(snapshot) => {
                self.last_refresh = Some(now);
                self.snapshot = Some(snapshot);
                if self.write_failing {
                    // It answers, but the outage lasts until a write succeeds.
                    let previous = self.shared.store_status.load();
                    self.shared.store_status.store(Arc::new(StoreStatus {
                        last_success: Some(self.clock.now()),
                        ..(**previous).clone()
                    }));
                } else {
                    self.record_success();
                }
                true
            }
            Err(err) => {
                self.record_failure(&err.to_string(), store_reason(&err));
                false
            }
        }
    }

    fn record_success(&mut self) {
        let now = self.clock.now();
        if let Some(outage) = self.outage.take() {
            let attempts = match outage.failed_attempts {
                1 => "1 failed attempt".to_owned(),
                many => format!("{many} failed attempts"),
            };
            tracing::info!(
                "keyset store {} is reachable again after {attempts} over {}",
                self.store.location(),
                format_elapsed((now - outage.since).to_std().unwrap_or_default())
            );
        }
        self.retry_delay = None;
        self.shared.store_status.store(Arc::new(StoreStatus {
            last_success: Some(now),
            last_error: None,
            public_error: None,
        }));
    }

    fn count_changes(&self, changes: &[Change]) {
        log_changes(changes);
        let made = changes
            .iter()
            .filter(|change| matches!(change, Change::NewNext { .. }))
            .count();
        self.shared.metrics.rotations.inc_by(made as u64);
    }

    fn record_failure(&mut self, error: &str, public: &'static str) {
        self.shared.metrics.store_errors.inc();
        let now = self.clock.now();
        let outage = self.outage.get_or_insert(Outage {
            since: now,
            failed_attempts: 0,
        });
        outage.failed_attempts += 1;
        // Never wait longer than a healthy replica waits between reads, so that every
        // replica notices a recovered store within the refresh interval.
        let cap = RETRY_MAX.min(self.shared.config.load().store.refresh_interval);
        let delay = self
            .retry_delay
            .map_or(RETRY_INITIAL, |delay| delay * 2)
            .min(cap);
        self.retry_delay = Some(delay);
        tracing::warn!(error, retry_in = ?delay, "keyset store operation failed; serving the last good keyset");
        let previous = self.shared.store_status.load();
        self.shared.store_status.store(Arc::new(StoreStatus {
            last_success: previous.last_success,
            last_error: Some(error.to_owned()),
            public_error: Some(public),
        }));
    }

    /// Publishes the stored keyset if what it publishes at `now` changed.
    /// Returns the instant key states were evaluated at (see [`ClockView`]).
    fn publish(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let Some(snapshot) = &self.snapshot else {
            return now;
        };
        let clock = ClockView {
            evidence: evidence_of(snapshot, now),
            skew: self.skew.clone(),
        };
        let now = clock.time_at(now);
        let current = self.shared.view.load();
        let document = JwksDocument::build(&snapshot.keyset, self.planner.families(), now);
        let same_body = current
            .jwks
            .as_ref()
            .is_some_and(|published| published.body == document.body);
        if same_body && *current.keyset == snapshot.keyset && current.clock == clock {
            return now;
        }
        let jwks = if same_body {
            current.jwks.clone()
        } else {
            tracing::info!(
                kids = ?timeline::published_at(&snapshot.keyset, self.planner.families(), now)
                    .iter()
                    .map(|key| format!("{}:{}", key.kid, timeline::state_at(key, now)))
                    .collect::<Vec<_>>(),
                "publishing JWKS"
            );
            Some(document)
        };
        let signers = self.signers_for(&snapshot.keyset, &current.signers, now);
        self.shared.view.store(Arc::new(KeysetView {
            // Refreshes mostly read back what is published: share it, do not copy it.
            keyset: if *current.keyset == snapshot.keyset {
                Arc::clone(&current.keyset)
            } else {
                Arc::new(snapshot.keyset.clone())
            },
            jwks,
            signers,
            clock,
        }));
        now
    }

    /// Parsed signers for the keys that sign now or will next, reusing those
    /// already parsed.
    fn signers_for(
        &self,
        keyset: &Keyset,
        previous: &HashMap<String, Arc<TokenSigner>>,
        now: DateTime<Utc>,
    ) -> HashMap<String, Arc<TokenSigner>> {
        let mut signers = HashMap::new();
        for key in &keyset.keys {
            if !matches!(
                timeline::state_at(key, now),
                KeyState::Current | KeyState::Next
            ) {
                continue;
            }
            if let Some(signer) = previous.get(&key.kid) {
                signers.insert(key.kid.clone(), Arc::clone(signer));
                continue;
            }
            match self.shared.custodian.signer(key) {
                Ok(signer) => {
                    signers.insert(key.kid.clone(), Arc::new(signer));
                }
                Err(err) => tracing::error!(kid = %key.kid, %err, "cannot load a signing key"),
            }
        }
        signers
    }

    /// How long to sleep after a pass at `now`, whose key states were
    /// evaluated at `states_at`.
    fn sleep_after(
        &self,
        now: DateTime<Utc>,
        states_at: DateTime<Utc>,
        refresh_interval: Duration,
    ) -> Duration {
        let mut sleep = refresh_interval;
        if let Some(last) = self.last_refresh {
            let since = (now - last).to_std().unwrap_or_default();
            sleep = sleep.min(refresh_interval.saturating_sub(since));
        }
        if let Some(retry) = self.retry_delay {
            // After a failure the refresh is overdue: without this it would be retried
            // at once, in a tight loop. Wait out the backoff instead.
            sleep = jitter(retry);
        }
        if let Some(snapshot) = &self.snapshot
            && let Some(transition) = timeline::next_transition_after(&snapshot.keyset, states_at)
        {
            sleep = sleep.min((transition - states_at).to_std().unwrap_or_default());
        }
        // Wake a hair after a transition, never before it, and never spin.
        sleep.max(Duration::from_millis(5)) + Duration::from_millis(2)
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::RotateNow(reply) => {
                let result = self.run(&Operation::Rotate).await;
                let _ = reply.send(result);
            }
            Event::Revoke(kid, reply) => {
                let result = self.run(&Operation::Revoke(kid)).await;
                let _ = reply.send(result);
            }
            Event::Reload(config, done) => {
                match crate::auth::Authenticator::new(&config.clients) {
                    Ok(auth) => self.shared.auth.store(Arc::new(auth)),
                    Err(err) => {
                        tracing::error!(%err, "reload refused, keeping the running config");
                        let _ = done.send(self.status_line(self.clock.now()));
                        return;
                    }
                }
                self.planner = Planner::new(&config);
                self.shared.config.store(Arc::new(*config));
                // Re-read the keyset now, under the new schedule, before saying done.
                self.last_refresh = None;
                self.tick().await;
                tracing::info!("configuration reloaded");
                let _ = done.send(self.status_line(self.clock.now()));
            }
            // The pass after every event is the wake: the loop replies after it.
            Event::Wake(_) => {}
        }
    }

    async fn run(&mut self, operation: &Operation) -> Result<Vec<Change>, OperationError> {
        let result = update_store(
            self.store.as_ref(),
            &self.planner,
            &self.shared.custodian,
            self.clock.as_ref(),
            operation,
            None,
        )
        .await;
        match result {
            Ok((snapshot, changes)) => {
                self.clock_agrees();
                self.count_changes(&changes);
                self.snapshot = Some(snapshot);
                self.last_refresh = Some(self.clock.now());
                self.write_failing = false;
                self.record_success();
                self.publish(self.clock.now());
                Ok(changes)
            }
            Err(err) => {
                match &err {
                    OperationError::Store(store_error) => {
                        self.write_failing = true;
                        self.record_failure(&store_error.to_string(), store_reason(store_error));
                    }
                    OperationError::Clock(skew) => {
                        self.clock_disagrees(skew.clone());
                        self.publish(self.clock.now());
                    }
                    _ => {}
                }
                Err(err)
            }
        }
    }

    /// Runs until `shutdown` is cancelled, handling `events` as they come; the
    /// first pass is after `first_sleep` (the caller ran one already).
    ///
    /// The watchdog is pinged here, between passes, and nowhere else: a pass that
    /// hangs (a store call that never returns, a deadlock) stops the pings.
    ///
    /// On a clock that does not run by itself ([`Clock::runs_by_itself`]) no
    /// timer wakes the loop: only events do, [`Event::Wake`] after each move.
    pub async fn run_loop_after(
        mut self,
        first_sleep: Duration,
        mut events: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) {
        let mut wake_at = tokio::time::Instant::now() + first_sleep;
        let mut watchdog = self.watchdog.clone().map(|watchdog| {
            let every = watchdog.every();
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            (watchdog, interval)
        });
        let timed = self.clock.runs_by_itself();
        loop {
            let mut woken = None;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(wake_at), if timed => {}
                Some(event) = events.recv() => match event {
                    Event::Wake(done) => woken = Some(done),
                    event => self.handle(event).await,
                },
                () = ping_due(&mut watchdog) => {
                    if let Some((watchdog, _)) = &watchdog {
                        watchdog.ping();
                    }
                    continue;
                }
            }
            wake_at = tokio::time::Instant::now() + self.tick().await;
            self.report_status();
            if let Some(done) = woken {
                let _ = done.send(());
            }
        }
        tracing::debug!("rotator stopped");
    }
}

/// What `/readyz` says about a failed store operation.
fn store_reason(err: &StoreError) -> &'static str {
    match err {
        StoreError::Corrupt { .. } => "the stored keyset cannot be read",
        StoreError::Unavailable { .. } | StoreError::Conflict { .. } => {
            "the keyset store is unavailable"
        }
    }
}

/// What `/readyz` says about a failed keyset write.
fn public_reason(err: &OperationError) -> &'static str {
    match err {
        OperationError::Store(err) => store_reason(err),
        OperationError::Kms(_) => "KMS could not make a key",
        _ => "the last keyset write failed",
    }
}

/// Resolves when the watchdog is due; never without one.
async fn ping_due(watchdog: &mut Option<(Watchdog, tokio::time::Interval)>) {
    match watchdog {
        Some((_, interval)) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn log_changes(changes: &[Change]) {
    for change in changes {
        match change {
            Change::FirstKey { .. }
            | Change::Promoted { early: true, .. }
            | Change::KeptSigning { .. } => {
                tracing::warn!("{change}");
            }
            _ => tracing::info!("{change}"),
        }
    }
}

/// How long an outage lasted, for a log line: `12.3s` under a minute, else
/// whole seconds as the config writes them (`3m12s`).
fn format_elapsed(elapsed: Duration) -> String {
    if elapsed < Duration::from_secs(60) {
        format!("{:.1}s", elapsed.as_secs_f64())
    } else {
        crate::duration::format_duration(Duration::from_secs(elapsed.as_secs()))
    }
}

/// Spreads retries of several replicas: a delay between 50% and 100% of `delay`.
fn jitter(delay: Duration) -> Duration {
    let factor: f64 = rand::random_range(0.5..=1.0);
    delay.mul_f64(factor)
}

#[cfg(test)]
mod aws_calls;
#[cfg(test)]
mod tests;
