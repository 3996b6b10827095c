//! Erasure of a lead (GDPR Art. 17), and the record of erasures.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use confab_engine::erasure::Erasure;
use confab_engine::ids::ContactId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::blocking;
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(erase_contact))
        .routes(routes!(list_erasures))
        .routes(routes!(show_erasure))
}

#[derive(Deserialize, IntoParams)]
pub struct EraseQuery {
    /// Must be `true`: a contact is only ever removed with everything about it.
    erase: Option<bool>,
}

/// An erasure as recorded: who asked, when, the ids involved and what was deleted; never
/// the erased data.
#[derive(Serialize, ToSchema)]
pub struct ErasureView {
    #[serde(flatten)]
    erasure: Erasure,
    /// `running` until every step is done (it resumes after a restart), then `completed`.
    status: &'static str,
}

impl From<Erasure> for ErasureView {
    fn from(erasure: Erasure) -> Self {
        let status = if erasure.completed_at.is_some() {
            "completed"
        } else {
            "running"
        };
        ErasureView { erasure, status }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ErasureList {
    items: Vec<ErasureView>,
}

/// Erases a lead: the contact, all its conversations with their messages and files, their
/// search documents, the stream deltas and the agents' notifications about them. The
/// erasure is recorded durably before this answers and then runs in the background (a
/// restart resumes it); follow it at `GET /api/v1/erasures/{id}`. Asking again while one
/// runs answers that one.
#[utoipa::path(
    delete,
    path = "/api/v1/contacts/{id}",
    tag = "contacts",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The contact."), EraseQuery),
    responses(
        (status = 202, description = "The erasure is recorded and runs.", body = ErasureView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`: workspace admins only.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such contact in the caller's workspace.", body = ErrorBody),
        (status = 422, description = "`erase_required`: `erase=true` is missing; `invalid_query`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn erase_contact(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<EraseQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<(StatusCode, Json<ErasureView>)> {
    super::admin_only(&agent, "erase leads or see erasures")?;
    let Query(query) = query?;
    if query.erase != Some(true) {
        return Err(ApiError::unprocessable(
            "erase_required",
            "a contact is removed only with everything about it: pass erase=true",
        ));
    }
    let ws = agent.0.workspace_id;
    let id: ContactId = id.parse().map_err(|_| ApiError::not_found("contact"))?;
    // One erasure per lead: two requests at once must not both start one.
    static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _starting = STARTING.lock().await;
    let store = app.store.clone();
    let (contact, running) = blocking(move || {
        let contact = store.contact(id)?.filter(|c| c.workspace_id == ws);
        let running = store
            .erasures(ws)?
            .into_iter()
            .find(|e| e.contact_id == id && e.completed_at.is_none());
        Ok((contact, running))
    })
    .await?;
    if let Some(running) = running {
        return Ok((StatusCode::ACCEPTED, Json(running.into())));
    }
    if contact.is_none() {
        return Err(ApiError::not_found("contact"));
    }
    let record = Erasure::new(ws, id, agent.0.id, confab_engine::time::now_millis());
    let record = app
        .runtime
        .start_erasure(app.store.clone(), app.committer.clone(), record)
        .await?;
    tracing::info!(erasure = %record.id, contact = %id, by = %agent.0.id, "erasure requested");
    super::audit(
        &app,
        ws,
        confab_engine::audit::Author::agent(agent.0.id),
        "erasure_requested",
        Some(record.id.to_string()),
        &[("contact_id", id.to_string())],
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(record.into())))
}

/// The workspace's erasures, oldest first: the record of who erased which lead and when.
#[utoipa::path(
    get,
    path = "/api/v1/erasures",
    tag = "contacts",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "Every erasure of the workspace.", body = ErasureList),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`: workspace admins only.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn list_erasures(
    agent: AgentAuth,
    State(app): State<AppState>,
) -> ApiResult<Json<ErasureList>> {
    super::admin_only(&agent, "erase leads or see erasures")?;
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    let items = blocking(move || store.erasures(ws)).await?;
    Ok(Json(ErasureList {
        items: items.into_iter().map(ErasureView::from).collect(),
    }))
}

/// One erasure, with its progress.
#[utoipa::path(
    get,
    path = "/api/v1/erasures/{id}",
    tag = "contacts",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The erasure.")),
    responses(
        (status = 200, description = "The erasure.", body = ErasureView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`: workspace admins only.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such erasure in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn show_erasure(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ErasureView>> {
    super::admin_only(&agent, "erase leads or see erasures")?;
    // Erasure ids are ULIDs: 26 letters and digits.
    if id.len() != 26 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::not_found("erasure"));
    }
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    match blocking(move || store.erasure(ws, &id)).await? {
        Some(erasure) => Ok(Json(erasure.into())),
        None => Err(ApiError::not_found("erasure")),
    }
}
