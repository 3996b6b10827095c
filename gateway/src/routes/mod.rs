//! HTTP routes, one module per area of the API.

pub mod admin;
pub mod agents;
pub mod ai;
pub mod analytics;
pub mod attachments;
pub mod audit;
pub mod auth;
pub mod bulk;
pub mod canned;
pub mod channels;
pub mod commands;
pub mod contacts;
pub mod conversations;
pub mod erasure;
pub mod export;
pub mod health;
pub mod kb;
pub mod merge;
pub mod notifications;
pub mod outcomes;
pub mod outgoing;
pub mod search;
pub mod webhooks;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Records `action` in workspace `ws`'s admin audit: in `set`, the batch of the change
/// itself, when the caller has one, else in a batch of its own right after the change.
pub(crate) fn audit_into(
    set: &mut confab_engine::committer::WriteSet,
    ws: confab_engine::ids::WorkspaceId,
    by: confab_engine::audit::Author,
    action: &str,
    target: Option<String>,
    details: &[(&str, String)],
) {
    confab_engine::audit::record_admin(
        set,
        ws,
        by,
        action,
        target,
        details
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    );
}

/// [`audit_into`] a batch of its own, committed now.
pub(crate) async fn audit(
    app: &crate::app::AppState,
    ws: confab_engine::ids::WorkspaceId,
    by: confab_engine::audit::Author,
    action: &str,
    target: Option<String>,
    details: &[(&str, String)],
) -> Result<(), ApiError> {
    let mut set = confab_engine::committer::WriteSet::new();
    audit_into(&mut set, ws, by, action, target, details);
    app.committer.commit(set).await?;
    Ok(())
}

/// A request body that is a JSON object read into `T`. Unlike axum's `Json` alone, a body
/// whose root is not an object is refused (serde would fill a struct from an array by
/// position), and every refusal is the API's JSON error: 400 `malformed_json`, 413, 415,
/// 422 `invalid_value`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(object) = Json::<Map<String, Value>>::from_request(request, state).await?;
        serde_json::from_value(Value::Object(object))
            .map(Body)
            .map_err(|e| ApiError::unprocessable("invalid_value", e.to_string()))
    }
}

/// A raw body, or the API's JSON error for one that could not be read (too large, …).
pub fn raw_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "unreadable_body"
        };
        ApiError::new(status, code, rejection.body_text())
    })
}

/// A `limit` query value: a whole number from 1 to `max`, else 422 `invalid_query`.
pub fn parse_limit(value: &str, max: usize) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|l| (1..=max).contains(l))
        .ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_query",
                format!("`limit={value}` is not valid: expected a number from 1 to {max}"),
            )
        })
}

/// Runs a blocking store read off the async reactor.
pub async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> confab_engine::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(read)
        .await?
        .map_err(ApiError::from)
}

/// Refuses a caller who is not a workspace admin: 403 `admin_only`, `what` saying what
/// only admins may do.
pub(crate) fn admin_only(agent: &crate::auth::AgentAuth, what: &str) -> Result<(), ApiError> {
    if agent.0.role != confab_engine::model::Role::Admin {
        return Err(ApiError::forbidden(
            "admin_only",
            format!("only workspace admins may {what}"),
        ));
    }
    Ok(())
}
