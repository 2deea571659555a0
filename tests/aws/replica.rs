//! One `jwkd serve` replica on the AWS backend: a [`Daemon`] spawned with the
//! SDK's environment (static test credentials, a region, no instance metadata),
//! whose address is polled without blocking the caller.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::util::{Daemon, jwkd};

pub struct Replica {
    pub name: String,
    daemon: Daemon,
}

/// The SDK's environment for the emulator: static test credentials, a region,
/// no instance metadata, nothing from the caller's own AWS set-up.
pub fn with_test_credentials(cmd: &mut Command) {
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_SECRETS_MANAGER");
}

impl Replica {
    /// Spawns `jwkd serve --config CONFIG` and returns at once.
    pub fn spawn(name: &str, config: &Path) -> Replica {
        let mut cmd = jwkd();
        with_test_credentials(&mut cmd);
        Replica {
            name: name.to_owned(),
            daemon: Daemon::spawn_command(cmd, config),
        }
    }

    /// The address once the replica has logged it; `None` while it starts.
    /// Panics (with its output) if it exited.
    pub fn addr(&mut self) -> Option<SocketAddr> {
        self.daemon.try_addr()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.daemon.running()
    }

    /// Everything it printed so far, ANSI stripped.
    pub fn output(&self) -> String {
        self.daemon.stderr_text()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.daemon.kill9();
    }
}
