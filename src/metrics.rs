//! Prometheus metrics (CONTRACT §6.7), kept with `prometheus-client`.
//!
//! Counters are bumped where things happen; the key gauges are computed from the
//! published keyset when `/metrics` is scraped, so they are never stale.

use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::clock::ClockView;
use crate::keyset::Keyset;
use crate::timeline::{self, KeyState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgLabel {
    alg: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// Every metric jwkd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    keys: Family<StateLabel, Gauge>,
    current_key_age: Family<AlgLabel, Gauge<f64, AtomicU64>>,
    clock_offset: Gauge<f64, AtomicU64>,
    clock_skew_exceeded: Gauge,
    /// Keys made by rotations (scheduled or requested).
    pub rotations: Counter,
    /// Rotation passes that could not store their result.
    pub rotation_failures: Counter,
    /// Failed store reads and writes.
    pub store_errors: Counter,
    /// Tokens signed by `/oauth2/token` and `/v1/sign`.
    pub tokens_issued: Counter,
    /// Credential checks refused because their source's allowance was spent.
    pub auth_throttled: Counter,
    http_requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jwkd");
        let keys = Family::<StateLabel, Gauge>::default();
        let current_key_age = Family::<AlgLabel, Gauge<f64, AtomicU64>>::default();
        let rotations = Counter::default();
        let rotation_failures = Counter::default();
        let store_errors = Counter::default();
        let tokens_issued = Counter::default();
        let auth_throttled = Counter::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        let clock_offset = Gauge::<f64, AtomicU64>::default();
        let clock_skew_exceeded = Gauge::default();
        registry.register(
            "clock_offset_seconds",
            "This host's clock minus the store's (Secrets Manager's Date, the file system's timestamps), as last measured",
            clock_offset.clone(),
        );
        registry.register(
            "clock_skew_exceeded",
            "1 while this host's clock is more than clock_skew from the store's or behind the stored keyset: no keyset writes",
            clock_skew_exceeded.clone(),
        );
        registry.register("keys", "Keys in the store by state", keys.clone());
        registry.register(
            "current_key_age_seconds",
            "Seconds since the current key of each family started signing",
            current_key_age.clone(),
        );
        registry.register("rotations", "Keys made by rotations", rotations.clone());
        registry.register(
            "rotation_failures",
            "Rotation passes whose result could not be stored",
            rotation_failures.clone(),
        );
        registry.register(
            "store_errors",
            "Failed keyset store operations",
            store_errors.clone(),
        );
        registry.register("tokens_issued", "Tokens signed", tokens_issued.clone());
        registry.register(
            "auth_throttled",
            "Client authentications refused with 429: their source's allowance of checks was spent",
            auth_throttled.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        Metrics {
            registry,
            keys,
            current_key_age,
            clock_offset,
            clock_skew_exceeded,
            rotations,
            rotation_failures,
            store_errors,
            tokens_issued,
            auth_throttled,
            http_requests,
        }
    }

    /// Counts one HTTP request.
    pub fn http_request(&self, route: &'static str, status: u16) {
        self.http_requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    /// The exposition text, with the key gauges computed for `keyset` at `now`
    /// and the clock gauges from `clock`.
    pub fn render_at(
        &self,
        keyset: &Keyset,
        families: &[crate::keys::Algorithm],
        clock: &ClockView,
        now: DateTime<Utc>,
    ) -> String {
        if let Some(offset) = clock.evidence.store_offset {
            self.clock_offset
                .set(offset.estimate().num_milliseconds() as f64 / 1000.0);
        }
        self.clock_skew_exceeded
            .set(i64::from(clock.skew.is_some()));
        let now = clock.time_at(now);
        for state in [
            KeyState::Next,
            KeyState::Current,
            KeyState::Retired,
            KeyState::Expired,
            KeyState::Revoked,
        ] {
            let count = keyset
                .keys
                .iter()
                .filter(|key| timeline::state_at(key, now) == state)
                .count();
            self.keys
                .get_or_create(&StateLabel {
                    state: state.name(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        for alg in families {
            if let Some(key) = timeline::current_at(keyset, *alg, now) {
                let age = (now - key.activates_at).num_milliseconds() as f64 / 1000.0;
                self.current_key_age
                    .get_or_create(&AlgLabel { alg: alg.name() })
                    .set(age);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_series_is_exported() {
        let metrics = Metrics::new();
        metrics.http_request("/healthz", 200);
        metrics.tokens_issued.inc();
        let mut keyset = crate::store::contract::keyset(&[crate::keys::Algorithm::Es256]);
        keyset.keys[0].activates_at = Utc::now() - chrono::Duration::minutes(1);
        let text = metrics.render_at(
            &keyset,
            &[crate::keys::Algorithm::Es256],
            &ClockView::default(),
            Utc::now(),
        );
        for series in [
            "jwkd_keys{state=\"current\"} 1",
            "jwkd_rotations_total 0",
            "jwkd_rotation_failures_total 0",
            "jwkd_store_errors_total 0",
            "jwkd_tokens_issued_total 1",
            "jwkd_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
            "jwkd_current_key_age_seconds{alg=\"ES256\"} 6",
            "jwkd_clock_skew_exceeded 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }
}
