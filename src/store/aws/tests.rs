//! Tests of the Secrets Manager backend.
//!
//! Most run against the emulator `scripts/test` starts (moto, in server mode),
//! whose URL is in `JWKD_TEST_SM_ENDPOINT`; without it they print loudly which
//! suite they skipped. Each test uses a secret of its own, so they run in parallel
//! on one emulator.
//!
//! moto accepts two requests real Secrets Manager rejects (a token reused with new
//! data on a version labelled `AWSPENDING`, and a label moved without
//! `RemoveFromVersionId`), so a buggy writer could pass against it. The
//! [`Recorder`] interceptor therefore pins what jwkd *sends*, request by request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_secretsmanager::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
};
use aws_sdk_secretsmanager::error::BoxError;
use serde_json::Value;

use super::*;
use crate::keys::Algorithm;
use crate::store::contract::keyset;

/// The emulator's URL, set by `scripts/test`.
pub const ENDPOINT_VAR: &str = "JWKD_TEST_SM_ENDPOINT";

/// The emulator's URL, or `None` after saying loudly on stderr that `suite` was skipped.
pub fn endpoint(suite: &str) -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => url,
        // Never a pass for work not done: `cargo nextest run` leaves these
        // tests out (its default profile), `--profile e2e` runs them.
        _ => panic!(
            "{suite} needs the Secrets Manager emulator: {ENDPOINT_VAR} is not set. Run \
             ./scripts/test, which installs moto and starts it, or see the README's \
             \"Running one backend test by hand\"."
        ),
    }
}

/// A client configuration for the emulator: static credentials, the production
/// timeouts and retries.
pub fn config_builder(endpoint: &str) -> aws_sdk_secretsmanager::config::Builder {
    aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "jwkd-tests"))
        .endpoint_url(endpoint)
        .timeout_config(timeout_config())
        .retry_config(retry_config())
}

/// A secret id no other test uses.
pub fn unique_secret_id(label: &str) -> String {
    format!("jwkd-test/{label}-{:016x}", rand::random::<u64>())
}

/// A store on a fresh secret in the emulator (a test without one fails).
pub fn store_for_tests(suite: &str) -> Arc<dyn KeyStore> {
    Arc::new(SecretsManagerStore::with_config(
        config_builder(&endpoint(suite)).build(),
        &unique_secret_id("contract"),
    ))
}

/// One request as it went on the wire: the operation and its JSON body, with
/// `SecretString` replaced by the SHA-256 of the document (never the keys).
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    pub(crate) operation: String,
    body: Value,
}

impl Sent {
    fn field(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(Value::as_str)
    }
}

/// Records every attempt of every call, and can lose the answer to the next
/// call of an operation (the server did the work; the client sees a 500 and retries).
#[derive(Clone, Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) sent: Arc<Mutex<Vec<Sent>>>,
    lose_next_answer_of: Arc<Mutex<BTreeSet<String>>>,
    in_flight: Arc<Mutex<Option<String>>>,
}

impl Recorder {
    pub(crate) fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("recorder lock").clone()
    }

    fn of(&self, operation: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|sent| sent.operation == operation)
            .collect()
    }

    fn lose_next_answer_of(&self, operation: &str) {
        self.lose_next_answer_of
            .lock()
            .expect("recorder lock")
            .insert(operation.to_owned());
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "jwkd-test-recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or("?")
            .to_owned();
        let mut body: Value = serde_json::from_slice(request.body().bytes().unwrap_or(b"{}"))?;
        if let Some(secret) = body.get_mut("SecretString") {
            let text = secret.as_str().unwrap_or_default();
            *secret = Value::from(format!(
                "sha256:{}",
                super::super::content_version(text.as_bytes()).0
            ));
        }
        *self.in_flight.lock().expect("recorder lock") = Some(operation.clone());
        self.sent
            .lock()
            .expect("recorder lock")
            .push(Sent { operation, body });
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = self.in_flight.lock().expect("recorder lock").take();
        let lose = operation.is_some_and(|operation| {
            self.lose_next_answer_of
                .lock()
                .expect("recorder lock")
                .remove(&operation)
        });
        if lose {
            *context.response_mut().status_mut() = 500u16.try_into()?;
        }
        Ok(())
    }
}

fn recorded_store(endpoint: &str, secret_id: &str) -> (SecretsManagerStore, Recorder) {
    let recorder = Recorder::default();
    let config = config_builder(endpoint)
        .interceptor(recorder.clone())
        .build();
    (
        SecretsManagerStore::with_config(config, secret_id),
        recorder,
    )
}

/// Every `UpdateSecretVersionStage` jwkd sent moved `AWSCURRENT` from a named
/// version to a named version; every `PutSecretValue` carried a token and only
/// jwkd's label; no token was ever sent with two different documents.
fn assert_protocol(sent: &[Sent]) {
    for request in sent {
        match request.operation.as_str() {
            "UpdateSecretVersionStage" => {
                assert_eq!(
                    request.field("VersionStage"),
                    Some(CURRENT_LABEL),
                    "{request:?}"
                );
                assert!(
                    request.field("RemoveFromVersionId").is_some(),
                    "a label moved without RemoveFromVersionId: {request:?}"
                );
                assert!(request.field("MoveToVersionId").is_some(), "{request:?}");
            }
            "PutSecretValue" => {
                assert_eq!(
                    request.body.get("VersionStages"),
                    Some(&serde_json::json!([PENDING_LABEL])),
                    "{request:?}"
                );
                let token = request.field("ClientRequestToken").unwrap_or_default();
                assert!((32..=64).contains(&token.len()), "{request:?}");
            }
            "CreateSecret" => {
                let token = request.field("ClientRequestToken").unwrap_or_default();
                assert!((32..=64).contains(&token.len()), "{request:?}");
            }
            "GetSecretValue" => {
                assert_eq!(
                    request.field("VersionStage"),
                    Some(CURRENT_LABEL),
                    "{request:?}"
                );
            }
            other => panic!("jwkd called {other}, which is not in its IAM policy: {request:?}"),
        }
    }
    let mut documents_of_token: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for request in sent {
        if let (Some(token), Some(document)) = (
            request.field("ClientRequestToken"),
            request.field("SecretString"),
        ) {
            documents_of_token
                .entry(token)
                .or_default()
                .insert(document);
        }
    }
    for (token, documents) in documents_of_token {
        assert_eq!(
            documents.len(),
            1,
            "token {token} sent with {} different documents",
            documents.len()
        );
    }
}

#[test]
fn client_request_token_is_a_function_of_base_and_document() {
    let v1 = Version("a".repeat(64));
    let v2 = Version("b".repeat(64));
    let token = client_request_token(Some(&v1), b"document one");
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    assert_eq!(token, client_request_token(Some(&v1), b"document one"));
    let others = [
        client_request_token(Some(&v1), b"document two"),
        client_request_token(Some(&v2), b"document one"),
        client_request_token(None, b"document one"),
    ];
    for other in &others {
        assert_ne!(&token, other);
    }
    // The base is length-prefixed: moving bytes between base and document changes the token.
    assert_ne!(
        client_request_token(Some(&Version("ab".into())), b"c"),
        client_request_token(Some(&Version("a".into())), b"bc")
    );
}

#[test]
fn typical_keysets_fit_in_a_secret() {
    // A family in steady state holds a retired, a current and a next key.
    let cases: [(&str, Vec<Algorithm>); 3] = [
        ("ES256", vec![Algorithm::Es256; 3]),
        (
            "ES256 + RS256",
            [Algorithm::Es256, Algorithm::Rs256].repeat(3),
        ),
        ("all four families", Algorithm::ALL.repeat(3)),
    ];
    for (name, algs) in cases {
        let size = keyset(&algs).to_document().len();
        eprintln!("keyset document, {name}, 3 keys per family, x5c: {size} bytes");
        assert!(size < MAX_SECRET_BYTES / 2, "{name}: {size} bytes");
    }
}

#[tokio::test]
async fn an_oversized_keyset_is_refused_before_any_call() {
    let recorder = Recorder::default();
    let config = config_builder("http://127.0.0.1:9")
        .interceptor(recorder.clone())
        .build();
    let store = SecretsManagerStore::with_config(config, "jwkd-test/oversized");
    let huge = keyset(&[Algorithm::EdDsa; 80]);
    let err = store.compare_and_swap(None, &huge).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable { reason, .. } if reason.contains("65536")),
        "{err}"
    );
    assert!(recorder.sent().is_empty());
}

/// Turns a hang into a failure; never a bound any test expects to come near.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Every call is bounded: a connect timeout, a per-attempt timeout, an overall
/// deadline and a few retries with short backoff, on the client `connect` builds.
#[tokio::test]
async fn the_store_is_built_with_bounded_timeouts_and_retries() {
    let store = tokio::time::timeout(
        HANG_GUARD,
        SecretsManagerStore::connect(
            "jwkd-test/built",
            Some("eu-west-1"),
            Some("http://127.0.0.1:9"),
        ),
    )
    .await
    .expect("connect hung")
    .unwrap();
    let config = store.client.config();
    let timeouts = config.timeout_config().expect("a timeout config");
    assert_eq!(timeouts.connect_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(
        timeouts.operation_attempt_timeout(),
        Some(Duration::from_secs(4))
    );
    assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(10)));
    let retries = config.retry_config().expect("a retry config");
    assert_eq!(
        retries.mode(),
        aws_sdk_secretsmanager::config::retry::RetryMode::Standard
    );
    assert_eq!(retries.max_attempts(), 3);
    assert_eq!(retries.initial_backoff(), Duration::from_millis(200));
    assert_eq!(retries.max_backoff(), Duration::from_secs(2));
    assert_eq!(
        store.location(),
        "aws-secrets-manager secret jwkd-test/built in eu-west-1"
    );
}

/// A recorded store on `endpoint` with the production retries and these
/// timeouts (short ones: how long the production ones are is pinned above).
fn store_with_timeouts(
    endpoint: &str,
    secret_id: &str,
    attempt: Duration,
    operation: Duration,
) -> (SecretsManagerStore, Recorder) {
    let recorder = Recorder::default();
    let config = config_builder(endpoint)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(attempt)
                .operation_timeout(operation)
                .build(),
        )
        .interceptor(recorder.clone())
        .build();
    (
        SecretsManagerStore::with_config(config, secret_id),
        recorder,
    )
}

/// A load that must fail, within the hang guard.
async fn failed_load(store: &SecretsManagerStore) -> StoreError {
    tokio::time::timeout(HANG_GUARD, store.load())
        .await
        .expect("a load from an unreachable store hung")
        .expect_err("a load from an unreachable store succeeded")
}

/// A dead endpoint (connections refused) is `Unavailable`, naming the secret
/// and the cause, after exactly the configured attempts.
#[tokio::test]
async fn a_refused_connection_is_unavailable_after_every_attempt() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (store, recorder) = store_with_timeouts(
        &closed_url,
        "jwkd-test/dead",
        Duration::from_secs(20),
        Duration::from_secs(25),
    );
    let err = failed_load(&store).await;
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{text}");
    assert!(
        text.starts_with(
            "keyset store aws-secrets-manager secret jwkd-test/dead in us-east-1 is unavailable: \
             cannot read the secret: dispatch failure: io error: "
        ),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
    let attempts = recorder.of("GetSecretValue").len();
    assert_eq!(attempts, MAX_ATTEMPTS as usize, "{text}");
}

/// A load from a black hole (connections accepted, never answered) with these
/// attempt and call timeouts: the error and how many attempts were sent.
async fn black_hole_load(secret_id: &str, attempt: Duration, call: Duration) -> (String, usize) {
    let (url, holder) = black_hole().await;
    let (store, recorder) = store_with_timeouts(&url, secret_id, attempt, call);
    let err = failed_load(&store).await;
    holder.abort();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{text}");
    (text, recorder.of("GetSecretValue").len())
}

/// A black hole: each attempt ends at the attempt timeout and is retried, up
/// to the configured attempts.
#[tokio::test]
async fn a_black_hole_ends_each_attempt_at_the_attempt_timeout() {
    let (text, attempts) = black_hole_load(
        "jwkd-test/hole",
        Duration::from_millis(100),
        Duration::from_secs(25),
    )
    .await;
    assert_eq!(
        text,
        "keyset store aws-secrets-manager secret jwkd-test/hole in us-east-1 is unavailable: \
         cannot read the secret: request has timed out: \
         operation attempt timeout (single attempt) occurred after 100ms"
    );
    assert_eq!(attempts, MAX_ATTEMPTS as usize, "{text}");
}

/// A black hole with attempts longer than the call's deadline: the deadline
/// ends the call, in its first attempt.
#[tokio::test]
async fn a_black_hole_ends_the_call_at_the_operation_timeout() {
    let (text, attempts) = black_hole_load(
        "jwkd-test/hole-deadline",
        Duration::from_secs(20),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(
        text,
        "keyset store aws-secrets-manager secret jwkd-test/hole-deadline in us-east-1 is \
         unavailable: cannot read the secret: request has timed out: \
         operation timeout (all attempts including retries) occurred after 200ms"
    );
    assert_eq!(attempts, 1, "{text}");
}

/// A listener that accepts connections and never answers: its URL, and the
/// task that holds the connections open.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", black_hole.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = black_hole.accept().await {
            held.push(connection);
        }
    });
    (url, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_jwkd_sends() {
    let endpoint = endpoint("what_jwkd_sends (request pins)");
    let secret_id = unique_secret_id("sends");
    let (store, recorder) = recorded_store(&endpoint, &secret_id);
    let (rival, rival_recorder) = recorded_store(&endpoint, &secret_id);

    let first = keyset(&[Algorithm::Es256]);
    let v1 = store.compare_and_swap(None, &first).await.unwrap();
    assert_eq!(recorder.of("CreateSecret").len(), 1);

    // Two writers decide differently from one base: different tokens, one winner.
    let mine = keyset(&[Algorithm::Es256, Algorithm::EdDsa]);
    let theirs = keyset(&[Algorithm::Es256, Algorithm::EdDsa]);
    let (my_result, their_result) = tokio::join!(
        store.compare_and_swap(Some(&v1), &mine),
        rival.compare_and_swap(Some(&v1), &theirs)
    );
    let (winner, winner_keyset, loser_result) = match (&my_result, &their_result) {
        (Ok(version), Err(_)) => (version.clone(), &mine, their_result),
        (Err(_), Ok(version)) => (version.clone(), &theirs, my_result),
        other => panic!("expected exactly one winner, got {other:?}"),
    };
    assert!(
        matches!(loser_result, Err(StoreError::Conflict { .. })),
        "{loser_result:?}"
    );
    let my_token = &recorder.of("PutSecretValue")[0];
    let their_token = &rival_recorder.of("PutSecretValue")[0];
    assert_ne!(
        my_token.field("ClientRequestToken"),
        their_token.field("ClientRequestToken")
    );
    assert_eq!(
        my_token.field("ClientRequestToken"),
        Some(client_request_token(Some(&v1), &mine.to_document()).as_str())
    );

    // The same write retried (same base, same document) reuses its token and
    // changes nothing: it is the document already.
    let (retrier, retry_recorder) = if winner_keyset == &mine {
        (&store, &recorder)
    } else {
        (&rival, &rival_recorder)
    };
    let puts_before = retry_recorder.of("PutSecretValue");
    let again = retrier
        .compare_and_swap(Some(&v1), winner_keyset)
        .await
        .unwrap();
    assert_eq!(again, winner);
    let puts_after = retry_recorder.of("PutSecretValue");
    assert_eq!(puts_after.len(), puts_before.len() + 1);
    assert_eq!(
        puts_after.last().unwrap().field("ClientRequestToken"),
        puts_before.last().unwrap().field("ClientRequestToken")
    );
    let snapshot = store.load().await.unwrap();
    assert_eq!(snapshot.version, Some(winner.clone()));
    assert_eq!(&snapshot.keyset, winner_keyset);

    // A write on top of the winner moves jwkd's label off the winner by PutSecretValue.
    let next = keyset(&[Algorithm::Es384]);
    let v3 = store.compare_and_swap(Some(&winner), &next).await.unwrap();
    assert_eq!(store.load().await.unwrap().version, Some(v3));

    let mut all = recorder.sent();
    all.extend(rival_recorder.sent());
    assert_protocol(&all);
    assert!(!recorder.of("UpdateSecretVersionStage").is_empty());
}

/// The server did the work but the answer was lost: the SDK retries with the same
/// token, the write happens once, and a lost acknowledgement of the label move is
/// recognised as success rather than reported as a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_with_the_same_token() {
    let endpoint = endpoint("a_lost_answer_is_retried_with_the_same_token");
    let (store, recorder) = recorded_store(&endpoint, &unique_secret_id("lost"));
    let v1 = store
        .compare_and_swap(None, &keyset(&[Algorithm::Es256]))
        .await
        .unwrap();

    let second = keyset(&[Algorithm::EdDsa]);
    recorder.lose_next_answer_of("PutSecretValue");
    recorder.lose_next_answer_of("UpdateSecretVersionStage");
    let v2 = store.compare_and_swap(Some(&v1), &second).await.unwrap();

    let puts = recorder.of("PutSecretValue");
    assert_eq!(puts.len(), 2, "one put, retried once: {puts:?}");
    assert_eq!(
        puts[0].field("ClientRequestToken"),
        puts[1].field("ClientRequestToken")
    );
    assert_eq!(puts[0].field("SecretString"), puts[1].field("SecretString"));
    assert_eq!(
        puts[0].field("ClientRequestToken"),
        Some(v2.0.as_str()),
        "the version is named by the token"
    );
    assert_eq!(recorder.of("UpdateSecretVersionStage").len(), 2);
    let snapshot = store.load().await.unwrap();
    assert_eq!(snapshot.version, Some(v2));
    assert_eq!(snapshot.keyset, second);
    assert_protocol(&recorder.sent());
}

/// Two replicas read one base and write different successors: exactly one wins,
/// the other gets `Conflict`, re-reads, and sees the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_from_one_base_one_wins_the_other_rereads() {
    let endpoint = endpoint("two_writers_from_one_base_one_wins_the_other_rereads");
    let secret_id = unique_secret_id("two-writers");
    let replica_a = SecretsManagerStore::with_config(config_builder(&endpoint).build(), &secret_id);
    let replica_b = SecretsManagerStore::with_config(config_builder(&endpoint).build(), &secret_id);
    replica_a
        .compare_and_swap(None, &keyset(&[Algorithm::Es256]))
        .await
        .unwrap();
    let base_a = replica_a.load().await.unwrap();
    let base_b = replica_b.load().await.unwrap();
    assert_eq!(base_a.version, base_b.version);

    for _round in 0..5 {
        let base = replica_a.load().await.unwrap().version;
        let from_a = keyset(&[Algorithm::Es256]);
        let from_b = keyset(&[Algorithm::Es256]);
        let (result_a, result_b) = tokio::join!(
            replica_a.compare_and_swap(base.as_ref(), &from_a),
            replica_b.compare_and_swap(base.as_ref(), &from_b)
        );
        let (winner_version, winner_keyset, loser, loser_err) = match (result_a, result_b) {
            (Ok(version), Err(err)) => (version, from_a, &replica_b, err),
            (Err(err), Ok(version)) => (version, from_b, &replica_a, err),
            other => panic!("expected exactly one winner, got {other:?}"),
        };
        assert!(
            matches!(loser_err, StoreError::Conflict { .. }),
            "{loser_err}"
        );
        let reread = loser.load().await.unwrap();
        assert_eq!(reread.version, Some(winner_version));
        assert_eq!(reread.keyset, winner_keyset);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_created_empty_is_filled_and_a_corrupt_one_is_named() {
    let endpoint = endpoint("a_secret_created_empty_is_filled_and_a_corrupt_one_is_named");
    let client = Client::from_conf(config_builder(&endpoint).build());

    // Created by infrastructure code without a value (e.g. to give it a KMS key).
    let empty_id = unique_secret_id("empty");
    client.create_secret().name(&empty_id).send().await.unwrap();
    let (store, recorder) = recorded_store(&endpoint, &empty_id);
    let (rival, _) = recorded_store(&endpoint, &empty_id);
    let snapshot = store.load().await.unwrap();
    assert_eq!(snapshot.version, None);
    let mine = keyset(&[Algorithm::Es256]);
    let theirs = keyset(&[Algorithm::Es256]);
    let (my_result, their_result) = tokio::join!(
        store.compare_and_swap(None, &mine),
        rival.compare_and_swap(None, &theirs)
    );
    let (winner, winner_keyset) = match (my_result, their_result) {
        (Ok(version), Err(StoreError::Conflict { .. })) => (version, mine),
        (Err(StoreError::Conflict { .. }), Ok(version)) => (version, theirs),
        other => panic!("expected exactly one winner and one conflict, got {other:?}"),
    };
    let snapshot = store.load().await.unwrap();
    assert_eq!(snapshot.version, Some(winner));
    assert_eq!(snapshot.keyset, winner_keyset);
    assert_protocol(&recorder.sent());

    // Something that is not a keyset: reported as corrupt, naming the secret, and
    // left as it is.
    let corrupt_id = unique_secret_id("corrupt");
    client
        .create_secret()
        .name(&corrupt_id)
        .secret_string("{\"format\": 1, \"keys\": [")
        .send()
        .await
        .unwrap();
    let store = SecretsManagerStore::with_config(config_builder(&endpoint).build(), &corrupt_id);
    let err = store.load().await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&corrupt_id), "{err}");
    let err = store
        .compare_and_swap(None, &keyset(&[Algorithm::Es256]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let stored = client
        .get_secret_value()
        .secret_id(&corrupt_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored.secret_string.as_deref(),
        Some("{\"format\": 1, \"keys\": [")
    );
}

#[test]
fn the_example_config_is_valid() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/aws.toml"));
    let text = std::fs::read_to_string(path).unwrap();
    let config = crate::config::Config::parse(&text, path, crate::config::test_time())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        config.store.backend,
        crate::config::Backend::AwsSecretsManager {
            secret_id: "jwkd/keyset".into(),
            region: Some("eu-west-1".into()),
            endpoint_url: None,
        }
    );
}
