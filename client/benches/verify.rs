//! Full verification (parse, key lookup, signature, claims into a typed struct) next to
//! the raw aws-lc-rs signature check it is built on, for ES256, ES384, EdDSA and RS256,
//! and the scaling of two threads verifying at once (the read path takes no lock).
//!
//! `cargo bench -p jwkd-client -- --warm-up-time 1 --measurement-time 3`
//!
//! The raw side is the crypto backend alone: the same key, pre-parsed the same way the
//! key set parses it, the same aws-lc-rs algorithm, over the very signing input and
//! signature bytes of the token the full side verifies.
//!
//! After criterion's own report, a summary measures each algorithm again, raw and full
//! interleaved batch by batch (so a noisy neighbour slows both sides alike), and prints
//! a table and then one line per algorithm for scripts:
//!
//! `verify alg=RS256 full_per_s=47000 raw_per_s=51000 ratio=0.922 two_thread_scaling=1.93`
//!
//! Every ops/s figure comes from the median time of short timed batches (about 100 µs
//! each), so a batch that another process preempted counts as an outlier rather than
//! as the speed: on a shared machine this is the figure that repeats. `ratio` is
//! full/raw; `two_thread_scaling` is two threads' full verifications per second (each
//! thread's own median, summed) over one thread's.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::Criterion;
use jwkd_client::{KeySet, Verifier};
use serde_json::json;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    scope: String,
}

/// One algorithm's fixture: a verifier over a one-key set, a token, and the same key
/// pre-parsed for the raw check.
struct Case {
    name: &'static str,
    verifier: Verifier,
    token: String,
    raw_key: ParsedPublicKey,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

type Signer = Box<dyn Fn(&[u8]) -> Vec<u8>>;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn case(name: &'static str) -> Case {
    let rng = SystemRandom::new();
    let (jwk, raw_key, sign): (_, _, Signer) = match name {
        "ES256" | "ES384" => {
            let (signing, verifying, curve) = if name == "ES256" {
                (
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &ECDSA_P256_SHA256_FIXED,
                    "P-256",
                )
            } else {
                (
                    &ECDSA_P384_SHA384_FIXED_SIGNING,
                    &ECDSA_P384_SHA384_FIXED,
                    "P-384",
                )
            };
            let pair = EcdsaKeyPair::generate(signing).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let (x, y) = point[1..].split_at((point.len() - 1) / 2);
            let jwk = json!({"kty": "EC", "crv": curve, "x": b64(x), "y": b64(y)});
            let raw = ParsedPublicKey::new(verifying, &point).unwrap();
            (
                jwk,
                raw,
                Box::new(move |message| pair.sign(&rng, message).unwrap().as_ref().to_vec()),
            )
        }
        "RS256" => {
            let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            let public = pair.public_key();
            let n = public.modulus().big_endian_without_leading_zero().to_vec();
            let e = public.exponent().big_endian_without_leading_zero().to_vec();
            let jwk = json!({"kty": "RSA", "n": b64(&n), "e": b64(&e)});
            let raw = RsaPublicKeyComponents { n: &n, e: &e }
                .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                .unwrap();
            (
                jwk,
                raw,
                Box::new(move |message| {
                    let mut signature = vec![0; pair.public_modulus_len()];
                    pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut signature)
                        .unwrap();
                    signature
                }),
            )
        }
        "EdDSA" => {
            let pair = Ed25519KeyPair::generate().unwrap();
            let x = pair.public_key().as_ref().to_vec();
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&x)});
            let raw = ParsedPublicKey::new(&ED25519, &x).unwrap();
            (
                jwk,
                raw,
                Box::new(move |message| pair.sign(message).as_ref().to_vec()),
            )
        }
        _ => unreachable!("no fixture for {name}"),
    };
    let mut jwk = jwk;
    jwk["kid"] = json!("key-1");
    jwk["alg"] = json!(name);
    jwk["use"] = json!("sig");
    let keys = KeySet::from_json(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
    let verifier = Verifier::builder(keys)
        .issuer("https://auth.internal.example")
        .audience("payments")
        .build()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": name, "kid": "key-1", "typ": "JWT"});
    let claims = json!({
        "iss": "https://auth.internal.example", "sub": "orders", "aud": "payments",
        "iat": now, "nbf": now, "exp": now + 3600,
        "jti": "0b6f4c1e-6d0e-4a9b-9f3e-2c7d8a1b5e4f", "scope": "payments:write",
    });
    let signing_input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", b64(&signature));
    let case = Case {
        name,
        verifier,
        token,
        raw_key,
        signing_input: signing_input.into_bytes(),
        signature,
    };
    assert!(case.full(), "{name}: the token must verify");
    assert!(case.raw(), "{name}: the raw check must pass");
    let mut tampered = case.token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(
        now_ready(case.verifier.verify::<Claims>(&tampered)).is_err(),
        "{name}: a tampered token must be refused"
    );
    case
}

impl Case {
    fn full(&self) -> bool {
        now_ready(self.verifier.verify::<Claims>(black_box(&self.token))).is_ok()
    }

    fn raw(&self) -> bool {
        self.raw_key
            .verify_sig(black_box(&self.signing_input), black_box(&self.signature))
            .is_ok()
    }
}

/// Polls a verification once. With a fixed key set it never waits, so it is always
/// ready; no runtime is involved in the measurement.
fn now_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("verification with a static key set awaited"),
    }
}

fn criterion_benches(criterion: &mut Criterion, cases: &[Case]) {
    for case in cases {
        let mut group = criterion.benchmark_group(case.name);
        group.bench_function("raw aws-lc-rs verify", |bench| bench.iter(|| case.raw()));
        group.bench_function("full jwkd-client verify", |bench| {
            bench.iter(|| case.full())
        });
        group.finish();
    }
}

/// How many operations one timed batch runs: about 100 µs of work, at least one.
fn batch_len(op: impl Fn() -> bool) -> u32 {
    let start = Instant::now();
    let mut count: u32 = 0;
    while start.elapsed() < Duration::from_millis(100) {
        assert!(op());
        count += 1;
    }
    let per_op = start.elapsed().as_secs_f64() / f64::from(count);
    ((100e-6 / per_op).round() as u32).max(1)
}

/// Seconds per operation of one batch of `len` operations.
fn batch(len: u32, op: impl Fn() -> bool) -> f64 {
    let start = Instant::now();
    for _ in 0..len {
        assert!(op());
    }
    start.elapsed().as_secs_f64() / f64::from(len)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Operations per second of `op` on this thread over `duration`, from the median
/// batch time: a batch that another process preempted is an outlier, not the speed.
fn ops_per_second(duration: Duration, len: u32, op: impl Fn() -> bool) -> f64 {
    let start = Instant::now();
    let mut times = Vec::new();
    while start.elapsed() < duration {
        times.push(batch(len, &op));
    }
    1.0 / median(times)
}

struct Summary {
    name: &'static str,
    raw: f64,
    full: f64,
    one_thread: f64,
    two_threads: f64,
}

/// Raw and full of one algorithm, interleaved batch by batch (alternating which goes
/// first) so that whatever else runs on the machine slows both sides alike; then one
/// thread against two threads, interleaved in rounds.
fn summarize(case: &Case) -> Summary {
    const SIDE_BY_SIDE: Duration = Duration::from_secs(3);
    const SCALING_ROUNDS: u32 = 4;
    const SCALING_SLICE: Duration = Duration::from_millis(250);
    let raw_len = batch_len(|| case.raw());
    let full_len = batch_len(|| case.full());
    let (mut raw, mut full) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < SIDE_BY_SIDE {
        if raw.len() % 2 == 0 {
            raw.push(batch(raw_len, || case.raw()));
            full.push(batch(full_len, || case.full()));
        } else {
            full.push(batch(full_len, || case.full()));
            raw.push(batch(raw_len, || case.raw()));
        }
    }
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..SCALING_ROUNDS {
        one.push(ops_per_second(SCALING_SLICE, full_len, || case.full()));
        two.push(std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| ops_per_second(SCALING_SLICE, full_len, || case.full())))
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap())
                .sum::<f64>()
        }));
    }
    Summary {
        name: case.name,
        raw: 1.0 / median(raw),
        full: 1.0 / median(full),
        one_thread: median(one),
        two_threads: median(two),
    }
}

fn summary(cases: &[Case]) {
    let summaries: Vec<Summary> = cases.iter().map(summarize).collect();
    println!();
    println!("summary (ops/s from the median batch time, raw and full interleaved)");
    println!(
        "{:<6} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}",
        "alg", "raw", "full", "full/raw", "1 thread", "2 threads", "scaling"
    );
    for s in &summaries {
        println!(
            "{:<6} {:>10.0} {:>10.0} {:>8.3} {:>10.0} {:>10.0} {:>7.2}x",
            s.name,
            s.raw,
            s.full,
            s.full / s.raw,
            s.one_thread,
            s.two_threads,
            s.two_threads / s.one_thread
        );
    }
    println!();
    for s in &summaries {
        println!(
            "verify alg={} full_per_s={:.0} raw_per_s={:.0} ratio={:.3} two_thread_scaling={:.2}",
            s.name,
            s.full,
            s.raw,
            s.full / s.raw,
            s.two_threads / s.one_thread
        );
    }
}

fn main() {
    let cases: Vec<Case> = ["ES256", "ES384", "EdDSA", "RS256"]
        .into_iter()
        .map(case)
        .collect();
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion, &cases);
    criterion.final_summary();
    // `cargo test --benches` runs this binary without `--bench`: skip the timed summary.
    if std::env::args().any(|arg| arg == "--bench") {
        summary(&cases);
    }
}
