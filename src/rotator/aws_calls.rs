//! What the rotators of one to three replicas cost in Secrets Manager API
//! calls, counted against the emulator over real rotations (e2e profile: it
//! needs the emulator, whose answers carry the real time). Here, not in the
//! store's tests, because it drives the rotator: the store never imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock as _, SystemClock};
use crate::keys::Algorithm;
use crate::keyset::Keyset;
use crate::rotator::Rotator;
use crate::state::Shared;
use crate::store::KeyStore;
use crate::store::aws::SecretsManagerStore;
use crate::store::aws::tests::{Recorder, config_builder, endpoint, unique_secret_id};

/// Runs `replicas` rotators on one fresh secret and counts the calls they make
/// in a `window` that starts half a second after a rotation instant (an even
/// second); returns the counts, the keyset stored at the end, and the
/// rotations made in the window (on a loaded machine a rotation can slip out
/// of it or into it, so they are counted rather than assumed).
async fn count_calls(
    endpoint: &str,
    replicas: usize,
    schedule: &str,
    refresh_interval: &str,
    window: Duration,
) -> (BTreeMap<String, usize>, Keyset, usize) {
    let config = crate::config::Config::parse(
        &format!(
            r#"
            [keys]
            algorithms = ["ES256", "EdDSA"]
            rotation_schedule = "{schedule}"
            jwks_max_age = "1s"
            clock_skew = "0s"
            max_token_lifetime = "3s"
            [store]
            refresh_interval = "{refresh_interval}"
            "#
        ),
        std::path::Path::new("/tmp/jwkd-aws-calls.toml"),
        SystemClock.now(),
    )
    .unwrap();
    let secret_id = unique_secret_id("calls");
    let recorder = Recorder::default();
    let mut tasks = Vec::new();
    for _ in 0..replicas {
        let store = SecretsManagerStore::with_config(
            config_builder(endpoint)
                .interceptor(recorder.clone())
                .build(),
            &secret_id,
        );
        let shared = Arc::new(Shared::new(config.clone()).unwrap());
        let mut rotator = Rotator::new(Arc::new(store), Arc::new(SystemClock), shared);
        tasks.push(tokio::spawn(async move {
            loop {
                let sleep = rotator.tick().await;
                tokio::time::sleep(sleep).await;
            }
        }));
    }
    // Let the first keys be made, then start half a second after a rotation instant.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The rotators' clock: they rotate on its even seconds.
    let now = SystemClock.now();
    let to_next_even_second = Duration::from_secs(2 - u64::try_from(now.timestamp() % 2).unwrap())
        - Duration::from_nanos(u64::from(now.timestamp_subsec_nanos()));
    tokio::time::sleep(to_next_even_second + Duration::from_millis(500)).await;
    recorder.sent.lock().unwrap().clear();
    let from = SystemClock.now();
    tokio::time::sleep(window).await;
    let mut counts = BTreeMap::new();
    for sent in recorder.sent() {
        *counts.entry(sent.operation).or_default() += 1;
    }
    let to = SystemClock.now();
    for task in tasks {
        task.abort();
    }
    let reader = SecretsManagerStore::with_config(config_builder(endpoint).build(), &secret_id);
    let keyset = reader.load().await.unwrap().keyset;
    // Each rotation makes one successor per family; keys live past the window.
    let rotations = keyset
        .keys
        .iter()
        .filter(|key| key.alg == Algorithm::Es256 && (from..=to).contains(&key.created_at))
        .count();
    (counts, keyset, rotations)
}

/// What jwkd costs in API calls: a refresh is one `GetSecretValue`; a rotation
/// written by one replica is one `PutSecretValue` and one
/// `UpdateSecretVersionStage`; with three replicas racing for it, each loser adds
/// a put, a failed label move and two reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_per_refresh_and_per_rotation() {
    let endpoint = endpoint("api_calls_per_refresh_and_per_rotation");
    // Three windows at once, each on its own secret: refreshes only (a daily
    // schedule), then rotations with one and with three replicas. Each rotation
    // window spans exactly 3 rotation instants. The lead covers the refresh
    // interval, so a 2 s schedule with a 1 s max-age re-reads every 500 ms: the
    // rotation windows also hold one read per refresh per replica.
    let rotation_window = Duration::from_secs(6);
    let (refreshes, one, three) = tokio::join!(
        count_calls(&endpoint, 1, "0 3 * * *", "1s", Duration::from_millis(5500)),
        count_calls(&endpoint, 1, "*/2 * * * * *", "500ms", rotation_window),
        count_calls(&endpoint, 3, "*/2 * * * * *", "500ms", rotation_window),
    );
    eprintln!(
        "API calls, 1 replica, refresh_interval 1s, 5.5 s, no rotation: {:?}",
        refreshes.0
    );
    eprintln!("API calls, 1 replica, 3 rotations, 6 s: {:?}", one.0);
    eprintln!("API calls, 3 replicas, 3 rotations, 6 s: {:?}", three.0);

    let gets = refreshes.0.get("GetSecretValue").copied().unwrap_or(0);
    assert_eq!(
        refreshes.0.len(),
        1,
        "a refresh only reads: {:?}",
        refreshes.0
    );
    assert!(
        (5..=6).contains(&gets),
        "{gets} reads in 5.5 s at one per second"
    );

    let rotations = one.2;
    assert!(
        (2..=4).contains(&rotations),
        "{rotations} rotations in a 6 s window of a 2 s schedule"
    );
    // At most one read per refresh interval per replica in the 6 s window.
    let refresh_reads = 12 + 1;
    let one_count = |operation: &str| one.0.get(operation).copied().unwrap_or(0);
    // One put and one label move per rotation; the SDK may resend a label
    // move whose answer was slow (seen once on a loaded machine).
    assert_eq!(
        one_count("PutSecretValue"),
        rotations,
        "one replica: one put per rotation: {:?}",
        one.0
    );
    assert!(
        (rotations..=rotations + 1).contains(&one_count("UpdateSecretVersionStage")),
        "one replica: one label move per rotation: {:?}",
        one.0
    );
    assert!(
        one_count("GetSecretValue") <= refresh_reads,
        "one replica reads only to refresh: {:?}",
        one.0
    );
    assert_eq!(
        one.0.len(),
        3,
        "only reads, puts and label moves: {:?}",
        one.0
    );

    let count = |operation: &str| three.0.get(operation).copied().unwrap_or(0);
    let rotations = three.2;
    assert!(count("PutSecretValue") <= 3 * rotations, "{:?}", three.0);
    assert!(
        count("UpdateSecretVersionStage") <= 3 * rotations,
        "{:?}",
        three.0
    );
    assert!(
        count("GetSecretValue") <= 3 * refresh_reads + 2 * 2 * rotations,
        "{:?}",
        three.0
    );
    // However many replicas raced, each family got one successor per rotation.
    for (keyset, replicas) in [(&one.1, 1), (&three.1, 3)] {
        for alg in [Algorithm::Es256, Algorithm::EdDsa] {
            let activations: Vec<_> = keyset
                .keys
                .iter()
                .filter(|key| key.alg == alg)
                .map(|key| key.activates_at)
                .collect();
            let distinct: BTreeSet<_> = activations.iter().collect();
            assert_eq!(
                distinct.len(),
                activations.len(),
                "{replicas} replicas, {alg}: two keys for one rotation: {activations:?}"
            );
        }
    }
}
