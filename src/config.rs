//! The config file (CONTRACT §3): TOML in, a validated [`Config`] out.
//!
//! Two stages: the TOML is read into a table, then [`Reader`] walks it key by key,
//! converting and checking as it goes and collecting *every* problem with its
//! dotted key before reporting, so an operator fixes a file in one pass.
//! `check-config` and `serve` run exactly this path. The process environment is
//! read in one place only, [`Environment::from_process`].

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use crate::auth;
/// A `[[clients]]` entry and its roles belong to [`auth`]; [`Config::clients`]
/// holds them, so they are named here too.
pub use crate::auth::{ClientConfig, Role};
use crate::duration::{format_duration, parse_duration};
use crate::keys::Algorithm;
use crate::schedule::Schedule;
use crate::timeline::Policy;

/// The config file used when neither `--config` nor `JWKD_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/jwkd/jwkd.toml";

/// The annotated reference config, which is also the source of every default.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/jwkd.toml");

/// The environment variables jwkd reads, captured once at start.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `JWKD_CONFIG`: the config path when `--config` is not given.
    pub config_path: Option<PathBuf>,
    /// `JWKD_LOG`: the log filter, in tracing's `EnvFilter` syntax.
    pub log_filter: Option<String>,
    /// `JOURNAL_STREAM` (`dev:inode`): set by systemd when stdout/stderr go to the journal.
    pub journal_stream: Option<String>,
    /// `JWKD_LOG_FORMAT=json`: one JSON object per log line, for log shippers.
    pub log_json: bool,
    /// systemd's watchdog timeout: `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or
    /// this process (sd_watchdog_enabled(3)). `None` when zero or absent.
    pub watchdog: Option<Duration>,
}

impl Environment {
    /// Reads the process environment. No other function in jwkd does.
    pub fn from_process() -> Environment {
        Environment {
            config_path: std::env::var_os("JWKD_CONFIG")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from),
            log_json: std::env::var("JWKD_LOG_FORMAT")
                .is_ok_and(|format| format.eq_ignore_ascii_case("json")),
            log_filter: std::env::var("JWKD_LOG")
                .ok()
                .filter(|value| !value.is_empty()),
            journal_stream: std::env::var("JOURNAL_STREAM")
                .ok()
                .filter(|value| !value.is_empty()),
            watchdog: sd_notify::watchdog_enabled().filter(|timeout| !timeout.is_zero()),
        }
    }

    /// The config path: `--config`, then `JWKD_CONFIG`, then [`DEFAULT_PATH`].
    pub fn resolve_config_path(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| self.config_path.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }
}

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
            problems: vec![Problem {
                key: key.to_owned(),
                message: message.into(),
            }],
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
    /// Reads and validates the config file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found, or the I/O error reading the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::one(path, "", format!("cannot read the config file: {err}"))
        })?;
        Config::parse(&text, path)
    }

    /// Validates config text as if it were read from `path`.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
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
        let mut reader = Reader {
            table: &table,
            defaults: &defaults,
            problems: Vec::new(),
            shortest_gap: None,
        };
        let config = reader.read(path, &base_dir);
        match config {
            Some(config) if reader.problems.is_empty() => Ok(config),
            _ => Err(ConfigError {
                file: path.to_path_buf(),
                problems: reader.problems,
            }),
        }
    }
}

const SECTIONS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "tls_cert",
            "tls_key",
            "allow_plain_http",
            "private_listen",
            "header_read_timeout",
            "max_header_bytes",
            "max_connections",
            "auth_checks_per_minute",
            "auth_checks_per_client_per_minute",
            "trusted_proxies",
        ],
    ),
    (
        "keys",
        &[
            "algorithms",
            "rotation_schedule",
            "max_token_lifetime",
            "clock_skew",
            "jwks_max_age",
            "x5c",
        ],
    ),
    (
        "store",
        &[
            "backend",
            "path",
            "secret_id",
            "region",
            "endpoint_url",
            "refresh_interval",
        ],
    ),
    ("issuer", &["issuer", "token_lifetime"]),
];
const CLIENT_KEYS: &[&str] = &[
    "id",
    "secret_hash",
    "secret_hash_file",
    "audiences",
    "scopes",
    "roles",
    "algorithm",
];

/// What an unknown top-level name was probably meant to be: a section with a
/// name close to it (`[keys]`, `[[clients]]`), or the section key it names
/// exactly (`server.listen` for a `listen` above every section).
fn unknown_top_level_hint(name: &str) -> Option<String> {
    let sections: Vec<&str> = SECTIONS
        .iter()
        .map(|(section, _)| *section)
        .chain(["clients"])
        .collect();
    if let Some(section) = closest(name, &sections) {
        return Some(match section {
            "clients" => "[[clients]]".to_owned(),
            _ => format!("[{section}]"),
        });
    }
    key_of_another_section(name, "")
}

/// What an unknown key in `[section]` was probably meant to be: a key of the
/// section close to it, or a key of another section that it names exactly.
fn unknown_key_hint(section: &str, key: &str, known: &[&str]) -> Option<String> {
    match closest(key, known) {
        Some(known) => Some(known.to_owned()),
        None => key_of_another_section(key, section),
    }
}

/// `section.key` for the section other than `except` that has `key` (up to
/// case and `-` for `_`).
fn key_of_another_section(key: &str, except: &str) -> Option<String> {
    let key = normalized(key);
    SECTIONS
        .iter()
        .filter(|(section, _)| *section != except)
        .find_map(|(section, keys)| {
            keys.iter()
                .find(|known| **known == key)
                .map(|known| format!("{section}.{known}"))
        })
}

/// The known name closest to `unknown`, when it is close enough to be a typo:
/// at most two edits (one for names of three characters or fewer), an edit
/// being a character inserted, deleted, replaced, or swapped with its
/// neighbour; case and `-` for `_` do not count.
fn closest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let unknown = normalized(unknown);
    known
        .iter()
        .map(|name| (edit_distance(&unknown, name), *name))
        .filter(|(distance, name)| *distance <= if name.len() <= 3 { 1 } else { 2 })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn normalized(name: &str) -> String {
    name.to_lowercase().replace('-', "_")
}

/// The optimal string alignment distance: Levenshtein plus swaps of two
/// adjacent characters (`rotaiton` is one edit from `rotation`).
fn edit_distance(from: &str, to: &str) -> usize {
    let from: Vec<char> = from.chars().collect();
    let to: Vec<char> = to.chars().collect();
    // rows[i][j]: the distance between from[..i] and to[..j].
    let mut rows = vec![vec![0; to.len() + 1]; from.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=from.len() {
        for j in 1..=to.len() {
            let replace = usize::from(from[i - 1] != to[j - 1]);
            let mut distance = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + replace);
            if i > 1 && j > 1 && from[i - 1] == to[j - 2] && from[i - 2] == to[j - 1] {
                distance = distance.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = distance;
        }
    }
    rows[from.len()][to.len()]
}

/// Walks the TOML table, converting values and recording problems by key.
struct Reader<'a> {
    table: &'a toml::Table,
    defaults: &'a toml::Table,
    problems: Vec<Problem>,
    /// The rotation schedule's shortest gap, once `[keys]` is read.
    shortest_gap: Option<chrono::Duration>,
}

impl<'a> Reader<'a> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn check_unknown_keys(&mut self) {
        for (name, value) in self.table {
            if name == "clients" {
                match value.as_array() {
                    Some(clients) => {
                        for (client_idx, client) in clients.iter().enumerate() {
                            match client.as_table() {
                                Some(client) => {
                                    for key in client.keys() {
                                        if !CLIENT_KEYS.contains(&key.as_str()) {
                                            let hint = match closest(key, CLIENT_KEYS) {
                                                Some(known) => format!(" (did you mean {known}?)"),
                                                None => String::new(),
                                            };
                                            self.problem(
                                                format!("clients[{client_idx}].{key}"),
                                                format!("unknown key{hint}"),
                                            );
                                        }
                                    }
                                }
                                None => self
                                    .problem(format!("clients[{client_idx}]"), "expected a table"),
                            }
                        }
                    }
                    None => self.problem("clients", "expected an array of tables ([[clients]])"),
                }
                continue;
            }
            let Some((_, known)) = SECTIONS.iter().find(|(section, _)| section == name) else {
                let hint = match unknown_top_level_hint(name) {
                    Some(hint) => format!(" (did you mean {hint}?)"),
                    None => String::new(),
                };
                self.problem(name.clone(), format!("unknown section or key{hint}"));
                continue;
            };
            match value.as_table() {
                Some(section) => {
                    for key in section.keys() {
                        if !known.contains(&key.as_str()) {
                            let hint = match unknown_key_hint(name, key, known) {
                                Some(hint) => format!(" (did you mean {hint}?)"),
                                None => String::new(),
                            };
                            self.problem(format!("{name}.{key}"), format!("unknown key{hint}"));
                        }
                    }
                }
                None => self.problem(name.clone(), "expected a table"),
            }
        }
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

    fn strings(&mut self, key: &str, value: Option<&toml::Value>) -> Vec<String> {
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

    fn read(&mut self, path: &Path, base_dir: &Path) -> Option<Config> {
        self.check_unknown_keys();
        let server = self.read_server(base_dir);
        let keys = self.read_keys();
        let store = self.read_store(base_dir);
        if let (Some(keys), Some(store)) = (&keys, &store) {
            self.check_lead(keys, store);
        }
        let issuer = self.read_issuer(keys.as_ref());
        let clients = self.read_clients(keys.as_ref(), base_dir);
        if let (Some(keys), Some(store)) = (&keys, &store) {
            self.check_keyset_size(keys, store);
        }
        if !clients.is_empty() {
            if issuer
                .as_ref()
                .is_some_and(|issuer| issuer.issuer.is_none())
            {
                self.problem(
                    "issuer.issuer",
                    "is required when clients are configured (it is the iss of their tokens)",
                );
            }
            if let Some(server) = &server {
                for (key, address) in server.plain_http_credential_listeners() {
                    self.problem(
                        key,
                        format!(
                            "{address} would serve client credentials over plain HTTP on a non-loopback address: \
                             set server.tls_cert and server.tls_key, or allow_plain_http = true if a \
                             TLS-terminating proxy is in front"
                        ),
                    );
                }
            }
        }
        Some(Config {
            file: path.to_path_buf(),
            server: server?,
            keys: keys?,
            store: store?,
            issuer: issuer?,
            clients,
        })
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

    /// Refuses a schedule whose rotations come faster than a key can be
    /// pre-published: every replica serves a new key within
    /// `store.refresh_interval` of its write, and verifiers may cache the JWKS
    /// without it for `jwks_max_age + clock_skew` after that.
    fn check_lead(&mut self, keys: &KeysConfig, store: &StoreConfig) {
        let Some(gap) = self.shortest_gap else {
            return;
        };
        let gap = gap.to_std().unwrap_or_default();
        let lead = keys.lead(store.refresh_interval);
        if gap < lead {
            self.problem(
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
            );
        }
    }

    /// Refuses a configuration whose keyset, at steady state, would not fit: a
    /// JWKS of more than [`MAX_JWKS_KEYS`] keys, or on Secrets Manager a
    /// document over the secret size limit.
    fn check_keyset_size(&mut self, keys: &KeysConfig, store: &StoreConfig) {
        let Some(size) = self.shortest_gap.and_then(|gap| KeysetSize::of(keys, gap)) else {
            return;
        };
        if size.published > MAX_JWKS_KEYS {
            self.problem(
                "keys.max_token_lifetime",
                format!(
                    "at steady state the JWKS would hold {} keys ({}), more than the {MAX_JWKS_KEYS} \
                     that some consumers accept (AWS IAM OIDC federation): rotate less often or \
                     shorten max_token_lifetime",
                    size.published, size.per_family
                ),
            );
        }
        if let Backend::AwsSecretsManager { .. } = store.backend
            && size.stored_bytes > MAX_SECRET_BYTES
        {
            self.problem(
                "store.backend",
                format!(
                    "at steady state the keyset document would be about {} bytes ({}), more than \
                     the {} a Secrets Manager secret holds: rotate less often, shorten \
                     max_token_lifetime, set x5c = false or use fewer or smaller key families",
                    size.stored_bytes, size.per_family, MAX_SECRET_BYTES
                ),
            );
        }
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
        if let Some(schedule) = &schedule {
            self.shortest_gap = schedule.shortest_gap(Utc::now());
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
        })
        .filter(|keys| !keys.algorithms.is_empty())
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
        if let Some(keys) = keys
            && token_lifetime > keys.max_token_lifetime
        {
            self.problem(
                "issuer.token_lifetime",
                format!(
                    "{} is longer than keys.max_token_lifetime = {}",
                    format_duration(token_lifetime),
                    format_duration(keys.max_token_lifetime)
                ),
            );
        }
        Some(IssuerConfig {
            issuer,
            token_lifetime,
        })
    }

    fn read_clients(&mut self, keys: Option<&KeysConfig>, base_dir: &Path) -> Vec<ClientConfig> {
        let Some(clients) = self.table.get("clients").and_then(toml::Value::as_array) else {
            return Vec::new();
        };
        let mut out: Vec<ClientConfig> = Vec::new();
        for (client_idx, client) in clients.iter().enumerate() {
            let Some(client) = client.as_table() else {
                continue;
            };
            let key = |name: &str| format!("clients[{client_idx}].{name}");
            let string = |reader: &mut Self, name: &str| -> Option<String> {
                match client.get(name) {
                    Some(toml::Value::String(text)) => Some(text.clone()),
                    Some(other) => {
                        reader.problem(
                            key(name),
                            format!("expected a string, got {}", other.type_str()),
                        );
                        None
                    }
                    None => None,
                }
            };
            let id = string(self, "id");
            match &id {
                None => self.problem(key("id"), "is required"),
                Some(id) if id.is_empty() || id.contains(':') => {
                    self.problem(
                        key("id"),
                        format!("{id:?} must be non-empty and contain no ':'"),
                    );
                }
                Some(id) if out.iter().any(|other| &other.id == id) => {
                    self.problem(key("id"), format!("duplicate client id {id:?}"));
                }
                Some(_) => {}
            }
            let inline = string(self, "secret_hash");
            let from_file = string(self, "secret_hash_file");
            let (secret_hash, hash_key) = match (inline, from_file) {
                (Some(_), Some(_)) => {
                    self.problem(
                        key("secret_hash_file"),
                        "set secret_hash or secret_hash_file, not both",
                    );
                    (None, key("secret_hash"))
                }
                (Some(hash), None) => (Some(hash), key("secret_hash")),
                (None, Some(file)) => match auth::read_secret_hash_file(&base_dir.join(&file)) {
                    Ok(hash) => (Some(hash), key("secret_hash_file")),
                    Err(message) => {
                        self.problem(key("secret_hash_file"), message);
                        (None, key("secret_hash_file"))
                    }
                },
                (None, None) => {
                    self.problem(
                        key("secret_hash"),
                        "is required (make one with `jwkd hash-secret`), or secret_hash_file",
                    );
                    (None, key("secret_hash"))
                }
            };
            if let Some(hash) = &secret_hash
                && let Err(message) = auth::check_hash_format(hash)
            {
                self.problem(hash_key, message);
            }
            let audiences = self.strings(&key("audiences"), client.get("audiences"));
            let scopes = self.strings(&key("scopes"), client.get("scopes"));
            let mut roles = BTreeSet::new();
            for name in self.strings(&key("roles"), client.get("roles")) {
                match name.parse::<Role>() {
                    Ok(role) => {
                        roles.insert(role);
                    }
                    Err(message) => self.problem(key("roles"), message),
                }
            }
            let algorithm = match string(self, "algorithm") {
                None => keys.and_then(|keys| keys.algorithms.first().copied()),
                Some(name) => match name.parse::<Algorithm>() {
                    Ok(alg) if keys.is_some_and(|keys| !keys.algorithms.contains(&alg)) => {
                        self.problem(key("algorithm"), format!("{alg} is not in keys.algorithms"));
                        None
                    }
                    Ok(alg) => Some(alg),
                    Err(message) => {
                        self.problem(key("algorithm"), message);
                        None
                    }
                },
            };
            if let (Some(id), Some(secret_hash), Some(algorithm)) = (id, secret_hash, algorithm) {
                out.push(ClientConfig {
                    id,
                    secret_hash,
                    audiences,
                    scopes,
                    roles,
                    algorithm,
                });
            }
        }
        out
    }
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

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/jwkd/test.toml"))
    }

    #[test]
    fn embedded_default_is_valid_and_empty_file_means_the_same() {
        let embedded = parse(EMBEDDED_DEFAULT).unwrap();
        let empty = parse("").unwrap();
        assert_eq!(embedded.server.listen, empty.server.listen);
        assert_eq!(embedded.keys.algorithms, vec![Algorithm::Es256]);
        assert_eq!(
            embedded.keys.rotation_schedule,
            empty.keys.rotation_schedule
        );
        assert_eq!(embedded.keys.jwks_max_age, Duration::from_secs(300));
        assert_eq!(embedded.store, empty.store);
        assert_eq!(
            embedded.store.backend,
            Backend::File {
                path: PathBuf::from("/etc/jwkd/keyset.json")
            }
        );
        assert_eq!(embedded.issuer.token_lifetime, Duration::from_secs(900));
    }

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
    fn misspelled_names_get_a_suggestion() {
        let err = parse(
            r#"
            listen = "127.0.0.1:8080"
            [key]
            x5c = true
            [keys]
            rotation_schedul = "0 3 * * *"
            rotaiton_schedule = "0 3 * * *"
            Clock-Skew = "1m"
            refresh_interval = "30s"
            lifetime = "1h"
            [store]
            pth = "keyset.json"
            [issuer]
            issuer = "https://auth.example"
            [[client]]
            id = "orders"
            [[clients]]
            ids = "orders"
            secrethash = "x"
            audience = ["payments"]
            secret = "hunter2"
            "#,
        )
        .unwrap_err();
        expect_test::expect![[r#"
            config /etc/jwkd/test.toml: client: unknown section or key (did you mean [[clients]]?)
            config /etc/jwkd/test.toml: clients[0].audience: unknown key (did you mean audiences?)
            config /etc/jwkd/test.toml: clients[0].ids: unknown key (did you mean id?)
            config /etc/jwkd/test.toml: clients[0].secret: unknown key
            config /etc/jwkd/test.toml: clients[0].secrethash: unknown key (did you mean secret_hash?)
            config /etc/jwkd/test.toml: key: unknown section or key (did you mean [keys]?)
            config /etc/jwkd/test.toml: keys.Clock-Skew: unknown key (did you mean clock_skew?)
            config /etc/jwkd/test.toml: keys.lifetime: unknown key
            config /etc/jwkd/test.toml: keys.refresh_interval: unknown key (did you mean store.refresh_interval?)
            config /etc/jwkd/test.toml: keys.rotaiton_schedule: unknown key (did you mean rotation_schedule?)
            config /etc/jwkd/test.toml: keys.rotation_schedul: unknown key (did you mean rotation_schedule?)
            config /etc/jwkd/test.toml: listen: unknown section or key (did you mean server.listen?)
            config /etc/jwkd/test.toml: store.pth: unknown key (did you mean path?)
            config /etc/jwkd/test.toml: clients[0].id: is required
            config /etc/jwkd/test.toml: clients[0].secret_hash: is required (make one with `jwkd hash-secret`), or secret_hash_file"#]]
        .assert_eq(&err.to_string());
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("ca", "ac"), 1);
        assert_eq!(
            closest("x", &["id"]),
            None,
            "one edit at most for short names"
        );
    }

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
    fn clients_are_checked() {
        let hash = crate::auth::hash_secret("s3cret-pw").unwrap();
        let text = format!(
            r#"
            [issuer]
            issuer = "https://auth.example"
            [[clients]]
            id = "orders"
            secret_hash = "{hash}"
            audiences = ["payments"]
            roles = ["issuer"]
            [[clients]]
            id = "orders"
            secret_hash = "plaintext"
            roles = ["root"]
            algorithm = "RS256"
            colour = "blue"
            "#
        );
        let err = parse(&text).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "clients[1].colour",
                "clients[1].id",
                "clients[1].secret_hash",
                "clients[1].roles",
                "clients[1].algorithm"
            ],
            "{err}"
        );
        assert!(
            err.to_string().contains("duplicate client id \"orders\""),
            "{err}"
        );
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
        let far = chrono::Utc::now() + policy.lead + policy.retention + policy.skew;
        assert!(far > chrono::Utc::now());
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

    #[test]
    fn stored_key_sizes_are_upper_bounds_of_real_keys() {
        use crate::timeline::KeyMaker;
        let now = chrono::Utc::now();
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
