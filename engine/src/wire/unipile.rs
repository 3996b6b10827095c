//! Unipile's wire format for LinkedIn accounts, as pure functions: the webhook's shared
//! secret, webhook bodies (new messages, ours sent elsewhere, reads, reactions, edits,
//! deletions, account status in both of Unipile's shapes) as the channel port's batch,
//! the chat and message lists read to repair gaps, and what an answer to a send means.
//!
//! Nothing here does I/O, and no input can make it panic. Parsing is lenient: an item
//! without a usable id is counted rejected, an event we do not use is counted ignored,
//! neither fails its body (Unipile retries an unanswered webhook five times).

use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::ids::ChannelId;
use crate::inbound::{EventDetails, InboundEvent, ThreadHint};
use crate::model::MessageAttachment;
use crate::port::{AccountEvent, Change, InboundBatch, MessageChange, SendOutcome, ThreadRead};
use crate::time::{parse_rfc3339, UnixMillis};

/// The webhook header carrying the channel's secret (header names are case-insensitive).
pub const AUTH_HEADER: &str = "unipile-auth";

/// The header carrying the API key on every call to Unipile.
pub const API_KEY_HEADER: &str = "X-API-KEY";

/// Longest provider id accepted (message, chat, account and attendee ids).
pub const MAX_ID_BYTES: usize = 256;

/// Longest label kept (a name, a headline): longer ones are cut.
const MAX_LABEL_CHARS: usize = 200;

/// Longest URL kept (a profile page, a picture).
const MAX_URL_BYTES: usize = 2048;

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnipileError {
    #[error("missing Unipile-Auth header")]
    MissingSecret,
    #[error("the Unipile-Auth header does not match the channel's webhook secret")]
    BadSecret,
    #[error("not a Unipile webhook: {0}")]
    NotAWebhook(String),
}

/// Checks the `Unipile-Auth` header against the channel's secret, in constant time. Fails
/// closed: an empty secret verifies nothing.
pub fn verify_secret(secret: &str, header: Option<&str>) -> Result<(), UnipileError> {
    let given = header.ok_or(UnipileError::MissingSecret)?;
    if secret.is_empty() {
        return Err(UnipileError::BadSecret);
    }
    if bool::from(given.trim().as_bytes().ct_eq(secret.as_bytes())) {
        Ok(())
    } else {
        Err(UnipileError::BadSecret)
    }
}

/// A webhook body as the port's batch, for the channel of `channel_id` serving the Unipile
/// account `account_id`: items of other accounts are skipped.
pub fn inbound_batch(
    body: &[u8],
    channel_id: ChannelId,
    account_id: &str,
) -> Result<InboundBatch, UnipileError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| UnipileError::NotAWebhook(format!("not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(UnipileError::NotAWebhook("not a JSON object".into()));
    };
    let mut batch = InboundBatch::default();
    // Unipile's first account webhook: {"AccountStatus":{"account_id","message"}}.
    if let Some(status) = object.get("AccountStatus") {
        if text(status, "account_id").as_deref() != Some(account_id) {
            batch.skipped += 1;
            return Ok(batch);
        }
        match text(status, "message").as_deref().and_then(account_event) {
            Some(event) => batch.account.push(event),
            None => batch.ignored += 1,
        }
        return Ok(batch);
    }
    if text(&value, "account_id").is_none() {
        return Err(UnipileError::NotAWebhook(
            "no account_id: not a Unipile event".into(),
        ));
    }
    if text(&value, "account_id").as_deref() != Some(account_id) {
        batch.skipped += 1;
        return Ok(batch);
    }
    // The newer shape: {"id","created_at","account_id","type":"account.status.…","payload"}.
    if let Some(kind) = text(&value, "type") {
        if let Some(rest) = kind.strip_prefix("account.status") {
            let status = value
                .get("payload")
                .and_then(|p| text(p, "status").or_else(|| text(p, "message")))
                .unwrap_or_else(|| rest.trim_start_matches('.').to_owned());
            match account_event(&status) {
                Some(event) => batch.account.push(event),
                None => batch.ignored += 1,
            }
        } else {
            batch.ignored += 1;
        }
        return Ok(batch);
    }
    let own = own_id(&value);
    match text(&value, "event").as_deref() {
        Some("message_received") => match message_event(&value, channel_id, own.as_deref()) {
            Some(event) => batch.messages.push(event),
            None => batch.rejected += 1,
        },
        Some("message_read") => match id(&value, "chat_id") {
            // Our own user reading the lead's messages is not news about ours.
            Some(_) if is_ours(&value, own.as_deref()) => batch.ignored += 1,
            Some(thread) => batch.reads.push(ThreadRead {
                thread,
                at: time(&value, "timestamp"),
            }),
            None => batch.rejected += 1,
        },
        Some(event @ ("message_reaction" | "message_edited" | "message_deleted")) => {
            let Some(provider_message_id) = id(&value, "message_id") else {
                batch.rejected += 1;
                return Ok(batch);
            };
            let change = match event {
                "message_reaction" => {
                    let reactor = value
                        .get("reaction_sender")
                        .and_then(|s| text(s, "attendee_provider_id"));
                    let from_lead = match (&reactor, &own) {
                        (Some(reactor), Some(own)) => reactor != own,
                        _ => !flag(&value, "is_sender"),
                    };
                    Change::Reaction {
                        emoji: label(&value, "reaction").unwrap_or_default(),
                        from_lead,
                    }
                }
                "message_edited" => match text(&value, "message") {
                    Some(text) => Change::Edited { text },
                    // An edit that does not say the new text changes nothing we know.
                    None => {
                        batch.ignored += 1;
                        return Ok(batch);
                    }
                },
                _ => Change::Deleted,
            };
            batch.changes.push(MessageChange {
                provider_message_id,
                change,
                at: time(&value, "timestamp"),
            });
        }
        _ => batch.ignored += 1,
    }
    Ok(batch)
}

/// What an account status says about the account, or `None` for a passing state.
fn account_event(status: &str) -> Option<AccountEvent> {
    let upper = status.trim().to_ascii_uppercase();
    match upper.as_str() {
        "OK" | "RUNNING" | "RECONNECTED" | "SYNC_SUCCESS" | "CREATION_SUCCESS" => {
            Some(AccountEvent::Connected)
        }
        "CREDENTIALS" | "CREDENTIALS_NEEDED" => Some(AccountEvent::AuthFailed {
            reason: "the LinkedIn account needs its credentials again (Unipile: CREDENTIALS)"
                .into(),
        }),
        "ERROR" | "STOPPED" | "DELETED" | "DISCONNECTED" => Some(AccountEvent::Disconnected {
            reason: format!("the LinkedIn account is not running (Unipile: {upper})"),
        }),
        _ => None,
    }
}

/// The account's own LinkedIn id, when the event names it (`account_info.user_id`).
fn own_id(value: &Value) -> Option<String> {
    value.get("account_info").and_then(|a| text(a, "user_id"))
}

/// Whether the event's sender is the account's own user.
fn is_ours(value: &Value, own: Option<&str>) -> bool {
    let sender = value
        .get("sender")
        .and_then(|s| text(s, "attendee_provider_id"));
    flag(value, "is_sender") || (own.is_some() && sender.as_deref() == own)
}

/// A person in a chat, as a webhook names them.
struct Person {
    provider_id: Option<String>,
    name: Option<String>,
    profile_url: Option<String>,
    avatar_url: Option<String>,
    headline: Option<String>,
}

fn person(value: &Value) -> Person {
    Person {
        provider_id: id(value, "attendee_provider_id"),
        name: label(value, "attendee_name"),
        profile_url: url(value, "attendee_profile_url"),
        avatar_url: url(value, "attendee_picture_url")
            .or_else(|| url(value, "attendee_profile_picture_url")),
        headline: label(value, "attendee_headline").or_else(|| {
            value
                .get("attendee_specifics")
                .and_then(|s| label(s, "occupation").or_else(|| label(s, "headline")))
        }),
    }
}

/// A `message_received` event as the port's inbound message: the lead's, or one the
/// account's user wrote on LinkedIn (`from_us`). `None` without a message or chat id.
fn message_event(value: &Value, channel_id: ChannelId, own: Option<&str>) -> Option<InboundEvent> {
    let provider_message_id = id(value, "message_id")?;
    let thread = id(value, "chat_id")?;
    let from_us = is_ours(value, own);
    let sender = value.get("sender").map(person);
    // The lead: the sender, or for our own message the one attendee who is not us.
    let lead = if from_us {
        let us = own
            .map(str::to_owned)
            .or_else(|| sender.as_ref().and_then(|s| s.provider_id.clone()));
        value
            .get("attendees")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(person)
            .find(|p| p.provider_id.is_some() && p.provider_id != us)
    } else {
        sender
    };
    let attachments = value
        .get("attachments")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| attachment(a, &provider_message_id))
                .collect()
        })
        .unwrap_or_default();
    let reply_to = value.get("quoted").and_then(|q| id(q, "id"));
    // A conversation we started waits for a one-to-one chat with its lead, never a group.
    let group = flag(value, "is_group")
        || value
            .get("attendees")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 2);
    let mut event = event(
        channel_id,
        thread,
        provider_message_id,
        text(value, "message").unwrap_or_default(),
        time(value, "timestamp"),
        lead,
        from_us,
        attachments,
        reply_to,
    );
    if group {
        event.details.thread_hints.clear();
    }
    Some(event)
}

#[allow(clippy::too_many_arguments)]
fn event(
    channel_id: ChannelId,
    thread: String,
    provider_message_id: String,
    text: String,
    sent_at: UnixMillis,
    lead: Option<Person>,
    from_us: bool,
    attachments: Vec<MessageAttachment>,
    reply_to: Option<String>,
) -> InboundEvent {
    let lead = lead.unwrap_or(Person {
        provider_id: None,
        name: None,
        profile_url: None,
        avatar_url: None,
        headline: None,
    });
    let thread_hints = lead
        .provider_id
        .iter()
        .map(|p| ThreadHint::Awaiting(p.clone()))
        .collect();
    InboundEvent {
        channel_id,
        thread,
        provider_message_id,
        contact_name: lead.name,
        contact_phone: None,
        contact_email: None,
        contact_profile: lead.provider_id,
        sent_at,
        text,
        content_type: None,
        raw: None,
        reply_to,
        attachments,
        campaign: None,
        received: None,
        details: EventDetails {
            from_us,
            profile_url: lead.profile_url,
            avatar_url: lead.avatar_url,
            headline: lead.headline,
            thread_hints,
            ..EventDetails::default()
        },
    }
}

/// A file that came with a message: fetched later through the channel by
/// `{message id}/{attachment id}`.
fn attachment(value: &Value, message_id: &str) -> Option<MessageAttachment> {
    let attachment_id = id(value, "id")?;
    let content_type = text(value, "mimetype")
        .filter(|m| m.contains('/') && m.len() <= 255)
        .unwrap_or_else(|| {
            match text(value, "type").as_deref() {
                Some("img") => "image/jpeg",
                Some("video") => "video/mp4",
                Some("audio") => "audio/mpeg",
                _ => "application/octet-stream",
            }
            .to_owned()
        });
    Some(MessageAttachment {
        name: label(value, "file_name"),
        content_type,
        size: value.get("file_size").and_then(Value::as_u64),
        media_id: Some(format!("{message_id}/{attachment_id}")),
    })
}

/// Whether `GET /api/v1/accounts/{account_id}` says the account runs: `Some(true)` when
/// every source is `OK` (or `RUNNING`), `Some(false)` when one is not, `None` when the
/// answer is unreadable.
pub fn account_running(body: &[u8]) -> Option<bool> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let sources = value.get("sources")?.as_array()?;
    let statuses: Vec<String> = sources.iter().filter_map(|s| text(s, "status")).collect();
    if statuses.is_empty() {
        return None;
    }
    Some(
        statuses
            .iter()
            .all(|s| matches!(account_event(s), Some(AccountEvent::Connected))),
    )
}

/// A chat the account has, as `GET /api/v1/chats` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedChat {
    pub id: String,
    /// The other person's LinkedIn id (one-to-one chats).
    pub attendee_provider_id: Option<String>,
    /// The chat's name: the other person's, for one-to-one chats.
    pub name: Option<String>,
    /// Its last activity, provider time.
    pub timestamp: UnixMillis,
}

/// One page of a list: its items and the cursor of the next page.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub cursor: Option<String>,
}

/// A page of `GET /api/v1/chats`; chats without an id are left out.
pub fn chat_list(body: &[u8]) -> Option<Page<ListedChat>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let items = value
        .get("items")?
        .as_array()?
        .iter()
        .filter_map(|chat| {
            Some(ListedChat {
                id: id(chat, "id")?,
                attendee_provider_id: id(chat, "attendee_provider_id"),
                name: label(chat, "name"),
                timestamp: time(chat, "timestamp"),
            })
        })
        .collect();
    Some(Page {
        items,
        cursor: text(&value, "cursor"),
    })
}

/// A page of `GET /api/v1/chats/{chat_id}/messages` as the port's inbound messages of the
/// chat (the lead's, and ours written elsewhere), newest first as Unipile lists them.
/// `lead` is the chat's other person, for messages the list names only by id.
pub fn message_list(
    body: &[u8],
    channel_id: ChannelId,
    chat: &ListedChat,
) -> Option<Page<InboundEvent>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let items = value
        .get("items")?
        .as_array()?
        .iter()
        .filter_map(|m| {
            let provider_message_id = id(m, "id")?;
            let from_us = flag(m, "is_sender");
            let lead = Person {
                provider_id: chat
                    .attendee_provider_id
                    .clone()
                    .or_else(|| (!from_us).then(|| id(m, "sender_id")).flatten()),
                name: chat.name.clone(),
                profile_url: None,
                avatar_url: None,
                headline: None,
            };
            let attachments = m
                .get("attachments")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|a| attachment(a, &provider_message_id))
                        .collect()
                })
                .unwrap_or_default();
            Some(event(
                channel_id,
                chat.id.clone(),
                provider_message_id,
                text(m, "text").unwrap_or_default(),
                time(m, "timestamp"),
                Some(lead),
                from_us,
                attachments,
                m.get("quoted").and_then(|q| id(q, "id")),
            ))
        })
        .collect();
    Some(Page {
        items,
        cursor: text(&value, "cursor"),
    })
}

/// Unipile's answer to a send (`POST /chats/{id}/messages`, or `POST /chats` starting a
/// chat), classified for the connector: 401 and 403 refuse our key or account; 429 asks us
/// to slow down; 408 and 5xx may pass; other refusals are for good.
pub fn classify_send(
    status: u16,
    body: &[u8],
    retry_after: Option<std::time::Duration>,
) -> SendOutcome {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let reason = || {
        let detail = text(&value, "detail").or_else(|| text(&value, "title"));
        match detail {
            Some(detail) => format!("Unipile answered {status}: {detail}"),
            None => format!("Unipile answered {status}"),
        }
    };
    match status {
        200..=299 => match id(&value, "message_id").or_else(|| id(&value, "id")) {
            Some(provider_id) => SendOutcome::Accepted {
                provider_id,
                thread: id(&value, "chat_id"),
            },
            // Sent, but unnamed: nothing to match an echo or a status by, and sending
            // again would send twice.
            None => SendOutcome::Permanent {
                code: "no_message_id".into(),
                reason: "Unipile accepted the message without naming it".into(),
            },
        },
        401 | 403 => SendOutcome::AuthFailed { reason: reason() },
        429 => SendOutcome::RateLimited {
            reason: reason(),
            retry_after,
        },
        408 | 500..=599 => SendOutcome::Retryable {
            reason: reason(),
            retry_after,
        },
        _ => SendOutcome::Permanent {
            code: text(&value, "type")
                .map(|t| t.trim_start_matches("errors/").to_owned())
                .filter(|t| !t.is_empty() && t.len() <= 64)
                .unwrap_or_else(|| "rejected".into()),
            reason: reason(),
        },
    }
}

// Body builders: what Unipile posts, for tests and the demo's simulated leads.

/// A LinkedIn member as a webhook names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub provider_id: String,
    pub name: String,
    pub profile_url: Option<String>,
}

impl Member {
    fn attendee(&self) -> Value {
        json!({
            "attendee_id": format!("att-{}", self.provider_id),
            "attendee_name": self.name,
            "attendee_provider_id": self.provider_id,
            "attendee_profile_url": self.profile_url,
        })
    }
}

#[allow(clippy::too_many_arguments)]
/// A `message_received` webhook: `sender` wrote `text` in `chat_id`, between `us` (the
/// account's user) and `lead`.
pub fn message_webhook(
    account_id: &str,
    us: &Member,
    lead: &Member,
    chat_id: &str,
    message_id: &str,
    text: &str,
    from_us: bool,
    timestamp: &str,
) -> Value {
    let sender = if from_us { us } else { lead };
    json!({
        "account_id": account_id,
        "account_type": "LINKEDIN",
        "account_info": {"type": "LINKEDIN", "feature": "classic", "user_id": us.provider_id},
        "event": "message_received",
        "chat_id": chat_id,
        "timestamp": timestamp,
        "webhook_name": "confab",
        "message_id": message_id,
        "message": text,
        "sender": sender.attendee(),
        "attendees": [us.attendee(), lead.attendee()],
        "attachments": [],
        "is_sender": from_us,
    })
}

/// The first shape of an account status webhook.
pub fn account_status_webhook(account_id: &str, message: &str) -> Value {
    json!({"AccountStatus": {"account_id": account_id, "account_type": "LINKEDIN", "message": message}})
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A non-empty id of at most [`MAX_ID_BYTES`] without control characters.
fn id(value: &Value, key: &str) -> Option<String> {
    let id = value.get(key)?.as_str()?.trim();
    (!id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control))
        .then(|| id.to_owned())
}

/// A label, trimmed and cut to [`MAX_LABEL_CHARS`]; `None` when empty.
fn label(value: &Value, key: &str) -> Option<String> {
    let label: String = value
        .get(key)?
        .as_str()?
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_LABEL_CHARS)
        .collect();
    (!label.is_empty()).then_some(label)
}

/// An http(s) URL of at most [`MAX_URL_BYTES`].
fn url(value: &Value, key: &str) -> Option<String> {
    let url = value.get(key)?.as_str()?.trim();
    (url.len() <= MAX_URL_BYTES
        && (url.starts_with("https://") || url.starts_with("http://"))
        && !url.chars().any(|c| c.is_control() || c.is_whitespace()))
    .then(|| url.to_owned())
}

/// A boolean Unipile writes as `true`/`false` or `1`/`0`.
fn flag(value: &Value, key: &str) -> bool {
    match value.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// An RFC 3339 time; `0` when missing or unreadable.
fn time(value: &Value, key: &str) -> UnixMillis {
    value
        .get(key)
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Member {
        Member {
            provider_id: "ACoAAUS".into(),
            name: "Sam Seller".into(),
            profile_url: None,
        }
    }

    fn kim() -> Member {
        Member {
            provider_id: "ACoAAKIM".into(),
            name: "Kim Doe".into(),
            profile_url: Some("https://www.linkedin.com/in/kimdoe".into()),
        }
    }

    fn batch(body: &Value) -> InboundBatch {
        inbound_batch(body.to_string().as_bytes(), ChannelId::new(), "acc-1").expect("a webhook")
    }

    #[test]
    fn the_secret_header_is_compared_exactly() {
        assert_eq!(verify_secret("s3cret", Some("s3cret")), Ok(()));
        assert_eq!(
            verify_secret("s3cret", Some("s3cre")),
            Err(UnipileError::BadSecret)
        );
        assert_eq!(
            verify_secret("s3cret", None),
            Err(UnipileError::MissingSecret)
        );
        assert_eq!(verify_secret("", Some("")), Err(UnipileError::BadSecret));
    }

    #[test]
    fn a_leads_message_names_its_chat_and_lead() {
        let body = message_webhook(
            "acc-1",
            &us(),
            &kim(),
            "chat-1",
            "msg-1",
            "Hello!",
            false,
            "2026-01-05T10:20:30.000Z",
        );
        let b = batch(&body);
        assert_eq!(b.messages.len(), 1);
        let m = &b.messages[0];
        assert_eq!(m.thread, "chat-1");
        assert_eq!(m.provider_message_id, "msg-1");
        assert_eq!(m.text, "Hello!");
        assert_eq!(m.contact_name.as_deref(), Some("Kim Doe"));
        assert_eq!(m.contact_profile.as_deref(), Some("ACoAAKIM"));
        assert_eq!(
            m.details.profile_url.as_deref(),
            Some("https://www.linkedin.com/in/kimdoe")
        );
        assert!(!m.details.from_us);
        assert_eq!(
            m.sent_at,
            parse_rfc3339("2026-01-05T10:20:30.000Z").expect("a time")
        );
        assert_eq!(
            m.details.thread_hints,
            vec![ThreadHint::Awaiting("ACoAAKIM".into())]
        );
    }

    #[test]
    fn our_own_message_is_ours_and_names_the_lead() {
        let mut body = message_webhook(
            "acc-1",
            &us(),
            &kim(),
            "chat-1",
            "msg-2",
            "Hi Kim",
            true,
            "2026-01-05T10:21:00Z",
        );
        let m = &batch(&body).messages[0];
        assert!(m.details.from_us);
        assert_eq!(m.contact_profile.as_deref(), Some("ACoAAKIM"));
        // Without `is_sender`, the sender being the account's user says the same.
        body.as_object_mut().expect("an object").remove("is_sender");
        assert!(batch(&body).messages[0].details.from_us);
    }

    #[test]
    fn other_accounts_and_unknown_events_are_not_errors() {
        let body = message_webhook("acc-2", &us(), &kim(), "c", "m", "x", false, "");
        assert_eq!(batch(&body).skipped, 1);
        let b = batch(&json!({"account_id": "acc-1", "event": "new_relation"}));
        assert_eq!(b.ignored, 1);
        let b = batch(&json!({"account_id": "acc-1", "event": "message_received"}));
        assert_eq!(b.rejected, 1, "no message id");
        assert!(inbound_batch(b"[1]", ChannelId::new(), "acc-1").is_err());
        assert!(inbound_batch(b"{}", ChannelId::new(), "acc-1").is_err());
    }

    #[test]
    fn account_status_in_both_shapes() {
        let b = batch(&account_status_webhook("acc-1", "CREDENTIALS"));
        assert!(matches!(b.account[..], [AccountEvent::AuthFailed { .. }]));
        let b = batch(&account_status_webhook("acc-1", "STOPPED"));
        assert!(matches!(b.account[..], [AccountEvent::Disconnected { .. }]));
        let b = batch(&account_status_webhook("acc-1", "RECONNECTED"));
        assert_eq!(b.account, vec![AccountEvent::Connected]);
        assert_eq!(batch(&account_status_webhook("acc-9", "OK")).skipped, 1);
        let v2 = json!({"id": "e1", "created_at": "2026-01-05T10:00:00Z", "account_id": "acc-1",
            "type": "account.status.updated", "payload": {"status": "disconnected"}});
        assert!(matches!(
            batch(&v2).account[..],
            [AccountEvent::Disconnected { .. }]
        ));
        let v2 = json!({"id": "e2", "account_id": "acc-1", "type": "account.status.running", "payload": {}});
        assert_eq!(batch(&v2).account, vec![AccountEvent::Connected]);
    }

    #[test]
    fn reads_reactions_edits_and_deletions() {
        let read = json!({"account_id": "acc-1", "account_info": {"user_id": "ACoAAUS"},
            "event": "message_read", "chat_id": "chat-1", "timestamp": "2026-01-05T10:22:00Z",
            "sender": {"attendee_provider_id": "ACoAAKIM"}});
        assert_eq!(batch(&read).reads.len(), 1);
        let reaction = json!({"account_id": "acc-1", "account_info": {"user_id": "ACoAAUS"},
            "event": "message_reaction", "message_id": "msg-2", "reaction": "👍",
            "reaction_sender": {"attendee_provider_id": "ACoAAKIM"}});
        assert_eq!(
            batch(&reaction).changes[0].change,
            Change::Reaction {
                emoji: "👍".into(),
                from_lead: true
            }
        );
        let edit = json!({"account_id": "acc-1", "event": "message_edited", "message_id": "m", "message": "new"});
        assert_eq!(
            batch(&edit).changes[0].change,
            Change::Edited { text: "new".into() }
        );
        let delete = json!({"account_id": "acc-1", "event": "message_deleted", "message_id": "m"});
        assert_eq!(batch(&delete).changes[0].change, Change::Deleted);
    }

    #[test]
    fn send_answers_are_classified() {
        assert_eq!(
            classify_send(201, br#"{"object":"MessageSent","message_id":"m1"}"#, None),
            SendOutcome::Accepted {
                provider_id: "m1".into(),
                thread: None
            }
        );
        assert_eq!(
            classify_send(
                201,
                br#"{"object":"ChatStarted","chat_id":"c1","message_id":"m1"}"#,
                None
            ),
            SendOutcome::Accepted {
                provider_id: "m1".into(),
                thread: Some("c1".into())
            }
        );
        assert!(matches!(
            classify_send(401, b"{}", None),
            SendOutcome::AuthFailed { .. }
        ));
        let wait = Some(std::time::Duration::from_secs(3));
        assert_eq!(
            classify_send(429, b"", wait),
            SendOutcome::RateLimited {
                reason: "Unipile answered 429".into(),
                retry_after: wait
            }
        );
        assert!(matches!(
            classify_send(503, b"oops", None),
            SendOutcome::Retryable { .. }
        ));
        let refused =
            br#"{"status":422,"type":"errors/invalid_recipient","title":"Invalid recipient"}"#;
        assert!(matches!(
            classify_send(422, refused, None),
            SendOutcome::Permanent { code, .. } if code == "invalid_recipient"
        ));
    }

    #[test]
    fn an_accounts_sources_say_whether_it_runs() {
        let ok = br#"{"object":"Account","id":"acc-1","type":"LINKEDIN","sources":[{"id":"acc-1_MESSAGING","status":"OK"}]}"#;
        assert_eq!(account_running(ok), Some(true));
        let stopped = br#"{"sources":[{"id":"a","status":"OK"},{"id":"b","status":"STOPPED"}]}"#;
        assert_eq!(account_running(stopped), Some(false));
        assert_eq!(account_running(b"{}"), None);
        assert_eq!(account_running(b"not json"), None);
    }

    #[test]
    fn listed_messages_become_events_of_their_chat() {
        let chats = br#"{"object":"ChatList","items":[{"object":"Chat","id":"chat-1","name":"Kim Doe","attendee_provider_id":"ACoAAKIM","timestamp":"2026-01-05T10:00:00Z"},{"name":"no id"}],"cursor":"next"}"#;
        let page = chat_list(chats).expect("a chat list");
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.cursor.as_deref(), Some("next"));
        let messages = br#"{"object":"MessageList","items":[{"id":"m2","chat_id":"chat-1","text":"ours","is_sender":1,"timestamp":"2026-01-05T10:01:00Z","attachments":[{"id":"a1","type":"img"}]},{"id":"m1","text":"theirs","is_sender":0,"sender_id":"ACoAAKIM","timestamp":"2026-01-05T10:00:00Z"}],"cursor":null}"#;
        let page = message_list(messages, ChannelId::new(), &page.items[0]).expect("a list");
        assert_eq!(page.items.len(), 2);
        assert!(page.items[0].details.from_us);
        assert_eq!(
            page.items[0].attachments[0].media_id.as_deref(),
            Some("m2/a1")
        );
        assert!(!page.items[1].details.from_us);
        assert_eq!(page.items[1].contact_name.as_deref(), Some("Kim Doe"));
        assert_eq!(page.cursor, None);
    }
}
