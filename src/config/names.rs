//! The sections and keys a config file may use, and for a name that is none of
//! them, what it was probably meant to be (`did you mean rotation_schedule?`).

use super::Problem;

/// Every section and its keys.
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
            "custody",
        ],
    ),
    ("kms", &["region", "endpoint_url", "signs_per_second"]),
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

/// The keys of a `[[clients]]` entry.
const CLIENT_KEYS: &[&str] = &[
    "id",
    "secret_hash",
    "secret_hash_file",
    "audiences",
    "scopes",
    "roles",
    "algorithm",
];

/// A problem for every name in `table` that is not a known section, key or
/// `[[clients]]` key, with a suggestion where one is close.
pub(super) fn unknown_names(table: &toml::Table) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, value) in table {
        if name == "issuers" {
            // Each entry is checked where it is read (`issuers.rs`).
            continue;
        }
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
                                        problems.push(Problem::new(
                                            format!("clients[{client_idx}].{key}"),
                                            format!("unknown key{hint}"),
                                        ));
                                    }
                                }
                            }
                            None => problems.push(Problem::new(
                                format!("clients[{client_idx}]"),
                                "expected a table",
                            )),
                        }
                    }
                }
                None => problems.push(Problem::new(
                    "clients",
                    "expected an array of tables ([[clients]])",
                )),
            }
            continue;
        }
        let Some((_, known)) = SECTIONS.iter().find(|(section, _)| section == name) else {
            let hint = match unknown_top_level_hint(name) {
                Some(hint) => format!(" (did you mean {hint}?)"),
                None => String::new(),
            };
            problems.push(Problem::new(
                name.clone(),
                format!("unknown section or key{hint}"),
            ));
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
                        problems.push(Problem::new(
                            format!("{name}.{key}"),
                            format!("unknown key{hint}"),
                        ));
                    }
                }
            }
            None => problems.push(Problem::new(name.clone(), "expected a table")),
        }
    }
    problems
}

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
pub(super) fn closest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_for_test as parse;

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
}
