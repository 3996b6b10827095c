//! The workspace's agents: everyone may list them (assignee picker, mentions); workspace
//! admins may add agents.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use confab_engine::admin;
use confab_engine::model::Role;
use serde::Deserialize;
use serde_json::{json, Value};

use super::blocking;
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/agents", get(list).post(create))
}

async fn list(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Json<Value>> {
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    let agents = blocking(move || store.workspace_agents(ws)).await?;
    let items: Vec<Value> = agents
        .iter()
        .map(|a| json!({"id": a.id, "name": a.name, "email": a.email, "role": a.role}))
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
struct NewAgent {
    name: String,
    email: String,
    #[serde(default = "default_role")]
    role: Role,
}

fn default_role() -> Role {
    Role::Agent
}

async fn create(
    agent: AgentAuth,
    State(app): State<AppState>,
    body: Result<Json<NewAgent>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if agent.0.role != Role::Admin {
        return Err(ApiError::forbidden(
            "admin_only",
            "only workspace admins may add agents",
        ));
    }
    let Json(body) = body?;
    let (name, email) = (body.name.trim(), body.email.trim());
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`name` must be 1 to 200 characters",
        ));
    }
    if !email.contains('@') || email.len() > 320 {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "`email` is not an email address",
        ));
    }
    let (created, token, set) = admin::new_agent(agent.0.workspace_id, name, email, body.role);
    app.committer.commit(set).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": created.id, "workspace_id": created.workspace_id, "name": created.name,
            "email": created.email, "role": created.role, "token": token,
        })),
    ))
}
