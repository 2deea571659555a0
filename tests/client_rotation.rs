//! jwkd-client against the real daemon through 20+ rotations: verifier tasks, a
//! `TokenSource` caller and a `SigningKeySource` issuer under steady load, and not
//! one valid token rejected (issue 4).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jwkd_client::{RemoteJwks, SigningKeySource, TokenSource, Verifier};
use serde_json::{Value, json};

use crate::util::{Client, TestConfig, TestDir};

#[test]
fn no_valid_token_is_rejected_through_twenty_rotations() {
    // Rotations every 2 s; a key is published 1.5 s (jwks_max_age +
    // refresh_interval) before it signs and kept 3 s (max_token_lifetime) after
    // it stops.
    let dir = TestDir::new(
        &TestConfig::fast()
            .set("keys", "x5c", false)
            .issuer("https://jwkd.test")
            .set("issuer", "token_lifetime", "3s")
            .client(Client::new("caller", "caller-secret").audiences(&["payments"]))
            .client(Client::new("issuer", "issuer-secret").roles(&["issuer"]))
            .build(),
    );
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let base = format!("http://{}", daemon.addr());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async move {
        // The verifier refreshes on the daemon's max-age (1 s here, so the floor
        // comes down from its 30 s default) and never needs an unknown-kid fetch.
        let jwks = RemoteJwks::builder(format!("{base}/.well-known/jwks.json"))
            .ttl_bounds(Duration::from_millis(500), Duration::from_secs(60))
            .unknown_kid_cooldown(Duration::from_secs(1))
            .build()
            .unwrap();
        let verifier = Arc::new(
            Verifier::builder(jwks.clone())
                .issuer("https://jwkd.test")
                .issuer("https://issuer.test")
                .audience("payments")
                .build()
                .unwrap(),
        );
        let tokens = Arc::new(
            TokenSource::builder(format!("{base}/oauth2/token"), "caller", "caller-secret")
                .audience("payments")
                .build()
                .unwrap(),
        );
        let issuer = Arc::new(
            SigningKeySource::builder(format!("{base}/v1/signing-keys"), "issuer", "issuer-secret")
                .refresh_interval(Duration::from_millis(500))
                .build()
                .unwrap(),
        );
        issuer.ready().await.unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let verified = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for worker in 0..4 {
            let (verifier, tokens, issuer, stop, verified) = (
                verifier.clone(),
                tokens.clone(),
                issuer.clone(),
                stop.clone(),
                verified.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut failures: Vec<String> = Vec::new();
                let mut kids = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let token = if worker % 2 == 0 {
                        match tokens.token().await {
                            Ok(token) => token.as_str().to_owned(),
                            Err(err) => {
                                failures.push(format!("TokenSource: {err}"));
                                continue;
                            }
                        }
                    } else {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap()
                            .as_secs();
                        let claims = json!({
                            "iss": "https://issuer.test", "sub": "worker", "aud": "payments",
                            "iat": now, "exp": now + 2,
                        });
                        match issuer.sign(&claims) {
                            Ok(token) => token,
                            Err(err) => {
                                failures.push(format!("SigningKeySource: {err}"));
                                continue;
                            }
                        }
                    };
                    match verifier.verify::<Value>(&token).await {
                        Ok(claims) => {
                            kids.insert(claims.kid().to_owned());
                            verified.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => failures.push(format!("worker {worker}: {err}")),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (failures, kids)
            }));
        }
        // 21 rotations at 2 s each, plus the start.
        tokio::time::sleep(Duration::from_secs(44)).await;
        stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        let mut kids = BTreeSet::new();
        for worker in workers {
            let (worker_failures, worker_kids) = worker.await.unwrap();
            failures.extend(worker_failures);
            kids.extend(worker_kids);
        }
        (
            failures,
            kids,
            verified.load(Ordering::Relaxed),
            jwks.stats(),
        )
    });
    let (failures, kids, verified, stats) = report;
    assert!(
        failures.is_empty(),
        "{} rejections out of {} verifications, first: {:?}\n---- daemon ----\n{}",
        failures.len(),
        verified + failures.len() as u64,
        failures.iter().take(5).collect::<Vec<_>>(),
        daemon.stderr_text()
    );
    assert!(
        kids.len() >= 20,
        "only {} signing keys seen: not 20 rotations",
        kids.len()
    );
    assert!(verified > 1000, "only {verified} verifications under load");
    eprintln!(
        "{verified} tokens verified across {} keys; JWKS fetch stats: {stats:?}",
        kids.len()
    );
}
