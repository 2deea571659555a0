//! The server side under attack (the hardening issue), one attack per test,
//! against the real daemon on loopback. Each prints what it measured.
//!
//! - a flood of token requests from unknown clients, most of them abandoned
//!   right after sending: the Argon2 work stays bounded (peak memory), a full
//!   queue is answered `503` + `Retry-After` at once, and a client whose secret
//!   is remembered keeps getting tokens;
//! - an issuer credential used to mint tokens for audiences and issuers it was
//!   never given: refused, and every signature is audited.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use crate::util::{Client, Daemon, TestConfig, TestDir, hash_secret};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn config() -> String {
    TestConfig::slow()
        .issuer("https://jwkd.test")
        .client(Client::new("orders", "orders-secret").audiences(&["payments"]))
        .client(
            Client::new("minter", "minter-secret")
                .audiences(&["reports", "exports"])
                .roles(&["issuer"]),
        )
        .build()
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn token(daemon: &Daemon, authorization: &str) -> u16 {
    daemon
        .request(
            "POST",
            "/oauth2/token",
            &[FORM, ("Authorization", authorization)],
            b"grant_type=client_credentials",
        )
        .status
}

/// One raw token request for an unknown client; the connection is closed
/// right after sending unless `wait`, which reads the status line.
fn flood_request(addr: SocketAddr, n: usize, wait: bool) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    let body = "grant_type=client_credentials";
    let request = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: jwkd\r\nAuthorization: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        basic(&format!("attacker-{n}"), "guess"),
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    if !wait {
        return None;
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn a_flood_of_credential_checks_is_bounded_work() {
    const FLOOD: usize = 3000;
    const THREADS: usize = 8;
    // The queue is what this attacks: the per-source throttle (its own test) is
    // set out of the way, as it would be for a flood from many addresses.
    let dir = TestDir::new(&limited_config("auth_checks_per_minute = 100000"));
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let legit = basic("orders", "orders-secret");
    assert_eq!(token(&daemon, &legit), 200, "the real client gets a token");
    let rss_before = daemon.status_kib("VmRSS");

    let started = Instant::now();
    let (busy_answers, legit_waits) = thread::scope(|scope| {
        let flooders: Vec<_> = (0..THREADS)
            .map(|thread_idx| {
                let addr = daemon.addr();
                scope.spawn(move || {
                    let mut busy = 0;
                    for n in (thread_idx..FLOOD).step_by(THREADS) {
                        // Every tenth request waits for its answer; the rest are abandoned.
                        let answer = flood_request(addr, n, n % 10 == 0);
                        if answer.is_some_and(|answer| {
                            answer.starts_with("HTTP/1.1 503")
                                && answer.to_ascii_lowercase().contains("retry-after: 1")
                        }) {
                            busy += 1;
                        }
                    }
                    busy
                })
            })
            .collect();
        // The real client keeps asking while the flood runs.
        let mut waits = Vec::new();
        while flooders.iter().any(|flooder| !flooder.is_finished()) {
            let asked = Instant::now();
            assert_eq!(token(&daemon, &legit), 200, "the real client was refused");
            waits.push(asked.elapsed());
            thread::sleep(Duration::from_millis(50));
        }
        let busy: usize = flooders
            .into_iter()
            .map(|flooder| flooder.join().expect("flooder"))
            .sum();
        (busy, waits)
    });
    let flood_took = started.elapsed();
    // Let the work still queued drain, then read the peak.
    thread::sleep(Duration::from_secs(2));
    daemon.wait_ready(Duration::from_secs(20));
    let peak_kib = daemon.status_kib("VmHWM");
    let worst_wait = legit_waits.iter().max().copied().unwrap_or_default();
    println!(
        "flood of {FLOOD} token requests for unknown clients in {flood_took:?}: peak RSS {} MiB \
         (before: {} MiB); {busy_answers} of the {} answered requests were 503 + Retry-After; \
         the real client asked {} times, worst wait {worst_wait:?}",
        peak_kib / 1024,
        rss_before / 1024,
        FLOOD / 10,
        legit_waits.len(),
    );
    assert!(
        peak_kib < 128 * 1024,
        "peak RSS {} MiB under the flood, over 128 MiB\n{}",
        peak_kib / 1024,
        daemon.stderr_text()
    );
    assert!(
        busy_answers > 0,
        "a flood this size must overflow the queue and be told to retry"
    );
    // Every one of the real client's requests got its token (asserted in the loop);
    // its worst wait is printed above, not asserted: on a shared machine a
    // timing bound would fail for reasons that are not jwkd's.
}

#[test]
fn an_issuer_signs_only_what_it_may_claim() {
    let dir = TestDir::new(&config());
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let sign = |claims: serde_json::Value| {
        daemon.request(
            "POST",
            "/v1/sign",
            &[
                ("Authorization", "Bearer minter:minter-secret"),
                ("Content-Type", "application/json"),
            ],
            claims.to_string().as_bytes(),
        )
    };
    // Audiences and issuers this credential was never given.
    for (claims, says) in [
        (
            json!({"sub": "x", "aud": "payments"}),
            "aud \"payments\" is not one of client minter's audiences",
        ),
        (
            json!({"sub": "x", "aud": ["reports", "payments"]}),
            "\"payments\" is not one of",
        ),
        (json!({"sub": "x", "aud": 7}), "aud must be"),
        (json!({"sub": "x", "aud": []}), "aud must be"),
        (
            json!({"sub": "x", "iss": "https://evil.example"}),
            "iss must be this jwkd's issuer",
        ),
    ] {
        let response = sign(claims.clone());
        response.assert_json_error(400);
        assert!(
            response.json()["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{claims}: {response}"
        );
    }
    // What it may claim is signed, as a plain JWT.
    let response =
        sign(json!({"sub": "x", "aud": ["reports", "exports"], "iss": "https://jwkd.test"}));
    assert_eq!(response.status, 200, "{response}");
    let token = response.json()["token"].as_str().unwrap().to_owned();
    let part = |idx: usize| -> serde_json::Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(idx).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(part(0)["typ"], "JWT");
    assert_eq!(part(1)["aud"], json!(["reports", "exports"]));
    let jti = part(1)["jti"].as_str().unwrap().to_owned();
    let audited = crate::util::poll(Duration::from_secs(5), || {
        let log = daemon.stderr_text();
        log.lines()
            .find(|line| {
                line.contains("jwkd::audit")
                    && line.contains("signed a token")
                    && line.contains(&jti)
            })
            .map(str::to_owned)
            .ok_or_else(|| log.clone())
    })
    .unwrap_or_else(|log| panic!("no audit line with jti {jti}:\n{log}"));
    for field in ["client=minter", "kid=", "sub=", "aud=", "jti="] {
        assert!(audited.contains(field), "{field} missing from {audited}");
    }
}

#[test]
fn extreme_durations_are_config_errors_not_panics() {
    let keys = [
        ("keys", "max_token_lifetime"),
        ("keys", "clock_skew"),
        ("keys", "jwks_max_age"),
        ("store", "refresh_interval"),
        ("issuer", "token_lifetime"),
    ];
    for (section, key) in keys {
        for extreme in ["4294967295d", "18446744073709551615s", "3660d"] {
            let config = format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"keyset.json\"\n\
                 [{section}]\n{key} = \"{extreme}\"\n"
            )
            .replace(
                "[store]\npath = \"keyset.json\"\n[store]\n",
                "[store]\npath = \"keyset.json\"\n",
            );
            let dir = TestDir::new(&config);
            for verb in ["check-config", "serve"] {
                let outcome = dir.run(verb, &[]);
                outcome.assert_code(2);
                assert!(
                    outcome.stderr.contains(&format!("{section}.{key}"))
                        && !outcome.stderr.contains("panicked"),
                    "{verb} with {section}.{key} = {extreme}:\n{outcome}"
                );
            }
        }
    }
}

// ---- the file store against another local user ----

/// Runs `cmd` as `nobody` (uid/gid 65534) with `setpriv`; needs root.
fn as_nobody(cmd: &std::process::Command) -> std::process::Command {
    let mut wrapped = std::process::Command::new("setpriv");
    wrapped
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped.stdin(std::process::Stdio::null());
    wrapped
}

fn require_root(what: &str) {
    let me = std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta))
        .unwrap_or(u32::MAX);
    assert_eq!(
        me, 0,
        "{what} acts as another user with setpriv, which needs root; run the suite as root \
         (CI does)"
    );
}

fn chown(path: &std::path::Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|err| panic!("chown {}: {err}", path.display()));
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|err| panic!("chmod {}: {err}", path.display()));
}

#[test]
fn a_planted_lock_symlink_is_not_followed() {
    let dir = TestDir::new(&config());
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("created-through-the-link");
    std::os::unix::fs::symlink(&target, dir.path().join("keyset.json.lock")).unwrap();
    let outcome = dir.run("rotate", &[]);
    assert_ne!(outcome.code, Some(0), "{outcome}");
    assert!(
        outcome.stderr.contains("symbolic link") && outcome.stderr.contains("keyset.json.lock"),
        "{outcome}"
    );
    assert!(!target.exists(), "the planted link was followed");
    assert!(
        dir.read_store().is_none(),
        "a keyset was written without the lock"
    );
}

#[test]
fn a_store_another_user_could_change_is_refused() {
    let dir = TestDir::new(&config());
    dir.run("rotate", &[]).assert_code(0);
    for (mode, says) in [
        (0o777, "writable by others"),
        (0o770, "writable by its group"),
    ] {
        chmod(dir.path(), mode);
        let outcome = dir.run("keys", &[]);
        outcome.assert_code(2);
        assert!(
            outcome.stderr.contains(says) && outcome.stderr.contains("chmod go-w"),
            "mode {mode:o}: {outcome}"
        );
    }
    chmod(dir.path(), 0o700);
    chmod(&dir.store_path(), 0o666);
    let outcome = dir.run("keys", &[]);
    outcome.assert_code(2);
    assert!(outcome.stderr.contains("keyset file"), "{outcome}");
    chmod(&dir.store_path(), 0o600);
    dir.run("keys", &[]).assert_code(0);

    // A directory that belongs to another (non-root) user, read by a third one.
    require_root("the ownership check");
    chmod(dir.path(), 0o755);
    chmod(&dir.config_path(), 0o644);
    chmod(&dir.store_path(), 0o644);
    chown(dir.path(), 1234, 1234);
    let outcome = crate::util::run_cmd(
        as_nobody(&dir.cmd("keys", &[])),
        None,
        crate::util::CMD_TIMEOUT,
    );
    outcome.assert_code(2);
    assert!(outcome.stderr.contains("belongs to user 1234"), "{outcome}");
}

#[test]
fn sudo_rotate_beside_the_service_keeps_its_ownership() {
    require_root("`sudo jwkd rotate` beside the service");
    let dir = TestDir::new(&config());
    // The service's directory and keyset belong to its (dynamic) user.
    chown(dir.path(), 65534, 65534);
    chown(&dir.config_path(), 65534, 65534);
    let as_service = |verb: &str, args: &[&str]| {
        crate::util::run_cmd(
            as_nobody(&dir.cmd(verb, args)),
            None,
            crate::util::CMD_TIMEOUT,
        )
    };
    as_service("rotate", &[]).assert_code(0);
    let next = dir
        .keys()
        .into_iter()
        .find(|key| key.state == "next")
        .expect("a next key")
        .kid;
    // Root writes: a revoke makes a new document (and a new key).
    dir.run("revoke", &[&next]).assert_code(0);
    for path in [dir.store_path(), dir.path().join("keyset.json.lock")] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&meta),
                std::os::unix::fs::MetadataExt::gid(&meta),
                std::os::unix::fs::MetadataExt::mode(&meta) & 0o777
            ),
            (65534, 65534, 0o600),
            "{} after a write by root",
            path.display()
        );
    }
    // The service can still read and write it.
    as_service("keys", &[]).assert_code(0);
    as_service("rotate", &[]).assert_code(0);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Credential checks of every issuer run on the same few hashing threads, but
/// each issuer waits in a lane of its own: a flood of unknown clients on one
/// issuer overflows that issuer's lane (503 + Retry-After there), while the
/// first check of another issuer's clients, which no remembered secret
/// covers, is neither refused nor queued behind the flood.
#[test]
fn a_flood_on_one_issuer_does_not_refuse_another_issuers_clients() {
    const THREADS: usize = 8;
    const BILLERS: usize = 4;
    let base = TestConfig::slow()
        .set("server", "auth_checks_per_minute", 100_000)
        .issuer("https://jwkd.test")
        .client(Client::new("orders", "orders-secret").audiences(&["payments"]));
    let mut billing = base.issuer_entry("billing", "https://jwkd.test/billing");
    for n in 0..BILLERS {
        billing = billing.client(
            Client::new(&format!("biller-{n}"), &format!("biller-{n}-secret"))
                .audiences(&["payments"]),
        );
    }
    let dir = TestDir::new(&base.with_issuer(billing).build());
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let busy = std::sync::atomic::AtomicUsize::new(0);
    let answers = thread::scope(|scope| {
        for thread_idx in 0..THREADS {
            let (addr, stop, busy) = (daemon.addr(), &stop, &busy);
            scope.spawn(move || {
                let mut n = thread_idx;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Half wait for their answer; the rest are abandoned.
                    let answer = flood_request(addr, n, n % 2 == 0);
                    if answer.is_some_and(|answer| answer.starts_with("HTTP/1.1 503")) {
                        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    n += THREADS;
                }
            });
        }
        let mut answers = Vec::new();
        for n in 0..BILLERS {
            // Each biller asks once the flood has overflowed the default
            // issuer's lane again since the last one asked.
            let overflowed = busy.load(std::sync::atomic::Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(60);
            while busy.load(std::sync::atomic::Ordering::Relaxed) <= overflowed {
                assert!(
                    Instant::now() < deadline,
                    "the flood never overflowed the queue"
                );
                thread::sleep(Duration::from_millis(5));
            }
            let response = daemon.request(
                "POST",
                "/billing/oauth2/token",
                &[
                    FORM,
                    (
                        "Authorization",
                        &basic(&format!("biller-{n}"), &format!("biller-{n}-secret")),
                    ),
                ],
                b"grant_type=client_credentials",
            );
            answers.push((response.status, response.text()));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        answers
    });
    let overflowed = busy.load(std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    println!("{overflowed} flood requests answered 503; the billers' first checks: {statuses:?}");
    for (n, (status, text)) in answers.iter().enumerate() {
        assert_eq!(
            *status, 200,
            "biller-{n}'s first check during the flood: {text}"
        );
    }
}

// ---- HTTP limits ----

fn limited_config(extra_server: &str) -> String {
    config().replacen(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\n{extra_server}\n"),
        1,
    )
}

/// Reads until the peer closes; `true` if it closed (EOF or reset) before `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 1024];
    while Instant::now() < deadline {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn slow_headers_are_cut_off_and_huge_headers_refused() {
    const SLOW: usize = 200;
    let dir = TestDir::new(&limited_config("header_read_timeout = \"2s\""));
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));

    // Many connections that send half a header, then a byte now and then.
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut stream = TcpStream::connect(daemon.addr()).expect("connect");
            stream
                .write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: jwkd\r\nX-Slow: ")
                .expect("send half a header");
            stream
        })
        .collect();
    let dripper = {
        let mut streams: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        thread::spawn(move || {
            for _ in 0..10 {
                thread::sleep(Duration::from_millis(500));
                for stream in &mut streams {
                    let _ = stream.write_all(b"a");
                }
            }
        })
    };
    // Meanwhile the daemon serves others.
    assert_eq!(daemon.get("/.well-known/jwks.json").status, 200);
    let still_open = slow
        .iter_mut()
        .map(|stream| closed_within(stream, Duration::from_secs(10)))
        .filter(|closed| !closed)
        .count();
    let held = opened.elapsed();
    let _ = dripper.join();
    println!(
        "{SLOW} slow-header connections (a byte every 500 ms) with header_read_timeout 2s: \
         all but {still_open} closed after {held:?}"
    );
    assert_eq!(still_open, 0, "slow-header connections were kept open");

    // A 300 KB header block: 431, not 200.
    let huge = "a".repeat(300 * 1024);
    let response = daemon.request(
        "GET",
        "/.well-known/jwks.json",
        &[("X-Huge", huge.as_str())],
        b"",
    );
    assert_eq!(response.status, 431, "{}", response.status);
    // Just under the limit is served.
    let big = "a".repeat(8 * 1024);
    assert_eq!(
        daemon
            .request(
                "GET",
                "/.well-known/jwks.json",
                &[("X-Big", big.as_str())],
                b""
            )
            .status,
        200
    );
}

#[test]
fn connections_beyond_the_cap_wait_their_turn() {
    let dir = TestDir::new(&limited_config(
        "header_read_timeout = \"2s\"\nmax_connections = 4",
    ));
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    // Four idle connections take every slot until the header timeout frees them.
    // The daemon cannot have accepted any of them before `held_at`, so none is
    // cut off, and no slot frees, before `held_at + 2s`: a fifth request answered
    // sooner was served while the cap was full. (Only a lower bound: a loaded
    // machine makes the wait longer, never shorter.)
    let held_at = Instant::now();
    let _idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(daemon.addr()).expect("connect"))
        .collect();
    let response = daemon.get("/healthz");
    let answered_after = held_at.elapsed();
    println!(
        "with max_connections 4 all held, a fifth request was answered after {answered_after:?}"
    );
    assert_eq!(response.status, 200);
    assert!(
        answered_after >= Duration::from_secs(2),
        "the fifth connection was served while the cap was full (after {answered_after:?})"
    );
}

// ---- throttling of failed authentication ----

/// A token request from the local address `from` (any 127.x.y.z is a distinct
/// source on loopback): the status and `Retry-After`.
fn token_from(
    daemon: &Daemon,
    from: &str,
    authorization: &str,
    forwarded_for: Option<&str>,
) -> (u16, Option<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap();
        let mut request = client
            .post(format!("http://{}/oauth2/token", daemon.addr()))
            .header("Authorization", authorization)
            .header(FORM.0, FORM.1)
            .body("grant_type=client_credentials");
        if let Some(forwarded_for) = forwarded_for {
            request = request.header("X-Forwarded-For", forwarded_for);
        }
        let response = request.send().await.expect("token request");
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap_or_default().to_owned());
        (response.status().as_u16(), retry_after)
    })
}

#[test]
fn failed_authentication_is_throttled_per_source() {
    let dir = TestDir::new(&limited_config(
        "auth_checks_per_minute = 5\ntrusted_proxies = [\"127.0.0.3\"]",
    ));
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let legit = basic("orders", "orders-secret");
    let wrong = basic("orders", "guess");
    // The real client's first check takes one of 127.0.0.1's five.
    assert_eq!(token_from(&daemon, "127.0.0.1", &legit, None).0, 200);
    let answers: Vec<(u16, Option<String>)> = (0..12)
        .map(|_| token_from(&daemon, "127.0.0.1", &wrong, None))
        .collect();
    let refused = answers.iter().filter(|(status, _)| *status == 401).count();
    let throttled: Vec<&Option<String>> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .map(|(_, retry_after)| retry_after)
        .collect();
    println!(
        "12 wrong secrets from one address with auth_checks_per_minute = 5: {refused} x 401, \
         {} x 429 (Retry-After {:?})",
        throttled.len(),
        throttled.first()
    );
    assert_eq!((refused, throttled.len()), (4, 8), "{answers:?}");
    assert!(
        throttled.iter().all(|retry_after| retry_after
            .as_deref()
            .and_then(|seconds| seconds.parse::<u64>().ok())
            .is_some_and(|seconds| (1..=60).contains(&seconds))),
        "{answers:?}"
    );
    // The real client, remembered, is never locked out, not even from that address.
    assert_eq!(token_from(&daemon, "127.0.0.1", &legit, None).0, 200);
    // Another address has its own allowance.
    assert_eq!(token_from(&daemon, "127.0.0.2", &wrong, None).0, 401);
    // A forwarded address counts only behind a trusted proxy...
    for _ in 0..5 {
        assert_eq!(
            token_from(&daemon, "127.0.0.3", &wrong, Some("203.0.113.9")).0,
            401
        );
    }
    assert_eq!(
        token_from(&daemon, "127.0.0.3", &wrong, Some("203.0.113.9")).0,
        429
    );
    assert_eq!(
        token_from(&daemon, "127.0.0.3", &wrong, Some("203.0.113.10")).0,
        401
    );
    // ...and is ignored from anyone else: 127.0.0.1 is still spent.
    assert_eq!(
        token_from(&daemon, "127.0.0.1", &wrong, Some("198.51.100.1")).0,
        429
    );
    let metrics = daemon.get("/metrics").text();
    let counted = metrics
        .lines()
        .find_map(|line| line.strip_prefix("jwkd_auth_throttled_total "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or_default();
    assert_eq!(counted, 10, "{metrics}");
    let log = daemon.stderr_text();
    let lines = log
        .lines()
        .filter(|line| {
            line.contains("throttling client authentication") && line.contains("127.0.0.1")
        })
        .count();
    assert_eq!(lines, 1, "logged once a minute per source:\n{log}");
}

/// A request from the local address `from`: the status and the body.
fn request_from(
    daemon: &Daemon,
    from: &str,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap();
        let mut request = client
            .request(method, format!("http://{}{path}", daemon.addr()))
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

#[test]
fn failed_authentication_is_logged_with_the_check_that_failed_never_the_secret() {
    let dir = TestDir::new(&limited_config(""));
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let post_token = |from: &str, authorization: Option<&str>, body: &str| {
        let mut headers = vec![FORM];
        headers.extend(authorization.map(|value| ("Authorization", value)));
        request_from(
            &daemon,
            from,
            reqwest::Method::POST,
            "/oauth2/token",
            &headers,
            body,
        )
    };
    let grant = "grant_type=client_credentials";
    let secrets = [
        "Wr0ng-Secret-1",
        "Unkn0wn-Secret-2",
        "Colonless-Secret-3",
        "Twice-Secret-4",
        "Bearer-Secret-5",
    ];
    // Each from an address of its own: a new address is always heard.
    let wrong = post_token("127.0.0.21", Some(&basic("orders", secrets[0])), grant);
    let unknown = post_token("127.0.0.22", Some(&basic("ordres", secrets[1])), grant);
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong, unknown, "the peer cannot tell them apart");
    assert_eq!(
        post_token("127.0.0.23", Some("Basic !!!not-base64"), grant).0,
        401
    );
    let colonless = format!("Basic {}", STANDARD.encode(secrets[2]));
    assert_eq!(post_token("127.0.0.24", Some(&colonless), grant).0, 401);
    let twice = format!("{grant}&client_id=orders&client_secret={}", secrets[3]);
    assert_eq!(
        post_token("127.0.0.25", Some(&basic("orders", secrets[3])), &twice).0,
        400
    );
    let bearer = format!("Bearer {}", secrets[4]);
    let signing_keys = request_from(
        &daemon,
        "127.0.0.26",
        reqwest::Method::GET,
        "/v1/signing-keys",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(signing_keys.0, 401);
    assert_eq!(post_token("127.0.0.27", None, grant).0, 401);
    // A second failure from an address within the minute is not logged again.
    assert_eq!(
        post_token("127.0.0.21", Some(&basic("nobody", secrets[0])), grant).0,
        401
    );

    let log = daemon.stderr_text();
    let failed = |source: &str| -> Vec<&str> {
        log.lines()
            .filter(|line| {
                line.contains("client authentication failed: ")
                    && line.ends_with(&format!(" source={source}"))
            })
            .collect()
    };
    let mut problems = Vec::new();
    for (source, says) in [
        (
            "127.0.0.21",
            "wrong secret (logged once a minute per source) client=orders",
        ),
        (
            "127.0.0.22",
            "unknown client (logged once a minute per source) client=ordres",
        ),
        (
            "127.0.0.23",
            "malformed credentials: the Basic credentials are not valid base64 (logged",
        ),
        (
            "127.0.0.24",
            "malformed credentials: the Basic credentials have no ':' (logged",
        ),
        (
            "127.0.0.25",
            "credentials sent twice, in the header and in the form (logged once a minute per source) client=orders",
        ),
        (
            "127.0.0.26",
            "malformed credentials: expected Bearer <client_id>:<client_secret> (logged",
        ),
        ("127.0.0.27", "no credentials (logged"),
    ] {
        let lines = failed(source);
        let expected = format!("client authentication failed: {says}");
        if lines.len() != 1 || !lines[0].contains(" WARN ") || !lines[0].contains(&expected) {
            problems.push(format!(
                "from {source}: expected one WARN line with {expected:?}, got {lines:#?}"
            ));
        }
    }
    for secret in secrets {
        if log.contains(secret) {
            problems.push(format!("the secret {secret:?} is in the log"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}
---- log ----
{log}",
        problems.join("\n")
    );
}

// ---- secrets at rest ----

#[test]
fn client_secret_hashes_can_live_outside_the_config() {
    let hash = hash_secret("orders-secret");
    let with_client = |client: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[keys]\nrotation_schedule = \"0 3 * * *\"\n\
             [store]\npath = \"keyset.json\"\n[issuer]\nissuer = \"https://jwkd.test\"\n\n\
             [[clients]]\nid = \"orders\"\naudiences = [\"payments\"]\n{client}\n"
        )
    };
    let dir = TestDir::new(&with_client("secret_hash_file = \"secrets/orders.hash\""));
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    let file = dir.path().join("secrets/orders.hash");
    std::fs::write(&file, format!("{hash}\n")).unwrap();

    // Readable by others: refused, naming the key and the fix.
    chmod(&file, 0o644);
    let outcome = dir.run("check-config", &[]);
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains("clients[0].secret_hash_file")
            && outcome.stderr.contains("chmod 600"),
        "{outcome}"
    );
    // Private to its owner: the client works as with an inline hash.
    chmod(&file, 0o600);
    dir.run("check-config", &[]).assert_code(0);
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    assert_eq!(token(&daemon, &basic("orders", "orders-secret")), 200);
    drop(daemon);

    // Both, or a file that is not a hash: config errors.
    dir.write(
        "jwkd.toml",
        with_client(&format!(
            "secret_hash = \"{hash}\"\nsecret_hash_file = \"secrets/orders.hash\""
        )),
    );
    let outcome = dir.run("check-config", &[]);
    outcome.assert_code(2);
    assert!(outcome.stderr.contains("not both"), "{outcome}");
    std::fs::write(&file, "orders-secret\n").unwrap();
    dir.write(
        "jwkd.toml",
        with_client("secret_hash_file = \"secrets/orders.hash\""),
    );
    let outcome = dir.run("check-config", &[]);
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains("clients[0].secret_hash_file")
            && outcome.stderr.contains("PHC hash"),
        "{outcome}"
    );
}

#[test]
fn one_client_id_tried_from_many_addresses_is_throttled_but_not_from_its_own() {
    let dir = TestDir::new(&limited_config(
        "auth_checks_per_minute = 100\nauth_checks_per_client_per_minute = 3",
    ));
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let legit = basic("orders", "orders-secret");
    let wrong = basic("orders", "guess");
    // The real client's first check, from its own address: one of three.
    assert_eq!(token_from(&daemon, "127.0.0.1", &legit, None).0, 200);
    // A guesser spreads over new addresses: two more, then 429 from any new one.
    assert_eq!(token_from(&daemon, "127.0.0.2", &wrong, None).0, 401);
    assert_eq!(token_from(&daemon, "127.0.0.3", &wrong, None).0, 401);
    let (status, retry_after) = token_from(&daemon, "127.0.0.4", &wrong, None);
    assert_eq!(status, 429);
    assert!(retry_after.is_some());
    // Unknown ids are not this allowance's business (the per-source one bounds them).
    assert_eq!(
        token_from(&daemon, "127.0.0.4", &basic("nobody", "guess"), None).0,
        401
    );
    // The real client must be checked in full again after a reload, and its own
    // address is never refused; a new address is, for now.
    let reload = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(reload.success());
    crate::util::poll(Duration::from_secs(10), || {
        if daemon.stderr_text().contains("configuration reloaded") {
            Ok(())
        } else {
            Err(daemon.stderr_text())
        }
    })
    .unwrap_or_else(|log| panic!("no reload:\n{log}"));
    assert_eq!(token_from(&daemon, "127.0.0.5", &legit, None).0, 429);
    assert_eq!(token_from(&daemon, "127.0.0.1", &legit, None).0, 200);
    // Once checked, the secret is remembered and never throttled, from anywhere.
    assert_eq!(token_from(&daemon, "127.0.0.5", &legit, None).0, 200);
}

// ---- HTTP/2 rapid reset ----

#[test]
fn http2_rapid_reset_is_cut_off_early() {
    const STREAMS: usize = 10_000;
    let dir = TestDir::new(&config());
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let addr = daemon.addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (opened, ended) = runtime.block_on(async move {
        // HTTP/2 with prior knowledge over plain TCP, as hyper-util serves it.
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let connection = tokio::spawn(connection);
        let mut opened = 0;
        for _ in 0..STREAMS {
            let Ok(mut client) = client.clone().ready().await else {
                break;
            };
            let request = http::Request::get(format!("http://{addr}/.well-known/jwks.json"))
                .body(())
                .expect("request");
            match client.send_request(request, true) {
                Ok((_response, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    opened += 1;
                }
                Err(_) => break,
            }
        }
        let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
        (opened, ended)
    });
    // What the server did: JWKS requests it handled (the client only queued frames).
    let handled: u64 = daemon
        .get("/metrics")
        .text()
        .lines()
        .filter(|line| {
            line.starts_with("jwkd_http_requests_total{route=\"/.well-known/jwks.json\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    println!(
        "HTTP/2 rapid reset: {opened} streams opened and reset on one connection; the server \
         handled {handled} of them and ended the connection: {ended:?}"
    );
    assert!(
        handled < (STREAMS / 10) as u64,
        "the server handled {handled} of {STREAMS} streams reset at once"
    );
    assert!(
        matches!(ended, Ok(Ok(Err(_)))),
        "the server should end the connection (GOAWAY): {ended:?}"
    );
    // The daemon is none the worse.
    assert_eq!(daemon.get("/.well-known/jwks.json").status, 200);
}

/// A reload does not leave memory behind: each SIGHUP used to start two new
/// Argon2 threads whose 19 MiB of working memory stayed in the allocator
/// after they ended, ~20 MiB more resident set per reload without bound (the
/// soak found it: a replica at 220 MiB after a few reloads). The hashing
/// threads now live as long as the process, for every issuer and reload.
#[test]
fn reloads_do_not_grow_the_resident_set() {
    let dir = TestDir::new(&config());
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let orders = basic("orders", "orders-secret");
    assert_eq!(token(&daemon, &orders), 200);
    let before = daemon.status_kib("RssAnon");
    let reloads = 16;
    for reload in 1..=reloads {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &daemon.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        crate::util::poll(Duration::from_secs(10), || {
            let output = daemon.stderr_text();
            (output.matches("configuration reloaded").count() >= reload)
                .then_some(())
                .ok_or(output)
        })
        .unwrap_or_else(|output| panic!("reload {reload} not applied:\n{output}"));
        // A reload forgets remembered secrets: this is a full Argon2 check.
        assert_eq!(token(&daemon, &orders), 200);
    }
    // At most the second hashing thread's first use (19 MiB); before, 16
    // reloads grew it by ~150 MiB.
    let grown = daemon.status_kib("RssAnon").saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "{reloads} reloads grew the resident set by {} MiB",
        grown / 1024
    );
}
