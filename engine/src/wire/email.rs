//! Email's wire format: RFC 5322 messages (parsed with `mail-parser`: charsets,
//! quoted-printable, base64, multipart, HTML-only mail), the reply token we put in
//! `Reply-To`, quoted-history stripping, auto-reply and bounce (RFC 3464) detection, and
//! the inbound webhook's signature. Pure functions; the adapter adds SMTP and IMAP.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::{ChannelId, ConversationId};
use crate::inbound::{EventDetails, InboundEvent, ThreadHint};
use crate::model::MessageAttachment;
use crate::time::UnixMillis;

/// The inbound webhook's signature header: `sha256=<hex HMAC-SHA256(secret, raw body)>`.
pub const SIGNATURE_HEADER: &str = "x-confab-signature-256";

/// Same contact and same subject thread together within this long.
pub const SUBJECT_THREAD_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// Longest text kept of one message (a mailing-list digest can be megabytes).
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the body is not an RFC 5322 message")]
    NotAMessage,
    #[error("the message has no sender address")]
    NoSender,
    #[error("missing X-Confab-Signature-256 header")]
    MissingSignature,
    #[error("the signature does not match the body")]
    InvalidSignature,
}

/// A file that came with a message, its bytes included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailFile {
    pub name: Option<String>,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A delivery status notification (RFC 3464) about a message we sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounce {
    /// The Message-ID of the message that could not be delivered (without `<>`).
    pub original_message_id: Option<String>,
    /// Why, as the reporting server said it (`Diagnostic-Code`, else `Status`).
    pub reason: String,
}

/// One parsed email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedEmail {
    /// Without `<>`; a stable hash of the headers when the message has none.
    pub message_id: String,
    /// Lower-cased.
    pub from_address: String,
    pub from_name: Option<String>,
    /// Every address it was sent to: To, Cc, Delivered-To, X-Original-To (lower-cased).
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    /// The subject without `Re:`, `Fwd:`, `AW:` … and list tags, lower-cased: what
    /// threads by subject.
    pub base_subject: String,
    /// Ids this message answers: `In-Reply-To`, then `References` newest first.
    pub replies_to: Vec<String>,
    /// `Date`, if valid and not in the future of `now`; else 0.
    pub date: UnixMillis,
    /// The whole text (HTML converted to text).
    pub text: String,
    /// The text without quoted history and signature: the preview and the AI's input.
    pub reply_text: String,
    pub files: Vec<EmailFile>,
    /// An automatic message (RFC 3834, out-of-office, list mail): never answered by the AI.
    pub auto_reply: bool,
    pub bounce: Option<Bounce>,
}

/// Checks the webhook's signature over the raw body in constant time.
pub fn verify_signature(secret: &str, body: &[u8], header: Option<&str>) -> Result<(), EmailError> {
    let header = header.ok_or(EmailError::MissingSignature)?;
    let given = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(EmailError::InvalidSignature)?;
    let expected = hmac(secret.as_bytes(), body);
    if expected.ct_eq(given.as_slice()).into() {
        Ok(())
    } else {
        Err(EmailError::InvalidSignature)
    }
}

/// The signature header's value for `body` (the tests and the demo sign with it).
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), body)))
}

fn hmac(key: &[u8], body: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Checks `secret` given as an HTTP Basic password (SendGrid's and Postmark's way: the
/// credentials in the webhook URL), in constant time; the user name is not looked at.
pub fn verify_basic(secret: &str, authorization: Option<&str>) -> Result<(), EmailError> {
    let encoded = authorization
        .and_then(|v| v.trim().strip_prefix("Basic "))
        .ok_or(EmailError::MissingSignature)?;
    let decoded = base64_decode(encoded.trim()).ok_or(EmailError::InvalidSignature)?;
    let password = decoded
        .iter()
        .position(|&b| b == b':')
        .map(|at| &decoded[at + 1..])
        .ok_or(EmailError::InvalidSignature)?;
    // Compare digests: equal length whatever was sent.
    let (a, b) = (Sha256::digest(password), Sha256::digest(secret.as_bytes()));
    if a.ct_eq(&b).into() {
        Ok(())
    } else {
        Err(EmailError::InvalidSignature)
    }
}

/// Standard base64 (with or without padding): Basic credentials, SMTP AUTH.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The reply token of a conversation: its id and a MAC of it under the channel's key, so
/// a forged address cannot file mail into another conversation.
pub fn reply_token(key: &str, conversation: ConversationId) -> String {
    let id = conversation.to_string().to_lowercase();
    let mac = hmac(key.as_bytes(), id.as_bytes());
    format!("{id}-{}", hex::encode(&mac[..6]))
}

/// The `Reply-To` address carrying a conversation's token: `local+token@domain` of the
/// channel's address.
pub fn reply_address(address: &str, key: &str, conversation: ConversationId) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}+{}@{domain}", reply_token(key, conversation)),
        None => address.to_owned(),
    }
}

/// The conversation a recipient address's token names, if one of `recipients` is the
/// channel's address with a valid token.
pub fn conversation_from_recipients(
    recipients: &[String],
    address: &str,
    key: &str,
) -> Option<ConversationId> {
    let (local, domain) = address
        .to_lowercase()
        .rsplit_once('@')
        .map(|(l, d)| (l.to_owned(), d.to_owned()))?;
    recipients.iter().find_map(|r| {
        let (r_local, r_domain) = r.rsplit_once('@')?;
        if r_domain != domain {
            return None;
        }
        let token = r_local.strip_prefix(&local)?.strip_prefix('+')?;
        let (id, _) = token.split_once('-')?;
        let conversation: ConversationId = id.to_uppercase().parse().ok()?;
        let expected = reply_token(key, conversation);
        bool::from(expected.as_bytes().ct_eq(token.as_bytes())).then_some(conversation)
    })
}

/// The Message-ID of an outbound message: stable across retries, so a resend after a lost
/// answer is the same message to every mail client, and IMAP's copy of it is known.
pub fn outbound_message_id(message: crate::ids::MessageId, address: &str) -> String {
    let domain = address
        .rsplit_once('@')
        .map_or("confab.invalid", |(_, d)| d);
    format!("{}@{domain}", message.to_string().to_lowercase())
}

/// `Re: subject`, unless it already starts with a reply prefix.
pub fn reply_subject(subject: &str) -> String {
    let trimmed = subject.trim();
    if trimmed.len() >= 3 && trimmed[..3].eq_ignore_ascii_case("re:") {
        trimmed.to_owned()
    } else {
        format!("Re: {trimmed}")
    }
}

/// Reads a raw message. `now` bounds its `Date` (a date in the future is not believed).
pub fn parse(raw: &[u8], now: UnixMillis) -> Result<ParsedEmail, EmailError> {
    let message = MessageParser::default()
        .parse(raw)
        .filter(|m| !m.headers().is_empty())
        .ok_or(EmailError::NotAMessage)?;
    let from = message
        .from()
        .and_then(|a| a.iter().find(|a| a.address().is_some()))
        .ok_or(EmailError::NoSender)?;
    let from_address = from
        .address()
        .map(|a| a.trim().to_lowercase())
        .filter(|a| a.contains('@') && a.len() <= 320)
        .ok_or(EmailError::NoSender)?;
    let from_name = from
        .name()
        .map(|n| n.trim().trim_matches('"').trim().to_owned())
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(&from_address))
        .map(|n| cut_chars(&n, 200));
    let mut recipients: Vec<String> = message
        .to()
        .into_iter()
        .chain(message.cc())
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .chain(
            ["Delivered-To", "X-Original-To"]
                .into_iter()
                .flat_map(|h| message.header_values(h))
                .filter_map(|v| v.as_text()),
        )
        .map(|a| a.trim().trim_matches(['<', '>']).to_lowercase())
        .filter(|a| a.contains('@'))
        .collect();
    recipients.dedup();
    let subject = message.subject().map(|s| cut_chars(s.trim(), 500));
    let base_subject = message
        .thread_name()
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default();
    let ids = |value: &mail_parser::HeaderValue| -> Vec<String> {
        value
            .as_text_list()
            .unwrap_or_default()
            .iter()
            .map(|id| id.trim().trim_matches(['<', '>']).to_owned())
            .filter(|id| !id.is_empty() && id.len() <= 500)
            .collect()
    };
    let mut replies_to = ids(message.in_reply_to());
    let mut references = ids(message.references());
    references.reverse();
    for id in references {
        if !replies_to.contains(&id) {
            replies_to.push(id);
        }
    }
    replies_to.truncate(50);
    let date = message
        .date()
        .filter(|d| d.is_valid())
        .map(|d| d.to_timestamp().saturating_mul(1000))
        .filter(|&at| at > 0 && at <= now.saturating_add(5 * 60 * 1000))
        .unwrap_or(0);
    let text = body_text(&message);
    let reply_text = strip_quoted(&text);
    let message_id = message
        .message_id()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty() && id.len() <= 500)
        .unwrap_or_else(|| synthetic_id(&message));
    let bounce = bounce(&message);
    let auto_reply = bounce.is_none() && is_auto_reply(&message, subject.as_deref(), &from_address);
    Ok(ParsedEmail {
        message_id,
        from_address,
        from_name,
        recipients,
        subject,
        base_subject,
        replies_to,
        date,
        text,
        reply_text,
        files: files(&message),
        auto_reply,
        bounce,
    })
}

fn cut_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

fn cut_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// Every text part of the body, HTML converted to text, joined: inline images may sit
/// between text parts, so the first text part alone can miss part of the message.
fn body_text(message: &mail_parser::Message) -> String {
    let mut parts: Vec<Cow<str>> = Vec::new();
    for part in message.text_bodies() {
        match &part.body {
            PartType::Text(text) => parts.push(Cow::Borrowed(text.as_ref())),
            PartType::Html(html) => {
                parts.push(Cow::Owned(mail_parser::decoders::html::html_to_text(html)))
            }
            _ => {}
        }
    }
    let text = parts.join("\n").replace("\r\n", "\n");
    cut_bytes(text.trim().to_owned(), MAX_TEXT_BYTES)
}

/// The files of a message: its attachments and inline images (not the body's text parts,
/// not a bounce's report parts).
fn files(message: &mail_parser::Message) -> Vec<EmailFile> {
    message
        .attachments()
        .filter(|part| !matches!(part.body, PartType::Multipart(_)))
        .filter_map(|part| {
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".to_owned())
                .to_lowercase();
            if matches!(
                content_type.as_str(),
                "message/delivery-status"
                    | "message/global-delivery-status"
                    | "text/rfc822-headers"
            ) {
                return None;
            }
            let (bytes, content_type) = match &part.body {
                PartType::Message(nested) => {
                    (nested.raw_message().to_vec(), "message/rfc822".to_owned())
                }
                _ => (part.contents().to_vec(), content_type),
            };
            Some(EmailFile {
                name: part.attachment_name().map(|n| cut_chars(n.trim(), 200)),
                content_type,
                bytes,
            })
        })
        .collect()
}

/// A stable id for a message without a Message-ID: a hash of what identifies it.
fn synthetic_id(message: &mail_parser::Message) -> String {
    let mut hash = Sha256::new();
    for name in ["From", "To", "Date", "Subject"] {
        if let Some(value) = message.header_raw(name) {
            hash.update(name.as_bytes());
            hash.update(value.as_bytes());
        }
    }
    let raw = message.raw_message();
    hash.update(&raw[..raw.len().min(4096)]);
    format!("{}@confab.invalid", hex::encode(&hash.finalize()[..16]))
}

/// RFC 3834 and common practice: `Auto-Submitted` other than `no`, `X-Autoreply`,
/// `Precedence: bulk|junk|list|auto_reply`, list mail, the null sender, and the usual
/// out-of-office subjects.
fn is_auto_reply(message: &mail_parser::Message, subject: Option<&str>, from: &str) -> bool {
    let text = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if text("Auto-Submitted").is_some_and(|v| !v.is_empty() && !v.starts_with("no")) {
        return true;
    }
    if text("X-Autoreply").is_some() || text("X-Autorespond").is_some() {
        return true;
    }
    if text("Precedence")
        .is_some_and(|v| matches!(v.as_str(), "bulk" | "junk" | "list" | "auto_reply"))
    {
        return true;
    }
    if text("List-Id").is_some() || text("List-Unsubscribe").is_some() {
        return true;
    }
    if text("Return-Path").is_some_and(|v| v == "<>") {
        return true;
    }
    let local = from.split('@').next().unwrap_or("");
    if matches!(
        local,
        "mailer-daemon" | "postmaster" | "noreply" | "no-reply" | "donotreply"
    ) {
        return true;
    }
    let subject = subject.unwrap_or("").trim().to_lowercase();
    const SUBJECTS: [&str; 14] = [
        "auto:",
        "automatic reply",
        "autoreply",
        "auto-reply",
        "out of office",
        "out of the office",
        "abwesend",
        "abwesenheitsnotiz",
        "réponse automatique",
        "respuesta automática",
        "resposta automática",
        "risposta automatica",
        "autosvar",
        "automatisch antwoord",
    ];
    SUBJECTS.iter().any(|s| subject.starts_with(s))
}

/// A delivery status notification: `multipart/report; report-type=delivery-status` with
/// a failed recipient, naming the original message.
fn bounce(message: &mail_parser::Message) -> Option<Bounce> {
    let ct = message.content_type()?;
    let is_report = ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        && ct
            .attribute("report-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"));
    if !is_report {
        return None;
    }
    let mut reason = None;
    let mut failed = false;
    let mut original = None;
    for part in &message.parts {
        let Some(pc) = part.content_type() else {
            continue;
        };
        let (ctype, sub) = (
            pc.ctype().to_ascii_lowercase(),
            pc.subtype().unwrap_or("").to_ascii_lowercase(),
        );
        match (ctype.as_str(), sub.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => {
                let report = delivery_status(part.contents());
                failed |= report.failed;
                reason = reason.or(report.reason);
            }
            ("message", "rfc822" | "global") => {
                original = original.or_else(|| {
                    part.message()
                        .and_then(|m| m.message_id())
                        .map(str::to_owned)
                });
            }
            ("text", "rfc822-headers" | "global-headers") => {
                original = original.or_else(|| {
                    MessageParser::default()
                        .parse_headers(part.contents())
                        .and_then(|m| m.message_id().map(str::to_owned))
                });
            }
            _ => {}
        }
    }
    if !failed {
        return None;
    }
    let original = original.or_else(|| {
        message
            .in_reply_to()
            .as_text_list()
            .and_then(|l| l.first())
            .map(|id| id.trim_matches(['<', '>']).to_owned())
    });
    Some(Bounce {
        original_message_id: original,
        reason: reason.unwrap_or_else(|| "the message could not be delivered".to_owned()),
    })
}

struct DeliveryStatus {
    failed: bool,
    reason: Option<String>,
}

/// Reads a `message/delivery-status` body: per-recipient blocks with `Action`, `Status`
/// and `Diagnostic-Code`.
fn delivery_status(body: &[u8]) -> DeliveryStatus {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    // Unfold continuation lines.
    let unfolded = text.replace("\n ", " ").replace("\n\t", " ");
    let mut out = DeliveryStatus {
        failed: false,
        reason: None,
    };
    for block in unfolded.split("\n\n") {
        let field = |name: &str| {
            block.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        if field("Action").is_some_and(|a| a.eq_ignore_ascii_case("failed")) {
            out.failed = true;
            let reason = field("Diagnostic-Code")
                .map(|d| match d.split_once(';') {
                    Some((_, rest)) => rest.trim().to_owned(),
                    None => d,
                })
                .or_else(|| field("Status"));
            out.reason = out.reason.or(reason.map(|r| cut_chars(&r, 500)));
        }
    }
    out
}

/// The text without quoted history and signature: cut at the first attribution line
/// ("On … wrote:" and its translations, Outlook's header block or "Original Message"
/// rule), at a block of `>` lines that runs to the end, or at the signature separator.
/// An empty result keeps the whole text.
pub fn strip_quoted(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut cut = lines.len();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        let joined = match lines.get(i + 1) {
            Some(next) => format!("{trimmed} {}", next.trim()),
            None => trimmed.to_owned(),
        };
        if is_attribution(trimmed)
            || (is_attribution(&joined)
                && !is_attribution(lines.get(i + 1).map_or("", |l| l.trim())))
            || is_outlook_rule(trimmed)
            || is_outlook_header(&lines[i..])
            || line.trim_end() == "--"
            || is_mobile_signature(trimmed)
        {
            cut = i;
            break;
        }
        if trimmed.starts_with('>')
            && lines[i..]
                .iter()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('>'))
        {
            cut = i;
            break;
        }
    }
    let kept = lines[..cut].join("\n");
    let kept = kept.trim();
    if kept.is_empty() {
        text.trim().to_owned()
    } else {
        kept.to_owned()
    }
}

fn is_attribution(line: &str) -> bool {
    let lower = line.to_lowercase();
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| lower.ends_with(s));
    (lower.starts_with("on ") && ends(&["wrote:"]))
        || (lower.starts_with("le ") && ends(&["a écrit :", "a écrit:"]))
        || (lower.starts_with("am ") && ends(&["schrieb:"]))
        || (lower.starts_with("am ") && lower.contains(" schrieb ") && lower.ends_with(':'))
        || (lower.starts_with("el ") && ends(&["escribió:"]))
        || (lower.starts_with("em ") && ends(&["escreveu:"]))
        || (lower.starts_with("il ") && ends(&["ha scritto:"]))
        || (lower.starts_with("op ") && lower.contains("schreef") && lower.ends_with(':'))
        || (lower.starts_with("den ") && lower.contains("skrev") && lower.ends_with(':'))
}

fn is_outlook_rule(line: &str) -> bool {
    let lower = line.to_lowercase();
    (lower.starts_with("--") && lower.contains("original message"))
        || (lower.starts_with("-----") && lower.contains("ursprüngliche nachricht"))
        || (line.len() >= 10 && line.chars().all(|c| c == '_'))
}

/// `From:` followed within a few lines by `Sent:`/`Date:` and `Subject:` (and their
/// German, French and Spanish names): a forwarded or replied-to header block.
fn is_outlook_header(lines: &[&str]) -> bool {
    let starts = |line: &str, names: &[&str]| {
        let lower = line.trim().to_lowercase();
        names.iter().any(|n| lower.starts_with(n))
    };
    let Some(first) = lines.first() else {
        return false;
    };
    if !starts(first, &["from:", "von:", "de:"]) {
        return false;
    }
    let next: Vec<&&str> = lines.iter().skip(1).take(5).collect();
    next.iter()
        .any(|l| starts(l, &["sent:", "date:", "gesendet:", "envoyé:", "enviado:"]))
        && next
            .iter()
            .any(|l| starts(l, &["subject:", "betreff:", "objet:", "asunto:"]))
}

fn is_mobile_signature(line: &str) -> bool {
    let lower = line.to_lowercase();
    lower.starts_with("sent from my ")
        || lower.starts_with("get outlook for ")
        || lower.starts_with("enviado desde mi ")
        || lower.starts_with("von meinem iphone gesendet")
}

/// The port's event for a parsed message from a lead, with the hints that thread it:
/// our reply token, the ids it answers, and its sender and subject.
pub fn inbound_event(
    channel_id: ChannelId,
    email: &ParsedEmail,
    channel_address: &str,
    token_key: &str,
) -> InboundEvent {
    let mut hints = Vec::new();
    if let Some(conversation) =
        conversation_from_recipients(&email.recipients, channel_address, token_key)
    {
        hints.push(ThreadHint::Conversation(conversation));
    }
    hints.extend(email.replies_to.iter().cloned().map(ThreadHint::Replies));
    let alias = subject_alias(&email.from_address, &email.base_subject);
    if let Some(alias) = &alias {
        hints.push(ThreadHint::Alias {
            key: alias.clone(),
            within_ms: SUBJECT_THREAD_MS,
        });
    }
    let text = if email.reply_text.is_empty() {
        email.subject.clone().unwrap_or_default()
    } else {
        email.reply_text.clone()
    };
    InboundEvent {
        channel_id,
        // A new thread is named by its first message.
        thread: email.message_id.clone(),
        provider_message_id: email.message_id.clone(),
        contact_name: email.from_name.clone(),
        contact_phone: None,
        contact_email: Some(email.from_address.clone()),
        contact_profile: None,
        sent_at: email.date,
        text,
        content_type: Some("email".to_owned()),
        raw: None,
        reply_to: email.replies_to.first().cloned(),
        attachments: Vec::new(),
        campaign: None,
        received: None,
        details: EventDetails {
            subject: email.subject.clone(),
            full_text: (email.reply_text != email.text).then(|| email.text.clone()),
            auto_reply: email.auto_reply,
            thread_hints: hints,
            thread_alias: alias,
            files: email
                .files
                .iter()
                .map(|f| (attachment_of(f), f.bytes.clone()))
                .collect(),
            ..EventDetails::default()
        },
    }
}

/// What threads by subject: the sender and the subject without reply prefixes. `None` for
/// an empty subject (unrelated mails without subjects must not merge).
pub fn subject_alias(from: &str, base_subject: &str) -> Option<Vec<u8>> {
    if base_subject.trim().is_empty() {
        return None;
    }
    let mut key = b"subject\0".to_vec();
    key.extend_from_slice(from.as_bytes());
    key.push(0);
    key.extend_from_slice(&Sha256::digest(base_subject.trim().as_bytes())[..16]);
    Some(key)
}

fn attachment_of(file: &EmailFile) -> MessageAttachment {
    MessageAttachment {
        name: file.name.clone(),
        content_type: file.content_type.clone(),
        size: Some(file.bytes.len() as u64),
        media_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_800_000_000_000;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/email")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn signatures_and_basic_passwords_are_checked() {
        let sig = sign("s3cret", b"body");
        assert_eq!(verify_signature("s3cret", b"body", Some(&sig)), Ok(()));
        assert_eq!(
            verify_signature("s3cret", b"body!", Some(&sig)),
            Err(EmailError::InvalidSignature)
        );
        assert_eq!(
            verify_signature("s3cret", b"body", None),
            Err(EmailError::MissingSignature)
        );
        // "confab:s3cret"
        assert_eq!(
            verify_basic("s3cret", Some("Basic Y29uZmFiOnMzY3JldA==")),
            Ok(())
        );
        assert_eq!(
            verify_basic("other", Some("Basic Y29uZmFiOnMzY3JldA==")),
            Err(EmailError::InvalidSignature)
        );
        assert_eq!(
            verify_basic("s3cret", Some("Bearer x")),
            Err(EmailError::MissingSignature)
        );
    }

    #[test]
    fn reply_tokens_name_their_conversation_and_cannot_be_forged() {
        let conversation = ConversationId::new();
        let address = reply_address("Sales@Agency.example", "key", conversation);
        assert!(address.starts_with("Sales+"), "{address}");
        let recipients = vec![address.to_lowercase()];
        assert_eq!(
            conversation_from_recipients(&recipients, "sales@agency.example", "key"),
            Some(conversation)
        );
        assert_eq!(
            conversation_from_recipients(&recipients, "sales@agency.example", "other key"),
            None
        );
        let forged = format!(
            "sales+{}-000000000000@agency.example",
            ConversationId::new().to_string().to_lowercase()
        );
        assert_eq!(
            conversation_from_recipients(&[forged], "sales@agency.example", "key"),
            None
        );
    }

    #[test]
    fn a_gmail_reply_threads_by_its_headers_and_loses_its_quote() {
        let email = parse(&fixture("gmail-reply.eml"), NOW).expect("parse");
        assert_eq!(email.from_address, "maria.souza@gmail.com");
        assert_eq!(email.from_name.as_deref(), Some("Maria Souza"));
        assert_eq!(email.subject.as_deref(), Some("Re: Your proposal for Acme"));
        assert_eq!(email.base_subject, "your proposal for acme");
        assert_eq!(
            email.replies_to[0],
            "01hx0000000000000000000000@agency.example"
        );
        assert!(email.text.contains("wrote:"), "{}", email.text);
        assert_eq!(
            email.reply_text,
            "Thanks! Could we do a call on Thursday?\n\nMaria"
        );
        assert!(!email.auto_reply);
        assert!(email.date > 0);
    }

    #[test]
    fn outlook_html_only_mail_becomes_text_without_the_header_block() {
        let email = parse(&fixture("outlook-html.eml"), NOW).expect("parse");
        assert_eq!(email.from_address, "j.pereira@contoso.com");
        assert!(
            email.reply_text.contains("Please send the pricing"),
            "{}",
            email.reply_text
        );
        assert!(
            !email.reply_text.contains("Original"),
            "{}",
            email.reply_text
        );
        assert!(
            !email.reply_text.contains("Subject:"),
            "{}",
            email.reply_text
        );
        assert!(!email.reply_text.contains('<'), "{}", email.reply_text);
    }

    #[test]
    fn apple_mail_with_an_attachment_keeps_the_file() {
        let email = parse(&fixture("apple-attachment.eml"), NOW).expect("parse");
        assert_eq!(email.files.len(), 1);
        let file = &email.files[0];
        assert_eq!(file.name.as_deref(), Some("Angebot März.pdf"));
        assert_eq!(file.content_type, "application/pdf");
        assert_eq!(file.bytes, b"%PDF-1.4 fake pdf for tests\n");
        assert!(email.reply_text.contains("Here is the signed offer"));
    }

    #[test]
    fn latin1_and_encoded_words_decode() {
        let email = parse(&fixture("latin1.eml"), NOW).expect("parse");
        assert_eq!(email.subject.as_deref(), Some("Préstamo — información"));
        assert_eq!(email.from_name.as_deref(), Some("José Núñez"));
        assert!(email.text.contains("¿Cuánto cuesta?"), "{}", email.text);
    }

    #[test]
    fn out_of_office_and_list_mail_are_automatic() {
        let ooo = parse(&fixture("out-of-office.eml"), NOW).expect("parse");
        assert!(ooo.auto_reply);
        let digest = parse(&fixture("list-digest.eml"), NOW).expect("parse");
        assert!(digest.auto_reply);
    }

    #[test]
    fn a_bounce_names_the_original_message_and_why() {
        let email = parse(&fixture("bounce.eml"), NOW).expect("parse");
        let bounce = email.bounce.expect("a bounce");
        assert_eq!(
            bounce.original_message_id.as_deref(),
            Some("01hx0000000000000000000001@agency.example")
        );
        assert!(bounce.reason.contains("550"), "{}", bounce.reason);
        assert!(!email.auto_reply, "a bounce is handled as a bounce");
    }

    #[test]
    fn a_message_without_an_id_gets_a_stable_one_and_garbage_is_refused() {
        let raw = b"From: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n";
        let one = parse(raw, NOW).expect("parse");
        let two = parse(raw, NOW).expect("parse");
        assert_eq!(one.message_id, two.message_id);
        assert!(one.message_id.ends_with("@confab.invalid"));
        assert_eq!(parse(b"", NOW), Err(EmailError::NotAMessage));
        assert_eq!(
            parse(b"Subject: no sender\r\n\r\nx", NOW),
            Err(EmailError::NoSender)
        );
    }

    #[test]
    fn a_date_in_the_future_is_not_believed() {
        let raw = b"From: a@b.example\r\nDate: Tue, 1 Jan 2999 00:00:00 +0000\r\n\r\nx";
        assert_eq!(parse(raw, NOW).expect("parse").date, 0);
    }

    #[test]
    fn quoted_history_is_cut_at_the_first_marker() {
        assert_eq!(
            strip_quoted(
                "Yes please.\n\nOn Mon, 5 Jan 2026 at 10:00, Ana <a@b.c> wrote:\n> earlier"
            ),
            "Yes please."
        );
        assert_eq!(
            strip_quoted("Ja.\n\nAm 05.01.2026 um 10:00 schrieb Ana <a@b.c>:\n> vorher"),
            "Ja."
        );
        assert_eq!(
            strip_quoted("See inline.\n> q1\nanswer 1\n> q2\n"),
            "See inline.\n> q1\nanswer 1"
        );
        assert_eq!(strip_quoted("Best\n-- \nAna Lima\nCEO"), "Best");
        assert_eq!(strip_quoted("Ok\n\nSent from my iPhone"), "Ok");
        assert_eq!(strip_quoted("> only a quote"), "> only a quote");
        assert_eq!(
            strip_quoted("Hi\n\nFrom: Ana\nSent: Monday\nTo: Bob\nSubject: x\n\nold"),
            "Hi"
        );
    }

    #[test]
    fn subjects_get_one_reply_prefix() {
        assert_eq!(reply_subject("Pricing"), "Re: Pricing");
        assert_eq!(reply_subject("RE: Pricing"), "RE: Pricing");
    }
}
