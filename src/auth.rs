//! Client secrets: the slow, salted hash kept in the config, and its check.
//!
//! Hashes are Argon2id PHC strings (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`), made
//! by `jwkd hash-secret`. The secret itself never appears in config, logs or errors.

use argon2::Argon2;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

use crate::config::ClientConfig;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashes a client secret for the config file.
///
/// # Errors
/// When the secret is empty or the hasher fails.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    if secret.is_empty() {
        return Err("the secret is empty".into());
    }
    let mut salt_bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt_bytes).map_err(|_| "cannot draw a random salt".to_owned())?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|err| format!("cannot encode the salt: {err}"))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| format!("cannot hash the secret: {err}"))
}

/// Checks that `hash` is an Argon2 PHC string, for config validation.
///
/// # Errors
/// A message saying what is wrong, without repeating the value.
pub fn check_hash_format(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash)
        .map_err(|_| "is not a PHC hash string (make one with `jwkd hash-secret`)".to_owned())?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "uses {}, expected argon2id (make one with `jwkd hash-secret`)",
            parsed.algorithm
        ));
    }
    Ok(())
}

/// Whether `secret` matches `hash`. Argon2's comparison is constant-time.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Checks client credentials against the configured clients.
///
/// Argon2id is deliberately slow (tens of milliseconds), too slow to pay on every
/// token request. After a successful check the authenticator remembers an HMAC
/// of the secret under a random per-process key, and accepts the same secret
/// again by comparing HMACs in constant time. Anything else (an unknown client,
/// a wrong secret, a changed hash) takes the one full path: an Argon2 check,
/// against a dummy hash when the client is unknown, so the two cost the same.
/// Full checks run on the blocking pool, at most [`MAX_CONCURRENT_HASHES`] at a time.
pub struct Authenticator {
    clients: HashMap<String, Arc<ClientConfig>>,
    remembered: Mutex<HashMap<String, Remembered>>,
    mac_key: hmac::Key,
    dummy_hash: String,
    hashing: Semaphore,
    full_checks: AtomicU64,
}

/// How many Argon2 checks may run at once; the rest wait.
pub const MAX_CONCURRENT_HASHES: usize = 2;

struct Remembered {
    secret_hash: String,
    tag: hmac::Tag,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for these clients.
    ///
    /// # Errors
    /// When the random key or the dummy hash cannot be made.
    pub fn new(clients: &[ClientConfig]) -> Result<Authenticator, String> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mac_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| "cannot draw a random key".to_owned())?;
        let mut dummy_secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut dummy_secret)
            .map_err(|_| "cannot draw a random secret".to_owned())?;
        let dummy_hash = hash_secret(&URL_SAFE_NO_PAD.encode(dummy_secret))?;
        Ok(Authenticator {
            clients: clients
                .iter()
                .map(|client| (client.id.clone(), Arc::new(client.clone())))
                .collect(),
            remembered: Mutex::new(HashMap::new()),
            mac_key,
            dummy_hash,
            hashing: Semaphore::new(MAX_CONCURRENT_HASHES),
            full_checks: AtomicU64::new(0),
        })
    }

    /// The client with this id and secret, or `None` for an unknown client or a
    /// wrong secret alike.
    pub async fn authenticate(&self, client_id: &str, secret: &str) -> Option<Arc<ClientConfig>> {
        let client = self.clients.get(client_id).cloned();
        // Borrowed: the remembered path (every token request after the first) allocates nothing.
        let secret_hash: &str = client
            .as_deref()
            .map_or(&self.dummy_hash, |client| &client.secret_hash);
        if client.is_some() && self.remembers(client_id, secret_hash, secret) {
            return client;
        }
        let matches = self.full_check(secret, secret_hash.to_owned()).await;
        match client {
            Some(client) if matches => {
                let tag = hmac::sign(&self.mac_key, secret.as_bytes());
                let remembered = Remembered {
                    secret_hash: client.secret_hash.clone(),
                    tag,
                };
                self.lock_remembered()
                    .insert(client_id.to_owned(), remembered);
                Some(client)
            }
            _ => None,
        }
    }

    fn lock_remembered(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remembers(&self, client_id: &str, secret_hash: &str, secret: &str) -> bool {
        let remembered = self.lock_remembered();
        remembered.get(client_id).is_some_and(|entry| {
            entry.secret_hash == secret_hash
                && hmac::verify(&self.mac_key, secret.as_bytes(), entry.tag.as_ref()).is_ok()
        })
    }

    async fn full_check(&self, secret: &str, secret_hash: String) -> bool {
        self.full_checks.fetch_add(1, Ordering::Relaxed);
        // The semaphore is never closed, so acquiring only fails if it were.
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let secret = zeroize::Zeroizing::new(secret.to_owned());
        tokio::task::spawn_blocking(move || verify_secret(&secret, &secret_hash))
            .await
            .unwrap_or(false)
    }

    /// How many full Argon2 checks have run: for tests and metrics.
    pub fn full_checks(&self) -> u64 {
        self.full_checks.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, secret: &str) -> ClientConfig {
        ClientConfig {
            id: id.into(),
            secret_hash: hash_secret(secret).unwrap(),
            audiences: vec!["api".into()],
            scopes: vec![],
            roles: Default::default(),
            algorithm: crate::keys::Algorithm::Es256,
        }
    }

    #[tokio::test]
    async fn unknown_client_and_wrong_secret_take_the_same_path() {
        let auth = Authenticator::new(&[client("orders", "right")]).unwrap();
        assert!(auth.authenticate("orders", "right").await.is_some());
        assert_eq!(auth.full_checks(), 1);
        // The remembered secret is accepted without another Argon2 check.
        assert!(auth.authenticate("orders", "right").await.is_some());
        assert_eq!(auth.full_checks(), 1);
        // A wrong secret and an unknown client each cost exactly one full check.
        assert!(auth.authenticate("orders", "wrong").await.is_none());
        assert_eq!(auth.full_checks(), 2);
        assert!(auth.authenticate("nobody", "right").await.is_none());
        assert_eq!(auth.full_checks(), 3);
        assert!(auth.authenticate("orders", "").await.is_none());
        assert_eq!(auth.full_checks(), 4);
    }

    #[test]
    fn hash_then_verify() {
        let hash = hash_secret("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(verify_secret("correct horse", &hash));
        assert!(!verify_secret("wrong horse", &hash));
        assert!(check_hash_format(&hash).is_ok());
        assert!(check_hash_format("correct horse").is_err());
        assert!(hash_secret("").is_err());
    }
}
