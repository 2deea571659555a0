//! The key timeline (CONTRACT §4), as pure functions of a keyset and `now`.
//!
//! Nothing here reads the clock, does I/O or touches tokio: every function takes
//! `now`, and key generation is injected through [`KeyMaker`]. A key's state is
//! derived from its stored times only ([`state_at`]); the functions that change
//! a keyset ([`maintain_at`], [`rotate_at`], [`revoke_at`]) keep these invariants
//! for every configured family:
//!
//! - exactly one key is current at any instant;
//! - after a change there is exactly one next key, published at least
//!   `lead = jwks_max_age + clock_skew + store.refresh_interval` before it
//!   activates (the last replica serves it one refresh interval after it is
//!   written, and verifiers cache that for `jwks_max_age`); no sequence of
//!   rotations makes a second one;
//! - a key stays published until `deactivates_at + retention`
//!   (`retention = max_token_lifetime + clock_skew`), or, when a rotation ends
//!   its signing sooner than replicas serving an older document know, until
//!   `retention` after they have all re-read the store; only expired or revoked
//!   keys are ever removed ([`prune_at`], which only rides along with a write);
//! - every time written is at or after the document's newest write
//!   ([`decision_time`]) and `activates_at >= created_at`, so every document these
//!   functions produce loads again, whatever the clock said.
//!
//! The exceptions are logged by the callers: the first key of an empty family
//! signs at once, and revoking the current key promotes the next one at once.
//! Both are written `clock_skew` in the past ([`Policy::skew`]), so replicas whose
//! clocks are behind by up to that much agree on the current key at once.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use crate::keys::Algorithm;
use crate::keyset::{KeyRecord, Keyset};
use crate::schedule::Schedule;

/// The two durations the timeline is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `jwks_max_age + clock_skew + store.refresh_interval`: how long a key is
    /// published before it signs, so that every replica serves it and every
    /// verifier's cached JWKS holds it by then.
    pub lead: Duration,
    /// `max_token_lifetime + clock_skew`: how long a key stays published after it
    /// stops signing.
    pub retention: Duration,
    /// `clock_skew`: how far apart the clocks of replicas may be. A decision that
    /// takes effect at once is written this far in the past, so that a replica
    /// whose clock is behind by up to this much sees it in effect too.
    pub skew: Duration,
    /// `store.refresh_interval`: how long a replica may go on serving, and
    /// signing from, a document another writer has replaced.
    pub lag: Duration,
}

/// A key's state at an instant (CONTRACT §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Published and signing.
    Current,
    /// Published so tokens it signed still verify; no longer signing.
    Retired,
    /// Past `expires_at`: withdrawn.
    Expired,
    /// Withdrawn by an emergency revocation.
    Revoked,
}

impl KeyState {
    /// The lowercase name used by the CLI and the API.
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired => "retired",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }

    /// Whether a key in this state is in the JWKS.
    pub fn is_published(self) -> bool {
        matches!(self, KeyState::Next | KeyState::Current | KeyState::Retired)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The state of `key` at `now`, from its stored times alone.
pub fn state_at(key: &KeyRecord, now: DateTime<Utc>) -> KeyState {
    if key.revoked_at.is_some() {
        KeyState::Revoked
    } else if key.expires_at.is_some_and(|expires_at| now >= expires_at) {
        KeyState::Expired
    } else if now < key.activates_at {
        KeyState::Next
    } else if key
        .deactivates_at
        .is_some_and(|deactivates_at| now >= deactivates_at)
    {
        KeyState::Retired
    } else {
        KeyState::Current
    }
}

/// The keys published at `now`: states next, current and retired, ordered by
/// family (in `families` order, unconfigured families last) and activation.
pub fn published_at<'a>(
    keyset: &'a Keyset,
    families: &[Algorithm],
    now: DateTime<Utc>,
) -> Vec<&'a KeyRecord> {
    let mut published: Vec<&KeyRecord> = keyset
        .keys
        .iter()
        .filter(|key| state_at(key, now).is_published())
        .collect();
    let family_rank = |alg: Algorithm| {
        families
            .iter()
            .position(|family| *family == alg)
            .unwrap_or(families.len())
    };
    published.sort_by(|a, b| {
        (family_rank(a.alg), a.alg, a.activates_at, &a.kid).cmp(&(
            family_rank(b.alg),
            b.alg,
            b.activates_at,
            &b.kid,
        ))
    });
    published
}

/// The current signing key of a family at `now`.
pub fn current_at(keyset: &Keyset, alg: Algorithm, now: DateTime<Utc>) -> Option<&KeyRecord> {
    keyset
        .keys
        .iter()
        .find(|key| key.alg == alg && state_at(key, now) == KeyState::Current)
}

/// The next key of a family at `now` (the earliest, should there be several).
pub fn next_at(keyset: &Keyset, alg: Algorithm, now: DateTime<Utc>) -> Option<&KeyRecord> {
    keyset
        .keys
        .iter()
        .filter(|key| key.alg == alg && state_at(key, now) == KeyState::Next)
        .min_by_key(|key| key.activates_at)
}

/// The earliest future instant at which some key's state changes, if any.
pub fn next_transition_after(keyset: &Keyset, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    keyset
        .keys
        .iter()
        .filter(|key| key.revoked_at.is_none())
        .flat_map(|key| [Some(key.activates_at), key.deactivates_at, key.expires_at])
        .flatten()
        .filter(|at| *at > now)
        .min()
}

/// Makes keys for the timeline: real generation in the daemon, cheap fakes in tests.
pub trait KeyMaker {
    /// What can go wrong.
    type Error;

    /// Makes a key of `alg`, created at `created_at` and activating at
    /// `activates_at`; a certificate, if any, must be valid until at least
    /// `cert_not_after`.
    ///
    /// # Errors
    /// When the key cannot be generated.
    fn make(
        &mut self,
        alg: Algorithm,
        created_at: DateTime<Utc>,
        activates_at: DateTime<Utc>,
        cert_not_after: DateTime<Utc>,
    ) -> Result<KeyRecord, Self::Error>;

    /// Re-issues `key`'s certificate, if it has one, to be valid until `not_after`.
    ///
    /// # Errors
    /// When the certificate cannot be made.
    fn recertify(
        &mut self,
        key: &mut KeyRecord,
        not_after: DateTime<Utc>,
    ) -> Result<(), Self::Error>;
}

/// What a timeline function changed, for logs and the CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The first key of an empty family: it signs at once, without pre-publication.
    FirstKey {
        /// Its family.
        alg: Algorithm,
        /// Its kid.
        kid: String,
    },
    /// A new next key.
    NewNext {
        /// Its family.
        alg: Algorithm,
        /// Its kid.
        kid: String,
        /// When it will start signing.
        activates_at: DateTime<Utc>,
    },
    /// A key with no successor keeps signing past its planned end (§4).
    KeptSigning {
        /// Its family.
        alg: Algorithm,
        /// Its kid.
        kid: String,
    },
    /// The next key was made current earlier than planned.
    Promoted {
        /// Its family.
        alg: Algorithm,
        /// Its kid.
        kid: String,
        /// When it becomes current.
        activates_at: DateTime<Utc>,
        /// True when this skipped pre-publication (emergency revocation).
        early: bool,
    },
    /// A rotation asked for while one is already pending: nothing changed; this
    /// key becomes current at `activates_at`, the earliest instant it may.
    Pending {
        /// Its family.
        alg: Algorithm,
        /// Its kid.
        kid: String,
        /// When it becomes current.
        activates_at: DateTime<Utc>,
    },
    /// A key whose signing interval is empty (it can never sign) leaves the JWKS.
    NeverSigns {
        /// Its family.
        alg: Algorithm,
        /// Its kid.
        kid: String,
    },
    /// A key was revoked.
    Revoked {
        /// Its family.
        alg: Algorithm,
        /// Its kid.
        kid: String,
    },
    /// A family no longer configured stops signing.
    Retired {
        /// Its family.
        alg: Algorithm,
        /// Its kid.
        kid: String,
    },
    /// An expired or revoked key was removed from the store.
    Pruned {
        /// Its family.
        alg: Algorithm,
        /// Its kid.
        kid: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self {
            Change::FirstKey { alg, kid } => write!(
                f,
                "{alg}: first key {kid} signs at once (empty family: it was not pre-published)"
            ),
            Change::NewNext {
                alg,
                kid,
                activates_at,
            } => write!(
                f,
                "{alg}: new next key {kid} activates at {}",
                at(activates_at)
            ),
            Change::KeptSigning { alg, kid } => write!(
                f,
                "{alg}: key {kid} keeps signing: it had no successor when it was due to stop"
            ),
            Change::Promoted {
                alg,
                kid,
                activates_at,
                early,
            } => {
                write!(
                    f,
                    "{alg}: key {kid} becomes current at {}",
                    at(activates_at)
                )?;
                if *early {
                    f.write_str(" (emergency: before it was published for the full lead)")?;
                }
                Ok(())
            }
            Change::Pending {
                alg,
                kid,
                activates_at,
            } => write!(
                f,
                "{alg}: a rotation is already pending: key {kid} becomes current at {} \
                 (the earliest instant it has been published for jwks_max_age + clock_skew); \
                 no new key made",
                at(activates_at)
            ),
            Change::NeverSigns { alg, kid } => write!(
                f,
                "{alg}: key {kid} can never sign (its signing interval is empty): withdrawn"
            ),
            Change::Revoked { alg, kid } => write!(f, "{alg}: key {kid} revoked"),
            Change::Retired { alg, kid } => {
                write!(f, "{alg}: key {kid} retired (family no longer configured)")
            }
            Change::Pruned { alg, kid } => write!(f, "{alg}: key {kid} pruned"),
        }
    }
}

/// The schedule, families and policy the timeline functions work with.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    /// Configured key families.
    pub families: &'a [Algorithm],
    /// The rotation schedule.
    pub schedule: &'a Schedule,
    /// Lead and retention.
    pub policy: Policy,
}

impl Plan<'_> {
    /// When a key made at `now` that must activate no sooner than `not_before`
    /// will activate: the first scheduled rotation at or after both `now + lead`
    /// and `not_before`.
    fn activation_for_new_key(
        &self,
        now: DateTime<Utc>,
        not_before: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.schedule
            .first_at_or_after((now + self.policy.lead).max(not_before))
    }

    /// The planned end of a key activating at `activates_at` if rotations go on
    /// schedule: used for its certificate's validity.
    fn planned_expiry(&self, activates_at: DateTime<Utc>) -> DateTime<Utc> {
        let deactivates_at = self
            .schedule
            .first_after(activates_at)
            .unwrap_or(activates_at + Duration::days(366));
        deactivates_at + self.policy.retention
    }

    /// Ends `key`'s signing at `deactivates_at` (`None`: it has no successor).
    /// A key that signed stays published for the retention after; a key whose
    /// signing interval is empty never signed under any clock, so no token
    /// depends on it and it leaves the JWKS at once.
    fn set_deactivation(&self, key: &mut KeyRecord, deactivates_at: Option<DateTime<Utc>>) {
        key.deactivates_at = deactivates_at;
        key.expires_at = deactivates_at.map(|at| {
            if at <= key.activates_at {
                at
            } else {
                at + self.policy.retention
            }
        });
    }

    fn make<M: KeyMaker>(
        &self,
        maker: &mut M,
        alg: Algorithm,
        created_at: DateTime<Utc>,
        activates_at: DateTime<Utc>,
    ) -> Result<KeyRecord, M::Error> {
        // What the loader checks, the timeline never writes otherwise.
        let activates_at = activates_at.max(created_at);
        maker.make(
            alg,
            created_at,
            activates_at,
            self.planned_expiry(activates_at),
        )
    }

    /// Ends the signing of `key`, current at `now`, at `at`: sooner than
    /// replicas serving an older document know, so they may sign with it for
    /// up to the lag after `now`; it stays published for the retention after
    /// the later of the two.
    fn cut_short(&self, key: &mut KeyRecord, at: DateTime<Utc>, now: DateTime<Utc>) {
        self.set_deactivation(key, Some(at));
        key.expires_at = Some(at.max(now + self.policy.lag) + self.policy.retention);
    }

    /// When a key promoted "at once" at `now` starts signing: `clock_skew` in the
    /// past, so that a replica whose clock is behind by up to that much sees it
    /// current too, but never before the key was made.
    fn at_once(&self, key: &KeyRecord, now: DateTime<Utc>) -> DateTime<Utc> {
        (now - self.policy.skew).max(key.created_at)
    }
}

/// The newest instant a writer stamped into the keyset as its own "now": when
/// keys were made and revoked. Every other time in the document is derived
/// from the schedule, so this is the best lower bound the document gives of
/// the clocks of those that wrote it.
pub fn document_time(keyset: &Keyset) -> Option<DateTime<Utc>> {
    keyset
        .keys
        .iter()
        .flat_map(|key| [Some(key.created_at), key.revoked_at])
        .flatten()
        .max()
}

/// The instant a decision at `now` is made for: never before the document's
/// newest write, so that a writer whose clock is a little behind the one that
/// wrote last decides as if it were not, and every time it writes is at or
/// after the times already there (the loader's order checks always hold).
pub fn decision_time(keyset: &Keyset, now: DateTime<Utc>) -> DateTime<Utc> {
    document_time(keyset).map_or(now, |written| now.max(written))
}

/// Brings a keyset in line with the timeline at `now`: every configured family
/// gets a current and a next key, the current key's end is its successor's start,
/// and unconfigured families stop signing. Returns `None` when nothing needs to
/// change. Nothing is removed here: see [`prune_at`].
///
/// # Errors
/// Only when `maker` fails.
pub fn maintain_at<M: KeyMaker>(
    keyset: &Keyset,
    plan: &Plan<'_>,
    now: DateTime<Utc>,
    maker: &mut M,
) -> Result<Option<(Keyset, Vec<Change>)>, M::Error> {
    let now = decision_time(keyset, now);
    let mut keys = keyset.keys.clone();
    let mut changes = Vec::new();
    for &alg in plan.families {
        ensure_family(&mut keys, alg, plan, now, maker, &mut changes)?;
    }
    for key in &mut keys {
        if plan.families.contains(&key.alg) {
            continue;
        }
        match state_at(key, now) {
            KeyState::Current => {
                plan.cut_short(key, now, now);
                changes.push(Change::Retired {
                    alg: key.alg,
                    kid: key.kid.clone(),
                });
            }
            KeyState::Next => {
                // It never signed, so no token depends on it.
                key.expires_at = Some(now);
                key.deactivates_at = Some(key.activates_at.min(now));
                changes.push(Change::Retired {
                    alg: key.alg,
                    kid: key.kid.clone(),
                });
            }
            KeyState::Retired | KeyState::Expired | KeyState::Revoked => {}
        }
    }
    // Keys that can never sign (an empty signing interval, as earlier versions
    // left behind after rotate storms) leave the JWKS at once.
    for key in &mut keys {
        if let Some(deactivates_at) = key.deactivates_at
            && deactivates_at <= key.activates_at
            && key
                .expires_at
                .is_some_and(|expires_at| expires_at > deactivates_at)
            && key.revoked_at.is_none()
        {
            key.expires_at = Some(deactivates_at);
            changes.push(Change::NeverSigns {
                alg: key.alg,
                kid: key.kid.clone(),
            });
        }
    }
    if changes.is_empty() {
        return Ok(None);
    }
    recertify(&mut keys, maker)?;
    Ok(Some((Keyset { keys }, changes)))
}

fn ensure_family<M: KeyMaker>(
    keys: &mut Vec<KeyRecord>,
    alg: Algorithm,
    plan: &Plan<'_>,
    now: DateTime<Utc>,
    maker: &mut M,
    changes: &mut Vec<Change>,
) -> Result<(), M::Error> {
    let in_state = |keys: &[KeyRecord], state: KeyState| -> Vec<usize> {
        let mut found: Vec<usize> = (0..keys.len())
            .filter(|&key_idx| keys[key_idx].alg == alg && state_at(&keys[key_idx], now) == state)
            .collect();
        found.sort_by_key(|&key_idx| keys[key_idx].activates_at);
        found
    };

    // 1. Exactly one current key.
    let current = in_state(keys, KeyState::Current);
    let current_idx = match current.as_slice() {
        [] => {
            let overdue = (0..keys.len())
                .filter(|&key_idx| {
                    let key = &keys[key_idx];
                    key.alg == alg
                        && state_at(key, now) == KeyState::Retired
                        && key.activates_at <= now
                        && key.deactivates_at > Some(key.activates_at)
                })
                .max_by_key(|&key_idx| keys[key_idx].activates_at);
            let next = in_state(keys, KeyState::Next);
            if let Some(key_idx) = overdue {
                // No key took over when this one was due to stop: it keeps signing.
                plan.set_deactivation(&mut keys[key_idx], None);
                changes.push(Change::KeptSigning {
                    alg,
                    kid: keys[key_idx].kid.clone(),
                });
                key_idx
            } else if let Some(&key_idx) = next.first() {
                let activates_at = plan.at_once(&keys[key_idx], now);
                keys[key_idx].activates_at = activates_at;
                changes.push(Change::Promoted {
                    alg,
                    kid: keys[key_idx].kid.clone(),
                    activates_at,
                    early: true,
                });
                key_idx
            } else {
                // Signs at once: made `clock_skew` in the past, so every replica
                // within the tolerance sees it current from the moment it is stored.
                let at = now - plan.policy.skew;
                let key = plan.make(maker, alg, at, at)?;
                changes.push(Change::FirstKey {
                    alg,
                    kid: key.kid.clone(),
                });
                keys.push(key);
                keys.len() - 1
            }
        }
        [only] => *only,
        [.., newest] => {
            // Several current keys cannot come from these functions; should a
            // hand-edited document hold them, the newest one signs.
            let newest = *newest;
            for &key_idx in &current[..current.len() - 1] {
                let activates_at = keys[newest].activates_at;
                let end = activates_at.max(keys[key_idx].activates_at);
                plan.set_deactivation(&mut keys[key_idx], Some(end));
                if state_at(&keys[key_idx], now) == KeyState::Current {
                    plan.set_deactivation(&mut keys[key_idx], Some(now));
                }
                changes.push(Change::Retired {
                    alg,
                    kid: keys[key_idx].kid.clone(),
                });
            }
            newest
        }
    };

    // 2. A next key, and the current key ends when it starts.
    let next = in_state(keys, KeyState::Next);
    match next.first() {
        None => {
            let not_before = keys[current_idx].activates_at + Duration::seconds(1);
            let Some(activates_at) = plan.activation_for_new_key(now, not_before) else {
                // The schedule never fires again: the current key keeps signing.
                return Ok(());
            };
            let key = plan.make(maker, alg, now, activates_at)?;
            plan.set_deactivation(&mut keys[current_idx], Some(activates_at));
            changes.push(Change::NewNext {
                alg,
                kid: key.kid.clone(),
                activates_at,
            });
            keys.push(key);
        }
        Some(&first_next) => {
            let activates_at = keys[first_next].activates_at;
            if keys[current_idx].deactivates_at != Some(activates_at) {
                plan.set_deactivation(&mut keys[current_idx], Some(activates_at));
                changes.push(Change::Promoted {
                    alg,
                    kid: keys[first_next].kid.clone(),
                    activates_at,
                    early: false,
                });
            }
            for pair in next.windows(2) {
                let successor_start = keys[pair[1]].activates_at;
                if keys[pair[0]].deactivates_at != Some(successor_start) {
                    plan.set_deactivation(&mut keys[pair[0]], Some(successor_start));
                    changes.push(Change::Promoted {
                        alg,
                        kid: keys[pair[1]].kid.clone(),
                        activates_at: successor_start,
                        early: false,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Re-issues certificates that would end before their key leaves the JWKS.
fn recertify<M: KeyMaker>(keys: &mut [KeyRecord], maker: &mut M) -> Result<(), M::Error> {
    for key in keys.iter_mut() {
        let Some(expires_at) = key.expires_at else {
            continue;
        };
        if key.revoked_at.is_none()
            && key
                .certificate
                .as_ref()
                .is_some_and(|cert| cert.not_after < expires_at)
        {
            maker.recertify(key, expires_at)?;
        }
    }
    Ok(())
}

/// Removes what no longer needs to be stored, as part of a write: keys
/// expired by `expired_by`, and revoked keys except `keep_revoked` (a revoked
/// key's record is kept by the write that revokes it, so that write's answer
/// shows it, and dropped by the next: its private key has no use left).
/// `expired_by` is the earliest of the clocks the caller can check, so a clock
/// that runs fast never removes a key that verifiers may still need.
pub fn prune_at(
    keyset: &mut Keyset,
    keep_revoked: Option<&str>,
    expired_by: DateTime<Utc>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    keyset.keys.retain(|key| {
        let expired = key
            .expires_at
            .is_some_and(|expires_at| expired_by >= expires_at);
        let revoked = key.revoked_at.is_some() && keep_revoked != Some(key.kid.as_str());
        let keep = !(expired || revoked);
        if !keep {
            changes.push(Change::Pruned {
                alg: key.alg,
                kid: key.kid.clone(),
            });
        }
        keep
    });
    changes
}

/// Rotates every configured family now (CONTRACT §2 `jwkd rotate`): the next
/// key becomes current at once if it has been published for the lead, else as
/// soon as it has; once it signs it gets a successor of its own. A rotation is
/// a request for that to happen, so asking again while one is pending changes
/// nothing and reports the pending key ([`Change::Pending`]): no sequence of
/// rotations makes more than one next key per family.
///
/// Returns `None` when nothing changes.
///
/// # Errors
/// Only when `maker` fails.
pub fn rotate_at<M: KeyMaker>(
    keyset: &Keyset,
    plan: &Plan<'_>,
    now: DateTime<Utc>,
    maker: &mut M,
) -> Result<(Option<Keyset>, Vec<Change>), M::Error> {
    let now = decision_time(keyset, now);
    let (mut rotated, mut changes) = match maintain_at(keyset, plan, now, maker)? {
        Some((maintained, changes)) => (maintained, changes),
        None => (keyset.clone(), Vec::new()),
    };
    let mut changed = !changes.is_empty();
    for &alg in plan.families {
        let Some(current) = current_at(&rotated, alg, now).map(|key| key.kid.clone()) else {
            continue;
        };
        let Some(next) = next_at(&rotated, alg, now).map(|key| key.kid.clone()) else {
            // The schedule never fires again: nothing to bring forward.
            continue;
        };
        let next_idx = position(&rotated, &next);
        // created_at is the clock of the writer that made the key, now the clock
        // of this one: they may differ by clock_skew, so wait that much longer.
        let safe_at =
            now.max(rotated.keys[next_idx].created_at + plan.policy.lead + plan.policy.skew);
        let activates_at = rotated.keys[next_idx].activates_at;
        if activates_at <= safe_at {
            changes.push(Change::Pending {
                alg,
                kid: next,
                activates_at,
            });
            continue;
        }
        rotated.keys[next_idx].activates_at = safe_at;
        // Its successor, if it had one, is no longer next-in-line: the chain is
        // rebuilt from the new start by maintain.
        plan.set_deactivation(&mut rotated.keys[next_idx], None);
        let current_idx = position(&rotated, &current);
        plan.cut_short(&mut rotated.keys[current_idx], safe_at, now);
        changes.push(Change::Promoted {
            alg,
            kid: next,
            activates_at: safe_at,
            early: false,
        });
        changed = true;
    }
    if !changed {
        return Ok((None, changes));
    }
    if let Some((maintained, more)) = maintain_at(&rotated, plan, now, maker)? {
        rotated = maintained;
        changes.extend(more);
    }
    recertify(&mut rotated.keys, maker)?;
    Ok((Some(rotated), changes))
}

fn position(keyset: &Keyset, kid: &str) -> usize {
    keyset
        .keys
        .iter()
        .position(|key| key.kid == kid)
        .expect("a kid just found in this keyset")
}

/// Why a revocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError<E> {
    /// No key has this kid.
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    /// The key was already revoked.
    #[error("key {0:?} is already revoked")]
    AlreadyRevoked(String),
    /// Making the replacement key failed.
    #[error(transparent)]
    Maker(E),
}

/// Withdraws `kid` at once (CONTRACT §2 `jwkd revoke`). If it was signing, the
/// next key takes over at once (written `clock_skew` in the past, see
/// [`Policy::skew`]); either way the family gets a new next key.
///
/// # Errors
/// [`RevokeError`] when the kid is unknown or already revoked, or `maker` fails.
pub fn revoke_at<M: KeyMaker>(
    keyset: &Keyset,
    kid: &str,
    plan: &Plan<'_>,
    now: DateTime<Utc>,
    maker: &mut M,
) -> Result<(Keyset, Vec<Change>), RevokeError<M::Error>> {
    let now = decision_time(keyset, now);
    let mut keyset = keyset.clone();
    let key_idx = keyset
        .keys
        .iter()
        .position(|key| key.kid == kid)
        .ok_or_else(|| RevokeError::UnknownKid(kid.to_owned()))?;
    let state = state_at(&keyset.keys[key_idx], now);
    if state == KeyState::Revoked {
        return Err(RevokeError::AlreadyRevoked(kid.to_owned()));
    }
    let alg = keyset.keys[key_idx].alg;
    let mut changes = vec![Change::Revoked {
        alg,
        kid: kid.to_owned(),
    }];
    match state {
        KeyState::Current => {
            let mut end = now;
            if let Some(next_kid) = next_at(&keyset, alg, now).map(|key| key.kid.clone())
                && let Some(next) = keyset.keys.iter_mut().find(|key| key.kid == next_kid)
            {
                let activates_at = plan.at_once(next, now);
                next.activates_at = activates_at;
                end = activates_at;
                changes.push(Change::Promoted {
                    alg,
                    kid: next_kid,
                    activates_at,
                    early: true,
                });
            }
            plan.set_deactivation(&mut keyset.keys[key_idx], Some(end));
        }
        KeyState::Next => {
            // Its predecessor (the current key, or a pending next key) loses its
            // successor; maintain_at makes a new one when it is needed.
            let activates_at = keyset.keys[key_idx].activates_at;
            for key in &mut keyset.keys {
                if key.alg == alg
                    && key.kid != kid
                    && key.revoked_at.is_none()
                    && key.deactivates_at == Some(activates_at)
                    && state_at(key, now) != KeyState::Retired
                {
                    plan.set_deactivation(key, None);
                }
            }
        }
        KeyState::Retired | KeyState::Expired | KeyState::Revoked => {}
    }
    keyset.keys[key_idx].revoked_at = Some(now);
    if let Some((maintained, more)) =
        maintain_at(&keyset, plan, now, maker).map_err(RevokeError::Maker)?
    {
        keyset = maintained;
        changes.extend(more);
    }
    Ok((keyset, changes))
}

/// One key as `jwkd keys --json` and the admin API show it.
pub fn summary_at(key: &KeyRecord, now: DateTime<Utc>) -> serde_json::Value {
    let at =
        |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    serde_json::json!({
        "kid": key.kid,
        "alg": key.alg.name(),
        "state": state_at(key, now).name(),
        "created_at": at(Some(key.created_at)),
        "activates_at": at(Some(key.activates_at)),
        "deactivates_at": at(key.deactivates_at),
        "expires_at": at(key.expires_at),
        "revoked_at": at(key.revoked_at),
    })
}

/// Renders keys as the table `jwkd keys` prints: one line per key.
pub fn render_table(keyset: &Keyset, now: DateTime<Utc>) -> String {
    let at = |t: Option<DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    };
    let mut out = format!(
        "{:<43}  {:<5}  {:<7}  {:<20}  {:<20}  {:<20}\n",
        "KID", "ALG", "STATE", "ACTIVATES", "DEACTIVATES", "EXPIRES"
    );
    for key in &keyset.keys {
        out.push_str(&format!(
            "{:<43}  {:<5}  {:<7}  {:<20}  {:<20}  {:<20}\n",
            key.kid,
            key.alg.name(),
            state_at(key, now).name(),
            at(Some(key.activates_at)),
            at(key.deactivates_at),
            at(key.expires_at),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
