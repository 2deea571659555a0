//! Signing keys: generation per algorithm, the public JWK and its thumbprint, and
//! the self-signed certificate published as `x5c`.
//!
//! All key material is handled by aws-lc-rs (see ARCHITECTURE.md for why). The
//! private key leaves this module only as PKCS#8 DER, for the store and for the
//! client crate's `JwsSigner` (jwkd's one JWS signer, see `Signer`), and as the
//! private JWK parameters the issuer endpoint hands out.

mod cert;
pub mod der;
mod generate;
mod sign;

pub use cert::{Certificate, self_signed_certificate};
pub use generate::{Algorithm, KeyError, PrivateKey, thumbprint};
pub use sign::Signer;

/// The daemon's algorithms are exhaustive (every family it can generate), the
/// client's are `#[non_exhaustive]` (what a verifier accepts); each daemon
/// algorithm is the client algorithm of the same name.
impl From<Algorithm> for jwkd_client::Algorithm {
    fn from(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Es256 => jwkd_client::Algorithm::Es256,
            Algorithm::Es384 => jwkd_client::Algorithm::Es384,
            Algorithm::EdDsa => jwkd_client::Algorithm::EdDsa,
            Algorithm::Rs256 => jwkd_client::Algorithm::Rs256,
        }
    }
}

impl TryFrom<jwkd_client::Algorithm> for Algorithm {
    type Error = jwkd_client::UnknownAlgorithm;

    /// # Errors
    /// A client algorithm the daemon cannot generate keys for.
    fn try_from(alg: jwkd_client::Algorithm) -> Result<Self, Self::Error> {
        Algorithm::ALL
            .into_iter()
            .find(|own| jwkd_client::Algorithm::from(*own) == alg)
            .ok_or_else(|| jwkd_client::UnknownAlgorithm(alg.name().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use jwkd_client::jwk::{Jwk, JwkSet};
    use jwkd_client::{Algorithm as ClientAlgorithm, KeySet};

    use super::*;

    /// Name, JWS `alg` and key type agree: the client parses every daemon key
    /// under the algorithm it converts to, and converts back.
    #[test]
    fn every_daemon_algorithm_is_the_client_algorithm_of_its_name() {
        for alg in Algorithm::ALL {
            let client = ClientAlgorithm::from(alg);
            assert_eq!(client.name(), alg.name());
            assert_eq!(client.to_string(), alg.to_string());
            assert_eq!(alg.name().parse::<ClientAlgorithm>(), Ok(client));
            assert_eq!(Algorithm::try_from(client), Ok(alg));

            let key = PrivateKey::generate(alg).unwrap();
            let kid = key.thumbprint();
            let set = JwkSet {
                keys: vec![Jwk {
                    params: key.public_params().clone(),
                    kid: kid.clone(),
                    alg: alg.name().into(),
                    use_: "sig".into(),
                    x5c: None,
                    x5t_s256: None,
                }],
            };
            let keys = KeySet::from_json(&serde_json::to_vec(&set).unwrap()).unwrap();
            assert_eq!(keys.algorithm(&kid), Some(client), "{alg}: {keys:?}");
        }
        for client in ClientAlgorithm::ALL {
            if let Ok(alg) = Algorithm::try_from(client) {
                assert_eq!(ClientAlgorithm::from(alg), client);
            }
        }
    }
}
