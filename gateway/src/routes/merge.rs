//! Merging two conversations of one lead into one timeline, and splitting them again.
//!
//! A merge keeps both conversations: each keeps its channel thread, its messages and its
//! actor. The merged one (`merged_into` set) leaves every view, count and outcome report;
//! the one it is merged into lists it in `merged`, moves with its activity, is reopened by
//! its lead's messages, shares its AI mode and read state, and shows both threads in its
//! timeline (`GET /api/v1/conversations/{id}/timeline`). Replies go to whichever of them
//! the agent picks (`POST /api/v1/conversations/{that one}/messages`). A split undoes it.
//!
//! Each step is a command to one conversation's actor; the merged one's link (written
//! with its `merged_into`) is the truth, which the other follows, again at every start.

use std::collections::VecDeque;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use confab_actors::conversation::{Command, MAX_MERGED};
use confab_actors::ConversationMsg;
use confab_engine::ids::ConversationId;
use confab_engine::model::{Conversation, ConversationCard, Message};
use confab_engine::store::Store;
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
        .routes(routes!(merge))
        .routes(routes!(split))
        .routes(routes!(timeline))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// The other conversation (of the caller's workspace).
    #[schema(value_type = String, pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    conversation_id: String,
}

/// Sends `command` to conversation `id` as the caller, and waits for its card.
async fn command(
    app: &AppState,
    agent: &AgentAuth,
    id: ConversationId,
    command: Command,
) -> ApiResult<ConversationCard> {
    Ok(app
        .runtime
        .conversations
        .request(id, |reply| {
            ConversationMsg::Command(command, Some(agent.0.id), reply)
        })
        .await?)
}

/// The path's conversation and the body's, both of the caller's workspace.
async fn pair(
    app: &AppState,
    agent: &AgentAuth,
    id: &str,
    body: &MergeBody,
) -> ApiResult<(Conversation, Conversation)> {
    let this = owned_conversation(app, agent, id).await?;
    let other = owned_conversation(app, agent, &body.conversation_id).await?;
    if this.id == other.id {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "a conversation cannot be merged with itself",
        ));
    }
    Ok((this, other))
}

/// Merges the body's conversation into this one: one timeline of both threads, listed
/// once. The other leaves every view (`merged_into` on its card), this one lists it in
/// `merged`, takes its unread count and activity, and gives it its AI mode. Repeating it
/// changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/merge",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation to merge into.")),
    request_body = MergeBody,
    responses(
        (status = 200, description = "This conversation's card after the merge.", body = ConversationCard),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: either conversation is not in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 409, description = "`already_merged`: one of them is merged into another conversation; `has_merged_conversations`: conversations are merged into the body's one (merge the other way); `too_many_merged`: ten are merged into this one already.", body = ErrorBody),
        (status = 422, description = "`invalid_value`: the same conversation twice, or a body without a `conversation_id` string.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn merge(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<MergeBody>,
) -> ApiResult<Json<ConversationCard>> {
    let _one_at_a_time = app.merges.lock().await;
    let (this, other) = pair(&app, &agent, &id, &body).await?;
    if this.merged_into.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_merged",
            "this conversation is merged into another: merge into that one",
        ));
    }
    if this.merged.len() >= MAX_MERGED && !this.merged.iter().any(|m| m.id == other.id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_merged",
            format!("at most {MAX_MERGED} conversations can be merged into one"),
        ));
    }
    // The merged one first: its link is the truth the other follows (at every start too).
    command(
        &app,
        &agent,
        other.id,
        Command::MergeInto {
            primary: this.id,
            ai_mode: this.ai_mode,
            assignee_id: this.assignee_id,
        },
    )
    .await?;
    match command(&app, &agent, this.id, Command::Member(other.id)).await {
        Ok(card) => Ok(Json(card)),
        Err(e) => {
            // Not hidden behind a conversation that does not list it.
            let _ = command(&app, &agent, other.id, Command::Unmerge).await;
            Err(e)
        }
    }
}

/// Splits the body's conversation off this one: it is listed again as it is (its own
/// thread, messages, status and assignee), and this one's timeline no longer shows it.
/// Repeating it changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/split",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation it is merged into.")),
    request_body = MergeBody,
    responses(
        (status = 200, description = "This conversation's card after the split.", body = ConversationCard),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: either conversation is not in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 409, description = "`not_merged`: the body's conversation is merged into another one.", body = ErrorBody),
        (status = 422, description = "`invalid_value`: the same conversation twice, or a body without a `conversation_id` string.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn split(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<MergeBody>,
) -> ApiResult<Json<ConversationCard>> {
    let _one_at_a_time = app.merges.lock().await;
    let (this, other) = pair(&app, &agent, &id, &body).await?;
    if other.merged_into.is_some_and(|into| into != this.id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_merged",
            "that conversation is merged into another one",
        ));
    }
    // The link first (the merged one's): after it, nothing lists the other here again (a
    // late report finds no link), and a crash between the two leaves a listing that this
    // one drops when it next starts.
    command(&app, &agent, other.id, Command::Unmerge).await?;
    Ok(Json(
        command(&app, &agent, this.id, Command::Unmember(other.id)).await?,
    ))
}

const TIMELINE_DEFAULT: usize = 50;
const TIMELINE_MAX: usize = 200;

#[derive(Serialize, ToSchema)]
pub struct TimelinePage {
    /// Newest first: the conversation's messages and those of the conversations merged
    /// into it (each with its own `conversation_id` and `seq`), by creation time.
    items: Vec<Message>,
    /// Pass as `before` for older messages; `null` when there are none.
    next_before: Option<String>,
}

/// Where a timeline page stops in each thread: messages with a smaller seq come next.
/// Written `ID.SEQ~ID.SEQ…`; a thread left out has nothing older.
type Cursor = Vec<(ConversationId, u64)>;

fn parse_cursor(raw: &str) -> Option<Cursor> {
    raw.split('~')
        .map(|part| {
            let (id, seq) = part.split_once('.')?;
            Some((id.parse().ok()?, seq.parse().ok()?))
        })
        .collect()
}

fn timeline_query(raw: Option<&str>) -> ApiResult<(Option<Cursor>, usize)> {
    let mut before = None;
    let mut limit = TIMELINE_DEFAULT;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "before" => {
                before = Some(parse_cursor(&value).ok_or_else(|| {
                    ApiError::unprocessable(
                        "invalid_cursor",
                        "`before` must be a timeline page's `next_before`",
                    )
                })?)
            }
            "limit" => limit = super::parse_limit(&value, TIMELINE_MAX)?,
            _ => {}
        }
    }
    Ok((before, limit))
}

/// One page of the timeline of `conv` and the conversations merged into it: a merge of
/// each thread's messages (newest seq first), taking the newest head each time, so each
/// thread's taken messages are a run of its seqs and the next page starts where it ended.
fn timeline_page(
    store: &Store,
    conv: &Conversation,
    before: Option<Cursor>,
    limit: usize,
) -> confab_engine::Result<TimelinePage> {
    let threads: Vec<ConversationId> = std::iter::once(conv.id)
        .chain(conv.merged.iter().map(|m| m.id))
        .collect();
    let bounds: Vec<(ConversationId, Option<u64>)> = match before {
        None => threads.iter().map(|t| (*t, None)).collect(),
        // A thread split off since the last page is left out, and a thread named twice
        // counts once.
        Some(cursor) => {
            let mut bounds: Vec<(ConversationId, Option<u64>)> = Vec::new();
            for (t, seq) in cursor {
                if threads.contains(&t) && !bounds.iter().any(|(b, _)| *b == t) {
                    bounds.push((t, Some(seq)));
                }
            }
            bounds
        }
    };
    let mut heads = Vec::with_capacity(bounds.len());
    for (thread, bound) in bounds {
        let page = store.messages_before(thread, bound, limit)?;
        let more = page.next.is_some();
        heads.push((thread, bound, VecDeque::from(page.items), more));
    }
    let mut items = Vec::with_capacity(limit);
    while items.len() < limit {
        let newest = heads
            .iter()
            .enumerate()
            .filter_map(|(i, (_, _, queue, _))| queue.front().map(|m| ((m.created_at, m.seq), i)))
            .max();
        let Some(((_, seq), i)) = newest else {
            break;
        };
        let (_, bound, queue, _) = &mut heads[i];
        *bound = Some(seq);
        items.extend(queue.pop_front());
    }
    // A thread nothing was taken from starts after its newest message next time.
    let next: Vec<String> = heads
        .iter()
        .filter(|(_, _, queue, more)| !queue.is_empty() || *more)
        .map(|(thread, bound, queue, _)| {
            let bound = bound
                .or_else(|| queue.front().map(|m| m.seq + 1))
                .unwrap_or(0);
            format!("{thread}.{bound}")
        })
        .collect();
    Ok(TimelinePage {
        items,
        next_before: (!next.is_empty()).then(|| next.join("~")),
    })
}

/// The merged timeline: this conversation's messages and those of the conversations merged
/// into it (`merged` on its card), newest first by creation time. For a conversation
/// nothing is merged into, the same messages as `…/messages`.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/timeline",
    tag = "inbox",
    security(("agent_token" = [])),
    params(
        ("id" = String, Path, description = "The conversation."),
        ("before" = Option<String>, Query, max_length = 600, pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}\\.[0-9]{1,19}(~[0-7][0-9A-HJKMNP-TV-Z]{25}\\.[0-9]{1,19})*$", description = "The previous page's `next_before`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, default 50."),
    ),
    responses(
        (status = 200, description = "A page of the timeline.", body = TimelinePage),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 414, description = "`uri_too_long`.", body = ErrorBody),
        (status = 422, description = "`invalid_cursor`, `invalid_query`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn timeline(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<TimelinePage>> {
    let conv = owned_conversation(&app, &agent, &id).await?;
    let (before, limit) = timeline_query(raw.as_deref())?;
    let store = app.store.clone();
    Ok(Json(
        blocking(move || timeline_page(&store, &conv, before, limit)).await?,
    ))
}
