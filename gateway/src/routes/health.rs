//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// `/metrics`: on the main listener, or alone on `metrics_listen`.
pub fn metrics_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready while the store accepts and durably stores writes and the server is not stopping.
async fn readyz(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if app.committer.is_poisoned() {
        // An operator's route: the reason (a storage error, a panic's text) belongs here.
        let reason = app
            .committer
            .poison_reason()
            .unwrap_or_else(|| "unknown".to_string());
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the store failed and refuses writes; the engine restarts: {reason}"),
        ));
    }
    if *app.shutting_down.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the engine is shutting down",
        ));
    }
    Ok(Json(
        json!({"status": "ready", "delta_head": app.committer.durable_head()}),
    ))
}

pub use crate::metrics::prometheus;

async fn metrics(
    State(app): State<AppState>,
    request: Parts,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &app.config.metrics_token {
        if !bearer_matches(&request, token) {
            return Err(ApiError::unauthorized(
                "/metrics requires `Authorization: Bearer <metrics_token>`",
            ));
        }
    }
    let handle = prometheus().ok_or_else(|| ApiError::unavailable("metrics are not available"))?;
    // Sampled now: what a scrape should see, at no cost to the hot path.
    let conversations = &app.runtime.conversations;
    metrics::gauge!(confab_engine::metrics::COMMIT_QUEUE_DEPTH)
        .set(app.committer.queue_depth() as f64);
    metrics::gauge!(confab_actors::metrics::LIVE_CONVERSATIONS)
        .set(conversations.live_count() as f64);
    let (queued, deepest) = conversations.mailbox_depths();
    metrics::gauge!(confab_actors::metrics::MAILBOX_MESSAGES).set(queued as f64);
    metrics::gauge!(confab_actors::metrics::MAILBOX_MAX).set(deepest as f64);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    ))
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in constant time).
fn bearer_matches(request: &Parts, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    crate::auth::bearer(request)
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes())))
}
