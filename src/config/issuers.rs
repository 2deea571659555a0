//! `[[issuers]]`: further issuers beside the default one (the top-level
//! `[keys]`, `[issuer]`, `[[clients]]` and `[store]`).
//!
//! Each entry is read as a config file of its own: a table shaped like a
//! single-issuer file is put together from the entry (its `keys`, `issuer`,
//! `token_lifetime`, `clients`, and its store location) and the file's shared
//! sections (`[server]`, and `[store]` but for the location), and walked by the
//! same reader. So every rule a single issuer is held to holds for each entry,
//! and its problems are reported under `issuers[N].…`. The rules across issuers
//! (names, URLs, paths and store locations each used once) are here.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::{Backend, Config, Problem, names, reader};

/// The keys an `[[issuers]]` entry may have.
pub(super) const ENTRY_KEYS: &[&str] = &[
    "name",
    "issuer",
    "token_lifetime",
    "keys",
    "store",
    "clients",
];

/// The `store` keys an entry may set: where its keyset is. The backend, its
/// region and endpoint, and the refresh interval are the file's `[store]`.
pub(super) const ENTRY_STORE_KEYS: &[&str] = &["path", "secret_id"];

/// The name of the issuer of the top-level sections.
pub const DEFAULT_ISSUER: &str = "default";

/// The first path segments taken by the default issuer's and the daemon's own
/// endpoints: an issuer's path may not start with one.
const RESERVED_SEGMENTS: &[&str] = &[
    ".well-known",
    "oauth2",
    "v1",
    "healthz",
    "readyz",
    "metrics",
];

/// Reads every `[[issuers]]` entry of `table` beside `default`, the issuer of
/// the top-level sections, and checks the rules across them.
pub(super) fn read(
    table: &toml::Table,
    defaults: &toml::Table,
    default: &Config,
    base_dir: &Path,
    now: DateTime<Utc>,
) -> Result<Vec<Config>, Vec<Problem>> {
    let Some(entries) = table.get("issuers") else {
        return Ok(Vec::new());
    };
    let Some(entries) = entries.as_array() else {
        return Err(vec![Problem::new(
            "issuers",
            "expected an array of tables ([[issuers]])",
        )]);
    };
    let mut problems = Vec::new();
    let mut issuers = Vec::new();
    for (idx, entry) in entries.iter().enumerate() {
        let at = |key: &str| {
            if key.is_empty() {
                format!("issuers[{idx}]")
            } else {
                format!("issuers[{idx}].{key}")
            }
        };
        let Some(entry) = entry.as_table() else {
            problems.push(Problem::new(at(""), "expected a table"));
            continue;
        };
        let before = problems.len();
        problems.extend(unknown_keys(entry, &at));
        let name = match entry.get("name") {
            None => {
                problems.push(Problem::new(at("name"), "is required"));
                None
            }
            Some(toml::Value::String(name)) => match check_name(name) {
                Ok(()) => Some(name.clone()),
                Err(message) => {
                    problems.push(Problem::new(at("name"), message));
                    None
                }
            },
            Some(other) => {
                problems.push(Problem::new(
                    at("name"),
                    format!("expected a string, got {}", other.type_str()),
                ));
                None
            }
        };
        if entry.get("issuer").is_none() {
            problems.push(Problem::new(
                at("issuer"),
                "is required: the URL this issuer writes in iss, whose path its endpoints are served under",
            ));
        }
        let single = single_issuer_table(table, entry, name.as_deref(), default);
        match reader::read(&single, defaults, &default.file, base_dir, now) {
            Ok(mut config) if problems.len() == before => {
                config.name = name.unwrap_or_default();
                issuers.push(config);
            }
            Ok(_) => {}
            Err(found) => {
                let own: Vec<Problem> = found
                    .into_iter()
                    .filter_map(|problem| {
                        let key = entry_key(&problem.key, entry)?;
                        Some(Problem::new(at(&key), problem.message))
                    })
                    .collect();
                if own.is_empty() {
                    // Never an entry dropped without a word.
                    problems.push(Problem::new(
                        at(""),
                        "not read: a section it shares ([server], [store], [kms]) has a problem",
                    ));
                }
                problems.extend(own);
            }
        }
    }
    if problems.is_empty() {
        problems.extend(check_across(default, &issuers));
    }
    if problems.is_empty() {
        Ok(issuers)
    } else {
        Err(problems)
    }
}

/// An issuer's name: short, and usable in a file name and a metrics label.
fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !name.starts_with('-');
    if !valid {
        return Err(format!(
            "{name:?} is not a name: 1 to 32 characters a-z, 0-9 and -, not starting with -"
        ));
    }
    if name == DEFAULT_ISSUER {
        return Err(format!(
            "{DEFAULT_ISSUER:?} is the issuer of the top-level [keys], [issuer] and [[clients]]"
        ));
    }
    Ok(())
}

fn unknown_keys(entry: &toml::Table, at: &impl Fn(&str) -> String) -> Vec<Problem> {
    let mut problems = Vec::new();
    for key in entry.keys() {
        if !ENTRY_KEYS.contains(&key.as_str()) {
            let hint = match names::closest(key, ENTRY_KEYS) {
                Some(known) => format!(" (did you mean {known}?)"),
                None => String::new(),
            };
            problems.push(Problem::new(at(key), format!("unknown key{hint}")));
        }
    }
    match entry.get("store") {
        Some(toml::Value::Table(store)) => {
            for key in store.keys() {
                if !ENTRY_STORE_KEYS.contains(&key.as_str()) {
                    problems.push(Problem::new(
                        at(&format!("store.{key}")),
                        "an issuer sets only where its keyset is (path or secret_id); \
                         the backend and the rest are the file's [store]",
                    ));
                }
            }
        }
        Some(other) => problems.push(Problem::new(
            at("store"),
            format!("expected a table, got {}", other.type_str()),
        )),
        None => {}
    }
    problems
}

/// The table of a config file that would have this entry as its only issuer.
fn single_issuer_table(
    file: &toml::Table,
    entry: &toml::Table,
    name: Option<&str>,
    default: &Config,
) -> toml::Table {
    let mut single = toml::Table::new();
    if let Some(server) = file.get("server") {
        single.insert("server".into(), server.clone());
    }
    // `[kms]` is read for the issuers whose keys it holds.
    let custody = entry
        .get("keys")
        .and_then(|keys| keys.get("custody"))
        .and_then(toml::Value::as_str);
    if custody == Some("kms")
        && let Some(kms) = file.get("kms")
    {
        single.insert("kms".into(), kms.clone());
    }
    if let Some(keys) = entry.get("keys") {
        single.insert("keys".into(), keys.clone());
    }
    if let Some(clients) = entry.get("clients") {
        single.insert("clients".into(), clients.clone());
    }
    let mut issuer = toml::Table::new();
    for key in ["issuer", "token_lifetime"] {
        if let Some(value) = entry.get(key) {
            issuer.insert(key.into(), value.clone());
        }
    }
    single.insert("issuer".into(), issuer.into());
    let mut store = file
        .get("store")
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    let own = entry.get("store").and_then(toml::Value::as_table);
    for key in ENTRY_STORE_KEYS {
        store.remove(*key);
        if let Some(value) = own.and_then(|own| own.get(*key)) {
            store.insert((*key).into(), value.clone());
        }
    }
    if let Some(name) = name {
        let (key, derived) = derived_location(&default.store.backend, name);
        store.entry(key).or_insert_with(|| derived.into());
    }
    single.insert("store".into(), store.into());
    single
}

/// Where an issuer's keyset is when its entry does not say: beside the default
/// issuer's, with the name in it (`keyset.json` → `keyset.billing.json`; secret
/// `jwkd/keyset` → `jwkd/keyset/billing`).
fn derived_location(backend: &Backend, name: &str) -> (String, String) {
    match backend {
        Backend::File { path } => {
            let stem = path
                .file_stem()
                .map_or_else(|| "keyset".into(), |stem| stem.to_string_lossy());
            let file = match path.extension() {
                Some(ext) => format!("{stem}.{name}.{}", ext.to_string_lossy()),
                None => format!("{stem}.{name}"),
            };
            (
                "path".into(),
                path.with_file_name(file).display().to_string(),
            )
        }
        Backend::AwsSecretsManager { secret_id, .. } => {
            ("secret_id".into(), format!("{secret_id}/{name}"))
        }
    }
}

/// The key under the entry that a problem of the single-issuer read concerns,
/// or `None` for a problem of a shared section (reported for the file already).
fn entry_key(key: &str, entry: &toml::Table) -> Option<String> {
    let (section, rest) = key.split_once('.').unwrap_or((key, ""));
    match section {
        "issuer" => Some(rest.to_owned()),
        "store" if ENTRY_STORE_KEYS.contains(&rest) => Some(if entry.contains_key("store") {
            key.to_owned()
        } else {
            // Derived, not written: name the entry.
            "name".to_owned()
        }),
        "server" | "store" | "kms" => None,
        _ => Some(key.to_owned()),
    }
}

/// The path an issuer's endpoints are served under: its URL's path without the
/// trailing `/` (`https://auth.example/billing/` → `/billing`).
pub fn url_path(issuer: &str) -> Option<&str> {
    let rest = issuer.split_once("://")?.1;
    let path = &rest[rest.find('/')?..];
    let path = path.trim_end_matches('/');
    (!path.is_empty()).then_some(path)
}

/// Names, URLs, paths and store locations are each one issuer's.
fn check_across(default: &Config, issuers: &[Config]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (idx, config) in issuers.iter().enumerate() {
        let at = |key: &str| format!("issuers[{idx}].{key}");
        let earlier = &issuers[..idx];
        if earlier.iter().any(|other| other.name == config.name) {
            problems.push(Problem::new(
                at("name"),
                format!("{:?} names two issuers", config.name),
            ));
        }
        let Some(issuer) = config.issuer.issuer.as_deref() else {
            continue;
        };
        if issuer.contains(['?', '#']) {
            problems.push(Problem::new(
                at("issuer"),
                "an issuer URL has no query or fragment (RFC 8414 §2)",
            ));
            continue;
        }
        let same_url = |other: &Config| {
            other
                .issuer
                .issuer
                .as_deref()
                .map(|url| url.trim_end_matches('/'))
                == Some(issuer.trim_end_matches('/'))
        };
        if default.issuer.issuer.is_some() && same_url(default) || earlier.iter().any(same_url) {
            problems.push(Problem::new(
                at("issuer"),
                format!("{issuer:?} is the URL of another issuer"),
            ));
            continue;
        }
        let Some(path) = url_path(issuer) else {
            problems.push(Problem::new(
                at("issuer"),
                format!(
                    "{issuer:?} has no path: the endpoints of an issuer beside the default one \
                     are served under its URL's path (e.g. {}/{})",
                    issuer.trim_end_matches('/'),
                    config.name
                ),
            ));
            continue;
        };
        let first = path[1..].split('/').next().unwrap_or_default();
        if RESERVED_SEGMENTS.contains(&first) {
            problems.push(Problem::new(
                at("issuer"),
                format!(
                    "its path {path} starts with /{first}, which the daemon's own endpoints use"
                ),
            ));
        }
        let nested = |other: &Config| {
            other
                .issuer
                .issuer
                .as_deref()
                .and_then(url_path)
                .is_some_and(|other| {
                    let (short, long) = if other.len() <= path.len() {
                        (other, path)
                    } else {
                        (path, other)
                    };
                    long.strip_prefix(short)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
        };
        if let Some(other) = earlier.iter().find(|other| nested(other)) {
            problems.push(Problem::new(
                at("issuer"),
                format!(
                    "its path {path} and issuer {:?}'s overlap: one would serve the other's endpoints",
                    other.name
                ),
            ));
        }
    }
    let locations =
        std::iter::once(default)
            .chain(issuers)
            .map(|config| match &config.store.backend {
                Backend::File { path } => path.display().to_string(),
                Backend::AwsSecretsManager { secret_id, .. } => secret_id.clone(),
            });
    let locations: Vec<String> = locations.collect();
    for (idx, location) in locations.iter().enumerate().skip(1) {
        if locations[..idx].contains(location) {
            problems.push(Problem::new(
                format!("issuers[{}].store", idx - 1),
                format!("{location} is another issuer's keyset: each issuer has its own"),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Backend, Config};

    const FILE: &str = "/etc/jwkd/jwkd.toml";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new(FILE), crate::config::test_time())
            .map_err(|err| err.to_string())
    }

    const TWO: &str = r#"
        [issuer]
        issuer = "https://auth.example"

        [[issuers]]
        name = "billing"
        issuer = "https://auth.example/billing"
        token_lifetime = "5m"
        [issuers.keys]
        algorithms = ["ES384", "EdDSA"]
        rotation_schedule = "0 4 * * *"
        [[issuers.clients]]
        id = "invoices"
        secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$Zm9vYmFyYmF6Zm9vYmFyYmF6Zm9vYmFyYmF6MTI"
        audiences = ["payments"]
    "#;

    #[test]
    fn an_entry_is_a_whole_issuer_beside_the_default_one() {
        let config = parse(TWO).unwrap();
        assert_eq!(config.name, "default");
        assert_eq!(config.issuers.len(), 1);
        let billing = &config.issuers[0];
        assert_eq!(billing.name, "billing");
        assert_eq!(
            billing.issuer.issuer.as_deref(),
            Some("https://auth.example/billing")
        );
        assert_eq!(billing.issuer.token_lifetime.as_secs(), 300);
        let algorithms: Vec<&str> = billing
            .keys
            .algorithms
            .iter()
            .map(|alg| alg.name())
            .collect();
        assert_eq!(algorithms, ["ES384", "EdDSA"]);
        assert_eq!(billing.clients.len(), 1);
        assert!(billing.issuers.is_empty());
        // The default issuer keeps the top-level sections, and its clients only.
        assert!(config.clients.is_empty());
        let default_algorithms: Vec<&str> = config
            .keys
            .algorithms
            .iter()
            .map(|alg| alg.name())
            .collect();
        assert_eq!(default_algorithms, ["ES256"]);
        // Its keyset lies beside the default one's, named after it.
        assert_eq!(
            billing.store.backend,
            Backend::File {
                path: "/etc/jwkd/keyset.billing.json".into()
            }
        );
        assert_eq!(
            billing.store.refresh_interval,
            config.store.refresh_interval
        );
        assert_eq!(
            super::url_path("https://auth.example/billing/"),
            Some("/billing")
        );
        assert_eq!(super::url_path("https://auth.example"), None);
    }

    #[test]
    fn a_secret_per_issuer_from_the_default_secret() {
        let config = parse(
            r#"
            [store]
            backend = "aws-secrets-manager"
            secret_id = "jwkd/keyset"
            region = "eu-west-1"
            [[issuers]]
            name = "edge"
            issuer = "https://auth.example/edge"
            [[issuers]]
            name = "orders"
            issuer = "https://auth.example/orders"
            store.secret_id = "orders-keys"
            "#,
        )
        .unwrap();
        let secrets: Vec<(&str, Option<&str>)> = config
            .issuers
            .iter()
            .map(|issuer| match &issuer.store.backend {
                Backend::AwsSecretsManager {
                    secret_id, region, ..
                } => (secret_id.as_str(), region.as_deref()),
                Backend::File { .. } => panic!("file"),
            })
            .collect();
        assert_eq!(
            secrets,
            [
                ("jwkd/keyset/edge", Some("eu-west-1")),
                ("orders-keys", Some("eu-west-1"))
            ]
        );
    }

    #[test]
    fn each_rule_of_an_issuer_holds_per_entry_and_names_it() {
        let cases = [
            (
                "[[issuers]]\nissuer = \"https://a.example/x\"",
                "issuers[0].name: is required",
            ),
            (
                "[[issuers]]\nname = \"Billing\"\nissuer = \"https://a.example/x\"",
                "issuers[0].name: \"Billing\" is not a name",
            ),
            (
                "[[issuers]]\nname = \"default\"\nissuer = \"https://a.example/x\"",
                "issuers[0].name: \"default\" is the issuer of the top-level",
            ),
            (
                "[[issuers]]\nname = \"b\"",
                "issuers[0].issuer: is required",
            ),
            (
                "[[issuers]]\nname = \"b\"\nissuer = \"https://a.example/b\"\ntoken_lifetim = \"5m\"",
                "issuers[0].token_lifetim: unknown key (did you mean token_lifetime?)",
            ),
            (
                "[[issuers]]\nname = \"b\"\nissuer = \"https://a.example/b\"\n[issuers.keys]\nrotation_schedul = \"@daily\"",
                "issuers[0].keys.rotation_schedul: unknown key (did you mean rotation_schedule?)",
            ),
            (
                "[[issuers]]\nname = \"b\"\nissuer = \"https://a.example/b\"\n[issuers.keys]\nrotation_schedule = \"@hourly\"\njwks_max_age = \"2h\"",
                "issuers[0].keys.rotation_schedule: rotations only 1h apart are shorter than",
            ),
            (
                "[[issuers]]\nname = \"b\"\nissuer = \"https://a.example/b\"\ntoken_lifetime = \"2h\"",
                "issuers[0].token_lifetime:",
            ),
            (
                "[[issuers]]\nname = \"b\"\nissuer = \"ftp://a.example/b\"",
                "issuers[0].issuer: \"ftp://a.example/b\" is not an http(s) URL",
            ),
            (
                "[[issuers]]\nname = \"b\"\nissuer = \"https://a.example/b\"\nstore.backend = \"file\"",
                "issuers[0].store.backend: an issuer sets only where its keyset is",
            ),
            (
                "[[issuers]]\nname = \"b\"\nissuer = \"https://a.example/b\"\n[[issuers.clients]]\nid = \"x\"",
                "issuers[0].clients[0]",
            ),
        ];
        for (text, says) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(says),
                "{text}\n---\n{err}\n--- does not say\n{says}"
            );
        }
    }

    #[test]
    fn names_urls_paths_and_keysets_are_each_one_issuers() {
        let entry = |name: &str, issuer: &str| {
            format!("[[issuers]]\nname = \"{name}\"\nissuer = \"{issuer}\"\n")
        };
        let cases = [
            (
                entry("b", "https://a.example/b") + &entry("b", "https://a.example/c"),
                "issuers[1].name: \"b\" names two issuers",
            ),
            (
                "[issuer]\nissuer = \"https://a.example/b\"\n".to_owned()
                    + &entry("b", "https://a.example/b/"),
                "issuers[0].issuer: \"https://a.example/b/\" is the URL of another issuer",
            ),
            (
                entry("b", "https://b.example"),
                "has no path: the endpoints of an issuer beside the default one are served under its URL's path (e.g. https://b.example/b)",
            ),
            (
                entry("b", "https://a.example/v1/b"),
                "its path /v1/b starts with /v1",
            ),
            (
                entry("b", "https://a.example/b") + &entry("c", "https://a.example/b/c"),
                "issuers[1].issuer: its path /b/c and issuer \"b\"'s overlap",
            ),
            (
                entry("b", "https://a.example/b?x=1"),
                "issuers[0].issuer: an issuer URL has no query or fragment",
            ),
            (
                entry("b", "https://a.example/b") + "store.path = \"keyset.json\"\n",
                "issuers[0].store: /etc/jwkd/keyset.json is another issuer's keyset",
            ),
        ];
        for (text, says) in cases {
            let err = parse(&text).unwrap_err();
            assert!(
                err.contains(says),
                "{text}\n---\n{err}\n--- does not say\n{says}"
            );
        }
        // Sibling paths that merely share a prefix are fine.
        parse(&(entry("b", "https://a.example/b") + &entry("bb", "https://a.example/bb"))).unwrap();
    }
}

#[cfg(test)]
mod custody_tests {
    use std::path::Path;

    use crate::config::{Config, Custody};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(
            text,
            Path::new("/etc/jwkd/jwkd.toml"),
            crate::config::test_time(),
        )
        .map_err(|err| err.to_string())
    }

    #[test]
    fn kms_custody_is_per_issuer_with_one_kms_section() {
        let config = parse(
            r#"
            [keys]
            custody = "kms"
            x5c = false
            [kms]
            region = "eu-west-1"
            endpoint_url = "http://127.0.0.1:5000"
            [[issuers]]
            name = "billing"
            issuer = "https://a.example/billing"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.keys.custody,
            Custody::Kms {
                region: Some("eu-west-1".into()),
                endpoint_url: Some("http://127.0.0.1:5000".into()),
                signs_per_second: crate::kms::DEFAULT_SIGNS_PER_SECOND,
            }
        );
        assert_eq!(config.issuers[0].keys.custody, Custody::Local);
        assert_eq!(parse("").unwrap().keys.custody, Custody::Local);
    }

    #[test]
    fn what_kms_custody_cannot_serve_is_refused_naming_the_key() {
        for (text, says) in [
            (
                "[keys]\ncustody = \"kms\"\nx5c = false\nalgorithms = [\"ES256\", \"EdDSA\"]",
                "keys.algorithms: EdDSA keys cannot be held in KMS",
            ),
            (
                "[keys]\ncustody = \"kms\"",
                "keys.x5c: an x5c certificate is signed with the key's private half",
            ),
            (
                "[keys]\ncustody = \"hsm\"",
                "keys.custody: unknown custody \"hsm\"",
            ),
            (
                "[kms]\nregion = \"eu-west-1\"",
                "kms: is used only by an issuer with keys.custody = \"kms\", and none has it",
            ),
            (
                "[keys]\ncustody = \"kms\"\nx5c = false\n[kms]\nregon = \"x\"",
                "kms.regon: unknown key (did you mean region?)",
            ),
            (
                "[keys]\ncustody = \"kms\"\nx5c = false\n[kms]\nsigns_per_second = 0",
                "kms.signs_per_second: expected a whole number from 1 to 10000, got 0",
            ),
            (
                "[[issuers]]\nname = \"b\"\nissuer = \"https://a.example/b\"\n[issuers.keys]\ncustody = \"kms\"\nalgorithms = [\"EdDSA\"]\nx5c = false",
                "issuers[0].keys.algorithms: EdDSA keys cannot be held in KMS",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(says),
                "{text}\n---\n{err}\n--- does not say\n{says}"
            );
        }
    }
}
