//! The outbound port between conversations and channels: a conversation hands a committed
//! outbox entry to whatever sends it, without knowing connectors. `channels` implements
//! it; conversations and their manager only see this trait, so the modules depend one way
//! (channels → manager → conversation → outbound).

use std::sync::Arc;

use confab_engine::ids::MessageId;
use confab_engine::outbox::OutboxEntry;

pub trait Outbound: Send + Sync + 'static {
    /// Hands a committed outbox entry to its channel. It must not fail: an entry that
    /// cannot be handed over waits in the durable outbox for its connector's next start.
    fn dispatch(&self, entry: OutboxEntry);

    /// Whether the provider is being asked to send this message right now (its request
    /// is on the wire): an echo of it may arrive before the answer.
    fn is_sending(&self, _message: MessageId) -> bool {
        false
    }
}

pub type OutboundPort = Arc<dyn Outbound>;

/// Sends nothing: entries wait in the outbox (a runtime without channels, tests).
#[derive(Debug, Default)]
pub struct Nowhere;

impl Outbound for Nowhere {
    fn dispatch(&self, entry: OutboxEntry) {
        tracing::debug!(message = %entry.message_id, "no channels: the message waits in the outbox");
    }
}
