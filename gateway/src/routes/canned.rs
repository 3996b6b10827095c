//! Canned replies: the workspace's library of ready answers. Agents find one by its
//! shortcut in the composer; its variables are filled when the reply is sent, as for any
//! text typed there.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use confab_engine::canned::{self, CannedReply};
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::WriteSet;
use confab_engine::ids::{CannedReplyId, WorkspaceId};
use confab_engine::time::now_millis;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{blocking, Body};
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, replace, delete))
}

/// A canned reply as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct CannedReplyView {
    id: CannedReplyId,
    title: String,
    /// What agents type after `/` in the composer.
    shortcut: String,
    /// May hold the composer's variables (`{{first_name}}` …), filled when sent.
    text: String,
    created_by: Option<confab_engine::ids::AgentId>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl CannedReplyView {
    fn of(reply: &CannedReply) -> CannedReplyView {
        CannedReplyView {
            id: reply.id,
            title: reply.title.clone(),
            shortcut: reply.shortcut.clone(),
            text: reply.text.clone(),
            created_by: reply.created_by,
            created_at: confab_engine::time::to_rfc3339(reply.created_at),
            updated_at: confab_engine::time::to_rfc3339(reply.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CannedReplyList {
    /// Shortcuts starting with `q` first, then titles holding it; each group by shortcut.
    items: Vec<CannedReplyView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only replies whose shortcut starts with `q` or whose title holds it (any case).
    #[param(max_length = 200)]
    q: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CannedReplyBody {
    #[schema(min_length = 1, max_length = 200, pattern = "[^\\s\\u0085]")]
    title: String,
    /// 1 to 40 letters, digits, `-` or `_` (letters of any script); unique in the
    /// workspace whatever the case.
    #[schema(min_length = 1, max_length = 40, pattern = "^[0-9A-Za-z_-]+$")]
    shortcut: String,
    /// Up to 4,096 characters; only the composer's variables.
    #[schema(min_length = 1, max_length = 4096, pattern = "[^\\s\\u0085]")]
    text: String,
}

/// A checked body: trimmed title and text, a valid shortcut, known variables only.
fn checked(body: CannedReplyBody) -> ApiResult<(String, String, String)> {
    let (title, text) = (body.title.trim(), body.text.trim());
    if title.is_empty() || title.chars().count() > canned::MAX_TITLE_CHARS {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`title` is 1 to 200 characters",
        ));
    }
    if text.is_empty() || text.chars().count() > canned::MAX_TEXT_CHARS {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`text` is 1 to 4,096 characters",
        ));
    }
    if !canned::valid_shortcut(&body.shortcut) {
        return Err(ApiError::unprocessable(
            "invalid_shortcut",
            "`shortcut` is 1 to 40 letters, digits, `-` or `_`",
        ));
    }
    confab_engine::template::check(text)
        .map_err(|e| ApiError::unprocessable("unknown_variable", e.to_string()))?;
    Ok((title.to_owned(), body.shortcut, text.to_owned()))
}

fn shortcut_taken(shortcut: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "shortcut_taken",
        format!("another canned reply has the shortcut {shortcut:?}"),
    )
}

/// Stores `reply`, moving its shortcut from `previous` when it changed: the new shortcut
/// must be free (whatever the case), checked by the store itself.
async fn save(app: &AppState, reply: &CannedReply, previous: Option<&str>) -> ApiResult<()> {
    let ws = reply.workspace_id;
    let key = catalogue::canned_shortcut(ws, &reply.shortcut);
    let mut set = WriteSet::new();
    let moved = previous.is_none_or(|p| catalogue::canned_shortcut(ws, p) != key);
    if moved {
        if let Some(previous) = previous {
            set.delete(Ks::CannedShortcut, catalogue::canned_shortcut(ws, previous));
        }
        set.require_absent(Ks::CannedShortcut, key.clone())
            .put(Ks::CannedShortcut, key, &reply.id);
    }
    set.put(
        Ks::CannedReply,
        catalogue::canned_reply(ws, reply.id),
        reply,
    );
    match app.committer.commit(set).await {
        Ok(_) => Ok(()),
        Err(confab_engine::Error::AlreadyExists) => Err(shortcut_taken(&reply.shortcut)),
        Err(e) => Err(e.into()),
    }
}

async fn owned(app: &AppState, ws: WorkspaceId, id: &str) -> ApiResult<CannedReply> {
    let id: CannedReplyId = id
        .parse()
        .map_err(|_| ApiError::not_found("canned reply"))?;
    let store = app.store.clone();
    blocking(move || store.canned_reply(ws, id))
        .await?
        .ok_or_else(|| ApiError::not_found("canned reply"))
}

/// The workspace's canned replies, or those matching `q` (the composer's `/` search).
#[utoipa::path(
    get,
    path = "/api/v1/canned-replies",
    tag = "inbox",
    security(("agent_token" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The matching replies.", body = CannedReplyList),
        (status = 400, description = "`malformed_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 422, description = "`invalid_query`: `q` over 200 characters.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn list(
    agent: AgentAuth,
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<CannedReplyList>> {
    let Query(query) = query?;
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            "`q` is at most 200 characters",
        ));
    }
    let (store, ws) = (app.store.clone(), agent.0.workspace_id);
    let replies = blocking(move || store.canned_replies(ws)).await?;
    let q = query.q.unwrap_or_default().trim().to_lowercase();
    let (mut by_shortcut, mut by_title) = (Vec::new(), Vec::new());
    for reply in &replies {
        if reply.shortcut.to_lowercase().starts_with(&q) {
            by_shortcut.push(CannedReplyView::of(reply));
        } else if reply.title.to_lowercase().contains(&q) {
            by_title.push(CannedReplyView::of(reply));
        }
    }
    by_shortcut.append(&mut by_title);
    Ok(Json(CannedReplyList { items: by_shortcut }))
}

/// Adds a canned reply to the workspace's library.
#[utoipa::path(
    post,
    path = "/api/v1/canned-replies",
    tag = "inbox",
    security(("agent_token" = [])),
    request_body = CannedReplyBody,
    responses(
        (status = 201, description = "Stored.", body = CannedReplyView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 409, description = "`shortcut_taken`, `too_many_canned_replies`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_shortcut`, `unknown_variable`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn create(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<CannedReplyBody>,
) -> ApiResult<(StatusCode, Json<CannedReplyView>)> {
    let (title, shortcut, text) = checked(body)?;
    let ws = agent.0.workspace_id;
    let _writing = app.canned_writes.lock().await;
    let store = app.store.clone();
    let count = blocking(move || store.count_prefix(Ks::CannedReply, &ws.to_bytes())).await?;
    if count >= canned::MAX_PER_WORKSPACE {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_canned_replies",
            format!(
                "a workspace keeps at most {} canned replies",
                canned::MAX_PER_WORKSPACE
            ),
        ));
    }
    let now = now_millis();
    let reply = CannedReply {
        id: CannedReplyId::new(),
        workspace_id: ws,
        title,
        shortcut,
        text,
        created_by: Some(agent.0.id),
        created_at: now,
        updated_at: now,
    };
    save(&app, &reply, None).await?;
    Ok((StatusCode::CREATED, Json(CannedReplyView::of(&reply))))
}

/// One canned reply.
#[utoipa::path(
    get,
    path = "/api/v1/canned-replies/{id}",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The canned reply.")),
    responses(
        (status = 200, description = "The canned reply.", body = CannedReplyView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such canned reply in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn show(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CannedReplyView>> {
    let reply = owned(&app, agent.0.workspace_id, &id).await?;
    Ok(Json(CannedReplyView::of(&reply)))
}

/// Replaces a canned reply's title, shortcut and text.
#[utoipa::path(
    put,
    path = "/api/v1/canned-replies/{id}",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The canned reply.")),
    request_body = CannedReplyBody,
    responses(
        (status = 200, description = "Stored.", body = CannedReplyView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such canned reply in the caller's workspace.", body = ErrorBody),
        (status = 409, description = "`shortcut_taken`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_shortcut`, `unknown_variable`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn replace(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<CannedReplyBody>,
) -> ApiResult<Json<CannedReplyView>> {
    let (title, shortcut, text) = checked(body)?;
    let _writing = app.canned_writes.lock().await;
    let mut reply = owned(&app, agent.0.workspace_id, &id).await?;
    let previous = std::mem::replace(&mut reply.shortcut, shortcut);
    reply.title = title;
    reply.text = text;
    reply.updated_at = now_millis();
    save(&app, &reply, Some(&previous)).await?;
    Ok(Json(CannedReplyView::of(&reply)))
}

/// Deletes a canned reply (its shortcut is free again).
#[utoipa::path(
    delete,
    path = "/api/v1/canned-replies/{id}",
    tag = "inbox",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The canned reply.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such canned reply in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn delete(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let _writing = app.canned_writes.lock().await;
    let reply = owned(&app, agent.0.workspace_id, &id).await?;
    let ws = reply.workspace_id;
    let mut set = WriteSet::new();
    set.delete(Ks::CannedReply, catalogue::canned_reply(ws, reply.id))
        .delete(
            Ks::CannedShortcut,
            catalogue::canned_shortcut(ws, &reply.shortcut),
        );
    app.committer.commit(set).await?;
    Ok(StatusCode::NO_CONTENT)
}
