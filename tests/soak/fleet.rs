//! The processes of the soak: its own emulator (so stopping it disturbs no
//! other test), and the daemons, each restartable and with its own config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Daemon, jwkd};

/// `kill -SIGNAL PID`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// moto in server mode on a free loopback port, from the venv of
/// `JWKD_TEST_PYTHON`; killed on drop.
pub struct Emulator {
    child: Child,
    pub addr: SocketAddr,
}

impl Emulator {
    pub fn start() -> Emulator {
        let python = std::env::var_os("JWKD_TEST_PYTHON").unwrap_or_else(|| {
            panic!(
                "JWKD_TEST_PYTHON is not set: the soak needs a Python with moto and PyJWT; run \
                 ./scripts/test, which installs them into .venv, or set it to such a Python"
            )
        });
        let server = Path::new(&python).with_file_name("moto_server");
        assert!(
            server.exists(),
            "{} is missing: the soak starts its own emulator; ./scripts/test installs moto",
            server.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", server.display()));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while crate::util::http(addr, "GET", "/moto-api/", &[], b"").is_err() {
            assert!(Instant::now() < deadline, "moto did not start on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Emulator { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // A stopped process must be continued to die of SIGKILL promptly.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a daemon keeps its keysets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    SecretsManager,
    File,
}

/// One `jwkd serve`, restartable, with its config file.
pub struct Node {
    pub name: String,
    pub config: PathBuf,
    pub backend: Backend,
    /// The config it was started with, to restore after a bad one.
    pub good_config: String,
    daemon: Option<Daemon>,
    addr: Option<SocketAddr>,
    /// Peak RSS over the incarnations that ended.
    pub peak_rss_kib: u64,
    /// Warnings of keys stored short of their lead, in incarnations that ended.
    short_leads_before: usize,
}

/// The daemon's warning that it stored a key with less than its lead (a
/// store write, or decisions, that took part of it): `operation::update`.
const SHORT_LEAD_WARNING: &str = "short of its lead";

fn short_leads_in(output: &str) -> usize {
    output
        .lines()
        .filter(|line| line.contains(SHORT_LEAD_WARNING))
        .count()
}

impl Node {
    pub fn new(name: &str, config: PathBuf, text: String, backend: Backend) -> Node {
        std::fs::write(&config, &text).unwrap();
        let mut node = Node {
            name: name.to_owned(),
            config,
            backend,
            good_config: text,
            daemon: None,
            addr: None,
            peak_rss_kib: 0,
            short_leads_before: 0,
        };
        node.start();
        node
    }

    /// A `jwkd` command with this node's environment.
    pub fn command(&self) -> Command {
        let mut cmd = jwkd();
        if self.backend == Backend::SecretsManager {
            crate::aws::replica::with_test_credentials(&mut cmd);
        }
        cmd
    }

    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "{} is already running", self.name);
        self.daemon = Some(Daemon::spawn_command(self.command(), &self.config));
        self.addr = None;
    }

    /// The address once it listens; `None` while down or starting.
    pub fn addr(&mut self) -> Option<SocketAddr> {
        if self.addr.is_none() {
            let daemon = self.daemon.as_mut()?;
            if !daemon.running() {
                return None;
            }
            self.addr =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| daemon.try_addr()))
                    .ok()
                    .flatten();
        }
        self.addr
    }

    /// Waits until it listens and `/readyz` answers 200 (the [`Daemon`]
    /// helpers: they panic with its output after `timeout`).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let daemon = self.daemon.as_mut().expect("started");
        self.addr = Some(daemon.wait_listening(timeout));
        daemon.wait_ready(timeout);
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// `None` while it should run and does; its output if it exited unasked.
    pub fn exited(&mut self) -> Option<String> {
        let daemon = self.daemon.as_mut()?;
        if daemon.running() {
            return None;
        }
        let output = daemon.stderr_text();
        self.short_leads_before += short_leads_in(&output);
        self.daemon = None;
        self.addr = None;
        Some(output)
    }

    pub fn note_rss(&mut self) {
        if let Some(daemon) = &self.daemon
            && let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
            && let Some(kib) = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
    }

    /// How many times its daemons warned that a key was stored short of its
    /// lead, over every incarnation.
    pub fn short_leads(&self) -> usize {
        self.short_leads_before
            + self
                .daemon
                .as_ref()
                .map_or(0, |daemon| short_leads_in(&daemon.stderr_text()))
    }

    /// SIGKILL; the node is down until [`Node::start`].
    pub fn kill9(&mut self) {
        self.note_rss();
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill9();
            self.short_leads_before += short_leads_in(&daemon.stderr_text());
        }
        self.addr = None;
    }
}

#[cfg(test)]
mod tests {
    use super::short_leads_in;

    /// The warning as the daemon prints it (`operation::update`), among
    /// other lines.
    #[test]
    fn short_lead_warnings_are_counted() {
        let output = "\
<6>jwkd::rotator: rotated kid=a
<4>jwkd::operation: a key was stored 1000ms short of its lead of 3s: deciding and writing it took that long; verifiers that cached the key set before it may refuse its first tokens kid=b
<4>jwkd::operation: the decision is stale; deciding again
<4>jwkd::operation: a key was stored 20ms short of its lead of 7s: deciding and writing it took that long; verifiers that cached the key set before it may refuse its first tokens kid=c
";
        assert_eq!(short_leads_in(output), 2);
        assert_eq!(short_leads_in(""), 0);
    }
}
