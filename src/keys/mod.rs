//! Signing keys: generation per algorithm, the public JWK and its thumbprint, and
//! the self-signed certificate published as `x5c`.
//!
//! All key material is handled by aws-lc-rs (see ARCHITECTURE.md for why), and
//! the private key only ever leaves this module as PKCS#8 DER for the store.

mod cert;
mod generate;
mod sign;

pub use cert::{Certificate, self_signed_certificate};
pub use generate::{Algorithm, KeyError, PrivateKey};
pub use sign::Signer;
