//! Inbound events: what any channel's connector hands to a conversation, whatever the
//! provider's wire format was (each `wire::*` module builds them; see `port`).

use serde::{Deserialize, Serialize};

use crate::ids::ChannelId;
use crate::model::Delivery;
use crate::time::UnixMillis;

/// One message from a lead, normalized.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundEvent {
    pub channel_id: ChannelId,
    /// The provider's thread key (the lead's `wa_id` on WhatsApp).
    pub thread: String,
    /// The provider's message id: the dedupe key.
    pub provider_message_id: String,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    pub contact_email: Option<String>,
    /// The lead's profile id on the provider (LinkedIn's provider id), when it has one.
    pub contact_profile: Option<String>,
    /// When the lead sent it, provider time; `0` if unknown.
    pub sent_at: UnixMillis,
    pub text: String,
    /// The provider's kind of content when it is not plain text.
    pub content_type: Option<String>,
    /// The provider's payload for content we show as a placeholder.
    pub raw: Option<serde_json::Value>,
    pub reply_to: Option<String>,
    /// The files that came with it.
    pub attachments: Vec<crate::model::MessageAttachment>,
    /// Where the lead came from (an ad, a campaign).
    pub campaign: Option<String>,
    /// When the webhook carrying it reached the process (end-to-end latency metric).
    pub received: Option<std::time::Instant>,
    /// What some channels add (email's subject, threading hints, files).
    pub details: EventDetails,
}

/// The parts of an inbound event only some channels have.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventDetails {
    /// Email: the subject line (the conversation keeps its first).
    pub subject: Option<String>,
    /// The whole text when `text` is a shortened form of it (email without its quoted
    /// history).
    pub full_text: Option<String>,
    /// Sent by a machine (an out-of-office, a list): stored, never answered by the AI and
    /// does not reopen the conversation.
    pub auto_reply: bool,
    /// Where the message may belong, best first; the first that names a conversation of
    /// the channel wins, else `thread` (a new conversation).
    pub thread_hints: Vec<ThreadHint>,
    /// A key under which later messages find this conversation ([`ThreadHint::Alias`]).
    pub thread_alias: Option<Vec<u8>>,
    /// Files whose bytes came with the message: stored with it, served by the API.
    pub files: Vec<(crate::model::MessageAttachment, Vec<u8>)>,
    /// Read from the past (a mailbox's first sync), not live: the conversation's activity
    /// is the message's own time, so old mail does not rise to the top of today.
    pub imported: bool,
    /// Written by the account's own user on the provider directly (LinkedIn typed by a
    /// person): an outbound message, unless it is the echo of one of ours.
    pub from_us: bool,
    /// The lead's profile page, picture and headline, when the provider gives them.
    pub profile_url: Option<String>,
    pub avatar_url: Option<String>,
    pub headline: Option<String>,
    /// Set by the router: the provider thread of a conversation we started
    /// ([`ThreadHint::Awaiting`]), which the conversation adopts.
    pub adopt_thread: Option<String>,
}

/// What a thread alias names (`thread_alias`): the conversation that last used it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadAliasValue {
    pub conversation: crate::ids::ConversationId,
    pub at: UnixMillis,
}

/// A hint at the conversation an inbound message belongs to.
#[derive(Clone, Debug, PartialEq)]
pub enum ThreadHint {
    /// A conversation named by the message itself (email's reply token).
    Conversation(crate::ids::ConversationId),
    /// The provider id of a message this one answers (ours or the lead's).
    Replies(String),
    /// A conversation recorded under this key (sender and subject) within `within_ms`.
    Alias { key: Vec<u8>, within_ms: i64 },
    /// A conversation we started toward this lead (provider id) whose provider thread is
    /// not known yet: the message's thread becomes its thread.
    Awaiting(String),
}

/// The thread alias key under which a conversation we started waits for its provider
/// thread ([`ThreadHint::Awaiting`]).
pub fn awaiting_key(lead: &str) -> Vec<u8> {
    let mut key = b"awaiting\0".to_vec();
    key.extend_from_slice(lead.as_bytes());
    key
}

/// The provisional thread of a conversation started toward `lead`, until the provider
/// names the real one.
pub fn provisional_thread(lead: &str) -> String {
    format!("new:{lead}")
}

/// A delivery status for a provider message id we do not know (yet): kept in `ext_status`
/// and applied when the provider's answer to our send names that id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingStatus {
    pub status: Delivery,
    pub error: Option<String>,
    pub at: UnixMillis,
}

/// Phone numbers as `+` and digits, so one lead on two channels is one contact.
pub fn normalize_phone(raw: &str) -> String {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    format!("+{digits}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalize_to_plus_and_digits() {
        assert_eq!(normalize_phone("5511987654321"), "+5511987654321");
        assert_eq!(normalize_phone("+55 (11) 98765-4321"), "+5511987654321");
    }
}
