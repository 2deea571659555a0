//! The fuzz targets' entry points: one function per input class that jwkd
//! reads from outside, each given arbitrary bytes. None may panic, loop or
//! allocate without bound; where an input is accepted, what jwkd makes of it
//! must hold (a stored document that loads encodes to one that loads to the
//! same keyset; a repaired document loads).
//!
//! Two engines drive them: `tests/fuzz.rs` on stable Rust (seeded mutation of
//! the committed corpus in `fuzz/corpus/`, run by `cargo nextest`), and
//! libFuzzer where a nightly toolchain exists (`fuzz/`, `cargo +nightly fuzz
//! run <target>`). Not part of jwkd's API.

use std::path::Path;

use chrono::{DateTime, TimeZone as _, Utc};

/// The instant every target evaluates times at, so a run replays exactly.
fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
}

/// A token request: the `Authorization` header, a NUL byte, then the form
/// body. The header is read as Basic only (the token endpoint) and as Basic
/// or Bearer (`/v1/*`); the body as `application/x-www-form-urlencoded`; the
/// header's bytes are also read as `X-Forwarded-For` behind a trusted proxy.
pub fn token_request(input: &[u8]) {
    let (header, body) = match input.iter().position(|&byte| byte == 0) {
        Some(nul) => (&input[..nul], &input[nul + 1..]),
        None => (input, &[][..]),
    };
    let header = std::str::from_utf8(header).ok();
    for allow_bearer in [false, true] {
        if let Ok(Some(presented)) = crate::http::credentials::parse_header(header, allow_bearer) {
            assert!(
                !presented.client_id.is_empty(),
                "an empty client id is refused"
            );
        }
    }
    let _ = crate::http::token::parse_form(body);
    let proxy: std::net::IpAddr = "127.0.0.1".parse().expect("an address");
    let peer = crate::throttle::PeerAddr(std::net::SocketAddr::new(proxy, 1));
    let source = crate::throttle::source(Some(peer), header, &[proxy]);
    assert!(source.is_some());
}

/// A stored keyset document: what loads re-encodes to what loads to the same
/// keyset; what `jwkd repair` would make of it loads.
pub fn keyset_document(input: &[u8]) {
    use crate::keyset::{Keyset, repair_document};
    if let Ok(keyset) = Keyset::from_document(input) {
        let again = Keyset::from_document(&keyset.to_document()).expect("a stored keyset reloads");
        assert_eq!(again, keyset);
    }
    if let Ok(repair) = repair_document(input, chrono::Duration::hours(1)) {
        Keyset::from_document(&repair.keyset.to_document()).expect("a repaired keyset loads");
    }
}

/// A config file (as UTF-8; other bytes are refused before parsing, as the
/// loader does).
pub fn config(input: &[u8]) {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = crate::config::Config::parse(text, Path::new("/nonexistent/jwkd/fuzz.toml"), at());
    }
}

/// A crontab line: what parses has fire times in order.
pub fn crontab(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(schedule) = text.parse::<crate::schedule::Schedule>() {
        let fires = schedule.upcoming(at(), 4);
        assert!(fires.windows(2).all(|pair| pair[0] < pair[1]), "{fires:?}");
        assert!(fires.iter().all(|fire| *fire >= at()));
        let _ = schedule.shortest_gap(at());
    }
}

/// A JWKS document as a verifier fetches it (jwkd-client's `KeySet`).
pub fn jwks(input: &[u8]) {
    if let Ok(keys) = jwkd_client::KeySet::from_json(input) {
        assert!(!keys.is_empty());
    }
}

/// A compact JWS as a verifier receives it, checked by jwkd-client against
/// the public keys in `fuzz/jwks.json` (ES256, ES384, EdDSA, RS256; the
/// corpus's seed tokens are signed by their private halves, which are not
/// kept). Returns whether it verified.
pub fn token(input: &[u8]) -> bool {
    use std::sync::OnceLock;
    static VERIFIER: OnceLock<(tokio::runtime::Runtime, jwkd_client::Verifier)> = OnceLock::new();
    let Ok(token) = std::str::from_utf8(input) else {
        return false;
    };
    let (runtime, verifier) = VERIFIER.get_or_init(|| {
        let keys = jwkd_client::KeySet::from_json(include_bytes!("../fuzz/jwks.json"))
            .expect("fuzz/jwks.json is a key set");
        let verifier = jwkd_client::Verifier::builder(keys)
            .issuer("https://issuer.fuzz.example")
            .audience("payments")
            .build()
            .expect("a verifier");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        (runtime, verifier)
    });
    let at = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(at().timestamp()).unwrap_or(0));
    runtime
        .block_on(verifier.verify_at::<serde_json::Value>(token, at))
        .is_ok()
}
