use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwkd_client::jwk::JwkParams;
use zeroize::Zeroizing;

/// A JWS signing algorithm, which is also a key family (CONTRACT §3 `keys.algorithms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256: the default.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// Ed25519 (RFC 8037).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit modulus.
    Rs256,
}

impl Algorithm {
    /// Every supported algorithm, in the order documented in the config reference.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::EdDsa,
        Algorithm::Rs256,
    ];

    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Rs256 => "RS256",
        }
    }

    pub(crate) fn ecdsa(self) -> Option<&'static EcdsaSigningAlgorithm> {
        match self {
            Algorithm::Es256 => Some(&ECDSA_P256_SHA256_FIXED_SIGNING),
            Algorithm::Es384 => Some(&ECDSA_P384_SHA384_FIXED_SIGNING),
            Algorithm::EdDsa | Algorithm::Rs256 => None,
        }
    }

    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Algorithm::Es256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::Es384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Algorithm::EdDsa => &rcgen::PKCS_ED25519,
            Algorithm::Rs256 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Algorithm::ALL.iter().map(|alg| alg.name()).collect();
                format!(
                    "unknown algorithm {s:?} (expected one of {})",
                    known.join(", ")
                )
            })
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a key could not be made or read back.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The crypto backend failed to generate a key.
    #[error("cannot generate a {0} key")]
    Generate(Algorithm),
    /// Stored PKCS#8 bytes do not hold a usable key of the stated algorithm.
    #[error("stored private key is not a valid {alg} key: {reason}")]
    Invalid {
        /// The algorithm the key was stored under.
        alg: Algorithm,
        /// What the backend said.
        reason: String,
    },
    /// The crypto backend failed to sign.
    #[error("cannot sign with the {0} key")]
    Sign(Algorithm),
    /// The certificate could not be made.
    #[error("cannot make the x5c certificate: {0}")]
    Certificate(String),
}

/// A private signing key: its algorithm and its PKCS#8 v1 DER encoding.
///
/// The DER is zeroized on drop and never printed: `Debug` shows the algorithm only.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey {
    alg: Algorithm,
    pkcs8: Zeroizing<Vec<u8>>,
    /// The public parameters, derived once when the key is made or loaded.
    public: JwkParams,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("alg", &self.alg)
            .field("pkcs8", &"<redacted>")
            .finish()
    }
}

impl PrivateKey {
    /// Generates a fresh key for `alg`.
    ///
    /// # Errors
    /// [`KeyError::Generate`] if the backend's generator fails.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let failed = |_| KeyError::Generate(alg);
        let pkcs8: Vec<u8> = match alg {
            Algorithm::Es256 | Algorithm::Es384 => {
                // Checked by `ecdsa()` for exactly these two variants.
                let signing = alg.ecdsa().ok_or(KeyError::Generate(alg))?;
                EcdsaKeyPair::generate_pkcs8(signing, &SystemRandom::new())
                    .map_err(failed)?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::EdDsa => Ed25519KeyPair::generate()
                .and_then(|pair| pair.to_pkcs8v1())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Algorithm::Rs256 => {
                let pair =
                    RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(failed)?;
                AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                    .map_err(failed)?
                    .as_ref()
                    .to_vec()
            }
        };
        Self::from_pkcs8(alg, pkcs8).map_err(|_| KeyError::Generate(alg))
    }

    /// Reads a key back from PKCS#8 DER, checking that it is a key of `alg`.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] if the bytes are not a valid key of that algorithm.
    pub fn from_pkcs8(alg: Algorithm, pkcs8: Vec<u8>) -> Result<Self, KeyError> {
        let pkcs8 = Zeroizing::new(pkcs8);
        let invalid = |reason: String| KeyError::Invalid { alg, reason };
        let public = match alg {
            Algorithm::Es256 | Algorithm::Es384 => {
                let signing = alg
                    .ecdsa()
                    .ok_or_else(|| invalid("not an ECDSA algorithm".into()))?;
                let pair = EcdsaKeyPair::from_pkcs8(signing, &pkcs8)
                    .map_err(|err| invalid(err.to_string()))?;
                // An uncompressed SEC1 point: 0x04 || x || y, coordinates of equal length.
                let point = pair.public_key().as_ref();
                let coordinates = &point[1..];
                let (x, y) = coordinates.split_at(coordinates.len() / 2);
                JwkParams::Ec {
                    crv: if alg == Algorithm::Es256 {
                        "P-256"
                    } else {
                        "P-384"
                    }
                    .into(),
                    x: URL_SAFE_NO_PAD.encode(x),
                    y: URL_SAFE_NO_PAD.encode(y),
                }
            }
            Algorithm::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
                    .map_err(|err| invalid(err.to_string()))?;
                JwkParams::Okp {
                    crv: "Ed25519".into(),
                    x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                }
            }
            Algorithm::Rs256 => {
                let pair =
                    RsaKeyPair::from_pkcs8(&pkcs8).map_err(|err| invalid(err.to_string()))?;
                if pair.public_modulus_len() < 256 {
                    return Err(invalid("RSA modulus shorter than 2048 bits".into()));
                }
                let public = pair.public_key();
                JwkParams::Rsa {
                    n: URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                    e: URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
                }
            }
        };
        Ok(PrivateKey { alg, pkcs8, public })
    }

    /// The key's algorithm (its family).
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The PKCS#8 v1 DER encoding, for the store only.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public JWK parameters.
    pub fn public_params(&self) -> &JwkParams {
        &self.public
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url): the key's `kid`.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.public)
    }
}

/// The RFC 7638 thumbprint of a public key, base64url: its kid.
pub fn thumbprint(public: &JwkParams) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        public.thumbprint_input().as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_and_round_trips() {
        for alg in Algorithm::ALL {
            let key = PrivateKey::generate(alg).unwrap();
            let again = PrivateKey::from_pkcs8(alg, key.pkcs8_der().to_vec()).unwrap();
            assert_eq!(key.thumbprint(), again.thumbprint(), "{alg}");
            assert_eq!(key.thumbprint().len(), 43, "{alg}");
        }
    }

    #[test]
    fn ec_coordinates_have_the_curve_length() {
        let key = PrivateKey::generate(Algorithm::Es384).unwrap();
        let JwkParams::Ec { x, y, crv } = key.public_params() else {
            panic!("not an EC key: {:?}", key.public_params());
        };
        assert_eq!(crv, "P-384");
        assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap().len(), 48);
        assert_eq!(URL_SAFE_NO_PAD.decode(y).unwrap().len(), 48);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = PrivateKey::generate(Algorithm::Es256).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(key.pkcs8_der())));
    }

    #[test]
    fn a_key_of_another_algorithm_is_rejected() {
        let key = PrivateKey::generate(Algorithm::Es256).unwrap();
        let err = PrivateKey::from_pkcs8(Algorithm::Es384, key.pkcs8_der().to_vec()).unwrap_err();
        assert!(err.to_string().contains("not a valid ES384 key"), "{err}");
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // The RSA key of RFC 7638 §3.1, whose thumbprint is given there.
        let params = JwkParams::Rsa {
            n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
            e: "AQAB".into(),
        };
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            params.thumbprint_input().as_bytes(),
        );
        assert_eq!(
            URL_SAFE_NO_PAD.encode(digest.as_ref()),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
