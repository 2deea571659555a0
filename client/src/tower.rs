//! A tower layer that verifies bearer tokens (feature `tower`), usable from axum.
//!
//! On success the request goes on with the [`Verified<C>`] claims in its extensions;
//! otherwise the layer answers itself: 401 with an RFC 6750 `WWW-Authenticate` header,
//! or 503 when no keys can be used. The inner service is not called then.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Extension, Router, routing::get};
//! use jwkd_client::{RemoteJwks, Verified, Verifier, tower::VerifyLayer};
//!
//! #[derive(Clone, serde::Deserialize)]
//! struct Claims { sub: String }
//!
//! let jwks = RemoteJwks::builder("https://auth.internal.example/.well-known/jwks.json").build()?;
//! let verifier = Verifier::builder(jwks)
//!     .issuer("https://auth.internal.example")
//!     .audience("payments")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/charge", get(|Extension(verified): Extension<Verified<Claims>>| async move {
//!         format!("hello {}", verified.claims().sub)
//!     }))
//!     .layer(VerifyLayer::<Claims>::new(verifier));
//! # let _ = app; Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use serde::de::DeserializeOwned;
use tower_layer::Layer;
use tower_service::Service;

use crate::challenge::{Challenge, bearer_token};
use crate::verify::{Verified, Verifier};

/// Wraps a service with bearer-token verification into claims of type `C`.
pub struct VerifyLayer<C> {
    verifier: Verifier,
    _claims: PhantomData<fn() -> C>,
}

impl<C> VerifyLayer<C> {
    /// A layer verifying with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        VerifyLayer {
            verifier,
            _claims: PhantomData,
        }
    }
}

impl<C> Clone for VerifyLayer<C> {
    fn clone(&self) -> Self {
        VerifyLayer::new(self.verifier.clone())
    }
}

impl<C> fmt::Debug for VerifyLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyLayer").finish_non_exhaustive()
    }
}

impl<S, C> Layer<S> for VerifyLayer<C> {
    type Service = VerifyService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            verifier: self.verifier.clone(),
            _claims: PhantomData,
        }
    }
}

/// The service made by [`VerifyLayer`].
pub struct VerifyService<S, C> {
    inner: S,
    verifier: Verifier,
    _claims: PhantomData<fn() -> C>,
}

impl<S: Clone, C> Clone for VerifyService<S, C> {
    fn clone(&self) -> Self {
        VerifyService {
            inner: self.inner.clone(),
            verifier: self.verifier.clone(),
            _claims: PhantomData,
        }
    }
}

impl<S, C> fmt::Debug for VerifyService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyService").finish_non_exhaustive()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for VerifyService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String>,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready is the one that gets the request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let token = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(bearer_token)
                .map(str::to_owned);
            let Some(token) = token else {
                return Ok(respond(Challenge::missing()));
            };
            match verifier.verify::<C>(&token).await {
                Ok(verified) => {
                    request.extensions_mut().insert::<Verified<C>>(verified);
                    inner.call(request).await
                }
                Err(error) => Ok(respond(Challenge::for_error(&error))),
            }
        })
    }
}

fn respond<B: From<String>>(challenge: Challenge) -> Response<B> {
    let mut response = Response::new(B::from(challenge.body));
    *response.status_mut() = challenge.status;
    for (name, value) in challenge.headers {
        response.headers_mut().insert(name, value);
    }
    response
}
