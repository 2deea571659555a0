//! The store contract: one suite, instantiated per backend (rustls' per-provider
//! tests, ripgrep's `rgtest!`). A new backend adds one `store_contract!` line.

use std::sync::Arc;

use chrono::Utc;

use super::{KeyStore, StoreError};
use crate::generator::Generator;
use crate::keys::Algorithm;
use crate::keyset::Keyset;
use crate::timeline::KeyMaker;

pub fn keyset(algs: &[Algorithm]) -> Keyset {
    let mut generator = Generator {
        x5c: true,
        clock_skew: chrono::Duration::seconds(60),
    };
    let now = Utc::now();
    Keyset {
        keys: algs
            .iter()
            .map(|alg| {
                generator
                    .make(
                        *alg,
                        now,
                        now + chrono::Duration::minutes(5),
                        now + chrono::Duration::hours(1),
                    )
                    .unwrap()
            })
            .collect(),
    }
}

pub async fn empty_store_loads_empty(store: Arc<dyn KeyStore>) {
    let snapshot = store.load().await.unwrap();
    assert!(snapshot.version.is_none());
    assert!(snapshot.keyset.keys.is_empty());
}

pub async fn write_then_read_back(store: Arc<dyn KeyStore>) {
    let keyset = keyset(&Algorithm::ALL);
    let version = store.compare_and_swap(None, &keyset).await.unwrap();
    let snapshot = store.load().await.unwrap();
    assert_eq!(snapshot.version.as_ref(), Some(&version));
    assert_eq!(snapshot.keyset, keyset);
}

pub async fn stale_base_conflicts_and_changes_nothing(store: Arc<dyn KeyStore>) {
    let first = keyset(&[Algorithm::Es256]);
    let v1 = store.compare_and_swap(None, &first).await.unwrap();
    let second = keyset(&[Algorithm::EdDsa]);
    let v2 = store.compare_and_swap(Some(&v1), &second).await.unwrap();
    assert_ne!(v1, v2);
    let err = store.compare_and_swap(Some(&v1), &first).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store.compare_and_swap(None, &first).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let snapshot = store.load().await.unwrap();
    assert_eq!(snapshot.keyset, second);
    assert_eq!(snapshot.version, Some(v2));
}

pub async fn concurrent_writers_from_one_base_one_wins(store: Arc<dyn KeyStore>) {
    let base = store
        .compare_and_swap(None, &keyset(&[Algorithm::Es256]))
        .await
        .unwrap();
    let candidates: Vec<Keyset> = (0..8).map(|_| keyset(&[Algorithm::Es256])).collect();
    let tasks: Vec<_> = candidates
        .iter()
        .cloned()
        .map(|candidate| {
            let store = Arc::clone(&store);
            let base = base.clone();
            tokio::spawn(async move { store.compare_and_swap(Some(&base), &candidate).await })
        })
        .collect();
    let mut winners = Vec::new();
    for (candidate_idx, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => winners.push(candidate_idx),
            Err(StoreError::Conflict { .. }) => {}
            Err(err) => panic!("writer {candidate_idx}: {err}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = store.load().await.unwrap().keyset;
    assert_eq!(stored, candidates[winners[0]]);
}

macro_rules! store_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn empty_store_loads_empty() {
                let (store, _guard) = $make;
                super::empty_store_loads_empty(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn write_then_read_back() {
                let (store, _guard) = $make;
                super::write_then_read_back(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stale_base_conflicts_and_changes_nothing() {
                let (store, _guard) = $make;
                super::stale_base_conflicts_and_changes_nothing(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_writers_from_one_base_one_wins() {
                let (store, _guard) = $make;
                super::concurrent_writers_from_one_base_one_wins(store).await;
            }
        }
    };
}

store_contract!(memory, {
    let store: Arc<dyn KeyStore> = Arc::new(crate::store::memory::MemoryStore::default());
    (store, ())
});

store_contract!(file, {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(crate::store::file::FileStore::new(
        dir.path().join("keyset.json"),
    ));
    (store, dir)
});

store_contract!(aws, {
    let store: Arc<dyn KeyStore> =
        crate::store::aws::tests::store_for_tests("store contract suite");
    (store, ())
});
