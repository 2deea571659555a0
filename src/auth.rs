//! Client secrets: the slow, salted hash kept in the config, and its check.
//!
//! Hashes are Argon2id PHC strings (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`), made
//! by `jwkd hash-secret`. The secret itself never appears in config, logs or errors.

use argon2::Argon2;
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

#[cfg(test)]
mod tests {
    use super::*;

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
