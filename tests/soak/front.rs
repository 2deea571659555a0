//! A load balancer in front of a group of daemons, as a deployment puts one
//! in front of its replicas: each connection goes to the next healthy
//! upstream that accepts it. The soak's monitor marks upstreams healthy or
//! not (a running daemon whose JWKS answers), and the injector can stall the
//! front: while stalled it accepts connections and never answers, so the
//! verifiers behind it see their JWKS endpoint hang.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

#[derive(Default)]
struct Shared {
    /// The upstreams in rotation; `None` for a slot whose daemon is down.
    upstreams: Mutex<Vec<Option<SocketAddr>>>,
    next: AtomicUsize,
    stalled: AtomicBool,
    stop: AtomicBool,
    /// Sockets of live connections, cut when the front stalls or resumes.
    live: Mutex<Vec<TcpStream>>,
}

/// A running front; stopped on drop.
pub struct Front {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Front {
    /// Listens on a free loopback port with `slots` upstream slots, all empty.
    pub fn start(slots: usize) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the front");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("front address");
        let shared = Arc::new(Shared {
            upstreams: Mutex::new(vec![None; slots]),
            ..Shared::default()
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(&listener, &shared))
        };
        Front {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Puts `upstream` in `slot` (`None` takes the slot out of rotation).
    pub fn set(&self, slot: usize, upstream: Option<SocketAddr>) {
        self.shared.upstreams.lock().expect("upstreams lock")[slot] = upstream;
    }

    /// Stalls (or resumes) the front; either way live connections are cut.
    pub fn stall(&self, stalled: bool) {
        self.shared.stalled.store(stalled, Ordering::SeqCst);
        cut_all(&self.shared);
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        cut_all(&self.shared);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn cut_all(shared: &Shared) {
    for stream in shared.live.lock().expect("live lock").drain(..) {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn register(shared: &Shared, stream: &TcpStream) {
    if let Ok(clone) = stream.try_clone() {
        let mut live = shared.live.lock().expect("live lock");
        // Forget sockets that are already closed, so the list stays short.
        live.retain(|stream| stream.peer_addr().is_ok());
        live.push(clone);
    }
}

/// The next healthy upstream that accepts a connection, in round-robin order.
fn connect(shared: &Shared) -> Option<TcpStream> {
    let upstreams = shared.upstreams.lock().expect("upstreams lock").clone();
    let start = shared.next.fetch_add(1, Ordering::Relaxed);
    (0..upstreams.len())
        .filter_map(|offset| upstreams[(start + offset) % upstreams.len()])
        .find_map(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => continue,
        };
        let _ = client.set_nonblocking(false);
        if shared.stalled.load(Ordering::SeqCst) {
            // Held open, never answered, until the front resumes.
            register(shared, &client);
            continue;
        }
        let Some(server) = connect(shared) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        register(shared, &client);
        register(shared, &server);
        let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone())
        else {
            continue;
        };
        thread::spawn(move || pump(client_reader, server));
        thread::spawn(move || pump(server_reader, client));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
