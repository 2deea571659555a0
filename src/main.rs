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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(jwkd::commands::run(cli, &env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Config errors may have several problems, one per line; everything else is one line.
            if let Some(config_error) = err
                .chain()
                .find_map(|cause| cause.downcast_ref::<ConfigError>())
            {
                eprintln!("error: {config_error}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {err:#}");
                ExitCode::from(1)
            }
        }
    }
}
