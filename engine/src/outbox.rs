//! Outbound messages waiting to be accepted by their provider.

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, ConversationId, MessageId, WorkspaceId};
use crate::model::MessageAttachment;
use crate::port::OutboundRequest;
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
    /// The conversation's provider thread (the lead's `wa_id` on WhatsApp); stored under
    /// its first name, `to`.
    #[serde(rename = "to")]
    pub thread: String,
    pub text: String,
    pub created_at: UnixMillis,
    /// The lead's address, for channels that address people rather than threads.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub in_reply_to: Option<String>,
    #[serde(default)]
    pub references: Vec<String>,
    /// The message's files (their bytes are in `blob`, read by the connector at send).
    #[serde(default)]
    pub attachments: Vec<MessageAttachment>,
    /// The lead's provider id while the conversation has no provider thread yet (one we
    /// start): this message opens it.
    #[serde(default)]
    pub start_with: Option<String>,
}

impl OutboxEntry {
    /// The port's request for this message.
    pub fn request(&self) -> OutboundRequest {
        OutboundRequest {
            message_id: self.message_id,
            conversation_id: self.conversation_id,
            channel_id: self.channel_id,
            thread: self.thread.clone(),
            to: self.address.clone(),
            text: self.text.clone(),
            subject: self.subject.clone(),
            in_reply_to: self.in_reply_to.clone(),
            references: self.references.clone(),
            attachments: Vec::new(),
            start_with: self.start_with.clone(),
        }
    }
}
