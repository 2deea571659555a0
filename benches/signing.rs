//! Raw ES256 signing with aws-lc-rs next to jwkd's full token signature (header,
//! claims, base64url, signature), single thread. `scripts/bench` puts these
//! next to the token endpoint's end-to-end rate.

use std::hint::black_box;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use criterion::{Criterion, criterion_group, criterion_main};
use jwkd::keys::{Algorithm, PrivateKey, Signer};
use serde_json::json;

fn signing(c: &mut Criterion) {
    let key = PrivateKey::generate(Algorithm::Es256).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.pkcs8_der()).unwrap();
    let rng = SystemRandom::new();
    let message = [b'x'; 292];
    c.bench_function("raw ES256 sign (aws-lc-rs)", |b| {
        b.iter(|| pair.sign(&rng, black_box(&message)).unwrap())
    });
    let signer = Signer::new(&key, &key.thumbprint()).unwrap();
    let claims = json!({
        "iss": "https://auth.internal.example", "sub": "orders", "client_id": "orders",
        "aud": "payments", "iat": 1_800_000_000, "nbf": 1_800_000_000, "exp": 1_800_000_900,
        "jti": "3q2-7wAAAAAAAAAAAAAAAA", "scope": "payments:write",
    });
    let claims = claims.as_object().unwrap().clone();
    c.bench_function("jwkd ES256 access token (sign_jws)", |b| {
        b.iter(|| signer.sign_jws("at+jwt", black_box(&claims)).unwrap())
    });
}

criterion_group!(benches, signing);
criterion_main!(benches);
