use std::convert::Infallible;
use std::sync::OnceLock;

use chrono::TimeZone;

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
        let key = KEY
            .get_or_init(|| PrivateKey::generate(Algorithm::EdDsa).unwrap())
            .clone();
        let kid = format!("{alg}-{}", self.made);
        Ok(KeyRecord::made(
            kid,
            alg,
            created_at,
            activates_at,
            crate::keyset::KeyMaterial::Local(key),
            None,
        ))
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
    check_with_skew(schedule, lead, retention, 0, events, expect);
}

/// A write as the daemon makes it: the decision, then pruning.
fn stored(mut keyset: Keyset, keep_revoked: Option<&str>, now: DateTime<Utc>) -> Keyset {
    prune_at(&mut keyset, keep_revoked, now);
    keyset
}

/// [`check`] with `clock_skew`; an event's time may be negative (a clock
/// behind the one that wrote before).
fn check_with_skew(
    schedule: &str,
    lead: i64,
    retention: i64,
    skew: i64,
    events: &str,
    expect: expect_test::Expect,
) {
    let policy = Policy {
        lead: Duration::seconds(lead),
        retention: Duration::seconds(retention),
        skew: Duration::seconds(skew),
        lag: Duration::zero(),
    };
    check_with_policy(schedule, policy, events, expect);
}

/// [`check`] with every part of the policy.
fn check_with_policy(schedule: &str, policy: Policy, events: &str, expect: expect_test::Expect) {
    let schedule: Schedule = schedule.parse().unwrap();
    let families = [Algorithm::Es256];
    let plan = Plan {
        families: &families,
        schedule: &schedule,
        policy,
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
        let mut said = Vec::new();
        match verb {
            "maintain" => {
                if let Some((next, _)) = ok(maintain_at(&keyset, &plan, now, &mut maker)) {
                    keyset = stored(next, None, now);
                }
            }
            "rotate" => {
                let (rotated, changes) = ok(rotate_at(&keyset, &plan, now, &mut maker));
                if let Some(rotated) = rotated {
                    keyset = stored(rotated, None, now);
                }
                said.extend(
                    changes
                        .iter()
                        .filter(|change| matches!(change, Change::Pending { .. }))
                        .map(ToString::to_string),
                );
            }
            "revoke" => {
                let kid = arg.split_whitespace().nth(1).unwrap();
                keyset = stored(
                    revoke_at(&keyset, kid, &plan, now, &mut maker).unwrap().0,
                    Some(kid),
                    now,
                );
            }
            "look" => {}
            other => panic!("unknown event {other}"),
        }
        out.push_str(&format!("@{seconds} {verb}\n"));
        for line in said {
            out.push_str(&format!("  says: {line}\n"));
        }
        let relative = |t: Option<DateTime<Utc>>| {
            t.map_or_else(
                || "-".to_owned(),
                |t| format!("{}", (t - t0()).num_seconds()),
            )
        };
        // As a replica sees it: never before the document's newest write.
        let seen_at = decision_time(&keyset, now);
        for key in &keyset.keys {
            out.push_str(&format!(
                "  {:<8} {:<7} created {:>4} activates {:>4} deactivates {:>4} expires {:>4}\n",
                key.kid,
                state_at(key, seen_at).name(),
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
              ES256-3  next    created   10 activates   15 deactivates    - expires    -
            @18 rotate
              ES256-2  retired created    0 activates   10 deactivates   15 expires   22
              ES256-3  current created   10 activates   15 deactivates   23 expires   30
              ES256-4  next    created   18 activates   23 deactivates    - expires    -
        "#]],
    );
}

#[test]
fn a_rotation_that_cuts_signing_short_covers_replicas_that_have_not_reread() {
    // At 16 s the next key (made at 10 s, lead 5 s) becomes current at once.
    // Replicas that read the store before 16 s sign with ES256-2 until they
    // re-read, up to the refresh interval (3 s) later: ES256-2 stays published
    // for the retention (7 s) after 19 s, not after 16 s.
    check_with_policy(
        "*/10 * * * * *",
        Policy {
            lead: Duration::seconds(5),
            retention: Duration::seconds(7),
            skew: Duration::zero(),
            lag: Duration::seconds(3),
        },
        "maintain 0; maintain 10; rotate 16",
        expect_test::expect![[r#"
            @0 maintain
              ES256-1  current created    0 activates    0 deactivates   10 expires   17
              ES256-2  next    created    0 activates   10 deactivates    - expires    -
            @10 maintain
              ES256-1  retired created    0 activates    0 deactivates   10 expires   17
              ES256-2  current created    0 activates   10 deactivates   20 expires   27
              ES256-3  next    created   10 activates   20 deactivates    - expires    -
            @16 rotate
              ES256-1  retired created    0 activates    0 deactivates   10 expires   17
              ES256-2  retired created    0 activates   10 deactivates   16 expires   26
              ES256-3  current created   10 activates   16 deactivates   30 expires   37
              ES256-4  next    created   16 activates   30 deactivates    - expires    -
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
            skew: Duration::zero(),
            lag: Duration::zero(),
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
        skew: Duration::zero(),
        lag: Duration::zero(),
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

// The property tests (random schedules, outages, operation storms, writers whose
// clocks disagree) drive these functions through the daemon's own decision path:
// see `rotator/clock_tests.rs`.

#[test]
fn a_replica_behind_by_less_than_the_skew_sees_the_first_key_current() {
    // Writer A's clock reads 0 when it makes the first key; replica B's reads -10
    // (skew 60 s). The first key is written 60 s in the past, so B sees it current,
    // and B, deciding never before the document's newest write, changes nothing.
    check_with_skew(
        "0 * * * * *",
        70,
        100,
        60,
        "maintain 0; look -10; maintain -10; revoke -5 ES256-1; look -30; maintain -30",
        expect_test::expect![[r#"
            @0 maintain
              ES256-1  current created  -60 activates  -60 deactivates  120 expires  220
              ES256-2  next    created    0 activates  120 deactivates    - expires    -
            @-10 look
              ES256-1  current created  -60 activates  -60 deactivates  120 expires  220
              ES256-2  next    created    0 activates  120 deactivates    - expires    -
            @-10 maintain
              ES256-1  current created  -60 activates  -60 deactivates  120 expires  220
              ES256-2  next    created    0 activates  120 deactivates    - expires    -
            @-5 revoke
              ES256-1  revoked created  -60 activates  -60 deactivates    0 expires  100
              ES256-2  current created    0 activates    0 deactivates  120 expires  220
              ES256-3  next    created    0 activates  120 deactivates    - expires    -
            @-30 look
              ES256-1  revoked created  -60 activates  -60 deactivates    0 expires  100
              ES256-2  current created    0 activates    0 deactivates  120 expires  220
              ES256-3  next    created    0 activates  120 deactivates    - expires    -
            @-30 maintain
              ES256-1  revoked created  -60 activates  -60 deactivates    0 expires  100
              ES256-2  current created    0 activates    0 deactivates  120 expires  220
              ES256-3  next    created    0 activates  120 deactivates    - expires    -
        "#]],
    );
}

#[test]
fn a_storm_of_rotations_makes_one_key() {
    check(
        "*/10 * * * * *",
        5,
        7,
        "maintain 0; rotate 1; rotate 1; rotate 2; rotate 4; look 6",
        expect_test::expect![[r#"
            @0 maintain
              ES256-1  current created    0 activates    0 deactivates   10 expires   17
              ES256-2  next    created    0 activates   10 deactivates    - expires    -
            @1 rotate
              ES256-1  current created    0 activates    0 deactivates    5 expires   12
              ES256-2  next    created    0 activates    5 deactivates    - expires    -
            @1 rotate
              says: ES256: a rotation is already pending: key ES256-2 becomes current at 2026-11-28T00:00:05Z (the earliest instant it has been published for jwks_max_age + clock_skew); no new key made
              ES256-1  current created    0 activates    0 deactivates    5 expires   12
              ES256-2  next    created    0 activates    5 deactivates    - expires    -
            @2 rotate
              says: ES256: a rotation is already pending: key ES256-2 becomes current at 2026-11-28T00:00:05Z (the earliest instant it has been published for jwks_max_age + clock_skew); no new key made
              ES256-1  current created    0 activates    0 deactivates    5 expires   12
              ES256-2  next    created    0 activates    5 deactivates    - expires    -
            @4 rotate
              says: ES256: a rotation is already pending: key ES256-2 becomes current at 2026-11-28T00:00:05Z (the earliest instant it has been published for jwks_max_age + clock_skew); no new key made
              ES256-1  current created    0 activates    0 deactivates    5 expires   12
              ES256-2  next    created    0 activates    5 deactivates    - expires    -
            @6 look
              ES256-1  retired created    0 activates    0 deactivates    5 expires   12
              ES256-2  current created    0 activates    5 deactivates    - expires    -
        "#]],
    );
}

#[test]
fn a_first_key_is_current_by_any_clock_within_the_skew_without_a_floor() {
    // Readers that do not floor their clock to the document (an older replica,
    // a script reading the store) still see the first key current.
    let schedule: Schedule = "0 * * * * *".parse().unwrap();
    let families = [Algorithm::Es256];
    let plan = Plan {
        families: &families,
        schedule: &schedule,
        policy: Policy {
            lead: Duration::seconds(70),
            retention: Duration::seconds(100),
            skew: Duration::seconds(60),
            lag: Duration::zero(),
        },
    };
    let (keyset, _) = ok(maintain_at(
        &Keyset::default(),
        &plan,
        t0(),
        &mut FakeMaker::default(),
    ))
    .unwrap();
    for behind in [0, 1, 30, 60] {
        let at = t0() - Duration::seconds(behind);
        assert_eq!(
            current_at(&keyset, Algorithm::Es256, at).map(|key| key.kid.as_str()),
            Some("ES256-1"),
            "{behind} s behind"
        );
    }
}
