//! Helpers shared by the integration tests.
//!
//! - [`TestDir`]: a temporary directory holding `jwkd.toml` and the file store.
//! - [`jwkd`]: a `Command` for the binary under test, with a clean environment.
//! - [`Daemon`]: a running `jwkd serve`, killed on drop.
//! - [`InProcess`]: the same daemon in this process, on a manual clock, for
//!   tests whose subject is the endpoints, the tokens or the key timeline.
//! - [`Endpoint`]: the request helpers both offer.
//! - [`http`]: a tiny blocking HTTP/1.1 client over `std::net` (one request per
//!   connection), enough for GET/HEAD/POST with custom headers.
//! - [`Key`] and [`check_jwk`]: strict readers for `keys --json` and JWKS entries,
//!   so every test checks the same contract shapes.
//!
//! Everything here fails loudly with the full command, exit code, stdout and
//! stderr, so a failing test says what the binary actually did.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde_json::Value;

mod config;
mod inprocess;
pub use config::{Client, TestConfig, TestIssuer};
pub use inprocess::InProcess;

/// How long any single CLI invocation may take before the test gives up.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the daemon may take to bind its listener.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Rotates every 2 s; a retired key lives 3 s. The next key must be published
/// `jwks_max_age + clock_skew + store.refresh_interval` = 1.5 s before it signs.
pub const FAST_CONFIG: &str = r#"[server]
listen = "127.0.0.1:0"

[keys]
algorithms = ["ES256"]
rotation_schedule = "*/2 * * * * *"
max_token_lifetime = "3s"
clock_skew = "0s"
jwks_max_age = "1s"
x5c = true

[store]
backend = "file"
path = "keyset.json"
refresh_interval = "500ms"
"#;

/// Rotates daily at 03:00 UTC; nothing rotates or expires while a test runs.
pub const SLOW_CONFIG: &str = r#"[server]
listen = "127.0.0.1:0"

[keys]
algorithms = ["ES256"]
rotation_schedule = "0 3 * * *"
max_token_lifetime = "1h"
clock_skew = "1m"
jwks_max_age = "5m"
x5c = true

[store]
backend = "file"
path = "keyset.json"
refresh_interval = "1s"
"#;

/// The name of the store file inside a [`TestDir`].
pub const STORE_FILE: &str = "keyset.json";

/// `config` with its one `algorithms = [...]` line replaced.
pub fn with_algorithms(config: &str, algorithms: &[&str]) -> String {
    let list = algorithms
        .iter()
        .map(|alg| format!("{alg:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    replace_once(
        config,
        r#"algorithms = ["ES256"]"#,
        &format!("algorithms = [{list}]"),
    )
}

/// Replaces `from` (which must occur exactly once) by `to`.
pub fn replace_once(config: &str, from: &str, to: &str) -> String {
    assert_eq!(
        config.matches(from).count(),
        1,
        "test bug: {from:?} must occur exactly once in\n{config}"
    );
    config.replacen(from, to, 1)
}

/// A command for the binary under test: `JWKD_LOG=info`, no `JWKD_CONFIG`, no colours.
///
/// `JWKD_TEST_BIN` names another binary to run instead of the one cargo
/// built: a long soak runs a copy, so rebuilding meanwhile cannot swap the
/// daemons it restarts for another version.
pub fn jwkd() -> Command {
    let bin =
        std::env::var_os("JWKD_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_jwkd").into());
    let mut cmd = Command::new(bin);
    cmd.env("JWKD_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("JWKD_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    cmd
}

/// The outcome of one finished (or timed out) command.
pub struct Outcome {
    pub what: String,
    /// `None` if the process was killed by a signal or timed out.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts the exit code, printing everything the command said on mismatch.
    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert!(
            self.code == Some(expected),
            "expected exit code {expected}, got {:?}\n{self}",
            self.code
        );
        self
    }

    /// Stderr without blank lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.what)?;
        writeln!(
            f,
            "exit code: {:?} (timed out: {})",
            self.code, self.timed_out
        )?;
        writeln!(f, "---- stdout ----\n{}", self.stdout)?;
        write!(f, "---- stderr ----\n{}\n----------------", self.stderr)
    }
}

/// Runs `cmd` to completion (killing it after `timeout`), feeding `stdin`.
pub fn run_cmd(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Outcome {
    let what = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("cannot spawn {what}: {err}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        // The child may exit without reading: a broken pipe is not our failure.
        let _ = pipe.write_all(input);
        drop(pipe);
    }
    let stdout = collect(child.stdout.take().expect("stdout was piped"));
    let stderr = collect(child.stderr.take().expect("stderr was piped"));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        what,
        code: status.code(),
        timed_out,
        stdout: strip_ansi(&stdout.join().expect("stdout reader")),
        stderr: strip_ansi(&stderr.join().expect("stderr reader")),
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Removes ANSI escape sequences (colours) from log output.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A fresh temporary directory holding `jwkd.toml`; the store is `keyset.json` beside it.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new(config: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("jwkd-it-")
            .tempdir()
            .expect("create temp dir");
        let test_dir = TestDir { dir };
        test_dir.write("jwkd.toml", config);
        test_dir
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("jwkd.toml")
    }

    pub fn store_path(&self) -> PathBuf {
        self.path().join(STORE_FILE)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.path().join(name), contents).expect("write test file");
    }

    /// `jwkd VERB --config <dir>/jwkd.toml ARGS...`.
    pub fn cmd(&self, verb: &str, args: &[&str]) -> Command {
        let mut cmd = jwkd();
        cmd.arg(verb)
            .arg("--config")
            .arg(self.config_path())
            .args(args);
        cmd
    }

    /// Runs `jwkd VERB --config ... ARGS...` to completion.
    pub fn run(&self, verb: &str, args: &[&str]) -> Outcome {
        run_cmd(self.cmd(verb, args), None, CMD_TIMEOUT)
    }

    /// `jwkd keys --json`, parsed; asserts exit code 0.
    pub fn keys_json(&self) -> Vec<Value> {
        keys_json(self.path())
    }

    /// `jwkd keys --json`, checked against the contract's shape.
    pub fn keys(&self) -> Vec<Key> {
        let raw = self.keys_json();
        Key::parse_all(&raw).unwrap_or_else(|err| {
            panic!(
                "`keys --json` does not match the contract: {err}\ngot: {}",
                serde_json::to_string_pretty(&raw).unwrap_or_default()
            )
        })
    }

    /// Starts `jwkd serve` on this directory's config and waits until it listens.
    pub fn serve(&self) -> Daemon {
        let mut daemon = Daemon::spawn(&self.config_path());
        daemon.wait_listening(LISTEN_TIMEOUT);
        daemon
    }

    /// The raw store file, if it exists.
    pub fn read_store(&self) -> Option<Vec<u8>> {
        match std::fs::read(self.store_path()) {
            Ok(bytes) => Some(bytes),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => panic!("cannot read {}: {err}", self.store_path().display()),
        }
    }
}

/// Runs `jwkd keys --json --config <dir>/jwkd.toml` and parses the array.
pub fn keys_json(dir: &Path) -> Vec<Value> {
    let mut cmd = jwkd();
    cmd.arg("keys")
        .arg("--json")
        .arg("--config")
        .arg(dir.join("jwkd.toml"));
    let outcome = run_cmd(cmd, None, CMD_TIMEOUT);
    outcome.assert_code(0);
    match serde_json::from_str::<Value>(&outcome.stdout) {
        Ok(Value::Array(keys)) => keys,
        Ok(other) => panic!("expected a JSON array from `keys --json`, got {other}\n{outcome}"),
        Err(err) => panic!("`keys --json` printed invalid JSON: {err}\n{outcome}"),
    }
}

/// Runs `jwkd hash-secret` with `secret` on stdin and returns the trimmed hash.
pub fn hash_secret(secret: &str) -> String {
    let mut cmd = jwkd();
    cmd.arg("hash-secret");
    let outcome = run_cmd(cmd, Some(secret.as_bytes()), CMD_TIMEOUT);
    outcome.assert_code(0);
    let hash = outcome.stdout.trim().to_owned();
    assert!(!hash.is_empty(), "hash-secret printed nothing\n{outcome}");
    hash
}

/// A hash of `secret` by `jwkd hash-secret`, made once per build of the binary
/// and kept in the target directory: an Argon2id hash takes a tenth of a
/// second, and a config with four clients needs four. For configs; a test of
/// the verb itself calls [`hash_secret`].
pub fn hash_secret_once(secret: &str) -> String {
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_jwkd")).expect("the jwkd binary");
    let built = binary
        .modified()
        .ok()
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let name = URL_SAFE_NO_PAD.encode(sha256(
        format!("{}:{}:{secret}", built.as_nanos(), binary.len()).as_bytes(),
    ));
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("secret-hashes");
    if let Ok(hash) = std::fs::read_to_string(cache.join(&name))
        && hash.starts_with("$argon2id$")
    {
        return hash;
    }
    let hash = hash_secret(secret);
    // Written aside and renamed, so a test running beside this one reads a whole hash or none.
    let _ = std::fs::create_dir_all(&cache);
    let aside = cache.join(format!("{name}.{}", std::process::id()));
    if std::fs::write(&aside, &hash).is_ok() {
        let _ = std::fs::rename(&aside, cache.join(&name));
    }
    hash
}

/// One entry of `jwkd keys --json` (CONTRACT §2, §4).
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
    pub deactivates_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub const KEY_FIELDS: [&str; 8] = [
    "kid",
    "alg",
    "state",
    "created_at",
    "activates_at",
    "deactivates_at",
    "expires_at",
    "revoked_at",
];

pub const STATES: [&str; 5] = ["next", "current", "retired", "expired", "revoked"];

impl Key {
    /// Parses every entry strictly: exactly the contract's fields, RFC 3339 UTC times.
    pub fn parse_all(raw: &[Value]) -> Result<Vec<Key>, String> {
        raw.iter().map(Key::parse).collect()
    }

    pub fn parse(raw: &Value) -> Result<Key, String> {
        let object = raw
            .as_object()
            .ok_or_else(|| format!("entry is not an object: {raw}"))?;
        let got: BTreeSet<&str> = object.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = KEY_FIELDS.into_iter().collect();
        if got != expected {
            return Err(format!(
                "fields differ: expected {expected:?}, got {got:?} in {raw}"
            ));
        }
        let string = |name: &str| -> Result<String, String> {
            object[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{name} is not a string in {raw}"))
        };
        let time = |name: &str| -> Result<Option<DateTime<Utc>>, String> {
            match &object[name] {
                Value::Null => Ok(None),
                Value::String(text) => parse_utc(text)
                    .map(Some)
                    .map_err(|err| format!("{name}: {err} in {raw}")),
                other => Err(format!("{name} is neither a string nor null: {other}")),
            }
        };
        let required = |name: &str| -> Result<DateTime<Utc>, String> {
            time(name)?.ok_or_else(|| format!("{name} is null in {raw}"))
        };
        let state = string("state")?;
        if !STATES.contains(&state.as_str()) {
            return Err(format!("unknown state {state:?} in {raw}"));
        }
        Ok(Key {
            kid: string("kid")?,
            alg: string("alg")?,
            state,
            created_at: required("created_at")?,
            activates_at: required("activates_at")?,
            deactivates_at: time("deactivates_at")?,
            expires_at: time("expires_at")?,
            revoked_at: time("revoked_at")?,
        })
    }

    /// The state CONTRACT §4 derives from the key's times at `now`.
    pub fn state_at(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else if self.deactivates_at.is_some_and(|at| at <= now) {
            "retired"
        } else if self.activates_at <= now {
            "current"
        } else {
            "next"
        }
    }

    /// Whether the reported `state` is what the times say at some instant in `[from, to]`.
    pub fn state_fits(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        let candidates = [self.state_at(from), self.state_at(to)];
        let revoked_and_expired = self.revoked_at.is_some()
            && self.state == "expired"
            && self.expires_at.is_some_and(|at| at <= to);
        candidates.contains(&self.state.as_str()) || revoked_and_expired
    }

    /// In state next, current or retired: what the JWKS must list.
    pub fn is_published(&self) -> bool {
        matches!(self.state.as_str(), "next" | "current" | "retired")
    }
}

/// Parses an RFC 3339 time and insists on a UTC offset.
pub fn parse_utc(text: &str) -> Result<DateTime<Utc>, String> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map_err(|err| format!("{text:?} is not RFC 3339: {err}"))?;
    if parsed.offset().local_minus_utc() != 0 {
        return Err(format!("{text:?} is not UTC"));
    }
    Ok(parsed.with_timezone(&Utc))
}

/// A running `jwkd serve`. Killed with SIGKILL on drop.
pub struct Daemon {
    child: Child,
    config: PathBuf,
    addr: Option<SocketAddr>,
    addr_rx: mpsc::Receiver<SocketAddr>,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Spawns `jwkd serve --config PATH` without waiting for anything.
    pub fn spawn(config: &Path) -> Daemon {
        Daemon::spawn_command(jwkd(), config)
    }

    /// Spawns `cmd` (a [`jwkd`] command with its own environment) as
    /// `serve --config PATH`, without waiting for anything.
    pub fn spawn_command(mut cmd: Command, config: &Path) -> Daemon {
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn {cmd:?}: {err}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr: ChildStderr = child.stderr.take().expect("stderr was piped");
        let stdout: ChildStdout = child.stdout.take().expect("stdout was piped");
        // The listening line is expected on stderr (logs), but stdout is watched and
        // drained too so that neither pipe can ever fill up and block the daemon.
        let readers = vec![
            drain(stderr, Arc::clone(&output), addr_tx.clone()),
            drain(stdout, Arc::clone(&output), addr_tx),
        ];
        Daemon {
            child,
            config: config.to_owned(),
            addr: None,
            addr_rx,
            output,
            readers,
        }
    }

    /// Waits for `listening on http://IP:PORT`; panics (with the daemon's output) on timeout or exit.
    pub fn wait_listening(&mut self, timeout: Duration) -> SocketAddr {
        if let Some(addr) = self.addr {
            return addr;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.addr_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => {
                    self.addr = Some(addr);
                    return addr;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait");
                    panic!(
                        "jwkd serve --config {} exited ({status}) before logging \
                         `listening on http://`\n---- output ----\n{}",
                        self.config.display(),
                        self.stderr_text()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Give the readers a moment to deliver a line printed just before exiting.
                if let Ok(addr) = self.addr_rx.recv_timeout(Duration::from_millis(200)) {
                    self.addr = Some(addr);
                    return addr;
                }
                panic!(
                    "jwkd serve --config {} exited ({status}) before logging \
                     `listening on http://`\n---- output ----\n{}",
                    self.config.display(),
                    self.stderr_text()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "jwkd serve did not log `listening on http://` within {timeout:?}\n\
                     ---- output ----\n{}",
                    self.stderr_text()
                );
            }
        }
    }

    /// The address once the daemon has logged it, without waiting; `None` while it
    /// starts. Panics (with its output) if it exited first.
    pub fn try_addr(&mut self) -> Option<SocketAddr> {
        if self.addr.is_none()
            && let Ok(addr) = self.addr_rx.try_recv()
        {
            self.addr = Some(addr);
        }
        if self.addr.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            panic!(
                "jwkd serve --config {} exited ({status}) before listening\n{}",
                self.config.display(),
                self.stderr_text()
            );
        }
        self.addr
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of `/proc/PID/status` in KiB (`VmHWM` is the peak resident set).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status:\n{status}"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
            .expect("test bug: Daemon::addr before wait_listening")
    }

    /// Everything the daemon printed so far (stderr and stdout, ANSI stripped).
    pub fn stderr_text(&self) -> String {
        strip_ansi(&self.output.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The first whole line (ended by a newline) of the daemon's output that
    /// contains `needle`, waiting up to `timeout` for it: a line may still be
    /// on its way when the daemon already answers.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        poll(timeout, || {
            let output = self.stderr_text();
            output
                .split_inclusive('\n')
                .find(|line| line.ends_with('\n') && line.contains(needle))
                .map(|line| line.trim_end().to_owned())
                .ok_or_else(|| output.clone())
        })
        .unwrap_or_else(|output| panic!("no line with {needle:?} in\n{output}"))
    }

    /// SIGKILL, then reap. Also waits for the output readers, so `stderr_text` is complete.
    pub fn kill9(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait after kill");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// Polls until the process exits, or `timeout` passes (`None`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path`; panics with the daemon's output if the request itself fails.
    pub fn get(&self, path: &str) -> Response {
        self.endpoint().get(path)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.endpoint().request(method, path, headers, body)
    }

    /// Polls `/readyz` until it answers 200; panics with the last answer after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        self.endpoint().wait_ready(timeout);
    }

    /// The kids the JWKS lists now, after checking every entry against the contract.
    pub fn jwks_kids(&self, x5c: bool) -> BTreeSet<String> {
        self.endpoint().jwks_kids(x5c)
    }

    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            addr: self.addr(),
            output: Box::new(|| self.stderr_text()),
        }
    }
}

/// The request helpers of a running daemon, for [`Daemon`] (a process) and
/// [`InProcess`] alike: where it listens, and its output for failure messages.
pub struct Endpoint<'a> {
    pub addr: SocketAddr,
    pub output: Box<dyn Fn() -> String + 'a>,
}

impl Endpoint<'_> {
    /// `GET path`; panics with the daemon's output if the request itself fails.
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// One request; panics with the daemon's output if the request itself fails.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http(self.addr, method, path, headers, body).unwrap_or_else(|err| {
            panic!(
                "{method} {path} failed: {err}\n---- daemon output ----\n{}",
                (self.output)()
            )
        })
    }

    /// Polls `/readyz` until it answers 200; panics with the last answer after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = http(self.addr, "GET", "/readyz", &[], b"");
            if matches!(&last, Ok(response) if response.status == 200) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "/readyz did not answer 200 within {timeout:?}; last answer: {}\n\
                     ---- daemon output ----\n{}",
                    match &last {
                        Ok(response) => response.to_string(),
                        Err(err) => err.to_string(),
                    },
                    (self.output)()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The kids the JWKS lists now, after checking every entry against the contract.
    pub fn jwks_kids(&self, x5c: bool) -> BTreeSet<String> {
        let response = self.get("/.well-known/jwks.json");
        jwks_kids(&response, x5c).unwrap_or_else(|err| panic!("{err}\n{response}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(
    pipe: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    addr_tx: mpsc::Sender<SocketAddr>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        let mut addr_tx = Some(addr_tx);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = strip_ansi(&String::from_utf8_lossy(&line));
            if let Some(addr) = parse_listening(&text)
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(addr);
            }
            output
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&text);
        }
    })
}

/// `... listening on http://127.0.0.1:PORT ...` -> the address.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    const MARKER: &str = "listening on http://";
    let start = line.find(MARKER)? + MARKER.len();
    let addr: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// An HTTP response as read off the wire.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics showing the response if it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("response body is not JSON: {err}\n{self}"))
    }

    /// Asserts `status` and a JSON error body `{"error": .., "error_description": ..}` (CONTRACT §6.7).
    #[track_caller]
    pub fn assert_json_error(&self, status: u16) {
        assert_eq!(self.status, status, "expected status {status}\n{self}");
        let content_type = self.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "expected an application/json error body, got content-type {content_type:?}\n{self}"
        );
        let body = self.json();
        for field in ["error", "error_description"] {
            assert!(
                body.get(field).is_some_and(Value::is_string),
                "expected a string {field:?} in the error body\n{self}"
            );
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP {}", self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        let text = self.text();
        let shown: String = text.chars().take(2000).collect();
        write!(f, "\n{shown}")?;
        if shown.len() < text.len() {
            write!(f, "... ({} bytes)", self.body.len())?;
        }
        Ok(())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server may answer (e.g. 413) and close before reading a large body: a failed
    // body write is not an error as long as a response arrives.
    let _ = stream.write_all(body);
    let _ = stream.flush();

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the response arrived (the server closed with unread request
            // bytes) still leaves a complete response in `raw`.
            Err(err) if !raw.is_empty() && err.kind() != io::ErrorKind::WouldBlock => break,
            Err(err) => return Err(err),
        }
    }
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head_only: bool) -> io::Result<Response> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of response head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let body = if head_only || status == 304 || status == 204 {
        rest.to_vec()
    } else if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().map_err(|_| bad("bad content-length"))?;
        if rest.len() < length {
            return Err(bad("body shorter than content-length"));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { body, ..response })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// Private JWK members (RFC 7518 §6): none may ever appear in a JWKS.
pub const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Checks one published JWK against CONTRACT §6.1 and returns its kid.
///
/// `kty`/`crv`/`alg` fit, `use: "sig"`, public parameters of the right size,
/// `kid` = RFC 7638 thumbprint, no private member, and with `x5c` a certificate
/// that holds this public key and whose SHA-256 is `x5t#S256`.
pub fn check_jwk(jwk: &Value, x5c: bool) -> Result<String, String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = member("kid").ok_or_else(|| format!("no string kid in {jwk}"))?;
    for private in PRIVATE_MEMBERS {
        if jwk.get(private).is_some() {
            return Err(format!("private member {private:?} published in {jwk}"));
        }
    }
    if member("use") != Some("sig") {
        return Err(format!("expected \"use\": \"sig\" in {jwk}"));
    }
    let b64 = |name: &str| -> Result<Vec<u8>, String> {
        let text = member(name).ok_or_else(|| format!("no string {name:?} in {jwk}"))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|err| format!("{name:?} is not base64url without padding ({err}) in {jwk}"))
    };
    let alg = member("alg").ok_or_else(|| format!("no string alg in {jwk}"))?;
    let kty = member("kty").ok_or_else(|| format!("no string kty in {jwk}"))?;
    let (thumbprint_input, raw_public_key) = match (alg, kty) {
        ("ES256" | "ES384", "EC") => {
            let (crv, size) = if alg == "ES256" {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            if member("crv") != Some(crv) {
                return Err(format!("expected crv {crv:?} for {alg} in {jwk}"));
            }
            let (x, y) = (b64("x")?, b64("y")?);
            if x.len() != size || y.len() != size {
                return Err(format!("x/y must be {size} bytes for {crv} in {jwk}"));
            }
            let input = format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                member("x").unwrap_or_default(),
                member("y").unwrap_or_default()
            );
            let mut point = vec![0x04];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (input, point)
        }
        ("EdDSA", "OKP") => {
            if member("crv") != Some("Ed25519") {
                return Err(format!("expected crv \"Ed25519\" for EdDSA in {jwk}"));
            }
            let x = b64("x")?;
            if x.len() != 32 {
                return Err(format!("x must be 32 bytes for Ed25519 in {jwk}"));
            }
            let input = format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                member("x").unwrap_or_default()
            );
            (input, x)
        }
        ("RS256", "RSA") => {
            let n = b64("n")?;
            b64("e")?;
            if n.len() < 256 {
                return Err(format!("RSA modulus below 2048 bits in {jwk}"));
            }
            let input = format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                member("e").unwrap_or_default(),
                member("n").unwrap_or_default()
            );
            (input, n)
        }
        _ => return Err(format!("alg {alg:?} does not fit kty {kty:?} in {jwk}")),
    };
    let thumbprint = URL_SAFE_NO_PAD.encode(sha256(thumbprint_input.as_bytes()));
    if kid != thumbprint {
        return Err(format!(
            "kid is not the RFC 7638 thumbprint: expected {thumbprint}, got {kid} in {jwk}"
        ));
    }
    if x5c {
        let chain = jwk
            .get("x5c")
            .and_then(Value::as_array)
            .filter(|chain| !chain.is_empty())
            .ok_or_else(|| format!("x5c = true but no non-empty x5c array in {jwk}"))?;
        let cert = chain[0]
            .as_str()
            .and_then(|text| STANDARD.decode(text).ok())
            .ok_or_else(|| format!("x5c[0] is not standard base64 DER in {jwk}"))?;
        if !contains(&cert, &raw_public_key) {
            return Err(format!(
                "x5c[0] does not hold this key's public key in {jwk}"
            ));
        }
        let x5t = URL_SAFE_NO_PAD.encode(sha256(&cert));
        if member("x5t#S256") != Some(x5t.as_str()) {
            return Err(format!(
                "expected \"x5t#S256\": {x5t:?} (SHA-256 of x5c[0]) in {jwk}"
            ));
        }
    }
    Ok(kid.to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Checks a JWKS response (status, JSON shape, every key) and returns its kids.
pub fn jwks_kids(response: &Response, x5c: bool) -> Result<BTreeSet<String>, String> {
    if response.status != 200 {
        return Err(format!(
            "JWKS: expected status 200, got {}",
            response.status
        ));
    }
    let document: Value = serde_json::from_slice(&response.body)
        .map_err(|err| format!("JWKS body is not JSON: {err}"))?;
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "JWKS has no \"keys\" array".to_owned())?;
    let mut kids = BTreeSet::new();
    for jwk in keys {
        let kid = check_jwk(jwk, x5c)?;
        if !kids.insert(kid.clone()) {
            return Err(format!("kid {kid} listed twice in the JWKS"));
        }
    }
    Ok(kids)
}

/// The JWKS entries, by kid (for tests that look at key material).
pub fn jwks_entries(response: &Response) -> Vec<Value> {
    response
        .json()
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Kids of `keys` in state next, current or retired.
pub fn published(keys: &[Key]) -> BTreeSet<String> {
    keys.iter()
        .filter(|key| key.is_published())
        .map(|key| key.kid.clone())
        .collect()
}

/// Checks that every algorithm family has exactly one current key; returns the problems.
pub fn one_current_per_family(keys: &[Key], algorithms: &[&str]) -> Result<(), String> {
    let mut problems = Vec::new();
    for alg in algorithms {
        let current: Vec<&str> = keys
            .iter()
            .filter(|key| key.alg == *alg && key.state == "current")
            .map(|key| key.kid.as_str())
            .collect();
        if current.len() != 1 {
            problems.push(format!(
                "family {alg}: expected exactly 1 current key, got {}: {current:?}",
                current.len()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Renders keys as a table for failure messages.
pub fn show_keys(keys: &[Key]) -> String {
    let fmt_time = |time: &Option<DateTime<Utc>>| match time {
        Some(time) => time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => "-".to_owned(),
    };
    keys.iter()
        .map(|key| {
            format!(
                "{} {:6} {:8} created {} activates {} deactivates {} expires {} revoked {}",
                key.kid,
                key.alg,
                key.state,
                fmt_time(&Some(key.created_at)),
                fmt_time(&Some(key.activates_at)),
                fmt_time(&key.deactivates_at),
                fmt_time(&key.expires_at),
                fmt_time(&key.revoked_at),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `check` every 100 ms until it returns `Ok`, or returns the last `Err` after `timeout`.
pub fn poll<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Unix permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("stat {}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Checks the raw store document: JSON `{"format": 1, "keys": [...]}` with kid/alg per key.
pub fn check_store_document(bytes: &[u8]) -> Result<BTreeSet<String>, String> {
    let document: Value = serde_json::from_slice(bytes).map_err(|err| {
        format!(
            "store is not JSON ({err}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        )
    })?;
    if document.get("format") != Some(&Value::from(1)) {
        return Err(format!(
            "store: expected \"format\": 1, got {:?}",
            document.get("format")
        ));
    }
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "store has no \"keys\" array".to_owned())?;
    keys.iter()
        .map(|key| {
            for field in ["kid", "alg"] {
                if !key.get(field).is_some_and(Value::is_string) {
                    return Err(format!("store key without a string {field:?}"));
                }
            }
            Ok(key["kid"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}
