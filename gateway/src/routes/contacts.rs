//! Leads' details: read and edit a contact; an edit reaches every conversation with it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use confab_actors::{ActorError, ContactEdit};
use confab_engine::ids::ContactId;
use confab_engine::inbound::normalize_phone;
use confab_engine::model::{Contact, ConversationCard, StoredContact};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::blocking;
use super::Body;
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, edit))
}

/// A contact with a card of each of its conversations.
#[derive(Serialize, ToSchema)]
pub struct ContactView {
    #[serde(flatten)]
    contact: Contact,
    conversations: Vec<ConversationCard>,
}

async fn owned_contact(app: &AppState, agent: &AgentAuth, id: &str) -> ApiResult<StoredContact> {
    let id: ContactId = id.parse().map_err(|_| ApiError::not_found("contact"))?;
    let store = app.store.clone();
    match blocking(move || store.contact(id)).await? {
        Some(c) if c.workspace_id == agent.0.workspace_id => Ok(c),
        _ => Err(ApiError::not_found("contact")),
    }
}

/// The contact with a card of each of its conversations.
async fn contact_view(app: &AppState, stored: &StoredContact) -> ApiResult<ContactView> {
    let store = app.store.clone();
    let id = stored.contact.id;
    let cards: Vec<ConversationCard> = blocking(move || {
        let mut cards = Vec::new();
        for conv in store.contact_conversations(id)? {
            if let Some(conv) = store.conversation(conv)? {
                cards.push(conv.card());
            }
        }
        Ok(cards)
    })
    .await?;
    Ok(ContactView {
        contact: stored.contact.clone(),
        conversations: cards,
    })
}

/// A lead's details and a card of each of its conversations.
#[utoipa::path(
    get,
    path = "/api/v1/contacts/{id}",
    tag = "contacts",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The contact.")),
    responses(
        (status = 200, description = "The contact.", body = ContactView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such contact in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn show(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ContactView>> {
    let stored = owned_contact(&app, &agent, &id).await?;
    Ok(Json(contact_view(&app, &stored).await?))
}

/// Any subset of the fields; `null` clears one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 320, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 40, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    company: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2048, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    avatar_url: Option<Option<String>>,
}

/// Tells a field sent as `null` (Some(None)) from one not sent (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// An optional text field: at most `max` printable characters as sent (the document's
/// `maxLength` and pattern), then trimmed; empty clears it.
fn cleaned(field: &'static str, value: Option<String>, max: usize) -> ApiResult<Option<String>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_value",
            format!("`{field}` must be at most {max} printable characters"),
        ));
    }
    Ok(Some(value.trim().to_string()).filter(|v| !v.is_empty()))
}

/// Edits a lead's details; every conversation with the lead streams its new card. Phones
/// and emails are unique within the workspace.
#[utoipa::path(
    patch,
    path = "/api/v1/contacts/{id}",
    tag = "contacts",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The contact.")),
    request_body = ContactPatch,
    responses(
        (status = 200, description = "The contact as stored.", body = ContactView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such contact in the caller's workspace.", body = ErrorBody),
        (status = 409, description = "`contact_exists`: another contact has that phone or email.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_email`, `invalid_phone`, `invalid_url`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn edit(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(patch): Body<ContactPatch>,
) -> ApiResult<Json<ContactView>> {
    let id: ContactId = id.parse().map_err(|_| ApiError::not_found("contact"))?;
    let mut edit = ContactEdit {
        by: Some(agent.0.id),
        ..ContactEdit::default()
    };
    if let Some(name) = patch.name {
        edit.name = Some(cleaned("name", name, 200)?);
    }
    if let Some(email) = patch.email {
        let email = cleaned("email", email, 320)?;
        if email.as_ref().is_some_and(|e| !e.contains('@')) {
            return Err(ApiError::unprocessable(
                "invalid_email",
                "`email` is not an email address",
            ));
        }
        edit.email = Some(email);
    }
    if let Some(phone) = patch.phone {
        let phone = cleaned("phone", phone, 40)?.map(|p| normalize_phone(&p));
        if phone.as_deref() == Some("+") {
            return Err(ApiError::unprocessable(
                "invalid_phone",
                "`phone` has no digits",
            ));
        }
        edit.phone = Some(phone);
    }
    if let Some(company) = patch.company {
        edit.company = Some(cleaned("company", company, 200)?);
    }
    if let Some(title) = patch.title {
        edit.title = Some(cleaned("title", title, 200)?);
    }
    if let Some(avatar) = patch.avatar_url {
        let avatar = cleaned("avatar_url", avatar, 2048)?;
        if let Some(url) = &avatar {
            if reqwest::Url::parse(url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                return Err(ApiError::unprocessable(
                    "invalid_url",
                    "`avatar_url` must be an http(s) URL",
                ));
            }
        }
        edit.avatar_url = Some(avatar);
    }
    // Edits are serialized by the contacts' owner, which applies them to the current
    // version and streams every conversation's new card.
    let stored = app
        .runtime
        .contacts
        .edit(agent.0.workspace_id, id, edit)
        .await
        .map_err(|e| match e {
            ActorError::NotFound => ApiError::not_found("contact"),
            ActorError::Store(confab_engine::Error::AlreadyExists) => ApiError::new(
                StatusCode::CONFLICT,
                "contact_exists",
                "another contact of this workspace has that phone or email",
            ),
            other => other.into(),
        })?;
    Ok(Json(contact_view(&app, &stored).await?))
}
