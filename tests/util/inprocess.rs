//! The daemon in this process: `jwkd::daemon::Daemon`, the wiring `jwkd serve`
//! runs, on `127.0.0.1:0`, over the memory store or the file store in a
//! [`TestDir`], on a [`ManualClock`].
//!
//! Nothing moves by itself: [`InProcess::advance`] moves the clock and returns
//! once the rotator has re-derived and published everything for the new time,
//! so a test asserts exact states after each step, with no sleep and no poll.
//! The daemon's tokio runtime runs on threads of its own; requests go over
//! real sockets with the same helpers as a [`super::Daemon`] process ([`Endpoint`]).
//!
//! For tests whose subject is the endpoints, the tokens or the key timeline.
//! What belongs to the process (verbs, exit codes, signals, the log format,
//! systemd, kill -9, file modes) is tested on the binary ([`super::Daemon`]).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jwkd::clock::ManualClock;
use jwkd::config::Config;
use jwkd::daemon::{ConfiguredStores, Daemon as Running, Listeners, MemoryStores, Stores};
use jwkd::store::KeyStore;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber as _;

use super::{Endpoint, Key, Response, TestDir};

/// How long shutting the daemon down may take when a test ends.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A daemon running in this process; stopped on drop.
pub struct InProcess {
    // Dropped in this order: the daemon stops, then its runtime, then the directory.
    daemon: Option<Running>,
    runtime: tokio::runtime::Runtime,
    dir: TestDir,
    clock: Arc<ManualClock>,
    /// The memory stores, unless the daemon runs on the stores its config names.
    memory: Option<Arc<MemoryStores>>,
    logs: LogBuffer,
    dispatch: tracing::Dispatch,
}

impl InProcess {
    /// The daemon of `config` (TOML, e.g. from [`super::TestConfig`]) over the
    /// memory store, its clock standing at `start`. The store the config names
    /// is not used.
    pub fn start(config: &str, start: DateTime<Utc>) -> InProcess {
        InProcess::start_in(TestDir::new(config), start)
    }

    /// The daemon of the config in `dir`, beside the files it names (a TLS
    /// certificate), over the memory store, its clock standing at `start`.
    pub fn start_in(dir: TestDir, start: DateTime<Utc>) -> InProcess {
        InProcess::launch(dir, start, Some(Arc::new(MemoryStores::default())))
    }

    /// The daemon of `config` over the memory store, whose issuers with
    /// `keys.custody = "kms"` use `kms`.
    pub fn start_with_kms(config: &str, start: DateTime<Utc>, kms: jwkd::kms::Kms) -> InProcess {
        InProcess::launch(
            TestDir::new(config),
            start,
            Some(Arc::new(MemoryStores::with_kms(kms))),
        )
    }

    /// The stored keyset document of the issuer `name` (memory stores only).
    pub fn document_of(&self, name: &str) -> Vec<u8> {
        let memory = self
            .memory
            .as_ref()
            .expect("test bug: document_of reads the memory stores");
        let snapshot = self
            .block_on(memory.store(name).load())
            .unwrap_or_else(|err| panic!("the store does not load: {err}"));
        snapshot.keyset.to_document()
    }

    /// The daemon of `config` over the file store it names, in a fresh
    /// [`TestDir`] beside its `jwkd.toml`, its clock standing at `start`.
    ///
    /// The file store reads the file system's clock on every load, and the
    /// daemon writes nothing while its own clock is beyond `clock_skew` from it:
    /// start near the wall clock, and stay within `clock_skew` of it.
    pub fn start_on_file(config: &str, start: DateTime<Utc>) -> InProcess {
        InProcess::launch(TestDir::new(config), start, None)
    }

    fn launch(dir: TestDir, start: DateTime<Utc>, memory: Option<Arc<MemoryStores>>) -> InProcess {
        let logs = LogBuffer::default();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .with_writer(logs.clone())
                .finish(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start({
                let dispatch = dispatch.clone();
                move || log_on_this_thread(&dispatch)
            })
            .build()
            .expect("a tokio runtime");
        let config = Config::load(&dir.config_path(), start)
            .unwrap_or_else(|err| panic!("test bug: the config does not load: {err}"));
        let clock = Arc::new(ManualClock::new(start));
        let stores: Arc<dyn Stores> = match &memory {
            Some(memory) => Arc::clone(memory) as Arc<dyn Stores>,
            None => Arc::new(ConfiguredStores),
        };
        let daemon = runtime
            .block_on(
                async {
                    let listeners = Listeners::bind(&config).await.expect("listeners bind");
                    Running::start(
                        config,
                        stores,
                        Arc::clone(&clock) as Arc<dyn jwkd::clock::Clock>,
                        listeners,
                        None,
                        CancellationToken::new(),
                    )
                    .await
                }
                .with_subscriber(dispatch.clone()),
            )
            .expect("the daemon starts");
        InProcess {
            daemon: Some(daemon),
            runtime,
            dir,
            clock,
            memory,
            logs,
            dispatch,
        }
    }

    fn daemon(&self) -> &Running {
        self.daemon.as_ref().expect("running until dropped")
    }

    /// Runs `future` on the daemon's runtime, its logs captured.
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime
            .block_on(future.with_subscriber(self.dispatch.clone()))
    }

    /// The public listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.daemon().public_addr()
    }

    /// The private listener's address (`server.private_listen`).
    pub fn private_addr(&self) -> SocketAddr {
        self.daemon()
            .private_addr()
            .expect("test bug: no server.private_listen in the config")
    }

    /// Where the daemon's clock stands.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves the clock forward by `by`; returns once the rotator has made its
    /// pass at the new time and published what it stored.
    pub fn advance(&self, by: Duration) -> DateTime<Utc> {
        let now = self.clock.advance(by);
        self.wake();
        now
    }

    fn wake(&self) {
        assert!(
            self.block_on(self.daemon().wake()),
            "the rotator stopped\n{}",
            self.logs()
        );
    }

    /// Writes `config` to `jwkd.toml` and applies it as a SIGHUP does; returns
    /// the status line once the keyset was re-read and published.
    pub fn reload(&self, config: &str) -> String {
        self.dir.write("jwkd.toml", config);
        let config = Config::load(&self.dir.config_path(), self.clock.now())
            .unwrap_or_else(|err| panic!("test bug: the new config does not load: {err}"));
        self.block_on(self.daemon().reload(config))
            .unwrap_or_else(|| panic!("the daemon stopped during a reload\n{}", self.logs()))
    }

    /// The directory holding `jwkd.toml` (and, on the file store, `keyset.json`).
    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    /// The stored keys as `jwkd keys --json` lists them, at the daemon's clock.
    pub fn keys(&self) -> Vec<Key> {
        self.keys_of(jwkd::config::DEFAULT_ISSUER)
    }

    /// The stored keys of the issuer `name`, as `jwkd keys --issuer` lists them.
    pub fn keys_of(&self, name: &str) -> Vec<Key> {
        let store: Arc<dyn KeyStore> = match &self.memory {
            Some(memory) => memory.store(name),
            None => {
                let shared = self
                    .daemon()
                    .shared_of(name)
                    .unwrap_or_else(|| panic!("test bug: no issuer {name}"));
                let config = shared.config.load();
                self.block_on(jwkd::store::open(&config.store))
                    .expect("the store opens")
            }
        };
        let keyset = self
            .block_on(store.load())
            .unwrap_or_else(|err| panic!("the store does not load: {err}"))
            .keyset;
        let now = jwkd::timeline::decision_time(&keyset, self.now());
        let raw: Vec<serde_json::Value> = keyset
            .keys
            .iter()
            .map(|key| jwkd::timeline::summary_at(key, now))
            .collect();
        Key::parse_all(&raw).unwrap_or_else(|err| panic!("keys do not match the contract: {err}"))
    }

    /// Everything the daemon logged so far.
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// `GET path`; panics with the daemon's log if the request itself fails.
    pub fn get(&self, path: &str) -> Response {
        self.endpoint().get(path)
    }

    /// One request to the public listener.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.endpoint().request(method, path, headers, body)
    }

    /// One request to the private listener.
    pub fn request_private(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        Endpoint {
            addr: self.private_addr(),
            output: Box::new(|| self.logs()),
        }
        .request(method, path, headers, body)
    }

    /// The kids the JWKS lists now, after checking every entry against the contract.
    pub fn jwks_kids(&self, x5c: bool) -> BTreeSet<String> {
        self.endpoint().jwks_kids(x5c)
    }

    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            addr: self.addr(),
            output: Box::new(|| self.logs()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown();
            let stopped =
                self.block_on(async { tokio::time::timeout(STOP_TIMEOUT, daemon.join()).await });
            if stopped.is_err() && !std::thread::panicking() {
                panic!("the daemon did not stop within {STOP_TIMEOUT:?}");
            }
        }
    }
}

thread_local! {
    static LOG_GUARD: RefCell<Option<tracing::dispatcher::DefaultGuard>> = const { RefCell::new(None) };
}

/// Sends this runtime thread's logs to the test's buffer, until it ends.
fn log_on_this_thread(dispatch: &tracing::Dispatch) {
    let guard = tracing::dispatcher::set_default(dispatch);
    LOG_GUARD.with(|slot| *slot.borrow_mut() = Some(guard));
}

/// The daemon's log lines, as text.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}
