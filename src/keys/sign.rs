use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pkcs1::der::Decode;
use serde_json::{Map, Value};

use super::{Algorithm, KeyError, PrivateKey};

/// A parsed private key ready to sign: made once per key when a keyset is
/// published, so signing a token does not parse PKCS#8 again.
pub struct Signer {
    alg: Algorithm,
    kid: String,
    inner: Inner,
}

enum Inner {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Parses `key` for signing as `kid`.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] if the backend rejects the key.
    pub fn new(key: &PrivateKey, kid: &str) -> Result<Signer, KeyError> {
        let alg = key.algorithm();
        let invalid = |reason: String| KeyError::Invalid { alg, reason };
        let der = key.pkcs8_der();
        let inner = match alg {
            Algorithm::Es256 | Algorithm::Es384 => {
                let signing = alg
                    .ecdsa()
                    .ok_or_else(|| invalid("not an ECDSA algorithm".into()))?;
                Inner::Ecdsa(
                    EcdsaKeyPair::from_pkcs8(signing, der)
                        .map_err(|err| invalid(err.to_string()))?,
                )
            }
            Algorithm::EdDsa => Inner::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|err| invalid(err.to_string()))?,
            ),
            Algorithm::Rs256 => {
                Inner::Rsa(RsaKeyPair::from_pkcs8(der).map_err(|err| invalid(err.to_string()))?)
            }
        };
        Ok(Signer {
            alg,
            kid: kid.to_owned(),
            inner,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The kid of the key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw JWS signature of `message` (for ECDSA the fixed-size `r || s`).
    ///
    /// # Errors
    /// [`KeyError::Sign`] if the backend fails.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let failed = |_| KeyError::Sign(self.alg);
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ecdsa(pair) => Ok(pair.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
            Inner::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Inner::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
        }
    }

    /// A compact JWS of `claims` with header `{"alg","kid","typ"}`.
    ///
    /// # Errors
    /// [`KeyError::Sign`] if the backend fails.
    pub fn sign_jws(&self, typ: &str, claims: &Map<String, Value>) -> Result<String, KeyError> {
        let header = serde_json::json!({"alg": self.alg.name(), "kid": self.kid, "typ": typ});
        // Maps of JSON values always serialize.
        let header = serde_json::to_vec(&header).expect("header serializes");
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let mut token = String::with_capacity(header.len() * 4 / 3 + payload.len() * 4 / 3 + 400);
        URL_SAFE_NO_PAD.encode_string(&header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}

impl PrivateKey {
    /// The private JWK members (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2): the public
    /// parameters plus `d` (and for RSA the CRT members). Only the issuer
    /// endpoint hands this out.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] if the stored key cannot be decoded.
    pub fn private_jwk_members(&self) -> Result<Map<String, Value>, KeyError> {
        let alg = self.algorithm();
        let invalid = |reason: String| KeyError::Invalid { alg, reason };
        let mut members = match serde_json::to_value(self.public_params()) {
            Ok(Value::Object(members)) => members,
            _ => return Err(invalid("public parameters do not serialize".into())),
        };
        let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
        let der = self.pkcs8_der();
        match alg {
            Algorithm::Es256 | Algorithm::Es384 => {
                use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
                let signing = alg
                    .ecdsa()
                    .ok_or_else(|| invalid("not an ECDSA algorithm".into()))?;
                let pair = EcdsaKeyPair::from_pkcs8(signing, der)
                    .map_err(|err| invalid(err.to_string()))?;
                let scalar: EcPrivateKeyBin<'_> = pair
                    .private_key()
                    .as_be_bytes()
                    .map_err(|_| invalid("cannot export the scalar".into()))?;
                members.insert("d".into(), b64(scalar.as_ref()));
            }
            Algorithm::EdDsa => {
                use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|err| invalid(err.to_string()))?;
                let seed = pair
                    .seed()
                    .map_err(|_| invalid("cannot export the seed".into()))?;
                let seed: Curve25519SeedBin<'_> = seed
                    .as_be_bytes()
                    .map_err(|_| invalid("cannot export the seed".into()))?;
                members.insert("d".into(), b64(seed.as_ref()));
            }
            Algorithm::Rs256 => {
                let info =
                    pkcs8::PrivateKeyInfo::from_der(der).map_err(|err| invalid(err.to_string()))?;
                let rsa = pkcs1::RsaPrivateKey::from_der(info.private_key)
                    .map_err(|err| invalid(err.to_string()))?;
                // Borrowed from the zeroizing PKCS#8 buffer: nothing to wipe here.
                let secret = [
                    ("d", rsa.private_exponent.as_bytes()),
                    ("p", rsa.prime1.as_bytes()),
                    ("q", rsa.prime2.as_bytes()),
                    ("dp", rsa.exponent1.as_bytes()),
                    ("dq", rsa.exponent2.as_bytes()),
                    ("qi", rsa.coefficient.as_bytes()),
                ];
                for (name, bytes) in secret.iter() {
                    members.insert((*name).into(), b64(bytes));
                }
            }
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256,
        RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
    };
    use jwkd_client::jwk::JwkParams;

    use super::*;

    fn decode(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    fn verify(key: &PrivateKey, message: &[u8], signature: &[u8]) {
        match key.public_params() {
            JwkParams::Ec { x, y, .. } => {
                let mut point = vec![4u8];
                point.extend(decode(x));
                point.extend(decode(y));
                let alg: &'static dyn VerificationAlgorithm = if key.algorithm() == Algorithm::Es256
                {
                    &ECDSA_P256_SHA256_FIXED
                } else {
                    &ECDSA_P384_SHA384_FIXED
                };
                UnparsedPublicKey::new(alg, point)
                    .verify(message, signature)
                    .unwrap();
            }
            JwkParams::Okp { x, .. } => UnparsedPublicKey::new(&ED25519, decode(x))
                .verify(message, signature)
                .unwrap(),
            JwkParams::Rsa { n, e } => RsaPublicKeyComponents {
                n: decode(n),
                e: decode(e),
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
            .unwrap(),
        }
    }

    #[test]
    fn signatures_verify_with_the_published_key() {
        for alg in Algorithm::ALL {
            let key = PrivateKey::generate(alg).unwrap();
            let signer = Signer::new(&key, &key.thumbprint()).unwrap();
            let signature = signer.sign(b"message").unwrap();
            verify(&key, b"message", &signature);
        }
    }

    #[test]
    fn private_jwk_has_d_and_the_public_members() {
        for alg in Algorithm::ALL {
            let key = PrivateKey::generate(alg).unwrap();
            let members = private_jwk(&key);
            assert!(members.contains_key("d"), "{alg}");
            let expected = match alg {
                Algorithm::Es256 => 32,
                Algorithm::Es384 => 48,
                Algorithm::EdDsa => 32,
                Algorithm::Rs256 => 256,
            };
            let d = decode(members["d"].as_str().unwrap());
            assert!(
                d.len() <= expected && d.len() >= expected - 2,
                "{alg}: d has {} bytes",
                d.len()
            );
            if alg == Algorithm::Rs256 {
                for member in ["p", "q", "dp", "dq", "qi", "n", "e"] {
                    assert!(members.contains_key(member), "{member}");
                }
            }
        }
    }

    fn private_jwk(key: &PrivateKey) -> Map<String, Value> {
        key.private_jwk_members().unwrap()
    }
}
