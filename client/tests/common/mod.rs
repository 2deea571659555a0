//! Test helpers: a minimal HTTP/1.1 server on 127.0.0.1:0 whose behaviour each test
//! sets (slow bodies, hang-ups, redirects, oversized answers), keys made with aws-lc-rs,
//! and token minting, including tokens no honest issuer would make.
//!
//! Timer tests run on tokio's paused clock (`#[tokio::test(start_paused = true)]`):
//! when every task waits, the clock jumps to the next timer, so simulated seconds
//! pass in no real time and each assertion names an exact instant. That holds only if
//! an answer is readable the moment it is written, so those tests put the client and
//! the server on one current-thread runtime and reach the server through its Unix
//! socket ([`TestServer::local_client`], [`JwksServer::paused_builder`]): a write to a
//! Unix socket wakes the reader inside the write itself, with no network stack in
//! between whose delay could let the clock jump during an exchange.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsBigEndian, AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jwkd_client::{Error, RemoteJwks, RemoteJwksBuilder, Verifier};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "payments";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims a jwkd access token carries, valid now for five minutes.
pub fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISS,
        "sub": "orders",
        "client_id": "orders",
        "aud": AUD,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": format!("jti-{}", random_u64()),
        "scope": "payments:write",
    })
}

pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}

// ---------------------------------------------------------------------------------
// HTTP server

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect()
    }
}

/// What the server answers.
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Status and headers, then the body in chunks with a pause before each. No
    /// Content-Length: the body ends when the connection closes.
    Trickle {
        headers: Vec<(String, String)>,
        chunks: Vec<Vec<u8>>,
        pause: Duration,
    },
    /// Close the connection without answering.
    Hangup,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub struct TestServer {
    pub addr: SocketAddr,
    /// The same server on a Unix socket, for paused-time tests (see the module docs).
    pub socket: PathBuf,
    handler: Arc<Mutex<Handler>>,
    requests: Arc<Mutex<Vec<Request>>>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl TestServer {
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = std::env::temp_dir().join(format!(
            "jwkd-client-test-{}-{:016x}.sock",
            std::process::id(),
            random_u64()
        ));
        let unix_listener = UnixListener::bind(&socket).unwrap();
        let handler: Arc<Mutex<Handler>> = Arc::new(Mutex::new(Arc::new(handler)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let serve = {
            let handler = Arc::clone(&handler);
            let requests = Arc::clone(&requests);
            move |stream| {
                let handler = Arc::clone(&handler);
                let requests = Arc::clone(&requests);
                tokio::spawn(async move {
                    let _ = serve_connection(stream, handler, requests).await;
                });
            }
        };
        let tcp = tokio::spawn({
            let serve = serve.clone();
            async move {
                loop {
                    if let Ok((stream, _)) = listener.accept().await {
                        serve(Box::new(stream) as Box<dyn Stream>);
                    }
                }
            }
        });
        let unix = tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = unix_listener.accept().await {
                    serve(Box::new(stream) as Box<dyn Stream>);
                }
            }
        });
        TestServer {
            addr,
            socket,
            handler,
            requests,
            tasks: [tcp, unix],
        }
    }

    /// A client whose every connection goes to this server's Unix socket, whatever the
    /// URL says (the URL still names 127.0.0.1, so the scheme policy is unchanged).
    /// Redirects are not followed, as in the clients the crate builds.
    pub fn local_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .unix_socket(self.socket.as_path())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_handler(&self, handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    /// Requests received so far for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|request| request.path == path)
            .count()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// A connection the test server answers: TCP or Unix.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn serve_connection(
    mut stream: Box<dyn Stream>,
    handler: Arc<Mutex<Handler>>,
    requests: Arc<Mutex<Vec<Request>>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let content_length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < content_length {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    let request = Request {
        method,
        path,
        headers,
        body,
    };
    requests.lock().unwrap().push(request.clone());
    let handler = Arc::clone(&handler.lock().unwrap());
    match handler(&request) {
        Reply::Hangup => Ok(()),
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut head = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.shutdown().await
        }
        Reply::Trickle {
            headers,
            chunks,
            pause,
        } => {
            let mut head = "HTTP/1.1 200 OK\r\nconnection: close\r\n".to_owned();
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await?;
            for chunk in chunks {
                tokio::time::sleep(pause).await;
                stream.write_all(&chunk).await?;
            }
            stream.shutdown().await
        }
    }
}

// ---------------------------------------------------------------------------------
// A JWKS endpoint (plus discovery) whose behaviour tests switch at will

#[derive(Clone, Debug)]
pub enum Mode {
    Normal,
    Status(u16),
    Garbage,
    Hangup,
    Redirect(String),
    /// A body over 256 KiB, with or without Content-Length.
    Huge {
        with_length: bool,
    },
    /// The body comes slowly: one byte per pause.
    Slow(Duration),
}

pub struct JwksState {
    pub keys: Vec<Value>,
    pub max_age: u64,
    pub mode: Mode,
    pub discovery_issuer: Option<String>,
    pub jwks_uri: Option<String>,
    pub not_modified: usize,
}

pub struct JwksServer {
    pub server: TestServer,
    pub state: Arc<Mutex<JwksState>>,
}

pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> JwksServer {
        let state = Arc::new(Mutex::new(JwksState {
            keys,
            max_age: 3600,
            mode: Mode::Normal,
            discovery_issuer: None,
            jwks_uri: None,
            not_modified: 0,
        }));
        let server = TestServer::start(|_| Reply::status(500)).await;
        let base = server.url("");
        let handler_state = Arc::clone(&state);
        server.set_handler(move |request| jwks_reply(&handler_state, &base, request));
        JwksServer { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url(JWKS_PATH)
    }

    pub fn base(&self) -> String {
        self.server.url("")
    }

    pub fn fetches(&self) -> usize {
        self.server.hits(JWKS_PATH)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    pub fn set_max_age(&self, max_age: u64) {
        self.state.lock().unwrap().max_age = max_age;
    }

    pub fn push_key(&self, key: Value) {
        self.state.lock().unwrap().keys.push(key);
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        self.state.lock().unwrap().keys = keys;
    }

    pub fn not_modified(&self) -> usize {
        self.state.lock().unwrap().not_modified
    }

    /// A builder with test-friendly retry timings.
    pub fn builder(&self) -> RemoteJwksBuilder {
        RemoteJwks::builder(self.url())
            .backoff(Duration::from_millis(50), Duration::from_millis(200))
    }

    /// [`JwksServer::builder`] over the server's Unix socket, for paused-time tests.
    pub fn paused_builder(&self) -> RemoteJwksBuilder {
        self.builder().http_client(self.server.local_client())
    }

    /// A verifier for ISS/AUD over a fresh `RemoteJwks` that has loaded the set.
    pub async fn verifier(&self) -> (RemoteJwks, Verifier) {
        self.verifier_with(self.builder()).await
    }

    pub async fn verifier_with(&self, builder: RemoteJwksBuilder) -> (RemoteJwks, Verifier) {
        let jwks = builder.build().unwrap();
        jwks.ready().await.unwrap();
        let verifier = Verifier::builder(jwks.clone())
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap();
        (jwks, verifier)
    }
}

fn jwks_reply(state: &Mutex<JwksState>, base: &str, request: &Request) -> Reply {
    let mut state = state.lock().unwrap();
    if request.path == DISCOVERY_PATH {
        return Reply::json(
            200,
            &json!({
                "issuer": state.discovery_issuer.clone().unwrap_or_else(|| base.to_owned()),
                "jwks_uri": state.jwks_uri.clone().unwrap_or_else(|| format!("{base}{JWKS_PATH}")),
                "token_endpoint": format!("{base}/oauth2/token"),
            }),
        );
    }
    if request.path != JWKS_PATH {
        return Reply::status(404);
    }
    let document = json!({ "keys": state.keys }).to_string();
    let etag = format!("\"{:016x}\"", fnv(document.as_bytes()));
    let cache_control = format!("public, max-age={}", state.max_age);
    match state.mode.clone() {
        Mode::Normal => {
            if request.header("if-none-match") == Some(etag.as_str()) {
                state.not_modified += 1;
                return Reply::Full {
                    status: 304,
                    headers: vec![
                        ("etag".into(), etag),
                        ("cache-control".into(), cache_control),
                    ],
                    body: Vec::new(),
                };
            }
            Reply::Full {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/jwk-set+json".into()),
                    ("etag".into(), etag),
                    ("cache-control".into(), cache_control),
                ],
                body: document.into_bytes(),
            }
        }
        Mode::Status(status) => Reply::status(status),
        Mode::Garbage => Reply::Full {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"<html>oops</html>".to_vec(),
        },
        Mode::Hangup => Reply::Hangup,
        Mode::Redirect(location) => Reply::Full {
            status: 302,
            headers: vec![("location".into(), location)],
            body: Vec::new(),
        },
        Mode::Huge { with_length } => {
            let padding = " ".repeat(300 * 1024);
            let body = format!("{{\"keys\":{}{padding}}}", json!(state.keys)).into_bytes();
            if with_length {
                Reply::Full {
                    status: 200,
                    headers: Vec::new(),
                    body,
                }
            } else {
                Reply::Trickle {
                    headers: Vec::new(),
                    chunks: body.chunks(16 * 1024).map(<[u8]>::to_vec).collect(),
                    pause: Duration::ZERO,
                }
            }
        }
        Mode::Slow(pause) => Reply::Trickle {
            headers: Vec::new(),
            chunks: document
                .into_bytes()
                .into_iter()
                .map(|byte| vec![byte])
                .collect(),
            pause,
        },
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------
// Keys and tokens

pub enum Signer {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(&'static RsaKeyPair),
}

pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    pub signer: Signer,
    /// The public JWK, as jwkd publishes it.
    pub public: Value,
    /// The private JWK, as /v1/signing-keys hands it out.
    pub private: Value,
}

/// RSA key generation is slow; the tests share two keys.
fn rsa_pair(index: usize) -> &'static RsaKeyPair {
    static PAIRS: OnceLock<Vec<RsaKeyPair>> = OnceLock::new();
    &PAIRS.get_or_init(|| {
        (0..2)
            .map(|_| RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())
            .collect()
    })[index]
}

impl TestKey {
    pub fn es256(kid: &str) -> TestKey {
        TestKey::ecdsa(kid, "ES256", "P-256", &ECDSA_P256_SHA256_FIXED_SIGNING)
    }

    pub fn es384(kid: &str) -> TestKey {
        TestKey::ecdsa(kid, "ES384", "P-384", &ECDSA_P384_SHA384_FIXED_SIGNING)
    }

    fn ecdsa(
        kid: &str,
        alg: &'static str,
        crv: &str,
        signing: &'static signature::EcdsaSigningAlgorithm,
    ) -> TestKey {
        let pair = EcdsaKeyPair::generate(signing).unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at((point.len() - 1) / 2);
        let d = pair.private_key().as_be_bytes().unwrap();
        let public = json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y),
            "kid": kid, "alg": alg, "use": "sig"});
        let mut private = public.clone();
        private["d"] = json!(b64(d.as_ref()));
        TestKey {
            kid: kid.into(),
            alg,
            signer: Signer::Ecdsa(pair),
            public,
            private,
        }
    }

    pub fn ed25519(kid: &str) -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = pair.public_key().as_ref().to_vec();
        // The seed is the last 32 bytes of the v2 PKCS#8 document's private key octet
        // string, which for aws-lc is at a fixed offset: 16 bytes of header.
        let seed = pkcs8.as_ref()[16..48].to_vec();
        assert!(Ed25519KeyPair::from_seed_and_public_key(&seed, &x).is_ok());
        let public = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&x), "kid": kid,
            "alg": "EdDSA", "use": "sig"});
        let mut private = public.clone();
        private["d"] = json!(b64(&seed));
        TestKey {
            kid: kid.into(),
            alg: "EdDSA",
            signer: Signer::Ed25519(pair),
            public,
            private,
        }
    }

    pub fn rs256(kid: &str) -> TestKey {
        TestKey::rs256_from(kid, 0)
    }

    pub fn rs256_from(kid: &str, index: usize) -> TestKey {
        let pair = rsa_pair(index);
        let der = AsDer::<Pkcs8V1Der>::as_der(pair).unwrap();
        let [n, e, d, p, q, dp, dq, qi] = rsa_components(der.as_ref());
        let public = json!({"kty": "RSA", "n": b64(&n), "e": b64(&e), "kid": kid,
            "alg": "RS256", "use": "sig"});
        let mut private = public.clone();
        for (name, value) in [
            ("d", d),
            ("p", p),
            ("q", q),
            ("dp", dp),
            ("dq", dq),
            ("qi", qi),
        ] {
            private[name] = json!(b64(&value));
        }
        TestKey {
            kid: kid.into(),
            alg: "RS256",
            signer: Signer::Rsa(pair),
            public,
            private,
        }
    }

    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ecdsa(pair) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .unwrap();
                signature
            }
        }
    }

    /// A token with exactly this header and payload text, signed by this key.
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature = self.sign_bytes(input.as_bytes());
        format!("{input}.{}", b64(signature))
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    pub fn header(&self) -> Value {
        json!({"alg": self.alg, "kid": self.kid, "typ": "at+jwt"})
    }

    /// A token as jwkd would make it.
    pub fn token(&self, claims: &Value) -> String {
        self.sign_with_header(&self.header(), claims)
    }
}

/// n, e, d, p, q, dp, dq, qi of a PKCS#8 RSA private key, without leading zero octets.
fn rsa_components(pkcs8: &[u8]) -> [Vec<u8>; 8] {
    fn element(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, header) = if input[1] < 0x80 {
            (input[1] as usize, 2)
        } else {
            let octets = (input[1] & 0x7f) as usize;
            let len = input[2..2 + octets]
                .iter()
                .fold(0usize, |acc, byte| acc << 8 | *byte as usize);
            (len, 2 + octets)
        };
        (tag, &input[header..header + len], &input[header + len..])
    }
    let (_, private_key_info, _) = element(pkcs8);
    let (_, _version, rest) = element(private_key_info);
    let (_, _algorithm, rest) = element(rest);
    let (_, octets, _) = element(rest);
    let (_, mut sequence, _) = element(octets);
    let mut integers = Vec::new();
    while !sequence.is_empty() {
        let (tag, value, rest) = element(sequence);
        assert_eq!(tag, 0x02);
        let trimmed: Vec<u8> = value
            .iter()
            .copied()
            .skip_while(|byte| *byte == 0)
            .collect();
        integers.push(trimmed);
        sequence = rest;
    }
    // version, n, e, d, p, q, dp, dq, qi
    integers.remove(0);
    integers.try_into().unwrap()
}

/// A public JWK with a modulus of `bits` bits that is never parsed (it is too weak).
pub fn weak_rsa_jwk(kid: &str, bits: usize) -> Value {
    let mut n = vec![0xC5u8; bits / 8];
    n[bits / 8 - 1] |= 1;
    json!({"kty": "RSA", "n": b64(&n), "e": "AQAB", "kid": kid, "alg": "RS256", "use": "sig"})
}

/// Standard (not url-safe) base64, for `Authorization: Basic`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap();
    let seconds = since_epoch.as_secs() as i64;
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Verifies and expects a refusal; returns the error.
pub async fn refused(verifier: &Verifier, token: &str) -> Error {
    match verifier.verify::<Value>(token).await {
        Ok(verified) => panic!("token accepted: {}", verified.claims()),
        Err(err) => err,
    }
}

/// Verifies and expects success.
pub async fn accepted(verifier: &Verifier, token: &str) -> Value {
    match verifier.verify::<Value>(token).await {
        Ok(verified) => verified.into_claims(),
        Err(err) => panic!("token refused: {err} ({err:?})"),
    }
}
