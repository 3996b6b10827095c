//! Leads' details: read and edit a contact; an edit reaches every conversation with it.

use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use confab_actors::conversation::Command;
use confab_actors::ConversationMsg;
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::WriteSet;
use confab_engine::ids::ContactId;
use confab_engine::inbound::normalize_phone;
use confab_engine::model::{Contact, ConversationCard, StoredContact};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
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

/// Edits of one contact are read-modify-write: they are serialized per contact (striped
/// locks, shared by every server in the process; only contention, never data, is shared).
fn lock_for(id: ContactId) -> &'static Mutex<()> {
    static STRIPES: OnceLock<Vec<Mutex<()>>> = OnceLock::new();
    let stripes = STRIPES.get_or_init(|| (0..64).map(|_| Mutex::new(())).collect());
    let bytes = id.to_bytes();
    &stripes[usize::from(bytes[15]) % stripes.len()]
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
    Body(body): Body<ContactPatch>,
) -> ApiResult<Json<ContactView>> {
    let patch = body;
    let probe = owned_contact(&app, &agent, &id).await?;
    let _serialized = lock_for(probe.contact.id).lock().await;
    // Read again under the lock: this is the version the edit applies to.
    let before = owned_contact(&app, &agent, &id).await?;
    let mut contact = before.contact.clone();
    if let Some(name) = patch.name {
        contact.name = cleaned("name", name, 200)?;
    }
    if let Some(email) = patch.email {
        contact.email = cleaned("email", email, 320)?;
        if contact.email.as_ref().is_some_and(|e| !e.contains('@')) {
            return Err(ApiError::unprocessable(
                "invalid_email",
                "`email` is not an email address",
            ));
        }
    }
    if let Some(phone) = patch.phone {
        contact.phone = cleaned("phone", phone, 40)?.map(|p| normalize_phone(&p));
        if contact.phone.as_deref() == Some("+") {
            return Err(ApiError::unprocessable(
                "invalid_phone",
                "`phone` has no digits",
            ));
        }
    }
    if let Some(company) = patch.company {
        contact.company = cleaned("company", company, 200)?;
    }
    if let Some(title) = patch.title {
        contact.title = cleaned("title", title, 200)?;
    }
    if let Some(avatar) = patch.avatar_url {
        contact.avatar_url = cleaned("avatar_url", avatar, 2048)?;
        if let Some(url) = &contact.avatar_url {
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
    }
    if contact == before.contact {
        return Ok(Json(contact_view(&app, &before).await?));
    }

    let ws = before.workspace_id;
    let mut set = WriteSet::new();
    // Phones and emails identify a lead within the workspace: one contact each.
    if contact.phone != before.contact.phone {
        if let Some(old) = &before.contact.phone {
            set.delete(Ks::PhoneContact, catalogue::phone_contact(ws, old));
        }
        if let Some(new) = &contact.phone {
            let key = catalogue::phone_contact(ws, new);
            set.require_absent(Ks::PhoneContact, key.clone()).put_raw(
                Ks::PhoneContact,
                key,
                contact.id.to_bytes().to_vec(),
            );
        }
    }
    let email_key = |e: &String| catalogue::email_contact(ws, e);
    if contact.email.as_ref().map(email_key) != before.contact.email.as_ref().map(email_key) {
        if let Some(old) = &before.contact.email {
            set.delete(Ks::EmailContact, email_key(old));
        }
        if let Some(new) = &contact.email {
            set.require_absent(Ks::EmailContact, email_key(new))
                .put_raw(
                    Ks::EmailContact,
                    email_key(new),
                    contact.id.to_bytes().to_vec(),
                );
        }
    }
    let stored = StoredContact {
        contact: contact.clone(),
        ..before
    };
    set.put(Ks::ContactState, contact.id.to_bytes().to_vec(), &stored);
    app.committer.commit(set).await.map_err(|e| match e {
        confab_engine::Error::AlreadyExists => ApiError::new(
            StatusCode::CONFLICT,
            "contact_exists",
            "another contact of this workspace has that phone or email",
        ),
        other => other.into(),
    })?;

    // Each conversation keeps a copy for its card: its actor refreshes it and streams it.
    let store = app.store.clone();
    let id = contact.id;
    for conv in blocking(move || store.contact_conversations(id)).await? {
        let command = Command::ContactChanged(contact.clone());
        app.runtime
            .conversations
            .request(conv, |reply| ConversationMsg::Command(command, reply))
            .await?;
    }
    Ok(Json(contact_view(&app, &stored).await?))
}
