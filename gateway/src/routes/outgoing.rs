//! Outgoing webhooks, managed by workspace admins: `GET|POST /api/v1/webhooks`,
//! `GET|PATCH|DELETE /api/v1/webhooks/{id}` (`confab_engine::webhooks`; delivery in
//! `crate::webhooks`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use confab_engine::catalogue::Ks;
use confab_engine::committer::WriteSet;
use confab_engine::ids::{WebhookId, WorkspaceId};
use confab_engine::time::{now_millis, to_rfc3339};
use confab_engine::webhooks::{self, Disabled, Endpoint, KINDS, MAX_ENDPOINTS};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{admin_only, blocking, Body};
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, change, remove))
}

/// An outgoing webhook endpoint and how its delivery stands.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    id: WebhookId,
    url: String,
    /// The delta kinds delivered; empty: every kind.
    kinds: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// The last offset delivered or skipped; the next delivery is after it.
    cursor: u64,
    /// Deltas of the whole log after the cursor (this workspace's are among them).
    behind: u64,
    enabled: bool,
    /// Why and when it was disabled (sustained failure, or an admin).
    disabled_reason: Option<String>,
    #[schema(format = DateTime)]
    disabled_at: Option<String>,
    /// Failed attempts in a row, and the last error.
    failures: u32,
    last_error: Option<String>,
    #[schema(format = DateTime)]
    last_delivered_at: Option<String>,
    /// Only in the answer that creates it: the key of `X-Confab-Signature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl WebhookView {
    fn of(e: &Endpoint, head: u64) -> Self {
        WebhookView {
            id: e.id,
            url: e.url.clone(),
            kinds: e.kinds.clone(),
            created_at: to_rfc3339(e.created_at),
            cursor: e.cursor,
            behind: head.saturating_sub(e.cursor),
            enabled: e.disabled.is_none(),
            disabled_reason: e.disabled.as_ref().map(|d| d.reason.clone()),
            disabled_at: e.disabled.as_ref().map(|d| to_rfc3339(d.at)),
            failures: e.failures,
            last_error: e.last_error.clone(),
            last_delivered_at: e.last_delivered_at.map(to_rfc3339),
            secret: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    items: Vec<WebhookView>,
}

fn check_url(url: &str) -> ApiResult<()> {
    let ok = url.len() <= 2048
        && reqwest::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "invalid_value",
            "`url` must be an http or https URL of at most 2048 characters",
        ))
    }
}

fn check_kinds(kinds: &[String]) -> ApiResult<()> {
    match kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        Some(bad) => Err(ApiError::unprocessable(
            "invalid_value",
            format!("{bad:?} is not a kind of change ({})", KINDS.join(", ")),
        )),
        None => Ok(()),
    }
}

async fn owned(app: &AppState, ws: WorkspaceId, id: &str) -> ApiResult<Endpoint> {
    let id: WebhookId = id.parse().map_err(|_| ApiError::not_found("webhook"))?;
    let store = app.store.clone();
    blocking(move || webhooks::endpoint(&store, ws, id))
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))
}

async fn put(app: &AppState, e: &Endpoint) -> ApiResult<()> {
    let mut set = WriteSet::new();
    set.put(Ks::Webhook, webhooks::key(e.workspace_id, e.id), e);
    app.committer.commit(set).await?;
    Ok(())
}

/// The workspace's outgoing webhooks (admins).
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "admin",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The endpoints, oldest first.", body = WebhookList),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn list(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Json<WebhookList>> {
    admin_only(&agent, "manage webhooks")?;
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    let endpoints = blocking(move || webhooks::endpoints(&store, ws)).await?;
    let head = app.committer.durable_head();
    Ok(Json(WebhookList {
        items: endpoints.iter().map(|e| WebhookView::of(e, head)).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where each change is POSTed (http or https).
    #[schema(max_length = 2048)]
    url: String,
    /// Kinds of change to deliver (`conversation_created`, `conversation_updated`,
    /// `conversation_removed`, `message_created`, `message_updated`, `messages_removed`,
    /// `channel_updated`); left out or empty: all of them.
    #[serde(default)]
    kinds: Vec<String>,
}

/// Registers an outgoing webhook (admins). It receives the workspace's changes from now
/// on; the answer carries its signing `secret`, shown this once.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "admin",
    security(("agent_token" = [])),
    request_body = NewWebhook,
    responses(
        (status = 201, description = "The endpoint, with its secret.", body = WebhookView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 409, description = "`too_many_webhooks`: 20 in the workspace already.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`: not an http(s) URL, an unknown kind.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn create(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<NewWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    admin_only(&agent, "manage webhooks")?;
    check_url(&body.url)?;
    check_kinds(&body.kinds)?;
    let ws = agent.0.workspace_id;
    let _writing = app.webhook_writes.lock().await;
    let store = app.store.clone();
    if blocking(move || webhooks::endpoints(&store, ws))
        .await?
        .len()
        >= MAX_ENDPOINTS
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!("a workspace has at most {MAX_ENDPOINTS} webhooks"),
        ));
    }
    let head = app.committer.durable_head();
    let endpoint = Endpoint {
        id: WebhookId::new(),
        workspace_id: ws,
        url: body.url,
        secret: confab_engine::admin::new_token(),
        kinds: body.kinds,
        created_at: now_millis(),
        cursor: head,
        failures: 0,
        failing_since: None,
        last_error: None,
        last_delivered_at: None,
        disabled: None,
        generation: 0,
    };
    let mut set = WriteSet::new();
    set.put(Ks::Webhook, webhooks::key(ws, endpoint.id), &endpoint);
    super::audit_into(
        &mut set,
        ws,
        confab_engine::audit::Author::agent(agent.0.id),
        "webhook_created",
        Some(endpoint.id.to_string()),
        &[("url", endpoint.url.clone())],
    );
    app.committer.commit(set).await?;
    app.webhook_edits.notify_one();
    let mut view = WebhookView::of(&endpoint, head);
    view.secret = Some(endpoint.secret);
    Ok((StatusCode::CREATED, Json(view)))
}

/// One outgoing webhook and how its delivery stands (admins).
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    tag = "admin",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The webhook.")),
    responses(
        (status = 200, description = "The endpoint.", body = WebhookView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 404, description = "`not_found`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn show(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookView>> {
    admin_only(&agent, "manage webhooks")?;
    let endpoint = owned(&app, agent.0.workspace_id, &id).await?;
    Ok(Json(WebhookView::of(
        &endpoint,
        app.committer.durable_head(),
    )))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChange {
    #[schema(max_length = 2048)]
    url: Option<String>,
    kinds: Option<Vec<String>>,
    /// `true` re-enables a disabled endpoint (delivery resumes at its cursor); `false`
    /// disables it.
    enabled: Option<bool>,
    /// Delivers again from this offset (a delta id received before), if the log still
    /// holds it: 409 `replay_unavailable` otherwise.
    #[schema(minimum = 1)]
    replay_from: Option<u64>,
}

/// Changes an outgoing webhook (admins): its URL or kinds, enables or disables it, or
/// replays from an offset still retained.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    tag = "admin",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The webhook.")),
    request_body = WebhookChange,
    responses(
        (status = 200, description = "The endpoint as stored.", body = WebhookView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 404, description = "`not_found`.", body = ErrorBody),
        (status = 409, description = "`replay_unavailable`: the log no longer holds that offset (or it is not yet written).", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn change(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<WebhookChange>,
) -> ApiResult<Json<WebhookView>> {
    admin_only(&agent, "manage webhooks")?;
    if let Some(url) = &body.url {
        check_url(url)?;
    }
    if let Some(kinds) = &body.kinds {
        check_kinds(kinds)?;
    }
    let ws = agent.0.workspace_id;
    let _writing = app.webhook_writes.lock().await;
    let mut endpoint = owned(&app, ws, &id).await?;
    let head = app.committer.durable_head();
    if let Some(from) = body.replay_from {
        let store = app.store.clone();
        let pruned = blocking(move || store.delta_pruned_through()).await?;
        if from == 0 || from <= pruned || from > head {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "replay_unavailable",
                format!("the log holds offsets {} to {head}", pruned + 1),
            ));
        }
        endpoint.cursor = from - 1;
    }
    if let Some(url) = body.url {
        endpoint.url = url;
    }
    if let Some(kinds) = body.kinds {
        endpoint.kinds = kinds;
    }
    match body.enabled {
        Some(true) => {
            endpoint.disabled = None;
            endpoint.failures = 0;
            endpoint.failing_since = None;
        }
        Some(false) if endpoint.disabled.is_none() => {
            endpoint.disabled = Some(Disabled {
                at: now_millis(),
                reason: "disabled by an admin".to_owned(),
            });
        }
        _ => {}
    }
    endpoint.generation += 1;
    put(&app, &endpoint).await?;
    // A running task sees the change now; an enabled one gets its task.
    app.webhook_wakes.touch(ws);
    app.webhook_edits.notify_one();
    super::audit(
        &app,
        ws,
        confab_engine::audit::Author::agent(agent.0.id),
        "webhook_changed",
        Some(endpoint.id.to_string()),
        &[("enabled", endpoint.disabled.is_none().to_string())],
    )
    .await?;
    Ok(Json(WebhookView::of(&endpoint, head)))
}

/// Removes an outgoing webhook (admins): nothing more is delivered to it.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "admin",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The webhook.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 404, description = "`not_found`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn remove(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    admin_only(&agent, "manage webhooks")?;
    let ws = agent.0.workspace_id;
    let _writing = app.webhook_writes.lock().await;
    let endpoint = owned(&app, ws, &id).await?;
    let mut set = WriteSet::new();
    set.delete(Ks::Webhook, webhooks::key(ws, endpoint.id));
    super::audit_into(
        &mut set,
        ws,
        confab_engine::audit::Author::agent(agent.0.id),
        "webhook_removed",
        Some(endpoint.id.to_string()),
        &[],
    );
    app.committer.commit(set).await?;
    app.webhook_wakes.touch(ws);
    Ok(StatusCode::NO_CONTENT)
}
