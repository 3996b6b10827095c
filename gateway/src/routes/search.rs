//! Full-text search: `GET /api/v1/search`.
//!
//! The query is parsed (and refused with the reason) on the reactor; the search itself
//! runs on the blocking pool within a time budget, in one of a bounded number of slots, so
//! a costly query never stalls other requests. The workspace filter is the caller's, always.

use std::time::{Duration, Instant};

use super::parse_limit;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use confab_engine::ids::{ConversationId, MessageId};
use confab_engine::model::{ChannelKind, Contact, Conversation, Status};
use confab_engine::time::{now_millis, to_rfc3339, UnixMillis};
use confab_index::{Hit, HitField, ParsedQuery, SearchRequest};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Candidates one page looks at most when filters the index does not hold (`status`)
/// leave hits out; the page may then come back short, with a cursor.
const SCAN_LIMIT: usize = 500;
const DAY: i64 = 24 * 60 * 60 * 1000;

#[derive(Debug, PartialEq)]
struct Params {
    q: String,
    limit: usize,
    offset: usize,
    channel: Option<ChannelKind>,
    intent: Option<String>,
    status: Option<Status>,
    since: Option<UnixMillis>,
    conversation: Option<ConversationId>,
}

fn parse_params(raw: Option<&str>, now: UnixMillis) -> ApiResult<Params> {
    let invalid = |name: &str, value: &str, expected: &str| {
        ApiError::unprocessable(
            "invalid_query",
            format!("`{name}={value}` is not valid: expected {expected}"),
        )
    };
    let mut p = Params {
        q: String::new(),
        limit: DEFAULT_LIMIT,
        offset: 0,
        channel: None,
        intent: None,
        status: None,
        since: None,
        conversation: None,
    };
    let mut q = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let value = value.as_ref();
        match key.as_ref() {
            "q" => q = Some(value.to_string()),
            "limit" => p.limit = parse_limit(value, MAX_LIMIT)?,
            "cursor" => {
                p.offset = decode_cursor(value).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        "`cursor` is not one this server gave out",
                    )
                })?
            }
            "channel" => {
                p.channel = Some(match value {
                    "whatsapp" => ChannelKind::Whatsapp,
                    "email" => ChannelKind::Email,
                    "linkedin" => ChannelKind::Linkedin,
                    _ => return Err(invalid("channel", value, "whatsapp, email or linkedin")),
                })
            }
            "intent" => {
                let valid = (1..=40).contains(&value.len())
                    && value.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                if !valid {
                    return Err(invalid("intent", value, "an intent such as `pricing`"));
                }
                p.intent = Some(value.to_owned())
            }
            "status" => {
                p.status = Some(match value {
                    "open" => Status::Open,
                    "pending" => Status::Pending,
                    "closed" => Status::Closed,
                    _ => return Err(invalid("status", value, "open, pending or closed")),
                })
            }
            "period" => {
                p.since = match value {
                    "today" => Some(now - now.rem_euclid(DAY)),
                    "week" => Some(now - 7 * DAY),
                    "month" => Some(now - 30 * DAY),
                    "all" => None,
                    _ => return Err(invalid("period", value, "today, week, month or all")),
                }
            }
            "conversation_id" => {
                p.conversation = Some(
                    value
                        .parse()
                        .map_err(|_| invalid("conversation_id", value, "a conversation id"))?,
                )
            }
            _ => {}
        }
    }
    p.q = match (q, &p.intent) {
        (Some(q), _) => q,
        // A search by the AI's intent alone: its answers and escalations, newest first.
        (None, Some(_)) => String::new(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`q` is required: what to search for",
            ))
        }
    };
    Ok(p)
}

fn encode_cursor(offset: usize) -> String {
    format!("p{offset}")
}

fn decode_cursor(s: &str) -> Option<usize> {
    s.strip_prefix('p')?.parse().ok()
}

#[derive(Serialize, ToSchema)]
pub struct Results {
    items: Vec<Item>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Item {
    conversation_id: ConversationId,
    /// `null` for a conversation-level hit (contact or tags).
    message_id: Option<MessageId>,
    /// The message's `seq` (open the conversation `around` it); `null` for a
    /// conversation-level hit.
    seq: Option<u64>,
    /// The matching text with the matches between `<mark>` and `</mark>`.
    snippet: String,
    /// The field the snippet comes from: `text`, `name`, `company`, `email`, `phone` or
    /// `tags`.
    #[schema(value_type = String)]
    field: HitField,
    /// The message's creation time, or the conversation's for a conversation-level hit.
    #[schema(format = DateTime)]
    created_at: String,
    score: f32,
    internal: bool,
    channel: ChannelKind,
    status: Status,
    contact: Contact,
    /// The conversation is merged into this one: open that one (its timeline shows the
    /// hit's message). `null` otherwise.
    merged_into: Option<ConversationId>,
}

fn item(hit: Hit, conv: Conversation) -> Item {
    let created_at = if hit.message_id.is_some() {
        hit.at
    } else {
        conv.created_at
    };
    Item {
        conversation_id: hit.conversation_id,
        message_id: hit.message_id,
        seq: hit.seq,
        snippet: hit.snippet,
        field: hit.field,
        created_at: to_rfc3339(created_at),
        score: hit.score,
        internal: hit.internal,
        channel: conv.channel,
        status: conv.status,
        contact: conv.contact,
        merged_into: conv.merged_into,
    }
}

/// Searches the caller's workspace: messages (internal notes included) and conversations
/// (contact name, company, email, phone, tags), best match first.
#[utoipa::path(
    get,
    path = "/api/v1/search",
    tag = "search",
    security(("agent_token" = [])),
    params(
        ("q" = Option<String>, Query, min_length = 1, max_length = 512, pattern = "[^\\s\\u0085]", description = "The query: words, \"phrases\", prefix*, -word, OR, parentheses; at most 512 characters and 32 terms. Required unless `intent` is given."),
        ("intent" = Option<String>, Query, min_length = 1, max_length = 40, pattern = "^[a-z_]+$", description = "Only the AI agent's answers and escalation notes about this intent (`pricing`, `human_request` …)."),
        ("channel" = Option<ChannelKind>, Query, description = "Only this channel."),
        ("status" = Option<Status>, Query, description = "Only conversations in this status."),
        ("period" = Option<crate::openapi::PeriodParam>, Query, description = "Messages from `today`, this `week`, `month` or `all` (default)."),
        ("conversation_id" = Option<String>, Query, pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", description = "Only this conversation."),
        ("cursor" = Option<String>, Query, pattern = "^p[0-9]{1,9}$", description = "The previous page's `next_cursor`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, default 20."),
    ),
    responses(
        (status = 200, description = "A page of hits.", body = Results),
        (status = 400, description = "`invalid_query` (the reason is in the message), `invalid_cursor`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 422, description = "`invalid_query`: a filter's value.", body = ErrorBody),
        (status = 503, description = "`search_unavailable`, `search_busy`, `search_timeout`, `store_unavailable`.", body = ErrorBody),
    )
)]
async fn search(
    agent: AgentAuth,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Results>> {
    let started = Instant::now();
    let result = run(&agent, &app, raw.as_deref()).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if e.status.is_client_error() => "invalid",
        Err(e) if e.code == "search_timeout" => "timeout",
        Err(e) if e.code == "search_busy" => "busy",
        Err(_) => "error",
    };
    metrics::histogram!(confab_index::metrics::SEARCH_SECONDS, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result.map(Json)
}

async fn run(agent: &AgentAuth, app: &AppState, raw: Option<&str>) -> ApiResult<Results> {
    let params = parse_params(raw, now_millis())?;
    let query = if params.q.is_empty() && params.intent.is_some() {
        ParsedQuery::everything()
    } else {
        ParsedQuery::parse(&params.q).map_err(confab_index::IndexError::from)?
    };
    let index = app.runtime.search.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "search_unavailable",
            "search is not enabled on this server",
        )
    })?;
    let slot = index
        .try_slot(app.config.search.max_concurrent.max(1))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "search_busy",
                "too many searches are running: retry shortly",
            )
        })?;
    let ws = agent.0.workspace_id;
    let request = SearchRequest {
        workspace: ws,
        query,
        channel: params.channel,
        intent: params.intent.clone(),
        since: params.since,
        conversation: params.conversation,
        offset: params.offset,
        limit: params.limit,
    };
    let status = params.status;
    let since = params.since;
    let store = app.store.clone();
    let task = tokio::task::spawn_blocking(move || {
        // Held until the search ends, even after a timeout answered the caller.
        let _slot = slot;
        index.search(&request, SCAN_LIMIT, |hit| {
            // The store is the truth: current contact, status and last activity (a
            // conversation document's time may lag it), and the workspace once more (the
            // index filtered by it already).
            Ok(store.conversation(hit.conversation_id)?.filter(|c| {
                c.workspace_id == ws
                    && status.is_none_or(|s| c.status == s)
                    && (hit.message_id.is_some()
                        || since.is_none_or(|since| c.last_activity_at >= since))
            }))
        })
    });
    let budget = Duration::from_millis(app.config.search.timeout_ms.max(1));
    let page = match tokio::time::timeout(budget, task).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "search_timeout",
                "the search took too long: make the query more specific",
            ))
        }
        Ok(joined) => joined??,
    };
    Ok(Results {
        items: page
            .items
            .into_iter()
            .map(|(hit, conv)| item(hit, conv))
            .collect(),
        next_cursor: page.next.map(encode_cursor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_and_bad_values_are_refused() {
        let id = ConversationId::new();
        let p = parse_params(
            Some(&format!(
                "q=acme%20corp&limit=5&cursor=p20&channel=whatsapp&status=closed&period=week&conversation_id={id}"
            )),
            10 * DAY,
        )
        .expect("parse");
        assert_eq!(p.q, "acme corp");
        assert_eq!(p.limit, 5);
        assert_eq!(p.offset, 20);
        assert_eq!(p.channel, Some(ChannelKind::Whatsapp));
        assert_eq!(p.status, Some(Status::Closed));
        assert_eq!(p.since, Some(3 * DAY));
        assert_eq!(p.conversation, Some(id));
        for bad in [
            "limit=5",
            "q=a&limit=0",
            "q=a&limit=101",
            "q=a&cursor=20",
            "q=a&status=archived",
            "q=a&period=year",
            "q=a&channel=fax",
            "q=a&conversation_id=nope",
        ] {
            assert!(
                parse_params(Some(bad), 0).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(40)), Some(40));
        assert_eq!(decode_cursor("40"), None);
    }
}
