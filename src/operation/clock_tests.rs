//! Property tests of the timeline as the daemon drives it: several writers on
//! one stored document, each with a clock of its own, through random schedules,
//! outages, clock steps and storms of rotations and revocations.
//!
//! Each writer decides exactly as `update_store` does: it checks its clock
//! against the document and the store ([`crate::clock::check`]), and
//! [`Planner::apply_at`] decides and prunes. The store's clock is the true time;
//! a writer's clock is the true time plus its offset. The model is sequential:
//! compare-and-swap conflicts are the contract suite's business.
//!
//! What must hold:
//! - every document written loads again (real keys, real encoding), whatever
//!   the clocks, also for writers that skip the clock check;
//! - a key never changes identity;
//! - writers that check their clocks never remove or withdraw a key while a
//!   token it signed may still be valid, never make an emergency decision
//!   (a first key for a family that has keys, an early promotion, a key kept
//!   signing) on their own, and at every instant each family has exactly one
//!   current key (as a replica sees it: never before the document's newest write);
//! - no storm of operations stores more than the timeline needs: per family at
//!   most one key waiting to activate, retired keys only within their
//!   retention, and at most the one revoked key the last write revoked;
//! - replicas serve (and sign from) the document they last read, which is up to
//!   `refresh_interval` old; when their clocks agree within `clock_skew`, every
//!   replica has served a key for `jwks_max_age` before any replica signs with
//!   it, so a verifier that cached any replica's JWKS for `jwks_max_age` knows
//!   the key (CONTRACT §4, the lead covers replica lag).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::{Decision, Operation, OperationError, Planner};
use crate::clock::{self, ClockEvidence, StoreOffset};
use crate::keys::Algorithm;
use crate::keyset::Keyset;
use crate::schedule::Schedule;
use crate::timeline::{self, Change, KeyState, Policy};

#[derive(Clone, Debug)]
enum Op {
    /// Every writer runs for this many milliseconds, waking at each transition.
    Run(i64),
    /// Every writer is down for this many milliseconds.
    Down(i64),
    /// This writer rotates.
    Rotate(usize),
    /// This writer revokes the key at this index (modulo the number of keys).
    Revoke(usize, usize),
    /// This writer's clock steps by this many milliseconds.
    Step(usize, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..40_000i64).prop_map(Op::Run),
        1 => (1..90_000i64).prop_map(Op::Down),
        3 => any::<usize>().prop_map(Op::Rotate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(writer, key)| Op::Revoke(writer, key)),
        1 => (any::<usize>(), -200_000..200_000i64).prop_map(|(writer, ms)| Op::Step(writer, ms)),
    ]
}

/// Operations that keep every clock where it is.
fn op_without_steps() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..40_000i64).prop_map(Op::Run),
        1 => (1..90_000i64).prop_map(Op::Down),
        3 => any::<usize>().prop_map(Op::Rotate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(writer, key)| Op::Revoke(writer, key)),
    ]
}

fn phases() -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(0.0..1.0f64, 3)
}

const SCHEDULES: [(&str, i64); 4] = [
    ("*/10 * * * * *", 10),
    ("0,7,30 * * * * *", 7),
    ("*/3 * * * * *", 3),
    ("0 * * * * *", 60),
];

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap()
}

/// What one replica serves.
struct Snapshot {
    keyset: Keyset,
    /// The true time of the replica's first read; it re-reads every `refresh`
    /// after that.
    phase: DateTime<Utc>,
    /// Since when the store holds a document this replica has not read yet.
    stale_since: Option<DateTime<Utc>>,
}

struct Model {
    planner: Planner,
    families: Vec<Algorithm>,
    policy: Policy,
    /// `jwks_max_age`: how long a verifier keeps a JWKS it fetched.
    max_age: Duration,
    /// `store.refresh_interval`: how long a replica serves a document it read.
    refresh: Duration,
    /// The stored document.
    keyset: Keyset,
    /// Per writer, the document it serves and signs from.
    snapshots: Vec<Snapshot>,
    /// Per writer and key, the true time the writer first served the key.
    first_served: HashMap<(usize, String), DateTime<Utc>>,
    /// Whether to check that every replica served a key for `max_age` before
    /// one signs with it (holds while clocks agree pairwise within the skew).
    check_caches: bool,
    /// The true time, which is also the store's clock.
    truth: DateTime<Utc>,
    /// Each writer's clock minus the true time.
    offsets: Vec<Duration>,
    /// Whether writers check their clocks as the daemon does.
    checked: bool,
    identity: HashMap<String, (Algorithm, DateTime<Utc>)>,
    /// Per key, the latest `iat` a writer stamped on a token it signed.
    last_iat: HashMap<String, DateTime<Utc>>,
    /// Keys an operation revoked: they may go at once.
    revoked: HashSet<String>,
    /// Keys allowed to sign without the full lead: first keys, emergency promotions.
    exempt: HashSet<String>,
}

impl Model {
    fn writer(&self, idx: usize) -> usize {
        idx % self.offsets.len()
    }

    fn clock_of(&self, writer: usize) -> DateTime<Utc> {
        self.truth + self.offsets[writer]
    }

    fn evidence(&self, writer: usize) -> ClockEvidence {
        let offset = self.offsets[writer];
        ClockEvidence {
            document_time: timeline::document_time(&self.keyset),
            store_offset: Some(StoreOffset {
                min: offset,
                max: offset,
            }),
        }
    }

    /// Whether `writer` may write: its clock agrees with the store and the document.
    fn agrees(&self, writer: usize) -> bool {
        clock::check(
            self.clock_of(writer),
            &self.evidence(writer),
            self.policy.skew,
            "model",
        )
        .is_ok()
    }

    /// The instant `writer` evaluates key states at, as its HTTP handlers do.
    fn view_of(&self, writer: usize) -> DateTime<Utc> {
        timeline::decision_time(&self.snapshots[writer].keyset, self.clock_of(writer))
    }

    /// `writer` now serves the stored document: it re-read it, or wrote it.
    fn serve_stored(&mut self, writer: usize) {
        self.snapshots[writer].keyset = self.keyset.clone();
        self.snapshots[writer].stale_since = None;
        let view = self.view_of(writer);
        for key in timeline::published_at(&self.snapshots[writer].keyset, &self.families, view) {
            self.first_served
                .entry((writer, key.kid.clone()))
                .or_insert(self.truth);
        }
    }

    /// When a replica whose snapshot went stale at `since` next re-reads: the
    /// first of its reads (every `refresh` from its phase) after that instant.
    /// One that read just before a write serves the old document for a whole
    /// interval.
    fn next_read(&self, snapshot: &Snapshot, since: DateTime<Utc>) -> DateTime<Utc> {
        let refresh = self.refresh.num_milliseconds();
        let elapsed = (since - snapshot.phase).num_milliseconds();
        snapshot.phase + Duration::milliseconds((elapsed.div_euclid(refresh) + 1) * refresh)
    }

    /// Writers whose next read has come re-read the store. (Reads of a store
    /// that did not change since change nothing, so only stale ones count.)
    fn refresh_due(&mut self) {
        for writer in 0..self.offsets.len() {
            let snapshot = &self.snapshots[writer];
            if let Some(since) = snapshot.stale_since
                && self.truth >= self.next_read(snapshot, since)
            {
                self.serve_stored(writer);
            }
        }
    }

    /// The next instant a stale writer re-reads the store.
    fn next_refresh(&self) -> Option<DateTime<Utc>> {
        self.snapshots
            .iter()
            .filter_map(|snapshot| Some(self.next_read(snapshot, snapshot.stale_since?)))
            .min()
    }

    fn operate(&mut self, writer: usize, operation: &Operation) -> Result<(), TestCaseError> {
        if self.checked && !self.agrees(writer) {
            return Ok(());
        }
        let times = self.evidence(writer).times(self.clock_of(writer));
        let had_keys: HashSet<Algorithm> = self
            .keyset
            .keys
            .iter()
            .filter(|key| key.revoked_at.is_none())
            .map(|key| key.alg)
            .collect();
        let Decision { keyset, changes } =
            match self.planner.apply_at(operation, &self.keyset, times) {
                Ok(decision) => decision,
                Err(OperationError::UnknownKid(_) | OperationError::AlreadyRevoked(_)) => {
                    return Ok(());
                }
                Err(err) => return Err(TestCaseError::fail(format!("{operation:?}: {err}"))),
            };
        if self.checked && *operation == Operation::Maintain {
            for change in &changes {
                let emergency = match change {
                    Change::FirstKey { alg, .. } => had_keys.contains(alg),
                    Change::Promoted { early, .. } => *early,
                    Change::KeptSigning { .. } => true,
                    _ => false,
                };
                prop_assert!(
                    !emergency,
                    "writer {writer} (offset {}) decided on its own: {change}\n{}",
                    self.offsets[writer],
                    self.table()
                );
            }
        }
        for change in &changes {
            if let Change::FirstKey { kid, .. }
            | Change::Promoted {
                kid, early: true, ..
            } = change
            {
                self.exempt.insert(kid.clone());
            }
        }
        if let Some(keyset) = keyset {
            if let Operation::Revoke(kid) = operation {
                self.revoked.insert(kid.clone());
            }
            self.store(keyset)?;
            self.serve_stored(writer);
        }
        Ok(())
    }

    fn store(&mut self, keyset: Keyset) -> Result<(), TestCaseError> {
        let loaded = Keyset::from_document(&keyset.to_document());
        prop_assert!(
            loaded.is_ok(),
            "a writer stored a document that does not load: {}\n{}",
            loaded.unwrap_err(),
            table_of(&keyset, self.truth)
        );
        for key in &keyset.keys {
            let identity = (key.alg, key.created_at);
            let seen = self.identity.entry(key.kid.clone()).or_insert(identity);
            prop_assert_eq!(*seen, identity, "identity of {} changed", key.kid);
        }
        self.keyset = keyset;
        for snapshot in &mut self.snapshots {
            snapshot.stale_since.get_or_insert(self.truth);
        }
        if self.checked {
            self.check_bounds()?;
        }
        Ok(())
    }

    /// Each writer whose clock agrees maintains, as the rotator does when it wakes.
    fn maintain_all(&mut self) -> Result<(), TestCaseError> {
        for writer in 0..self.offsets.len() {
            self.operate(writer, &Operation::Maintain)?;
        }
        Ok(())
    }

    /// Checks what holds at every instant, writers up or down.
    fn observe(&mut self, up: bool) -> Result<(), TestCaseError> {
        let truth = self.truth;
        // What a replica whose clock is right sees: never before the newest write.
        let seen_at = timeline::decision_time(&self.keyset, truth);
        let families = self.families.clone();
        for &alg in &families {
            if !self.keyset.keys.iter().any(|key| key.alg == alg) {
                continue;
            }
            let current = self
                .keyset
                .keys
                .iter()
                .filter(|key| {
                    key.alg == alg && timeline::state_at(key, seen_at) == KeyState::Current
                })
                .count();
            if self.checked {
                prop_assert_eq!(
                    current,
                    1,
                    "{} current {} keys\n{}",
                    alg,
                    current,
                    self.table()
                );
            }
            if !up {
                continue;
            }
            // Writers whose clocks agree sign tokens; the others refuse to.
            for writer in 0..self.offsets.len() {
                if !self.agrees(writer) {
                    continue;
                }
                let view = self.view_of(writer);
                if let Some(key) = timeline::current_at(&self.snapshots[writer].keyset, alg, view) {
                    if self.checked && !self.exempt.contains(&key.kid) {
                        prop_assert!(
                            key.activates_at - key.created_at >= self.policy.lead,
                            "{} signs after being published for only {}\n{}",
                            key.kid,
                            key.activates_at - key.created_at,
                            self.table()
                        );
                        // A replica that has not re-read the store since a key was
                        // revoked signs with it until it does (up to the refresh
                        // interval): verifiers that already refuse it do what the
                        // revocation asked.
                        if self.check_caches && !self.revoked.contains(&key.kid) {
                            self.check_served_everywhere(writer, &key.kid)?;
                        }
                    }
                    let iat = self.clock_of(writer);
                    let last = self.last_iat.entry(key.kid.clone()).or_insert(iat);
                    *last = (*last).max(iat);
                }
            }
        }
        if !self.checked {
            return Ok(());
        }
        // A key stays in the document, published, while a token it signed is valid.
        let max_token_lifetime = self.policy.retention - self.policy.skew;
        for (kid, iat) in &self.last_iat {
            if self.revoked.contains(kid) || truth >= *iat + max_token_lifetime {
                continue;
            }
            let key = self.keyset.get(kid);
            prop_assert!(
                key.is_some_and(|key| timeline::state_at(key, truth).is_published()),
                "{kid} gone or withdrawn {} after a token it signed at {iat}\n{}",
                truth - *iat,
                self.table()
            );
        }
        Ok(())
    }

    /// `signer` signs with `kid` now: every replica has served it for
    /// `max_age`, so no verifier holds a cached JWKS without it.
    fn check_served_everywhere(&self, signer: usize, kid: &str) -> Result<(), TestCaseError> {
        for replica in 0..self.offsets.len() {
            let served = self.first_served.get(&(replica, kid.to_owned()));
            prop_assert!(
                served.is_some_and(|at| *at + self.max_age <= self.truth),
                "writer {signer} signs with {kid}, which writer {replica} {} \
                 (jwks_max_age {}, refresh_interval {}): a verifier that cached that \
                 replica's JWKS rejects the token\n{}",
                match served {
                    Some(at) => format!("has served only since {at}"),
                    None => "has not served yet".to_owned(),
                },
                self.max_age,
                self.refresh,
                self.table()
            );
        }
        Ok(())
    }

    /// No storm stores more than the timeline needs.
    fn check_bounds(&self) -> Result<(), TestCaseError> {
        let written = timeline::document_time(&self.keyset).unwrap_or(self.truth);
        let revoked = self
            .keyset
            .keys
            .iter()
            .filter(|key| key.revoked_at.is_some())
            .count();
        prop_assert!(
            revoked <= 1,
            "{revoked} revoked keys stored\n{}",
            self.table()
        );
        for &alg in &self.families {
            let family = || {
                self.keyset
                    .keys
                    .iter()
                    .filter(move |key| key.alg == alg && key.revoked_at.is_none())
            };
            let waiting = family().filter(|key| key.activates_at > written).count();
            prop_assert!(
                waiting <= 1,
                "{alg}: {waiting} keys wait to activate\n{}",
                self.table()
            );
            if self.policy.lead > Duration::zero() {
                // Each retired key was published for the lead before it signed, and
                // signed until its successor had been published for the lead.
                let retired = family()
                    .filter(|key| timeline::state_at(key, written) == KeyState::Retired)
                    .count() as i64;
                let most = (self.policy.retention + self.policy.lag).num_milliseconds()
                    / self.policy.lead.num_milliseconds()
                    + 2;
                prop_assert!(
                    retired <= most,
                    "{alg}: {retired} retired keys published, more than {most}\n{}",
                    self.table()
                );
            }
        }
        Ok(())
    }

    /// Advances the true time to `until`, stopping at every instant some
    /// writer's clock reaches a transition; when writers are up, each maintains.
    fn advance(&mut self, until: DateTime<Utc>, up: bool) -> Result<(), TestCaseError> {
        while self.truth < until {
            let mut step = until.min(self.truth + Duration::seconds(5));
            if let Some(read) = self.next_refresh() {
                step = step.min(read);
            }
            for writer in 0..self.offsets.len() {
                let view = self.view_of(writer);
                if let Some(transition) = timeline::next_transition_after(&self.keyset, view) {
                    step = step.min(self.truth + (transition - view));
                }
            }
            self.truth = step.max(self.truth + Duration::milliseconds(1));
            self.refresh_due();
            if up {
                self.maintain_all()?;
            }
            self.observe(up)?;
        }
        Ok(())
    }

    fn table(&self) -> String {
        format!(
            "truth {} offsets {:?}\n{}",
            self.truth,
            self.offsets
                .iter()
                .map(|offset| offset.num_milliseconds())
                .collect::<Vec<_>>(),
            table_of(&self.keyset, self.truth)
        )
    }
}

fn table_of(keyset: &Keyset, now: DateTime<Utc>) -> String {
    timeline::render_table(keyset, now)
}

/// One generated case.
/// The schedule and how the lead splits: what every property draws first.
#[derive(Clone, Debug)]
struct Timing {
    schedule_idx: usize,
    /// Where the lead lies between `clock_skew` and the shortest gap.
    lead_fraction: f64,
    /// How much of the lead beyond `clock_skew` is `store.refresh_interval`
    /// (the rest is `jwks_max_age`).
    refresh_fraction: f64,
    /// Each writer's first read of the store, as a fraction of the interval.
    phases: Vec<f64>,
}

/// Drawn as the four leading arguments were before they were grouped, so the
/// seeds in `proptest-regressions/` still give the same cases.
fn timing() -> impl Strategy<Value = Timing> {
    (0..SCHEDULES.len(), 0.0..=1.0f64, 0.0..=1.0f64, phases()).prop_map(
        |(schedule_idx, lead_fraction, refresh_fraction, phases)| Timing {
            schedule_idx,
            lead_fraction,
            refresh_fraction,
            phases,
        },
    )
}

struct Case<'a> {
    timing: &'a Timing,
    /// `clock_skew`.
    skew_ms: i64,
    /// `max_token_lifetime`.
    retention_ms: i64,
    two_families: bool,
    /// Each writer's clock minus the true time.
    offsets: &'a [i64],
    /// Whether writers check their clocks as the daemon does.
    checked: bool,
    /// Whether to check what verifiers' caches hold (clocks within the skew).
    check_caches: bool,
}

/// Runs one case through `ops`.
fn run(case: &Case<'_>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let Case {
        timing:
            &Timing {
                schedule_idx,
                lead_fraction,
                refresh_fraction,
                ref phases,
            },
        skew_ms,
        retention_ms,
        two_families,
        offsets,
        checked,
        check_caches,
    } = *case;
    let (expression, gap) = SCHEDULES[schedule_idx];
    let schedule: Schedule = expression.parse().unwrap();
    let families = if two_families {
        vec![Algorithm::EdDsa, Algorithm::Es256]
    } else {
        vec![Algorithm::EdDsa]
    };
    // The config requires the shortest gap to be at least the lead,
    // jwks_max_age + clock_skew + refresh_interval, with a refresh interval above 0.
    let skew = Duration::milliseconds(skew_ms.min(gap * 1000 - 1));
    let lead_ms = skew.num_milliseconds()
        + 1
        + ((gap * 1000 - 1 - skew.num_milliseconds()) as f64 * lead_fraction) as i64;
    let beyond_skew = lead_ms - skew.num_milliseconds();
    let refresh = Duration::milliseconds(((beyond_skew as f64 * refresh_fraction) as i64).max(1));
    let max_age = Duration::milliseconds(lead_ms) - skew - refresh;
    let policy = Policy {
        lead: Duration::milliseconds(lead_ms),
        retention: Duration::milliseconds(retention_ms) + skew,
        skew,
        lag: refresh,
    };
    let mut model = Model {
        planner: Planner::from_parts(families.clone(), schedule, policy, false),
        families,
        policy,
        max_age,
        refresh,
        keyset: Keyset::default(),
        snapshots: (0..offsets.len())
            .map(|writer| {
                let phase = phases.get(writer).copied().unwrap_or(0.0);
                Snapshot {
                    keyset: Keyset::default(),
                    phase: t0()
                        + Duration::milliseconds(
                            (refresh.num_milliseconds() as f64 * phase) as i64,
                        ),
                    stale_since: None,
                }
            })
            .collect(),
        first_served: HashMap::new(),
        check_caches,
        truth: t0(),
        offsets: offsets
            .iter()
            .map(|&ms| Duration::milliseconds(ms))
            .collect(),
        checked,
        identity: HashMap::new(),
        last_iat: HashMap::new(),
        revoked: HashSet::new(),
        exempt: HashSet::new(),
    };
    model.maintain_all()?;
    model.observe(true)?;
    for op in ops {
        match op {
            Op::Run(ms) => {
                let until = model.truth + Duration::milliseconds(ms);
                model.advance(until, true)?;
            }
            Op::Down(ms) => {
                let until = model.truth + Duration::milliseconds(ms);
                model.advance(until, false)?;
                model.maintain_all()?;
            }
            Op::Rotate(writer) => {
                let writer = model.writer(writer);
                model.operate(writer, &Operation::Rotate)?;
                model.observe(true)?;
            }
            Op::Revoke(writer, key_idx) => {
                if model.keyset.keys.is_empty() {
                    continue;
                }
                let writer = model.writer(writer);
                let kid = model.keyset.keys[key_idx % model.keyset.keys.len()]
                    .kid
                    .clone();
                model.operate(writer, &Operation::Revoke(kid))?;
                model.maintain_all()?;
                model.observe(true)?;
            }
            Op::Step(writer, ms) => {
                let writer = model.writer(writer);
                model.offsets[writer] += Duration::milliseconds(ms);
                model.maintain_all()?;
                model.observe(true)?;
            }
        }
    }
    Ok(())
}

/// Offsets within a tolerance of `skew_ms`: every clock within half of it
/// from the true time, so every pair agrees within the whole of it.
fn offsets_within(skew_ms: i64) -> impl Strategy<Value = Vec<i64>> {
    let half = skew_ms / 2;
    proptest::collection::vec(-half..=half, 1..=3)
}

/// The four properties, instantiated twice below: `quick` for the developer
/// loop (`cargo nextest run`), `deep` with many more cases for the full suite
/// (the `e2e` nextest profile, which `./scripts/test` and CI run). Both replay
/// the seeds in `proptest-regressions/operation/clock_tests.txt` first.
macro_rules! properties {
    ($cases:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases($cases))]

            /// Writers whose clocks agree within `clock_skew`, through storms and
            /// outages; clock steps (any size) may take one out of the tolerance.
            #[test]
            fn writers_within_the_skew_agree_and_keep_every_key_needed(
                timing in timing(),
                (skew_ms, offsets) in (0..4_000i64).prop_flat_map(|skew| (Just(skew), offsets_within(skew))),
                retention_ms in 0..30_000i64,
                two_families in any::<bool>(),
                ops in proptest::collection::vec(op(), 1..40),
            ) {
                run(&Case { timing: &timing, skew_ms, retention_ms, two_families, offsets: &offsets, checked: true, check_caches: false }, ops)?;
            }

            /// Replicas whose clocks agree within `clock_skew` and that each re-read
            /// the store on their own phase: whichever replica a verifier fetched the
            /// JWKS from, within `jwks_max_age` before a token was signed, it knew the
            /// token's key.
            #[test]
            fn every_replica_serves_a_key_for_jwks_max_age_before_any_signs_with_it(
                timing in timing(),
                (skew_ms, offsets) in (0..4_000i64).prop_flat_map(|skew| (Just(skew), offsets_within(skew))),
                retention_ms in 0..30_000i64,
                two_families in any::<bool>(),
                ops in proptest::collection::vec(op_without_steps(), 1..40),
            ) {
                run(&Case { timing: &timing, skew_ms, retention_ms, two_families, offsets: &offsets, checked: true, check_caches: true }, ops)?;
            }

            /// Writers with any clocks that do not check them: whatever they decide,
            /// every document they store loads again.
            #[test]
            fn whatever_the_clocks_every_stored_document_loads(
                timing in timing(),
                skew_ms in 0..4_000i64,
                offsets in proptest::collection::vec(-400_000..400_000i64, 1..=3),
                retention_ms in 0..30_000i64,
                ops in proptest::collection::vec(op(), 1..30),
            ) {
                run(&Case { timing: &timing, skew_ms, retention_ms, two_families: false, offsets: &offsets, checked: false, check_caches: false }, ops)?;
            }

            /// Writers beyond the tolerance from the start (one far behind, one far
            /// ahead, as after a snapshot restore or a bad RTC) beside a healthy one:
            /// the healthy one keeps everything needed, the others write nothing.
            #[test]
            fn a_writer_beyond_the_skew_changes_nothing(
                timing in timing(),
                skew_ms in 0..4_000i64,
                behind in 1..300_000i64,
                ahead in 1..300_000_000i64,
                retention_ms in 0..30_000i64,
                ops in proptest::collection::vec(op(), 1..30),
            ) {
                let offsets = [0, -(skew_ms + behind), skew_ms + ahead];
                run(&Case { timing: &timing, skew_ms, retention_ms, two_families: true, offsets: &offsets, checked: true, check_caches: false }, ops)?;
            }
        }
    };
}

mod quick {
    use super::*;
    properties!(32);
}

mod deep {
    use super::*;
    properties!(300);
}
