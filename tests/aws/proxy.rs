//! A TCP proxy between the replicas and the emulator that can take the store
//! away: [`Mode::Drop`] closes every connection as soon as it is accepted,
//! [`Mode::BlackHole`] accepts and never answers; or fail it in part
//! ([`Mode::FailWrites`], [`Mode::StallWrites`], [`Mode::Delay`]). Switching out of
//! [`Mode::Forward`] also cuts every live connection, so pooled keep-alive
//! connections die too. Restarting the emulator instead would lose its state.
//!
//! It also counts the Secrets Manager operations that pass through it (the
//! `X-Amz-Target` header of each request), which is how the test measures what a
//! rotation and a refresh cost.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Pass bytes both ways.
    Forward = 0,
    /// Accept, then close at once (the peer sees a reset or EOF).
    Drop = 1,
    /// Accept, then neither read nor answer (the peer's timeouts must fire).
    BlackHole = 2,
    /// Forward everything but the second step of a write
    /// (`UpdateSecretVersionStage`, after `PutSecretValue` went through),
    /// which gets a `500` as if Secrets Manager failed mid-write.
    FailWrites = 3,
    /// As [`Mode::FailWrites`], but the second step is never answered: the
    /// writer's timeouts must fire mid-write.
    StallWrites = 4,
    /// Forward everything, each request [`DELAY`] late: a slow network or an
    /// overloaded service.
    Delay = 5,
}

/// How late [`Mode::Delay`] passes each request on.
pub const DELAY: Duration = Duration::from_millis(1500);

/// Whether `mode` passes requests on (all but [`Mode::Drop`] and [`Mode::BlackHole`]).
fn forwards(mode: u8) -> bool {
    [
        Mode::Forward,
        Mode::FailWrites,
        Mode::StallWrites,
        Mode::Delay,
    ]
    .iter()
    .any(|forwarding| *forwarding as u8 == mode)
}

/// The answer of [`Mode::FailWrites`]: what Secrets Manager says on an internal error.
const INTERNAL_ERROR: &str = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: \
     application/x-amz-json-1.1\r\nContent-Length: 72\r\nConnection: close\r\n\r\n\
     {\"__type\":\"InternalServiceError\",\"Message\":\"injected by the test proxy\"}";

#[derive(Default)]
struct Shared {
    mode: AtomicU8,
    stop: AtomicBool,
    /// Connections closed at once in [`Mode::Drop`].
    dropped: AtomicU64,
    /// Every live socket (both sides of forwarded ones, held black-hole ones).
    live: Mutex<Vec<TcpStream>>,
    counts: Mutex<BTreeMap<String, u64>>,
}

/// A running proxy; stopped on drop.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(&listener, upstream, &shared))
        };
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: Mode) {
        let previous = self.shared.mode.swap(mode as u8, Ordering::SeqCst);
        if previous != mode as u8 {
            cut_all(&self.shared);
        }
    }

    /// Connections dropped so far in [`Mode::Drop`]: each is one attempt by the SDK.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Requests seen so far, by operation (`GetSecretValue`, ...).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.shared.counts.lock().expect("counts lock").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        cut_all(&self.shared);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn mode(shared: &Shared) -> u8 {
    shared.mode.load(Ordering::SeqCst)
}

fn cut_all(shared: &Shared) {
    for stream in shared.live.lock().expect("live lock").drain(..) {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn register(shared: &Shared, stream: &TcpStream) {
    if let Ok(clone) = stream.try_clone() {
        shared.live.lock().expect("live lock").push(clone);
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        let _ = client.set_nonblocking(false);
        match mode(shared) {
            m if m == Mode::Drop as u8 => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown(Shutdown::Both);
            }
            m if m == Mode::BlackHole as u8 => register(shared, &client),
            _ => {
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                register(shared, &client);
                register(shared, &server);
                let (Ok(client_reader), Ok(server_reader)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let counting = Arc::clone(shared);
                thread::spawn(move || pump(client_reader, server, Some(&counting)));
                thread::spawn(move || pump(server_reader, client, None));
            }
        }
    }
}

/// Copies `from` to `to` until either side closes or the proxy leaves Forward mode.
fn pump(mut from: TcpStream, mut to: TcpStream, counting: Option<&Arc<Shared>>) {
    let mut buf = [0u8; 16 * 1024];
    // The tail of the previous read, so a header split across reads is still seen.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(shared) = counting {
            let mode = mode(shared);
            if !forwards(mode) {
                break;
            }
            carry.extend_from_slice(&buf[..n]);
            let writes = count_targets(shared, &mut carry)
                .iter()
                .any(|operation| operation == "UpdateSecretVersionStage");
            if writes && mode == Mode::FailWrites as u8 {
                let _ = from.write_all(INTERNAL_ERROR.as_bytes());
                break;
            }
            if writes && mode == Mode::StallWrites as u8 {
                // The sockets stay open in `live` until the mode changes.
                return;
            }
            if mode == Mode::Delay as u8 {
                thread::sleep(DELAY);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Counts `x-amz-target: secretsmanager.<Operation>` lines in `carry` and drops
/// what was read, keeping an unfinished header line and a short tail (a header can
/// be split across two reads). Returns the operations found.
fn count_targets(shared: &Shared, carry: &mut Vec<u8>) -> Vec<String> {
    let mut found = Vec::new();
    const NEEDLE: &[u8] = b"x-amz-target: secretsmanager.";
    let lower: Vec<u8> = carry.iter().map(u8::to_ascii_lowercase).collect();
    let mut keep_from = carry.len().saturating_sub(NEEDLE.len() + 64);
    let mut start = 0;
    while let Some(pos) = find(&lower[start..], NEEDLE) {
        let at = start + pos;
        let name_start = at + NEEDLE.len();
        let Some(end) = find(&carry[name_start..], b"\r\n") else {
            keep_from = at;
            break;
        };
        let operation = String::from_utf8_lossy(&carry[name_start..name_start + end]).into_owned();
        *shared
            .counts
            .lock()
            .expect("counts lock")
            .entry(operation.clone())
            .or_default() += 1;
        found.push(operation);
        start = name_start + end;
        keep_from = keep_from.max(start);
    }
    carry.drain(..keep_from.min(carry.len()));
    found
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
