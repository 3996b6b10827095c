//! Liveness, readiness and Prometheus metrics.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready while the store accepts and durably stores writes and the server is not stopping.
async fn readyz(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if app.committer.is_poisoned() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store failed and refuses writes; restart the engine",
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

/// The process-wide Prometheus recorder (one per process, shared by every server in it).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let handle = prometheus().ok_or_else(|| ApiError::unavailable("metrics are not available"))?;
    metrics::gauge!("confab_commit_queue_depth").set(app.committer.queue_depth() as f64);
    metrics::gauge!("confab_conversation_actors_live")
        .set(app.runtime.conversations.live_count() as f64);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    ))
}
