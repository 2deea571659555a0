//! Full verification (parse, key lookup, signature, claims into a typed struct) next to
//! the raw aws-lc-rs signature check it is built on, for ES256, RS256 and EdDSA, and the
//! scaling of two threads verifying at once (the read path takes no lock).
//!
//! `cargo bench -p jwkd-client -- --warm-up-time 1 --measurement-time 3`
//!
//! After criterion's own report, a summary prints ops/s, the full/raw ratio per
//! algorithm, and the two-thread scaling factor.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair,
    RsaPublicKeyComponents,
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
        "ES256" => {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let (x, y) = point[1..].split_at(32);
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)});
            let raw = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).unwrap();
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
        _ => {
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

/// Operations per second of `op` over `duration`, on this thread.
fn ops_per_second(duration: Duration, op: impl Fn() -> bool) -> f64 {
    let start = Instant::now();
    let mut count: u64 = 0;
    while start.elapsed() < duration {
        for _ in 0..32 {
            assert!(op());
        }
        count += 32;
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn summary(cases: &[Case]) {
    const EACH: Duration = Duration::from_secs(2);
    println!();
    println!("summary (ops/s, one thread, {EACH:?} each)");
    println!(
        "{:<6} {:>12} {:>12} {:>8}",
        "alg", "raw", "full", "full/raw"
    );
    for case in cases {
        let raw = ops_per_second(EACH, || case.raw());
        let full = ops_per_second(EACH, || case.full());
        println!(
            "{:<6} {:>12.0} {:>12.0} {:>8.3}",
            case.name,
            raw,
            full,
            full / raw
        );
    }
    for case in cases.iter().filter(|case| case.name == "ES256") {
        let one = ops_per_second(EACH, || case.full());
        let two: f64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| ops_per_second(EACH, || case.full())))
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap())
                .sum()
        });
        println!(
            "{} full verify, two threads: {two:.0} ops/s vs one thread {one:.0} ops/s: scaling {:.2}x",
            case.name,
            two / one
        );
    }
}

fn main() {
    let cases: Vec<Case> = ["ES256", "RS256", "EdDSA"].into_iter().map(case).collect();
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion, &cases);
    criterion.final_summary();
    // `cargo test --benches` runs this binary without `--bench`: skip the timed summary.
    if std::env::args().any(|arg| arg == "--bench") {
        summary(&cases);
    }
}
