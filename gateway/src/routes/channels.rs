//! Channel health for agents: is each channel connected, what went wrong last, how full
//! is its outbox, how much of today's send budget is used. Changes of status also stream
//! as `channel_updated` deltas.

use axum::extract::{Path, State};
use axum::Json;
use confab_engine::ids::ChannelId;
use confab_engine::port::ChannelHealth;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

#[derive(Serialize, ToSchema)]
pub struct ChannelList {
    /// The workspace's channels, oldest first.
    channels: Vec<ChannelHealth>,
}

/// The health of every channel of the caller's workspace.
#[utoipa::path(
    get,
    path = "/api/v1/channels",
    tag = "channels",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "Each channel's health.", body = ChannelList),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
    )
)]
async fn list(agent: AgentAuth, State(app): State<AppState>) -> Json<ChannelList> {
    Json(ChannelList {
        channels: app.runtime.channels.workspace_health(agent.0.workspace_id),
    })
}

/// One channel's health.
#[utoipa::path(
    get,
    path = "/api/v1/channels/{id}",
    tag = "channels",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The channel.")),
    responses(
        (status = 200, description = "The channel's health.", body = ChannelHealth),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel in the caller's workspace.", body = ErrorBody),
    )
)]
async fn show(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ChannelHealth>> {
    let id: ChannelId = id.parse().map_err(|_| ApiError::not_found("channel"))?;
    let channels = &app.runtime.channels;
    match channels.get(id) {
        Some(channel) if channel.workspace_id == agent.0.workspace_id => channels
            .health(id)
            .map(Json)
            .ok_or_else(|| ApiError::not_found("channel")),
        _ => Err(ApiError::not_found("channel")),
    }
}
