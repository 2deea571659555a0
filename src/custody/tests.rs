use std::sync::Arc;

use chrono::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::keys::PrivateKey;
use crate::operation::{Operation, Planner, update_store};
use crate::store::KeyStore;
use crate::store::memory::MemoryStore;
use crate::timeline::KeyMaker as _;

fn at() -> DateTime<Utc> {
    crate::config::test_time()
}

/// A KMS key record of `alg` with a real public key (from a local key) and `arn`.
fn kms_record(alg: Algorithm, arn: &str) -> KeyRecord {
    let public = PrivateKey::generate(alg).unwrap().public_params().clone();
    KeyRecord::made(
        crate::keys::thumbprint(&public),
        alg,
        at(),
        at(),
        KeyMaterial::Kms {
            arn: arn.into(),
            public,
        },
        None,
    )
}

fn local_record(alg: Algorithm) -> KeyRecord {
    let key = PrivateKey::generate(alg).unwrap();
    KeyRecord::made(
        key.thumbprint(),
        alg,
        at(),
        at(),
        KeyMaterial::Local(key),
        None,
    )
}

/// A KMS custodian that is never called (nothing listens on port 9).
fn unreachable_custodian() -> Custodian {
    use aws_config::{BehaviorVersion, Region};
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "jwkd-tests",
        ))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    Custodian::kms(
        Kms::with_config(config),
        Owner {
            issuer: "https://issuer.test".into(),
            keyset: "memory".into(),
        },
    )
}

#[test]
fn released_names_the_kms_keys_a_change_removed_or_revoked() {
    let kept = kms_record(Algorithm::Es256, "arn:kept");
    let removed = kms_record(Algorithm::Es256, "arn:removed");
    let revoked = kms_record(Algorithm::Rs256, "arn:revoked");
    let mut was_revoked = kms_record(Algorithm::Rs256, "arn:was-revoked");
    was_revoked.revoked_at = Some(at());
    let local = local_record(Algorithm::Es256);
    let before = Keyset {
        keys: vec![
            kept.clone(),
            removed,
            revoked.clone(),
            was_revoked.clone(),
            local,
        ],
    };
    let mut now_revoked = revoked;
    now_revoked.revoked_at = Some(at());
    let after = Keyset {
        keys: vec![kept, now_revoked],
    };
    // A key revoked before the change was released by the change that revoked
    // it; a local key has nothing in KMS.
    assert_eq!(
        released(&before, &after),
        vec!["arn:removed", "arn:revoked"]
    );
    assert!(released(&after, &after).is_empty());
}

#[test]
fn the_pool_maker_hands_out_each_key_once_and_notes_what_it_lacks() {
    let es256 = kms_record(Algorithm::Es256, "arn:es256");
    let pool = vec![(
        Algorithm::Es256,
        KmsKey {
            arn: "arn:es256".into(),
            public: es256.key.public_params().clone(),
            kid: es256.kid.clone(),
        },
    )];
    let mut maker = PoolMaker::new(&pool);
    let first = maker.make(Algorithm::Es256, at(), at(), at()).unwrap();
    assert_eq!(first.kid, es256.kid);
    assert_eq!(first.key.kms_arn(), Some("arn:es256"));
    assert!(maker.missing.is_empty());
    // The pool's only ES256 key is taken: a second one, and any RS256 key, are missing.
    maker.make(Algorithm::Es256, at(), at(), at()).unwrap();
    maker.make(Algorithm::Rs256, at(), at(), at()).unwrap();
    assert_eq!(maker.missing, vec![Algorithm::Es256, Algorithm::Rs256]);
}

#[test]
fn a_signer_is_made_only_where_the_custodian_holds_the_key() {
    let kms = unreachable_custodian();
    let local = Custodian::Local;
    let kms_key = kms_record(Algorithm::Es256, "arn:k");
    let local_key = local_record(Algorithm::Es256);
    assert!(matches!(kms.signer(&kms_key), Ok(TokenSigner::Kms(_))));
    assert!(matches!(
        local.signer(&local_key),
        Ok(TokenSigner::Local(_))
    ));
    let err = kms.signer(&local_key).unwrap_err();
    assert!(err.contains("held locally"), "{err}");
    let err = local.signer(&kms_key).unwrap_err();
    assert!(err.contains("held in KMS"), "{err}");
    assert!(local.exportable() && !kms.exportable());
}

#[tokio::test]
async fn a_signature_kms_cannot_make_marks_the_custodian_unavailable() {
    let custodian = unreachable_custodian();
    let key = kms_record(Algorithm::Es256, "arn:aws:kms:us-east-1:1:key/k");
    let signer = custodian.signer(&key).unwrap();
    assert_eq!(custodian.unavailable(), None);
    let err = signer
        .sign_jws("JWT", &Map::new(), "orders")
        .await
        .unwrap_err();
    assert!(
        matches!(err, SignFailure::Kms(KmsError::Unavailable(_))),
        "{err}"
    );
    let reason = custodian
        .unavailable()
        .expect("unavailable after a failure");
    assert!(reason.starts_with("KMS is unavailable: Sign"), "{reason}");
}

#[test]
fn a_sweep_is_due_at_start_and_then_every_interval() {
    let custodian = unreachable_custodian();
    let Custodian::Kms(custody) = &custodian else {
        unreachable!("a KMS custodian")
    };
    assert!(custody.sweep_due(at()));
    assert!(!custody.sweep_due(at() + SWEEP_INTERVAL - Duration::seconds(1)));
    assert!(custody.sweep_due(at() + SWEEP_INTERVAL));
}

/// Against the emulator's KMS.
mod emulator {
    use super::*;
    use crate::keyset::Keyset;

    use crate::kms::tests::{kms, owner};

    fn custody(custodian: &Custodian) -> &KmsCustody {
        match custodian {
            Custodian::Kms(custody) => custody,
            Custodian::Local => unreachable!("a KMS custodian"),
        }
    }

    fn arns(keyset: &Keyset) -> std::collections::BTreeSet<String> {
        keyset
            .keys
            .iter()
            .filter(|key| key.revoked_at.is_none())
            .filter_map(|key| key.key.kms_arn().map(str::to_owned))
            .collect()
    }

    async fn live(kms: &Kms, owner: &Owner) -> std::collections::BTreeSet<String> {
        kms.keys_of(owner)
            .await
            .unwrap()
            .into_iter()
            .map(|key| key.arn)
            .collect()
    }

    /// Three replicas on one keyset decide at once from the same document,
    /// first on an empty store (first keys), then to rotate: each makes its
    /// KMS keys, one write wins, the two losers re-read, find the winner's
    /// keys and retire their own. Every KMS key alive afterwards is in the
    /// stored keyset: no orphan.
    #[tokio::test]
    async fn three_replicas_racing_store_one_set_of_kms_keys_and_retire_the_rest() {
        let kms = kms("three_replicas_racing_store_one_set_of_kms_keys_and_retire_the_rest");
        let owner = owner();
        let store = Arc::new(MemoryStore::default());
        let config = crate::config::fast_config_for_test(&["ES256", "RS256"]);
        let planner = Planner::new(&config);
        let clock = ManualClock::new(at());
        let replicas: Vec<Custodian> = (0..3)
            .map(|_| Custodian::kms(kms.clone(), owner.clone()))
            .collect();
        let mut report = Vec::new();
        // The first keys, then the successors due when the next keys activate.
        for (advance, operation) in [(0, Operation::Maintain), (2, Operation::Maintain)] {
            clock.advance(std::time::Duration::from_secs(advance));
            let snapshot = store.load().await.unwrap();
            let before: Vec<(u64, u64)> = replicas.iter().map(|r| custody(r).counts()).collect();
            let decide = |custodian| {
                update_store(
                    store.as_ref(),
                    &planner,
                    custodian,
                    &clock,
                    &operation,
                    Some(snapshot.clone()),
                )
            };
            let (first, second, third) = tokio::join!(
                decide(&replicas[0]),
                decide(&replicas[1]),
                decide(&replicas[2])
            );
            for result in [first, second, third] {
                result.unwrap();
            }
            let stored = store.load().await.unwrap().keyset;
            let (made, retired) = replicas
                .iter()
                .zip(&before)
                .map(|(replica, (made, retired))| {
                    let (now_made, now_retired) = custody(replica).counts();
                    (now_made - made, now_retired - retired)
                })
                .fold((0, 0), |(m, r), (made, retired)| (m + made, r + retired));
            let new_keys = stored
                .keys
                .iter()
                .filter(|key| snapshot.keyset.get(&key.kid).is_none())
                .count() as u64;
            assert!(
                snapshot
                    .keyset
                    .keys
                    .iter()
                    .all(|key| stored.get(&key.kid).is_some()),
                "nothing left the keyset in this race"
            );
            // A current and a next key per family, then a new next key per family.
            assert_eq!(new_keys, if advance == 0 { 4 } else { 2 });
            assert_eq!(
                (made, retired),
                (3 * new_keys, 2 * new_keys),
                "{operation:?}: each replica made its keys; the two losers retired theirs"
            );
            assert_eq!(
                live(&kms, &owner).await,
                arns(&stored),
                "{operation:?}: orphans"
            );
            report.push(format!(
                "{operation:?}: {made} KMS keys made, {} stored, {retired} retired, 0 orphans",
                made - retired
            ));
        }
        eprintln!("{}", report.join("\n"));
    }

    /// What a crash leaves in KMS (a key made and never stored; a key revoked
    /// in the keyset whose retirement did not happen) is swept once older
    /// than the grace, and nothing the keyset holds is.
    #[tokio::test]
    async fn the_sweep_retires_what_no_keyset_holds_once_past_the_grace() {
        let kms = kms("the_sweep_retires_what_no_keyset_holds_once_past_the_grace");
        let owner = owner();
        let custodian = Custodian::kms(kms.clone(), owner.clone());
        let custody = custody(&custodian);
        let (_, held) = custody.make_key(Algorithm::Es256).await.unwrap();
        let (_, orphan) = custody.make_key(Algorithm::Es256).await.unwrap();
        let (_, revoked) = custody.make_key(Algorithm::Rs256).await.unwrap();
        let record = |alg: Algorithm, key: &KmsKey| {
            KeyRecord::made(
                key.kid.clone(),
                alg,
                at(),
                at(),
                KeyMaterial::Kms {
                    arn: key.arn.clone(),
                    public: key.public.clone(),
                },
                None,
            )
        };
        let mut revoked_record = record(Algorithm::Rs256, &revoked);
        revoked_record.revoked_at = Some(at());
        let keyset = Keyset {
            keys: vec![record(Algorithm::Es256, &held), revoked_record],
        };
        let newest = kms
            .keys_of(&owner)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|key| key.created_at)
            .max()
            .unwrap();
        assert!(
            custody.sweep(&keyset, newest).await.unwrap().is_empty(),
            "too young"
        );
        let almost = newest + SWEEP_GRACE - Duration::seconds(1);
        assert!(
            custody.sweep(&keyset, almost).await.unwrap().is_empty(),
            "too young"
        );
        let mut swept = custody.sweep(&keyset, newest + SWEEP_GRACE).await.unwrap();
        swept.sort();
        let mut expected = vec![orphan.arn.clone(), revoked.arn.clone()];
        expected.sort();
        assert_eq!(swept, expected);
        assert_eq!(live(&kms, &owner).await, [held.arn.clone()].into());
        kms.retire(&held.arn).await.unwrap();
    }
}
