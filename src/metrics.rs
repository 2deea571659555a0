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

/// The `issuer` label of an issuer's series: none for the default issuer (so
/// a daemon with one issuer exports the series it always did), `issuer="NAME"`
/// for an `[[issuers]]` entry; none either for the daemon's own endpoints.
type IssuerLabel = Vec<(&'static str, String)>;

fn issuer_label(issuer: &str) -> IssuerLabel {
    if issuer.is_empty() || issuer == crate::config::DEFAULT_ISSUER {
        Vec::new()
    } else {
        vec![("issuer", issuer.to_owned())]
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    #[prometheus(flatten)]
    issuer: IssuerLabel,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgLabel {
    #[prometheus(flatten)]
    issuer: IssuerLabel,
    alg: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    #[prometheus(flatten)]
    issuer: IssuerLabel,
    route: &'static str,
    status: u16,
}

/// Every metric jwkd exports; an `[[issuers]]` entry's series carry its
/// `issuer` label. One per daemon; each issuer counts through its own
/// [`IssuerMetrics`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    keys: Family<StateLabel, Gauge>,
    current_key_age: Family<AlgLabel, Gauge<f64, AtomicU64>>,
    clock_offset: Family<IssuerLabel, Gauge<f64, AtomicU64>>,
    clock_skew_exceeded: Family<IssuerLabel, Gauge>,
    rotations: Family<IssuerLabel, Counter>,
    rotation_failures: Family<IssuerLabel, Counter>,
    store_errors: Family<IssuerLabel, Counter>,
    tokens_issued: Family<IssuerLabel, Counter>,
    auth_throttled: Family<IssuerLabel, Counter>,
    http_requests: Family<RequestLabels, Counter>,
    kms_signing: Family<IssuerLabel, Gauge>,
    kms_keys_made: Family<IssuerLabel, Gauge>,
    kms_keys_retired: Family<IssuerLabel, Gauge>,
}

/// One issuer's counters: the series of [`Metrics`] with its `issuer` label.
#[derive(Clone, Debug)]
pub struct IssuerMetrics {
    /// Keys made by rotations (scheduled or requested).
    pub rotations: Counter,
    /// Rotation passes that could not store their result.
    pub rotation_failures: Counter,
    /// Failed store reads and writes.
    pub store_errors: Counter,
    /// Tokens signed by the token endpoint and `/v1/sign`.
    pub tokens_issued: Counter,
    /// Credential checks refused because their source's allowance was spent.
    pub auth_throttled: Counter,
}

/// What the key and clock gauges of one issuer are computed from at a scrape.
#[derive(Clone, Copy, Debug)]
pub struct IssuerGauges<'a> {
    /// The issuer's name (the `issuer` label).
    pub issuer: &'a str,
    /// Its published keyset.
    pub keyset: &'a Keyset,
    /// Its configured families.
    pub families: &'a [crate::keys::Algorithm],
    /// How its clock stood against its store.
    pub clock: &'a ClockView,
    /// Under KMS custody: whether KMS signs, and the KMS keys this daemon
    /// made and retired since it started.
    pub kms: Option<KmsGauges>,
}

/// The KMS series of an issuer under KMS custody.
#[derive(Clone, Copy, Debug)]
pub struct KmsGauges {
    /// The last signature or probe succeeded.
    pub signing: bool,
    /// KMS keys made since start.
    pub made: u64,
    /// KMS keys disabled and scheduled for deletion since start.
    pub retired: u64,
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
        let metrics = Metrics {
            registry: Registry::default(),
            keys: Family::default(),
            current_key_age: Family::default(),
            clock_offset: Family::default(),
            clock_skew_exceeded: Family::default(),
            rotations: Family::default(),
            rotation_failures: Family::default(),
            store_errors: Family::default(),
            tokens_issued: Family::default(),
            auth_throttled: Family::default(),
            http_requests: Family::default(),
            kms_signing: Family::default(),
            kms_keys_made: Family::default(),
            kms_keys_retired: Family::default(),
        };
        registry.register(
            "clock_offset_seconds",
            "This host's clock minus the store's (Secrets Manager's Date, the file system's timestamps), as last measured",
            metrics.clock_offset.clone(),
        );
        registry.register(
            "clock_skew_exceeded",
            "1 while this host's clock is more than clock_skew from the store's or behind the stored keyset: no keyset writes",
            metrics.clock_skew_exceeded.clone(),
        );
        registry.register("keys", "Keys in the store by state", metrics.keys.clone());
        registry.register(
            "current_key_age_seconds",
            "Seconds since the current key of each family started signing",
            metrics.current_key_age.clone(),
        );
        registry.register(
            "rotations",
            "Keys made by rotations",
            metrics.rotations.clone(),
        );
        registry.register(
            "rotation_failures",
            "Rotation passes whose result could not be stored",
            metrics.rotation_failures.clone(),
        );
        registry.register(
            "store_errors",
            "Failed keyset store operations",
            metrics.store_errors.clone(),
        );
        registry.register(
            "tokens_issued",
            "Tokens signed",
            metrics.tokens_issued.clone(),
        );
        registry.register(
            "auth_throttled",
            "Client authentications refused with 429: their source's allowance of checks was spent",
            metrics.auth_throttled.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by issuer, route and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "kms_signing",
            "Issuers with keys.custody = \"kms\": 1 while KMS signs, 0 after a failed signature until one succeeds",
            metrics.kms_signing.clone(),
        );
        registry.register(
            "kms_keys_made",
            "Issuers with keys.custody = \"kms\": KMS keys this daemon made since it started",
            metrics.kms_keys_made.clone(),
        );
        registry.register(
            "kms_keys_retired",
            "Issuers with keys.custody = \"kms\": KMS keys this daemon disabled and scheduled for deletion since it started",
            metrics.kms_keys_retired.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The counters of the issuer named `issuer`; its series exist (at 0) from now on.
    pub fn for_issuer(&self, issuer: &str) -> IssuerMetrics {
        let label = issuer_label(issuer);
        let counter = |family: &Family<IssuerLabel, Counter>| family.get_or_create(&label).clone();
        IssuerMetrics {
            rotations: counter(&self.rotations),
            rotation_failures: counter(&self.rotation_failures),
            store_errors: counter(&self.store_errors),
            tokens_issued: counter(&self.tokens_issued),
            auth_throttled: counter(&self.auth_throttled),
        }
    }

    /// Counts one HTTP request to `route` of `issuer` (empty for the daemon's own endpoints).
    pub fn http_request(&self, issuer: &str, route: &'static str, status: u16) {
        self.http_requests
            .get_or_create(&RequestLabels {
                issuer: issuer_label(issuer),
                route,
                status,
            })
            .inc();
    }

    /// The exposition text, with the key and clock gauges of each issuer
    /// computed at `now`.
    pub fn render_at(&self, issuers: &[IssuerGauges<'_>], now: DateTime<Utc>) -> String {
        for gauges in issuers {
            let label = issuer_label(gauges.issuer);
            if let Some(offset) = gauges.clock.evidence.store_offset {
                self.clock_offset
                    .get_or_create(&label)
                    .set(offset.estimate().num_milliseconds() as f64 / 1000.0);
            }
            self.clock_skew_exceeded
                .get_or_create(&label)
                .set(i64::from(gauges.clock.skew.is_some()));
            if let Some(kms) = gauges.kms {
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                self.kms_signing
                    .get_or_create(&label)
                    .set(i64::from(kms.signing));
                self.kms_keys_made
                    .get_or_create(&label)
                    .set(count(kms.made));
                self.kms_keys_retired
                    .get_or_create(&label)
                    .set(count(kms.retired));
            }
            let now = gauges.clock.time_at(now);
            for state in [
                KeyState::Next,
                KeyState::Current,
                KeyState::Retired,
                KeyState::Expired,
                KeyState::Revoked,
            ] {
                let count = gauges
                    .keyset
                    .keys
                    .iter()
                    .filter(|key| timeline::state_at(key, now) == state)
                    .count();
                self.keys
                    .get_or_create(&StateLabel {
                        issuer: label.clone(),
                        state: state.name(),
                    })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            for alg in gauges.families {
                if let Some(key) = timeline::current_at(gauges.keyset, *alg, now) {
                    let age = (now - key.activates_at).num_milliseconds() as f64 / 1000.0;
                    self.current_key_age
                        .get_or_create(&AlgLabel {
                            issuer: label.clone(),
                            alg: alg.name(),
                        })
                        .set(age);
                }
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
    fn every_contract_series_is_exported_per_issuer() {
        let metrics = Metrics::new();
        metrics.http_request("", "/healthz", 200);
        metrics.http_request("billing", "/.well-known/jwks.json", 200);
        let default = metrics.for_issuer("default");
        let billing = metrics.for_issuer("billing");
        default.tokens_issued.inc();
        billing.rotations.inc_by(2);
        let now = crate::config::test_time();
        let mut keyset = crate::store::contract::keyset(&[crate::keys::Algorithm::Es256]);
        keyset.keys[0].activates_at = now - chrono::Duration::seconds(6);
        let clock = ClockView::default();
        let text = metrics.render_at(
            &[
                IssuerGauges {
                    issuer: "default",
                    keyset: &keyset,
                    families: &[crate::keys::Algorithm::Es256],
                    clock: &clock,
                    kms: None,
                },
                IssuerGauges {
                    issuer: "billing",
                    keyset: &Keyset::default(),
                    families: &[crate::keys::Algorithm::Es384],
                    clock: &clock,
                    kms: Some(KmsGauges {
                        signing: false,
                        made: 4,
                        retired: 1,
                    }),
                },
            ],
            now,
        );
        for series in [
            // The default issuer's series are the ones a one-issuer daemon always exported.
            "\njwkd_keys{state=\"current\"} 1",
            "\njwkd_keys{issuer=\"billing\",state=\"current\"} 0",
            "\njwkd_rotations_total 0",
            "\njwkd_rotations_total{issuer=\"billing\"} 2",
            "\njwkd_rotation_failures_total{issuer=\"billing\"} 0",
            "\njwkd_store_errors_total 0",
            "\njwkd_tokens_issued_total 1",
            "\njwkd_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
            "\njwkd_http_requests_total{issuer=\"billing\",route=\"/.well-known/jwks.json\",status=\"200\"} 1",
            "\njwkd_current_key_age_seconds{alg=\"ES256\"} 6",
            "\njwkd_clock_skew_exceeded 0",
            "\njwkd_clock_skew_exceeded{issuer=\"billing\"} 0",
            "\njwkd_kms_signing{issuer=\"billing\"} 0",
            "\njwkd_kms_keys_made{issuer=\"billing\"} 4",
            "\njwkd_kms_keys_retired{issuer=\"billing\"} 1",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        // A local issuer has no KMS series.
        assert!(!text.contains("\njwkd_kms_signing 0"), "{text}");
    }
}
