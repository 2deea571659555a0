//! Clients and their secrets: who may ask for what ([`ClientConfig`], [`Role`]),
//! the slow, salted hash of each secret kept in the config, and its check.
//!
//! Hashes are Argon2id PHC strings (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`), made
//! by `jwkd hash-secret`. The secret itself never appears in config, logs or errors.
//!
//! # Layout
//! - this file: [`Role`] and [`ClientConfig`];
//! - `hash.rs`: making a hash, checking its format and cost, reading one from a
//!   `secret_hash_file`, and checking a secret against it;
//! - `authenticator.rs`: [`Authenticator`], which checks presented credentials
//!   with bounded work.

mod authenticator;
mod hash;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::keys::Algorithm;

pub use authenticator::{
    Authenticator, Busy, HashLimits, MAX_CONCURRENT_HASHES, MAX_WAITING_CHECKS,
};
pub use hash::{
    HashMemory, MIN_SECRET_CHARS, check_hash_format, generate_secret, hash_secret,
    read_secret_hash_file, verify_secret, verify_secret_in,
};

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// May pull signing keys and use `/v1/sign`.
    Issuer,
    /// May rotate and revoke over HTTP.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 2] = [Role::Issuer, Role::Admin];
}

/// The role's name in the config (`roles = ["issuer"]`) and in messages.
impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Issuer => "issuer",
            Role::Admin => "admin",
        })
    }
}

impl FromStr for Role {
    type Err = String;

    /// The role that [`Display`](fmt::Display) names `name`.
    fn from_str(name: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.to_string() == name)
            .ok_or_else(|| {
                let known: Vec<String> = Role::ALL
                    .iter()
                    .map(|role| format!("{:?}", role.to_string()))
                    .collect();
                format!("unknown role {name:?} (expected {})", known.join(" or "))
            })
    }
}

/// One configured client (a `[[clients]]` entry): its id, the hash of its
/// secret, and what it may ask for.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Client id.
    pub id: String,
    /// PHC string of the secret's Argon2id hash.
    pub secret_hash: String,
    /// Audiences it may ask for, first = default.
    pub audiences: Vec<String>,
    /// Scopes it may ask for.
    pub scopes: Vec<String>,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Family its tokens are signed with.
    pub algorithm: Algorithm,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_read_back() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
        }
        assert_eq!(Role::Admin.to_string(), "admin");
        assert_eq!(
            "root".parse::<Role>(),
            Err(r#"unknown role "root" (expected "issuer" or "admin")"#.to_owned())
        );
    }
}
