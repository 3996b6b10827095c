//! The application state shared by every route, and the router.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use confab_actors::Runtime;
use confab_engine::committer::Committer;
use confab_engine::store::Store;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{SessionCache, TokenCache};
use crate::config::Config;
use crate::error::ApiError;
use crate::routes;
use crate::stream::{Hub, Tickets};

/// Everything a request handler may need. Cheap to clone (all handles).
pub struct App {
    pub config: Config,
    pub store: Store,
    pub committer: Committer,
    pub runtime: Runtime,
    pub hub: Arc<Hub>,
    pub tickets: Tickets,
    pub tokens: TokenCache,
    pub sessions: SessionCache,
    /// Sign-in attempts: per email, and in all (each costs an argon2 hash).
    pub logins: crate::routes::auth::LoginLimits,
    /// Canned replies are changed one at a time (a read, then a write moving a shortcut).
    pub canned_writes: tokio::sync::Mutex<()>,
    /// Webhook endpoints are changed (by admins, or by delivery progress) one at a time.
    pub webhook_writes: tokio::sync::Mutex<()>,
    /// Told after an admin adds, changes or enables an outgoing webhook: delivery picks it
    /// up at once.
    pub webhook_edits: tokio::sync::Notify,
    /// Wakes a workspace's webhook delivery tasks (its changes, an admin's edit).
    pub webhook_wakes: std::sync::Arc<crate::webhooks::Wakes>,
    /// Merges and splits, one at a time: each changes two conversations (two actors), and
    /// two crossing merges (a into b, b into a) must not both pass their checks.
    pub merges: tokio::sync::Mutex<()>,
    /// Turns true when the server begins shutting down; long-lived sessions watch it.
    pub shutting_down: watch::Receiver<bool>,
}

pub type AppState = Arc<App>;

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Every route of the OpenAPI document (`crate::openapi`), each registered from its
/// handler's annotation: the router and the document cannot disagree.
pub fn api_routes() -> OpenApiRouter<AppState> {
    routes_but_metrics().merge(routes::health::metrics_routes())
}

/// The document's routes but `/metrics` (which may have a listener of its own).
fn routes_but_metrics() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .merge(routes::health::routes())
        .merge(crate::stream::routes())
        .merge(routes::admin::routes())
        .merge(routes::webhooks::routes())
        .merge(routes::conversations::routes())
        .merge(routes::attachments::routes())
        .merge(routes::commands::routes())
        .merge(routes::bulk::routes())
        .merge(routes::merge::routes())
        .merge(routes::outcomes::routes())
        .merge(routes::audit::routes())
        .merge(routes::outgoing::routes())
        .merge(routes::contacts::routes())
        .merge(routes::export::routes())
        .merge(routes::erasure::routes())
        .merge(routes::channels::routes())
        .merge(routes::ai::routes())
        .merge(routes::kb::routes())
        .merge(routes::canned::routes())
        .merge(routes::agents::routes())
        .merge(routes::auth::routes())
        .merge(routes::analytics::routes())
        .merge(routes::search::routes())
        .merge(routes::notifications::routes())
        .merge(crate::openapi::routes())
}

/// The whole HTTP surface (without `/metrics` when it has its own listener).
pub fn router(app: AppState) -> Router {
    let max_body = app.config.max_body_bytes;
    let routes = match app.config.metrics_listen {
        None => api_routes(),
        Some(_) => routes_but_metrics(),
    };
    let (routes, _) = routes.split_for_parts();
    routes
        .merge(crate::ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(crate::metrics::track_http))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(app.config.http.clone()),
            crate::edge::guard,
        ))
        // Outermost: the edge's own answers (408, 414, 431, 500) carry the headers too.
        .layer(axum::middleware::from_fn(crate::ui::security_headers))
        .with_state(app)
}

/// The surface of the metrics listener (`metrics_listen`): `/metrics` alone.
pub fn metrics_router(app: AppState) -> Router {
    let (routes, _) = routes::health::metrics_routes().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(app.config.http.clone()),
            crate::edge::guard,
        ))
        .with_state(app)
}
