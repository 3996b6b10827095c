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

    /// A verified webhook body as the port's batch. Only a body that is not this
    /// provider's webhook at all is an error; odd items are skipped or counted rejected.
    fn parse(&self, body: &[u8]) -> Result<InboundBatch, Refusal>;

    /// One attempt at sending `request`, classified.
    fn send<'a>(
        &'a self,
        http: &'a reqwest::Client,
        request: &'a OutboundRequest,
    ) -> SendFuture<'a>;
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

/// The adapter of a channel's provider.
pub fn adapter_for(channel: &Channel) -> Arc<dyn Adapter> {
    match &channel.config {
        ChannelConfig::Whatsapp(config) => {
            Arc::new(super::whatsapp::Whatsapp::new(channel.id, config.clone()))
        }
        #[cfg(feature = "loopback")]
        ChannelConfig::Loopback(config) => {
            Arc::new(super::loopback::Loopback::new(channel.id, config.clone()))
        }
    }
}
