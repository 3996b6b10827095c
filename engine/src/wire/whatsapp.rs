//! The WhatsApp Cloud API (Meta) wire format as pure functions: the webhook signature and
//! verification handshake, webhook bodies parsed into inbound messages and delivery statuses,
//! send request bodies, and what the Graph API's answer to a send means.
//!
//! Nothing here does I/O. Parsing is lenient on purpose: Meta retries a rejected webhook for
//! days, so one odd message or status is skipped rather than failing its batch, and no input
//! can make these functions panic.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ids::ChannelId;
use crate::inbound::{normalize_phone, InboundEvent};
use crate::model::{Delivery, MessageAttachment};
use crate::port::{InboundBatch, SendOutcome, StatusReport};
use crate::time::UnixMillis;

type HmacSha256 = Hmac<Sha256>;

/// The request header carrying the webhook body's signature (HTTP header names are
/// case-insensitive; Meta spells it `X-Hub-Signature-256`).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

const SIGNATURE_PREFIX: &str = "sha256=";

/// Provider error code: the 24-hour customer-service window is closed, only templates may be
/// sent.
pub const WINDOW_CLOSED: i64 = 131047;

/// Provider error codes worth retrying with backoff: throughput (130429), pair rate limit
/// (131056), temporary failures (131000, 131016) and Graph API rate limits (2, 4, 80007).
const RETRYABLE_CODES: [i64; 7] = [130429, 131056, 131000, 131016, 2, 4, 80007];

/// The retryable codes that ask us to slow down rather than report a failure.
const RATE_CODES: [i64; 5] = [130429, 131056, 4, 80007, 2];

/// Graph API error code of an invalid or expired access token.
pub const AUTH_FAILED: i64 = 190;

/// The WhatsApp Business Account id used by the body builders.
pub const DEMO_WABA_ID: &str = "100000000000001";

/// The display phone number used by the body builders.
pub const DEMO_DISPLAY_PHONE_NUMBER: &str = "15551230000";

/// Longest provider identifier accepted (message ids, `wa_id`s, phone number ids). Real
/// ones are under 100 bytes; an item with a longer one can never be valid and is rejected.
pub const MAX_ID_BYTES: usize = 256;
/// Longest free-text label kept (a profile name, a campaign): longer ones are cut.
pub const MAX_LABEL_CHARS: usize = 200;

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    #[error("malformed X-Hub-Signature-256 header")]
    MalformedSignature,
    #[error("signature does not match the body")]
    BadSignature,
    #[error("no app secret configured for this channel")]
    NoSecret,
    #[error("not a WhatsApp webhook: {0}")]
    NotAWebhook(String),
}

/// Checks the `X-Hub-Signature-256` header, `sha256=<hex HMAC-SHA256(app secret, raw body)>`,
/// in constant time. Upper-case hex is accepted. Fails closed: without a secret nothing
/// verifies.
pub fn verify_signature(
    app_secret: &str,
    raw_body: &[u8],
    header: Option<&str>,
) -> Result<(), WireError> {
    if app_secret.is_empty() {
        return Err(WireError::NoSecret);
    }
    let header = header.ok_or(WireError::MissingSignature)?.trim();
    let digest = header
        .get(..SIGNATURE_PREFIX.len())
        .filter(|prefix| prefix.eq_ignore_ascii_case(SIGNATURE_PREFIX))
        .and_then(|_| header.get(SIGNATURE_PREFIX.len()..))
        .ok_or(WireError::MalformedSignature)?;
    let claimed = hex::decode(digest).map_err(|_| WireError::MalformedSignature)?;
    if claimed.len() != 32 {
        return Err(WireError::MalformedSignature);
    }
    let mut mac = hmac(app_secret);
    mac.update(raw_body);
    mac.verify_slice(&claimed)
        .map_err(|_| WireError::BadSignature)
}

/// The `X-Hub-Signature-256` header value Meta would send for `raw_body`: `sha256=<hex>`.
pub fn sign(app_secret: &str, raw_body: &[u8]) -> String {
    let mut mac = hmac(app_secret);
    mac.update(raw_body);
    format!(
        "{SIGNATURE_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

fn hmac(app_secret: &str) -> HmacSha256 {
    match HmacSha256::new_from_slice(app_secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// The verification handshake (`GET ?hub.mode&hub.verify_token&hub.challenge`): the challenge
/// to echo back iff the mode is `subscribe` and the token equals the channel's verify token
/// (compared in constant time). An empty expected token matches nothing, and a request
/// without a challenge cannot be answered.
pub fn verify_handshake(
    mode: Option<&str>,
    token: Option<&str>,
    challenge: Option<&str>,
    expected_token: &str,
) -> Option<String> {
    if expected_token.is_empty() || mode != Some("subscribe") {
        return None;
    }
    let token_matches: bool = token?.as_bytes().ct_eq(expected_token.as_bytes()).into();
    if !token_matches {
        return None;
    }
    challenge.map(str::to_owned)
}

/// The click-to-WhatsApp ad a lead came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Referral {
    pub source_id: Option<String>,
    pub source_type: Option<String>,
    pub source_url: Option<String>,
    pub headline: Option<String>,
}

impl Referral {
    /// A short campaign label: the ad's headline, else its source id, else its URL.
    pub fn campaign(&self) -> Option<String> {
        self.headline
            .clone()
            .or_else(|| self.source_id.clone())
            .or_else(|| self.source_url.clone())
    }
}

/// A message a lead sent to one of our numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundMessage {
    /// The number it was sent to: the change's `metadata.phone_number_id`.
    pub phone_number_id: String,
    /// The provider's message id, `wamid.…`.
    pub wamid: String,
    /// The lead's `wa_id`.
    pub from: String,
    /// The lead's profile name, from the change's `contacts`.
    pub profile_name: Option<String>,
    /// When the lead sent it; `0` when the provider's timestamp is unusable, for the caller
    /// to substitute the time of receipt.
    pub timestamp: UnixMillis,
    /// The provider's message type: `text`, `image`, … or any type we do not know yet.
    pub kind: String,
    /// The text, or a readable placeholder such as `[image] caption` for other kinds.
    pub text: String,
    /// The whole message object, for every kind but `text`.
    pub raw: Option<Value>,
    /// The id of the message this one replies to (`context.id`).
    pub reply_to: Option<String>,
    pub referral: Option<Referral>,
    /// The file of an image, video, audio, sticker or document message, fetched later
    /// by its media id.
    pub media: Option<MessageAttachment>,
}

/// A delivery report on a message we sent.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub phone_number_id: String,
    /// Our outbound message's provider id.
    pub wamid: String,
    pub status: Delivery,
    /// When the status was reached; `0` when the provider's timestamp is unusable.
    pub timestamp: UnixMillis,
    pub recipient_id: Option<String>,
    /// For failures, a condensed human description: `code title: message (details)`.
    pub error: Option<String>,
    pub error_code: Option<i64>,
}

/// Everything one webhook POST carried, in the order it carried it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebhookBatch {
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<StatusUpdate>,
    /// Items that can never be stored: messages without a usable id or sender, statuses
    /// without a usable id (missing, or longer than [`MAX_ID_BYTES`]).
    pub rejected: usize,
}

/// Parses a webhook POST body (verify its signature first). Only a body that is not a
/// WhatsApp Business Account webhook at all is an error. Changes other than `messages`,
/// changes without a usable phone number id and statuses of kinds we do not know are
/// skipped; messages and statuses that can never be stored are counted in
/// [`WebhookBatch::rejected`]. Labels (profile names, campaigns) are cut to
/// [`MAX_LABEL_CHARS`].
pub fn parse_webhook(raw_body: &[u8]) -> Result<WebhookBatch, WireError> {
    match parse_webhook_typed(raw_body) {
        Some(batch) => Ok(batch),
        None => parse_webhook_general(raw_body),
    }
}

/// The general reading of a webhook body (a `serde_json::Value`): every message type, and
/// the authority on anything unusual. [`parse_webhook`] uses it when the typed reading
/// ([`parse_webhook_typed`]) does not apply.
pub fn parse_webhook_general(raw_body: &[u8]) -> Result<WebhookBatch, WireError> {
    let root: Value = serde_json::from_slice(raw_body)
        .map_err(|e| WireError::NotAWebhook(format!("invalid JSON: {e}")))?;
    match root.get("object").and_then(Value::as_str) {
        Some("whatsapp_business_account") => {}
        Some(other) => {
            return Err(WireError::NotAWebhook(format!("object is {other:?}")));
        }
        None => return Err(WireError::NotAWebhook("no \"object\" field".into())),
    }
    let entries = root
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| WireError::NotAWebhook("\"entry\" is not an array".into()))?;

    let mut batch = WebhookBatch::default();
    for change in entries.iter().flat_map(|entry| items(entry, "changes")) {
        if change.get("field").and_then(Value::as_str) != Some("messages") {
            continue;
        }
        let Some(value) = change.get("value") else {
            continue;
        };
        let Some(phone_number_id) = id_at(value, &["metadata", "phone_number_id"]) else {
            batch.rejected += items(value, "messages").count() + items(value, "statuses").count();
            continue;
        };
        let contacts = value
            .get("contacts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for message in items(value, "messages") {
            match parse_message(phone_number_id, contacts, message) {
                Some(message) => batch.messages.push(message),
                None => batch.rejected += 1,
            }
        }
        for status in items(value, "statuses") {
            match parse_status(phone_number_id, status) {
                Ok(Some(status)) => batch.statuses.push(status),
                Ok(None) => {}
                Err(Unusable) => batch.rejected += 1,
            }
        }
    }
    Ok(batch)
}

/// The typed reading of a webhook body, for the shape nearly every webhook has: text
/// messages and statuses without errors. Strings are borrowed from the body unless they
/// hold escapes. `None` for anything else (another message type, an error on a status, a
/// field of an unexpected type, invalid JSON): [`parse_webhook`] then reads the body as a
/// general JSON value. Public so the fuzz target can check that both readings agree. One
/// difference, by design: the parts it skips (fields we do not use) are checked for their
/// syntax only, so a body whose unused fields hold invalid UTF-8, a lone surrogate escape,
/// a number out of range or nesting deeper than 128 levels is read rather than refused.
pub fn parse_webhook_typed(raw_body: &[u8]) -> Option<WebhookBatch> {
    let typed::Obj(root): typed::Obj<typed::Root> = serde_json::from_slice(raw_body).ok()?;
    if root.object.0 != "whatsapp_business_account" {
        return None;
    }
    let mut batch = WebhookBatch::default();
    let changes = root.entry.iter().flat_map(|entry| &entry.0.changes);
    for typed::Obj(change) in changes {
        if typed::raw(&change.field) != Some("messages") {
            continue;
        }
        let Some(typed::Obj(value)) = &change.value else {
            continue;
        };
        let phone_number_id = value
            .metadata
            .as_ref()
            .and_then(|m| typed::id(&m.0.phone_number_id));
        let Some(phone_number_id) = phone_number_id else {
            batch.rejected += value.messages.len() + value.statuses.len();
            continue;
        };
        for typed::Obj(message) in &value.messages {
            if typed::text(&message.kind) != Some("text") {
                return None;
            }
            let (Some(wamid), Some(from)) = (typed::id(&message.id), typed::id(&message.from))
            else {
                batch.rejected += 1;
                continue;
            };
            let profile_name = value
                .contacts
                .iter()
                .find(|c| typed::text(&c.0.wa_id) == Some(from))
                .or(value.contacts.first())
                .and_then(|c| c.0.profile.as_ref())
                .and_then(|p| typed::label(&p.0.name));
            let referral = message.referral.as_ref().map(|typed::Obj(r)| Referral {
                source_id: typed::label(&r.source_id),
                source_type: typed::label(&r.source_type),
                source_url: typed::label(&r.source_url),
                headline: typed::label(&r.headline),
            });
            batch.messages.push(InboundMessage {
                phone_number_id: phone_number_id.to_owned(),
                wamid: wamid.to_owned(),
                from: from.to_owned(),
                profile_name,
                timestamp: message.timestamp.as_ref().map_or(0, typed::Seconds::millis),
                kind: "text".to_owned(),
                text: message
                    .text
                    .as_ref()
                    .and_then(|t| typed::text(&t.0.body))
                    .unwrap_or("")
                    .to_owned(),
                raw: None,
                reply_to: message
                    .context
                    .as_ref()
                    .and_then(|c| typed::id(&c.0.id))
                    .map(str::to_owned),
                referral,
                media: None,
            });
        }
        for typed::Obj(status) in &value.statuses {
            if status.errors.is_some() {
                return None;
            }
            let Some(wamid) = typed::id(&status.id) else {
                batch.rejected += 1;
                continue;
            };
            let delivery = match typed::text(&status.status) {
                Some("sent") => Delivery::Sent,
                Some("delivered") => Delivery::Delivered,
                Some("read") => Delivery::Read,
                Some("failed") => Delivery::Failed,
                _ => continue,
            };
            batch.statuses.push(StatusUpdate {
                phone_number_id: phone_number_id.to_owned(),
                wamid: wamid.to_owned(),
                status: delivery,
                timestamp: status.timestamp.as_ref().map_or(0, typed::Seconds::millis),
                recipient_id: typed::id(&status.recipient_id).map(str::to_owned),
                error: None,
                error_code: None,
            });
        }
    }
    Some(batch)
}

/// The webhook's shape as typed structures (see [`parse_webhook_typed`]). Every field is
/// optional where the general reading tolerates its absence; a field of another type fails
/// the typed reading (and the general one decides).
mod typed {
    use std::borrow::Cow;
    use std::marker::PhantomData;

    use serde::de::value::MapAccessDeserializer;
    use serde::de::{self, IgnoredAny, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer};

    use super::{MAX_ID_BYTES, MAX_LABEL_CHARS};

    /// A string, borrowed from the body unless it holds escapes.
    #[derive(Deserialize)]
    pub struct Str<'a>(#[serde(borrow)] pub Cow<'a, str>);

    type Text<'a> = Option<Str<'a>>;

    /// A JSON object read as `T`. Only an object: serde reads a struct from an array too
    /// (its fields by position), which the general reading never does.
    pub struct Obj<T>(pub T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ObjVisitor<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
                type Value = Obj<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                    T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
                }
            }
            deserializer.deserialize_map(ObjVisitor(PhantomData))
        }
    }

    #[derive(Deserialize)]
    pub struct Root<'a> {
        #[serde(borrow)]
        pub object: Str<'a>,
        #[serde(borrow)]
        pub entry: Vec<Obj<Entry<'a>>>,
    }

    #[derive(Deserialize)]
    pub struct Entry<'a> {
        #[serde(borrow, default)]
        pub changes: Vec<Obj<Change<'a>>>,
    }

    #[derive(Deserialize)]
    pub struct Change<'a> {
        #[serde(borrow, default)]
        pub field: Text<'a>,
        #[serde(borrow, default)]
        pub value: Option<Obj<ChangeValue<'a>>>,
    }

    #[derive(Deserialize)]
    pub struct ChangeValue<'a> {
        #[serde(borrow, default)]
        pub metadata: Option<Obj<Metadata<'a>>>,
        #[serde(borrow, default)]
        pub contacts: Vec<Obj<Contact<'a>>>,
        #[serde(borrow, default)]
        pub messages: Vec<Obj<Message<'a>>>,
        #[serde(borrow, default)]
        pub statuses: Vec<Obj<Status<'a>>>,
    }

    #[derive(Deserialize)]
    pub struct Metadata<'a> {
        #[serde(borrow, default)]
        pub phone_number_id: Text<'a>,
    }

    #[derive(Deserialize)]
    pub struct Contact<'a> {
        #[serde(borrow, default)]
        pub wa_id: Text<'a>,
        #[serde(borrow, default)]
        pub profile: Option<Obj<Profile<'a>>>,
    }

    #[derive(Deserialize)]
    pub struct Profile<'a> {
        #[serde(borrow, default)]
        pub name: Text<'a>,
    }

    #[derive(Deserialize)]
    pub struct Message<'a> {
        #[serde(borrow, default)]
        pub id: Text<'a>,
        #[serde(borrow, default)]
        pub from: Text<'a>,
        #[serde(borrow, default, rename = "type")]
        pub kind: Text<'a>,
        #[serde(default)]
        pub timestamp: Option<Seconds>,
        #[serde(borrow, default)]
        pub text: Option<Obj<Body<'a>>>,
        #[serde(borrow, default)]
        pub context: Option<Obj<Context<'a>>>,
        #[serde(borrow, default)]
        pub referral: Option<Obj<Referral<'a>>>,
    }

    #[derive(Deserialize)]
    pub struct Body<'a> {
        #[serde(borrow, default)]
        pub body: Text<'a>,
    }

    #[derive(Deserialize)]
    pub struct Context<'a> {
        #[serde(borrow, default)]
        pub id: Text<'a>,
    }

    #[derive(Deserialize)]
    pub struct Referral<'a> {
        #[serde(borrow, default)]
        pub source_id: Text<'a>,
        #[serde(borrow, default)]
        pub source_type: Text<'a>,
        #[serde(borrow, default)]
        pub source_url: Text<'a>,
        #[serde(borrow, default)]
        pub headline: Text<'a>,
    }

    #[derive(Deserialize)]
    pub struct Status<'a> {
        #[serde(borrow, default)]
        pub id: Text<'a>,
        #[serde(borrow, default)]
        pub status: Text<'a>,
        #[serde(default)]
        pub timestamp: Option<Seconds>,
        #[serde(borrow, default)]
        pub recipient_id: Text<'a>,
        #[serde(default)]
        pub errors: Option<IgnoredAny>,
    }

    /// A Unix time in seconds, given as a JSON number or a string of digits; `None` for
    /// anything else that is a number or a string (as the general reading takes it).
    pub struct Seconds(Option<i64>);

    impl Seconds {
        pub fn millis(&self) -> i64 {
            self.0
                .filter(|s| *s >= 0)
                .and_then(|s| s.checked_mul(1000))
                .unwrap_or(0)
        }
    }

    impl<'de> Deserialize<'de> for Seconds {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct SecondsVisitor;
            impl Visitor<'_> for SecondsVisitor {
                type Value = Seconds;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("seconds as a number or a string")
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                    Ok(Seconds(Some(v)))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                    Ok(Seconds(i64::try_from(v).ok()))
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<Seconds, E> {
                    Ok(Seconds(None))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                    Ok(Seconds(v.trim().parse().ok()))
                }
            }
            deserializer.deserialize_any(SecondsVisitor)
        }
    }

    /// The string, whatever it holds.
    pub fn raw<'s>(value: &'s Text<'_>) -> Option<&'s str> {
        value.as_ref().map(|s| &*s.0)
    }

    /// A non-empty string, as the general reading's `str_at`.
    pub fn text<'s>(value: &'s Text<'_>) -> Option<&'s str> {
        raw(value).filter(|s| !s.is_empty())
    }

    /// A provider identifier: non-empty and at most [`MAX_ID_BYTES`].
    pub fn id<'s>(value: &'s Text<'_>) -> Option<&'s str> {
        text(value).filter(|id| id.len() <= MAX_ID_BYTES)
    }

    /// A free-text label cut to [`MAX_LABEL_CHARS`].
    pub fn label(value: &Text<'_>) -> Option<String> {
        text(value).map(|text| match text.char_indices().nth(MAX_LABEL_CHARS) {
            Some((cut, _)) => text[..cut].to_owned(),
            None => text.to_owned(),
        })
    }
}

/// A webhook body as the channel port's [`InboundBatch`], for the channel of `channel_id`
/// serving the number `phone_number_id`: items for other numbers are skipped.
pub fn inbound_batch(
    raw_body: &[u8],
    channel_id: ChannelId,
    phone_number_id: &str,
) -> Result<InboundBatch, WireError> {
    let batch = parse_webhook(raw_body)?;
    let mut out = InboundBatch {
        rejected: batch.rejected,
        ..InboundBatch::default()
    };
    for message in batch.messages {
        if message.phone_number_id == phone_number_id {
            out.messages.push(inbound_event(channel_id, message));
        } else {
            out.skipped += 1;
        }
    }
    for status in batch.statuses {
        if status.phone_number_id == phone_number_id {
            out.statuses.push(StatusReport {
                provider_message_id: status.wamid,
                status: status.status,
                error: status.error,
                at: status.timestamp,
            });
        } else {
            out.skipped += 1;
        }
    }
    Ok(out)
}

/// A lead's message as the port's [`InboundEvent`]: the thread is the lead's `wa_id`.
pub fn inbound_event(channel_id: ChannelId, m: InboundMessage) -> InboundEvent {
    let content_type = (m.kind != "text").then(|| m.kind.clone());
    InboundEvent {
        channel_id,
        contact_phone: Some(normalize_phone(&m.from)),
        thread: m.from,
        provider_message_id: m.wamid,
        contact_name: m.profile_name,
        contact_email: None,
        contact_profile: None,
        sent_at: m.timestamp,
        text: m.text,
        content_type,
        raw: m.raw,
        reply_to: m.reply_to,
        campaign: m.referral.and_then(|r| r.campaign()),
        received: None,
        details: Default::default(),
        attachments: m.media.into_iter().collect(),
    }
}

/// The Graph API's answer to a send, classified for the connector: an invalid or expired
/// access token (HTTP 401, or error code 190) is an authentication failure; 429 and the
/// throughput codes are rate limits; other retryable answers are [`SendOutcome::Retryable`];
/// the rest (a closed window, a bad recipient) are permanent.
pub fn classify_send(http_status: u16, body: &[u8]) -> SendOutcome {
    match parse_send_response(http_status, body) {
        Ok(wamid) => SendOutcome::Accepted {
            provider_id: wamid,
            thread: None,
        },
        Err(e) if http_status == 401 || e.code == Some(AUTH_FAILED) => {
            SendOutcome::AuthFailed { reason: e.message }
        }
        Err(e)
            if e.retryable
                && (http_status == 429 || e.code.is_some_and(|c| RATE_CODES.contains(&c))) =>
        {
            SendOutcome::RateLimited {
                reason: e.message,
                retry_after: None,
            }
        }
        Err(e) if e.retryable => SendOutcome::Retryable {
            reason: e.message,
            retry_after: None,
        },
        Err(e) => SendOutcome::Permanent {
            code: match e.code {
                Some(WINDOW_CLOSED) => "whatsapp_window_closed".to_owned(),
                Some(code) => format!("provider_error_{code}"),
                None => format!("http_{http_status}"),
            },
            reason: e.message,
        },
    }
}

/// An item that can never be stored.
struct Unusable;

/// A provider identifier at `path`: present, non-empty and at most [`MAX_ID_BYTES`].
fn id_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    str_at(value, path).filter(|id| id.len() <= MAX_ID_BYTES)
}

/// A free-text label at `path`, cut to [`MAX_LABEL_CHARS`].
fn label_at(value: &Value, path: &[&str]) -> Option<String> {
    str_at(value, path).map(|text| match text.char_indices().nth(MAX_LABEL_CHARS) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    })
}

fn parse_message(phone_number_id: &str, contacts: &[Value], msg: &Value) -> Option<InboundMessage> {
    let wamid = id_at(msg, &["id"])?;
    let from = id_at(msg, &["from"])?;
    let kind = str_at(msg, &["type"]).unwrap_or("unknown");
    let (text, raw) = match kind {
        "text" => (
            str_at(msg, &["text", "body"]).unwrap_or("").to_owned(),
            None,
        ),
        _ => (placeholder(kind, msg), Some(msg.clone())),
    };
    let profile_name = contacts
        .iter()
        .find(|c| str_at(c, &["wa_id"]) == Some(from))
        .or(contacts.first())
        .and_then(|c| label_at(c, &["profile", "name"]));
    Some(InboundMessage {
        phone_number_id: phone_number_id.to_owned(),
        wamid: wamid.to_owned(),
        from: from.to_owned(),
        profile_name,
        timestamp: seconds_to_millis(msg.get("timestamp")),
        kind: kind.to_owned(),
        text,
        raw,
        reply_to: id_at(msg, &["context", "id"]).map(str::to_owned),
        referral: parse_referral(msg),
        media: media(kind, msg),
    })
}

/// The file of a media message: its media id (fetched with the access token), type and
/// name. `None` for other kinds and for media without a usable id.
fn media(kind: &str, msg: &Value) -> Option<MessageAttachment> {
    if !matches!(kind, "image" | "video" | "audio" | "sticker" | "document") {
        return None;
    }
    let content = msg.get(kind)?;
    let media_id = id_at(content, &["id"])?;
    Some(MessageAttachment {
        name: label_at(content, &["filename"]),
        content_type: str_at(content, &["mime_type"])
            .filter(|t| t.len() <= MAX_LABEL_CHARS)
            .unwrap_or("application/octet-stream")
            .to_owned(),
        size: None,
        media_id: Some(media_id.to_owned()),
    })
}

/// A readable stand-in for a message that is not plain text.
fn placeholder(kind: &str, msg: &Value) -> String {
    let content = msg.get(kind).unwrap_or(&Value::Null);
    let field = |key: &str| str_at(content, &[key]);
    match kind {
        "image" | "video" | "audio" | "sticker" => tagged(kind, &[field("caption")]),
        "document" => tagged(kind, &[field("filename"), field("caption")]),
        "location" => {
            let place = [field("name"), field("address")];
            if place.iter().any(Option::is_some) {
                tagged(kind, &place)
            } else {
                match (
                    number_text(content.get("latitude")),
                    number_text(content.get("longitude")),
                ) {
                    (Some(lat), Some(long)) => format!("[location] {lat},{long}"),
                    _ => "[location]".to_owned(),
                }
            }
        }
        "contacts" => {
            let names: Vec<&str> = items(msg, "contacts")
                .filter_map(|c| {
                    str_at(c, &["name", "formatted_name"])
                        .or_else(|| str_at(c, &["name", "first_name"]))
                })
                .collect();
            let names = names.join(", ");
            tagged(kind, &[Some(names.as_str()).filter(|n| !n.is_empty())])
        }
        "interactive" => {
            // `button_reply` and `list_reply` carry a title; a flow's `nfm_reply` a body.
            let reply = field("type")
                .and_then(|t| content.get(t))
                .unwrap_or(&Value::Null);
            let title = str_at(reply, &["title"]).or_else(|| str_at(reply, &["body"]));
            tagged(kind, &[title])
        }
        "button" => tagged(kind, &[field("text")]),
        "reaction" => match field("emoji") {
            Some(emoji) => format!("[reaction] {emoji}"),
            None => "[reaction removed]".to_owned(),
        },
        other => format!("[{other} message]"),
    }
}

/// `[tag] a — b` with the parts present, or `[tag]` alone.
fn tagged(tag: &str, parts: &[Option<&str>]) -> String {
    let present: Vec<&str> = parts.iter().flatten().copied().collect();
    if present.is_empty() {
        format!("[{tag}]")
    } else {
        format!("[{tag}] {}", present.join(" — "))
    }
}

fn parse_referral(msg: &Value) -> Option<Referral> {
    let referral = msg.get("referral").filter(|r| r.is_object())?;
    let field = |key: &str| label_at(referral, &[key]);
    Some(Referral {
        source_id: field("source_id"),
        source_type: field("source_type"),
        source_url: field("source_url"),
        headline: field("headline"),
    })
}

/// A status we apply, `None` for a kind we do not know (skipped), or an unusable item.
fn parse_status(phone_number_id: &str, status: &Value) -> Result<Option<StatusUpdate>, Unusable> {
    let wamid = id_at(status, &["id"]).ok_or(Unusable)?;
    let delivery = match str_at(status, &["status"]) {
        Some("sent") => Delivery::Sent,
        Some("delivered") => Delivery::Delivered,
        Some("read") => Delivery::Read,
        Some("failed") => Delivery::Failed,
        _ => return Ok(None),
    };
    let first_error = status.get("errors").and_then(|e| e.get(0));
    let error_code = first_error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64);
    Ok(Some(StatusUpdate {
        phone_number_id: phone_number_id.to_owned(),
        wamid: wamid.to_owned(),
        status: delivery,
        timestamp: seconds_to_millis(status.get("timestamp")),
        recipient_id: id_at(status, &["recipient_id"]).map(str::to_owned),
        error: first_error.and_then(|e| describe_error(error_code, e)),
        error_code,
    }))
}

/// `code title: message (details)`, leaving out what is missing or repeated.
fn describe_error(code: Option<i64>, error: &Value) -> Option<String> {
    let code = code.map(|c| c.to_string());
    let title = str_at(error, &["title"]);
    let message = str_at(error, &["message"]).filter(|m| Some(*m) != title);
    let details = str_at(error, &["error_data", "details"])
        .filter(|d| Some(*d) != title && Some(*d) != message);
    let mut text = String::new();
    for (separator, part) in [("", code.as_deref()), (" ", title), (": ", message)] {
        if let Some(part) = part {
            if !text.is_empty() {
                text.push_str(separator);
            }
            text.push_str(part);
        }
    }
    match details {
        Some(details) if text.is_empty() => Some(details.to_owned()),
        Some(details) => Some(format!("{text} ({details})")),
        None => Some(text).filter(|t| !t.is_empty()),
    }
}

/// The body of a free-text send.
pub fn text_message_body(to: &str, body: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": false, "body": body},
    })
}

/// The body of a template send; `components` is passed through as given.
pub fn template_message_body(to: &str, name: &str, language: &str, components: Value) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {"name": name, "language": {"code": language}, "components": components},
    })
}

/// Why a send failed, and whether trying again later may succeed.
#[derive(Clone, Debug, PartialEq)]
pub struct SendError {
    pub http_status: u16,
    /// The Graph API's `error.code`, when it sent one.
    pub code: Option<i64>,
    pub message: String,
    pub retryable: bool,
}

/// Interprets the Graph API's answer to a send: the new message's `wamid`, or why it failed.
/// HTTP 5xx and 429 and the throughput, pair-rate, temporary and rate-limit codes are
/// retryable; a closed window (131047) and other 4xx are not, and neither is a 2xx without a
/// message id.
pub fn parse_send_response(http_status: u16, body: &[u8]) -> Result<String, SendError> {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let success = (200..300).contains(&http_status);
    if success {
        if let Some(wamid) = json
            .get("messages")
            .and_then(|m| m.get(0))
            .and_then(|m| id_at(m, &["id"]))
        {
            return Ok(wamid.to_owned());
        }
    }
    let error = json.get("error").filter(|e| e.is_object());
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_i64);
    // Graph API messages already start with the code, as in `(#131047) Re-engagement message`.
    let message = error
        .and_then(|e| describe_error(None, e))
        .unwrap_or_else(|| {
            let snippet: String = String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect();
            match (success, snippet.is_empty()) {
                (true, _) => "the response carries no usable message id".to_owned(),
                (false, true) => format!("HTTP {http_status}"),
                (false, false) => format!("HTTP {http_status}: {snippet}"),
            }
        });
    Err(SendError {
        http_status,
        code,
        message,
        retryable: !success && is_retryable(http_status, code),
    })
}

/// Where a media file can be downloaded, from the Graph API's answer to
/// `GET /{media-id}`: `{"url", "mime_type", "sha256", "file_size", "id"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaLocation {
    /// Fetched with the same bearer token; valid for a few minutes.
    pub url: String,
    pub mime_type: Option<String>,
    /// Bytes; a number or a numeric string (both are seen).
    pub file_size: Option<u64>,
}

/// Reads the answer to `GET {api_base_url}/{media-id}`; `None` when it carries no URL.
pub fn parse_media_location(body: &[u8]) -> Option<MediaLocation> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let url = str_at(&json, &["url"])?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return None;
    }
    let file_size = match json.get("file_size") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Some(MediaLocation {
        url: url.to_owned(),
        mime_type: str_at(&json, &["mime_type"])
            .filter(|t| t.len() <= MAX_LABEL_CHARS)
            .map(str::to_owned),
        file_size,
    })
}

fn is_retryable(http_status: u16, code: Option<i64>) -> bool {
    if is_window_closed(code) {
        return false;
    }
    http_status >= 500 || http_status == 429 || code.is_some_and(|c| RETRYABLE_CODES.contains(&c))
}

/// Whether a provider error code means the 24-hour customer-service window is closed.
pub fn is_window_closed(code: Option<i64>) -> bool {
    code == Some(WINDOW_CLOSED)
}

/// A webhook body carrying one inbound text message, in Meta's exact shape.
pub fn inbound_text_webhook(
    phone_number_id: &str,
    from: &str,
    profile_name: &str,
    wamid: &str,
    timestamp_secs: i64,
    text: &str,
) -> Value {
    envelope(
        phone_number_id,
        json!({
            "contacts": [{"profile": {"name": profile_name}, "wa_id": from}],
            "messages": [{
                "from": from,
                "id": wamid,
                "timestamp": timestamp_secs.to_string(),
                "type": "text",
                "text": {"body": text},
            }],
        }),
    )
}

/// A webhook body carrying one status update on a message we sent.
pub fn status_webhook(
    phone_number_id: &str,
    wamid: &str,
    status: &str,
    timestamp_secs: i64,
    recipient: &str,
) -> Value {
    envelope(
        phone_number_id,
        json!({
            "statuses": [{
                "id": wamid,
                "status": status,
                "timestamp": timestamp_secs.to_string(),
                "recipient_id": recipient,
            }],
        }),
    )
}

/// One entry with one `messages` change whose value holds `content` besides the metadata.
fn envelope(phone_number_id: &str, content: Value) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": DEMO_DISPLAY_PHONE_NUMBER,
            "phone_number_id": phone_number_id,
        },
    });
    if let (Some(value), Value::Object(content)) = (value.as_object_mut(), content) {
        value.extend(content);
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": DEMO_WABA_ID, "changes": [{"field": "messages", "value": value}]}],
    })
}

/// The non-empty string at `path`, if there is one.
fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// The elements of the array at `key`; nothing when it is missing or not an array.
fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A number given as a JSON number or a string.
fn number_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Unix seconds (a string, as Meta sends them, or a number) as milliseconds; `0` when absent,
/// negative, out of range or not a whole number.
fn seconds_to_millis(value: Option<&Value>) -> UnixMillis {
    let seconds = match value {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    seconds
        .filter(|s| *s >= 0)
        .and_then(|s| s.checked_mul(1000))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "app-secret";
    const NUMBER: &str = "106540352242922";
    const LEAD: &str = "5511987654321";

    fn body(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).expect("serializable")
    }

    #[test]
    fn the_typed_reading_takes_common_webhooks_and_agrees_with_the_general_one() {
        let common = [
            inbound_text_webhook(NUMBER, LEAD, "Maria", "wamid.1", 1_767_000_000, "Hi"),
            // Escapes (a copy, not a borrow), a number timestamp, a reply and an ad.
            json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
                "field": "messages", "value": {
                    "metadata": {"phone_number_id": NUMBER},
                    "contacts": [{"wa_id": "other", "profile": {"name": "First"}},
                                 {"wa_id": LEAD, "profile": {"name": "João \"JP\""}}],
                    "messages": [{"from": LEAD, "id": "wamid.2", "timestamp": 1767000000,
                                  "type": "text", "text": {"body": "line\nbreak"},
                                  "context": {"id": "wamid.1"},
                                  "referral": {"headline": "Lofts", "source_id": "ad-1"}}],
                    "statuses": [{"id": "wamid.OUT", "status": "read", "timestamp": "1767000001",
                                  "recipient_id": LEAD}]}}]}]}),
            status_webhook(NUMBER, "wamid.OUT", "delivered", 1_767_000_000, LEAD),
        ];
        for webhook in &common {
            let raw = body(webhook);
            let typed = parse_webhook_typed(&raw).expect("the typed reading applies");
            assert_eq!(Ok(typed), parse_webhook_general(&raw), "{webhook}");
        }
        // Objects only: serde would read a struct from an array, the general reading never.
        let mut context_array = inbound_text_webhook(NUMBER, LEAD, "Maria", "wamid.3", 1, "Hi");
        context_array["entry"][0]["changes"][0]["value"]["messages"][0]["context"] =
            json!(["wamid.1"]);
        for odd in [json!(["whatsapp_business_account", []]), context_array] {
            let raw = body(&odd);
            assert_eq!(parse_webhook_typed(&raw), None, "{odd}");
        }
        // Every seed of the fuzz corpus (media, reactions, errors, odd shapes): where the
        // typed reading applies, it reads what the general one does.
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/whatsapp_webhook");
        let (mut typed_read, mut seeds) = (0, 0);
        for file in std::fs::read_dir(corpus).expect("corpus") {
            let raw = std::fs::read(file.expect("entry").path()).expect("read");
            seeds += 1;
            if let Some(typed) = parse_webhook_typed(&raw) {
                typed_read += 1;
                assert_eq!(Ok(typed), parse_webhook_general(&raw));
            }
        }
        assert!(
            typed_read > 0 && typed_read < seeds,
            "{typed_read} of {seeds}"
        );
    }

    fn parse(value: &Value) -> WebhookBatch {
        parse_webhook(&body(value)).expect("a webhook")
    }

    /// A webhook with one change whose value holds the given messages.
    fn with_messages(messages: Value) -> Value {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
            {"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15551230000", "phone_number_id": NUMBER},
                "contacts": [{"profile": {"name": "Ana Lima"}, "wa_id": LEAD}],
                "messages": messages}}]}]})
    }

    /// A webhook with one change whose value holds the given statuses.
    fn with_statuses(statuses: Value) -> Value {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
            {"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15551230000", "phone_number_id": NUMBER},
                "statuses": statuses}}]}]})
    }

    fn one_message(message: Value) -> InboundMessage {
        let mut batch = parse(&with_messages(json!([message])));
        assert_eq!(batch.messages.len(), 1, "{batch:?}");
        batch.messages.remove(0)
    }

    // --- signature ---

    #[test]
    fn send_answers_are_classified_for_the_port() {
        let ok = br#"{"messaging_product":"whatsapp","messages":[{"id":"wamid.X"}]}"#;
        assert_eq!(
            classify_send(200, ok),
            SendOutcome::Accepted {
                provider_id: "wamid.X".into(),
                thread: None,
            }
        );
        let expired = br#"{"error":{"message":"Error validating access token","type":"OAuthException","code":190}}"#;
        assert!(matches!(
            classify_send(401, expired),
            SendOutcome::AuthFailed { .. }
        ));
        assert!(matches!(
            classify_send(400, expired),
            SendOutcome::AuthFailed { .. }
        ));
        assert!(matches!(
            classify_send(429, b"{}"),
            SendOutcome::RateLimited { .. }
        ));
        let throughput = br#"{"error":{"message":"(#130429) Rate limit hit","code":130429}}"#;
        assert!(matches!(
            classify_send(400, throughput),
            SendOutcome::RateLimited { .. }
        ));
        assert!(matches!(
            classify_send(503, b"down"),
            SendOutcome::Retryable { .. }
        ));
        let window = br#"{"error":{"message":"(#131047) Re-engagement message","code":131047}}"#;
        match classify_send(400, window) {
            SendOutcome::Permanent { code, reason } => {
                assert_eq!(code, "whatsapp_window_closed");
                assert!(reason.contains("131047"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_send(400, br#"{"error":{"message":"bad number","code":100}}"#),
            SendOutcome::Permanent { .. }
        ));
    }

    #[test]
    fn the_port_batch_keeps_this_numbers_items_and_skips_the_others() {
        let ours = inbound_text_webhook(
            "111",
            "5511987654321",
            "Lia",
            "wamid.A",
            1_700_000_000,
            "hi",
        );
        let channel = ChannelId::new();
        let batch = inbound_batch(ours.to_string().as_bytes(), channel, "111").expect("parses");
        assert_eq!(batch.messages.len(), 1);
        let event = &batch.messages[0];
        assert_eq!(event.channel_id, channel);
        assert_eq!(event.thread, "5511987654321");
        assert_eq!(event.contact_phone.as_deref(), Some("+5511987654321"));
        assert_eq!(event.provider_message_id, "wamid.A");
        let other = inbound_batch(ours.to_string().as_bytes(), channel, "222").expect("parses");
        assert_eq!((other.messages.len(), other.skipped), (0, 1));
    }

    #[test]
    fn sign_matches_a_known_hmac_sha256_vector() {
        assert_eq!(
            sign("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn a_signature_from_sign_verifies() {
        let raw = b"{\"object\":\"whatsapp_business_account\"}";
        let header = sign(SECRET, raw);
        assert_eq!(verify_signature(SECRET, raw, Some(&header)), Ok(()));
        assert_eq!(
            verify_signature(SECRET, b"", Some(&sign(SECRET, b""))),
            Ok(())
        );
    }

    #[test]
    fn upper_case_hex_prefix_and_surrounding_space_are_accepted() {
        let raw = b"payload";
        let hex = sign(SECRET, raw)["sha256=".len()..].to_owned();
        for header in [
            format!("sha256={}", hex.to_uppercase()),
            format!("SHA256={hex}"),
            format!("  sha256={hex} "),
        ] {
            assert_eq!(
                verify_signature(SECRET, raw, Some(&header)),
                Ok(()),
                "{header}"
            );
        }
    }

    #[test]
    fn a_changed_body_or_another_secret_does_not_verify() {
        let header = sign(SECRET, b"original");
        assert_eq!(
            verify_signature(SECRET, b"originaL", Some(&header)),
            Err(WireError::BadSignature)
        );
        assert_eq!(
            verify_signature("other-secret", b"original", Some(&header)),
            Err(WireError::BadSignature)
        );
    }

    #[test]
    fn a_missing_header_is_refused() {
        assert_eq!(
            verify_signature(SECRET, b"x", None),
            Err(WireError::MissingSignature)
        );
    }

    #[test]
    fn without_a_secret_nothing_verifies() {
        let header = sign("", b"x");
        assert_eq!(
            verify_signature("", b"x", Some(&header)),
            Err(WireError::NoSecret)
        );
        assert_eq!(verify_signature("", b"x", None), Err(WireError::NoSecret));
    }

    #[test]
    fn malformed_headers_are_told_apart_from_wrong_ones() {
        let hex = sign(SECRET, b"x")["sha256=".len()..].to_owned();
        for header in [
            String::new(),
            hex.clone(),
            format!("sha1={hex}"),
            "sha256=".to_owned(),
            format!("sha256={}", &hex[..62]),
            format!("sha256={hex}00"),
            format!("sha256={}", &hex[..63]),
            format!("sha256={}zz", &hex[..62]),
            format!("sha256 = {hex}"),
            "ßha256=00".to_owned(),
            "é".to_owned(),
        ] {
            assert_eq!(
                verify_signature(SECRET, b"x", Some(&header)),
                Err(WireError::MalformedSignature),
                "{header:?}"
            );
        }
    }

    // --- handshake ---

    #[test]
    fn the_handshake_echoes_the_challenge_for_the_right_token() {
        assert_eq!(
            verify_handshake(Some("subscribe"), Some("tok"), Some("1158201444"), "tok"),
            Some("1158201444".to_owned())
        );
    }

    #[test]
    fn the_handshake_refuses_anything_else() {
        let cases = [
            (Some("unsubscribe"), Some("tok"), Some("c"), "tok"),
            (None, Some("tok"), Some("c"), "tok"),
            (Some("subscribe"), Some("tok2"), Some("c"), "tok"),
            (Some("subscribe"), Some("to"), Some("c"), "tok"),
            (Some("subscribe"), Some("TOK"), Some("c"), "tok"),
            (Some("subscribe"), None, Some("c"), "tok"),
            (Some("subscribe"), Some(""), Some("c"), ""),
            (Some("subscribe"), None, Some("c"), ""),
            (Some("subscribe"), Some("tok"), None, "tok"),
        ];
        for (mode, token, challenge, expected) in cases {
            assert_eq!(
                verify_handshake(mode, token, challenge, expected),
                None,
                "{mode:?} {token:?} {challenge:?} {expected:?}"
            );
        }
    }

    // --- inbound messages ---

    #[test]
    fn the_documented_inbound_message_parses() {
        let raw = r#"{"object":"whatsapp_business_account",
 "entry":[{"id":"<WABA id>","changes":[{"field":"messages","value":{
   "messaging_product":"whatsapp",
   "metadata":{"display_phone_number":"15551230000","phone_number_id":"<our number id>"},
   "contacts":[{"profile":{"name":"Ana Lima"},"wa_id":"5511987654321"}],
   "messages":[{"from":"5511987654321","id":"wamid.<opaque>","timestamp":"1767225600",
                "type":"text","text":{"body":"Hi, is the offer still valid?"}}]}}]}]}"#;
        let batch = parse_webhook(raw.as_bytes()).expect("a webhook");
        assert_eq!(batch.statuses, vec![]);
        assert_eq!(
            batch.messages,
            vec![InboundMessage {
                phone_number_id: "<our number id>".into(),
                wamid: "wamid.<opaque>".into(),
                from: "5511987654321".into(),
                profile_name: Some("Ana Lima".into()),
                timestamp: 1_767_225_600_000,
                kind: "text".into(),
                text: "Hi, is the offer still valid?".into(),
                raw: None,
                reply_to: None,
                referral: None,
                media: None,
            }]
        );
    }

    #[test]
    fn media_messages_name_their_file_by_media_id() {
        let image = one_message(json!({"from": "5511", "id": "wamid.I", "type": "image",
            "image": {"id": "m1", "mime_type": "image/jpeg", "caption": "my car"}}));
        assert_eq!(
            image.media,
            Some(MessageAttachment {
                name: None,
                content_type: "image/jpeg".into(),
                size: None,
                media_id: Some("m1".into()),
            })
        );
        let document = one_message(json!({"from": "5511", "id": "wamid.D", "type": "document",
            "document": {"id": "m2", "filename": "quote.pdf"}}));
        let file = document.media.expect("document media");
        assert_eq!(file.name.as_deref(), Some("quote.pdf"));
        assert_eq!(file.content_type, "application/octet-stream");
        let no_id = one_message(json!({"from": "5511", "id": "wamid.N", "type": "image",
            "image": {"caption": "lost"}}));
        assert_eq!(no_id.media, None);
        let location = one_message(json!({"from": "5511", "id": "wamid.L", "type": "location",
            "location": {"latitude": 1.0, "longitude": 2.0, "id": "x"}}));
        assert_eq!(location.media, None);
    }

    #[test]
    fn media_locations_read_both_size_forms() {
        let location = parse_media_location(
            br#"{"messaging_product":"whatsapp","url":"https://lookaside.example/m1",
                "mime_type":"image/jpeg","sha256":"ab","file_size":"303833","id":"m1"}"#,
        )
        .expect("location");
        assert_eq!(location.url, "https://lookaside.example/m1");
        assert_eq!(location.file_size, Some(303_833));
        assert_eq!(
            parse_media_location(br#"{"url":"https://x/y","file_size":12}"#)
                .and_then(|l| l.file_size),
            Some(12)
        );
        assert_eq!(
            parse_media_location(br#"{"url":"file:///etc/passwd"}"#),
            None
        );
        assert_eq!(parse_media_location(br#"{"error":{"code":100}}"#), None);
        assert_eq!(parse_media_location(b"not json"), None);
    }

    #[test]
    fn the_inbound_builder_has_meta_shape_and_round_trips() {
        let built =
            inbound_text_webhook(NUMBER, LEAD, "Ana Lima", "wamid.A1", 1_767_225_600, "Olá");
        let documented = json!({"object":"whatsapp_business_account",
            "entry":[{"id":DEMO_WABA_ID,"changes":[{"field":"messages","value":{
                "messaging_product":"whatsapp",
                "metadata":{"display_phone_number":"15551230000","phone_number_id":NUMBER},
                "contacts":[{"profile":{"name":"Ana Lima"},"wa_id":LEAD}],
                "messages":[{"from":LEAD,"id":"wamid.A1","timestamp":"1767225600",
                             "type":"text","text":{"body":"Olá"}}]}}]}]});
        assert_eq!(built, documented);
        let message = &parse(&built).messages[0];
        assert_eq!(
            (message.wamid.as_str(), message.text.as_str()),
            ("wamid.A1", "Olá")
        );
        assert_eq!(message.profile_name.as_deref(), Some("Ana Lima"));
        assert_eq!(message.timestamp, 1_767_225_600_000);
    }

    #[test]
    fn every_kind_gets_a_readable_placeholder_and_keeps_its_raw_payload() {
        let cases = [
            (
                "image",
                json!({"image": {"id": "m1", "mime_type": "image/jpeg", "caption": "my car"}}),
                "[image] my car",
            ),
            ("image", json!({"image": {"id": "m1"}}), "[image]"),
            (
                "video",
                json!({"video": {"id": "m1", "caption": "tour"}}),
                "[video] tour",
            ),
            (
                "audio",
                json!({"audio": {"id": "m1", "voice": true}}),
                "[audio]",
            ),
            (
                "sticker",
                json!({"sticker": {"id": "m1", "animated": false}}),
                "[sticker]",
            ),
            (
                "document",
                json!({"document": {"filename": "quote.pdf", "caption": "signed"}}),
                "[document] quote.pdf — signed",
            ),
            (
                "document",
                json!({"document": {"filename": "quote.pdf"}}),
                "[document] quote.pdf",
            ),
            (
                "location",
                json!({"location": {"latitude": -23.5, "longitude": -46.6,
                                    "name": "Office", "address": "Av. Paulista 1000"}}),
                "[location] Office — Av. Paulista 1000",
            ),
            (
                "location",
                json!({"location": {"latitude": -23.5, "longitude": -46.6}}),
                "[location] -23.5,-46.6",
            ),
            ("location", json!({"location": {}}), "[location]"),
            (
                "contacts",
                json!({"contacts": [{"name": {"formatted_name": "Bob Reis"}},
                                    {"name": {"first_name": "Cid"}}]}),
                "[contacts] Bob Reis, Cid",
            ),
            (
                "interactive",
                json!({"interactive": {"type": "button_reply",
                                       "button_reply": {"id": "b1", "title": "Yes, book it"}}}),
                "[interactive] Yes, book it",
            ),
            (
                "interactive",
                json!({"interactive": {"type": "list_reply", "list_reply":
                    {"id": "r1", "title": "Plan B", "description": "cheaper"}}}),
                "[interactive] Plan B",
            ),
            (
                "button",
                json!({"button": {"payload": "STOP", "text": "Stop promotions"}}),
                "[button] Stop promotions",
            ),
            (
                "reaction",
                json!({"reaction": {"message_id": "wamid.X", "emoji": "👍"}}),
                "[reaction] 👍",
            ),
            (
                "reaction",
                json!({"reaction": {"message_id": "wamid.X"}}),
                "[reaction removed]",
            ),
            (
                "unsupported",
                json!({"errors": [{"code": 131051, "title": "Message type unknown"}]}),
                "[unsupported message]",
            ),
            (
                "mystery_type",
                json!({"mystery_type": {"x": 1}}),
                "[mystery_type message]",
            ),
        ];
        for (kind, content, expected) in cases {
            let mut message =
                json!({"from": LEAD, "id": "wamid.K", "timestamp": "1767225600", "type": kind});
            if let (Some(m), Value::Object(content)) = (message.as_object_mut(), content) {
                m.extend(content);
            }
            let parsed = one_message(message.clone());
            assert_eq!(parsed.kind, kind);
            assert_eq!(parsed.text, expected, "{kind}");
            assert_eq!(parsed.raw, Some(message), "{kind}");
        }
    }

    #[test]
    fn a_message_without_a_type_is_kept_as_unknown() {
        let parsed = one_message(json!({"from": LEAD, "id": "wamid.K", "timestamp": "1"}));
        assert_eq!(
            (parsed.kind.as_str(), parsed.text.as_str()),
            ("unknown", "[unknown message]")
        );
    }

    #[test]
    fn a_reply_carries_the_id_it_replies_to() {
        let parsed = one_message(json!({"from": LEAD, "id": "wamid.R", "timestamp": "1",
            "context": {"from": "15551230000", "id": "wamid.OURS"},
            "type": "text", "text": {"body": "yes"}}));
        assert_eq!(parsed.reply_to.as_deref(), Some("wamid.OURS"));
    }

    #[test]
    fn a_click_to_whatsapp_referral_names_its_campaign() {
        let parsed = one_message(json!({"from": LEAD, "id": "wamid.R", "timestamp": "1",
            "referral": {"source_url": "https://fb.me/ad", "source_id": "120200",
                         "source_type": "ad", "headline": "Summer sale", "body": "50% off",
                         "media_type": "image"},
            "type": "text", "text": {"body": "Is this still on?"}}));
        let referral = parsed.referral.expect("a referral");
        assert_eq!(
            referral,
            Referral {
                source_id: Some("120200".into()),
                source_type: Some("ad".into()),
                source_url: Some("https://fb.me/ad".into()),
                headline: Some("Summer sale".into()),
            }
        );
        assert_eq!(referral.campaign().as_deref(), Some("Summer sale"));
        let no_headline = Referral {
            headline: None,
            ..referral.clone()
        };
        assert_eq!(no_headline.campaign().as_deref(), Some("120200"));
        let url_only = Referral {
            source_id: None,
            ..no_headline
        };
        assert_eq!(url_only.campaign().as_deref(), Some("https://fb.me/ad"));
        let empty = Referral {
            source_url: None,
            ..url_only
        };
        assert_eq!(empty.campaign(), None);
    }

    #[test]
    fn the_profile_name_comes_from_the_matching_contact_else_the_first() {
        let mut webhook = with_messages(json!([
            {"from": LEAD, "id": "wamid.1", "type": "text", "text": {"body": "a"}},
            {"from": "4400", "id": "wamid.2", "type": "text", "text": {"body": "b"}},
        ]));
        webhook["entry"][0]["changes"][0]["value"]["contacts"] = json!([
            {"profile": {"name": "Someone Else"}, "wa_id": "4400"},
            {"profile": {"name": "Ana Lima"}, "wa_id": LEAD},
        ]);
        let names: Vec<_> = parse(&webhook)
            .messages
            .into_iter()
            .map(|m| m.profile_name)
            .collect();
        assert_eq!(
            names,
            vec![Some("Ana Lima".into()), Some("Someone Else".into())]
        );

        webhook["entry"][0]["changes"][0]["value"]["contacts"] =
            json!([{"profile": {"name": "Only One"}, "wa_id": "999"}]);
        let names: Vec<_> = parse(&webhook)
            .messages
            .into_iter()
            .map(|m| m.profile_name)
            .collect();
        assert_eq!(
            names,
            vec![Some("Only One".into()), Some("Only One".into())]
        );

        webhook["entry"][0]["changes"][0]["value"]
            .as_object_mut()
            .expect("an object")
            .remove("contacts");
        let names: Vec<_> = parse(&webhook)
            .messages
            .into_iter()
            .map(|m| m.profile_name)
            .collect();
        assert_eq!(names, vec![None, None]);
    }

    #[test]
    fn unusable_timestamps_become_zero() {
        let cases = [
            (json!("1767225600"), 1_767_225_600_000),
            (json!(1_767_225_600), 1_767_225_600_000),
            (json!(" 42 "), 42_000),
            (json!("0"), 0),
            (json!("yesterday"), 0),
            (json!(""), 0),
            (json!("-5"), 0),
            (json!("1767225600.5"), 0),
            (json!(1.5), 0),
            (json!("9223372036854775807"), 0),
            (json!("99999999999999999999999"), 0),
            (json!(u64::MAX), 0),
            (json!(null), 0),
            (json!({"s": 1}), 0),
        ];
        for (timestamp, expected) in cases {
            let parsed = one_message(
                json!({"from": LEAD, "id": "wamid.T", "timestamp": timestamp,
                "type": "text", "text": {"body": "t"}}),
            );
            assert_eq!(parsed.timestamp, expected, "{timestamp}");
        }
        let parsed = one_message(
            json!({"from": LEAD, "id": "wamid.T", "type": "text", "text": {"body": "t"}}),
        );
        assert_eq!(parsed.timestamp, 0);
    }

    #[test]
    fn malformed_messages_are_skipped_and_their_neighbours_kept() {
        let batch = parse(&with_messages(json!([
            {"id": "wamid.no-from", "timestamp": "1", "type": "text", "text": {"body": "x"}},
            {"from": LEAD, "timestamp": "1", "type": "text", "text": {"body": "x"}},
            {"from": "", "id": "wamid.empty-from", "type": "text"},
            {"from": 5511, "id": "wamid.number-from", "type": "text"},
            "not an object",
            null,
            [1, 2],
            {"from": LEAD, "id": "wamid.good", "type": "text", "text": {"body": "kept"}},
            {"from": LEAD, "id": "wamid.no-body", "timestamp": "1", "type": "text"},
        ])));
        let kept: Vec<_> = batch
            .messages
            .iter()
            .map(|m| (m.wamid.as_str(), m.text.as_str()))
            .collect();
        assert_eq!(kept, vec![("wamid.good", "kept"), ("wamid.no-body", "")]);
        assert_eq!(
            batch.rejected, 7,
            "every message that can never be stored is counted"
        );
    }

    #[test]
    fn items_with_oversize_ids_are_rejected_and_labels_are_cut() {
        let huge = "w".repeat(MAX_ID_BYTES + 1);
        let fits = "w".repeat(MAX_ID_BYTES);
        let batch = parse(&with_messages(json!([
            {"from": LEAD, "id": huge, "type": "text", "text": {"body": "long id"}},
            {"from": huge, "id": "wamid.long-from", "type": "text", "text": {"body": "x"}},
            {"from": LEAD, "id": fits, "type": "text", "text": {"body": "fits"},
             "context": {"id": huge},
             "referral": {"headline": "h".repeat(100_000), "source_id": huge}},
        ])));
        assert_eq!(batch.rejected, 2);
        assert_eq!(batch.messages.len(), 1);
        let kept = &batch.messages[0];
        assert_eq!(kept.wamid, fits);
        assert_eq!(kept.reply_to, None, "an unusable reply id is dropped");
        let referral = kept.referral.as_ref().expect("referral");
        assert_eq!(
            referral.campaign().map(|c| c.chars().count()),
            Some(MAX_LABEL_CHARS)
        );
        assert_eq!(
            referral.source_id.as_ref().map(|id| id.chars().count()),
            Some(MAX_LABEL_CHARS)
        );

        let statuses = parse(&with_statuses(json!([
            {"id": huge, "status": "read", "timestamp": "1"},
            {"id": "wamid.ok", "status": "read", "timestamp": "1"},
        ])));
        assert_eq!((statuses.statuses.len(), statuses.rejected), (1, 1));

        let mut other_number = with_messages(json!([
            {"from": LEAD, "id": "wamid.x", "type": "text", "text": {"body": "x"}}]));
        other_number["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] =
            json!(huge);
        let batch = parse(&other_number);
        assert_eq!((batch.messages.len(), batch.rejected), (0, 1));

        let answer = json!({"messages": [{"id": huge}]});
        let refused = parse_send_response(200, &body(&answer)).expect_err("unusable id");
        assert!(!refused.retryable);
    }

    // --- statuses ---

    #[test]
    fn the_status_builder_round_trips() {
        let built = status_webhook(NUMBER, "wamid.OUT", "delivered", 1_767_225_660, LEAD);
        assert_eq!(
            built["entry"][0]["changes"][0]["value"]["statuses"],
            json!([{"id": "wamid.OUT", "status": "delivered", "timestamp": "1767225660",
                    "recipient_id": LEAD}])
        );
        assert_eq!(
            parse(&built),
            WebhookBatch {
                messages: vec![],
                statuses: vec![StatusUpdate {
                    phone_number_id: NUMBER.into(),
                    wamid: "wamid.OUT".into(),
                    status: Delivery::Delivered,
                    timestamp: 1_767_225_660_000,
                    recipient_id: Some(LEAD.into()),
                    error: None,
                    error_code: None,
                }],
                rejected: 0,
            }
        );
    }

    #[test]
    fn a_failed_status_condenses_its_error() {
        let batch = parse(&with_statuses(json!([{
            "id": "wamid.OUT", "status": "failed", "timestamp": "1767225660", "recipient_id": LEAD,
            "errors": [{"code": 131047, "title": "Re-engagement message",
                        "message": "Re-engagement message",
                        "error_data": {"details": "more than 24 hours have passed"}}]}])));
        let status = &batch.statuses[0];
        assert_eq!(status.status, Delivery::Failed);
        assert_eq!(status.error_code, Some(131047));
        assert!(is_window_closed(status.error_code));
        assert_eq!(
            status.error.as_deref(),
            Some("131047 Re-engagement message (more than 24 hours have passed)")
        );
    }

    #[test]
    fn status_errors_leave_out_what_is_missing() {
        let cases = [
            (
                json!({"code": 1, "title": "T", "message": "M", "error_data": {"details": "D"}}),
                Some("1 T: M (D)"),
            ),
            (json!({"code": 1, "message": "M"}), Some("1: M")),
            (json!({"title": "T"}), Some("T")),
            (json!({"error_data": {"details": "D"}}), Some("D")),
            (json!({"code": 131026}), Some("131026")),
            (json!({}), None),
            (json!("oops"), None),
        ];
        for (error, expected) in cases {
            let batch = parse(&with_statuses(json!([
                {"id": "wamid.F", "status": "failed", "errors": [error.clone()]}])));
            assert_eq!(batch.statuses[0].error.as_deref(), expected, "{error}");
        }
    }

    #[test]
    fn unknown_or_malformed_statuses_are_skipped() {
        let batch = parse(&with_statuses(json!([
            {"id": "wamid.1", "status": "sent", "timestamp": "1"},
            {"id": "wamid.2", "status": "deleted", "timestamp": "1"},
            {"id": "wamid.3", "status": "queued", "timestamp": "1"},
            {"status": "read", "timestamp": "1"},
            {"id": "wamid.5", "timestamp": "1"},
            {"id": "wamid.6", "status": "READ", "timestamp": "1"},
            "read",
            {"id": "wamid.8", "status": "read", "timestamp": "2"},
            {"id": "wamid.9", "status": "failed"},
        ])));
        let kept: Vec<_> = batch
            .statuses
            .iter()
            .map(|s| (s.wamid.as_str(), s.status))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("wamid.1", Delivery::Sent),
                ("wamid.8", Delivery::Read),
                ("wamid.9", Delivery::Failed)
            ]
        );
        assert_eq!(
            (
                batch.statuses[2].error.as_deref(),
                batch.statuses[2].error_code
            ),
            (None, None)
        );
    }

    // --- batches and envelopes ---

    #[test]
    fn a_batch_carries_every_entry_change_message_and_status_in_order() {
        let text = |id: &str| json!({"from": LEAD, "id": id, "type": "text", "text": {"body": id}});
        let status = |id: &str| json!({"id": id, "status": "read", "recipient_id": LEAD});
        let value = |number: &str, messages: &[&str], statuses: &[&str]| {
            json!({"metadata": {"phone_number_id": number},
                   "messages": messages.iter().map(|id| text(id)).collect::<Vec<_>>(),
                   "statuses": statuses.iter().map(|id| status(id)).collect::<Vec<_>>()})
        };
        let webhook = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "waba1", "changes": [
                {"field": "messages", "value": value("n1", &["m1", "m2"], &["s1"])},
                {"field": "account_update", "value": value("n1", &["ignored"], &[])},
                {"field": "messages", "value": value("n2", &["m3"], &["s2", "s3"])},
            ]},
            {"id": "waba2", "changes": [
                {"field": "messages", "value": value("n3", &[], &["s4"])},
                {"value": value("n3", &["no-field"], &[])},
                {"field": "messages", "value": {"messages": [text("no-metadata")]}},
                {"field": "messages"},
            ]},
            {"id": "waba3"},
            {"id": "waba4", "changes": {"not": "an array"}},
        ]});
        let batch = parse(&webhook);
        let messages: Vec<_> = batch
            .messages
            .iter()
            .map(|m| (m.phone_number_id.as_str(), m.wamid.as_str()))
            .collect();
        assert_eq!(messages, vec![("n1", "m1"), ("n1", "m2"), ("n2", "m3")]);
        let statuses: Vec<_> = batch
            .statuses
            .iter()
            .map(|s| (s.phone_number_id.as_str(), s.wamid.as_str()))
            .collect();
        assert_eq!(
            statuses,
            vec![("n1", "s1"), ("n2", "s2"), ("n2", "s3"), ("n3", "s4")]
        );
    }

    #[test]
    fn an_empty_entry_list_is_an_empty_batch() {
        let webhook = json!({"object": "whatsapp_business_account", "entry": []});
        assert_eq!(parse(&webhook), WebhookBatch::default());
    }

    #[test]
    fn bodies_that_are_not_whatsapp_webhooks_are_refused() {
        let cases: [&[u8]; 10] = [
            b"",
            b"not json",
            b"{\"object\":\"whatsapp_business_account\",\"entry\":[",
            b"null",
            b"[]",
            b"{}",
            b"{\"object\":\"page\",\"entry\":[]}",
            b"{\"object\":7,\"entry\":[]}",
            b"{\"object\":\"whatsapp_business_account\"}",
            b"{\"object\":\"whatsapp_business_account\",\"entry\":{}}",
        ];
        for raw in cases {
            let result = parse_webhook(raw);
            assert!(
                matches!(result, Err(WireError::NotAWebhook(_))),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        // Deep nesting, invalid UTF-8, odd numbers.
        let mut raws: Vec<Vec<u8>> = vec![
            "[".repeat(100_000).into_bytes(),
            "{\"a\":".repeat(100_000).into_bytes(),
            format!(
                "{{\"object\":\"whatsapp_business_account\",\"entry\":{}1{}}}",
                "[".repeat(120),
                "]".repeat(120)
            )
            .into_bytes(),
            vec![0xff, 0xfe, 0x00, b'{'],
            b"{\"object\":\"whatsapp_business_account\",\"entry\":[1e999]}".to_vec(),
            b"{\"object\":\"whatsapp_business_account\",\"entry\":[\"\\ud800\"]}".to_vec(),
        ];

        // Every node of a full sample replaced in turn by every kind of odd value.
        let sample = with_messages(json!([
            {"from": LEAD, "id": "wamid.1", "timestamp": "1", "type": "text",
             "text": {"body": "hi"}, "context": {"from": "1", "id": "wamid.0"},
             "referral": {"source_id": "1", "source_type": "ad", "source_url": "u",
                          "headline": "h"}},
            {"from": LEAD, "id": "wamid.2", "timestamp": "1", "type": "location",
             "location": {"latitude": 1.0, "longitude": 2.0, "name": "n", "address": "a"}},
            {"from": LEAD, "id": "wamid.3", "timestamp": "1", "type": "interactive",
             "interactive": {"type": "button_reply", "button_reply": {"id": "b", "title": "t"}}},
            {"from": LEAD, "id": "wamid.4", "timestamp": "1", "type": "contacts",
             "contacts": [{"name": {"formatted_name": "f", "first_name": "g"}}]},
        ]));
        let mut sample = sample;
        sample["entry"][0]["changes"][0]["value"]["statuses"] = json!([
            {"id": "wamid.9", "status": "failed", "timestamp": "1", "recipient_id": LEAD,
             "errors": [{"code": 1, "title": "t", "message": "m",
                         "error_data": {"details": "d"}}]}]);
        let odd = [
            json!(null),
            json!(true),
            json!(-1),
            json!(1e300),
            json!(u64::MAX),
            json!(""),
            json!("x"),
            json!([]),
            json!({}),
            json!([[{}]]),
            json!({"type": {}, "title": []}),
        ];
        for pointer in pointers(&sample, String::new()) {
            for replacement in &odd {
                let mut mutated = sample.clone();
                if let Some(node) = mutated.pointer_mut(&pointer) {
                    *node = replacement.clone();
                }
                raws.push(body(&mutated));
            }
        }

        // Every kind of message with a payload of every odd shape.
        let kinds = [
            "text",
            "image",
            "video",
            "audio",
            "sticker",
            "document",
            "location",
            "contacts",
            "interactive",
            "button",
            "reaction",
            "unsupported",
            "order",
            "",
        ];
        for kind in kinds {
            for payload in &odd {
                let message = json!({"from": LEAD, "id": "wamid.k", "timestamp": "1", "type": kind,
                    "contacts": payload.clone(), kind: payload.clone()});
                raws.push(body(&with_messages(json!([message]))));
                let interactive = json!({"type": kind, kind: payload.clone()});
                let message = json!({"from": LEAD, "id": "wamid.k", "type": "interactive",
                                     "interactive": interactive});
                raws.push(body(&with_messages(json!([message]))));
            }
        }

        // Random byte mutations of the sample, from a fixed seed.
        let base = body(&sample);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let mut mutated = base.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % mutated.len() as u64) as usize;
                mutated[at] = next() as u8;
            }
            raws.push(mutated);
        }

        for raw in &raws {
            let _ = parse_webhook(raw);
            let _ = verify_signature(SECRET, raw, std::str::from_utf8(raw).ok());
            let _ = parse_send_response(200, raw);
            let _ = parse_send_response(400, raw);
        }
    }

    /// JSON pointers to every node below `value`.
    fn pointers(value: &Value, at: String) -> Vec<String> {
        let children: Vec<(String, &Value)> = match value {
            Value::Object(map) => map.iter().map(|(k, v)| (format!("{at}/{k}"), v)).collect(),
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{at}/{i}"), v))
                .collect(),
            _ => vec![],
        };
        let mut all = vec![at];
        for (path, child) in children {
            all.extend(pointers(child, path));
        }
        all
    }

    // --- sending ---

    #[test]
    fn the_text_body_has_meta_shape() {
        assert_eq!(
            text_message_body(LEAD, "Yes, until Friday"),
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": LEAD,
                   "type": "text", "text": {"preview_url": false, "body": "Yes, until Friday"}})
        );
    }

    #[test]
    fn the_template_body_has_meta_shape() {
        let components = json!([{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}]);
        assert_eq!(
            template_message_body(LEAD, "follow_up", "en_US", components.clone()),
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": LEAD,
                   "type": "template",
                   "template": {"name": "follow_up", "language": {"code": "en_US"},
                                "components": components}})
        );
    }

    #[test]
    fn a_successful_send_yields_the_wamid() {
        let answer = br#"{"messaging_product":"whatsapp",
            "contacts":[{"input":"5511987654321","wa_id":"5511987654321"}],
            "messages":[{"id":"wamid.HBgN"}]}"#;
        assert_eq!(
            parse_send_response(200, answer),
            Ok("wamid.HBgN".to_owned())
        );
        assert_eq!(
            parse_send_response(201, answer),
            Ok("wamid.HBgN".to_owned())
        );
    }

    #[test]
    fn a_success_without_an_id_is_a_final_error() {
        for answer in [
            &b""[..],
            b"{}",
            b"{\"messages\":[]}",
            b"{\"messages\":[{\"id\":\"\"}]}",
            b"<html>",
        ] {
            let error = parse_send_response(200, answer).expect_err("no id");
            assert_eq!(error.http_status, 200);
            assert!(!error.retryable);
            assert_eq!(error.message, "the response carries no usable message id");
        }
    }

    #[test]
    fn a_closed_window_is_final_and_recognisable() {
        let answer = br#"{"error":{"message":"(#131047) Re-engagement message",
            "type":"OAuthException","code":131047,"fbtrace_id":"AbC",
            "error_data":{"messaging_product":"whatsapp",
                          "details":"more than 24 hours have passed since the last reply"}}}"#;
        let error = parse_send_response(400, answer).expect_err("window closed");
        assert_eq!(error.code, Some(131047));
        assert!(is_window_closed(error.code));
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "(#131047) Re-engagement message (more than 24 hours have passed since the last reply)"
        );
    }

    #[test]
    fn retryability_follows_status_and_code() {
        let cases = [
            (500, None, true),
            (503, Some(1), true),
            (429, None, true),
            (400, Some(130429), true),
            (400, Some(131056), true),
            (400, Some(131000), true),
            (500, Some(131016), true),
            (400, Some(2), true),
            (400, Some(4), true),
            (400, Some(80007), true),
            (400, Some(131047), false),
            (500, Some(131047), false),
            (400, Some(100), false),
            (401, Some(190), false),
            (404, None, false),
            (400, Some(131026), false),
        ];
        for (status, code, retryable) in cases {
            let answer = match code {
                Some(code) => {
                    json!({"error": {"message": "m", "type": "OAuthException", "code": code}})
                }
                None => json!({}),
            };
            let error = parse_send_response(status, &body(&answer)).expect_err("an error");
            assert_eq!((error.http_status, error.code), (status, code));
            assert_eq!(error.retryable, retryable, "{status} {code:?}");
        }
    }

    #[test]
    fn an_error_without_a_graph_error_object_quotes_the_body() {
        let error = parse_send_response(502, b"<html>Bad Gateway</html>").expect_err("an error");
        assert_eq!(
            error,
            SendError {
                http_status: 502,
                code: None,
                message: "HTTP 502: <html>Bad Gateway</html>".into(),
                retryable: true,
            }
        );
        assert_eq!(
            parse_send_response(503, b"").expect_err("an error").message,
            "HTTP 503"
        );
        let long = "é".repeat(1_000);
        let error = parse_send_response(400, long.as_bytes()).expect_err("an error");
        assert_eq!(error.message.chars().count(), "HTTP 400: ".len() + 200);
        assert!(!error.retryable);
    }

    #[test]
    fn the_window_closed_code_is_the_only_one() {
        assert!(is_window_closed(Some(131047)));
        assert!(!is_window_closed(None));
        assert!(!is_window_closed(Some(131026)));
        assert!(!is_window_closed(Some(130429)));
    }
}
