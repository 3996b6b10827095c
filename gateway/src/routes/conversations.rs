//! The inbox: conversations, their messages, sending.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use confab_actors::{ConversationMsg, OutboundRequest};
use confab_engine::ids::{ChannelId, ConversationId};
use confab_engine::model::{
    AiMode, ChannelKind, Conversation, ConversationCard, Message, MessageAttachment, Sender,
};
use confab_engine::time::{now_millis, to_rfc3339, UnixMillis};
use confab_engine::views::{self, Filter, Position, View};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use super::{blocking, parse_limit};
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, start))
        .routes(routes!(counts))
        .routes(routes!(tags))
        .routes(routes!(campaigns))
        .routes(routes!(detail))
        .routes(routes!(messages, send))
}

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

/// The conversation `id` if it belongs to the agent's workspace; 404 otherwise, also for
/// another workspace's conversation.
pub async fn owned_conversation(
    app: &AppState,
    agent: &AgentAuth,
    id: &str,
) -> ApiResult<Conversation> {
    let id: ConversationId = id
        .parse()
        .map_err(|_| ApiError::not_found("conversation"))?;
    let store = app.store.clone();
    match blocking(move || store.conversation(id)).await? {
        Some(conv) if conv.workspace_id == agent.0.workspace_id => Ok(conv),
        _ => Err(ApiError::not_found("conversation")),
    }
}

#[derive(Debug, Default, PartialEq)]
struct ListQuery {
    filter: Filter,
    cursor: Option<Cursor>,
    limit: usize,
}

/// Where a listing stands: the listing whose snapshot its pages are cut from, and the
/// last position served.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cursor {
    listing: u64,
    after: Position,
}

/// The conversations of the caller's workspace a listing query (without `cursor` and
/// `limit`) matches, newest activity first, read from one snapshot; `None` when there are
/// more than `max`.
pub async fn select(
    app: &AppState,
    agent: &AgentAuth,
    raw: &str,
    max: usize,
) -> ApiResult<Option<Vec<Conversation>>> {
    let raw = raw.strip_prefix('?').unwrap_or(raw);
    // A listing ignores what it does not know; a selection that changes conversations
    // must not silently widen on a misspelt filter.
    const FILTERS: [&str; 7] = [
        "view", "channel", "mode", "campaign", "outcome", "tag", "period",
    ];
    for (key, _) in form_urlencoded::parse(raw.as_bytes()) {
        if key == "cursor" || key == "limit" {
            return Err(ApiError::unprocessable(
                "invalid_query",
                format!("`{key}` pages a listing; a selection takes every match"),
            ));
        }
        if !FILTERS.contains(&key.as_ref()) {
            return Err(ApiError::unprocessable(
                "invalid_query",
                format!(
                    "`{key}` is not a filter (view, channel, mode, campaign, outcome, tag, period)"
                ),
            ));
        }
    }
    let filter = parse_list_query(Some(raw), now_millis())?.filter;
    let store = app.store.clone();
    let (ws, me) = (agent.0.workspace_id, agent.0.id);
    blocking(move || {
        let listings = store.listings();
        let (listing, snap) = listings.begin(&store);
        let mut found = Vec::new();
        let mut after = None;
        let result = loop {
            let page = match views::page(&store, &snap, ws, me, &filter, after, MAX_LIMIT) {
                Ok(page) => page,
                Err(e) => break Err(e),
            };
            found.extend(page.items);
            if found.len() > max {
                break Ok(None);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break Ok(Some(std::mem::take(&mut found))),
            }
        };
        listings.end(listing);
        result
    })
    .await
}

fn parse_list_query(raw: Option<&str>, now: UnixMillis) -> ApiResult<ListQuery> {
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        ..ListQuery::default()
    };
    let invalid = |name: &str, value: &str, expected: &str| {
        ApiError::unprocessable(
            "invalid_query",
            format!("`{name}={value}` is not valid: expected {expected}"),
        )
    };
    let f = &mut q.filter;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let value = value.as_ref();
        match key.as_ref() {
            "view" => {
                f.view = match value {
                    "all" => View::All,
                    "mine" => View::Mine,
                    "unassigned" => View::Unassigned,
                    "closed" => View::Closed,
                    "snoozed" => View::Snoozed,
                    _ => {
                        return Err(invalid(
                            "view",
                            value,
                            "all, mine, unassigned, closed or snoozed",
                        ))
                    }
                }
            }
            "channel" => {
                f.channel = Some(match value {
                    "whatsapp" => ChannelKind::Whatsapp,
                    "email" => ChannelKind::Email,
                    "linkedin" => ChannelKind::Linkedin,
                    _ => return Err(invalid("channel", value, "whatsapp, email or linkedin")),
                })
            }
            "campaign" => f.campaign = Some(value.to_string()),
            "outcome" => f.outcome = Some(value.to_string()),
            "tag" => f.tags.push(value.to_string()),
            "mode" => {
                f.mode = Some(match value {
                    "ai_active" => AiMode::Active,
                    "ai_paused" => AiMode::Paused,
                    "manual" => AiMode::Manual,
                    _ => return Err(invalid("mode", value, "ai_active, ai_paused or manual")),
                })
            }
            "period" => {
                const DAY: i64 = 24 * 60 * 60 * 1000;
                f.since = match value {
                    "today" => Some(now - now.rem_euclid(DAY)),
                    "week" => Some(now - 7 * DAY),
                    "month" => Some(now - 30 * DAY),
                    "all" => None,
                    _ => return Err(invalid("period", value, "today, week, month or all")),
                }
            }
            "cursor" => {
                q.cursor = Some(decode_cursor(value).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        "`cursor` is not one this server gave out",
                    )
                })?)
            }
            "limit" => q.limit = parse_limit(value, MAX_LIMIT)?,
            _ => {}
        }
    }
    Ok(q)
}

/// `<listing as 16 hex digits>.<last activity ms>.<conversation id>`: opaque to clients.
fn encode_cursor(c: Cursor) -> String {
    format!("{:016x}.{}.{}", c.listing, c.after.0, c.after.1)
}

fn decode_cursor(s: &str) -> Option<Cursor> {
    let mut parts = s.split('.');
    let listing = u64::from_str_radix(parts.next()?, 16).ok()?;
    let at = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(Cursor {
        listing,
        after: (at, id),
    })
}

#[derive(Serialize, ToSchema)]
pub struct CardPage {
    items: Vec<ConversationCard>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
    /// The stream offset this listing's pages are consistent with: subscribe with
    /// `since=head` to get every change after them.
    head: u64,
}

/// Lists conversations, newest activity first, in a view and with filters.
///
/// Serves a page from the view indexes (`confab_engine::views`). Every page of a listing
/// is read from the snapshot its first page took, so pages never repeat or skip; a
/// listing whose snapshot expired continues from its position on a fresh one.
#[utoipa::path(
    get,
    path = "/api/v1/conversations",
    tag = "inbox",
    security(("agent_token" = [])),
    params(
        ("view" = Option<crate::openapi::ViewParam>, Query, description = "`all` (default), `mine`, `unassigned`, `closed` or `snoozed`."),
        ("channel" = Option<ChannelKind>, Query, description = "Only this channel."),
        ("campaign" = Option<String>, Query, description = "The campaign a lead came from."),
        ("outcome" = Option<String>, Query, description = "The lead outcome (a label of `GET /api/v1/outcomes`, exactly)."),
        ("tag" = Option<Vec<String>>, Query, explode = true, description = "Repeatable: every tag must be on the conversation."),
        ("mode" = Option<crate::openapi::ModeParam>, Query, description = "Only this AI mode."),
        ("period" = Option<crate::openapi::PeriodParam>, Query, description = "Last activity `today`, this `week`, `month`, or `all` (default)."),
        ("cursor" = Option<String>, Query, pattern = "^[0-9a-f]{16}\\.[0-9]{1,18}\\.[0-7][0-9A-HJKMNP-TV-Z]{25}$", description = "The previous page's `next_cursor`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, default 50."),
    ),
    responses(
        (status = 200, description = "A page of cards.", body = CardPage),
        (status = 400, description = "`invalid_cursor`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 422, description = "`invalid_query`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn list(
    agent: AgentAuth,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<CardPage>> {
    let query = parse_list_query(raw.as_deref(), now_millis())?;
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    let me = agent.0.id;
    let (page, listing, head) = blocking(move || {
        let listings = store.listings();
        let resumed = query
            .cursor
            .and_then(|c| listings.resume(c.listing).map(|snap| (c.listing, snap)));
        let (listing, snap) = match resumed {
            Some(resumed) => resumed,
            None => listings.begin(&store),
        };
        let after = query.cursor.map(|c| c.after);
        let page = views::page(&store, &snap, ws, me, &query.filter, after, query.limit)?;
        let head = views::snapshot_head(&store, &snap)?;
        if page.next.is_none() {
            listings.end(listing);
        }
        Ok((page, listing, head))
    })
    .await?;
    Ok(Json(CardPage {
        items: page.items.iter().map(Conversation::card).collect(),
        next_cursor: page
            .next
            .map(|after| encode_cursor(Cursor { listing, after })),
        head,
    }))
}

/// The number of conversations in each quick view.
#[derive(Serialize, ToSchema)]
pub struct CountsView {
    #[serde(flatten)]
    counts: views::ViewCounts,
    /// The stream offset the counts are consistent with.
    head: u64,
}

/// How many conversations each quick view (`mine`, `all`, `unassigned`, `closed`, `snoozed`) holds,
/// within the `channel` and `mode` filters. Read from the view indexes' counters: as cheap
/// with a million conversations as with ten.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/counts",
    tag = "inbox",
    security(("agent_token" = [])),
    params(
        ("channel" = Option<ChannelKind>, Query, description = "Only this channel."),
        ("mode" = Option<crate::openapi::ModeParam>, Query, description = "Only this AI mode."),
    ),
    responses(
        (status = 200, description = "The counts.", body = CountsView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 422, description = "`invalid_query`: a bad value, or a filter counts do not take (`campaign`, `tag`, `period`).", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn counts(
    agent: AgentAuth,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<CountsView>> {
    let query = parse_list_query(raw.as_deref(), now_millis())?;
    let filter = query.filter;
    if filter.campaign.is_some()
        || filter.outcome.is_some()
        || !filter.tags.is_empty()
        || filter.since.is_some()
    {
        return Err(ApiError::unprocessable(
            "invalid_query",
            "counts take `channel` and `mode` only (not `campaign`, `outcome`, `tag` or `period`)",
        ));
    }
    let store = app.store.clone();
    let (ws, me) = (agent.0.workspace_id, agent.0.id);
    let (counts, head) = blocking(move || {
        let snap = store.snapshot();
        let counts = views::counts(&store, &snap, ws, me, &filter)?;
        Ok((counts, views::snapshot_head(&store, &snap)?))
    })
    .await?;
    Ok(Json(CountsView { counts, head }))
}

/// A tag or campaign and how many conversations carry it.
#[derive(Serialize, ToSchema)]
pub struct FacetValue {
    name: String,
    count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct FacetList {
    /// Most used first; at most 1,000.
    items: Vec<FacetValue>,
}

async fn facet_list(app: &AppState, agent: &AgentAuth, kind: u8) -> ApiResult<Json<FacetList>> {
    let (store, ws) = (app.store.clone(), agent.0.workspace_id);
    let values = blocking(move || views::facet_values(&store, ws, kind, 1000)).await?;
    Ok(Json(FacetList {
        items: values
            .into_iter()
            .map(|(name, count)| FacetValue { name, count })
            .collect(),
    }))
}

/// The workspace's tags, with how many conversations carry each (filters, suggestions).
#[utoipa::path(
    get,
    path = "/api/v1/tags",
    tag = "inbox",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "Tags in use, most used first.", body = FacetList),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn tags(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Json<FacetList>> {
    facet_list(&app, &agent, confab_engine::catalogue::FACET_TAG).await
}

/// The campaigns the workspace's leads came from, with how many conversations each.
#[utoipa::path(
    get,
    path = "/api/v1/campaigns",
    tag = "inbox",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "Campaigns, most conversations first.", body = FacetList),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn campaigns(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Json<FacetList>> {
    facet_list(&app, &agent, confab_engine::catalogue::FACET_CAMPAIGN).await
}

/// A conversation's reply window.
#[derive(Serialize, ToSchema)]
pub struct ReplyWindowView {
    /// Whether free text may be sent to the lead now.
    open: bool,
    /// When the window closes (or closed); `null` while the lead has not written.
    #[schema(format = DateTime)]
    closes_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    card: ConversationCard,
    workspace_id: confab_engine::ids::WorkspaceId,
    #[schema(format = DateTime)]
    last_inbound_at: Option<String>,
    /// WhatsApp: whether free text may be sent now (24 h since the lead last wrote). The
    /// same as `reply_window.open`, kept for clients that read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    whatsapp_window_open: Option<bool>,
    /// Whether free text may be sent now, and until when; `null` when the channel has no
    /// reply window.
    reply_window: Option<ReplyWindowView>,
    /// Response-time raw data: the lead's first message, the first answer and who gave
    /// it (`ai` or `human`), the last closing.
    #[schema(format = DateTime)]
    first_inbound_at: Option<String>,
    #[schema(format = DateTime)]
    first_response_at: Option<String>,
    first_responder: Option<confab_engine::model::Responder>,
    #[schema(format = DateTime)]
    closed_at: Option<String>,
    /// The lead's satisfaction rating (1–5), once recorded.
    csat: Option<u8>,
}

/// A conversation's card with its window state and response-time data.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    responses(
        (status = 200, description = "The conversation.", body = ConversationDetail),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn detail(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationDetail>> {
    let conv = owned_conversation(&app, &agent, &id).await?;
    let window = conv
        .channel
        .rules()
        .reply_window(conv.last_inbound_at, now_millis());
    let store = app.store.clone();
    let conv_id = conv.id;
    let stats =
        blocking(move || confab_engine::analytics::conversation_stats(&store, conv_id)).await?;
    // The detail's own `reply_window` (with `open`) stands for the card's.
    let mut card = conv.card();
    card.reply_window = None;
    Ok(Json(ConversationDetail {
        card,
        workspace_id: conv.workspace_id,
        last_inbound_at: conv.last_inbound_at.map(to_rfc3339),
        whatsapp_window_open: (conv.channel == ChannelKind::Whatsapp)
            .then(|| window.is_some_and(|w| w.open)),
        reply_window: window.map(|w| ReplyWindowView {
            open: w.open,
            closes_at: w.closes_at.map(to_rfc3339),
        }),
        first_inbound_at: conv.first_inbound_at.map(to_rfc3339),
        first_response_at: conv.first_response_at.map(to_rfc3339),
        first_responder: conv.first_responder,
        closed_at: conv.closed_at.map(to_rfc3339),
        csat: stats.csat,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    /// Newest first.
    items: Vec<Message>,
    /// Pass as `before` for older messages; `null` when there are none.
    next_before: Option<u64>,
    /// Pass as `after` for newer messages; `null` when there are none, and always on the
    /// newest page.
    next_after: Option<u64>,
}

/// Which page of a conversation's messages a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MessageWindow {
    /// The newest, or those with a smaller `seq` than the given one.
    Before(Option<u64>),
    /// Those right after the given `seq`.
    After(u64),
    /// Those around the given `seq` (a search hit), it included.
    Around(u64),
}

fn message_window(raw: Option<&str>) -> Result<(MessageWindow, usize), ApiError> {
    let mut window = None;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        // A seq as the document states it: a non-negative 64-bit signed integer.
        let seq = || {
            value
                .parse::<i64>()
                .ok()
                .and_then(|seq| u64::try_from(seq).ok())
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "invalid_query",
                        format!("`{key}` must be a message seq, not {value:?}"),
                    )
                })
        };
        let given = match key.as_ref() {
            "before" => MessageWindow::Before(Some(seq()?)),
            "after" => MessageWindow::After(seq()?),
            "around" => MessageWindow::Around(seq()?),
            "limit" => {
                limit = parse_limit(&value, MAX_LIMIT)?;
                continue;
            }
            _ => continue,
        };
        if window.replace(given).is_some() {
            return Err(ApiError::unprocessable(
                "invalid_query",
                "give at most one of `before`, `after` and `around`",
            ));
        }
    }
    Ok((window.unwrap_or(MessageWindow::Before(None)), limit))
}

/// Reads one page of messages, newest first.
fn message_page(
    store: &confab_engine::store::Store,
    conv: ConversationId,
    window: MessageWindow,
    limit: usize,
) -> confab_engine::Result<MessagePage> {
    match window {
        MessageWindow::Before(before) => {
            let older = store.messages_before(conv, before, limit)?;
            Ok(MessagePage {
                items: older.items,
                next_before: older.next,
                next_after: None,
            })
        }
        MessageWindow::After(after) => {
            let newer = store.messages_since(conv, after, limit)?;
            let oldest = newer
                .items
                .first()
                .map_or(after.saturating_add(1), |m| m.seq);
            let has_older = !store
                .messages_before(conv, Some(oldest), 1)?
                .items
                .is_empty();
            Ok(MessagePage {
                items: newer.items.into_iter().rev().collect(),
                next_before: has_older.then_some(oldest),
                next_after: newer.next,
            })
        }
        MessageWindow::Around(seq) => {
            let newer = store.messages_since(conv, seq, limit / 2)?;
            let older = store.messages_before(
                conv,
                Some(seq.saturating_add(1)),
                limit - newer.items.len(),
            )?;
            let mut items: Vec<Message> = newer.items.into_iter().rev().collect();
            items.extend(older.items);
            Ok(MessagePage {
                items,
                next_before: older.next,
                next_after: newer.next,
            })
        }
    }
}

/// A conversation's messages, newest first: the newest page, or the page before, after or
/// around a `seq`.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/messages",
    tag = "inbox",
    security(("agent_token" = [])),
    params(
        ("id" = String, Path, description = "The conversation."),
        ("before" = Option<i64>, Query, minimum = 0, description = "Only messages with a smaller `seq`."),
        ("after" = Option<i64>, Query, minimum = 0, description = "The `limit` messages right after this `seq` (newer ones follow with `next_after`). Not with `before` or `around`."),
        ("around" = Option<i64>, Query, minimum = 0, description = "About `limit` messages centred on this `seq`, it included (a search hit). Not with `before` or `after`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, default 50."),
    ),
    responses(
        (status = 200, description = "A page of messages.", body = MessagePage),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 422, description = "`invalid_query`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn messages(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<MessagePage>> {
    let conv = owned_conversation(&app, &agent, &id).await?;
    let (window, limit) = message_window(raw.as_deref())?;
    let store = app.store.clone();
    Ok(Json(
        blocking(move || message_page(&store, conv.id, window, limit)).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
pub struct NewMessage {
    /// 1 to 4,096 characters; `{{first_name}}`, `{{last_name}}`, `{{company}}`,
    /// `{{title}}` and `{{agent_name}}` are filled in.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 4096,
        pattern = "[^\\s\\u0085]"
    )]
    text: Option<String>,
    /// An internal note: stored and streamed to agents, never sent; `@mentions` notify.
    #[serde(default)]
    internal: bool,
    /// Files sent with the reply (email; 422 `attachments_unsupported` on other
    /// channels) or kept with a note: at most 10, within `max_body_bytes` in all.
    #[serde(default)]
    #[schema(max_items = 10)]
    attachments: Vec<NewAttachment>,
}

/// A file to send, its bytes in base64.
#[derive(Deserialize, ToSchema)]
pub struct NewAttachment {
    /// The file name the lead sees.
    #[schema(min_length = 1, max_length = 200, pattern = "[^\\s\\u0085]")]
    name: String,
    /// Its media type (`application/pdf`); `application/octet-stream` when left out.
    #[schema(max_length = 200)]
    content_type: Option<String>,
    /// The bytes, base64 (standard alphabet).
    data: String,
}

/// The files of a new message, decoded: 422 `invalid_attachment` for a bad name, type or
/// base64, or more than 10.
fn files(attachments: Vec<NewAttachment>) -> ApiResult<Vec<(MessageAttachment, Vec<u8>)>> {
    let invalid = |message: String| ApiError::unprocessable("invalid_attachment", message);
    if attachments.len() > 10 {
        return Err(invalid("at most 10 attachments".into()));
    }
    attachments
        .into_iter()
        .map(|a| {
            let name = a.name.trim().to_owned();
            if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
                return Err(invalid(
                    "an attachment's `name` is 1 to 200 characters, no control characters".into(),
                ));
            }
            let content_type = a
                .content_type
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "application/octet-stream".to_owned());
            let plain = content_type.split_once('/').is_some_and(|(x, y)| {
                !x.is_empty()
                    && !y.is_empty()
                    && content_type
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"/.+-_".contains(&c))
            });
            if !plain || content_type.len() > 200 {
                return Err(invalid(format!(
                    "{content_type:?} is not a media type (`application/pdf`)"
                )));
            }
            let bytes = confab_engine::wire::email::base64_decode(&a.data)
                .ok_or_else(|| invalid(format!("the data of {name:?} is not base64")))?;
            Ok((
                MessageAttachment {
                    name: Some(name),
                    content_type,
                    size: Some(bytes.len() as u64),
                    media_id: None,
                },
                bytes,
            ))
        })
        .collect()
}

#[derive(Deserialize, ToSchema)]
pub struct NewConversation {
    /// The channel to write on (one of the caller's workspace).
    #[schema(required = true, nullable = false)]
    channel_id: Option<String>,
    /// Who to write to.
    #[schema(required = true, nullable = false)]
    to: Option<Recipient>,
    /// The first message, as for a reply (variables filled in).
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 8000,
        pattern = "[^\\s\\u0085]"
    )]
    text: Option<String>,
    /// Files sent with it, where the channel sends files.
    #[serde(default)]
    #[schema(max_items = 10)]
    attachments: Vec<NewAttachment>,
}

/// A lead to write to, by the channel's id for them.
#[derive(Deserialize, ToSchema)]
pub struct Recipient {
    /// The lead's provider id (LinkedIn's `ACoAA…` member id).
    #[schema(min_length = 1, max_length = 256, pattern = "[^\\s\\u0085]")]
    provider_id: Option<String>,
    /// Their name, for a lead the workspace does not know yet.
    #[schema(max_length = 200)]
    name: Option<String>,
}

/// A conversation started (or found) and its first message.
#[derive(Serialize, ToSchema)]
pub struct StartedConversation {
    pub conversation: ConversationCard,
    /// Queued for the provider; sending it opens the provider's thread.
    pub message: Message,
    /// `false` when the channel already had a conversation with the lead: the message went
    /// there.
    pub created: bool,
}

/// Writes to a lead first: starts a conversation on a channel that can (LinkedIn: a new
/// chat through Unipile), or continues the one the channel already has with the lead. The
/// message is queued like a reply; the conversation takes the provider's thread once the
/// provider opened it.
#[utoipa::path(
    post,
    path = "/api/v1/conversations",
    tag = "inbox",
    security(("agent_token" = [])),
    request_body = NewConversation,
    responses(
        (status = 201, description = "Created, with its first message queued.", body = StartedConversation),
        (status = 202, description = "The channel already had a conversation with the lead: the message is queued there.", body = StartedConversation),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`missing_field`, `field_too_long`, `cannot_start_conversation` (the channel cannot write first), `empty_text`, `text_too_long`, `unknown_variable`, `variable_without_value`, `invalid_attachment`, `attachments_unsupported`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn start(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<NewConversation>,
) -> ApiResult<(StatusCode, Json<StartedConversation>)> {
    let channel_id: ChannelId = body
        .channel_id
        .ok_or_else(|| ApiError::unprocessable("missing_field", "`channel_id` is required"))?
        .parse()
        .map_err(|_| ApiError::not_found("channel"))?;
    let channel = app
        .runtime
        .channels
        .get(channel_id)
        .filter(|c| c.workspace_id == agent.0.workspace_id)
        .ok_or_else(|| ApiError::not_found("channel"))?;
    let to = body
        .to
        .ok_or_else(|| ApiError::unprocessable("missing_field", "`to` is required"))?;
    let lead = to
        .provider_id
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::unprocessable("missing_field", "`to.provider_id` is required"))?;
    if lead.len() > 256 || lead.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`to.provider_id` is at most 256 bytes without spaces",
        ));
    }
    let name = to
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::unprocessable(
            "field_too_long",
            "`to.name` is at most 200 characters",
        ));
    }
    let text = body
        .text
        .ok_or_else(|| ApiError::unprocessable("missing_field", "`text` is required"))?;
    if text.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "empty_text",
            "the message text is empty",
        ));
    }
    let files = files(body.attachments)?;
    let (id, created) = app.runtime.conversations.start(channel, lead, name).await?;
    let request = OutboundRequest {
        text,
        internal: false,
        sender: Sender::Agent,
        agent_id: Some(agent.0.id),
        agent_name: Some(agent.0.name.clone()),
        mentions: Vec::new(),
        ai: None,
        files,
    };
    let message = app
        .runtime
        .conversations
        .request(id, |reply| ConversationMsg::Send(request, reply))
        .await?;
    let store = app.store.clone();
    let conversation = blocking(move || store.conversation(id))
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?
        .card();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(StartedConversation {
            conversation,
            message,
            created,
        }),
    ))
}

/// Sends a reply to the lead (queued for the provider: answered once durable) or adds an
/// internal note. A human reply while the AI is active pauses the AI.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/messages",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The conversation.")),
    request_body = NewMessage,
    responses(
        (status = 202, description = "Stored; a reply is sent to the lead next.", body = Message),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 409, description = "`whatsapp_window_closed`: only a template may be sent now.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`missing_field`, `empty_text`, `text_too_long`, `unknown_variable`, `variable_without_value`, `invalid_value`, `invalid_attachment`, `attachments_unsupported`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn send(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<NewMessage>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let conv = owned_conversation(&app, &agent, &id).await?;
    let text = body
        .text
        .ok_or_else(|| ApiError::unprocessable("missing_field", "`text` is required"))?;
    let files = files(body.attachments)?;
    let mentions = if body.internal && text.contains('@') {
        let store = app.store.clone();
        let ws = agent.0.workspace_id;
        let agents = blocking(move || store.workspace_agents(ws)).await?;
        confab_engine::mentions::mentioned(&text, &agents)
    } else {
        Vec::new()
    };
    let request = OutboundRequest {
        text,
        internal: body.internal,
        sender: Sender::Agent,
        agent_id: Some(agent.0.id),
        agent_name: Some(agent.0.name.clone()),
        mentions,
        ai: None,
        files,
    };
    let message = app
        .runtime
        .conversations
        .request(conv.id, |reply| ConversationMsg::Send(request, reply))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_parse_repeated_tags_and_reject_bad_values() {
        let q = parse_list_query(Some("view=mine&tag=hot&tag=vip&limit=10&mode=manual"), 0)
            .expect("parse");
        assert_eq!(q.filter.view, View::Mine);
        assert_eq!(q.filter.tags, vec!["hot".to_string(), "vip".to_string()]);
        assert_eq!(q.limit, 10);
        assert_eq!(q.filter.mode, Some(AiMode::Manual));
        let today = parse_list_query(Some("period=today"), 2 * 86_400_000 + 5).expect("parse");
        assert_eq!(today.filter.since, Some(2 * 86_400_000));
        for bad in [
            "view=everything",
            "limit=0",
            "limit=201",
            "limit=x",
            "period=year",
            "cursor=zz",
        ] {
            assert!(
                parse_list_query(Some(bad), 0).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor {
            listing: u64::MAX - 7,
            after: (123, ConversationId::new()),
        };
        assert_eq!(decode_cursor(&encode_cursor(cursor)), Some(cursor));
        assert_eq!(decode_cursor("nope"), None);
        assert_eq!(decode_cursor(&format!("{}.x", encode_cursor(cursor))), None);
    }
}
