//! An in-memory store for unit tests of logic, with switches to make it fail.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{KeyStore, RawDocument, Snapshot, StoreError, Version, content_version};
use crate::clock::StoreStamp;
use crate::keyset::Keyset;

/// A keyset held in memory as its encoded document.
#[derive(Debug, Default)]
pub struct MemoryStore {
    document: Mutex<Option<Vec<u8>>>,
    /// While set, every call fails with [`StoreError::Unavailable`].
    pub unavailable: AtomicBool,
    /// While set, reads work and every write fails with [`StoreError::Unavailable`].
    pub fail_writes: AtomicBool,
    /// Successful writes so far.
    pub writes: AtomicUsize,
    /// What every load reports as the store's clock.
    pub store_stamp: Mutex<Option<StoreStamp>>,
    /// Documents kept by [`KeyStore::back_up`].
    pub backups: Mutex<Vec<Vec<u8>>>,
    /// When set, each write first moves this clock on by this much: a store
    /// that is slow to write, on a manual clock.
    pub write_takes: Mutex<
        Option<(
            std::sync::Arc<crate::clock::ManualClock>,
            std::time::Duration,
        )>,
    >,
}

impl MemoryStore {
    fn check_available(&self) -> Result<(), StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                location: self.location(),
                reason: "switched off by the test".into(),
            });
        }
        Ok(())
    }

    /// Replaces the stored bytes as they are, for corruption tests.
    pub fn put_raw(&self, bytes: Vec<u8>) {
        *self.document.lock().expect("memory store lock") = Some(bytes);
    }
}

#[async_trait::async_trait]
impl KeyStore for MemoryStore {
    fn location(&self) -> String {
        "memory".into()
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.check_available()?;
        let document = self.document.lock().expect("memory store lock").clone();
        let store_stamp = *self.store_stamp.lock().expect("memory store lock");
        match document {
            None => Ok(Snapshot {
                store_stamp,
                ..Snapshot::default()
            }),
            Some(bytes) => Ok(Snapshot {
                keyset: Keyset::from_document(&bytes).map_err(|reason| StoreError::Corrupt {
                    location: self.location(),
                    reason,
                })?,
                version: Some(content_version(&bytes)),
                store_stamp,
            }),
        }
    }

    async fn compare_and_swap(
        &self,
        base: Option<&Version>,
        keyset: &Keyset,
    ) -> Result<Version, StoreError> {
        self.check_available()?;
        if let Some((clock, takes)) = &*self.write_takes.lock().expect("memory store lock") {
            clock.advance(*takes);
        }
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                location: self.location(),
                reason: "writes switched off by the test".into(),
            });
        }
        let mut document = self.document.lock().expect("memory store lock");
        let stored = document.as_deref().map(content_version);
        if stored.as_ref() != base {
            return Err(StoreError::Conflict {
                location: self.location(),
            });
        }
        let bytes = keyset.to_document();
        let version = content_version(&bytes);
        *document = Some(bytes);
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(version)
    }

    async fn load_raw(&self) -> Result<Option<RawDocument>, StoreError> {
        self.check_available()?;
        let document = self.document.lock().expect("memory store lock").clone();
        Ok(document.map(|bytes| RawDocument {
            version: content_version(&bytes),
            bytes,
        }))
    }

    async fn back_up(
        &self,
        document: &RawDocument,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, StoreError> {
        self.check_available()?;
        let mut backups = self.backups.lock().expect("memory store lock");
        backups.push(document.bytes.clone());
        Ok(format!(
            "memory backup {} ({})",
            backups.len(),
            super::backup_name(at)
        ))
    }
}
