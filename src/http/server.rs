//! The connection loop: plain HTTP or TLS (rustls) in front of the warp filter,
//! HTTP/1.1 and HTTP/2, with graceful shutdown. warp 0.4 has no TLS of its own,
//! so the filter is served as a tower service through hyper-util.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::config::HttpLimits;
use crate::throttle::PeerAddr;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate that SIGHUP can replace without dropping connections.
pub struct Tls {
    resolver: Arc<CertResolver>,
    acceptor: TlsAcceptor,
}

#[derive(Debug)]
struct CertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.resolver.cert_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("cannot read the certificate {}: {err}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|err| format!("cannot read the private key {}: {err}", key_path.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(certs, key, &provider)
        .map_err(|err| format!("the certificate and key do not fit together: {err}"))
}

impl Tls {
    /// Loads the PEM pair and builds the acceptor.
    ///
    /// # Errors
    /// A message naming the file that could not be used.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Tls, String> {
        let certified = load_certified_key(cert_path, key_path)?;
        let resolver = Arc::new(CertResolver {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(certified),
        });
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("cannot configure TLS: {err}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Re-reads the certificate and key; on failure the old pair stays in use.
    ///
    /// # Errors
    /// Why the new pair was not taken.
    pub fn reload(&self) -> Result<(), String> {
        let certified = load_certified_key(&self.resolver.cert_path, &self.resolver.key_path)?;
        self.resolver.current.store(Arc::new(certified));
        Ok(())
    }
}

/// What a connection is doing, for its watchdog ([`idle_too_long`]): how many
/// requests are in flight, and since when (after it opened) it has had none.
///
/// This replaces hyper's header read timeout, which re-arms a timer for every
/// request (about 15% of JWKS throughput); the watchdog sleeps once per
/// timeout per connection instead. It also covers what hyper's timer misses:
/// a connection that never sends a byte (hyper-util reads to tell HTTP/1 from
/// HTTP/2 before any timeout runs) and idle HTTP/2 connections.
struct Activity {
    opened: tokio::time::Instant,
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let idle_since = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.idle_since_ms.store(idle_since, Ordering::Release);
        }
    }
}

/// Counts a request in flight for as long as its response future lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// Resolves once the connection has had no request in flight for `timeout`:
/// it is silent, idle between requests, or stuck sending a request's headers
/// (a request counts from the moment its headers are complete).
async fn idle_too_long(activity: &Activity, timeout: Duration) {
    loop {
        let deadline = if activity.in_flight.load(Ordering::Acquire) > 0 {
            tokio::time::Instant::now() + timeout
        } else {
            let idle_since = Duration::from_millis(activity.idle_since_ms.load(Ordering::Acquire));
            let deadline = activity.opened + idle_since + timeout;
            if deadline <= tokio::time::Instant::now() {
                return;
            }
            deadline
        };
        tokio::time::sleep_until(deadline).await;
    }
}

/// Puts the connection's peer into each request's extensions, where the
/// credential endpoints find it ([`PeerAddr`]) for throttling.
/// It also counts the requests in flight for the connection's watchdog.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: std::net::SocketAddr,
    activity: Arc<Activity>,
}

impl<S, B> tower_service::Service<http::Request<B>> for WithPeer<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Only requests that may carry credentials need the peer (extensions
        // allocate): the JWKS hot path stays as it was.
        if request.method() == http::Method::POST
            || request.headers().contains_key(http::header::AUTHORIZATION)
        {
            request.extensions_mut().insert(PeerAddr(self.peer));
        }
        Tracked {
            in_flight: InFlight::start(&self.activity),
            response: Box::pin(self.inner.call(request)),
        }
    }
}

/// A response future that counts as in flight until it is done or dropped.
struct Tracked<F> {
    response: Pin<Box<F>>,
    #[allow(dead_code)] // Held for its `Drop`.
    in_flight: InFlight,
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.response.as_mut().poll(cx)
    }
}

/// HTTP/2 streams one connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 64;

/// The connection builder with `limits` applied: the header size (`431`
/// beyond it), and HTTP/2's stream and header-list bounds. hyper's HTTP/2 keeps
/// its defaults against the rapid-reset pattern (pending-accept and
/// locally-errored resets). The header read timeout is the watchdog's
/// ([`idle_too_long`]), not hyper's: hyper's own is off.
fn connection_builder(limits: HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(limits.header_read_timeout * 6))
        .keep_alive_timeout(limits.header_read_timeout * 2);
    builder
}

/// Serves `filter` on `listener` (through `tls` when given) until `shutdown`
/// resolves; then stops accepting and waits for the connections in flight.
/// At most `limits.max_connections` connections are served at once; the next
/// is accepted when one ends.
pub async fn serve<F>(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    filter: F,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    F: crate::http::Served,
{
    let service = warp::service(filter);
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(connection_builder(limits));
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            // Never closed: acquiring cannot fail.
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            // Held while the connection lives.
            let _permit = permit;
            let activity = Activity::new();
            let service = hyper_util::service::TowerToHyperService::new(WithPeer {
                inner: service,
                peer,
                activity: Arc::clone(&activity),
            });
            let timeout = limits.header_read_timeout;
            let result = match tls {
                None => {
                    let connection =
                        watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                    tokio::select! {
                        result = connection => result,
                        () = idle_too_long(&activity, timeout) => return,
                    }
                }
                Some(tls) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => {
                                tracing::debug!(%err, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        };
                    let connection =
                        watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                    tokio::select! {
                        result = connection => result,
                        () = idle_too_long(&activity, timeout) => return,
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
