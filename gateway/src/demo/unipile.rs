//! A loopback stand-in for Unipile, playing its part on both sides of the demo's LinkedIn
//! channel so the real send, webhook and gap repair paths run without a LinkedIn account:
//!
//! - as **Unipile's API** it answers sends (`POST /api/v1/chats/{chat_id}/messages`, and
//!   `POST /api/v1/chats` for a new chat; multipart forms with `X-API-KEY`) with Unipile's
//!   shapes, keeps every chat's history and serves it (`GET /api/v1/chats`,
//!   `GET /api/v1/chats/{chat_id}/messages`) for gap repair, and a little after each send
//!   posts the lead's `message_read`;
//! - as the **webhook sender** it delivers what leads write as `message_received` events,
//!   with the channel's secret in `Unipile-Auth`.
//!
//! Every accepted send is broadcast as a [`LinkedinSent`], so the simulated leads answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use confab_engine::time::{now_millis, to_rfc3339};
use confab_engine::wire::unipile::{self as wire, Member};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The demo account's own LinkedIn member.
pub fn account_user() -> Member {
    Member {
        provider_id: "ACoAADEMOSELLER".into(),
        name: "Northwind Growth".into(),
        profile_url: None,
    }
}

/// When the lead reads a message, after it was sent.
const READ_AFTER: Duration = Duration::from_secs(3);

/// A message Confab sent through the stand-in, as the lead receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkedinSent {
    /// The lead's LinkedIn id.
    pub to: String,
    pub text: String,
}

#[derive(Default)]
struct Chat {
    lead: Option<Member>,
    /// Unipile's message objects, oldest first.
    messages: Vec<Value>,
}

struct Shared {
    account_id: String,
    api_key: String,
    /// Confab's webhook URL for the channel and its secret, once the channel exists.
    webhook: Mutex<Option<(String, String)>>,
    chats: Mutex<HashMap<String, Chat>>,
    sent: broadcast::Sender<LinkedinSent>,
    client: reqwest::Client,
}

/// The running stand-in; dropping it stops it.
pub struct UnipileSandbox {
    /// The value for the channel's `api_base_url`.
    pub base_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for UnipileSandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The chat the stand-in keeps with a lead.
fn chat_of(lead: &str) -> String {
    format!("demo-chat-{lead}")
}

impl UnipileSandbox {
    /// Binds `127.0.0.1:0` for the account `account_id`, whose sends must carry `api_key`.
    pub async fn start(account_id: &str, api_key: &str) -> anyhow::Result<UnipileSandbox> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot bind the Unipile stand-in on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            account_id: account_id.to_owned(),
            api_key: api_key.to_owned(),
            webhook: Mutex::new(None),
            chats: Mutex::new(HashMap::new()),
            sent: broadcast::channel(256).0,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        });
        let router = Router::new()
            .route("/api/v1/chats", post(start_chat).get(list_chats))
            .route(
                "/api/v1/chats/{chat_id}/messages",
                post(send_in_chat).get(list_messages),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "the Unipile stand-in stopped");
            }
        });
        Ok(UnipileSandbox {
            base_url: format!("http://{addr}"),
            shared,
            task,
        })
    }

    /// Where Confab takes the channel's webhooks, and its secret.
    pub fn connect(&self, webhook_url: String, secret: String) {
        *lock(&self.shared.webhook) = Some((webhook_url, secret));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LinkedinSent> {
        self.shared.sent.subscribe()
    }

    /// A sender of the leads' messages, for the simulation.
    pub fn writer(&self) -> LinkedinWriter {
        LinkedinWriter {
            shared: self.shared.clone(),
        }
    }
}

/// Posts leads' LinkedIn messages to Confab as Unipile does.
#[derive(Clone)]
pub struct LinkedinWriter {
    shared: Arc<Shared>,
}

impl LinkedinWriter {
    /// The lead `provider_id` (named `name`) writes `text`; the message's id.
    pub async fn write(&self, provider_id: &str, name: &str, text: &str) -> anyhow::Result<String> {
        let lead = Member {
            provider_id: provider_id.to_owned(),
            name: name.to_owned(),
            profile_url: Some(format!(
                "https://www.linkedin.com/in/{}",
                name.to_lowercase().replace(' ', "-")
            )),
        };
        let chat = chat_of(provider_id);
        let id = format!("demo-in-{}", rand::random::<u64>());
        let at = to_rfc3339(now_millis());
        record(&self.shared, &chat, Some(&lead), &id, text, false, &at);
        let body = wire::message_webhook(
            &self.shared.account_id,
            &account_user(),
            &lead,
            &chat,
            &id,
            text,
            false,
            &at,
        );
        post_webhook(&self.shared, &body).await?;
        Ok(id)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds a message to a chat's history.
fn record(
    shared: &Shared,
    chat: &str,
    lead: Option<&Member>,
    id: &str,
    text: &str,
    ours: bool,
    at: &str,
) {
    let mut chats = lock(&shared.chats);
    let entry = chats.entry(chat.to_owned()).or_default();
    if entry.lead.is_none() {
        entry.lead = lead.cloned();
    }
    let sender = if ours {
        account_user().provider_id
    } else {
        entry
            .lead
            .as_ref()
            .map(|l| l.provider_id.clone())
            .unwrap_or_default()
    };
    entry.messages.push(json!({
        "object": "Message", "id": id, "chat_id": chat, "account_id": shared.account_id,
        "text": text, "timestamp": at, "is_sender": if ours { 1 } else { 0 },
        "sender_id": sender, "attachments": [], "seen": 0,
    }));
}

async fn post_webhook(shared: &Shared, body: &Value) -> anyhow::Result<()> {
    let (url, secret) = lock(&shared.webhook)
        .clone()
        .context("the LinkedIn channel is not provisioned yet")?;
    let response = shared
        .client
        .post(&url)
        .header("Unipile-Auth", secret)
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::OK,
        "the LinkedIn webhook answered HTTP {}",
        response.status()
    );
    Ok(())
}

fn error(status: StatusCode, kind: &str, title: &str) -> Response {
    (
        status,
        Json(json!({"status": status.as_u16(), "type": format!("errors/{kind}"), "title": title})),
    )
        .into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get(wire::API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|key| key == shared.api_key)
}

/// The form fields of a send (files are read and dropped: the lead "receives" them).
async fn form_fields(headers: &HeaderMap, body: Bytes) -> Result<HashMap<String, String>, String> {
    let boundary = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or("not a multipart form")?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = HashMap::new();
    while let Some(field) = form.next_field().await.map_err(|e| e.to_string())? {
        let name = field.name().unwrap_or_default().to_owned();
        if field.file_name().is_some() {
            field.bytes().await.map_err(|e| e.to_string())?;
        } else {
            fields.insert(name, field.text().await.map_err(|e| e.to_string())?);
        }
    }
    Ok(fields)
}

async fn send(
    shared: Arc<Shared>,
    headers: HeaderMap,
    body: Bytes,
    chat: Option<String>,
) -> Response {
    if !authorized(&shared, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            "Invalid API key",
        );
    }
    let fields = match form_fields(&headers, body).await {
        Ok(fields) => fields,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_parameters", &e),
    };
    let Some(text) = fields.get("text").cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameters",
            "text is required",
        );
    };
    let (chat, started) = match chat {
        Some(chat) => (chat, false),
        None => match fields.get("attendees_ids") {
            Some(lead) => (chat_of(lead), true),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameters",
                    "attendees_ids is required",
                )
            }
        },
    };
    let Some(lead) = ({
        let chats = lock(&shared.chats);
        chats
            .get(&chat)
            .and_then(|c| c.lead.as_ref().map(|l| l.provider_id.clone()))
            .or_else(|| fields.get("attendees_ids").cloned())
    }) else {
        return error(StatusCode::NOT_FOUND, "resource_not_found", "no such chat");
    };
    let id = format!("demo-out-{}", rand::random::<u64>());
    let at = to_rfc3339(now_millis());
    let member = Member {
        provider_id: lead.clone(),
        name: String::new(),
        profile_url: None,
    };
    record(&shared, &chat, Some(&member), &id, &text, true, &at);
    let _ = shared.sent.send(LinkedinSent {
        to: lead.clone(),
        text,
    });
    // The lead opens the chat a little later.
    let reader = shared.clone();
    let read_chat = chat.clone();
    tokio::spawn(async move {
        tokio::time::sleep(READ_AFTER).await;
        let body = json!({
            "account_id": reader.account_id, "account_type": "LINKEDIN",
            "account_info": {"user_id": account_user().provider_id},
            "event": "message_read", "chat_id": read_chat, "timestamp": to_rfc3339(now_millis()),
            "sender": {"attendee_provider_id": lead},
        });
        if let Err(e) = post_webhook(&reader, &body).await {
            tracing::debug!(error = %e, "the demo lead's read receipt was not delivered");
        }
    });
    let answer = if started {
        json!({"object": "ChatStarted", "chat_id": chat, "message_id": id})
    } else {
        json!({"object": "MessageSent", "message_id": id})
    };
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn send_in_chat(
    State(shared): State<Arc<Shared>>,
    Path(chat): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    send(shared, headers, body, Some(chat)).await
}

async fn start_chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    send(shared, headers, body, None).await
}

async fn list_chats(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            "Invalid API key",
        );
    }
    let items: Vec<Value> = lock(&shared.chats)
        .iter()
        .map(|(id, chat)| {
            let last = chat
                .messages
                .last()
                .and_then(|m| m["timestamp"].as_str().map(str::to_owned));
            json!({
                "object": "Chat", "id": id, "account_id": shared.account_id,
                "name": chat.lead.as_ref().map(|l| l.name.clone()),
                "attendee_provider_id": chat.lead.as_ref().map(|l| l.provider_id.clone()),
                "timestamp": last,
            })
        })
        .collect();
    Json(json!({"object": "ChatList", "items": items, "cursor": null})).into_response()
}

async fn list_messages(
    State(shared): State<Arc<Shared>>,
    Path(chat): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&shared, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            "Invalid API key",
        );
    }
    let items: Vec<Value> = lock(&shared.chats)
        .get(&chat)
        .map(|c| c.messages.iter().rev().take(100).cloned().collect())
        .unwrap_or_default();
    Json(json!({"object": "MessageList", "items": items, "cursor": null})).into_response()
}
