//! The rules that tie keys of different sections together: the lead against
//! the schedule, the keyset's size at steady state, what clients need (an
//! issuer, and TLS or loopback), and `token_lifetime` within
//! `max_token_lifetime`. Each takes the sections it relates, already read, and
//! returns what it finds wrong; the reader calls them in the order problems are
//! reported.

use super::{
    Backend, IssuerConfig, KeysConfig, MAX_SECRET_BYTES, Problem, ServerConfig, StoreConfig,
};
use crate::auth::ClientConfig;
use crate::duration::format_duration;
use crate::keys::Algorithm;

/// Refuses a schedule whose rotations come faster than a key can be
/// pre-published: every replica serves a new key within
/// `store.refresh_interval` of its write, and verifiers may cache the JWKS
/// without it for `jwks_max_age + clock_skew` after that.
pub(super) fn check_lead(
    keys: &KeysConfig,
    store: &StoreConfig,
    shortest_gap: chrono::Duration,
) -> Option<Problem> {
    let gap = shortest_gap.to_std().unwrap_or_default();
    let lead = keys.lead(store.refresh_interval);
    (gap < lead).then(|| {
        Problem::new(
            "keys.rotation_schedule",
            format!(
                "rotations only {} apart are shorter than jwks_max_age + clock_skew + \
                 store.refresh_interval = {} + {} + {} = {}: a next key could not be \
                 served by every replica and cached by verifiers before it signs",
                format_duration(gap),
                format_duration(keys.jwks_max_age),
                format_duration(keys.clock_skew),
                format_duration(store.refresh_interval),
                format_duration(lead)
            ),
        )
    })
}

/// Refuses minted tokens that would outlive their key's retention, which is
/// sized for tokens of at most `max_token_lifetime`.
pub(super) fn check_token_lifetime(keys: &KeysConfig, issuer: &IssuerConfig) -> Option<Problem> {
    (issuer.token_lifetime > keys.max_token_lifetime).then(|| {
        Problem::new(
            "issuer.token_lifetime",
            format!(
                "{} is longer than keys.max_token_lifetime = {}",
                format_duration(issuer.token_lifetime),
                format_duration(keys.max_token_lifetime)
            ),
        )
    })
}

/// Refuses a configuration whose keyset, at steady state, would not fit: a
/// JWKS of more than [`MAX_JWKS_KEYS`] keys, or on Secrets Manager a
/// document over [`MAX_SECRET_BYTES`].
pub(super) fn check_keyset_size(
    keys: &KeysConfig,
    store: &StoreConfig,
    shortest_gap: chrono::Duration,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(size) = KeysetSize::of(keys, shortest_gap) else {
        return problems;
    };
    if size.published > MAX_JWKS_KEYS {
        problems.push(Problem::new(
            "keys.max_token_lifetime",
            format!(
                "at steady state the JWKS would hold {} keys ({}), more than the {MAX_JWKS_KEYS} \
                 that some consumers accept (AWS IAM OIDC federation): rotate less often or \
                 shorten max_token_lifetime",
                size.published, size.per_family
            ),
        ));
    }
    if let Backend::AwsSecretsManager { .. } = store.backend
        && size.stored_bytes > MAX_SECRET_BYTES
    {
        problems.push(Problem::new(
            "store.backend",
            format!(
                "at steady state the keyset document would be about {} bytes ({}), more than \
                 the {MAX_SECRET_BYTES} a Secrets Manager secret holds: rotate less often, shorten \
                 max_token_lifetime, set x5c = false or use fewer or smaller key families",
                size.stored_bytes, size.per_family
            ),
        ));
    }
    problems
}

/// What configured clients need: an issuer to name in their tokens, and
/// listeners that do not take their secrets over plain HTTP off loopback
/// ([`ServerConfig::plain_http_credential_listeners`]).
pub(super) fn check_clients(
    clients: &[ClientConfig],
    server: Option<&ServerConfig>,
    issuer: Option<&IssuerConfig>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if clients.is_empty() {
        return problems;
    }
    if issuer.is_some_and(|issuer| issuer.issuer.is_none()) {
        problems.push(Problem::new(
            "issuer.issuer",
            "is required when clients are configured (it is the iss of their tokens)",
        ));
    }
    if let Some(server) = server {
        for (key, address) in server.plain_http_credential_listeners() {
            problems.push(Problem::new(
                key,
                format!(
                    "{address} would serve client credentials over plain HTTP on a non-loopback address: \
                     set server.tls_cert and server.tls_key, or allow_plain_http = true if a \
                     TLS-terminating proxy is in front"
                ),
            ));
        }
    }
    problems
}

/// The most keys a JWKS may hold: AWS IAM's OIDC federation, among others,
/// refuses a larger set.
pub const MAX_JWKS_KEYS: usize = 100;

/// How large a keyset a configuration keeps at steady state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysetSize {
    /// Keys in the JWKS: per family, current, next and the retired ones
    /// still in their retention.
    pub published: usize,
    /// The stored document, with one revoked and one expired key per family
    /// waiting for the next write.
    pub stored_bytes: usize,
    /// "ES256: 3 keys of ~1350 bytes; ..." for messages.
    pub per_family: String,
}

impl KeysetSize {
    /// The steady-state size for `keys` whose schedule's shortest gap is `gap`
    /// (computed once, by the schedule check).
    pub fn of(keys: &KeysConfig, gap: chrono::Duration) -> Option<KeysetSize> {
        let gap = gap.to_std().ok()?;
        let retention = keys.max_token_lifetime + keys.clock_skew;
        let retired = usize::try_from(retention.as_millis().div_ceil(gap.as_millis().max(1)))
            .unwrap_or(usize::MAX);
        let per_family_published = retired.saturating_add(2);
        let mut published = 0usize;
        let mut stored_bytes = DOCUMENT_OVERHEAD_BYTES;
        let mut per_family = Vec::new();
        for alg in &keys.algorithms {
            let record = stored_key_bytes(*alg, keys.x5c);
            published = published.saturating_add(per_family_published);
            stored_bytes = stored_bytes.saturating_add(
                per_family_published
                    .saturating_add(2)
                    .saturating_mul(record),
            );
            per_family.push(format!(
                "{alg}: {per_family_published} keys of ~{record} bytes"
            ));
        }
        Some(KeysetSize {
            published,
            stored_bytes,
            per_family: per_family.join("; "),
        })
    }
}

/// The document's own bytes around the keys.
const DOCUMENT_OVERHEAD_BYTES: usize = 64;

/// An upper bound of one stored key's bytes (measured, with a margin; a test
/// checks the bound against real keys).
pub fn stored_key_bytes(alg: Algorithm, x5c: bool) -> usize {
    match (alg, x5c) {
        (Algorithm::Es256, false) => 640,
        (Algorithm::Es256, true) => 1350,
        (Algorithm::Es384, false) => 720,
        (Algorithm::Es384, true) => 1520,
        (Algorithm::EdDsa, false) => 520,
        (Algorithm::EdDsa, true) => 1130,
        (Algorithm::Rs256, false) => 2240,
        (Algorithm::Rs256, true) => 3520,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_for_test as parse;

    #[test]
    fn cross_field_rules() {
        let err = parse(
            r#"
            [keys]
            rotation_schedule = "*/2 * * * * *"
            jwks_max_age = "5s"
            clock_skew = "0s"
            max_token_lifetime = "1h"
            [issuer]
            issuer = "https://auth.example"
            token_lifetime = "2h"
            "#,
        )
        .unwrap_err();
        expect_test::expect![[r#"
            config /etc/jwkd/test.toml: keys.rotation_schedule: rotations only 2s apart are shorter than jwks_max_age + clock_skew + store.refresh_interval = 5s + 0s + 30s = 35s: a next key could not be served by every replica and cached by verifiers before it signs
            config /etc/jwkd/test.toml: issuer.token_lifetime: 2h is longer than keys.max_token_lifetime = 1h
            config /etc/jwkd/test.toml: keys.max_token_lifetime: at steady state the JWKS would hold 1802 keys (ES256: 1802 keys of ~1350 bytes), more than the 100 that some consumers accept (AWS IAM OIDC federation): rotate less often or shorten max_token_lifetime"#]]
        .assert_eq(&err.to_string());
    }

    #[test]
    fn credentials_over_plain_http_off_loopback_are_refused() {
        let hash = crate::auth::hash_secret("s3cret-pw").unwrap();
        let text = |extra: &str| {
            format!(
                r#"
                [server]
                listen = "0.0.0.0:8080"
                {extra}
                [issuer]
                issuer = "https://auth.example"
                [[clients]]
                id = "orders"
                secret_hash = "{hash}"
                "#
            )
        };
        let err = parse(&text("")).unwrap_err();
        assert_eq!(err.problems[0].key, "server.listen", "{err}");
        assert!(
            err.to_string()
                .contains("plain HTTP on a non-loopback address"),
            "{err}"
        );
        let config = parse(&text("allow_plain_http = true")).unwrap();
        assert!(config.server.may_serve_credentials());
        let err = parse(&text("private_listen = \"10.0.0.1:8081\"")).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        // Without clients the file is fine, and `serve` does not mount the
        // credential endpoints by the same rule.
        let config = parse("[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
        assert_eq!(
            config.server.plain_http_credential_listeners(),
            [("server.listen", "0.0.0.0:8080".parse().unwrap())]
        );
        assert!(!config.server.may_serve_credentials());
        assert!(parse("").unwrap().server.may_serve_credentials());
    }

    #[test]
    fn clients_need_an_issuer() {
        let hash = crate::auth::hash_secret("s3cret-pw").unwrap();
        let err = parse(&format!(
            "[[clients]]\nid = \"a\"\nsecret_hash = \"{hash}\"\n"
        ))
        .unwrap_err();
        assert_eq!(err.problems[0].key, "issuer.issuer", "{err}");
    }

    #[test]
    fn stored_key_sizes_are_upper_bounds_of_real_keys() {
        use crate::timeline::KeyMaker;
        // With nanoseconds, as a real clock writes them: the widest timestamps.
        let now = crate::config::test_time() + chrono::Duration::nanoseconds(123_456_789);
        for alg in Algorithm::ALL {
            for x5c in [false, true] {
                let mut maker = crate::generator::Generator {
                    x5c,
                    clock_skew: chrono::Duration::minutes(1),
                };
                let mut key = maker
                    .make(alg, now, now, now + chrono::Duration::days(400))
                    .unwrap();
                key.deactivates_at = Some(now);
                key.expires_at = Some(now);
                key.revoked_at = Some(now);
                let one = crate::keyset::Keyset {
                    keys: vec![key.clone()],
                };
                let two = crate::keyset::Keyset {
                    keys: vec![key.clone(), key],
                };
                let real = two.to_document().len() - one.to_document().len();
                let bound = stored_key_bytes(alg, x5c);
                assert!(
                    real <= bound && bound <= real + real / 5,
                    "{alg} x5c={x5c}: real {real}, bound {bound}"
                );
            }
        }
    }

    #[test]
    fn a_keyset_that_would_not_fit_is_refused() {
        // Hourly RS256 keys kept for a year: thousands of keys.
        let err = parse(
            "[keys]\nalgorithms = [\"RS256\"]\nrotation_schedule = \"@hourly\"\nmax_token_lifetime = \"366d\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("keys.max_token_lifetime: at steady state the JWKS would hold 8787 keys"),
            "{err}"
        );
        // Within 100 keys, but too large for a secret.
        let err = parse(
            "[keys]\nalgorithms = [\"RS256\", \"ES384\"]\nrotation_schedule = \"@hourly\"\nmax_token_lifetime = \"12h\"\n\
             [store]\nbackend = \"aws-secrets-manager\"\nsecret_id = \"s\"\nregion = \"us-east-1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("store.backend: at steady state the keyset document would be about"),
            "{err}"
        );
        assert!(!err.contains("JWKS would hold"), "{err}");
        // The defaults are far from both.
        let size = KeysetSize::of(&parse("").unwrap().keys, chrono::Duration::days(1)).unwrap();
        assert_eq!(size.published, 3);
        assert!(size.stored_bytes < 8 * 1024, "{size:?}");
    }
}
