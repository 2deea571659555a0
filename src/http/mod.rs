//! The HTTP API over warp: routes, the body limit, and the server loop.
//!
//! Handlers read published snapshots only (see `state`); they never call the store.
//! Credential endpoints (token, issuer, admin) are mounted only where they may be
//! served (TLS, loopback, or `allow_plain_http`), and while no client is
//! configured they answer `404` like any unknown route; that is checked per
//! request, so a reload that adds the first client opens them. With
//! `server.private_listen` the issuer and admin endpoints move to that listener.
//! Every endpoint is a row of one table, `ENDPOINTS`, from which the routes are
//! built and requests are labelled for metrics.

mod admin;
mod credentials;
mod discovery;
mod error;
mod issuer;
mod jwks;
mod mint;
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

/// Who may call an endpoint, which decides the listeners it is mounted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Anyone: on the public listener.
    Open,
    /// A client: on the public listener, while clients are configured.
    Client,
    /// A client with the issuer or admin role: on the private listener if there
    /// is one, else on the public listener, while clients are configured.
    IssuerOrAdmin,
}

/// An endpoint: its path, which is also its `route` label in
/// `jwkd_http_requests_total`, who may call it, and how it answers.
struct Endpoint {
    path: &'static str,
    /// The path ends in one more segment (`/{kid}`), which `answer` extracts; the
    /// label is the path without it.
    parameter: bool,
    access: Access,
    /// Everything after the path: methods, headers, body and the handler.
    answer: fn(&Api) -> Route,
}

/// Every endpoint. The routes are built from this table and requests are
/// labelled from it, so an endpoint cannot be served without its label.
const ENDPOINTS: [Endpoint; 11] = [
    Endpoint {
        path: "/.well-known/jwks.json",
        parameter: false,
        access: Access::Open,
        answer: jwks_answer,
    },
    Endpoint {
        path: "/healthz",
        parameter: false,
        access: Access::Open,
        answer: healthz_answer,
    },
    Endpoint {
        path: "/readyz",
        parameter: false,
        access: Access::Open,
        answer: readyz_answer,
    },
    Endpoint {
        path: "/metrics",
        parameter: false,
        access: Access::Open,
        answer: metrics_answer,
    },
    Endpoint {
        path: "/.well-known/openid-configuration",
        parameter: false,
        access: Access::Open,
        answer: discovery_answer,
    },
    Endpoint {
        path: "/.well-known/oauth-authorization-server",
        parameter: false,
        access: Access::Open,
        answer: discovery_answer,
    },
    Endpoint {
        path: "/oauth2/token",
        parameter: false,
        access: Access::Client,
        answer: token_answer,
    },
    Endpoint {
        path: "/v1/signing-keys",
        parameter: false,
        access: Access::IssuerOrAdmin,
        answer: signing_keys_answer,
    },
    Endpoint {
        path: "/v1/sign",
        parameter: false,
        access: Access::IssuerOrAdmin,
        answer: sign_answer,
    },
    Endpoint {
        path: "/v1/rotate",
        parameter: false,
        access: Access::IssuerOrAdmin,
        answer: rotate_answer,
    },
    Endpoint {
        path: "/v1/revoke",
        parameter: true,
        access: Access::IssuerOrAdmin,
        answer: revoke_answer,
    },
];

impl Endpoint {
    fn route(&self, api: &Api) -> Route {
        let path = self
            .path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .fold(warp::any().boxed(), |path, segment| {
                path.and(warp::path(segment)).boxed()
            });
        let path = if self.parameter {
            path
        } else {
            path.and(warp::path::end()).boxed()
        };
        path.and((self.answer)(api)).boxed()
    }

    /// Whether `path`, a request's, is counted under this endpoint's label.
    fn labels(&self, path: &str) -> bool {
        path.strip_prefix(self.path)
            .is_some_and(|rest| rest.is_empty() || (self.parameter && rest.starts_with('/')))
    }
}

/// The endpoints of `access`, or `None` if it has none.
fn routes_of(api: &Api, access: Access) -> Option<Route> {
    let routes = ENDPOINTS
        .iter()
        .filter(|endpoint| endpoint.access == access)
        .map(|endpoint| endpoint.route(api))
        .reduce(|routes, route| routes.or(route).unify().boxed())?;
    Some(match access {
        Access::Open => routes,
        Access::Client | Access::IssuerOrAdmin => {
            with_clients(api.shared.clone()).and(routes).boxed()
        }
    })
}

/// The route label of a request path, for metrics (bounded cardinality).
fn route_label(path: &str) -> &'static str {
    ENDPOINTS
        .iter()
        .find(|endpoint| endpoint.labels(path))
        .map_or("other", |endpoint| endpoint.path)
}

fn jwks_answer(api: &Api) -> Route {
    get_or_head()
        .and(with_shared(api.shared.clone()))
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
                reply(jwks::reply(&shared, &conditions).map(Reply::into_response))
            },
        )
        .boxed()
}

fn healthz_answer(_: &Api) -> Route {
    get_or_head().map(ops::healthz).boxed()
}

fn readyz_answer(api: &Api) -> Route {
    get_or_head()
        .and(with_shared(api.shared.clone()))
        .map(|shared: Arc<Shared>| ops::readyz(&shared))
        .boxed()
}

fn metrics_answer(api: &Api) -> Route {
    get_or_head()
        .and(with_shared(api.shared.clone()))
        .map(|shared: Arc<Shared>| ops::metrics(&shared))
        .boxed()
}

fn discovery_answer(api: &Api) -> Route {
    get_or_head()
        .and(with_shared(api.shared.clone()))
        .and_then(|shared: Arc<Shared>| async move { reply(discovery::document(&shared)) })
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

fn token_answer(api: &Api) -> Route {
    warp::post()
        .and(with_shared(api.shared.clone()))
        .and(authorization())
        .and(warp::header::optional::<String>("content-type"))
        .and(body())
        .and_then(|shared, authorization, content_type, body| async move {
            reply(token::token(shared, authorization, content_type, body).await)
        })
        .boxed()
}

fn signing_keys_answer(api: &Api) -> Route {
    get_or_head()
        .and(with_shared(api.shared.clone()))
        .and(authorization())
        .and_then(|shared, authorization| async move {
            reply(issuer::signing_keys(shared, authorization).await)
        })
        .boxed()
}

fn sign_answer(api: &Api) -> Route {
    warp::post()
        .and(with_shared(api.shared.clone()))
        .and(authorization())
        .and(body())
        .and_then(|shared, authorization, body| async move {
            reply(issuer::sign(shared, authorization, body).await)
        })
        .boxed()
}

fn rotate_answer(api: &Api) -> Route {
    let events = api.events.clone();
    warp::post()
        .and(with_shared(api.shared.clone()))
        .and(authorization())
        .and_then(move |shared, authorization| {
            let events = events.clone();
            async move {
                reply(admin::admin(shared, events, authorization, admin::AdminAction::Rotate).await)
            }
        })
        .boxed()
}

fn revoke_answer(api: &Api) -> Route {
    let events = api.events.clone();
    warp::path::param::<String>()
        .and(warp::path::end())
        .and(warp::post())
        .and(with_shared(api.shared.clone()))
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
        })
        .boxed()
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
    let mut accesses = vec![Access::Open];
    if with_clients {
        accesses.push(Access::Client);
        if !has_private_listener {
            accesses.push(Access::IssuerOrAdmin);
        }
    }
    finish(api, routes_for(api, &accesses))
}

/// The routes of the private listener: the issuer and admin endpoints only.
pub fn private_routes(api: &Api) -> impl Served {
    finish(api, routes_for(api, &[Access::IssuerOrAdmin]))
}

/// The endpoints of `accesses`, in the table's order.
fn routes_for(api: &Api, accesses: &[Access]) -> Route {
    accesses
        .iter()
        .filter_map(|access| routes_of(api, *access))
        .reduce(|routes, more| routes.or(more).unify().boxed())
        .unwrap_or_else(unknown_route)
}

/// What a listener with no endpoints answers: 404, as for an unknown route.
fn unknown_route() -> Route {
    warp::any()
        .and_then(|| async { Err::<warp::reply::Response, _>(warp::reject::not_found()) })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_labelled_by_its_own_path() {
        for endpoint in &ENDPOINTS {
            assert!(endpoint.path.starts_with('/'), "{}", endpoint.path);
            assert!(
                endpoint.path[1..]
                    .split('/')
                    .all(|segment| !segment.is_empty() && !segment.contains(['{', '}'])),
                "warp::path takes a non-empty literal segment: {}",
                endpoint.path
            );
            assert_eq!(route_label(endpoint.path), endpoint.path);
        }
        for (path, label) in [
            ("/v1/revoke/some-kid", "/v1/revoke"),
            ("/v1/signing-keys", "/v1/signing-keys"),
            ("/v1/sign/x", "other"),
            ("/v1/signx", "other"),
            ("/healthz/more", "other"),
            ("/", "other"),
            ("/nope", "other"),
        ] {
            assert_eq!(route_label(path), label, "{path}");
        }
    }

    #[test]
    fn every_access_has_endpoints() {
        for access in [Access::Open, Access::Client, Access::IssuerOrAdmin] {
            assert!(
                ENDPOINTS.iter().any(|endpoint| endpoint.access == access),
                "{access:?}"
            );
        }
    }
}
