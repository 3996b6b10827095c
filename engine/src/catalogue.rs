//! Every keyspace of the store and its key layout, in one place.
//!
//! Keyspaces are named `<key>_<value>`. Ids are 16 bytes (ULID, time-ordered); integers are
//! big-endian so that byte order is numeric order. Variable-length parts come last.

use crate::ids::{AgentId, ChannelId, ContactId, ConversationId, MessageId, WorkspaceId};

/// The keyspaces, in the order they are opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ks {
    /// Fixed names → engine-wide values (delta head, prune mark).
    Meta,
    /// workspace id → `Workspace`
    WorkspaceState,
    /// agent id → `Agent`
    AgentState,
    /// workspace id ‖ agent id → ()
    WsAgent,
    /// SHA-256 of an API token → agent id
    TokenAgent,
    /// channel id → `Channel`
    ChannelState,
    /// workspace id ‖ channel id → ()
    WsChannel,
    /// contact id → `StoredContact`
    ContactState,
    /// workspace id ‖ normalized phone → contact id
    PhoneContact,
    /// channel id ‖ provider thread key → conversation id
    ThreadConv,
    /// conversation id → `Conversation`
    ConvState,
    /// conversation id ‖ seq → `Message`
    ConvMsg,
    /// channel id ‖ provider message id → conversation id ‖ seq (dedupe and status routing)
    ExtMsg,
    /// channel id ‖ provider message id → `PendingStatus` (statuses that came before the id)
    ExtStatus,
    /// workspace id ‖ offset → `Delta`
    WsDelta,
    /// workspace id ‖ last activity ‖ conversation id → () (newest-first listing)
    WsActivity,
    /// message id → `OutboxEntry` (outbound messages not yet accepted by the provider)
    OutboxEntry,
    /// contact id ‖ conversation id → () (one lead, several conversations)
    ContactConv,
    /// workspace id ‖ lower-cased email → contact id
    EmailContact,
}

impl Ks {
    pub const ALL: [Ks; 19] = [
        Ks::Meta,
        Ks::WorkspaceState,
        Ks::AgentState,
        Ks::WsAgent,
        Ks::TokenAgent,
        Ks::ChannelState,
        Ks::WsChannel,
        Ks::ContactState,
        Ks::PhoneContact,
        Ks::ThreadConv,
        Ks::ConvState,
        Ks::ConvMsg,
        Ks::ExtMsg,
        Ks::ExtStatus,
        Ks::WsDelta,
        Ks::WsActivity,
        Ks::OutboxEntry,
        Ks::ContactConv,
        Ks::EmailContact,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Ks::Meta => "meta",
            Ks::WorkspaceState => "workspace_state",
            Ks::AgentState => "agent_state",
            Ks::WsAgent => "ws_agent",
            Ks::TokenAgent => "token_agent",
            Ks::ChannelState => "channel_state",
            Ks::WsChannel => "ws_channel",
            Ks::ContactState => "contact_state",
            Ks::PhoneContact => "phone_contact",
            Ks::ThreadConv => "thread_conv",
            Ks::ConvState => "conv_state",
            Ks::ConvMsg => "conv_msg",
            Ks::ExtMsg => "ext_msg",
            Ks::ExtStatus => "ext_status",
            Ks::WsDelta => "ws_delta",
            Ks::WsActivity => "ws_activity",
            Ks::OutboxEntry => "outbox_entry",
            Ks::ContactConv => "contact_conv",
            Ks::EmailContact => "email_contact",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// `meta` key of the last delta offset assigned.
pub const META_DELTA_HEAD: &[u8] = b"delta_head";
/// `meta` key of the highest offset that may have been pruned from `ws_delta`.
pub const META_DELTA_PRUNED: &[u8] = b"delta_pruned_through";

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

pub fn ws_agent(ws: WorkspaceId, agent: AgentId) -> Vec<u8> {
    join(&[&ws.to_bytes(), &agent.to_bytes()])
}

pub fn ws_channel(ws: WorkspaceId, channel: ChannelId) -> Vec<u8> {
    join(&[&ws.to_bytes(), &channel.to_bytes()])
}

pub fn phone_contact(ws: WorkspaceId, phone: &str) -> Vec<u8> {
    join(&[&ws.to_bytes(), phone.as_bytes()])
}

pub fn contact_conv(contact: ContactId, conv: ConversationId) -> Vec<u8> {
    join(&[&contact.to_bytes(), &conv.to_bytes()])
}

/// Emails compare without case.
pub fn email_contact(ws: WorkspaceId, email: &str) -> Vec<u8> {
    join(&[&ws.to_bytes(), email.trim().to_lowercase().as_bytes()])
}

pub fn thread_conv(channel: ChannelId, thread: &str) -> Vec<u8> {
    join(&[&channel.to_bytes(), thread.as_bytes()])
}

pub fn conv_msg(conv: ConversationId, seq: u64) -> Vec<u8> {
    join(&[&conv.to_bytes(), &seq.to_be_bytes()])
}

pub fn ext_msg(channel: ChannelId, provider_id: &str) -> Vec<u8> {
    join(&[&channel.to_bytes(), provider_id.as_bytes()])
}

/// Value of `ext_msg`: where the provider's message lives.
pub fn ext_msg_value(conv: ConversationId, seq: u64) -> Vec<u8> {
    conv_msg(conv, seq)
}

pub fn decode_conv_seq(bytes: &[u8]) -> Option<(ConversationId, u64)> {
    let conv = ConversationId::from_key_prefix(bytes)?;
    let seq = u64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?);
    Some((conv, seq))
}

pub fn ws_delta(ws: WorkspaceId, offset: u64) -> Vec<u8> {
    join(&[&ws.to_bytes(), &offset.to_be_bytes()])
}

pub fn decode_ws_delta_offset(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(16..24)?.try_into().ok()?))
}

/// Activity times before the epoch sort as the epoch.
pub fn ws_activity(ws: WorkspaceId, last_activity_ms: i64, conv: ConversationId) -> Vec<u8> {
    let at = u64::try_from(last_activity_ms).unwrap_or(0);
    join(&[&ws.to_bytes(), &at.to_be_bytes(), &conv.to_bytes()])
}

pub fn decode_ws_activity(key: &[u8]) -> Option<(i64, ConversationId)> {
    let at = u64::from_be_bytes(key.get(16..24)?.try_into().ok()?);
    let conv = ConversationId::from_key_prefix(key.get(24..)?)?;
    Some((i64::try_from(at).unwrap_or(i64::MAX), conv))
}

pub fn outbox_entry(message: MessageId) -> Vec<u8> {
    message.to_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_names_are_unique_and_follow_the_convention() {
        let mut names: Vec<_> = Ks::ALL.iter().map(|k| k.name()).collect();
        for (i, ks) in Ks::ALL.iter().enumerate() {
            assert_eq!(ks.index(), i);
        }
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Ks::ALL.len());
    }

    #[test]
    fn conv_msg_keys_sort_by_conversation_then_seq() {
        let a = ConversationId::new();
        let b = ConversationId::new();
        assert!(conv_msg(a, 2) < conv_msg(a, 10));
        assert!(conv_msg(a, 255) < conv_msg(a, 256));
        assert!(conv_msg(a, u64::MAX) < conv_msg(b, 0));
        assert_eq!(decode_conv_seq(&ext_msg_value(a, 300)), Some((a, 300)));
        assert_eq!(decode_conv_seq(&[1, 2, 3]), None);
    }

    #[test]
    fn ws_delta_keys_sort_by_workspace_then_offset() {
        let ws = WorkspaceId::new();
        let other = WorkspaceId::new();
        assert!(ws_delta(ws, 9) < ws_delta(ws, 10));
        assert!(ws_delta(ws, u64::MAX) < ws_delta(other, 1));
        assert_eq!(decode_ws_delta_offset(&ws_delta(ws, 42)), Some(42));
    }

    #[test]
    fn ws_activity_keys_sort_by_time_and_decode() {
        let ws = WorkspaceId::new();
        let c1 = ConversationId::new();
        let c2 = ConversationId::new();
        assert!(ws_activity(ws, 1000, c2) < ws_activity(ws, 1001, c1));
        assert!(ws_activity(ws, 1000, c1) < ws_activity(ws, 1000, c2));
        assert_eq!(
            decode_ws_activity(&ws_activity(ws, 1234, c1)),
            Some((1234, c1))
        );
        assert_eq!(decode_ws_activity(&ws_activity(ws, -5, c1)), Some((0, c1)));
    }

    #[test]
    fn variable_parts_come_after_fixed_prefixes() {
        let ch = ChannelId::new();
        let key = thread_conv(ch, "5511987654321");
        assert_eq!(&key[..16], &ch.to_bytes());
        assert_eq!(&key[16..], b"5511987654321");
        let ws = WorkspaceId::new();
        assert_eq!(&phone_contact(ws, "+1")[16..], b"+1");
        assert_eq!(ext_msg(ch, "wamid.A").len(), 16 + 7);
        assert_eq!(&email_contact(ws, " Ana@Acme.IO ")[16..], b"ana@acme.io");
        let contact = ContactId::new();
        let conv = ConversationId::new();
        assert_eq!(&contact_conv(contact, conv)[16..], &conv.to_bytes());
    }
}
