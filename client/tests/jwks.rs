//! RemoteJwks behaviour against a real server: coalescing, cooldown, outage, freshness,
//! and HTTP hygiene (size cap, deadline, redirects, schemes).
//!
//! Timer behaviour runs on tokio's paused clock (see `common`), so each test names the
//! exact instant at which something must have happened or must not have happened yet.
//! Refreshes are due at a random 65-85 % of the set's lifetime after the last one,
//! so counts are checked just outside that window.

use std::sync::Arc;
use std::time::Duration;

use jwkd_client::{
    BuildError, Error, FetchError, JwksError, RemoteJwks, SkipReason, Status, Verifier,
};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, sleep_until};

use crate::common::{AUD, JwksServer, Mode, TestKey, accepted, claims, random_u64, refused};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

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

#[tokio::test(start_paused = true)]
async fn random_kid_flood_over_ten_cooldowns_fetches_at_most_ten_times_while_valid_tokens_verify() {
    let key = TestKey::es256("valid");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let cooldown = 30 * SECOND;
    // The set lives an hour: no background refresh during the flood.
    let (jwks, verifier) = server
        .verifier_with(server.paused_builder().unknown_kid_cooldown(cooldown))
        .await;
    let valid = key.token(&claims());
    let start = Instant::now();
    let before = server.fetches();
    let mut flood = 0;
    // Forty rounds of twenty random kids, a quarter cooldown apart: ten cooldowns.
    for round in 0..40u32 {
        sleep_until(start + cooldown * round / 4).await;
        let fetches = server.fetches();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let kid = format!("random-{}", random_u64());
                let token = key.sign_with_header(&json!({"alg": "ES256", "kid": kid}), &claims());
                let verifier = verifier.clone();
                tokio::spawn(async move { (kid, verifier.verify::<Value>(&token).await) })
            })
            .collect();
        // Let the flood start (and, at a cooldown's start, its refresh) before the
        // valid token goes through.
        tokio::task::yield_now().await;
        accepted(&verifier, &valid).await;
        for task in tasks {
            let (kid, result) = task.await.unwrap();
            assert_eq!(result.unwrap_err(), Error::UnknownKid { kid });
            flood += 1;
        }
        // One refresh as each cooldown starts, shared by its whole round; none between.
        let expected = usize::from(round % 4 == 0);
        assert_eq!(server.fetches() - fetches, expected, "round {round}");
    }
    assert_eq!(flood, 800);
    assert_eq!(server.fetches() - before, 10);
    let stats = jwks.stats();
    assert_eq!(stats.kid_refreshes, 10, "{stats:?}");
    // The other thirty rounds were answered at once.
    assert_eq!(stats.cooldown_denials, 30 * 20, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn outage_serves_the_last_good_set_until_max_stale_then_fails_closed_then_recovers() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_max_age(0);
    let ttl = 10 * SECOND;
    let max_stale = 60 * SECOND;
    let backoff_max = 5 * SECOND;
    let (jwks, verifier) = server
        .verifier_with(
            server
                .paused_builder()
                .ttl_bounds(ttl, ttl)
                .max_stale(max_stale)
                .backoff(SECOND, backoff_max),
        )
        .await;
    let loaded = Instant::now();
    assert!(matches!(jwks.status(), Status::Fresh { age, .. } if age.is_zero()));
    let token = key.token(&claims());
    accepted(&verifier, &token).await;

    server.set_mode(Mode::Status(503));
    let outage = Some(JwksError::Fetch(FetchError::Status { status: 503 }));
    // Refreshes fail from 65-85 % of the lifetime on; the set is fresh to its end...
    sleep_until(loaded + ttl - MS).await;
    assert!(
        matches!(jwks.status(), Status::Fresh { keys: 1, .. }),
        "{}",
        jwks.status()
    );
    assert!(jwks.stats().failures >= 1, "{:?}", jwks.stats());
    // ...then stale, and still used, from the instant it ends...
    sleep_until(loaded + ttl).await;
    assert_eq!(
        jwks.status(),
        Status::Stale {
            keys: 1,
            stale_for: Duration::ZERO,
            last_error: outage.clone()
        }
    );
    accepted(&verifier, &token).await;
    sleep_until(loaded + ttl + max_stale - MS).await;
    assert_eq!(
        jwks.status(),
        Status::Stale {
            keys: 1,
            stale_for: max_stale - MS,
            last_error: outage.clone()
        }
    );
    accepted(&verifier, &token).await;

    // ...until max_stale past its end: then verification fails closed.
    sleep_until(loaded + ttl + max_stale).await;
    assert_eq!(
        jwks.status(),
        Status::Unavailable {
            last_error: outage.clone()
        }
    );
    let error = refused(&verifier, &token).await;
    assert_eq!(error, Error::KeysUnavailable { last_error: outage });
    assert!(error.is_keys_unavailable());

    // The next retry, at most the longest backoff away, brings it back.
    server.set_mode(Mode::Normal);
    let fetches = server.fetches();
    sleep(backoff_max + MS).await;
    assert_eq!(server.fetches(), fetches + 1);
    assert!(
        matches!(jwks.status(), Status::Fresh { keys: 1, .. }),
        "{}",
        jwks.status()
    );
    accepted(&verifier, &token).await;
}

#[tokio::test(start_paused = true)]
async fn garbage_or_an_empty_set_never_replaces_the_last_good_one() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_max_age(0);
    let ttl = 10 * SECOND;
    let (jwks, verifier) = server
        .verifier_with(server.paused_builder().ttl_bounds(ttl, ttl))
        .await;
    let loaded = Instant::now();
    let token = key.token(&claims());

    // Every refresh from 65-85 % of the lifetime on gets garbage; a lifetime past its
    // end, the set is the one loaded first.
    server.set_mode(Mode::Garbage);
    sleep_until(loaded + 2 * ttl).await;
    let status = jwks.status();
    let Status::Stale {
        keys: 1,
        stale_for,
        last_error: Some(JwksError::InvalidDocument { .. }),
    } = status
    else {
        panic!("{status}");
    };
    assert_eq!(stale_for, ttl);
    assert!(jwks.stats().failures >= 2, "{:?}", jwks.stats());
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

#[tokio::test(start_paused = true)]
async fn construction_succeeds_while_the_endpoint_is_down() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_mode(Mode::Hangup);
    let jwks = server.paused_builder().build().unwrap();
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
    // The first retry comes within the first backoff step (`builder`: 50 ms, jittered
    // to 25-50 ms).
    server.set_mode(Mode::Normal);
    assert_eq!(server.fetches(), 1);
    sleep(51 * MS).await;
    assert_eq!(server.fetches(), 2);
    assert!(jwks.status().is_usable(), "{}", jwks.status());
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

#[tokio::test(start_paused = true)]
async fn slow_jwks_hits_the_deadline() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_mode(Mode::Slow(50 * MS));
    let deadline = 500 * MS;
    let jwks = server.paused_builder().timeout(deadline).build().unwrap();
    let started = Instant::now();
    assert_eq!(
        jwks.ready().await,
        Err(JwksError::Fetch(FetchError::Timeout { after: deadline }))
    );
    assert_eq!(started.elapsed(), deadline);
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

#[tokio::test(start_paused = true)]
async fn conditional_get_uses_the_etag_and_a_304_keeps_the_set_fresh() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_max_age(0);
    let ttl = 10 * SECOND;
    let (jwks, verifier) = server
        .verifier_with(server.paused_builder().ttl_bounds(ttl, ttl))
        .await;
    let loaded = Instant::now();
    // Three refreshes take 19.5-25.5 s, a fourth at least 26 s.
    sleep_until(loaded + 25_501 * MS).await;
    assert_eq!(server.fetches(), 4);
    assert_eq!(server.not_modified(), 3);
    assert_eq!(jwks.stats().not_modified, 3, "{:?}", jwks.stats());
    assert!(matches!(jwks.status(), Status::Fresh { keys: 1, .. }));
    accepted(&verifier, &key.token(&claims())).await;
    let first = &server.server.requests()[0];
    let last = server.server.requests().pop().unwrap();
    assert_eq!(first.header("if-none-match"), None);
    assert!(last.header("if-none-match").is_some());
    assert_eq!(
        last.header("accept"),
        Some("application/jwk-set+json, application/json")
    );
}

#[tokio::test(start_paused = true)]
async fn max_age_is_clamped_to_the_ttl_bounds() {
    let key = TestKey::es256("k1");
    // A day's max-age is cut to the upper bound, a minute...
    let long = JwksServer::start(vec![key.public.clone()]).await;
    long.set_max_age(86_400);
    let _long_jwks = long
        .paused_builder()
        .ttl_bounds(10 * SECOND, 60 * SECOND)
        .build()
        .unwrap();
    // ...and a zero max-age is raised to the lower bound, ten seconds.
    let short = JwksServer::start(vec![key.public.clone()]).await;
    short.set_max_age(0);
    let _short_jwks = short
        .paused_builder()
        .ttl_bounds(10 * SECOND, 3600 * SECOND)
        .build()
        .unwrap();
    let start = Instant::now();
    // The second fetch is due at 65-85 % of the lifetime: 6.5-8.5 s for ten seconds,
    // 39-51 s for a minute.
    for (at, long_fetches, short_fetches) in [
        (6_499, 1, Some(1)),
        (8_501, 1, Some(2)),
        (38_999, 1, None),
        (51_001, 2, None),
    ] {
        sleep_until(start + at * MS).await;
        assert_eq!(long.fetches(), long_fetches, "long, at {at} ms");
        if let Some(short_fetches) = short_fetches {
            assert_eq!(short.fetches(), short_fetches, "short, at {at} ms");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn background_refreshes_do_not_use_the_unknown_kid_budget() {
    let old = TestKey::es256("old");
    let new = TestKey::es256("new");
    let server = JwksServer::start(vec![old.public.clone()]).await;
    server.set_max_age(0);
    let ttl = 10 * SECOND;
    let (jwks, verifier) = server
        .verifier_with(
            server
                .paused_builder()
                .ttl_bounds(ttl, ttl)
                .unknown_kid_cooldown(60 * SECOND),
        )
        .await;
    let loaded = Instant::now();
    // One background refresh, at 6.5-8.5 s...
    sleep_until(loaded + 8_501 * MS).await;
    assert_eq!(server.fetches(), 2);
    assert_eq!(jwks.stats().kid_refreshes, 0);
    // ...and a new kid right after it still gets a refresh of its own, well inside
    // the one-minute cooldown.
    server.push_key(new.public.clone());
    accepted(&verifier, &new.token(&claims())).await;
    assert_eq!(server.fetches(), 3);
    let stats = jwks.stats();
    assert_eq!(stats.kid_refreshes, 1, "{stats:?}");
    assert_eq!(stats.cooldown_denials, 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_waits_only_a_short_bound_for_a_slow_refresh() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let refresh_wait = 2 * SECOND;
    let deadline = 5 * SECOND;
    let (jwks, verifier) = server
        .verifier_with(
            server
                .paused_builder()
                .refresh_wait(refresh_wait)
                .timeout(deadline),
        )
        .await;
    // A byte every 100 ms: the refresh runs into its deadline.
    server.set_mode(Mode::Slow(100 * MS));
    let stranger = TestKey::es256("stranger");
    let started = Instant::now();
    assert_eq!(
        refused(&verifier, &stranger.token(&claims())).await,
        Error::UnknownKid {
            kid: "stranger".into()
        }
    );
    assert_eq!(started.elapsed(), refresh_wait);
    // Known kids are not held up by the refresh still in flight.
    assert_eq!((server.fetches(), jwks.stats().failures), (2, 0));
    let verified_at = Instant::now();
    accepted(&verifier, &key.token(&claims())).await;
    assert_eq!(verified_at.elapsed(), Duration::ZERO);
    // The refresh ends at its deadline; the set is kept.
    sleep_until(started + deadline + MS).await;
    assert_eq!(jwks.stats().failures, 1);
    assert!(matches!(jwks.status(), Status::Fresh { keys: 1, .. }));
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

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_stops_the_refresher() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    server.set_max_age(0);
    let ttl = 10 * SECOND;
    let (jwks, verifier) = server
        .verifier_with(server.paused_builder().ttl_bounds(ttl, ttl))
        .await;
    let loaded = Instant::now();
    let clone = jwks.clone();
    drop(jwks);
    // A clone keeps the refresher going: one refresh at 6.5-8.5 s.
    sleep_until(loaded + 8_501 * MS).await;
    assert_eq!(server.fetches(), 2);
    drop(verifier);
    drop(clone);
    sleep(3600 * SECOND).await;
    assert_eq!(server.fetches(), 2);
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
