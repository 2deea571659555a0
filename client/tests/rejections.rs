//! One test per rejection rule (CONTRACT §7, client-anchors §2), each asserting the
//! specific error variant, plus the happy path for every algorithm.

use std::time::{Duration, SystemTime};

use aws_lc_rs::hmac;
use jwkd_client::{Algorithm, Error, JwksError, KeySet, SkipReason, TokenPart, Verified, Verifier};
use serde_json::{Value, json};

use crate::common::{
    AUD, ISS, JwksServer, TestKey, accepted, b64, claims, now, refused, weak_rsa_jwk,
};

/// A server publishing `keys` and a verifier for ISS/AUD over it.
async fn setup(keys: &[&TestKey]) -> (JwksServer, Verifier) {
    let server = JwksServer::start(keys.iter().map(|key| key.public.clone()).collect()).await;
    let (_jwks, verifier) = server.verifier().await;
    (server, verifier)
}

#[tokio::test]
async fn every_algorithm_verifies_and_yields_typed_claims() {
    let keys = [
        TestKey::es256("es256"),
        TestKey::es384("es384"),
        TestKey::ed25519("eddsa"),
        TestKey::rs256("rs256"),
    ];
    let (_server, verifier) = setup(&keys.iter().collect::<Vec<_>>()).await;

    #[derive(serde::Deserialize)]
    struct Claims {
        sub: String,
        scope: String,
    }
    for (key, alg) in keys.iter().zip(Algorithm::ALL) {
        let verified: Verified<Claims> = verifier.verify(&key.token(&claims())).await.unwrap();
        assert_eq!(verified.claims().sub, "orders");
        assert_eq!(verified.claims().scope, "payments:write");
        assert_eq!(verified.kid(), key.kid);
        assert_eq!(verified.algorithm(), alg);
        assert!(verified.expires_at() > SystemTime::now());
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    let header = b64(r#"{"alg":"none","kid":"k1"}"#);
    let payload = b64(claims().to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.{}", b64("sig")),
    ] {
        assert_eq!(
            refused(&verifier, &token).await,
            Error::AlgorithmNotAllowed { alg: "none".into() }
        );
    }
}

#[tokio::test]
async fn hmac_signed_with_the_public_key_is_refused() {
    let ec = TestKey::es256("ec");
    let rsa = TestKey::rs256("rsa");
    let (_server, verifier) = setup(&[&ec, &rsa]).await;
    // The classic confusion: HS256 keyed with the public key's JWK or modulus.
    for (kid, secret) in [
        ("ec", ec.public.to_string().into_bytes()),
        ("rsa", rsa.public["n"].as_str().unwrap().as_bytes().to_vec()),
    ] {
        for alg in ["HS256", "HS384", "HS512"] {
            let input = format!(
                "{}.{}",
                b64(json!({"alg": alg, "kid": kid}).to_string()),
                b64(claims().to_string())
            );
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, &secret),
                input.as_bytes(),
            );
            let token = format!("{input}.{}", b64(tag.as_ref()));
            assert_eq!(
                refused(&verifier, &token).await,
                Error::AlgorithmNotAllowed { alg: alg.into() }
            );
        }
    }
}

#[tokio::test]
async fn oct_key_in_the_set_is_skipped() {
    let good = TestKey::es256("good");
    let server = JwksServer::start(vec![
        json!({"kty": "oct", "k": b64("published secret"), "kid": "sym", "alg": "HS256"}),
        good.public.clone(),
    ])
    .await;
    let (jwks, verifier) = server.verifier().await;
    let set = jwks.key_set().unwrap();
    assert_eq!(set.skipped()[0].reason, SkipReason::SymmetricKey);
    assert_eq!(set.len(), 1);
    // Whatever the token claims, the symmetric key is not there to use.
    let hs = {
        let input = format!(
            "{}.{}",
            b64(r#"{"alg":"HS256","kid":"sym"}"#),
            b64(claims().to_string())
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"published secret"),
            input.as_bytes(),
        );
        format!("{input}.{}", b64(tag.as_ref()))
    };
    assert_eq!(
        refused(&verifier, &hs).await,
        Error::AlgorithmNotAllowed {
            alg: "HS256".into()
        }
    );
    let es = good.sign_with_header(&json!({"alg": "ES256", "kid": "sym"}), &claims());
    assert_eq!(
        refused(&verifier, &es).await,
        Error::UnknownKid { kid: "sym".into() }
    );
    accepted(&verifier, &good.token(&claims())).await;
}

#[tokio::test]
async fn jwk_alg_different_from_header_alg_is_refused() {
    let es256 = TestKey::es256("es256");
    let es384 = TestKey::es384("es384");
    let rsa = TestKey::rs256("rsa");
    let (_server, verifier) = setup(&[&es256, &rsa]).await;
    // An ES384 signature presented under the ES256 key's kid.
    let token = es384.sign_with_header(&json!({"alg": "ES384", "kid": "es256"}), &claims());
    assert_eq!(
        refused(&verifier, &token).await,
        Error::AlgorithmMismatch {
            header: Algorithm::Es384,
            key: Algorithm::Es256
        }
    );
    let token = es256.sign_with_header(&json!({"alg": "ES256", "kid": "rsa"}), &claims());
    assert_eq!(
        refused(&verifier, &token).await,
        Error::AlgorithmMismatch {
            header: Algorithm::Es256,
            key: Algorithm::Rs256
        }
    );
}

#[tokio::test]
async fn algorithm_outside_the_allow_list_is_refused() {
    let es256 = TestKey::es256("es256");
    let rsa = TestKey::rs256("rsa");
    let server = JwksServer::start(vec![es256.public.clone(), rsa.public.clone()]).await;
    let jwks = server.builder().build().unwrap();
    let verifier = Verifier::builder(jwks)
        .any_issuer()
        .audience(AUD)
        .algorithms([Algorithm::Es256])
        .build()
        .unwrap();
    accepted(&verifier, &es256.token(&claims())).await;
    assert_eq!(
        refused(&verifier, &rsa.token(&claims())).await,
        Error::AlgorithmNotAllowed {
            alg: "RS256".into()
        }
    );
}

#[tokio::test]
async fn use_enc_and_key_ops_without_verify_are_skipped() {
    let enc = TestKey::es256("enc");
    let ops = TestKey::es256("ops");
    let good = TestKey::es256("good");
    let mut enc_jwk = enc.public.clone();
    enc_jwk["use"] = json!("enc");
    let mut ops_jwk = ops.public.clone();
    ops_jwk["key_ops"] = json!(["encrypt"]);
    let server = JwksServer::start(vec![enc_jwk, ops_jwk, good.public.clone()]).await;
    let (jwks, verifier) = server.verifier().await;
    let reasons: Vec<_> = jwks
        .key_set()
        .unwrap()
        .skipped()
        .iter()
        .map(|s| s.reason.clone())
        .collect();
    assert_eq!(
        reasons,
        [SkipReason::NotForSignatures, SkipReason::NotForSignatures]
    );
    assert_eq!(
        refused(&verifier, &enc.token(&claims())).await,
        Error::UnknownKid { kid: "enc".into() }
    );
    assert_eq!(
        refused(&verifier, &ops.token(&claims())).await,
        Error::UnknownKid { kid: "ops".into() }
    );
    accepted(&verifier, &good.token(&claims())).await;
}

#[tokio::test]
async fn key_with_private_members_is_skipped() {
    let leaked = TestKey::es256("leaked");
    let good = TestKey::es256("good");
    let server = JwksServer::start(vec![leaked.private.clone(), good.public.clone()]).await;
    let (jwks, verifier) = server.verifier().await;
    assert_eq!(
        jwks.key_set().unwrap().skipped()[0].reason,
        SkipReason::PrivateMembers
    );
    assert_eq!(
        refused(&verifier, &leaked.token(&claims())).await,
        Error::UnknownKid {
            kid: "leaked".into()
        }
    );
}

#[tokio::test]
async fn embedded_jwk_jku_x5u_x5c_headers_are_ignored() {
    let trusted = TestKey::es256("trusted");
    let attacker = TestKey::es256("attacker");
    let (server, verifier) = setup(&[&trusted]).await;
    let evil_url = server.server.url("/evil.json");
    let x5c = json!(["MIIBszCCAVmgAwIBAgIUJ"]);
    for (name, value) in [
        ("jwk", attacker.public.clone()),
        ("jku", json!(evil_url)),
        ("x5u", json!(evil_url)),
        ("x5c", x5c),
    ] {
        // The attacker's own kid: not in the set, whatever the header carries.
        let mut header = json!({"alg": "ES256", "kid": "attacker"});
        header[name] = value.clone();
        let token = attacker.sign_with_header(&header, &claims());
        assert_eq!(
            refused(&verifier, &token).await,
            Error::UnknownKid {
                kid: "attacker".into()
            },
            "{name}"
        );
        // The trusted kid, signed by the attacker's key that the header carries.
        let mut header = json!({"alg": "ES256", "kid": "trusted"});
        header[name] = value;
        let token = attacker.sign_with_header(&header, &claims());
        assert_eq!(
            refused(&verifier, &token).await,
            Error::BadSignature,
            "{name}"
        );
    }
    assert_eq!(server.server.hits("/evil.json"), 0);
    // The headers are ignored, not refused: an honest token carrying x5c verifies.
    let mut header = trusted.header();
    header["x5c"] = json!(["MIIB"]);
    accepted(&verifier, &trusted.sign_with_header(&header, &claims())).await;
}

#[tokio::test]
async fn kid_injection_is_an_opaque_unknown_kid_and_overlong_kid_is_refused() {
    let key = TestKey::es256("k1");
    let (server, verifier) = setup(&[&key]).await;
    for kid in [
        "../../../../etc/passwd",
        "' OR '1'='1",
        "http://127.0.0.1:1/evil",
        "k1\u{0000}",
        "K1",
    ] {
        let token = key.sign_with_header(&json!({"alg": "ES256", "kid": kid}), &claims());
        assert_eq!(
            refused(&verifier, &token).await,
            Error::UnknownKid { kid: kid.into() },
            "{kid:?}"
        );
    }
    let long = "k".repeat(129);
    let token = key.sign_with_header(&json!({"alg": "ES256", "kid": long}), &claims());
    assert_eq!(
        refused(&verifier, &token).await,
        Error::KidTooLong { len: 129, max: 128 }
    );
    // Refused before any lookup: no refresh was triggered for it.
    let fetches = server.fetches();
    let token = key.sign_with_header(
        &json!({"alg": "ES256", "kid": "x".repeat(10_000)}),
        &claims(),
    );
    assert!(matches!(
        refused(&verifier, &token).await,
        Error::TokenTooLarge { .. }
    ));
    assert_eq!(server.fetches(), fetches);
}

#[tokio::test]
async fn missing_or_empty_kid_is_refused() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    let token = key.sign_with_header(&json!({"alg": "ES256"}), &claims());
    assert_eq!(refused(&verifier, &token).await, Error::MissingKid);
    let token = key.sign_with_header(&json!({"alg": "ES256", "kid": ""}), &claims());
    assert_eq!(refused(&verifier, &token).await, Error::MissingKid);
}

/// CVE-2022-21449 ("psychic signatures"): r = s = 0 must not verify, nor may r or s
/// at or above the group order n. aws-lc is not known to be affected; this pins it.
#[tokio::test]
async fn ecdsa_signatures_with_zero_or_out_of_range_r_s_are_refused() {
    let p256 = TestKey::es256("p256");
    let p384 = TestKey::es384("p384");
    let (_server, verifier) = setup(&[&p256, &p384]).await;
    let n256 = hex("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551");
    let n384 = hex(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    );
    for (key, n) in [(&p256, n256), (&p384, n384)] {
        let size = n.len();
        let honest = key.token(&claims());
        accepted(&verifier, &honest).await;
        let (input, signature) = honest.rsplit_once('.').unwrap();
        let signature = base64_decode(signature);
        let (r, s) = signature.split_at(size);
        let zero = vec![0u8; size];
        let ones = vec![0xFFu8; size];
        let candidates: Vec<(&str, Vec<u8>)> = vec![
            ("r = s = 0", [zero.clone(), zero.clone()].concat()),
            ("r = 0", [zero.clone(), s.to_vec()].concat()),
            ("s = 0", [r.to_vec(), zero.clone()].concat()),
            ("r = n", [n.clone(), s.to_vec()].concat()),
            ("s = n", [r.to_vec(), n.clone()].concat()),
            ("r = s = n", [n.clone(), n.clone()].concat()),
            ("r, s > n", [ones.clone(), ones.clone()].concat()),
            // The DER encoding of r = s = 0 ("MAYCAQACAQA"), as in the original exploit.
            (
                "DER zero",
                vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00],
            ),
        ];
        for (name, forged) in candidates {
            let token = format!("{input}.{}", b64(&forged));
            assert_eq!(
                refused(&verifier, &token).await,
                Error::BadSignature,
                "{name}"
            );
        }
    }
}

#[tokio::test]
async fn tampered_token_is_a_bad_signature() {
    let key = TestKey::ed25519("ed");
    let (_server, verifier) = setup(&[&key]).await;
    let token = key.token(&claims());
    let (header, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut forged = claims();
    forged["scope"] = json!("admin");
    let token = format!("{header}.{}.{signature}", b64(forged.to_string()));
    assert_eq!(refused(&verifier, &token).await, Error::BadSignature);
}

#[tokio::test]
async fn time_claims_of_the_wrong_type_are_refused() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    let now = now();
    for (claim, value) in [
        ("exp", json!((now + 300).to_string())),
        ("exp", json!(null)),
        ("exp", json!([now + 300])),
        ("nbf", json!(now.to_string())),
        ("nbf", json!(null)),
        ("iat", json!(now.to_string())),
        ("iat", json!(true)),
    ] {
        let mut claims = claims();
        claims[claim] = value.clone();
        let error = refused(&verifier, &key.token(&claims)).await;
        assert_eq!(
            error,
            Error::InvalidClaimType { claim },
            "{claim} = {value}"
        );
    }
    // A repeated claim is not silently "last one wins".
    let payload = format!(
        r#"{{"exp":{},"exp":{},"iss":"{ISS}","aud":"{AUD}"}}"#,
        now - 10,
        now + 300
    );
    let token = key.sign_raw(&key.header().to_string(), &payload);
    assert_eq!(
        refused(&verifier, &token).await,
        Error::InvalidClaimType { claim: "exp" }
    );
}

#[tokio::test]
async fn missing_exp_is_refused() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        refused(&verifier, &key.token(&claims)).await,
        Error::MissingClaim { claim: "exp" }
    );
}

#[tokio::test]
async fn expired_not_yet_valid_and_future_iat_are_refused_beyond_the_leeway() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    let now = now();
    let with = |changes: Value| {
        let mut claims = claims();
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        key.token(&claims)
    };
    assert!(matches!(
        refused(
            &verifier,
            &with(json!({"exp": now - 31, "iat": now - 600, "nbf": now - 600}))
        )
        .await,
        Error::Expired { .. }
    ));
    assert!(matches!(
        refused(&verifier, &with(json!({"nbf": now + 60}))).await,
        Error::NotYetValid { .. }
    ));
    assert!(matches!(
        refused(&verifier, &with(json!({"iat": now + 60}))).await,
        Error::IssuedInFuture { .. }
    ));
    // Within the 30 s leeway, and fractional NumericDates, are fine.
    accepted(&verifier, &with(json!({"exp": now - 10}))).await;
    accepted(&verifier, &with(json!({"nbf": now + 10, "iat": now + 10}))).await;
    accepted(&verifier, &with(json!({"exp": now as f64 + 100.5}))).await;
    // verify_at: the same token judged at another instant.
    let token = with(json!({}));
    let later = SystemTime::now() + Duration::from_secs(400);
    assert!(matches!(
        verifier.verify_at::<Value>(&token, later).await,
        Err(Error::Expired { .. })
    ));
}

#[tokio::test]
async fn issuer_must_match_exactly() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    for iss in [
        json!("https://issuer.test.evil"),
        json!("https://issuer"),
        json!("https://ISSUER.test"),
        json!("https://issuer.test/"),
        json!(" https://issuer.test"),
    ] {
        let mut claims = claims();
        claims["iss"] = iss.clone();
        assert_eq!(
            refused(&verifier, &key.token(&claims)).await,
            Error::WrongIssuer {
                found: Some(iss.as_str().unwrap().into())
            }
        );
    }
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        refused(&verifier, &key.token(&claims)).await,
        Error::WrongIssuer { found: None }
    );
    claims["iss"] = json!(["https://issuer.test"]);
    assert_eq!(
        refused(&verifier, &key.token(&claims)).await,
        Error::InvalidClaimType { claim: "iss" }
    );
}

#[tokio::test]
async fn audience_must_contain_ours_and_is_refused_when_none_is_configured() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let (jwks, verifier) = server.verifier().await;
    let with_aud = |aud: Value| {
        let mut claims = claims();
        claims["aud"] = aud;
        key.token(&claims)
    };
    accepted(&verifier, &with_aud(json!(["billing", AUD]))).await;
    assert_eq!(
        refused(&verifier, &with_aud(json!("billing"))).await,
        Error::WrongAudience {
            found: vec!["billing".into()]
        }
    );
    assert_eq!(
        refused(&verifier, &with_aud(json!(["billing", "payments-eu"]))).await,
        Error::WrongAudience {
            found: vec!["billing".into(), "payments-eu".into()]
        }
    );
    assert_eq!(
        refused(&verifier, &with_aud(json!([AUD, 5]))).await,
        Error::InvalidClaimType { claim: "aud" }
    );
    let mut no_aud = claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        refused(&verifier, &key.token(&no_aud)).await,
        Error::WrongAudience { found: vec![] }
    );

    let no_audience_configured = Verifier::builder(jwks)
        .issuer(ISS)
        .without_audience()
        .build()
        .unwrap();
    assert_eq!(
        refused(&no_audience_configured, &key.token(&claims())).await,
        Error::UnexpectedAudience {
            found: vec![AUD.into()]
        }
    );
    accepted(&no_audience_configured, &key.token(&no_aud)).await;
}

#[tokio::test]
async fn unknown_crit_is_refused() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    let mut header = key.header();
    header["crit"] = json!(["b64"]);
    header["b64"] = json!(false);
    assert_eq!(
        refused(&verifier, &key.sign_with_header(&header, &claims())).await,
        Error::UnsupportedCritical { name: "b64".into() }
    );
    header["crit"] = json!([]);
    assert_eq!(
        refused(&verifier, &key.sign_with_header(&header, &claims())).await,
        Error::UnsupportedCritical {
            name: String::new()
        }
    );
}

#[tokio::test]
async fn typ_is_checked_when_configured() {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let jwks = server.builder().build().unwrap();
    let verifier = Verifier::builder(jwks)
        .issuer(ISS)
        .audience(AUD)
        .typ("at+jwt")
        .build()
        .unwrap();
    accepted(&verifier, &key.token(&claims())).await;
    let mut header = key.header();
    header["typ"] = json!("application/AT+JWT");
    accepted(&verifier, &key.sign_with_header(&header, &claims())).await;
    header["typ"] = json!("JWT");
    assert_eq!(
        refused(&verifier, &key.sign_with_header(&header, &claims())).await,
        Error::WrongType {
            expected: "at+jwt".into(),
            found: Some("JWT".into())
        }
    );
    header.as_object_mut().unwrap().remove("typ");
    assert_eq!(
        refused(&verifier, &key.sign_with_header(&header, &claims())).await,
        Error::WrongType {
            expected: "at+jwt".into(),
            found: None
        }
    );
}

#[tokio::test]
async fn oversized_and_many_dot_tokens_are_refused_before_parsing() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    let mut claims = claims();
    claims["padding"] = json!("x".repeat(9000));
    let token = key.token(&claims);
    assert_eq!(
        refused(&verifier, &token).await,
        Error::TokenTooLarge {
            len: token.len(),
            max: 8192
        }
    );
    // CVE-2025-30204: a token full of dots.
    let dots = ".".repeat(8000);
    assert_eq!(
        refused(&verifier, &dots).await,
        Error::Malformed {
            part: TokenPart::Token,
            reason: "more than two dots"
        }
    );
    let honest = key.token(&crate::common::claims());
    assert!(matches!(
        refused(&verifier, &format!("{honest}.")).await,
        Error::Malformed {
            part: TokenPart::Token,
            ..
        }
    ));
    assert!(matches!(
        refused(&verifier, "no-dots-at-all").await,
        Error::Malformed {
            part: TokenPart::Token,
            ..
        }
    ));
}

#[tokio::test]
async fn base64url_must_be_strict_and_json_well_formed() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    let honest = key.token(&claims());
    let (header, rest) = honest.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let cases = [
        (
            format!("{header}=.{payload}.{signature}"),
            TokenPart::Header,
        ),
        (
            format!("{header}.{payload}.{signature}=="),
            TokenPart::Signature,
        ),
        (
            format!(
                "{header}.{payload}.{}",
                signature.replace('-', "+").replace('_', "/") + "+/"
            ),
            TokenPart::Signature,
        ),
        (
            format!(" {header}.{payload}.{signature}"),
            TokenPart::Header,
        ),
        (
            format!("{}.{payload}.{signature}", b64("not json")),
            TokenPart::Header,
        ),
        (
            format!("{}.{payload}.{signature}", b64(r#"["ES256"]"#)),
            TokenPart::Header,
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                b64(r#"{"alg":"ES256","alg":"ES256","kid":"k1"}"#)
            ),
            TokenPart::Header,
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                b64(r#"{"alg":"ES256","kid":7}"#)
            ),
            TokenPart::Header,
        ),
    ];
    for (token, part) in cases {
        let error = refused(&verifier, &token).await;
        assert!(
            matches!(error, Error::Malformed { part: got, .. } if got == part),
            "{token}: {error:?}"
        );
    }
    // A payload that is not a JSON object, correctly signed.
    let token = key.sign_raw(&key.header().to_string(), "[1,2,3]");
    assert!(matches!(
        refused(&verifier, &token).await,
        Error::Malformed {
            part: TokenPart::Payload,
            ..
        }
    ));
    // Non-canonical trailing bits in the signature ("...A" vs "...B" decode alike).
    let last = signature.chars().last().unwrap();
    let twin = match last {
        'A' => 'B',
        'Q' => 'R',
        'g' => 'h',
        'w' => 'x',
        _ => 'A',
    };
    let token = format!(
        "{header}.{payload}.{}{twin}",
        &signature[..signature.len() - 1]
    );
    assert!(matches!(
        refused(&verifier, &token).await,
        Error::Malformed {
            part: TokenPart::Signature,
            ..
        }
    ));
}

#[tokio::test]
async fn claims_that_do_not_fit_the_callers_type_are_refused() {
    let key = TestKey::es256("k1");
    let (_server, verifier) = setup(&[&key]).await;
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Claims {
        tenant: String,
    }
    let result = verifier.verify::<Claims>(&key.token(&claims())).await;
    assert!(
        matches!(result, Err(Error::InvalidClaims { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn rsa_keys_below_2048_bits_are_skipped() {
    let good = TestKey::rs256("good");
    let server = JwksServer::start(vec![weak_rsa_jwk("weak", 1024), good.public.clone()]).await;
    let (jwks, verifier) = server.verifier().await;
    assert_eq!(
        jwks.key_set().unwrap().skipped()[0].reason,
        SkipReason::WeakRsaKey { bits: 1024 }
    );
    let token = good.sign_with_header(&json!({"alg": "RS256", "kid": "weak"}), &claims());
    assert_eq!(
        refused(&verifier, &token).await,
        Error::UnknownKid { kid: "weak".into() }
    );
    accepted(&verifier, &good.token(&claims())).await;
}

#[tokio::test]
async fn duplicate_kid_is_ambiguous_never_first_wins() {
    let first = TestKey::es256("dup");
    let second = TestKey::es256("dup");
    let other = TestKey::es256("other");
    let server = JwksServer::start(vec![
        first.public.clone(),
        second.public.clone(),
        other.public.clone(),
        other.public.clone(),
    ])
    .await;
    let (jwks, verifier) = server.verifier().await;
    let set = jwks.key_set().unwrap();
    assert_eq!(set.len(), 1, "the identical repeat of `other` is kept once");
    let reasons: Vec<_> = set
        .skipped()
        .iter()
        .map(|s| (s.index, s.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        [(0, SkipReason::DuplicateKid), (1, SkipReason::DuplicateKid)]
    );
    for key in [&first, &second] {
        assert_eq!(
            refused(&verifier, &key.token(&claims())).await,
            Error::AmbiguousKid { kid: "dup".into() }
        );
    }
    accepted(&verifier, &other.token(&claims())).await;
}

#[tokio::test]
async fn unsupported_key_types_are_skipped_while_the_rest_work() {
    let good = TestKey::ed25519("good");
    let also_good = TestKey::es384("also-good");
    let server = JwksServer::start(vec![
        json!({"kty": "OKP", "crv": "Ed448", "x": b64([7u8; 57]), "kid": "ed448", "alg": "EdDSA"}),
        json!({"kty": "AKP", "alg": "ML-DSA-65", "pub": b64([1u8; 64]), "kid": "mldsa"}),
        json!({"kty": "EC", "crv": "P-521", "x": b64([1u8; 66]), "y": b64([1u8; 66]), "kid": "p521", "alg": "ES512"}),
        json!({"kty": "EC", "crv": "P-256", "x": b64([1u8; 32]), "y": b64([2u8; 32]), "kid": "off-curve", "alg": "ES256"}),
        json!({"kty": "RSA", "n": b64([0xC5u8; 256]), "e": "AQAB", "kid": "ps", "alg": "PS256"}),
        json!("not a key"),
        good.public.clone(),
        also_good.public.clone(),
    ])
    .await;
    let (jwks, verifier) = server.verifier().await;
    let set = jwks.key_set().unwrap();
    let reasons: Vec<_> = set.skipped().iter().map(|s| s.reason.clone()).collect();
    assert_eq!(
        reasons,
        [
            SkipReason::UnsupportedCurve("Ed448".into()),
            SkipReason::UnsupportedKeyType("AKP".into()),
            SkipReason::UnsupportedAlgorithm("ES512".into()),
            SkipReason::InvalidKeyMaterial,
            SkipReason::UnsupportedAlgorithm("PS256".into()),
            SkipReason::Malformed("key (not an object)"),
        ]
    );
    accepted(&verifier, &good.token(&claims())).await;
    accepted(&verifier, &also_good.token(&claims())).await;
    assert!(jwks.status().is_usable());
}

#[tokio::test]
async fn static_key_set_verifies_without_a_server() {
    let key = TestKey::es256("k1");
    let document = json!({"keys": [key.public]}).to_string();
    let keys = KeySet::from_json(document.as_bytes()).unwrap();
    let verifier = Verifier::builder(keys)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    accepted(&verifier, &key.token(&claims())).await;
    let other = TestKey::es256("k2");
    assert_eq!(
        refused(&verifier, &other.token(&claims())).await,
        Error::UnknownKid { kid: "k2".into() }
    );
    assert!(matches!(
        KeySet::from_json(br#"{"keys":[{"kty":"oct","k":"AA","kid":"x"}]}"#),
        Err(JwksError::NoUsableKeys { skipped: 1 })
    ));
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn a_verifier_needs_an_expected_issuer_and_audience_unless_told_otherwise() {
    let key = TestKey::es256("k1");
    let document = json!({"keys": [key.public]}).to_string();
    let keys = || KeySet::from_json(document.as_bytes()).unwrap();
    let build_refused = |builder: jwkd_client::VerifierBuilder, option: &str| match builder.build()
    {
        Err(jwkd_client::BuildError::InvalidOption { name, reason }) => {
            assert_eq!(name, option, "{reason}");
        }
        other => panic!("expected a refusal naming {option}, got {other:?}"),
    };
    build_refused(Verifier::builder(keys()).audience(AUD), "issuer");
    build_refused(Verifier::builder(keys()).issuer(ISS), "audience");
    build_refused(
        Verifier::builder(keys())
            .issuer(ISS)
            .audience(AUD)
            .without_audience(),
        "audience",
    );
    // Opting out is explicit, and does what it says.
    let any_issuer = Verifier::builder(keys())
        .any_issuer()
        .audience(AUD)
        .build()
        .unwrap();
    let mut elsewhere = claims();
    elsewhere["iss"] = json!("https://another-domain.example");
    accepted(&any_issuer, &key.token(&elsewhere)).await;
    let strict = Verifier::builder(keys())
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    assert!(matches!(
        refused(&strict, &key.token(&elsewhere)).await,
        jwkd_client::Error::WrongIssuer { .. }
    ));
}
