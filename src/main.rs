use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use jwkd::cli::{Cli, Command};
use jwkd::config::{ConfigError, Environment};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Environment::from_process();
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = env
        .log_filter
        .clone()
        .unwrap_or_else(|| default_level.to_owned());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        );
    // Under journald: no timestamps (the journal has its own), levels as `<N>` prefixes.
    let journal = jwkd::runtime::stderr_is_journal(env.journal_stream.as_deref());
    if env.log_json {
        logs.json().with_current_span(false).init();
    } else if journal {
        logs.event_format(jwkd::runtime::JournalFormat::new())
            .init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let error_prefix = if journal {
        jwkd::runtime::syslog_prefix(tracing::Level::ERROR)
    } else {
        ""
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{error_prefix}error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(jwkd::commands::run(cli, &env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Config errors may have several problems, one `error: ` line each;
            // everything else is one line.
            if let Some(config_error) = err
                .chain()
                .find_map(|cause| cause.downcast_ref::<ConfigError>())
            {
                for line in config_error.lines() {
                    eprintln!("{error_prefix}error: {line}");
                }
                ExitCode::from(2)
            } else {
                eprintln!("{error_prefix}error: {err:#}");
                ExitCode::from(1)
            }
        }
    }
}
