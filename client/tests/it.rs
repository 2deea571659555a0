//! The one integration-test binary of jwkd-client: every test talks to a real HTTP
//! server on 127.0.0.1:0 (see `common`).

mod common;

mod issuers;
mod jwks;
mod middleware;
mod rejections;
mod rotation;
mod sources;
