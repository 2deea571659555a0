//! What each verb does. Functions return `anyhow::Result`; `main` turns errors
//! into one line on stderr and an exit code.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{Cli, Command, IssuerArg};
use crate::clock::{Clock, SystemClock};
use crate::config::{Backend, Config, ConfigError, Environment};
use crate::duration::format_duration;
use crate::http::Api;
use crate::http::server::{self, Tls};
use crate::keyset::{self, Keyset};
use crate::operation::{Operation, Planner, update_store};
use crate::rotator::{Event, Rotator};
use crate::state::Shared;
use crate::store::{self, KeyStore, Snapshot};
use crate::timeline::{self, Change};

/// How long in-flight work may take after SIGTERM before the process exits anyway.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the verb `cli` names.
///
/// # Errors
/// Whatever the verb failed with; [`ConfigError`] in the chain means exit code 2.
pub async fn run(cli: Cli, env: &Environment) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(arg) => serve(&load_config(env, arg.config.as_deref())?, env).await,
        Command::CheckConfig(arg) => {
            check_config(&load_config(env, arg.config.as_deref())?, &SystemClock).await
        }
        Command::Keys { config, json } => {
            keys(&load_issuer(env, &config)?, json, &SystemClock).await
        }
        Command::Rotate(arg) => change(&load_issuer(env, &arg)?, Operation::Rotate).await,
        Command::Revoke { kid, config } => {
            change(&load_issuer(env, &config)?, Operation::Revoke(kid)).await
        }
        Command::Repair { config, dry_run } => {
            repair(&load_issuer(env, &config)?, dry_run, &SystemClock).await
        }
        Command::HashSecret { generate } => hash_secret(generate),
        Command::Verify {
            jwks,
            issuers,
            audience,
            algorithms,
            token,
        } => verify(jwks, issuers, audience, algorithms, &token).await,
    }
}

/// `jwkd verify`: the client crate's verifier, from the command line.
async fn verify(
    jwks_url: Option<String>,
    issuers: Vec<String>,
    audience: Option<String>,
    algorithms: Vec<jwkd_client::Algorithm>,
    token: &str,
) -> anyhow::Result<()> {
    let token = if token == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the token from stdin")?;
        text
    } else {
        token.to_owned()
    };
    let jwks = |url: &str| {
        jwkd_client::RemoteJwks::builder(url)
            .build()
            .with_context(|| format!("cannot use the JWKS URL {url}"))
    };
    let pairs: Vec<Option<(&str, &str)>> = issuers
        .iter()
        .map(|issuer| issuer.split_once('='))
        .collect();
    let mut builder = match (jwks_url, pairs.iter().any(Option::is_some)) {
        (Some(_), true) => {
            anyhow::bail!("--issuer ISS=URL names each issuer's JWK Set: use it without --jwks")
        }
        (None, true) => {
            let mut sources = Vec::new();
            for (issuer, pair) in issuers.iter().zip(&pairs) {
                let Some((iss, url)) = pair else {
                    anyhow::bail!("--issuer {issuer}: with several issuers, each is ISS=URL");
                };
                sources.push((iss.to_string(), jwks(url)?));
            }
            jwkd_client::Verifier::builder(jwkd_client::KeySource::per_issuer(sources))
        }
        (Some(url), false) => {
            // A command-line check: what is not asked for is not checked.
            let builder = jwkd_client::Verifier::builder(jwks(&url)?);
            match issuers.as_slice() {
                [] => builder.any_issuer(),
                issuers => issuers
                    .iter()
                    .fold(builder, |builder, issuer| builder.issuer(issuer)),
            }
        }
        (None, false) => anyhow::bail!("--jwks URL or --issuer ISS=URL is needed"),
    };
    builder = match audience {
        Some(audience) => builder.audience(audience),
        None => builder.without_audience(),
    };
    if !algorithms.is_empty() {
        builder = builder.algorithms(algorithms);
    }
    let verifier = builder.build().context("cannot build the verifier")?;
    let verified = verifier
        .verify::<serde_json::Value>(token.trim())
        .await
        .context("token rejected")?;
    println!("{}", serde_json::to_string_pretty(verified.claims())?);
    Ok(())
}

fn load_config(env: &Environment, flag: Option<&Path>) -> Result<Config, ConfigError> {
    let path = env.resolve_config_path(flag);
    Config::load(&path)
}

/// The config of the issuer `--issuer` names (the default one without it).
fn load_issuer(env: &Environment, arg: &IssuerArg) -> Result<Config, ConfigError> {
    let config = load_config(env, arg.config.config.as_deref())?;
    let Some(name) = arg.issuer.as_deref() else {
        return Ok(config);
    };
    config.issuer_named(name).cloned().map_err(|message| {
        ConfigError::one(&config.file, "", format!("--issuer {name}: {message}"))
    })
}

/// The config key that names the store.
fn store_key(config: &Config) -> &'static str {
    match config.store.backend {
        Backend::File { .. } => "store.path",
        Backend::AwsSecretsManager { .. } => "store.secret_id",
    }
}

/// Opens the store and reads it: an unreadable store is a config error (§3).
async fn open_store(config: &Config) -> Result<(Arc<dyn KeyStore>, Snapshot), ConfigError> {
    let key = store_key(config);
    let store = store::open(&config.store)
        .await
        .map_err(|err| ConfigError::one(&config.file, key, err.to_string()))?;
    let snapshot = store.load().await.map_err(|err| {
        let mut message = err.to_string();
        if matches!(err, store::StoreError::Corrupt { .. }) {
            message
                .push_str("; `jwkd repair --dry-run` shows what a repair would change, if it can");
        }
        ConfigError::one(&config.file, key, message)
    })?;
    Ok((store, snapshot))
}

/// `jwkd repair`: rewrites only what makes the stored document fail to load,
/// after keeping the document as it was.
async fn repair(config: &Config, dry_run: bool, clock: &dyn Clock) -> anyhow::Result<()> {
    let store = store::open(&config.store)
        .await
        .map_err(|err| ConfigError::one(&config.file, store_key(config), err.to_string()))?;
    let location = store.location();
    let Some(document) = store.load_raw().await? else {
        println!("{location}: no keyset stored yet: nothing to repair");
        return Ok(());
    };
    if Keyset::from_document(&document.bytes).is_ok() {
        println!("{location}: the keyset loads: nothing to repair");
        return Ok(());
    }
    let retention = config.policy().retention;
    let repair = keyset::repair_document(&document.bytes, retention)
        .map_err(|reason| anyhow::anyhow!("cannot repair the keyset in {location}: {reason}"))?;
    for fix in &repair.fixes {
        println!("{fix}");
    }
    if dry_run {
        println!("dry run: nothing written; `jwkd repair` writes this after a backup");
        return Ok(());
    }
    let backup = store.back_up(&document, clock.now()).await?;
    println!("kept the document as it was: {backup}");
    store
        .compare_and_swap(Some(&document.version), &repair.keyset)
        .await
        .with_context(|| {
            format!("the repaired keyset was not written to {location}; run `jwkd repair` again")
        })?;
    println!(
        "{location}: repaired ({} keys, none dropped)",
        repair.keyset.keys.len()
    );
    Ok(())
}

async fn serve(config: &Config, env: &Environment) -> anyhow::Result<()> {
    let (store, snapshot) = open_store(config).await?;
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => {
            Some(Arc::new(Tls::load(cert, key).map_err(|err| {
                ConfigError::one(&config.file, "server.tls_cert", err)
            })?))
        }
        _ => None,
    };
    let listener = bind(config.server.listen).await?;
    let private_listener = match config.server.private_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let shared = Arc::new(
        Shared::with_clock(config.clone(), Arc::clone(&clock)).map_err(anyhow::Error::msg)?,
    );
    let mut rotator = Rotator::new(Arc::clone(&store), Arc::clone(&clock), Arc::clone(&shared));
    rotator.set_watchdog(crate::runtime::Watchdog::systemd(env.watchdog));
    rotator.prime(snapshot, clock.now());
    // The first pass makes the first keys if needed, so the JWKS is there when we say ready.
    let first_sleep = rotator.tick().await;
    let status = rotator.status_line(clock.now());

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (events, events_rx) = mpsc::channel::<Event>(16);
    let (reload, reload_rx) = mpsc::channel::<()>(1);
    let api = Api::new(Arc::clone(&shared), events.clone());
    let api = Arc::new(crate::http::Issuers::new(
        Arc::clone(&shared.common),
        vec![api],
    ));
    let with_credentials = config.server.may_serve_credentials();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut addresses = vec![format!("{scheme}://{}", listener.local_addr()?)];
    tracker.spawn(server::serve(
        listener,
        tls.clone(),
        crate::http::public_routes(&api, private_listener.is_some(), with_credentials),
        config.server.limits,
        shutdown.clone().cancelled_owned(),
    ));
    if let Some(private_listener) = private_listener {
        addresses.push(format!(
            "{scheme}://{} (issuer and admin)",
            private_listener.local_addr()?
        ));
        tracker.spawn(server::serve(
            private_listener,
            tls.clone(),
            crate::http::private_routes(&api),
            config.server.limits,
            shutdown.clone().cancelled_owned(),
        ));
    }
    tracker.spawn(rotator.run_loop_after(first_sleep, events_rx, shutdown.clone()));
    tracker.spawn({
        let shutdown = shutdown.clone();
        async move {
            if let Err(err) = crate::runtime::signals(shutdown.clone(), reload).await {
                tracing::error!(%err, "cannot install signal handlers; shutting down");
                shutdown.cancel();
            }
        }
    });
    tracker.spawn(reload_on_signal(
        config.file.clone(),
        Arc::clone(&shared),
        tls,
        events,
        reload_rx,
        shutdown.clone(),
    ));
    tracker.close();

    tracing::info!("{}", startup_line(config, store.as_ref(), &addresses));
    // Keyset loaded and published, listeners bound: systemd may start what depends on us.
    crate::runtime::notify_ready(&status);

    shutdown.cancelled().await;
    crate::runtime::notify_stopping();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed with work in flight");
    }
    Ok(())
}

/// The one line that says the daemon is serving: what runs, from which config,
/// on which store and keys, and every address it actually listens on (the real
/// port where the config says `:0`). The addresses come last, each followed by
/// a space or the end of the line, so scripts can cut them out.
fn startup_line(config: &Config, store: &dyn KeyStore, addresses: &[String]) -> String {
    let store = match config.store.backend {
        Backend::File { .. } => format!("file {}", store.location()),
        Backend::AwsSecretsManager { .. } => store.location(),
    };
    let families: Vec<&str> = config
        .keys
        .algorithms
        .iter()
        .map(|alg| alg.name())
        .collect();
    format!(
        "jwkd {} ready: config {}; store {store}; key families {}; listening on {}",
        env!("CARGO_PKG_VERSION"),
        config.file.display(),
        families.join(", "),
        addresses.join(" and ")
    )
}

async fn bind(address: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}

/// On each SIGHUP: re-read the config file; if it is valid, hand it to the
/// rotator (clients, schedule, keyset re-read) and reload the TLS certificate;
/// if not, log why and keep running on the old one. Connections stay open
/// either way. systemd hears `RELOADING=1` at the start and `READY=1` at the end.
async fn reload_on_signal(
    config_file: std::path::PathBuf,
    shared: Arc<Shared>,
    tls: Option<Arc<Tls>>,
    events: mpsc::Sender<Event>,
    mut reload: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = reload.recv() => {
                crate::runtime::notify_reloading();
                tracing::info!("SIGHUP: re-reading {}", config_file.display());
                let config = match Config::load(&config_file) {
                    Ok(config) => config,
                    Err(err) => {
                        for problem in err.lines() {
                            tracing::error!("reload refused, keeping the running config: {problem}");
                        }
                        crate::runtime::notify_reloaded(None);
                        continue;
                    }
                };
                warn_restart_needed(&shared.config.load(), &config);
                if let Some(tls) = &tls
                    && let Err(err) = tls.reload()
                {
                    tracing::error!("TLS certificate not reloaded, keeping the old one: {err}");
                }
                let (done, done_rx) = tokio::sync::oneshot::channel();
                if events.send(Event::Reload(Box::new(config), done)).await.is_err() {
                    break;
                }
                let status = tokio::select! {
                    reply = done_rx => reply.ok(),
                    () = shutdown.cancelled() => break,
                };
                crate::runtime::notify_reloaded(status.as_deref());
            }
        }
    }
}

/// Settings a reload cannot apply to a running daemon: the listeners, TLS on or
/// off, and the store. Says so, so that nobody believes they changed.
fn warn_restart_needed(running: &Config, new: &Config) {
    let mut keys = Vec::new();
    if new.server.listen != running.server.listen {
        keys.push("server.listen");
    }
    if new.server.private_listen != running.server.private_listen {
        keys.push("server.private_listen");
    }
    if new.server.tls_cert != running.server.tls_cert
        || new.server.tls_key != running.server.tls_key
    {
        keys.push("server.tls_cert/tls_key");
    }
    if new.server.allow_plain_http != running.server.allow_plain_http {
        keys.push("server.allow_plain_http");
    }
    if new.store.backend != running.store.backend {
        keys.push("store");
    }
    if !keys.is_empty() {
        tracing::warn!(
            "{} changed in {}: a reload does not apply this; restart jwkd to use it",
            keys.join(", "),
            new.file.display()
        );
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn check_config(config: &Config, clock: &dyn Clock) -> anyhow::Result<()> {
    println!("config {}: ok", config.file.display());
    let mut skewed = None;
    for issuer in config.all_issuers() {
        if !config.issuers.is_empty() {
            let url = issuer.issuer.issuer.as_deref().unwrap_or("no [issuer] URL");
            println!("issuer {} ({url}):", issuer.name);
        }
        if let Err(skew) = check_issuer(issuer, clock).await? {
            skewed.get_or_insert(skew);
        }
    }
    match skewed {
        Some(skew) => Err(anyhow::anyhow!(skew)),
        None => Ok(()),
    }
}

/// `check-config` for one issuer: its store, schedule, lead, retention and
/// coming rotations, and its clock (`Err` beyond `clock_skew`, said).
async fn check_issuer(
    config: &Config,
    clock: &dyn Clock,
) -> anyhow::Result<Result<(), crate::clock::Skew>> {
    let (store, snapshot) = open_store(config).await?;
    let read_at = clock.now();
    let clock = check_clock(config, store.as_ref(), &snapshot, read_at);
    let now = timeline::decision_time(&snapshot.keyset, read_at);
    let keys = &config.keys;
    let lead = keys.lead(config.store.refresh_interval);
    let retention = keys.max_token_lifetime + keys.clock_skew;
    println!(
        "store: {} ({} keys)",
        store.location(),
        snapshot.keyset.keys.len()
    );
    println!("schedule: {} (UTC)", keys.rotation_schedule);
    println!(
        "lead: jwks_max_age {} + clock_skew {} + store.refresh_interval {} = {}: each key is published this long before it signs",
        format_duration(keys.jwks_max_age),
        format_duration(keys.clock_skew),
        format_duration(config.store.refresh_interval),
        format_duration(lead)
    );
    println!(
        "retention: max_token_lifetime {} + clock_skew {} = {}: each key stays published this long after it stops signing",
        format_duration(keys.max_token_lifetime),
        format_duration(keys.clock_skew),
        format_duration(retention)
    );
    let fires = keys.rotation_schedule.upcoming(now, 3);
    for (family_idx, alg) in keys.algorithms.iter().enumerate() {
        let default = if family_idx == 0 { " (default)" } else { "" };
        println!("{alg}{default}:");
        match timeline::current_at(&snapshot.keyset, *alg, now) {
            Some(key) => println!("  current key {}", key.kid),
            None => println!("  no current key yet: `jwkd serve` makes one"),
        }
        for fire in &fires {
            let retired_until = *fire + chrono::Duration::from_std(retention).unwrap_or_default();
            println!(
                "  rotation at {}: the key it retires stays published until {}",
                time(*fire),
                time(retired_until)
            );
        }
    }
    Ok(match clock {
        Ok(line) => {
            println!("{line}");
            Ok(())
        }
        Err(skew) => {
            println!("clock: {skew}");
            Err(skew)
        }
    })
}

/// This host's clock against the store's and the stored keyset's: one line
/// for `check-config`, or why they disagree beyond `clock_skew`.
fn check_clock(
    config: &Config,
    store: &dyn KeyStore,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
) -> Result<String, crate::clock::Skew> {
    let evidence = crate::operation::evidence_of(snapshot, now);
    let tolerance = config.policy().skew;
    crate::clock::check(now, &evidence, tolerance, &store.location())?;
    Ok(match evidence.store_offset {
        Some(offset) => format!(
            "clock: within clock_skew ({}) of the store's: this host's is {:+.3}s from it",
            format_duration(config.keys.clock_skew),
            offset.estimate().num_milliseconds() as f64 / 1000.0
        ),
        None => format!(
            "clock: not behind the stored keyset by more than clock_skew ({}); the store has no clock to compare with",
            format_duration(config.keys.clock_skew)
        ),
    })
}

async fn keys(config: &Config, json: bool, clock: &dyn Clock) -> anyhow::Result<()> {
    let (_store, snapshot) = open_store(config).await?;
    let now = timeline::decision_time(&snapshot.keyset, clock.now());
    if json {
        let rows: Vec<serde_json::Value> = snapshot
            .keyset
            .keys
            .iter()
            .map(|key| timeline::summary_at(key, now))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", timeline::render_table(&snapshot.keyset, now));
    }
    Ok(())
}

async fn change(config: &Config, operation: Operation) -> anyhow::Result<()> {
    let (store, snapshot) = open_store(config).await?;
    let planner = Planner::new(config);
    let (_, changes) = update_store(
        store.as_ref(),
        &planner,
        &SystemClock,
        &operation,
        Some(snapshot),
    )
    .await
    .with_context(|| match &operation {
        Operation::Revoke(kid) => format!("cannot revoke {kid}"),
        _ => "cannot rotate".to_owned(),
    })?;
    for change in &changes {
        println!("{change}");
    }
    if changes
        .iter()
        .any(|change| matches!(change, Change::Promoted { .. } | Change::Revoked { .. }))
    {
        println!(
            "a running jwkd serves this within store.refresh_interval ({})",
            format_duration(config.store.refresh_interval)
        );
    }
    Ok(())
}

fn hash_secret(generate: bool) -> anyhow::Result<()> {
    if generate {
        let (secret, hash) = crate::auth::generate_secret().map_err(anyhow::Error::msg)?;
        println!("secret: {}", secret.as_str());
        println!("secret_hash: {hash}");
        return Ok(());
    }
    let mut secret = String::new();
    std::io::stdin()
        .read_to_string(&mut secret)
        .context("cannot read the secret from stdin")?;
    let secret = secret.strip_suffix('\n').unwrap_or(&secret);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    let hash = crate::auth::hash_secret(secret).map_err(anyhow::Error::msg)?;
    println!("{hash}");
    Ok(())
}
