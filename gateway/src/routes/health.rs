//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// `/metrics`: on the main listener, or alone on `metrics_listen`.
pub fn metrics_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    status: &'static str,
    /// The last durable, published stream offset.
    delta_head: u64,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "process",
    responses((status = 200, description = "Alive.", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store accepts and durably stores writes and the server is not stopping.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "process",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "`store_unavailable` (with the reason; the process exits after `poisoned_exit_grace_secs`), `shutting_down`.", body = ErrorBody),
    )
)]
async fn readyz(State(app): State<AppState>) -> Result<Json<Ready>, ApiError> {
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
    Ok(Json(Ready {
        status: "ready",
        delta_head: app.committer.durable_head(),
    }))
}

pub use crate::metrics::prometheus;

/// Prometheus metrics (text exposition format); see docs/METRICS.md.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "process",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: `metrics_token` is set and the request does not carry it.", body = ErrorBody),
        (status = 503, description = "`unavailable`.", body = ErrorBody),
    )
)]
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
