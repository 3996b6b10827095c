//! Exports as JSON Lines (`engine::export`): a workspace, or one contact (GDPR access and
//! portability), streamed from one snapshot while traffic goes on.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use confab_engine::export::{self, Scope};
use confab_engine::ids::ContactId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_workspace))
        .routes(routes!(export_contact))
}

/// Lines are gathered into chunks of about this size before they are sent.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks produced ahead of a slow reader.
const CHUNKS_AHEAD: usize = 4;
/// A reader that takes nothing for this long is given up on (the export holds a store
/// snapshot, which keeps old versions from being compacted away).
const STALLED_READER: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything of the caller's workspace as JSON Lines: contacts, conversations with their
/// messages in order, and the files Confab stores, read from one consistent snapshot while
/// traffic goes on. The first line (`export`) states the snapshot's delta head; the last
/// (`end`) counts the lines of each type, so a download without it was cut short. See
/// docs/OPERATIONS.md for every line's shape.
#[utoipa::path(
    get,
    path = "/api/v1/export",
    tag = "contacts",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The export, streamed (`application/x-ndjson`).", body = String, content_type = "application/x-ndjson"),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`: workspace admins only.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn export_workspace(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Response> {
    super::admin_only(&agent, "export data")?;
    let scope = Scope::Workspace(agent.0.workspace_id);
    Ok(stream(
        app,
        scope,
        format!("workspace-{}", agent.0.workspace_id),
    ))
}

/// One lead's data as JSON Lines (GDPR Art. 15 access and Art. 20 portability): the
/// contact, each of its conversations with its messages, and the files Confab stores, in
/// the same shape as the workspace export.
#[utoipa::path(
    get,
    path = "/api/v1/contacts/{id}/export",
    tag = "contacts",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The contact.")),
    responses(
        (status = 200, description = "The export, streamed (`application/x-ndjson`).", body = String, content_type = "application/x-ndjson"),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`: workspace admins only.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such contact in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn export_contact(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    super::admin_only(&agent, "export data")?;
    let id: ContactId = id.parse().map_err(|_| ApiError::not_found("contact"))?;
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    match super::blocking(move || store.contact(id)).await? {
        Some(c) if c.workspace_id == ws => {}
        _ => return Err(ApiError::not_found("contact")),
    }
    Ok(stream(app, Scope::Contact(ws, id), format!("contact-{id}")))
}

/// The export of `scope` as a streamed response: produced on the blocking pool, a few
/// chunks ahead of the reader; a failure part-way ends the body with an error (no `end`
/// line).
fn stream(app: AppState, scope: Scope, name: String) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_AHEAD);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let send = |chunk: Result<Bytes, std::io::Error>| {
            runtime
                .block_on(tokio::time::timeout(STALLED_READER, tx.send(chunk)))
                .is_ok_and(|sent| sent.is_ok())
        };
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        let written = export::export(&app.store, scope, env!("CARGO_PKG_VERSION"), |line| {
            chunk.extend_from_slice(&line);
            if chunk.len() < CHUNK_BYTES {
                return true;
            }
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES));
            send(Ok(Bytes::from(full)))
        });
        match written {
            Ok(_) => {
                if !chunk.is_empty() {
                    send(Ok(Bytes::from(chunk)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "export failed part-way");
                send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"confab-{name}.jsonl\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}
