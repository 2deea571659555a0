//! What the token endpoint and `/v1/sign` share when they mint a token: the clock
//! check, `iat`, `nbf`, a fresh `jti`, `exp` within `max_token_lifetime`, the current
//! key of the client's family, the signature and the count. Each endpoint keeps its
//! own policy: which claims it takes from the client, and its `typ`.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use crate::custody::{SignFailure, TokenSigner};
use crate::keys::Algorithm;
use crate::kms::KmsError;
use crate::state::Shared;

/// A token being minted at one instant of this host's clock.
pub(super) struct Mint<'a> {
    shared: &'a Shared,
    now: DateTime<Utc>,
    iat: i64,
    /// `iat + issuer.token_lifetime`: the `exp` of a token that asks for none.
    default_exp: i64,
    /// `iat + keys.max_token_lifetime`: no token outlives it.
    latest_exp: i64,
}

/// A signed token.
pub(super) struct Minted {
    /// The compact JWS.
    pub token: String,
    /// The key that signed it.
    pub signer: Arc<TokenSigner>,
}

impl<'a> Mint<'a> {
    /// Starts minting now, refusing while this host's clock is beyond `clock_skew`:
    /// `iat` and `exp` come from that clock.
    ///
    /// # Errors
    /// 503 naming the clock problem.
    pub(super) fn begin(shared: &'a Shared) -> Result<Mint<'a>, ApiError> {
        if let Some(skew) = &shared.view.load().clock.skew {
            return Err(ApiError::clock_skew(skew));
        }
        let config = shared.config.load();
        let now = shared.common.clock.now();
        let iat = now.timestamp();
        let after = |lifetime: std::time::Duration| {
            iat.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX))
        };
        Ok(Mint {
            shared,
            now,
            iat,
            default_exp: after(config.issuer.token_lifetime),
            latest_exp: after(config.keys.max_token_lifetime),
        })
    }

    /// The token's `iat`.
    pub(super) fn iat(&self) -> i64 {
        self.iat
    }

    /// The `exp` for a `requested` one, and whether it was capped: absent, `iat +
    /// token_lifetime`; never beyond `iat + max_token_lifetime`.
    ///
    /// # Errors
    /// 400 for a requested `exp` that is not in the future.
    pub(super) fn expiry(&self, requested: Option<i64>) -> Result<(i64, bool), ApiError> {
        match requested {
            Some(exp) if exp > self.latest_exp => Ok((self.latest_exp, true)),
            Some(exp) if exp <= self.iat => {
                Err(ApiError::invalid_request("exp is not in the future"))
            }
            Some(exp) => Ok((exp, false)),
            None => Ok((self.default_exp.min(self.latest_exp), false)),
        }
    }

    /// Sets `iat`, `nbf`, `exp` and a fresh `jti` in `claims`, signs them as `typ`
    /// with the current key of `alg` for the client `caller`, and counts the token.
    ///
    /// # Errors
    /// 503 without a current key or while KMS cannot sign; 500 if signing
    /// fails otherwise (logged).
    pub(super) async fn sign(
        self,
        alg: Algorithm,
        typ: &str,
        claims: &mut Map<String, Value>,
        exp: i64,
        caller: &str,
    ) -> Result<Minted, ApiError> {
        let signer = self
            .shared
            .view
            .load()
            .current_signer_at(alg, self.now)
            .ok_or_else(|| ApiError::no_signing_key(alg))?;
        claims.insert("iat".into(), json!(self.iat));
        claims.insert("nbf".into(), json!(self.iat));
        claims.insert("exp".into(), json!(exp));
        claims.insert("jti".into(), json!(new_jti()?));
        let token = signer
            .sign_jws(typ, claims, caller)
            .await
            .map_err(|err| match err {
                SignFailure::Kms(KmsError::Unavailable(_)) => ApiError::kms_unavailable(),
                SignFailure::Kms(KmsError::Busy(reason)) => ApiError::kms_busy(&reason),
                err => {
                    tracing::error!(%err, "cannot sign a token");
                    ApiError::internal()
                }
            })?;
        self.shared.metrics.tokens_issued.inc();
        Ok(Minted { token, signer })
    }
}

/// A fresh random `jti`.
fn new_jti() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}
