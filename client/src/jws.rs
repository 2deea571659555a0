//! Compact JWS signing (RFC 7515 §7.1): the one signer of jwkd.
//!
//! [`SigningKeySource`](crate::SigningKeySource) signs with it, and so do the
//! daemon's token endpoint and `/v1/sign`, so a token has one header encoding and one
//! signature encoding whoever signed it. It is public for the daemon and hidden from
//! the docs: this crate signs only with keys jwkd hands out (see the crate docs).

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPairComponents;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::jwk::PrivateJwkParams;
use crate::keyset::Algorithm;

/// A private key parsed once for signing, with its kid.
pub struct JwsSigner {
    alg: Algorithm,
    kid: String,
    pair: KeyPair,
}

enum KeyPair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// Why a key cannot be parsed, or did not sign.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwsError {
    /// The key material is not a usable private key of its algorithm.
    InvalidKey {
        /// What is wrong, as the crypto backend says it.
        reason: String,
    },
    /// The crypto backend failed to sign.
    SignFailed,
}

impl fmt::Display for JwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwsError::InvalidKey { reason } => write!(f, "not a usable private key: {reason}"),
            JwsError::SignFailed => f.write_str("the crypto backend failed to sign"),
        }
    }
}

impl std::error::Error for JwsError {}

impl fmt::Debug for JwsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwsSigner")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The protected header, with its members in the order they have always been
/// written (sorted), so tokens keep the same bytes.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

impl JwsSigner {
    /// Parses a PKCS#8 v1 or v2 private key of `alg` (how the daemon stores keys).
    ///
    /// # Errors
    /// [`JwsError::InvalidKey`] if the backend rejects the key.
    pub fn from_pkcs8(
        alg: Algorithm,
        kid: impl Into<String>,
        der: &[u8],
    ) -> Result<JwsSigner, JwsError> {
        let invalid = |err: aws_lc_rs::error::KeyRejected| JwsError::InvalidKey {
            reason: err.to_string(),
        };
        let pair = match alg {
            Algorithm::Es256 | Algorithm::Es384 => {
                KeyPair::Ecdsa(EcdsaKeyPair::from_pkcs8(ecdsa(alg), der).map_err(invalid)?)
            }
            Algorithm::EdDsa => {
                KeyPair::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(invalid)?)
            }
            Algorithm::Rs256 => KeyPair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(invalid)?),
        };
        Ok(JwsSigner {
            alg,
            kid: kid.into(),
            pair,
        })
    }

    /// Parses the private JWK parameters of a key of `alg` (how `/v1/signing-keys`
    /// hands keys out). The curve must be the algorithm's and an RSA modulus at least
    /// 2048 bits.
    ///
    /// # Errors
    /// [`JwsError::InvalidKey`] if the parameters are not a usable key of `alg`.
    pub fn from_jwk(
        alg: Algorithm,
        kid: impl Into<String>,
        params: &PrivateJwkParams,
    ) -> Result<JwsSigner, JwsError> {
        let pair = KeyPair::from_jwk(alg, params).ok_or_else(|| JwsError::InvalidKey {
            reason: format!("not a valid {alg} private JWK"),
        })?;
        Ok(JwsSigner {
            alg,
            kid: kid.into(),
            pair,
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

    /// The encoded protected header `{"alg","kid","typ"}` of this key's tokens of
    /// type `typ`: build it once and pass it to [`JwsSigner::sign_compact`].
    pub fn header(&self, typ: &str) -> String {
        let header = Header {
            alg: self.alg.name(),
            kid: &self.kid,
            typ,
        };
        // A struct of strings always serializes.
        let json = serde_json::to_vec(&header).expect("a header of strings serializes");
        URL_SAFE_NO_PAD.encode(json)
    }

    /// The compact JWS `header.payload.signature` of `payload` (the claims' JSON),
    /// with `header` from [`JwsSigner::header`] of this signer. It allocates the token
    /// only: the signature of ECDSA and Ed25519 keys stays on the stack.
    ///
    /// # Errors
    /// [`JwsError::SignFailed`] if the backend fails.
    pub fn sign_compact(&self, header: &str, payload: &[u8]) -> Result<String, JwsError> {
        let encoded = |len: usize| len.div_ceil(3) * 4;
        let mut token = String::with_capacity(
            header.len() + 2 + encoded(payload.len()) + encoded(self.signature_len()),
        );
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let rng = SystemRandom::new();
        let failed = |_| JwsError::SignFailed;
        match &self.pair {
            KeyPair::Ecdsa(pair) => {
                let signature = pair.sign(&rng, token.as_bytes()).map_err(failed)?;
                append_signature(&mut token, signature.as_ref());
            }
            KeyPair::Ed25519(pair) => {
                let signature = pair.sign(token.as_bytes());
                append_signature(&mut token, signature.as_ref());
            }
            KeyPair::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    token.as_bytes(),
                    &mut signature,
                )
                .map_err(failed)?;
                append_signature(&mut token, &signature);
            }
        }
        Ok(token)
    }

    fn signature_len(&self) -> usize {
        match &self.pair {
            KeyPair::Ecdsa(_) if self.alg == Algorithm::Es384 => 96,
            KeyPair::Ecdsa(_) | KeyPair::Ed25519(_) => 64,
            KeyPair::Rsa(pair) => pair.public_modulus_len(),
        }
    }
}

fn append_signature(token: &mut String, signature: &[u8]) {
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, token);
}

fn ecdsa(alg: Algorithm) -> &'static signature::EcdsaSigningAlgorithm {
    if alg == Algorithm::Es384 {
        &signature::ECDSA_P384_SHA384_FIXED_SIGNING
    } else {
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING
    }
}

impl KeyPair {
    fn from_jwk(alg: Algorithm, params: &PrivateJwkParams) -> Option<KeyPair> {
        let decode = |text: &str| URL_SAFE_NO_PAD.decode(text).ok().map(Zeroizing::new);
        match (alg, params) {
            (Algorithm::Es256 | Algorithm::Es384, PrivateJwkParams::Ec { crv, x, y, d }) => {
                let curve = if alg == Algorithm::Es256 {
                    "P-256"
                } else {
                    "P-384"
                };
                if crv != curve {
                    return None;
                }
                let mut point = vec![0x04];
                point.extend_from_slice(&decode(x)?);
                point.extend_from_slice(&decode(y)?);
                EcdsaKeyPair::from_private_key_and_public_key(ecdsa(alg), &decode(d)?, &point)
                    .ok()
                    .map(KeyPair::Ecdsa)
            }
            (Algorithm::EdDsa, PrivateJwkParams::Okp { crv, x, d }) if crv == "Ed25519" => {
                Ed25519KeyPair::from_seed_and_public_key(&decode(d)?, &decode(x)?)
                    .ok()
                    .map(KeyPair::Ed25519)
            }
            (
                Algorithm::Rs256,
                PrivateJwkParams::Rsa {
                    n,
                    e,
                    d,
                    p,
                    q,
                    dp,
                    dq,
                    qi,
                },
            ) => {
                let components = KeyPairComponents {
                    public_key: signature::RsaPublicKeyComponents {
                        n: decode(n)?,
                        e: decode(e)?,
                    },
                    d: decode(d)?,
                    p: decode(p)?,
                    q: decode(q)?,
                    dP: decode(dp)?,
                    dQ: decode(dq)?,
                    qInv: decode(qi)?,
                };
                let pair = RsaKeyPair::from_components(&components).ok()?;
                (pair.public_modulus_len() * 8 >= 2048).then_some(KeyPair::Rsa(pair))
            }
            _ => None,
        }
    }
}
