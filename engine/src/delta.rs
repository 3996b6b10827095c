//! Deltas: every change, with a durable global offset, as clients receive it.

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, ConversationId, MessageId, NotificationId, WorkspaceId};
use crate::model::{ConversationCard, Message};
use crate::notify::Notification;
use crate::port::ChannelHealth;
use crate::time::UnixMillis;

/// Why an agent is notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NotificationReason {
    /// Someone assigned the conversation to this agent.
    Assignment,
    /// Someone mentioned this agent in an internal note.
    Mention,
    /// The AI handed the conversation to this agent.
    Escalation,
    /// The lead wrote in a conversation assigned to this agent.
    NewMessage,
    /// A conversation started with nobody assigned.
    NewConversation,
    /// A conversation of this agent waits longer than the workspace's response target.
    Overdue,
    /// A conversation this agent is assigned (or, unassigned, snoozed) is back from snooze.
    SnoozeEnded,
}

impl NotificationReason {
    pub const ALL: [NotificationReason; 7] = [
        NotificationReason::Assignment,
        NotificationReason::Mention,
        NotificationReason::Escalation,
        NotificationReason::NewMessage,
        NotificationReason::NewConversation,
        NotificationReason::Overdue,
        NotificationReason::SnoozeEnded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationReason::Assignment => "assignment",
            NotificationReason::Mention => "mention",
            NotificationReason::Escalation => "escalation",
            NotificationReason::NewMessage => "new_message",
            NotificationReason::NewConversation => "new_conversation",
            NotificationReason::Overdue => "overdue",
            NotificationReason::SnoozeEnded => "snooze_ended",
        }
    }
}

/// What changed. Stored externally tagged; rendered on the wire by [`Delta::to_json`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DeltaBody {
    ConversationCreated(ConversationCard),
    ConversationUpdated(ConversationCard),
    MessageCreated(Message),
    MessageUpdated(Message),
    Notification {
        agent_id: AgentId,
        reason: NotificationReason,
        message_id: Option<MessageId>,
        by_agent_id: Option<AgentId>,
        /// The notification as listed (absent in deltas written before notifications
        /// were stored).
        #[serde(default)]
        notification: Option<Box<Notification>>,
    },
    /// A channel's status changed (workspace-wide: no conversation).
    ChannelUpdated(ChannelHealth),
    /// An agent read notifications (workspace-wide: their other sessions follow).
    NotificationsRead {
        agent_id: AgentId,
        notification_ids: Vec<NotificationId>,
    },
    /// The conversation was erased whole (a lead's erasure, or retention of a conversation
    /// inactive past the workspace's period): clients drop it. Ids only, so it outlives
    /// the erasure of the conversation's other deltas. Store format 2.
    ConversationRemoved,
    /// Retention removed these old messages of a conversation that stays: clients drop
    /// them. Store format 2.
    MessagesRemoved {
        message_ids: Vec<MessageId>,
    },
}

impl DeltaBody {
    pub fn kind(&self) -> &'static str {
        match self {
            DeltaBody::ConversationCreated(_) => "conversation_created",
            DeltaBody::ConversationUpdated(_) => "conversation_updated",
            DeltaBody::MessageCreated(_) => "message_created",
            DeltaBody::MessageUpdated(_) => "message_updated",
            DeltaBody::Notification { .. } => "notification",
            DeltaBody::ChannelUpdated(_) => "channel_updated",
            DeltaBody::NotificationsRead { .. } => "notifications_read",
            DeltaBody::ConversationRemoved => "conversation_removed",
            DeltaBody::MessagesRemoved { .. } => "messages_removed",
        }
    }

    /// Whether the delta announces a removal: it carries ids only, never what was removed,
    /// and is kept when the deltas of what it removed are erased.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            DeltaBody::ConversationRemoved | DeltaBody::MessagesRemoved { .. }
        )
    }
}

/// A delta before the committer gives it an offset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaDraft {
    pub workspace_id: WorkspaceId,
    /// `None` for workspace-wide changes (a channel's status).
    pub conversation_id: Option<ConversationId>,
    pub body: DeltaBody,
}

/// A committed delta: durable, with its global offset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub offset: u64,
    pub workspace_id: WorkspaceId,
    /// `None` for workspace-wide changes (a channel's status). Stored deltas written
    /// before this was optional read back as `Some`.
    pub conversation_id: Option<ConversationId>,
    pub at: UnixMillis,
    pub body: DeltaBody,
}

impl Delta {
    /// The stream frame: `{"type":"delta","offset","kind","conversation_id","at", payload}`,
    /// where the payload is `conversation` (a card), `message`, or the notification's fields.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            frame_type: &'static str,
            offset: u64,
            kind: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            conversation_id: Option<ConversationId>,
            #[serde(with = "crate::time::rfc3339")]
            at: UnixMillis,
            #[serde(skip_serializing_if = "Option::is_none")]
            conversation: Option<&'a ConversationCard>,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'a Message>,
            #[serde(skip_serializing_if = "Option::is_none")]
            agent_id: Option<AgentId>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<NotificationReason>,
            #[serde(skip_serializing_if = "Option::is_none")]
            message_id: Option<MessageId>,
            #[serde(skip_serializing_if = "Option::is_none")]
            by_agent_id: Option<AgentId>,
            #[serde(skip_serializing_if = "Option::is_none")]
            channel: Option<&'a ChannelHealth>,
            #[serde(skip_serializing_if = "Option::is_none")]
            notification: Option<&'a Notification>,
            #[serde(skip_serializing_if = "Option::is_none")]
            notification_ids: Option<&'a [NotificationId]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            message_ids: Option<&'a [MessageId]>,
        }
        let mut frame = Frame {
            frame_type: "delta",
            offset: self.offset,
            kind: self.body.kind(),
            conversation_id: self.conversation_id,
            at: self.at,
            conversation: None,
            message: None,
            agent_id: None,
            reason: None,
            message_id: None,
            by_agent_id: None,
            channel: None,
            notification: None,
            notification_ids: None,
            message_ids: None,
        };
        match &self.body {
            DeltaBody::ConversationCreated(card) | DeltaBody::ConversationUpdated(card) => {
                frame.conversation = Some(card)
            }
            DeltaBody::MessageCreated(m) | DeltaBody::MessageUpdated(m) => frame.message = Some(m),
            DeltaBody::Notification {
                agent_id,
                reason,
                message_id,
                by_agent_id,
                notification,
            } => {
                frame.agent_id = Some(*agent_id);
                frame.reason = Some(*reason);
                frame.message_id = *message_id;
                frame.by_agent_id = *by_agent_id;
                frame.notification = notification.as_deref();
            }
            DeltaBody::ChannelUpdated(health) => frame.channel = Some(health),
            DeltaBody::NotificationsRead {
                agent_id,
                notification_ids,
            } => {
                frame.agent_id = Some(*agent_id);
                frame.notification_ids = Some(notification_ids);
            }
            DeltaBody::ConversationRemoved => {}
            DeltaBody::MessagesRemoved { message_ids } => frame.message_ids = Some(message_ids),
        }
        serde_json::to_string(&frame).unwrap_or_else(|e| {
            unreachable!("a delta frame always serializes to JSON: {e}");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_frames_carry_the_agent() {
        let agent = AgentId::new();
        let delta = Delta {
            offset: 12,
            workspace_id: WorkspaceId::new(),
            conversation_id: Some(ConversationId::new()),
            at: 0,
            body: DeltaBody::Notification {
                agent_id: agent,
                reason: NotificationReason::Assignment,
                message_id: None,
                by_agent_id: None,
                notification: None,
            },
        };
        let v: serde_json::Value = serde_json::from_str(&delta.to_json()).expect("json");
        assert_eq!(v["type"], "delta");
        assert_eq!(v["offset"], 12);
        assert_eq!(v["kind"], "notification");
        assert_eq!(v["agent_id"], agent.to_string());
        assert_eq!(v["reason"], "assignment");
        assert_eq!(
            v["conversation_id"],
            delta.conversation_id.expect("set").to_string()
        );
        let stored: Delta = crate::codec::decode(&crate::codec::encode(&delta)).expect("codec");
        assert_eq!(stored, delta);
    }
}
