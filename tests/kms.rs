//! KMS custody (`keys.custody = "kms"`) against the KMS of the emulator that
//! `scripts/test` starts (named by `JWKD_TEST_SM_ENDPOINT`, as for Secrets
//! Manager): keys made in KMS on the timeline's schedule, tokens signed by
//! KMS `Sign` that jwkd-client and PyJWT verify across rotations, keys retired
//! in KMS when they leave the keyset, no private material anywhere, no key
//! pulled, and a KMS outage answered with 503 and reported by `/readyz`.
//!
//! The rotation and outage tests run in process ([`InProcess`]) on a manual
//! clock; the PyJWT one runs the binary on real time, as an operator would.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeZone as _, Utc};
use jwkd::kms::{Kms, Owner};
use jwkd_client::{RemoteJwks, SignError, SigningKeySource, Verifier};
use serde_json::{Value, json};

use crate::aws::proxy::{Mode, Proxy};
use crate::util::{Client, InProcess, Response, TestConfig, TestDir};

const AUD: &str = "payments";

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 1).unwrap()
}

/// The emulator's KMS at `endpoint`, with static test credentials.
fn kms(endpoint: SocketAddr) -> Kms {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "jwkd-tests"))
        .endpoint_url(format!("http://{endpoint}"))
        .timeout_config(jwkd::store::aws::timeout_config())
        .retry_config(jwkd::store::aws::retry_config())
        .build();
    Kms::with_config(config)
}

/// An issuer URL no other test (or earlier run on the same emulator) uses:
/// its KMS keys are told apart by it.
fn unique_issuer() -> String {
    format!("https://kms-{:016x}.test.example", rand::random::<u64>())
}

/// ES256 and RS256 under KMS custody at `endpoint`, rotating every 2 s; a
/// client of each family, an issuer client and an admin.
fn config(issuer: &str, endpoint: SocketAddr) -> TestConfig {
    TestConfig::fast()
        .algorithms(&["ES256", "RS256"])
        .set("keys", "custody", "kms")
        .set("keys", "x5c", false)
        .set("kms", "region", "us-east-1")
        .set("kms", "endpoint_url", format!("http://{endpoint}"))
        .issuer(issuer)
        .client(Client::new("orders", "orders-secret").audiences(&[AUD]))
        .client(
            Client::new("legacy", "legacy-secret")
                .audiences(&[AUD])
                .algorithm("RS256"),
        )
        .client(
            Client::new("minter", "minter-secret")
                .roles(&["issuer"])
                .audiences(&[AUD]),
        )
        .client(Client::new("root", "root-secret").roles(&["admin"]))
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn token(daemon: &InProcess, id: &str, secret: &str) -> Response {
    daemon.request(
        "POST",
        "/oauth2/token",
        &[
            ("Authorization", &basic(id, secret)),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials",
    )
}

fn signed(daemon: &InProcess, sub: &str) -> Response {
    daemon.request(
        "POST",
        "/v1/sign",
        &[
            ("Authorization", &basic("minter", "minter-secret")),
            ("Content-Type", "application/json"),
        ],
        json!({"sub": sub, "aud": AUD}).to_string().as_bytes(),
    )
}

fn header(token: &str) -> Value {
    let header = token.split('.').next().expect("a header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

fn system_time(at: DateTime<Utc>) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(at.timestamp_millis()).unwrap())
}

/// The stored document holds, for every key, its ARN and public JWK and no
/// private material; returns the ARNs of the keys not revoked.
fn stored_arns(document: &[u8]) -> BTreeSet<String> {
    let document: Value = serde_json::from_slice(document).unwrap();
    let mut arns = BTreeSet::new();
    for key in document["keys"].as_array().unwrap() {
        assert!(key.get("private_key").is_none(), "private material: {key}");
        let public = &key["public_jwk"];
        assert!(
            public.get("d").is_none() && public["kty"].is_string(),
            "{key}"
        );
        let arn = key["kms_key_arn"].as_str().expect("a KMS key ARN");
        if key.get("revoked_at").is_none() {
            arns.insert(arn.to_owned());
        }
    }
    arns
}

/// The ARNs of the keys tagged as `owner`'s that KMS has not scheduled for deletion.
fn live_arns(runtime: &tokio::runtime::Runtime, kms: &Kms, owner: &Owner) -> BTreeSet<String> {
    runtime
        .block_on(kms.keys_of(owner))
        .unwrap()
        .into_iter()
        .map(|key| key.arn)
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A KMS-custody issuer through four rotations per family on a manual clock:
/// every token of the token endpoint (ES256 and RS256) and of `/v1/sign`
/// verifies with jwkd-client; the keyset holds only ARNs and public JWKs; the
/// KMS keys alive are exactly the ones the keyset holds at every step (a key
/// that expires is retired in the pass that drops it, a revoked key at once);
/// the keys cannot be pulled.
#[test]
fn kms_custody_rotates_and_every_token_verifies() {
    let endpoint = crate::aws::emulator();
    let issuer = unique_issuer();
    let kms = kms(endpoint);
    let daemon =
        InProcess::start_with_kms(&config(&issuer, endpoint).build(), start(), kms.clone());
    let owner = Owner {
        issuer: issuer.clone(),
        keyset: "memory".into(),
    };
    let runtime = runtime();
    let base = format!("http://{}", daemon.addr());
    let mut kids = BTreeSet::new();
    for step in 0..9 {
        let at = system_time(daemon.now());
        // Made afresh each step: its cache runs on real time, which the manual clock outruns.
        let verifier = runtime.block_on(async {
            let jwks = RemoteJwks::builder(format!("{base}/.well-known/jwks.json"))
                .allow_http(true)
                .build()
                .unwrap();
            Verifier::builder(jwks)
                .issuer(&issuer)
                .audience(AUD)
                .build()
                .unwrap()
        });
        let mut tokens = Vec::new();
        for (id, secret, alg) in [
            ("orders", "orders-secret", "ES256"),
            ("legacy", "legacy-secret", "RS256"),
        ] {
            let response = token(&daemon, id, secret);
            assert_eq!(response.status, 200, "step {step}: {response}");
            let token = response.json()["access_token"].as_str().unwrap().to_owned();
            assert_eq!(header(&token)["alg"], alg);
            tokens.push(token);
        }
        let response = signed(&daemon, "user-1");
        assert_eq!(response.status, 200, "step {step}: {response}");
        tokens.push(response.json()["token"].as_str().unwrap().to_owned());
        for token in &tokens {
            runtime
                .block_on(verifier.verify_at::<Value>(token, at))
                .unwrap_or_else(|err| panic!("step {step}: {err}: {}", daemon.logs()));
            kids.insert(header(token)["kid"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            live_arns(&runtime, &kms, &owner),
            stored_arns(&daemon.document_of("default")),
            "step {step}: the KMS keys alive are the keys stored"
        );
        daemon.advance(Duration::from_secs(1));
    }
    assert!(
        kids.len() >= 6,
        "three keys per family should have signed: {kids:?}"
    );

    // Revoking the current ES256 key retires its KMS key at once.
    let victim = daemon
        .keys()
        .into_iter()
        .find(|key| key.alg == "ES256" && key.state == "current")
        .expect("a current ES256 key");
    let document: Value = serde_json::from_slice(&daemon.document_of("default")).unwrap();
    let arn = document["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == victim.kid.as_str())
        .and_then(|key| key["kms_key_arn"].as_str())
        .unwrap()
        .to_owned();
    let revoked = daemon.request(
        "POST",
        &format!("/v1/revoke/{}", victim.kid),
        &[("Authorization", &basic("root", "root-secret"))],
        b"",
    );
    assert_eq!(revoked.status, 200, "{revoked}");
    let err = runtime.block_on(kms.probe(&arn)).unwrap_err();
    assert!(err.to_string().contains("not enabled"), "{err}");
    assert_eq!(
        live_arns(&runtime, &kms, &owner),
        stored_arns(&daemon.document_of("default"))
    );

    // Nothing to pull, by construction; the issuer is told what to use instead.
    let pulled = daemon.request(
        "GET",
        "/v1/signing-keys",
        &[("Authorization", &basic("minter", "minter-secret"))],
        b"",
    );
    assert_eq!(pulled.status, 409, "{pulled}");
    assert_eq!(pulled.json()["error"], "keys_not_exportable");
    let err = runtime.block_on(async {
        let source =
            SigningKeySource::builder(format!("{base}/v1/signing-keys"), "minter", "minter-secret")
                .allow_http(true)
                .build()
                .unwrap();
        source.ready().await.unwrap_err()
    });
    match &err {
        SignError::NotExportable { advice } => assert!(advice.contains("/v1/sign"), "{advice}"),
        other => panic!("expected NotExportable, got {other:?}"),
    }
}

/// KMS unreachable: a token request is a 503 with `Retry-After`, `/readyz`
/// says KMS cannot sign, and both recover by themselves when KMS is back
/// (the rotator probes KMS on its next pass).
#[test]
fn a_kms_outage_is_a_503_and_readyz_says_so_until_kms_is_back() {
    let endpoint = crate::aws::emulator();
    let proxy = Proxy::start(endpoint);
    let issuer = unique_issuer();
    let config = config(&issuer, proxy.addr())
        .set("keys", "rotation_schedule", "0 3 * * *")
        .set("keys", "max_token_lifetime", "1h");
    let daemon = InProcess::start_with_kms(&config.build(), start(), kms(proxy.addr()));
    assert_eq!(token(&daemon, "orders", "orders-secret").status, 200);
    assert_eq!(daemon.get("/readyz").status, 200);

    proxy.set_mode(Mode::Drop);
    let refused = token(&daemon, "orders", "orders-secret");
    assert_eq!(refused.status, 503, "{refused}");
    assert_eq!(refused.json()["error"], "temporarily_unavailable");
    assert!(refused.header("retry-after").is_some(), "{refused}");
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 503, "{ready}");
    assert!(ready.text().contains("KMS cannot sign"), "{ready}");
    // The log says why, with KMS's own error.
    assert!(
        daemon.logs().contains("KMS cannot sign"),
        "{}",
        daemon.logs()
    );

    // Still down: a pass changes nothing.
    daemon.advance(Duration::from_secs(1));
    assert_eq!(daemon.get("/readyz").status, 503);

    proxy.set_mode(Mode::Forward);
    daemon.advance(Duration::from_secs(1));
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 200, "{ready}\n{}", daemon.logs());
    assert_eq!(token(&daemon, "orders", "orders-secret").status, 200);
    assert!(
        daemon.logs().contains("KMS signs again"),
        "{}",
        daemon.logs()
    );
}

/// A verifier nobody here wrote: PyJWT's `PyJWKClient` verifies tokens that
/// `jwkd serve` (the binary, on real time, with the SDK's credential chain)
/// signs through KMS, ES256 and RS256, across rotations; after a graceful
/// stop the KMS keys alive are exactly those of the stored keyset.
#[test]
fn pyjwt_verifies_kms_signed_tokens_across_rotations() {
    let endpoint = crate::aws::emulator();
    let issuer = unique_issuer();
    let dir = TestDir::new(
        &config(&issuer, endpoint)
            .set("keys", "max_token_lifetime", "4s")
            .set("issuer", "token_lifetime", "4s")
            .build(),
    );
    let mut cmd = crate::util::jwkd();
    crate::aws::replica::with_test_credentials(&mut cmd);
    let mut daemon = crate::util::Daemon::spawn_command(cmd, &dir.config_path());
    daemon.wait_listening(Duration::from_secs(30));
    daemon.wait_ready(Duration::from_secs(30));
    let url = format!("http://{}/.well-known/jwks.json", daemon.addr());
    let mut verifier = crate::interop::PyJwt::start(&url, AUD, &issuer);
    let mut kids = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(9);
    while Instant::now() < deadline {
        for (id, secret) in [("orders", "orders-secret"), ("legacy", "legacy-secret")] {
            let response = daemon.request(
                "POST",
                "/oauth2/token",
                &[
                    ("Authorization", &basic(id, secret)),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                b"grant_type=client_credentials",
            );
            assert_eq!(response.status, 200, "{response}");
            let token = response.json()["access_token"].as_str().unwrap().to_owned();
            let answer = verifier.verify(&token);
            assert!(
                answer.starts_with("ok "),
                "PyJWT rejected a {} token: {answer}\n---- daemon ----\n{}",
                header(&token)["alg"],
                daemon.stderr_text()
            );
            kids.insert(header(&token)["kid"].as_str().unwrap().to_owned());
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    drop(verifier);
    assert!(kids.len() >= 6, "only {} keys signed: {kids:?}", kids.len());
    // A graceful stop finishes the pass in progress, retirements included
    // (what a kill -9 leaves behind is the sweep's: custody::tests).
    let status = Command::new("kill")
        .args(["-TERM", &daemon.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert!(
        daemon.wait_exit(Duration::from_secs(15)).is_some(),
        "jwkd did not exit on SIGTERM"
    );
    let document = std::fs::read(dir.path().join("keyset.json")).unwrap();
    let owner = Owner {
        issuer,
        keyset: dir.path().join("keyset.json").display().to_string(),
    };
    assert_eq!(
        live_arns(&runtime(), &kms(endpoint), &owner),
        stored_arns(&document),
        "after the daemon stopped, the KMS keys alive are the keys stored"
    );
}

/// KMS black-holed (it accepts and never answers) when a rotation needs a
/// key: the pass ends within the deadlines (the SDK's 10 s per call, 20 s for
/// the keys of one change), long before systemd's 60 s watchdog; the old keys
/// stay published and `/readyz` says why; the next pass after KMS is back
/// makes the key.
#[test]
fn a_black_holed_kms_ends_a_rotation_pass_within_its_deadlines() {
    let endpoint = crate::aws::emulator();
    let proxy = Proxy::start(endpoint);
    let issuer = unique_issuer();
    let daemon = InProcess::start_with_kms(
        &config(&issuer, proxy.addr()).build(),
        start(),
        kms(proxy.addr()),
    );
    let before = daemon.keys();
    proxy.set_mode(Mode::BlackHole);
    // The next key activates: its successor is due, and KMS does not answer.
    let began = Instant::now();
    daemon.advance(Duration::from_secs(3));
    let took = began.elapsed();
    assert!(
        took < jwkd::custody::MAKE_DEADLINE + jwkd::custody::SETTLE_DEADLINE,
        "the pass took {took:?}"
    );
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 503, "{ready}");
    assert!(ready.text().contains("KMS could not make a key"), "{ready}");
    let kids: BTreeSet<String> = daemon.keys().into_iter().map(|key| key.kid).collect();
    assert!(
        before.iter().all(|key| kids.contains(&key.kid)),
        "no key was lost"
    );

    proxy.set_mode(Mode::Forward);
    daemon.advance(Duration::from_millis(500));
    assert_eq!(daemon.get("/readyz").status, 200, "{}", daemon.logs());
    // A successor per family.
    assert_eq!(daemon.keys().len(), before.len() + 2, "{:?}", daemon.keys());
}

/// A slow KMS does not eat into the lead: a key is published for the whole
/// lead before it signs, however long making it in KMS took. With every KMS
/// call 1.5 s late, making a key takes seconds; a decision taken before and
/// written after used to stamp the key as published when the decision was
/// taken, so it reached the store (and the replicas) with seconds of its lead
/// gone, or already signing (the soak saw PyJWT refuse such a key's token).
#[test]
fn a_slow_kms_does_not_shorten_the_lead() {
    let endpoint = crate::aws::emulator();
    let proxy = Proxy::start(endpoint);
    let issuer = unique_issuer();
    // Lead: 1 s max-age + 1 s skew + 1 s refresh = 3 s; a rotation every 6 s.
    let dir = TestDir::new(
        &TestConfig::fast()
            .set("keys", "custody", "kms")
            .set("keys", "x5c", false)
            .set("keys", "rotation_schedule", "*/6 * * * * *")
            .set("keys", "clock_skew", "1s")
            .set("store", "refresh_interval", "1s")
            .set("kms", "region", "us-east-1")
            .set("kms", "endpoint_url", format!("http://{}", proxy.addr()))
            .issuer(&issuer)
            .build(),
    );
    let lead = chrono::Duration::seconds(3);
    let mut cmd = crate::util::jwkd();
    crate::aws::replica::with_test_credentials(&mut cmd);
    let mut daemon = crate::util::Daemon::spawn_command(cmd, &dir.config_path());
    daemon.wait_listening(Duration::from_secs(30));
    daemon.wait_ready(Duration::from_secs(30));
    // From now on, every KMS call takes 1.5 s more: making a key, seconds.
    proxy.set_mode(Mode::Delay);
    // When each key was first seen stored, and when it activates.
    let mut seen: std::collections::BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)> =
        std::collections::BTreeMap::new();
    let mut first_read = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read(dir.path().join("keyset.json")) {
            let now = Utc::now();
            first_read.get_or_insert(now);
            let document: Value = serde_json::from_slice(&text).unwrap();
            for key in document["keys"].as_array().unwrap() {
                let activates =
                    crate::util::parse_utc(key["activates_at"].as_str().unwrap()).unwrap();
                seen.entry(key["kid"].as_str().unwrap().to_owned())
                    .or_insert((now, activates));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let first_read = first_read.expect("the keyset was written");
    // Every key but the first current one must have been stored for the lead
    // (less the polling's 50 ms) before it signs.
    let successors: Vec<_> = seen
        .iter()
        .filter(|(_, (stored, activates))| !(*stored == first_read && *activates <= first_read))
        .collect();
    assert!(
        successors.len() >= 2,
        "only {} successors in 20 s: {seen:?}\n{}",
        successors.len(),
        daemon.stderr_text()
    );
    let short: Vec<String> = successors
        .iter()
        .filter(|(_, (stored, activates))| {
            *activates - *stored < lead - chrono::Duration::milliseconds(100)
        })
        .map(|(kid, (stored, activates))| format!("{kid}: stored {stored}, signs from {activates}"))
        .collect();
    assert!(
        short.is_empty(),
        "keys published for less than the 3 s lead before signing:\n{}\n{}",
        short.join("\n"),
        daemon.stderr_text()
    );
}

/// One client flooding the token endpoint of a KMS issuer takes at most its
/// share of `kms.signs_per_second`'s queue: its excess is refused at once
/// (503, saying so), another client's tokens still come, and `/readyz` stays
/// 200, since KMS itself is fine (a refusal by jwkd's own pace used to mark
/// KMS as failing, so a burst took the daemon out of its load balancer).
#[test]
fn a_client_flooding_a_kms_issuer_gets_its_share_and_no_more() {
    const FLOODERS: usize = 24;
    let endpoint = crate::aws::emulator();
    let issuer = unique_issuer();
    let config = config(&issuer, endpoint)
        .set("keys", "rotation_schedule", "0 3 * * *")
        .set("keys", "max_token_lifetime", "1h");
    // 4 a second: 21 slots in the 5 s queue, 5 of them one client's share.
    let daemon =
        InProcess::start_with_kms(&config.build(), start(), kms(endpoint).signing_at_most(4));
    assert_eq!(token(&daemon, "orders", "orders-secret").status, 200);
    assert_eq!(token(&daemon, "legacy", "legacy-secret").status, 200);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (refused, others) = std::thread::scope(|scope| {
        let flood: Vec<_> = (0..FLOODERS)
            .map(|_| {
                let (daemon, stop) = (&daemon, &stop);
                scope.spawn(move || {
                    let mut refused = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let answer = token(daemon, "orders", "orders-secret");
                        if answer.status != 200 {
                            refused.push((answer.status, answer.text()));
                            // Back off a little, as Retry-After asks (not a whole second).
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    refused
                })
            })
            .collect();
        // Let the flood fill the queue, then ask as the other client.
        std::thread::sleep(Duration::from_secs(2));
        let mut others = Vec::new();
        for _ in 0..3 {
            let answer = token(&daemon, "legacy", "legacy-secret");
            let ready = daemon.get("/readyz");
            others.push((answer.status, answer.text(), ready.status, ready.text()));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let refused: Vec<_> = flood
            .into_iter()
            .flat_map(|flooder| flooder.join().expect("flooder"))
            .collect();
        (refused, others)
    });
    for (status, text, ready, ready_text) in &others {
        assert_eq!(*status, 200, "the other client was refused: {text}");
        assert_eq!(*ready, 200, "a flood made the daemon unready: {ready_text}");
    }
    assert!(
        !refused.is_empty(),
        "{FLOODERS} concurrent requests at 4 a second must overflow one client's share"
    );
    for (status, text) in &refused {
        assert_eq!(*status, 503, "{text}");
        let body: Value = serde_json::from_str(text).unwrap();
        let reason = body["error_description"].as_str().unwrap_or_default();
        assert!(
            reason.contains("client \"orders\"") && reason.contains("its share"),
            "refused for another reason than its share: {text}"
        );
    }
    println!(
        "{} of the flood refused for its share; the other client's 3 tokens came",
        refused.len()
    );
}
