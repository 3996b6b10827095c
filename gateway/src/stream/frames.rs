//! The stream's JSON frames: what a client may send, and what the server sends besides
//! deltas (which [`confab_engine::delta::Delta::to_json`] renders).

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::json;

/// A frame from the client.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Start receiving deltas: those after `since`, or only new ones when it is `null`.
    Subscribe {
        #[serde(default)]
        since: Option<u64>,
    },
    /// Application-level keep-alive for clients that cannot send WebSocket pings.
    Ping,
}

impl ClientFrame {
    /// Parses a text frame; the error is a sentence for the client.
    pub fn parse(text: &str) -> Result<ClientFrame, String> {
        serde_json::from_str(text).map_err(|e| {
            format!(
                "expected {{\"type\":\"subscribe\",\"since\":OFFSET|null}} or {{\"type\":\"ping\"}}: {e}"
            )
        })
    }
}

/// `{"type":"subscribed","head":H}`: deltas after `head` follow (after any replay).
pub fn subscribed(head: u64) -> Utf8Bytes {
    json!({"type": "subscribed", "head": head})
        .to_string()
        .into()
}

/// `{"type":"resync","head":H}`: the requested history is gone; reload state through REST.
/// Deltas after `head` follow.
pub fn resync(head: u64) -> Utf8Bytes {
    json!({"type": "resync", "head": head}).to_string().into()
}

/// `{"type":"resync_hint","last_offset":N}`: sent just before a slow consumer is closed;
/// reconnect with `since = N`.
pub fn resync_hint(last_offset: u64) -> Utf8Bytes {
    json!({"type": "resync_hint", "last_offset": last_offset})
        .to_string()
        .into()
}

pub fn pong() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"type":"pong"}"#)
}

/// `{"type":"error","code","message"}`: the session stays open.
pub fn error(code: &str, message: &str) -> Utf8Bytes {
    json!({"type": "error", "code": code, "message": message})
        .to_string()
        .into()
}

/// The JSON Schemas of the stream's frames, in the OpenAPI document's components (the
/// stream itself cannot be described as HTTP operations). Documentation only: the frames
/// are rendered above and by `Delta::to_json`; `tests/it/contract.rs` validates real frames
/// against these schemas.
pub mod schema {
    use confab_engine::ids::{AgentId, ConversationId, MessageId};
    use confab_engine::model::{ConversationCard, Message};
    use confab_engine::port::ChannelHealth;
    use serde::Serialize;
    use utoipa::ToSchema;

    /// A frame a client sends.
    #[derive(Serialize, ToSchema)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum StreamClientFrame {
        /// Start receiving deltas: every delta of the workspace with an offset above
        /// `since`, then live ones; `null` for live ones only.
        Subscribe { since: Option<u64> },
        /// Answered with `pong`.
        Ping,
    }

    /// A frame the server sends.
    #[derive(Serialize, ToSchema)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum StreamServerFrame {
        /// Deltas after `head` follow (after the replay asked for).
        Subscribed {
            head: u64,
        },
        /// One committed change; offsets strictly increase.
        Delta(Box<StreamDelta>),
        /// The history asked for is gone: reload through REST; deltas after `head` follow.
        Resync {
            head: u64,
        },
        /// Sent just before a slow consumer is closed (4008): resume with `since`.
        ResyncHint {
            last_offset: u64,
        },
        Pong,
        /// A frame the server did not understand; the session goes on.
        Error {
            code: String,
            message: String,
        },
    }

    /// What changed.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum DeltaKind {
        ConversationCreated,
        ConversationUpdated,
        MessageCreated,
        MessageUpdated,
        Notification,
        ChannelUpdated,
        NotificationsRead,
        ConversationRemoved,
        MessagesRemoved,
    }

    /// A delta: `conversation` for `conversation_*` kinds, `message` for `message_*`, the
    /// notification's fields for `notification`, `channel` (its health) for
    /// `channel_updated`, `agent_id` and `notification_ids` for `notifications_read`,
    /// `message_ids` for `messages_removed`; `conversation_removed` has nothing more.
    /// Every kind but `channel_updated` and `notifications_read` has a `conversation_id`.
    #[derive(Serialize, ToSchema)]
    pub struct StreamDelta {
        offset: u64,
        kind: DeltaKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation_id: Option<ConversationId>,
        #[schema(format = DateTime)]
        at: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation: Option<ConversationCard>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<Message>,
        /// The agent notified.
        #[serde(skip_serializing_if = "Option::is_none")]
        agent_id: Option<AgentId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<confab_engine::delta::NotificationReason>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<MessageId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        by_agent_id: Option<AgentId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<ChannelHealth>,
        /// `notification`: the notification as listed by `GET /api/v1/me/notifications`,
        /// with `browser` (whether the open inbox should show a system notification) and
        /// `in_app` (whether it is listed).
        #[serde(skip_serializing_if = "Option::is_none")]
        notification: Option<confab_engine::notify::Notification>,
        /// `notifications_read`: the agent's notifications that were just marked read.
        #[serde(skip_serializing_if = "Option::is_none")]
        notification_ids: Option<Vec<confab_engine::ids::NotificationId>>,
        /// `messages_removed`: the conversation's messages that retention removed.
        #[serde(skip_serializing_if = "Option::is_none")]
        message_ids: Option<Vec<MessageId>>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_frames_parse_with_and_without_an_offset() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"subscribe","since":42}"#),
            Ok(ClientFrame::Subscribe { since: Some(42) })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"subscribe","since":null}"#),
            Ok(ClientFrame::Subscribe { since: None })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"subscribe"}"#),
            Ok(ClientFrame::Subscribe { since: None })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping)
        );
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"type":"unsubscribe"}"#,
            r#"{"type":"subscribe","since":-1}"#,
            r#"{"type":"subscribe","since":"7"}"#,
            r#"{"type":"subscribe","since":1.5}"#,
            "[1,2]",
        ] {
            let error = ClientFrame::parse(bad).expect_err(bad);
            assert!(error.contains("subscribe"), "{error}");
        }
    }

    #[test]
    fn server_frames_are_json() {
        let v: serde_json::Value = serde_json::from_str(&subscribed(7)).expect("json");
        assert_eq!(v, json!({"type": "subscribed", "head": 7}));
        let v: serde_json::Value = serde_json::from_str(&resync(9)).expect("json");
        assert_eq!(v, json!({"type": "resync", "head": 9}));
        let v: serde_json::Value = serde_json::from_str(&resync_hint(3)).expect("json");
        assert_eq!(v, json!({"type": "resync_hint", "last_offset": 3}));
        let v: serde_json::Value = serde_json::from_str(&pong()).expect("json");
        assert_eq!(v, json!({"type": "pong"}));
        let v: serde_json::Value =
            serde_json::from_str(&error("bad_frame", "say \"what\"")).expect("json");
        assert_eq!(v["message"], "say \"what\"");
    }
}
