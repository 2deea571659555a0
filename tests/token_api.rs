//! The token service (CONTRACT §6.2–§6.7): client credentials, issuer key pull,
//! `/v1/sign`, admin, discovery, metrics, the private listener and TLS.
//!
//! The daemon runs in process ([`InProcess`]) on a manual clock, so times in
//! tokens are exact. On the binary: what `serve` refuses at start (an exit
//! code), and `jwkd verify` (a verb).

use std::collections::HashSet;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use chrono::{DateTime, TimeZone as _, Utc};

use crate::util::{Client, InProcess, Response, TestConfig, TestDir};

const ISSUER: &str = "https://auth.test.example";

/// Where the daemon's clock stands when a test starts (the daily rotation is at 03:00).
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
}

/// The daemon of [`config`], in process, at [`start`].
fn serve() -> InProcess {
    InProcess::start(&config().build(), start())
}

/// A daemon with an ordinary client, an issuer, an admin, and an EdDSA client.
fn config() -> TestConfig {
    TestConfig::slow()
        .algorithms(&["ES256", "EdDSA"])
        .issuer(ISSUER)
        .set("issuer", "token_lifetime", "15m")
        .client(
            Client::new("orders", "orders-secret")
                .audiences(&["payments", "inventory"])
                .scopes(&["payments:write", "payments:read"]),
        )
        .client(
            Client::new("minter", "minter-secret")
                .audiences(&["anything"])
                .roles(&["issuer"]),
        )
        .client(Client::new("root", "root-secret").roles(&["admin"]))
        .client(
            Client::new("edge", "edge-secret")
                .audiences(&["payments"])
                .algorithm("EdDSA"),
        )
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn token_request(daemon: &InProcess, headers: &[(&str, &str)], body: &str) -> Response {
    let mut all = vec![FORM];
    all.extend_from_slice(headers);
    daemon.request("POST", "/oauth2/token", &all, body.as_bytes())
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// Verifies a compact JWS against the daemon's JWKS with aws-lc-rs; returns (header, claims).
fn verify(daemon: &InProcess, token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header = decode_part(parts[0]);
    let claims = decode_part(parts[1]);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let jwks = daemon.get("/.well-known/jwks.json").json();
    let kid = header["kid"].as_str().expect("kid");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|jwk| jwk["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} not in the JWKS {jwks}"));
    assert_eq!(jwk["alg"], header["alg"]);
    let b64 = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let message = format!("{}.{}", parts[0], parts[1]);
    let result = match header["alg"].as_str().unwrap() {
        "ES256" => {
            let mut point = vec![4u8];
            point.extend(b64("x"));
            point.extend(b64("y"));
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message.as_bytes(), &signature)
        }
        "EdDSA" => {
            UnparsedPublicKey::new(&ED25519, b64("x")).verify(message.as_bytes(), &signature)
        }
        "RS256" => RsaPublicKeyComponents {
            n: b64("n"),
            e: b64("e"),
        }
        .verify(&RSA_PKCS1_2048_8192_SHA256, message.as_bytes(), &signature),
        other => panic!("unexpected alg {other}"),
    };
    result.unwrap_or_else(|_| panic!("signature of {token} does not verify with {jwk}"));
    (header, claims)
}

#[test]
fn client_credentials_tokens_follow_rfc9068_and_verify() {
    let daemon = serve();

    let response = token_request(
        &daemon,
        &[("Authorization", &basic("orders", "orders-secret"))],
        "grant_type=client_credentials&audience=inventory&scope=payments%3Aread",
    );
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(
        response.header("cache-control"),
        Some("no-store"),
        "{response}"
    );
    let body = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "payments:read");
    let (header, claims) = verify(&daemon, body["access_token"].as_str().unwrap());
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "orders");
    assert_eq!(claims["client_id"], "orders");
    assert_eq!(claims["aud"], "inventory");
    assert_eq!(claims["scope"], "payments:read");
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(iat, start().timestamp());
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    assert_eq!(claims["exp"].as_i64(), Some(iat + 900));

    // Form credentials, the default audience and every allowed scope; jti is unique.
    let mut jtis = HashSet::new();
    for _ in 0..5 {
        let response = token_request(
            &daemon,
            &[],
            "grant_type=client_credentials&client_id=orders&client_secret=orders-secret",
        );
        assert_eq!(response.status, 200, "{response}");
        let (_, claims) = verify(&daemon, response.json()["access_token"].as_str().unwrap());
        assert_eq!(claims["aud"], "payments");
        assert_eq!(claims["scope"], "payments:write payments:read");
        assert!(
            jtis.insert(claims["jti"].as_str().unwrap().to_owned()),
            "jti repeated"
        );
    }

    // A client of the EdDSA family gets EdDSA tokens.
    let response = token_request(
        &daemon,
        &[("Authorization", &basic("edge", "edge-secret"))],
        "grant_type=client_credentials",
    );
    let (header, _) = verify(&daemon, response.json()["access_token"].as_str().unwrap());
    assert_eq!(header["alg"], "EdDSA");
}

/// (what, headers, body, expected status, expected error code)
type ErrorCase = (
    &'static str,
    Vec<(&'static str, String)>,
    String,
    u16,
    &'static str,
);

#[test]
fn token_endpoint_errors() {
    let daemon = serve();
    let good = basic("orders", "orders-secret");
    let grant = "grant_type=client_credentials";

    let cases: Vec<ErrorCase> = vec![
        (
            "wrong secret",
            vec![("Authorization", basic("orders", "nope"))],
            grant.into(),
            401,
            "invalid_client",
        ),
        (
            "unknown client",
            vec![("Authorization", basic("ghost", "orders-secret"))],
            grant.into(),
            401,
            "invalid_client",
        ),
        (
            "no credentials",
            vec![],
            grant.into(),
            401,
            "invalid_client",
        ),
        (
            "bad grant type",
            vec![("Authorization", good.clone())],
            "grant_type=password".into(),
            400,
            "unsupported_grant_type",
        ),
        (
            "no grant type",
            vec![("Authorization", good.clone())],
            "audience=payments".into(),
            400,
            "invalid_request",
        ),
        (
            "unknown audience",
            vec![("Authorization", good.clone())],
            format!("{grant}&audience=elsewhere"),
            400,
            "invalid_target",
        ),
        (
            "scope not allowed",
            vec![("Authorization", good.clone())],
            format!("{grant}&scope=admin"),
            400,
            "invalid_scope",
        ),
        (
            "repeated parameter",
            vec![("Authorization", good.clone())],
            format!("{grant}&{grant}"),
            400,
            "invalid_request",
        ),
        (
            "two auth methods",
            vec![("Authorization", good.clone())],
            format!("{grant}&client_id=orders&client_secret=orders-secret"),
            400,
            "invalid_request",
        ),
    ];
    let mut unauthorized_bodies = HashSet::new();
    for (what, headers, body, status, error) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = token_request(&daemon, &headers, &body);
        response.assert_json_error(status);
        assert_eq!(response.json()["error"], error, "{what}\n{response}");
        if status == 401 {
            let challenge = response.header("www-authenticate").unwrap_or("");
            assert!(
                challenge.starts_with("Basic"),
                "{what}: WWW-Authenticate {challenge:?}"
            );
            if what != "no credentials" {
                unauthorized_bodies.insert(response.text());
            }
        }
    }
    assert_eq!(
        unauthorized_bodies.len(),
        1,
        "unknown client and wrong secret must look the same: {unauthorized_bodies:?}"
    );

    let response = daemon.request(
        "POST",
        "/oauth2/token",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &good),
        ],
        b"{}",
    );
    response.assert_json_error(400);
    let big = format!("{grant}&pad={}", "x".repeat(70 * 1024));
    token_request(&daemon, &[("Authorization", &good)], &big).assert_json_error(413);
    daemon.get("/oauth2/token").assert_json_error(405);
}

#[test]
fn issuers_pull_keys_and_sign() {
    let daemon = serve();

    for authorization in [
        "Bearer minter:minter-secret".to_owned(),
        basic("minter", "minter-secret"),
    ] {
        let response = daemon.request(
            "GET",
            "/v1/signing-keys",
            &[("Authorization", &authorization)],
            b"",
        );
        assert_eq!(response.status, 200, "{response}");
        assert_eq!(response.header("cache-control"), Some("no-store"));
        let body = response.json();
        for slot in ["current", "next"] {
            let key = &body[slot];
            assert_eq!(key["alg"], "ES256", "{body}");
            for member in ["kid", "activates_at", "jwk"] {
                assert!(!key[member].is_null(), "{slot}.{member} missing: {body}");
            }
            assert!(key["jwk"]["d"].is_string(), "{slot} has no private d");
        }
        assert_eq!(
            body["current"]["deactivates_at"],
            body["next"]["activates_at"]
        );

        // Sign a token the way an issuer holding the pulled key would.
        let jwk = &body["current"]["jwk"];
        let b64 = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
        let mut point = vec![4u8];
        point.extend(b64("x"));
        point.extend(b64("y"));
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &b64("d"),
            &point,
        )
        .unwrap();
        let header = URL_SAFE_NO_PAD
            .encode(json!({"alg": "ES256", "kid": jwk["kid"], "typ": "JWT"}).to_string());
        let claims =
            URL_SAFE_NO_PAD.encode(json!({"sub": "someone", "exp": 4_000_000_000u64}).to_string());
        let message = format!("{header}.{claims}");
        let signature = pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), message.as_bytes())
            .unwrap();
        let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
        verify(&daemon, &token);
    }

    // /v1/sign fills in the registered claims and caps exp.
    let far = start().timestamp() + 10 * 3600;
    let response = daemon.request(
        "POST",
        "/v1/sign",
        &[
            ("Authorization", "Bearer minter:minter-secret"),
            ("Content-Type", "application/json"),
        ],
        json!({"sub": "user-1", "aud": "anything", "exp": far, "iat": 1})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(response.status, 200, "{response}");
    let body = response.json();
    assert_eq!(body["exp_capped"], true);
    let (header, claims) = verify(&daemon, body["token"].as_str().unwrap());
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "user-1");
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(
        iat,
        start().timestamp(),
        "iat not set by the daemon: {claims}"
    );
    assert_eq!(claims["exp"].as_i64(), Some(iat + 3600));
    assert!(claims["jti"].is_string() && claims["nbf"].is_number());

    let near = start().timestamp() + 60;
    let response = daemon.request(
        "POST",
        "/v1/sign",
        &[("Authorization", "Bearer minter:minter-secret")],
        json!({"sub": "user-2", "exp": near}).to_string().as_bytes(),
    );
    let body = response.json();
    assert_eq!(body["exp_capped"], false, "{body}");
    let (header, claims) = verify(&daemon, body["token"].as_str().unwrap());
    assert_eq!(claims["exp"].as_i64(), Some(near));
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(
        claims["aud"], "anything",
        "absent aud: the client's first audience"
    );
    assert_eq!(header["typ"], "JWT", "never at+jwt: {header}");

    // Errors: no credentials, wrong role, wrong secret, bad bodies.
    daemon.get("/v1/signing-keys").assert_json_error(401);
    daemon
        .request(
            "GET",
            "/v1/signing-keys",
            &[("Authorization", "Bearer orders:orders-secret")],
            b"",
        )
        .assert_json_error(403);
    daemon
        .request(
            "GET",
            "/v1/signing-keys",
            &[("Authorization", "Bearer minter:wrong")],
            b"",
        )
        .assert_json_error(401);
    let auth = [("Authorization", "Bearer minter:minter-secret")];
    daemon
        .request("POST", "/v1/sign", &auth, b"[1, 2]")
        .assert_json_error(400);
    daemon
        .request("POST", "/v1/sign", &auth, b"{not json")
        .assert_json_error(400);
    daemon
        .request("POST", "/v1/sign", &auth, br#"{"exp": "tomorrow"}"#)
        .assert_json_error(400);
    daemon
        .request("GET", "/v1/sign", &auth, b"")
        .assert_json_error(405);
}

#[test]
fn admins_rotate_and_revoke_over_http() {
    let daemon = serve();
    let admin = [("Authorization", "Bearer root:root-secret")];
    let before = daemon.jwks_kids(true);

    daemon
        .request(
            "POST",
            "/v1/rotate",
            &[("Authorization", "Bearer minter:minter-secret")],
            b"",
        )
        .assert_json_error(403);
    daemon
        .request("POST", "/v1/rotate", &[], b"")
        .assert_json_error(401);

    // The next keys were just made: the rotation brings them forward to the end
    // of their lead, and makes no key.
    let response = daemon.request("POST", "/v1/rotate", &admin, b"");
    assert_eq!(response.status, 200, "{response}");
    let keys = response.json()["keys"].as_array().unwrap().clone();
    assert_eq!(
        keys.len(),
        4,
        "two families: current, pending next: {keys:?}"
    );
    let changes = response.json()["changes"].to_string();
    assert!(changes.contains("becomes current at"), "{changes}");
    assert_eq!(
        daemon.jwks_kids(true),
        before,
        "a rotation changed the JWKS"
    );
    // Asking again while that rotation is pending changes nothing and says so.
    let again = daemon.request("POST", "/v1/rotate", &admin, b"");
    assert_eq!(again.status, 200, "{again}");
    assert_eq!(again.json()["keys"].as_array().unwrap().len(), 4, "{again}");
    assert!(
        again.json()["changes"]
            .to_string()
            .contains("a rotation is already pending"),
        "{again}"
    );

    let victim = keys
        .iter()
        .find(|key| key["alg"] == "ES256" && key["state"] == "current")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = daemon.request("POST", &format!("/v1/revoke/{victim}"), &admin, b"");
    assert_eq!(response.status, 200, "{response}");
    assert!(
        !daemon.jwks_kids(true).contains(&victim),
        "revoked key still published"
    );
    daemon
        .request("POST", &format!("/v1/revoke/{victim}"), &admin, b"")
        .assert_json_error(409);
    daemon
        .request("POST", "/v1/revoke/no-such-kid", &admin, b"")
        .assert_json_error(404);
    assert!(
        daemon.logs().contains("root"),
        "admin actions are audited with the client id"
    );
}

#[test]
fn discovery_and_metrics() {
    let daemon = serve();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let body = daemon.get(path).json();
        assert_eq!(body["issuer"], ISSUER);
        assert_eq!(body["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
        assert_eq!(body["token_endpoint"], format!("{ISSUER}/oauth2/token"));
        assert_eq!(body["grant_types_supported"], json!(["client_credentials"]));
        assert_eq!(
            body["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post"])
        );
        assert_eq!(
            body["id_token_signing_alg_values_supported"],
            json!(["ES256", "EdDSA"])
        );
    }
    let response = token_request(
        &daemon,
        &[("Authorization", &basic("orders", "orders-secret"))],
        "grant_type=client_credentials",
    );
    assert_eq!(response.status, 200);
    let metrics = daemon.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for series in [
        "jwkd_tokens_issued_total 1",
        "jwkd_keys{state=\"current\"} 2",
        "jwkd_keys{state=\"next\"} 2",
        "jwkd_rotations_total",
        "jwkd_rotation_failures_total 0",
        "jwkd_store_errors_total 0",
        "jwkd_current_key_age_seconds{alg=\"ES256\"}",
        "jwkd_http_requests_total{route=\"/oauth2/token\",status=\"200\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
}

#[test]
fn without_clients_the_credential_endpoints_are_unknown_routes_until_a_reload_adds_one() {
    let config = TestConfig::slow()
        .issuer(ISSUER)
        .set("server", "private_listen", "127.0.0.1:0");
    let daemon = InProcess::start(&config.build(), start());
    let private = daemon.private_addr();
    let auth = basic("orders", "orders-secret");
    let grant = b"grant_type=client_credentials";
    let mut answers = Vec::new();
    for (address, method, path) in [
        (daemon.addr(), "POST", "/oauth2/token"),
        (daemon.addr(), "GET", "/oauth2/token"),
        (private, "GET", "/v1/signing-keys"),
        (private, "POST", "/v1/sign"),
        (private, "POST", "/v1/rotate"),
        (private, "POST", "/v1/revoke/some-kid"),
        (private, "GET", "/v1/rotate"),
    ] {
        let response = crate::util::http(
            address,
            method,
            path,
            &[("Authorization", &auth), FORM],
            grant,
        )
        .unwrap();
        answers.push(format!("{method} {path}: {}", response.status));
        if response.status == 404 {
            response.assert_json_error(404);
        }
    }
    expect_test::expect![[r#"
        POST /oauth2/token: 404
        GET /oauth2/token: 404
        GET /v1/signing-keys: 404
        POST /v1/sign: 404
        POST /v1/rotate: 404
        POST /v1/revoke/some-kid: 404
        GET /v1/rotate: 404"#]]
    .assert_eq(&answers.join("\n"));
    // What is always served still is.
    assert_eq!(daemon.get("/.well-known/jwks.json").status, 200);
    assert_eq!(daemon.get("/.well-known/openid-configuration").status, 200);

    // The first client, added by a reload, opens them without a restart.
    daemon.reload(
        &config
            .client(Client::new("orders", "orders-secret").audiences(&["payments"]))
            .build(),
    );
    let response = token_request(
        &daemon,
        &[("Authorization", &auth)],
        "grant_type=client_credentials",
    );
    assert_eq!(
        response.status, 200,
        "no token after the reload: {response}"
    );
    let response = daemon.request_private("POST", "/v1/rotate", &[("Authorization", &auth)], b"");
    assert_eq!(
        response.status, 403,
        "the client is known, not an admin: {response}"
    );
}

#[test]
fn the_private_listener_alone_serves_issuer_and_admin_endpoints() {
    let daemon = InProcess::start(
        &config()
            .set("server", "private_listen", "127.0.0.1:0")
            .build(),
        start(),
    );
    let auth = [("Authorization", "Bearer minter:minter-secret")];
    daemon
        .request("GET", "/v1/signing-keys", &auth, b"")
        .assert_json_error(404);
    // The token endpoint stays public.
    let response = token_request(
        &daemon,
        &[("Authorization", &basic("orders", "orders-secret"))],
        "grant_type=client_credentials",
    );
    assert_eq!(response.status, 200, "{response}");
    let response = daemon.request_private("GET", "/v1/signing-keys", &auth, b"");
    assert_eq!(response.status, 200, "{response}");
    daemon
        .request_private("GET", "/.well-known/jwks.json", &[], b"")
        .assert_json_error(404);
}

#[test]
fn credentials_over_plain_http_off_loopback_are_refused_at_start() {
    let dir = TestDir::new(&config().set("server", "listen", "0.0.0.0:0").build());
    let outcome = dir.run("serve", &[]);
    outcome.assert_code(2);
    assert!(outcome.stderr.contains("server.listen"), "{outcome}");
    assert!(outcome.stderr.contains("plain HTTP"), "{outcome}");
}

#[test]
fn https_with_an_rcgen_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let dir = TestDir::new(
        &config()
            .set("server", "tls_cert", "tls.crt")
            .set("server", "tls_key", "tls.key")
            .build(),
    );
    dir.write("tls.crt", certified.cert.pem());
    dir.write("tls.key", certified.signing_key.serialize_pem());
    // The paths are relative to the config file: start beside the same files.
    let daemon = InProcess::start_in(dir, start());
    let addr = daemon.addr();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(
            b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        String::from_utf8_lossy(&raw).into_owned()
    });
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"keys\""), "{response}");
}

#[test]
fn many_concurrent_token_requests_all_verify() {
    let daemon = serve();
    let authorization = basic("orders", "orders-secret");
    let addr = daemon.addr();
    let tokens: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..10)
                        .map(|_| {
                            let response = crate::util::http(
                                addr,
                                "POST",
                                "/oauth2/token",
                                &[FORM, ("Authorization", &authorization)],
                                b"grant_type=client_credentials",
                            )
                            .unwrap();
                            assert_eq!(response.status, 200, "{response}");
                            response.json()["access_token"].as_str().unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap())
            .collect()
    });
    assert_eq!(tokens.len(), 80);
    for token in &tokens {
        verify(&daemon, token);
    }
}

#[test]
fn jwkd_verify_checks_tokens_with_the_client_crate() {
    // `jwkd verify` checks `exp` by the wall clock: tokens minted now.
    let daemon = InProcess::start(&config().build(), Utc::now());
    let response = token_request(
        &daemon,
        &[("Authorization", &basic("orders", "orders-secret"))],
        "grant_type=client_credentials",
    );
    let token = response.json()["access_token"].as_str().unwrap().to_owned();
    let jwks = format!("http://{}/.well-known/jwks.json", daemon.addr());
    let verify = |args: &[&str], stdin: Option<&[u8]>| {
        let mut cmd = crate::util::jwkd();
        cmd.arg("verify").arg("--jwks").arg(&jwks).args(args);
        crate::util::run_cmd(cmd, stdin, crate::util::CMD_TIMEOUT)
    };

    let outcome = verify(
        &["--issuer", ISSUER, "--audience", "payments", &token],
        None,
    );
    outcome.assert_code(0);
    let claims: Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(claims["sub"], "orders", "{outcome}");

    let outcome = verify(
        &[
            "--issuer",
            ISSUER,
            "--audience",
            "payments",
            "--algorithm",
            "ES256",
            "-",
        ],
        Some(token.as_bytes()),
    );
    outcome.assert_code(0);

    for (args, reason) in [
        (
            vec!["--issuer", ISSUER, "--audience", "elsewhere"],
            "audience",
        ),
        (
            vec![
                "--issuer",
                "https://other.example",
                "--audience",
                "payments",
            ],
            "issuer",
        ),
        (
            vec![
                "--issuer",
                ISSUER,
                "--audience",
                "payments",
                "--algorithm",
                "RS256",
            ],
            "algorithm",
        ),
    ] {
        let mut args = args.clone();
        args.push(&token);
        let outcome = verify(&args, None);
        outcome.assert_code(1);
        assert_eq!(
            outcome.stderr_lines().len(),
            1,
            "one line expected\n{outcome}"
        );
        assert!(
            outcome.stderr.to_lowercase().contains(reason),
            "{reason}\n{outcome}"
        );
    }
    // Flip one character well inside the signature.
    let mut tampered = token.clone().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    verify(
        &["--issuer", ISSUER, "--audience", "payments", &tampered],
        None,
    )
    .assert_code(1);
    verify(&["--algorithm", "HS256", &token], None).assert_code(2);
}
