//! Several issuers on one daemon (`[[issuers]]`): each has its own keys, JWKS,
//! discovery, token endpoint, clients and keyset, and no key of one ever
//! vouches for a token claiming another, across rotations of both.
//!
//! In process ([`InProcess`]) on a manual clock, over the memory stores.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeZone as _, Utc};
use jwkd_client::{Error, KeySource, RemoteJwks, SigningKeySource, Verifier};
use serde_json::{Value, json};

use crate::util::{Client, InProcess, Response, TestConfig};

const ORDERS: &str = "https://auth.test.example";
const BILLING: &str = "https://auth.test.example/billing";
const AUD: &str = "payments";

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 1).unwrap()
}

/// The default issuer (orders) and billing, each rotating every 2 s, each with a
/// client `orders` of its own (other secrets), an issuer client and an admin.
fn config() -> TestConfig {
    let base = TestConfig::fast()
        .set("server", "private_listen", "127.0.0.1:0")
        .issuer(ORDERS)
        .client(Client::new("orders", "orders-secret").audiences(&[AUD]))
        .client(Client::new("minter", "minter-secret").roles(&["issuer"]))
        .client(Client::new("root", "root-secret").roles(&["admin"]));
    let billing = base
        .issuer_entry("billing", BILLING)
        .algorithms(&["ES256", "EdDSA"])
        .client(Client::new("orders", "billing-orders-secret").audiences(&[AUD]))
        .client(Client::new("biller", "biller-secret").roles(&["issuer"]))
        .client(Client::new("billing-root", "billing-root-secret").roles(&["admin"]));
    base.with_issuer(billing)
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn token(daemon: &InProcess, path: &str, id: &str, secret: &str) -> Response {
    daemon.request(
        "POST",
        path,
        &[
            ("Authorization", &basic(id, secret)),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials",
    )
}

fn kids(daemon: &InProcess, path: &str) -> Vec<String> {
    let response = daemon.get(path);
    assert_eq!(response.status, 200, "{path}: {response}");
    let mut kids: Vec<String> = response.json()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect();
    kids.sort();
    kids
}

fn header_kid(token: &str) -> String {
    let header = token.split('.').next().expect("a header");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().expect("kid").to_owned()
}

fn system_time(at: DateTime<Utc>) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(at.timestamp_millis()).unwrap())
}

#[test]
fn each_issuer_has_its_own_endpoints_keys_and_clients() {
    let daemon = InProcess::start(&config().build(), start());

    // Two JWKS, no key in both; the default issuer's at the root.
    let orders_kids = kids(&daemon, "/.well-known/jwks.json");
    let billing_kids = kids(&daemon, "/billing/.well-known/jwks.json");
    assert_eq!(orders_kids.len(), 2, "ES256 current and next");
    assert_eq!(billing_kids.len(), 4, "ES256 and EdDSA, current and next");
    assert!(orders_kids.iter().all(|kid| !billing_kids.contains(kid)));

    // Discovery where OpenID Discovery and RFC 8414 put it for a URL with a path,
    // pointing at billing's own endpoints.
    for path in [
        "/billing/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/billing",
    ] {
        let document = daemon.get(path).json();
        assert_eq!(document["issuer"], BILLING, "{path}");
        assert_eq!(
            document["jwks_uri"],
            format!("{BILLING}/.well-known/jwks.json"),
            "{path}"
        );
        assert_eq!(
            document["token_endpoint"],
            format!("{BILLING}/oauth2/token"),
            "{path}"
        );
        assert_eq!(
            document["id_token_signing_alg_values_supported"],
            json!(["ES256", "EdDSA"])
        );
    }
    assert_eq!(
        daemon.get("/.well-known/openid-configuration").json()["issuer"],
        ORDERS
    );
    for path in [
        "/billing/.well-known/jwks.json/x",
        "/billingx/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server/billing/x",
        "/billing/healthz",
    ] {
        assert_eq!(daemon.get(path).status, 404, "{path}");
    }

    // One client id, two clients: each secret works at its own issuer only.
    for (path, secret, status) in [
        ("/oauth2/token", "orders-secret", 200),
        ("/oauth2/token", "billing-orders-secret", 401),
        ("/billing/oauth2/token", "billing-orders-secret", 200),
        ("/billing/oauth2/token", "orders-secret", 401),
    ] {
        let response = token(&daemon, path, "orders", secret);
        assert_eq!(response.status, status, "{path} with {secret}: {response}");
        if status == 200 {
            let issued = response.json()["access_token"].as_str().unwrap().to_owned();
            let (own, other) = if path == "/oauth2/token" {
                (&orders_kids, &billing_kids)
            } else {
                (&billing_kids, &orders_kids)
            };
            let kid = header_kid(&issued);
            assert!(own.contains(&kid) && !other.contains(&kid), "{path}: {kid}");
        }
    }

    // Readiness and metrics per issuer.
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 200, "{ready}");
    assert_eq!(
        ready.json()["issuers"],
        json!({"default": "ready", "billing": "ready"})
    );
    let metrics = daemon.get("/metrics").text();
    for series in [
        "\njwkd_tokens_issued_total 1\n",
        "\njwkd_tokens_issued_total{issuer=\"billing\"} 1\n",
        "\njwkd_keys{issuer=\"billing\",state=\"current\"} 2\n",
        "\njwkd_keys{state=\"current\"} 1\n",
        "\njwkd_http_requests_total{issuer=\"billing\",route=\"/oauth2/token\",status=\"200\"} 1\n",
        "\njwkd_http_requests_total{route=\"/oauth2/token\",status=\"200\"} 1\n",
    ] {
        assert!(
            metrics.contains(series),
            "{series:?} missing from\n{metrics}"
        );
    }
}

/// The proof the issue asks for: a key pulled from one issuer signs a token
/// claiming the other; the other's verifiers refuse it, the first's own tokens
/// verify, rotation after rotation of both.
#[test]
fn a_key_of_one_issuer_never_vouches_for_another_across_rotations() {
    let daemon = InProcess::start(&config().build(), start());
    let base = format!("http://{}", daemon.addr());
    let private = format!("http://{}", daemon.private_addr());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Verifiers as a service would have them: billing's alone, and one for both
    // (made afresh at each step, for the same reason).
    let verifiers = || {
        let jwks = |path: &str| {
            RemoteJwks::builder(format!("{base}{path}"))
                .allow_http(true)
                .build()
                .unwrap()
        };
        let billing_verifier = Verifier::builder(jwks("/billing/.well-known/jwks.json"))
            .issuer(BILLING)
            .audience(AUD)
            .build()
            .unwrap();
        let both = Verifier::builder(KeySource::per_issuer([
            (ORDERS, jwks("/.well-known/jwks.json")),
            (BILLING, jwks("/billing/.well-known/jwks.json")),
        ]))
        .audience(AUD)
        .build()
        .unwrap();
        (billing_verifier, both)
    };
    let mut forged_kids = Vec::new();
    for step in 0..8 {
        let now = daemon.now();
        let at = system_time(now);
        // An issuer of orders pulls its signing keys (afresh: the source's
        // refresh runs on real time, which the manual clock outruns).
        let orders_keys = runtime.block_on(async {
            let source = SigningKeySource::builder(
                format!("{private}/v1/signing-keys"),
                "minter",
                "minter-secret",
            )
            .allow_http(true)
            .build()
            .unwrap();
            source.ready().await.unwrap();
            source
        });
        let claims = |iss: &str| {
            json!({
                "iss": iss, "sub": "mallory", "aud": AUD,
                "iat": now.timestamp(), "exp": now.timestamp() + 2,
            })
        };
        let forged = orders_keys.sign_at(&claims(BILLING), at).unwrap();
        let genuine = orders_keys.sign_at(&claims(ORDERS), at).unwrap();
        forged_kids.push(header_kid(&forged));
        let (billing_verifier, both) = runtime.block_on(async { verifiers() });
        runtime.block_on(async {
            for verifier in [&billing_verifier, &both] {
                let err = verifier
                    .verify_at::<Value>(&forged, at)
                    .await
                    .expect_err("a token claiming billing, signed with an orders key");
                assert!(
                    matches!(err, Error::UnknownKid { .. }),
                    "step {step}: {err}"
                );
            }
            let verified = both
                .verify_at::<Value>(&genuine, at)
                .await
                .unwrap_or_else(|err| panic!("step {step}: orders' own token: {err}"));
            assert_eq!(verified.claims()["iss"], ORDERS);
        });
        // Billing's own token, from its token endpoint, verifies as billing's.
        let issued = token(
            &daemon,
            "/billing/oauth2/token",
            "orders",
            "billing-orders-secret",
        );
        assert_eq!(issued.status, 200, "{issued}");
        let issued = issued.json()["access_token"].as_str().unwrap().to_owned();
        runtime.block_on(async {
            let verified = both.verify_at::<Value>(&issued, at).await.unwrap();
            assert_eq!(verified.claims()["iss"], BILLING);
            billing_verifier
                .verify_at::<Value>(&issued, at)
                .await
                .unwrap();
        });
        daemon.advance(Duration::from_secs(1));
    }
    forged_kids.dedup();
    assert!(
        forged_kids.len() >= 3,
        "the orders key should have rotated at least twice: {forged_kids:?}"
    );
}

#[test]
fn admin_endpoints_act_on_the_issuer_of_the_admin_client() {
    let config = config().set("keys", "rotation_schedule", "0 3 * * *").set(
        "keys",
        "max_token_lifetime",
        "1h",
    );
    let daemon = InProcess::start(&config.build(), start());
    let orders_before = daemon.keys();
    let billing_before = daemon.keys_of("billing");
    let rotate = |path: &str, id: &str, secret: &str| {
        daemon.request_private("POST", path, &[("Authorization", &basic(id, secret))], b"")
    };
    // Billing's admin is nobody at the default issuer, and the other way round.
    assert_eq!(
        rotate("/v1/rotate", "billing-root", "billing-root-secret").status,
        401
    );
    assert_eq!(
        rotate("/billing/v1/rotate", "root", "root-secret").status,
        401
    );
    let response = rotate("/billing/v1/rotate", "billing-root", "billing-root-secret");
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(
        daemon.keys(),
        orders_before,
        "the default issuer's keys moved"
    );
    assert_ne!(daemon.keys_of("billing"), billing_before);
    assert!(daemon.logs().contains("billing-root"), "{}", daemon.logs());
}

#[test]
fn a_reload_adds_and_removes_issuers_without_a_restart() {
    let one = config()
        .unset("server", "private_listen")
        .set("keys", "rotation_schedule", "0 3 * * *")
        .set("keys", "max_token_lifetime", "1h");
    let daemon = InProcess::start(&one.build(), start());
    assert_eq!(daemon.get("/billing/.well-known/jwks.json").status, 200);
    let billing_kids = kids(&daemon, "/billing/.well-known/jwks.json");

    // Billing removed, edge added.
    let edge = one.issuer_entry("edge", "https://auth.test.example/edge");
    let two = TestConfig::slow()
        .issuer(ORDERS)
        .client(Client::new("orders", "orders-secret").audiences(&[AUD]))
        .with_issuer(edge);
    let status = daemon.reload(&two.build());
    assert!(status.contains("edge: "), "{status}");
    assert_eq!(daemon.get("/billing/.well-known/jwks.json").status, 404);
    assert_eq!(kids(&daemon, "/edge/.well-known/jwks.json").len(), 2);
    assert!(
        daemon.logs().contains("issuer billing is no longer in"),
        "{}",
        daemon.logs()
    );
    assert!(
        daemon.logs().contains("issuer edge added"),
        "{}",
        daemon.logs()
    );
    // Billing's keyset was left as it was: put back, it serves the same keys.
    daemon.reload(&one.build());
    assert_eq!(
        kids(&daemon, "/billing/.well-known/jwks.json"),
        billing_kids
    );
    assert_eq!(daemon.get("/readyz").status, 200);
}

/// A reload that adds an issuer whose keyset cannot be read starts it not,
/// says why, and keeps serving the others.
#[test]
fn an_added_issuer_whose_store_fails_is_not_started_and_the_others_go_on() {
    let start = Utc::now();
    let one = TestConfig::slow().issuer(ORDERS);
    let daemon = InProcess::start_on_file(&one.build(), start);
    let before = kids(&daemon, "/.well-known/jwks.json");
    // Its keyset "file" is a directory: unreadable.
    std::fs::create_dir(daemon.dir().path().join("edge-keys")).unwrap();
    let edge = one
        .issuer_entry("edge", "https://auth.test.example/edge")
        .set(
            "store",
            toml::Value::Table(toml::toml! { path = "edge-keys" }),
        );
    let status = daemon.reload(&one.clone().with_issuer(edge).build());
    assert!(status.contains("edge: not started"), "{status}");
    assert!(
        daemon.logs().contains("issuer edge not started"),
        "{}",
        daemon.logs()
    );
    assert_eq!(daemon.get("/edge/.well-known/jwks.json").status, 404);
    assert_eq!(kids(&daemon, "/.well-known/jwks.json"), before);
    assert_eq!(
        daemon.get("/readyz").status,
        200,
        "the served issuers are ready"
    );
}

/// A reload cannot move a running issuer's keys into or out of KMS: the
/// custody stays as it started, the log says a restart is needed, and the
/// issuer goes on signing with the keys it has.
#[test]
fn a_custody_change_on_reload_needs_a_restart_and_says_so() {
    let local = TestConfig::slow()
        .issuer(ORDERS)
        .set("keys", "x5c", false)
        .client(Client::new("orders", "orders-secret").audiences(&[AUD]));
    let daemon = InProcess::start(&local.build(), start());
    let before = kids(&daemon, "/.well-known/jwks.json");
    let kms = local
        .set("keys", "custody", "kms")
        .set("kms", "region", "eu-west-1");
    daemon.reload(&kms.build());
    assert!(
        daemon.logs().contains("keys.custody/[kms] changed in ")
            && daemon.logs().contains("restart jwkd to use it"),
        "{}",
        daemon.logs()
    );
    assert_eq!(kids(&daemon, "/.well-known/jwks.json"), before);
    let issued = token(&daemon, "/oauth2/token", "orders", "orders-secret");
    assert_eq!(issued.status, 200, "{issued}");
}
