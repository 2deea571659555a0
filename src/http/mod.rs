//! The HTTP API over warp: routes, the body limit, and the server loop.
//!
//! Handlers read published snapshots only (see `state`); they never call the store.
//! Credential endpoints (token, issuer, admin) are mounted only where they may be
//! served (TLS, loopback, or `allow_plain_http`), and while no client is
//! configured they answer `404` like any unknown route; that is checked per
//! request, so a reload that adds the first client opens them. With
//! `server.private_listen` the issuer and admin endpoints move to that listener.

mod admin;
mod credentials;
mod discovery;
mod error;
mod issuer;
mod jwks;
mod ops;
pub mod server;
mod token;

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

pub use error::ApiError;

use crate::rotator::Event;
use crate::state::Shared;
use crate::throttle;

/// Request bodies over this many bytes get 413.
pub const BODY_LIMIT: u64 = 64 * 1024;

/// What the routes need: the shared state and the rotator's inbox.
#[derive(Clone, Debug)]
pub struct Api {
    /// Published state.
    pub shared: Arc<Shared>,
    /// Requests to the rotator (admin endpoints).
    pub events: mpsc::Sender<Event>,
}

type Route = BoxedFilter<(warp::reply::Response,)>;

fn with_shared(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Arc<Shared>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&shared))
}

fn get_or_head() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// What a request brings for client authentication: its `Authorization`
/// header, and where it comes from (for throttling).
#[derive(Clone, Debug, Default)]
pub struct RequestAuth {
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The connection's peer.
    pub peer: Option<throttle::PeerAddr>,
    /// `X-Forwarded-For`, believed only from a trusted proxy.
    pub forwarded_for: Option<String>,
}

fn authorization() -> impl Filter<Extract = (RequestAuth,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::ext::optional::<throttle::PeerAddr>())
        .and(warp::header::optional::<String>("x-forwarded-for"))
        .map(|authorization, peer, forwarded_for| RequestAuth {
            authorization,
            peer,
            forwarded_for,
        })
}

fn body() -> impl Filter<Extract = (bytes::Bytes,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(BODY_LIMIT).and(warp::body::bytes())
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

fn reply(
    result: Result<warp::reply::Response, ApiError>,
) -> Result<warp::reply::Response, warp::Rejection> {
    result.map_err(warp::reject::custom)
}

/// `body` as JSON with `Cache-Control: no-store`: for answers that hold a
/// token, a key or the result of an admin action.
fn no_store(body: &impl Serialize) -> warp::reply::Response {
    let mut response = warp::reply::json(body).into_response();
    response.headers_mut().insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-store"),
    );
    response
}

fn jwks_route(shared: &Arc<Shared>) -> Route {
    warp::path!(".well-known" / "jwks.json")
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
                reply(jwks::reply(&shared, &conditions).map(warp::Reply::into_response))
            },
        )
        .boxed()
}

fn operations_routes(shared: &Arc<Shared>) -> Route {
    let healthz = warp::path!("healthz").and(get_or_head()).map(ops::healthz);
    let readyz = warp::path!("readyz")
        .and(get_or_head())
        .and(with_shared(shared.clone()))
        .map(|shared: Arc<Shared>| ops::readyz(&shared));
    let metrics = warp::path!("metrics")
        .and(get_or_head())
        .and(with_shared(shared.clone()))
        .map(|shared: Arc<Shared>| ops::metrics(&shared));
    let discovery = warp::path!(".well-known" / "openid-configuration")
        .or(warp::path!(".well-known" / "oauth-authorization-server"))
        .unify()
        .and(get_or_head())
        .and(with_shared(shared.clone()))
        .and_then(|shared: Arc<Shared>| async move { reply(discovery::document(&shared)) });
    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(discovery)
        .unify()
        .boxed()
}

/// Passes while at least one client is configured; otherwise rejects as an
/// unknown route does, before the path or the method is looked at.
fn with_clients(shared: Arc<Shared>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::any()
        .and_then(move || {
            let configured = !shared.config.load().clients.is_empty();
            async move {
                if configured {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one()
}

fn token_route(shared: &Arc<Shared>) -> Route {
    with_clients(shared.clone())
        .and(warp::path!("oauth2" / "token"))
        .and(warp::post())
        .and(with_shared(shared.clone()))
        .and(authorization())
        .and(warp::header::optional::<String>("content-type"))
        .and(body())
        .and_then(|shared, authorization, content_type, body| async move {
            reply(token::token(shared, authorization, content_type, body).await)
        })
        .boxed()
}

fn issuer_and_admin_routes(api: &Api) -> Route {
    let shared = api.shared.clone();
    let signing_keys = warp::path!("v1" / "signing-keys")
        .and(get_or_head())
        .and(with_shared(shared.clone()))
        .and(authorization())
        .and_then(|shared, authorization| async move {
            reply(issuer::signing_keys(shared, authorization).await)
        });
    let sign = warp::path!("v1" / "sign")
        .and(warp::post())
        .and(with_shared(shared.clone()))
        .and(authorization())
        .and(body())
        .and_then(|shared, authorization, body| async move {
            reply(issuer::sign(shared, authorization, body).await)
        });
    let events = api.events.clone();
    let rotate = warp::path!("v1" / "rotate")
        .and(warp::post())
        .and(with_shared(shared.clone()))
        .and(authorization())
        .and_then(move |shared, authorization| {
            let events = events.clone();
            async move {
                reply(
                    admin::admin(shared, events, authorization, admin::AdminAction::Rotate)
                        .await,
                )
            }
        });
    let events = api.events.clone();
    let revoke = warp::path!("v1" / "revoke" / String)
        .and(warp::post())
        .and(with_shared(shared))
        .and(authorization())
        .and_then(move |kid: String, shared, authorization| {
            let events = events.clone();
            async move {
                reply(
                    admin::admin(
                        shared,
                        events,
                        authorization,
                        admin::AdminAction::Revoke(kid),
                    )
                    .await,
                )
            }
        });
    with_clients(api.shared.clone())
        .and(
            signing_keys
                .or(sign)
                .unify()
                .or(rotate)
                .unify()
                .or(revoke)
                .unify(),
        )
        .boxed()
}

/// The route label of a request path, for metrics (bounded cardinality).
fn route_label(path: &str) -> &'static str {
    const ROUTES: [&str; 11] = [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/oauth2/token",
        "/v1/signing-keys",
        "/v1/sign",
        "/v1/rotate",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/revoke",
    ];
    ROUTES
        .into_iter()
        .find(|route| path == *route || (*route == "/v1/revoke" && path.starts_with("/v1/revoke/")))
        .unwrap_or("other")
}

/// The routes a listener serves: every error answered as JSON, every request counted.
pub trait Served:
    Filter<Extract: warp::Reply, Error = Infallible> + Clone + Send + Sync + 'static
{
}

impl<F> Served for F where
    F: Filter<Extract: warp::Reply, Error = Infallible> + Clone + Send + Sync + 'static
{
}

fn finish(api: &Api, routes: Route) -> impl Served {
    let shared = api.shared.clone();
    body_limit()
        .and(routes)
        .recover(error::handle_rejection)
        .unify()
        .with(warp::log::custom(move |info| {
            shared
                .metrics
                .http_request(route_label(info.path()), info.status().as_u16());
        }))
}

/// The routes of the public listener.
pub fn public_routes(api: &Api, has_private_listener: bool, with_clients: bool) -> impl Served {
    let shared = &api.shared;
    let mut routes = jwks_route(shared)
        .or(operations_routes(shared))
        .unify()
        .boxed();
    if with_clients {
        routes = routes.or(token_route(shared)).unify().boxed();
        if !has_private_listener {
            routes = routes.or(issuer_and_admin_routes(api)).unify().boxed();
        }
    }
    finish(api, routes)
}

/// The routes of the private listener: the issuer and admin endpoints only.
pub fn private_routes(api: &Api) -> impl Served {
    finish(api, issuer_and_admin_routes(api))
}
