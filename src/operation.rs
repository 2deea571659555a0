//! A change to the stored keyset, made the one way every writer makes it:
//! the serve loop (`rotator`), the CLI verbs (`jwkd rotate`, `jwkd revoke`)
//! and the admin endpoints (through the rotator's inbox).
//!
//! The [`Planner`] decides what an [`Operation`] does to a keyset at an
//! instant (the timeline, with real keys from the [`Generator`]); [`update_store`]
//! reads, checks this host's clock, decides, and writes with a
//! compare-and-swap, and on a conflict reads again and decides again. So a
//! rotation made by `jwkd rotate` and one made by the daemon go through the
//! same code, and the loser of a race between replicas never adds a second
//! successor.

use chrono::{DateTime, Utc};

use crate::clock::{Clock, ClockEvidence, Skew, Times};
use crate::config::Config;
use crate::custody::{Custodian, KmsCustody, Pool, PoolMaker};
use crate::generator::Generator;
use crate::keys::{Algorithm, KeyError};
use crate::keyset::Keyset;
use crate::kms::KmsError;
use crate::schedule::Schedule;
use crate::store::{KeyStore, Snapshot, StoreError};
use crate::timeline::{self, Change, Plan, Policy, RevokeError};

/// How many times a writer re-reads and re-decides after conflicts before giving up.
const MAX_CONFLICT_RETRIES: usize = 32;

/// A change to the keyset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Keep the timeline going: successors, pruning.
    Maintain,
    /// Rotate every family now.
    Rotate,
    /// Withdraw a key now.
    Revoke(String),
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Revoke of a kid that is not in the keyset.
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    /// Revoke of a kid that is already revoked.
    #[error("key {0:?} is already revoked")]
    AlreadyRevoked(String),
    /// Writers kept conflicting.
    #[error("gave up after {MAX_CONFLICT_RETRIES} conflicting writes to the store")]
    TooManyConflicts,
    /// This host's clock disagrees with the store or the stored document by
    /// more than `clock_skew`: nothing is written.
    #[error(transparent)]
    Clock(#[from] Skew),
    /// A KMS key could not be made (KMS custody): nothing is written.
    #[error("cannot make a KMS key: {0}")]
    Kms(#[from] KmsError),
}

impl From<std::convert::Infallible> for OperationError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// What an operation decided.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// The keyset to store; `None` when nothing changes.
    pub keyset: Option<Keyset>,
    /// What changed, or (for a rotation already pending) what is in effect.
    pub changes: Vec<Change>,
}

/// The configuration the timeline needs, owned so it can move to a blocking task.
#[derive(Clone, Debug)]
pub struct Planner {
    families: Vec<Algorithm>,
    schedule: Schedule,
    policy: Policy,
    generator: Generator,
}

impl Planner {
    /// The planner for a configuration.
    pub fn new(config: &Config) -> Planner {
        let policy = config.policy();
        Planner {
            families: config.keys.algorithms.clone(),
            schedule: config.keys.rotation_schedule.clone(),
            policy,
            generator: Generator {
                x5c: config.keys.x5c,
                clock_skew: chrono::Duration::from_std(config.keys.clock_skew)
                    .unwrap_or(chrono::Duration::zero()),
            },
        }
    }

    /// A planner from its parts, for tests that need no configuration file.
    #[cfg(test)]
    pub(crate) fn from_parts(
        families: Vec<Algorithm>,
        schedule: Schedule,
        policy: Policy,
        x5c: bool,
    ) -> Planner {
        Planner {
            families,
            schedule,
            policy,
            generator: Generator {
                x5c,
                clock_skew: policy.skew,
            },
        }
    }

    /// The configured families.
    pub fn families(&self) -> &[Algorithm] {
        &self.families
    }

    /// `clock_skew`: how far this host's clock may be from the others'.
    pub fn tolerance(&self) -> chrono::Duration {
        self.policy.skew
    }

    /// How long a new key is published before it signs.
    pub fn lead(&self) -> chrono::Duration {
        self.policy.lead
    }

    /// Decides what `operation` does to `keyset` at `times`. A write also
    /// drops what no longer needs storing ([`timeline::prune_at`]).
    ///
    /// # Errors
    /// [`OperationError`] when a key cannot be made or a revocation is refused.
    pub fn apply_at(
        &self,
        operation: &Operation,
        keyset: &Keyset,
        times: Times,
    ) -> Result<Decision, OperationError> {
        self.apply_with(operation, keyset, times, &mut self.generator.clone())
    }

    /// [`Planner::apply_at`] with the keys made by `generator`.
    ///
    /// # Errors
    /// [`OperationError`] when a key cannot be made or a revocation is refused.
    pub fn apply_with<M>(
        &self,
        operation: &Operation,
        keyset: &Keyset,
        times: Times,
        generator: &mut M,
    ) -> Result<Decision, OperationError>
    where
        M: timeline::KeyMaker,
        OperationError: From<M::Error>,
    {
        let plan = Plan {
            families: &self.families,
            schedule: &self.schedule,
            policy: self.policy,
        };
        let now = times.now;
        let (keyset_after, mut changes) = match operation {
            Operation::Maintain => match timeline::maintain_at(keyset, &plan, now, generator)? {
                Some((keyset, changes)) => (Some(keyset), changes),
                None => (None, Vec::new()),
            },
            Operation::Rotate => timeline::rotate_at(keyset, &plan, now, generator)?,
            Operation::Revoke(kid) => {
                match timeline::revoke_at(keyset, kid, &plan, now, generator) {
                    Ok((keyset, changes)) => (Some(keyset), changes),
                    Err(RevokeError::UnknownKid(kid)) => {
                        return Err(OperationError::UnknownKid(kid));
                    }
                    Err(RevokeError::AlreadyRevoked(kid)) => {
                        return Err(OperationError::AlreadyRevoked(kid));
                    }
                    Err(RevokeError::Maker(err)) => return Err(err.into()),
                }
            }
        };
        let keep_revoked = match operation {
            Operation::Revoke(kid) => Some(kid.as_str()),
            Operation::Maintain | Operation::Rotate => None,
        };
        let keyset = keyset_after.map(|mut keyset| {
            changes.extend(timeline::prune_at(
                &mut keyset,
                keep_revoked,
                times.expired_by,
            ));
            keyset
        });
        Ok(Decision { keyset, changes })
    }
}

/// What the daemon knows about the clocks around it, from a snapshot, when its
/// own clock says `now`.
pub fn evidence_of(snapshot: &Snapshot, now: DateTime<Utc>) -> ClockEvidence {
    ClockEvidence {
        document_time: timeline::document_time(&snapshot.keyset),
        store_offset: snapshot.store_stamp.map(|stamp| stamp.offset(now)),
    }
}

/// Applies `operation` to the stored keyset with compare-and-swap: read, decide,
/// write; on a conflict, read again and decide again. Starts from `snapshot`
/// when given (the caller's last read), else reads first.
///
/// Under KMS custody the keys are made in KMS between decisions (see
/// [`crate::custody`]); afterwards the keys the change made and did not
/// store, and the ones it took out of the keyset, are retired.
///
/// Returns the stored snapshot afterwards and what changed.
///
/// # Errors
/// [`OperationError`] from the store, the timeline or key generation.
pub async fn update_store(
    store: &dyn KeyStore,
    planner: &Planner,
    custodian: &Custodian,
    clock: &dyn Clock,
    operation: &Operation,
    snapshot: Option<Snapshot>,
) -> Result<(Snapshot, Vec<Change>), OperationError> {
    let mut pool = Pool::default();
    let result = update(
        store, planner, custodian, clock, operation, snapshot, &mut pool,
    )
    .await;
    if let Custodian::Kms(custody) = custodian {
        // What is stored is known after a success; after any other failure
        // than the store's, nothing of this change was written; after a store
        // failure, the write may have happened or not.
        let nothing = Keyset::default();
        let stored = match &result {
            Ok((snapshot, _)) => Some(&snapshot.keyset),
            Err(OperationError::Store(_)) => None,
            Err(_) => Some(&nothing),
        };
        custody.settle(&pool, stored).await;
    }
    result
}

/// Decides what `operation` does to `keyset` under KMS custody, making in KMS
/// the keys the decision needs (into `pool`), and deciding again with them.
async fn decide_with_kms(
    custody: &KmsCustody,
    planner: &Planner,
    operation: &Operation,
    keyset: &Keyset,
    times: Times,
    pool: &mut Pool,
) -> Result<Decision, OperationError> {
    let deadline = tokio::time::Instant::now() + crate::custody::MAKE_DEADLINE;
    loop {
        let mut maker = PoolMaker::new(&pool.keys);
        let decision = planner.apply_with(operation, keyset, times, &mut maker)?;
        let missing = maker.missing;
        if missing.is_empty() {
            return Ok(decision);
        }
        if !pool.has_room(missing.len()) {
            return Err(KmsError::Refused(format!(
                "a change needs more than {} KMS keys",
                pool.keys.len()
            ))
            .into());
        }
        for alg in missing {
            let made = tokio::time::timeout_at(deadline, custody.make_key(alg))
                .await
                .map_err(|_| {
                    KmsError::Unavailable(format!(
                        "making the KMS keys of one change took over {}s",
                        crate::custody::MAKE_DEADLINE.as_secs()
                    ))
                })??;
            pool.keys.push(made);
        }
    }
}

/// How old a decision may be when it is written.
const MAX_DECISION_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// How many times a decision is taken again for being stale before the last
/// one is written anyway (logged).
const MAX_STALE_DECISIONS: usize = 3;

/// Decides what `operation` does to the snapshot's keyset now, and decides
/// again while the decision is stale.
///
/// A new key counts as published from the decision's `now` (its
/// `created_at`), but it is published when it is written: a decision that
/// took long (keys made in a slow KMS, RSA keys generated) would reach the
/// store with that much of its lead gone, or already signing. So a decision
/// is taken again, at once,
/// - when a key it adds that does not sign at once would activate less than
///   a whole lead after the moment it is written (the invariant itself);
/// - when it had keys made in KMS, whatever its age: with the keys made (they
///   are reused) the second decision is instant, so a key's `created_at` is
///   when it was really written, which a later `jwkd rotate` counts its lead
///   from;
/// - when it is over [`MAX_DECISION_AGE`] old, for the same reason.
async fn decide_now(
    store: &dyn KeyStore,
    planner: &Planner,
    custodian: &Custodian,
    clock: &dyn Clock,
    operation: &Operation,
    snapshot: &Snapshot,
    pool: &mut Pool,
) -> Result<Decision, OperationError> {
    let mut attempt = 0;
    loop {
        let made_before = pool.keys.len();
        let now = clock.now();
        let evidence = evidence_of(snapshot, now);
        crate::clock::check(now, &evidence, planner.tolerance(), &store.location())?;
        let times = evidence.times(now);
        let decision = if let Custodian::Kms(custody) = custodian {
            decide_with_kms(custody, planner, operation, &snapshot.keyset, times, pool).await?
        } else {
            // Key generation (RSA in particular) is CPU work: keep it off the async workers.
            let planner = planner.clone();
            let operation = operation.clone();
            let keyset = snapshot.keyset.clone();
            tokio::task::spawn_blocking(move || planner.apply_at(&operation, &keyset, times))
                .await
                .map_err(|err| {
                    KeyError::Certificate(format!("key generation task failed: {err}"))
                })??
        };
        attempt += 1;
        let written = clock.now();
        let age = (written - now).to_std().unwrap_or_default();
        let short = decision
            .keyset
            .as_ref()
            .and_then(|after| short_of_lead(after, &snapshot.keyset, written, planner.lead()));
        let made_keys = pool.keys.len() > made_before;
        if short.is_none() && !made_keys && age <= MAX_DECISION_AGE {
            return Ok(decision);
        }
        if attempt > MAX_STALE_DECISIONS {
            // Written anyway; a key short of its lead is reported once it is
            // stored, with the shortfall the write left it
            // (`warn_if_short_of_the_lead`).
            return Ok(decision);
        }
        tracing::debug!(
            ?age,
            made_keys,
            short_of_lead = short.is_some(),
            "the decision is stale; deciding again"
        );
    }
}

/// The first key `after` adds to `before` that would be published for less
/// than `lead` before it signs if written at `written`; keys that sign at once
/// (a family's first key) are not held to the lead.
fn short_of_lead<'k>(
    after: &'k Keyset,
    before: &Keyset,
    written: chrono::DateTime<chrono::Utc>,
    lead: chrono::Duration,
) -> Option<&'k crate::keyset::KeyRecord> {
    after.keys.iter().find(|key| {
        before.get(&key.kid).is_none()
            && key.activates_at > key.created_at
            && key.activates_at - written < lead
    })
}

/// Says so when a key just stored will sign less than `lead` after the store
/// answered: replicas can only read a key once its write is done, so a store
/// that took long to write (up to its timeouts), or decisions that kept taking
/// too long ([`MAX_STALE_DECISIONS`]), took that much of the key's lead. The
/// decision checked the lead before the write ([`decide_now`]); what the write
/// itself takes cannot be known before, and the key is stored by then, so this
/// is for the operator: verifiers may refuse the key's first tokens for up to
/// the shortfall.
fn warn_if_short_of_the_lead(
    before: &Keyset,
    after: &Keyset,
    clock: &dyn Clock,
    lead: chrono::Duration,
) {
    let stored = clock.now();
    if let Some(short) = short_of_lead(after, before, stored, lead) {
        tracing::warn!(
            kid = %short.kid,
            activates_at = %short.activates_at,
            stored_at = %stored,
            "a key was stored {}ms short of its lead of {}s: deciding and writing it took \
             that long; verifiers that cached the key set before it may refuse its first tokens",
            (lead - (short.activates_at - stored)).num_milliseconds(),
            lead.num_seconds()
        );
    }
}

async fn update(
    store: &dyn KeyStore,
    planner: &Planner,
    custodian: &Custodian,
    clock: &dyn Clock,
    operation: &Operation,
    snapshot: Option<Snapshot>,
    pool: &mut Pool,
) -> Result<(Snapshot, Vec<Change>), OperationError> {
    let mut snapshot = match snapshot {
        Some(snapshot) => snapshot,
        None => store.load().await?,
    };
    for _ in 0..MAX_CONFLICT_RETRIES {
        let decision =
            decide_now(store, planner, custodian, clock, operation, &snapshot, pool).await?;
        let (keyset, changes) = match decision {
            Decision {
                keyset: Some(keyset),
                changes,
            } => (keyset, changes),
            // Nothing to write: a rotation already pending says so in its changes.
            Decision {
                keyset: None,
                changes,
            } => return Ok((snapshot, changes)),
        };
        match store
            .compare_and_swap(snapshot.version.as_ref(), &keyset)
            .await
        {
            Ok(version) => {
                warn_if_short_of_the_lead(&snapshot.keyset, &keyset, clock, planner.lead());
                pool.released = crate::custody::released(&snapshot.keyset, &keyset);
                return Ok((
                    Snapshot {
                        keyset,
                        version: Some(version),
                        store_stamp: snapshot.store_stamp,
                    },
                    changes,
                ));
            }
            Err(StoreError::Conflict { .. }) => {
                tracing::debug!("keyset changed under us; re-reading");
                snapshot = store.load().await?;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(OperationError::TooManyConflicts)
}

#[cfg(test)]
mod clock_tests;

#[cfg(test)]
mod stale_tests {
    use chrono::{DateTime, Duration, TimeZone as _, Utc};

    use super::*;
    use crate::keys::Algorithm;
    use crate::store::memory::MemoryStore;
    use crate::timeline::Policy;

    /// A clock that moves `step` forward each time it is read: a decision
    /// read between its first and last look at the time took `step`.
    #[derive(Debug)]
    struct SlowClock {
        now: std::sync::Mutex<DateTime<Utc>>,
        step: Duration,
    }

    impl Clock for SlowClock {
        fn now(&self) -> DateTime<Utc> {
            let mut now = self.now.lock().unwrap();
            *now += self.step;
            *now
        }
    }

    /// ES256, rotating every 10 s with this lead.
    fn planner(lead: Duration) -> Planner {
        Planner::from_parts(
            vec![Algorithm::Es256],
            "*/10 * * * * *".parse().unwrap(),
            Policy {
                lead,
                retention: Duration::seconds(5),
                skew: Duration::zero(),
                lag: Duration::seconds(1),
            },
            false,
        )
    }

    /// What the first write of a keyset logs when the store takes `takes` to
    /// write it: the next key signs at 12:00:10, 10 s after the decision, with
    /// a lead of 3 s.
    async fn first_write_logs(takes: std::time::Duration) -> String {
        let planner = planner(Duration::seconds(3));
        let clock = std::sync::Arc::new(crate::clock::ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap(),
        ));
        let store = MemoryStore::default();
        *store.write_takes.lock().unwrap() = Some((std::sync::Arc::clone(&clock), takes));
        let logs = crate::logging::LogBuffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let (stored, _) = update_store(
            &store,
            &planner,
            &Custodian::Local,
            clock.as_ref(),
            &Operation::Maintain,
            None,
        )
        .await
        .unwrap();
        assert!(
            stored
                .keyset
                .keys
                .iter()
                .any(|key| key.activates_at
                    == Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 10).unwrap()),
            "{:?}",
            stored.keyset.keys
        );
        logs.text()
    }

    /// A write that takes 8 s leaves the next key 2 s of its 3 s lead: it is
    /// stored (nothing can take the write back), and the operator is told
    /// which key and by how much. A write that takes 5 s leaves it 5 s: no word.
    #[tokio::test(flavor = "current_thread")]
    async fn a_store_that_takes_the_lead_to_write_is_reported() {
        let slow = first_write_logs(std::time::Duration::from_secs(8)).await;
        assert!(
            slow.contains("a key was stored 1000ms short of its lead of 3s")
                && slow.contains("activates_at=2026-11-30 12:00:10 UTC"),
            "{slow}"
        );
        let quick = first_write_logs(std::time::Duration::from_secs(5)).await;
        assert!(!quick.contains("short of its lead"), "{quick}");
    }

    /// A decision that takes 0.6 s (well under the 1 s age bound) right
    /// before a rotation is due: written as decided, the next key would sign
    /// at :10 after being published from :07.1, 2.9 s against a 3 s lead. It
    /// is decided again, and the next key waits for the following rotation.
    #[tokio::test]
    async fn a_key_that_would_be_short_of_its_lead_when_written_is_decided_again() {
        let lead = Duration::seconds(3);
        let planner = planner(lead);
        let store = MemoryStore::default();
        let step = Duration::milliseconds(600);
        let clock = SlowClock {
            // The first read is 12:00:06.5.
            now: std::sync::Mutex::new(
                Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 6).unwrap() + Duration::milliseconds(500)
                    - step,
            ),
            step,
        };
        let (stored, _) = update_store(
            &store,
            &planner,
            &Custodian::Local,
            &clock,
            &Operation::Maintain,
            None,
        )
        .await
        .unwrap();
        // Every read of this clock is later than the write.
        let after_write = clock.now();
        let next: Vec<_> = stored
            .keyset
            .keys
            .iter()
            .filter(|key| key.activates_at > key.created_at)
            .collect();
        assert_eq!(next.len(), 1, "{:?}", stored.keyset.keys);
        assert!(
            next[0].activates_at - after_write >= lead,
            "next key signs from {} but was written before {after_write}",
            next[0].activates_at
        );
        assert_eq!(
            next[0].activates_at,
            Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 20).unwrap()
        );
    }
}
