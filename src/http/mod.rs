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
pub(crate) mod credentials;
mod discovery;
mod error;
mod issuer;
mod jwks;
mod mint;
mod ops;
pub mod server;
pub(crate) mod token;

use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

pub use error::ApiError;

use crate::rotator::Event;
use crate::state::{Common, Shared};
use crate::throttle;

/// Request bodies over this many bytes get 413.
pub const BODY_LIMIT: u64 = 64 * 1024;

/// One issuer as the routes see it: its state, its rotator's inbox, its name
/// and the path its endpoints are served under.
#[derive(Clone, Debug)]
pub struct Api {
    /// Published state.
    pub shared: Arc<Shared>,
    /// Requests to the rotator (admin endpoints).
    pub events: mpsc::Sender<Event>,
    name: Arc<str>,
    /// Empty for the default issuer (its endpoints are at the root), else the
    /// path of its URL (`/billing`).
    prefix: Arc<str>,
}

impl Api {
    /// The issuer whose state is `shared`, whose rotator reads `events`.
    pub fn new(shared: Arc<Shared>, events: mpsc::Sender<Event>) -> Api {
        let config = shared.config.load();
        let prefix = match config.name.as_str() {
            crate::config::DEFAULT_ISSUER => "",
            _ => config
                .issuer
                .issuer
                .as_deref()
                .and_then(crate::config::url_path)
                .unwrap_or_default(),
        };
        Api {
            name: config.name.as_str().into(),
            prefix: prefix.into(),
            events,
            shared: Arc::clone(&shared),
        }
    }

    /// The issuer's name (its `issuer` label).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The issuers a daemon serves, found by request path: the default one at the
/// root, each other under its URL's path. Replaced as a whole on reload, so a
/// request sees either the old set or the new one.
#[derive(Debug)]
pub struct Issuers {
    list: ArcSwap<Vec<Api>>,
    /// What they share: the metrics registry and the clock.
    pub common: Arc<Common>,
}

/// The issuer and endpoint a request path names, and the endpoint's parameter.
#[derive(Clone, Debug)]
struct Target {
    api: Api,
    parameter: Option<String>,
}

impl Issuers {
    /// Serves `apis` (the default issuer first).
    pub fn new(common: Arc<Common>, apis: Vec<Api>) -> Issuers {
        Issuers {
            list: ArcSwap::from_pointee(apis),
            common,
        }
    }

    /// Serves `apis` from the next request on.
    pub fn replace(&self, apis: Vec<Api>) {
        self.list.store(Arc::new(apis));
    }

    /// The issuers served now.
    pub fn list(&self) -> Arc<Vec<Api>> {
        self.list.load_full()
    }

    /// The issuer whose `endpoint` `path` is, if any.
    fn find(&self, path: &str, endpoint: &Endpoint) -> Option<Target> {
        self.list.load().iter().find_map(|api| {
            let parameter = endpoint.matches(&api.prefix, path)?;
            Some(Target {
                api: api.clone(),
                parameter: parameter.map(str::to_owned),
            })
        })
    }

    /// The `issuer` and `route` labels of a request path (bounded cardinality:
    /// configured names and the table's paths; `other` for the rest).
    fn labels(&self, path: &str) -> (Option<Arc<str>>, &'static str) {
        let list = self.list.load();
        for endpoint in &ENDPOINTS {
            match endpoint.scope {
                Scope::Daemon(_) => {
                    if endpoint.matches("", path).is_some() {
                        return (None, endpoint.path);
                    }
                }
                Scope::Issuer(_) => {
                    // Only the name is taken: this runs for every request.
                    let found = list
                        .iter()
                        .find(|api| endpoint.matches(&api.prefix, path).is_some());
                    if let Some(api) = found {
                        return (Some(Arc::clone(&api.name)), endpoint.path);
                    }
                }
            }
        }
        (None, "other")
    }
}

type Route = BoxedFilter<(warp::reply::Response,)>;

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
/// `jwkd_http_requests_total`, who may call it, whose it is, and how it answers.
struct Endpoint {
    path: &'static str,
    /// The path ends in one more segment (`/{kid}`), which the answer is
    /// given; the label is the path without it.
    parameter: bool,
    access: Access,
    /// The daemon's own, or each issuer's; and how it answers: everything after
    /// the path (methods, headers, body and the handler).
    scope: Scope,
    /// Where an issuer's path goes.
    placement: Placement,
}

/// Whose an endpoint is.
#[derive(Clone, Copy)]
enum Scope {
    /// The daemon's (health, readiness, metrics): at the root, about every issuer.
    Daemon(fn(&Arc<Issuers>) -> Route),
    /// Each issuer's, given the issuer the path names.
    Issuer(fn(BoxedFilter<(Target,)>) -> Route),
}

/// Where an issuer's path goes in an endpoint's (nowhere for the default issuer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Before it: `/billing/.well-known/jwks.json` (and OpenID Discovery's
    /// `/billing/.well-known/openid-configuration`).
    Prefixed,
    /// After it, as RFC 8414 §3.1 puts the metadata of an issuer with a path:
    /// `/.well-known/oauth-authorization-server/billing`.
    Suffixed,
}

/// Every endpoint. The routes are built from this table and requests are
/// labelled from it, so an endpoint cannot be served without its label.
const ENDPOINTS: [Endpoint; 11] = [
    Endpoint {
        path: "/.well-known/jwks.json",
        parameter: false,
        access: Access::Open,
        scope: Scope::Issuer(jwks_answer),
        placement: Placement::Prefixed,
    },
    Endpoint {
        path: "/healthz",
        parameter: false,
        access: Access::Open,
        scope: Scope::Daemon(healthz_answer),
        placement: Placement::Prefixed,
    },
    Endpoint {
        path: "/readyz",
        parameter: false,
        access: Access::Open,
        scope: Scope::Daemon(readyz_answer),
        placement: Placement::Prefixed,
    },
    Endpoint {
        path: "/metrics",
        parameter: false,
        access: Access::Open,
        scope: Scope::Daemon(metrics_answer),
        placement: Placement::Prefixed,
    },
    Endpoint {
        path: "/.well-known/openid-configuration",
        parameter: false,
        access: Access::Open,
        scope: Scope::Issuer(discovery_answer),
        placement: Placement::Prefixed,
    },
    Endpoint {
        path: "/.well-known/oauth-authorization-server",
        parameter: false,
        access: Access::Open,
        scope: Scope::Issuer(discovery_answer),
        placement: Placement::Suffixed,
    },
    Endpoint {
        path: "/oauth2/token",
        parameter: false,
        access: Access::Client,
        scope: Scope::Issuer(token_answer),
        placement: Placement::Prefixed,
    },
    Endpoint {
        path: "/v1/signing-keys",
        parameter: false,
        access: Access::IssuerOrAdmin,
        scope: Scope::Issuer(signing_keys_answer),
        placement: Placement::Prefixed,
    },
    Endpoint {
        path: "/v1/sign",
        parameter: false,
        access: Access::IssuerOrAdmin,
        scope: Scope::Issuer(sign_answer),
        placement: Placement::Prefixed,
    },
    Endpoint {
        path: "/v1/rotate",
        parameter: false,
        access: Access::IssuerOrAdmin,
        scope: Scope::Issuer(rotate_answer),
        placement: Placement::Prefixed,
    },
    Endpoint {
        path: "/v1/revoke",
        parameter: true,
        access: Access::IssuerOrAdmin,
        scope: Scope::Issuer(revoke_answer),
        placement: Placement::Prefixed,
    },
];

impl Endpoint {
    /// Whether `path` is this endpoint of the issuer served under `prefix`, and
    /// with which parameter.
    fn matches<'p>(&self, prefix: &str, path: &'p str) -> Option<Option<&'p str>> {
        let rest = match self.placement {
            Placement::Prefixed => path.strip_prefix(prefix)?.strip_prefix(self.path)?,
            Placement::Suffixed => path.strip_prefix(self.path)?.strip_prefix(prefix)?,
        };
        match (self.parameter, rest) {
            (false, "") => Some(None),
            (true, rest) => {
                let parameter = rest.strip_prefix('/')?;
                (!parameter.is_empty() && !parameter.contains('/')).then_some(Some(parameter))
            }
            (false, _) => None,
        }
    }

    fn route(&'static self, issuers: &Arc<Issuers>) -> Route {
        match self.scope {
            Scope::Daemon(answer) => {
                let path = self
                    .path
                    .split('/')
                    .filter(|segment| !segment.is_empty())
                    .fold(warp::any().boxed(), |path, segment| {
                        path.and(warp::path(segment)).boxed()
                    });
                path.and(warp::path::end()).and(answer(issuers)).boxed()
            }
            Scope::Issuer(answer) => answer(self.target(issuers)),
        }
    }

    /// The issuer a request's path names for this endpoint. Credential
    /// endpoints of an issuer without clients reject as an unknown route does,
    /// checked per request (a reload may add the first client).
    fn target(&'static self, issuers: &Arc<Issuers>) -> BoxedFilter<(Target,)> {
        let issuers = Arc::clone(issuers);
        let needs_clients = self.access != Access::Open;
        warp::path::full()
            .and_then(move |path: warp::path::FullPath| {
                let target = issuers.find(path.as_str(), self).filter(|target| {
                    !needs_clients || !target.api.shared.config.load().clients.is_empty()
                });
                async move { target.ok_or_else(warp::reject::not_found) }
            })
            .boxed()
    }
}

/// The endpoints of `access`, or `None` if it has none.
fn routes_of(issuers: &Arc<Issuers>, access: Access) -> Option<Route> {
    ENDPOINTS
        .iter()
        .filter(|endpoint| endpoint.access == access)
        .map(|endpoint| endpoint.route(issuers))
        .reduce(|routes, route| routes.or(route).unify().boxed())
}

fn jwks_answer(target: BoxedFilter<(Target,)>) -> Route {
    target
        .and(get_or_head())
        .map(|target: Target| target.api.shared)
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

fn healthz_answer(_: &Arc<Issuers>) -> Route {
    get_or_head().map(ops::healthz).boxed()
}

fn readyz_answer(issuers: &Arc<Issuers>) -> Route {
    let issuers = Arc::clone(issuers);
    get_or_head().map(move || ops::readyz(&issuers)).boxed()
}

fn metrics_answer(issuers: &Arc<Issuers>) -> Route {
    let issuers = Arc::clone(issuers);
    get_or_head().map(move || ops::metrics(&issuers)).boxed()
}

fn discovery_answer(target: BoxedFilter<(Target,)>) -> Route {
    target
        .and(get_or_head())
        .and_then(|target: Target| async move { reply(discovery::document(&target.api.shared)) })
        .boxed()
}

fn token_answer(target: BoxedFilter<(Target,)>) -> Route {
    target
        .and(warp::post())
        .map(|target: Target| target.api.shared)
        .and(authorization())
        .and(warp::header::optional::<String>("content-type"))
        .and(body())
        .and_then(|shared, authorization, content_type, body| async move {
            reply(token::token(shared, authorization, content_type, body).await)
        })
        .boxed()
}

fn signing_keys_answer(target: BoxedFilter<(Target,)>) -> Route {
    target
        .and(get_or_head())
        .map(|target: Target| target.api.shared)
        .and(authorization())
        .and_then(|shared, authorization| async move {
            reply(issuer::signing_keys(shared, authorization).await)
        })
        .boxed()
}

fn sign_answer(target: BoxedFilter<(Target,)>) -> Route {
    target
        .and(warp::post())
        .map(|target: Target| target.api.shared)
        .and(authorization())
        .and(body())
        .and_then(|shared, authorization, body| async move {
            reply(issuer::sign(shared, authorization, body).await)
        })
        .boxed()
}

fn rotate_answer(target: BoxedFilter<(Target,)>) -> Route {
    target
        .and(warp::post())
        .and(authorization())
        .and_then(|target: Target, authorization| async move {
            let Api { shared, events, .. } = target.api;
            reply(admin::admin(shared, events, authorization, admin::AdminAction::Rotate).await)
        })
        .boxed()
}

fn revoke_answer(target: BoxedFilter<(Target,)>) -> Route {
    target
        .and(warp::post())
        .and(authorization())
        .and_then(|target: Target, authorization| async move {
            let Api { shared, events, .. } = target.api;
            // `Endpoint::matches` gives a parameter endpoint its one segment.
            let kid = target.parameter.unwrap_or_default();
            reply(
                admin::admin(
                    shared,
                    events,
                    authorization,
                    admin::AdminAction::Revoke(kid),
                )
                .await,
            )
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

fn finish(issuers: &Arc<Issuers>, routes: Route) -> impl Served {
    let issuers = Arc::clone(issuers);
    body_limit()
        .and(routes)
        .recover(error::handle_rejection)
        .unify()
        .with(warp::log::custom(move |info| {
            let (issuer, route) = issuers.labels(info.path());
            issuers.common.metrics.http_request(
                issuer.as_deref().unwrap_or_default(),
                route,
                info.status().as_u16(),
            );
        }))
}

/// The routes of the public listener.
pub fn public_routes(
    issuers: &Arc<Issuers>,
    has_private_listener: bool,
    with_clients: bool,
) -> impl Served {
    let mut accesses = vec![Access::Open];
    if with_clients {
        accesses.push(Access::Client);
        if !has_private_listener {
            accesses.push(Access::IssuerOrAdmin);
        }
    }
    finish(issuers, routes_for(issuers, &accesses))
}

/// The routes of the private listener: the issuer and admin endpoints only.
pub fn private_routes(issuers: &Arc<Issuers>) -> impl Served {
    finish(issuers, routes_for(issuers, &[Access::IssuerOrAdmin]))
}

/// The endpoints of `accesses`, in the table's order.
fn routes_for(issuers: &Arc<Issuers>, accesses: &[Access]) -> Route {
    accesses
        .iter()
        .filter_map(|access| routes_of(issuers, *access))
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

    /// Issuers served under these prefixes, with no state behind them: enough to
    /// find targets and labels.
    fn issuers(prefixes: &[(&str, &str)]) -> Arc<Issuers> {
        let config = crate::config::Config::parse(
            "",
            std::path::Path::new("/etc/jwkd/t.toml"),
            crate::config::test_time(),
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let common = Arc::new(Common::new(&config, Arc::new(crate::clock::SystemClock)));
        let apis = prefixes
            .iter()
            .map(|(name, prefix)| {
                let shared =
                    Arc::new(Shared::for_issuer(config.clone(), Arc::clone(&common)).unwrap());
                Api {
                    shared,
                    events: mpsc::channel(1).0,
                    name: (*name).into(),
                    prefix: (*prefix).into(),
                }
            })
            .collect();
        Arc::new(Issuers::new(common, apis))
    }

    #[test]
    fn every_endpoint_is_labelled_by_its_own_path() {
        let issuers = issuers(&[("default", ""), ("billing", "/billing")]);
        for endpoint in &ENDPOINTS {
            assert!(endpoint.path.starts_with('/'), "{}", endpoint.path);
            assert!(
                endpoint.path[1..]
                    .split('/')
                    .all(|segment| !segment.is_empty() && !segment.contains(['{', '}'])),
                "warp::path takes a non-empty literal segment: {}",
                endpoint.path
            );
            let issuer = match endpoint.scope {
                Scope::Daemon(_) => "",
                Scope::Issuer(_) => "default",
            };
            let path = if endpoint.parameter {
                format!("{}/x", endpoint.path)
            } else {
                endpoint.path.to_owned()
            };
            let (found, label) = issuers.labels(&path);
            assert_eq!(
                (found.as_deref().unwrap_or_default(), label),
                (issuer, endpoint.path)
            );
        }
        for (path, issuer, label) in [
            ("/v1/revoke/some-kid", "default", "/v1/revoke"),
            ("/billing/v1/revoke/some-kid", "billing", "/v1/revoke"),
            ("/v1/signing-keys", "default", "/v1/signing-keys"),
            (
                "/billing/.well-known/jwks.json",
                "billing",
                "/.well-known/jwks.json",
            ),
            (
                "/billing/.well-known/openid-configuration",
                "billing",
                "/.well-known/openid-configuration",
            ),
            (
                "/.well-known/oauth-authorization-server/billing",
                "billing",
                "/.well-known/oauth-authorization-server",
            ),
            ("/billing/oauth2/token", "billing", "/oauth2/token"),
            ("/billing/healthz", "", "other"),
            ("/billing", "", "other"),
            ("/billingx/.well-known/jwks.json", "", "other"),
            ("/other/.well-known/jwks.json", "", "other"),
            ("/v1/revoke/", "", "other"),
            ("/v1/revoke/a/b", "", "other"),
            ("/v1/sign/x", "", "other"),
            ("/v1/signx", "", "other"),
            ("/healthz/more", "", "other"),
            ("/", "", "other"),
            ("/nope", "", "other"),
        ] {
            let (found, found_label) = issuers.labels(path);
            assert_eq!(
                (found.as_deref().unwrap_or_default(), found_label),
                (issuer, label),
                "{path}"
            );
        }
    }

    #[test]
    fn a_path_names_one_issuer_and_one_parameter() {
        let issuers = issuers(&[("default", ""), ("billing", "/billing")]);
        let revoke = ENDPOINTS.iter().find(|e| e.path == "/v1/revoke").unwrap();
        let target = issuers.find("/billing/v1/revoke/kid-1", revoke).unwrap();
        assert_eq!(
            (target.api.name(), target.parameter.as_deref()),
            ("billing", Some("kid-1"))
        );
        let target = issuers.find("/v1/revoke/kid-2", revoke).unwrap();
        assert_eq!(
            (target.api.name(), target.parameter.as_deref()),
            ("default", Some("kid-2"))
        );
        // Paths are matched as sent: no dot segments, no percent-decoding, so
        // no path reaches another issuer's endpoint, or one of the default's
        // through an issuer's prefix.
        for path in [
            "/billing/../v1/revoke/kid-1",
            "/%62illing/v1/revoke/kid-1",
            "/billing//v1/revoke/kid-1",
            "/BILLING/v1/revoke/kid-1",
        ] {
            assert!(issuers.find(path, revoke).is_none(), "{path}");
        }
        // A reload that drops an issuer drops its paths with it.
        issuers.replace(issuers.list()[..1].to_vec());
        assert!(issuers.find("/billing/v1/revoke/kid-1", revoke).is_none());
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
