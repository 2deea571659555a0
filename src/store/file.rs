//! The file backend: one JSON document on local disk.
//!
//! A write takes an exclusive advisory lock on `<path>.lock`, checks that the
//! file still has the writer's base version (its SHA-256), writes a temp file in
//! the same directory, fsyncs it, renames it over the document and fsyncs the
//! directory. Readers need no lock: a rename is atomic, so they see the old or
//! the new document, never a mix. The lock is what lets `jwkd rotate` run beside
//! a daemon without losing a write.
//!
//! Against another local user: the directory and the document must not be
//! writable by group or others, nor belong to another non-root user
//! (`FileStore::check_ownership`), or the store refuses to read or write;
//! the lock, temporary and backup files are opened without following symbolic
//! links, the temporary file under an unpredictable name with exclusive
//! creation. Run as root (`sudo jwkd rotate` beside the service), every file
//! jwkd writes takes the owner, group and mode of the document it replaces (or
//! the directory's owner), so the service can still read it.
//!
//! The store's clock is the file system's: each load also writes the lock file
//! and reads back the modification time it got (`FileStore::probe_clock`). On a
//! local disk that is this host's own clock; on a file system shared between
//! hosts it is the server's, which is what replicas must agree with.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{KeyStore, RawDocument, Snapshot, StoreError, Version, backup_name, content_version};
use crate::clock::StoreStamp;
use crate::keyset::Keyset;

/// How far a file system's timestamps may lag its clock (a scheduler tick, with room).
const FS_CLOCK_TICK_MS: i64 = 20;

/// A keyset kept in a local file.
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store for the document at `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> FileStore {
        FileStore { path }
    }

    fn unavailable(&self, what: &str, err: std::io::Error) -> StoreError {
        StoreError::Unavailable {
            location: self.path.display().to_string(),
            reason: format!("{what}: {err}"),
        }
    }

    fn read(&self) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                let version = content_version(&bytes);
                Ok(Some((bytes, version)))
            }
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(self.unavailable("cannot read", err)),
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<Keyset, StoreError> {
        Keyset::from_document(bytes).map_err(|reason| StoreError::Corrupt {
            location: self.path.display().to_string(),
            reason,
        })
    }

    /// Refuses a directory or document another user could change: writable by
    /// group or others, or owned by a user other than this one or root (root
    /// itself may use a service user's directory: it writes as that user).
    fn check_ownership(&self) -> Result<(), StoreError> {
        let refuse = |reason: String| StoreError::Unavailable {
            location: self.path.display().to_string(),
            reason,
        };
        let me = effective_uid();
        let check = |what: &str, path: &Path, meta: &fs::Metadata| {
            let mode = meta.mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(refuse(format!(
                    "the {what} {} is writable by {} (mode {mode:04o}): another user could \
                     replace the keyset; run `chmod go-w {}`",
                    path.display(),
                    if mode & 0o002 != 0 {
                        "others"
                    } else {
                        "its group"
                    },
                    path.display()
                )));
            }
            if let Some(me) = me
                && me != 0
                && meta.uid() != me
                && meta.uid() != 0
            {
                return Err(refuse(format!(
                    "the {what} {} belongs to user {}, not to this user ({me}) or root: that \
                     user could replace the keyset",
                    path.display(),
                    meta.uid()
                )));
            }
            Ok(())
        };
        let dir = self.directory();
        match fs::metadata(dir) {
            Ok(meta) => check("store directory", dir, &meta)?,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(self.unavailable("cannot inspect the store directory", err)),
        }
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_symlink() => Err(refuse(format!(
                "{} is a symbolic link: jwkd keeps the keyset in a file of its own",
                self.path.display()
            ))),
            Ok(meta) => check("keyset file", &self.path, &meta),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(self.unavailable("cannot inspect", err)),
        }
    }

    /// Who files jwkd creates belong to, and the mode the document gets: those
    /// of the document it replaces, else the directory's owner and 0600.
    fn file_owner(&self) -> (Option<(u32, u32)>, u32) {
        match fs::metadata(&self.path) {
            Ok(meta) => (Some((meta.uid(), meta.gid())), meta.mode() & 0o777),
            Err(_) => (
                fs::metadata(self.directory())
                    .ok()
                    .map(|meta| (meta.uid(), meta.gid())),
                0o600,
            ),
        }
    }

    /// Creates (or, for the lock file, opens) `path` for writing without
    /// following a symbolic link there; run as root, hands it to `owner`.
    fn open_private(
        &self,
        path: &Path,
        exclusive: bool,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> std::io::Result<File> {
        let mut options = OpenOptions::new();
        options
            .write(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        if exclusive {
            options.create_new(true);
        } else {
            options.create(true).truncate(false);
        }
        let file = options.open(path).map_err(|err| {
            if err.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(format!(
                    "{} is a symbolic link, which jwkd does not follow (another user may have \
                     planted it)",
                    path.display()
                ))
            } else {
                err
            }
        })?;
        if effective_uid() == Some(0)
            && let Some((uid, gid)) = owner
        {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        Ok(file)
    }

    fn load_blocking(&self) -> Result<Snapshot, StoreError> {
        self.check_ownership()?;
        let store_stamp = self.probe_clock();
        match self.read()? {
            None => Ok(Snapshot {
                store_stamp,
                ..Snapshot::default()
            }),
            Some((bytes, version)) => Ok(Snapshot {
                keyset: self.decode(&bytes)?,
                version: Some(version),
                store_stamp,
            }),
        }
    }

    /// The file system's clock: write the lock file, read back the modification
    /// time the file system stamped. `None` where the lock file cannot be
    /// written (a reader without write access): nothing to compare.
    fn probe_clock(&self) -> Option<StoreStamp> {
        use std::os::unix::fs::FileExt;
        let lock = self.open_lock_file().ok()?;
        let sent = std::time::Instant::now();
        lock.write_all_at(b"\n", 0).ok()?;
        let modified = lock.metadata().ok()?.modified().ok()?;
        // File systems stamp with a coarse clock that lags by up to a tick.
        Some(StoreStamp::after(
            sent,
            modified.into(),
            chrono::Duration::milliseconds(FS_CLOCK_TICK_MS),
        ))
    }

    fn directory(&self) -> &Path {
        self.path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    fn open_lock_file(&self) -> Result<File, StoreError> {
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let (owner, _) = self.file_owner();
        self.open_private(Path::new(&lock_path), false, 0o600, owner)
            .map_err(|err| self.unavailable("cannot open the lock file", err))
    }

    fn lock(&self) -> Result<File, StoreError> {
        let dir = self.directory();
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|err| self.unavailable("cannot create the directory", err))?;
        }
        let lock = self.open_lock_file()?;
        lock.lock()
            .map_err(|err| self.unavailable("cannot lock", err))?;
        Ok(lock)
    }

    fn compare_and_swap_blocking(
        &self,
        base: Option<&Version>,
        keyset: &Keyset,
    ) -> Result<Version, StoreError> {
        self.check_ownership()?;
        // Held until the end of this function: released when dropped.
        let _lock = self.lock()?;
        let stored = self.read()?;
        let stored_version = stored.as_ref().map(|(_, version)| version);
        if stored_version != base {
            if let Some((bytes, _)) = &stored {
                // A corrupt document must surface as such, not as a conflict to retry.
                self.decode(bytes)?;
            }
            return Err(StoreError::Conflict {
                location: self.path.display().to_string(),
            });
        }
        let bytes = keyset.to_document();
        self.write_atomically(&bytes)?;
        Ok(content_version(&bytes))
    }

    /// Writes `document` to a new file beside the store, mode 0600, durably.
    fn back_up_blocking(
        &self,
        document: &RawDocument,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, StoreError> {
        let file_name = self
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "keyset".into());
        let path = self
            .directory()
            .join(format!("{file_name}.{}", backup_name(at)));
        let (owner, _) = self.file_owner();
        let result = (|| {
            let mut file = self.open_private(&path, true, 0o600, owner)?;
            file.write_all(&document.bytes)?;
            file.sync_all()?;
            File::open(self.directory())?.sync_all()
        })();
        result.map_err(|err| {
            self.unavailable(&format!("cannot write the backup {}", path.display()), err)
        })?;
        Ok(path.display().to_string())
    }

    fn write_atomically(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = self.directory();
        let file_name = self
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "keyset".into());
        // Unpredictable, and created exclusively: nothing can be planted there.
        let temp_path = dir.join(format!(".{file_name}.tmp-{:016x}", rand::random::<u64>()));
        let (owner, mode) = self.file_owner();
        let result = (|| {
            let mut temp = self.open_private(&temp_path, true, 0o600, owner)?;
            // The mode the replaced document had, exactly (not narrowed by the umask).
            temp.set_permissions(fs::Permissions::from_mode(mode))?;
            temp.write_all(bytes)?;
            temp.sync_all()?;
            drop(temp);
            fs::rename(&temp_path, &self.path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(err) = result {
            let _ = fs::remove_file(&temp_path);
            return Err(self.unavailable("cannot write", err));
        }
        Ok(())
    }
}

/// This process's effective user id: the owner of `/proc/self`.
fn effective_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|meta| meta.uid())
}

#[async_trait::async_trait]
impl KeyStore for FileStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.load_blocking())
            .await
            .unwrap_or_else(|err| {
                Err(self.unavailable("load task failed", std::io::Error::other(err)))
            })
    }

    async fn compare_and_swap(
        &self,
        base: Option<&Version>,
        keyset: &Keyset,
    ) -> Result<Version, StoreError> {
        let store = self.clone();
        let base = base.cloned();
        let keyset = keyset.clone();
        tokio::task::spawn_blocking(move || store.compare_and_swap_blocking(base.as_ref(), &keyset))
            .await
            .unwrap_or_else(|err| {
                Err(self.unavailable("write task failed", std::io::Error::other(err)))
            })
    }

    async fn load_raw(&self) -> Result<Option<RawDocument>, StoreError> {
        let store = self.clone();
        let read = tokio::task::spawn_blocking(move || {
            store.check_ownership()?;
            store.read()
        })
        .await
        .unwrap_or_else(|err| {
            Err(self.unavailable("load task failed", std::io::Error::other(err)))
        })?;
        Ok(read.map(|(bytes, version)| RawDocument { bytes, version }))
    }

    async fn back_up(
        &self,
        document: &RawDocument,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, StoreError> {
        let store = self.clone();
        let document = document.clone();
        tokio::task::spawn_blocking(move || store.back_up_blocking(&document, at))
            .await
            .unwrap_or_else(|err| {
                Err(self.unavailable("backup task failed", std::io::Error::other(err)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_is_private_and_corruption_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/keyset.json");
        let store = FileStore::new(path.clone());
        let version = store
            .compare_and_swap(None, &Keyset::default())
            .await
            .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        fs::write(&path, b"{\"format\": 1, \"keys\": [").unwrap();
        let err = store.load().await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let err = store
            .compare_and_swap(Some(&version), &Keyset::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"{\"format\": 1, \"keys\": [");
    }
}
