//! Tests of the rotation task, on simulated time.
//!
//! Every test pauses tokio's clock (`start_paused`), and the rotator's wall
//! clock is a [`PausedClock`], which moves exactly as far as tokio's clock does.
//! While a test waits (`tokio::time::sleep_until`), tokio jumps from one timer to
//! the next once every task is idle (a `spawn_blocking` key generation holds it
//! back), so the loop's timers fire in order at their exact instants: counts
//! and times are exact, and no test sleeps for real.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::keys::Algorithm;
use crate::store::memory::MemoryStore;

/// The rotator's wall clock on tokio's time: [`PausedClock::set`] puts it at a
/// time (a clock step), and from there it moves as far as tokio's clock does.
///
/// Unlike `clock::ManualClock` it runs by itself, its timers being tokio's
/// (paused here): the loop sleeps on its own timers, as in production.
#[derive(Debug)]
struct PausedClock(Mutex<(DateTime<Utc>, tokio::time::Instant)>);

impl PausedClock {
    fn new(at: DateTime<Utc>) -> PausedClock {
        PausedClock(Mutex::new((at, tokio::time::Instant::now())))
    }

    fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap() = (at, tokio::time::Instant::now());
    }
}

impl Clock for PausedClock {
    fn now(&self) -> DateTime<Utc> {
        let (at, since) = *self.0.lock().unwrap();
        at + chrono::Duration::from_std(since.elapsed()).unwrap()
    }
}

/// A UTC time from RFC 3339.
fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Where the tests with a daily rotation start: far from 03:00, so that no key
/// changes state while they run and every wake is a refresh or a retry.
const START: &str = "2030-01-01T12:00:00Z";

/// Waits (in paused time: at once) until `ms` after `t0`.
async fn wait_until(t0: tokio::time::Instant, ms: u64) {
    tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap()
}

fn config() -> Config {
    crate::config::fast_config_for_test(&["ES256", "EdDSA"])
}

/// A daily rotation at 03:00, with `[keys]` lines added and this refresh interval.
fn daily_config(keys: &str, refresh_interval: &str) -> Config {
    Config::parse(
        &format!(
            "[keys]\nrotation_schedule = \"0 3 * * *\"\n{keys}\n\
             [store]\nrefresh_interval = \"{refresh_interval}\"\n"
        ),
        std::path::Path::new("/tmp/jwkd-test.toml"),
        crate::config::test_time(),
    )
    .unwrap()
}

const UNAVAILABLE: &str = "the keyset store is unavailable (the log says why)";

#[tokio::test(start_paused = true)]
async fn nothing_is_published_that_was_not_stored() {
    // Rotations every even second: the next one is 1.5 s away.
    let clock = Arc::new(PausedClock::new(at("2030-01-01T12:00:00.500Z")));
    let store = Arc::new(MemoryStore::default());
    let shared = Arc::new(Shared::new(config()).unwrap());
    let mut rotator = Rotator::new(store.clone(), clock.clone(), shared.clone());

    store.unavailable.store(true, Ordering::SeqCst);
    rotator.tick().await;
    assert!(
        shared.view.load().jwks.is_none(),
        "published without a store"
    );
    assert_eq!(
        shared.readiness_at(clock.now()),
        Err("no keyset loaded yet".to_owned())
    );

    store.unavailable.store(false, Ordering::SeqCst);
    rotator.tick().await;
    let stored = store.load().await.unwrap().keyset;
    assert_eq!(*shared.view.load().keyset, stored);
    assert_eq!(stored.keys.len(), 4, "current and next for two families");
    assert_eq!(shared.readiness_at(clock.now()), Ok(()));

    // The store goes down, and the rotation at 12:00:02 comes due with no
    // successor stored: the daemon keeps serving what it had and makes nothing new.
    store.unavailable.store(true, Ordering::SeqCst);
    let writes = store.writes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(clock.now(), at("2030-01-01T12:00:02.600Z"));
    rotator.tick().await;
    assert_eq!(store.writes.load(Ordering::SeqCst), writes);
    let after = shared.view.load_full();
    assert_eq!(*after.keyset, stored, "published what was not stored");
    assert!(after.jwks.is_some());
    assert_eq!(
        shared.readiness_at(clock.now()),
        Err(UNAVAILABLE.to_owned())
    );
    assert!(shared.store_status.load().last_error.is_some());

    // Back: the successors are stored, then published.
    store.unavailable.store(false, Ordering::SeqCst);
    rotator.tick().await;
    assert_eq!(store.writes.load(Ordering::SeqCst), writes + 1);
    let stored_now = store.load().await.unwrap().keyset;
    assert_eq!(*shared.view.load().keyset, stored_now);
    assert_eq!(stored_now.keys.len(), 6, "a new next key for each family");
    assert_eq!(shared.readiness_at(clock.now()), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_store_is_reported_and_left_alone() {
    let store = Arc::new(MemoryStore::default());
    store.put_raw(b"{\"format\": 1, \"keys\": [".to_vec());
    let clock = Arc::new(PausedClock::new(at(START)));
    let shared = Arc::new(Shared::new(config()).unwrap());
    let mut rotator = Rotator::new(store.clone(), clock.clone(), shared.clone());
    rotator.tick().await;
    assert_eq!(store.writes.load(Ordering::SeqCst), 0);
    assert_eq!(
        shared.readiness_at(clock.now()),
        Err("no keyset loaded yet".to_owned())
    );
    let status = shared.store_status.load();
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("corrupt"),
        "{status:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn beyond_the_skew_nothing_is_written_the_reason_is_served_and_writes_resume() {
    let (store, clock, shared, mut rotator, start) = manual_rotator("clock_skew = \"1m\"");
    rotator.tick().await;
    let stored = store.load().await.unwrap().keyset;
    assert_eq!(stored.keys.len(), 2);
    shared.readiness_at(start).unwrap();

    // The clock steps back a day: the next pass writes nothing, even though the
    // keyset would need a write by that clock (its keys lie in the "future").
    let stepped_back = start - chrono::Duration::days(1);
    clock.set(stepped_back);
    let writes = store.writes.load(Ordering::SeqCst);
    rotator.last_refresh = None;
    rotator.tick().await;
    assert_eq!(store.writes.load(Ordering::SeqCst), writes);
    let reason = shared.readiness_at(stepped_back).unwrap_err();
    assert!(
        reason.starts_with(
            "this host's clock is 1d behind the newest time written into the stored keyset"
        ),
        "{reason}"
    );
    let view = shared.view.load_full();
    assert!(view.clock.skew.is_some());
    // What is served is the keyset as of the document, not as of the wrong clock.
    assert_eq!(
        view.current_signer_at(Algorithm::Es256, stepped_back)
            .map(|signer| signer.kid().to_owned()),
        timeline::current_at(&stored, Algorithm::Es256, start).map(|key| key.kid.clone())
    );
    let gauges = crate::metrics::IssuerGauges {
        issuer: "default",
        keyset: &view.keyset,
        families: &[Algorithm::Es256],
        clock: &view.clock,
        kms: None,
    };
    let metrics = shared.common.metrics.render_at(&[gauges], stepped_back);
    assert!(metrics.contains("jwkd_clock_skew_exceeded 1"), "{metrics}");
    let refused = rotator.run(&Operation::Rotate).await.unwrap_err();
    assert!(matches!(refused, OperationError::Clock(_)), "{refused}");
    assert_eq!(store.writes.load(Ordering::SeqCst), writes);

    // The store's clock says ours runs three days ahead: the same.
    clock.set(start + chrono::Duration::days(3));
    // The store stamps its answers with `start`: ours reads three days later.
    *store.store_stamp.lock().unwrap() = Some(crate::clock::StoreStamp::after(
        tokio::time::Instant::now().into_std(),
        start,
        chrono::Duration::milliseconds(1),
    ));
    rotator.last_refresh = None;
    rotator.tick().await;
    assert_eq!(
        store.writes.load(Ordering::SeqCst),
        writes,
        "pruned on a fast clock"
    );
    let reason = shared
        .readiness_at(start + chrono::Duration::days(3))
        .unwrap_err();
    assert!(
        reason.contains("3d ahead of the clock of the store memory"),
        "{reason}"
    );

    // Set right again: the next pass resumes by itself.
    clock.set(start + chrono::Duration::seconds(2));
    *store.store_stamp.lock().unwrap() = None;
    rotator.last_refresh = None;
    rotator.tick().await;
    shared
        .readiness_at(start + chrono::Duration::seconds(2))
        .unwrap();
    assert!(shared.view.load().clock.skew.is_none());
    rotator.run(&Operation::Rotate).await.unwrap();
}

/// Log lines written while the returned guard lives (this thread only:
/// `#[tokio::test]` runs the rotator on it).
fn capture_logs() -> (crate::logging::LogBuffer, tracing::subscriber::DefaultGuard) {
    let logs = crate::logging::LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A rotator on a memory store and a paused clock at [`START`], with a daily
/// rotation, a refresh every second and `[keys]` lines added to that config.
fn manual_rotator(
    keys: &str,
) -> (
    Arc<MemoryStore>,
    Arc<PausedClock>,
    Arc<Shared>,
    Rotator,
    DateTime<Utc>,
) {
    let store = Arc::new(MemoryStore::default());
    let shared = Arc::new(Shared::new(daily_config(keys, "1s")).unwrap());
    let start = at(START);
    let clock = Arc::new(PausedClock::new(start));
    let rotator = Rotator::new(store.clone(), clock.clone(), shared.clone());
    (store, clock, shared, rotator, start)
}

#[tokio::test(start_paused = true)]
async fn a_recovered_store_is_logged_once_with_the_outage() {
    let (store, clock, _shared, mut rotator, start) = manual_rotator("");
    let (logs, _guard) = capture_logs();
    let text = || logs.text();
    rotator.tick().await;

    // Three failed reads, the first at +1s, then the store answers at +13.3s.
    store.unavailable.store(true, Ordering::SeqCst);
    for at_ms in [1000, 5000, 10_000] {
        clock.set(start + chrono::Duration::milliseconds(at_ms));
        rotator.tick().await;
    }
    assert!(!text().contains("reachable again"), "{}", text());
    store.unavailable.store(false, Ordering::SeqCst);
    clock.set(start + chrono::Duration::milliseconds(13_300));
    rotator.tick().await;
    // Healthy passes after it say nothing more.
    for at_ms in [14_400, 15_500] {
        clock.set(start + chrono::Duration::milliseconds(at_ms));
        rotator.tick().await;
    }
    let text = text();
    let recovered: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("reachable again"))
        .collect();
    assert_eq!(recovered.len(), 1, "{text}");
    assert!(
        recovered[0].contains(
            " INFO jwkd::rotator: keyset store memory is reachable again after 3 failed attempts over 12.3s"
        ),
        "{text}"
    );

    // A single failure is counted as one.
    store.unavailable.store(true, Ordering::SeqCst);
    clock.set(start + chrono::Duration::seconds(17));
    rotator.tick().await;
    store.unavailable.store(false, Ordering::SeqCst);
    clock.set(start + chrono::Duration::seconds(90));
    rotator.tick().await;
    let text = logs.text();
    assert!(
        text.contains("is reachable again after 1 failed attempt over 1m13s"),
        "{text}"
    );
}

/// A store that answers reads and fails every write is still an outage: the
/// reads do not end it, `/readyz` keeps the reason, and only the write that
/// succeeds says the store is back.
#[tokio::test(start_paused = true)]
async fn reads_that_succeed_do_not_end_an_outage_of_writes() {
    let (store, clock, shared, mut rotator, start) = manual_rotator("");
    let (logs, _guard) = capture_logs();
    rotator.tick().await;
    shared.readiness_at(start).unwrap();
    store.fail_writes.store(true, Ordering::SeqCst);
    // Past the next key's activation: a successor is due, and cannot be written.
    let due = at("2030-01-02T03:00:01Z");
    for at in [
        due,
        due + chrono::Duration::seconds(2),
        due + chrono::Duration::seconds(4),
    ] {
        clock.set(at);
        rotator.last_refresh = None; // a read each pass, and it succeeds
        rotator.tick().await;
        assert_eq!(
            shared.readiness_at(at),
            Err("the keyset store is unavailable (the log says why)".to_owned()),
            "at {at}"
        );
    }
    assert!(!logs.text().contains("reachable again"), "{}", logs.text());
    store.fail_writes.store(false, Ordering::SeqCst);
    let back = due + chrono::Duration::seconds(6);
    clock.set(back);
    rotator.tick().await;
    shared.readiness_at(back).unwrap();
    assert!(
        logs.text()
            .contains("keyset store memory is reachable again after 3 failed attempts over 6.0s"),
        "{}",
        logs.text()
    );
}

/// The backoff after a failure doubles from [`RETRY_INITIAL`], up to the refresh
/// interval, each sleep jittered to 50-100% of it; one success resets it.
#[tokio::test(start_paused = true)]
async fn the_backoff_doubles_up_to_the_refresh_interval_and_a_success_resets_it() {
    let store = Arc::new(MemoryStore::default());
    let shared = Arc::new(Shared::new(daily_config("", "5s")).unwrap());
    let clock = Arc::new(PausedClock::new(at(START)));
    let mut rotator = Rotator::new(store.clone(), clock, shared.clone());
    let mut sleep = rotator.tick().await;
    assert_eq!(sleep, Duration::from_millis(5002), "the refresh interval");
    assert_eq!(rotator.retry_delay, None);

    store.unavailable.store(true, Ordering::SeqCst);
    for backoff_ms in [500, 1000, 2000, 4000, 5000, 5000] {
        tokio::time::sleep(sleep).await;
        sleep = rotator.tick().await;
        assert_eq!(rotator.retry_delay, Some(Duration::from_millis(backoff_ms)));
        // Jittered to 50-100% of the backoff, plus the 2 ms past it every sleep has.
        assert!(
            (backoff_ms / 2 + 2..=backoff_ms + 2).contains(&ms(sleep)),
            "slept {sleep:?} for a backoff of {backoff_ms} ms"
        );
    }
    assert_eq!(shared.metrics.store_errors.get(), 6);

    store.unavailable.store(false, Ordering::SeqCst);
    tokio::time::sleep(sleep).await;
    sleep = rotator.tick().await;
    assert_eq!(rotator.retry_delay, None);
    assert_eq!(sleep, Duration::from_millis(5002), "the refresh interval");
}

/// A memory store that notes when each read starts, on tokio's clock, and
/// whose reads never return while `hang` is set.
#[derive(Default)]
struct TestStore {
    inner: MemoryStore,
    hang: AtomicBool,
    loads: Mutex<Vec<tokio::time::Instant>>,
}

impl TestStore {
    /// When each read started, in milliseconds after `t0`.
    fn loads_after(&self, t0: tokio::time::Instant) -> Vec<u64> {
        let loads = self.loads.lock().unwrap();
        loads.iter().map(|load| ms(*load - t0)).collect()
    }
}

#[async_trait::async_trait]
impl KeyStore for TestStore {
    fn location(&self) -> String {
        "test".to_owned()
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.loads.lock().unwrap().push(tokio::time::Instant::now());
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.load().await
    }

    async fn compare_and_swap(
        &self,
        base: Option<&crate::store::Version>,
        keyset: &Keyset,
    ) -> Result<crate::store::Version, StoreError> {
        self.inner.compare_and_swap(base, keyset).await
    }

    async fn load_raw(&self) -> Result<Option<crate::store::RawDocument>, StoreError> {
        self.inner.load_raw().await
    }

    async fn back_up(
        &self,
        document: &crate::store::RawDocument,
        at: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        self.inner.back_up(document, at).await
    }
}

/// A rotator on a [`TestStore`] and a paused clock at [`START`], with a daily
/// rotation and this refresh interval.
fn looped_rotator(
    refresh_interval: &str,
) -> (Arc<TestStore>, Arc<PausedClock>, Arc<Shared>, Rotator) {
    let store = Arc::new(TestStore::default());
    let shared = Arc::new(Shared::new(daily_config("", refresh_interval)).unwrap());
    let clock = Arc::new(PausedClock::new(at(START)));
    let rotator = Rotator::new(store.clone(), clock.clone(), shared.clone());
    (store, clock, shared, rotator)
}

/// The rotator's loop on a task of its own, as `serve` runs it after its first
/// pass; stopped when dropped.
struct RunningLoop {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _events: mpsc::Sender<Event>,
}

impl RunningLoop {
    fn start(rotator: Rotator, first_sleep: Duration) -> RunningLoop {
        let (events, events_rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(rotator.run_loop_after(first_sleep, events_rx, shutdown.clone()));
        RunningLoop {
            shutdown,
            task,
            _events: events,
        }
    }
}

impl Drop for RunningLoop {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn the_store_is_re_read_exactly_every_refresh_interval() {
    let t0 = tokio::time::Instant::now();
    let (store, clock, shared, mut rotator) = looped_rotator("1s");
    let first_sleep = rotator.tick().await;
    // The interval, and 2 ms so that the wake is past it, never before.
    assert_eq!(first_sleep, Duration::from_millis(1002));
    let _running = RunningLoop::start(rotator, first_sleep);

    wait_until(t0, 5500).await;
    assert_eq!(store.loads_after(t0), [0, 1002, 2004, 3006, 4008, 5010]);
    // Nothing to write after the first keys: the refreshes only read.
    assert_eq!(store.inner.writes.load(Ordering::SeqCst), 1);
    assert_eq!(shared.readiness_at(clock.now()), Ok(()));
    assert_eq!(
        shared.store_status.load().last_success,
        Some(at("2030-01-01T12:00:05.010Z"))
    );
}

/// Ready while the store answered within the refresh interval and its grace
/// (as long again, at most 5 s); not a millisecond longer.
#[tokio::test(start_paused = true)]
async fn readiness_ends_when_the_store_has_not_answered_for_the_interval_and_its_grace() {
    let t0 = tokio::time::Instant::now();
    let (store, clock, shared, mut rotator) = looped_rotator("1s");
    let first_sleep = rotator.tick().await;
    let _running = RunningLoop::start(rotator, first_sleep);
    wait_until(t0, 2500).await;
    assert_eq!(store.loads_after(t0), [0, 1002, 2004]);

    // The read at 3006 ms never returns; the last answer was at 2004 ms.
    store.hang.store(true, Ordering::SeqCst);
    wait_until(t0, 4004).await;
    assert_eq!(store.loads_after(t0), [0, 1002, 2004, 3006]);
    assert_eq!(shared.readiness_at(clock.now()), Ok(()));
    wait_until(t0, 4005).await;
    assert_eq!(
        shared.readiness_at(clock.now()),
        Err("the store has not answered since 2030-01-01T12:00:02Z".to_owned())
    );
}

/// A failed read is retried after the backoff (jittered to 50-100% of it),
/// doubling from half a second to 30 s however long the refresh interval; the
/// first success returns to one read per refresh interval.
#[tokio::test(start_paused = true)]
async fn a_failed_store_is_retried_after_the_backoff() {
    let t0 = tokio::time::Instant::now();
    let (store, clock, shared, mut rotator) = looped_rotator("1m");
    let first_sleep = rotator.tick().await;
    let _running = RunningLoop::start(rotator, first_sleep);
    store.inner.unavailable.store(true, Ordering::SeqCst);

    // The refresh at 60 s fails, then 8 retries: at most 91.5 s.
    wait_until(t0, 60_002 + 91_600).await;
    let loads = store.loads_after(t0);
    assert_eq!(loads[..2], [0, 60_002]);
    let backoffs_ms = [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000];
    for (n, backoff_ms) in backoffs_ms.into_iter().enumerate() {
        let gap = loads[n + 2] - loads[n + 1];
        assert!(
            (backoff_ms / 2 + 2..=backoff_ms + 2).contains(&gap),
            "retry {n} came {gap} ms after the failure, for a backoff of {backoff_ms} ms: {loads:?}"
        );
    }
    assert_eq!(
        shared.readiness_at(clock.now()),
        Err(UNAVAILABLE.to_owned())
    );

    // The store answers again: the next retry succeeds, and the read after it
    // is one refresh interval later.
    store.inner.unavailable.store(false, Ordering::SeqCst);
    let failed = loads.len();
    let last_failure = loads[failed - 1];
    wait_until(t0, last_failure + 30_003).await;
    let loads = store.loads_after(t0);
    assert_eq!(loads.len(), failed + 1, "{loads:?}");
    let recovered = loads[failed];
    assert!(
        (last_failure + 15_002..=last_failure + 30_002).contains(&recovered),
        "{loads:?}"
    );
    assert_eq!(shared.readiness_at(clock.now()), Ok(()));
    wait_until(t0, recovered + 60_010).await;
    assert_eq!(
        store.loads_after(t0)[failed..],
        [recovered, recovered + 60_002]
    );
}

/// A watchdog that counts its pings.
fn counting_watchdog(every: Duration) -> (Watchdog, Arc<AtomicUsize>) {
    let pings = Arc::new(AtomicUsize::new(0));
    let watchdog = Watchdog::new(every, {
        let pings = Arc::clone(&pings);
        move || {
            pings.fetch_add(1, Ordering::SeqCst);
        }
    });
    (watchdog, pings)
}

#[tokio::test(start_paused = true)]
async fn a_stuck_rotator_stops_the_watchdog_pings() {
    let t0 = tokio::time::Instant::now();
    let (store, clock, _shared, mut rotator) = looped_rotator("1s");
    let (watchdog, pings) = counting_watchdog(Duration::from_millis(100));
    rotator.set_watchdog(Some(watchdog));
    let first_sleep = rotator.tick().await;
    let status = rotator.status_line(clock.now());
    assert!(status.starts_with("serving; ES256 current "), "{status}");
    let _running = RunningLoop::start(rotator, first_sleep);

    // Healthy: one ping every 100 ms, between reads at 1002, 2004 and 3006 ms.
    wait_until(t0, 3050).await;
    assert_eq!(pings.load(Ordering::SeqCst), 30);
    assert_eq!(store.loads_after(t0), [0, 1002, 2004, 3006]);

    // The read at 4008 ms never returns: the loop never gets back to its pings.
    store.hang.store(true, Ordering::SeqCst);
    wait_until(t0, 4050).await;
    assert_eq!(pings.load(Ordering::SeqCst), 40);
    assert_eq!(store.loads_after(t0), [0, 1002, 2004, 3006, 4008]);
    wait_until(t0, 60_000).await;
    assert_eq!(
        pings.load(Ordering::SeqCst),
        40,
        "pings went on while the rotator was stuck in a store read"
    );
}
