//! The two DER shapes a key held by AWS KMS answers in, turned into what JWS
//! and JWK need (issue: KMS custody):
//!
//! - `Sign` returns an ECDSA signature as DER, `SEQUENCE { INTEGER r, INTEGER s }`,
//!   where each integer is as short as its value allows (and one byte longer
//!   when its top bit is set); JWS wants `r || s`, each left-padded to the
//!   curve's width (RFC 7518 §3.4). An `r` or `s` with leading zero bytes is
//!   shorter than the width: one signature in 128 or so.
//! - `GetPublicKey` returns a `SubjectPublicKeyInfo` (RFC 5280 §4.1.2.7); the
//!   JWK wants the EC point's coordinates, or the RSA modulus and exponent.
//!
//! Both come from the network: every length is checked against what is left,
//! and anything but the exact expected shape is an error, never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwkd_client::jwk::JwkParams;

use super::Algorithm;

/// Why DER from KMS could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct DerError {
    /// What was being read: `ECDSA signature`, `public key`.
    pub what: &'static str,
    /// What was wrong with it.
    pub reason: String,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OBJECT_IDENTIFIER: u8 = 0x06;
const NULL: u8 = 0x05;

/// id-ecPublicKey, 1.2.840.10045.2.1.
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// secp256r1, 1.2.840.10045.3.1.7.
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1, 1.3.132.0.34.
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// rsaEncryption, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The smallest RSA modulus jwkd publishes (RSA_2048 keys; RFC 7518 §3.3).
const MIN_RSA_MODULUS_BITS: usize = 2048;

/// A reader over DER bytes that names what it reads in its errors.
struct Reader<'a> {
    what: &'static str,
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, DerError> {
        Err(DerError {
            what: self.what,
            reason: reason.into(),
        })
    }

    /// The value of the next element, which must have `tag`.
    fn next(&mut self, tag: u8, name: &str) -> Result<&'a [u8], DerError> {
        let [found, first, rest @ ..] = self.input else {
            return self.fail(format!("ends before the {name}"));
        };
        if *found != tag {
            return self.fail(format!(
                "expected the {name} (tag {tag:#04x}), found tag {found:#04x}"
            ));
        }
        let (len, rest) = match *first {
            short @ 0..=0x7f => (usize::from(short), rest),
            0x81 => match rest {
                [len @ 0x80..=0xff, rest @ ..] => (usize::from(*len), rest),
                _ => return self.fail(format!("the {name}'s length is not minimal DER")),
            },
            0x82 => match rest {
                [high @ 0x01..=0xff, low, rest @ ..] => {
                    (usize::from(*high) << 8 | usize::from(*low), rest)
                }
                _ => return self.fail(format!("the {name}'s length is not minimal DER")),
            },
            _ => return self.fail(format!("the {name}'s length is not one jwkd reads")),
        };
        if rest.len() < len {
            return self.fail(format!(
                "the {name} claims {len} bytes, {} are left",
                rest.len()
            ));
        }
        let (value, rest) = rest.split_at(len);
        self.input = rest;
        Ok(value)
    }

    /// A reader over the contents of the element that must be all that is
    /// left, with `tag`.
    fn only(&mut self, tag: u8, name: &str) -> Result<Reader<'a>, DerError> {
        let input = self.next(tag, name)?;
        self.finish(name)?;
        Ok(Reader {
            what: self.what,
            input,
        })
    }

    fn finish(&self, name: &str) -> Result<(), DerError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            self.fail(format!("{} bytes after the {name}", self.input.len()))
        }
    }

    /// A non-negative INTEGER's magnitude, without the sign byte.
    fn unsigned(&mut self, name: &str) -> Result<&'a [u8], DerError> {
        let value = self.next(INTEGER, name)?;
        match value {
            [] => self.fail(format!("the {name} is empty")),
            [first, ..] if first & 0x80 != 0 => self.fail(format!("the {name} is negative")),
            [0, second, ..] if second & 0x80 == 0 => {
                self.fail(format!("the {name} has a needless leading zero"))
            }
            [0, rest @ ..] => Ok(rest),
            value => Ok(value),
        }
    }
}

/// The curve width of an ECDSA algorithm: bytes per coordinate and per `r`, `s`.
fn ecdsa_width(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::Es256 => Some(32),
        Algorithm::Es384 => Some(48),
        Algorithm::EdDsa | Algorithm::Rs256 => None,
    }
}

/// The JWS signature (`r || s`, each `width` bytes) of a DER ECDSA signature
/// made with a key of `alg` (ES256 or ES384).
///
/// # Errors
/// When `alg` is not ECDSA, or `der` is not a signature of that curve's size.
pub fn jws_signature_from_der(alg: Algorithm, der: &[u8]) -> Result<Vec<u8>, DerError> {
    let mut outer = Reader {
        what: "ECDSA signature",
        input: der,
    };
    let Some(width) = ecdsa_width(alg) else {
        return outer.fail(format!("{alg} signatures are not DER"));
    };
    let mut inner = outer.only(SEQUENCE, "signature sequence")?;
    let mut signature = vec![0; 2 * width];
    for (idx, name) in ["r", "s"].into_iter().enumerate() {
        let value = inner.unsigned(name)?;
        if value.len() > width {
            return inner.fail(format!(
                "{name} is {} bytes, more than {alg}'s {width}",
                value.len()
            ));
        }
        if value.iter().all(|byte| *byte == 0) {
            return inner.fail(format!("{name} is zero"));
        }
        let end = (idx + 1) * width;
        signature[end - value.len()..end].copy_from_slice(value);
    }
    inner.finish("s")?;
    Ok(signature)
}

/// The public JWK parameters of a `SubjectPublicKeyInfo` (what KMS
/// `GetPublicKey` returns) for a key of `alg`: the EC point of P-256 or P-384,
/// or an RSA modulus of at least 2048 bits and its exponent.
///
/// # Errors
/// When `spki` is not a public key of `alg`'s kind and size.
pub fn public_params_from_spki(alg: Algorithm, spki: &[u8]) -> Result<JwkParams, DerError> {
    let mut outer = Reader {
        what: "public key",
        input: spki,
    };
    let mut info = outer.only(SEQUENCE, "SubjectPublicKeyInfo")?;
    let algorithm = info.next(SEQUENCE, "algorithm identifier")?;
    let key = info.next(BIT_STRING, "subjectPublicKey")?;
    info.finish("subjectPublicKey")?;
    let Some((0, key)) = key.split_first() else {
        return info.fail("the subjectPublicKey has unused bits");
    };
    let mut algorithm = Reader {
        what: "public key",
        input: algorithm,
    };
    let oid = algorithm.next(OBJECT_IDENTIFIER, "algorithm")?;
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    match alg {
        Algorithm::Es256 | Algorithm::Es384 => {
            let (curve, crv, width) = if alg == Algorithm::Es256 {
                (P256, "P-256", 32)
            } else {
                (P384, "P-384", 48)
            };
            if oid != EC_PUBLIC_KEY {
                return algorithm.fail(format!("not an EC key, as {alg} needs"));
            }
            if algorithm.next(OBJECT_IDENTIFIER, "curve")? != curve {
                return algorithm.fail(format!("not a {crv} key, as {alg} needs"));
            }
            algorithm.finish("curve")?;
            let [0x04, point @ ..] = key else {
                return algorithm.fail("the EC point is not uncompressed");
            };
            if point.len() != 2 * width {
                return algorithm.fail(format!(
                    "the EC point has {} bytes, {crv} has {}",
                    point.len(),
                    2 * width
                ));
            }
            let (x, y) = point.split_at(width);
            Ok(JwkParams::Ec {
                crv: crv.to_owned(),
                x: b64(x),
                y: b64(y),
            })
        }
        Algorithm::Rs256 => {
            if oid != RSA_ENCRYPTION {
                return algorithm.fail("not an RSA key, as RS256 needs");
            }
            // The parameters are NULL (RFC 3279 §2.3.1).
            algorithm.next(NULL, "RSA parameters")?;
            algorithm.finish("RSA parameters")?;
            let mut key = Reader {
                what: "public key",
                input: key,
            };
            let mut rsa = key.only(SEQUENCE, "RSA public key")?;
            let n = rsa.unsigned("modulus")?;
            let e = rsa.unsigned("exponent")?;
            rsa.finish("exponent")?;
            let bits = n.len() * 8 - n.first().map_or(8, |top| top.leading_zeros() as usize);
            if bits < MIN_RSA_MODULUS_BITS {
                return rsa.fail(format!(
                    "the modulus has {bits} bits, fewer than {MIN_RSA_MODULUS_BITS}"
                ));
            }
            Ok(JwkParams::Rsa {
                n: b64(n),
                e: b64(e),
            })
        }
        Algorithm::EdDsa => outer.fail("EdDSA keys are not held in KMS"),
    }
}

/// Checks that `public` (a stored public JWK of a key KMS holds) is a key of
/// `alg`'s kind and size: the curve and coordinate widths of P-256 or P-384,
/// or an RSA modulus of at least 2048 bits and a non-empty exponent.
///
/// # Errors
/// What does not fit, in one line.
pub fn check_public(alg: Algorithm, public: &JwkParams) -> Result<(), String> {
    let decode = |name: &str, value: &str| {
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|err| format!("{name} is not base64url: {err}"))
    };
    match (alg, public) {
        (Algorithm::Es256 | Algorithm::Es384, JwkParams::Ec { crv, x, y }) => {
            let (want, width) = if alg == Algorithm::Es256 {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            if crv != want {
                return Err(format!("curve {crv:?}, {alg} needs {want}"));
            }
            for (name, value) in [("x", x), ("y", y)] {
                let bytes = decode(name, value)?;
                if bytes.len() != width {
                    return Err(format!(
                        "{name} has {} bytes, {want} has {width}",
                        bytes.len()
                    ));
                }
            }
            Ok(())
        }
        (Algorithm::Rs256, JwkParams::Rsa { n, e }) => {
            let modulus = decode("n", n)?;
            let exponent = decode("e", e)?;
            if modulus.first() == Some(&0) || exponent.first().is_none_or(|byte| *byte == 0) {
                return Err("n or e has a leading zero byte or is empty".into());
            }
            if modulus.len() * 8 < MIN_RSA_MODULUS_BITS {
                return Err(format!(
                    "the RSA modulus has {} bits, RS256 needs at least {MIN_RSA_MODULUS_BITS}",
                    modulus.len() * 8
                ));
            }
            Ok(())
        }
        (Algorithm::EdDsa, _) => Err("EdDSA keys are never held in KMS".into()),
        (_, _) => Err(format!("not a key of {alg}'s kind")),
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_ASN1_SIGNING,
        ECDSA_P384_SHA384_FIXED, EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey,
    };

    use super::*;
    use crate::keys::PrivateKey;

    /// Signs with aws-lc-rs's DER signer, as KMS answers, until both an `r`
    /// and an `s` shorter than the width have come by; every conversion must
    /// verify with the fixed-width verifier, as a JWS verifier checks it.
    #[test]
    fn der_signatures_convert_to_fixed_width_even_with_leading_zeros() {
        for (alg, signing, verifying, width) in [
            (
                Algorithm::Es256,
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                &ECDSA_P256_SHA256_FIXED,
                32,
            ),
            (
                Algorithm::Es384,
                &ECDSA_P384_SHA384_ASN1_SIGNING,
                &ECDSA_P384_SHA384_FIXED,
                48,
            ),
        ] {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &SystemRandom::new()).unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref()).unwrap();
            let public = UnparsedPublicKey::new(verifying, pair.public_key().as_ref().to_vec());
            let (mut short_r, mut short_s) = (false, false);
            for round in 0..20_000u32 {
                let message = round.to_be_bytes();
                let der = pair.sign(&SystemRandom::new(), &message).unwrap();
                let fixed = jws_signature_from_der(alg, der.as_ref()).unwrap();
                assert_eq!(fixed.len(), 2 * width);
                public.verify(&message, &fixed).unwrap_or_else(|_| {
                    panic!(
                        "{alg}: {:02x?} converted to {fixed:02x?} does not verify",
                        der.as_ref()
                    )
                });
                // A component shorter than the width starts with a zero byte.
                short_r |= fixed[0] == 0;
                short_s |= fixed[width] == 0;
                if short_r && short_s {
                    break;
                }
            }
            assert!(
                short_r && short_s,
                "{alg}: no short r and s in 20,000 signatures"
            );
        }
    }

    #[test]
    fn malformed_signatures_are_errors_that_say_why() {
        let mut r_one = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02];
        let fixed = jws_signature_from_der(Algorithm::Es256, &r_one).unwrap();
        assert_eq!((fixed[31], fixed[63]), (1, 2), "r = 1, s = 2, left-padded");
        assert!(
            fixed[..31]
                .iter()
                .chain(&fixed[32..63])
                .all(|byte| *byte == 0)
        );
        let mut top_bit = vec![0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x02];
        assert_eq!(
            jws_signature_from_der(Algorithm::Es256, &top_bit).unwrap()[31],
            0x80
        );
        let too_long = {
            let mut der = vec![0x30, 0x26, 0x02, 0x21];
            der.extend([0x7f; 33]);
            der.extend([0x02, 0x01, 0x01]);
            der
        };
        let cases: Vec<(Vec<u8>, Algorithm, &str)> = vec![
            (
                vec![],
                Algorithm::Es256,
                "ends before the signature sequence",
            ),
            (
                vec![0x31, 0x00],
                Algorithm::Es256,
                "expected the signature sequence",
            ),
            (
                vec![0x30, 0x08, 0x02],
                Algorithm::Es256,
                "claims 8 bytes, 1 are left",
            ),
            (
                {
                    r_one.push(0);
                    r_one
                },
                Algorithm::Es256,
                "1 bytes after the signature sequence",
            ),
            (
                vec![0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01],
                Algorithm::Es256,
                "r is negative",
            ),
            (
                vec![0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01],
                Algorithm::Es256,
                "r has a needless leading zero",
            ),
            (
                vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01],
                Algorithm::Es256,
                "r is zero",
            ),
            (
                vec![0x30, 0x05, 0x02, 0x00, 0x02, 0x01, 0x01],
                Algorithm::Es256,
                "r is empty",
            ),
            (
                too_long,
                Algorithm::Es256,
                "r is 33 bytes, more than ES256's 32",
            ),
            (
                {
                    top_bit.truncate(6);
                    top_bit[1] = 0x04;
                    top_bit
                },
                Algorithm::Es256,
                "ends before the s",
            ),
            (
                vec![0x30, 0x81, 0x06],
                Algorithm::Es256,
                "length is not minimal DER",
            ),
            (
                vec![0x30, 0x84, 0, 0, 0, 6],
                Algorithm::Es256,
                "length is not one jwkd reads",
            ),
            (
                vec![0x30, 0x00],
                Algorithm::Rs256,
                "RS256 signatures are not DER",
            ),
        ];
        for (der, alg, says) in cases {
            let err = jws_signature_from_der(alg, &der).unwrap_err().to_string();
            assert!(
                err.starts_with("ECDSA signature: ") && err.contains(says),
                "{der:02x?}: {err}"
            );
        }
    }

    /// The SubjectPublicKeyInfo of a key, as KMS `GetPublicKey` answers.
    fn spki(key: &PrivateKey, alg: Algorithm) -> Vec<u8> {
        match alg {
            Algorithm::Es256 | Algorithm::Es384 => {
                let signing = alg.ecdsa().unwrap();
                let pair = EcdsaKeyPair::from_pkcs8(signing, key.pkcs8_der()).unwrap();
                pair.public_key().as_der().unwrap().as_ref().to_vec()
            }
            Algorithm::Rs256 => {
                let pair = RsaKeyPair::from_pkcs8(key.pkcs8_der()).unwrap();
                pair.public_key().as_der().unwrap().as_ref().to_vec()
            }
            Algorithm::EdDsa => unreachable!("not in KMS"),
        }
    }

    #[test]
    fn a_public_key_from_kms_gives_the_jwk_and_kid_of_the_same_key() {
        for alg in [Algorithm::Es256, Algorithm::Es384, Algorithm::Rs256] {
            let key = PrivateKey::generate(alg).unwrap();
            let params = public_params_from_spki(alg, &spki(&key, alg)).unwrap();
            assert_eq!(&params, key.public_params(), "{alg}");
        }
        // What the emulator's KMS answered for an ECC_NIST_P256 key: 91 bytes.
        let key = PrivateKey::generate(Algorithm::Es256).unwrap();
        assert_eq!(spki(&key, Algorithm::Es256).len(), 91);
    }

    #[test]
    fn a_public_key_of_another_kind_or_shape_is_refused() {
        let p256 = spki(
            &PrivateKey::generate(Algorithm::Es256).unwrap(),
            Algorithm::Es256,
        );
        let p384 = spki(
            &PrivateKey::generate(Algorithm::Es384).unwrap(),
            Algorithm::Es384,
        );
        let rsa = spki(
            &PrivateKey::generate(Algorithm::Rs256).unwrap(),
            Algorithm::Rs256,
        );
        let mut trailing = p256.clone();
        trailing.push(0);
        let mut compressed = p256.clone();
        compressed[26] = 0x02;
        let cases: Vec<(&[u8], Algorithm, &str)> = vec![
            (&p256, Algorithm::Es384, "not a P-384 key, as ES384 needs"),
            (&p384, Algorithm::Es256, "not a P-256 key, as ES256 needs"),
            (&rsa, Algorithm::Es256, "not an EC key, as ES256 needs"),
            (&p256, Algorithm::Rs256, "not an RSA key, as RS256 needs"),
            (&p256, Algorithm::EdDsa, "EdDSA keys are not held in KMS"),
            (
                &trailing,
                Algorithm::Es256,
                "1 bytes after the SubjectPublicKeyInfo",
            ),
            (
                &compressed,
                Algorithm::Es256,
                "the EC point is not uncompressed",
            ),
            (
                &p256[..60],
                Algorithm::Es256,
                "claims 89 bytes, 58 are left",
            ),
            (
                &[],
                Algorithm::Rs256,
                "ends before the SubjectPublicKeyInfo",
            ),
        ];
        for (der, alg, says) in cases {
            let err = public_params_from_spki(alg, der).unwrap_err().to_string();
            assert!(
                err.starts_with("public key: ") && err.contains(says),
                "{alg}: {err}"
            );
        }
    }
}
