//! Durable storage of the keyset document (CONTRACT §5).
//!
//! The whole document is the unit of consistency: a backend loads it with an
//! opaque [`Version`] and writes it with a compare-and-swap against the version
//! the writer started from. [`StoreError::Conflict`] tells the writer to re-read
//! and decide again. Backends never repair a document they cannot read.
//!
//! - [`file::FileStore`]: a local file, atomic rename, advisory lock.
//! - [`aws::SecretsManagerStore`]: an AWS Secrets Manager secret, label compare-and-swap.
//! - [`memory::MemoryStore`]: for unit tests of logic, with fault injection.

pub mod aws;
pub mod file;
pub mod memory;

#[cfg(test)]
pub(crate) mod contract;

use std::sync::Arc;

use crate::clock::StoreStamp;
use crate::config::{Backend, StoreConfig};
use crate::keyset::Keyset;

/// An opaque token naming one stored revision of the document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// The document as loaded, and the revision it came from.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The keys; empty when nothing is stored yet.
    pub keyset: Keyset,
    /// `None` when there is no document yet.
    pub version: Option<Version>,
    /// The store's clock as this read saw it, where the backend has one.
    pub store_stamp: Option<StoreStamp>,
}

/// What can go wrong with a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stored document changed since the writer's base: re-read and decide again.
    #[error("keyset in {location} was changed by another writer")]
    Conflict {
        /// Where.
        location: String,
    },
    /// The stored document cannot be read as a keyset. It is left as it is.
    #[error("keyset {location} is corrupt: {reason}")]
    Corrupt {
        /// Where.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store could not be reached or the I/O failed.
    #[error("keyset store {location} is unavailable: {reason}")]
    Unavailable {
        /// Where.
        location: String,
        /// The cause.
        reason: String,
    },
}

/// A durable home for the keyset document.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Where the keyset lives, for messages: a path, or a secret id and its region.
    fn location(&self) -> String;

    /// Loads the current document.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] or [`StoreError::Unavailable`].
    async fn load(&self) -> Result<Snapshot, StoreError>;

    /// Replaces the document if it is still at `base` (`None`: no document yet),
    /// returning the new version once the write is durable.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if another writer got there first, or the
    /// errors of [`KeyStore::load`].
    async fn compare_and_swap(
        &self,
        base: Option<&Version>,
        keyset: &Keyset,
    ) -> Result<Version, StoreError>;

    /// The stored document as it is, without decoding it; `None` if there is none.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn load_raw(&self) -> Result<Option<RawDocument>, StoreError>;

    /// Keeps `document` where later writes will not remove it, before a repair
    /// replaces it; returns where, for the operator.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn back_up(
        &self,
        document: &RawDocument,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, StoreError>;
}

/// The name of a backup made at `at`: `jwkd-before-repair-20261129T120000Z`.
pub fn backup_name(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("jwkd-before-repair-{}", at.format("%Y%m%dT%H%M%SZ"))
}

/// A stored document as it is, not decoded: for `jwkd repair`.
#[derive(Clone, Debug)]
pub struct RawDocument {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The revision they are.
    pub version: Version,
}

/// Opens the configured backend.
///
/// # Errors
/// [`StoreError::Unavailable`] for a backend that cannot be set up (for AWS: no region).
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn KeyStore>, StoreError> {
    match &config.backend {
        Backend::File { path } => Ok(Arc::new(file::FileStore::new(path.clone()))),
        Backend::AwsSecretsManager {
            secret_id,
            region,
            endpoint_url,
        } => Ok(Arc::new(
            aws::SecretsManagerStore::connect(
                secret_id,
                region.as_deref(),
                endpoint_url.as_deref(),
            )
            .await?,
        )),
    }
}

/// A version token for a document: the hex SHA-256 of its bytes.
pub fn content_version(bytes: &[u8]) -> Version {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    Version(
        digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
    )
}
