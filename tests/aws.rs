//! CONTRACT §5 on AWS Secrets Manager, end to end: three `jwkd serve` replicas
//! on one secret in the emulator that `scripts/test` starts (moto, server mode,
//! named by `JWKD_TEST_SM_ENDPOINT`), on a 2-second schedule, through many
//! rotations while each replica in turn is SIGKILLed and restarted, with a
//! 10-second store outage in the middle.
//!
//! The replicas reach the emulator through [`proxy::Proxy`], which can drop or
//! black-hole connections (restarting the emulator would lose its in-memory
//! state) and counts the API calls. The test reads the secret itself straight
//! from the emulator, so it knows every keyset that was ever `AWSCURRENT`.

pub(crate) mod proxy;
pub(crate) mod replica;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use serde_json::{Value, json};

use crate::util::{self, Daemon, TestConfig, TestDir};
use proxy::{Mode, Proxy};
use replica::Replica;

const ENDPOINT_VAR: &str = "JWKD_TEST_SM_ENDPOINT";
const JWKS: &str = "/.well-known/jwks.json";
const ALGORITHMS: &[&str] = &["ES256", "EdDSA"];
const REPLICAS: usize = 3;
/// `store.refresh_interval` of the replicas.
const REFRESH: Duration = Duration::from_secs(1);
/// How often the test looks at every replica and at the secret.
const POLL: Duration = Duration::from_millis(200);
/// How long the replicas' JWKS may differ: the refresh interval, plus what one
/// round of polling three replicas takes on a loaded 2-core machine.
const DIVERGENCE_ALLOWED: Duration = Duration::from_millis(1500);
/// A replica is killed every this often, and restarted after [`DOWN_FOR`].
const KILL_EVERY: Duration = Duration::from_secs(3);
const DOWN_FOR: Duration = Duration::from_secs(1);
/// Each phase with kills lasts this long.
const KILL_PHASE: Duration = Duration::from_secs(14);
/// The store outage: connections dropped for the first half, black-holed for the second.
const OUTAGE: Duration = Duration::from_secs(10);
/// How long the replicas may take to agree again after the outage.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(20);
/// Successors every family must get during the run.
const MIN_ROTATIONS: usize = 10;

/// The emulator's address; without one the test fails and says how to get it
/// (`cargo nextest run` leaves this test out; `--profile e2e` runs it).
pub(crate) fn emulator() -> SocketAddr {
    let url = std::env::var(ENDPOINT_VAR).unwrap_or_else(|_| {
        panic!(
            "tests/aws.rs needs the Secrets Manager emulator: {ENDPOINT_VAR} is not set. Run \
             ./scripts/test, which installs moto and starts it, or see the README's \
             \"Running one backend test by hand\"."
        )
    });
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|err| panic!("{ENDPOINT_VAR}={url:?} is not http://IP:PORT: {err}"))
}

fn config(secret_id: &str, endpoint: SocketAddr) -> String {
    TestConfig::fast()
        .algorithms(ALGORITHMS)
        .set("store", "backend", "aws-secrets-manager")
        .unset("store", "path")
        .set("store", "secret_id", secret_id)
        .set("store", "region", "us-east-1")
        .set("store", "endpoint_url", format!("http://{endpoint}"))
        .build()
}

/// One Secrets Manager call straight to the emulator (JSON protocol; the
/// emulator does not check signatures, but routes on the credential scope).
pub(crate) fn emulator_call(
    emulator: SocketAddr,
    operation: &str,
    body: &Value,
) -> Result<Value, String> {
    service_call(
        emulator,
        "secretsmanager",
        &format!("secretsmanager.{operation}"),
        body,
    )
}

/// One call to `service` (its name in the credential scope) of the emulator,
/// whose JSON protocol names the operation in `target` (`X-Amz-Target`).
pub(crate) fn service_call(
    emulator: SocketAddr,
    service: &str,
    target: &str,
    body: &Value,
) -> Result<Value, String> {
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    );
    let response = util::http(
        emulator,
        "POST",
        "/",
        &[
            ("X-Amz-Target", target),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Authorization", authorization.as_str()),
        ],
        body.to_string().as_bytes(),
    )
    .map_err(|err| format!("{target}: {err}"))?;
    if response.status != 200 {
        return Err(format!("{target}: {response}"));
    }
    serde_json::from_slice(&response.body).map_err(|err| format!("{target}: {err}"))
}

/// A key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StoredKey {
    alg: String,
    activates_at: DateTime<Utc>,
}

/// The keys of one stored document, by kid.
fn parse_document(text: &str) -> Result<BTreeMap<String, StoredKey>, String> {
    let document: Value =
        serde_json::from_str(text).map_err(|err| format!("stored document: {err}"))?;
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("stored document without keys")?;
    keys.iter()
        .map(|key| {
            let field = |name: &str| {
                key.get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("stored key without {name}: {key}"))
            };
            Ok((
                field("kid")?.to_owned(),
                StoredKey {
                    alg: field("alg")?.to_owned(),
                    activates_at: util::parse_utc(field("activates_at")?)?,
                },
            ))
        })
        .collect()
}

/// The `AWSCURRENT` version and its keys.
struct Current {
    version: String,
    keys: BTreeMap<String, StoredKey>,
}

/// The `AWSCURRENT` document, if any.
fn read_current(emulator: SocketAddr, secret_id: &str) -> Result<Option<Current>, String> {
    let body = json!({"SecretId": secret_id, "VersionStage": "AWSCURRENT"});
    match emulator_call(emulator, "GetSecretValue", &body) {
        Ok(answer) => {
            let version = answer["VersionId"].as_str().unwrap_or_default().to_owned();
            let text = answer["SecretString"].as_str().unwrap_or_default();
            Ok(Some(Current {
                version,
                keys: parse_document(text)?,
            }))
        }
        Err(err) if err.contains("ResourceNotFound") => Ok(None),
        Err(err) => Err(err),
    }
}

/// Every version the secret holds (the emulator never deletes any), with its labels.
fn all_versions(emulator: SocketAddr, secret_id: &str) -> Vec<(String, Vec<String>)> {
    let body = json!({"SecretId": secret_id, "IncludeDeprecated": true, "MaxResults": 100});
    let mut versions = Vec::new();
    let mut body = body;
    loop {
        let answer = emulator_call(emulator, "ListSecretVersionIds", &body)
            .unwrap_or_else(|err| panic!("{err}"));
        for version in answer["Versions"].as_array().cloned().unwrap_or_default() {
            let labels = version["VersionStages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|label| label.as_str().map(str::to_owned))
                .collect();
            versions.push((
                version["VersionId"].as_str().unwrap_or_default().to_owned(),
                labels,
            ));
        }
        match answer["NextToken"].as_str() {
            Some(token) if !token.is_empty() => body["NextToken"] = Value::from(token),
            _ => return versions,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Kills,
    Outage,
    Recovery,
}

/// What the test has seen, checked as it goes.
struct Watch {
    emulator: SocketAddr,
    secret_id: String,
    /// Every key that was ever in an `AWSCURRENT` document.
    stored: BTreeMap<String, StoredKey>,
    /// Every kid any replica ever published, with the replica that did.
    published: BTreeMap<String, String>,
    /// Since when the live replicas have disagreed (kills phases only).
    diverged_since: Option<Instant>,
    longest_divergence: Duration,
    /// Per replica: the reasons `/readyz` gave for a 503 during the outage.
    unready_in_outage: BTreeMap<usize, BTreeSet<String>>,
    polls: usize,
    failures: Vec<String>,
}

impl Watch {
    fn fail(&mut self, message: String) {
        if self.failures.len() < 20 {
            self.failures.push(message);
        }
    }

    fn read_store(&mut self) {
        match read_current(self.emulator, &self.secret_id) {
            Ok(Some(current)) => self.stored.extend(current.keys),
            Ok(None) => {}
            Err(err) => self.fail(format!("reading the secret from the emulator: {err}")),
        }
    }

    /// One look at every live replica. Returns whether all of them serve the same JWKS
    /// and are ready.
    fn poll(&mut self, replicas: &mut [Replica], phase: Phase) -> bool {
        self.polls += 1;
        self.read_store();
        let mut views: Vec<(usize, BTreeSet<String>)> = Vec::new();
        let mut all_ready = true;
        for (replica_idx, replica) in replicas.iter_mut().enumerate() {
            if !replica.running() {
                all_ready = false;
                continue;
            }
            let Some(addr) = replica.addr() else {
                all_ready = false;
                continue;
            };
            let jwks = util::http(addr, "GET", JWKS, &[], b"")
                .map_err(|err| err.to_string())
                .and_then(|response| util::jwks_kids(&response, true));
            match jwks {
                Ok(kids) if kids.is_empty() => {
                    self.fail(format!("{} served an empty JWKS ({phase:?})", replica.name));
                }
                Ok(kids) => {
                    for kid in &kids {
                        self.published
                            .entry(kid.clone())
                            .or_insert_with(|| replica.name.clone());
                    }
                    views.push((replica_idx, kids));
                }
                Err(err) => self.fail(format!(
                    "{} did not serve its JWKS ({phase:?}): {err}",
                    replica.name
                )),
            }
            match util::http(addr, "GET", "/readyz", &[], b"") {
                Ok(response) if response.status == 200 => {}
                Ok(response) if response.status == 503 => {
                    all_ready = false;
                    response.assert_json_error(503);
                    if phase == Phase::Outage {
                        let reason = response.json()["error_description"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        self.unready_in_outage
                            .entry(replica_idx)
                            .or_default()
                            .insert(reason);
                    }
                }
                Ok(response) => self.fail(format!(
                    "{} /readyz answered {}",
                    replica.name, response.status
                )),
                Err(err) => self.fail(format!("{} /readyz failed: {err}", replica.name)),
            }
        }
        let agree = views.windows(2).all(|pair| pair[0].1 == pair[1].1);
        if phase == Phase::Kills {
            if agree {
                if let Some(since) = self.diverged_since.take() {
                    self.longest_divergence = self.longest_divergence.max(since.elapsed());
                }
            } else {
                let since = *self.diverged_since.get_or_insert_with(Instant::now);
                if since.elapsed() > DIVERGENCE_ALLOWED {
                    let views = views
                        .iter()
                        .map(|(idx, kids)| format!("  {}: {kids:?}", replicas[*idx].name))
                        .collect::<Vec<_>>()
                        .join("\n");
                    self.fail(format!(
                        "the replicas' JWKS differ for {:?}, longer than {DIVERGENCE_ALLOWED:?}:\n{views}",
                        since.elapsed()
                    ));
                    self.diverged_since = None;
                }
            }
        } else {
            self.diverged_since = None;
        }
        agree && all_ready && views.len() == replicas.len()
    }
}

/// Kills one replica at a time with SIGKILL and restarts it.
struct Killer {
    next_kill: Instant,
    next_victim: usize,
    down: Option<(usize, Instant)>,
    kills: usize,
}

impl Killer {
    fn step(&mut self, replicas: &mut [Replica], dirs: &[TestDir]) {
        let now = Instant::now();
        match self.down {
            Some((victim, since)) if now >= since + DOWN_FOR => {
                replicas[victim] =
                    Replica::spawn(&format!("r{victim}"), &dirs[victim].config_path());
                self.down = None;
                self.next_kill = now + KILL_EVERY;
            }
            Some(_) => {}
            None if now >= self.next_kill
                && replicas.iter_mut().all(|replica| replica.addr().is_some()) =>
            {
                let victim = self.next_victim;
                replicas[victim].kill9();
                self.kills += 1;
                self.down = Some((victim, now));
                self.next_victim = (victim + 1) % replicas.len();
            }
            None => {}
        }
    }

    /// Restarts a replica that is still down (before the outage).
    fn restore(&mut self, replicas: &mut [Replica], dirs: &[TestDir]) {
        if let Some((victim, _)) = self.down.take() {
            replicas[victim] = Replica::spawn(&format!("r{victim}"), &dirs[victim].config_path());
        }
    }
}

fn wait_listening(replicas: &mut [Replica], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !replicas.iter_mut().all(|replica| replica.addr().is_some()) {
        assert!(
            Instant::now() < deadline,
            "replicas not listening within {timeout:?}:\n{}",
            outputs(replicas)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn outputs(replicas: &[Replica]) -> String {
    replicas
        .iter()
        .map(|replica| {
            let output = replica.output();
            let tail: Vec<&str> = output.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "---- {} (last lines) ----\n{}",
                replica.name,
                tail.join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `now` is in the quiet half of the 2-second rotation cycle: the last
/// rotation's write was at least a refresh ago, the next one is not yet due.
fn quiet_moment(now: DateTime<Utc>) -> bool {
    let into_cycle = Duration::from_secs(u64::from(now.second() % 2))
        + Duration::from_nanos(u64::from(now.nanosecond().min(999_999_999)));
    (Duration::from_millis(1300)..Duration::from_millis(1700)).contains(&into_cycle)
}

#[test]
fn three_replicas_share_one_secret_through_kills_and_an_outage() {
    let emulator = emulator();
    let proxy = Proxy::start(emulator);
    let secret_id = format!("jwkd-it/ha-{:016x}", rand::random::<u64>());
    let dirs: Vec<TestDir> = (0..REPLICAS)
        .map(|_| TestDir::new(&config(&secret_id, proxy.addr())))
        .collect();
    // All three start at once on a secret that does not exist yet: they race to create it.
    let mut replicas: Vec<Replica> = dirs
        .iter()
        .enumerate()
        .map(|(idx, dir)| Replica::spawn(&format!("r{idx}"), &dir.config_path()))
        .collect();
    wait_listening(&mut replicas, Duration::from_secs(30));
    let run_started = Instant::now();
    let mut watch = Watch {
        emulator,
        secret_id: secret_id.clone(),
        stored: BTreeMap::new(),
        published: BTreeMap::new(),
        diverged_since: None,
        longest_divergence: Duration::ZERO,
        unready_in_outage: BTreeMap::new(),
        polls: 0,
        failures: Vec::new(),
    };
    let mut killer = Killer {
        next_kill: Instant::now() + KILL_EVERY,
        next_victim: 0,
        down: None,
        kills: 0,
    };

    // Phase 1: rotations while replicas are killed and restarted.
    let phase_end = Instant::now() + KILL_PHASE;
    while Instant::now() < phase_end {
        killer.step(&mut replicas, &dirs);
        watch.poll(&mut replicas, Phase::Kills);
        thread::sleep(POLL);
    }
    killer.restore(&mut replicas, &dirs);

    // Start the outage at a quiet moment with every replica up and agreeing, so
    // that no write is half-acknowledged when the store goes away.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let settled = watch.poll(&mut replicas, Phase::Kills);
        if settled && quiet_moment(Utc::now()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not settle before the outage:\n{:#?}\n{}",
            watch.failures,
            outputs(&replicas)
        );
        thread::sleep(Duration::from_millis(20));
    }
    let stored_before_outage = read_current(emulator, &secret_id)
        .unwrap()
        .map(|current| current.version);

    // Phase 2: the store goes away for OUTAGE.
    let outage_started = Instant::now();
    proxy.set_mode(Mode::Drop);
    let mut black_hole = false;
    let mut dropped = 0;
    while outage_started.elapsed() < OUTAGE {
        if !black_hole && outage_started.elapsed() >= OUTAGE / 2 {
            proxy.set_mode(Mode::BlackHole);
            dropped = proxy.dropped();
            black_hole = true;
        }
        watch.poll(&mut replicas, Phase::Outage);
        thread::sleep(POLL);
    }
    let stored_after_outage = read_current(emulator, &secret_id)
        .unwrap()
        .map(|current| current.version);
    proxy.set_mode(Mode::Forward);
    let outage_ended = Instant::now();

    // Phase 3: back to one JWKS, every replica ready.
    let convergence = loop {
        if watch.poll(&mut replicas, Phase::Recovery) {
            break outage_ended.elapsed();
        }
        assert!(
            outage_ended.elapsed() < CONVERGENCE_LIMIT,
            "the replicas did not converge within {CONVERGENCE_LIMIT:?} of the outage's end\n\
             failures so far: {:#?}\n{}",
            watch.failures,
            outputs(&replicas)
        );
        thread::sleep(Duration::from_millis(50));
    };

    // Phase 4: more rotations and kills.
    killer.next_kill = Instant::now() + KILL_EVERY;
    let phase_end = Instant::now() + KILL_PHASE;
    while Instant::now() < phase_end {
        killer.step(&mut replicas, &dirs);
        watch.poll(&mut replicas, Phase::Kills);
        thread::sleep(POLL);
    }
    killer.restore(&mut replicas, &dirs);
    wait_listening(&mut replicas, Duration::from_secs(30));
    let run_time = run_started.elapsed();
    watch.read_store();

    let mut problems = Vec::new();
    // No replica published a key that the store did not hold (as AWSCURRENT).
    for (kid, replica) in &watch.published {
        if !watch.stored.contains_key(kid) {
            problems.push(format!(
                "{replica} published {kid}, which was never in AWSCURRENT"
            ));
        }
    }
    // Exactly one successor per rotation per family.
    let mut rotations = BTreeMap::new();
    for &alg in ALGORITHMS {
        let mut activations: BTreeMap<DateTime<Utc>, Vec<&str>> = BTreeMap::new();
        for (kid, key) in &watch.stored {
            if key.alg == alg {
                activations
                    .entry(key.activates_at)
                    .or_default()
                    .push(kid.as_str());
            }
        }
        let duplicated: Vec<String> = activations
            .iter()
            .filter(|(_, kids)| kids.len() > 1)
            .map(|(at, kids)| format!("{at}: {kids:?}"))
            .collect();
        if !duplicated.is_empty() {
            problems.push(format!(
                "{alg}: several keys activate at one rotation: {duplicated:?}"
            ));
        }
        let n_keys: usize = activations.values().map(Vec::len).sum();
        let successors = n_keys.saturating_sub(1);
        if successors < MIN_ROTATIONS {
            problems.push(format!(
                "{alg}: only {successors} successors in {run_time:?} (expected {MIN_ROTATIONS}+)"
            ));
        }
        rotations.insert(alg, successors);
    }
    for replica_idx in 0..REPLICAS {
        if !watch.unready_in_outage.contains_key(&replica_idx) {
            problems.push(format!(
                "r{replica_idx}: /readyz never answered 503 during the outage"
            ));
        }
    }
    if stored_before_outage != stored_after_outage {
        problems.push(format!(
            "the secret changed during the outage: {stored_before_outage:?} -> {stored_after_outage:?}"
        ));
    }

    let versions = all_versions(emulator, &secret_id);
    let counts = proxy.counts();
    let calls: u64 = counts.values().sum();
    eprintln!(
        "HA run on {secret_id}: {run_time:.1?}, {} polls, {} kills, rotations per family {rotations:?}, \
         {} keys ever AWSCURRENT, {} versions written, longest JWKS divergence {:?} \
         (allowed {DIVERGENCE_ALLOWED:?}), convergence after the {OUTAGE:?} outage {convergence:.2?}",
        watch.polls,
        killer.kills,
        watch.stored.len(),
        versions.len(),
        watch.longest_divergence,
    );
    eprintln!(
        "connection attempts dropped in the first {:?} of the outage: {dropped}; \
         /readyz reasons during the outage: {:?}",
        OUTAGE / 2,
        watch.unready_in_outage
    );
    eprintln!(
        "API calls through the proxy by {REPLICAS} replicas ({calls} in all; refresh interval {REFRESH:?}): {counts:?}"
    );

    watch.failures.extend(problems);
    assert!(
        watch.failures.is_empty(),
        "{} problems:\n{}\n{}",
        watch.failures.len(),
        watch.failures.join("\n"),
        outputs(&replicas)
    );
    assert!(killer.kills >= 6, "only {} kills", killer.kills);
}

/// Two issuers on the Secrets Manager backend, two replicas: each issuer in a
/// secret of its own (`<secret_id>/<name>`), replicas agree per issuer, no kid
/// in both, and `jwkd keys|rotate --issuer` act on the one named.
#[test]
fn two_issuers_keep_a_secret_each_across_replicas() {
    let emulator = emulator();
    let secret_id = format!("jwkd-it/issuers-{:016x}", rand::random::<u64>());
    let base = TestConfig::slow()
        .algorithms(&["ES256"])
        .issuer("https://auth.test")
        .client(util::Client::new("minter", "minter-secret").roles(&["issuer"]))
        .set("store", "backend", "aws-secrets-manager")
        .unset("store", "path")
        .set("store", "secret_id", secret_id.as_str())
        .set("store", "region", "us-east-1")
        .set("store", "endpoint_url", format!("http://{emulator}"));
    let billing = base
        .issuer_entry("billing", "https://auth.test/billing")
        .algorithms(&["ES384", "ES256"]);
    let dir = TestDir::new(&base.with_issuer(billing).build());
    let replicas: Vec<Daemon> = (0..2)
        .map(|_| {
            let mut cmd = util::jwkd();
            replica::with_test_credentials(&mut cmd);
            let mut daemon = Daemon::spawn_command(cmd, &dir.config_path());
            daemon.wait_listening(Duration::from_secs(30));
            daemon
        })
        .collect();
    for replica in &replicas {
        replica.wait_ready(Duration::from_secs(30));
    }
    let default = read_current(emulator, &secret_id)
        .unwrap()
        .expect("the default secret");
    let billing = read_current(emulator, &format!("{secret_id}/billing"))
        .unwrap()
        .expect("billing's secret");
    assert!(default.keys.values().all(|key| key.alg == "ES256"));
    assert_eq!(
        (default.keys.len(), billing.keys.len()),
        (2, 4),
        "current and next of each family"
    );
    for replica in &replicas {
        let served: BTreeSet<String> = replica.jwks_kids(true);
        assert_eq!(
            served,
            default.keys.keys().cloned().collect::<BTreeSet<_>>()
        );
        let response = replica.get("/billing/.well-known/jwks.json");
        let served = util::jwks_kids(&response, true).unwrap();
        assert_eq!(
            served,
            billing.keys.keys().cloned().collect::<BTreeSet<_>>()
        );
    }

    // A key pulled from the default issuer signs a token claiming billing:
    // billing's verifier (on either replica's JWKS) refuses it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pulled = jwkd_client::SigningKeySource::builder(
            format!("http://{}/v1/signing-keys", replicas[0].addr()),
            "minter",
            "minter-secret",
        )
        .allow_http(true)
        .build()
        .unwrap();
        pulled.ready().await.unwrap();
        let now = Utc::now().timestamp();
        let claims = |iss: &str| json!({"iss": iss, "sub": "mallory", "aud": "payments", "iat": now, "exp": now + 60});
        let forged = pulled.sign(&claims("https://auth.test/billing")).unwrap();
        let genuine = pulled.sign(&claims("https://auth.test")).unwrap();
        for replica in &replicas {
            let jwks = |path: &str| {
                jwkd_client::RemoteJwks::builder(format!("http://{}{path}", replica.addr()))
                    .allow_http(true)
                    .build()
                    .unwrap()
            };
            let billing = jwkd_client::Verifier::builder(jwks("/billing/.well-known/jwks.json"))
                .issuer("https://auth.test/billing")
                .audience("payments")
                .build()
                .unwrap();
            let err = billing.verify::<Value>(&forged).await.unwrap_err();
            assert!(matches!(err, jwkd_client::Error::UnknownKid { .. }), "{err}");
            let default = jwkd_client::Verifier::builder(jwks(JWKS))
                .issuer("https://auth.test")
                .audience("payments")
                .build()
                .unwrap();
            default.verify::<Value>(&genuine).await.unwrap();
        }
    });

    // The verbs name the issuer they act on.
    let run = |verb: &str, args: &[&str]| {
        let mut cmd = dir.cmd(verb, args);
        replica::with_test_credentials(&mut cmd);
        util::run_cmd(cmd, None, Duration::from_secs(30))
    };
    let listed = run("keys", &["--issuer", "billing", "--json"]);
    listed.assert_code(0);
    let listed: Vec<Value> = serde_json::from_str(&listed.stdout).expect("keys --json");
    let listed: BTreeSet<String> = listed
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect();
    assert_eq!(
        listed,
        billing.keys.keys().cloned().collect::<BTreeSet<_>>()
    );
    run("rotate", &["--issuer", "billing"]).assert_code(0);
    let after = read_current(emulator, &format!("{secret_id}/billing"))
        .unwrap()
        .unwrap();
    assert_ne!(
        after.version, billing.version,
        "billing's secret was not written"
    );
    assert_eq!(
        read_current(emulator, &secret_id).unwrap().unwrap().version,
        default.version,
        "the default issuer's secret moved"
    );
    let unknown = run("keys", &["--issuer", "nope"]);
    unknown.assert_code(2);
    assert!(
        unknown
            .stderr
            .contains("--issuer nope: no issuer of that name (there are: default, billing)"),
        "{unknown}"
    );
}

/// Secrets Manager failing mid-write: `PutSecretValue` goes through, the
/// `UpdateSecretVersionStage` that would make it current gets a 500, then
/// never answers. Each time the replica keeps serving the stored keyset
/// (`AWSCURRENT` unchanged and loading), `/readyz` says why, and once writes
/// work again it stores the rotations due and is ready by itself.
#[test]
fn a_write_failing_or_stalling_midway_loses_nothing_and_recovers() {
    let emulator = emulator();
    let proxy = Proxy::start(emulator);
    let secret_id = format!("jwkd-it/midway-{:016x}", rand::random::<u64>());
    let dir = TestDir::new(&config(&secret_id, proxy.addr()));
    let mut cmd = util::jwkd();
    replica::with_test_credentials(&mut cmd);
    let mut daemon = Daemon::spawn_command(cmd, &dir.config_path());
    daemon.wait_listening(Duration::from_secs(30));
    daemon.wait_ready(Duration::from_secs(30));
    let eventually = |limit: Duration, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !check() {
            thread::sleep(POLL);
        }
        check()
    };
    // The SDK gives up on a stalled call after 10 s, and the replica then
    // retries with backoff: allow for two of those.
    for (mode, limit) in [
        (Mode::FailWrites, Duration::from_secs(10)),
        (Mode::StallWrites, Duration::from_secs(30)),
    ] {
        let before = read_current(emulator, &secret_id)
            .unwrap()
            .expect("a secret");
        proxy.set_mode(mode);
        assert!(
            eventually(limit, &|| {
                let ready = daemon.get("/readyz");
                ready.status == 503 && ready.text().contains("the keyset store is unavailable")
            }),
            "{mode:?}: /readyz never said the store is unavailable: {}\n{}",
            daemon.get("/readyz"),
            daemon.stderr_text()
        );
        let during = read_current(emulator, &secret_id)
            .unwrap()
            .expect("a secret");
        assert_eq!(during.version, before.version, "{mode:?}: AWSCURRENT moved");
        let served = daemon.jwks_kids(true);
        let stored: BTreeSet<String> = during.keys.keys().cloned().collect();
        assert!(
            served.is_subset(&stored),
            "{mode:?}: a key not in AWSCURRENT is served"
        );
        assert!(!served.is_empty());

        proxy.set_mode(Mode::Forward);
        assert!(
            eventually(Duration::from_secs(30), &|| daemon.get("/readyz").status
                == 200),
            "{mode:?}: not ready again: {}\n{}",
            daemon.get("/readyz"),
            daemon.stderr_text()
        );
        let after = read_current(emulator, &secret_id)
            .unwrap()
            .expect("a secret");
        assert_ne!(
            after.version, before.version,
            "{mode:?}: nothing stored after"
        );
        let served = daemon.jwks_kids(true);
        let stored: BTreeSet<String> = after.keys.keys().cloned().collect();
        assert!(
            eventually(Duration::from_secs(5), &|| daemon
                .jwks_kids(true)
                .is_subset(
                    &read_current(emulator, &secret_id)
                        .unwrap()
                        .expect("a secret")
                        .keys
                        .keys()
                        .cloned()
                        .collect()
                )),
            "{mode:?}: served {served:?}, stored {stored:?}"
        );
    }
    let counts = proxy.counts();
    assert!(
        counts.get("UpdateSecretVersionStage").copied().unwrap_or(0) >= 2,
        "{counts:?}"
    );
}
