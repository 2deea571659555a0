//! JSON Web Key (RFC 7517/7518) and JWK Set types shared by the daemon and the verifier.
//!
//! Only public members are modelled on [`Jwk`]: a key with private members is a
//! different type, [`PrivateJwk`], so a private parameter cannot end up in a
//! published set by accident. [`PrivateJwk`] is what `/v1/signing-keys` hands to an
//! issuer; its `Debug` never prints key material and its secrets are zeroized on drop.
//!
//! The verifier does not use [`JwkSet`]'s strict deserializer for fetched sets: it
//! parses each key on its own (see [`KeySet`](crate::KeySet)) so one unusable key does
//! not reject the whole set.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// A public JSON Web Key as jwkd publishes it.
///
/// The key-type specific members are flattened from [`JwkParams`], so the JSON is
/// the usual flat object: `{"kty":"EC","crv":"P-256","x":..,"y":..,"kid":..}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type specific public parameters (`kty` and the members it implies).
    #[serde(flatten)]
    pub params: JwkParams,
    /// Key identifier: the RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The JWS algorithm this key is used with (`ES256`, `ES384`, `EdDSA`, `RS256`).
    pub alg: String,
    /// Intended use; jwkd publishes `sig` only.
    #[serde(rename = "use")]
    pub use_: String,
    /// Certificate chain (base64 DER, not base64url), leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    /// SHA-256 thumbprint of the DER certificate, base64url.
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

/// The public parameters of a key, tagged by `kty`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum JwkParams {
    /// Elliptic curve key (RFC 7518 §6.2).
    #[serde(rename = "EC")]
    Ec {
        /// Curve name: `P-256` or `P-384`.
        crv: String,
        /// X coordinate, base64url, fixed length for the curve.
        x: String,
        /// Y coordinate, base64url, fixed length for the curve.
        y: String,
    },
    /// Octet key pair (RFC 8037), used for Ed25519.
    #[serde(rename = "OKP")]
    Okp {
        /// Curve name: `Ed25519`.
        crv: String,
        /// The public key, base64url.
        x: String,
    },
    /// RSA key (RFC 7518 §6.3).
    #[serde(rename = "RSA")]
    Rsa {
        /// Modulus, base64url big-endian without leading zeros.
        n: String,
        /// Public exponent, base64url big-endian without leading zeros.
        e: String,
    },
}

impl JwkParams {
    /// The RFC 7638 canonical JSON of the required public members, in
    /// lexicographic order with no whitespace: the input of the thumbprint.
    pub fn thumbprint_input(&self) -> String {
        // The members are base64url or fixed names, so they never need JSON
        // escaping; serde_json would still be correct but this keeps the order explicit.
        match self {
            JwkParams::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            JwkParams::Okp { crv, x } => format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#),
            JwkParams::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
        }
    }
}

/// A JWK Set document (RFC 7517 §5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys, in the publisher's order.
    pub keys: Vec<Jwk>,
}

/// A private JSON Web Key: the public parameters plus the private ones.
///
/// `Debug` prints the kid and algorithm only. It serializes with its members in
/// sorted order, as `/v1/signing-keys` has always written them.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct PrivateJwk {
    /// Key type specific parameters, public and private.
    #[serde(flatten)]
    pub params: PrivateJwkParams,
    /// Key identifier: the RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The JWS algorithm this key signs with.
    pub alg: String,
    /// Intended use (`sig`), if stated.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Serialize for PrivateJwk {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut members: BTreeMap<&str, &str> = self.params.members().into_iter().collect();
        members.insert("kid", &self.kid);
        members.insert("alg", &self.alg);
        if let Some(use_) = &self.use_ {
            members.insert("use", use_);
        }
        members.serialize(serializer)
    }
}

impl fmt::Debug for PrivateJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateJwk")
            .field("kty", &self.params.kty())
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The parameters of a private key, tagged by `kty`. All values are base64url.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum PrivateJwkParams {
    /// Elliptic curve key (RFC 7518 §6.2.2).
    #[serde(rename = "EC")]
    Ec {
        /// Curve name: `P-256` or `P-384`.
        crv: String,
        /// X coordinate.
        x: String,
        /// Y coordinate.
        y: String,
        /// The private scalar, fixed length for the curve.
        d: String,
    },
    /// Octet key pair (RFC 8037), used for Ed25519.
    #[serde(rename = "OKP")]
    Okp {
        /// Curve name: `Ed25519`.
        crv: String,
        /// The public key.
        x: String,
        /// The private key (the 32-byte seed).
        d: String,
    },
    /// RSA key (RFC 7518 §6.3.2), with the CRT parameters.
    #[serde(rename = "RSA")]
    Rsa {
        /// Modulus.
        n: String,
        /// Public exponent.
        e: String,
        /// Private exponent.
        d: String,
        /// First prime factor.
        p: String,
        /// Second prime factor.
        q: String,
        /// First factor CRT exponent.
        dp: String,
        /// Second factor CRT exponent.
        dq: String,
        /// First CRT coefficient.
        qi: String,
    },
}

impl PrivateJwkParams {
    /// Every member with its value, `kty` included.
    fn members(&self) -> Vec<(&'static str, &str)> {
        let kty = ("kty", self.kty());
        match self {
            PrivateJwkParams::Ec { crv, x, y, d } => {
                vec![kty, ("crv", crv), ("x", x), ("y", y), ("d", d)]
            }
            PrivateJwkParams::Okp { crv, x, d } => vec![kty, ("crv", crv), ("x", x), ("d", d)],
            PrivateJwkParams::Rsa {
                n,
                e,
                d,
                p,
                q,
                dp,
                dq,
                qi,
            } => vec![
                kty,
                ("n", n),
                ("e", e),
                ("d", d),
                ("p", p),
                ("q", q),
                ("dp", dp),
                ("dq", dq),
                ("qi", qi),
            ],
        }
    }

    /// The `kty` name.
    pub fn kty(&self) -> &'static str {
        match self {
            PrivateJwkParams::Ec { .. } => "EC",
            PrivateJwkParams::Okp { .. } => "OKP",
            PrivateJwkParams::Rsa { .. } => "RSA",
        }
    }
}

impl fmt::Debug for PrivateJwkParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateJwkParams")
            .field("kty", &self.kty())
            .finish_non_exhaustive()
    }
}

impl Drop for PrivateJwkParams {
    fn drop(&mut self) {
        match self {
            PrivateJwkParams::Ec { d, .. } | PrivateJwkParams::Okp { d, .. } => d.zeroize(),
            PrivateJwkParams::Rsa {
                d,
                p,
                q,
                dp,
                dq,
                qi,
                ..
            } => {
                for secret in [d, p, q, dp, dq, qi] {
                    secret.zeroize();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_key_round_trips_as_flat_json() {
        let jwk = Jwk {
            params: JwkParams::Ec {
                crv: "P-256".into(),
                x: "xx".into(),
                y: "yy".into(),
            },
            kid: "k".into(),
            alg: "ES256".into(),
            use_: "sig".into(),
            x5c: None,
            x5t_s256: None,
        };
        let text = serde_json::to_string(&jwk).unwrap();
        assert_eq!(
            text,
            r#"{"kty":"EC","crv":"P-256","x":"xx","y":"yy","kid":"k","alg":"ES256","use":"sig"}"#
        );
        assert_eq!(serde_json::from_str::<Jwk>(&text).unwrap(), jwk);
    }

    #[test]
    fn thumbprint_input_matches_rfc7638_example_shape() {
        let params = JwkParams::Rsa {
            n: "0vx7".into(),
            e: "AQAB".into(),
        };
        assert_eq!(
            params.thumbprint_input(),
            r#"{"e":"AQAB","kty":"RSA","n":"0vx7"}"#
        );
    }

    #[test]
    fn private_jwk_debug_hides_key_material() {
        let jwk: PrivateJwk = serde_json::from_str(
            r#"{"kty":"OKP","crv":"Ed25519","x":"pub","d":"SECRET","kid":"k","alg":"EdDSA","use":"sig"}"#,
        )
        .unwrap();
        let debug = format!("{jwk:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("OKP") && debug.contains("EdDSA"), "{debug}");
        let json = serde_json::to_string(&jwk).unwrap();
        assert!(json.contains(r#""d":"SECRET""#), "{json}");
    }
}
