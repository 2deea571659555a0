use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::OnceLock;

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::keys::PrivateKey;

/// Makes keys with readable kids (`ES256-1`, `ES256-2`, ..) over one shared key.
#[derive(Default)]
struct FakeMaker {
    made: usize,
}

impl KeyMaker for FakeMaker {
    type Error = Infallible;

    fn make(
        &mut self,
        alg: Algorithm,
        created_at: DateTime<Utc>,
        activates_at: DateTime<Utc>,
        _cert_not_after: DateTime<Utc>,
    ) -> Result<KeyRecord, Infallible> {
        static KEY: OnceLock<PrivateKey> = OnceLock::new();
        self.made += 1;
        Ok(KeyRecord {
            kid: format!("{alg}-{}", self.made),
            alg,
            created_at,
            activates_at,
            deactivates_at: None,
            expires_at: None,
            revoked_at: None,
            key: KEY
                .get_or_init(|| PrivateKey::generate(Algorithm::EdDsa).unwrap())
                .clone(),
            certificate: None,
        })
    }

    fn recertify(
        &mut self,
        _key: &mut KeyRecord,
        _not_after: DateTime<Utc>,
    ) -> Result<(), Infallible> {
        Ok(())
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap()
}

fn ok<T>(result: Result<T, Infallible>) -> T {
    match result {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// Runs a script of events against an empty keyset and renders the table
/// after each, in the format of `jwkd keys` with times relative to t0.
fn check(schedule: &str, lead: i64, retention: i64, events: &str, expect: expect_test::Expect) {
    let schedule: Schedule = schedule.parse().unwrap();
    let families = [Algorithm::Es256];
    let plan = Plan {
        families: &families,
        schedule: &schedule,
        policy: Policy {
            lead: Duration::seconds(lead),
            retention: Duration::seconds(retention),
        },
    };
    let mut maker = FakeMaker::default();
    let mut keyset = Keyset::default();
    let mut out = String::new();
    for event in events.split(';').map(str::trim) {
        let (verb, arg) = event.split_once(' ').unwrap_or((event, ""));
        let seconds: i64 = arg
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let now = t0() + Duration::seconds(seconds);
        match verb {
            "maintain" => {
                if let Some((next, _)) = ok(maintain_at(&keyset, &plan, now, &mut maker)) {
                    keyset = next;
                }
            }
            "rotate" => keyset = ok(rotate_at(&keyset, &plan, now, &mut maker)).0,
            "revoke" => {
                let kid = arg.split_whitespace().nth(1).unwrap();
                keyset = revoke_at(&keyset, kid, &plan, now, &mut maker).unwrap().0;
            }
            "look" => {}
            other => panic!("unknown event {other}"),
        }
        out.push_str(&format!("@{seconds} {verb}\n"));
        let relative = |t: Option<DateTime<Utc>>| {
            t.map_or_else(
                || "-".to_owned(),
                |t| format!("{}", (t - t0()).num_seconds()),
            )
        };
        for key in &keyset.keys {
            out.push_str(&format!(
                "  {:<8} {:<7} created {:>4} activates {:>4} deactivates {:>4} expires {:>4}\n",
                key.kid,
                state_at(key, now).name(),
                relative(Some(key.created_at)),
                relative(Some(key.activates_at)),
                relative(key.deactivates_at),
                relative(key.expires_at),
            ));
        }
    }
    expect.assert_eq(&out);
}

#[test]
fn steady_rotation() {
    check(
        "*/10 * * * * *",
        5,
        7,
        "maintain 0; maintain 10; look 15; maintain 20; maintain 30",
        expect_test::expect![[r#"
            @0 maintain
              ES256-1  current created    0 activates    0 deactivates   10 expires   17
              ES256-2  next    created    0 activates   10 deactivates    - expires    -
            @10 maintain
              ES256-1  retired created    0 activates    0 deactivates   10 expires   17
              ES256-2  current created    0 activates   10 deactivates   20 expires   27
              ES256-3  next    created   10 activates   20 deactivates    - expires    -
            @15 look
              ES256-1  retired created    0 activates    0 deactivates   10 expires   17
              ES256-2  current created    0 activates   10 deactivates   20 expires   27
              ES256-3  next    created   10 activates   20 deactivates    - expires    -
            @20 maintain
              ES256-2  retired created    0 activates   10 deactivates   20 expires   27
              ES256-3  current created   10 activates   20 deactivates   30 expires   37
              ES256-4  next    created   20 activates   30 deactivates    - expires    -
            @30 maintain
              ES256-3  retired created   10 activates   20 deactivates   30 expires   37
              ES256-4  current created   20 activates   30 deactivates   40 expires   47
              ES256-5  next    created   30 activates   40 deactivates    - expires    -
        "#]],
    );
}

#[test]
fn a_next_key_made_late_waits_for_the_lead() {
    // The daemon was down from 3 s to 38 s: the next key became current at 10 s and
    // keeps signing; its successor is made at 38 s and cannot activate at 40 s.
    check(
        "*/10 * * * * *",
        5,
        7,
        "maintain 3; look 25; maintain 38",
        expect_test::expect![[r#"
            @3 maintain
              ES256-1  current created    3 activates    3 deactivates   10 expires   17
              ES256-2  next    created    3 activates   10 deactivates    - expires    -
            @25 look
              ES256-1  expired created    3 activates    3 deactivates   10 expires   17
              ES256-2  current created    3 activates   10 deactivates    - expires    -
            @38 maintain
              ES256-2  current created    3 activates   10 deactivates   50 expires   57
              ES256-3  next    created   38 activates   50 deactivates    - expires    -
        "#]],
    );
}

#[test]
fn rotate_now_and_later() {
    // At 12 s the next key (made at 10 s) has not been published for 5 s: it
    // becomes current at 15 s. At 18 s the key made at 12 s is published long enough.
    check(
        "*/10 * * * * *",
        5,
        7,
        "maintain 0; maintain 10; rotate 12; rotate 18",
        expect_test::expect![[r#"
            @0 maintain
              ES256-1  current created    0 activates    0 deactivates   10 expires   17
              ES256-2  next    created    0 activates   10 deactivates    - expires    -
            @10 maintain
              ES256-1  retired created    0 activates    0 deactivates   10 expires   17
              ES256-2  current created    0 activates   10 deactivates   20 expires   27
              ES256-3  next    created   10 activates   20 deactivates    - expires    -
            @12 rotate
              ES256-1  retired created    0 activates    0 deactivates   10 expires   17
              ES256-2  current created    0 activates   10 deactivates   15 expires   22
              ES256-3  next    created   10 activates   15 deactivates   20 expires   27
              ES256-4  next    created   12 activates   20 deactivates    - expires    -
            @18 rotate
              ES256-1  expired created    0 activates    0 deactivates   10 expires   17
              ES256-2  retired created    0 activates   10 deactivates   15 expires   22
              ES256-3  retired created   10 activates   15 deactivates   18 expires   25
              ES256-4  current created   12 activates   18 deactivates   30 expires   37
              ES256-5  next    created   18 activates   30 deactivates    - expires    -
        "#]],
    );
}

#[test]
fn revoke_current_and_next() {
    check(
        "*/10 * * * * *",
        5,
        7,
        "maintain 0; revoke 4 ES256-1; revoke 6 ES256-3",
        expect_test::expect![[r#"
            @0 maintain
              ES256-1  current created    0 activates    0 deactivates   10 expires   17
              ES256-2  next    created    0 activates   10 deactivates    - expires    -
            @4 revoke
              ES256-1  revoked created    0 activates    0 deactivates    4 expires   11
              ES256-2  current created    0 activates    4 deactivates   10 expires   17
              ES256-3  next    created    4 activates   10 deactivates    - expires    -
            @6 revoke
              ES256-1  revoked created    0 activates    0 deactivates    4 expires   11
              ES256-2  current created    0 activates    4 deactivates   20 expires   27
              ES256-3  revoked created    4 activates   10 deactivates    - expires    -
              ES256-4  next    created    6 activates   20 deactivates    - expires    -
        "#]],
    );
}

#[test]
fn unknown_and_repeated_revocations_are_refused() {
    let schedule: Schedule = "*/10 * * * * *".parse().unwrap();
    let families = [Algorithm::Es256];
    let plan = Plan {
        families: &families,
        schedule: &schedule,
        policy: Policy {
            lead: Duration::seconds(5),
            retention: Duration::seconds(7),
        },
    };
    let mut maker = FakeMaker::default();
    let keyset = ok(maintain_at(&Keyset::default(), &plan, t0(), &mut maker))
        .unwrap()
        .0;
    assert!(matches!(
        revoke_at(&keyset, "nope", &plan, t0(), &mut maker),
        Err(RevokeError::UnknownKid(_))
    ));
    let revoked = revoke_at(&keyset, "ES256-1", &plan, t0(), &mut maker)
        .unwrap()
        .0;
    assert!(matches!(
        revoke_at(&revoked, "ES256-1", &plan, t0(), &mut maker),
        Err(RevokeError::AlreadyRevoked(_))
    ));
}

#[test]
fn a_dropped_family_stops_signing_and_retires() {
    let schedule: Schedule = "*/10 * * * * *".parse().unwrap();
    let both = [Algorithm::Es256, Algorithm::EdDsa];
    let policy = Policy {
        lead: Duration::seconds(5),
        retention: Duration::seconds(7),
    };
    let mut maker = FakeMaker::default();
    let plan = Plan {
        families: &both,
        schedule: &schedule,
        policy,
    };
    let keyset = ok(maintain_at(&Keyset::default(), &plan, t0(), &mut maker))
        .unwrap()
        .0;
    let only_es = [Algorithm::Es256];
    let plan = Plan {
        families: &only_es,
        schedule: &schedule,
        policy,
    };
    let now = t0() + Duration::seconds(3);
    let (keyset, _) = ok(maintain_at(&keyset, &plan, now, &mut maker)).unwrap();
    assert!(current_at(&keyset, Algorithm::EdDsa, now).is_none());
    let published: Vec<&str> = published_at(&keyset, &only_es, now)
        .iter()
        .map(|key| key.kid.as_str())
        .collect();
    // The retired EdDSA key stays published for tokens it signed; its next key is gone.
    assert_eq!(published, ["ES256-1", "ES256-2", "EdDSA-3"]);
}

// ---- property tests over random schedules, outages, rotations and revocations ----

#[derive(Clone, Debug)]
enum Op {
    /// The daemon runs for this many milliseconds, waking at every transition.
    Run(i64),
    /// The daemon is down for this many milliseconds.
    Down(i64),
    Rotate,
    /// Revoke the key at this index (modulo the number of keys).
    Revoke(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..40_000i64).prop_map(Op::Run),
        2 => (1..90_000i64).prop_map(Op::Down),
        1 => Just(Op::Rotate),
        1 => any::<usize>().prop_map(Op::Revoke),
    ]
}

const SCHEDULES: [(&str, i64); 4] = [
    ("*/10 * * * * *", 10),
    ("0,7,30 * * * * *", 7),
    ("*/3 * * * * *", 3),
    ("0 * * * * *", 60),
];

struct Model<'a> {
    plan: Plan<'a>,
    keyset: Keyset,
    maker: FakeMaker,
    now: DateTime<Utc>,
    /// Keys allowed to sign without the full lead: first keys, emergency promotions.
    exempt: HashSet<String>,
    /// Every key ever stored, as first seen: identity must never change.
    identity: HashMap<String, (Algorithm, DateTime<Utc>)>,
    /// When each key was last seen signing.
    last_signing: HashMap<String, DateTime<Utc>>,
    revoked: HashSet<String>,
}

impl Model<'_> {
    fn store(&mut self, keyset: Keyset, changes: &[Change]) -> Result<(), TestCaseError> {
        for change in changes {
            match change {
                Change::FirstKey { kid, .. }
                | Change::Promoted {
                    kid, early: true, ..
                } => {
                    self.exempt.insert(kid.clone());
                }
                Change::Revoked { kid, .. } => {
                    self.revoked.insert(kid.clone());
                }
                _ => {}
            }
        }
        // Only expired or revoked keys may leave the store.
        for key in &self.keyset.keys {
            if keyset.get(&key.kid).is_none() {
                let state = state_at(key, self.now);
                prop_assert!(
                    matches!(state, KeyState::Expired | KeyState::Revoked)
                        || self.revoked.contains(&key.kid),
                    "{} pruned while {state}",
                    key.kid
                );
            }
        }
        for key in &keyset.keys {
            let identity = (key.alg, key.created_at);
            let seen = self.identity.entry(key.kid.clone()).or_insert(identity);
            prop_assert_eq!(*seen, identity, "identity of {} changed", key.kid);
        }
        self.keyset = keyset;
        Ok(())
    }

    fn maintain(&mut self) -> Result<(), TestCaseError> {
        if let Some((keyset, changes)) = ok(maintain_at(
            &self.keyset,
            &self.plan,
            self.now,
            &mut self.maker,
        )) {
            self.store(keyset, &changes)?;
        }
        for &alg in self.plan.families {
            let mut next: Vec<&KeyRecord> = self
                .keyset
                .keys
                .iter()
                .filter(|key| key.alg == alg && state_at(key, self.now) == KeyState::Next)
                .collect();
            // Usually one; more while rotations wait for their keys' lead. Never none.
            prop_assert!(!next.is_empty(), "no next key of {} after maintain", alg);
            // The chain is consistent: each key ends when its successor starts.
            next.sort_by_key(|key| key.activates_at);
            let current = current_at(&self.keyset, alg, self.now).unwrap();
            prop_assert_eq!(current.deactivates_at, Some(next[0].activates_at));
            for pair in next.windows(2) {
                prop_assert_eq!(pair[0].deactivates_at, Some(pair[1].activates_at));
            }
            prop_assert_eq!(next[next.len() - 1].deactivates_at, None);
        }
        self.observe()
    }

    /// Checks the invariants that hold at every instant, daemon up or down.
    fn observe(&mut self) -> Result<(), TestCaseError> {
        let now = self.now;
        for &alg in self.plan.families {
            let current: Vec<&KeyRecord> = self
                .keyset
                .keys
                .iter()
                .filter(|key| key.alg == alg && state_at(key, now) == KeyState::Current)
                .collect();
            prop_assert_eq!(
                current.len(),
                1,
                "{} current {} keys at {}",
                current.len(),
                alg,
                now
            );
            let signing = current[0];
            if !self.exempt.contains(&signing.kid) {
                prop_assert!(
                    signing.activates_at - signing.created_at >= self.plan.policy.lead,
                    "{} signs after being published for only {}",
                    signing.kid,
                    signing.activates_at - signing.created_at
                );
            }
            self.last_signing.insert(signing.kid.clone(), now);
        }
        // A key that signed stays published for the retention after it last signed.
        for (kid, last) in &self.last_signing {
            if self.revoked.contains(kid) || now >= *last + self.plan.policy.retention {
                continue;
            }
            let key = self.keyset.get(kid);
            prop_assert!(
                key.is_some(),
                "{kid} pruned {} after it signed",
                now - *last
            );
            let key = key.unwrap();
            prop_assert!(
                state_at(key, now).is_published(),
                "{kid} withdrawn while tokens may be valid"
            );
            if let (Some(deactivates_at), Some(expires_at)) = (key.deactivates_at, key.expires_at) {
                prop_assert_eq!(expires_at, deactivates_at + self.plan.policy.retention);
            }
        }
        Ok(())
    }

    /// Advances to `until`, visiting every transition on the way; when the
    /// daemon is up it maintains at each, as the rotator wakes at each.
    fn advance(&mut self, until: DateTime<Utc>, up: bool) -> Result<(), TestCaseError> {
        while self.now < until {
            let step = next_transition_after(&self.keyset, self.now)
                .unwrap_or(until)
                .min(until)
                .min(self.now + Duration::seconds(5));
            self.now = step;
            if up {
                self.maintain()?;
            } else {
                self.observe()?;
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn timeline_invariants(
        schedule_idx in 0..SCHEDULES.len(),
        lead_fraction in 0.0..=1.0f64,
        retention_ms in 0..30_000i64,
        two_families in any::<bool>(),
        start_ms in 0..60_000i64,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let (expression, gap) = SCHEDULES[schedule_idx];
        let schedule: Schedule = expression.parse().unwrap();
        let families: &[Algorithm] = if two_families {
            &[Algorithm::Es256, Algorithm::EdDsa]
        } else {
            &[Algorithm::Es256]
        };
        let lead_ms = (gap as f64 * 1000.0 * lead_fraction) as i64;
        let mut model = Model {
            plan: Plan {
                families,
                schedule: &schedule,
                policy: Policy {
                    lead: Duration::milliseconds(lead_ms),
                    retention: Duration::milliseconds(retention_ms),
                },
            },
            keyset: Keyset::default(),
            maker: FakeMaker::default(),
            now: t0() + Duration::milliseconds(start_ms),
            exempt: HashSet::new(),
            identity: HashMap::new(),
            last_signing: HashMap::new(),
            revoked: HashSet::new(),
        };
        model.maintain()?;
        for op in ops {
            match op {
                Op::Run(ms) => {
                    let until = model.now + Duration::milliseconds(ms);
                    model.advance(until, true)?;
                }
                Op::Down(ms) => {
                    let until = model.now + Duration::milliseconds(ms);
                    model.advance(until, false)?;
                    model.maintain()?;
                }
                Op::Rotate => {
                    let (keyset, changes) = ok(rotate_at(&model.keyset, &model.plan, model.now, &mut model.maker));
                    model.store(keyset, &changes)?;
                    model.observe()?;
                }
                Op::Revoke(idx) => {
                    if model.keyset.keys.is_empty() {
                        continue;
                    }
                    let kid = model.keyset.keys[idx % model.keyset.keys.len()].kid.clone();
                    match revoke_at(&model.keyset, &kid, &model.plan, model.now, &mut model.maker) {
                        Ok((keyset, changes)) => {
                            model.store(keyset, &changes)?;
                            model.maintain()?;
                        }
                        Err(RevokeError::AlreadyRevoked(_)) => {}
                        Err(err) => prop_assert!(false, "revoke {kid}: {err}"),
                    }
                }
            }
        }
    }
}

#[test]
fn rotating_twice_before_the_first_is_safe_moves_on_to_the_newer_key() {
    check(
        "*/10 * * * * *",
        5,
        7,
        "maintain 0; rotate 1; rotate 2; look 6",
        expect_test::expect![[r#"
            @0 maintain
              ES256-1  current created    0 activates    0 deactivates   10 expires   17
              ES256-2  next    created    0 activates   10 deactivates    - expires    -
            @1 rotate
              ES256-1  current created    0 activates    0 deactivates    5 expires   12
              ES256-2  next    created    0 activates    5 deactivates   10 expires   17
              ES256-3  next    created    1 activates   10 deactivates    - expires    -
            @2 rotate
              ES256-1  current created    0 activates    0 deactivates    5 expires   12
              ES256-2  next    created    0 activates    5 deactivates    6 expires   13
              ES256-3  next    created    1 activates    6 deactivates   10 expires   17
              ES256-4  next    created    2 activates   10 deactivates    - expires    -
            @6 look
              ES256-1  retired created    0 activates    0 deactivates    5 expires   12
              ES256-2  retired created    0 activates    5 deactivates    6 expires   13
              ES256-3  current created    1 activates    6 deactivates   10 expires   17
              ES256-4  next    created    2 activates   10 deactivates    - expires    -
        "#]],
    );
}
