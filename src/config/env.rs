//! Where the config comes from: `--config`, else `$JWKD_CONFIG`, else
//! [`DEFAULT_PATH`]; and the embedded reference file that supplies every default.
//! The process environment is read here, once, in [`Environment::from_process`].

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config file used when neither `--config` nor `JWKD_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/jwkd/jwkd.toml";

/// The annotated reference config, which is also the source of every default.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/jwkd.toml");

/// The environment variables jwkd reads, captured once at start.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `JWKD_CONFIG`: the config path when `--config` is not given.
    pub config_path: Option<PathBuf>,
    /// `JWKD_LOG`: the log filter, in tracing's `EnvFilter` syntax.
    pub log_filter: Option<String>,
    /// `JOURNAL_STREAM` (`dev:inode`): set by systemd when stdout/stderr go to the journal.
    pub journal_stream: Option<String>,
    /// `JWKD_LOG_FORMAT=json`: one JSON object per log line, for log shippers.
    pub log_json: bool,
    /// systemd's watchdog timeout: `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or
    /// this process (sd_watchdog_enabled(3)). `None` when zero or absent.
    pub watchdog: Option<Duration>,
}

impl Environment {
    /// Reads the process environment. No other function in jwkd does.
    pub fn from_process() -> Environment {
        Environment {
            config_path: std::env::var_os("JWKD_CONFIG")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from),
            log_json: std::env::var("JWKD_LOG_FORMAT")
                .is_ok_and(|format| format.eq_ignore_ascii_case("json")),
            log_filter: std::env::var("JWKD_LOG")
                .ok()
                .filter(|value| !value.is_empty()),
            journal_stream: std::env::var("JOURNAL_STREAM")
                .ok()
                .filter(|value| !value.is_empty()),
            watchdog: sd_notify::watchdog_enabled().filter(|timeout| !timeout.is_zero()),
        }
    }

    /// The config path: `--config`, then `JWKD_CONFIG`, then [`DEFAULT_PATH`].
    pub fn resolve_config_path(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| self.config_path.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, parse_for_test as parse};
    use crate::keys::Algorithm;

    #[test]
    fn embedded_default_is_valid_and_empty_file_means_the_same() {
        let embedded = parse(EMBEDDED_DEFAULT).unwrap();
        let empty = parse("").unwrap();
        assert_eq!(embedded.server.listen, empty.server.listen);
        assert_eq!(embedded.keys.algorithms, vec![Algorithm::Es256]);
        assert_eq!(
            embedded.keys.rotation_schedule,
            empty.keys.rotation_schedule
        );
        assert_eq!(embedded.keys.jwks_max_age, Duration::from_secs(300));
        assert_eq!(embedded.store, empty.store);
        assert_eq!(
            embedded.store.backend,
            Backend::File {
                path: PathBuf::from("/etc/jwkd/keyset.json")
            }
        );
        assert_eq!(embedded.issuer.token_lifetime, Duration::from_secs(900));
    }
}
