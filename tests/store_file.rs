//! CONTRACT §5, file backend: mode 0600, a damaged file is an error naming it and is
//! never replaced, and changes made beside a running daemon (`rotate`, `revoke`) reach
//! its JWKS within `store.refresh_interval`. Concurrent `jwkd rotate`s beside a daemon
//! (one rotation, no lost or extra write) are in `clocks.rs`, on both backends.
//!
//! What a running daemon does with the file is tested in process ([`InProcess`] on
//! the file store, its clock moved by the test); the verbs, their exit codes and the
//! file's mode on the binary.

use std::time::Duration;

use chrono::Utc;

use crate::util::{
    self, Daemon, InProcess, Key, SLOW_CONFIG, TestDir, jwkd, one_current_per_family, published,
    run_cmd, show_keys,
};

/// `SLOW_CONFIG`'s `store.refresh_interval`.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
const MILLISECOND: Duration = Duration::from_millis(1);

/// Starts the daemon on an empty store, waits until it is ready, kills it: a valid store.
fn initialized(config: &str) -> TestDir {
    let dir = TestDir::new(config);
    let mut daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    daemon.kill9();
    assert!(
        dir.read_store().is_some(),
        "the daemon became ready without writing {}",
        dir.store_path().display()
    );
    dir
}

#[test]
fn store_is_written_with_mode_0600() {
    let dir = initialized(SLOW_CONFIG);
    let mode = util::mode(&dir.store_path());
    assert_eq!(
        mode, 0o600,
        "store written by serve: expected mode 0600, got {mode:o}"
    );

    let fresh = TestDir::new(SLOW_CONFIG);
    fresh.run("rotate", &[]).assert_code(0);
    let mode = util::mode(&fresh.store_path());
    assert_eq!(
        mode, 0o600,
        "store written by rotate: expected mode 0600, got {mode:o}"
    );
    // The store was made with the right mode, not fixed up afterwards: a second write keeps it.
    fresh.run("rotate", &[]).assert_code(0);
    let mode = util::mode(&fresh.store_path());
    assert_eq!(
        mode, 0o600,
        "store rewritten by rotate: expected mode 0600, got {mode:o}"
    );
}

#[test]
fn damaged_store_is_an_error_naming_the_file_and_is_left_untouched() {
    let valid = initialized(SLOW_CONFIG)
        .read_store()
        .expect("checked in initialized");
    let damaged: [(&str, Vec<u8>); 4] = [
        (
            "garbage",
            include_bytes!("data/keyset-garbage.bin").to_vec(),
        ),
        (
            "truncated (data file)",
            include_bytes!("data/keyset-truncated.json").to_vec(),
        ),
        (
            "truncated (a real store cut in half)",
            valid[..valid.len() / 2].to_vec(),
        ),
        ("empty", Vec::new()),
    ];
    let some_kid = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
    let verbs: [&[&str]; 5] = [
        &["keys"],
        &["keys", "--json"],
        &["rotate"],
        &["check-config"],
        &["revoke", some_kid],
    ];

    let mut failures = Vec::new();
    for (name, bytes) in &damaged {
        let dir = TestDir::new(SLOW_CONFIG);
        dir.write(util::STORE_FILE, bytes);
        let store = dir.store_path().display().to_string();
        let mut judge = |what: String, code: Option<i32>, stderr: &str, shown: String| {
            if code != Some(2) || !stderr.contains(&store) {
                failures.push(format!(
                    "{name} store, {what}: expected exit code 2 and the path {store} on stderr\n{shown}"
                ));
            }
            if dir.read_store().as_ref() != Some(bytes) {
                failures.push(format!(
                    "{name} store, {what}: the file was changed\n{shown}"
                ));
            }
        };
        for args in verbs {
            let outcome = dir.run(args[0], &args[1..]);
            judge(
                args.join(" "),
                outcome.code,
                &outcome.stderr,
                outcome.to_string(),
            );
        }
        let mut daemon = Daemon::spawn(&dir.config_path());
        let status = daemon.wait_exit(Duration::from_secs(20));
        let output = daemon.stderr_text();
        judge(
            "serve".to_owned(),
            status.and_then(|status| status.code()),
            &output,
            format!("exit status {status:?}\n---- serve output ----\n{output}"),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn damaged_store_under_a_running_daemon_is_reported_and_never_replaced() {
    let daemon = InProcess::start_on_file(SLOW_CONFIG, Utc::now());
    let dir = daemon.dir();
    let served = daemon.jwks_kids(true);
    let good = dir.read_store().expect("the daemon wrote its store");

    // Replace the file atomically, as another writer would.
    let garbage = include_bytes!("data/keyset-garbage.bin");
    let replace = |bytes: &[u8]| {
        let temp = dir.path().join("replacement.tmp");
        std::fs::write(&temp, bytes).expect("write replacement");
        std::fs::rename(&temp, dir.store_path()).expect("rename replacement");
    };
    replace(garbage);

    // The daemon reads the store once per refresh interval: it finds out at the
    // end of this one.
    daemon.advance(REFRESH_INTERVAL - MILLISECOND);
    assert_eq!(
        daemon.get("/readyz").status,
        200,
        "the store was read early"
    );
    daemon.advance(MILLISECOND);
    let not_ready = daemon.get("/readyz");
    not_ready.assert_json_error(503);
    // It names the failed check, not the file or the parser's words.
    let reason = not_ready.text();
    assert!(
        reason.contains("the stored keyset cannot be read")
            && !reason.contains(&dir.store_path().display().to_string()),
        "{reason}"
    );

    // Keep serving the last good keyset through retries and refreshes; never
    // "repair" the file.
    for _ in 0..4 {
        daemon.advance(REFRESH_INTERVAL / 2);
        assert_eq!(
            daemon.jwks_kids(true),
            served,
            "the daemon must keep serving the last good keyset while the store is unreadable"
        );
        assert_eq!(daemon.get("/readyz").status, 503);
    }
    assert_eq!(
        dir.read_store().as_deref(),
        Some(&garbage[..]),
        "the daemon replaced the damaged store {}",
        dir.store_path().display()
    );
    let health = daemon.get("/healthz");
    assert_eq!(
        health.status, 200,
        "/healthz must stay 200 while serving\n{health}"
    );

    // The next read after the repair makes it ready again.
    replace(&good);
    daemon.advance(REFRESH_INTERVAL);
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 200, "{ready}");
    assert_eq!(
        daemon.jwks_kids(true),
        served,
        "JWKS after the store recovered"
    );
}

#[test]
fn revoke_withdraws_the_kid_from_a_running_daemon_within_the_refresh_interval() {
    let daemon = InProcess::start_on_file(SLOW_CONFIG, Utc::now());
    let before = daemon.keys();
    let table = show_keys(&before);
    let find = |keys: &[Key], state: &str| -> Key {
        keys.iter()
            .find(|key| key.state == state)
            .cloned()
            .unwrap_or_else(|| panic!("expected a {state} key\n{}", show_keys(keys)))
    };
    let current = find(&before, "current");
    let next = find(&before, "next");
    assert!(
        daemon.jwks_kids(true).contains(&current.kid),
        "the current key is published\n{table}"
    );

    daemon.dir().run("revoke", &[&current.kid]).assert_code(0);
    // The daemon learns of it at its next read of the store, one refresh
    // interval after the last: not before, and not later.
    daemon.advance(REFRESH_INTERVAL - MILLISECOND);
    assert!(
        daemon.jwks_kids(true).contains(&current.kid),
        "the store was read before the refresh interval ended"
    );
    daemon.advance(MILLISECOND);
    let kids = daemon.jwks_kids(true);
    assert!(
        !kids.contains(&current.kid),
        "expected the revoked kid out of the JWKS once the refresh interval (1 s) \
         has passed: {kids:?}"
    );

    let after = daemon.keys();
    let after_table = show_keys(&after);
    let revoked = after
        .iter()
        .find(|key| key.kid == current.kid)
        .unwrap_or_else(|| {
            panic!("the revoked key must stay in the store as revoked\n{after_table}")
        });
    assert!(
        revoked.state == "revoked" && revoked.revoked_at.is_some(),
        "expected state revoked with revoked_at set for {}\n{after_table}",
        current.kid
    );
    one_current_per_family(&after, &["ES256"]).unwrap_or_else(|err| panic!("{err}\n{after_table}"));
    let new_current = find(&after, "current");
    assert_eq!(
        new_current.kid, next.kid,
        "the next key must take over from the revoked current key\n{after_table}"
    );
    let new_next = find(&after, "next");
    assert!(
        !before.iter().any(|key| key.kid == new_next.kid),
        "a new next key must be made after the revocation\n{after_table}"
    );
    assert_eq!(kids, published(&after), "JWKS after revoke\n{after_table}");
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 200, "{ready}");
}

#[test]
fn revoke_of_an_unknown_kid_fails_with_one_line_and_changes_nothing() {
    let dir = initialized(SLOW_CONFIG);
    let before = dir.read_store();
    let mut cmd = jwkd();
    cmd.arg("revoke")
        .arg("--config")
        .arg(dir.config_path())
        .arg("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .env("JWKD_LOG", "off");
    let outcome = run_cmd(cmd, None, util::CMD_TIMEOUT);
    outcome.assert_code(1);
    assert_eq!(
        outcome.stderr_lines().len(),
        1,
        "expected a one-line reason on stderr\n{outcome}"
    );
    assert!(
        !outcome.stderr.contains("panicked") && !outcome.stderr.contains("backtrace"),
        "expected no panic or backtrace\n{outcome}"
    );
    assert_eq!(
        dir.read_store(),
        before,
        "a failed revoke must not change the store"
    );
}
