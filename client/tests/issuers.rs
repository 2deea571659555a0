//! A verifier for several issuers (`KeySource::per_issuer`): each token is checked only
//! against the keys of the issuer its `iss` names.

use jwkd_client::{BuildError, Error, KeySet, KeySource, RemoteJwks, Verifier};
use serde_json::{Value, json};

use crate::common::{AUD, JwksServer, TestKey, claims};

const BILLING: &str = "https://auth.internal.example/billing";
const ORDERS: &str = "https://auth.internal.example/orders";

fn key_set(key: &TestKey) -> KeySet {
    KeySet::from_json(json!({ "keys": [key.public] }).to_string().as_bytes()).unwrap()
}

fn claims_from(iss: &str) -> Value {
    let mut claims = claims();
    claims["iss"] = json!(iss);
    claims
}

fn two_issuers(billing: &TestKey, orders: &TestKey) -> Verifier {
    Verifier::builder(KeySource::per_issuer([
        (BILLING, key_set(billing)),
        (ORDERS, key_set(orders)),
    ]))
    .audience(AUD)
    .build()
    .unwrap()
}

#[tokio::test]
async fn each_issuer_vouches_only_for_its_own_tokens() {
    let billing = TestKey::es256("billing-1");
    let orders = TestKey::es256("orders-1");
    let verifier = two_issuers(&billing, &orders);

    for (key, iss) in [(&billing, BILLING), (&orders, ORDERS)] {
        let verified = verifier
            .verify::<Value>(&key.token(&claims_from(iss)))
            .await
            .unwrap_or_else(|err| panic!("{iss}'s own token: {err}"));
        assert_eq!(verified.claims()["iss"], iss);
        assert_eq!(verified.kid(), key.kid);
    }

    // Billing's key signs a token that claims to come from orders: orders' keys do
    // not know it, and billing's keys are never consulted for it.
    let forged = billing.token(&claims_from(ORDERS));
    let err = verifier.verify::<Value>(&forged).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownKid { kid } if kid == "billing-1"),
        "{err}"
    );

    // The same with the kid of one of orders' keys written into the header: the
    // signature is checked with orders' key, and fails.
    let mut header = billing.header();
    header["kid"] = json!(orders.kid);
    let forged = billing.sign_with_header(&header, &claims_from(ORDERS));
    let err = verifier.verify::<Value>(&forged).await.unwrap_err();
    assert!(matches!(err, Error::BadSignature), "{err}");
}

#[tokio::test]
async fn a_token_is_held_to_the_issuer_that_picked_its_keys() {
    let billing = TestKey::es256("billing-1");
    let orders = TestKey::es256("orders-1");
    let verifier = two_issuers(&billing, &orders);

    // A repeated `iss` cannot pick one issuer's keys and then pass as the other.
    let payload = claims_from(BILLING).to_string();
    let payload = payload.replacen('{', &format!("{{\"iss\":\"{ORDERS}\","), 1);
    let token = billing.sign_raw(&billing.header().to_string(), &payload);
    let err = verifier.verify::<Value>(&token).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidClaimType { claim: "iss" }),
        "{err}"
    );

    for (claims, expected) in [
        (
            json!({"sub": "x", "aud": AUD, "exp": 4_000_000_000u64}),
            None,
        ),
        (
            json!({"iss": 7, "sub": "x", "aud": AUD, "exp": 4_000_000_000u64}),
            Some("iss"),
        ),
    ] {
        let err = verifier
            .verify::<Value>(&billing.token(&claims))
            .await
            .unwrap_err();
        match expected {
            None => assert!(matches!(err, Error::WrongIssuer { found: None }), "{err}"),
            Some(claim) => assert!(
                matches!(err, Error::InvalidClaimType { claim: found } if found == claim),
                "{err}"
            ),
        }
    }
}

#[tokio::test]
async fn an_unknown_issuer_is_refused_before_any_fetch() {
    let billing = TestKey::es256("billing-1");
    let server = JwksServer::start(vec![billing.public.clone()]).await;
    let jwks = server.builder().build().unwrap();
    let verifier = Verifier::builder(KeySource::per_issuer([(BILLING, jwks.clone())]))
        .audience(AUD)
        .build()
        .unwrap();
    let fetches_before = server.fetches();

    let token = billing.token(&claims_from("https://auth.internal.example/elsewhere"));
    let err = verifier.verify::<Value>(&token).await.unwrap_err();
    assert!(
        matches!(&err, Error::WrongIssuer { found: Some(found) } if found.ends_with("/elsewhere")),
        "{err}"
    );
    assert_eq!(
        server.fetches(),
        fetches_before,
        "a token for an issuer not in the map made the verifier fetch keys"
    );

    // Billing's own token goes to billing's JWKS and verifies.
    verifier
        .verify::<Value>(&billing.token(&claims_from(BILLING)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_per_issuer_source_must_be_unambiguous() {
    let key = TestKey::es256("k");
    let build = |source: KeySource, named: Option<&str>, any: bool| {
        let mut builder = Verifier::builder(source).audience(AUD);
        if let Some(issuer) = named {
            builder = builder.issuer(issuer);
        }
        if any {
            builder = builder.any_issuer();
        }
        match builder.build() {
            Ok(_) => panic!("built"),
            Err(BuildError::InvalidOption { name, reason }) => {
                assert_eq!(name, "issuer");
                reason
            }
            Err(err) => panic!("{err}"),
        }
    };
    let one = || KeySource::per_issuer([(BILLING, key_set(&key))]);
    let cases: Vec<(KeySource, Option<&str>, bool, &str)> = vec![
        (
            KeySource::per_issuer(Vec::<(String, KeySet)>::new()),
            None,
            false,
            "at least one issuer",
        ),
        (
            KeySource::per_issuer([(BILLING, key_set(&key)), (BILLING, key_set(&key))]),
            None,
            false,
            "given twice",
        ),
        (
            KeySource::per_issuer([("", key_set(&key))]),
            None,
            false,
            "empty",
        ),
        (one(), Some(ORDERS), false, "drop .issuer(..)"),
        (one(), None, true, "drop .issuer(..)"),
        (
            KeySource::per_issuer([(BILLING, one())]),
            None,
            false,
            "themselves per issuer",
        ),
        (
            KeySource::per_issuer([(
                BILLING,
                RemoteJwks::discover("http://127.0.0.1:9/orders")
                    .build()
                    .unwrap(),
            )]),
            None,
            false,
            "were discovered for \"http://127.0.0.1:9/orders\"",
        ),
    ];
    for (source, named, any, says) in cases {
        let reason = build(source, named, any);
        assert!(reason.contains(says), "{reason:?} does not say {says:?}");
    }
}
