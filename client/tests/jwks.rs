//! RemoteJwks behaviour against a real server: coalescing, cooldown, outage, freshness,
//! and HTTP hygiene (size cap, deadline, redirects, schemes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jwkd_client::{
    BuildError, Error, FetchError, JwksError, RemoteJwks, SkipReason, Status, Verifier,
};
use serde_json::{Value, json};

use crate::common::{
    AUD, JwksServer, Mode, TestKey, accepted, claims, eventually, random_u64, refused,
};

const MS: Duration = Duration::from_millis(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_verifications_of_a_new_kid_cause_one_fetch() {
    let old = TestKey::es256("old");
    let new = TestKey::es256("new");
    let server = JwksServer::start(vec![old.public.clone()]).await;
    let (jwks, verifier) = server.verifier().await;
    let before = server.fetches();
    // The daemon published a key this verifier has not seen yet.
    server.push_key(new.public.clone());
    let token = Arc::new(new.token(&claims()));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let verifier = verifier.clone();
            let token = Arc::clone(&token);
            tokio::spawn(async move { verifier.verify::<Value>(&token).await })
        })
        .collect();
    for task in tasks {
        let result = task.await.unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
    assert_eq!(server.fetches() - before, 1);
    assert_eq!(jwks.stats().kid_refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_verifications_of_an_unknown_kid_cause_one_fetch() {
    let known = TestKey::es256("known");
    let stranger = TestKey::es256("stranger");
    let server = JwksServer::start(vec![known.public.clone()]).await;
    let (_jwks, verifier) = server.verifier().await;
    let before = server.fetches();
    let token = Arc::new(stranger.token(&claims()));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let verifier = verifier.clone();
            let token = Arc::clone(&token);
            tokio::spawn(async move { verifier.verify::<Value>(&token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap_err(),
            Error::UnknownKid {
                kid: "stranger".into()
            }
        );
    }
    assert_eq!(server.fetches() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kid_flood_over_ten_cooldowns_fetches_at_most_ten_times_while_valid_tokens_verify() {
    let key = TestKey::es256("valid");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let cooldown = 300 * MS;
    let (jwks, verifier) = server
        .verifier_with(
            server
                .builder()
                .unknown_kid_cooldown(cooldown)
                .refresh_wait(500 * MS),
        )
        .await;
    let valid = key.token(&claims());
    let before = server.fetches();
    let start = Instant::now();
    let mut flood = 0;
    // Ten cooldowns, less a margin for scheduling delays at the end.
    while start.elapsed() < cooldown * 10 - 150 * MS {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let kid = format!("random-{}", random_u64());
                let token = key.sign_with_header(&json!({"alg": "ES256", "kid": kid}), &claims());
                let verifier = verifier.clone();
                tokio::spawn(async move { (kid, verifier.verify::<Value>(&token).await) })
            })
            .collect();
        let started = Instant::now();
        accepted(&verifier, &valid).await;
        // Well under refresh_wait: a known kid never waits for a refresh.
        assert!(
            started.elapsed() < 400 * MS,
            "a valid token waited on the flood"
        );
        for task in tasks {
            let (kid, result) = task.await.unwrap();
            assert_eq!(result.unwrap_err(), Error::UnknownKid { kid });
            flood += 1;
        }
    }
    tokio::time::sleep(100 * MS).await;
    let fetches = server.fetches() - before;
    assert!(
        flood > 500,
        "the flood was too small to mean anything: {flood}"
    );
    assert!(
        (1..=10).contains(&fetches),
        "{fetches} fetches for {flood} random kids"
    );
    assert!(jwks.stats().kid_refreshes <= 10, "{:?}", jwks.stats());
    assert!(jwks.stats().cooldown_denials > 0, "{:?}", jwks.stats());
}

#[tokio::test]
async fn outage_serves_the_last_good_set_until_max_stale_then_fails_closed_then_recovers() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_max_age(0);
    let (jwks, verifier) = server
        .verifier_with(
            server
                .builder()
                .ttl_bounds(200 * MS, 200 * MS)
                .max_stale(800 * MS),
        )
        .await;
    let token = key.token(&claims());
    accepted(&verifier, &token).await;

    server.set_mode(Mode::Status(503));
    assert!(
        eventually(Duration::from_secs(2), || matches!(
            jwks.status(),
            Status::Stale { .. }
        ))
        .await
    );
    accepted(&verifier, &token).await;
    let Status::Stale { last_error, .. } = jwks.status() else {
        panic!("{}", jwks.status());
    };
    assert_eq!(
        last_error,
        Some(JwksError::Fetch(FetchError::Status { status: 503 }))
    );

    assert!(
        eventually(Duration::from_secs(3), || matches!(
            jwks.status(),
            Status::Unavailable { .. }
        ))
        .await
    );
    let error = refused(&verifier, &token).await;
    assert_eq!(
        error,
        Error::KeysUnavailable {
            last_error: Some(JwksError::Fetch(FetchError::Status { status: 503 }))
        }
    );
    assert!(error.is_keys_unavailable());

    server.set_mode(Mode::Normal);
    assert!(
        eventually(Duration::from_secs(3), || matches!(
            jwks.status(),
            Status::Fresh { .. }
        ))
        .await
    );
    accepted(&verifier, &token).await;
}

#[tokio::test]
async fn garbage_or_an_empty_set_never_replaces_the_last_good_one() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_max_age(0);
    let (jwks, verifier) = server
        .verifier_with(server.builder().ttl_bounds(100 * MS, 100 * MS))
        .await;
    let token = key.token(&claims());

    server.set_mode(Mode::Garbage);
    let failures = jwks.stats().failures;
    assert!(
        eventually(Duration::from_secs(2), || jwks.stats().failures
            >= failures + 2)
        .await
    );
    accepted(&verifier, &token).await;
    assert!(matches!(
        jwks.refresh().await,
        Err(JwksError::InvalidDocument { .. })
    ));

    server.set_mode(Mode::Normal);
    server.set_keys(vec![]);
    assert_eq!(
        jwks.refresh().await,
        Err(JwksError::NoUsableKeys { skipped: 0 })
    );
    server.set_keys(vec![
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "k1", "alg": "HS256"}),
    ]);
    assert_eq!(
        jwks.refresh().await,
        Err(JwksError::NoUsableKeys { skipped: 1 })
    );
    assert_eq!(jwks.key_set().unwrap().len(), 1);
    accepted(&verifier, &token).await;
}

#[tokio::test]
async fn construction_succeeds_while_the_endpoint_is_down() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_mode(Mode::Hangup);
    let jwks = server.builder().build().unwrap();
    let verifier = Verifier::builder(jwks.clone())
        .any_issuer()
        .audience(AUD)
        .build()
        .unwrap();
    assert!(matches!(jwks.ready().await, Err(JwksError::Fetch(_))));
    assert!(matches!(
        jwks.status(),
        Status::Unavailable {
            last_error: Some(_)
        }
    ));
    let token = key.token(&claims());
    assert!(matches!(
        refused(&verifier, &token).await,
        Error::KeysUnavailable {
            last_error: Some(JwksError::Fetch(_))
        }
    ));
    server.set_mode(Mode::Normal);
    assert!(eventually(Duration::from_secs(3), || jwks.status().is_usable()).await);
    accepted(&verifier, &token).await;
}

#[tokio::test]
async fn a_verification_during_the_first_fetch_waits_for_it() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let jwks = server.builder().build().unwrap();
    let verifier = Verifier::builder(jwks)
        .any_issuer()
        .audience(AUD)
        .build()
        .unwrap();
    // No ready(): the cold start is the verifier's to handle.
    accepted(&verifier, &key.token(&claims())).await;
}

#[tokio::test]
async fn oversized_jwks_is_refused_with_or_without_content_length() {
    let key = TestKey::es256("k1");
    for with_length in [true, false] {
        let server = JwksServer::start(vec![key.public.clone()]).await;
        server.set_mode(Mode::Huge { with_length });
        let jwks = server.builder().build().unwrap();
        assert_eq!(
            jwks.ready().await,
            Err(JwksError::Fetch(FetchError::TooLarge { max: 256 * 1024 })),
            "with_length = {with_length}"
        );
    }
}

#[tokio::test]
async fn slow_jwks_hits_the_deadline() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_mode(Mode::Slow(50 * MS));
    let jwks = server.builder().timeout(500 * MS).build().unwrap();
    let started = Instant::now();
    assert_eq!(
        jwks.ready().await,
        Err(JwksError::Fetch(FetchError::Timeout { after: 500 * MS }))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn redirects_are_refused_and_not_followed() {
    let key = TestKey::es256("k1");
    let elsewhere = JwksServer::start(vec![key.public.clone()]).await;
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_mode(Mode::Redirect(elsewhere.url()));
    let jwks = server.builder().build().unwrap();
    assert_eq!(
        jwks.ready().await,
        Err(JwksError::Fetch(FetchError::Redirected {
            status: 302,
            location: Some(elsewhere.url())
        }))
    );
    assert_eq!(elsewhere.fetches(), 0);
}

#[tokio::test]
async fn http_urls_off_loopback_are_refused() {
    for url in [
        "http://jwks.example.com/.well-known/jwks.json",
        "http://10.1.2.3/.well-known/jwks.json",
        "ftp://127.0.0.1/jwks.json",
        "file:///etc/jwks.json",
    ] {
        assert!(
            matches!(
                RemoteJwks::builder(url).build(),
                Err(BuildError::InsecureUrl { .. })
            ),
            "{url}"
        );
    }
    assert!(matches!(
        RemoteJwks::discover("http://issuer.example.com").build(),
        Err(BuildError::InsecureUrl { .. })
    ));
    // A discovery document may not downgrade the JWKS to http either.
    let server = JwksServer::start(vec![TestKey::es256("k1").public]).await;
    server.state.lock().unwrap().jwks_uri = Some("http://jwks.example.com/jwks.json".into());
    let jwks = RemoteJwks::discover(server.base()).build().unwrap();
    assert!(matches!(
        jwks.ready().await,
        Err(JwksError::Fetch(FetchError::InsecureUrl { .. }))
    ));
}

#[tokio::test]
async fn discovery_checks_the_issuer_and_gives_the_verifier_its_issuer() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let jwks = RemoteJwks::discover(server.base()).build().unwrap();
    jwks.ready().await.unwrap();
    assert_eq!(jwks.issuer(), Some(server.base().as_str()));
    let verifier = Verifier::builder(jwks)
        .any_issuer()
        .audience(AUD)
        .build()
        .unwrap();
    let mut ours = claims();
    ours["iss"] = json!(server.base());
    accepted(&verifier, &key.token(&ours)).await;
    assert!(matches!(
        refused(&verifier, &key.token(&claims())).await,
        Error::WrongIssuer { .. }
    ));

    server.state.lock().unwrap().discovery_issuer = Some("https://evil.example".into());
    let jwks = RemoteJwks::discover(server.base()).build().unwrap();
    assert_eq!(
        jwks.ready().await,
        Err(JwksError::IssuerMismatch {
            expected: server.base(),
            found: "https://evil.example".into()
        })
    );
}

#[tokio::test]
async fn conditional_get_uses_the_etag_and_a_304_keeps_the_set_fresh() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_max_age(0);
    let (jwks, verifier) = server
        .verifier_with(server.builder().ttl_bounds(100 * MS, 100 * MS))
        .await;
    assert!(eventually(Duration::from_secs(3), || server.not_modified() >= 3).await);
    assert!(jwks.stats().not_modified >= 3, "{:?}", jwks.stats());
    assert!(matches!(jwks.status(), Status::Fresh { keys: 1, .. }));
    accepted(&verifier, &key.token(&claims())).await;
    let request = server.server.requests().pop().unwrap();
    assert!(request.header("if-none-match").is_some());
    assert_eq!(
        request.header("accept"),
        Some("application/jwk-set+json, application/json")
    );
}

#[tokio::test]
async fn max_age_is_clamped_to_the_ttl_bounds() {
    let key = TestKey::es256("k1");
    // A long max-age is cut to the upper bound...
    let long = JwksServer::start(vec![key.public.clone()]).await;
    long.set_max_age(86_400);
    let _jwks = long
        .builder()
        .ttl_bounds(100 * MS, 250 * MS)
        .build()
        .unwrap();
    // ...and a zero max-age is raised to the lower bound.
    let short = JwksServer::start(vec![key.public.clone()]).await;
    short.set_max_age(0);
    let _jwks2 = short
        .builder()
        .ttl_bounds(Duration::from_secs(10), Duration::from_secs(3600))
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(long.fetches() >= 4, "{} fetches", long.fetches());
    assert_eq!(short.fetches(), 1);
}

#[tokio::test]
async fn background_refreshes_do_not_use_the_unknown_kid_budget() {
    let old = TestKey::es256("old");
    let new = TestKey::es256("new");
    let server = JwksServer::start(vec![old.public.clone()]).await;
    server.set_max_age(0);
    // Background refreshes every ~100 ms; an unknown-kid cooldown of a minute.
    let (jwks, verifier) = server
        .verifier_with(
            server
                .builder()
                .ttl_bounds(150 * MS, 150 * MS)
                .unknown_kid_cooldown(Duration::from_secs(60)),
        )
        .await;
    assert!(eventually(Duration::from_secs(2), || server.fetches() >= 4).await);
    assert_eq!(jwks.stats().kid_refreshes, 0);
    server.push_key(new.public.clone());
    accepted(&verifier, &new.token(&claims())).await;
    assert!(jwks.stats().kid_refreshes <= 1, "{:?}", jwks.stats());
}

#[tokio::test]
async fn an_unknown_kid_waits_only_a_short_bound_for_a_slow_refresh() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let (_jwks, verifier) = server
        .verifier_with(server.builder().refresh_wait(300 * MS))
        .await;
    server.set_mode(Mode::Slow(100 * MS));
    let stranger = TestKey::es256("stranger");
    let started = Instant::now();
    assert_eq!(
        refused(&verifier, &stranger.token(&claims())).await,
        Error::UnknownKid {
            kid: "stranger".into()
        }
    );
    let waited = started.elapsed();
    assert!(
        waited >= 250 * MS && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // Known kids are not held up by the refresh in flight.
    let started = Instant::now();
    accepted(&verifier, &key.token(&claims())).await;
    assert!(started.elapsed() < 250 * MS);
}

#[tokio::test]
async fn a_repeated_unknown_kid_is_answered_from_the_negative_cache() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let (jwks, verifier) = server.verifier().await;
    let stranger = TestKey::es256("stranger").token(&claims());
    refused(&verifier, &stranger).await;
    let fetches = server.fetches();
    for _ in 0..100 {
        assert_eq!(
            refused(&verifier, &stranger).await,
            Error::UnknownKid {
                kid: "stranger".into()
            }
        );
    }
    assert_eq!(server.fetches(), fetches);
    assert_eq!(jwks.stats().negative_hits, 100);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_refresher() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_max_age(0);
    let (jwks, verifier) = server
        .verifier_with(server.builder().ttl_bounds(50 * MS, 50 * MS))
        .await;
    let clone = jwks.clone();
    drop(jwks);
    assert!(eventually(Duration::from_secs(2), || server.fetches() >= 3).await);
    drop(verifier);
    drop(clone);
    tokio::time::sleep(100 * MS).await;
    let fetches = server.fetches();
    tokio::time::sleep(400 * MS).await;
    assert_eq!(server.fetches(), fetches);
}

#[tokio::test]
async fn skipped_keys_are_counted_in_the_status() {
    let good = TestKey::es256("good");
    let mut enc = TestKey::es256("enc").public;
    enc["use"] = json!("enc");
    let server = JwksServer::start(vec![enc, good.public.clone()]).await;
    let (jwks, _verifier) = server.verifier().await;
    assert!(matches!(
        jwks.status(),
        Status::Fresh {
            keys: 1,
            skipped: 1,
            ..
        }
    ));
    assert_eq!(
        jwks.key_set().unwrap().skipped()[0].reason,
        SkipReason::NotForSignatures
    );
}
