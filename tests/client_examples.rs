//! The jwkd-client examples (`client/examples`) as a newcomer runs them, against a real
//! daemon: calling_service gets a token that verifying_service accepts (and a tampered
//! one it refuses), and issuer signs a token that `jwkd verify` accepts.
//!
//! The examples are binaries of another package, which `cargo nextest run` does not
//! necessarily build: a missing or outdated one fails the test and says how to build it
//! (`./scripts/test` runs `cargo build --workspace --all-targets` first).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::util::{
    CMD_TIMEOUT, Client, LISTEN_TIMEOUT, Outcome, Response, TestConfig, TestDir, http, jwkd, poll,
    run_cmd, strip_ansi,
};

/// The daemon's `[issuer]`: the `iss` of the tokens `/oauth2/token` mints.
const ISSUER: &str = "https://issuer.test";
/// The `iss` the issuer example writes into the tokens it signs itself.
const BILLING_ISSUER: &str = "https://billing.issuer.test";
const ORDERS_SECRET: &str = "orders-secret-for-examples";
const BILLING_SECRET: &str = "billing-secret-for-examples";

/// Every variable the examples read, removed so that a developer's shell cannot
/// change what a test run does.
const EXAMPLE_ENV: [&str; 12] = [
    "JWKS_URL",
    "ISSUER",
    "AUDIENCE",
    "LISTEN",
    "TOKEN_URL",
    "SCOPE",
    "CALL_URL",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "SIGNING_KEYS_URL",
    "SUBJECT",
    "LIFETIME",
];

/// A calling service (`orders`, two audiences) and an issuer (`billing-issuer`).
/// Credential endpoints are served over plain HTTP because the listener is on loopback.
fn config() -> String {
    TestConfig::slow()
        .issuer(ISSUER)
        .set("issuer", "token_lifetime", "15m")
        .client(Client::new("orders", ORDERS_SECRET).audiences(&["payments", "inventory"]))
        .client(Client::new("billing-issuer", BILLING_SECRET).roles(&["issuer"]))
        .build()
}

#[test]
fn examples_work_against_a_real_daemon() {
    // Before starting anything: every example must have been built.
    let verifying_service = example("verifying_service");
    let calling_service = example("calling_service");
    let issuer = example("issuer");

    let dir = TestDir::new(&config());
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let base = format!("http://{}", daemon.addr());
    let jwks_url = format!("{base}/.well-known/jwks.json");
    let token_url = format!("{base}/oauth2/token");
    let orders = [("CLIENT_ID", "orders"), ("CLIENT_SECRET", ORDERS_SECRET)];

    // calling_service without --call prints a token for the audience.
    let outcome = run_example(
        &calling_service,
        &orders,
        &["--token-url", &token_url, "--audience", "payments"],
    );
    outcome.assert_code(0);
    let token = outcome.stdout.trim().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "not a JWS on stdout\n{outcome}"
    );

    // verifying_service accepts it, and answers the sub.
    let service = Service::start(
        "verifying_service",
        example_command(
            &verifying_service,
            &[],
            &[
                "--jwks-url",
                &jwks_url,
                "--issuer",
                ISSUER,
                "--audience",
                "payments",
                "--listen",
                "127.0.0.1:0",
            ],
        ),
    );
    let response = service.get("/whoami", Some(&token));
    assert_eq!(response.status, 200, "{response}\n{}", service.output());
    assert_eq!(response.json()["sub"], "orders", "{response}");
    let health = service.get("/healthz", None);
    assert_eq!(health.status, 200, "{health}");
    assert!(health.text().starts_with("fresh"), "{health}");

    // The middleware refuses a tampered token, and a request without one.
    let response = service.get("/whoami", Some(&tamper(&token)));
    assert_eq!(response.status, 401, "{response}");
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(r#"Bearer error="invalid_token""#),
        "{response}"
    );
    let response = service.get("/whoami", None);
    assert_eq!(response.status, 401, "{response}");
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));

    // calling_service --call sends its token and prints the answer.
    let whoami = format!("http://{}/whoami", service.addr);
    let outcome = run_example(
        &calling_service,
        &orders,
        &[
            "--token-url",
            &token_url,
            "--audience",
            "payments",
            "--call",
            &whoami,
        ],
    );
    outcome.assert_code(0);
    let body: Value = serde_json::from_str(outcome.stdout.trim())
        .unwrap_or_else(|err| panic!("stdout is not the service's JSON: {err}\n{outcome}"));
    assert_eq!(body["sub"], "orders", "{outcome}");

    // A token for another audience is refused; the caller retries once and fails.
    let outcome = run_example(
        &calling_service,
        &orders,
        &[
            "--token-url",
            &token_url,
            "--audience",
            "inventory",
            "--call",
            &whoami,
        ],
    );
    outcome.assert_code(1);
    assert!(
        outcome.stderr.contains("retrying once") && outcome.stderr.contains("401"),
        "{outcome}"
    );

    // issuer signs with the pulled key; `jwkd verify` accepts the token.
    let billing = [
        ("CLIENT_ID", "billing-issuer"),
        ("CLIENT_SECRET", BILLING_SECRET),
    ];
    let signing_keys_url = format!("{base}/v1/signing-keys");
    let issuer_args = [
        "--signing-keys-url",
        &signing_keys_url,
        "--issuer",
        BILLING_ISSUER,
        "--audience",
        "payments",
        "--subject",
        "invoice-runner",
    ];
    let outcome = run_example(&issuer, &billing, &issuer_args);
    outcome.assert_code(0);
    let issued = outcome.stdout.trim().to_owned();
    let mut verify = jwkd();
    verify.args([
        "verify",
        "--jwks",
        &jwks_url,
        "--issuer",
        BILLING_ISSUER,
        "--audience",
        "payments",
        &issued,
    ]);
    let verified = run_cmd(verify, None, CMD_TIMEOUT);
    verified.assert_code(0);
    let claims: Value = serde_json::from_str(&verified.stdout)
        .unwrap_or_else(|err| panic!("jwkd verify printed no JSON: {err}\n{verified}"));
    assert_eq!(claims["sub"], "invoice-runner", "{verified}");
    assert_eq!(claims["iss"], BILLING_ISSUER, "{verified}");
    // The verifying service takes only jwkd's access tokens (its issuer, at+jwt).
    let response = service.get("/whoami", Some(&issued));
    assert_eq!(response.status, 401, "{response}");

    // A client without the issuer role gets no keys, and the example says so.
    let outcome = run_example(&issuer, &orders, &issuer_args);
    outcome.assert_code(1);
    assert!(outcome.stderr.contains("403"), "{outcome}");

    // With no keys to be had (the JWKS URL answers 404), the middleware answers 503.
    let keyless = Service::start(
        "verifying_service (no JWKS)",
        example_command(
            &verifying_service,
            &[],
            &[
                "--jwks-url",
                &format!("{base}/no-such-jwks.json"),
                "--issuer",
                ISSUER,
                "--audience",
                "payments",
                "--listen",
                "127.0.0.1:0",
            ],
        ),
    );
    let response = keyless.get("/whoami", Some(&token));
    assert_eq!(response.status, 503, "{response}\n{}", keyless.output());
    let health = poll(Duration::from_secs(20), || {
        let health = keyless.get("/healthz", None);
        match health.status {
            503 => Ok(health),
            _ => Err(health.to_string()),
        }
    })
    .unwrap_or_else(|last| panic!("/healthz never answered 503; last: {last}"));
    assert!(health.text().starts_with("unavailable"), "{health}");
}

/// The built example `name`, `target/<profile>/examples/<name>`: beside the `deps`
/// directory this test binary runs from, or under `$CARGO_TARGET_DIR`. Fails, saying
/// how to build it, if it is missing or older than its sources.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut candidates: Vec<PathBuf> = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile_dir| profile_dir.join("examples").join(name))
        .into_iter()
        .collect();
    if let Some(target_dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target_dir).join("debug/examples").join(name));
    }
    const BUILD: &str = "run `cargo build --workspace --all-targets` first (./scripts/test \
                         does): `cargo nextest run` does not build the examples of jwkd-client";
    let Some(path) = candidates.iter().find(|path| path.is_file()) else {
        panic!("example {name:?} is not built (looked for {candidates:?}); {BUILD}");
    };
    let built = modified(path);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("client");
    // Sources only: cargo rebuilds for a changed source file, but not for a
    // Cargo.toml whose change does not matter to the build (a comment).
    let mut sources = vec![client.join("examples").join(format!("{name}.rs"))];
    rust_files(&client.join("src"), &mut sources);
    if let Some(newer) = sources.iter().find(|source| modified(source) > built) {
        panic!(
            "example {} is older than {}; {BUILD}",
            path.display(),
            newer.display()
        );
    }
    path.clone()
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|err| panic!("cannot stat {}: {err}", path.display()))
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// `path ARGS...` with `env` and none of the developer's example variables.
fn example_command(path: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(path);
    for name in EXAMPLE_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn run_example(path: &Path, env: &[(&str, &str)], args: &[&str]) -> Outcome {
    run_cmd(example_command(path, env, args), None, CMD_TIMEOUT)
}

/// The token with one character of its signature changed.
fn tamper(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let at = bytes.len() - 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("a JWS is ASCII")
}

/// A running verifying_service: its address from its `listening on http://ADDR` line,
/// its output kept for failure messages, killed on drop.
struct Service {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl Service {
    fn start(what: &str, mut cmd: Command) -> Service {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn {what}: {err}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        drain(stdout, Arc::clone(&output), addr_tx.clone());
        drain(stderr, Arc::clone(&output), addr_tx);
        // Built before the wait so that a panic below kills the process on drop.
        let mut service = Service {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            output,
        };
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            match addr_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => {
                    service.addr = addr;
                    return service;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Both pipes closed: the process is exiting; try_wait below says so.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(50));
                }
            }
            if let Some(status) = service.child.try_wait().expect("try_wait") {
                panic!(
                    "{what} exited ({status}) before listening\n{}",
                    service.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not print `listening on http://` within {LISTEN_TIMEOUT:?}\n{}",
                service.output()
            );
        }
    }

    /// `GET path`, with `Authorization: Bearer TOKEN` when given a token.
    fn get(&self, path: &str, token: Option<&str>) -> Response {
        let authorization = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|value| ("Authorization", value.as_str()))
            .collect();
        http(self.addr, "GET", path, &headers, b"").unwrap_or_else(|err| {
            panic!(
                "GET {path} failed: {err}\n---- output ----\n{}",
                self.output()
            )
        })
    }

    fn output(&self) -> String {
        strip_ansi(&self.output.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps every line of `pipe` in `output`, and sends the address of the first
/// `listening on http://ADDR` line.
fn drain(
    pipe: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    addr_tx: mpsc::Sender<SocketAddr>,
) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if let Some(addr) = line
                .strip_prefix("listening on http://")
                .and_then(|addr| addr.trim().parse().ok())
            {
                let _ = addr_tx.send(addr);
            }
            let mut output = output.lock().unwrap_or_else(|e| e.into_inner());
            output.push_str(&line);
            output.push('\n');
        }
    });
}
