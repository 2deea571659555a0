//! Fuzzing on stable Rust: every input class jwkd reads from outside
//! (`jwkd::fuzzing`) fed the committed corpus (`fuzz/corpus/<target>/`), the
//! inputs that once crashed it (`fuzz/regressions/<target>/`), and then, for a
//! bounded time, seeded mutations of them: bit flips, byte runs, cuts,
//! duplications, splices of two entries, and the target's own tokens.
//!
//! Blind mutation, not coverage-guided: under libFuzzer (`fuzz/`, nightly) the
//! same targets run coverage-guided. Each run prints its seed and execution
//! count; `JWKD_FUZZ_SEED` replays a run, `JWKD_FUZZ_SECONDS` (default 2)
//! sets its length:
//!
//! ```sh
//! JWKD_FUZZ_SECONDS=600 cargo nextest run -E 'test(/^fuzz::/)' --no-capture
//! ```
//!
//! An input that panics is written to `fuzz/crashes/<target>-<hash>` and the
//! test fails naming it: move it into `fuzz/regressions/<target>/` with the fix.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The longest input a mutation makes: far beyond any header or body limit
/// jwkd sets, short enough to keep runs fast.
const MAX_LEN: usize = 64 * 1024;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted by name; none if it does not exist.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("a corpus file reads");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

fn seconds() -> f64 {
    std::env::var("JWKD_FUZZ_SECONDS")
        .ok()
        .map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("JWKD_FUZZ_SECONDS={value:?} is not a number"))
        })
        .unwrap_or(2.0)
}

fn seed(target: &str) -> u64 {
    match std::env::var("JWKD_FUZZ_SEED") {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("JWKD_FUZZ_SEED={value:?} is not a u64")),
        // A fixed seed per target by default: CI runs replay exactly.
        Err(_) => target
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            }),
    }
}

/// One mutation (of one to four stacked edits) of `input`.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, corpus: &[Vec<u8>], tokens: &[&[u8]]) {
    for _ in 0..rng.random_range(1..=4) {
        let len = input.len();
        let at = if len == 0 {
            0
        } else {
            rng.random_range(0..=len)
        };
        match rng.random_range(0..10) {
            0 if len > 0 => {
                let idx = rng.random_range(0..len);
                input[idx] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let idx = rng.random_range(0..len);
                input[idx] = rng.random();
            }
            2 => {
                let run: Vec<u8> = (0..rng.random_range(1..8)).map(|_| rng.random()).collect();
                input.splice(at..at, run);
            }
            3 if len > 0 => {
                let end = (at + rng.random_range(1..=16)).min(len);
                input.drain(at.min(end)..end);
            }
            4 if len > 0 => {
                let start = rng.random_range(0..len);
                let end = (start + rng.random_range(1..=64)).min(len);
                let copy = input[start..end].to_vec();
                let times = rng.random_range(1..=8);
                for _ in 0..times {
                    input.splice(at..at, copy.iter().copied());
                }
            }
            5 => input.truncate(at),
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
            }
            7 | 8 if !tokens.is_empty() => {
                let token = tokens[rng.random_range(0..tokens.len())];
                input.splice(at..at, token.iter().copied());
            }
            _ => {
                // A number at its limits: the parsers' overflow edges.
                let numbers: [&[u8]; 6] = [
                    b"0",
                    b"-1",
                    b"4294967296",
                    b"18446744073709551616",
                    b"9999999999999999999999",
                    b"1e309",
                ];
                input.splice(
                    at..at,
                    numbers[rng.random_range(0..numbers.len())].iter().copied(),
                );
            }
        }
    }
    input.truncate(MAX_LEN);
}

/// Runs `target` on its corpus and regressions, then on mutations for the
/// configured time; fails on the first input that panics.
fn fuzz(name: &str, tokens: &[&[u8]], target: impl Fn(&[u8])) {
    let corpus = files(&root().join("corpus").join(name));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{name}/ is empty: every target has a committed seed corpus"
    );
    let mut seeds: Vec<Vec<u8>> = corpus.iter().map(|(_, bytes)| bytes.clone()).collect();
    for (path, bytes) in corpus
        .iter()
        .chain(&files(&root().join("regressions").join(name)))
    {
        if catch_unwind(AssertUnwindSafe(|| target(bytes))).is_err() {
            panic!("{} panics (see above)", path.display());
        }
    }
    seeds.push(Vec::new());
    let seed = seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let budget = Duration::from_secs_f64(seconds());
    let started = Instant::now();
    let mut executions: u64 = 0;
    let mut input = Vec::new();
    while started.elapsed() < budget {
        // Check the clock every 64 executions only.
        for _ in 0..64 {
            input.clear();
            input.extend_from_slice(&seeds[rng.random_range(0..seeds.len())]);
            mutate(&mut rng, &mut input, &seeds, tokens);
            executions += 1;
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                    (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
                });
                let dir = root().join("crashes");
                std::fs::create_dir_all(&dir).expect("fuzz/crashes/ is writable");
                let path = dir.join(format!("{name}-{hash:016x}"));
                std::fs::write(&path, &input).expect("the crash is written");
                panic!(
                    "{name}: an input panics after {executions} executions (seed {seed}); it is \
                     in {}: fix it, and move the file into fuzz/regressions/{name}/",
                    path.display()
                );
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz target={name} executions={executions} seconds={elapsed:.1} per_second={:.0} \
         seed={seed} corpus={}",
        executions as f64 / elapsed,
        corpus.len()
    );
}

#[test]
fn token() {
    // The seed tokens verify: mutations start from the path that accepts.
    for (path, bytes) in files(&root().join("corpus/token")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            jwkd::fuzzing::token(&bytes),
            !name.starts_with("alg-none"),
            "{name}"
        );
    }
    fuzz(
        "token",
        &[
            b".",
            b"eyJ",
            b"e30",
            b"AAAA",
            b"_-",
            b"=",
            b"\"alg\":\"none\"",
            b"\"crit\":[\"b64\"]",
        ],
        |input| {
            jwkd::fuzzing::token(input);
        },
    );
}

#[test]
fn jwks() {
    fuzz(
        "jwks",
        &[
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b"\"",
            b"null",
            b"\"kty\":\"RSA\"",
            b"\"kty\":\"EC\"",
            b"\"crv\":\"P-384\"",
            b"\"x5c\":[\"AA\"]",
            b"\"use\":\"enc\"",
            b"\\u0000",
        ],
        jwkd::fuzzing::jwks,
    );
}

#[test]
fn keyset_document() {
    fuzz(
        "keyset_document",
        &[
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b"\"",
            b"null",
            b"\"format\": 1",
            b"\"revoked_at\": \"2026-11-29T12:00:00Z\"",
            b"\"kms_key_arn\": \"\"",
            b"\"public_jwk\": {}",
            b"\"private_key\": \"AA==\"",
            b"9999-12-31T23:59:59Z",
        ],
        jwkd::fuzzing::keyset_document,
    );
}

#[test]
fn config() {
    fuzz(
        "config",
        &[
            b"\n",
            b"=",
            b"\"",
            b"[",
            b"]",
            b"[keys]\n",
            b"[[clients]]\n",
            b"[[issuers]]\n",
            b"[issuers.keys]\n",
            b"[kms]\n",
            b"custody = \"kms\"\n",
            b"\"0s\"",
            b"\"999999999d\"",
            b"rotation_schedule = \"* * * * * *\"\n",
            b"name = \"default\"\n",
        ],
        jwkd::fuzzing::config,
    );
}

#[test]
fn crontab() {
    fuzz(
        "crontab",
        &[
            b"*", b"/", b"-", b",", b" ", b"@", b"@yearly", b"L", b"W", b"#", b"?", b"0", b"59",
            b"60", b"SUN", b"DEC", b"2099", b"*/0",
        ],
        jwkd::fuzzing::crontab,
    );
}

#[test]
fn token_request() {
    fuzz(
        "token_request",
        &[
            b"\0",
            b"Basic ",
            b"Bearer ",
            b"%",
            b"%zz",
            b"%00",
            b"+",
            b"&",
            b"=",
            b":",
            b",",
            b"grant_type=",
            b"client_id=",
            b"client_secret=",
            b"::ffff:",
            b"[",
            b"]",
        ],
        jwkd::fuzzing::token_request,
    );
}
