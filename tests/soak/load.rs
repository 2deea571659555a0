//! The steady load: calling services with `TokenSource`, issuers with
//! `SigningKeySource` and `/v1/sign`, and every token judged by jwkd-client's
//! `Verifier` over `RemoteJwks` and by PyJWT, together with forged, expired
//! and cross-issuer tokens that must all be refused.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwkd_client::{RemoteJwks, SignError, SigningKeySource, TokenSource, Verifier};
use serde_json::{Value, json};

use super::ledger::{Ledger, Verdict};
use super::{AUD, Issuer};

/// A token and what is known of it.
#[derive(Clone)]
pub struct Token {
    pub issuer: usize,
    pub text: String,
    pub kid: String,
    pub exp: i64,
}

impl Token {
    fn parse(issuer: usize, text: String) -> Option<Token> {
        let mut parts = text.split('.');
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
        Some(Token {
            issuer,
            kid: header["kid"].as_str()?.to_owned(),
            exp: claims["exp"].as_i64()?,
            text,
        })
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// PyJWT's `PyJWKClient`, one per issuer, in one Python process: a line
/// `INDEX TOKEN` in, `ok KID` or `error TYPE MESSAGE` out.
const PEER: &str = r#"
import json, sys, jwt
issuers = json.loads(sys.argv[1])
clients = [jwt.PyJWKClient(i["jwks"], cache_jwk_set=True, lifespan=1, timeout=5) for i in issuers]
for line in sys.stdin:
    index, token = line.split()
    issuer = issuers[int(index)]
    try:
        key = clients[int(index)].get_signing_key_from_jwt(token)
        jwt.decode(token, key, algorithms=["ES256", "ES384", "EdDSA", "RS256"], audience=issuer["aud"],
                   issuer=issuer["iss"], options={"require": ["exp", "iat", "iss", "aud"]})
        print("ok", key.key_id, flush=True)
    except Exception as err:
        print("error", type(err).__name__, str(err).replace("\n", " "), flush=True)
"#;

/// What the peer is asked: a token and whether it must be accepted.
pub struct PeerJob {
    pub token: Token,
    /// `None` for a valid token; the kind of forgery otherwise.
    pub invalid: Option<&'static str>,
}

/// Runs the Python peer until the sender is dropped.
pub fn run_peer(
    issuers: Vec<(String, String)>,
    jobs: Receiver<PeerJob>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let python = std::env::var_os("JWKD_TEST_PYTHON").expect("checked by the emulator's start");
    let config: Vec<Value> = issuers
        .iter()
        .map(|(iss, jwks)| json!({"iss": iss, "jwks": jwks, "aud": AUD}))
        .collect();
    let mut child = Command::new(python)
        .args(["-c", PEER, &Value::from(config).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the PyJWT peer");
    let mut to_python = child.stdin.take().expect("piped");
    let mut from_python = BufReader::new(child.stdout.take().expect("piped"));
    for job in jobs {
        writeln!(to_python, "{} {}", job.token.issuer, job.token.text).expect("write to PyJWT");
        let mut answer = String::new();
        from_python.read_line(&mut answer).expect("read from PyJWT");
        let answer = answer.trim();
        let mut ledger = ledger.lock().unwrap();
        match job.invalid {
            Some(kind) => ledger.judge_invalid("PyJWT", kind, answer.starts_with("ok")),
            None => {
                let verdict = if answer.starts_with("ok") {
                    Verdict::Accepted
                } else if answer.starts_with("error PyJWKClientConnectionError") {
                    Verdict::Unavailable(answer.to_owned())
                } else {
                    Verdict::Rejected(answer.to_owned())
                };
                let token = &job.token;
                ledger.judge_valid("PyJWT", token.issuer, &token.kid, token.exp, verdict);
            }
        }
    }
    drop(to_python);
    let _ = child.wait();
}

/// Everything the load needs about one issuer.
pub struct Target {
    pub issuer: Issuer,
    /// Base URL (with the issuer's path) through the front for clients.
    pub clients: String,
    pub verifier: Verifier,
    pub jwks: RemoteJwks,
    /// The issuer judged against this one's tokens (same daemons, other keys).
    pub other: usize,
}

pub fn verifier(issuer: &Issuer, jwks_url: String) -> (RemoteJwks, Verifier) {
    let jwks = RemoteJwks::builder(jwks_url)
        .ttl_bounds(Duration::from_millis(500), Duration::from_secs(60))
        .unknown_kid_cooldown(Duration::from_secs(1))
        .backoff(Duration::from_millis(200), Duration::from_secs(1))
        .build()
        .unwrap();
    let verifier = Verifier::builder(jwks.clone())
        .issuer(issuer.iss.clone())
        .audience(AUD)
        .build()
        .unwrap();
    (jwks, verifier)
}

/// The shared state of the load tasks.
pub struct Load {
    pub targets: Vec<Target>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub peer: SyncSender<PeerJob>,
    pub stop: AtomicBool,
    counter: AtomicU64,
}

impl Load {
    pub fn new(
        targets: Vec<Target>,
        ledger: Arc<Mutex<Ledger>>,
        peer: SyncSender<PeerJob>,
    ) -> Load {
        Load {
            targets,
            ledger,
            peer,
            stop: AtomicBool::new(false),
            counter: AtomicU64::new(0),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn to_peer(&self, token: Token, invalid: Option<&'static str>) {
        if let Err(TrySendError::Full(_)) = self.peer.try_send(PeerJob { token, invalid }) {
            self.ledger.lock().unwrap().peer_skipped += 1;
        }
    }

    fn failed(&self, source: &'static str, error: String) {
        let mut ledger = self.ledger.lock().unwrap();
        *ledger.issue_failures.entry(source).or_default() += 1;
        if ledger.issue_failures[source] <= 3 {
            ledger.example(format!("{source} failed (availability): {error}"));
        }
    }

    /// Judges a token jwkd just issued, with both verifiers, and the forgeries made of it.
    pub async fn issued(self: &Arc<Self>, source: &'static str, issuer: usize, text: String) {
        let Some(token) = Token::parse(issuer, text) else {
            self.ledger
                .lock()
                .unwrap()
                .problem(format!("{source}: an unreadable token"));
            return;
        };
        *self
            .ledger
            .lock()
            .unwrap()
            .issued
            .entry(source)
            .or_default() += 1;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.judge("jwkd-client", &token).await;
        if n.is_multiple_of(2) {
            self.to_peer(token.clone(), None);
        }
        // Cross-issuer: a token of one issuer at the other issuer's verifier.
        let target = &self.targets[issuer];
        let crossed = self.targets[target.other]
            .verifier
            .verify::<Value>(&token.text)
            .await;
        self.ledger
            .lock()
            .unwrap()
            .judge_invalid("jwkd-client", "cross-issuer", crossed.is_ok());
        if n % 4 == 1 {
            self.forge(&token).await;
        }
        // Judged again shortly before it expires: its key must still be served.
        let load = Arc::clone(self);
        tokio::spawn(async move {
            let wait = (token.exp - now_secs() - 2).max(0) as u64;
            tokio::time::sleep(Duration::from_secs(wait)).await;
            if !load.stopped() {
                load.judge("jwkd-client (near exp)", &token).await;
            }
        });
    }

    async fn judge(&self, verifier: &'static str, token: &Token) {
        let verdict = match self.targets[token.issuer]
            .verifier
            .verify::<Value>(&token.text)
            .await
        {
            Ok(_) => Verdict::Accepted,
            Err(err) if err.is_keys_unavailable() => Verdict::Unavailable(err.to_string()),
            Err(err) => Verdict::Rejected(err.to_string()),
        };
        self.ledger.lock().unwrap().judge_valid(
            verifier,
            token.issuer,
            &token.kid,
            token.exp,
            verdict,
        );
    }

    /// Forgeries of `token`, each sent to both verifiers.
    async fn forge(&self, token: &Token) {
        let parts: Vec<&str> = token.text.split('.').collect();
        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature[5] ^= 0x40;
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = Value::from("someone-else");
        let other_kid = self.targets[self.targets[token.issuer].other]
            .jwks
            .key_set()
            .and_then(|set| set.kids().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        let mut header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let none_header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": token.kid}).to_string());
        header["kid"] = Value::from(other_kid);
        let forgeries = [
            (
                "bad signature",
                format!(
                    "{}.{}.{}",
                    parts[0],
                    parts[1],
                    URL_SAFE_NO_PAD.encode(&signature)
                ),
            ),
            (
                "altered claims",
                format!(
                    "{}.{}.{}",
                    parts[0],
                    URL_SAFE_NO_PAD.encode(claims.to_string()),
                    parts[2]
                ),
            ),
            ("alg none", format!("{none_header}.{}.", parts[1])),
            (
                "another issuer's kid",
                format!(
                    "{}.{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    parts[1],
                    parts[2]
                ),
            ),
        ];
        for (kind, text) in forgeries {
            let accepted = self.targets[token.issuer]
                .verifier
                .verify::<Value>(&text)
                .await
                .is_ok();
            self.ledger
                .lock()
                .unwrap()
                .judge_invalid("jwkd-client", kind, accepted);
            let forged = Token {
                text,
                ..token.clone()
            };
            self.to_peer(forged, Some(kind));
        }
    }

    /// A calling service: one long-lived `TokenSource` and, every few
    /// requests, a new one (a service that just started).
    pub async fn calling_service(
        self: Arc<Self>,
        issuer: usize,
        client: &'static str,
        pause: Duration,
    ) {
        let url = format!("{}/oauth2/token", self.targets[issuer].clients);
        let build = || {
            TokenSource::builder(url.clone(), client, format!("{client}-secret"))
                .audience(AUD)
                .build()
                .unwrap()
        };
        let long_lived = build();
        let mut last = String::new();
        let mut round = 0u64;
        while !self.stopped() {
            round += 1;
            let source = if round.is_multiple_of(3) {
                build()
            } else {
                long_lived.clone()
            };
            match source.token().await {
                Ok(token) if token.as_str() != last => {
                    last = token.as_str().to_owned();
                    self.issued("TokenSource", issuer, last.clone()).await;
                }
                Ok(_) => {}
                Err(err) => self.failed("TokenSource", err.to_string()),
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// An issuer that pulls the signing key and signs its own tokens; now and
    /// then it also signs an expired one, which must be refused.
    pub async fn pulling_issuer(self: Arc<Self>, issuer: usize, pause: Duration) {
        let target = &self.targets[issuer];
        let source = SigningKeySource::builder(
            format!("{}/v1/signing-keys", target.clients),
            "minter",
            "minter-secret",
        )
        .refresh_interval(Duration::from_millis(500))
        .backoff(Duration::from_millis(200), Duration::from_secs(1))
        .build()
        .unwrap();
        if !target.issuer.local {
            // KMS custody: nothing to pull, and the client says so.
            match source.ready().await {
                Err(SignError::NotExportable { .. }) => {}
                other => self.ledger.lock().unwrap().problem(format!(
                    "SIGNING KEYS OF A KMS ISSUER: expected NotExportable, got {other:?}"
                )),
            }
            return;
        }
        let _ = source.ready().await;
        let mut round = 0u64;
        while !self.stopped() {
            round += 1;
            let now = now_secs();
            let expired = round.is_multiple_of(10);
            let (iat, exp) = if expired {
                (now - 200, now - 100)
            } else {
                (now, now + 10)
            };
            let claims = json!({"iss": target.issuer.iss, "sub": "pulled", "aud": AUD, "iat": iat, "exp": exp});
            match source.sign(&claims) {
                Ok(text) if expired => {
                    let accepted = target.verifier.verify::<Value>(&text).await.is_ok();
                    self.ledger
                        .lock()
                        .unwrap()
                        .judge_invalid("jwkd-client", "expired", accepted);
                    if let Some(token) = Token::parse(issuer, text) {
                        self.to_peer(token, Some("expired"));
                    }
                }
                Ok(text) => self.issued("SigningKeySource", issuer, text).await,
                Err(err) => self.failed("SigningKeySource", err.to_string()),
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// An issuer that has jwkd sign for it (`POST /v1/sign`).
    pub async fn signing_issuer(self: Arc<Self>, issuer: usize, pause: Duration) {
        let url = format!("{}/v1/sign", self.targets[issuer].clients);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        while !self.stopped() {
            let response = client
                .post(&url)
                .basic_auth("minter", Some("minter-secret"))
                .header("Content-Type", "application/json")
                .body(json!({"sub": "signed", "aud": AUD}).to_string())
                .send()
                .await;
            match response {
                Ok(response) if response.status() == 200 => {
                    let body: Value =
                        serde_json::from_str(&response.text().await.unwrap_or_default())
                            .unwrap_or_default();
                    match body["token"].as_str() {
                        Some(token) => self.issued("/v1/sign", issuer, token.to_owned()).await,
                        None => self.failed("/v1/sign", format!("no token in {body}")),
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    self.failed(
                        "/v1/sign",
                        format!("{status}: {}", response.text().await.unwrap_or_default()),
                    );
                }
                Err(err) => self.failed("/v1/sign", err.to_string()),
            }
            tokio::time::sleep(pause).await;
        }
    }
}
