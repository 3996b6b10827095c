//! Inbox commands on a conversation: AI mode, assignment, tags, status, read, CSAT. Each
//! answers once the change is durable; repeating one changes nothing.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use confab_actors::conversation::Command;
use confab_actors::ConversationMsg;
use confab_engine::ids::AgentId;
use confab_engine::model::{AiMode, ConversationCard, Status};
use serde::Deserialize;

use super::blocking;
use super::conversations::owned_conversation;
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/conversations/{id}/ai", post(ai_mode))
        .route("/api/v1/conversations/{id}/assign", post(assign))
        .route("/api/v1/conversations/{id}/tags", post(tags))
        .route("/api/v1/conversations/{id}/status", post(status))
        .route("/api/v1/conversations/{id}/read", post(read))
        .route("/api/v1/conversations/{id}/csat", post(csat))
}

async fn run(
    app: &AppState,
    agent: &AgentAuth,
    id: &str,
    command: Command,
) -> ApiResult<Json<ConversationCard>> {
    let conv = owned_conversation(app, agent, id).await?;
    let card = app
        .runtime
        .conversations
        .request(conv.id, |reply| ConversationMsg::Command(command, reply))
        .await?;
    Ok(Json(card))
}

#[derive(Deserialize)]
struct AiBody {
    mode: AiMode,
}

/// Take Over / Pause AI = `paused`, Resume AI = `active`, Manual Only = `manual`.
async fn ai_mode(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<AiBody>, JsonRejection>,
) -> ApiResult<Json<ConversationCard>> {
    let Json(body) = body?;
    run(&app, &agent, &id, Command::AiMode(body.mode)).await
}

#[derive(Deserialize)]
struct AssignBody {
    /// `null` unassigns; the field must be present.
    agent_id: Option<String>,
}

async fn assign(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<AssignBody>, JsonRejection>,
) -> ApiResult<Json<ConversationCard>> {
    let Json(body) = body?;
    let assignee = match body.agent_id {
        None => None,
        Some(raw) => {
            let unknown = || {
                ApiError::unprocessable(
                    "unknown_agent",
                    format!("no agent {raw:?} in this workspace"),
                )
            };
            let assignee: AgentId = raw.parse().map_err(|_| unknown())?;
            let store = app.store.clone();
            match blocking(move || store.agent(assignee)).await? {
                Some(a) if a.workspace_id == agent.0.workspace_id => Some(a.id),
                _ => return Err(unknown()),
            }
        }
    };
    let by = Some(agent.0.id);
    run(
        &app,
        &agent,
        &id,
        Command::Assign {
            agent_id: assignee,
            by,
        },
    )
    .await
}

#[derive(Deserialize)]
struct TagsBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

async fn tags(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<TagsBody>, JsonRejection>,
) -> ApiResult<Json<ConversationCard>> {
    let Json(body) = body?;
    run(
        &app,
        &agent,
        &id,
        Command::Tags {
            add: body.add,
            remove: body.remove,
        },
    )
    .await
}

#[derive(Deserialize)]
struct StatusBody {
    status: Status,
}

async fn status(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<StatusBody>, JsonRejection>,
) -> ApiResult<Json<ConversationCard>> {
    let Json(body) = body?;
    run(&app, &agent, &id, Command::Status(body.status)).await
}

async fn read(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationCard>> {
    run(&app, &agent, &id, Command::MarkRead).await
}

#[derive(Deserialize)]
struct CsatBody {
    rating: u8,
}

/// The lead's satisfaction, 1–5. A later rating replaces the earlier one (analytics count
/// the conversation once, with its latest rating); the same rating again changes nothing.
async fn csat(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<CsatBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(body) = body?;
    if !confab_engine::analytics::CSAT_RANGE.contains(&body.rating) {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`rating` must be an integer from 1 to 5",
        ));
    }
    let Json(card) = run(&app, &agent, &id, Command::Csat(body.rating)).await?;
    Ok(Json(
        serde_json::json!({"conversation_id": card.id, "rating": body.rating}),
    ))
}
