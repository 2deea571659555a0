//! Throttling of full credential checks per source address.
//!
//! Every credential check that is not the remembered fast path costs an Argon2
//! hash and gives a guesser one try, so each source address gets an allowance
//! of them per minute ([`Throttle::take`]); beyond it the answer is `429` with
//! `Retry-After`, before anything is hashed. A client whose secret is
//! remembered is never throttled, so a guesser cannot lock the real client out,
//! from its own addresses or any other. IPv6 sources count per /64, the block
//! one host usually holds.
//!
//! Guessing one client's secret from many addresses is bounded too: a
//! configured client id has its own allowance ([`Throttle::take_for_client`])
//! for checks from addresses it has never authenticated from. The addresses it
//! has succeeded from are remembered, so the real client is never locked out
//! from its own addresses, even when it must be checked in full again (after
//! a restart or a reload).
//!
//! The source is the socket's peer, or, when the peer is a configured trusted
//! proxy, the right-most `X-Forwarded-For` address that is not one.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// A keyed allowance on `std::time::Instant`. Not governor's default clock
/// (quanta's TSC clock): making the first one calibrates the TSC against the
/// monotonic clock by busy-waiting, 0.5 ms and up to 200 ms on a loaded
/// machine, on the path to READY=1; reading `Instant` costs nanoseconds, and
/// is read once per full check.
type Keyed<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

fn keyed<K: Clone + std::hash::Hash + Eq>(quota: Quota) -> Keyed<K> {
    RateLimiter::new(quota, DefaultKeyedStateStore::default(), MonotonicClock)
}

/// The peer of a connection, put into each request's extensions by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The per-source allowance of full credential checks.
pub struct Throttle {
    checks: Keyed<IpAddr>,
    per_client: Keyed<String>,
    /// Per client id, the sources it has authenticated from.
    known: Mutex<HashMap<String, HashSet<IpAddr>>>,
    logs: Keyed<(Topic, IpAddr)>,
    clock: MonotonicClock,
    taken: AtomicU64,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("sources", &self.checks.len())
            .finish_non_exhaustive()
    }
}

/// What a rate-limited log line is about: each topic has its own allowance
/// per source, so a source's failed checks do not hide that it is throttled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// The source ran out of its allowance of checks.
    Throttled,
    /// A check from the source failed.
    Failed,
}

/// How often the state of sources that went quiet is dropped (in checks).
const TRIM_EVERY: u64 = 1024;

/// The most sources remembered per client id; beyond it the oldest are forgotten
/// all at once (they only lose their exemption from the per-client allowance).
const KNOWN_SOURCES_PER_CLIENT: usize = 1024;

impl Throttle {
    /// `per_minute` full checks per source, and `per_client_per_minute` per
    /// client id from sources it never authenticated from.
    pub fn new(per_minute: NonZeroU32, per_client_per_minute: NonZeroU32) -> Throttle {
        Throttle {
            checks: keyed(Quota::per_minute(per_minute)),
            per_client: keyed(Quota::per_minute(per_client_per_minute)),
            known: Mutex::new(HashMap::new()),
            logs: keyed(Quota::per_minute(NonZeroU32::MIN)),
            clock: MonotonicClock,
            taken: AtomicU64::new(0),
        }
    }

    /// Takes one full check from `source`'s allowance.
    ///
    /// # Errors
    /// How long until the source may try again, when the allowance is spent.
    pub fn take(&self, source: IpAddr) -> Result<(), Duration> {
        if self.taken.fetch_add(1, Ordering::Relaxed) % TRIM_EVERY == TRIM_EVERY - 1 {
            self.checks.retain_recent();
            self.logs.retain_recent();
        }
        self.checks
            .check_key(&bucket(source))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Takes one full check of `client_id` from `source`: free from a source it
    /// has authenticated from, else from the client id's own allowance.
    ///
    /// # Errors
    /// How long until `client_id` may be tried from new sources again.
    pub fn take_for_client(&self, client_id: &str, source: IpAddr) -> Result<(), Duration> {
        if self.is_known(client_id, source) {
            return Ok(());
        }
        self.per_client
            .check_key(&client_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Remembers that `client_id` authenticated from `source`.
    pub fn succeeded(&self, client_id: &str, source: IpAddr) {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sources = known.entry(client_id.to_owned()).or_default();
        if sources.len() >= KNOWN_SOURCES_PER_CLIENT {
            sources.clear();
        }
        sources.insert(bucket(source));
    }

    fn is_known(&self, client_id: &str, source: IpAddr) -> bool {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(client_id)
            .is_some_and(|sources| sources.contains(&bucket(source)))
    }

    /// Whether to log about `source` now: at most once a minute per topic.
    pub fn should_log(&self, topic: Topic, source: IpAddr) -> bool {
        self.logs.check_key(&(topic, bucket(source))).is_ok()
    }
}

/// The key a source counts under: the address, or its /64 for IPv6.
fn bucket(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

/// The source of a request: the peer, or behind a trusted proxy the
/// right-most forwarded address that is not a trusted proxy itself.
pub fn source(
    peer: Option<PeerAddr>,
    forwarded_for: Option<&str>,
    trusted_proxies: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?.0.ip();
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let forwarded = forwarded_for.and_then(|header| {
        header
            .rsplit(',')
            .map(str::trim)
            .map(|entry| entry.parse::<IpAddr>().ok())
            .take_while(Option::is_some)
            .flatten()
            .find(|address| !trusted_proxies.contains(address))
    });
    Some(forwarded.unwrap_or(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_has_its_own_allowance_and_ipv6_counts_per_64() {
        let throttle = Throttle::new(NonZeroU32::new(3).unwrap(), NonZeroU32::MAX);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            throttle.take(one).unwrap();
        }
        let wait = throttle.take(one).unwrap_err();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        throttle.take(two).unwrap();
        let host_a: IpAddr = "2001:db8:1:2::a".parse().unwrap();
        let host_b: IpAddr = "2001:db8:1:2:ffff::b".parse().unwrap();
        for _ in 0..3 {
            throttle.take(host_a).unwrap();
        }
        assert!(throttle.take(host_b).is_err(), "one /64 is one source");
        assert!(throttle.should_log(Topic::Throttled, one));
        assert!(!throttle.should_log(Topic::Throttled, one));
        assert!(
            throttle.should_log(Topic::Failed, one),
            "a topic of its own"
        );
        assert!(!throttle.should_log(Topic::Failed, one));
        assert!(
            throttle.should_log(Topic::Failed, two),
            "a source of its own"
        );
    }

    #[test]
    fn a_client_id_tried_from_many_addresses_runs_out_but_not_from_its_own() {
        let throttle = Throttle::new(NonZeroU32::MAX, NonZeroU32::new(3).unwrap());
        let home: IpAddr = "192.0.2.10".parse().unwrap();
        // Its first check from home is from a new address too: one of three.
        throttle.take_for_client("orders", home).unwrap();
        throttle.succeeded("orders", home);
        for n in 1..=2u8 {
            throttle
                .take_for_client("orders", IpAddr::from([198, 51, 100, n]))
                .unwrap();
        }
        assert!(
            throttle
                .take_for_client("orders", IpAddr::from([198, 51, 100, 3]))
                .is_err()
        );
        // Its own address is never refused, and other clients are not affected.
        for _ in 0..10 {
            throttle.take_for_client("orders", home).unwrap();
        }
        throttle
            .take_for_client("billing", IpAddr::from([198, 51, 100, 3]))
            .unwrap();
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let peer = |ip: IpAddr| Some(PeerAddr(SocketAddr::new(ip, 4000)));
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        // Not from a trusted proxy: the header is the peer's word, ignored.
        assert_eq!(
            source(peer(stranger), Some("203.0.113.7"), &[proxy]),
            Some(stranger)
        );
        // From the proxy: the right-most address the proxy did not add itself.
        assert_eq!(
            source(
                peer(proxy),
                Some("1.2.3.4, 203.0.113.7, 10.0.0.5"),
                &[proxy]
            ),
            Some(client)
        );
        // A garbled header: the proxy is the source.
        assert_eq!(source(peer(proxy), Some("nonsense"), &[proxy]), Some(proxy));
        assert_eq!(source(None, None, &[]), None);
    }
}
