//! Clients and their secrets: who may ask for what ([`ClientConfig`], [`Role`]),
//! the slow, salted hash of each secret kept in the config, and its check.
//!
//! Hashes are Argon2id PHC strings (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`), made
//! by `jwkd hash-secret`. The secret itself never appears in config, logs or errors.

use argon2::Argon2;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::keys::Algorithm;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};

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

fn hash_with(secret: &str, argon: &Argon2<'_>) -> Result<String, String> {
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
/// cost and at most [`MAX_M_COST`] KiB and [`MAX_T_COST`] passes, for config
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
    let text =
        std::fs::read_to_string(path).map_err(|err| format!("cannot read {shown}: {err}"))?;
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

/// Checks client credentials against the configured clients.
///
/// Argon2id is deliberately slow (tens of milliseconds), too slow to pay on every
/// token request. After a successful check the authenticator remembers an HMAC
/// of the secret under a random per-process key, and accepts the same secret
/// again by comparing HMACs in constant time. Anything else (an unknown client,
/// a wrong secret, a changed hash) takes the one full path: an Argon2 check,
/// against a dummy hash when the client is unknown, so the two cost the same.
///
/// Full checks are bounded work. They run on [`HashLimits::concurrent`] threads
/// of their own (each Argon2 check holds ~19 MiB, and memory a thread freed stays
/// with that thread's allocator arena, so a fixed few threads is also what keeps
/// the resident set small), fed by a queue of [`HashLimits::waiting`] places. A
/// check asked for when the queue is full is refused at once ([`Busy`]) and
/// nothing is hashed; a queued check whose request was abandoned is skipped
/// when its turn comes. The remembered path never waits behind the queue, and
/// the runtime's blocking pool (store I/O, key generation) never sees a hash.
pub struct Authenticator {
    clients: HashMap<String, Arc<ClientConfig>>,
    remembered: Mutex<HashMap<String, Remembered>>,
    mac_key: hmac::Key,
    dummy_hash: String,
    jobs: std::sync::mpsc::SyncSender<Job>,
    counts: Arc<Counts>,
}

/// How many Argon2 checks run at once.
pub const MAX_CONCURRENT_HASHES: usize = 2;

/// How many full checks may wait for a turn; beyond that a check is refused.
/// At ~20 ms a hash on two threads, the last in line waits about half a second.
pub const MAX_WAITING_CHECKS: usize = 64;

/// The bounds on full checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashLimits {
    /// Checks that run at once (threads).
    pub concurrent: usize,
    /// Checks that may wait.
    pub waiting: usize,
}

impl Default for HashLimits {
    fn default() -> Self {
        HashLimits {
            concurrent: MAX_CONCURRENT_HASHES,
            waiting: MAX_WAITING_CHECKS,
        }
    }
}

/// Too many credential checks are running and waiting: try again shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many client authentications in progress; try again shortly")]
pub struct Busy;

/// One full check for a hashing thread.
struct Job {
    secret: zeroize::Zeroizing<String>,
    secret_hash: String,
    reply: tokio::sync::oneshot::Sender<bool>,
}

#[derive(Default)]
struct Counts {
    full_checks: AtomicU64,
    refused: AtomicU64,
    abandoned: AtomicU64,
}

/// Starts the hashing threads; they end when the returned sender is dropped.
fn start_hashers(
    limits: HashLimits,
    counts: &Arc<Counts>,
) -> Result<std::sync::mpsc::SyncSender<Job>, String> {
    let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(limits.waiting);
    let queue = Arc::new(Mutex::new(queue));
    for worker in 0..limits.concurrent.max(1) {
        let queue = Arc::clone(&queue);
        let counts = Arc::clone(counts);
        std::thread::Builder::new()
            .name(format!("jwkd-argon2-{worker}"))
            .spawn(move || {
                let mut memory = HashMemory::default();
                loop {
                    // The lock is only held while taking a job, never while hashing.
                    let job = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv();
                    let Ok(job) = job else {
                        return;
                    };
                    if job.reply.is_closed() {
                        counts.abandoned.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    counts.full_checks.fetch_add(1, Ordering::Relaxed);
                    let matches = verify_secret_in(&job.secret, &job.secret_hash, &mut memory);
                    let _ = job.reply.send(matches);
                }
            })
            .map_err(|err| format!("cannot start a hashing thread: {err}"))?;
    }
    Ok(jobs)
}

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
        Authenticator::with_limits(clients, HashLimits::default())
    }

    /// An authenticator with these bounds on full checks.
    ///
    /// # Errors
    /// When the random key or the dummy hash cannot be made.
    pub fn with_limits(
        clients: &[ClientConfig],
        limits: HashLimits,
    ) -> Result<Authenticator, String> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mac_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| "cannot draw a random key".to_owned())?;
        let mut dummy_secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut dummy_secret)
            .map_err(|_| "cannot draw a random secret".to_owned())?;
        // An unknown client costs what a known one costs: the dummy hash has the
        // parameters of the configured hashes (the first client's), else the default.
        let argon = clients
            .first()
            .and_then(|client| PasswordHash::new(&client.secret_hash).ok())
            .and_then(|parsed| argon2::Params::try_from(&parsed).ok())
            .map_or_else(Argon2::default, |params| {
                Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            });
        let dummy_hash = hash_with(&URL_SAFE_NO_PAD.encode(dummy_secret), &argon)?;
        let counts = Arc::new(Counts::default());
        Ok(Authenticator {
            clients: clients
                .iter()
                .map(|client| (client.id.clone(), Arc::new(client.clone())))
                .collect(),
            remembered: Mutex::new(HashMap::new()),
            mac_key,
            dummy_hash,
            jobs: start_hashers(limits, &counts)?,
            counts,
        })
    }

    /// Whether `client_id` is a configured client.
    pub fn knows(&self, client_id: &str) -> bool {
        self.clients.contains_key(client_id)
    }

    /// The client with this id and secret if the secret is the one remembered
    /// from an earlier full check: no hashing, no waiting.
    pub fn remembered(&self, client_id: &str, secret: &str) -> Option<Arc<ClientConfig>> {
        let client = self.clients.get(client_id)?;
        self.remembers(client_id, &client.secret_hash, secret)
            .then(|| Arc::clone(client))
    }

    /// The client with this id and secret, or `None` for an unknown client or a
    /// wrong secret alike.
    ///
    /// # Errors
    /// [`Busy`] when a full check is needed and the queue for them is full.
    pub async fn authenticate(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<Arc<ClientConfig>>, Busy> {
        let client = self.clients.get(client_id).cloned();
        // Borrowed: the remembered path (every token request after the first) allocates nothing.
        let secret_hash: &str = client
            .as_deref()
            .map_or(&self.dummy_hash, |client| &client.secret_hash);
        if client.is_some() && self.remembers(client_id, secret_hash, secret) {
            return Ok(client);
        }
        let matches = self.full_check(secret, secret_hash.to_owned()).await?;
        Ok(match client {
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
        })
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

    async fn full_check(&self, secret: &str, secret_hash: String) -> Result<bool, Busy> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            secret: zeroize::Zeroizing::new(secret.to_owned()),
            secret_hash,
            reply,
        };
        if self.jobs.try_send(job).is_err() {
            // Full (or, never while `self` lives, no hashing thread left).
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Busy);
        }
        Ok(answer.await.unwrap_or(false))
    }

    /// How many full Argon2 checks have run: for tests and metrics.
    pub fn full_checks(&self) -> u64 {
        self.counts.full_checks.load(Ordering::Relaxed)
    }

    /// How many full checks were refused because the queue was full.
    pub fn refused_checks(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// How many queued checks were skipped because their request was gone.
    pub fn abandoned_checks(&self) -> u64 {
        self.counts.abandoned.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, secret: &str) -> ClientConfig {
        ClientConfig {
            id: id.into(),
            // Short test secrets: the length rule is `hash-secret`'s, not the hash's.
            secret_hash: hash_with(secret, &Argon2::default()).unwrap(),
            audiences: vec!["api".into()],
            scopes: vec![],
            roles: Default::default(),
            algorithm: Algorithm::Es256,
        }
    }

    #[tokio::test]
    async fn unknown_client_and_wrong_secret_take_the_same_path() {
        let auth = Authenticator::new(&[client("orders", "right")]).unwrap();
        assert!(
            auth.authenticate("orders", "right")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(auth.full_checks(), 1);
        // The remembered secret is accepted without another Argon2 check.
        assert!(
            auth.authenticate("orders", "right")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(auth.full_checks(), 1);
        // A wrong secret and an unknown client each cost exactly one full check.
        assert!(
            auth.authenticate("orders", "wrong")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(auth.full_checks(), 2);
        assert!(
            auth.authenticate("nobody", "right")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(auth.full_checks(), 3);
        assert!(auth.authenticate("orders", "").await.unwrap().is_none());
        assert_eq!(auth.full_checks(), 4);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_abandoned_checks_never_hash() {
        let limits = HashLimits {
            concurrent: 1,
            waiting: 2,
        };
        let auth =
            Arc::new(Authenticator::with_limits(&[client("orders", "right")], limits).unwrap());
        // Ten checks at once: one runs, two wait, seven are refused without hashing.
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move { auth.authenticate("nobody", "guess").await })
            })
            .collect();
        let mut busy = 0;
        for task in tasks {
            match task.await.unwrap() {
                Err(Busy) => busy += 1,
                Ok(found) => assert!(found.is_none()),
            }
        }
        // One is taken by the thread at once (or a moment later), two wait.
        assert!((7..=8).contains(&busy), "{busy} refused");
        assert_eq!(auth.refused_checks(), busy);
        assert_eq!(auth.full_checks(), 10 - busy);

        // Checks abandoned while they wait never start a hash.
        let auth = Arc::new(
            Authenticator::with_limits(
                &[client("orders", "right")],
                HashLimits {
                    concurrent: 1,
                    waiting: 8,
                },
            )
            .unwrap(),
        );
        let running = {
            let auth = Arc::clone(&auth);
            tokio::spawn(async move { auth.authenticate("nobody", "guess").await })
        };
        tokio::task::yield_now().await;
        let abandoned: Vec<_> = (0..2)
            .map(|_| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move { auth.authenticate("nobody", "guess").await })
            })
            .collect();
        tokio::task::yield_now().await;
        for task in &abandoned {
            task.abort();
        }
        assert!(running.await.unwrap().unwrap().is_none());
        let before = auth.full_checks();
        // The real client still gets in: its check comes after the abandoned ones.
        assert!(
            auth.authenticate("orders", "right")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            auth.full_checks(),
            before + 1,
            "an abandoned check was hashed"
        );
        assert_eq!(auth.abandoned_checks(), 2);
    }

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
