//! The email adapter: one channel per address. Inbound mail arrives as a signed webhook
//! (the raw RFC 5322 message, or SendGrid's Inbound Parse form) or from the channel's IMAP
//! mailbox (`channels::imap`); outbound mail leaves over SMTP with `lettre`. The wire format
//! is `confab_engine::wire::email` (pure functions).

use std::time::Duration;

use bytes::Bytes;
use confab_engine::ids::ChannelId;
use confab_engine::model::{EmailConfig, MailSecurity, MailServer};
use confab_engine::port::{InboundBatch, OutboundRequest, SendOutcome, StatusReport};
use confab_engine::time::now_millis;
use confab_engine::wire::email::{self as wire, EmailError};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};

use super::adapter::{Adapter, NormalizeFuture, Refusal, SendFuture};

/// How long one SMTP command may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Email {
    channel_id: ChannelId,
    config: EmailConfig,
    smtp: Result<AsyncSmtpTransport<Tokio1Executor>, String>,
}

impl Email {
    pub fn new(channel_id: ChannelId, config: EmailConfig) -> Email {
        let smtp = transport(&config.smtp).map_err(|e| e.to_string());
        Email {
            channel_id,
            config,
            smtp,
        }
    }

    /// A raw message as the port's batch: a bounce reports on the message it names, any
    /// other mail is a message from the lead.
    pub fn batch(&self, raw: &[u8]) -> Result<InboundBatch, Refusal> {
        let mut batch = InboundBatch::default();
        let email = match wire::parse(raw, now_millis()) {
            Ok(email) => email,
            Err(EmailError::NoSender) => {
                batch.rejected = 1;
                return Ok(batch);
            }
            Err(e) => return Err(Refusal::malformed("not_a_message", e.to_string())),
        };
        if let Some(bounce) = &email.bounce {
            match &bounce.original_message_id {
                Some(original) => batch.statuses.push(StatusReport {
                    provider_message_id: original.clone(),
                    status: confab_engine::model::Delivery::Failed,
                    error: Some(bounce.reason.clone()),
                    at: now_millis(),
                }),
                None => batch.rejected = 1,
            }
            return Ok(batch);
        }
        // Our own address writing (a copy of our sent mail in the mailbox, a loop): not a
        // lead's message.
        if email
            .from_address
            .eq_ignore_ascii_case(&self.config.address)
        {
            batch.skipped = 1;
            return Ok(batch);
        }
        batch.messages.push(wire::inbound_event(
            self.channel_id,
            &email,
            &self.config.address,
            &self.config.token_key,
        ));
        Ok(batch)
    }

    fn message(&self, request: &OutboundRequest) -> Result<lettre::Message, String> {
        let from_address = self
            .config
            .address
            .parse()
            .map_err(|e| format!("the channel's address: {e}"))?;
        let to = request
            .to
            .as_deref()
            .ok_or("the lead has no email address")?
            .parse()
            .map_err(|e| format!("the lead's address: {e}"))?;
        let reply_to = wire::reply_address(
            &self.config.address,
            &self.config.token_key,
            request.conversation_id,
        )
        .parse()
        .map_err(|e| format!("the reply address: {e}"))?;
        let subject = request
            .subject
            .as_deref()
            .map_or_else(|| "Re:".to_owned(), wire::reply_subject);
        let mut builder = lettre::Message::builder()
            .from(Mailbox::new(self.config.display_name.clone(), from_address))
            .to(Mailbox::new(None, to))
            .reply_to(Mailbox::new(self.config.display_name.clone(), reply_to))
            .subject(subject)
            .message_id(Some(format!(
                "<{}>",
                wire::outbound_message_id(request.message_id, &self.config.address)
            )))
            .date_now();
        if let Some(parent) = &request.in_reply_to {
            builder = builder.in_reply_to(format!("<{parent}>"));
        }
        if !request.references.is_empty() {
            // One call: the header is replaced, not appended to.
            builder = builder.references(
                request
                    .references
                    .iter()
                    .map(|id| format!("<{id}>"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        if request.attachments.is_empty() {
            return builder
                .header(ContentType::TEXT_PLAIN)
                .body(request.text.clone())
                .map_err(|e| e.to_string());
        }
        let mut mixed = MultiPart::mixed().singlepart(SinglePart::plain(request.text.clone()));
        for file in &request.attachments {
            let content_type = ContentType::parse(&file.content_type).unwrap_or(
                ContentType::parse("application/octet-stream").map_err(|e| e.to_string())?,
            );
            mixed = mixed.singlepart(
                lettre::message::Attachment::new(
                    file.name.clone().unwrap_or_else(|| "attachment".to_owned()),
                )
                .body(file.bytes.clone(), content_type),
            );
        }
        builder.multipart(mixed).map_err(|e| e.to_string())
    }
}

/// The SMTP transport to a mail server (a channel's, or the notification relay):
/// STARTTLS or TLS as configured, plain only where the gateway allowed it (loopback, or by
/// configuration).
pub(crate) fn transport(
    smtp: &MailServer,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, lettre::transport::smtp::Error> {
    let builder = match smtp.security {
        MailSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
        MailSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?,
        MailSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    };
    let mut builder = builder
        .port(smtp.port)
        .timeout(Some(SMTP_TIMEOUT))
        .pool_config(
            PoolConfig::new()
                .max_size(2)
                .idle_timeout(Duration::from_secs(60)),
        );
    if !smtp.username.is_empty() {
        builder = builder.credentials(Credentials::new(
            smtp.username.clone(),
            smtp.password.clone(),
        ));
    }
    Ok(builder.build())
}

/// An SMTP failure as the port's outcome (RFC 5321 §4.2.1: 4xx transient, 5xx permanent;
/// authentication refusals stop the channel).
fn classify(error: &lettre::transport::smtp::Error) -> SendOutcome {
    let reason = error.to_string();
    let code = error.status().map(u16::from);
    let lower = reason.to_lowercase();
    match code {
        Some(530 | 534 | 535 | 538) => SendOutcome::AuthFailed { reason },
        Some(421 | 450 | 451 | 452)
            if lower.contains("rate") || lower.contains("too many") || lower.contains("limit") =>
        {
            SendOutcome::RateLimited {
                reason,
                retry_after: None,
            }
        }
        Some(550)
            if lower.contains("5.4.5")
                || lower.contains("quota")
                || lower.contains("limit exceeded") =>
        {
            SendOutcome::RateLimited {
                reason,
                retry_after: Some(Duration::from_secs(60 * 60)),
            }
        }
        Some(code) if (500..600).contains(&code) => SendOutcome::Permanent {
            code: format!("smtp_{code}"),
            reason,
        },
        _ if error.is_permanent() => SendOutcome::Permanent {
            code: "smtp_rejected".to_owned(),
            reason,
        },
        _ if lower.contains("authentication") && error.is_client() => {
            SendOutcome::AuthFailed { reason }
        }
        _ => SendOutcome::Retryable {
            reason,
            retry_after: None,
        },
    }
}

impl Adapter for Email {
    /// The raw message signed with `X-Confab-Signature-256`, or SendGrid's form with the
    /// secret as the Basic password.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        let Some(secret) = self.config.inbound_secret.as_deref() else {
            return Err(Refusal::unauthenticated(
                "no_inbound_secret",
                "this channel takes no webhooks: it has no inbound_secret",
            ));
        };
        let form = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| {
                t.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            });
        let checked = if form {
            wire::verify_basic(
                secret,
                headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()),
            )
        } else {
            wire::verify_signature(
                secret,
                body,
                headers
                    .get(wire::SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok()),
            )
        };
        checked.map_err(|e| match e {
            EmailError::MissingSignature => {
                Refusal::unauthenticated("missing_signature", e.to_string())
            }
            _ => Refusal::unauthenticated("invalid_signature", e.to_string()),
        })
    }

    /// SendGrid's Inbound Parse form carries the raw message in its field `email`; the
    /// envelope's recipients go in front as `X-Original-To` (the reply token may be only
    /// there, for a Bcc or a forward).
    fn normalize<'a>(&'a self, content_type: Option<&'a str>, body: Bytes) -> NormalizeFuture<'a> {
        Box::pin(async move {
            let Some(boundary) = content_type
                .filter(|t| {
                    t.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("multipart/form-data")
                })
                .and_then(|t| multer::parse_boundary(t).ok())
            else {
                return Ok(body);
            };
            let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
            let mut form = multer::Multipart::new(stream, boundary);
            let (mut raw, mut envelope) = (None, None);
            loop {
                let field = match form.next_field().await {
                    Ok(Some(field)) => field,
                    Ok(None) => break,
                    Err(e) => return Err(Refusal::malformed("not_a_message", e.to_string())),
                };
                let name = field.name().map(str::to_owned);
                let value = field
                    .bytes()
                    .await
                    .map_err(|e| Refusal::malformed("not_a_message", e.to_string()))?;
                match name.as_deref() {
                    Some("email") => raw = Some(value),
                    Some("envelope") => envelope = Some(value),
                    _ => {}
                }
            }
            let raw = raw.ok_or_else(|| {
                Refusal::malformed(
                    "not_raw_mime",
                    "the form has no `email` field: turn on \"POST the raw, full MIME message\"",
                )
            })?;
            let recipients: Vec<String> = envelope
                .and_then(|e| serde_json::from_slice::<serde_json::Value>(&e).ok())
                .and_then(|e| e.get("to").cloned())
                .and_then(|to| serde_json::from_value::<Vec<String>>(to).ok())
                .unwrap_or_default();
            let mut out = Vec::with_capacity(raw.len() + 64 * recipients.len());
            for to in recipients.iter().filter(|t| !t.contains(['\r', '\n'])) {
                out.extend_from_slice(format!("X-Original-To: {to}\r\n").as_bytes());
            }
            out.extend_from_slice(&raw);
            Ok(Bytes::from(out))
        })
    }

    fn parse(&self, body: &[u8]) -> Result<InboundBatch, Refusal> {
        self.batch(body)
    }

    fn send<'a>(
        &'a self,
        _http: &'a reqwest::Client,
        request: &'a OutboundRequest,
    ) -> SendFuture<'a> {
        Box::pin(async move {
            let transport = match &self.smtp {
                Ok(transport) => transport,
                Err(reason) => {
                    return SendOutcome::AuthFailed {
                        reason: format!("the SMTP settings are unusable: {reason}"),
                    }
                }
            };
            let message = match self.message(request) {
                Ok(message) => message,
                Err(reason) => {
                    return SendOutcome::Permanent {
                        code: "invalid_address".to_owned(),
                        reason,
                    }
                }
            };
            match transport.send(message).await {
                Ok(_) => SendOutcome::Accepted {
                    provider_id: wire::outbound_message_id(
                        request.message_id,
                        &self.config.address,
                    ),
                    thread: None,
                },
                Err(e) => classify(&e),
            }
        })
    }
}
