//! The public HTTP API over warp: routes, the body limit, and the server loop.
//!
//! Handlers read published snapshots only (see `state`); they never call the store.

mod error;
mod jwks;
mod ops;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use warp::Filter;

pub use error::ApiError;

use crate::state::Shared;

/// Request bodies over this many bytes get 413.
pub const BODY_LIMIT: u64 = 64 * 1024;

fn with_shared(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Arc<Shared>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&shared))
}

fn get_or_head() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// Rejects requests that announce a body over [`BODY_LIMIT`] before any routing.
fn body_limit() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(|length: Option<u64>| async move {
            match length {
                Some(length) if length > BODY_LIMIT => Err(warp::reject::custom(
                    ApiError::payload_too_large(BODY_LIMIT),
                )),
                _ => Ok(()),
            }
        })
        .untuple_one()
}

/// Every public route, with errors mapped to JSON.
pub fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let jwks = warp::path!(".well-known" / "jwks.json")
        .and(get_or_head())
        .and(with_shared(shared.clone()))
        .and(warp::header::optional::<String>("if-none-match"))
        .and(warp::header::optional::<String>("if-modified-since"))
        .and(warp::header::optional::<String>("accept"))
        .and_then(
            |shared: Arc<Shared>, if_none_match, if_modified_since, accept| async move {
                let conditions = jwks::Conditions {
                    if_none_match,
                    if_modified_since,
                    accept,
                };
                jwks::reply(&shared, &conditions)
                    .map(warp::Reply::into_response)
                    .map_err(warp::reject::custom)
            },
        );
    let healthz = warp::path!("healthz").and(get_or_head()).map(ops::healthz);
    let readyz = warp::path!("readyz")
        .and(get_or_head())
        .and(with_shared(shared))
        .map(|shared: Arc<Shared>| ops::readyz(&shared));
    body_limit()
        .and(jwks.or(healthz).unify().or(readyz).unify())
        .recover(error::handle_rejection)
        .unify()
}

/// Serves `routes` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight (mini-redis `server::run`).
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    routes: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    F: Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
