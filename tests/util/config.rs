//! One builder for the configs the integration tests run the daemon with:
//! a base ([`TestConfig::fast`] rotates every 2 s, [`TestConfig::slow`] daily),
//! changed key by key, with an issuer and clients. Tests say only what differs
//! from the base, so a change to the config format is made here once.

use toml::{Table, Value};

use super::{FAST_CONFIG, SLOW_CONFIG, hash_secret_once};

/// A config under construction; [`TestConfig::build`] writes it as TOML.
#[derive(Clone, Debug)]
pub struct TestConfig {
    table: Table,
    clients: Vec<Table>,
    issuers: Vec<Table>,
}

impl TestConfig {
    /// [`FAST_CONFIG`]: a rotation every 2 s, keys retired for 3 s.
    pub fn fast() -> TestConfig {
        TestConfig::from_base(FAST_CONFIG)
    }

    /// [`SLOW_CONFIG`]: a daily rotation; nothing rotates while a test runs.
    pub fn slow() -> TestConfig {
        TestConfig::from_base(SLOW_CONFIG)
    }

    fn from_base(base: &str) -> TestConfig {
        TestConfig {
            table: base.parse().expect("the base config is TOML"),
            clients: Vec::new(),
            issuers: Vec::new(),
        }
    }

    /// Sets `[section] key = value`.
    pub fn set(mut self, section: &str, key: &str, value: impl Into<Value>) -> TestConfig {
        let section = self
            .table
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("a section is a table");
        section.insert(key.to_owned(), value.into());
        self
    }

    /// Removes `[section] key`.
    pub fn unset(mut self, section: &str, key: &str) -> TestConfig {
        if let Some(section) = self.table.get_mut(section).and_then(Value::as_table_mut) {
            section.remove(key);
        }
        self
    }

    /// `[keys] algorithms`.
    pub fn algorithms(self, algorithms: &[&str]) -> TestConfig {
        self.set("keys", "algorithms", strings(algorithms))
    }

    /// `[issuer] issuer`.
    pub fn issuer(self, issuer: &str) -> TestConfig {
        self.set("issuer", "issuer", issuer)
    }

    /// A `[[clients]]` entry.
    pub fn client(mut self, client: Client) -> TestConfig {
        self.clients.push(client.table);
        self
    }

    /// An `[[issuers]]` entry named `name` for the URL `issuer`, with this
    /// config's `[keys]` as they stand now.
    pub fn issuer_entry(&self, name: &str, issuer: &str) -> TestIssuer {
        let mut table = Table::new();
        table.insert("name".to_owned(), name.into());
        table.insert("issuer".to_owned(), issuer.into());
        if let Some(keys) = self.table.get("keys") {
            table.insert("keys".to_owned(), keys.clone());
        }
        TestIssuer {
            table,
            clients: Vec::new(),
        }
    }

    /// Adds an `[[issuers]]` entry.
    pub fn with_issuer(mut self, issuer: TestIssuer) -> TestConfig {
        let mut table = issuer.table;
        if !issuer.clients.is_empty() {
            table.insert(
                "clients".to_owned(),
                Value::Array(issuer.clients.into_iter().map(Value::Table).collect()),
            );
        }
        self.issuers.push(table);
        self
    }

    /// The config file's text.
    pub fn build(&self) -> String {
        let mut table = self.table.clone();
        if !self.issuers.is_empty() {
            table.insert(
                "issuers".to_owned(),
                Value::Array(self.issuers.iter().cloned().map(Value::Table).collect()),
            );
        }
        if !self.clients.is_empty() {
            table.insert(
                "clients".to_owned(),
                Value::Array(self.clients.iter().cloned().map(Value::Table).collect()),
            );
        }
        toml::to_string(&table).expect("a config serializes")
    }
}

/// One `[[issuers]]` entry under construction.
#[derive(Clone, Debug)]
pub struct TestIssuer {
    table: Table,
    clients: Vec<Table>,
}

impl TestIssuer {
    /// Sets `key = value` in the entry (`token_lifetime`, `store`...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> TestIssuer {
        self.table.insert(key.to_owned(), value.into());
        self
    }

    /// Sets `[issuers.keys] key = value`.
    pub fn keys(mut self, key: &str, value: impl Into<Value>) -> TestIssuer {
        self.table
            .entry("keys")
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("keys is a table")
            .insert(key.to_owned(), value.into());
        self
    }

    /// `[issuers.keys] algorithms`.
    pub fn algorithms(self, algorithms: &[&str]) -> TestIssuer {
        self.keys("algorithms", strings(algorithms))
    }

    /// A `[[issuers.clients]]` entry.
    pub fn client(mut self, client: Client) -> TestIssuer {
        self.clients.push(client.table);
        self
    }
}

/// One `[[clients]]` entry.
#[derive(Clone, Debug)]
pub struct Client {
    table: Table,
}

impl Client {
    /// A client `id` whose secret is `secret` (hashed by the binary under test,
    /// once per build: [`hash_secret_once`]).
    pub fn new(id: &str, secret: &str) -> Client {
        let mut table = Table::new();
        table.insert("id".to_owned(), id.into());
        table.insert("secret_hash".to_owned(), hash_secret_once(secret).into());
        Client { table }
    }

    /// `audiences` (the first is the default).
    pub fn audiences(self, audiences: &[&str]) -> Client {
        self.with("audiences", strings(audiences))
    }

    /// `scopes`.
    pub fn scopes(self, scopes: &[&str]) -> Client {
        self.with("scopes", strings(scopes))
    }

    /// `roles`: `issuer`, `admin`.
    pub fn roles(self, roles: &[&str]) -> Client {
        self.with("roles", strings(roles))
    }

    /// `algorithm`: the family its tokens are signed with.
    pub fn algorithm(self, algorithm: &str) -> Client {
        self.with("algorithm", algorithm)
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Client {
        self.table.insert(key.to_owned(), value.into());
        self
    }
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|item| Value::from(*item)).collect())
}
