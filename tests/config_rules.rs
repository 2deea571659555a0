//! CONTRACT §3 validation rules, data-driven: every rejection exits 2 with a message
//! naming the file and the key; near misses on the same rules are accepted.
//! `check-config` and `serve` must agree (they share one validation path).

use std::time::Duration;

use crate::util::{Daemon, FAST_CONFIG, Outcome, TestDir, hash_secret, replace_once};

/// What a case does to the directory before running, besides writing the config.
#[derive(Clone, Copy)]
enum Setup {
    None,
    /// Garbage in the store file.
    CorruptStore,
    /// The store path is a directory.
    StoreIsDirectory,
}

struct Case {
    name: &'static str,
    config: String,
    setup: Setup,
    /// Substrings stderr must contain. `{config}` and `{store}` stand for the file paths.
    expect: Vec<&'static str>,
}

/// The valid config every case starts from: the fast schedule plus an issuer.
fn base() -> String {
    format!("{FAST_CONFIG}\n[issuer]\nissuer = \"https://issuer.test\"\ntoken_lifetime = \"2s\"\n")
}

fn edit(edits: &[(&str, &str)]) -> String {
    edits
        .iter()
        .fold(base(), |config, (from, to)| replace_once(&config, from, to))
}

const SCHEDULE: &str = r#"rotation_schedule = "*/2 * * * * *""#;
const MAX_AGE: &str = r#"jwks_max_age = "1s""#;
const SKEW: &str = r#"clock_skew = "0s""#;
const REFRESH: &str = r#"refresh_interval = "500ms""#;
const MAX_LIFETIME: &str = r#"max_token_lifetime = "3s""#;
const TOKEN_LIFETIME: &str = r#"token_lifetime = "2s""#;
const ALGORITHMS: &str = r#"algorithms = ["ES256"]"#;

fn client(id: &str, secret_hash: &str) -> String {
    format!(
        "\n[[clients]]\nid = {id:?}\nsecret_hash = {secret_hash:?}\naudiences = [\"payments\"]\n\
         scopes = [\"payments:write\"]\nroles = []\n"
    )
}

fn rejected_cases() -> Vec<Case> {
    let secret_hash = hash_secret("s3cret-pw");
    let case = |name, config, expect: &[&'static str]| Case {
        name,
        config,
        setup: Setup::None,
        expect: [&["{config}"], expect].concat(),
    };
    vec![
        case(
            "unknown key in [keys]",
            edit(&[("x5c = true", "x5c = true\nbogus = 1")]),
            &["keys.bogus"],
        ),
        case(
            "unknown key in [server]",
            edit(&[(
                r#"listen = "127.0.0.1:0""#,
                "listen = \"127.0.0.1:0\"\nlisten_backlog = 5",
            )]),
            &["server.listen_backlog"],
        ),
        case(
            "unknown section",
            format!("{}\n[metrics]\nenabled = true\n", base()),
            &["metrics"],
        ),
        case(
            "bad cron",
            edit(&[(SCHEDULE, r#"rotation_schedule = "every two seconds""#)]),
            &["keys.rotation_schedule"],
        ),
        case(
            "cron field out of range",
            edit(&[(SCHEDULE, r#"rotation_schedule = "61 * * * *""#)]),
            &["keys.rotation_schedule"],
        ),
        case(
            "gap (2s) below jwks_max_age (5s)",
            edit(&[(MAX_AGE, r#"jwks_max_age = "5s""#)]),
            &["keys.rotation_schedule"],
        ),
        case(
            "gap (2s) below jwks_max_age + clock_skew + refresh_interval (1s + 0s + 1500ms): a \
             replica that re-reads the store late could serve the next key too late",
            edit(&[(REFRESH, r#"refresh_interval = "1500ms""#)]),
            &["keys.rotation_schedule", "store.refresh_interval"],
        ),
        case(
            "gap (2s) below jwks_max_age + clock_skew (1s + 2s)",
            edit(&[(SKEW, r#"clock_skew = "2s""#)]),
            &["keys.rotation_schedule"],
        ),
        case(
            "shortest gap (1m between minute 0 and 1) below jwks_max_age (5m)",
            edit(&[
                (SCHEDULE, r#"rotation_schedule = "0,1 * * * *""#),
                (MAX_AGE, r#"jwks_max_age = "5m""#),
            ]),
            &["keys.rotation_schedule"],
        ),
        case(
            "token_lifetime above max_token_lifetime",
            edit(&[
                (MAX_LIFETIME, r#"max_token_lifetime = "1h""#),
                (TOKEN_LIFETIME, r#"token_lifetime = "2h""#),
            ]),
            &["issuer.token_lifetime"],
        ),
        case(
            "duplicate client ids",
            format!(
                "{}{}{}",
                base(),
                client("orders", &secret_hash),
                client("orders", &secret_hash)
            ),
            &["clients", "orders"],
        ),
        case(
            "bad duration",
            edit(&[(MAX_LIFETIME, r#"max_token_lifetime = "5 parsecs""#)]),
            &["keys.max_token_lifetime"],
        ),
        case(
            "bad duration in clock_skew",
            edit(&[(SKEW, r#"clock_skew = "soon""#)]),
            &["keys.clock_skew"],
        ),
        case(
            "bad duration in store.refresh_interval",
            edit(&[(REFRESH, r#"refresh_interval = "1 fortnight""#)]),
            &["store.refresh_interval"],
        ),
        case(
            "unknown algorithm",
            edit(&[(ALGORITHMS, r#"algorithms = ["HS256"]"#)]),
            &["keys.algorithms", "HS256"],
        ),
        case(
            "unknown algorithm beside a known one",
            edit(&[(ALGORITHMS, r#"algorithms = ["ES256", "PS512"]"#)]),
            &["keys.algorithms", "PS512"],
        ),
        case(
            "no algorithm at all",
            edit(&[(ALGORITHMS, "algorithms = []")]),
            &["keys.algorithms"],
        ),
        case(
            "wrong type",
            edit(&[(r#"listen = "127.0.0.1:0""#, "listen = 8080")]),
            &["server.listen"],
        ),
        case(
            "unknown store backend",
            edit(&[(r#"backend = "file""#, r#"backend = "redis""#)]),
            &["store.backend"],
        ),
        case("TOML syntax error", edit(&[("x5c = true", "x5c = ")]), &[]),
        Case {
            name: "unreadable store (corrupt file)",
            config: base(),
            setup: Setup::CorruptStore,
            expect: vec!["{store}"],
        },
        Case {
            name: "unreadable store (a directory)",
            config: base(),
            setup: Setup::StoreIsDirectory,
            expect: vec!["{store}"],
        },
    ]
}

fn accepted_cases() -> Vec<(&'static str, String)> {
    vec![
        ("the base config", base()),
        (
            "gap (2s) exactly jwks_max_age + clock_skew + refresh_interval (1s + 500ms + 500ms)",
            edit(&[(SKEW, r#"clock_skew = "500ms""#)]),
        ),
        (
            "token_lifetime equal to max_token_lifetime",
            edit(&[(TOKEN_LIFETIME, r#"token_lifetime = "3s""#)]),
        ),
        (
            "@hourly, durations in m/h/d",
            edit(&[
                (SCHEDULE, r#"rotation_schedule = "@hourly""#),
                (MAX_AGE, r#"jwks_max_age = "5m""#),
                // 2d of hourly keys: 50 in the JWKS, under the 100 allowed.
                (MAX_LIFETIME, r#"max_token_lifetime = "2d""#),
                (TOKEN_LIFETIME, r#"token_lifetime = "1h""#),
            ]),
        ),
        (
            "5-field crontab",
            edit(&[
                (SCHEDULE, r#"rotation_schedule = "0 3 * * *""#),
                (MAX_AGE, r#"jwks_max_age = "5m""#),
            ]),
        ),
        (
            "7-field cron with seconds and years",
            edit(&[(SCHEDULE, r#"rotation_schedule = "0 0 3 * * * *""#)]),
        ),
        (
            "several families",
            edit(&[(
                ALGORITHMS,
                r#"algorithms = ["ES256", "ES384", "EdDSA", "RS256"]"#,
            )]),
        ),
    ]
}

/// Writes the case into a fresh directory; returns it with the expected substrings resolved.
fn prepare(case: &Case) -> (TestDir, Vec<String>) {
    let dir = TestDir::new(&case.config);
    match case.setup {
        Setup::None => {}
        Setup::CorruptStore => dir.write(crate::util::STORE_FILE, b"\x00\xffnot a keyset{{{"),
        Setup::StoreIsDirectory => {
            std::fs::create_dir(dir.store_path()).expect("create directory at store path")
        }
    }
    let config_path = dir.config_path().display().to_string();
    let store_path = dir.store_path().display().to_string();
    let expect = case
        .expect
        .iter()
        .map(|needle| {
            needle
                .replace("{config}", &config_path)
                .replace("{store}", &store_path)
        })
        .collect();
    (dir, expect)
}

/// The store as it is on disk, to check that a rejected command left it alone.
fn store_snapshot(dir: &TestDir) -> Option<Vec<u8>> {
    if dir.store_path().is_dir() {
        Some(b"<directory>".to_vec())
    } else {
        dir.read_store()
    }
}

fn verdict(
    name: &str,
    code: Option<i32>,
    stderr: &str,
    expect: &[String],
    shown: &str,
) -> Option<String> {
    let missing: Vec<&String> = expect
        .iter()
        .filter(|needle| !stderr.contains(needle.as_str()))
        .collect();
    if code == Some(2) && missing.is_empty() {
        return None;
    }
    Some(format!(
        "case {name:?}: expected exit code 2 and stderr containing {expect:?}\n\
         got exit code {code:?}, missing {missing:?}\n{shown}"
    ))
}

#[test]
fn check_config_rejects_each_rule_naming_file_and_key() {
    let mut failures = Vec::new();
    for case in rejected_cases() {
        let (dir, expect) = prepare(&case);
        let before = store_snapshot(&dir);
        let outcome: Outcome = dir.run("check-config", &[]);
        failures.extend(verdict(
            case.name,
            outcome.code,
            &outcome.stderr,
            &expect,
            &outcome.to_string(),
        ));
        if store_snapshot(&dir) != before {
            failures.push(format!(
                "case {:?}: check-config changed the store",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn serve_rejects_each_rule_like_check_config() {
    let mut failures = Vec::new();
    for case in rejected_cases() {
        let (dir, expect) = prepare(&case);
        let before = store_snapshot(&dir);
        let mut daemon = Daemon::spawn(&dir.config_path());
        let status = daemon.wait_exit(Duration::from_secs(20));
        let output = daemon.stderr_text();
        let shown = format!("---- serve output ----\n{output}");
        if store_snapshot(&dir) != before {
            failures.push(format!(
                "case {:?}: serve changed the store\n{shown}",
                case.name
            ));
        }
        match status {
            None => failures.push(format!(
                "case {:?}: `serve` did not exit within 20 s (it must refuse to start)\n{shown}",
                case.name
            )),
            Some(status) => {
                failures.extend(verdict(case.name, status.code(), &output, &expect, &shown))
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn check_config_accepts_near_misses() {
    let mut failures = Vec::new();
    for (name, config) in accepted_cases() {
        let dir = TestDir::new(&config);
        let outcome = dir.run("check-config", &[]);
        if outcome.code != Some(0) {
            failures.push(format!(
                "case {name:?}: expected exit code 0\n---- config ----\n{config}\n{outcome}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_is_a_line_of_its_own_marked_as_an_error() {
    let config = edit(&[
        (TOKEN_LIFETIME, r#"token_lifetime = "1h""#),
        ("x5c = true", "x5c = true\nrotation_schedul = \"0 3 * * *\""),
    ]);
    let dir = TestDir::new(&config);
    let config_path = dir.config_path().display().to_string();
    let mut outputs = vec![("check-config", dir.run("check-config", &[]).stderr)];
    let mut daemon = Daemon::spawn(&dir.config_path());
    assert!(
        daemon.wait_exit(Duration::from_secs(20)).is_some(),
        "serve did not refuse to start\n{}",
        daemon.stderr_text()
    );
    outputs.push(("serve", daemon.stderr_text()));
    for (verb, stderr) in outputs {
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{verb}: two problems, two lines\n{stderr}");
        let prefix = format!("error: config {config_path}: ");
        assert!(
            lines.iter().all(|line| line.starts_with(&prefix)),
            "{verb}: every line starts with {prefix:?}\n{stderr}"
        );
        assert!(
            stderr.contains("keys.rotation_schedul: unknown key (did you mean rotation_schedule?)")
                && stderr.contains("issuer.token_lifetime: 1h is longer than"),
            "{verb}\n{stderr}"
        );
    }
}
