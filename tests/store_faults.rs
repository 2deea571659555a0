//! The file store failing under a running daemon (`jwkd serve`, real time, a
//! rotation every 2 s): a full disk and a store directory turned read-only.
//! Each leaves the last good keyset served and stored, `/readyz` saying why,
//! and the daemon recovers by itself once the fault clears.
//!
//! The store lives on a small tmpfs mounted for the test (root only, as CI
//! runs), so the disk can really fill and really turn read-only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{TestConfig, TestDir};

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
pub(crate) struct Tmpfs {
    _parent: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

impl Tmpfs {
    pub(crate) fn mount(size: &str) -> Tmpfs {
        let me = std::fs::metadata("/proc/self")
            .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta))
            .unwrap_or(u32::MAX);
        assert_eq!(
            me, 0,
            "this test mounts a tmpfs to fill it, which needs root; run the suite as root \
             (CI does)"
        );
        let parent = tempfile::tempdir().expect("a temp dir");
        let path = parent.path().join("store");
        std::fs::create_dir(&path).unwrap();
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ],
            &path,
        );
        Tmpfs {
            _parent: parent,
            path,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn mount(args: &[&str], at: &Path) {
    let status = Command::new("mount")
        .args(args)
        .arg(at)
        .status()
        .expect("run mount");
    assert!(status.success(), "mount {args:?} {} failed", at.display());
}

/// Fills the file system of `dir` with one file, to the last byte.
pub(crate) fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(28) => break, // ENOSPC
            Err(err) => panic!("filling {}: {err}", path.display()),
        }
    }
    // The last partial block.
    while file.write(&[0]).is_ok_and(|written| written == 1) {}
    path
}

fn config(store: &Path) -> String {
    TestConfig::fast()
        .set(
            "store",
            "path",
            store.join("keyset.json").display().to_string(),
        )
        .build()
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// The store faults, one after the other, on one daemon.
fn survives(fault: impl FnOnce(&Tmpfs) -> Box<dyn FnOnce()>, reason: &str, cause: &str) {
    let tmpfs = Tmpfs::mount("256k");
    let dir = TestDir::new(&config(&tmpfs.path));
    let daemon = dir.serve();
    daemon.wait_ready(Duration::from_secs(20));
    let stored = std::fs::read(tmpfs.path.join("keyset.json")).unwrap();
    let before = daemon.jwks_kids(true);

    let clear = fault(&tmpfs);
    // A rotation comes due every 2 s and cannot be stored.
    assert!(
        eventually(Duration::from_secs(10), || {
            let ready = daemon.get("/readyz");
            ready.status == 503 && ready.text().contains(reason)
        }),
        "/readyz never said {reason:?}: {}\n---- daemon ----\n{}",
        daemon.get("/readyz"),
        daemon.stderr_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    // The log names the cause.
    assert!(
        daemon.stderr_text().contains(cause),
        "{}",
        daemon.stderr_text()
    );
    // Nothing was lost: what was stored is stored, what was served is served.
    assert_eq!(
        std::fs::read(tmpfs.path.join("keyset.json")).unwrap(),
        stored,
        "the stored keyset changed under the fault"
    );
    let keyset = jwkd::keyset::Keyset::from_document(&stored).expect("the stored keyset loads");
    // What is served is stored; the key with no successor (the last one
    // stored) keeps being served: it signs until a successor can be stored.
    // Keys may leave by their stored times (expired), never otherwise.
    let served = daemon.jwks_kids(true);
    let stored_kids: std::collections::BTreeSet<String> =
        keyset.keys.iter().map(|key| key.kid.clone()).collect();
    assert!(served.is_subset(&stored_kids), "an unstored key is served");
    for key in keyset
        .keys
        .iter()
        .filter(|key| key.deactivates_at.is_none())
    {
        assert!(served.contains(&key.kid), "{} left the JWKS", key.kid);
    }
    assert!(!before.is_empty());
    let leftovers: Vec<String> = std::fs::read_dir(&tmpfs.path)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !["keyset.json", "keyset.json.lock", "filler"].contains(&name.as_str()))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    clear();
    assert!(
        eventually(Duration::from_secs(10), || daemon.get("/readyz").status
            == 200),
        "not ready again after the fault cleared: {}\n---- daemon ----\n{}",
        daemon.get("/readyz"),
        daemon.stderr_text()
    );
    assert_ne!(
        std::fs::read(tmpfs.path.join("keyset.json")).unwrap(),
        stored,
        "the rotations due were not stored after the fault cleared"
    );
    assert!(
        daemon.stderr_text().contains("is reachable again after"),
        "{}",
        daemon.stderr_text()
    );
}

#[test]
fn a_full_disk_loses_nothing_and_recovers_by_itself() {
    survives(
        |tmpfs| {
            let filler = fill(&tmpfs.path);
            Box::new(move || std::fs::remove_file(filler).unwrap())
        },
        "the keyset store is unavailable",
        "No space left on device",
    );
}

#[test]
fn a_read_only_store_loses_nothing_and_recovers_by_itself() {
    survives(
        |tmpfs| {
            mount(&["-o", "remount,ro"], &tmpfs.path);
            let path = tmpfs.path.clone();
            Box::new(move || mount(&["-o", "remount,rw"], &path))
        },
        "the keyset store is unavailable",
        "Read-only file system",
    );
}
