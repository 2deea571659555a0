//! The keyset: every key jwkd holds, with the absolute times that decide its state.
//!
//! This is also the stored document (CONTRACT §5): `{"format": 1, "keys": [..]}`.
//! Decoding checks what can be checked without a clock: the format number, that
//! every private key parses for its algorithm, that each `kid` is the thumbprint of
//! its key, and that no kid appears twice. A document that fails is corrupt, never
//! repaired.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use jwkd_client::jwk::{Jwk, JwkParams, JwkSet};
use serde::{Deserialize, Serialize};

use crate::keys::{Algorithm, Certificate, PrivateKey};

/// Who holds a key's private half: jwkd (in the stored document) or AWS KMS
/// (the document holds only where the key is and its public half).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyMaterial {
    /// The private key itself (`keys.custody = "local"`).
    Local(PrivateKey),
    /// A key held in KMS (`keys.custody = "kms"`): no process reads it.
    Kms {
        /// Its ARN.
        arn: String,
        /// The public JWK parameters, as `GetPublicKey` gave them.
        public: JwkParams,
    },
}

impl KeyMaterial {
    /// The public JWK parameters.
    pub fn public_params(&self) -> &JwkParams {
        match self {
            KeyMaterial::Local(key) => key.public_params(),
            KeyMaterial::Kms { public, .. } => public,
        }
    }

    /// The private key, when jwkd holds it.
    pub fn local(&self) -> Option<&PrivateKey> {
        match self {
            KeyMaterial::Local(key) => Some(key),
            KeyMaterial::Kms { .. } => None,
        }
    }

    /// The KMS key ARN, when KMS holds it.
    pub fn kms_arn(&self) -> Option<&str> {
        match self {
            KeyMaterial::Local(_) => None,
            KeyMaterial::Kms { arn, .. } => Some(arn),
        }
    }
}

/// The only document format this version reads and writes.
pub const FORMAT: u32 = 1;

/// One key and its timeline (CONTRACT §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// Algorithm, which is also the key's family.
    pub alg: Algorithm,
    /// When the key was made; it is published from the moment it is stored.
    pub created_at: DateTime<Utc>,
    /// When it starts signing.
    pub activates_at: DateTime<Utc>,
    /// When it stops signing: the successor's `activates_at`. `None` while the key
    /// has no successor, in which case it keeps signing once current.
    pub deactivates_at: Option<DateTime<Utc>>,
    /// When it leaves the JWKS: `deactivates_at + max_token_lifetime + clock_skew`.
    pub expires_at: Option<DateTime<Utc>>,
    /// Set by an emergency revocation: the key is withdrawn at once.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The private key, or where KMS holds it.
    pub key: KeyMaterial,
    /// The self-signed certificate, when `keys.x5c` is on.
    pub certificate: Option<Certificate>,
}

impl KeyRecord {
    /// A key just made: published from `created_at`, signing from `activates_at`,
    /// with no end yet (the timeline sets that when it plans the successor).
    pub fn made(
        kid: String,
        alg: Algorithm,
        created_at: DateTime<Utc>,
        activates_at: DateTime<Utc>,
        key: KeyMaterial,
        certificate: Option<Certificate>,
    ) -> KeyRecord {
        KeyRecord {
            kid,
            alg,
            created_at,
            activates_at,
            deactivates_at: None,
            expires_at: None,
            revoked_at: None,
            key,
            certificate,
        }
    }

    /// The public JWK as published in the JWKS.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            params: self.key.public_params().clone(),
            kid: self.kid.clone(),
            alg: self.alg.name().to_owned(),
            use_: "sig".to_owned(),
            x5c: self.certificate.as_ref().map(|cert| vec![cert.x5c()]),
            x5t_s256: self.certificate.as_ref().map(Certificate::x5t_s256),
        }
    }
}

/// All keys, of every family, in creation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keyset {
    /// The keys.
    pub keys: Vec<KeyRecord>,
}

impl Keyset {
    /// The key with this kid.
    pub fn get(&self, kid: &str) -> Option<&KeyRecord> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    /// The JWK Set of the given keys, in the order given.
    pub fn jwk_set<'a>(keys: impl IntoIterator<Item = &'a KeyRecord>) -> JwkSet {
        JwkSet {
            keys: keys.into_iter().map(KeyRecord::public_jwk).collect(),
        }
    }

    /// Encodes the stored document.
    pub fn to_document(&self) -> Vec<u8> {
        let document = Document {
            format: FORMAT,
            keys: self.keys.iter().map(StoredKey::from).collect(),
        };
        // Serializing plain structs of strings and options cannot fail.
        let mut bytes = serde_json::to_vec_pretty(&document).expect("keyset serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Decodes and checks a stored document.
    ///
    /// # Errors
    /// A one-line reason when the bytes are not a valid format-1 keyset.
    pub fn from_document(bytes: &[u8]) -> Result<Keyset, String> {
        let document = Document::parse(bytes)?;
        let mut keys: Vec<KeyRecord> = Vec::with_capacity(document.keys.len());
        for (key_idx, stored) in document.keys.into_iter().enumerate() {
            let kid = stored.kid.clone();
            let key = stored
                .into_record()
                .map_err(|reason| format!("key {key_idx} ({kid}): {reason}"))?;
            if keys.iter().any(|other| other.kid == key.kid) {
                return Err(format!("key {key_idx}: duplicate kid {}", key.kid));
            }
            keys.push(key);
        }
        Ok(Keyset { keys })
    }
}

/// What `jwkd repair` would do to a stored document that does not load.
#[derive(Debug)]
pub struct Repair {
    /// The keyset after the fixes: it loads.
    pub keyset: Keyset,
    /// One line per field changed, naming the key and the field.
    pub fixes: Vec<String>,
}

/// Repairs what makes a stored document fail the loader's order checks, and
/// nothing else: an `activates_at` before `created_at` is set to `created_at`
/// (the key cannot have signed before it existed; its state from then on is
/// unchanged), an `expires_at` before `deactivates_at` becomes
/// `deactivates_at + retention` (kept published longer, never shorter), and a
/// second entry for one kid (the same key: the kid is its thumbprint) is merged
/// into one that stays published as long as either. No key is dropped.
///
/// # Errors
/// When the document cannot be read at all, or a key is wrong in a way jwkd
/// cannot decide (a kid that is not its key's thumbprint, a key that does not
/// parse): the reasons, one per key.
pub fn repair_document(bytes: &[u8], retention: chrono::Duration) -> Result<Repair, String> {
    let document = Document::parse(bytes)?;
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut fixes = Vec::new();
    let mut refused = Vec::new();
    let mut keys: Vec<KeyRecord> = Vec::new();
    for (key_idx, mut stored) in document.keys.into_iter().enumerate() {
        let name = format!("key {key_idx} ({})", stored.kid);
        if stored.activates_at < stored.created_at {
            fixes.push(format!(
                "{name}: activates_at {} is before created_at {}: set to created_at",
                at(stored.activates_at),
                at(stored.created_at)
            ));
            stored.activates_at = stored.created_at;
        }
        if let (Some(deactivates_at), Some(expires_at)) = (stored.deactivates_at, stored.expires_at)
            && expires_at < deactivates_at
        {
            let fixed = deactivates_at + retention;
            fixes.push(format!(
                "{name}: expires_at {} is before deactivates_at {}: set to deactivates_at + \
                 max_token_lifetime + clock_skew = {}",
                at(expires_at),
                at(deactivates_at),
                at(fixed)
            ));
            stored.expires_at = Some(fixed);
        }
        let record = match stored.into_record() {
            Ok(record) => record,
            Err(reason) => {
                refused.push(format!("{name}: {reason}"));
                continue;
            }
        };
        match keys.iter_mut().find(|key| key.kid == record.kid) {
            Some(first) => {
                fixes.push(format!(
                    "{name}: a second entry for this kid: merged into the first, published \
                     as long as the longer of the two"
                ));
                let lasts_longer = match (record.expires_at, first.expires_at) {
                    (None, Some(_)) => true,
                    (Some(second), Some(first)) => second > first,
                    (_, None) => false,
                };
                if lasts_longer {
                    *first = record;
                }
            }
            None => keys.push(record),
        }
    }
    if !refused.is_empty() {
        return Err(format!(
            "{}; jwkd cannot tell what is right there and changes nothing: restore the \
             document from a backup",
            refused.join("; ")
        ));
    }
    Ok(Repair {
        keyset: Keyset { keys },
        fixes,
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: u32,
    keys: Vec<StoredKey>,
}

impl Document {
    /// The JSON and the format number; the keys are checked by the caller.
    fn parse(bytes: &[u8]) -> Result<Document, String> {
        let document: Document =
            serde_json::from_slice(bytes).map_err(|err| format!("not a keyset document: {err}"))?;
        if document.format != FORMAT {
            return Err(format!(
                "unsupported format {} (this jwkd reads format {FORMAT})",
                document.format
            ));
        }
        Ok(document)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    kid: String,
    alg: Algorithm,
    created_at: DateTime<Utc>,
    activates_at: DateTime<Utc>,
    deactivates_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<DateTime<Utc>>,
    /// PKCS#8 DER, standard base64 (a key jwkd holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    /// The ARN of a key KMS holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kms_key_arn: Option<String>,
    /// The public JWK of a key KMS holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_jwk: Option<JwkParams>,
    /// DER, standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_not_after: Option<DateTime<Utc>>,
}

impl From<&KeyRecord> for StoredKey {
    fn from(key: &KeyRecord) -> Self {
        StoredKey {
            kid: key.kid.clone(),
            alg: key.alg,
            created_at: key.created_at,
            activates_at: key.activates_at,
            deactivates_at: key.deactivates_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            private_key: key.key.local().map(|key| STANDARD.encode(key.pkcs8_der())),
            kms_key_arn: key.key.kms_arn().map(str::to_owned),
            public_jwk: match &key.key {
                KeyMaterial::Local(_) => None,
                KeyMaterial::Kms { public, .. } => Some(public.clone()),
            },
            certificate: key
                .certificate
                .as_ref()
                .map(|cert| STANDARD.encode(&cert.der)),
            certificate_not_after: key.certificate.as_ref().map(|cert| cert.not_after),
        }
    }
}

impl StoredKey {
    fn into_record(self) -> Result<KeyRecord, String> {
        let key = match (self.private_key, self.kms_key_arn, self.public_jwk) {
            (Some(private_key), None, None) => {
                let der = STANDARD
                    .decode(&private_key)
                    .map_err(|err| format!("private_key is not base64: {err}"))?;
                KeyMaterial::Local(
                    PrivateKey::from_pkcs8(self.alg, der).map_err(|err| err.to_string())?,
                )
            }
            (None, Some(arn), Some(public)) => {
                crate::keys::der::check_public(self.alg, &public)
                    .map_err(|reason| format!("public_jwk: {reason}"))?;
                if arn.is_empty() {
                    return Err("kms_key_arn is empty".into());
                }
                KeyMaterial::Kms { arn, public }
            }
            (None, None, None) => return Err("no private_key and no kms_key_arn".into()),
            _ => {
                return Err(
                    "a key has either private_key, or kms_key_arn and public_jwk, never both"
                        .into(),
                );
            }
        };
        if crate::keys::thumbprint(key.public_params()) != self.kid {
            return Err("kid is not the thumbprint of the stored key".into());
        }
        let certificate = match (self.certificate, self.certificate_not_after) {
            (None, _) => None,
            (Some(der), Some(not_after)) => Some(Certificate {
                der: STANDARD
                    .decode(der)
                    .map_err(|err| format!("certificate is not base64: {err}"))?,
                not_after,
            }),
            (Some(_), None) => return Err("certificate without certificate_not_after".into()),
        };
        if self.activates_at < self.created_at {
            return Err("activates_at is before created_at".into());
        }
        if let (Some(deactivates_at), Some(expires_at)) = (self.deactivates_at, self.expires_at)
            && expires_at < deactivates_at
        {
            return Err("expires_at is before deactivates_at".into());
        }
        Ok(KeyRecord {
            kid: self.kid,
            alg: self.alg,
            created_at: self.created_at,
            activates_at: self.activates_at,
            deactivates_at: self.deactivates_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            key,
            certificate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::self_signed_certificate;

    fn record(alg: Algorithm) -> KeyRecord {
        let key = PrivateKey::generate(alg).unwrap();
        let now = Utc::now();
        let kid = key.thumbprint();
        let certificate = Some(
            self_signed_certificate(&key, &kid, now, now + chrono::Duration::hours(2)).unwrap(),
        );
        KeyRecord::made(
            kid,
            alg,
            now,
            now + chrono::Duration::minutes(5),
            KeyMaterial::Local(key),
            certificate,
        )
    }

    #[test]
    fn document_round_trips() {
        let keyset = Keyset {
            keys: Algorithm::ALL.into_iter().map(record).collect(),
        };
        let bytes = keyset.to_document();
        assert_eq!(Keyset::from_document(&bytes).unwrap(), keyset);
    }

    fn kms_record(alg: Algorithm) -> KeyRecord {
        let public = PrivateKey::generate(alg).unwrap().public_params().clone();
        let now = crate::config::test_time();
        KeyRecord::made(
            crate::keys::thumbprint(&public),
            alg,
            now,
            now,
            KeyMaterial::Kms {
                arn: format!("arn:aws:kms:eu-west-1:123456789012:key/{alg}"),
                public,
            },
            None,
        )
    }

    #[test]
    fn a_kms_key_is_stored_as_its_arn_and_public_jwk_only() {
        let keyset = Keyset {
            keys: vec![kms_record(Algorithm::Es256), kms_record(Algorithm::Rs256)],
        };
        let bytes = keyset.to_document();
        assert_eq!(Keyset::from_document(&bytes).unwrap(), keyset);
        let document: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let stored = &document["keys"][0];
        assert!(stored.get("private_key").is_none(), "{stored}");
        assert!(stored["public_jwk"].get("d").is_none(), "{stored}");
        assert_eq!(stored["public_jwk"]["crv"], "P-256");
        assert!(
            stored["kms_key_arn"]
                .as_str()
                .unwrap()
                .ends_with("key/ES256")
        );
        assert_eq!(
            keyset.keys[1].public_jwk().params,
            *keyset.keys[1].key.public_params()
        );
    }

    #[test]
    fn a_kms_key_that_does_not_add_up_is_corrupt() {
        let keyset = Keyset {
            keys: vec![kms_record(Algorithm::Es256)],
        };
        let document: serde_json::Value = serde_json::from_slice(&keyset.to_document()).unwrap();
        let local = record(Algorithm::Es256);
        let private_key = STANDARD.encode(local.key.local().unwrap().pkcs8_der());
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: [(&str, Edit); 6] = [
            (
                "never both",
                Box::new(move |key| key["private_key"] = private_key.clone().into()),
            ),
            (
                "no private_key and no kms_key_arn",
                Box::new(|key| {
                    key.as_object_mut().unwrap().remove("kms_key_arn");
                    key.as_object_mut().unwrap().remove("public_jwk");
                }),
            ),
            (
                "never both",
                Box::new(|key| {
                    key.as_object_mut().unwrap().remove("public_jwk");
                }),
            ),
            (
                "kms_key_arn is empty",
                Box::new(|key| key["kms_key_arn"] = "".into()),
            ),
            (
                "public_jwk: curve \"P-384\", ES256 needs P-256",
                Box::new(|key| {
                    key["public_jwk"]["crv"] = "P-384".into();
                }),
            ),
            (
                "kid is not the thumbprint",
                Box::new(|key| {
                    let x = key["public_jwk"]["y"].clone();
                    key["public_jwk"]["x"] = x;
                }),
            ),
        ];
        for (expected, change) in cases {
            let mut document = document.clone();
            change(&mut document["keys"][0]);
            let err = Keyset::from_document(&serde_json::to_vec(&document).unwrap()).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn wrong_kid_is_corrupt() {
        let keyset = Keyset {
            keys: vec![record(Algorithm::Es256)],
        };
        let text = String::from_utf8(keyset.to_document()).unwrap();
        let text = text.replace(&keyset.keys[0].kid, "not-the-thumbprint");
        let err = Keyset::from_document(text.as_bytes()).unwrap_err();
        assert!(err.contains("kid is not the thumbprint"), "{err}");
    }

    #[test]
    fn truncated_and_foreign_documents_are_rejected() {
        let keyset = Keyset {
            keys: vec![record(Algorithm::Es256)],
        };
        let bytes = keyset.to_document();
        let err = Keyset::from_document(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(err.starts_with("not a keyset document"), "{err}");
        let err = Keyset::from_document(br#"{"format": 2, "keys": []}"#).unwrap_err();
        assert!(err.contains("unsupported format 2"), "{err}");
    }

    #[test]
    fn published_jwk_has_no_private_member() {
        let key = record(Algorithm::Rs256);
        let json = serde_json::to_value(key.public_jwk()).unwrap();
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(json.get(private).is_none(), "{private} in {json}");
        }
        assert_eq!(json["kty"], "RSA");
        assert!(json["x5c"][0].as_str().unwrap().len() > 100);
    }

    #[test]
    fn repair_fixes_only_what_does_not_load_and_drops_no_key() {
        let mut first = record(Algorithm::Es256);
        first.deactivates_at = Some(first.activates_at + chrono::Duration::hours(1));
        first.expires_at = first.deactivates_at;
        let second = record(Algorithm::EdDsa);
        let keyset = Keyset {
            keys: vec![first.clone(), second.clone()],
        };
        let mut document: serde_json::Value =
            serde_json::from_slice(&keyset.to_document()).unwrap();
        // Key 0 activates before it was made; key 1's expiry is before its end;
        // key 2 is key 1 again, published longer.
        let activates = (first.created_at - chrono::Duration::seconds(10))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        document["keys"][0]["activates_at"] = activates.into();
        let mut again = document["keys"][1].clone();
        let end = second.activates_at + chrono::Duration::hours(2);
        document["keys"][1]["deactivates_at"] = end.to_rfc3339().into();
        document["keys"][1]["expires_at"] = (end - chrono::Duration::hours(1)).to_rfc3339().into();
        again["deactivates_at"] = end.to_rfc3339().into();
        again["expires_at"] = (end + chrono::Duration::hours(5)).to_rfc3339().into();
        document["keys"].as_array_mut().unwrap().push(again);
        let bytes = serde_json::to_vec(&document).unwrap();
        assert!(Keyset::from_document(&bytes).is_err());

        let repair = repair_document(&bytes, chrono::Duration::hours(1)).unwrap();
        assert_eq!(repair.fixes.len(), 3, "{:#?}", repair.fixes);
        assert!(repair.fixes[0].starts_with(&format!("key 0 ({}): activates_at", first.kid)));
        assert!(
            repair.fixes[1].contains("expires_at"),
            "{}",
            repair.fixes[1]
        );
        assert!(repair.fixes[2].starts_with("key 2"), "{}", repair.fixes[2]);
        let repaired = Keyset::from_document(&repair.keyset.to_document()).unwrap();
        assert_eq!(repaired.keys.len(), 2);
        assert_eq!(repaired.keys[0].activates_at, first.created_at);
        assert_eq!(
            repaired.keys[1].expires_at,
            Some(end + chrono::Duration::hours(5)),
            "the entry published longer is kept"
        );

        let text = String::from_utf8(bytes)
            .unwrap()
            .replace(&second.kid, "not-the-thumbprint");
        let err = repair_document(text.as_bytes(), chrono::Duration::hours(1)).unwrap_err();
        assert!(
            err.contains("(not-the-thumbprint): kid is not the thumbprint")
                && err.contains("changes nothing"),
            "{err}"
        );
    }
}
