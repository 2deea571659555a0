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

use crate::cli::{Cli, Command, IssuerArg};
use crate::clock::{Clock, SystemClock};
use crate::config::{Backend, Config, ConfigError, Environment};
use crate::daemon::{ConfiguredStores, Daemon, Listeners};
use crate::duration::format_duration;
use crate::keyset::{self, Keyset};
use crate::operation::{Operation, Planner, update_store};
use crate::store::{self, KeyStore, Snapshot};
use crate::timeline::{self, Change};

/// How long in-flight work may take after SIGTERM before the process exits anyway.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the verb `cli` names.
///
/// # Errors
/// Whatever the verb failed with; [`ConfigError`] in the chain means exit code 2.
pub async fn run(cli: Cli, env: &Environment) -> anyhow::Result<()> {
    // The one wall clock of every verb: validation, decisions and the daemon.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let load = |flag: &Option<std::path::PathBuf>| load_config(env, flag.as_deref(), &*clock);
    match cli.command {
        Command::Serve(arg) => serve(&load(&arg.config)?, env, Arc::clone(&clock)).await,
        Command::CheckConfig(arg) => check_config(&load(&arg.config)?, &*clock).await,
        Command::Keys { config, json } => {
            keys(
                &load_issuer(&load(&config.config.config)?, &config)?,
                json,
                &*clock,
            )
            .await
        }
        Command::Rotate(arg) => {
            let config = load_issuer(&load(&arg.config.config)?, &arg)?;
            change(&config, Operation::Rotate, &*clock).await
        }
        Command::Revoke { kid, config: arg } => {
            let config = load_issuer(&load(&arg.config.config)?, &arg)?;
            change(&config, Operation::Revoke(kid), &*clock).await
        }
        Command::Repair {
            config: arg,
            dry_run,
        } => {
            repair(
                &load_issuer(&load(&arg.config.config)?, &arg)?,
                dry_run,
                &*clock,
            )
            .await
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

fn load_config(
    env: &Environment,
    flag: Option<&Path>,
    clock: &dyn Clock,
) -> Result<Config, ConfigError> {
    let path = env.resolve_config_path(flag);
    Config::load(&path, clock.now())
}

/// The issuer of `config` that `--issuer` names (the default one without it).
fn load_issuer(config: &Config, arg: &IssuerArg) -> Result<Config, ConfigError> {
    let Some(name) = arg.issuer.as_deref() else {
        return Ok(config.clone());
    };
    config.issuer_named(name).cloned().map_err(|message| {
        ConfigError::one(&config.file, "", format!("--issuer {name}: {message}"))
    })
}

/// Opens the store and reads it: an unreadable store is a config error (§3).
async fn open_store(config: &Config) -> Result<(Arc<dyn KeyStore>, Snapshot), ConfigError> {
    let opened = crate::daemon::open_store(config).await?;
    Ok((opened.store, opened.snapshot))
}

/// `jwkd repair`: rewrites only what makes the stored document fail to load,
/// after keeping the document as it was.
async fn repair(config: &Config, dry_run: bool, clock: &dyn Clock) -> anyhow::Result<()> {
    let store = store::open(&config.store).await.map_err(|err| {
        ConfigError::one(
            &config.file,
            &crate::daemon::store_key(config),
            err.to_string(),
        )
    })?;
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

async fn serve(config: &Config, env: &Environment, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let listeners = Listeners::bind(config).await?;
    let shutdown = CancellationToken::new();
    let daemon = Daemon::start(
        config.clone(),
        Arc::new(ConfiguredStores),
        Arc::clone(&clock),
        listeners,
        crate::runtime::Watchdog::systemd(env.watchdog),
        shutdown.clone(),
    )
    .await?;
    let (reload, reload_rx) = mpsc::channel::<()>(1);
    // Installed here, before READY=1, not in the task: a SIGTERM right after
    // READY=1 must find the handler.
    let signals = match crate::runtime::Signals::install() {
        Ok(signals) => Some(tokio::spawn(signals.run(shutdown.clone(), reload))),
        Err(err) => {
            tracing::error!(%err, "cannot install signal handlers; shutting down");
            shutdown.cancel();
            None
        }
    };

    tracing::info!(
        "{}",
        startup_line(config, &daemon.locations().await, &daemon.addresses())
    );
    // Keyset loaded and published, listeners bound: systemd may start what depends on us.
    crate::runtime::notify_ready(daemon.status());
    crate::runtime::seed_randomness_in_background();

    reload_on_signal(&daemon, &config.file, &*clock, reload_rx, &shutdown).await;
    crate::runtime::notify_stopping();
    let stopped = async {
        daemon.join().await;
        if let Some(signals) = signals {
            let _ = signals.await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_DEADLINE, stopped)
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
fn startup_line(config: &Config, locations: &[(String, String)], addresses: &[String]) -> String {
    let location = |issuer: &Config, location: &str| match issuer.store.backend {
        Backend::File { .. } => format!("file {location}"),
        Backend::AwsSecretsManager { .. } => location.to_owned(),
    };
    let families = |issuer: &Config| -> String {
        let names: Vec<&str> = issuer
            .keys
            .algorithms
            .iter()
            .map(|alg| alg.name())
            .collect();
        names.join(", ")
    };
    let serving = if config.issuers.is_empty() {
        let store = locations
            .first()
            .map_or(String::new(), |(_, at)| location(config, at));
        format!("store {store}; key families {}", families(config))
    } else {
        let issuers: Vec<String> = config
            .all_issuers()
            .zip(locations)
            .map(|(issuer, (name, at))| {
                format!(
                    "{name} (store {}; key families {})",
                    location(issuer, at),
                    families(issuer)
                )
            })
            .collect();
        format!("issuers {}", issuers.join(", "))
    };
    format!(
        "jwkd {} ready: config {}; {serving}; listening on {}",
        env!("CARGO_PKG_VERSION"),
        config.file.display(),
        addresses.join(" and ")
    )
}

/// On each SIGHUP, until `shutdown`: re-read the config file; if it is valid,
/// hand it to the daemon (clients, schedule, keyset re-read, TLS certificate);
/// if not, log why and keep running on the old one. Connections stay open
/// either way. systemd hears `RELOADING=1` at the start and `READY=1` at the end.
async fn reload_on_signal(
    daemon: &Daemon,
    config_file: &Path,
    clock: &dyn Clock,
    mut reload: mpsc::Receiver<()>,
    shutdown: &CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = reload.recv() => {
                crate::runtime::notify_reloading();
                tracing::info!("SIGHUP: re-reading {}", config_file.display());
                let config = match Config::load(config_file, clock.now()) {
                    Ok(config) => config,
                    Err(err) => {
                        for problem in err.lines() {
                            tracing::error!("reload refused, keeping the running config: {problem}");
                        }
                        crate::runtime::notify_reloaded(None);
                        continue;
                    }
                };
                match daemon.reload(config).await {
                    Some(status) => crate::runtime::notify_reloaded(Some(&status)),
                    None if shutdown.is_cancelled() => break,
                    None => crate::runtime::notify_reloaded(None),
                }
            }
        }
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

async fn change(config: &Config, operation: Operation, clock: &dyn Clock) -> anyhow::Result<()> {
    let opened = crate::daemon::open_store(config).await?;
    let planner = Planner::new(config);
    let (_, changes) = update_store(
        opened.store.as_ref(),
        &planner,
        &opened.custodian,
        clock,
        &operation,
        Some(opened.snapshot),
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
