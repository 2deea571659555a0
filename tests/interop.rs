//! Interop with a verifier no one here wrote: PyJWT's `PyJWKClient` fetches our
//! JWKS and verifies tokens minted by `/oauth2/token`, across key rotations.
//!
//! `scripts/test` installs PyJWT into `.venv` and points `JWKD_TEST_PYTHON` at its
//! interpreter. Without it the test says loudly that it skipped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

use crate::util::{Client, TestConfig, TestDir};

/// A long-lived verifier: one token per line in, `ok <kid>` or `error <reason>` out.
const VERIFIER: &str = r#"
import sys, jwt
url, audience, issuer = sys.argv[1], sys.argv[2], sys.argv[3]
# Cache the key set for the JWKS max-age, as a well-behaved verifier does.
client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=1)
for line in sys.stdin:
    token = line.strip()
    try:
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key, algorithms=["ES256", "EdDSA", "RS256"], audience=audience,
                            issuer=issuer, options={"require": ["exp", "iat", "iss", "aud"]})
        print("ok", key.key_id, flush=True)
    except Exception as err:
        print("error", type(err).__name__, err, flush=True)
"#;

/// PyJWT's `PyJWKClient` verifying tokens against the JWKS at a URL, in a
/// Python process of its own; stopped on drop.
pub(crate) struct PyJwt {
    child: std::process::Child,
    to_python: Option<std::process::ChildStdin>,
    from_python: BufReader<std::process::ChildStdout>,
}

impl PyJwt {
    /// Verifies against the JWKS at `url`, for `audience` and `issuer`. Fails,
    /// saying what to install, without `JWKD_TEST_PYTHON`.
    pub(crate) fn start(url: &str, audience: &str, issuer: &str) -> PyJwt {
        let python = std::env::var_os("JWKD_TEST_PYTHON").unwrap_or_else(|| {
            panic!(
                "JWKD_TEST_PYTHON is not set: this test needs a Python with PyJWT; run \
                 ./scripts/test, which installs it into .venv, or set it to such a Python"
            )
        });
        let mut child = Command::new(python)
            .args(["-c", VERIFIER, url, audience, issuer])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the PyJWT verifier");
        let to_python = child.stdin.take();
        let from_python = BufReader::new(child.stdout.take().expect("piped stdout"));
        PyJwt {
            child,
            to_python,
            from_python,
        }
    }

    /// PyJWT's verdict on `token`: `ok <kid>` or `error <reason>`.
    pub(crate) fn verify(&mut self, token: &str) -> String {
        let to_python = self.to_python.as_mut().expect("open until drop");
        writeln!(to_python, "{token}").unwrap();
        let mut answer = String::new();
        self.from_python.read_line(&mut answer).unwrap();
        answer
    }
}

impl Drop for PyJwt {
    fn drop(&mut self) {
        // Closing its stdin ends the verifier's loop.
        drop(self.to_python.take());
        let _ = self.child.wait();
    }
}

#[test]
fn pyjwt_verifies_our_tokens_across_rotations() {
    // `cargo nextest run` leaves this test out; `--profile e2e` runs it.
    let dir = TestDir::new(
        &TestConfig::fast()
            .algorithms(&["ES256", "RS256"])
            .set("keys", "max_token_lifetime", "4s")
            .issuer("https://issuer.test")
            .set("issuer", "token_lifetime", "4s")
            .client(Client::new("orders", "orders-secret").audiences(&["payments"]))
            .client(
                Client::new("legacy", "orders-secret")
                    .audiences(&["payments"])
                    .algorithm("RS256"),
            )
            .build(),
    );
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let url = format!("http://{}/.well-known/jwks.json", daemon.addr());
    let mut verifier = PyJwt::start(&url, "payments", "https://issuer.test");

    let mut kids_seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(9);
    let mut verified = 0;
    while Instant::now() < deadline {
        for client in ["orders", "legacy"] {
            let authorization = format!(
                "Basic {}",
                STANDARD.encode(format!("{client}:orders-secret"))
            );
            let response = daemon.request(
                "POST",
                "/oauth2/token",
                &[
                    ("Authorization", &authorization),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                b"grant_type=client_credentials",
            );
            assert_eq!(response.status, 200, "{response}");
            let token = response.json()["access_token"].as_str().unwrap().to_owned();
            let header: Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(token.split('.').next().unwrap())
                    .unwrap(),
            )
            .unwrap();
            let answer = verifier.verify(&token);
            assert!(
                answer.starts_with("ok "),
                "PyJWT rejected a {} token from kid {}: {answer}\n---- daemon ----\n{}",
                header["alg"],
                header["kid"],
                daemon.stderr_text()
            );
            kids_seen.insert(header["kid"].as_str().unwrap().to_owned());
            verified += 1;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    // Two families rotating every 2 s for 9 s: at least three keys each signed.
    assert!(
        kids_seen.len() >= 6,
        "only {} signing keys seen over {verified} tokens",
        kids_seen.len()
    );
}

/// Two issuers on one daemon: PyJWT, reading billing's JWKS, refuses a token
/// that claims billing but is signed with a key pulled from the default
/// issuer, and accepts billing's own, across rotations of both.
#[test]
fn pyjwt_refuses_a_token_signed_by_another_issuers_key() {
    const ORDERS: &str = "https://auth.test";
    const BILLING: &str = "https://auth.test/billing";
    let base = TestConfig::fast()
        .set("keys", "max_token_lifetime", "4s")
        .issuer(ORDERS)
        .set("issuer", "token_lifetime", "4s")
        .client(Client::new("minter", "minter-secret").roles(&["issuer"]));
    let billing = base
        .issuer_entry("billing", BILLING)
        .set("token_lifetime", "4s")
        .client(Client::new("orders", "orders-secret").audiences(&["payments"]));
    let dir = TestDir::new(&base.with_issuer(billing).build());
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let url = format!("http://{}/billing/.well-known/jwks.json", daemon.addr());
    let mut verifier = PyJwt::start(&url, "payments", BILLING);
    let mut ask = |token: &str| verifier.verify(token);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // An issuer of the default issuer pulls its signing keys, afresh each time.
    let pull = || {
        runtime.block_on(async {
            let source = jwkd_client::SigningKeySource::builder(
                format!("http://{}/v1/signing-keys", daemon.addr()),
                "minter",
                "minter-secret",
            )
            .allow_http(true)
            .build()
            .unwrap();
            source.ready().await.unwrap();
            source
        })
    };
    let mut forged_kids = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(7);
    while Instant::now() < deadline {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let forged = pull()
            .sign(&serde_json::json!({
                "iss": BILLING, "sub": "mallory", "aud": "payments", "iat": now, "exp": now + 4,
            }))
            .unwrap();
        let answer = ask(&forged);
        assert!(
            answer.starts_with("error "),
            "PyJWT accepted a token claiming billing signed with an orders key: {answer}"
        );
        forged_kids.insert(forged.split('.').next().unwrap().to_owned());
        let response = daemon.request(
            "POST",
            "/billing/oauth2/token",
            &[
                (
                    "Authorization",
                    &format!("Basic {}", STANDARD.encode("orders:orders-secret")),
                ),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"grant_type=client_credentials",
        );
        assert_eq!(response.status, 200, "{response}");
        let genuine = response.json()["access_token"].as_str().unwrap().to_owned();
        let answer = ask(&genuine);
        assert!(
            answer.starts_with("ok "),
            "PyJWT refused billing's own token: {answer}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        forged_kids.len() >= 3,
        "the orders key should have rotated at least twice in 7 s: {} headers",
        forged_kids.len()
    );
}
