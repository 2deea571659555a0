//! Clocks that disagree, with real processes: `jwkd` runs under libfaketime
//! (installed by `scripts/test`) with its clock shifted, beside daemons on the
//! true time, on one store: the file store and Secrets Manager (the emulator).
//!
//! - two daemons started at once on an empty store, one 10 s behind (within the
//!   default `clock_skew` of 1 m), then an emergency revoke from the slow host:
//!   the keyset loads, both agree on the current key, both restart;
//! - one daemon whose clock stepped back a day: it writes nothing, says why on
//!   `/readyz` and in metrics, `jwkd rotate` refuses, and it resumes by itself
//!   when its clock is right again;
//! - one replica three days ahead beside a healthy one: it writes nothing, so
//!   the key that is signing stays published;
//! - a storm of `jwkd rotate` beside a daemon: one rotation, no extra keys.
//!
//! Each shifted process reads its offset from a file on every clock read
//! (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE`), so a test can set its
//! clock right while it runs. The monotonic clock is left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, Daemon, Outcome, SLOW_CONFIG, TestDir, jwkd};

/// Where Debian's `libfaketime` package puts the preload library.
const LIBFAKETIME: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

const ENDPOINT_VAR: &str = "JWKD_TEST_SM_ENDPOINT";
const READY: Duration = Duration::from_secs(30);
/// Long enough for several refreshes (`refresh_interval = "1s"`).
const A_FEW_REFRESHES: Duration = Duration::from_secs(4);

fn libfaketime() -> PathBuf {
    LIBFAKETIME
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "libfaketime is not installed (looked for {LIBFAKETIME:?}): these tests shift \
                 jwkd's clock with it. Install it with `apt-get install faketime`, or run \
                 ./scripts/test, which does."
            )
        })
}

/// A shifted clock for the processes it is applied to; `offset` in
/// libfaketime's relative syntax (`-10s`, `+3d`, `+0`).
struct FakeClock {
    spec: PathBuf,
    library: PathBuf,
}

impl FakeClock {
    fn new(dir: &Path, name: &str, offset: &str) -> FakeClock {
        let clock = FakeClock {
            spec: dir.join(format!("faketime-{name}")),
            library: libfaketime(),
        };
        clock.set(offset);
        clock
    }

    /// Shifts the clock of every process using it, at once.
    fn set(&self, offset: &str) {
        std::fs::write(&self.spec, format!("{offset}\n")).expect("write the faketime spec");
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env("LD_PRELOAD", &self.library)
            .env("FAKETIME_TIMESTAMP_FILE", &self.spec)
            .env("FAKETIME_NO_CACHE", "1")
            .env("DONT_FAKE_MONOTONIC", "1");
    }
}

/// Where the keyset lives in one test.
enum Store {
    File,
    Aws { endpoint: String, secret_id: String },
}

impl Store {
    /// The Secrets Manager emulator's store for a fresh secret, or a failure
    /// that says how to get the emulator.
    fn aws(name: &str) -> Store {
        let endpoint = std::env::var(ENDPOINT_VAR).unwrap_or_else(|_| {
            panic!(
                "{ENDPOINT_VAR} is not set: this test needs the Secrets Manager emulator. Run \
                 ./scripts/test, which installs and starts it (moto_server on loopback)."
            )
        });
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Store::Aws {
            endpoint,
            secret_id: format!("jwkd-clocks-{name}-{}-{unique}", std::process::id()),
        }
    }

    /// `SLOW_CONFIG` (daily rotation, `clock_skew = "1m"`) on this store, with an
    /// issuer client `minter` (secret `minter-secret`).
    fn config(&self) -> String {
        let minter = util::hash_secret("minter-secret");
        let clients = format!(
            "\n[issuer]\nissuer = \"https://jwkd.test\"\ntoken_lifetime = \"15m\"\n\n\
             [[clients]]\nid = \"minter\"\nsecret_hash = \"{minter}\"\n\
             audiences = [\"anything\"]\nroles = [\"issuer\"]\n"
        );
        let store = match self {
            Store::File => SLOW_CONFIG.to_owned(),
            Store::Aws {
                endpoint,
                secret_id,
            } => util::replace_once(
                SLOW_CONFIG,
                "backend = \"file\"\npath = \"keyset.json\"",
                &format!(
                    "backend = \"aws-secrets-manager\"\nsecret_id = \"{secret_id}\"\n\
                     region = \"us-east-1\"\nendpoint_url = \"{endpoint}\""
                ),
            ),
        };
        store + &clients
    }

    /// A `jwkd` command for this store, on `clock` if given.
    fn command(&self, clock: Option<&FakeClock>) -> Command {
        let mut cmd = jwkd();
        if let Store::Aws { .. } = self {
            crate::aws::replica::with_test_credentials(&mut cmd);
        }
        if let Some(clock) = clock {
            clock.apply(&mut cmd);
        }
        cmd
    }
}

/// One test's store, config and processes.
struct Site {
    store: Store,
    dir: TestDir,
}

impl Site {
    fn new(store: Store) -> Site {
        let dir = TestDir::new(&store.config());
        Site { store, dir }
    }

    fn clock(&self, name: &str, offset: &str) -> FakeClock {
        FakeClock::new(self.dir.path(), name, offset)
    }

    fn spawn(&self, clock: Option<&FakeClock>) -> Daemon {
        Daemon::spawn_command(self.store.command(clock), &self.dir.config_path())
    }

    fn serve(&self, clock: Option<&FakeClock>) -> Daemon {
        let mut daemon = self.spawn(clock);
        daemon.wait_listening(util::LISTEN_TIMEOUT);
        daemon
    }

    fn run(&self, clock: Option<&FakeClock>, verb: &str, args: &[&str]) -> Outcome {
        let mut cmd = self.store.command(clock);
        cmd.arg(verb)
            .arg("--config")
            .arg(self.dir.config_path())
            .args(args);
        util::run_cmd(cmd, None, util::CMD_TIMEOUT)
    }

    /// `jwkd keys --json` by `clock`: the stored keyset must load (exit 0).
    fn keys(&self, clock: Option<&FakeClock>) -> Vec<Value> {
        let outcome = self.run(clock, "keys", &["--json"]);
        outcome.assert_code(0);
        serde_json::from_str(&outcome.stdout)
            .unwrap_or_else(|err| panic!("`keys --json` is not JSON: {err}\n{outcome}"))
    }

    /// The stored keyset without the states: what a write would change.
    fn stored(&self) -> BTreeMap<String, Value> {
        self.keys(None)
            .into_iter()
            .map(|mut key| {
                key.as_object_mut()
                    .expect("a key is an object")
                    .remove("state");
                (key["kid"].as_str().unwrap_or_default().to_owned(), key)
            })
            .collect()
    }
}

/// The current kid of each family, as listed.
fn current_kids(keys: &[Value]) -> BTreeMap<String, String> {
    keys.iter()
        .filter(|key| key["state"] == "current")
        .map(|key| {
            (
                key["alg"].as_str().unwrap_or_default().to_owned(),
                key["kid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn kids_in_state(keys: &[Value], state: &str) -> usize {
    keys.iter().filter(|key| key["state"] == state).count()
}

fn jwks(daemon: &Daemon) -> BTreeSet<String> {
    daemon.jwks_kids(true)
}

/// `/readyz` until it answers 503 with a reason containing every word.
fn wait_unready_saying(daemon: &Daemon, words: &[&str]) -> String {
    util::poll(READY, || {
        let response = daemon.get("/readyz");
        let text = response.text();
        if response.status == 503 && words.iter().all(|word| text.contains(word)) {
            Ok(text)
        } else {
            Err(format!("{response}"))
        }
    })
    .unwrap_or_else(|last| {
        panic!(
            "/readyz never answered 503 naming {words:?}; last answer:\n{last}\n---- daemon ----\n{}",
            daemon.stderr_text()
        )
    })
}

fn metric(daemon: &Daemon, series: &str) -> Option<f64> {
    daemon.get("/metrics").text().lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

/// `POST /v1/sign` as the issuer client: the status and the body.
fn sign(daemon: &Daemon) -> (u16, String) {
    let response = daemon.request(
        "POST",
        "/v1/sign",
        &[
            ("Authorization", "Bearer minter:minter-secret"),
            ("Content-Type", "application/json"),
        ],
        br#"{"sub": "a-service", "aud": "anything"}"#,
    );
    (response.status, response.text())
}

fn no_corruption(daemons: &[&Daemon]) {
    for daemon in daemons {
        let output = daemon.stderr_text();
        assert!(
            !output.contains("corrupt"),
            "a daemon found the keyset corrupt:\n{output}"
        );
    }
}

// ---- 1. two daemons on an empty store, one 10 s behind ----

fn replicas_within_the_skew_agree(site: &Site) {
    let slow = site.clock("slow", "-10s");
    // Both start at once on the empty store: either may make the first keys.
    let mut on_time = site.spawn(None);
    let mut behind = site.spawn(Some(&slow));
    on_time.wait_listening(util::LISTEN_TIMEOUT);
    behind.wait_listening(util::LISTEN_TIMEOUT);
    on_time.wait_ready(READY);
    behind.wait_ready(READY);

    let seen_on_time = site.keys(None);
    let seen_behind = site.keys(Some(&slow));
    let current = current_kids(&seen_on_time);
    assert_eq!(
        current.len(),
        1,
        "expected one current key: {seen_on_time:#?}"
    );
    assert_eq!(
        current,
        current_kids(&seen_behind),
        "the host 10 s behind sees another current key\non time: {seen_on_time:#?}\nbehind: {seen_behind:#?}"
    );
    util::poll(READY, || {
        let (a, b) = (jwks(&on_time), jwks(&behind));
        if a == b {
            Ok(())
        } else {
            Err(format!("JWKS differ: on time {a:?}, behind {b:?}"))
        }
    })
    .unwrap_or_else(|err| panic!("{err}"));

    // An emergency revoke from the slow host: the next key takes over at once, for both.
    let revoked = current.values().next().expect("one current key").clone();
    let outcome = site.run(Some(&slow), "revoke", &[&revoked]);
    outcome.assert_code(0);
    util::poll(READY, || {
        let (a, b) = (jwks(&on_time), jwks(&behind));
        if a == b && !a.contains(&revoked) {
            Ok(())
        } else {
            Err(format!(
                "after revoking {revoked}: on time {a:?}, behind {b:?}"
            ))
        }
    })
    .unwrap_or_else(|err| panic!("{err}\n{outcome}"));
    let after_on_time = current_kids(&site.keys(None));
    let after_behind = current_kids(&site.keys(Some(&slow)));
    assert_eq!(after_on_time.len(), 1, "{after_on_time:?}");
    assert_eq!(after_on_time, after_behind);
    assert_ne!(after_on_time, current, "the revoked key is still current");
    thread::sleep(A_FEW_REFRESHES);
    on_time.wait_ready(READY);
    behind.wait_ready(READY);
    no_corruption(&[&on_time, &behind]);

    // Both start again on what they wrote.
    on_time.kill9();
    behind.kill9();
    let on_time = site.serve(None);
    let behind = site.serve(Some(&slow));
    on_time.wait_ready(READY);
    behind.wait_ready(READY);
    assert_eq!(current_kids(&site.keys(None)), after_on_time);
    no_corruption(&[&on_time, &behind]);
}

#[test]
fn file_store_replicas_10s_apart_agree_and_survive_a_revoke_and_restart() {
    replicas_within_the_skew_agree(&Site::new(Store::File));
}

#[test]
fn secrets_manager_replicas_10s_apart_agree_and_survive_a_revoke_and_restart() {
    replicas_within_the_skew_agree(&Site::new(Store::aws("apart")));
}

// ---- 2. a clock that stepped back a day ----

fn a_clock_stepped_back_writes_nothing_until_it_is_right(site: &Site) {
    let mut daemon = site.serve(None);
    daemon.wait_ready(READY);
    let published = jwks(&daemon);
    let stored = site.stored();
    let file_before = site.dir.read_store();
    daemon.kill9();

    let clock = site.clock("stepped-back", "-1d");
    let daemon = site.serve(Some(&clock));
    let reason = wait_unready_saying(&daemon, &["clock", "1d", "behind", "clock_skew"]);
    assert_eq!(
        metric(&daemon, "jwkd_clock_skew_exceeded"),
        Some(1.0),
        "{reason}"
    );
    assert_eq!(
        jwks(&daemon),
        published,
        "the JWKS changed while the clock was wrong"
    );
    let (status, body) = sign(&daemon);
    assert!(
        status == 503 && body.contains("not signing") && body.contains("behind"),
        "a daemon whose clock is a day behind must not stamp tokens: {status} {body}"
    );
    let refused = site.run(Some(&clock), "rotate", &[]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("behind") && refused.stderr.contains("clock_skew"),
        "`jwkd rotate` on the stepped-back clock must say why it refuses:\n{refused}"
    );
    thread::sleep(A_FEW_REFRESHES);
    assert_eq!(site.stored(), stored, "a write happened on the wrong clock");
    if let Some(before) = file_before {
        assert_eq!(
            site.dir.read_store(),
            Some(before),
            "the store file changed"
        );
    }
    no_corruption(&[&daemon]);

    // The clock is set right: the daemon resumes by itself.
    clock.set("+0");
    daemon.wait_ready(READY);
    assert_eq!(metric(&daemon, "jwkd_clock_skew_exceeded"), Some(0.0));
    assert_eq!(sign(&daemon).0, 200);
    site.run(Some(&clock), "rotate", &[]).assert_code(0);
    assert!(daemon.stderr_text().contains("agrees with the store"));
}

#[test]
fn file_store_clock_stepped_back_a_day_writes_nothing_and_resumes() {
    a_clock_stepped_back_writes_nothing_until_it_is_right(&Site::new(Store::File));
}

#[test]
fn secrets_manager_clock_stepped_back_a_day_writes_nothing_and_resumes() {
    a_clock_stepped_back_writes_nothing_until_it_is_right(&Site::new(Store::aws("back")));
}

// ---- 3. a replica three days ahead ----

fn a_replica_days_ahead_prunes_nothing(site: &Site) {
    let healthy = site.serve(None);
    healthy.wait_ready(READY);
    let published = jwks(&healthy);
    let stored = site.stored();
    let signing = current_kids(&site.keys(None));

    let ahead = site.clock("ahead", "+3d");
    let fast = site.serve(Some(&ahead));
    let reason = wait_unready_saying(&fast, &["clock", "ahead of the clock of the store"]);
    thread::sleep(A_FEW_REFRESHES);
    assert_eq!(
        site.stored(),
        stored,
        "the replica 3 days ahead changed the keyset ({reason})"
    );
    assert_eq!(
        jwks(&healthy),
        published,
        "the healthy replica's JWKS lost keys"
    );
    healthy.wait_ready(READY);
    assert_eq!(current_kids(&site.keys(None)), signing);
    // The fast replica serves what the store's clock says is published, not what its own does.
    assert_eq!(jwks(&fast), published);
    assert_eq!(metric(&fast, "jwkd_clock_skew_exceeded"), Some(1.0));
    let offset = metric(&fast, "jwkd_clock_offset_seconds").unwrap_or_default();
    assert!(
        (offset - 259_200.0).abs() < 60.0,
        "jwkd_clock_offset_seconds {offset}, expected about 3 days"
    );
    let refused = site.run(Some(&ahead), "rotate", &[]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("ahead of the clock of the store"),
        "{refused}"
    );
    let (status, body) = sign(&fast);
    assert!(
        status == 503 && body.contains("not signing"),
        "the replica 3 days ahead must not stamp tokens: {status} {body}"
    );
    assert_eq!(sign(&healthy).0, 200, "the healthy replica signs");
    no_corruption(&[&healthy, &fast]);
}

#[test]
fn file_store_replica_3_days_ahead_prunes_nothing() {
    a_replica_days_ahead_prunes_nothing(&Site::new(Store::File));
}

#[test]
fn secrets_manager_replica_3_days_ahead_prunes_nothing() {
    a_replica_days_ahead_prunes_nothing(&Site::new(Store::aws("ahead")));
}

// ---- 4. a storm of rotations ----

fn a_rotate_storm_makes_no_extra_key(site: &Site) {
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 5;
    let daemon = site.serve(None);
    daemon.wait_ready(READY);
    let started = Instant::now();
    let mut outcomes = Vec::new();
    thread::scope(|scope| {
        for _ in 0..ROUNDS {
            let round: Vec<_> = (0..PER_ROUND)
                .map(|_| scope.spawn(|| site.run(None, "rotate", &[])))
                .collect();
            outcomes.extend(
                round
                    .into_iter()
                    .map(|handle| handle.join().expect("rotate")),
            );
        }
    });
    for outcome in &outcomes {
        outcome.assert_code(0);
        assert!(
            outcome.stdout.contains("becomes current at"),
            "every rotate says when the next key becomes current:\n{outcome}"
        );
    }
    // One rotation: every rotate names the same key and instant, whether it made
    // the change (rotates racing from one base decide the same document, which the
    // store takes once) or found it pending.
    let said: BTreeSet<&str> = outcomes
        .iter()
        .filter_map(|outcome| {
            let line = outcome.stdout.lines().next()?;
            Some(&line[line.find("key ")?..line.find(" (").unwrap_or(line.len())])
        })
        .collect();
    assert_eq!(
        said.len(),
        1,
        "the rotates disagree on what happened: {said:#?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|outcome| outcome.stdout.contains("already pending")),
        "no rotate found the rotation pending"
    );
    let keys = site.keys(None);
    assert_eq!(
        (
            kids_in_state(&keys, "current"),
            kids_in_state(&keys, "next")
        ),
        (1, 1),
        "after {} rotates in {:?}: {keys:#?}",
        ROUNDS * PER_ROUND,
        started.elapsed()
    );
    assert_eq!(keys.len(), 2, "no key beyond current and next: {keys:#?}");
    util::poll(READY, || {
        let kids = jwks(&daemon);
        if kids.len() == 2 {
            Ok(())
        } else {
            Err(format!("JWKS {kids:?}"))
        }
    })
    .unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn file_store_rotate_storm_makes_no_extra_key() {
    a_rotate_storm_makes_no_extra_key(&Site::new(Store::File));
}

#[test]
fn secrets_manager_rotate_storm_makes_no_extra_key() {
    a_rotate_storm_makes_no_extra_key(&Site::new(Store::aws("storm")));
}

// ---- 5. a way out: a stored keyset that does not load ----

impl Site {
    /// The stored document as it is.
    fn read_raw(&self) -> String {
        match &self.store {
            Store::File => String::from_utf8(self.dir.read_store().expect("a store file"))
                .expect("a UTF-8 document"),
            Store::Aws {
                endpoint,
                secret_id,
            } => {
                let answer = crate::aws::emulator_call(
                    emulator_addr(endpoint),
                    "GetSecretValue",
                    &serde_json::json!({"SecretId": secret_id, "VersionStage": "AWSCURRENT"}),
                )
                .unwrap_or_else(|err| panic!("{err}"));
                answer["SecretString"]
                    .as_str()
                    .expect("a SecretString")
                    .to_owned()
            }
        }
    }

    /// Replaces the stored document behind jwkd's back.
    fn write_raw(&self, document: &str) {
        match &self.store {
            Store::File => self.dir.write(util::STORE_FILE, document),
            Store::Aws {
                endpoint,
                secret_id,
            } => {
                crate::aws::emulator_call(
                    emulator_addr(endpoint),
                    "PutSecretValue",
                    &serde_json::json!({
                        "SecretId": secret_id,
                        "SecretString": document,
                        "VersionStages": ["AWSCURRENT"],
                    }),
                )
                .unwrap_or_else(|err| panic!("{err}"));
            }
        }
    }

    /// Where `jwkd repair` kept the document it replaced holds `document`.
    fn assert_backed_up(&self, document: &str) {
        match &self.store {
            Store::File => {
                let backups: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
                    .expect("read the test dir")
                    .map(|entry| entry.expect("dir entry").path())
                    .filter(|path| {
                        path.file_name().is_some_and(|name| {
                            name.to_string_lossy().contains(".jwkd-before-repair-")
                        })
                    })
                    .collect();
                assert_eq!(backups.len(), 1, "{backups:?}");
                assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), document);
                assert_eq!(util::mode(&backups[0]), 0o600);
            }
            Store::Aws {
                endpoint,
                secret_id,
            } => {
                let versions = crate::aws::emulator_call(
                    emulator_addr(endpoint),
                    "ListSecretVersionIds",
                    &serde_json::json!({"SecretId": secret_id, "IncludeDeprecated": true}),
                )
                .unwrap_or_else(|err| panic!("{err}"));
                let kept = versions["Versions"]
                    .as_array()
                    .expect("Versions")
                    .iter()
                    .find(|version| {
                        version["VersionStages"].as_array().is_some_and(|stages| {
                            stages.iter().any(|stage| {
                                stage
                                    .as_str()
                                    .unwrap_or_default()
                                    .starts_with("jwkd-before-repair-")
                            })
                        })
                    })
                    .unwrap_or_else(|| {
                        panic!("no version labelled jwkd-before-repair-*: {versions}")
                    });
                let answer = crate::aws::emulator_call(
                    emulator_addr(endpoint),
                    "GetSecretValue",
                    &serde_json::json!({"SecretId": secret_id, "VersionId": kept["VersionId"]}),
                )
                .unwrap_or_else(|err| panic!("{err}"));
                assert_eq!(answer["SecretString"].as_str(), Some(document));
            }
        }
    }
}

fn emulator_addr(endpoint: &str) -> std::net::SocketAddr {
    endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|err| panic!("{ENDPOINT_VAR}={endpoint:?} is not http://IP:PORT: {err}"))
}

fn an_unloadable_keyset_is_named_and_repaired(site: &Site) {
    site.run(None, "rotate", &[]).assert_code(0);
    let kids: BTreeSet<String> = site.stored().into_keys().collect();
    // What a replica behind the others used to write: a key promoted at its own
    // "now", before the key was made.
    let mut document: Value = serde_json::from_str(&site.read_raw()).expect("JSON");
    let first = &mut document["keys"][0];
    let kid = first["kid"].as_str().expect("kid").to_owned();
    let created = util::parse_utc(first["created_at"].as_str().expect("created_at")).unwrap();
    first["activates_at"] = Value::from(
        (created - chrono::TimeDelta::seconds(10))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    let broken = serde_json::to_string_pretty(&document).unwrap();
    site.write_raw(&broken);

    let check = site.run(None, "check-config", &[]);
    check.assert_code(2);
    assert!(
        check
            .stderr
            .contains(&format!("key 0 ({kid}): activates_at is before created_at"))
            && check.stderr.contains("jwkd repair --dry-run"),
        "check-config must name the key and the field, and the way out:\n{check}"
    );
    let dry = site.run(None, "repair", &["--dry-run"]);
    dry.assert_code(0);
    assert!(
        dry.stdout.contains(&format!("key 0 ({kid}): activates_at"))
            && dry.stdout.contains("set to created_at")
            && dry.stdout.contains("dry run"),
        "{dry}"
    );
    assert_eq!(site.read_raw(), broken, "a dry run wrote");

    let repaired = site.run(None, "repair", &[]);
    repaired.assert_code(0);
    assert!(
        repaired.stdout.contains("kept the document as it was"),
        "{repaired}"
    );
    site.assert_backed_up(&broken);
    let after: BTreeSet<String> = site.stored().into_keys().collect();
    assert_eq!(after, kids, "a repair must not drop a key");
    site.run(None, "check-config", &[]).assert_code(0);
    site.run(None, "repair", &[]).assert_code(0);
    let daemon = site.serve(None);
    daemon.wait_ready(READY);
    assert_eq!(jwks(&daemon), kids);
}

#[test]
fn file_store_unloadable_keyset_is_named_and_repaired() {
    an_unloadable_keyset_is_named_and_repaired(&Site::new(Store::File));
}

#[test]
fn secrets_manager_unloadable_keyset_is_named_and_repaired() {
    an_unloadable_keyset_is_named_and_repaired(&Site::new(Store::aws("repair")));
}
