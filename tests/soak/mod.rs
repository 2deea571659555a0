//! The soak: everything jwkd does, at once, for a while, with faults injected
//! at random but reproducible moments, and a table of what happened at the
//! end in which every must-be-zero is zero (issue 14).
//!
//! - Four issuers. Two replicas of `jwkd serve` on the Secrets Manager
//!   emulator serve `orders` (ES256 and RS256, local keys) and `billing`
//!   (ES256 in the emulator's KMS); one daemon on the file store, on a small
//!   tmpfs, serves `edge` (EdDSA) and `batch` (ES384). All rotate every 10 s,
//!   with a 7 s lead.
//! - The load: calling services with `TokenSource`, issuers with
//!   `SigningKeySource` and `POST /v1/sign`; every token judged at once and
//!   again shortly before it expires by jwkd-client's `Verifier` over
//!   `RemoteJwks`, and every other token by PyJWT. Forged, expired and
//!   cross-issuer tokens go to both, and must be refused.
//! - The faults, one at a time in a seeded random order (every kind in each
//!   round): SIGKILL and restart of a replica or of the file daemon, SIGSTOP
//!   of the emulator, the store proxy dropping, black-holing, failing or
//!   stalling writes, or delaying; a stalled JWKS endpoint for the Rust
//!   verifiers; SIGHUP with a good then a bad config; `jwkd rotate` and
//!   `jwkd revoke` beside the daemons; a full disk under the file store.
//! - Clients reach the daemons through a front per group, as they would
//!   through a load balancer: the monitor takes a daemon out while it is down.
//!
//! `JWKD_SOAK_SECONDS` (default 75: the bounded run of the e2e profile) and
//! `JWKD_SOAK_SEED` (default: random, printed) set the run. The long run:
//!
//! ```text
//! JWKD_SOAK_SECONDS=1800 JWKD_TEST_PYTHON=$PWD/.venv/bin/python \
//!     cargo test --test it soak:: -- --nocapture
//! ```
//!
//! It needs root (to mount the tmpfs), and `JWKD_TEST_PYTHON` naming the
//! Python of the venv `scripts/test` makes (moto and PyJWT); it starts its
//! own emulator, which it stops and resumes.

mod fleet;
mod front;
mod ledger;
mod load;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::aws::proxy::{Mode, Proxy};
use crate::store_faults::{Tmpfs, fill};
use crate::util::{Client, TestConfig, TestIssuer, parse_utc, run_cmd};
use fleet::{Backend, Emulator, Node, signal};
use front::Front;
use ledger::Ledger;
use load::{Load, Target, now_secs};

pub const AUD: &str = "api";
/// The rotation schedule, every `EVERY` seconds. With `jwks_max_age` 2 s,
/// `clock_skew` 4 s and `store.refresh_interval` 1 s, a key is published 7 s
/// before it signs: longer than the longest fault (3 s) plus a write and a
/// re-read through the delaying proxy (1.5 s a request), so no fault here
/// exceeds what the lead is there to absorb. A store outage longer than the
/// lead leaves a replica that missed a key without it when another starts
/// signing with it: that is the limit of the design, not a fault to inject.
const EVERY: i64 = 10;
/// `jwks_max_age`, `clock_skew` and `store.refresh_interval`, in seconds.
const MAX_AGE: i64 = 2;
const SKEW: i64 = 4;
const REFRESH: i64 = 1;
/// The lead those settings give.
const LEAD: chrono::Duration = chrono::Duration::seconds(MAX_AGE + SKEW + REFRESH);
/// How often the monitor looks at every daemon.
const POLL: Duration = Duration::from_millis(250);

/// A key as the store holds it.
struct StoredKey {
    kid: String,
    alg: String,
    /// Unix seconds.
    created: i64,
    revoked: bool,
    activates: String,
}

/// The two groups of daemons.
const REPLICAS: usize = 0;
const FILE: usize = 1;

/// One issuer of the soak.
#[derive(Clone)]
pub struct Issuer {
    /// Its name in the config (`default` for the top-level one).
    pub name: &'static str,
    pub iss: String,
    /// The path its endpoints are served under.
    pub prefix: &'static str,
    pub group: usize,
    /// Whether its keys are local (else KMS holds them).
    pub local: bool,
    /// The file of its keyset (file group), or its secret id (replicas).
    pub keyset: String,
}

fn issuers(secret: &str, tmpfs: &Tmpfs) -> Vec<Issuer> {
    let file = |name: &str| tmpfs.path.join(name).display().to_string();
    vec![
        Issuer {
            name: "default",
            iss: "https://soak.test".into(),
            prefix: "",
            group: REPLICAS,
            local: true,
            keyset: secret.into(),
        },
        Issuer {
            name: "billing",
            iss: "https://soak.test/billing".into(),
            prefix: "/billing",
            group: REPLICAS,
            local: false,
            keyset: format!("{secret}/billing"),
        },
        Issuer {
            name: "default",
            iss: "https://edge.soak.test".into(),
            prefix: "",
            group: FILE,
            local: true,
            keyset: file("keyset.json"),
        },
        Issuer {
            name: "batch",
            iss: "https://edge.soak.test/batch".into(),
            prefix: "/batch",
            group: FILE,
            local: true,
            keyset: file("keyset.batch.json"),
        },
    ]
}

/// What every issuer shares: the schedule, lifetimes of 10 s, the clients.
fn base(iss: &str, algorithms: &[&str]) -> TestConfig {
    TestConfig::fast()
        .algorithms(algorithms)
        .set("keys", "rotation_schedule", format!("*/{EVERY} * * * * *"))
        .set("keys", "max_token_lifetime", "10s")
        .set("keys", "clock_skew", format!("{SKEW}s"))
        .set("keys", "jwks_max_age", format!("{MAX_AGE}s"))
        .set("keys", "x5c", false)
        .set("store", "refresh_interval", format!("{REFRESH}s"))
        .issuer(iss)
        .set("issuer", "token_lifetime", "10s")
}

fn clients(issuer: TestIssuer) -> TestIssuer {
    issuer
        .set("token_lifetime", "10s")
        .client(Client::new("svc", "svc-secret").audiences(&[AUD]))
        .client(
            Client::new("minter", "minter-secret")
                .audiences(&[AUD])
                .roles(&["issuer"]),
        )
}

fn replica_config(issuers: &[Issuer], store: SocketAddr) -> String {
    let endpoint = format!("http://{store}");
    let base = base(&issuers[0].iss, &["ES256", "RS256"])
        .set("store", "backend", "aws-secrets-manager")
        .unset("store", "path")
        .set("store", "secret_id", issuers[0].keyset.clone())
        .set("store", "region", "us-east-1")
        .set("store", "endpoint_url", endpoint.clone())
        .set("kms", "region", "us-east-1")
        .set("kms", "endpoint_url", endpoint)
        .client(Client::new("svc", "svc-secret").audiences(&[AUD]))
        .client(
            Client::new("svc-rsa", "svc-rsa-secret")
                .audiences(&[AUD])
                .algorithm("RS256"),
        )
        .client(
            Client::new("minter", "minter-secret")
                .audiences(&[AUD])
                .roles(&["issuer"]),
        );
    let billing = clients(
        base.issuer_entry("billing", &issuers[1].iss)
            .algorithms(&["ES256"])
            .keys("custody", "kms"),
    );
    base.with_issuer(billing).build()
}

fn file_config(issuers: &[Issuer]) -> String {
    let base = base(&issuers[2].iss, &["EdDSA"])
        .set("store", "path", issuers[2].keyset.clone())
        .client(Client::new("svc", "svc-secret").audiences(&[AUD]))
        .client(
            Client::new("minter", "minter-secret")
                .audiences(&[AUD])
                .roles(&["issuer"]),
        );
    let batch = clients(
        base.issuer_entry("batch", &issuers[3].iss)
            .algorithms(&["ES384"]),
    );
    base.with_issuer(batch).build()
}

/// The fronts of one group of daemons: for the clients, for jwkd-client's
/// verifiers (the one the injector stalls), and for PyJWT.
struct Fronts {
    clients: Front,
    rust: Front,
    peer: Front,
}

impl Fronts {
    fn new(slots: usize) -> Fronts {
        Fronts {
            clients: Front::start(slots),
            rust: Front::start(slots),
            peer: Front::start(slots),
        }
    }

    fn set(&self, slot: usize, addr: Option<SocketAddr>) {
        for front in [&self.clients, &self.rust, &self.peer] {
            front.set(slot, addr);
        }
    }
}

/// Everything the threads of the soak share.
struct Soak {
    issuers: Vec<Issuer>,
    /// Nodes 0 and 1 are the replicas, node 2 the file daemon.
    nodes: Vec<Mutex<Node>>,
    /// Nodes that are down on purpose (the monitor must not call it an exit).
    fronts: Vec<Fronts>,
    emulator: Emulator,
    store_proxy: Proxy,
    tmpfs: Tmpfs,
    ledger: Arc<Mutex<Ledger>>,
    stop: AtomicBool,
}

fn group_of(node: usize) -> (usize, usize) {
    if node < 2 {
        (REPLICAS, node)
    } else {
        (FILE, 0)
    }
}

impl Soak {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `duration`, in steps, unless the soak stops.
    fn pause(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until && !self.stopped() {
            thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }

    /// The monitor: every [`POLL`], each daemon's JWKS of each issuer; keys in
    /// use must be served, fronts follow which daemons answer, and a new key
    /// must reach every replica.
    fn monitor(&self) {
        let mut first_seen: BTreeMap<String, Instant> = BTreeMap::new();
        let mut everywhere: BTreeSet<String> = BTreeSet::new();
        while !self.stopped() {
            let now = now_secs();
            let mut serving: Vec<(usize, BTreeMap<usize, BTreeSet<String>>)> = Vec::new();
            for (index, node) in self.nodes.iter().enumerate() {
                let (group, slot) = group_of(index);
                let mut node = node.lock().unwrap();
                node.note_rss();
                if let Some(output) = node.exited() {
                    let tail: String = output
                        .chars()
                        .rev()
                        .take(3000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    self.ledger
                        .lock()
                        .unwrap()
                        .unexpected_exits
                        .push(format!("{} EXITED UNASKED:\n{tail}", node.name));
                    node.start();
                }
                let Some(addr) = node.addr() else {
                    self.fronts[group].set(slot, None);
                    continue;
                };
                let name = node.name.clone();
                drop(node);
                let mut served = BTreeMap::new();
                for (issuer, spec) in self
                    .issuers
                    .iter()
                    .enumerate()
                    .filter(|(_, spec)| spec.group == group)
                {
                    let path = format!("{}/.well-known/jwks.json", spec.prefix);
                    let Ok(response) = crate::util::http(addr, "GET", &path, &[], b"") else {
                        continue;
                    };
                    if response.status != 200 {
                        continue;
                    }
                    let Ok(document) = serde_json::from_slice::<Value>(&response.body) else {
                        continue;
                    };
                    let kids: BTreeMap<String, String> = document["keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|key| {
                            Some((
                                key["kid"].as_str()?.to_owned(),
                                key["alg"].as_str()?.to_owned(),
                            ))
                        })
                        .collect();
                    let mut ledger = self.ledger.lock().unwrap();
                    let seen_at = ledger::now_ms();
                    for kid in kids.keys() {
                        ledger
                            .first_seen
                            .entry(kid.clone())
                            .or_default()
                            .entry(name.clone())
                            .or_insert(seen_at);
                    }
                    ledger.largest_jwks = ledger.largest_jwks.max(response.body.len());
                    let present: BTreeSet<String> = kids.keys().cloned().collect();
                    ledger.check_in_use(issuer, now, &present, &format!("the JWKS of {name}"));
                    ledger.served.entry(issuer).or_default().extend(kids);
                    served.insert(issuer, present);
                }
                let healthy = served.contains_key(
                    &self
                        .issuers
                        .iter()
                        .position(|spec| spec.group == group)
                        .unwrap(),
                );
                self.fronts[group].set(slot, healthy.then_some(addr));
                if group == REPLICAS && healthy {
                    serving.push((index, served));
                }
            }
            // A key one replica serves must soon be served by every replica that answers.
            if serving.len() == 2 {
                let union: BTreeSet<String> = serving
                    .iter()
                    .flat_map(|(_, served)| served.values().flatten().cloned())
                    .collect();
                for kid in union {
                    let seen = *first_seen.entry(kid.clone()).or_insert_with(Instant::now);
                    let all = serving
                        .iter()
                        .all(|(_, served)| served.values().any(|kids| kids.contains(&kid)));
                    if all && everywhere.insert(kid) {
                        let mut ledger = self.ledger.lock().unwrap();
                        ledger.longest_propagation = ledger.longest_propagation.max(seen.elapsed());
                    }
                }
            }
            thread::sleep(POLL);
        }
    }

    /// The stored keyset of `issuer`.
    fn read_store(&self, issuer: usize) -> Result<Vec<StoredKey>, String> {
        let spec = &self.issuers[issuer];
        let text = if spec.group == REPLICAS {
            let answer = crate::aws::emulator_call(
                self.emulator.addr,
                "GetSecretValue",
                &json!({"SecretId": spec.keyset, "VersionStage": "AWSCURRENT"}),
            )?;
            answer["SecretString"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        } else {
            std::fs::read_to_string(&spec.keyset)
                .map_err(|err| format!("{}: {err}", spec.keyset))?
        };
        let document: Value =
            serde_json::from_str(&text).map_err(|err| format!("{}: {err}", spec.keyset))?;
        document["keys"]
            .as_array()
            .ok_or("no keys")?
            .iter()
            .map(|key| {
                let field = |name: &str| {
                    key[name]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or(format!("no {name} in {key}"))
                };
                Ok(StoredKey {
                    kid: field("kid")?,
                    alg: field("alg")?,
                    created: parse_utc(&field("created_at")?)?.timestamp(),
                    revoked: !key["revoked_at"].is_null(),
                    activates: field("activates_at")?,
                })
            })
            .collect()
    }

    /// Reads every issuer's stored keyset: keys in use must be stored.
    fn read_stores(&self) {
        for issuer in 0..self.issuers.len() {
            let keys = match self.read_store(issuer) {
                Ok(keys) => keys,
                Err(err) => {
                    self.ledger.lock().unwrap().example(format!(
                        "reading the keyset of {}: {err}",
                        self.issuers[issuer].iss
                    ));
                    continue;
                }
            };
            let now = now_secs();
            let mut ledger = self.ledger.lock().unwrap();
            let created = keys.iter().map(|key| key.created).min().unwrap_or(now);
            let first = ledger.first_stored_at.entry(issuer).or_insert(created);
            *first = (*first).min(created);
            ledger.last_stored_at.insert(issuer, now);
            let present: BTreeSet<String> = keys
                .iter()
                .filter(|key| !key.revoked)
                .map(|key| key.kid.clone())
                .collect();
            ledger.check_in_use(issuer, now, &present, "the store");
            let seen_at = ledger::now_ms();
            for StoredKey {
                kid,
                alg,
                created,
                activates,
                ..
            } in keys
            {
                ledger
                    .first_seen
                    .entry(kid.clone())
                    .or_default()
                    .entry("the store".into())
                    .or_insert(seen_at);
                ledger
                    .key_times
                    .entry(kid.clone())
                    .or_insert((created.to_string(), activates));
                ledger.stored.entry(issuer).or_default().insert(kid, alg);
            }
        }
    }

    fn store_reader(&self) {
        while !self.stopped() {
            self.read_stores();
            self.pause(Duration::from_secs(1));
        }
    }

    fn node_of(&self, issuer: usize) -> usize {
        if self.issuers[issuer].group == REPLICAS {
            0
        } else {
            2
        }
    }

    /// `jwkd VERB ARGS --config C --issuer NAME` beside the daemons.
    fn cli(&self, issuer: usize, verb: &str, args: &[&str]) -> crate::util::Outcome {
        let node = self.nodes[self.node_of(issuer)].lock().unwrap();
        let mut cmd = node.command();
        cmd.arg(verb)
            .args(args)
            .arg("--config")
            .arg(&node.config)
            .args(["--issuer", self.issuers[issuer].name]);
        drop(node);
        run_cmd(cmd, None, Duration::from_secs(60))
    }

    /// One fault, held for `hold`, then cleared; its span goes in the log.
    fn inject(&self, fault: Fault, rng: &mut StdRng, last_revoke: &mut BTreeMap<usize, Instant>) {
        let start = ledger::now_ms();
        self.inject_one(fault, rng, last_revoke);
        self.ledger
            .lock()
            .unwrap()
            .fault_log
            .push((start, ledger::now_ms(), format!("{fault:?}")));
    }

    fn inject_one(
        &self,
        fault: Fault,
        rng: &mut StdRng,
        last_revoke: &mut BTreeMap<usize, Instant>,
    ) {
        let hold = Duration::from_millis(rng.random_range(1000..3000));
        let record = |kind: &str| self.ledger.lock().unwrap().fault(fault, kind);
        match fault {
            Fault::Kill => {
                let index = rng.random_range(0..3);
                let (group, slot) = group_of(index);
                self.fronts[group].set(slot, None);
                let mut node = self.nodes[index].lock().unwrap();
                node.kill9();
                record(&format!("kill {}", node.name));
                drop(node);
                self.pause(hold / 2);
                self.nodes[index].lock().unwrap().start();
            }
            Fault::StopEmulator => {
                record("emulator SIGSTOP");
                signal(self.emulator.pid(), "STOP");
                self.pause(hold);
                signal(self.emulator.pid(), "CONT");
            }
            Fault::StoreProxy => {
                let modes = [
                    Mode::Drop,
                    Mode::BlackHole,
                    Mode::FailWrites,
                    Mode::StallWrites,
                    Mode::Delay,
                ];
                let mode = modes[rng.random_range(0..modes.len())];
                record(&format!("store proxy {mode:?}"));
                self.store_proxy.set_mode(mode);
                self.pause(hold);
                self.store_proxy.set_mode(Mode::Forward);
            }
            Fault::StallJwks => {
                let group = rng.random_range(0..2);
                record("JWKS stalled for the Rust verifiers");
                self.fronts[group].rust.stall(true);
                self.pause(hold);
                self.fronts[group].rust.stall(false);
            }
            Fault::Sighup => {
                let index = rng.random_range(0..3);
                let node = self.nodes[index].lock().unwrap();
                let (Some(pid), config, good) =
                    (node.pid(), node.config.clone(), node.good_config.clone())
                else {
                    return;
                };
                drop(node);
                record("SIGHUP, good then bad config");
                std::fs::write(&config, &good).unwrap();
                signal(pid, "HUP");
                self.pause(Duration::from_millis(500));
                std::fs::write(&config, "[keys\nalgorithms = 7\n").unwrap();
                signal(pid, "HUP");
                self.pause(Duration::from_millis(500));
                std::fs::write(&config, &good).unwrap();
                signal(pid, "HUP");
            }
            Fault::Rotate => {
                let issuer = rng.random_range(0..self.issuers.len());
                let outcome = self.cli(issuer, "rotate", &[]);
                let mut ledger = self.ledger.lock().unwrap();
                ledger.fault(fault, "jwkd rotate");
                if outcome.code == Some(0) {
                    *ledger.rotates.entry(issuer).or_default() += 1;
                } else {
                    ledger.example(format!(
                        "jwkd rotate failed (not a soak failure): {outcome}"
                    ));
                }
            }
            Fault::Revoke => {
                // Revoking a signing key promotes its successor at once,
                // however short a time it has been published (an emergency,
                // by design): just after a rotation, that successor is a key
                // verifiers have not seen yet. The soak revokes a signing key
                // only once its successor has been published for the lead,
                // and one per issuer per 20 s.
                let candidates: Vec<usize> = (0..self.issuers.len())
                    .filter(|issuer| {
                        last_revoke
                            .get(issuer)
                            .is_none_or(|at| at.elapsed() > Duration::from_secs(20))
                    })
                    .collect();
                let Some(&issuer) = candidates.get(rng.random_range(0..candidates.len().max(1)))
                else {
                    return;
                };
                // Wait (at most once) for the successor to have been
                // published for the lead, a second to spare.
                let mut current = Vec::new();
                for _ in 0..2 {
                    let keys = self.cli(issuer, "keys", &["--json"]);
                    let Ok(keys) = serde_json::from_str::<Vec<Value>>(&keys.stdout) else {
                        return;
                    };
                    let ready_at = |alg: &Value| {
                        keys.iter()
                            .filter(|key| key["state"] == "next" && key["alg"] == *alg)
                            .filter_map(|key| parse_utc(key["created_at"].as_str()?).ok())
                            .map(|created| created + LEAD + chrono::Duration::seconds(1))
                            .min()
                    };
                    let now = chrono::Utc::now();
                    let signing: Vec<(String, String, Option<chrono::DateTime<chrono::Utc>>)> =
                        keys.iter()
                            .filter(|key| key["state"] == "current")
                            .filter_map(|key| {
                                Some((
                                    key["kid"].as_str()?.to_owned(),
                                    key["alg"].as_str()?.to_owned(),
                                    ready_at(&key["alg"]),
                                ))
                            })
                            .collect();
                    current = signing
                        .iter()
                        .filter(|(_, _, ready)| ready.is_some_and(|at| at <= now))
                        .map(|(kid, alg, _)| (kid.clone(), alg.clone()))
                        .collect();
                    let soonest = signing.iter().filter_map(|(_, _, ready)| *ready).min();
                    match soonest {
                        Some(at) if current.is_empty() && at > now => {
                            self.pause((at - now).to_std().unwrap_or_default());
                        }
                        _ => break,
                    }
                }
                let Some((kid, alg)) = current
                    .get(rng.random_range(0..current.len().max(1)))
                    .cloned()
                else {
                    return;
                };
                self.ledger.lock().unwrap().revoked.insert(kid.clone());
                let outcome = self.cli(issuer, "revoke", &[&kid]);
                let mut ledger = self.ledger.lock().unwrap();
                ledger.fault(fault, "jwkd revoke");
                if outcome.code == Some(0) {
                    *ledger.revokes.entry((issuer, alg)).or_default() += 1;
                    last_revoke.insert(issuer, Instant::now());
                } else {
                    ledger.revoked.remove(&kid);
                    ledger.example(format!(
                        "jwkd revoke failed (not a soak failure): {outcome}"
                    ));
                }
            }
            Fault::FillDisk => {
                record("file store's disk full");
                let filler = fill(&self.tmpfs.path);
                self.pause(hold);
                std::fs::remove_file(filler).unwrap();
            }
        }
    }

    /// Faults one at a time, every kind once per round in a random order,
    /// with 1-3 s between them.
    fn injector(&self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut last_revoke = BTreeMap::new();
        while !self.stopped() {
            let mut round = Fault::ALL.to_vec();
            round.shuffle(&mut rng);
            for fault in round {
                if self.stopped() {
                    return;
                }
                self.inject(fault, &mut rng, &mut last_revoke);
                self.pause(Duration::from_millis(rng.random_range(1000..3000)));
            }
        }
    }
}

/// One KMS call straight to the emulator.
fn kms_call(emulator: SocketAddr, operation: &str, body: &Value) -> Result<Value, String> {
    crate::aws::service_call(emulator, "kms", &format!("TrentService.{operation}"), body)
}

/// The KMS keys made for `iss`, by state: (made, pending deletion, enabled
/// ARNs). The emulator is the soak's own, so every key tagged with the
/// issuer is this run's.
fn kms_census(emulator: SocketAddr, iss: &str) -> Result<(usize, usize, BTreeSet<String>), String> {
    let keys = kms_call(emulator, "ListKeys", &json!({"Limit": 1000}))?;
    let (mut made, mut retired, mut enabled) = (0, 0, BTreeSet::new());
    for key in keys["Keys"].as_array().into_iter().flatten() {
        let id = key["KeyId"].as_str().unwrap_or_default();
        let tags = kms_call(emulator, "ListResourceTags", &json!({"KeyId": id}))?;
        let ours = tags["Tags"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|tag| tag["TagKey"] == "jwkd:issuer" && tag["TagValue"] == iss);
        if !ours {
            continue;
        }
        made += 1;
        let described = kms_call(emulator, "DescribeKey", &json!({"KeyId": id}))?;
        match described["KeyMetadata"]["KeyState"].as_str() {
            Some("PendingDeletion") => retired += 1,
            _ => {
                enabled.insert(
                    described["KeyMetadata"]["Arn"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    }
    Ok((made, retired, enabled))
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    StopEmulator,
    StoreProxy,
    StallJwks,
    Sighup,
    Rotate,
    Revoke,
    FillDisk,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::Kill,
        Fault::StopEmulator,
        Fault::StoreProxy,
        Fault::StallJwks,
        Fault::Sighup,
        Fault::Rotate,
        Fault::Revoke,
        Fault::FillDisk,
    ];
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|err| panic!("{name}={value:?}: {err}"))
    })
}

#[test]
fn a_soak_with_faults_rejects_no_valid_token_accepts_no_bad_one_and_loses_no_key() {
    let seconds = env_u64("JWKD_SOAK_SECONDS").unwrap_or(75);
    let seed = env_u64("JWKD_SOAK_SEED").unwrap_or_else(rand::random);
    eprintln!("soak: {seconds} s, seed {seed} (JWKD_SOAK_SEED={seed} repeats the faults)");
    let started = chrono::Utc::now();
    let emulator = Emulator::start();
    let store_proxy = Proxy::start(emulator.addr);
    let tmpfs = Tmpfs::mount("1m");
    let secret = format!("soak-{:016x}/keyset", rand::random::<u64>());
    let issuers = issuers(&secret, &tmpfs);
    let dir = tempfile::tempdir().unwrap();
    let replica = replica_config(&issuers, store_proxy.addr());
    let mut nodes = Vec::new();
    for (name, text, backend) in [
        ("replica-1", &replica, Backend::SecretsManager),
        ("replica-2", &replica, Backend::SecretsManager),
        ("file", &file_config(&issuers), Backend::File),
    ] {
        let node = Node::new(
            name,
            dir.path().join(format!("{name}.toml")),
            text.clone(),
            backend,
        );
        nodes.push(Mutex::new(node));
    }
    let soak = Arc::new(Soak {
        issuers: issuers.clone(),
        nodes,
        fronts: vec![Fronts::new(2), Fronts::new(1)],
        emulator,
        store_proxy,
        tmpfs,
        ledger: Arc::new(Mutex::new(Ledger::default())),
        stop: AtomicBool::new(false),
    });
    // Every daemon up and ready before the load starts.
    for node in &soak.nodes {
        node.lock().unwrap().wait_ready(Duration::from_secs(60));
    }
    let threads: Vec<_> = [0, 1]
        .into_iter()
        .map(|which| {
            let soak = Arc::clone(&soak);
            thread::spawn(move || {
                if which == 0 {
                    soak.monitor()
                } else {
                    soak.store_reader()
                }
            })
        })
        .collect();
    // The fronts know the daemons before the clients start.
    thread::sleep(POLL * 2);

    let (peer_tx, peer_rx) = std::sync::mpsc::sync_channel(256);
    let peer = {
        let issuers: Vec<(String, String)> = soak
            .issuers
            .iter()
            .map(|spec| {
                (
                    spec.iss.clone(),
                    soak.fronts[spec.group]
                        .peer
                        .url(&format!("{}/.well-known/jwks.json", spec.prefix)),
                )
            })
            .collect();
        let ledger = Arc::clone(&soak.ledger);
        thread::spawn(move || load::run_peer(issuers, peer_rx, ledger))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let injector = {
        let soak = Arc::clone(&soak);
        thread::spawn(move || soak.injector(seed))
    };
    let load = runtime.block_on(async {
        let targets = soak
            .issuers
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let fronts = &soak.fronts[spec.group];
                let (jwks, verifier) = load::verifier(
                    spec,
                    fronts
                        .rust
                        .url(&format!("{}/.well-known/jwks.json", spec.prefix)),
                );
                Target {
                    issuer: spec.clone(),
                    clients: fronts.clients.url(spec.prefix),
                    verifier,
                    jwks,
                    other: index ^ 1,
                }
            })
            .collect();
        let load = Arc::new(Load::new(targets, Arc::clone(&soak.ledger), peer_tx));
        let mut tasks = Vec::new();
        for issuer in 0..soak.issuers.len() {
            tasks.push(tokio::spawn(Arc::clone(&load).calling_service(
                issuer,
                "svc",
                Duration::from_millis(100),
            )));
            tasks.push(tokio::spawn(
                Arc::clone(&load).pulling_issuer(issuer, Duration::from_millis(100)),
            ));
            tasks.push(tokio::spawn(
                Arc::clone(&load).signing_issuer(issuer, Duration::from_millis(250)),
            ));
        }
        tasks.push(tokio::spawn(Arc::clone(&load).calling_service(
            0,
            "svc-rsa",
            Duration::from_millis(300),
        )));
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        // Faults end; everything settles; the load ends.
        soak.stop.store(true, Ordering::Relaxed);
        tokio::task::spawn_blocking({
            let injector = injector;
            move || injector.join().unwrap()
        })
        .await
        .unwrap();
        load.stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        load
    });
    drop(load);
    drop(runtime);
    peer.join().unwrap();
    for thread in threads {
        thread.join().unwrap();
    }
    // The last word: keys of tokens still valid are stored.
    soak.read_stores();
    // KMS keys: made, stored, retired, and those a kill left for the sweep.
    let billing = &soak.issuers[1];
    let stored_arns: BTreeSet<String> = crate::aws::emulator_call(
        soak.emulator.addr,
        "GetSecretValue",
        &json!({"SecretId": billing.keyset, "VersionStage": "AWSCURRENT"}),
    )
    .ok()
    .and_then(|answer| serde_json::from_str::<Value>(answer["SecretString"].as_str()?).ok())
    .map(|document| {
        document["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|key| key["kms_key_arn"].as_str().map(str::to_owned))
            .collect()
    })
    .unwrap_or_default();
    match kms_census(soak.emulator.addr, &billing.iss) {
        Ok((made, retired, enabled)) => {
            let left = enabled.difference(&stored_arns).count();
            soak.ledger.lock().unwrap().kms = Some((made, stored_arns.len(), retired, left));
        }
        Err(err) => soak
            .ledger
            .lock()
            .unwrap()
            .example(format!("KMS census: {err}")),
    }
    for node in &soak.nodes {
        let mut node = node.lock().unwrap();
        node.note_rss();
        let (name, peak) = (node.name.clone(), node.peak_rss_kib);
        let mut ledger = soak.ledger.lock().unwrap();
        ledger.short_leads += node.short_leads();
        ledger.peak_rss_kib.insert(name, peak);
    }
    let names: Vec<&str> = soak.issuers.iter().map(|spec| spec.iss.as_str()).collect();
    let ledger = soak.ledger.lock().unwrap();
    let (table, broken) = ledger.table(&names, seed, Duration::from_secs(seconds), EVERY, started);
    println!("{table}");
    assert!(
        broken.is_empty(),
        "must be zero and are not (the table is above): {broken:?}"
    );
    let issued: u64 = ledger.issued.values().sum();
    assert!(
        issued > seconds * 10,
        "only {issued} tokens issued in {seconds} s"
    );
    assert_eq!(
        ledger.kinds.len(),
        Fault::ALL.len(),
        "not every kind of fault was injected: {:?}",
        ledger.kinds
    );
}
