//! A verifying service: an HTTP service whose route only answers requests that carry
//! a valid jwkd access token, checked by jwkd-client's warp filter.
//!
//! - `GET /whoami` with `Authorization: Bearer <token>`: 200 and `{"sub": ...}` from the
//!   verified claims. A missing or bad token gets 401 with an RFC 6750
//!   `WWW-Authenticate` header; 503 while no keys can be had from jwkd. The filter
//!   and `jwkd_client::warp::recover` answer those; this file writes no error path.
//! - `GET /healthz`: 200 while the key set is usable, 503 otherwise, with its status.
//!
//! Settings, from the command line or else the environment:
//!
//! | option | environment | meaning |
//! |---|---|---|
//! | `--jwks-url URL` | `JWKS_URL` | jwkd's JWK Set, `{issuer}/.well-known/jwks.json` |
//! | `--issuer ISS` (repeatable) | `ISSUER` (comma-separated) | the exact `iss` accepted |
//! | `--audience AUD` | `AUDIENCE` | this service's name: tokens must be meant for it |
//! | `--listen ADDR` | `LISTEN` | where to serve; defaults to `127.0.0.1:3000` |
//!
//! Against a local jwkd (client/README.md, "Examples"):
//!
//! ```sh
//! cargo run -p jwkd-client --example verifying_service -- \
//!     --jwks-url http://127.0.0.1:8080/.well-known/jwks.json \
//!     --issuer https://auth.internal.example --audience payments
//! ```

use std::process::ExitCode;

use jwkd_client::{RemoteJwks, Verified, Verifier};
use serde::Deserialize;
use warp::Filter;
use warp::http::StatusCode;

/// The claims this service reads. The verifier has checked the signature, `exp`,
/// `nbf`, `iss` and `aud` before it deserializes them; other claims are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("verifying_service: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::parse(&["--jwks-url", "--issuer", "--audience", "--listen"])?;
    let jwks_url = options.required("--jwks-url", "JWKS_URL")?;
    let issuers = options.all("--issuer", "ISSUER");
    if issuers.is_empty() {
        return Err("--issuer (or ISSUER) is required".into());
    }
    let audience = options.required("--audience", "AUDIENCE")?;
    let listen = options
        .get("--listen", "LISTEN")
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());

    // Once, at startup. Building does not wait for the network: the key set is
    // fetched in the background and kept fresh on the JWKS `max-age`. `http` URLs are
    // accepted on loopback only; anywhere else jwkd is reached over https.
    let jwks = RemoteJwks::builder(jwks_url).build()?;
    let mut verifier = Verifier::builder(jwks.clone())
        .audience(audience)
        // jwkd's `/oauth2/token` mints RFC 9068 access tokens (`typ: at+jwt`). Asking
        // for that type keeps other tokens signed with the same keys (an issuer's
        // `typ: JWT` tokens, `/v1/sign`) from passing as access tokens here.
        .typ("at+jwt");
    // `build()` refuses a verifier without an issuer: keys jwkd hands to issuers
    // sign their tokens too, so this service must say whose tokens it trusts.
    for issuer in issuers {
        verifier = verifier.issuer(issuer);
    }
    let verifier = verifier.build()?;

    let whoami = warp::path!("whoami")
        .and(warp::get())
        // Yields the verified claims, or rejects; `recover` below turns the
        // rejection into the 401 or 503 response.
        .and(jwkd_client::warp::verified::<Claims>(verifier))
        .map(|verified: Verified<Claims>| {
            warp::reply::json(&serde_json::json!({ "sub": verified.claims().sub }))
        });
    let healthz = warp::path!("healthz").and(warp::get()).map({
        let jwks = jwks.clone();
        move || {
            let status = jwks.status();
            let code = if status.is_usable() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(format!("{status}\n"), code)
        }
    });
    let routes = whoami.or(healthz).recover(jwkd_client::warp::recover);

    // Binding here, rather than in `warp::serve(..).run(addr)`, turns a port in use
    // into an error instead of a panic, and tells us the port when LISTEN ends in `:0`.
    let listener = tokio::net::TcpListener::bind(listen.as_str())
        .await
        .map_err(|err| format!("cannot listen on {listen}: {err}"))?;
    println!("listening on http://{}", listener.local_addr()?);

    // Say once whether the first fetch worked; requests are served either way (a
    // failed fetch is retried in the background, and requests get 503 meanwhile).
    tokio::spawn(async move {
        match jwks.ready().await {
            Ok(()) => eprintln!("key set loaded: {}", jwks.status()),
            Err(err) => eprintln!("no keys yet, answering 503 until they load: {err}"),
        }
    });

    warp::serve(routes).incoming(listener).run().await;
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
                return Err(format!("unknown option {name:?}; options: {known:?}"));
            }
            let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            pairs.push((name, value));
        }
        Ok(Options { pairs })
    }

    /// Every value of `name`, or else the comma-separated list in `$env`.
    fn all(&self, name: &str, env: &str) -> Vec<String> {
        let given: Vec<String> = self
            .pairs
            .iter()
            .filter(|(flag, _)| flag == name)
            .map(|(_, value)| value.clone())
            .collect();
        if !given.is_empty() {
            return given;
        }
        std::env::var(env)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .collect()
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
