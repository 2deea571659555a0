//! CONTRACT §4 and §6 end to end: the real daemon on a 2-second schedule, watched
//! through its JWKS and `jwkd keys --json`; the JWKS HTTP semantics; the operational
//! endpoints; and crash safety under repeated `kill -9`.
//!
//! The same timeline checks run in process on a manual clock
//! (`timeline_on_a_manual_clock`), exactly and in a fraction of the time; the JWKS
//! semantics and the operational endpoints run in process too. The real-time runs
//! of the binary (`rotation_timeline_*`, `crash_safety_under_kill_9`) are in the
//! e2e profile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use rand::Rng as _;
use serde_json::Value;

use crate::util::{
    self, Client, Daemon, FAST_CONFIG, InProcess, Key, Response, TestConfig, TestDir, check_jwk,
    check_store_document, jwks_entries, one_current_per_family, published, show_keys,
    with_algorithms,
};

const JWKS: &str = "/.well-known/jwks.json";

/// Timing slack for "stays published until expires_at" and pruning (the brief's 1 s).
const TOLERANCE: TimeDelta = TimeDelta::seconds(1);

/// One GET of the JWKS: the request's time window and the kids it listed.
struct JwksObservation {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    kids: BTreeSet<String>,
    last_modified: Option<DateTime<Utc>>,
}

/// Everything seen so far, checked as it arrives and once more at the end.
struct History {
    algorithms: Vec<String>,
    /// `max_token_lifetime + clock_skew`.
    retention: TimeDelta,
    /// `jwks_max_age + clock_skew + store.refresh_interval`.
    lead: TimeDelta,
    /// The latest record of every kid ever listed by `keys --json`.
    keys: BTreeMap<String, Key>,
    jwks_log: Vec<JwksObservation>,
    /// Public key material -> kid, and kid -> alg, as published.
    kid_of_material: BTreeMap<String, String>,
    alg_of_kid: BTreeMap<String, String>,
    /// Distinct current kids seen per family.
    currents: BTreeMap<String, BTreeSet<String>>,
    /// ETag -> body: a strong ETag names exactly one representation.
    bodies_by_etag: BTreeMap<String, Vec<u8>>,
    failures: Vec<String>,
}

impl History {
    fn new(algorithms: &[&str], retention: TimeDelta, lead: TimeDelta) -> History {
        History {
            algorithms: algorithms.iter().map(|alg| (*alg).to_owned()).collect(),
            retention,
            lead,
            keys: BTreeMap::new(),
            jwks_log: Vec::new(),
            kid_of_material: BTreeMap::new(),
            alg_of_kid: BTreeMap::new(),
            currents: BTreeMap::new(),
            bodies_by_etag: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    fn fail(&mut self, message: String) {
        // Keep the report readable: the first failures are the informative ones, and a
        // problem seen at every later observation is reported once.
        let headline = message.lines().next().unwrap_or_default();
        let repeated = self
            .failures
            .iter()
            .any(|known| known.lines().next() == Some(headline));
        if self.failures.len() < 30 && !repeated {
            self.failures.push(message);
        }
    }

    fn algorithms(&self) -> Vec<&str> {
        self.algorithms.iter().map(String::as_str).collect()
    }

    /// The latest expiry known or implied for `kid`: its own `expires_at`, or else its
    /// successor's `activates_at` (= its `deactivates_at`) plus the retention.
    fn implied_expiry(&self, kid: &str) -> Option<DateTime<Utc>> {
        let key = self.keys.get(kid)?;
        if let Some(expires_at) = key.expires_at {
            return Some(expires_at);
        }
        self.keys
            .values()
            .filter(|other| other.alg == key.alg && other.activates_at > key.activates_at)
            .map(|other| other.activates_at)
            .min()
            .map(|deactivates_at| deactivates_at + self.retention)
    }

    /// Whether `key` is the very first key of its family (the tests start on an empty store):
    /// no key seen so far, nor in `listing`, activates before it. Only that key may sign
    /// without having been published first.
    fn is_first_key(&self, key: &Key, listing: &[Key]) -> bool {
        !self
            .keys
            .values()
            .chain(listing)
            .any(|other| other.alg == key.alg && other.activates_at < key.activates_at)
    }

    /// Checks one `keys --json` listing taken within `[from, to]` and merges it in.
    fn record_keys(&mut self, keys: &[Key], from: DateTime<Utc>, to: DateTime<Utc>) {
        let table = show_keys(keys);
        let listed: BTreeSet<&str> = keys.iter().map(|key| key.kid.as_str()).collect();

        // Nothing stored or published may vanish before its expiry.
        let ever_seen: BTreeSet<String> = self
            .keys
            .keys()
            .cloned()
            .chain(self.alg_of_kid.keys().cloned())
            .collect();
        for kid in ever_seen {
            if listed.contains(kid.as_str()) {
                continue;
            }
            if self
                .keys
                .get(&kid)
                .is_some_and(|key| key.revoked_at.is_some())
            {
                continue;
            }
            match self.implied_expiry(&kid) {
                Some(expiry) if expiry - TOLERANCE <= to => {}
                Some(expiry) => self.fail(format!(
                    "key {kid} vanished from the store by {to} although it expires at {expiry}\n{table}"
                )),
                None if self.keys.contains_key(&kid) => self.fail(format!(
                    "key {kid} vanished from the store by {to} although it was never deactivated\n{table}"
                )),
                None => self.fail(format!(
                    "key {kid} was published in the JWKS but is not in the store at {to} \
                     (a key must be stored before it is published)\n{table}"
                )),
            }
        }

        for key in keys {
            if !key.state_fits(from, to) {
                self.fail(format!(
                    "key {} reported {:?} but its times say {:?}..{:?} within [{from}, {to}]\n{table}",
                    key.kid,
                    key.state,
                    key.state_at(from),
                    key.state_at(to)
                ));
            }
            let expected_expiry = key.deactivates_at.map(|at| at + self.retention);
            let off = match (key.expires_at, expected_expiry) {
                (Some(got), Some(expected)) => (got - expected).abs() > TimeDelta::milliseconds(1),
                (got, expected) => got != expected,
            };
            if off {
                self.fail(format!(
                    "key {}: expected expires_at = deactivates_at + max_token_lifetime + clock_skew \
                     = {expected_expiry:?}, got {:?}\n{table}",
                    key.kid, key.expires_at
                ));
            }
            if key.activates_at - key.created_at < self.lead && !self.is_first_key(key, keys) {
                self.fail(format!(
                    "key {} activates {} after its creation, less than jwks_max_age + clock_skew + store.refresh_interval = {}\n{table}",
                    key.kid,
                    key.activates_at - key.created_at,
                    self.lead
                ));
            }
            if let Some(alg) = self.alg_of_kid.get(&key.kid)
                && *alg != key.alg
            {
                self.fail(format!(
                    "key {}: JWKS says alg {alg}, keys --json says {}",
                    key.kid, key.alg
                ));
            }
            if let Some(previous) = self.keys.get(&key.kid) {
                let changed = previous.alg != key.alg
                    || previous.created_at != key.created_at
                    || previous.activates_at != key.activates_at
                    || (previous.deactivates_at.is_some()
                        && previous.deactivates_at != key.deactivates_at);
                if changed {
                    self.fail(format!(
                        "key {} changed: was {previous:?}, now {key:?}",
                        key.kid
                    ));
                }
            }
        }

        // The timeline of a family has no gap and no overlap.
        let mut gaps = Vec::new();
        for alg in self.algorithms() {
            let mut family: Vec<&Key> = keys
                .iter()
                .filter(|key| key.alg == alg && key.revoked_at.is_none())
                .collect();
            family.sort_by_key(|key| key.activates_at);
            for pair in family.windows(2) {
                if pair[0].deactivates_at != Some(pair[1].activates_at) {
                    gaps.push(format!(
                        "family {alg}: {} must deactivate when its successor {} activates ({})\n{table}",
                        pair[0].kid, pair[1].kid, pair[1].activates_at
                    ));
                }
            }
        }
        for gap in gaps {
            self.fail(gap);
        }

        for key in keys {
            if key.state == "current" {
                self.currents
                    .entry(key.alg.clone())
                    .or_default()
                    .insert(key.kid.clone());
            }
            self.keys.insert(key.kid.clone(), key.clone());
        }
    }

    /// Checks one JWKS response fetched within `[start, end]` and logs it; returns its kids.
    fn record_jwks(
        &mut self,
        response: &Response,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> BTreeSet<String> {
        let kids = match util::jwks_kids(response, true) {
            Ok(kids) => kids,
            Err(err) => {
                self.fail(format!("bad JWKS at {start}: {err}\n{response}"));
                return BTreeSet::new();
            }
        };
        for jwk in jwks_entries(response) {
            let field = |name: &str| jwk.get(name).and_then(Value::as_str).unwrap_or("");
            let (kid, alg) = (field("kid").to_owned(), field("alg").to_owned());
            let material = format!(
                "{}|{}|{}|{}|{}",
                field("kty"),
                field("x"),
                field("y"),
                field("n"),
                field("e")
            );
            let known_kid = self
                .kid_of_material
                .entry(material)
                .or_insert_with(|| kid.clone())
                .clone();
            if known_kid != kid {
                self.fail(format!(
                    "one public key was published as {known_kid} and later as {kid}"
                ));
            }
            let known_alg = self
                .alg_of_kid
                .entry(kid.clone())
                .or_insert_with(|| alg.clone())
                .clone();
            if known_alg != alg {
                self.fail(format!(
                    "kid {kid} was published with alg {known_alg} and later {alg}"
                ));
            }
        }
        match response.header("etag") {
            Some(etag) => {
                let known = self
                    .bodies_by_etag
                    .entry(etag.to_owned())
                    .or_insert_with(|| response.body.clone());
                if *known != response.body {
                    self.fail(format!(
                        "ETag {etag} was sent with two different JWKS bodies (a strong ETag must \
                         change with the body)\n{response}"
                    ));
                }
            }
            None => self.fail(format!("JWKS without an ETag\n{response}")),
        }
        let last_modified = response
            .header("last-modified")
            .and_then(|text| DateTime::parse_from_rfc2822(text).ok())
            .map(|time| time.with_timezone(&Utc));
        match last_modified {
            None => self.fail(format!("JWKS without a valid Last-Modified\n{response}")),
            Some(modified) if modified > end => self.fail(format!(
                "Last-Modified {modified} is in the future (response at {end})"
            )),
            Some(_) => {}
        }
        self.jwks_log.push(JwksObservation {
            start,
            end,
            kids: kids.clone(),
            last_modified,
        });
        kids
    }

    /// Last-Modified never goes back: a response that started after another one ended
    /// carries the same or a later time.
    fn check_last_modified_monotonic(&mut self) {
        let mut problems = Vec::new();
        for earlier in &self.jwks_log {
            for later in &self.jwks_log {
                if let (Some(before), Some(after)) = (earlier.last_modified, later.last_modified)
                    && later.start > earlier.end
                    && after < before
                {
                    problems.push(format!(
                        "Last-Modified went back from {before} (response ended {}) to {after} \
                         (response started {})",
                        earlier.end, later.start
                    ));
                }
            }
        }
        problems.truncate(3);
        for problem in problems {
            self.fail(problem);
        }
    }

    /// The checks that need the whole JWKS log, in time order.
    fn check_jwks_log(&mut self) {
        self.jwks_log.sort_by_key(|obs| obs.start);
        self.check_last_modified_monotonic();
        self.check_published_until_expiry();
    }

    /// Every key ever published stays in every later JWKS until its expiry (less the tolerance).
    fn check_published_until_expiry(&mut self) {
        let mut problems = Vec::new();
        let kids: BTreeSet<String> = self.alg_of_kid.keys().cloned().collect();
        for kid in kids {
            if self
                .keys
                .get(&kid)
                .is_some_and(|key| key.revoked_at.is_some())
            {
                continue;
            }
            let Some(first) = self.jwks_log.iter().position(|obs| obs.kids.contains(&kid)) else {
                continue;
            };
            let published_by = self.jwks_log[first].end;
            let expiry = self.implied_expiry(&kid);
            for obs in &self.jwks_log[first..] {
                let too_early = expiry.is_none_or(|expiry| obs.end < expiry - TOLERANCE);
                if obs.start > published_by && !obs.kids.contains(&kid) && too_early {
                    problems.push(format!(
                        "key {kid} (published by {published_by}, expires {expiry:?}) was missing \
                         from the JWKS fetched in [{}, {}]",
                        obs.start, obs.end
                    ));
                    break;
                }
            }
        }
        for problem in problems {
            self.fail(problem);
        }
    }

    /// A next key is in the JWKS at least `lead` before it activates: no observation may
    /// prove otherwise, and (so that the check is not vacuous) at least half of the keys
    /// that activated during the run, and at least two, must be proven in time.
    fn check_lead_in_jwks(&mut self) {
        let last_end = self.jwks_log.last().map(|obs| obs.end);
        let mut problems = Vec::new();
        for alg in self.algorithms() {
            let (mut proven, mut activated) = (0, 0);
            for key in self.keys.values().filter(|key| key.alg == alg) {
                if self.is_first_key(key, &[]) || last_end.is_none_or(|end| key.activates_at > end)
                {
                    continue;
                }
                let deadline = key.activates_at - self.lead;
                let in_time = self
                    .jwks_log
                    .iter()
                    .any(|obs| obs.end <= deadline && obs.kids.contains(&key.kid));
                let late = self.jwks_log.iter().find(|obs| {
                    obs.start >= deadline
                        && obs.start < key.activates_at
                        && !obs.kids.contains(&key.kid)
                });
                if let Some(obs) = late {
                    problems.push(format!(
                        "key {} activates at {} but was not in the JWKS fetched in [{}, {}], \
                         less than jwks_max_age + clock_skew + store.refresh_interval = {} before",
                        key.kid, key.activates_at, obs.start, obs.end, self.lead
                    ));
                }
                proven += usize::from(in_time);
                activated += 1;
            }
            if proven < 2 || proven * 2 < activated {
                problems.push(format!(
                    "family {alg}: of {activated} keys that activated, only {proven} were seen \
                     in the JWKS jwks_max_age + clock_skew before activation (expected at least \
                     half, and at least 2)"
                ));
            }
        }
        for problem in problems {
            self.fail(problem);
        }
    }

    fn rotations(&self) -> usize {
        self.algorithms
            .iter()
            .map(|alg| self.currents.get(alg).map_or(0, BTreeSet::len))
            .min()
            .unwrap_or(0)
            .saturating_sub(1)
    }

    #[track_caller]
    fn assert_clean(&self, dir: &TestDir, daemon_output: &str) {
        if self.failures.is_empty() {
            return;
        }
        let tail: String = {
            let lines: Vec<&str> = daemon_output.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        let keys: Vec<Key> = self.keys.values().cloned().collect();
        panic!(
            "{} problem(s):\n\n{}\n\n---- every key seen (latest record) ----\n{}\n\
             ---- store {} ----\n---- daemon output (tail) ----\n{tail}",
            self.failures.len(),
            self.failures.join("\n\n"),
            show_keys(&keys),
            dir.store_path().display(),
        );
    }
}

/// `keys --json` with the time window it ran in.
fn timed_keys(dir: &TestDir) -> (Vec<Key>, DateTime<Utc>, DateTime<Utc>) {
    let from = Utc::now();
    let keys = dir.keys();
    (keys, from, Utc::now())
}

/// One observation: `keys`, JWKS, and `keys` again if the first listing does not settle it.
/// The JWKS must equal the published set of one of the listings and every family must have
/// exactly one current key (both retried for at least two attempts and 1 s, to allow for a
/// transition between the listing and the GET); then `/readyz` must answer 200 (within 1 s).
fn observe(history: &mut History, dir: &TestDir, daemon: &Daemon) {
    let first_attempt = Instant::now();
    let algorithms: Vec<String> = history.algorithms.clone();
    let algorithms: Vec<&str> = algorithms.iter().map(String::as_str).collect();
    for attempt in 1.. {
        let (before, from_1, to_1) = timed_keys(dir);
        history.record_keys(&before, from_1, to_1);
        let start = Utc::now();
        let response = daemon.get(JWKS);
        let end = Utc::now();
        let jwks = history.record_jwks(&response, start, end);
        if one_current_per_family(&before, &algorithms).is_ok() && jwks == published(&before) {
            break;
        }
        let (after, from_2, to_2) = timed_keys(dir);
        history.record_keys(&after, from_2, to_2);
        let one_current = one_current_per_family(&before, &algorithms)
            .or_else(|_| one_current_per_family(&after, &algorithms));
        let matches = jwks == published(&before) || jwks == published(&after);
        if one_current.is_ok() && matches {
            break;
        }
        if attempt >= 2 && first_attempt.elapsed() > Duration::from_secs(1) {
            if let Err(err) = one_current {
                history.fail(format!("at {from_1}..{to_2}: {err}\n{}", show_keys(&after)));
            }
            if !matches {
                history.fail(format!(
                    "the JWKS must list exactly the keys in state next/current/retired\n\
                     JWKS at [{start}, {end}]: {jwks:?}\n\
                     published at [{from_1}, {to_1}]: {:?}\n\
                     published at [{from_2}, {to_2}]: {:?}\n{}",
                    published(&before),
                    published(&after),
                    show_keys(&after)
                ));
            }
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }

    let ready = util::poll(Duration::from_secs(1), || {
        let response = daemon.get("/readyz");
        if response.status == 200 {
            Ok(())
        } else {
            Err(response.to_string())
        }
    });
    if let Err(last) = ready {
        history.fail(format!("/readyz did not answer 200 within 1 s: {last}"));
    }
}

/// Runs the fast schedule for at least `min_rotations` rotations per family (and 12 s).
///
/// The main loop compares `keys --json` with the JWKS; beside it a poller fetches the
/// JWKS every 100 ms, so "published long enough before it signs" and "published until it
/// expires" are judged on a dense record even when the CLI is slow on a loaded machine.
fn run_rotation_timeline(algorithms: &[&str], min_rotations: usize) {
    let dir = TestDir::new(&with_algorithms(FAST_CONFIG, algorithms));
    let mut daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let mut history = History::new(
        algorithms,
        TimeDelta::seconds(3),
        TimeDelta::milliseconds(1500),
    );
    let addr = daemon.addr();
    let stop = AtomicBool::new(false);

    let polled = thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut polled = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Utc::now();
                let response = util::http(addr, "GET", JWKS, &[], b"");
                polled.push((start, Utc::now(), response));
                thread::sleep(Duration::from_millis(100));
            }
            polled
        });
        let started = Instant::now();
        let deadline = started + Duration::from_secs(40);
        while started.elapsed() < Duration::from_secs(12) || history.rotations() < min_rotations {
            let tick = Instant::now();
            observe(&mut history, &dir, &daemon);
            if Instant::now() > deadline {
                history.fail(format!(
                    "expected at least {min_rotations} rotations per family within 40 s, saw {}",
                    history.rotations()
                ));
                break;
            }
            if let Some(rest) = Duration::from_millis(250).checked_sub(tick.elapsed()) {
                thread::sleep(rest);
            }
        }
        stop.store(true, Ordering::Relaxed);
        poller.join().expect("JWKS poller")
    });
    for (start, end, response) in polled {
        match response {
            Ok(response) => {
                history.record_jwks(&response, start, end);
            }
            Err(err) => history.fail(format!("GET {JWKS} at {start} failed: {err}")),
        }
    }

    let response = daemon.get(JWKS);
    let max_age = cache_control(&response).get("max-age").cloned().flatten();
    if max_age.as_deref() != Some("1") {
        history.fail(format!(
            "expected Cache-Control max-age=1 (jwks_max_age = \"1s\"), got {:?}",
            response.header("cache-control")
        ));
    }
    history.check_jwks_log();
    history.check_lead_in_jwks();
    daemon.kill9();
    history.assert_clean(&dir, &daemon.stderr_text());
}

/// The one real-time run of the timeline on the binary (two families; the
/// same checks run on a manual clock in `timeline_on_a_manual_clock`).
#[test]
fn rotation_timeline_es256_and_eddsa() {
    run_rotation_timeline(&["ES256", "EdDSA"], 5);
}

/// The timeline of [`run_rotation_timeline`] in process, on a manual clock moved
/// in 100 ms steps through six rotations: at every step the stored keys, the JWKS
/// and `/readyz` are read at one known instant, so every check is exact.
#[test]
fn timeline_on_a_manual_clock() {
    let algorithms = ["ES256", "EdDSA"];
    let daemon = InProcess::start(&with_algorithms(FAST_CONFIG, &algorithms), start());
    let mut history = History::new(
        &algorithms,
        TimeDelta::seconds(3),
        TimeDelta::milliseconds(1500),
    );
    let step = Duration::from_millis(100);
    let end = start() + TimeDelta::seconds(12);
    while daemon.now() <= end {
        let now = daemon.now();
        let keys = daemon.keys();
        history.record_keys(&keys, now, now);
        let response = daemon.get(JWKS);
        let kids = history.record_jwks(&response, now, now);
        if let Err(err) = one_current_per_family(&keys, &algorithms) {
            history.fail(format!("at {now}: {err}\n{}", show_keys(&keys)));
        }
        if kids != published(&keys) {
            history.fail(format!(
                "at {now}: the JWKS must list exactly the keys in state next/current/retired\n\
                 JWKS: {kids:?}\npublished: {:?}\n{}",
                published(&keys),
                show_keys(&keys)
            ));
        }
        let ready = daemon.get("/readyz");
        if ready.status != 200 {
            history.fail(format!("at {now}: not ready\n{ready}"));
        }
        daemon.advance(step);
    }
    history.check_jwks_log();
    history.check_lead_in_jwks();
    // A rotation every 2 s from 12:00:02 to 12:00:12, each family.
    if history.rotations() != 6 {
        history.fail(format!(
            "expected 6 rotations per family in 12 s, saw {}",
            history.rotations()
        ));
    }
    history.assert_clean(daemon.dir(), &daemon.logs());
}

/// `Cache-Control` directives by lowercase name, with their values.
fn cache_control(response: &Response) -> BTreeMap<String, Option<String>> {
    response
        .header("cache-control")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .map(|directive| match directive.split_once('=') {
            Some((name, value)) => (name.trim().to_lowercase(), Some(value.trim().to_owned())),
            None => (directive.to_lowercase(), None),
        })
        .collect()
}

fn http_date(time: DateTime<Utc>) -> String {
    time.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// When the in-process daemons below start: a whole second, so Last-Modified is exact.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
}

/// A daemon in process with the slow schedule (nothing changes while the test runs),
/// an issuer and a client.
fn slow_daemon_with_issuer() -> InProcess {
    let config = TestConfig::slow()
        .issuer("https://issuer.test")
        .set("issuer", "token_lifetime", "15m")
        .client(
            Client::new("orders", "orders-secret")
                .audiences(&["payments"])
                .scopes(&["payments:write"]),
        );
    InProcess::start(&config.build(), start())
}

#[test]
fn jwks_http_semantics() {
    let daemon = slow_daemon_with_issuer();
    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: &str, response: &Response| {
        if !ok {
            failures.push(format!("{what}\n---- got ----\n{response}"));
        }
    };

    let first = daemon.get(JWKS);
    assert_eq!(first.status, 200, "GET {JWKS}\n{first}");
    let kids = util::jwks_kids(&first, true).unwrap_or_else(|err| panic!("{err}\n{first}"));
    let keys = daemon.keys();
    assert_eq!(
        kids,
        published(&keys),
        "JWKS vs keys --json\n{}",
        show_keys(&keys)
    );
    check(
        first
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "expected Content-Type: application/json by default",
        &first,
    );

    let directives = cache_control(&first);
    let names: BTreeSet<&str> = directives.keys().map(String::as_str).collect();
    let expected_names = BTreeSet::from([
        "public",
        "max-age",
        "stale-while-revalidate",
        "stale-if-error",
    ]);
    let seconds = |name: &str| {
        directives
            .get(name)
            .cloned()
            .flatten()
            .and_then(|value| value.parse::<u64>().ok())
    };
    check(
        names == expected_names
            && seconds("max-age") == Some(300)
            && seconds("stale-while-revalidate").is_some()
            && seconds("stale-if-error").is_some()
            && directives["public"].is_none(),
        "expected Cache-Control: public, max-age=300 (jwks_max_age = \"5m\"), \
         stale-while-revalidate=<seconds>, stale-if-error=<seconds>",
        &first,
    );

    let etag = first.header("etag").unwrap_or("").to_owned();
    check(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "expected a strong, quoted ETag",
        &first,
    );
    let last_modified = first.header("last-modified").unwrap_or("").to_owned();
    let modified_at = DateTime::parse_from_rfc2822(&last_modified).map(|t| t.with_timezone(&Utc));
    check(
        last_modified == http_date(start()),
        &format!(
            "expected Last-Modified: {} (the daemon's clock when it published)",
            http_date(start())
        ),
        &first,
    );

    // The body is built once per keyset: repeated GETs are byte-identical.
    let again = daemon.get(JWKS);
    check(
        again.body == first.body
            && again.header("etag") == Some(etag.as_str())
            && again.header("last-modified") == Some(last_modified.as_str()),
        "expected an identical body, ETag and Last-Modified on a second GET",
        &again,
    );

    let conditional = |headers: &[(&str, &str)]| daemon.request("GET", JWKS, headers, b"");
    let not_modified = |response: &Response| {
        response.status == 304
            && response.body.is_empty()
            && response.header("etag") == Some(etag.as_str())
            && response.header("cache-control").is_some()
    };
    let response = conditional(&[("If-None-Match", &etag)]);
    check(
        not_modified(&response),
        "If-None-Match: <etag> must answer 304 with no body, the ETag and Cache-Control",
        &response,
    );
    let listed = format!("\"something-else\", {etag}");
    let response = conditional(&[("If-None-Match", &listed)]);
    check(
        not_modified(&response),
        "If-None-Match with a list holding the ETag must answer 304",
        &response,
    );
    let response = conditional(&[("If-None-Match", "\"stale-etag\"")]);
    check(
        response.status == 200 && response.body == first.body,
        "If-None-Match with another ETag must answer 200 with the JWKS",
        &response,
    );

    let response = conditional(&[("If-Modified-Since", &last_modified)]);
    check(
        not_modified(&response),
        "If-Modified-Since: <Last-Modified> must answer 304",
        &response,
    );
    if let Ok(modified_at) = modified_at {
        let later = http_date(modified_at + TimeDelta::hours(1));
        let response = conditional(&[("If-Modified-Since", &later)]);
        check(
            not_modified(&response),
            "If-Modified-Since after Last-Modified must answer 304",
            &response,
        );
        let earlier = http_date(modified_at - TimeDelta::hours(1));
        let response = conditional(&[("If-Modified-Since", &earlier)]);
        check(
            response.status == 200 && response.body == first.body,
            "If-Modified-Since before Last-Modified must answer 200 with the JWKS",
            &response,
        );
    }
    // RFC 9110 §13.2.2: If-None-Match is evaluated instead of If-Modified-Since.
    let response = conditional(&[
        ("If-None-Match", "\"stale-etag\""),
        ("If-Modified-Since", &last_modified),
    ]);
    check(
        response.status == 200,
        "a non-matching If-None-Match must answer 200 even when If-Modified-Since matches",
        &response,
    );

    let head = daemon.request("HEAD", JWKS, &[], b"");
    check(
        head.status == 200
            && head.body.is_empty()
            && head.header("etag") == Some(etag.as_str())
            && head.header("cache-control") == first.header("cache-control")
            && head.header("content-type") == first.header("content-type"),
        "HEAD must answer 200 with GET's headers and no body",
        &head,
    );

    let negotiated = conditional(&[("Accept", "application/jwk-set+json")]);
    check(
        negotiated.status == 200
            && negotiated
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("application/jwk-set+json"))
            && serde_json::from_slice::<Value>(&negotiated.body).ok()
                == serde_json::from_slice(&first.body).ok(),
        "Accept: application/jwk-set+json must get Content-Type: application/jwk-set+json and the same JWK Set",
        &negotiated,
    );
    let plain = conditional(&[("Accept", "application/json")]);
    check(
        plain
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "Accept: application/json must get Content-Type: application/json",
        &plain,
    );

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn operational_endpoints_and_error_bodies() {
    let daemon = slow_daemon_with_issuer();

    let health = daemon.get("/healthz");
    assert_eq!(health.status, 200, "GET /healthz\n{health}");
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 200, "GET /readyz\n{ready}");

    daemon.get("/no/such/route").assert_json_error(404);
    daemon
        .get("/.well-known/no-such-document")
        .assert_json_error(404);
    daemon
        .request("POST", JWKS, &[("Content-Type", "application/json")], b"{}")
        .assert_json_error(405);
    daemon
        .request("DELETE", "/healthz", &[], b"")
        .assert_json_error(405);

    let mut body = b"grant_type=client_credentials&padding=".to_vec();
    body.resize(body.len() + 70 * 1024, b'a');
    daemon
        .request(
            "POST",
            "/oauth2/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &body,
        )
        .assert_json_error(413);

    // The daemon still serves after the oversized request.
    let health = daemon.get("/healthz");
    assert_eq!(health.status, 200, "GET /healthz after a 413\n{health}");
}

/// Kills the daemon with SIGKILL at random points of the fast timeline, over and over, on
/// one store: nothing published and unexpired is ever lost, kids never change, the store
/// always parses.
#[test]
fn crash_safety_under_kill_9() {
    const MIN_KILLS: usize = 20;
    const MIN_ROTATIONS: usize = 5;
    let dir = TestDir::new(FAST_CONFIG);
    let mut history = History::new(
        &["ES256"],
        TimeDelta::seconds(3),
        TimeDelta::milliseconds(1500),
    );
    let mut rng = rand::rng();
    let mut store_seen = false;
    let mut kills = 0;
    let mut last_output = String::new();
    let started = Instant::now();

    while kills < MIN_KILLS || history.rotations() < MIN_ROTATIONS {
        // About 40 s normally; the bound only stops a run that cannot make progress.
        if started.elapsed() > Duration::from_secs(120) {
            history.fail(format!(
                "expected {MIN_KILLS} kills and {MIN_ROTATIONS} rotations within 120 s, \
                 got {kills} kills and {} rotations",
                history.rotations()
            ));
            break;
        }
        let mut daemon = Daemon::spawn(&dir.config_path());
        if kills % 4 == 3 {
            // Kill during start-up, before (or while) the daemon loads and writes the keyset.
            thread::sleep(Duration::from_millis(rng.random_range(0..=300)));
        } else {
            daemon.wait_listening(util::LISTEN_TIMEOUT);
            daemon.wait_ready(Duration::from_secs(10));
            observe(&mut history, &dir, &daemon);
            thread::sleep(Duration::from_millis(rng.random_range(0..=1500)));
            // What is served right before the crash must already be stored.
            let start = Utc::now();
            if let Ok(response) = util::http(daemon.addr(), "GET", JWKS, &[], b"") {
                history.record_jwks(&response, start, Utc::now());
            }
        }
        daemon.kill9();
        kills += 1;
        last_output = daemon.stderr_text();

        match dir.read_store() {
            None if store_seen => history.fail(format!("kill #{kills}: the store file vanished")),
            None => {}
            Some(bytes) => {
                store_seen = true;
                if let Err(err) = check_store_document(&bytes) {
                    history.fail(format!("kill #{kills}: {err}"));
                }
                let mode = util::mode(&dir.store_path());
                if mode != 0o600 {
                    history.fail(format!(
                        "kill #{kills}: expected store mode 0600, got {mode:o}"
                    ));
                }
            }
        }
        let (keys, from, to) = timed_keys(&dir);
        history.record_keys(&keys, from, to);
        if store_seen && one_current_per_family(&keys, &["ES256"]).is_err() {
            // Once more, in case the listing straddled a transition.
            let (recheck, from_2, to_2) = timed_keys(&dir);
            history.record_keys(&recheck, from_2, to_2);
            if let Err(err) = one_current_per_family(&recheck, &["ES256"]) {
                history.fail(format!("kill #{kills}: {err}\n{}", show_keys(&recheck)));
            }
        }
        if history.failures.len() >= 10 {
            break;
        }
    }

    // A last start on the battered store: ready, and consistent.
    let mut daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(10));
    for _ in 0..3 {
        observe(&mut history, &dir, &daemon);
        thread::sleep(Duration::from_millis(250));
    }
    daemon.kill9();
    history.check_jwks_log();
    history.assert_clean(
        &dir,
        &format!(
            "{last_output}\n---- last start ----\n{}",
            daemon.stderr_text()
        ),
    );
}

#[test]
fn jwks_entries_are_checked_strictly() {
    // A self-check of the checker used everywhere above: a private member or a wrong kid
    // must be caught, so a passing suite means something.
    let good = serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
    });
    assert_eq!(
        check_jwk(&good, false).as_deref(),
        Ok("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
    );
    let mut with_d = good.clone();
    with_d["d"] = Value::from("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
    assert!(
        check_jwk(&with_d, false).is_err(),
        "a private member must be rejected"
    );
    let mut wrong_kid = good.clone();
    wrong_kid["kid"] = Value::from("not-the-thumbprint");
    assert!(
        check_jwk(&wrong_kid, false).is_err(),
        "a kid that is not the thumbprint must be rejected"
    );
    assert!(check_jwk(&good, true).is_err(), "x5c = true requires x5c");
}
