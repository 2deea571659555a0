//! TokenSource and SigningKeySource against a local server that follows CONTRACT §6.3
//! and §6.4 (the daemon's side of these endpoints is another issue).
//!
//! Renewal, retry and pull timers run on tokio's paused clock (see `common`), with
//! assertions at exact instants. Key activation follows `SystemTime`, which paused
//! time does not move: those tests use the `_at(now)` forms.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use jwkd_client::{
    FetchError, KeySet, SignError, SigningKeySource, TokenError, TokenSource, Verifier,
};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until};

use crate::common::{
    AUD, ISS, Reply, TestKey, TestServer, accepted, basic, claims, refused, rfc3339,
};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

const TOKEN_PATH: &str = "/oauth2/token";
const KEYS_PATH: &str = "/v1/signing-keys";

/// A token endpoint: `orders`/`s3cr+t` may get tokens for `payments`.
async fn token_endpoint(expires_in: u64) -> (TestServer, Arc<AtomicU64>, Arc<Mutex<u16>>) {
    let issued = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(Mutex::new(0u16));
    let server = TestServer::start({
        let issued = Arc::clone(&issued);
        let failing = Arc::clone(&failing);
        move |request| {
            let fail = *failing.lock().unwrap();
            if fail != 0 {
                return Reply::status(fail);
            }
            let form = request.form();
            let credentials_ok = match request.header("authorization") {
                Some(header) => header == basic("orders", "s3cr%2Bt"),
                None => {
                    form.get("client_id").map(String::as_str) == Some("orders")
                        && form.get("client_secret").map(String::as_str) == Some("s3cr+t")
                }
            };
            if request.method != "POST" || request.path != TOKEN_PATH {
                return Reply::status(404);
            }
            if !credentials_ok {
                return Reply::json(
                    401,
                    &json!({"error": "invalid_client", "error_description": "unknown client or wrong secret"}),
                );
            }
            if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
                return Reply::json(400, &json!({"error": "unsupported_grant_type"}));
            }
            if form.get("audience").is_some_and(|audience| audience != AUD) {
                return Reply::json(400, &json!({"error": "invalid_target"}));
            }
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::json(
                200,
                &json!({
                    "access_token": format!("token-{n}"),
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                    "scope": form.get("scope").cloned().unwrap_or_default(),
                }),
            )
        }
    })
    .await;
    (server, issued, failing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_source_caches_and_concurrent_callers_share_one_request() {
    let (server, issued, _) = token_endpoint(300).await;
    let tokens = TokenSource::builder(server.url(TOKEN_PATH), "orders", "s3cr+t")
        .audience(AUD)
        .scope("payments:write")
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let tokens = tokens.clone();
            tokio::spawn(async move { tokens.token().await })
        })
        .collect();
    for task in tasks {
        let token = task.await.unwrap().unwrap();
        assert_eq!(token.as_str(), "token-1");
        assert_eq!(token.authorization(), "Bearer token-1");
        assert_eq!(token.scope(), Some("payments:write"));
    }
    assert_eq!(tokens.token().await.unwrap().as_str(), "token-1");
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    let request = &server.requests()[0];
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form = request.form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["audience"], AUD);
    assert_eq!(form["scope"], "payments:write");
    assert!(
        !form.contains_key("client_secret"),
        "secret sent in the body"
    );
    // The Debug output never shows the token.
    assert!(!format!("{:?}", tokens.token().await.unwrap()).contains("token-1"));
}

#[tokio::test(start_paused = true)]
async fn token_source_renews_before_expiry() {
    let (server, issued, _) = token_endpoint(100).await;
    let tokens = TokenSource::builder(server.url(TOKEN_PATH), "orders", "s3cr+t")
        .http_client(server.local_client())
        .build()
        .unwrap();
    let start = Instant::now();
    let token = tokens.token().await.unwrap();
    assert_eq!(token.as_str(), "token-1");
    assert_eq!(token.expires_in(), 100 * SECOND);
    // Renewed at three quarters of its lifetime, 25 s before it expires.
    sleep_until(start + 75 * SECOND - MS).await;
    let token = tokens.token().await.unwrap();
    assert_eq!(token.as_str(), "token-1");
    assert_eq!(token.expires_in(), 25 * SECOND + MS);
    sleep_until(start + 75 * SECOND).await;
    let token = tokens.token().await.unwrap();
    assert_eq!(token.as_str(), "token-2");
    assert_eq!(token.expires_in(), 100 * SECOND);
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn token_source_keeps_a_valid_token_through_an_endpoint_outage() {
    let (server, issued, failing) = token_endpoint(100).await;
    let tokens = TokenSource::builder(server.url(TOKEN_PATH), "orders", "s3cr+t")
        .http_client(server.local_client())
        .build()
        .unwrap();
    let start = Instant::now();
    assert_eq!(tokens.token().await.unwrap().as_str(), "token-1");
    *failing.lock().unwrap() = 503;
    let token_at = |at: Duration| {
        let tokens = tokens.clone();
        async move {
            sleep_until(start + at).await;
            tokens.token().await.map(|token| token.as_str().to_owned())
        }
    };
    let requests = || server.requests().len();
    // Due for renewal at 75 s; renewal fails; the token is still valid: it is returned.
    assert_eq!(token_at(75 * SECOND).await.unwrap(), "token-1");
    assert_eq!(requests(), 2);
    // For 2 s after a failure, callers get the cached token without a request...
    assert_eq!(token_at(77 * SECOND - MS).await.unwrap(), "token-1");
    assert_eq!(requests(), 2);
    // ...then the next call tries again.
    assert_eq!(token_at(77 * SECOND).await.unwrap(), "token-1");
    assert_eq!(requests(), 3);
    // The token is handed out until a tenth of its lifetime (at most 10 s) before it
    // expires, and not after.
    assert_eq!(token_at(90 * SECOND - MS).await.unwrap(), "token-1");
    assert_eq!(requests(), 4);
    assert_eq!(
        token_at(90 * SECOND).await.unwrap_err(),
        TokenError::Fetch(FetchError::Status { status: 503 })
    );
    assert_eq!(requests(), 5);
    *failing.lock().unwrap() = 0;
    let token = tokens.token().await.unwrap();
    assert_eq!(token.as_str(), "token-2");
    assert_eq!(token.expires_in(), 100 * SECOND);
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn token_source_reports_rfc6749_errors_and_supports_client_secret_post() {
    let (server, _, _) = token_endpoint(300).await;
    let wrong = TokenSource::builder(server.url(TOKEN_PATH), "orders", "wrong")
        .build()
        .unwrap();
    assert_eq!(
        wrong.token().await.unwrap_err(),
        TokenError::Rejected {
            status: 401,
            error: "invalid_client".into(),
            description: Some("unknown client or wrong secret".into()),
        }
    );
    let other_audience = TokenSource::builder(server.url(TOKEN_PATH), "orders", "s3cr+t")
        .audience("billing")
        .build()
        .unwrap();
    assert!(matches!(
        other_audience.token().await,
        Err(TokenError::Rejected { status: 400, ref error, .. }) if error == "invalid_target"
    ));
    let post = TokenSource::builder(server.url(TOKEN_PATH), "orders", "s3cr+t")
        .client_secret_post(true)
        .build()
        .unwrap();
    assert!(post.token().await.is_ok());
    let request = server.requests().pop().unwrap();
    assert!(request.header("authorization").is_none());
    assert_eq!(request.form()["client_secret"], "s3cr+t");
}

/// A `/v1/signing-keys` endpoint serving `current` and `next` with the given times.
struct KeysEndpoint {
    server: TestServer,
    document: Arc<Mutex<Value>>,
    hangup: Arc<Mutex<bool>>,
    pulls: Arc<AtomicUsize>,
}

fn entry(key: &TestKey, activates_at: SystemTime, deactivates_at: Option<SystemTime>) -> Value {
    json!({
        "kid": key.kid,
        "alg": key.alg,
        "activates_at": rfc3339(activates_at),
        "deactivates_at": deactivates_at.map(rfc3339),
        "jwk": key.private,
    })
}

async fn keys_endpoint(document: Value) -> KeysEndpoint {
    let document = Arc::new(Mutex::new(document));
    let hangup = Arc::new(Mutex::new(false));
    let pulls = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start({
        let document = Arc::clone(&document);
        let hangup = Arc::clone(&hangup);
        let pulls = Arc::clone(&pulls);
        move |request| {
            if *hangup.lock().unwrap() {
                return Reply::Hangup;
            }
            if request.path != KEYS_PATH {
                return Reply::status(404);
            }
            match request.header("authorization") {
                Some("Bearer issuer:s3cret") => {}
                Some("Bearer verifier:s3cret") => {
                    return Reply::json(403, &json!({"error": "forbidden"}));
                }
                _ => return Reply::json(401, &json!({"error": "invalid_client"})),
            }
            pulls.fetch_add(1, Ordering::SeqCst);
            Reply::json(200, &document.lock().unwrap())
        }
    })
    .await;
    KeysEndpoint {
        server,
        document,
        hangup,
        pulls,
    }
}

fn verifier_for(keys: &[&TestKey]) -> Verifier {
    let document = json!({"keys": keys.iter().map(|key| key.public.clone()).collect::<Vec<_>>()});
    let keys = KeySet::from_json(document.to_string().as_bytes()).unwrap();
    Verifier::builder(keys)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap()
}

#[tokio::test]
async fn signing_key_source_signs_with_every_algorithm() {
    let keys = [
        TestKey::es256("es256"),
        TestKey::es384("es384"),
        TestKey::ed25519("eddsa"),
        TestKey::rs256_from("rs256", 1),
    ];
    let verifier = verifier_for(&keys.iter().collect::<Vec<_>>());
    let past = SystemTime::now() - Duration::from_secs(60);
    for key in &keys {
        let endpoint =
            keys_endpoint(json!({"current": entry(key, past, None), "next": null})).await;
        let issuer = SigningKeySource::builder(endpoint.server.url(KEYS_PATH), "issuer", "s3cret")
            .build()
            .unwrap();
        issuer.ready().await.unwrap();
        let token = issuer.sign(&claims()).unwrap();
        let verified = verifier.verify::<Value>(&token).await.unwrap();
        assert_eq!(verified.kid(), key.kid);
        assert_eq!(issuer.current_kid().as_deref(), Some(key.kid.as_str()));
    }
}

#[tokio::test]
async fn signing_key_source_switches_to_next_at_activates_at_on_its_own_clock() {
    let current = TestKey::es256("current");
    let next = TestKey::ed25519("next");
    let verifier = verifier_for(&[&current, &next]);
    let now = SystemTime::now();
    let switch = now + Duration::from_secs(30);
    let endpoint = keys_endpoint(json!({
        "current": entry(&current, now - Duration::from_secs(60), Some(switch)),
        "next": entry(&next, switch, None),
    }))
    .await;
    let issuer = SigningKeySource::builder(endpoint.server.url(KEYS_PATH), "issuer", "s3cret")
        .refresh_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    issuer.ready().await.unwrap();
    assert_eq!(issuer.current_kid_at(now).as_deref(), Some("current"));
    assert_eq!(
        issuer
            .current_kid_at(switch - Duration::from_secs(1))
            .as_deref(),
        Some("current")
    );
    assert_eq!(issuer.current_kid_at(switch).as_deref(), Some("next"));
    let later = switch + Duration::from_secs(5);
    let token = issuer.sign_at(&claims(), later).unwrap();
    assert_eq!(
        verifier.verify::<Value>(&token).await.unwrap().kid(),
        "next"
    );
    // No pull was needed for the switch.
    assert_eq!(endpoint.pulls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn signing_key_source_keeps_signing_through_an_outage_until_deactivates_at() {
    let current = TestKey::es256("current");
    let verifier = verifier_for(&[&current]);
    let now = SystemTime::now();
    let deactivates_at = now + Duration::from_secs(600);
    let endpoint = keys_endpoint(json!({
        "current": entry(&current, now - Duration::from_secs(60), Some(deactivates_at)),
        "next": null,
    }))
    .await;
    let refresh_interval = 60 * SECOND;
    let backoff_max = 5 * SECOND;
    let issuer = SigningKeySource::builder(endpoint.server.url(KEYS_PATH), "issuer", "s3cret")
        .refresh_interval(refresh_interval)
        .backoff(SECOND, backoff_max)
        .http_client(endpoint.server.local_client())
        .build()
        .unwrap();
    issuer.ready().await.unwrap();
    let pulled = Instant::now();
    *endpoint.hangup.lock().unwrap() = true;
    // The next pull is a refresh interval later, and fails.
    sleep_until(pulled + refresh_interval - MS).await;
    assert_eq!(issuer.last_error(), None);
    sleep_until(pulled + refresh_interval + MS).await;
    assert!(
        matches!(issuer.last_error(), Some(SignError::Fetch(_))),
        "{:?}",
        issuer.last_error()
    );
    assert_eq!(issuer.pulls(), 1);
    let token = issuer.sign(&claims()).unwrap();
    accepted(&verifier, &token).await;
    assert!(
        issuer
            .sign_at(&claims(), deactivates_at - Duration::from_secs(1))
            .is_ok()
    );
    assert_eq!(
        issuer.sign_at(&claims(), deactivates_at).unwrap_err(),
        SignError::NoActiveKey
    );
    // A key with no deactivates_at keeps signing (the daemon pushed its end out). The
    // retries after the failure come at most the longest backoff apart.
    *endpoint.document.lock().unwrap() =
        json!({"current": entry(&current, now - Duration::from_secs(60), None), "next": null});
    *endpoint.hangup.lock().unwrap() = false;
    sleep_until(pulled + refresh_interval + backoff_max + MS).await;
    assert_eq!(issuer.pulls(), 2);
    assert_eq!(issuer.last_error(), None);
    assert!(
        issuer
            .sign_at(&claims(), deactivates_at + Duration::from_secs(3600))
            .is_ok()
    );
}

#[tokio::test]
async fn signing_key_source_reports_refusals_and_bad_documents() {
    let key = TestKey::es256("k1");
    let past = SystemTime::now() - Duration::from_secs(60);
    let endpoint = keys_endpoint(json!({"current": entry(&key, past, None), "next": null})).await;
    let url = endpoint.server.url(KEYS_PATH);

    let wrong = SigningKeySource::builder(&url, "issuer", "wrong")
        .build()
        .unwrap();
    assert_eq!(wrong.ready().await, Err(SignError::Refused { status: 401 }));
    assert!(matches!(
        wrong.sign(&claims()),
        Err(SignError::NotReady {
            last_error: Some(_)
        })
    ));
    let no_role = SigningKeySource::builder(&url, "verifier", "s3cret")
        .build()
        .unwrap();
    assert_eq!(
        no_role.ready().await,
        Err(SignError::Refused { status: 403 })
    );

    // The JWK does not belong to the entry's kid.
    let mut mismatched = entry(&key, past, None);
    mismatched["kid"] = json!("another-kid");
    *endpoint.document.lock().unwrap() = json!({"current": mismatched, "next": null});
    let issuer = SigningKeySource::builder(&url, "issuer", "s3cret")
        .build()
        .unwrap();
    assert!(matches!(
        issuer.ready().await,
        Err(SignError::InvalidResponse { .. })
    ));
    // A private key whose public half does not match.
    let other = TestKey::es256("k1");
    let mut forged = entry(&key, past, None);
    forged["jwk"]["d"] = other.private["d"].clone();
    *endpoint.document.lock().unwrap() = json!({"current": forged, "next": null});
    let issuer = SigningKeySource::builder(&url, "issuer", "s3cret")
        .build()
        .unwrap();
    assert!(matches!(
        issuer.ready().await,
        Err(SignError::InvalidResponse { .. })
    ));

    *endpoint.document.lock().unwrap() = json!({"current": entry(&key, past, None), "next": null});
    let issuer = SigningKeySource::builder(&url, "issuer", "s3cret")
        .build()
        .unwrap();
    issuer.ready().await.unwrap();
    assert!(matches!(
        issuer.sign(&json!(["not", "an", "object"])),
        Err(SignError::InvalidClaims { .. })
    ));
    // Debug never shows key material.
    let debug = format!("{issuer:?}");
    assert!(
        !debug.contains(key.private["d"].as_str().unwrap()),
        "{debug}"
    );
}

#[tokio::test]
async fn an_issuer_signed_token_verifies_and_an_expired_one_is_refused() {
    // End to end through the crate's own pieces: an issuer signs with a pulled key.
    let key = TestKey::es256("k1");
    let past = SystemTime::now() - Duration::from_secs(60);
    let endpoint = keys_endpoint(json!({"current": entry(&key, past, None), "next": null})).await;
    let issuer = SigningKeySource::builder(endpoint.server.url(KEYS_PATH), "issuer", "s3cret")
        .typ("at+jwt")
        .build()
        .unwrap();
    issuer.ready().await.unwrap();
    let verifier = verifier_for(&[&key]);
    accepted(&verifier, &issuer.sign(&claims()).unwrap()).await;
    let mut expired = claims();
    expired["exp"] = json!(1);
    assert!(matches!(
        refused(&verifier, &issuer.sign(&expired).unwrap()).await,
        jwkd_client::Error::Expired { .. }
    ));
}

#[tokio::test]
async fn an_absurd_expires_in_saturates_instead_of_panicking() {
    let (server, issued, _) = token_endpoint(u64::MAX).await;
    let tokens = TokenSource::builder(server.url(TOKEN_PATH), "orders", "s3cr+t")
        .build()
        .unwrap();
    let token = tokens.token().await.unwrap();
    assert_eq!(token.as_str(), "token-1");
    assert!(token.expires_in() > Duration::from_secs(86_400 * 365));
    assert_eq!(tokens.token().await.unwrap().as_str(), "token-1");
    assert_eq!(issued.load(Ordering::SeqCst), 1);
}
