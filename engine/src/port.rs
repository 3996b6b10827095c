//! The channel port: what every provider's adapter turns its wire format into (an
//! [`InboundBatch`]) and out of (an [`OutboundRequest`], answered by a [`SendOutcome`]).
//! Types and rules only, no I/O: the generic connector in the actors crate does the rest,
//! the same way for every provider.
//!
//! Each provider's wire module (`wire::*`) has the pure functions from its payloads to
//! these types; its adapter (actors crate, `channels::<provider>`) adds the HTTP calls.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, ConversationId, MessageId};
use crate::inbound::InboundEvent;
use crate::model::{ChannelKind, Delivery};
use crate::time::UnixMillis;

/// Everything one webhook carried, provider-neutral, in the order it carried it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InboundBatch {
    pub messages: Vec<InboundEvent>,
    pub statuses: Vec<StatusReport>,
    /// News about the sender account itself (connected, logged out, …).
    pub account: Vec<AccountEvent>,
    /// Items meant for another sender identity (another number or mailbox): not ours.
    pub skipped: usize,
    /// Items that can never be stored (no usable id or sender): answered, not retried.
    pub rejected: usize,
    /// Changes to messages already sent or received (a reaction, an edit, a deletion).
    pub changes: Vec<MessageChange>,
    /// The lead read the thread: our messages in it up to `at` are read.
    pub reads: Vec<ThreadRead>,
    /// Events this channel does not use (acknowledged and counted, never an error).
    pub ignored: usize,
}

/// A change the provider reports on a message it carried, ours or the lead's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageChange {
    /// The changed message's provider id.
    pub provider_message_id: String,
    pub change: Change,
    /// When it changed, provider time; `0` if unknown.
    pub at: UnixMillis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Someone reacted (`from_lead`: the lead, else the account's own user); an empty
    /// `emoji` takes the reaction back.
    Reaction { emoji: String, from_lead: bool },
    /// The text was edited to this (the earlier text is kept in the message's history).
    Edited { text: String },
    /// The message was deleted on the provider (marked, never erased).
    Deleted,
}

/// The lead read the thread: our messages sent up to `at` are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadRead {
    pub thread: String,
    /// Provider time; `0` if unknown (everything sent so far).
    pub at: UnixMillis,
}

/// A delivery report on a message we sent.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusReport {
    /// Our outbound message's provider id.
    pub provider_message_id: String,
    pub status: Delivery,
    /// For failures, the provider's reason in a line.
    pub error: Option<String>,
    /// When the status was reached, provider time; `0` if unknown.
    pub at: UnixMillis,
}

/// What a provider says about the sender account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountEvent {
    /// The account works (again).
    Connected,
    /// The account is disconnected (logged out, session expired): sends wait.
    Disconnected { reason: String },
    /// The provider refuses our credentials.
    AuthFailed { reason: String },
}

/// A file sent with a message: the connector reads it from the store for the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundFile {
    pub name: Option<String>,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// One message to send, with what any channel may need. Built from an `OutboxEntry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRequest {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub channel_id: ChannelId,
    /// The conversation's provider thread: the lead's `wa_id` on WhatsApp, a thread or
    /// chat id elsewhere. Not necessarily an address.
    pub thread: String,
    /// The lead's address when the channel addresses people rather than threads (an
    /// email address); `None` when the thread is enough.
    pub to: Option<String>,
    pub text: String,
    /// Email: the subject line.
    pub subject: Option<String>,
    /// Email: the provider id of the message this one answers (`In-Reply-To`).
    pub in_reply_to: Option<String>,
    /// Email: the thread's earlier message ids (`References`).
    pub references: Vec<String>,
    pub attachments: Vec<OutboundFile>,
    /// The lead's provider id when the conversation has no provider thread yet (one we
    /// start): the adapter opens the thread with this message.
    pub start_with: Option<String>,
}

/// What a provider said to one send attempt, classified once by the adapter so that the
/// connector treats every provider alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted under the provider's message id; `thread` names the provider thread a
    /// started conversation now has.
    Accepted {
        provider_id: String,
        thread: Option<String>,
    },
    /// Failed for a reason that may pass (5xx, timeout, unreachable): retried with backoff,
    /// no sooner than `retry_after` when the provider said so. Counts toward opening the
    /// circuit.
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider asks us to slow down: retried after `retry_after` (or backoff).
    RateLimited {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// This message can never be sent (a closed window, a bad recipient): it fails with
    /// `code` and `reason`; the channel is fine.
    Permanent { code: String, reason: String },
    /// Our credentials are refused: the channel is `auth_failed` and its sends wait until
    /// the credentials are rotated or a probe succeeds.
    AuthFailed { reason: String },
}

impl SendOutcome {
    /// A one-line description for logs and a message's error.
    pub fn reason(&self) -> &str {
        match self {
            SendOutcome::Accepted { provider_id, .. } => provider_id,
            SendOutcome::Retryable { reason, .. }
            | SendOutcome::RateLimited { reason, .. }
            | SendOutcome::Permanent { reason, .. }
            | SendOutcome::AuthFailed { reason } => reason,
        }
    }
}

/// A channel's health as users see it (`GET /api/v1/channels`, `channel_updated` deltas).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelHealth {
    pub id: ChannelId,
    pub kind: ChannelKind,
    pub name: String,
    pub status: ChannelStatus,
    /// The last thing that went wrong, until the channel works again.
    pub last_error: Option<ChannelError>,
    pub circuit: CircuitState,
    /// Outbound messages not yet accepted by the provider (waiting, held or being sent).
    pub outbox_depth: u64,
    pub limits: LimitsView,
}

/// Whether a channel works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChannelStatus {
    /// Sends go through.
    Connected,
    /// The provider fails or refuses our pace: sends pause (circuit open) or wait for
    /// tomorrow's budget.
    Degraded,
    /// The provider says the account is disconnected, or the connector is not running.
    Disconnected,
    /// The provider refuses the channel's credentials: rotate them.
    AuthFailed,
    /// An admin disabled the channel: webhooks are stored, sends wait.
    Disabled,
}

/// The send circuit breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// What went wrong on a channel, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelError {
    /// `provider_unavailable`, `rate_limited`, `auth_failed`, `disconnected`,
    /// `daily_limit_reached`, `connector_stopped`.
    pub code: String,
    pub message: String,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: UnixMillis,
}

/// A channel's send limits and today's use of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitsView {
    pub per_second: Option<u32>,
    pub per_day: Option<u32>,
    /// The least time between two sends of the account, in seconds (some providers punish
    /// bursts); `null`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval_secs: Option<u32>,
    /// Messages accepted by the provider this UTC day.
    pub sent_today: u32,
}

/// What the connector keeps of a channel across restarts (`channel_runtime`): today's send
/// count and the last error. Written only by the channel's connector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRuntime {
    /// The UTC day (days since the epoch) `sent_today` counts.
    pub day: i64,
    pub sent_today: u32,
    #[serde(default)]
    pub last_error: Option<ChannelError>,
}

/// Milliseconds in a day.
pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The UTC day of `at`, as days since the epoch.
pub fn utc_day(at: UnixMillis) -> i64 {
    at.div_euclid(DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days_start_at_midnight() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(DAY_MS - 1), 0);
        assert_eq!(utc_day(DAY_MS), 1);
        assert_eq!(utc_day(-1), -1);
    }

    #[test]
    fn stored_runtime_reads_back() {
        let runtime = ChannelRuntime {
            day: 20_000,
            sent_today: 7,
            last_error: Some(ChannelError {
                code: "auth_failed".into(),
                message: "token expired".into(),
                at: 5,
            }),
        };
        let back: ChannelRuntime =
            crate::codec::decode(&crate::codec::encode(&runtime)).expect("codec");
        assert_eq!(back, runtime);
    }
}
