//! An issuer: signs its own tokens with the key jwkd rotates, pulled by a
//! `SigningKeySource` from jwkd's `/v1/signing-keys`, and prints one.
//!
//! The client id and secret come from the environment only, `CLIENT_ID` and
//! `CLIENT_SECRET` (a client with `roles = ["issuer"]`), never from the command line,
//! where `ps` would show the secret. The other settings come from the command line or
//! else the environment:
//!
//! | option | environment | meaning |
//! |---|---|---|
//! | `--signing-keys-url URL` | `SIGNING_KEYS_URL` | jwkd's `/v1/signing-keys` (on `server.private_listen` if set) |
//! | `--issuer ISS` | `ISSUER` | the `iss` this issuer writes |
//! | `--audience AUD` | `AUDIENCE` | the service the token is for |
//! | `--subject SUB` | `SUBJECT` | who the token is about |
//! | `--lifetime SECONDS` | `LIFETIME` | defaults to 300; keep it within jwkd's `keys.max_token_lifetime`, which is how long jwkd keeps a retired key published |
//!
//! Against a local jwkd (client/README.md, "Examples"):
//!
//! ```sh
//! CLIENT_ID=billing-issuer CLIENT_SECRET="$secret" cargo run -p jwkd-client --example issuer -- \
//!     --signing-keys-url http://127.0.0.1:8080/v1/signing-keys \
//!     --issuer https://billing.internal.example --audience payments --subject invoice-runner
//! ```

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use jwkd_client::SigningKeySource;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("issuer: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::parse(&[
        "--signing-keys-url",
        "--issuer",
        "--audience",
        "--subject",
        "--lifetime",
    ])?;
    let url = options.required("--signing-keys-url", "SIGNING_KEYS_URL")?;
    let issuer = options.required("--issuer", "ISSUER")?;
    let audience = options.required("--audience", "AUDIENCE")?;
    let subject = options.required("--subject", "SUBJECT")?;
    let lifetime: u64 = match options.get("--lifetime", "LIFETIME") {
        Some(seconds) => seconds
            .parse()
            .map_err(|_| format!("--lifetime {seconds:?} is not a number of seconds"))?,
        None => 300,
    };
    let client_id = std::env::var("CLIENT_ID").map_err(|_| "CLIENT_ID is not set")?;
    let client_secret = std::env::var("CLIENT_SECRET").map_err(|_| "CLIENT_SECRET is not set")?;

    // Once, at startup; keep it for the life of the process (it is cheap to clone).
    // It pulls the current and next keys in the background and switches to the next
    // key at its `activates_at` on its own, so `sign` never waits for the network and
    // signing goes on through a jwkd outage until the current key's end.
    let keys = SigningKeySource::builder(url, client_id, client_secret).build()?;
    // Only the first pull is worth waiting for: without a key nothing can be signed.
    // A wrong secret or a client without the issuer role fails here.
    keys.ready().await?;

    // The source signs exactly these claims: `iss`, `aud` and `exp` are this
    // issuer's job, and verifiers require all three.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = keys.sign(&serde_json::json!({
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now.saturating_add(lifetime),
    }))?;
    eprintln!("signed with kid {}", keys.current_kid().unwrap_or_default());
    println!("{token}");
    Ok(())
}

/// `--name value` pairs from the command line, each falling back to an environment
/// variable. A real service would use clap; this keeps the example to the crate's
/// own dependencies.
struct Options {
    pairs: Vec<(String, String)>,
}

impl Options {
    fn parse(known: &[&str]) -> Result<Options, String> {
        let mut pairs = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(name) = args.next() {
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "unknown option {name:?}; options: {known:?} (credentials come from \
                     CLIENT_ID and CLIENT_SECRET)"
                ));
            }
            let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            pairs.push((name, value));
        }
        Ok(Options { pairs })
    }

    /// The last value of `name`, or else `$env`.
    fn get(&self, name: &str, env: &str) -> Option<String> {
        self.pairs
            .iter()
            .rev()
            .find(|(flag, _)| flag == name)
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var(env).ok().filter(|value| !value.is_empty()))
    }

    fn required(&self, name: &str, env: &str) -> Result<String, String> {
        self.get(name, env)
            .ok_or_else(|| format!("{name} (or {env}) is required"))
    }
}
