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
    let journal = jwkd::logging::init(&env, default_level);
    let error_prefix = if journal {
        jwkd::logging::syslog_prefix(tracing::Level::ERROR)
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
