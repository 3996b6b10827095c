//! Bulk actions: one inbox command for up to [`MAX_BULK`] conversations, chosen by id or by
//! a listing query. Each conversation is changed by its own actor (one delta each, like the
//! command on its own) and answered with its own result; commands are idempotent, so
//! repeating a request changes nothing more.

use std::collections::HashSet;

use axum::extract::State;
use axum::Json;
use confab_actors::conversation::{normalize_tags, Command, MAX_SNOOZE_MS};
use confab_actors::ConversationMsg;
use confab_engine::ids::ConversationId;
use confab_engine::model::{AiMode, Conversation, ConversationCard, Status};
use confab_engine::time::now_millis;
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::commands::{assignee, outcome_of, AssignBody, OutcomeBody, SnoozeBody, TagsBody};
use super::conversations::select;
use super::{blocking, Body};
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{ErrorBody, ErrorDetail};

/// Most conversations one bulk request changes.
pub const MAX_BULK: usize = 1000;
/// Longest `query`, in bytes.
const MAX_QUERY: usize = 4096;
/// Conversations changed at once: enough to fill commit groups, few enough to leave the
/// actors' mailboxes to other work.
const IN_FLIGHT: usize = 32;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(bulk))
}

/// Which conversations, and the one action to take on each. Exactly one of `ids` and
/// `query`, exactly one action.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// Conversations by id, at most 1,000 (an id given twice counts once).
    #[serde(default)]
    #[schema(max_items = 1000)]
    ids: Option<Vec<String>>,
    /// Or every conversation a listing matches: the query of `GET /api/v1/conversations`
    /// without `cursor` and `limit` (`view=unassigned&channel=email&tag=hot`); more than
    /// 1,000 matches is refused.
    #[serde(default)]
    #[schema(max_length = 4096)]
    query: Option<String>,
    /// Assign every one to an agent (`null`: unassign).
    #[serde(default)]
    assign: Option<AssignBody>,
    /// Add and remove tags.
    #[serde(default)]
    tags: Option<TagsBody>,
    /// Open, pend or close.
    #[serde(default)]
    status: Option<Status>,
    /// Take over / pause (`paused`), resume (`active`) or `manual`.
    #[serde(default)]
    ai_mode: Option<AiMode>,
    /// Snooze until a time.
    #[serde(default)]
    snooze: Option<SnoozeBody>,
    /// Set (or, with `null`, clear) the lead outcome.
    #[serde(default)]
    outcome: Option<OutcomeBody>,
}

/// What became of one conversation: its card after the change (`ok`), or why not.
#[derive(Serialize, ToSchema)]
pub struct BulkItem {
    /// As given (an id of a query's match, or one of `ids`).
    id: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation: Option<ConversationCard>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkResult {
    /// One per selected conversation, in the order of `ids` (or of the listing).
    results: Vec<BulkItem>,
    succeeded: usize,
    failed: usize,
}

/// Changes many conversations with one command: assign, tags, status, AI mode or snooze,
/// for up to 1,000 conversations by id or by a listing query.
///
/// Each conversation is changed by its own actor exactly as the single command would
/// (one `conversation_updated` delta each, notifications included) and gets its own
/// result: one that is not in the caller's workspace is `not_found` there and nothing
/// else stops. Answered once every change is durable. Repeating the request changes
/// nothing more and streams nothing.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/bulk",
    tag = "inbox",
    security(("agent_token" = [])),
    request_body = BulkBody,
    responses(
        (status = 200, description = "A result per conversation.", body = BulkResult),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value` (not exactly one selection and one action, a bad value), `invalid_query`, `too_many_conversations` (over 1,000), `unknown_agent`, `invalid_tag`, `unknown_outcome`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn bulk(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<BulkBody>,
) -> ApiResult<Json<BulkResult>> {
    let command = command(&app, &agent, &body).await?;
    let selected = match (body.ids, body.query) {
        (Some(ids), None) => by_ids(&app, &agent, ids).await?,
        (None, Some(query)) if query.len() > MAX_QUERY => {
            return Err(ApiError::unprocessable(
                "invalid_query",
                format!("a query is at most {MAX_QUERY} bytes"),
            ))
        }
        (None, Some(query)) => select(&app, &agent, &query, MAX_BULK)
            .await?
            .ok_or_else(too_many)?
            .into_iter()
            .map(|c| (c.id.to_string(), Some(c.id)))
            .collect(),
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_value",
                "give exactly one of `ids` and `query`",
            ))
        }
    };
    let by = Some(agent.0.id);
    let results: Vec<BulkItem> = stream::iter(selected)
        .map(|(given, id)| {
            let (app, command) = (&app, command.clone());
            async move {
                let outcome = match id {
                    Some(id) => app
                        .runtime
                        .conversations
                        .request(id, |reply| ConversationMsg::Command(command, by, reply))
                        .await
                        .map_err(ApiError::from),
                    None => Err(ApiError::not_found("conversation")),
                };
                match outcome {
                    Ok(card) => BulkItem {
                        id: given,
                        ok: true,
                        conversation: Some(card),
                        error: None,
                    },
                    Err(e) => BulkItem {
                        id: given,
                        ok: false,
                        conversation: None,
                        error: Some(ErrorDetail {
                            code: e.code.to_string(),
                            message: e.message,
                        }),
                    },
                }
            }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    let succeeded = results.iter().filter(|r| r.ok).count();
    Ok(Json(BulkResult {
        failed: results.len() - succeeded,
        succeeded,
        results,
    }))
}

fn too_many() -> ApiError {
    ApiError::unprocessable(
        "too_many_conversations",
        format!("a bulk action changes at most {MAX_BULK} conversations"),
    )
}

/// The one command of `body`, checked once for all conversations.
async fn command(app: &AppState, agent: &AgentAuth, body: &BulkBody) -> ApiResult<Command> {
    let actions = [
        body.assign.is_some(),
        body.tags.is_some(),
        body.status.is_some(),
        body.ai_mode.is_some(),
        body.snooze.is_some(),
        body.outcome.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "give exactly one action: `assign`, `tags`, `status`, `ai_mode`, `snooze` or `outcome`",
        ));
    }
    let by = Some(agent.0.id);
    if let Some(assign) = &body.assign {
        let agent_id = assignee(app, agent, assign.clone()).await?;
        return Ok(Command::Assign { agent_id, by });
    }
    if let Some(tags) = &body.tags {
        // Checked here so that a bad tag refuses the request, not each conversation.
        normalize_tags(tags.add.clone())?;
        normalize_tags(tags.remove.clone())?;
        return Ok(Command::Tags {
            add: tags.add.clone(),
            remove: tags.remove.clone(),
        });
    }
    if let Some(outcome) = &body.outcome {
        return Ok(Command::Outcome(outcome_of(app, agent, outcome)?));
    }
    if let Some(snooze) = &body.snooze {
        let now = now_millis();
        if snooze.until <= now || snooze.until > now.saturating_add(MAX_SNOOZE_MS) {
            return Err(ApiError::unprocessable(
                "invalid_value",
                "`until` must be in the future, at most 366 days ahead",
            ));
        }
        return Ok(Command::Snooze {
            until: snooze.until,
            by,
        });
    }
    match (body.status, body.ai_mode) {
        (Some(status), _) => Ok(Command::Status(status)),
        (_, Some(mode)) => Ok(Command::AiMode(mode)),
        _ => Err(ApiError::unprocessable("invalid_value", "no action given")),
    }
}

/// `ids` in order, each once, with the conversation it names when that is one of the
/// caller's workspace.
async fn by_ids(
    app: &AppState,
    agent: &AgentAuth,
    ids: Vec<String>,
) -> ApiResult<Vec<(String, Option<ConversationId>)>> {
    if ids.len() > MAX_BULK {
        return Err(too_many());
    }
    let mut seen = HashSet::new();
    let ids: Vec<String> = ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    blocking(move || {
        let mut out = Vec::with_capacity(ids.len());
        for given in ids {
            let ours = match given.parse::<ConversationId>() {
                Ok(id) => store
                    .conversation(id)?
                    .filter(|c: &Conversation| c.workspace_id == ws)
                    .map(|c| c.id),
                Err(_) => None,
            };
            out.push((given, ours));
        }
        Ok(out)
    })
    .await
}
