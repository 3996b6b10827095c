//! Inbox commands on a conversation: AI mode, assignment, tags, status, snooze, read, CSAT.
//! Each answers once the change is durable; repeating one changes nothing.

use axum::extract::{Path, State};
use axum::Json;
use confab_actors::conversation::Command;
use confab_actors::ConversationMsg;
use confab_engine::ids::{AgentId, ConversationId};
use confab_engine::model::{AiMode, ConversationCard, Status};
use confab_engine::time::UnixMillis;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::blocking;
use super::conversations::owned_conversation;
use super::Body;
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ai_mode))
        .routes(routes!(assign))
        .routes(routes!(tags))
        .routes(routes!(status))
        .routes(routes!(snooze))
        .routes(routes!(outcome))
        .routes(routes!(read))
        .routes(routes!(csat))
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
        .request(conv.id, |reply| {
            ConversationMsg::Command(command, Some(agent.0.id), reply)
        })
        .await?;
    Ok(Json(card))
}

#[derive(Deserialize, ToSchema)]
pub struct AiBody {
    mode: AiMode,
}

/// Sets the AI mode: Take Over / Pause AI = `paused`, Resume AI = `active`, Manual Only = `manual`.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/ai",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    request_body = AiBody,
    responses(
        (status = 200, description = "The conversation's card after the change (or as it was, when it changed nothing).", body = ConversationCard),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn ai_mode(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<AiBody>,
) -> ApiResult<Json<ConversationCard>> {
    run(&app, &agent, &id, Command::AiMode(body.mode)).await
}

/// The agent an assignment names, checked to be of the caller's workspace (`None`:
/// unassign).
pub(crate) async fn assignee(
    app: &AppState,
    agent: &AgentAuth,
    body: AssignBody,
) -> ApiResult<Option<AgentId>> {
    let Some(agent_id) = body.agent_id else {
        return Err(ApiError::unprocessable(
            "missing_field",
            "`agent_id` is required: an agent's id, or null to unassign",
        ));
    };
    Ok(match agent_id {
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
    })
}

#[derive(Clone, Deserialize, ToSchema)]
pub struct AssignBody {
    /// An agent of the workspace; `null` unassigns. The field must be present.
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true, pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    agent_id: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (an error: serde reports
/// the missing field, as `agent_id` has no default).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// Assigns the conversation to an agent (who gets a `notification`), or unassigns it.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/assign",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    request_body = AssignBody,
    responses(
        (status = 200, description = "The conversation's card after the change (or as it was, when it changed nothing).", body = ConversationCard),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`unknown_agent`, `invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn assign(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<AssignBody>,
) -> ApiResult<Json<ConversationCard>> {
    let assignee = assignee(&app, &agent, body).await?;
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

/// A tag: 1 to 64 printable characters once trimmed.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$")]
pub struct Tag(#[allow(dead_code)] String);

#[derive(Deserialize, ToSchema)]
pub struct TagsBody {
    /// Tags to add: trimmed, 1 to 64 printable characters, at most 50 per conversation.
    #[serde(default)]
    #[schema(value_type = Vec<Tag>)]
    pub(crate) add: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Vec<Tag>)]
    pub(crate) remove: Vec<String>,
}

/// Adds and removes tags.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/tags",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    request_body = TagsBody,
    responses(
        (status = 200, description = "The conversation's card after the change (or as it was, when it changed nothing).", body = ConversationCard),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_tag`, `too_many_tags`, `invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn tags(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<TagsBody>,
) -> ApiResult<Json<ConversationCard>> {
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

#[derive(Deserialize, ToSchema)]
pub struct StatusBody {
    status: Status,
}

/// Opens, pends or closes the conversation (closing records `closed_at`).
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/status",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    request_body = StatusBody,
    responses(
        (status = 200, description = "The conversation's card after the change (or as it was, when it changed nothing).", body = ConversationCard),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn status(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<StatusBody>,
) -> ApiResult<Json<ConversationCard>> {
    run(&app, &agent, &id, Command::Status(body.status)).await
}

#[derive(Deserialize, ToSchema)]
pub struct SnoozeBody {
    /// When the conversation comes back (RFC 3339): in the future, at most 366 days ahead.
    #[serde(with = "confab_engine::time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub(crate) until: UnixMillis,
}

/// Snoozes the conversation until `until`: status `pending`, `snoozed_until` set, out of
/// the working views and in the `snoozed` one. It comes back (status `open`, at the top of
/// the inbox, a `snooze_ended` notification to its assignee, or to the snoozer when
/// nobody is assigned) at that time or at the lead's next message, whichever is first. The
/// timer is durable: a restart meanwhile changes nothing. Snoozing again moves the time;
/// a status change ends the snooze.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/snooze",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    request_body = SnoozeBody,
    responses(
        (status = 200, description = "The conversation's card after the change (or as it was, when it changed nothing).", body = ConversationCard),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`: not a time, in the past or over 366 days ahead.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn snooze(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<SnoozeBody>,
) -> ApiResult<Json<ConversationCard>> {
    let by = Some(agent.0.id);
    run(
        &app,
        &agent,
        &id,
        Command::Snooze {
            until: body.until,
            by,
        },
    )
    .await
}

#[derive(Clone, Deserialize, ToSchema)]
pub struct OutcomeBody {
    /// A label of `GET /api/v1/outcomes` (whatever the case); `null` clears it. The field
    /// must be present.
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true)]
    pub(crate) outcome: Option<Option<String>>,
}

/// The outcome `body` names, checked against the workspace's labels.
pub(crate) fn outcome_of(
    app: &AppState,
    agent: &AgentAuth,
    body: &OutcomeBody,
) -> ApiResult<Option<String>> {
    match &body.outcome {
        None => Err(ApiError::unprocessable(
            "missing_field",
            "`outcome` is required: a label, or null to clear it",
        )),
        Some(None) => Ok(None),
        Some(Some(name)) => super::outcomes::label(app, agent.0.workspace_id, name).map(Some),
    }
}

/// Sets what became of the lead: a label of the workspace's outcome list (`GET
/// /api/v1/outcomes`), or `null` to clear it. The AI's suggestion, if any, goes.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/outcome",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    request_body = OutcomeBody,
    responses(
        (status = 200, description = "The conversation's card after the change (or as it was, when it changed nothing).", body = ConversationCard),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`unknown_outcome`, `missing_field`, `invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn outcome(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<OutcomeBody>,
) -> ApiResult<Json<ConversationCard>> {
    let outcome = outcome_of(&app, &agent, &body)?;
    run(&app, &agent, &id, Command::Outcome(outcome)).await
}

/// Marks everything read: the unread count goes to 0, and the caller's unread
/// notifications about this conversation are marked read too (`notifications_read`).
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/read",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    responses(
        (status = 200, description = "The conversation's card after the change (or as it was, when it changed nothing).", body = ConversationCard),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn read(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationCard>> {
    let card = run(&app, &agent, &id, Command::MarkRead).await?;
    app.runtime
        .notifier
        .mark_read(
            agent.0.workspace_id,
            agent.0.id,
            confab_actors::notify::Which::Conversation(card.0.id),
        )
        .await?;
    Ok(card)
}

#[derive(Deserialize, ToSchema)]
pub struct CsatBody {
    /// 1 to 5 (a whole number; `4.0` is 4).
    #[schema(value_type = u8, minimum = 1, maximum = 5)]
    rating: serde_json::Number,
}

#[derive(Serialize, ToSchema)]
pub struct CsatRecorded {
    conversation_id: ConversationId,
    rating: u8,
}

/// Records the lead's satisfaction, 1 to 5. A later rating replaces the earlier one (analytics count the conversation once, with its latest rating); the same rating again changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/csat",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    request_body = CsatBody,
    responses(
        (status = 200, description = "The rating as recorded.", body = CsatRecorded),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn csat(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<CsatBody>,
) -> ApiResult<Json<CsatRecorded>> {
    let rating = body
        .rating
        .as_f64()
        .filter(|r| r.fract() == 0.0 && *r >= 1.0 && *r <= 5.0)
        .map(|r| r as u8)
        .filter(|r| confab_engine::analytics::CSAT_RANGE.contains(r))
        .ok_or_else(|| {
            ApiError::unprocessable("invalid_value", "`rating` must be an integer from 1 to 5")
        })?;
    let Json(card) = run(&app, &agent, &id, Command::Csat(rating)).await?;
    Ok(Json(CsatRecorded {
        conversation_id: card.id,
        rating,
    }))
}
