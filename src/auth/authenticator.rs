//! [`Authenticator`]: presented client credentials checked against the
//! configured clients, a remembered secret without hashing, and every full
//! check on a few shared threads, behind a bounded queue per authenticator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{Output, PasswordHash, Salt};
use aws_lc_rs::hmac;

use super::ClientConfig;
use super::hash::{HashMemory, verify_secret_in};

/// Checks client credentials against the configured clients.
///
/// Argon2id is deliberately slow (tens of milliseconds), too slow to pay on every
/// token request. After a successful check the authenticator remembers an HMAC
/// of the secret under a random per-process key, and accepts the same secret
/// again by comparing HMACs in constant time. Anything else (an unknown client,
/// a wrong secret, a changed hash) takes the one full path: an Argon2 check,
/// against a dummy hash when the client is unknown, so the two cost the same.
///
/// Making one costs nothing worth waiting for before the daemon is ready: no
/// Argon2 hash (the dummy hash is written, not computed: see `dummy_hash`) and
/// no randomness (the HMAC key is drawn at the first successful full check, on
/// a hashing thread; the first draw in a process seeds aws-lc's generator from
/// CPU jitter, tens of milliseconds).
///
/// Full checks are bounded work. They run on [`HashLimits::concurrent`] threads
/// of their own (each Argon2 check holds ~19 MiB, and memory a thread freed stays
/// with that thread's allocator arena, so a fixed few threads is also what keeps
/// the resident set small), fed by a lane of [`HashLimits::waiting`] places per
/// authenticator, served in turn.
/// [`Authenticator::new`] uses the process's one set of them (`Hashers`), for
/// every issuer and across reloads: new threads per reload left ~20 MiB behind
/// each time, without bound. A
/// check asked for when its lane is full is refused at once ([`Busy`]) and
/// nothing is hashed; a queued check whose request was abandoned is skipped
/// when its turn comes. The remembered path never waits behind the queue, and
/// the runtime's blocking pool (store I/O, key generation) never sees a hash.
pub struct Authenticator {
    clients: HashMap<String, Arc<ClientConfig>>,
    remembered: Mutex<HashMap<String, Remembered>>,
    /// Drawn by a hashing thread before it answers the first match, so that it
    /// is there whenever a match is remembered.
    mac_key: Arc<OnceLock<hmac::Key>>,
    dummy_hash: String,
    hashers: Hashers,
    /// This authenticator's lane on `hashers`.
    lane: u64,
    counts: Arc<Counts>,
}

/// How many Argon2 checks run at once.
pub const MAX_CONCURRENT_HASHES: usize = 2;

/// How many full checks may wait for a turn, per authenticator (issuer);
/// beyond that a check is refused.
/// At ~20 ms a hash on two threads, the last in line waits about half a second.
pub const MAX_WAITING_CHECKS: usize = 64;

/// The bounds on full checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashLimits {
    /// Checks that run at once (threads).
    pub concurrent: usize,
    /// Checks that may wait, per authenticator.
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

/// One full check for a hashing thread, with the authenticator's own counts
/// and HMAC key (threads serve every authenticator).
struct Job {
    secret: zeroize::Zeroizing<String>,
    secret_hash: String,
    reply: tokio::sync::oneshot::Sender<bool>,
    counts: Arc<Counts>,
    mac_key: Arc<OnceLock<hmac::Key>>,
}

#[derive(Default)]
struct Counts {
    full_checks: AtomicU64,
    refused: AtomicU64,
    abandoned: AtomicU64,
}

/// The HMAC key of remembered secrets, drawn if it is not yet: `None` only when
/// there is no randomness.
fn mac_key_of(cell: &OnceLock<hmac::Key>) -> Option<&hmac::Key> {
    if let Some(key) = cell.get() {
        return Some(key);
    }
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).ok()?;
    // Two threads may both draw one; the first stored is the one everybody uses.
    Some(cell.get_or_init(|| key))
}

/// The hash an unknown client's secret is checked against, so that its check
/// costs what a configured client's costs: the first client's algorithm,
/// version, memory, passes, lanes, salt length and output length (else those of
/// `jwkd hash-secret`), with a salt and an expected output of zeros.
///
/// Nothing is hashed to make it, and nothing needs to be: the work of a check
/// depends on those parameters and lengths only, never on the salt's or the
/// output's bytes; and what a check against it answers is never used, since an
/// unknown client is refused whatever it presents.
fn dummy_hash(clients: &[ClientConfig]) -> String {
    clients
        .first()
        .and_then(|client| dummy_like(&client.secret_hash))
        .or_else(|| {
            let params = argon2::Params::default();
            let default = format!(
                "$argon2id$v=19$m={},t={},p={}${}${}",
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                // A 16-byte salt (`SaltString::generate`'s) and a 32-byte output.
                "A".repeat(22),
                "A".repeat(43)
            );
            dummy_like(&default)
        })
        .unwrap_or_default()
}

/// `hash` with its salt and output replaced by zeros of the same lengths;
/// `None` when `hash` is not a usable Argon2 hash.
fn dummy_like(hash: &str) -> Option<String> {
    let model = PasswordHash::new(hash).ok()?;
    argon2::Algorithm::try_from(model.algorithm).ok()?;
    argon2::Params::try_from(&model).ok()?;
    // 'A' is base64 for six zero bits: a salt of as many characters decodes
    // to as many bytes as the model's.
    let salt = "A".repeat(model.salt?.as_str().len());
    let dummy = PasswordHash {
        salt: Some(Salt::from_b64(&salt).ok()?),
        hash: Some(Output::new(&vec![0u8; model.hash?.len()]).ok()?),
        ..model
    };
    Some(dummy.to_string())
}

/// Threads that run full checks, one at a time each, taking turns between
/// the authenticators (issuers) that share them. They end when the last clone
/// is dropped.
///
/// Each authenticator has a lane of its own of [`HashLimits::waiting`] places,
/// and the threads serve the lanes with checks waiting in turn, one check
/// each: a flood on one issuer fills that issuer's lane and is refused there,
/// while a check for another issuer waits for at most one check per busy lane.
#[derive(Clone)]
pub struct Hashers {
    handle: Arc<Handle>,
}

/// Closes the lanes when the last [`Hashers`] clone goes, so the threads end.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

struct Shared {
    lanes: Mutex<Lanes>,
    wake: std::sync::Condvar,
    /// Places per lane.
    waiting: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        // Jobs are pushed and popped whole: a panic cannot leave them half-done.
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Lanes {
    /// Checks waiting, per lane; a lane with none is not here.
    waiting: HashMap<u64, std::collections::VecDeque<Job>>,
    /// Lanes with checks waiting, in the order they get their next turn.
    turns: std::collections::VecDeque<u64>,
    closed: bool,
}

impl Lanes {
    /// The next check, from the lane whose turn it is; that lane goes to the
    /// back of the line if it has more.
    fn next_job(&mut self) -> Option<Job> {
        let lane = self.turns.pop_front()?;
        let queue = self.waiting.get_mut(&lane)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(&lane);
        } else {
            self.turns.push_back(lane);
        }
        job
    }
}

/// Each authenticator's lane.
static NEXT_LANE: AtomicU64 = AtomicU64::new(0);

impl Hashers {
    /// Starts `limits.concurrent` threads, with `limits.waiting` places per
    /// authenticator's lane.
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub fn start(limits: HashLimits) -> Result<Hashers, String> {
        let shared = Arc::new(Shared {
            lanes: Mutex::new(Lanes::default()),
            wake: std::sync::Condvar::new(),
            waiting: limits.waiting,
        });
        for worker in 0..limits.concurrent.max(1) {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("jwkd-argon2-{worker}"))
                .spawn(move || hash_jobs(&shared))
                .map_err(|err| format!("cannot start a hashing thread: {err}"))?;
        }
        Ok(Hashers {
            handle: Arc::new(Handle { shared }),
        })
    }

    /// The process's hashers ([`HashLimits::default`]), started at the first
    /// call: every issuer and every reload shares them.
    ///
    /// # Errors
    /// When a thread could not be started (then, every time).
    pub fn shared() -> Result<Hashers, String> {
        static SHARED: OnceLock<Result<Hashers, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Hashers::start(HashLimits::default()))
            .clone()
    }

    /// Queues `job` in `lane`; gives it back when the lane is full.
    fn submit(&self, lane: u64, job: Job) -> Result<(), Job> {
        let shared = &self.handle.shared;
        let mut lanes = shared.lock();
        let queued = lanes.waiting.get(&lane).map_or(0, |queue| queue.len());
        if queued >= shared.waiting {
            // Checked first, so that a lane with no place left no empty entry.
            return Err(job);
        }
        let queue = lanes.waiting.entry(lane).or_default();
        queue.push_back(job);
        if queue.len() == 1 {
            lanes.turns.push_back(lane);
        }
        drop(lanes);
        shared.wake.notify_one();
        Ok(())
    }
}

/// A hashing thread: takes checks in turn until the hashers are dropped.
fn hash_jobs(shared: &Shared) {
    let mut memory = HashMemory::default();
    loop {
        // The lock is only held while taking a job, never while hashing.
        let job = {
            let mut lanes = shared.lock();
            loop {
                if let Some(job) = lanes.next_job() {
                    break job;
                }
                if lanes.closed {
                    return;
                }
                lanes = shared
                    .wake
                    .wait(lanes)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        if job.reply.is_closed() {
            job.counts.abandoned.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        job.counts.full_checks.fetch_add(1, Ordering::Relaxed);
        let matches = verify_secret_in(&job.secret, &job.secret_hash, &mut memory);
        if matches {
            // Here rather than on the runtime's threads: the first draw may
            // take tens of milliseconds. Without a key the match is not
            // remembered, and is still a match.
            let _ = mac_key_of(&job.mac_key);
        }
        let _ = job.reply.send(matches);
    }
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
    /// An authenticator for these clients, on the process's hashing threads
    /// (`Hashers::shared`). It hashes nothing and draws no randomness.
    ///
    /// # Errors
    /// When the hashing threads could not be started.
    pub fn new(clients: &[ClientConfig]) -> Result<Authenticator, String> {
        Ok(Authenticator::with_hashers(clients, Hashers::shared()?))
    }

    /// An authenticator with hashing threads of its own, within these bounds.
    ///
    /// # Errors
    /// When a hashing thread cannot be started.
    pub fn with_limits(
        clients: &[ClientConfig],
        limits: HashLimits,
    ) -> Result<Authenticator, String> {
        Ok(Authenticator::with_hashers(
            clients,
            Hashers::start(limits)?,
        ))
    }

    /// An authenticator whose full checks run on `hashers`.
    pub fn with_hashers(clients: &[ClientConfig], hashers: Hashers) -> Authenticator {
        Authenticator {
            clients: clients
                .iter()
                .map(|client| (client.id.clone(), Arc::new(client.clone())))
                .collect(),
            remembered: Mutex::new(HashMap::new()),
            hashers,
            lane: NEXT_LANE.fetch_add(1, Ordering::Relaxed),
            mac_key: Arc::new(OnceLock::new()),
            // An unknown client costs what a known one costs.
            dummy_hash: dummy_hash(clients),
            counts: Arc::new(Counts::default()),
        }
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
                // The hashing thread drew the key before it answered (`None`
                // only without randomness: then nothing is remembered).
                if let Some(key) = self.mac_key.get() {
                    let remembered = Remembered {
                        secret_hash: client.secret_hash.clone(),
                        tag: hmac::sign(key, secret.as_bytes()),
                    };
                    self.lock_remembered()
                        .insert(client_id.to_owned(), remembered);
                }
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
        // No key yet: nothing was remembered.
        let Some(key) = self.mac_key.get() else {
            return false;
        };
        let remembered = self.lock_remembered();
        remembered.get(client_id).is_some_and(|entry| {
            entry.secret_hash == secret_hash
                && hmac::verify(key, secret.as_bytes(), entry.tag.as_ref()).is_ok()
        })
    }

    async fn full_check(&self, secret: &str, secret_hash: String) -> Result<bool, Busy> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            secret: zeroize::Zeroizing::new(secret.to_owned()),
            secret_hash,
            reply,
            counts: Arc::clone(&self.counts),
            mac_key: Arc::clone(&self.mac_key),
        };
        if self.hashers.submit(self.lane, job).is_err() {
            // This authenticator's lane is full.
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
    use argon2::Argon2;
    use argon2::password_hash::PasswordHasher as _;

    use super::super::hash::hash_with;
    use super::*;
    use crate::keys::Algorithm;

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
        // (client, secret, accepted, full Argon2 checks so far): the remembered
        // secret is accepted without another check; a wrong secret, an unknown
        // client and an empty secret each cost exactly one.
        for (id, secret, accepted, full_checks) in [
            ("orders", "right", true, 1),
            ("orders", "right", true, 1),
            ("orders", "wrong", false, 2),
            ("nobody", "right", false, 3),
            ("orders", "", false, 4),
        ] {
            let outcome = auth.authenticate(id, secret).await.unwrap();
            assert_eq!(outcome.is_some(), accepted, "{id}:{secret}");
            assert_eq!(auth.full_checks(), full_checks, "{id}:{secret}");
        }
    }

    #[tokio::test]
    async fn making_one_hashes_nothing_and_the_key_is_drawn_at_the_first_match() {
        let auth = Authenticator::new(&[client("orders", "right")]).unwrap();
        assert_eq!(auth.full_checks(), 0);
        assert!(auth.mac_key.get().is_none(), "a key drawn before any check");
        // Refusals draw nothing either.
        assert!(
            auth.authenticate("nobody", "right")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            auth.authenticate("orders", "wrong")
                .await
                .unwrap()
                .is_none()
        );
        assert!(auth.mac_key.get().is_none(), "a key drawn for a refusal");
        assert!(auth.remembered("orders", "right").is_none());
        // The first match draws it, and is remembered under it.
        assert!(
            auth.authenticate("orders", "right")
                .await
                .unwrap()
                .is_some()
        );
        assert!(auth.mac_key.get().is_some());
        assert!(auth.remembered("orders", "right").is_some());
        assert_eq!(auth.full_checks(), 3);

        // No client, no hash made either: the dummy is there all the same.
        let auth = Authenticator::new(&[]).unwrap();
        assert_eq!(auth.full_checks(), 0);
        assert!(auth.mac_key.get().is_none());
        assert!(
            auth.authenticate("nobody", "guess")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(auth.full_checks(), 1, "an unknown client is not hashed");
    }

    /// The parts of a hash that decide what checking a secret against it costs.
    fn cost_of(hash: &str) -> (String, Option<u32>, argon2::Params, usize, usize) {
        let parsed = PasswordHash::new(hash).unwrap();
        (
            parsed.algorithm.to_string(),
            parsed.version,
            argon2::Params::try_from(&parsed).unwrap(),
            parsed.salt.unwrap().as_str().len(),
            parsed.hash.unwrap().len(),
        )
    }

    #[test]
    fn the_dummy_hash_costs_what_the_configured_hashes_cost() {
        let with = |m_cost, t_cost, p_cost, output_len, salt_len: usize| {
            let params = argon2::Params::new(m_cost, t_cost, p_cost, Some(output_len)).unwrap();
            let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let salt = argon2::password_hash::SaltString::encode_b64(&vec![7; salt_len]).unwrap();
            argon
                .hash_password(b"right", &salt)
                .map(|hash| hash.to_string())
                .unwrap()
        };
        let default = crate::auth::hash_secret("righteous").unwrap();
        for secret_hash in [
            default.clone(),
            with(47_104, 1, 1, 32, 16),
            with(12_288, 3, 2, 64, 32),
            with(9_216, 4, 1, 16, 8),
        ] {
            let clients = [ClientConfig {
                secret_hash: secret_hash.clone(),
                ..client("orders", "right")
            }];
            let dummy = dummy_hash(&clients);
            assert_eq!(cost_of(&dummy), cost_of(&secret_hash), "{dummy}");
            assert_ne!(dummy, secret_hash);
            // A check against it hashes in as much memory as one against the client's.
            let (mut real, mut fake) = (HashMemory::default(), HashMemory::default());
            let secret = if secret_hash == default {
                "righteous"
            } else {
                "right"
            };
            assert!(verify_secret_in(secret, &secret_hash, &mut real));
            assert!(!verify_secret_in(secret, &dummy, &mut fake));
            assert!(fake.blocks() > 0, "no Argon2 work against {dummy}");
            assert_eq!(fake.blocks(), real.blocks());
        }
        // Without clients (or with a hash it cannot read): the cost of `jwkd hash-secret`'s.
        let unreadable = ClientConfig {
            secret_hash: "not a hash".into(),
            ..client("orders", "right")
        };
        for clients in [&[][..], &[unreadable][..]] {
            assert_eq!(cost_of(&dummy_hash(clients)), cost_of(&default));
        }
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

    #[tokio::test]
    async fn a_flood_on_one_authenticator_does_not_refuse_or_hold_up_another() {
        let hashers = Hashers::start(HashLimits {
            concurrent: 1,
            waiting: 4,
        })
        .unwrap();
        let flooded = Arc::new(Authenticator::with_hashers(
            &[client("orders", "right")],
            hashers.clone(),
        ));
        let other = Authenticator::with_hashers(&[client("billing", "right")], hashers);
        // Twenty checks at once on the first: one runs, four wait, the rest
        // are refused (an unknown client: checked against the dummy hash).
        let flood: Vec<_> = (0..20)
            .map(|_| {
                let auth = Arc::clone(&flooded);
                tokio::spawn(async move { auth.authenticate("nobody", "guess").await })
            })
            .collect();
        while flooded.refused_checks() < 15 {
            tokio::task::yield_now().await;
        }
        // The other's check is neither refused nor queued behind the flood:
        // it waits for at most the check running and the flood's next turn
        // (and the thread may have started one more once it answered). Behind
        // the flood, it would come after all five.
        let found = other.authenticate("billing", "right").await;
        assert!(matches!(found, Ok(Some(_))), "{found:?}");
        let hashed_first = flooded.full_checks();
        assert!(
            hashed_first <= 3,
            "the other waited for {hashed_first} of the flood's 5 checks"
        );
        assert_eq!(other.refused_checks(), 0);
        let mut busy = 0;
        for task in flood {
            if let Err(Busy) = task.await.unwrap() {
                busy += 1;
            }
        }
        // Whether the thread took the first before the fifth came decides
        // whether four or five were accepted.
        assert!((15..=16).contains(&busy), "{busy} refused");
        assert_eq!(flooded.full_checks(), 20 - busy);
    }
}
