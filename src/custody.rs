//! Who holds an issuer's private keys (`keys.custody`), and what that changes
//! for the writers and the signers.
//!
//! - **Local**: jwkd makes each key (the [`Generator`](crate::generator)) and
//!   keeps it in the keyset document; a [`TokenSigner::Local`] signs in process.
//! - **KMS**: each key is a fresh AWS KMS key. The timeline stays pure: the
//!   writer ([`crate::operation::update_store`]) decides with the keys it has
//!   made so far ([`PoolMaker`]), makes the ones the decision still lacks
//!   ([`KmsCustody::make_key`]) and decides again. After the write it retires
//!   what the change made and did not store (the loser of a race between
//!   replicas), and what it took out of the keyset (expired or revoked keys):
//!   [`KmsCustody::settle`]. What a crash left behind, [`KmsCustody::sweep`]
//!   finds by its tags. A [`TokenSigner::Kms`] signs with KMS `Sign`; the
//!   document holds each key's ARN and public JWK, never private material.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jwkd_client::jwk::JwkParams;
use serde_json::{Map, Value};

use crate::config::{Config, Custody};
use crate::keys::{Algorithm, KeyError, Signer};
use crate::keyset::{KeyMaterial, KeyRecord, Keyset};
use crate::kms::{Kms, KmsError, KmsKey, Owner};

/// A key KMS made that no stored keyset names, nor any writer still holds, is
/// at least this old: younger ones may be in a replica's change in flight
/// (a change takes at most its store retries, minutes).
pub const SWEEP_GRACE: chrono::Duration = chrono::Duration::hours(1);

/// How often a daemon looks for keys to sweep (and once at start).
pub const SWEEP_INTERVAL: chrono::Duration = chrono::Duration::hours(1);

/// How long one change may spend making its KMS keys, and then retiring what
/// it let go of: with the store's own deadlines, a pass stays well inside the
/// systemd watchdog's 60 s.
pub const MAKE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);
/// See [`MAKE_DEADLINE`].
pub const SETTLE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// At most this many KMS keys are made for one change: a decision needs at
/// most a current and a next key per family.
const MAX_KEYS_PER_CHANGE: usize = 2 * Algorithm::ALL.len();

/// Who holds an issuer's private keys.
#[derive(Clone, Debug, Default)]
pub enum Custodian {
    /// jwkd, in the keyset document.
    #[default]
    Local,
    /// AWS KMS.
    Kms(Arc<KmsCustody>),
}

/// The KMS custody of one issuer's keyset.
#[derive(Debug)]
pub struct KmsCustody {
    kms: Kms,
    owner: Owner,
    /// Whether the last signature or probe failed; then `failure` says why.
    failing: AtomicBool,
    failure: Mutex<Option<String>>,
    /// When the last sweep began; `None` before the first.
    last_sweep: Mutex<Option<DateTime<Utc>>>,
    /// KMS keys this daemon made, and retired (disabled and scheduled for deletion).
    made: AtomicU64,
    retired: AtomicU64,
}

impl Custodian {
    /// The custodian `config` names for the keyset at `location`.
    ///
    /// # Errors
    /// When KMS custody is configured and no AWS region is found.
    pub async fn open(config: &Config, location: &str) -> Result<Custodian, KmsError> {
        match &config.keys.custody {
            Custody::Local => Ok(Custodian::Local),
            Custody::Kms {
                region,
                endpoint_url,
                signs_per_second,
            } => {
                let kms = shared_kms(region, endpoint_url, *signs_per_second).await?;
                Ok(Custodian::kms(kms, owner_of(config, location)))
            }
        }
    }

    /// KMS custody over `kms` of the keys tagged with `owner`.
    pub fn kms(kms: Kms, owner: Owner) -> Custodian {
        Custodian::Kms(Arc::new(KmsCustody {
            kms,
            owner,
            failing: AtomicBool::new(false),
            failure: Mutex::new(None),
            last_sweep: Mutex::new(None),
            made: AtomicU64::new(0),
            retired: AtomicU64::new(0),
        }))
    }

    /// The signer of `key`.
    ///
    /// # Errors
    /// When a local key does not parse, or the key is held where this
    /// custodian does not sign (a local key under KMS custody, or the reverse:
    /// the issuer's custody changed while its keyset still holds the other kind).
    pub fn signer(&self, key: &KeyRecord) -> Result<TokenSigner, String> {
        match (self, &key.key) {
            (Custodian::Local, KeyMaterial::Local(private)) => Signer::new(private, &key.kid)
                .map(TokenSigner::Local)
                .map_err(|err| err.to_string()),
            (Custodian::Kms(custody), KeyMaterial::Kms { arn, .. }) => {
                Ok(TokenSigner::Kms(KmsSigner {
                    custody: Arc::clone(custody),
                    arn: arn.clone(),
                    alg: key.alg,
                    access_token_header: header(key.alg, &key.kid, "at+jwt"),
                    jwt_header: header(key.alg, &key.kid, "JWT"),
                    kid: key.kid.clone(),
                }))
            }
            (Custodian::Local, KeyMaterial::Kms { .. }) => {
                Err("the key is held in KMS and keys.custody is \"local\"".into())
            }
            (Custodian::Kms(_), KeyMaterial::Local(_)) => {
                // Signing with it would keep a readable key in use under KMS custody.
                Err("the key is held locally and keys.custody is \"kms\"".into())
            }
        }
    }

    /// Why signing through KMS is failing, when it is: for `/readyz`.
    pub fn unavailable(&self) -> Option<String> {
        match self {
            Custodian::Local => None,
            Custodian::Kms(custody) => custody.failure(),
        }
    }

    /// The KMS series of `/metrics`; `None` for local custody.
    pub fn gauges(&self) -> Option<crate::metrics::KmsGauges> {
        match self {
            Custodian::Local => None,
            Custodian::Kms(custody) => {
                let (made, retired) = custody.counts();
                Some(crate::metrics::KmsGauges {
                    signing: !custody.failing.load(Ordering::Acquire),
                    made,
                    retired,
                })
            }
        }
    }

    /// Whether issuers may pull the private keys (`/v1/signing-keys`).
    pub fn exportable(&self) -> bool {
        matches!(self, Custodian::Local)
    }
}

/// The one KMS client of this process for `region` and `endpoint_url`: the
/// issuers under KMS custody share its bounds (calls in flight, signatures a
/// second), so more issuers are not more load on the account's quota.
async fn shared_kms(
    region: &Option<String>,
    endpoint_url: &Option<String>,
    signs_per_second: u32,
) -> Result<Kms, KmsError> {
    type Clients = std::collections::HashMap<(Option<String>, Option<String>, u32), Kms>;
    static CLIENTS: tokio::sync::Mutex<Option<Clients>> = tokio::sync::Mutex::const_new(None);
    let mut clients = CLIENTS.lock().await;
    let key = (region.clone(), endpoint_url.clone(), signs_per_second);
    if let Some(kms) = clients.get_or_insert_default().get(&key) {
        return Ok(kms.clone());
    }
    let kms = Kms::connect(region.as_deref(), endpoint_url.as_deref(), signs_per_second).await?;
    clients.get_or_insert_default().insert(key, kms.clone());
    Ok(kms)
}

/// The tags of the keys of `config`'s issuer with its keyset at `location`.
pub fn owner_of(config: &Config, location: &str) -> Owner {
    Owner {
        issuer: config
            .issuer
            .issuer
            .clone()
            .unwrap_or_else(|| format!("issuer {}", config.name)),
        keyset: location.to_owned(),
    }
}

/// The encoded JWS header `{"alg","kid","typ"}`, as the client crate's
/// `JwsSigner::header` writes it.
fn header(alg: Algorithm, kid: &str, typ: &str) -> String {
    let json = serde_json::json!({"alg": alg.name(), "kid": kid, "typ": typ});
    URL_SAFE_NO_PAD.encode(json.to_string())
}

/// Why a token was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignFailure {
    /// The local key failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// KMS failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
}

/// Signs tokens with one key, wherever it is held.
#[derive(Debug)]
pub enum TokenSigner {
    /// A key jwkd holds, parsed once.
    Local(Signer),
    /// A key KMS holds.
    Kms(KmsSigner),
}

/// Signs with one KMS key.
#[derive(Debug)]
pub struct KmsSigner {
    custody: Arc<KmsCustody>,
    arn: String,
    alg: Algorithm,
    kid: String,
    access_token_header: String,
    jwt_header: String,
}

impl TokenSigner {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            TokenSigner::Local(signer) => signer.algorithm(),
            TokenSigner::Kms(signer) => signer.alg,
        }
    }

    /// The kid of the key.
    pub fn kid(&self) -> &str {
        match self {
            TokenSigner::Local(signer) => signer.kid(),
            TokenSigner::Kms(signer) => &signer.kid,
        }
    }

    /// A compact JWS of `claims` with header `{"alg","kid","typ"}`, for the
    /// client `caller` (under KMS custody it waits for a slot within its share
    /// of `kms.signs_per_second`, see [`crate::kms::Pace`]).
    ///
    /// # Errors
    /// [`SignFailure`]: the local backend failed, or KMS did.
    pub async fn sign_jws(
        &self,
        typ: &str,
        claims: &Map<String, Value>,
        caller: &str,
    ) -> Result<String, SignFailure> {
        let signer = match self {
            TokenSigner::Local(signer) => return Ok(signer.sign_jws(typ, claims)?),
            TokenSigner::Kms(signer) => signer,
        };
        let header = match typ {
            "at+jwt" => signer.access_token_header.clone(),
            "JWT" => signer.jwt_header.clone(),
            other => header(signer.alg, &signer.kid, other),
        };
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let mut token = header;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signed = signer
            .custody
            .kms
            .sign(
                &signer.arn,
                signer.alg,
                token.as_bytes(),
                // Issuers on one region share its pace: a client is one of an issuer's.
                &format!("client {caller:?} of {}", signer.custody.owner.issuer),
            )
            .await;
        let signature = signer.custody.record(signed)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
}

impl KmsCustody {
    /// The KMS these keys are in.
    pub fn kms(&self) -> &Kms {
        &self.kms
    }

    /// Whose keys these are.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// How many KMS keys this custodian made, and how many it retired.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.made.load(Ordering::Relaxed),
            self.retired.load(Ordering::Relaxed),
        )
    }

    /// Retires `arn`, counting it.
    async fn retire(&self, arn: &str) -> Result<(), KmsError> {
        self.kms.retire(arn).await?;
        self.retired.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Notes the outcome of a signature or a probe: a failure makes the
    /// issuer unready until a later call succeeds.
    fn record<T>(&self, result: Result<T, KmsError>) -> Result<T, KmsError> {
        match &result {
            // Refused by jwkd's own pace before any call: KMS may be fine.
            Err(KmsError::Busy(_)) => {}
            Ok(_) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(issuer = %self.owner.issuer, "KMS signs again");
                }
            }
            Err(err) => {
                *self
                    .failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err.to_string());
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(issuer = %self.owner.issuer, %err, "KMS cannot sign");
                }
            }
        }
        result
    }

    /// While signing fails, asks KMS whether a current key of `keyset` can
    /// sign again (the rotator, each pass): an issuer nobody routes requests
    /// to while it is unready must still learn that KMS is back. One call,
    /// bounded by the SDK's deadline.
    pub async fn probe_if_failing(&self, keyset: &Keyset, now: DateTime<Utc>) {
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        let current = keyset.keys.iter().find_map(|key| {
            let current = crate::timeline::state_at(key, now) == crate::timeline::KeyState::Current;
            key.key.kms_arn().filter(|_| current)
        });
        if let Some(arn) = current {
            let probed = self.kms.probe(arn).await;
            let _ = self.record(probed);
        }
    }

    /// Makes a KMS key of family `alg` for a change.
    ///
    /// # Errors
    /// The KMS call's error.
    pub async fn make_key(&self, alg: Algorithm) -> Result<(Algorithm, KmsKey), KmsError> {
        let key = self.kms.create_key(alg, &self.owner).await?;
        self.made.fetch_add(1, Ordering::Relaxed);
        tracing::info!(kid = %key.kid, arn = %key.arn, %alg, "KMS key made");
        Ok((alg, key))
    }

    /// Retires the keys a change let go of: those it made and did not store,
    /// and those it took out of the keyset, within [`SETTLE_DEADLINE`] (a
    /// pass must not outlast the watchdog). A key not retired is logged; the
    /// sweep retires it later.
    pub async fn settle(&self, pool: &Pool, stored: Option<&Keyset>) {
        if tokio::time::timeout(SETTLE_DEADLINE, self.settle_now(pool, stored))
            .await
            .is_err()
        {
            tracing::warn!(
                "retiring KMS keys took over {}s; the sweep retires the rest",
                SETTLE_DEADLINE.as_secs()
            );
        }
    }

    async fn settle_now(&self, pool: &Pool, stored: Option<&Keyset>) {
        let mut arns: Vec<&str> = pool.released.iter().map(String::as_str).collect();
        match stored {
            Some(keyset) => arns.extend(
                pool.keys
                    .iter()
                    .filter(|(_, key)| keyset.get(&key.kid).is_none())
                    .map(|(_, key)| key.arn.as_str()),
            ),
            None if !pool.keys.is_empty() => {
                tracing::warn!(
                    keys = pool.keys.len(),
                    "the change may or may not have been stored: its unused KMS keys are left \
                     to the sweep"
                );
            }
            None => {}
        }
        for arn in arns {
            match self.retire(arn).await {
                Ok(()) => tracing::info!(%arn, "KMS key disabled and scheduled for deletion"),
                Err(err) => {
                    tracing::warn!(%arn, %err, "cannot retire a KMS key; the sweep will");
                }
            }
        }
    }

    /// Whether a sweep is due at `now` (once at start, then every
    /// [`SWEEP_INTERVAL`]); if so, marks it begun.
    pub fn sweep_due(&self, now: DateTime<Utc>) -> bool {
        let mut last = self
            .last_sweep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *last {
            Some(at) if now - at < SWEEP_INTERVAL => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    /// Retires the keys tagged as this keyset's that `keyset` (as stored) does
    /// not hold or holds revoked, and that are older than [`SWEEP_GRACE`] at
    /// `now`: keys a crash left between `CreateKey` and the store write, or
    /// between a write and the retirement. Returns the ARNs retired.
    ///
    /// # Errors
    /// When the keys cannot be listed. A key that cannot be retired is
    /// logged and left to the next sweep.
    pub async fn sweep(
        &self,
        keyset: &Keyset,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, KmsError> {
        let held = |arn: &str| {
            keyset
                .keys
                .iter()
                .any(|key| key.revoked_at.is_none() && key.key.kms_arn() == Some(arn))
        };
        let mut retired = Vec::new();
        for key in self.kms.keys_of(&self.owner).await? {
            let old_enough = key
                .created_at
                .is_some_and(|created_at| now - created_at >= SWEEP_GRACE);
            if held(&key.arn) || !old_enough {
                continue;
            }
            match self.retire(&key.arn).await {
                Ok(()) => {
                    tracing::info!(arn = %key.arn, "swept a KMS key no stored keyset holds");
                    retired.push(key.arn);
                }
                Err(err) => tracing::warn!(arn = %key.arn, %err, "cannot sweep a KMS key"),
            }
        }
        Ok(retired)
    }
}

/// The KMS keys one change has made, and the ones it took out of the keyset.
#[derive(Debug, Default)]
pub struct Pool {
    /// Made for this change, each with its family.
    pub keys: Vec<(Algorithm, KmsKey)>,
    /// The ARNs of the keys the stored change removed or revoked.
    pub released: Vec<String>,
}

impl Pool {
    /// Whether another key may be made for this change.
    pub fn has_room(&self, more: usize) -> bool {
        self.keys.len() + more <= MAX_KEYS_PER_CHANGE
    }
}

/// The ARNs of KMS keys in `before` that `after` no longer holds, or holds
/// revoked where `before` did not.
pub fn released(before: &Keyset, after: &Keyset) -> Vec<String> {
    before
        .keys
        .iter()
        .filter(|key| key.revoked_at.is_none())
        .filter(|key| {
            after
                .get(&key.kid)
                .is_none_or(|now| now.revoked_at.is_some())
        })
        .filter_map(|key| key.key.kms_arn().map(str::to_owned))
        .collect()
}

/// The [`KeyMaker`](crate::timeline::KeyMaker) of a change under KMS custody:
/// it hands out the pool's keys, each once, and notes each family it had none
/// left for (making a placeholder the caller never stores: the decision is
/// made again once those keys exist).
#[derive(Debug)]
pub struct PoolMaker<'a> {
    pool: &'a [(Algorithm, KmsKey)],
    used: Vec<bool>,
    /// The families the pool was short of, one entry per key.
    pub missing: Vec<Algorithm>,
}

impl<'a> PoolMaker<'a> {
    /// A maker handing out `pool`.
    pub fn new(pool: &'a [(Algorithm, KmsKey)]) -> PoolMaker<'a> {
        PoolMaker {
            pool,
            used: vec![false; pool.len()],
            missing: Vec::new(),
        }
    }
}

impl crate::timeline::KeyMaker for PoolMaker<'_> {
    type Error = Infallible;

    fn make(
        &mut self,
        alg: Algorithm,
        created_at: DateTime<Utc>,
        activates_at: DateTime<Utc>,
        _cert_not_after: DateTime<Utc>,
    ) -> Result<KeyRecord, Infallible> {
        let found = self
            .pool
            .iter()
            .zip(self.used.iter_mut())
            .find(|((family, _), used)| *family == alg && !**used);
        let (kid, material) = match found {
            Some(((_, key), used)) => {
                *used = true;
                (
                    key.kid.clone(),
                    KeyMaterial::Kms {
                        arn: key.arn.clone(),
                        public: key.public.clone(),
                    },
                )
            }
            None => {
                self.missing.push(alg);
                (
                    format!("placeholder-{}", self.missing.len()),
                    KeyMaterial::Kms {
                        arn: String::new(),
                        public: JwkParams::Okp {
                            crv: String::new(),
                            x: String::new(),
                        },
                    },
                )
            }
        };
        Ok(KeyRecord::made(
            kid,
            alg,
            created_at,
            activates_at,
            material,
            None,
        ))
    }

    fn recertify(
        &mut self,
        _key: &mut KeyRecord,
        _not_after: DateTime<Utc>,
    ) -> Result<(), Infallible> {
        // KMS custody refuses x5c: there is no certificate to re-issue.
        Ok(())
    }
}

#[cfg(test)]
mod tests;
