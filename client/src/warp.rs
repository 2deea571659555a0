//! A warp filter that yields verified claims (feature `warp`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use jwkd_client::{RemoteJwks, Verified, Verifier};
//! use warp::Filter;
//!
//! #[derive(Clone, serde::Deserialize)]
//! struct Claims { sub: String }
//!
//! let jwks = RemoteJwks::builder("https://auth.internal.example/.well-known/jwks.json").build()?;
//! let verifier = Verifier::builder(jwks)
//!     .issuer("https://auth.internal.example")
//!     .audience("payments")
//!     .build()?;
//! let route = warp::path("charge")
//!     .and(jwkd_client::warp::verified::<Claims>(verifier))
//!     .map(|verified: Verified<Claims>| format!("hello {}", verified.claims().sub))
//!     .recover(jwkd_client::warp::recover);
//! # let _ = route; Ok(()) }
//! ```

use serde::de::DeserializeOwned;
use warp::reject::{Reject, Rejection};
use warp::{Filter, Reply};

use crate::challenge::{Challenge, bearer_token};
use crate::error::Error;
use crate::verify::{Verified, Verifier};

/// Why [`verified`] rejected a request. Turn it into a response with [`recover`].
#[derive(Debug)]
pub struct Unauthorized {
    /// The verification error; `None` when there was no bearer token.
    pub error: Option<Error>,
}

impl Reject for Unauthorized {}

/// Extracts `Authorization: Bearer <token>`, verifies it, and yields the [`Verified`]
/// claims. Rejects with [`Unauthorized`] otherwise.
pub fn verified<C>(
    verifier: Verifier,
) -> impl Filter<Extract = (Verified<C>,), Error = Rejection> + Clone
where
    C: DeserializeOwned + Send + 'static,
{
    warp::header::optional::<String>("authorization").and_then(
        move |authorization: Option<String>| {
            let verifier = verifier.clone();
            async move {
                let Some(token) = authorization.as_deref().and_then(bearer_token) else {
                    return Err(warp::reject::custom(Unauthorized { error: None }));
                };
                verifier
                    .verify::<C>(token)
                    .await
                    .map_err(|error| warp::reject::custom(Unauthorized { error: Some(error) }))
            }
        },
    )
}

/// A `recover` handler: answers an [`Unauthorized`] rejection with 401 and an RFC 6750
/// `WWW-Authenticate` header, or 503 for unavailable keys; passes other rejections on.
///
/// # Errors
/// The rejection itself, when it is not an [`Unauthorized`].
pub async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Rejection> {
    let Some(unauthorized) = rejection.find::<Unauthorized>() else {
        return Err(rejection);
    };
    let challenge = match &unauthorized.error {
        None => Challenge::missing(),
        Some(error) => Challenge::for_error(error),
    };
    let mut response = challenge.body.into_response();
    *response.status_mut() = challenge.status;
    for (name, value) in challenge.headers {
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}
