//! One `jwkd serve` replica on the AWS backend: spawned with the SDK's
//! environment (static test credentials, a region, no instance metadata), its
//! output drained into memory, its address taken from the `listening on` line
//! without blocking the caller, and SIGKILLed on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};

use crate::util::{jwkd, strip_ansi};

pub struct Replica {
    pub name: String,
    config: PathBuf,
    child: Child,
    addr: Option<SocketAddr>,
    addr_rx: mpsc::Receiver<SocketAddr>,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Replica {
    /// Spawns `jwkd serve --config CONFIG` and returns at once.
    pub fn spawn(name: &str, config: &Path) -> Replica {
        let mut cmd = jwkd();
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_SECRETS_MANAGER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn {cmd:?}: {err}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let readers = vec![
            drain(
                child.stderr.take().expect("stderr was piped"),
                Arc::clone(&output),
                addr_tx.clone(),
            ),
            drain(
                child.stdout.take().expect("stdout was piped"),
                Arc::clone(&output),
                addr_tx,
            ),
        ];
        Replica {
            name: name.to_owned(),
            config: config.to_owned(),
            child,
            addr: None,
            addr_rx,
            output,
            readers,
        }
    }

    /// The address once the replica has logged it; `None` while it starts.
    /// Panics (with its output) if it exited.
    pub fn addr(&mut self) -> Option<SocketAddr> {
        if self.addr.is_none()
            && let Ok(addr) = self.addr_rx.try_recv()
        {
            self.addr = Some(addr);
        }
        if self.addr.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            panic!(
                "replica {} (jwkd serve --config {}) exited ({status}) before listening\n{}",
                self.name,
                self.config.display(),
                self.output()
            );
        }
        self.addr
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything it printed so far, ANSI stripped.
    pub fn output(&self) -> String {
        strip_ansi(&self.output.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Replica {
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
