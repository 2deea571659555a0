use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use rustls_pki_types::PrivatePkcs8KeyDer;

use super::{KeyError, PrivateKey};

/// A self-signed certificate for a signing key, published as `x5c` / `x5t#S256`.
///
/// Verifiers do not need it (the JWK is the trust anchor), but some stacks only
/// accept keys that come with a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The DER encoding.
    pub der: Vec<u8>,
    /// The end of the validity period (`notAfter`).
    pub not_after: DateTime<Utc>,
}

impl Certificate {
    /// The `x5c` member: standard base64 (not base64url) of the DER, RFC 7517 §4.7.
    pub fn x5c(&self) -> String {
        STANDARD.encode(&self.der)
    }

    /// The `x5t#S256` member: base64url SHA-256 of the DER.
    pub fn x5t_s256(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.der);
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}

/// Makes a certificate for `key`, signed by the key itself, valid from
/// `not_before` to `not_after`, with the kid as its common name.
///
/// # Errors
/// [`KeyError::Certificate`] if rcgen cannot encode or sign it.
pub fn self_signed_certificate(
    key: &PrivateKey,
    kid: &str,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<Certificate, KeyError> {
    let failed = |err: rcgen::Error| KeyError::Certificate(err.to_string());
    let to_time = |at: DateTime<Utc>| {
        time::OffsetDateTime::from_unix_timestamp(at.timestamp())
            .map_err(|err| KeyError::Certificate(err.to_string()))
    };
    let pkcs8 = PrivatePkcs8KeyDer::from(key.pkcs8_der());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, key.algorithm().rcgen())
        .map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("jwkd signing key {kid}"));
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key_pair).map_err(failed)?;
    Ok(Certificate {
        der: cert.der().to_vec(),
        not_after: DateTime::from_timestamp(not_after.timestamp(), 0).unwrap_or(not_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Algorithm;

    #[test]
    fn every_algorithm_gets_a_certificate() {
        let now = Utc::now();
        for alg in Algorithm::ALL {
            let key = PrivateKey::generate(alg).unwrap();
            let cert = self_signed_certificate(
                &key,
                &key.thumbprint(),
                now,
                now + chrono::Duration::hours(1),
            )
            .unwrap();
            assert!(cert.der.len() > 100, "{alg}");
            assert_eq!(cert.x5t_s256().len(), 43);
        }
    }
}
