//! jwkd-client: what a service needs to trust tokens signed by jwkd.
//!
//! # Layout
//! - [`jwk`]: the JWK and JWK Set types, shared with the daemon so both sides
//!   agree on one definition of what is published.
//!
//! The verifier never takes a key from the token, and this crate does not mint
//! tokens or hold private keys.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod jwk;
