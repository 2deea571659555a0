//! The walk over the TOML table: each key is converted and checked where it is
//! read, taken from the embedded reference file when the file leaves it out, and
//! every problem is recorded under its dotted key. One method per section; the
//! `[[clients]]` entries are read in `clients.rs`, the rules across sections
//! are in `rules.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    Backend, Config, Custody, DEFAULT_AUTH_CHECKS_PER_CLIENT_PER_MINUTE,
    DEFAULT_AUTH_CHECKS_PER_MINUTE, HttpLimits, IssuerConfig, KeysConfig, Problem, ServerConfig,
    StoreConfig, names, rules,
};
use crate::duration::{format_duration, parse_duration};
use crate::keys::Algorithm;
use crate::schedule::Schedule;

/// Reads `table`, with `defaults` for the keys it leaves out, as the file at
/// `path` whose relative paths are relative to `base_dir`.
///
/// # Errors
/// Every problem found, in the order they are reported.
pub(super) fn read(
    table: &toml::Table,
    defaults: &toml::Table,
    path: &Path,
    base_dir: &Path,
    now: DateTime<Utc>,
) -> Result<Config, Vec<Problem>> {
    let mut reader = Reader {
        table,
        defaults,
        problems: Vec::new(),
        shortest_gap: None,
        now,
    };
    match reader.read(path, base_dir) {
        Some(config) if reader.problems.is_empty() => Ok(config),
        _ => Err(reader.problems),
    }
}

/// Walks the TOML table, converting values and recording problems by key.
pub(super) struct Reader<'a> {
    /// The file's table.
    pub(super) table: &'a toml::Table,
    /// The embedded reference file's table, for keys the file leaves out.
    defaults: &'a toml::Table,
    problems: Vec<Problem>,
    /// The rotation schedule's shortest gap, once `[keys]` is read.
    shortest_gap: Option<chrono::Duration>,
    /// When the file is read: the schedule's gaps are scanned from here.
    now: DateTime<Utc>,
}

impl<'a> Reader<'a> {
    /// Records a problem with the value of `key`.
    pub(super) fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    /// Every section, and each rule across sections as soon as the sections
    /// it relates are read: problems are reported in this order.
    fn read(&mut self, path: &Path, base_dir: &Path) -> Option<Config> {
        self.problems.extend(names::unknown_names(self.table));
        let server = self.read_server(base_dir);
        let keys = self.read_keys();
        let store = self.read_store(base_dir);
        if let (Some(keys), Some(store), Some(gap)) = (&keys, &store, self.shortest_gap) {
            self.problems.extend(rules::check_lead(keys, store, gap));
        }
        let issuer = self.read_issuer(keys.as_ref());
        if let (Some(keys), Some(issuer)) = (&keys, &issuer) {
            self.problems
                .extend(rules::check_token_lifetime(keys, issuer));
        }
        let clients = self.read_clients(keys.as_ref(), base_dir);
        if let (Some(keys), Some(store), Some(gap)) = (&keys, &store, self.shortest_gap) {
            self.problems
                .extend(rules::check_keyset_size(keys, store, gap));
        }
        self.problems.extend(rules::check_clients(
            &clients,
            server.as_ref(),
            issuer.as_ref(),
        ));
        Some(Config {
            file: path.to_path_buf(),
            server: server?,
            keys: keys?,
            store: store?,
            issuer: issuer?,
            clients,
            name: super::DEFAULT_ISSUER.to_owned(),
            issuers: Vec::new(),
        })
    }

    fn raw(&self, section: &str, key: &str) -> Option<&'a toml::Value> {
        self.table.get(section)?.as_table()?.get(key)
    }

    fn default(&self, section: &str, key: &str) -> Option<&'a toml::Value> {
        self.defaults.get(section)?.as_table()?.get(key)
    }

    fn value(&self, section: &str, key: &str) -> Option<&'a toml::Value> {
        self.raw(section, key)
            .or_else(|| self.default(section, key))
    }

    fn string(&mut self, section: &str, key: &str) -> Option<String> {
        let value = self.value(section, key)?;
        match value.as_str() {
            Some(text) => Some(text.to_owned()),
            None => {
                self.problem(
                    format!("{section}.{key}"),
                    format!("expected a string, got {}", value.type_str()),
                );
                None
            }
        }
    }

    fn integer(
        &mut self,
        section: &str,
        key: &str,
        range: std::ops::RangeInclusive<usize>,
    ) -> Option<usize> {
        let value = self.value(section, key)?;
        let number = value
            .as_integer()
            .and_then(|number| usize::try_from(number).ok());
        match number {
            Some(number) if range.contains(&number) => Some(number),
            _ => {
                self.problem(
                    format!("{section}.{key}"),
                    format!(
                        "expected a whole number from {} to {}, got {value}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    fn bool(&mut self, section: &str, key: &str) -> Option<bool> {
        let value = self.value(section, key)?;
        match value.as_bool() {
            Some(flag) => Some(flag),
            None => {
                self.problem(
                    format!("{section}.{key}"),
                    format!("expected true or false, got {}", value.type_str()),
                );
                None
            }
        }
    }

    fn duration(&mut self, section: &str, key: &str) -> Option<Duration> {
        let text = self.string(section, key)?;
        match parse_duration(&text) {
            Ok(duration) if duration > longest_duration(section, key) => {
                self.problem(
                    format!("{section}.{key}"),
                    format!(
                        "{text:?} is longer than jwkd accepts here ({})",
                        format_duration(longest_duration(section, key))
                    ),
                );
                None
            }
            Ok(duration) => Some(duration),
            Err(message) => {
                self.problem(format!("{section}.{key}"), message);
                None
            }
        }
    }

    fn address(&mut self, section: &str, key: &str) -> Option<SocketAddr> {
        let text = self.string(section, key)?;
        match text.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                self.problem(
                    format!("{section}.{key}"),
                    format!("{text:?} is not an IP:PORT address (e.g. \"127.0.0.1:8080\")"),
                );
                None
            }
        }
    }

    /// The array of strings `value`, read for `key`; empty when absent or not one.
    pub(super) fn strings(&mut self, key: &str, value: Option<&toml::Value>) -> Vec<String> {
        let Some(value) = value else {
            return Vec::new();
        };
        let items = value.as_array().map(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        });
        match items {
            Some(Some(items)) => items,
            _ => {
                self.problem(key, "expected an array of strings");
                Vec::new()
            }
        }
    }

    fn read_server(&mut self, base_dir: &Path) -> Option<ServerConfig> {
        let listen = self.address("server", "listen");
        let private_listen = self
            .raw("server", "private_listen")
            .and_then(|_| self.address("server", "private_listen"));
        let tls_cert = self
            .raw("server", "tls_cert")
            .and_then(|_| self.string("server", "tls_cert"));
        let tls_key = self
            .raw("server", "tls_key")
            .and_then(|_| self.string("server", "tls_key"));
        if tls_cert.is_some() != tls_key.is_some() {
            self.problem(
                "server.tls_cert",
                "tls_cert and tls_key must be set together",
            );
        }
        let allow_plain_http = self
            .raw("server", "allow_plain_http")
            .and_then(|_| self.bool("server", "allow_plain_http"))
            .unwrap_or(false);
        let defaults = HttpLimits::default();
        let header_read_timeout = self
            .raw("server", "header_read_timeout")
            .and_then(|_| self.duration("server", "header_read_timeout"));
        if header_read_timeout.is_some_and(|timeout| timeout < Duration::from_secs(1)) {
            self.problem("server.header_read_timeout", "must be at least 1s");
        }
        let max_header_bytes = self
            .raw("server", "max_header_bytes")
            .and_then(|_| self.integer("server", "max_header_bytes", 8192..=1024 * 1024));
        let max_connections = self
            .raw("server", "max_connections")
            .and_then(|_| self.integer("server", "max_connections", 1..=1_000_000));
        let auth_checks_per_minute = self
            .raw("server", "auth_checks_per_minute")
            .and_then(|_| self.integer("server", "auth_checks_per_minute", 1..=100_000))
            .and_then(|number| u32::try_from(number).ok())
            .unwrap_or(DEFAULT_AUTH_CHECKS_PER_MINUTE);
        let auth_checks_per_client_per_minute = self
            .raw("server", "auth_checks_per_client_per_minute")
            .and_then(|_| self.integer("server", "auth_checks_per_client_per_minute", 1..=100_000))
            .and_then(|number| u32::try_from(number).ok())
            .unwrap_or(DEFAULT_AUTH_CHECKS_PER_CLIENT_PER_MINUTE);
        let mut trusted_proxies = Vec::new();
        for text in self.strings(
            "server.trusted_proxies",
            self.raw("server", "trusted_proxies"),
        ) {
            match text.parse::<std::net::IpAddr>() {
                Ok(address) => trusted_proxies.push(address),
                Err(_) => self.problem(
                    "server.trusted_proxies",
                    format!("{text:?} is not an IP address (list each proxy's address)"),
                ),
            }
        }
        Some(ServerConfig {
            listen: listen?,
            tls_cert: tls_cert.map(|p| base_dir.join(p)),
            tls_key: tls_key.map(|p| base_dir.join(p)),
            allow_plain_http,
            private_listen,
            limits: HttpLimits {
                header_read_timeout: header_read_timeout.unwrap_or(defaults.header_read_timeout),
                max_header_bytes: max_header_bytes.unwrap_or(defaults.max_header_bytes),
                max_connections: max_connections.unwrap_or(defaults.max_connections),
            },
            auth_checks_per_minute,
            auth_checks_per_client_per_minute,
            trusted_proxies,
        })
    }

    fn read_keys(&mut self) -> Option<KeysConfig> {
        let names = self.strings("keys.algorithms", self.value("keys", "algorithms"));
        let mut algorithms = Vec::new();
        for name in &names {
            match name.parse::<Algorithm>() {
                Ok(alg) if algorithms.contains(&alg) => {
                    self.problem("keys.algorithms", format!("{alg} is listed twice"));
                }
                Ok(alg) => algorithms.push(alg),
                Err(message) => self.problem("keys.algorithms", message),
            }
        }
        if names.is_empty() && self.raw("keys", "algorithms").is_some() {
            self.problem("keys.algorithms", "at least one algorithm is needed");
        }
        let schedule = self.string("keys", "rotation_schedule").and_then(|text| {
            match text.parse::<Schedule>() {
                Ok(schedule) => Some(schedule),
                Err(message) => {
                    self.problem("keys.rotation_schedule", message);
                    None
                }
            }
        });
        let max_token_lifetime = self.duration("keys", "max_token_lifetime");
        let clock_skew = self.duration("keys", "clock_skew");
        let jwks_max_age = self.duration("keys", "jwks_max_age");
        let x5c = self.bool("keys", "x5c");
        let custody = self.read_custody(&algorithms, x5c);
        if let Some(schedule) = &schedule {
            self.shortest_gap = schedule.shortest_gap(self.now);
            if self.shortest_gap.is_none() {
                self.problem(
                    "keys.rotation_schedule",
                    format!("{schedule:?} does not fire at least twice in the next four years"),
                );
            }
        }
        if let Some(jwks_max_age) = jwks_max_age
            && jwks_max_age.is_zero()
        {
            self.problem("keys.jwks_max_age", "must be greater than 0s");
        }
        Some(KeysConfig {
            algorithms,
            rotation_schedule: schedule?,
            max_token_lifetime: max_token_lifetime?,
            clock_skew: clock_skew?,
            jwks_max_age: jwks_max_age?,
            x5c: x5c?,
            custody: custody?,
        })
        .filter(|keys| !keys.algorithms.is_empty())
    }

    /// `keys.custody` and, for `kms`, the `[kms]` section; the families and
    /// `x5c` it cannot serve are problems of theirs.
    fn read_custody(&mut self, algorithms: &[Algorithm], x5c: Option<bool>) -> Option<Custody> {
        let name = match self.raw("keys", "custody") {
            Some(_) => self.string("keys", "custody")?,
            None => "local".to_owned(),
        };
        match name.as_str() {
            "local" => Some(Custody::Local),
            "kms" => {
                if algorithms.contains(&Algorithm::EdDsa) {
                    self.problem(
                        "keys.algorithms",
                        "EdDSA keys cannot be held in KMS (it has no Ed25519 signing keys): \
                         use ES256, ES384 or RS256 with keys.custody = \"kms\"",
                    );
                }
                if x5c == Some(true) {
                    self.problem(
                        "keys.x5c",
                        "an x5c certificate is signed with the key's private half, which \
                         keys.custody = \"kms\" never reads: set x5c = false",
                    );
                }
                let optional = |reader: &mut Self, key: &str| {
                    reader
                        .raw("kms", key)
                        .and_then(|_| reader.string("kms", key))
                };
                let signs_per_second = self
                    .raw("kms", "signs_per_second")
                    .and_then(|_| self.integer("kms", "signs_per_second", 1..=10_000))
                    .and_then(|number| u32::try_from(number).ok())
                    .unwrap_or(crate::kms::DEFAULT_SIGNS_PER_SECOND);
                Some(Custody::Kms {
                    region: optional(self, "region"),
                    endpoint_url: optional(self, "endpoint_url"),
                    signs_per_second,
                })
            }
            other => {
                self.problem(
                    "keys.custody",
                    format!("unknown custody {other:?} (expected \"local\" or \"kms\")"),
                );
                None
            }
        }
    }

    fn read_store(&mut self, base_dir: &Path) -> Option<StoreConfig> {
        let backend_name = self.string("store", "backend")?;
        let refresh_interval = self.duration("store", "refresh_interval");
        if refresh_interval.is_some_and(|interval| interval.is_zero()) {
            self.problem("store.refresh_interval", "must be greater than 0s");
        }
        let backend = match backend_name.as_str() {
            "file" => {
                let path = self.string("store", "path")?;
                if path.is_empty() {
                    self.problem("store.path", "must not be empty");
                    return None;
                }
                Backend::File {
                    path: base_dir.join(path),
                }
            }
            "aws-secrets-manager" => {
                let secret_id = self
                    .raw("store", "secret_id")
                    .and_then(|_| self.string("store", "secret_id"));
                if secret_id.is_none() {
                    self.problem(
                        "store.secret_id",
                        "is required with backend = \"aws-secrets-manager\"",
                    );
                }
                let region = self
                    .raw("store", "region")
                    .and_then(|_| self.string("store", "region"));
                let endpoint_url = self
                    .raw("store", "endpoint_url")
                    .and_then(|_| self.string("store", "endpoint_url"));
                Backend::AwsSecretsManager {
                    secret_id: secret_id?,
                    region,
                    endpoint_url,
                }
            }
            other => {
                self.problem(
                    "store.backend",
                    format!(
                        "unknown backend {other:?} (expected \"file\" or \"aws-secrets-manager\")"
                    ),
                );
                return None;
            }
        };
        Some(StoreConfig {
            backend,
            refresh_interval: refresh_interval?,
        })
    }

    fn read_issuer(&mut self, keys: Option<&KeysConfig>) -> Option<IssuerConfig> {
        let issuer = self
            .raw("issuer", "issuer")
            .and_then(|_| self.string("issuer", "issuer"));
        if let Some(issuer) = &issuer
            && !(issuer.starts_with("https://") || issuer.starts_with("http://"))
        {
            self.problem("issuer.issuer", format!("{issuer:?} is not an http(s) URL"));
        }
        let explicit = self.raw("issuer", "token_lifetime").is_some();
        let token_lifetime = if explicit {
            self.duration("issuer", "token_lifetime")?
        } else {
            let default = Duration::from_secs(15 * 60);
            keys.map_or(default, |keys| default.min(keys.max_token_lifetime))
        };
        Some(IssuerConfig {
            issuer,
            token_lifetime,
        })
    }
}

/// The longest value each duration key takes. Far beyond any sensible setting,
/// and small enough that no sum of them overflows time arithmetic anywhere.
pub fn longest_duration(section: &str, key: &str) -> Duration {
    const DAY: u64 = 86_400;
    Duration::from_secs(match (section, key) {
        ("keys", "clock_skew") => DAY,
        ("keys", "jwks_max_age") => 7 * DAY,
        ("keys", "max_token_lifetime") | ("issuer", "token_lifetime") => 366 * DAY,
        ("store", "refresh_interval") => DAY,
        ("server", "header_read_timeout") => 300,
        _ => 3660 * DAY,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_for_test as parse;

    #[test]
    fn extreme_durations_are_config_errors_naming_the_key() {
        let keys = [
            ("keys", "max_token_lifetime"),
            ("keys", "clock_skew"),
            ("keys", "jwks_max_age"),
            ("store", "refresh_interval"),
            ("issuer", "token_lifetime"),
        ];
        for (section, key) in keys {
            for extreme in [
                "4294967295d",
                "18446744073709551615s",
                "99999999999999999999999ms",
                "4294967295d4294967295d",
            ] {
                let err = parse(&format!("[{section}]\n{key} = \"{extreme}\"\n")).unwrap_err();
                let text = err.to_string();
                assert!(
                    text.contains(&format!("{section}.{key}: \"{extreme}\"")),
                    "{section}.{key} = {extreme}: {text}"
                );
            }
            let just_over = longest_duration(section, key) + Duration::from_secs(1);
            let err = parse(&format!(
                "[{section}]\n{key} = \"{}\"\n",
                format_duration(just_over)
            ))
            .unwrap_err();
            assert!(
                err.to_string().contains("is longer than jwkd accepts here"),
                "{err}"
            );
        }
        // At the limits, everything the config derives stays computable.
        let config = parse(
            "[keys]\nrotation_schedule = \"@weekly\"\nmax_token_lifetime = \"366d\"\n\
             clock_skew = \"1d\"\njwks_max_age = \"5d\"\n",
        )
        .unwrap();
        let policy = config.policy();
        let read_at = crate::config::test_time();
        let far = read_at + policy.lead + policy.retention + policy.skew;
        assert!(far > read_at);
    }

    #[test]
    fn http_limits_have_defaults_and_bounds() {
        let config = parse("").unwrap();
        assert_eq!(config.server.limits, HttpLimits::default());
        let config = parse(
            "[server]\nheader_read_timeout = \"30s\"\nmax_header_bytes = 65536\nmax_connections = 10\n",
        )
        .unwrap();
        assert_eq!(
            config.server.limits,
            HttpLimits {
                header_read_timeout: Duration::from_secs(30),
                max_header_bytes: 65536,
                max_connections: 10,
            }
        );
        let err = parse(
            "[server]\nheader_read_timeout = \"0s\"\nmax_header_bytes = 100\nmax_connections = 0\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "server.header_read_timeout: must be at least 1s",
            "server.max_header_bytes: expected a whole number from 8192 to 1048576, got 100",
            "server.max_connections: expected a whole number from 1 to 1000000, got 0",
        ] {
            assert!(err.contains(expected), "{expected} missing from {err}");
        }
    }
}
