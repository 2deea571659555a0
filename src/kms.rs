//! AWS KMS as the custodian of signing keys that no process can read: the
//! calls jwkd makes, each bounded in time (the Secrets Manager store's
//! timeouts and retries: throttling, 5xx and I/O errors are retried with
//! jittered backoff) and in number (at most [`MAX_IN_FLIGHT`] at once per
//! daemon, so a burst of token requests queues here instead of being
//! throttled by KMS).
//!
//! - [`Kms::create_key`]: a fresh asymmetric key (`CreateKey`, key spec per
//!   family), tagged with the issuer and family, its public key read back
//!   (`GetPublicKey`), its kid (the RFC 7638 thumbprint) tagged too.
//! - [`Kms::sign`]: `Sign` with `MessageType=RAW`, the signature as JWS wants it
//!   (ECDSA's DER turned into `r || s`, see [`crate::keys::der`]).
//! - [`Kms::retire`]: `DisableKey`, then `ScheduleKeyDeletion` with the
//!   shortest pending window KMS allows.
//! - [`Kms::keys_of`]: the keys tagged with an issuer (`ListKeys`,
//!   `ListResourceTags`), to find keys that never made it into a stored keyset.

use std::sync::Arc;

use aws_sdk_kms::Client;
use aws_sdk_kms::error::SdkError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    KeyMetadata, KeySpec, KeyState, KeyUsageType, MessageType, SigningAlgorithmSpec, Tag,
};
use jwkd_client::jwk::JwkParams;
use tokio::sync::Semaphore;

use crate::keys::Algorithm;
use crate::keys::der::{jws_signature_from_der, public_params_from_spki};

/// KMS calls one daemon has in flight at most; more wait their turn.
pub const MAX_IN_FLIGHT: usize = 32;

/// The largest message `Sign` takes with `MessageType=RAW`.
pub const MAX_RAW_MESSAGE: usize = 4096;

/// `kms.signs_per_second` unless set: a tenth of KMS's default request quota
/// for asymmetric signing (1,000 a second for ECC and RSA keys per AWS's
/// "Request quotas" page at the time of writing, 300 for ECC on older
/// versions of it), which every caller in the account and region shares.
pub const DEFAULT_SIGNS_PER_SECOND: u32 = 100;

/// The shortest pending window before KMS deletes a key, in days.
pub const DELETION_WINDOW_DAYS: i32 = 7;

/// The tag naming the issuer a key belongs to (its `iss` URL).
pub const ISSUER_TAG: &str = "jwkd:issuer";
/// The tag naming the keyset it is made for (the store's location).
pub const KEYSET_TAG: &str = "jwkd:keyset";

/// How long a call waits for one of the [`MAX_IN_FLIGHT`] places before it is
/// refused as unavailable: a queue that does not drain in this time will not
/// drain in a token request's time either.
pub const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The tag naming its family (`ES256`, `ES384`, `RS256`).
pub const FAMILY_TAG: &str = "jwkd:family";
/// The tag naming its kid.
pub const KID_TAG: &str = "jwkd:kid";

/// A KMS call that failed.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// KMS could not be reached or did not answer in time, or throttled us
    /// through every retry: worth trying again later.
    #[error("KMS is unavailable: {0}")]
    Unavailable(String),
    /// KMS answered, and the answer was not usable: a refused call, a key of
    /// the wrong kind, a malformed public key or signature.
    #[error("KMS: {0}")]
    Refused(String),
    /// The family cannot be held in KMS (EdDSA).
    #[error("{0} keys cannot be held in KMS (KMS has no Ed25519 signing keys)")]
    Unsupported(Algorithm),
    /// The message is over what `Sign` takes raw.
    #[error("the signing input is {0} bytes; KMS signs at most {MAX_RAW_MESSAGE} bytes raw")]
    TooLarge(usize),
    /// Not sent: jwkd's own bound on signatures ([`Pace`]) refused the call.
    /// Says nothing of KMS's health, so it never makes the issuer unready.
    #[error("{0}")]
    Busy(String),
}

/// A key made in KMS: where it is and what verifiers see of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsKey {
    /// Its ARN.
    pub arn: String,
    /// The public JWK parameters (from `GetPublicKey`).
    pub public: JwkParams,
    /// The RFC 7638 thumbprint of the public key.
    pub kid: String,
}

/// Whose keys these are: every key jwkd makes is tagged with both, and only
/// keys tagged with both are ever swept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The issuer's `iss` URL.
    pub issuer: String,
    /// The location of its keyset (`KeyStore::location`).
    pub keyset: String,
}

/// A key found by [`Kms::keys_of`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedKey {
    /// Its ARN.
    pub arn: String,
    /// When KMS made it.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The KMS of one region (or endpoint), with bounded concurrency and a
/// bounded rate of signatures.
#[derive(Clone, Debug)]
pub struct Kms {
    client: Client,
    permits: Arc<Semaphore>,
    pace: Arc<Pace>,
}

/// Spaces calls evenly at a rate: each takes the next free slot, and one whose
/// slot is further away than [`QUEUE_WAIT`] is refused instead of queued.
///
/// Every caller (an issuer's client) may hold at most a quarter of the
/// queue's slots at once ([`CALLER_SHARE`]): one client flooding the token
/// endpoint is refused its excess at once, and cannot make every other
/// client of every issuer on this KMS wait out the whole queue, or be refused.
///
/// The last quarter of the queue is kept for callers with no slot: a caller
/// that holds one already gets another only while the queue is less than
/// three quarters full. Several clients flooding together (each within its
/// share) therefore still leave room for a client asking for its first
/// signature; only as many flooding credentials as that quarter has slots can
/// fill it.
#[derive(Debug)]
pub struct Pace {
    every: std::time::Duration,
    /// The most slots one caller may hold.
    share: usize,
    /// How far away a slot may be for a caller that holds one already: three
    /// quarters of the queue.
    repeat: std::time::Duration,
    state: std::sync::Mutex<PaceState>,
}

#[derive(Debug, Default)]
struct PaceState {
    next: Option<tokio::time::Instant>,
    /// Slots not yet reached, per caller; a caller with none is not here.
    waiting: std::collections::HashMap<String, usize>,
}

/// The part of the queue one caller may hold.
pub const CALLER_SHARE: usize = 4;

/// A caller's slot: held until its time comes or its request is dropped.
struct Held<'a> {
    pace: &'a Pace,
    caller: &'a str,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut state = self.pace.lock();
        if let Some(count) = state.waiting.get_mut(self.caller) {
            *count -= 1;
            if *count == 0 {
                state.waiting.remove(self.caller);
            }
        }
    }
}

impl Pace {
    /// At most `per_second` calls a second (at least one).
    pub fn new(per_second: u32) -> Pace {
        let every = std::time::Duration::from_secs(1) / per_second.max(1);
        // The slots in QUEUE_WAIT, and one at once.
        let slots = usize::try_from(QUEUE_WAIT.as_nanos() / every.as_nanos().max(1) + 1)
            .unwrap_or(usize::MAX);
        let share = (slots / CALLER_SHARE).max(1);
        Pace {
            every,
            share,
            repeat: every.saturating_mul(u32::try_from(slots - share).unwrap_or(u32::MAX)),
            state: std::sync::Mutex::new(PaceState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PaceState> {
        // Counts are changed whole: a panic cannot leave one half-changed.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a slot for `caller`.
    ///
    /// # Errors
    /// [`KmsError::Busy`] when the slot is more than [`QUEUE_WAIT`] away,
    /// `caller` holds its share of the slots already, or holds one and the
    /// queue's last quarter is all that is left.
    pub async fn wait(&self, caller: &str) -> Result<(), KmsError> {
        let now = tokio::time::Instant::now();
        let slot = {
            let mut state = self.lock();
            let slot = state.next.map_or(now, |next| next.max(now));
            let per_second =
                std::time::Duration::from_secs(1).as_nanos() / self.every.as_nanos().max(1);
            if slot - now > QUEUE_WAIT {
                return Err(KmsError::Busy(format!(
                    "over kms.signs_per_second ({per_second} a second) for the next {}s",
                    QUEUE_WAIT.as_secs()
                )));
            }
            let held = state.waiting.get(caller).copied().unwrap_or(0);
            if held >= self.share {
                return Err(KmsError::Busy(format!(
                    "{caller} has {held} signatures waiting, its share of the next {}s \
                     at kms.signs_per_second ({per_second} a second)",
                    QUEUE_WAIT.as_secs()
                )));
            }
            if held > 0 && slot - now >= self.repeat {
                return Err(KmsError::Busy(format!(
                    "{caller} has {held} signatures waiting and the next free slot at \
                     kms.signs_per_second ({per_second} a second) is {}ms away; the slots \
                     after {}ms are kept for clients with none waiting",
                    (slot - now).as_millis(),
                    self.repeat.as_millis()
                )));
            }
            *state.waiting.entry(caller.to_owned()).or_default() += 1;
            state.next = Some(slot + self.every);
            slot
        };
        let _held = Held { pace: self, caller };
        tokio::time::sleep_until(slot).await;
        Ok(())
    }
}

fn key_spec(alg: Algorithm) -> Result<KeySpec, KmsError> {
    match alg {
        Algorithm::Es256 => Ok(KeySpec::EccNistP256),
        Algorithm::Es384 => Ok(KeySpec::EccNistP384),
        Algorithm::Rs256 => Ok(KeySpec::Rsa2048),
        Algorithm::EdDsa => Err(KmsError::Unsupported(alg)),
    }
}

fn signing_algorithm(alg: Algorithm) -> Result<SigningAlgorithmSpec, KmsError> {
    match alg {
        Algorithm::Es256 => Ok(SigningAlgorithmSpec::EcdsaSha256),
        Algorithm::Es384 => Ok(SigningAlgorithmSpec::EcdsaSha384),
        Algorithm::Rs256 => Ok(SigningAlgorithmSpec::RsassaPkcs1V15Sha256),
        Algorithm::EdDsa => Err(KmsError::Unsupported(alg)),
    }
}

/// An SDK error as a [`KmsError`]: service errors (KMS answered) are refusals,
/// except throttling, which the SDK retried already; the rest (timeouts,
/// dispatch failures) is unavailability.
fn sdk_error<E>(what: &str, err: &SdkError<E>) -> KmsError
where
    E: std::error::Error + aws_sdk_kms::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    let text = format!("{what}: {}", jwkd_client::error_chain(err));
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            if code.contains("Throttling") || code == "KMSInternalException" {
                KmsError::Unavailable(text)
            } else {
                KmsError::Refused(text)
            }
        }
        _ => KmsError::Unavailable(text),
    }
}

fn tag(key: &str, value: &str) -> Result<Tag, KmsError> {
    Tag::builder()
        .tag_key(key)
        .tag_value(value)
        .build()
        .map_err(|err| KmsError::Refused(format!("tag {key}: {err}")))
}

impl Kms {
    /// The KMS of `region` (else the standard chain's), at `endpoint_url` if
    /// given (an emulator or a VPC endpoint), with credentials from the
    /// standard AWS chain.
    ///
    /// # Errors
    /// [`KmsError::Unavailable`] when no region is configured anywhere.
    pub async fn connect(
        region: Option<&str>,
        endpoint_url: Option<&str>,
        signs_per_second: u32,
    ) -> Result<Kms, KmsError> {
        let Some(sdk_config) = crate::store::aws::sdk_config(region).await else {
            return Err(KmsError::Unavailable(
                "no AWS region: set kms.region, AWS_REGION or a region in the AWS profile".into(),
            ));
        };
        let mut builder = aws_sdk_kms::config::Builder::from(&sdk_config)
            .timeout_config(crate::store::aws::timeout_config())
            .retry_config(crate::store::aws::retry_config());
        if let Some(endpoint_url) = endpoint_url {
            builder = builder.endpoint_url(endpoint_url);
        }
        Ok(Kms::with_config(builder.build()).signing_at_most(signs_per_second))
    }

    /// A KMS over a client built from `config` as it is (tests: static
    /// credentials, an emulator).
    pub fn with_config(config: aws_sdk_kms::Config) -> Kms {
        Kms {
            client: Client::from_conf(config),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            pace: Arc::new(Pace::new(DEFAULT_SIGNS_PER_SECOND)),
        }
    }

    /// This KMS, signing at most `per_second` times a second.
    #[must_use]
    pub fn signing_at_most(mut self, per_second: u32) -> Kms {
        self.pace = Arc::new(Pace::new(per_second));
        self
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, KmsError> {
        match tokio::time::timeout(QUEUE_WAIT, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed.
            Ok(Err(_)) => unreachable!("the KMS semaphore is never closed"),
            Err(_) => Err(KmsError::Unavailable(format!(
                "{MAX_IN_FLIGHT} calls in flight and none finished within {}s",
                QUEUE_WAIT.as_secs()
            ))),
        }
    }

    /// Makes a key of family `alg` for `owner`, tagged with its family and
    /// owner, reads its public key back and tags it with its kid.
    ///
    /// # Errors
    /// [`KmsError::Unsupported`] for EdDSA; the failed call's error otherwise.
    /// A key created before a later call failed is retired again, so that it
    /// does not linger (best effort: [`Kms::keys_of`] finds it otherwise).
    pub async fn create_key(&self, alg: Algorithm, owner: &Owner) -> Result<KmsKey, KmsError> {
        let spec = key_spec(alg)?;
        let _permit = self.permit().await?;
        let created = self
            .client
            .create_key()
            .key_spec(spec)
            .key_usage(KeyUsageType::SignVerify)
            .description(format!(
                "jwkd signing key of issuer {}, family {alg}",
                owner.issuer
            ))
            .tags(tag(ISSUER_TAG, &owner.issuer)?)
            .tags(tag(KEYSET_TAG, &owner.keyset)?)
            .tags(tag(FAMILY_TAG, alg.name())?)
            .send()
            .await
            .map_err(|err| sdk_error("CreateKey", &err))?;
        let arn = created
            .key_metadata()
            .and_then(|metadata| metadata.arn())
            .ok_or_else(|| KmsError::Refused("CreateKey answered without a key ARN".into()))?
            .to_owned();
        match self.describe(&arn, alg).await {
            Ok(key) => Ok(key),
            Err(err) => {
                // Never used: do not leave it behind.
                let _ = self.retire_with_permit(&arn).await;
                Err(err)
            }
        }
    }

    async fn describe(&self, arn: &str, alg: Algorithm) -> Result<KmsKey, KmsError> {
        let public = self
            .client
            .get_public_key()
            .key_id(arn)
            .send()
            .await
            .map_err(|err| sdk_error("GetPublicKey", &err))?;
        let spki = public
            .public_key()
            .ok_or_else(|| KmsError::Refused("GetPublicKey answered without a key".into()))?;
        let params = public_params_from_spki(alg, spki.as_ref())
            .map_err(|err| KmsError::Refused(format!("GetPublicKey of {arn}: {err}")))?;
        let kid = crate::keys::thumbprint(&params);
        self.client
            .tag_resource()
            .key_id(arn)
            .tags(tag(KID_TAG, &kid)?)
            .send()
            .await
            .map_err(|err| sdk_error("TagResource", &err))?;
        Ok(KmsKey {
            arn: arn.to_owned(),
            public: params,
            kid,
        })
    }

    /// Signs `message` (a JWS signing input) with the key `arn` of family
    /// `alg`, for `caller` (whose share of the pace it counts against); the
    /// signature is as JWS wants it.
    ///
    /// # Errors
    /// [`KmsError::TooLarge`] over [`MAX_RAW_MESSAGE`] bytes; [`KmsError::Busy`]
    /// when the pace refuses it ([`Pace::wait`]); the call's error otherwise,
    /// or a signature that is not one of `alg`'s.
    pub async fn sign(
        &self,
        arn: &str,
        alg: Algorithm,
        message: &[u8],
        caller: &str,
    ) -> Result<Vec<u8>, KmsError> {
        let algorithm = signing_algorithm(alg)?;
        if message.len() > MAX_RAW_MESSAGE {
            return Err(KmsError::TooLarge(message.len()));
        }
        self.pace.wait(caller).await?;
        let _permit = self.permit().await?;
        let signed = self
            .client
            .sign()
            .key_id(arn)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(algorithm)
            .send()
            .await
            .map_err(|err| sdk_error("Sign", &err))?;
        let signature = signed
            .signature()
            .ok_or_else(|| KmsError::Refused("Sign answered without a signature".into()))?
            .as_ref();
        match alg {
            Algorithm::Es256 | Algorithm::Es384 => jws_signature_from_der(alg, signature)
                .map_err(|err| KmsError::Refused(format!("Sign with {arn}: {err}"))),
            _ => Ok(signature.to_vec()),
        }
    }

    /// Disables the key `arn` and schedules its deletion after the shortest
    /// window KMS allows: for a key whose tokens have all expired, or that was
    /// revoked, or that never made it into a stored keyset.
    ///
    /// # Errors
    /// The failed call's error. A key already pending deletion is no error.
    pub async fn retire(&self, arn: &str) -> Result<(), KmsError> {
        let _permit = self.permit().await?;
        self.retire_with_permit(arn).await
    }

    /// `DescribeKey` of `key` (an id or ARN): its metadata, if KMS gave any.
    async fn metadata(&self, key: &str) -> Result<Option<KeyMetadata>, KmsError> {
        let described = self
            .client
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(|err| sdk_error("DescribeKey", &err))?;
        Ok(described.key_metadata)
    }

    async fn retire_with_permit(&self, arn: &str) -> Result<(), KmsError> {
        let metadata = self.metadata(arn).await?;
        let state = metadata.as_ref().and_then(KeyMetadata::key_state);
        // The key's id rather than its ARN: some KMS implementations (the
        // emulator) take only the id for these two calls.
        let id = metadata.as_ref().map_or(arn, KeyMetadata::key_id);
        match state {
            // Retired already (a crash between the calls, a second replica).
            Some(KeyState::PendingDeletion) => return Ok(()),
            Some(KeyState::Disabled) => {}
            _ => {
                self.client
                    .disable_key()
                    .key_id(id)
                    .send()
                    .await
                    .map_err(|err| sdk_error("DisableKey", &err))?;
            }
        }
        self.client
            .schedule_key_deletion()
            .key_id(id)
            .pending_window_in_days(DELETION_WINDOW_DAYS)
            .send()
            .await
            .map_err(|err| sdk_error("ScheduleKeyDeletion", &err))?;
        Ok(())
    }

    /// Whether the key `arn` can sign: KMS answers, and the key is enabled.
    ///
    /// # Errors
    /// The call's error, or [`KmsError::Refused`] naming the key's state.
    pub async fn probe(&self, arn: &str) -> Result<(), KmsError> {
        let _permit = self.permit().await?;
        match self
            .metadata(arn)
            .await?
            .as_ref()
            .and_then(KeyMetadata::key_state)
        {
            Some(KeyState::Enabled) => Ok(()),
            state => Err(KmsError::Refused(format!(
                "key {arn} is {}, not enabled",
                state.map_or("of no state", KeyState::as_str)
            ))),
        }
    }

    /// The keys tagged with `owner` (both tags) that are not pending deletion.
    ///
    /// # Errors
    /// The failed call's error.
    pub async fn keys_of(&self, owner: &Owner) -> Result<Vec<OwnedKey>, KmsError> {
        let _permit = self.permit().await?;
        let mut keys = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .client
                .list_keys()
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|err| sdk_error("ListKeys", &err))?;
            for entry in page.keys() {
                let (Some(id), Some(arn)) = (entry.key_id(), entry.key_arn()) else {
                    continue;
                };
                let tags = match self.client.list_resource_tags().key_id(id).send().await {
                    Ok(tags) => tags,
                    // A policy scoped to jwkd's tags may deny reading other
                    // keys' tags: those keys are not jwkd's either.
                    Err(SdkError::ServiceError(service))
                        if aws_sdk_kms::error::ProvideErrorMetadata::code(service.err())
                            == Some("AccessDeniedException") =>
                    {
                        continue;
                    }
                    Err(err) => return Err(sdk_error("ListResourceTags", &err)),
                };
                let tagged = |key: &str, value: &str| {
                    tags.tags()
                        .iter()
                        .any(|tag| tag.tag_key() == key && tag.tag_value() == value)
                };
                if !(tagged(ISSUER_TAG, &owner.issuer) && tagged(KEYSET_TAG, &owner.keyset)) {
                    continue;
                }
                let Some(metadata) = self.metadata(id).await? else {
                    continue;
                };
                if metadata.key_state() == Some(&KeyState::PendingDeletion) {
                    continue;
                }
                let created_at = metadata.creation_date().and_then(|date| {
                    chrono::DateTime::from_timestamp(date.secs(), date.subsec_nanos())
                });
                keys.push(OwnedKey {
                    arn: arn.to_owned(),
                    created_at,
                });
            }
            match page.next_marker() {
                Some(next) if page.truncated() => marker = Some(next.to_owned()),
                _ => return Ok(keys),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_kms::config::Credentials;
    use serde_json::{Value, json};

    use super::*;
    use crate::store::aws::tests::endpoint;

    /// The KMS at `endpoint_url`, with static test credentials and the
    /// timeouts and retries jwkd uses.
    pub(crate) fn kms_at(endpoint_url: &str) -> Kms {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "jwkd-tests"))
            .endpoint_url(endpoint_url)
            .timeout_config(crate::store::aws::timeout_config())
            .retry_config(crate::store::aws::retry_config())
            .build();
        Kms::with_config(config)
    }

    /// The emulator's KMS (the one `scripts/test` starts for Secrets Manager).
    pub(crate) fn kms(suite: &str) -> Kms {
        kms_at(&endpoint(suite))
    }

    /// Tags no other test uses.
    pub(crate) fn owner() -> Owner {
        let id = rand::random::<u64>();
        Owner {
            issuer: format!("https://test-{id:016x}.example"),
            keyset: format!("memory:test-{id:016x}"),
        }
    }

    fn arns(keys: Vec<OwnedKey>) -> Vec<String> {
        let mut arns: Vec<String> = keys.into_iter().map(|key| key.arn).collect();
        arns.sort();
        arns
    }

    /// A compact JWS of `claims` signed in KMS with `key`.
    async fn token(kms: &Kms, key: &KmsKey, alg: Algorithm, claims: &Value) -> String {
        let b64 = |bytes: &[u8]| {
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
        };
        let header = json!({"alg": alg.name(), "kid": key.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = kms
            .sign(&key.arn, alg, input.as_bytes(), "orders")
            .await
            .unwrap();
        format!("{input}.{}", b64(&signature))
    }

    /// Keys of every family KMS holds sign tokens that jwkd-client verifies
    /// with the public JWK read back from KMS, its kid the thumbprint; ECDSA
    /// signatures whose `r` or `s` has leading zero bytes among them.
    #[tokio::test]
    async fn kms_keys_sign_tokens_that_verify_with_their_public_jwk() {
        let kms = kms("kms_keys_sign_tokens_that_verify_with_their_public_jwk");
        let owner = owner();
        let issuer = owner.issuer.clone();
        // Tokens are made and checked at one fixed instant.
        let now = crate::config::test_time().timestamp();
        let at = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(now).unwrap());
        // ES256 until a short r or s has come by (one signature in 128 or so),
        // at most 3,000; the others a few each.
        for (alg, tokens) in [
            (Algorithm::Es256, 3000),
            (Algorithm::Es384, 20),
            (Algorithm::Rs256, 3),
        ] {
            let key = kms.create_key(alg, &owner).await.unwrap();
            assert_eq!(crate::keys::thumbprint(&key.public), key.kid);
            let mut jwk = serde_json::to_value(&key.public).unwrap();
            jwk["kid"] = json!(key.kid);
            jwk["alg"] = json!(alg.name());
            jwk["use"] = json!("sig");
            let keys =
                jwkd_client::KeySet::from_json(json!({"keys": [jwk]}).to_string().as_bytes())
                    .unwrap();
            let verifier = jwkd_client::Verifier::builder(keys)
                .issuer(&issuer)
                .audience("payments")
                .build()
                .unwrap();
            let mut short = 0;
            for n in 0..tokens {
                let claims = json!({"iss": issuer, "aud": "payments", "sub": n, "iat": now, "exp": now + 60});
                let token = token(&kms, &key, alg, &claims).await;
                let signature = token.rsplit('.').next().unwrap();
                let signature = base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    signature,
                )
                .unwrap();
                if alg != Algorithm::Rs256 {
                    let width = signature.len() / 2;
                    short += usize::from(signature[0] == 0 || signature[width] == 0);
                }
                verifier
                    .verify_at::<Value>(&token, at)
                    .await
                    .unwrap_or_else(|err| panic!("{alg} token {n}: {err}"));
                if alg == Algorithm::Es256 && short > 0 {
                    break;
                }
            }
            if alg == Algorithm::Es256 {
                assert!(
                    short > 0,
                    "{alg}: no signature with a short r or s in {tokens}"
                );
            }
            kms.retire(&key.arn).await.unwrap();
        }
    }

    #[tokio::test]
    async fn keys_of_an_issuer_are_found_and_retired_keys_are_not() {
        let kms = kms("keys_of_an_issuer_are_found_and_retired_keys_are_not");
        let mine = owner();
        // Another keyset of the same issuer, and another issuer of the same keyset.
        let other_keyset = Owner {
            keyset: format!("{}-other", mine.keyset),
            ..mine.clone()
        };
        let other_issuer = Owner {
            issuer: format!("{}/other", mine.issuer),
            ..mine.clone()
        };
        let first = kms.create_key(Algorithm::Es256, &mine).await.unwrap();
        let second = kms.create_key(Algorithm::Es384, &mine).await.unwrap();
        let theirs = kms
            .create_key(Algorithm::Es256, &other_keyset)
            .await
            .unwrap();
        let others = kms
            .create_key(Algorithm::Es256, &other_issuer)
            .await
            .unwrap();
        let found = kms.keys_of(&mine).await.unwrap();
        assert!(
            found.iter().all(|key| key.created_at.is_some()),
            "{found:?}"
        );
        let mut expected = vec![first.arn.clone(), second.arn.clone()];
        expected.sort();
        assert_eq!(arns(found), expected);
        kms.probe(&first.arn).await.unwrap();
        kms.retire(&first.arn).await.unwrap();
        // Retiring twice is no error: a crash between the two calls is retried.
        kms.retire(&first.arn).await.unwrap();
        let err = kms.probe(&first.arn).await.unwrap_err();
        assert!(err.to_string().contains("not enabled"), "{err}");
        assert_eq!(
            arns(kms.keys_of(&mine).await.unwrap()),
            vec![second.arn.clone()]
        );
        for key in [second, theirs, others] {
            kms.retire(&key.arn).await.unwrap();
        }
        assert!(kms.keys_of(&mine).await.unwrap().is_empty());
    }

    /// 10 a second: the first call at once, then one every 100 ms; a call
    /// whose slot is more than 5 s away is refused at once, and takes no slot.
    #[tokio::test(start_paused = true)]
    async fn signatures_are_paced_and_a_call_too_far_back_is_refused() {
        let pace = Arc::new(Pace::new(10));
        let start = tokio::time::Instant::now();
        let mut calls = Vec::new();
        // Each from a caller of its own: one caller may hold a quarter of them.
        for n in 0..51 {
            let pace = Arc::clone(&pace);
            calls.push(tokio::spawn(async move {
                pace.wait(&format!("client-{n}")).await.unwrap();
                tokio::time::Instant::now() - start
            }));
        }
        // Every slot is taken before anyone sleeps: let them all ask.
        tokio::task::yield_now().await;
        let refused = pace.wait("client-51").await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("over kms.signs_per_second (10 a second)"),
            "{refused}"
        );
        let mut at = Vec::new();
        for call in calls {
            at.push(call.await.unwrap().as_millis());
        }
        at.sort_unstable();
        let expected: Vec<u128> = (0..51).map(|n| n * 100).collect();
        assert_eq!(at, expected);
        // The queue has drained: the next call keeps the pace, and after a
        // quiet second one goes at once (no burst is saved up).
        let before = tokio::time::Instant::now();
        pace.wait("client-0").await.unwrap();
        assert_eq!(
            tokio::time::Instant::now() - before,
            std::time::Duration::from_millis(100)
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let before = tokio::time::Instant::now();
        pace.wait("client-0").await.unwrap();
        pace.wait("client-0").await.unwrap();
        assert_eq!(
            tokio::time::Instant::now() - before,
            std::time::Duration::from_millis(100)
        );
    }

    /// One caller flooding: it holds at most a quarter of the 51 slots of the
    /// next 5 s (12; the first one, at once, is gone before the thirteenth asks,
    /// so 13 are served), and is refused the rest at once; another caller
    /// still gets the next slot, 1.3 s away rather than refused or 5 s away; a
    /// slot whose request was dropped is the caller's again.
    #[tokio::test(start_paused = true)]
    async fn one_caller_holds_at_most_its_share_of_the_queue() {
        let pace = Arc::new(Pace::new(10));
        let start = tokio::time::Instant::now();
        let mut flood = Vec::new();
        for _ in 0..51 {
            let pace = Arc::clone(&pace);
            flood.push(tokio::spawn(
                async move { pace.wait("flooder").await.is_ok() },
            ));
        }
        tokio::task::yield_now().await;
        let other = {
            let pace = Arc::clone(&pace);
            tokio::spawn(async move {
                pace.wait("other").await.unwrap();
                tokio::time::Instant::now() - start
            })
        };
        tokio::task::yield_now().await;
        // Refused for its share, not for the rate: 12 slots, not 51, are gone.
        let refused = pace.wait("flooder").await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("flooder has 12 signatures waiting, its share"),
            "{refused}"
        );
        assert_eq!(other.await.unwrap(), std::time::Duration::from_millis(1300));
        let mut served = 0;
        for call in flood {
            served += usize::from(call.await.unwrap());
        }
        assert_eq!(served, 13);
        // A dropped request gives its slot back to its caller's share.
        let waiting: Vec<_> = (0..12)
            .map(|_| {
                let pace = Arc::clone(&pace);
                tokio::spawn(async move { pace.wait("flooder").await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(pace.wait("flooder").await.is_err());
        waiting[11].abort();
        tokio::task::yield_now().await;
        let last = tokio::spawn({
            let pace = Arc::clone(&pace);
            async move { pace.wait("flooder").await }
        });
        for call in waiting.into_iter().take(11) {
            call.await.unwrap().unwrap();
        }
        last.await.unwrap().unwrap();
    }

    /// Five callers flooding at once, each within its share, would fill the
    /// whole queue between them (4 × 12 + 3 of 51 slots). The last quarter is
    /// kept for callers with nothing waiting: the flooders' further slots stop
    /// at 3.9 s, and a client asking for its first signature gets a slot
    /// rather than a refusal.
    #[tokio::test(start_paused = true)]
    async fn several_callers_flooding_together_leave_room_for_a_first_signature() {
        let pace = Arc::new(Pace::new(10));
        let start = tokio::time::Instant::now();
        let mut flood = Vec::new();
        for flooder in 0..5 {
            for _ in 0..20 {
                let pace = Arc::clone(&pace);
                flood.push(tokio::spawn(async move {
                    (flooder, pace.wait(&format!("flooder-{flooder}")).await)
                }));
            }
            tokio::task::yield_now().await;
        }
        let refused = pace.wait("flooder-3").await.unwrap_err().to_string();
        assert!(
            refused.contains("are kept for clients with none waiting"),
            "{refused}"
        );
        let other = pace.wait("other").await;
        assert!(other.is_ok(), "a first signature was refused: {other:?}");
        let waited = tokio::time::Instant::now() - start;
        assert!(
            waited > std::time::Duration::from_millis(3900) && waited <= QUEUE_WAIT,
            "{waited:?}"
        );
        let mut served = [0; 5];
        for call in flood {
            let (flooder, result) = call.await.unwrap();
            served[flooder] += usize::from(result.is_ok());
        }
        // The first at once (gone before the rest ask), then a share each, until
        // the queue is three quarters full; the fourth and fifth flooders get
        // what is left of those three quarters, and one slot each beyond them.
        assert!(served.iter().all(|&n| n <= 13), "{served:?}");
        assert!(served[3] >= 1 && served[4] >= 1, "{served:?}");
        assert!(served.iter().sum::<usize>() <= 41, "{served:?}");
    }

    #[tokio::test]
    async fn what_kms_cannot_do_is_said_before_any_call() {
        // No emulator needed: nothing is sent.
        let kms = kms_at("http://127.0.0.1:9");
        let err = kms
            .create_key(Algorithm::EdDsa, &owner())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "EdDSA keys cannot be held in KMS (KMS has no Ed25519 signing keys)"
        );
        let err = kms
            .sign("arn", Algorithm::Es256, &[0; MAX_RAW_MESSAGE + 1], "orders")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the signing input is 4097 bytes; KMS signs at most 4096 bytes raw"
        );
    }

    #[tokio::test]
    async fn an_unreachable_kms_is_unavailable_not_refused() {
        let kms = kms_at("http://127.0.0.1:9");
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            kms.sign("arn", Algorithm::Es256, b"x", "orders"),
        )
        .await
        .expect("bounded by the SDK's timeouts")
        .unwrap_err();
        assert!(matches!(err, KmsError::Unavailable(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("KMS is unavailable: Sign: dispatch failure"),
            "{err}"
        );
    }
}
