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
