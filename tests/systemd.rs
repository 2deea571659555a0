//! The systemd service (CONTRACT §8): the unit checks out with `systemd-analyze`,
//! and the daemon speaks sd_notify(3) to a test-owned `NOTIFY_SOCKET`: `READY=1`
//! once the JWKS is served, `WATCHDOG=1` at half of `WATCHDOG_USEC`, `STOPPING=1`
//! on SIGTERM, then a graceful exit; SIGHUP reloads clients without dropping a
//! connection and refuses a broken config. Also: the journald log format, the
//! packaged config and the cargo-deb metadata.
//!
//! Signals go through `kill(1)`; the daemon runs under `sh -c 'exec ...'` so that
//! `WATCHDOG_PID` can be its own pid, as systemd sets it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::util::{
    self, CMD_TIMEOUT, LISTEN_TIMEOUT, Outcome, Response, TestDir, hash_secret, http, jwkd,
    replace_once, run_cmd,
};

/// The contract: SIGTERM to exit in at most this long.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read_repo_file(path: &str) -> String {
    std::fs::read_to_string(repo_file(path))
        .unwrap_or_else(|err| panic!("cannot read {path}: {err}"))
}

// ---------------------------------------------------------------------------
// The unit file

/// `systemd-analyze ARGS...`; panics with a hint when it is not installed.
fn systemd_analyze(args: &[&str]) -> Outcome {
    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!(
            "systemd-analyze is not installed: scripts/test installs it \
             (apt-get install -y systemd); these tests need it"
        );
    }
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(args)
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0")
        .stdin(Stdio::null());
    run_cmd(cmd, None, CMD_TIMEOUT)
}

/// The unit's `Key=value` assignments in order, without comments.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with(['#', ';', '[']))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
        .collect()
}

/// The unit with `/usr/bin/jwkd` replaced by the binary under test, in `dir`.
fn unit_for_test(dir: &TestDir) -> PathBuf {
    let unit = read_repo_file("systemd/jwkd.service");
    assert!(
        unit.contains("/usr/bin/jwkd "),
        "the unit should run /usr/bin/jwkd (where the package installs it):\n{unit}"
    );
    let path = dir.path().join("jwkd.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/bin/jwkd ",
            &format!("{} ", env!("CARGO_BIN_EXE_jwkd")),
        ),
    )
    .expect("write the unit");
    path
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = TestDir::new(util::SLOW_CONFIG);
    let unit = unit_for_test(&dir);
    let outcome = systemd_analyze(&["verify", "--man=no", &unit.to_string_lossy()]);
    outcome.assert_code(0);
    // Unknown keys and bad values only warn (exit code 0): any output is a failure.
    assert!(
        outcome.stderr.trim().is_empty() && outcome.stdout.trim().is_empty(),
        "systemd-analyze verify said something about the unit\n{outcome}"
    );
}

#[test]
fn unit_is_hardened_and_shaped_as_the_contract_says() {
    let dir = TestDir::new(util::SLOW_CONFIG);
    let unit = unit_for_test(&dir);
    let outcome = systemd_analyze(&[
        "security",
        "--offline=true",
        "--threshold=15",
        "--no-pager",
        &unit.to_string_lossy(),
    ]);
    let score: f64 = outcome
        .stdout
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for jwkd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in the output\n{outcome}"));
    assert!(score <= 1.5, "exposure {score} > 1.5\n{outcome}");
    outcome.assert_code(0);

    let text = read_repo_file("systemd/jwkd.service");
    let settings = unit_settings(&text);
    let expect = [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        (
            "ExecStartPre",
            "/usr/bin/jwkd check-config --config /etc/jwkd/jwkd.toml",
        ),
        (
            "ExecStart",
            "/usr/bin/jwkd serve --config /etc/jwkd/jwkd.toml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "jwkd"),
        ("ConfigurationDirectory", "jwkd"),
    ];
    for (key, value) in expect {
        assert_eq!(setting(&settings, key), [value], "{key}= in\n{text}");
    }
    assert_eq!(setting(&settings, "WatchdogSec").len(), 1, "WatchdogSec=");
    // The 10 s shutdown deadline must fit in systemd's stop timeout.
    let stop = setting(&settings, "TimeoutStopSec");
    let stop_secs: u64 = stop
        .first()
        .and_then(|value| value.strip_suffix('s'))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("TimeoutStopSec=<N>s expected, got {stop:?}"));
    assert!(
        stop_secs > STOP_DEADLINE.as_secs(),
        "TimeoutStopSec={stop_secs}s"
    );
    // It must still reach AWS and serve its port.
    for key in ["IPAddressDeny", "PrivateNetwork"] {
        assert!(
            setting(&settings, key).is_empty(),
            "{key}= would cut jwkd off the network"
        );
    }
    let families = setting(&settings, "RestrictAddressFamilies").join(" ");
    for family in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(
            families.split_whitespace().any(|f| f == family),
            "RestrictAddressFamilies must allow {family} (network, sd_notify, journal): {families}"
        );
    }
}

#[test]
fn packaged_config_is_the_reference_with_the_store_in_the_state_directory() {
    // Everything after the opening comment block must be config/jwkd.toml, except the path.
    fn body(text: &str) -> &str {
        let end = text.find("\n\n").expect("a blank line after the header");
        &text[end..]
    }
    let reference = read_repo_file("config/jwkd.toml");
    let packaged = read_repo_file("packaging/jwkd.toml");
    let expected = replace_once(
        body(&reference),
        "\npath = \"keyset.json\"\n",
        "\npath = \"/var/lib/jwkd/keyset.json\"\n",
    );
    assert!(
        body(&packaged) == expected,
        "packaging/jwkd.toml drifted from config/jwkd.toml\n---- expected ----\n{expected}\n\
         ---- got ----\n{}",
        body(&packaged)
    );

    // And it is valid: check-config passes once the absolute path points somewhere we own.
    let dir = TestDir::new(util::SLOW_CONFIG);
    dir.write(
        "jwkd.toml",
        replace_once(
            &packaged,
            "/var/lib/jwkd/keyset.json",
            &dir.store_path().to_string_lossy(),
        ),
    );
    dir.run("check-config", &[]).assert_code(0);
}

#[test]
fn cargo_deb_metadata_ships_binary_unit_and_config() {
    let manifest: toml::Table = read_repo_file("Cargo.toml")
        .parse()
        .expect("Cargo.toml is TOML");
    let deb = manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]");
    let assets: Vec<(String, String)> = deb["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|asset| {
            let parts = asset.as_array().expect("[source, dest, mode]");
            (
                parts[0].as_str().unwrap().to_owned(),
                parts[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (source, _) in &assets {
        if source.starts_with("target/release/") {
            continue;
        }
        if let Some((dir, suffix)) = source.split_once("/*") {
            // A glob such as packaging/man/*.1: it must match something.
            let matches = std::fs::read_dir(repo_file(dir))
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|entry| entry.file_name().to_string_lossy().ends_with(suffix))
                        .count()
                })
                .unwrap_or(0);
            assert!(matches > 0, "asset {source} matches no file");
        } else {
            assert!(repo_file(source).is_file(), "asset {source} does not exist");
        }
    }
    let dest_of = |source: &str| {
        assets
            .iter()
            .find(|(from, _)| from == source)
            .map(|(_, to)| to.as_str())
    };
    assert_eq!(dest_of("target/release/jwkd"), Some("usr/bin/"));
    // The path the unit's ExecStart reads.
    assert_eq!(dest_of("packaging/jwkd.toml"), Some("etc/jwkd/jwkd.toml"));
    // Completions where bash-completion, zsh and fish look, and the man pages.
    assert_eq!(
        dest_of("packaging/completions/jwkd.bash"),
        Some("usr/share/bash-completion/completions/jwkd")
    );
    assert_eq!(
        dest_of("packaging/completions/_jwkd"),
        Some("usr/share/zsh/vendor-completions/_jwkd")
    );
    assert_eq!(
        dest_of("packaging/completions/jwkd.fish"),
        Some("usr/share/fish/vendor_completions.d/jwkd.fish")
    );
    assert_eq!(dest_of("packaging/man/*.1"), Some("usr/share/man/man1/"));
    let units = deb["systemd-units"]["unit-scripts"]
        .as_str()
        .expect("systemd-units.unit-scripts");
    assert!(repo_file(units).join("jwkd.service").is_file());
    let scripts = deb["maintainer-scripts"]
        .as_str()
        .expect("maintainer-scripts");
    assert!(repo_file(scripts).is_dir());
}

// ---------------------------------------------------------------------------
// A daemon under a fake service manager

/// A datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = thread::spawn({
            let messages = Arc::clone(&messages);
            let stop = Arc::clone(&stop);
            move || {
                let mut buf = vec![0u8; 8192];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(len) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                        messages.lock().unwrap().push((Instant::now(), text));
                    }
                }
            }
        });
        NotifySocket {
            path,
            messages,
            stop,
            reader: Some(reader),
        }
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    fn shown(&self) -> String {
        self.all()
            .iter()
            .map(|(_, text)| format!("{text:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for a datagram after the first `skip` ones holding the line `line`;
    /// returns its index and arrival time.
    fn wait_for(&self, line: &str, skip: usize, timeout: Duration) -> Option<(usize, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .all()
                .iter()
                .enumerate()
                .skip(skip)
                .find(|(_, (_, text))| has_line(text, line))
                .map(|(idx, (at, _))| (idx, *at));
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|got| got == line)
}

/// `jwkd serve` as systemd would start it: `NOTIFY_SOCKET`, and optionally
/// `WATCHDOG_USEC` with `WATCHDOG_PID` = the daemon's own pid.
struct Service {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Service {
    fn start(
        dir: &TestDir,
        notify: &NotifySocket,
        watchdog: Option<Duration>,
        env: &[(&str, &str)],
        stderr: Option<std::fs::File>,
    ) -> Service {
        // Same environment policy as every other integration test.
        let template = jwkd();
        let mut cmd = Command::new("sh");
        for (key, value) in template.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd.arg("-c")
            .arg(r#"if [ -n "$JWKD_TEST_WATCHDOG_USEC" ]; then export WATCHDOG_USEC="$JWKD_TEST_WATCHDOG_USEC" WATCHDOG_PID=$$; fi; exec "$0" "$@""#)
            .arg(template.get_program())
            .arg("serve")
            .arg("--config")
            .arg(dir.config_path())
            .env("NOTIFY_SOCKET", &notify.path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(watchdog) = watchdog {
            cmd.env("JWKD_TEST_WATCHDOG_USEC", watchdog.as_micros().to_string());
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let file_stderr = stderr.is_some();
        match stderr {
            Some(file) => cmd.stderr(Stdio::from(file)),
            None => cmd.stderr(Stdio::piped()),
        };
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn {cmd:?}: {err}"));
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = vec![drain(child.stdout.take().unwrap(), Arc::clone(&output))];
        if !file_stderr {
            readers.push(drain(child.stderr.take().unwrap(), Arc::clone(&output)));
        }
        Service {
            child,
            output,
            readers,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        util::strip_ansi(&self.output.lock().unwrap())
    }

    /// `kill -SIGNAL <pid>`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// The address from `listening on http://ADDR`.
    fn addr(&self) -> SocketAddr {
        let output = self.output();
        let marker = "listening on http://";
        output
            .lines()
            .find_map(|line| line.split(marker).nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no `{marker}` line yet\n---- output ----\n{output}"))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
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
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for `READY=1`; panics with everything seen so far on timeout.
    fn wait_ready(&mut self, notify: &NotifySocket) -> (usize, Instant) {
        notify
            .wait_for("READY=1", 0, LISTEN_TIMEOUT)
            .unwrap_or_else(|| {
                panic!(
                    "no READY=1 within {LISTEN_TIMEOUT:?} (running: {})\n---- datagrams ----\n{}\n\
                     ---- output ----\n{}",
                    self.is_running(),
                    notify.shown(),
                    self.output()
                )
            })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(mut pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(len) => output
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..len])),
            }
        }
    })
}

// ---------------------------------------------------------------------------
// HTTP on a connection the test controls

/// An HTTP/1.1 connection kept open across requests.
struct Connection {
    stream: TcpStream,
    addr: SocketAddr,
}

impl Connection {
    fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        Connection { stream, addr }
    }

    /// The request head (keep-alive); `body_len` sets Content-Length for a POST.
    fn head(&self, method: &str, path: &str, headers: &[(&str, &str)], body_len: usize) -> String {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if method == "POST" {
            head.push_str(&format!("Content-Length: {body_len}\r\n"));
        }
        head.push_str("\r\n");
        head
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let head = self.head(method, path, headers, body.len());
        self.send(head.as_bytes())?;
        self.send(body)?;
        self.read_response()
    }

    /// Reads one response: the head, then a Content-Length or chunked body.
    fn read_response(&mut self) -> io::Result<Response> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} bytes of a response head",
                        raw.len()
                    ),
                ));
            }
            raw.push(byte[0]);
        }
        let head = String::from_utf8(raw).map_err(|_| bad("head is not UTF-8"))?;
        let mut lines = head.trim_end().split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        let body = if let Some(length) = header("content-length") {
            let length: usize = length.parse().map_err(|_| bad("bad content-length"))?;
            let mut body = vec![0u8; length];
            self.stream.read_exact(&mut body)?;
            body
        } else if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            loop {
                let mut size_line = Vec::new();
                while !size_line.ends_with(b"\r\n") {
                    self.stream.read_exact(&mut byte)?;
                    size_line.push(byte[0]);
                }
                let size_text = String::from_utf8_lossy(&size_line);
                let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap(), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                let mut chunk = vec![0u8; size + 2];
                self.stream.read_exact(&mut chunk)?;
                if size == 0 {
                    break body;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            Vec::new()
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

// ---------------------------------------------------------------------------
// Configs and token requests

/// [`util::SLOW_CONFIG`] with an issuer and a client per `(id, secret hash)`.
fn config_with_clients(clients: &[(&str, &str)]) -> String {
    let mut config = util::SLOW_CONFIG.to_owned();
    config.push_str("\n[issuer]\nissuer = \"https://auth.test.example\"\n");
    for (id, hash) in clients {
        config.push_str(&format!(
            "\n[[clients]]\nid = \"{id}\"\nsecret_hash = \"{hash}\"\naudiences = [\"payments\"]\n"
        ));
    }
    config
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

const TOKEN_BODY: &str = "grant_type=client_credentials&audience=payments";

fn token_headers(authorization: &str) -> [(&str, &str); 2] {
    [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", authorization),
    ]
}

fn token(addr: SocketAddr, id: &str, secret: &str) -> Response {
    let authorization = basic(id, secret);
    http(
        addr,
        "POST",
        "/oauth2/token",
        &token_headers(&authorization),
        TOKEN_BODY.as_bytes(),
    )
    .expect("token request")
}

fn assert_token(response: &Response, who: &str, output: &str) {
    assert_eq!(
        response.status, 200,
        "{who} should get a token\n{response}\n---- daemon output ----\n{output}"
    );
    assert!(
        response.json()["access_token"].is_string(),
        "{who}: no access_token\n{response}"
    );
}

// ---------------------------------------------------------------------------
// The daemon under sd_notify

#[test]
fn ready_after_the_jwks_is_served_watchdog_pings_and_a_graceful_stop() {
    let dir = TestDir::new(&config_with_clients(&[("svc", &hash_secret("svc-secret"))]));
    let notify = NotifySocket::bind(dir.path());
    let watchdog = Duration::from_secs(1);
    // JOURNAL_STREAM names some other stream: logs must stay in the terminal format.
    let mut service = Service::start(
        &dir,
        &notify,
        Some(watchdog),
        &[("JOURNAL_STREAM", "1:1")],
        None,
    );

    // READY=1: by then the listener is bound and the first JWKS is there.
    let (ready_idx, ready_at) = service.wait_ready(&notify);
    let addr = service.addr();
    let jwks = http(addr, "GET", "/.well-known/jwks.json", &[], b"").expect("JWKS");
    let kids = util::jwks_kids(&jwks, true).unwrap_or_else(|err| panic!("{err}\n{jwks}"));
    assert_eq!(kids.len(), 2, "current and next key\n{jwks}");
    let readyz = http(addr, "GET", "/readyz", &[], b"").expect("readyz");
    assert_eq!(readyz.status, 200, "{readyz}");
    let ready = &notify.all()[ready_idx].1;
    let status = ready
        .lines()
        .find_map(|line| line.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("READY=1 without STATUS=: {ready:?}"));
    assert!(
        status.contains("ES256 current ") && status.contains("next rotation "),
        "STATUS should name the current kid and the next rotation: {status}"
    );
    assert!(
        kids.iter().any(|kid| status.contains(kid.as_str())),
        "STATUS names none of {kids:?}: {status}"
    );
    assert!(
        !notify.all()[..ready_idx]
            .iter()
            .any(|(_, text)| has_line(text, "READY=1")),
        "READY=1 twice"
    );
    let output = service.output();
    let listening = output
        .lines()
        .find(|line| line.contains("listening on http://"))
        .unwrap();
    assert!(
        !listening.starts_with('<'),
        "journal format although stderr is not the journal: {listening}"
    );

    // WATCHDOG=1 every WATCHDOG_USEC / 2 = 500 ms: never a gap of a whole timeout.
    thread::sleep(Duration::from_millis(3200));
    let pings: Vec<Instant> = notify
        .all()
        .iter()
        .filter(|(_, text)| has_line(text, "WATCHDOG=1"))
        .map(|(at, _)| *at)
        .collect();
    assert!(
        (4..=9).contains(&pings.len()),
        "expected ~6 WATCHDOG=1 in 3.2 s at one per 500 ms, got {}\n{}",
        pings.len(),
        notify.shown()
    );
    let mut previous = ready_at;
    for at in &pings {
        let gap = at.saturating_duration_since(previous);
        assert!(
            gap < watchdog,
            "{gap:?} without WATCHDOG=1 (WATCHDOG_USEC is {watchdog:?})\n{}",
            notify.shown()
        );
        previous = *at;
    }

    // A token request in flight: head and half the body sent, the rest after SIGTERM.
    let authorization = basic("svc", "svc-secret");
    let mut in_flight = Connection::open(addr);
    let head = in_flight.head(
        "POST",
        "/oauth2/token",
        &token_headers(&authorization),
        TOKEN_BODY.len(),
    );
    in_flight.send(head.as_bytes()).unwrap();
    let (first, rest) = TOKEN_BODY.split_at(TOKEN_BODY.len() / 2);
    in_flight.send(first.as_bytes()).unwrap();
    // An idle keep-alive connection, which shutdown may simply close.
    let mut idle = Connection::open(addr);
    idle.request("GET", "/healthz", &[], b"")
        .expect("healthz on the idle connection");
    thread::sleep(Duration::from_millis(300));

    let before = notify.all().len();
    let term_at = Instant::now();
    service.signal("TERM");
    notify
        .wait_for("STOPPING=1", before, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no STOPPING=1 after SIGTERM\n{}", notify.shown()));

    // No new connections...
    let refused = util::poll(Duration::from_secs(5), || match TcpStream::connect_timeout(
        &addr,
        Duration::from_secs(1),
    ) {
        Err(_) => Ok(()),
        Ok(_) => Err("the listener still accepts connections after SIGTERM".to_owned()),
    });
    refused.unwrap_or_else(|err| panic!("{err}\n---- output ----\n{}", service.output()));
    // ... but the request in flight is finished.
    thread::sleep(Duration::from_millis(200));
    assert!(
        service.is_running(),
        "jwkd exited with a request in flight\n{}",
        service.output()
    );
    in_flight.send(rest.as_bytes()).unwrap();
    let response = in_flight
        .read_response()
        .unwrap_or_else(|err| panic!("in-flight request lost: {err}\n{}", service.output()));
    assert_token(&response, "the in-flight request", &service.output());

    let status = service
        .wait_exit(STOP_DEADLINE)
        .unwrap_or_else(|| panic!("still running {STOP_DEADLINE:?} after SIGTERM"));
    let took = term_at.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM\n{}",
        service.output()
    );
    assert!(took < STOP_DEADLINE, "took {took:?}");
    assert!(
        service.output().contains("shutting down"),
        "{}",
        service.output()
    );
}

#[test]
fn sighup_applies_a_new_client_list_without_dropping_connections() {
    let alpha = hash_secret("alpha-secret");
    let beta = hash_secret("beta-secret");
    let dir = TestDir::new(&config_with_clients(&[("alpha", &alpha)]));
    let notify = NotifySocket::bind(dir.path());
    let mut service = Service::start(&dir, &notify, None, &[], None);
    service.wait_ready(&notify);
    let addr = service.addr();

    let mut kept = Connection::open(addr);
    let first = kept.request("GET", "/healthz", &[], b"").expect("healthz");
    assert_eq!(first.status, 200, "{first}");
    assert_eq!(token(addr, "beta", "beta-secret").status, 401);

    dir.write(
        "jwkd.toml",
        config_with_clients(&[("alpha", &alpha), ("beta", &beta)]),
    );
    let before = notify.all().len();
    service.signal("HUP");
    let (reloading, _) = notify
        .wait_for("RELOADING=1", before, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no RELOADING=1 after SIGHUP\n{}", notify.shown()));
    notify
        .wait_for("READY=1", reloading + 1, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no READY=1 after the reload\n{}", notify.shown()));

    assert_token(
        &token(addr, "beta", "beta-secret"),
        "beta",
        &service.output(),
    );
    assert_token(
        &token(addr, "alpha", "alpha-secret"),
        "alpha",
        &service.output(),
    );
    // The connection opened before the reload still works, for the new client too.
    let authorization = basic("beta", "beta-secret");
    let again = kept
        .request(
            "POST",
            "/oauth2/token",
            &token_headers(&authorization),
            TOKEN_BODY.as_bytes(),
        )
        .unwrap_or_else(|err| {
            panic!(
                "keep-alive connection dropped by the reload: {err}\n{}",
                service.output()
            )
        });
    assert_token(&again, "beta on the old connection", &service.output());
    assert!(
        service.output().contains("configuration reloaded"),
        "{}",
        service.output()
    );

    service.signal("TERM");
    let status = service
        .wait_exit(STOP_DEADLINE)
        .expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", service.output());
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one_and_says_why() {
    let alpha = hash_secret("alpha-secret");
    let beta = hash_secret("beta-secret");
    let dir = TestDir::new(&config_with_clients(&[("alpha", &alpha)]));
    let notify = NotifySocket::bind(dir.path());
    let mut service = Service::start(&dir, &notify, None, &[], None);
    service.wait_ready(&notify);
    let addr = service.addr();
    let mut kept = Connection::open(addr);
    kept.request("GET", "/healthz", &[], b"").expect("healthz");

    // beta replaces alpha, but the schedule is nonsense: none of it may apply.
    let broken = replace_once(
        &config_with_clients(&[("beta", &beta)]),
        r#"rotation_schedule = "0 3 * * *""#,
        r#"rotation_schedule = "every other tuesday""#,
    );
    dir.write("jwkd.toml", broken);
    let before = notify.all().len();
    service.signal("HUP");
    let (reloading, _) = notify
        .wait_for("RELOADING=1", before, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no RELOADING=1 after SIGHUP\n{}", notify.shown()));
    notify
        .wait_for("READY=1", reloading + 1, Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "no READY=1 after a refused reload: systemd would stay in `reloading`\n{}",
                notify.shown()
            )
        });

    // The log line was written before READY=1, but our reader of the
    // daemon's stderr may not have it yet.
    let output = crate::util::poll(Duration::from_secs(5), || {
        let output = service.output();
        if output.contains("keys.rotation_schedule") {
            Ok(output)
        } else {
            Err(output)
        }
    })
    .unwrap_or_else(|output| output);
    let refusal = output
        .lines()
        .find(|line| line.contains("reload refused"))
        .unwrap_or_else(|| panic!("no `reload refused` in the log\n{output}"));
    assert!(
        refusal.contains(&dir.config_path().display().to_string())
            || output.contains("keys.rotation_schedule"),
        "the log should name the file and the key\n{output}"
    );
    assert!(
        output.contains("keys.rotation_schedule"),
        "the log should name the bad key\n{output}"
    );
    assert!(service.is_running(), "{output}");
    assert_token(
        &token(addr, "alpha", "alpha-secret"),
        "alpha (old config)",
        &output,
    );
    assert_eq!(
        token(addr, "beta", "beta-secret").status,
        401,
        "beta came from the refused config"
    );
    let still = kept
        .request("GET", "/.well-known/jwks.json", &[], b"")
        .expect("the keep-alive connection survives a refused reload");
    assert_eq!(still.status, 200, "{still}");

    service.signal("TERM");
    let status = service
        .wait_exit(STOP_DEADLINE)
        .expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", service.output());
}

// ---------------------------------------------------------------------------
// Logs under journald

/// A file to stand in for the journal stream, and its `JOURNAL_STREAM` value.
fn journal_file(dir: &TestDir) -> (PathBuf, std::fs::File, String) {
    let path = dir.path().join("journal.log");
    let file = std::fs::File::create(&path).expect("create the journal file");
    let meta = file.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    (path, file, stream)
}

/// Every line is `<N>` with a syslog level and carries no timestamp.
fn check_journal_lines(text: &str) {
    assert!(!text.trim().is_empty(), "nothing logged");
    for line in text.lines().filter(|line| !line.is_empty()) {
        let level = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .map(|(level, _)| level);
        assert!(
            matches!(level, Some("3" | "4" | "6" | "7")),
            "line without a syslog level prefix: {line:?}\n{text}"
        );
        let after = &line[3..];
        assert!(
            !after.starts_with(|c: char| c.is_ascii_digit()),
            "timestamp in a journal line: {line:?}"
        );
        for word in ["INFO", "WARN", "ERROR"] {
            assert!(
                !after.trim_start().starts_with(word),
                "level word duplicated: {line:?}"
            );
        }
    }
}

#[test]
fn logs_to_the_journal_carry_syslog_levels_and_no_timestamps() {
    let dir = TestDir::new(util::SLOW_CONFIG);
    let notify = NotifySocket::bind(dir.path());
    let (path, file, stream) = journal_file(&dir);
    let mut service = Service::start(
        &dir,
        &notify,
        None,
        &[("JOURNAL_STREAM", &stream)],
        Some(file),
    );
    service.wait_ready(&notify);
    service.signal("TERM");
    let status = service
        .wait_exit(STOP_DEADLINE)
        .expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&path).unwrap();
    check_journal_lines(&text);
    assert!(
        text.lines()
            .any(|line| line.starts_with("<6>") && line.contains("listening on http://")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("<4>") && line.contains("first key")),
        "the first-key warning at level 4\n{text}"
    );

    // A failing command: the error, every line of it, at level 3.
    dir.write(
        "bad.toml",
        "[keys]\nalgorithms = [\"XX999\"]\nrotation_schedule = \"never\"\n",
    );
    let (path, file, stream) = journal_file(&dir);
    let mut cmd = jwkd();
    cmd.arg("check-config")
        .arg("--config")
        .arg(dir.path().join("bad.toml"))
        .env("JOURNAL_STREAM", &stream)
        .stdout(Stdio::null())
        .stderr(Stdio::from(file));
    let status = cmd.status().expect("run check-config");
    assert_eq!(status.code(), Some(2));
    let text = std::fs::read_to_string(&path).unwrap();
    check_journal_lines(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "two problems, two lines\n{text}");
    assert!(
        lines
            .iter()
            .all(|line| line.starts_with("<3>error: config ")),
        "each problem at level 3, marked as an error\n{text}"
    );
}
