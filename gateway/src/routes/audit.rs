//! The audit trail: a conversation's activity (who changed what) and a workspace's admin
//! audit, newest first (`confab_engine::audit`).

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use confab_engine::audit::{self, Activity, AuditEntry};
use confab_engine::ids::ActivityId;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::blocking;
use super::conversations::owned_conversation;
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(conversation_activity))
        .routes(routes!(workspace_audit))
}

/// `before` (an entry id) and `limit` (1 to 200, default 50).
fn page_query(raw: Option<&str>) -> ApiResult<(Option<ActivityId>, usize)> {
    let invalid = |what: String| ApiError::unprocessable("invalid_query", what);
    let (mut before, mut limit) = (None, DEFAULT_LIMIT);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "before" => {
                before =
                    Some(value.parse().map_err(|_| {
                        invalid(format!("`before` is an entry's id, not {value:?}"))
                    })?)
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| invalid(format!("`limit` is 1 to {MAX_LIMIT}, not {value:?}")))?
            }
            other => return Err(invalid(format!("unknown parameter `{other}`"))),
        }
    }
    Ok((before, limit))
}

#[derive(Serialize, ToSchema)]
pub struct ActivityPage {
    items: Vec<Activity>,
    /// Pass as `before` for older entries; `null` when there are none.
    next_before: Option<ActivityId>,
}

/// A conversation's history, newest first: who assigned, tagged, closed, reopened,
/// snoozed it, changed its AI mode or outcome, rated it or edited its lead, and when
/// (`by.kind`: `agent` with `agent_id`, `ai`, `system`, `lead`, `provider`, `operator`).
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/activity",
    tag = "inbox",
    security(("agent_token" = [])),
    params(
        ("id" = String, Path, description = "The conversation."),
        ("before" = Option<String>, Query, pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", description = "The previous page's `next_before`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, default 50."),
    ),
    responses(
        (status = 200, description = "A page of entries.", body = ActivityPage),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace.", body = ErrorBody),
        (status = 422, description = "`invalid_query`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn conversation_activity(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<ActivityPage>> {
    let (before, limit) = page_query(raw.as_deref())?;
    let conv = owned_conversation(&app, &agent, &id).await?;
    let store = app.store.clone();
    let mut items = blocking(move || audit::activity(&store, conv.id, before, limit + 1)).await?;
    let next_before = (items.len() > limit).then(|| items[limit - 1].id);
    items.truncate(limit);
    Ok(Json(ActivityPage { items, next_before }))
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    items: Vec<AuditEntry>,
    /// Pass as `before` for older entries; `null` when there are none.
    next_before: Option<ActivityId>,
}

/// The workspace's admin audit, newest first (workspace admins): agents created, invited
/// or given a password, channels created or changed, workspace settings, AI configuration,
/// escalation rules and outcome labels changed, erasures requested, by whom and when.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "admin",
    security(("agent_token" = [])),
    params(
        ("before" = Option<String>, Query, pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", description = "The previous page's `next_before`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, default 50."),
    ),
    responses(
        (status = 200, description = "A page of entries.", body = AuditPage),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 422, description = "`invalid_query`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn workspace_audit(
    agent: AgentAuth,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<AuditPage>> {
    super::admin_only(&agent, "read the workspace's audit")?;
    let (before, limit) = page_query(raw.as_deref())?;
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    let mut items = blocking(move || audit::admin_audit(&store, ws, before, limit + 1)).await?;
    let next_before = (items.len() > limit).then(|| items[limit - 1].id);
    items.truncate(limit);
    Ok(Json(AuditPage { items, next_before }))
}
