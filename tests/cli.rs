//! CONTRACT §2: verbs, exit codes, `check-config`, `keys --json`, `hash-secret`.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Days, NaiveTime, TimeDelta, Utc};

use crate::util::{
    self, Key, SLOW_CONFIG, TestConfig, TestDir, hash_secret, jwkd, one_current_per_family,
    replace_once, run_cmd, show_keys, with_algorithms,
};

/// The next `n` fire times of the cron `0 3 * * *` (03:00 UTC daily) strictly after `now`.
fn daily_0300_after(now: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let three = NaiveTime::from_hms_opt(3, 0, 0).expect("valid time");
    let mut day = now.date_naive();
    let mut fires = Vec::new();
    while fires.len() < n {
        let fire = day.and_time(three).and_utc();
        if fire > now {
            fires.push(fire);
        }
        day = day.checked_add_days(Days::new(1)).expect("date in range");
    }
    fires
}

/// Whether `text` shows `time` in a usual UTC rendering (RFC 3339 or `YYYY-MM-DD HH:MM[:SS]`).
fn shows_time(text: &str, time: DateTime<Utc>) -> bool {
    [
        time.format("%Y-%m-%dT%H:%M:%S").to_string(),
        time.format("%Y-%m-%d %H:%M:%S").to_string(),
        time.format("%Y-%m-%d %H:%M").to_string(),
    ]
    .iter()
    .any(|rendering| text.contains(rendering.as_str()))
}

#[test]
fn check_config_prints_next_rotations_and_retention() {
    // Retention of a retired key = max_token_lifetime + clock_skew = 1h5m.
    let config = with_algorithms(
        &replace_once(SLOW_CONFIG, r#"clock_skew = "1m""#, r#"clock_skew = "5m""#),
        &["ES256", "EdDSA"],
    );
    let dir = TestDir::new(&config);
    let before = Utc::now();
    let outcome = dir.run("check-config", &[]);
    let after = Utc::now();
    outcome.assert_code(0);

    let expected_sets = [daily_0300_after(before, 3), daily_0300_after(after, 3)];
    let shows_all =
        |fires: &Vec<DateTime<Utc>>| fires.iter().all(|t| shows_time(&outcome.stdout, *t));
    assert!(
        expected_sets.iter().any(shows_all),
        "expected the next 3 rotations {:?} on stdout\n{outcome}",
        expected_sets[0]
    );
    for family in ["ES256", "EdDSA"] {
        assert!(
            outcome.stdout.contains(family),
            "expected family {family} on stdout\n{outcome}"
        );
    }
    let stdout_lower = outcome.stdout.to_lowercase();
    assert!(
        stdout_lower.contains("retention"),
        "expected the retention on stdout\n{outcome}"
    );
    let renderings = ["1h5m", "1h 5m", "65m", "3900s", "1:05:00", "01:05:00"];
    assert!(
        renderings.iter().any(|r| stdout_lower.contains(r)),
        "expected the retention 1h5m (max_token_lifetime + clock_skew) in one of the \
         renderings {renderings:?} on stdout\n{outcome}"
    );
}

#[test]
fn check_config_honours_jwkd_config_env() {
    let dir = TestDir::new(SLOW_CONFIG);
    let mut cmd = jwkd();
    cmd.arg("check-config")
        .env("JWKD_CONFIG", dir.config_path());
    run_cmd(cmd, None, util::CMD_TIMEOUT).assert_code(0);
}

#[test]
fn keys_json_on_fresh_store_is_empty_and_creates_nothing() {
    let dir = TestDir::new(SLOW_CONFIG);
    let outcome = dir.run("keys", &["--json"]);
    outcome.assert_code(0);
    let parsed: serde_json::Value = serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|err| panic!("keys --json printed invalid JSON: {err}\n{outcome}"));
    assert_eq!(
        parsed,
        serde_json::json!([]),
        "expected [] for an empty store\n{outcome}"
    );
    assert!(
        dir.read_store().is_none(),
        "expected `keys` (a listing) not to create {}",
        dir.store_path().display()
    );
    dir.run("keys", &[]).assert_code(0);
}

#[test]
fn keys_json_after_first_start_has_current_and_next_per_family() {
    let algorithms = ["ES256", "EdDSA"];
    let dir = TestDir::new(&with_algorithms(SLOW_CONFIG, &algorithms));
    let started = Utc::now();
    let mut daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let jwks = daemon.jwks_kids(true);
    daemon.kill9();

    let keys = dir.keys();
    let now = Utc::now();
    let table = show_keys(&keys);
    one_current_per_family(&keys, &algorithms).unwrap_or_else(|err| panic!("{err}\n{table}"));
    // Retention = max_token_lifetime + clock_skew; pre-publication =
    // jwks_max_age + clock_skew + store.refresh_interval.
    let retention = TimeDelta::minutes(61);
    let lead = TimeDelta::minutes(6) + TimeDelta::seconds(1);
    for alg in algorithms {
        let family: Vec<&Key> = keys.iter().filter(|key| key.alg == alg).collect();
        let states: Vec<&str> = family.iter().map(|key| key.state.as_str()).collect();
        let mut sorted = states.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            ["current", "next"],
            "family {alg}: expected one current and one next key\n{table}"
        );
        let current = family
            .iter()
            .find(|key| key.state == "current")
            .expect("checked");
        let next = family
            .iter()
            .find(|key| key.state == "next")
            .expect("checked");
        assert_eq!(
            current.deactivates_at,
            Some(next.activates_at),
            "family {alg}: the current key must deactivate when the next activates\n{table}"
        );
        assert!(
            next.activates_at >= next.created_at + lead
                && next.activates_at <= next.created_at + lead + TimeDelta::days(1)
                && next.activates_at.time() == NaiveTime::from_hms_opt(3, 0, 0).expect("valid"),
            "family {alg}: the next key must activate at the first 03:00 UTC at least \
             jwks_max_age + clock_skew + store.refresh_interval (6m1s) after its creation\n{table}"
        );
    }
    for key in &keys {
        assert!(
            key.kid.len() == 43
                && key
                    .kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "kid must be a base64url SHA-256 thumbprint (43 chars), got {:?}\n{table}",
            key.kid
        );
        // The first key of a family signs at once and is written clock_skew (1m) in
        // the past, so that replicas whose clocks are behind see it current too.
        let backdated = if key.state == "current" {
            TimeDelta::minutes(1)
        } else {
            TimeDelta::zero()
        };
        assert!(
            key.created_at >= started - backdated - TimeDelta::seconds(1)
                && key.created_at <= now - backdated,
            "created_at must lie within the test run ({started} .. {now}), less {backdated} \
             for a first key\n{table}"
        );
        assert_eq!(
            key.expires_at,
            key.deactivates_at.map(|at| at + retention),
            "expires_at must be deactivates_at + max_token_lifetime + clock_skew for {}\n{table}",
            key.kid
        );
        assert_eq!(key.revoked_at, None, "nothing was revoked\n{table}");
    }
    let expected: BTreeSet<String> = keys.iter().map(|key| key.kid.clone()).collect();
    assert_eq!(
        jwks, expected,
        "the JWKS must list the current and next keys of every family\n{table}"
    );

    let human = dir.run("keys", &[]);
    human.assert_code(0);
    for key in &keys {
        assert!(
            human.stdout.contains(&key.kid),
            "expected `keys` to list {}\n{human}",
            key.kid
        );
    }
}

#[test]
fn hash_secret_reads_stdin_and_prints_a_salted_hash() {
    let secret = "correct-horse-battery-staple";
    let first = hash_secret(&format!("{secret}\n"));
    let second = hash_secret(&format!("{secret}\n"));
    for hash in [&first, &second] {
        assert!(
            !hash.contains(secret) && !hash.contains("correct-horse"),
            "the hash must not contain the secret, got {hash:?}"
        );
        assert_eq!(hash.lines().count(), 1, "expected one line, got {hash:?}");
    }
    assert_ne!(
        first, second,
        "expected a salted hash: two hashes of one secret must differ"
    );

    // The output is what goes into `secret_hash`.
    let config = format!(
        "{SLOW_CONFIG}\n[issuer]\nissuer = \"https://issuer.test\"\ntoken_lifetime = \"15m\"\n\n\
         [[clients]]\nid = \"orders\"\nsecret_hash = {first:?}\naudiences = [\"payments\"]\n\
         scopes = [\"payments:write\"]\nroles = []\n"
    );
    let dir = TestDir::new(&config);
    dir.run("check-config", &[]).assert_code(0);
}

#[test]
fn hash_secret_refuses_weak_secrets_and_generates_strong_ones() {
    let mut cmd = jwkd();
    cmd.arg("hash-secret");
    let weak = run_cmd(cmd, Some(b"short\n"), util::CMD_TIMEOUT);
    weak.assert_code(1);
    assert!(
        weak.stderr.contains("at least 8") && weak.stderr.contains("--generate"),
        "{weak}"
    );
    let mut cmd = jwkd();
    cmd.args(["hash-secret", "--generate"]);
    let made = run_cmd(cmd, None, util::CMD_TIMEOUT);
    made.assert_code(0);
    let field = |name: &str| {
        made.stdout
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in\n{made}"))
            .to_owned()
    };
    let (secret, hash) = (field("secret: "), field("secret_hash: "));
    assert!(
        secret.len() >= 43
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "a 256-bit secret that needs no encoding in Basic or a form: {secret:?}"
    );
    // The pair works: the hash goes in the config, the secret gets a token.
    let config = format!(
        "{SLOW_CONFIG}\n[issuer]\nissuer = \"https://issuer.test\"\n\n\
         [[clients]]\nid = \"orders\"\nsecret_hash = {hash:?}\naudiences = [\"payments\"]\n"
    );
    let dir = TestDir::new(&config);
    let daemon = dir.serve();
    daemon.wait_ready(std::time::Duration::from_secs(20));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("orders:{secret}"));
    let response = daemon.request(
        "POST",
        "/oauth2/token",
        &[
            ("Authorization", &format!("Basic {basic}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials",
    );
    assert_eq!(response.status, 200, "{response}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = TestDir::new(SLOW_CONFIG);
    let config = dir.config_path();
    let config = config.to_str().expect("utf-8 temp path");
    let cases: &[&[&str]] = &[
        &["frobnicate"],
        &["frobnicate", "--config", config],
        &[],
        &["keys", "--config", config, "--frobnicate"],
        &["revoke", "--config", config],
    ];
    let mut failures = Vec::new();
    for args in cases {
        let mut cmd = jwkd();
        cmd.args(*args);
        let outcome = run_cmd(cmd, None, util::CMD_TIMEOUT);
        if outcome.code != Some(2) || outcome.stderr.trim().is_empty() {
            failures.push(format!(
                "expected exit code 2 and a message on stderr\n{outcome}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn missing_config_file_exits_2_naming_the_path() {
    let dir = TestDir::new(SLOW_CONFIG);
    let missing = dir.path().join("nope").join("jwkd.toml");
    let missing_text = missing.to_str().expect("utf-8 temp path");
    let mut failures = Vec::new();
    let mut check = |cmd: std::process::Command, needle: &str| {
        let outcome = run_cmd(cmd, None, Duration::from_secs(20));
        if outcome.code != Some(2) || !outcome.stderr.contains(needle) {
            failures.push(format!(
                "expected exit code 2 and {needle:?} on stderr\n{outcome}"
            ));
        }
    };
    for verb in ["check-config", "keys", "rotate", "serve"] {
        let mut cmd = jwkd();
        cmd.arg(verb).arg("--config").arg(&missing);
        check(cmd, missing_text);
    }
    let mut via_env = jwkd();
    via_env.arg("check-config").env("JWKD_CONFIG", &missing);
    check(via_env, missing_text);

    // Neither --config nor JWKD_CONFIG: the default path.
    let default = "/etc/jwkd/jwkd.toml";
    if std::path::Path::new(default).exists() {
        eprintln!("note: {default} exists on this machine; not checking the default path");
    } else {
        let mut cmd = jwkd();
        cmd.arg("check-config");
        check(cmd, default);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn serve_says_in_one_line_what_it_runs_and_every_address_it_listens_on() {
    let config = replace_once(
        &with_algorithms(SLOW_CONFIG, &["ES256", "RS256"]),
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nprivate_listen = \"127.0.0.1:0\"",
    );
    let dir = TestDir::new(&config);
    let mut daemon = dir.serve();
    let public = daemon.wait_listening(util::LISTEN_TIMEOUT);
    let line = daemon.wait_for_line(" ready: ", util::LISTEN_TIMEOUT);
    let output = daemon.stderr_text();
    let ready = output
        .lines()
        .filter(|line| line.contains(" ready: "))
        .count();
    assert_eq!(ready, 1, "one startup line\n{output}");
    let line = line.as_str();
    assert!(line.contains(" INFO "), "at info level: {line}");
    let expected = format!(
        "jwkd {} ready: config {}; store file {}; key families ES256, RS256; listening on http://{public} and http://",
        env!("CARGO_PKG_VERSION"),
        dir.config_path().display(),
        dir.store_path().display(),
    );
    assert!(
        line.contains(&expected),
        "expected\n{expected}\ngot\n{line}"
    );
    let private: std::net::SocketAddr = line
        .rsplit("and http://")
        .next()
        .and_then(|rest| rest.strip_suffix(" (issuer and admin)"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no private address at the end of\n{line}"));
    assert_ne!(private.port(), 0, "{line}");
    assert_ne!(private, public, "{line}");
    // The private address is the one bound: it answers (and only its own routes).
    util::http(private, "GET", "/.well-known/jwks.json", &[], b"")
        .unwrap_or_else(|err| panic!("nothing listens on {private}: {err}\n{output}"))
        .assert_json_error(404);
    // The parts it replaces are gone: no second, partial line about listening.
    assert_eq!(
        output.matches("listening on").count(),
        1,
        "one line names the addresses\n{output}"
    );
}

/// The verbs act on the issuer `--issuer` names, on its own keyset file; an
/// unknown name is a usage error that lists the names there are.
#[test]
fn verbs_act_on_the_issuer_they_name() {
    let base = TestConfig::slow().issuer("https://auth.test");
    let billing = base
        .issuer_entry("billing", "https://auth.test/billing")
        .algorithms(&["ES384"]);
    let dir = TestDir::new(&base.with_issuer(billing).build());
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    drop(daemon);
    let check = dir.run("check-config", &[]);
    check.assert_code(0);
    assert!(
        check.stdout.contains("issuer default (https://auth.test):")
            && check
                .stdout
                .contains("issuer billing (https://auth.test/billing):")
            && check.stdout.contains("ES384 (default):"),
        "{check}"
    );
    let keys_of = |issuer: &str| -> Vec<Key> {
        let listed = dir.run("keys", &["--json", "--issuer", issuer]);
        listed.assert_code(0);
        let raw: Vec<serde_json::Value> = serde_json::from_str(&listed.stdout).unwrap();
        Key::parse_all(&raw).unwrap()
    };
    let default_before = dir.keys();
    assert_eq!(keys_of("default").len(), default_before.len());
    let billing_before = keys_of("billing");
    assert!(
        billing_before.iter().all(|key| key.alg == "ES384"),
        "{billing_before:?}"
    );
    assert!(dir.path().join("keyset.billing.json").exists());

    // Revoking billing's next key, by billing; the default issuer does not know it.
    let next = billing_before
        .iter()
        .find(|key| key.state == "next")
        .expect("a next key")
        .kid
        .clone();
    let refused = dir.run("revoke", &[&next]);
    refused.assert_code(1);
    dir.run("revoke", &[&next, "--issuer", "billing"])
        .assert_code(0);
    let billing_after = keys_of("billing");
    assert!(
        billing_after
            .iter()
            .any(|key| key.kid == next && key.state == "revoked"),
        "{billing_after:?}"
    );
    assert_eq!(
        dir.keys(),
        default_before,
        "the default issuer's keys moved"
    );

    let unknown = dir.run("rotate", &["--issuer", "nope"]);
    unknown.assert_code(2);
    assert!(
        unknown
            .stderr
            .contains("--issuer nope: no issuer of that name (there are: default, billing)"),
        "{unknown}"
    );
}
