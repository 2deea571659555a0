//! Client-secret hashes: Argon2id PHC strings made by `jwkd hash-secret`, kept
//! in the config or a `secret_hash_file`, their format and cost checked when the
//! config is read, and a secret checked against one in constant time.

use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The shortest client secret `jwkd hash-secret` takes.
pub const MIN_SECRET_CHARS: usize = 8;

/// Argon2id costs below OWASP's minimum (memory in KiB, at that many passes)
/// are refused: 46 MiB x 1, 19 MiB x 2, 12 MiB x 3, 9 MiB x 4, 7 MiB x 5.
const OWASP_MINIMUM: [(u32, u32); 5] = [
    (47_104, 1),
    (19_456, 2),
    (12_288, 3),
    (9_216, 4),
    (7_168, 5),
];

/// The most memory (KiB) and passes a configured hash may ask for: more would
/// let one config line make every check hold gigabytes or take seconds.
const MAX_M_COST: u32 = 256 * 1024;
const MAX_T_COST: u32 = 10;

/// Hashes a client secret for the config file (Argon2id, 19 MiB, 2 passes).
///
/// # Errors
/// When the secret is shorter than [`MIN_SECRET_CHARS`] or the hasher fails.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    if secret.chars().count() < MIN_SECRET_CHARS {
        return Err(format!(
            "the secret is {} characters long; a client secret needs at least {MIN_SECRET_CHARS} \
             (`jwkd hash-secret --generate` makes a strong one)",
            secret.chars().count()
        ));
    }
    hash_with(secret, &Argon2::default())
}

/// A new random secret of 256 bits, in an alphabet that needs no encoding in
/// HTTP Basic or a form body (base64url), and its hash.
///
/// # Errors
/// When there is no randomness or the hasher fails.
pub fn generate_secret() -> Result<(zeroize::Zeroizing<String>, String), String> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| "cannot draw a random secret".to_owned())?;
    let secret = zeroize::Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()));
    let hash = hash_with(&secret, &Argon2::default())?;
    Ok((secret, hash))
}

/// Hashes `secret` at `argon`'s costs with a fresh random salt.
pub(super) fn hash_with(secret: &str, argon: &Argon2<'_>) -> Result<String, String> {
    let mut salt_bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt_bytes).map_err(|_| "cannot draw a random salt".to_owned())?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|err| format!("cannot encode the salt: {err}"))?;
    argon
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| format!("cannot hash the secret: {err}"))
}

/// Checks that `hash` is an Argon2id PHC string with at least OWASP's minimum
/// cost and at most `MAX_M_COST` KiB and `MAX_T_COST` passes, for config
/// validation.
///
/// # Errors
/// A message saying what is wrong, without repeating the value.
pub fn check_hash_format(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash)
        .map_err(|_| "is not a PHC hash string (make one with `jwkd hash-secret`)".to_owned())?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "uses {}, expected argon2id (make one with `jwkd hash-secret`)",
            parsed.algorithm
        ));
    }
    let params = argon2::Params::try_from(&parsed)
        .map_err(|err| format!("has unusable Argon2 parameters: {err}"))?;
    let (m_cost, t_cost) = (params.m_cost(), params.t_cost());
    if !OWASP_MINIMUM
        .iter()
        .any(|&(memory, passes)| m_cost >= memory && t_cost >= passes)
    {
        return Err(format!(
            "costs m={m_cost} KiB, t={t_cost}: below OWASP's minimum for Argon2id (e.g. m=19456, \
             t=2); make a new one with `jwkd hash-secret`"
        ));
    }
    if m_cost > MAX_M_COST || t_cost > MAX_T_COST {
        return Err(format!(
            "costs m={m_cost} KiB, t={t_cost}: more than jwkd checks (at most m={MAX_M_COST}, \
             t={MAX_T_COST}); make a new one with `jwkd hash-secret`"
        ));
    }
    Ok(())
}

/// The largest `secret_hash_file` read.
const MAX_HASH_FILE_BYTES: u64 = 4096;

/// Reads a client's secret hash kept outside the config (`secret_hash_file`):
/// a regular file that only its owner may read (0600 or 0400, as systemd's
/// `LoadCredential=` makes them under `/run/credentials/<unit>/`).
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn read_secret_hash_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|err| format!("cannot read {shown}: {err}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} is readable or writable by others than its owner (mode {mode:04o}): \
             run `chmod 600 {shown}`"
        ));
    }
    // A hash is about a hundred bytes: read no more than a few of them, so
    // a path to a large file is an error, not gigabytes in memory.
    if meta.len() > MAX_HASH_FILE_BYTES {
        return Err(format!(
            "{shown} is {} bytes; a hash file holds one line of at most {MAX_HASH_FILE_BYTES}",
            meta.len()
        ));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(|err| format!("cannot read {shown}: {err}"))?,
            MAX_HASH_FILE_BYTES + 1,
        ),
        &mut text,
    )
    .map_err(|err| format!("cannot read {shown}: {err}"))?;
    let hash = text.trim();
    if hash.is_empty() || hash.lines().count() != 1 {
        return Err(format!(
            "{shown} must hold one line: the output of `jwkd hash-secret`"
        ));
    }
    Ok(hash.to_owned())
}

/// Whether `secret` matches `hash`. The comparison is constant-time.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    verify_secret_in(secret, hash, &mut HashMemory::default())
}

/// Argon2's working memory, kept by a hashing thread and reused for every check,
/// so that checks neither allocate ~19 MiB each nor leave it to the allocator.
#[derive(Default)]
pub struct HashMemory(Vec<argon2::Block>);

#[cfg(test)]
impl HashMemory {
    /// How many Argon2 blocks it holds: the most a check in it has used.
    pub(super) fn blocks(&self) -> usize {
        self.0.len()
    }
}

/// [`verify_secret`], hashing in `memory` (grown once to the hash's cost).
pub fn verify_secret_in(secret: &str, hash: &str, memory: &mut HashMemory) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        argon2::Algorithm::try_from(parsed.algorithm),
        argon2::Params::try_from(&parsed),
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map(argon2::Version::try_from).transpose() else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.0.len() < blocks {
        memory.0.resize(blocks, argon2::Block::default());
    }
    let mut computed = vec![0u8; expected.len()];
    Argon2::new(algorithm, version.unwrap_or_default(), params)
        .hash_password_into_with_memory(
            secret.as_bytes(),
            salt,
            &mut computed,
            &mut memory.0[..blocks],
        )
        .is_ok()
        // `Output`'s equality is constant-time.
        && argon2::password_hash::Output::new(&computed).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path to a large file (a swap file is 0600 and regular) is an error
    /// naming its size, not a read of all of it.
    #[test]
    fn a_hash_file_is_read_only_up_to_its_bound() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'a'; 64 * 1024]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_secret_hash_file(&path).unwrap_err();
        assert!(
            err.ends_with("is 65536 bytes; a hash file holds one line of at most 4096"),
            "{err}"
        );
        std::fs::write(&path, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA\n").unwrap();
        assert_eq!(
            read_secret_hash_file(&path).unwrap(),
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
        );
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
        let short = hash_secret("short").unwrap_err();
        assert!(
            short.contains("at least 8") && short.contains("--generate"),
            "{short}"
        );
        let (secret, hash) = generate_secret().unwrap();
        assert_eq!(secret.len(), 43);
        assert!(
            secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(verify_secret(&secret, &hash));
        // Weak or foreign hashes are refused by the config check.
        let hashed = |algorithm, m_cost, t_cost| {
            let params = argon2::Params::new(m_cost, t_cost, 1, None).unwrap();
            let argon = Argon2::new(algorithm, argon2::Version::V0x13, params);
            hash_with("correct horse", &argon).unwrap()
        };
        let weak = hashed(argon2::Algorithm::Argon2id, 4096, 1);
        assert!(
            check_hash_format(&weak)
                .unwrap_err()
                .contains("below OWASP's minimum")
        );
        let argon2i = hashed(argon2::Algorithm::Argon2i, 19_456, 2);
        assert!(
            check_hash_format(&argon2i)
                .unwrap_err()
                .contains("expected argon2id")
        );
        let huge = hashed(argon2::Algorithm::Argon2id, 19_456, 11);
        assert!(
            check_hash_format(&huge)
                .unwrap_err()
                .contains("more than jwkd checks")
        );
    }
}
