//! A calling service: gets an access token from jwkd with the client-credentials grant
//! (a `TokenSource`) and calls another service with it.
//!
//! The client id and secret come from the environment only, `CLIENT_ID` and
//! `CLIENT_SECRET`, never from the command line, where `ps` would show the secret.
//! The other settings come from the command line or else the environment:
//!
//! | option | environment | meaning |
//! |---|---|---|
//! | `--token-url URL` | `TOKEN_URL` | jwkd's token endpoint, `{issuer}/oauth2/token` |
//! | `--audience AUD` | `AUDIENCE` | the service the token is for; defaults to the client's first audience |
//! | `--scope SCOPE` | `SCOPE` | space-separated scopes to ask for; defaults to all the client has |
//! | `--call URL` | `CALL_URL` | a URL to `GET` with the token |
//!
//! Without `--call`, it prints the token on stdout, for `curl -H "Authorization: Bearer $token"`.
//! With it, it prints the response body on stdout and fails unless the status is 2xx.
//!
//! Against a local jwkd (client/README.md, "Examples"):
//!
//! ```sh
//! CLIENT_ID=orders CLIENT_SECRET="$secret" cargo run -p jwkd-client --example calling_service -- \
//!     --token-url http://127.0.0.1:8080/oauth2/token --audience payments \
//!     --call http://127.0.0.1:3000/whoami
//! ```

use std::process::ExitCode;
use std::time::Duration;

use jwkd_client::TokenSource;
use reqwest::StatusCode;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("calling_service: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let options = Options::parse(&["--token-url", "--audience", "--scope", "--call"])?;
    let token_url = options.required("--token-url", "TOKEN_URL")?;
    let client_id = std::env::var("CLIENT_ID").map_err(|_| "CLIENT_ID is not set")?;
    let client_secret = std::env::var("CLIENT_SECRET").map_err(|_| "CLIENT_SECRET is not set")?;

    // Once, at startup; share it (it is cheap to clone). It caches the token, renews
    // it at three quarters of its lifetime, and concurrent callers share one request.
    let mut tokens = TokenSource::builder(token_url, client_id, client_secret);
    if let Some(audience) = options.get("--audience", "AUDIENCE") {
        tokens = tokens.audience(audience);
    }
    if let Some(scope) = options.get("--scope", "SCOPE") {
        tokens = tokens.scope(scope);
    }
    let tokens = tokens.build()?;

    // Per call: `token()` returns the cached token while it is fresh, so calling it
    // before every request costs nothing.
    let token = tokens.token().await?;
    eprintln!(
        "got a token (scope {:?}, expires in {:?})",
        token.scope().unwrap_or(""),
        token.expires_in()
    );
    let Some(url) = options.get("--call", "CALL_URL") else {
        println!("{}", token.as_str());
        return Ok(ExitCode::SUCCESS);
    };

    // No redirects: a redirect would carry the token to wherever it points.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut response = http
        .get(&url)
        .header("authorization", token.authorization())
        .send()
        .await?;
    if response.status() == StatusCode::UNAUTHORIZED {
        // The service refused a token we still think valid (its key was revoked,
        // say). Drop it and try once with a new one; retrying in a loop would only
        // hammer both services.
        eprintln!("{url} refused the token; retrying once with a new one");
        tokens.invalidate();
        let token = tokens.token().await?;
        response = http
            .get(&url)
            .header("authorization", token.authorization())
            .send()
            .await?;
    }
    let status = response.status();
    eprintln!("GET {url}: {status}");
    println!("{}", response.text().await?);
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
