//! Outbound messages waiting to be accepted by their provider.

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, ConversationId, MessageId, WorkspaceId};
use crate::time::UnixMillis;

/// What a connector needs to send one message. Committed in the same batch as the message,
/// deleted in the batch that records the provider's answer, so a restart resends exactly
/// what was never answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub message_id: MessageId,
    pub workspace_id: WorkspaceId,
    pub conversation_id: ConversationId,
    pub channel_id: ChannelId,
    pub seq: u64,
    /// The provider's address of the lead (`wa_id` on WhatsApp).
    pub to: String,
    pub text: String,
    pub created_at: UnixMillis,
}
