//! A parsed JWK Set: every usable key decoded and parsed by the crypto backend once,
//! when the set is loaded, so verifying a token is a map lookup and one signature check.
//!
//! Parsing is tolerant per key (RFC 7517 §5): a key this crate cannot or must not use is
//! skipped with a [`SkipReason`] and counted, and the rest of the set still works. One
//! Ed448 key or one encryption key in a set never takes verification down.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::JwksError;

/// A JWS algorithm this crate verifies. All are asymmetric: `none` and the HMAC
/// algorithms have no variant, so they cannot be allowed by mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// Ed25519 (RFC 8037).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048 to 8192-bit modulus.
    Rs256,
}

impl Algorithm {
    /// Every algorithm, in the order jwkd documents them.
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

    /// The algorithm with this exact `alg` name (case-sensitive, as RFC 7515 says).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "ES256" => Some(Algorithm::Es256),
            "ES384" => Some(Algorithm::Es384),
            "EdDSA" => Some(Algorithm::EdDsa),
            "RS256" => Some(Algorithm::Rs256),
            _ => None,
        }
    }

    pub(crate) fn bit(self) -> u8 {
        match self {
            Algorithm::Es256 => 1,
            Algorithm::Es384 => 2,
            Algorithm::EdDsa => 4,
            Algorithm::Rs256 => 8,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of `"HS256".parse::<Algorithm>()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownAlgorithm(pub String);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsupported algorithm {:?} (expected one of ES256, ES384, EdDSA, RS256)",
            self.0
        )
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Algorithm::from_name(name).ok_or_else(|| UnknownAlgorithm(name.to_owned()))
    }
}

/// Why a key of a fetched set was not loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The entry is not a JSON object, or a member has the wrong JSON type.
    Malformed(&'static str),
    /// `kty: oct`: a symmetric key has no place in a public key set, and verifying
    /// with it would be HMAC with a published secret.
    SymmetricKey,
    /// The key carries private members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`).
    /// A set that leaks private keys is not trusted key by key.
    PrivateMembers,
    /// `use` is not `sig`, or `key_ops` does not include `verify`.
    NotForSignatures,
    /// The key has no `kid`; tokens select keys by kid only.
    MissingKid,
    /// The key has no `alg`. The algorithm is taken from the key, so it must say.
    MissingAlgorithm,
    /// `alg` is not one this crate verifies (for example `HS256`, `PS256`, `ES512`).
    UnsupportedAlgorithm(String),
    /// `kty` is not one this crate knows (for example `AKP`).
    UnsupportedKeyType(String),
    /// `crv` is not the one the key's `alg` needs (for example `Ed448`, `P-521`).
    UnsupportedCurve(String),
    /// `kty` does not fit `alg` (for example an RSA key with `alg: ES256`).
    KeyTypeMismatch,
    /// The key material does not decode or is rejected by the crypto backend
    /// (not strict base64url, wrong coordinate length, point not on the curve).
    InvalidKeyMaterial,
    /// An RSA modulus below 2048 bits (or above 8192).
    WeakRsaKey {
        /// The modulus length.
        bits: usize,
    },
    /// Another, different usable key in the set has the same `kid`. Both are dropped
    /// and a token with that kid fails with [`Error::AmbiguousKid`](crate::Error::AmbiguousKid).
    DuplicateKid,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Malformed(what) => write!(f, "malformed {what}"),
            SkipReason::SymmetricKey => f.write_str("symmetric (oct) key"),
            SkipReason::PrivateMembers => f.write_str("carries private key members"),
            SkipReason::NotForSignatures => f.write_str("not a signature key (use/key_ops)"),
            SkipReason::MissingKid => f.write_str("no kid"),
            SkipReason::MissingAlgorithm => f.write_str("no alg"),
            SkipReason::UnsupportedAlgorithm(alg) => write!(f, "unsupported alg {alg:?}"),
            SkipReason::UnsupportedKeyType(kty) => write!(f, "unsupported kty {kty:?}"),
            SkipReason::UnsupportedCurve(crv) => write!(f, "unsupported crv {crv:?}"),
            SkipReason::KeyTypeMismatch => f.write_str("kty does not fit alg"),
            SkipReason::InvalidKeyMaterial => f.write_str("invalid key material"),
            SkipReason::WeakRsaKey { bits } => write!(f, "RSA modulus of {bits} bits"),
            SkipReason::DuplicateKid => f.write_str("kid shared with a different key"),
        }
    }
}

/// One key of a fetched set that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in the set's `keys` array.
    pub index: usize,
    /// The key's `kid`, if it had a string one.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// A public key ready for verification: parsed once, used for every token.
pub(crate) struct VerifyingKey {
    pub(crate) alg: Algorithm,
    pub(crate) key: ParsedPublicKey,
}

pub(crate) enum Entry {
    Key(VerifyingKey),
    /// Several different keys share this kid.
    Ambiguous,
}

/// A parsed JWK Set: the usable keys by `kid`, and the keys that were skipped.
///
/// Built by [`RemoteJwks`](crate::RemoteJwks) on every fetch, or directly with
/// [`KeySet::from_json`] for a pinned set (a [`Verifier`](crate::Verifier) accepts either).
pub struct KeySet {
    keys: HashMap<Box<str>, Entry>,
    usable: usize,
    skipped: Vec<SkippedKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// The members that only a private key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

impl KeySet {
    /// Parses a JWK Set document, keeping every usable key and skipping the rest.
    ///
    /// # Errors
    /// [`JwksError::InvalidDocument`] if the document is not a JSON object with a `keys`
    /// array, [`JwksError::NoUsableKeys`] if no key in it is usable.
    pub fn from_json(document: &[u8]) -> Result<KeySet, JwksError> {
        let document: Value =
            serde_json::from_slice(document).map_err(|err| JwksError::InvalidDocument {
                reason: err.to_string(),
            })?;
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::InvalidDocument {
                reason: "no \"keys\" array".into(),
            });
        };
        let mut set = KeySet {
            keys: HashMap::with_capacity(entries.len()),
            usable: 0,
            skipped: Vec::new(),
        };
        // For each kid, the index of the key loaded under it, to name both keys of a duplicate.
        let mut loaded_index: HashMap<Box<str>, usize> = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
            let key = match parse_key(entry) {
                Ok(key) => key,
                Err(reason) => {
                    set.skipped.push(SkippedKey { index, kid, reason });
                    continue;
                }
            };
            // parse_key only succeeds for keys with a string kid.
            let Some(kid) = kid else { continue };
            match set.keys.entry(kid.clone().into_boxed_str()) {
                MapEntry::Vacant(slot) => {
                    slot.insert(Entry::Key(key));
                    loaded_index.insert(kid.into_boxed_str(), index);
                    set.usable += 1;
                }
                MapEntry::Occupied(mut slot) => {
                    let same = matches!(slot.get(), Entry::Key(existing)
                        if existing.alg == key.alg && existing.key.as_ref() == key.key.as_ref());
                    if same {
                        // The same key listed twice is harmless.
                        continue;
                    }
                    if let Entry::Key(_) = slot.get() {
                        set.usable -= 1;
                        let first = loaded_index.get(kid.as_str()).copied().unwrap_or(index);
                        set.skipped.push(SkippedKey {
                            index: first,
                            kid: Some(kid.clone()),
                            reason: SkipReason::DuplicateKid,
                        });
                        slot.insert(Entry::Ambiguous);
                    }
                    set.skipped.push(SkippedKey {
                        index,
                        kid: Some(kid),
                        reason: SkipReason::DuplicateKid,
                    });
                }
            }
        }
        set.skipped.sort_by_key(|skipped| skipped.index);
        if set.usable == 0 {
            return Err(JwksError::NoUsableKeys {
                skipped: set.skipped.len(),
            });
        }
        Ok(set)
    }

    /// The number of usable keys.
    pub fn len(&self) -> usize {
        self.usable
    }

    /// True if no key is usable (never the case for a set built by [`KeySet::from_json`]).
    pub fn is_empty(&self) -> bool {
        self.usable == 0
    }

    /// The kids of the usable keys, in no particular order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|(kid, entry)| match entry {
            Entry::Key(_) => Some(&**kid),
            Entry::Ambiguous => None,
        })
    }

    /// The algorithm of the usable key with this kid.
    pub fn algorithm(&self, kid: &str) -> Option<Algorithm> {
        match self.keys.get(kid) {
            Some(Entry::Key(key)) => Some(key.alg),
            _ => None,
        }
    }

    /// The keys that were not loaded, in document order.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&Entry> {
        self.keys.get(kid)
    }
}

fn parse_key(entry: &Value) -> Result<VerifyingKey, SkipReason> {
    let Some(object) = entry.as_object() else {
        return Err(SkipReason::Malformed("key (not an object)"));
    };
    let kty = string_member(object, "kty")?.ok_or(SkipReason::Malformed("kty"))?;
    if kty == "oct" {
        return Err(SkipReason::SymmetricKey);
    }
    if PRIVATE_MEMBERS
        .iter()
        .any(|member| object.contains_key(*member))
    {
        return Err(SkipReason::PrivateMembers);
    }
    if let Some(usage) = string_member(object, "use")?
        && usage != "sig"
    {
        return Err(SkipReason::NotForSignatures);
    }
    if let Some(ops) = object.get("key_ops") {
        let ops = ops.as_array().ok_or(SkipReason::Malformed("key_ops"))?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Err(SkipReason::NotForSignatures);
        }
    }
    if !matches!(kty, "EC" | "OKP" | "RSA") {
        return Err(SkipReason::UnsupportedKeyType(kty.to_owned()));
    }
    string_member(object, "kid")?.ok_or(SkipReason::MissingKid)?;
    let alg_name = string_member(object, "alg")?.ok_or(SkipReason::MissingAlgorithm)?;
    let alg = Algorithm::from_name(alg_name)
        .ok_or_else(|| SkipReason::UnsupportedAlgorithm(alg_name.to_owned()))?;

    let key = match alg {
        Algorithm::Es256 => ec_key(
            object,
            kty,
            "P-256",
            32,
            &signature::ECDSA_P256_SHA256_FIXED,
        )?,
        Algorithm::Es384 => ec_key(
            object,
            kty,
            "P-384",
            48,
            &signature::ECDSA_P384_SHA384_FIXED,
        )?,
        Algorithm::EdDsa => {
            if kty != "OKP" {
                return Err(SkipReason::KeyTypeMismatch);
            }
            let crv = string_member(object, "crv")?.ok_or(SkipReason::Malformed("crv"))?;
            if crv != "Ed25519" {
                return Err(SkipReason::UnsupportedCurve(crv.to_owned()));
            }
            let x = decode_member(object, "x")?;
            if x.len() != 32 {
                return Err(SkipReason::InvalidKeyMaterial);
            }
            ParsedPublicKey::new(&signature::ED25519, &x)
                .map_err(|_| SkipReason::InvalidKeyMaterial)?
        }
        Algorithm::Rs256 => {
            if kty != "RSA" {
                return Err(SkipReason::KeyTypeMismatch);
            }
            let n = decode_member(object, "n")?;
            let e = decode_member(object, "e")?;
            // JWK integers have no leading zero octets (RFC 7518 §6.3.1.1).
            let Some(&first) = n.first() else {
                return Err(SkipReason::InvalidKeyMaterial);
            };
            if first == 0 {
                return Err(SkipReason::InvalidKeyMaterial);
            }
            let bits = n.len() * 8 - first.leading_zeros() as usize;
            if !(2048..=8192).contains(&bits) {
                return Err(SkipReason::WeakRsaKey { bits });
            }
            RsaPublicKeyComponents { n: &n, e: &e }
                .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                .map_err(|_| SkipReason::InvalidKeyMaterial)?
        }
    };
    Ok(VerifyingKey { alg, key })
}

fn ec_key(
    object: &Map<String, Value>,
    kty: &str,
    curve: &str,
    coordinate_len: usize,
    algorithm: &'static dyn VerificationAlgorithm,
) -> Result<ParsedPublicKey, SkipReason> {
    if kty != "EC" {
        return Err(SkipReason::KeyTypeMismatch);
    }
    let crv = string_member(object, "crv")?.ok_or(SkipReason::Malformed("crv"))?;
    if crv != curve {
        return Err(SkipReason::UnsupportedCurve(crv.to_owned()));
    }
    let x = decode_member(object, "x")?;
    let y = decode_member(object, "y")?;
    if x.len() != coordinate_len || y.len() != coordinate_len {
        return Err(SkipReason::InvalidKeyMaterial);
    }
    // An uncompressed SEC1 point; the backend checks that it is on the curve.
    let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    ParsedPublicKey::new(algorithm, &point).map_err(|_| SkipReason::InvalidKeyMaterial)
}

/// A member that must be a string if present.
fn string_member<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, SkipReason> {
    match object.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(SkipReason::Malformed(name)),
    }
}

fn decode_member(object: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, SkipReason> {
    let text = string_member(object, name)?.ok_or(SkipReason::InvalidKeyMaterial)?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| SkipReason::InvalidKeyMaterial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_reject_symmetric() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.name().parse::<Algorithm>(), Ok(alg));
        }
        for name in ["none", "HS256", "es256", "PS256", ""] {
            assert!(name.parse::<Algorithm>().is_err(), "{name}");
        }
    }

    #[test]
    fn document_without_keys_is_invalid() {
        assert!(matches!(
            KeySet::from_json(br#"{"nokeys":[]}"#),
            Err(JwksError::InvalidDocument { .. })
        ));
        assert!(matches!(
            KeySet::from_json(b"not json"),
            Err(JwksError::InvalidDocument { .. })
        ));
        assert_eq!(
            KeySet::from_json(br#"{"keys":[]}"#).err(),
            Some(JwksError::NoUsableKeys { skipped: 0 })
        );
    }

    #[test]
    fn every_unusable_key_gets_its_reason() {
        let cases: &[(&str, SkipReason)] = &[
            ("5", SkipReason::Malformed("key (not an object)")),
            (
                r#"{"kty":"oct","k":"c2VjcmV0","kid":"a","alg":"HS256"}"#,
                SkipReason::SymmetricKey,
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA","kid":"b","alg":"ES256"}"#,
                SkipReason::PrivateMembers,
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"c","alg":"ES256","use":"enc"}"#,
                SkipReason::NotForSignatures,
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"c","alg":"ES256","key_ops":["sign"]}"#,
                SkipReason::NotForSignatures,
            ),
            (
                r#"{"kty":"AKP","kid":"d","alg":"ML-DSA-65"}"#,
                SkipReason::UnsupportedKeyType("AKP".into()),
            ),
            (
                r#"{"kty":"OKP","crv":"Ed448","x":"AA","kid":"e","alg":"EdDSA"}"#,
                SkipReason::UnsupportedCurve("Ed448".into()),
            ),
            (
                r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA","kid":"e","alg":"ES256"}"#,
                SkipReason::UnsupportedCurve("P-521".into()),
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"f","alg":"RS256"}"#,
                SkipReason::KeyTypeMismatch,
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"f","alg":"PS256"}"#,
                SkipReason::UnsupportedAlgorithm("PS256".into()),
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"g"}"#,
                SkipReason::MissingAlgorithm,
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","alg":"ES256"}"#,
                SkipReason::MissingKid,
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":7,"alg":"ES256"}"#,
                SkipReason::Malformed("kid"),
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"h","alg":"ES256"}"#,
                SkipReason::InvalidKeyMaterial,
            ),
            (
                r#"{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"j","alg":"RS256"}"#,
                SkipReason::WeakRsaKey { bits: 17 },
            ),
        ];
        for (json, expected) in cases {
            let entry: Value = serde_json::from_str(json).unwrap();
            let got = parse_key(&entry).err();
            assert_eq!(got.as_ref(), Some(expected), "{json}");
        }
    }
}
