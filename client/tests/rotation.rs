//! Rotation end to end against a simulated daemon that follows the key timeline of
//! CONTRACT §4 with a 250 ms rotation gap: several verifiers, a TokenSource caller and a
//! SigningKeySource issuer under steady load through 20 rotations, with zero rejections.
//! (The same test against the real daemon binary needs its token and signing-key
//! endpoints, which are another issue.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jwkd_client::{RemoteJwks, SigningKeySource, TokenSource, Verifier};
use serde_json::{Value, json};

use crate::common::{AUD, ISS, Reply, TestKey, TestServer, claims, rfc3339};

const GAP: Duration = Duration::from_millis(250);
const ROTATIONS: u32 = 20;
/// `expires_in` of the token endpoint; keys stay published this long after they retire.
const TOKEN_LIFETIME: u64 = 1;

struct Timeline {
    start: SystemTime,
    keys: Vec<TestKey>,
}

impl Timeline {
    fn activates_at(&self, index: usize) -> SystemTime {
        self.start + GAP * index as u32
    }

    fn current(&self, now: SystemTime) -> usize {
        let elapsed = now.duration_since(self.start).unwrap_or_default();
        ((elapsed.as_millis() / GAP.as_millis()) as usize).min(self.keys.len() - 2)
    }

    /// Published from two gaps before activation until the token lifetime (plus a gap)
    /// after deactivation, as jwkd's next/retired states do.
    fn published(&self, now: SystemTime) -> Vec<Value> {
        (0..self.keys.len())
            .filter(|&index| {
                let from = self
                    .activates_at(index)
                    .checked_sub(GAP * 2)
                    .unwrap_or(UNIX_EPOCH);
                let until =
                    self.activates_at(index + 1) + Duration::from_secs(TOKEN_LIFETIME) + GAP;
                from <= now && now < until
            })
            .map(|index| self.keys[index].public.clone())
            .collect()
    }

    fn entry(&self, index: usize) -> Value {
        json!({
            "kid": self.keys[index].kid,
            "alg": "ES256",
            "activates_at": rfc3339(self.activates_at(index)),
            "deactivates_at": rfc3339(self.activates_at(index + 1)),
            "jwk": self.keys[index].private,
        })
    }
}

fn daemon(timeline: &Timeline, request: &crate::common::Request) -> Reply {
    let now = SystemTime::now();
    let current = timeline.current(now);
    match request.path.as_str() {
        "/.well-known/jwks.json" => Reply::Full {
            status: 200,
            headers: vec![("cache-control".into(), "public, max-age=0".into())],
            body: json!({"keys": timeline.published(now)})
                .to_string()
                .into_bytes(),
        },
        "/v1/signing-keys" => Reply::json(
            200,
            &json!({"current": timeline.entry(current), "next": timeline.entry(current + 1)}),
        ),
        "/oauth2/token" => {
            let iat = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
            let token = timeline.keys[current].token(&json!({
                "iss": ISS, "sub": "orders", "client_id": "orders", "aud": AUD,
                "iat": iat, "nbf": iat, "exp": iat + TOKEN_LIFETIME + 1, "jti": format!("{iat}"),
            }));
            Reply::json(
                200,
                &json!({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME}),
            )
        }
        _ => Reply::status(404),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rotations_under_load_reject_no_valid_token() {
    // Whole milliseconds, so the RFC 3339 times the endpoint writes are exact.
    let start_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let timeline = Arc::new(Timeline {
        start: UNIX_EPOCH + Duration::from_millis(start_millis) - GAP * 4,
        keys: (0..ROTATIONS as usize + 8)
            .map(|index| TestKey::es256(&format!("key-{index}")))
            .collect(),
    });
    let server = TestServer::start({
        let timeline = Arc::clone(&timeline);
        move |request| daemon(&timeline, request)
    })
    .await;

    let issuer = SigningKeySource::builder(server.url("/v1/signing-keys"), "issuer", "s3cret")
        .refresh_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    issuer.ready().await.unwrap();
    let tokens = TokenSource::builder(server.url("/oauth2/token"), "orders", "s3cret")
        .build()
        .unwrap();
    let mut verifiers = Vec::new();
    for _ in 0..2 {
        let jwks = RemoteJwks::builder(server.url("/.well-known/jwks.json"))
            .ttl_bounds(Duration::from_millis(100), Duration::from_millis(100))
            .build()
            .unwrap();
        jwks.ready().await.unwrap();
        verifiers.push(
            Verifier::builder(jwks)
                .issuer(ISS)
                .audience(AUD)
                .build()
                .unwrap(),
        );
    }

    let deadline = tokio::time::Instant::now() + GAP * (ROTATIONS + 1);
    let mut workers = Vec::new();
    for worker in 0..3 {
        let verifiers = verifiers.clone();
        let issuer = issuer.clone();
        let tokens = tokens.clone();
        workers.push(tokio::spawn(async move {
            let mut kids = HashSet::new();
            let mut checked = 0;
            let mut rejections = Vec::new();
            while tokio::time::Instant::now() < deadline {
                let issued = issuer.sign(&claims()).unwrap();
                let fetched = tokens.token().await.unwrap();
                for token in [issued.as_str(), fetched.as_str()] {
                    let verifier = &verifiers[(worker + checked) % verifiers.len()];
                    match verifier.verify::<Value>(token).await {
                        Ok(verified) => {
                            kids.insert(verified.kid().to_owned());
                        }
                        Err(err) => rejections.push(err.to_string()),
                    }
                    checked += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (kids, checked, rejections)
        }));
    }
    let mut kids = HashSet::new();
    let mut checked = 0;
    for worker in workers {
        let (worker_kids, worker_checked, rejections) = worker.await.unwrap();
        assert!(
            rejections.is_empty(),
            "valid tokens rejected: {rejections:?}"
        );
        kids.extend(worker_kids);
        checked += worker_checked;
    }
    assert!(
        kids.len() >= ROTATIONS as usize,
        "only {} keys used",
        kids.len()
    );
    assert!(checked > 300, "only {checked} tokens checked");
}
