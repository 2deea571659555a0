//! The `[[clients]]` entries: each one's id, where its secret hash comes from
//! (inline, or a `secret_hash_file` that [`auth`] reads and checks), its
//! roles, audiences, scopes and key family.

use std::collections::BTreeSet;
use std::path::Path;

use super::KeysConfig;
use super::reader::Reader;
use crate::auth::{self, ClientConfig, Role};
use crate::keys::Algorithm;

impl Reader<'_> {
    /// The `[[clients]]` entries that read without a problem, each checked
    /// against `keys` (its algorithm) and the entries before it (its id).
    pub(super) fn read_clients(
        &mut self,
        keys: Option<&KeysConfig>,
        base_dir: &Path,
    ) -> Vec<ClientConfig> {
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

#[cfg(test)]
mod tests {
    use crate::config::parse_for_test as parse;

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
}
