//! The aws-secrets-manager backend: the keyset document is a secret's `SecretString`.
//!
//! Secrets Manager keeps every write as a version and names versions with staging
//! labels; `AWSCURRENT` names the document. [`Version`] is the `VersionId` of the
//! `AWSCURRENT` version, and a write is a compare-and-swap on that label
//! (CONTRACT §5):
//!
//! 1. `PutSecretValue` stores the new document as a new version labelled
//!    [`PENDING_LABEL`], never `AWSCURRENT`. Its `ClientRequestToken`, which
//!    becomes its `VersionId`, is derived from the base version and the document
//!    ([`client_request_token`]): a retry of the same write reuses it and is
//!    idempotent, and two writers deciding differently from one base never share it.
//!    Putting the label moves it off any other version, so the new version is
//!    labelled from the moment it exists and never relies on an unlabelled version.
//! 2. `UpdateSecretVersionStage` moves `AWSCURRENT` to the new version with
//!    `RemoveFromVersionId` = base. If another writer moved the label first, the
//!    call fails and the write is a [`StoreError::Conflict`]: the caller re-reads
//!    and decides again. Whatever the error, one read of `AWSCURRENT` tells whether
//!    the move happened after all (an answer lost on the way back), so a retried
//!    write never applies twice and a lost acknowledgement is not a conflict.
//!
//! With no base the secret is created with the document as its first version;
//! `ResourceExistsException` means another writer created it first, unless the
//! secret exists without any value (created empty, e.g. by infrastructure code
//! with its own KMS key): then the first `PutSecretValue` gets `AWSCURRENT` from
//! Secrets Manager itself, and only one writer can be first. A create is
//! confirmed by one read of `AWSCURRENT`: repeated with the same token and
//! document, `CreateSecret` succeeds as a no-op even after other writes.
//!
//! [`PENDING_LABEL`] stays on the newest version jwkd wrote until the next write
//! moves it. Versions that lost a race keep no label once another write happens,
//! and Secrets Manager may delete them: nothing reads them.
//!
//! The store's clock is Secrets Manager's: every answer carries a `Date`
//! header, which `ClockProbe` records with the call's timing; a load
//! reports the last one (`Snapshot::store_stamp`).
//!
//! Every call has a connect timeout, a per-attempt timeout and an overall
//! deadline, and the SDK retries transient failures (throttling, 5xx, broken
//! connections) a bounded number of times with jittered backoff. The rotator's
//! own backoff sits above that, so a dead or black-holed endpoint costs the
//! rotator seconds, never minutes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_secretsmanager::error::BoxError;
use aws_sdk_secretsmanager::error::SdkError;

use super::{KeyStore, RawDocument, Snapshot, StoreError, Version, backup_name};
use crate::clock::StoreStamp;
use crate::config::MAX_SECRET_BYTES;
use crate::keyset::Keyset;

/// jwkd's own staging label: the version it wrote last, before and after it
/// becomes `AWSCURRENT`. Never `AWSCURRENT` or `AWSPENDING`, which belong to
/// Secrets Manager's rotation.
pub const PENDING_LABEL: &str = "JWKD_PENDING";

/// The label that names the document.
const CURRENT_LABEL: &str = "AWSCURRENT";

/// TCP (and TLS) connection set-up. A healthy regional endpoint answers in
/// milliseconds; this allows one lost SYN to be retransmitted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One HTTP attempt, from sending to the whole answer. Secrets Manager answers in
/// tens of milliseconds (KMS decryption included); this is a black hole detector.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// One call, all attempts and backoff included. Bounds how long a dead endpoint
/// holds the rotator per store call.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per call (the first one included) for transient failures.
const MAX_ATTEMPTS: u32 = 3;
/// The SDK's jittered exponential backoff between attempts.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A keyset kept as an AWS Secrets Manager secret.
#[derive(Clone, Debug)]
pub struct SecretsManagerStore {
    client: Client,
    secret_id: String,
    /// The client's region, for messages.
    region: Option<String>,
    clock: ClockProbe,
}

/// Records the `Date` of each answer (one-second resolution) with when the
/// request went out and the answer came (monotonic): our wall clock is read
/// only when the reading is used ([`StoreStamp::offset`]).
#[derive(Clone, Debug, Default)]
struct ClockProbe {
    sent: Arc<Mutex<Option<std::time::Instant>>>,
    last: Arc<Mutex<Option<StoreStamp>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ClockProbe {
    fn last(&self) -> Option<StoreStamp> {
        *lock(&self.last)
    }
}

impl Intercept for ClockProbe {
    fn name(&self) -> &'static str {
        "jwkd-store-clock"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        *lock(&self.sent) = Some(std::time::Instant::now());
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let sent = *lock(&self.sent);
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|date| httpdate::parse_http_date(date).ok());
        if let (Some(sent), Some(date)) = (sent, date) {
            *lock(&self.last) = Some(StoreStamp::after(
                sent,
                date.into(),
                chrono::Duration::seconds(1),
            ));
        }
        Ok(())
    }
}

/// The timeouts every call runs under.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The SDK's retries: standard mode (throttling, 5xx and I/O errors are
/// transient), a few attempts, short jittered backoff.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

/// The AWS SDK's shared configuration, with credentials from the standard
/// chain (environment, profile, web identity, ECS, IMDS) and the region from
/// `region`, else that chain; `None` when no region is configured anywhere.
/// For Secrets Manager and for KMS.
pub async fn sdk_config(region: Option<&str>) -> Option<aws_config::SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    let sdk_config = loader.load().await;
    sdk_config.region().is_some().then_some(sdk_config)
}

impl SecretsManagerStore {
    /// A store for `secret_id` (a name or an ARN), with credentials from the
    /// standard AWS chain (environment, profile, web identity, ECS, IMDS) and
    /// the region from `region`, else that chain.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no region is configured anywhere.
    pub async fn connect(
        secret_id: &str,
        region: Option<&str>,
        endpoint_url: Option<&str>,
    ) -> Result<SecretsManagerStore, StoreError> {
        let Some(sdk_config) = sdk_config(region).await else {
            return Err(StoreError::Unavailable {
                location: location(secret_id, None),
                reason:
                    "no AWS region: set store.region, AWS_REGION or a region in the AWS profile"
                        .into(),
            });
        };
        // The endpoint override is for Secrets Manager only (an emulator or a VPC
        // endpoint), not for the STS or SSO calls of the credential chain.
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(&sdk_config)
            .timeout_config(timeout_config())
            .retry_config(retry_config());
        if let Some(endpoint_url) = endpoint_url {
            builder = builder.endpoint_url(endpoint_url);
        }
        Ok(SecretsManagerStore::with_config(builder.build(), secret_id))
    }

    /// A store over a client built from `config` as it is (tests add interceptors).
    pub fn with_config(
        config: aws_sdk_secretsmanager::Config,
        secret_id: &str,
    ) -> SecretsManagerStore {
        let clock = ClockProbe::default();
        let config = config.to_builder().interceptor(clock.clone()).build();
        SecretsManagerStore {
            region: config.region().map(ToString::to_string),
            client: Client::from_conf(config),
            secret_id: secret_id.to_owned(),
            clock,
        }
    }

    /// The secret this store keeps the keyset in.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    fn unavailable<E>(&self, what: &str, err: &SdkError<E>) -> StoreError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StoreError::Unavailable {
            location: self.location(),
            // Each cause once, without the `Debug` dump `DisplayErrorContext` appends.
            reason: format!("{what}: {}", jwkd_client::error_chain(err)),
        }
    }

    fn conflict(&self) -> StoreError {
        StoreError::Conflict {
            location: self.location(),
        }
    }

    /// The `AWSCURRENT` version and its document; `None` if the secret does not
    /// exist or has no `AWSCURRENT` version.
    async fn read_current(&self) -> Result<Option<(String, Option<String>)>, StoreError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(CURRENT_LABEL)
            .send()
            .await;
        match result {
            Ok(output) => {
                let version_id = output.version_id.ok_or_else(|| StoreError::Unavailable {
                    location: self.location(),
                    reason: "GetSecretValue answered without a VersionId".into(),
                })?;
                Ok(Some((version_id, output.secret_string)))
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|service| service.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(err) => Err(self.unavailable("cannot read the secret", &err)),
        }
    }

    async fn current_version_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self.read_current().await?.map(|(version_id, _)| version_id))
    }

    fn encode(&self, keyset: &Keyset) -> Result<String, StoreError> {
        let document =
            String::from_utf8(keyset.to_document()).map_err(|err| StoreError::Unavailable {
                location: self.location(),
                reason: format!("the keyset document is not UTF-8: {err}"),
            })?;
        if document.len() > MAX_SECRET_BYTES {
            return Err(StoreError::Unavailable {
                location: self.location(),
                reason: format!(
                    "the keyset document is {} bytes, more than the {MAX_SECRET_BYTES} a secret holds",
                    document.len()
                ),
            });
        }
        Ok(document)
    }

    /// Creates the secret with `document` as its first, `AWSCURRENT` version.
    async fn create(&self, document: String, token: String) -> Result<Version, StoreError> {
        let result = self
            .client
            .create_secret()
            .name(&self.secret_id)
            .description("jwkd signing keyset (written by jwkd; do not edit by hand)")
            .secret_string(document.clone())
            .client_request_token(&token)
            .send()
            .await;
        match result {
            Ok(output) => {
                // Creating with a token that is already a version of the secret, with
                // the same document, succeeds without doing anything: a retry of this
                // very write, which may have been superseded since. Only a version that
                // is still AWSCURRENT is the document.
                let version_id = output.version_id.unwrap_or(token);
                match self.current_version_id().await? {
                    Some(current) if current == version_id => {
                        tracing::info!(secret_id = %self.secret_id, "created the keyset secret");
                        Ok(Version(version_id))
                    }
                    _ => Err(self.conflict()),
                }
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|service| service.is_resource_exists_exception()) =>
            {
                // Another writer created it first, or it was created without a value.
                if self.current_version_id().await?.is_some() {
                    return Err(self.conflict());
                }
                self.put_first_version(document, token).await
            }
            Err(err) => Err(self.unavailable("cannot create the secret", &err)),
        }
    }

    /// Fills a secret that exists without any value. Secrets Manager labels the
    /// first version `AWSCURRENT` itself; a writer that is not first conflicts.
    async fn put_first_version(
        &self,
        document: String,
        token: String,
    ) -> Result<Version, StoreError> {
        let (version_id, stages) = self.put_pending(document, &token).await?;
        if stages.iter().any(|stage| stage == CURRENT_LABEL) {
            return Ok(Version(version_id));
        }
        match self.current_version_id().await? {
            Some(_) => Err(self.conflict()),
            None => Err(StoreError::Unavailable {
                location: self.location(),
                reason: "the secret has versions but none is labelled AWSCURRENT; \
                         label the right one with UpdateSecretVersionStage, or delete the secret"
                    .into(),
            }),
        }
    }

    /// Stores `document` as a version labelled [`PENDING_LABEL`]; returns its id
    /// and the labels it has now.
    async fn put_pending(
        &self,
        document: String,
        token: &str,
    ) -> Result<(String, Vec<String>), StoreError> {
        let result = self
            .client
            .put_secret_value()
            .secret_id(&self.secret_id)
            .secret_string(document)
            .client_request_token(token)
            .version_stages(PENDING_LABEL)
            .send()
            .await;
        match result {
            Ok(output) => Ok((
                output.version_id.unwrap_or_else(|| token.to_owned()),
                output.version_stages.unwrap_or_default(),
            )),
            // The secret is gone since the base was read: the document changed.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|service| service.is_resource_not_found_exception()) =>
            {
                Err(self.conflict())
            }
            Err(err) => Err(self.unavailable("cannot store a new version", &err)),
        }
    }

    /// Moves `AWSCURRENT` from `base` to `new`; whatever the error, decides by
    /// where the label is now.
    async fn promote(&self, base: &str, new: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_secret_version_stage()
            .secret_id(&self.secret_id)
            .version_stage(CURRENT_LABEL)
            .move_to_version_id(new)
            .remove_from_version_id(base)
            .send()
            .await;
        let Err(err) = result else {
            return Ok(());
        };
        match self.current_version_id().await {
            Ok(Some(current)) if current == new => {
                tracing::debug!(
                    version = new,
                    "the label moved though the answer was an error"
                );
                Ok(())
            }
            Ok(Some(current)) if current != base => Err(self.conflict()),
            Ok(None) => Err(self.conflict()),
            Ok(Some(_)) | Err(_) => Err(self.unavailable("cannot move AWSCURRENT", &err)),
        }
    }
}

/// The name stores use in messages.
fn location(secret_id: &str, region: Option<&str>) -> String {
    match region {
        Some(region) => format!("aws-secrets-manager secret {secret_id} in {region}"),
        None => format!("aws-secrets-manager secret {secret_id}"),
    }
}

/// The `ClientRequestToken` (and so the `VersionId`) of writing `document` over
/// `base`: the hex SHA-256 of both, 64 characters (Secrets Manager wants 32 to 64).
///
/// The same write retried gets the same token, so Secrets Manager treats it as
/// one; two different documents, or one document over two different bases, get
/// different tokens, so no two writers ever reuse a token with new data.
pub fn client_request_token(base: Option<&Version>, document: &[u8]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(b"jwkd compare-and-swap v1\0");
    match base {
        None => context.update(b"create\0"),
        Some(version) => {
            context.update(b"base\0");
            context.update(&(version.0.len() as u64).to_be_bytes());
            context.update(version.0.as_bytes());
        }
    }
    context.update(document);
    context
        .finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[async_trait::async_trait]
impl KeyStore for SecretsManagerStore {
    fn location(&self) -> String {
        location(&self.secret_id, self.region.as_deref())
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let Some((version_id, document)) = self.read_current().await? else {
            return Ok(Snapshot {
                store_stamp: self.clock.last(),
                ..Snapshot::default()
            });
        };
        let document = document.ok_or_else(|| StoreError::Corrupt {
            location: self.location(),
            reason: "the AWSCURRENT version has no SecretString (a binary secret?)".into(),
        })?;
        let keyset =
            Keyset::from_document(document.as_bytes()).map_err(|reason| StoreError::Corrupt {
                location: self.location(),
                reason,
            })?;
        Ok(Snapshot {
            keyset,
            version: Some(Version(version_id)),
            store_stamp: self.clock.last(),
        })
    }

    async fn compare_and_swap(
        &self,
        base: Option<&Version>,
        keyset: &Keyset,
    ) -> Result<Version, StoreError> {
        let document = self.encode(keyset)?;
        let token = client_request_token(base, document.as_bytes());
        let Some(base) = base else {
            return self.create(document, token).await;
        };
        let (version_id, stages) = self.put_pending(document, &token).await?;
        if stages.iter().any(|stage| stage == CURRENT_LABEL) {
            // This very write was made before and is the document already.
            return Ok(Version(version_id));
        }
        if !stages.iter().any(|stage| stage == PENDING_LABEL) {
            // A retry found its earlier version, but another writer has put a version
            // since and the label went with it. Do not promote an unlabelled version:
            // re-read and decide again.
            return Err(self.conflict());
        }
        self.promote(&base.0, &version_id).await?;
        Ok(Version(version_id))
    }

    async fn load_raw(&self) -> Result<Option<RawDocument>, StoreError> {
        let Some((version_id, document)) = self.read_current().await? else {
            return Ok(None);
        };
        Ok(Some(RawDocument {
            bytes: document.unwrap_or_default().into_bytes(),
            version: Version(version_id),
        }))
    }

    /// Labels the version: Secrets Manager never deletes a labelled version.
    async fn back_up(
        &self,
        document: &RawDocument,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, StoreError> {
        let label = backup_name(at);
        self.client
            .update_secret_version_stage()
            .secret_id(&self.secret_id)
            .version_stage(&label)
            .move_to_version_id(&document.version.0)
            .send()
            .await
            .map_err(|err| self.unavailable("cannot label the version to keep", &err))?;
        Ok(format!(
            "version {} of {}, labelled {label}",
            document.version.0, self.secret_id
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests;
