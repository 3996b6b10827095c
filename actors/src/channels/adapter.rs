//! What a provider implements: the adapter behind the channel port. Everything else
//! (queues per lead, budgets, retries, the circuit breaker, outbox replay, status routing,
//! health) is the generic connector's, the same for every provider.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use confab_engine::model::{Channel, ChannelConfig};
use confab_engine::port::{InboundBatch, OutboundRequest, SendOutcome};
use reqwest::header::HeaderMap;

/// A future an adapter's send returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>>;

/// A future an adapter's [`Adapter::normalize`] returns.
pub type NormalizeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<bytes::Bytes, Refusal>> + Send + 'a>>;

/// A future an adapter's media fetch returns: the provider's answer carrying the file's
/// bytes (its status checked), read by the caller as a stream.
pub type MediaFuture<'a> =
    Pin<Box<dyn Future<Output = Result<reqwest::Response, MediaError>> + Send + 'a>>;

/// Why a file could not be fetched from the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaError {
    /// The provider does not know the file (any more: WhatsApp keeps media 30 days).
    Gone,
    /// The provider cannot be reached or failed; trying later may work.
    Unavailable(String),
    /// The provider refuses the channel's credentials.
    AuthFailed(String),
    /// This provider's files cannot be fetched by id.
    Unsupported,
}

/// A provider: its webhook's authentication and format, and how one send is made and
/// what the provider's answer means. No state beyond the channel's configuration; no
/// retries, no pacing (the connector does both).
pub trait Adapter: Send + Sync + 'static {
    /// Checks that a webhook comes from the provider (its signature over the raw body),
    /// before anything in it is read.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal>;

    /// The provider's subscription handshake, if it has one: what to answer, or `None`
    /// when the request is not a valid handshake.
    fn handshake(&self, _query: &HashMap<String, String>) -> Option<String> {
        None
    }

    /// A verified webhook body in the form `parse` reads, given its `Content-Type` (a
    /// provider's form wrapping the message, say). The body as it is by default.
    fn normalize<'a>(
        &'a self,
        _content_type: Option<&'a str>,
        body: bytes::Bytes,
    ) -> NormalizeFuture<'a> {
        Box::pin(async move { Ok(body) })
    }

    /// A verified webhook body as the port's batch. Only a body that is not this
    /// provider's webhook at all is an error; odd items are skipped or counted rejected.
    fn parse(&self, body: &[u8]) -> Result<InboundBatch, Refusal>;

    /// One attempt at sending `request`, classified.
    fn send<'a>(
        &'a self,
        http: &'a reqwest::Client,
        request: &'a OutboundRequest,
    ) -> SendFuture<'a>;

    /// The file the provider keeps under `media_id` (a message's attachment), with the
    /// channel's credentials. Providers whose files come inside the message need not
    /// implement it.
    fn fetch_media<'a>(
        &'a self,
        _http: &'a reqwest::Client,
        _media_id: &'a str,
    ) -> MediaFuture<'a> {
        Box::pin(async { Err(MediaError::Unsupported) })
    }
}

/// Classifies a provider's answer to a media request by its HTTP status.
pub async fn media_answer(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, MediaError> {
    let response = request
        .send()
        .await
        .map_err(|e| MediaError::Unavailable(format!("the provider could not be reached: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(match status.as_u16() {
        401 | 403 => {
            MediaError::AuthFailed(format!("the provider refused the credentials ({status})"))
        }
        404 | 410 => MediaError::Gone,
        // Graph API: an unknown or expired media id is a 400 with code 100.
        400 => MediaError::Gone,
        _ => MediaError::Unavailable(format!("the provider answered {status}")),
    })
}

/// Why a webhook was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// A stable error code (`missing_signature`, `invalid_signature`, `not_a_webhook`).
    pub code: &'static str,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not from the provider: 401.
    Unauthenticated,
    /// From the provider (or at least signed) but unreadable: 400.
    Malformed,
}

impl Refusal {
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind: RefusalKind::Unauthenticated,
            code,
            message: message.into(),
        }
    }

    pub fn malformed(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind: RefusalKind::Malformed,
            code,
            message: message.into(),
        }
    }
}

/// The task that reads a channel's inbound when its provider must be read rather than
/// only calling back (an email channel's mailbox, which waits while none is configured; a
/// LinkedIn account's gap repair), for the connector to run; `None` for webhook-only
/// providers.
pub(super) fn reader_for(
    channel: &Channel,
    inbound: &super::connector::Inbound,
) -> Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>> {
    match &channel.config {
        ChannelConfig::Email(_) => Some(Box::pin(super::imap::run(
            inbound.clone(),
            inbound.deps.settings.mailbox.clone(),
            inbound.deps.registry.stopping(),
        ))),
        ChannelConfig::Linkedin(_) => Some(Box::pin(super::linkedin::repair(
            inbound.clone(),
            inbound.deps.settings.repair.clone(),
            inbound.deps.registry.stopping(),
        ))),
        _ => None,
    }
}

/// The adapter of a channel's provider.
pub fn adapter_for(channel: &Channel) -> Arc<dyn Adapter> {
    match &channel.config {
        ChannelConfig::Whatsapp(config) => {
            Arc::new(super::whatsapp::Whatsapp::new(channel.id, config.clone()))
        }
        ChannelConfig::Email(config) => {
            Arc::new(super::email::Email::new(channel.id, config.clone()))
        }
        ChannelConfig::Linkedin(config) => {
            Arc::new(super::linkedin::Linkedin::new(channel.id, config.clone()))
        }
        #[cfg(feature = "loopback")]
        ChannelConfig::Loopback(config) => {
            Arc::new(super::loopback::Loopback::new(channel.id, config.clone()))
        }
    }
}
