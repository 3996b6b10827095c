//! HTTP routes, one module per area of the API.

pub mod admin;
pub mod agents;
pub mod analytics;
pub mod commands;
pub mod contacts;
pub mod conversations;
pub mod health;
pub mod search;
pub mod webhooks;

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use bytes::Bytes;

use crate::error::ApiError;

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
