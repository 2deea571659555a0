//! The warp filter and the tower layer (from axum too): 200 with claims, 401 with an
//! RFC 6750 challenge, 503 when no keys can be used.

use std::convert::Infallible;

use axum::Extension;
use axum::routing::get;
use http::{Request, Response, StatusCode};
use jwkd_client::tower::VerifyLayer;
use jwkd_client::{Verified, Verifier};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};
use warp::Filter;

use crate::common::{AUD, JwksServer, Mode, TestKey, claims};

/// A key, its server, a verifier over it, and a verifier whose endpoint is down (the
/// second server, kept alive so its port stays its own).
async fn fixture() -> (TestKey, [JwksServer; 2], Verifier, Verifier) {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(vec![key.public.clone()]).await;
    let (_jwks, verifier) = server.verifier().await;
    let down = JwksServer::start(vec![key.public.clone()]).await;
    down.set_mode(Mode::Hangup);
    let unavailable = Verifier::builder(down.builder().build().unwrap())
        .any_issuer()
        .audience(AUD)
        .build()
        .unwrap();
    (key, [server, down], verifier, unavailable)
}

fn expired(key: &TestKey) -> String {
    let mut claims = claims();
    claims["exp"] = json!(1);
    key.token(&claims)
}

#[tokio::test]
async fn warp_filter() {
    let (key, _servers, verifier, unavailable) = fixture().await;
    let route = |verifier: Verifier| {
        warp::path("charge")
            .and(jwkd_client::warp::verified::<Value>(verifier))
            .map(|verified: Verified<Value>| verified.claims()["sub"].as_str().unwrap().to_owned())
            .recover(jwkd_client::warp::recover)
    };
    let request = |token: Option<&str>| {
        let request = warp::test::request().path("/charge");
        match token {
            Some(token) => request.header("authorization", format!("Bearer {token}")),
            None => request,
        }
    };
    let response = request(Some(&key.token(&claims())))
        .reply(&route(verifier.clone()))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "orders");

    let response = request(None).reply(&route(verifier.clone())).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    let response = request(Some(&expired(&key)))
        .reply(&route(verifier.clone()))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with(r#"Bearer error="invalid_token", error_description="token expired"#),
        "{challenge}"
    );
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["error"], "invalid_token");

    let response = request(Some(&key.token(&claims())))
        .reply(&route(unavailable))
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("www-authenticate").is_none());
}

#[tokio::test]
async fn tower_layer() {
    let (key, _servers, verifier, unavailable) = fixture().await;
    let inner = tower::service_fn(|request: Request<String>| async move {
        let verified = request.extensions().get::<Verified<Value>>().unwrap();
        Ok::<_, Infallible>(Response::new(verified.claims()["sub"].to_string()))
    });
    let call = |verifier: Verifier, authorization: Option<String>| {
        let service = VerifyLayer::<Value>::new(verifier).layer(inner);
        let mut request = Request::builder().uri("/charge");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        service.oneshot(request.body(String::new()).unwrap())
    };
    let response = call(
        verifier.clone(),
        Some(format!("Bearer {}", key.token(&claims()))),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "\"orders\"");

    let response = call(verifier.clone(), None).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    let response = call(
        verifier.clone(),
        Some(format!("Basic {}", key.token(&claims()))),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let response = call(verifier.clone(), Some(format!("Bearer {}", expired(&key))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );

    let response = call(
        unavailable,
        Some(format!("Bearer {}", key.token(&claims()))),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn tower_layer_from_axum() {
    let (key, _servers, verifier, _) = fixture().await;
    let app = axum::Router::new()
        .route(
            "/charge",
            get(
                |Extension(verified): Extension<Verified<Value>>| async move {
                    verified.claims()["sub"].as_str().unwrap().to_owned()
                },
            ),
        )
        .layer(VerifyLayer::<Value>::new(verifier));
    let request = |authorization: String| {
        Request::builder()
            .uri("/charge")
            .header("authorization", authorization)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let response = app
        .clone()
        .oneshot(request(format!("Bearer {}", key.token(&claims()))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"orders");

    let response = app
        .oneshot(request(format!("Bearer {}", expired(&key))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "invalid_token");
}
