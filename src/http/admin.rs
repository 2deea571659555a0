//! The admin endpoints: `POST /v1/rotate` and `POST /v1/revoke/{kid}`.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use warp::http::StatusCode;

use super::credentials;
use super::error::ApiError;
use crate::auth::Role;
use crate::operation::OperationError;
use crate::rotator::Event;
use crate::state::Shared;
use crate::timeline;

/// What an admin asked for.
pub enum AdminAction {
    /// Rotate now.
    Rotate,
    /// Revoke this kid.
    Revoke(String),
}

/// `POST /v1/rotate` and `POST /v1/revoke/{kid}`: the same path as the CLI verbs,
/// run by the rotator; audited in the log.
///
/// # Errors
/// 401/403; 404 for an unknown kid; 409 for a kid already revoked; 503 when the store fails.
pub async fn admin(
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    request: super::RequestAuth,
    action: AdminAction,
) -> Result<warp::reply::Response, ApiError> {
    let client = credentials::authorize(&shared, request, Role::Admin).await?;
    let (reply, answer) = oneshot::channel();
    let (event, what) = match action {
        AdminAction::Rotate => (Event::RotateNow(reply), "rotate".to_owned()),
        AdminAction::Revoke(kid) => {
            let what = format!("revoke {kid}");
            (Event::Revoke(kid, reply), what)
        }
    };
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the rotator is not running",
        )
    };
    events.send(event).await.map_err(|_| unavailable())?;
    let result = answer.await.map_err(|_| unavailable())?;
    let changes = match result {
        Ok(changes) => changes,
        Err(err) => {
            tracing::warn!(target: "jwkd::audit", client = %client.id, action = %what, %err, "admin action failed");
            return Err(match err {
                OperationError::UnknownKid(_) => {
                    ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
                }
                OperationError::AlreadyRevoked(_) => {
                    ApiError::new(StatusCode::CONFLICT, "conflict", err.to_string())
                }
                _ => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    err.to_string(),
                ),
            });
        }
    };
    for change in &changes {
        tracing::info!(target: "jwkd::audit", client = %client.id, action = %what, "{change}");
    }
    let view = shared.view.load();
    let now = view.time_at(shared.common.clock.now());
    let keys: Vec<Value> = view
        .keyset
        .keys
        .iter()
        .map(|key| timeline::summary_at(key, now))
        .collect();
    let changes: Vec<String> = changes.iter().map(ToString::to_string).collect();
    Ok(super::no_store(&json!({"keys": keys, "changes": changes})))
}
