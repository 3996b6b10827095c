//! The workspace's agents: everyone may list them (assignee picker, mentions); workspace
//! admins may add agents.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use confab_engine::admin;
use confab_engine::ids::AgentId;
use confab_engine::model::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::AgentCreated;
use super::blocking;
use super::Body;
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create))
}

#[derive(Serialize, ToSchema)]
pub struct AgentView {
    id: AgentId,
    name: String,
    email: String,
    role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct AgentList {
    items: Vec<AgentView>,
}

/// The workspace's agents (assignee picker, mentions).
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "Every agent of the caller's workspace.", body = AgentList),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn list(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Json<AgentList>> {
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    let agents = blocking(move || store.workspace_agents(ws)).await?;
    let items = agents
        .into_iter()
        .map(|a| AgentView {
            id: a.id,
            name: a.name,
            email: a.email,
            role: a.role,
        })
        .collect();
    Ok(Json(AgentList { items }))
}

#[derive(Deserialize, ToSchema)]
pub struct NewWorkspaceAgent {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200, pattern = "[^\\s\\u0085]")]
    name: String,
    #[schema(max_length = 320, pattern = "^\\s*[^@\\s][^@]*@")]
    email: String,
    /// `agent` when left out.
    #[serde(default = "default_role")]
    #[schema(default = "agent")]
    role: Role,
}

fn default_role() -> Role {
    Role::Agent
}

/// Adds an agent to the caller's workspace (workspace admins only); the answer carries its
/// token, shown once.
#[utoipa::path(
    post,
    path = "/api/v1/agents",
    tag = "agents",
    security(("agent_token" = [])),
    request_body = NewWorkspaceAgent,
    responses(
        (status = 201, description = "Created.", body = AgentCreated),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`: the caller is not a workspace admin.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_email`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn create(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<NewWorkspaceAgent>,
) -> ApiResult<(StatusCode, Json<AgentCreated>)> {
    if agent.0.role != Role::Admin {
        return Err(ApiError::forbidden(
            "admin_only",
            "only workspace admins may add agents",
        ));
    }
    // Lengths count as sent (the document's `maxLength`), emptiness once trimmed.
    let too_long = |text: &str, max: usize| text.chars().count() > max;
    let (name, email) = (body.name.trim(), body.email.trim());
    if name.is_empty() || too_long(&body.name, 200) {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`name` must be 1 to 200 characters",
        ));
    }
    if !email.contains('@') || too_long(&body.email, 320) {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "`email` is not an email address",
        ));
    }
    let (created, token, mut set) = admin::new_agent(agent.0.workspace_id, name, email, body.role);
    super::audit_into(
        &mut set,
        created.workspace_id,
        confab_engine::audit::Author::agent(agent.0.id),
        "agent_created",
        Some(created.id.to_string()),
        &[
            ("name", created.name.clone()),
            ("role", format!("{:?}", created.role).to_lowercase()),
        ],
    );
    app.committer.commit(set).await?;
    Ok((
        StatusCode::CREATED,
        Json(AgentCreated {
            id: created.id,
            workspace_id: created.workspace_id,
            name: created.name,
            email: created.email,
            role: created.role,
            token,
        }),
    ))
}
