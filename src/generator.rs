//! The [`KeyMaker`](crate::timeline::KeyMaker) that makes real keys: the
//! timeline decides when a key is made and with which times, the generator
//! makes it (an aws-lc-rs key, its thumbprint kid and, when `keys.x5c` is on,
//! its certificate).
//!
//! It needs `keys`, `keyset` and `timeline`, and none of them needs it: the
//! operation's `Planner` hands it to the timeline.

use chrono::{DateTime, Utc};

use crate::keys::{Algorithm, PrivateKey};
use crate::keyset::{KeyMaterial, KeyRecord};

/// Makes real keys for the timeline: aws-lc-rs keys, with an rcgen certificate
/// when `x5c` is on.
#[derive(Clone, Copy, Debug)]
pub struct Generator {
    /// Make certificates.
    pub x5c: bool,
    /// Certificates start this long before the key is made, for skewed verifier clocks.
    pub clock_skew: chrono::Duration,
}

impl crate::timeline::KeyMaker for Generator {
    type Error = crate::keys::KeyError;

    fn make(
        &mut self,
        alg: Algorithm,
        created_at: DateTime<Utc>,
        activates_at: DateTime<Utc>,
        cert_not_after: DateTime<Utc>,
    ) -> Result<KeyRecord, Self::Error> {
        let key = PrivateKey::generate(alg)?;
        let kid = key.thumbprint();
        let certificate = if self.x5c {
            Some(crate::keys::self_signed_certificate(
                &key,
                &kid,
                created_at - self.clock_skew,
                cert_not_after,
            )?)
        } else {
            None
        };
        Ok(KeyRecord::made(
            kid,
            alg,
            created_at,
            activates_at,
            KeyMaterial::Local(key),
            certificate,
        ))
    }

    fn recertify(
        &mut self,
        key: &mut KeyRecord,
        not_after: DateTime<Utc>,
    ) -> Result<(), Self::Error> {
        if let (Some(_), KeyMaterial::Local(private)) = (&key.certificate, &key.key) {
            key.certificate = Some(crate::keys::self_signed_certificate(
                private,
                &key.kid,
                key.created_at - self.clock_skew,
                not_after,
            )?);
        }
        Ok(())
    }
}
