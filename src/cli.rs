//! The command line (CONTRACT §2), one variant per verb.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// jwkd: JWT signing-key management and rotation daemon.
#[derive(Debug, Parser)]
#[command(name = "jwkd", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--config PATH`, shared by the verbs that read the config.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file; defaults to $JWKD_CONFIG, then /etc/jwkd/jwkd.toml.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// `--config PATH --issuer NAME`: the config, and which of its issuers a verb acts on.
#[derive(Debug, Args)]
pub struct IssuerArg {
    /// The config.
    #[command(flatten)]
    pub config: ConfigArg,
    /// The issuer, by its `[[issuers]]` name; default: the issuer of the
    /// top-level sections (`default`).
    #[arg(long, value_name = "NAME")]
    pub issuer: Option<String>,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Serve(ConfigArg),
    /// Validate the config and print the effective timeline.
    CheckConfig(ConfigArg),
    /// List keys with their state and times.
    Keys {
        /// The config and the issuer.
        #[command(flatten)]
        config: IssuerArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rotate now: the next key becomes current as soon as it is safe (once signing, it gets a
    /// successor); while a rotation is pending, says so and changes nothing.
    Rotate(IssuerArg),
    /// Emergency: withdraw a key from the JWKS at once.
    Revoke {
        /// The key to withdraw. A kid may start with `-` (base64url), so it is
        /// never taken for an option.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// The config and the issuer.
        #[command(flatten)]
        config: IssuerArg,
    },
    /// Rewrite only what makes a stored keyset fail to load, after a backup.
    Repair {
        /// The config and the issuer.
        #[command(flatten)]
        config: IssuerArg,
        /// Say what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Read a client secret on stdin and print the hash to put in the config;
    /// with --generate, make a new random secret and print it and its hash.
    HashSecret {
        /// Make a new 256-bit secret (base64url: safe in Basic and form bodies)
        /// instead of reading one: prints `secret: ...` and `secret_hash: ...`.
        #[arg(long)]
        generate: bool,
    },
    /// Verify a token against a JWKS with jwkd-client; print its claims as JSON.
    Verify {
        /// The JWK Set URL (https, or http on loopback); not with `--issuer ISS=URL`.
        #[arg(long, value_name = "URL", required_unless_present = "issuers")]
        jwks: Option<String>,
        /// The issuer the token must have (exact `iss`), with --jwks; or, repeated,
        /// `ISS=URL`: each issuer with its own JWK Set, the token checked only
        /// against the keys of the issuer its `iss` names.
        #[arg(long = "issuer", value_name = "ISS[=URL]")]
        issuers: Vec<String>,
        /// An audience the token's `aud` must contain.
        #[arg(long, value_name = "AUD")]
        audience: Option<String>,
        /// Allow only these algorithms (repeatable); default: every one jwkd supports.
        #[arg(long = "algorithm", value_name = "ALG", value_parser = parse_algorithm)]
        algorithms: Vec<jwkd_client::Algorithm>,
        /// The token, or `-` to read it from stdin.
        #[arg(value_name = "TOKEN|-")]
        token: String,
    },
}

fn parse_algorithm(name: &str) -> Result<jwkd_client::Algorithm, String> {
    name.parse::<jwkd_client::Algorithm>()
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn a_kid_that_starts_with_a_hyphen_is_a_kid() {
        let kid = "-R0ne1IO5C45PPKpXm3kCaXU6t-1TVX8J7cIfVkymyg";
        let cli = Cli::try_parse_from(["jwkd", "revoke", kid, "--config", "x.toml"]).unwrap();
        match cli.command {
            Command::Revoke {
                kid: parsed,
                config,
            } => {
                assert_eq!(parsed, kid);
                assert_eq!(config.config.config, Some(PathBuf::from("x.toml")));
                assert_eq!(config.issuer, None);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["jwkd", "revoke", "--config", "x.toml", kid]).unwrap();
        assert!(matches!(cli.command, Command::Revoke { kid: parsed, .. } if parsed == kid));
        let cli = Cli::try_parse_from(["jwkd", "revoke", kid, "--issuer", "billing"]).unwrap();
        assert!(
            matches!(cli.command, Command::Revoke { config, .. } if config.issuer.as_deref() == Some("billing"))
        );
    }
}
