//! Provisioning with the server admin token: workspaces, agents, channels.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use confab_engine::admin;
use confab_engine::ids::WorkspaceId;
use confab_engine::model::{
    Channel, ChannelConfig, Role, WhatsappConfig, WHATSAPP_DEFAULT_API_BASE,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::blocking;
use crate::app::AppState;
use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/workspaces", post(create_workspace))
        .route(
            "/api/v1/admin/workspaces/{workspace_id}/agents",
            post(create_agent),
        )
        .route(
            "/api/v1/admin/workspaces/{workspace_id}/channels",
            post(create_channel),
        )
}

const MAX_NAME: usize = 200;

fn required(field: &'static str, value: Option<String>, max: usize) -> ApiResult<String> {
    let value = value.map(|v| v.trim().to_string()).unwrap_or_default();
    if value.is_empty() {
        return Err(ApiError::unprocessable(
            "missing_field",
            format!("`{field}` is required"),
        ));
    }
    if value.chars().count() > max {
        return Err(ApiError::unprocessable(
            "field_too_long",
            format!("`{field}` is longer than {max} characters"),
        ));
    }
    Ok(value)
}

#[derive(Deserialize)]
struct NewWorkspace {
    name: Option<String>,
}

async fn create_workspace(
    _: AdminAuth,
    State(app): State<AppState>,
    body: Result<Json<NewWorkspace>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    let name = required("name", body.name, MAX_NAME)?;
    let (workspace, set) = admin::new_workspace(&name);
    app.committer.commit(set).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": workspace.id, "name": workspace.name})),
    ))
}

async fn existing_workspace(app: &AppState, id: &str) -> ApiResult<WorkspaceId> {
    let id: WorkspaceId = id.parse().map_err(|_| ApiError::not_found("workspace"))?;
    let store = app.store.clone();
    match blocking(move || store.workspace(id)).await? {
        Some(_) => Ok(id),
        None => Err(ApiError::not_found("workspace")),
    }
}

#[derive(Deserialize)]
struct NewAgent {
    name: Option<String>,
    email: Option<String>,
    role: Option<Role>,
}

async fn create_agent(
    _: AdminAuth,
    State(app): State<AppState>,
    Path(workspace_id): Path<String>,
    body: Result<Json<NewAgent>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let workspace_id = existing_workspace(&app, &workspace_id).await?;
    let Json(body) = body?;
    let name = required("name", body.name, MAX_NAME)?;
    let email = required("email", body.email, 320)?;
    if !email.contains('@') {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "`email` is not an email address",
        ));
    }
    let role = body.role.unwrap_or(Role::Agent);
    let (agent, token, set) = admin::new_agent(workspace_id, &name, &email, role);
    app.committer.commit(set).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": agent.id,
            "workspace_id": agent.workspace_id,
            "name": agent.name,
            "email": agent.email,
            "role": agent.role,
            "token": token,
        })),
    ))
}

#[derive(Deserialize)]
struct NewChannel {
    kind: Option<String>,
    name: Option<String>,
    phone_number_id: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
    access_token: Option<String>,
    api_base_url: Option<String>,
}

async fn create_channel(
    _: AdminAuth,
    State(app): State<AppState>,
    Path(workspace_id): Path<String>,
    body: Result<Json<NewChannel>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let workspace_id = existing_workspace(&app, &workspace_id).await?;
    let Json(body) = body?;
    let name = required("name", body.name, MAX_NAME)?;
    let config = match body.kind.as_deref() {
        Some("whatsapp") => {
            let api_base_url = body
                .api_base_url
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| WHATSAPP_DEFAULT_API_BASE.to_string());
            if reqwest::Url::parse(&api_base_url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                return Err(ApiError::unprocessable(
                    "invalid_url",
                    "`api_base_url` must be an http(s) URL",
                ));
            }
            ChannelConfig::Whatsapp(WhatsappConfig {
                phone_number_id: required("phone_number_id", body.phone_number_id, 64)?,
                app_secret: required("app_secret", body.app_secret, 512)?,
                verify_token: required("verify_token", body.verify_token, 512)?,
                access_token: required("access_token", body.access_token, 4096)?,
                api_base_url,
            })
        }
        Some("email") | Some("linkedin") => {
            return Err(ApiError::unprocessable(
                "unsupported_channel_kind",
                "email and LinkedIn channels are not available yet",
            ))
        }
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_channel_kind",
                format!("unknown channel kind {other:?}: expected whatsapp, email or linkedin"),
            ))
        }
        None => {
            return Err(ApiError::unprocessable(
                "missing_field",
                "`kind` is required",
            ))
        }
    };
    let (channel, set) = admin::new_channel(workspace_id, &name, config);
    app.committer.commit(set).await?;
    app.runtime.channels.start(channel.clone()).await?;
    Ok((StatusCode::CREATED, Json(channel_json(&channel))))
}

/// A channel as the API shows it: never its secrets.
pub fn channel_json(channel: &Channel) -> Value {
    match &channel.config {
        ChannelConfig::Whatsapp(c) => json!({
            "id": channel.id,
            "workspace_id": channel.workspace_id,
            "kind": channel.kind(),
            "name": channel.name,
            "phone_number_id": c.phone_number_id,
            "api_base_url": c.api_base_url,
            "webhook_path": format!("/webhooks/whatsapp/{}", channel.id),
        }),
    }
}
