//! The config file (CONTRACT §3): TOML in, a validated [`Config`] out.
//!
//! Two stages: the TOML is read into a table, then a reader walks it key by key,
//! converting and checking as it goes and collecting *every* problem with its
//! dotted key before reporting, so an operator fixes a file in one pass.
//! `check-config` and `serve` run exactly this path. The process environment is
//! read in one place only, [`Environment::from_process`].
//!
//! # Layout
//! - this file: [`Config`] and its sections, [`Config::load`] and
//!   [`Config::parse`] (both at a time the caller's clock gives), and [`ConfigError`];
//! - `env.rs`: where the file comes from (`--config`, `$JWKD_CONFIG`,
//!   [`DEFAULT_PATH`]) and the embedded reference file behind every default;
//! - `names.rs`: the sections and keys a file may use, and what a misspelled
//!   one was meant to be;
//! - `reader.rs`: the walk over the table, a method per section, and the
//!   longest value each duration key takes;
//! - `clients.rs`: the `[[clients]]` entries;
//! - `rules.rs`: the rules across sections (the lead against the schedule, the
//!   keyset's size, what clients need, `token_lifetime` within
//!   `max_token_lifetime`).

mod clients;
mod env;
mod issuers;
mod names;
mod reader;
mod rules;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::auth::ClientConfig;
use crate::keys::Algorithm;
use crate::schedule::Schedule;
use crate::timeline::Policy;

pub use env::{DEFAULT_PATH, EMBEDDED_DEFAULT, Environment};
pub use issuers::{DEFAULT_ISSUER, url_path};
pub use reader::longest_duration;
pub use rules::{KeysetSize, MAX_JWKS_KEYS, stored_key_bytes};

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Each problem with the key it concerns.
    pub problems: Vec<Problem>,
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key such as `keys.rotation_schedule`, or `clients[1].id`; empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().collect::<Vec<_>>().join("\n"))
    }
}

impl ConfigError {
    /// One line per problem, `config FILE: KEY: MESSAGE`, so that whoever
    /// prints them can mark each line (`error: `, a syslog level).
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.problems.iter().map(|problem| {
            let mut line = format!("config {}: ", self.file.display());
            if !problem.key.is_empty() {
                line.push_str(&problem.key);
                line.push_str(": ");
            }
            // A cause quoted from elsewhere (an SDK, the OS) must not start a line of its own.
            line.push_str(&problem.message.replace('\n', " "));
            line
        })
    }

    /// An error with a single problem.
    pub fn one(file: &Path, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem::new(key, message)],
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from; relative paths in it were resolved against its directory.
    pub file: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[keys]`.
    pub keys: KeysConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[issuer]`.
    pub issuer: IssuerConfig,
    /// `[[clients]]`.
    pub clients: Vec<ClientConfig>,
    /// This issuer's name: [`DEFAULT_ISSUER`] for the top-level sections, the
    /// entry's `name` for an `[[issuers]]` entry.
    pub name: String,
    /// `[[issuers]]`: the issuers beside the default one, each a config of its
    /// own (the same file and `[server]`, its own keys, issuer, clients and
    /// store location, and no `issuers`). Empty in theirs.
    pub issuers: Vec<Config>,
}

/// `[server]`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Public listener address.
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Allow credential endpoints over plain HTTP off loopback (behind a TLS proxy).
    pub allow_plain_http: bool,
    /// Second listener for the issuer and admin endpoints.
    pub private_listen: Option<SocketAddr>,
    /// What one peer can make the HTTP server hold.
    pub limits: HttpLimits,
    /// Full client credential checks allowed per source address per minute.
    pub auth_checks_per_minute: u32,
    /// Full checks of one client id per minute from sources it never
    /// authenticated from.
    pub auth_checks_per_client_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` names the source of a request.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// Full credential checks a source address may ask for per minute, by default.
pub const DEFAULT_AUTH_CHECKS_PER_MINUTE: u32 = 30;

/// Full checks of one client id per minute from addresses it never
/// authenticated from, by default.
pub const DEFAULT_AUTH_CHECKS_PER_CLIENT_PER_MINUTE: u32 = 60;

/// Limits on what peers can make the HTTP server hold (`[server]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers; also how long an
    /// idle keep-alive connection stays open. A slow-header peer is cut off then.
    pub header_read_timeout: Duration,
    /// The largest request header block, in bytes; over it the answer is `431`.
    pub max_header_bytes: usize,
    /// Connections served at once per listener; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_connections: 1024,
        }
    }
}

impl ServerConfig {
    /// The listeners that serve endpoints taking credentials (CONTRACT §6.3–6.6),
    /// with the config key that sets each.
    pub fn credential_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut listeners = vec![("server.listen", self.listen)];
        if let Some(private) = self.private_listen {
            listeners.push(("server.private_listen", private));
        }
        listeners
    }

    /// The credential listeners that would take client secrets over plain HTTP
    /// off loopback. jwkd refuses them unless `tls_cert` is set or
    /// `allow_plain_http` says a TLS-terminating proxy is in front: this is the
    /// one place that rule is written, for the config check and for `serve`.
    pub fn plain_http_credential_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        if self.tls_cert.is_some() || self.allow_plain_http {
            return Vec::new();
        }
        self.credential_listeners()
            .into_iter()
            .filter(|(_, address)| !address.ip().is_loopback())
            .collect()
    }

    /// Whether credential endpoints may be mounted: over TLS, on loopback only,
    /// or behind a proxy the operator vouches for.
    pub fn may_serve_credentials(&self) -> bool {
        self.plain_http_credential_listeners().is_empty()
    }
}

/// `[keys]`.
#[derive(Clone, Debug)]
pub struct KeysConfig {
    /// Key families, first = default.
    pub algorithms: Vec<Algorithm>,
    /// When keys rotate.
    pub rotation_schedule: Schedule,
    /// Upper bound of a token's lifetime.
    pub max_token_lifetime: Duration,
    /// Tolerated clock difference.
    pub clock_skew: Duration,
    /// JWKS Cache-Control max-age.
    pub jwks_max_age: Duration,
    /// Publish x5c certificates.
    pub x5c: bool,
    /// Who holds the private keys.
    pub custody: Custody,
}

/// Who holds an issuer's private keys (`keys.custody`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Custody {
    /// jwkd makes them and keeps them in the keyset document (the default).
    #[default]
    Local,
    /// AWS KMS makes and keeps them; the document holds each key's ARN and
    /// public JWK, and every signature is a KMS `Sign`.
    Kms {
        /// `kms.region`; the SDK's default chain when absent.
        region: Option<String>,
        /// `kms.endpoint_url` (an emulator, a VPC endpoint).
        endpoint_url: Option<String>,
        /// `kms.signs_per_second`: the most `Sign` calls the daemon makes a
        /// second (KMS's request quota is shared by the whole account).
        signs_per_second: u32,
    },
}

impl KeysConfig {
    /// How long each key is published before it signs, when replicas re-read
    /// the store every `refresh_interval`: the last replica serves a new key
    /// `refresh_interval` after it was written, and a verifier that fetched the
    /// JWKS from it just before may keep that copy for `jwks_max_age`, give or
    /// take `clock_skew`.
    pub fn lead(&self, refresh_interval: Duration) -> Duration {
        self.jwks_max_age + self.clock_skew + refresh_interval
    }
}

impl Config {
    /// Every issuer: this one (the default) first, then each `[[issuers]]` entry.
    pub fn all_issuers(&self) -> impl Iterator<Item = &Config> {
        std::iter::once(self).chain(&self.issuers)
    }

    /// The issuer named `name`.
    ///
    /// # Errors
    /// When no issuer has that name: the message lists the names there are.
    pub fn issuer_named(&self, name: &str) -> Result<&Config, String> {
        self.all_issuers()
            .find(|issuer| issuer.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .all_issuers()
                    .map(|issuer| issuer.name.as_str())
                    .collect();
                format!("no issuer of that name (there are: {})", names.join(", "))
            })
    }

    /// Lead, retention and skew tolerance of the key timeline.
    pub fn policy(&self) -> Policy {
        let chrono = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Policy {
            lead: chrono(self.keys.lead(self.store.refresh_interval)),
            retention: chrono(self.keys.max_token_lifetime + self.keys.clock_skew),
            skew: chrono(self.keys.clock_skew),
            lag: chrono(self.store.refresh_interval),
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The backend and where it keeps the keyset.
    pub backend: Backend,
    /// How often the store is re-read.
    pub refresh_interval: Duration,
}

/// The store backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A local JSON file.
    File {
        /// Absolute path of the keyset document.
        path: PathBuf,
    },
    /// AWS Secrets Manager.
    AwsSecretsManager {
        /// Secret name or ARN.
        secret_id: String,
        /// Region; the SDK's default chain when absent.
        region: Option<String>,
        /// Endpoint override (emulators, VPC endpoints).
        endpoint_url: Option<String>,
    },
}

/// The largest `SecretString` Secrets Manager accepts. The config refuses a
/// keyset that would outgrow it at steady state; the store refuses to write a
/// document over it. Kept here, with the backend it limits, so that config
/// needs nothing from the store.
pub const MAX_SECRET_BYTES: usize = 65_536;

/// `[issuer]`.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// `iss` of minted tokens and of discovery; `None` when not configured.
    pub issuer: Option<String>,
    /// Lifetime of minted tokens.
    pub token_lifetime: Duration,
}

impl Config {
    /// Reads and validates the config file at `path`, with `now` for the rules
    /// that depend on the time (the rotation schedule's gaps from now on).
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found, or the I/O error reading the file.
    pub fn load(path: &Path, now: DateTime<Utc>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::one(path, "", format!("cannot read the config file: {err}"))
        })?;
        Config::parse(&text, path, now)
    }

    /// Validates config text as if it were read from `path` at `now`.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found.
    pub fn parse(text: &str, path: &Path, now: DateTime<Utc>) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
            let location = err
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            ConfigError::one(
                path,
                "",
                format!("{location}invalid TOML: {}", err.message()),
            )
        })?;
        // Every default comes from the embedded reference file.
        let defaults: toml::Table = EMBEDDED_DEFAULT
            .parse()
            .expect("the embedded default config is valid TOML (tested)");
        let base_dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let errors = |problems| ConfigError {
            file: path.to_path_buf(),
            problems,
        };
        // The entries are read against the default issuer (their store
        // locations derive from its), so only once it reads.
        let mut config = reader::read(&table, &defaults, path, &base_dir, now).map_err(errors)?;
        config.issuers =
            issuers::read(&table, &defaults, &config, &base_dir, now).map_err(errors)?;
        let kms_used = config
            .all_issuers()
            .any(|issuer| matches!(issuer.keys.custody, Custody::Kms { .. }));
        if table.contains_key("kms") && !kms_used {
            return Err(errors(vec![Problem::new(
                "kms",
                "is used only by an issuer with keys.custody = \"kms\", and none has it",
            )]));
        }
        Ok(config)
    }
}

/// The time config tests are read at (a Sunday noon; the daily rotation is at 03:00).
#[cfg(test)]
pub(crate) fn test_time() -> DateTime<Utc> {
    use chrono::TimeZone as _;
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
}

/// The config the tests above the reader run on: `algorithms` rotated every
/// 2 s, tokens of at most 2 s, a 1 s JWKS max-age, no skew, the store re-read
/// every 500 ms (so the lead is 1.5 s), listening on `127.0.0.1:0`.
#[cfg(test)]
pub(crate) fn fast_config_for_test(algorithms: &[&str]) -> Config {
    let algorithms: Vec<String> = algorithms.iter().map(|alg| format!("{alg:?}")).collect();
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [keys]
        algorithms = [{}]
        rotation_schedule = "*/2 * * * * *"
        jwks_max_age = "1s"
        clock_skew = "0s"
        max_token_lifetime = "2s"
        [store]
        refresh_interval = "500ms"
        "#,
        algorithms.join(", ")
    );
    parse_for_test(&text).unwrap_or_else(|err| panic!("{err}"))
}

/// [`Config::parse`] of `text` as the file `/etc/jwkd/test.toml`, for the tests
/// of every part of the reader.
#[cfg(test)]
fn parse_for_test(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/jwkd/test.toml"), test_time())
}

#[cfg(test)]
mod tests {
    use super::parse_for_test as parse;

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(
            r#"
            bogus = 1
            [keys]
            rotation_schedule = "nope"
            clock_skew = "5 parsecs"
            algorithms = ["ES256", "HS256"]
            extra = true
            [store]
            backend = "floppy"
            "#,
        )
        .unwrap_err();
        let text = err.to_string();
        expect_test::expect![[r#"
            config /etc/jwkd/test.toml: bogus: unknown section or key
            config /etc/jwkd/test.toml: keys.extra: unknown key
            config /etc/jwkd/test.toml: keys.algorithms: unknown algorithm "HS256" (expected one of ES256, ES384, EdDSA, RS256)
            config /etc/jwkd/test.toml: keys.rotation_schedule: expected 5 fields (m h dom mon dow), or 6/7 with seconds and years, got 1
            config /etc/jwkd/test.toml: keys.clock_skew: "5 parsecs" is not a duration (use e.g. 30s, 5m, 1h, 7d or 1h30m)
            config /etc/jwkd/test.toml: store.backend: unknown backend "floppy" (expected "file" or "aws-secrets-manager")"#]]
        .assert_eq(&text);
    }

    #[test]
    fn invalid_toml_names_the_line() {
        let err = parse("[keys]\nx5c = \n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config /etc/jwkd/test.toml: line 2: invalid TOML"),
            "{err}"
        );
    }
}
