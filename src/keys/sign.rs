use std::fmt;

use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwkd_client::jwk::{JwkParams, PrivateJwkParams};
use jwkd_client::jws::{JwsError, JwsSigner};
use pkcs1::der::Decode;
use serde_json::{Map, Value};

use super::{Algorithm, KeyError, PrivateKey};

/// A parsed private key ready to sign: made once per key when a keyset is
/// published, so signing a token does not parse PKCS#8 again.
///
/// The signing itself is the client crate's [`JwsSigner`], the one JWS signer
/// of jwkd; this adds the headers of the two token types jwkd signs, built once.
pub struct Signer {
    alg: Algorithm,
    jws: JwsSigner,
    /// The encoded header of `typ: at+jwt` (the token endpoint).
    access_token_header: String,
    /// The encoded header of `typ: JWT` (`/v1/sign`).
    jwt_header: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid())
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
        let jws = JwsSigner::from_pkcs8(alg.into(), kid, key.pkcs8_der()).map_err(|err| {
            let reason = match err {
                JwsError::InvalidKey { reason } => reason,
                other => other.to_string(),
            };
            KeyError::Invalid { alg, reason }
        })?;
        Ok(Signer {
            alg,
            access_token_header: jws.header("at+jwt"),
            jwt_header: jws.header("JWT"),
            jws,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The kid of the key.
    pub fn kid(&self) -> &str {
        self.jws.kid()
    }

    /// A compact JWS of `claims` with header `{"alg","kid","typ"}`.
    ///
    /// # Errors
    /// [`KeyError::Sign`] if the backend fails.
    pub fn sign_jws(&self, typ: &str, claims: &Map<String, Value>) -> Result<String, KeyError> {
        let built;
        let header = match typ {
            "at+jwt" => &self.access_token_header,
            "JWT" => &self.jwt_header,
            other => {
                built = self.jws.header(other);
                &built
            }
        };
        // Room for the claims jwkd mints, so the buffer does not grow while they
        // are written. Maps of JSON values always serialize.
        let mut payload = Vec::with_capacity(512);
        serde_json::to_writer(&mut payload, claims).expect("claims serialize");
        self.jws
            .sign_compact(header, &payload)
            .map_err(|_| KeyError::Sign(self.alg))
    }
}

impl PrivateKey {
    /// The private JWK parameters (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2): the
    /// public parameters plus `d` (and for RSA the CRT members). Only the issuer
    /// endpoint hands these out.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] if the stored key cannot be decoded.
    pub fn private_jwk_params(&self) -> Result<PrivateJwkParams, KeyError> {
        let alg = self.algorithm();
        let invalid = |reason: String| KeyError::Invalid { alg, reason };
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let der = self.pkcs8_der();
        match (self.public_params().clone(), alg) {
            (JwkParams::Ec { crv, x, y }, Algorithm::Es256 | Algorithm::Es384) => {
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
                let d = b64(scalar.as_ref());
                Ok(PrivateJwkParams::Ec { crv, x, y, d })
            }
            (JwkParams::Okp { crv, x }, Algorithm::EdDsa) => {
                use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|err| invalid(err.to_string()))?;
                let seed = pair
                    .seed()
                    .map_err(|_| invalid("cannot export the seed".into()))?;
                let seed: Curve25519SeedBin<'_> = seed
                    .as_be_bytes()
                    .map_err(|_| invalid("cannot export the seed".into()))?;
                let d = b64(seed.as_ref());
                Ok(PrivateJwkParams::Okp { crv, x, d })
            }
            (JwkParams::Rsa { n, e }, Algorithm::Rs256) => {
                let info =
                    pkcs8::PrivateKeyInfo::from_der(der).map_err(|err| invalid(err.to_string()))?;
                let rsa = pkcs1::RsaPrivateKey::from_der(info.private_key)
                    .map_err(|err| invalid(err.to_string()))?;
                // The encoded secrets are wiped when the parameters are dropped.
                Ok(PrivateJwkParams::Rsa {
                    n,
                    e,
                    d: b64(rsa.private_exponent.as_bytes()),
                    p: b64(rsa.prime1.as_bytes()),
                    q: b64(rsa.prime2.as_bytes()),
                    dp: b64(rsa.exponent1.as_bytes()),
                    dq: b64(rsa.exponent2.as_bytes()),
                    qi: b64(rsa.coefficient.as_bytes()),
                })
            }
            _ => Err(invalid("public parameters of another key type".into())),
        }
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

    /// Checks the signature of a compact JWS with the public key of `key`.
    fn verify_token(key: &PrivateKey, token: &str) {
        let (message, signature) = token.rsplit_once('.').unwrap();
        verify(key, message.as_bytes(), &decode(signature));
    }

    #[test]
    fn signatures_verify_with_the_published_key() {
        let claims = serde_json::json!({"sub": "a"});
        for alg in Algorithm::ALL {
            let key = PrivateKey::generate(alg).unwrap();
            let signer = Signer::new(&key, &key.thumbprint()).unwrap();
            let token = signer.sign_jws("JWT", claims.as_object().unwrap()).unwrap();
            verify_token(&key, &token);
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
            let public = serde_json::to_value(key.public_params()).unwrap();
            for (member, value) in public.as_object().unwrap() {
                assert_eq!(members.get(member), Some(value), "{alg}: {member}");
            }
            if alg == Algorithm::Rs256 {
                for member in ["p", "q", "dp", "dq", "qi", "n", "e"] {
                    assert!(members.contains_key(member), "{member}");
                }
            }
        }
    }

    #[test]
    fn a_signer_from_the_private_jwk_signs_as_the_stored_key_verifies() {
        for alg in Algorithm::ALL {
            let key = PrivateKey::generate(alg).unwrap();
            let params = key.private_jwk_params().unwrap();
            let signer = JwsSigner::from_jwk(alg.into(), key.thumbprint(), &params).unwrap();
            let token = signer.sign_compact(&signer.header("JWT"), b"{}").unwrap();
            verify_token(&key, &token);
        }
    }

    #[test]
    fn tokens_have_the_header_they_always_had() {
        let key = PrivateKey::generate(Algorithm::Es256).unwrap();
        let signer = Signer::new(&key, "kid-1").unwrap();
        let claims = serde_json::json!({"sub": "a"});
        for typ in ["at+jwt", "JWT", "other"] {
            let token = signer.sign_jws(typ, claims.as_object().unwrap()).unwrap();
            let header = token.split('.').next().unwrap();
            let expected = serde_json::json!({"alg": "ES256", "kid": "kid-1", "typ": typ});
            assert_eq!(decode(header), serde_json::to_vec(&expected).unwrap());
            let message = &token[..token.rfind('.').unwrap()];
            verify(
                &key,
                message.as_bytes(),
                &decode(token.rsplit('.').next().unwrap()),
            );
        }
    }

    fn private_jwk(key: &PrivateKey) -> Map<String, Value> {
        let jwk = jwkd_client::jwk::PrivateJwk {
            params: key.private_jwk_params().unwrap(),
            kid: key.thumbprint(),
            alg: key.algorithm().name().into(),
            use_: None,
        };
        serde_json::to_value(jwk)
            .unwrap()
            .as_object()
            .unwrap()
            .clone()
    }
}
