//! TokenSource and SigningKeySource against a local server that follows CONTRACT §6.3
//! and §6.4 (the daemon's side of these endpoints is another issue).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use jwkd_client::{KeySet, SignError, SigningKeySource, TokenError, TokenSource, Verifier};
use serde_json::{Value, json};

use crate::common::{
    AUD, ISS, Reply, TestKey, TestServer, accepted, basic, claims, eventually, refused, rfc3339,
};

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

#[tokio::test]
async fn token_source_renews_before_expiry() {
    let (server, issued, _) = token_endpoint(2).await;
    let tokens = TokenSource::builder(server.url(TOKEN_PATH), "orders", "s3cr+t")
        .build()
        .unwrap();
    assert_eq!(tokens.token().await.unwrap().as_str(), "token-1");
    // Renewed at three quarters of its lifetime, before it expires.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let token = tokens.token().await.unwrap();
    assert_eq!(token.as_str(), "token-2");
    assert!(token.expires_in() > Duration::from_secs(1));
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn token_source_keeps_a_valid_token_through_an_endpoint_outage() {
    let (server, issued, failing) = token_endpoint(2).await;
    let tokens = TokenSource::builder(server.url(TOKEN_PATH), "orders", "s3cr+t")
        .build()
        .unwrap();
    assert_eq!(tokens.token().await.unwrap().as_str(), "token-1");
    *failing.lock().unwrap() = 503;
    tokio::time::sleep(Duration::from_millis(1550)).await;
    // Due for renewal, renewal fails, the token is still valid: it is returned.
    assert_eq!(tokens.token().await.unwrap().as_str(), "token-1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(tokens.token().await, Err(TokenError::Fetch(_))));
    *failing.lock().unwrap() = 0;
    assert_eq!(tokens.token().await.unwrap().as_str(), "token-2");
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

#[tokio::test]
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
    let issuer = SigningKeySource::builder(endpoint.server.url(KEYS_PATH), "issuer", "s3cret")
        .refresh_interval(Duration::from_millis(50))
        .backoff(Duration::from_millis(20), Duration::from_millis(50))
        .build()
        .unwrap();
    issuer.ready().await.unwrap();
    *endpoint.hangup.lock().unwrap() = true;
    assert!(eventually(Duration::from_secs(2), || issuer.last_error().is_some()).await);
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
    // A key with no deactivates_at keeps signing (the daemon pushed its end out).
    *endpoint.document.lock().unwrap() =
        json!({"current": entry(&current, now - Duration::from_secs(60), None), "next": null});
    *endpoint.hangup.lock().unwrap() = false;
    let pulls = issuer.pulls();
    assert!(eventually(Duration::from_secs(2), || issuer.pulls() > pulls).await);
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
