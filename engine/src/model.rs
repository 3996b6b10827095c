//! The domain: workspaces, agents, channels, contacts, conversations, messages.
//!
//! These structs are both what the store keeps (MessagePack, see `codec`) and, where noted,
//! what the API shows (JSON). Fields are only ever added, with `#[serde(default)]`, so values
//! written by an older build stay readable.

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, ChannelId, ContactId, ConversationId, MessageId, WorkspaceId};
use crate::time::UnixMillis;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub created_at: UnixMillis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Agent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub created_at: UnixMillis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Whatsapp,
    Email,
    Linkedin,
}

/// A channel's rules, whatever its provider: what the conversation actor, the generic
/// connector and the API ask instead of naming a provider. [`ChannelKind::rules`] gives a
/// kind's defaults; [`Channel::rules`] applies the channel's own limits over them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRules {
    /// Free text may be sent only this long after the lead's last message (WhatsApp's
    /// customer-service window); `None` when the channel has no such window.
    pub reply_window_ms: Option<i64>,
    /// Longest text one message may carry.
    pub max_text_chars: usize,
    /// Sends per second per sender identity; `None`: no limit of ours.
    pub per_second: Option<u32>,
    /// Sends per UTC day per sender identity; `None`: no daily cap.
    pub per_day: Option<u32>,
    /// Whether we may write first (start a thread the lead has not opened).
    pub starts_threads: bool,
    /// Whether Confab can write first to a lead named by their provider id
    /// (`POST /api/v1/conversations`: LinkedIn opens a chat).
    pub starts_by_profile_id: bool,
    /// Whether replies name the thread's earlier messages (email's `In-Reply-To` and
    /// `References`): the conversation keeps their ids.
    pub threads_by_references: bool,
    /// Whether files can be sent with a reply (email attachments).
    pub sends_files: bool,
    /// The least time between two sends of one sender identity (a LinkedIn account:
    /// bursts get it restricted); `None`: only `per_second` paces.
    pub min_interval_ms: Option<u64>,
}

/// Where a conversation's reply window stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyWindow {
    pub open: bool,
    /// When it closes (or closed); `None` while the lead has not written.
    pub closes_at: Option<UnixMillis>,
}

impl ChannelRules {
    /// The reply window of a conversation whose lead last wrote at `last_inbound_at`, or
    /// `None` when the channel has no window.
    pub fn reply_window(
        &self,
        last_inbound_at: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Option<ReplyWindow> {
        let window = self.reply_window_ms?;
        let closes_at = last_inbound_at.map(|at| at.saturating_add(window));
        Some(ReplyWindow {
            open: closes_at.is_some_and(|closes| now < closes),
            closes_at,
        })
    }
}

impl ChannelKind {
    /// The kind's defaults; a channel may lower or raise its send limits
    /// ([`ChannelLimits`]).
    pub fn rules(self) -> ChannelRules {
        match self {
            // Cloud API: 80 messages per second per number; templates only outside 24 h.
            ChannelKind::Whatsapp => ChannelRules {
                reply_window_ms: Some(24 * 60 * 60 * 1000),
                max_text_chars: 4096,
                per_second: Some(80),
                per_day: None,
                starts_threads: false,
                starts_by_profile_id: false,
                threads_by_references: false,
                sends_files: false,
                min_interval_ms: None,
            },
            // A mailbox: no window; mail providers cap a mailbox's day (Gmail ~500 to
            // 2,000), so channels set `daily_limit`; a few a second keeps relays friendly.
            ChannelKind::Email => ChannelRules {
                reply_window_ms: None,
                max_text_chars: 100_000,
                per_second: Some(5),
                per_day: None,
                starts_threads: true,
                starts_by_profile_id: false,
                threads_by_references: true,
                sends_files: true,
                min_interval_ms: None,
            },
            // An account through Unipile: LinkedIn restricts accounts that send more than
            // ~100 messages a day or in bursts, so a conservative cap and spacing.
            ChannelKind::Linkedin => ChannelRules {
                reply_window_ms: None,
                max_text_chars: 8000,
                per_second: None,
                per_day: Some(LINKEDIN_DAILY_LIMIT),
                starts_threads: true,
                starts_by_profile_id: true,
                threads_by_references: false,
                sends_files: true,
                min_interval_ms: Some(u64::from(LINKEDIN_MIN_INTERVAL_SECS) * 1000),
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Whatsapp => "whatsapp",
            ChannelKind::Email => "email",
            ChannelKind::Linkedin => "linkedin",
        }
    }
}

/// A LinkedIn account's default daily send cap.
pub const LINKEDIN_DAILY_LIMIT: u32 = 100;
/// A LinkedIn account's default least spacing between two sends, in seconds.
pub const LINKEDIN_MIN_INTERVAL_SECS: u32 = 20;

/// What happens to a message once the channel's daily cap is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OverDailyCap {
    /// It waits in the outbox and goes the next UTC day.
    #[default]
    Wait,
    /// It fails with `daily_limit_reached`.
    Fail,
}

/// A channel's own send limits, over its kind's defaults. Stored with the channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelLimits {
    /// Sends per second; `None`: the kind's default.
    #[serde(default)]
    pub per_second: Option<u32>,
    /// Sends per UTC day; `None`: the kind's default (most kinds have no cap).
    #[serde(default)]
    pub per_day: Option<u32>,
    #[serde(default)]
    pub over_daily_cap: OverDailyCap,
    /// The least seconds between two sends; `None`: the kind's default, `Some(0)`: none.
    #[serde(default)]
    pub min_interval_secs: Option<u32>,
}

/// Default Graph API base for WhatsApp Cloud API sends.
pub const WHATSAPP_DEFAULT_API_BASE: &str = "https://graph.facebook.com/v21.0";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsappConfig {
    pub phone_number_id: String,
    pub app_secret: String,
    pub verify_token: String,
    pub access_token: String,
    pub api_base_url: String,
}

/// How many provider message ids a conversation keeps for its replies' references (the
/// newest; email's `References`).
pub const MAX_THREAD_REFERENCES: usize = 20;

/// How a mail connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MailSecurity {
    /// Plain connection upgraded with STARTTLS (SMTP 587, IMAP 143): required, never
    /// optional.
    Starttls,
    /// TLS from the first byte (SMTP 465, IMAP 993).
    Tls,
    /// No encryption: loopback only, unless the server's configuration allows it.
    None,
}

/// A mail server and the account on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailServer {
    pub host: String,
    pub port: u16,
    pub security: MailSecurity,
    pub username: String,
    pub password: String,
    /// IMAP: the mailbox read (`INBOX`).
    #[serde(default)]
    pub mailbox: Option<String>,
}

/// An email channel: one address, sent from over SMTP, read over IMAP and/or an
/// inbound-parse webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailConfig {
    /// The address mail is sent from and replies come to (`sales@agency.example`).
    pub address: String,
    pub display_name: Option<String>,
    /// Signs `POST /webhooks/email/{id}` (HMAC) or is its Basic password (SendGrid).
    pub inbound_secret: Option<String>,
    pub smtp: MailServer,
    pub imap: Option<MailServer>,
    /// Keys the reply tokens of `Reply-To` (generated, never shown).
    pub token_key: String,
}

/// A LinkedIn account connected through Unipile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedinConfig {
    /// Unipile's id of the connected account.
    pub account_id: String,
    /// The account's Unipile API (`https://apiX.unipile.com:PORT`).
    pub api_base_url: String,
    /// Sent as `X-API-KEY`.
    pub api_key: String,
    /// Expected in the webhook's `Unipile-Auth` header.
    pub webhook_secret: String,
}

/// A test-only provider speaking a trivial JSON format over HTTP (see the actors crate's
/// `channels::loopback`): proves the channel port without any provider's name. It poses as
/// the kind it names.
#[cfg(feature = "loopback")]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopbackConfig {
    pub poses_as: ChannelKind,
    /// Where sends are posted (`{base_url}/send`).
    pub base_url: String,
    /// Shared with the provider: sent as a bearer token, expected on webhooks.
    pub secret: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelConfig {
    Whatsapp(WhatsappConfig),
    Email(EmailConfig),
    Linkedin(LinkedinConfig),
    #[cfg(feature = "loopback")]
    Loopback(LoopbackConfig),
}

impl ChannelConfig {
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelConfig::Whatsapp(_) => ChannelKind::Whatsapp,
            ChannelConfig::Email(_) => ChannelKind::Email,
            ChannelConfig::Linkedin(_) => ChannelKind::Linkedin,
            #[cfg(feature = "loopback")]
            ChannelConfig::Loopback(c) => c.poses_as,
        }
    }

    pub fn whatsapp_mut(&mut self) -> Option<&mut WhatsappConfig> {
        match self {
            ChannelConfig::Whatsapp(config) => Some(config),
            _ => None,
        }
    }

    /// The WhatsApp settings, for a WhatsApp channel.
    pub fn whatsapp(&self) -> Option<&WhatsappConfig> {
        match self {
            ChannelConfig::Whatsapp(config) => Some(config),
            _ => None,
        }
    }

    /// The email settings, for an email channel.
    pub fn email(&self) -> Option<&EmailConfig> {
        match self {
            ChannelConfig::Email(config) => Some(config),
            _ => None,
        }
    }

    pub fn email_mut(&mut self) -> Option<&mut EmailConfig> {
        match self {
            ChannelConfig::Email(config) => Some(config),
            _ => None,
        }
    }

    /// The LinkedIn settings, for a LinkedIn channel.
    pub fn linkedin(&self) -> Option<&LinkedinConfig> {
        match self {
            ChannelConfig::Linkedin(config) => Some(config),
            _ => None,
        }
    }

    pub fn linkedin_mut(&mut self) -> Option<&mut LinkedinConfig> {
        match self {
            ChannelConfig::Linkedin(config) => Some(config),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: ChannelId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub config: ChannelConfig,
    pub created_at: UnixMillis,
    /// A disabled channel still stores its webhooks; its sends wait in the outbox.
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub limits: ChannelLimits,
}

impl Channel {
    pub fn kind(&self) -> ChannelKind {
        self.config.kind()
    }

    /// The kind's rules with this channel's own send limits applied.
    pub fn rules(&self) -> ChannelRules {
        let mut rules = self.kind().rules();
        if let Some(per_second) = self.limits.per_second {
            rules.per_second = Some(per_second);
        }
        if let Some(per_day) = self.limits.per_day {
            rules.per_day = Some(per_day);
        }
        if let Some(secs) = self.limits.min_interval_secs {
            rules.min_interval_ms = (secs > 0).then(|| u64::from(secs) * 1000);
        }
        rules
    }
}

/// A lead. JSON shape: the `contact` object of the API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Contact {
    pub id: ContactId,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub avatar_url: Option<String>,
    /// The lead's profile page on the provider (LinkedIn), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_url: Option<String>,
}

/// Stored form of a contact (the JSON form hides the workspace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContact {
    pub workspace_id: WorkspaceId,
    pub contact: Contact,
    pub created_at: UnixMillis,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Open,
    Pending,
    Closed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AiMode {
    #[default]
    Active,
    Paused,
    Manual,
}

/// A conversation's whole state, as its actor holds it and as `conv_state` stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: ConversationId,
    pub workspace_id: WorkspaceId,
    pub channel_id: ChannelId,
    pub channel: ChannelKind,
    /// The provider's thread key: the lead's `wa_id` on WhatsApp.
    pub external_thread: String,
    pub contact: Contact,
    pub status: Status,
    pub assignee_id: Option<AgentId>,
    pub tags: Vec<String>,
    pub campaign: Option<String>,
    pub unread_count: u32,
    pub ai_mode: AiMode,
    pub created_at: UnixMillis,
    pub last_activity_at: UnixMillis,
    pub preview: String,
    /// When the lead last wrote (provider time); opens WhatsApp's 24-hour window.
    pub last_inbound_at: Option<UnixMillis>,
    /// The sequence number the next message will get; messages are 1..next_seq.
    pub next_seq: u64,
    /// Raw data for the response-time analytics: the lead's first message, the first
    /// answer to it and who gave it, and when the conversation was last closed.
    #[serde(default)]
    pub first_inbound_at: Option<UnixMillis>,
    #[serde(default)]
    pub first_response_at: Option<UnixMillis>,
    #[serde(default)]
    pub first_responder: Option<Responder>,
    #[serde(default)]
    pub closed_at: Option<UnixMillis>,
    /// The seq of the lead's last message: an AI answer to an older one is superseded.
    #[serde(default)]
    pub last_inbound_seq: Option<u64>,
    /// Counts human interventions (a human message to the lead, a change of AI mode): an
    /// AI decision prepared under an older count is discarded.
    #[serde(default)]
    pub ai_epoch: u64,
    /// AI replies today (UTC day `ai_day`): the loop limit.
    #[serde(default)]
    pub ai_day: i64,
    #[serde(default)]
    pub ai_replies_today: u32,
    /// Email: the thread's subject (its first message's).
    #[serde(default)]
    pub subject: Option<String>,
    /// Email: the thread's newest message ids (ours and the lead's), oldest first, for
    /// `In-Reply-To` and `References`.
    #[serde(default)]
    pub references: Vec<String>,
    /// A conversation we started before the provider named its thread: the lead's
    /// provider id, until the thread is known (`external_thread` is then provisional).
    #[serde(default)]
    pub awaiting_thread: Option<String>,
    /// When the lead's unanswered message makes the conversation overdue (its armed
    /// timer); `None` when nobody is waiting.
    #[serde(default)]
    pub overdue_at: Option<UnixMillis>,
    /// Snoozed (status pending) until this time or the lead's next message, whichever
    /// is first: its armed timer. Out of the working views meanwhile.
    #[serde(default)]
    pub snoozed_until: Option<UnixMillis>,
    /// Who snoozed it: told when it comes back if nobody is assigned.
    #[serde(default)]
    pub snoozed_by: Option<AgentId>,
    /// What became of the lead: a label of the workspace's outcome list, set by an agent.
    #[serde(default)]
    pub outcome: Option<String>,
    /// When `outcome` was last set or cleared.
    #[serde(default)]
    pub outcome_at: Option<UnixMillis>,
    /// The AI agent's suggestion, until an agent sets an outcome.
    #[serde(default)]
    pub suggested_outcome: Option<crate::outcomes::OutcomeSuggestion>,
    /// Merged into this conversation: its thread keeps its own messages and channel, but
    /// it is out of every view and shown in this one's timeline (see [`MergedConversation`]).
    #[serde(default)]
    pub merged_into: Option<ConversationId>,
    /// The conversations merged into this one, as last reported by their actors.
    #[serde(default)]
    pub merged: Vec<MergedConversation>,
}

/// A conversation merged into another, as the other shows it: a thread of the same lead
/// on its own channel, whose messages join the merged timeline and which replies may go to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MergedConversation {
    pub id: ConversationId,
    pub channel: ChannelKind,
    pub channel_id: ChannelId,
    pub unread_count: u32,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_activity_at: UnixMillis,
    pub preview: String,
    /// Its channel's reply window, absent when the channel has none (as on a card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_window: Option<CardWindow>,
    /// The seq of its lead's last message: a newer one reopens the merged conversation.
    #[serde(default)]
    pub last_inbound_seq: Option<u64>,
}

/// Who answered a lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Responder {
    Ai,
    Human,
}

/// The conversation card of the API (list items and `conversation_updated` deltas).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationCard {
    pub id: ConversationId,
    pub channel: ChannelKind,
    pub channel_id: ChannelId,
    pub status: Status,
    /// Snoozed until then (status `pending`, listed in the `snoozed` view): back to
    /// `open` at that time or at the lead's next message. `null` when not snoozed.
    #[serde(default, with = "crate::time::rfc3339_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub snoozed_until: Option<UnixMillis>,
    pub ai_mode: AiMode,
    pub assignee_id: Option<AgentId>,
    pub tags: Vec<String>,
    pub campaign: Option<String>,
    /// What became of the lead (a label of `GET /api/v1/outcomes`), `null` until set.
    #[serde(default)]
    pub outcome: Option<String>,
    /// The AI agent's suggestion of an outcome with its reason, `null` when it has none or
    /// an agent has set one.
    #[serde(default)]
    pub suggested_outcome: Option<crate::outcomes::OutcomeSuggestion>,
    pub unread_count: u32,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_activity_at: UnixMillis,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: UnixMillis,
    pub preview: String,
    pub contact: Contact,
    /// The channel's reply window (WhatsApp's 24 hours), absent when it has none: free
    /// text can be sent until `closes_at`; a `null` `closes_at` means the lead never
    /// wrote, so the window is closed. (A conversation's detail replaces it with its own
    /// `reply_window`, which adds `open`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_window: Option<CardWindow>,
    /// Merged into that conversation: out of every view, its messages shown in that one's
    /// timeline. `null` otherwise.
    #[serde(default)]
    pub merged_into: Option<ConversationId>,
    /// The conversations merged into this one (other threads of the lead, on their own
    /// channels): their messages belong to this timeline, replies may go to any of them,
    /// and `unread_count` includes theirs.
    #[serde(default)]
    pub merged: Vec<MergedConversation>,
}

/// The reply window on a conversation card; whether it is open follows from the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CardWindow {
    #[serde(with = "crate::time::rfc3339_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub closes_at: Option<UnixMillis>,
}

impl Conversation {
    pub fn card(&self) -> ConversationCard {
        ConversationCard {
            id: self.id,
            channel: self.channel,
            channel_id: self.channel_id,
            status: self.status,
            snoozed_until: self.snoozed_until,
            ai_mode: self.ai_mode,
            assignee_id: self.assignee_id,
            tags: self.tags.clone(),
            campaign: self.campaign.clone(),
            outcome: self.outcome.clone(),
            suggested_outcome: self.suggested_outcome.clone(),
            unread_count: self
                .merged
                .iter()
                .fold(self.unread_count, |n, m| n.saturating_add(m.unread_count)),
            last_activity_at: self.last_activity_at,
            created_at: self.created_at,
            preview: self.preview.clone(),
            contact: self.contact.clone(),
            reply_window: self.card_window(),
            merged_into: self.merged_into,
            merged: self.merged.clone(),
        }
    }

    fn card_window(&self) -> Option<CardWindow> {
        self.channel
            .rules()
            .reply_window_ms
            .map(|window| CardWindow {
                closes_at: self.last_inbound_at.map(|at| at.saturating_add(window)),
            })
    }

    /// What the conversation it is merged into shows of it.
    pub fn as_merged(&self) -> MergedConversation {
        MergedConversation {
            id: self.id,
            channel: self.channel,
            channel_id: self.channel_id,
            unread_count: self.unread_count,
            last_activity_at: self.last_activity_at,
            preview: self.preview.clone(),
            reply_window: self.card_window(),
            last_inbound_seq: self.last_inbound_seq,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    Lead,
    Ai,
    Agent,
    System,
}

/// Delivery of an outbound message. Moves forward only: see [`Delivery::advance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl Delivery {
    fn rank(self) -> u8 {
        match self {
            Delivery::Queued => 0,
            Delivery::Sent => 1,
            Delivery::Delivered => 2,
            Delivery::Read => 3,
            Delivery::Failed => 1,
        }
    }

    /// The status after `next` is reported on a message currently at `self`, or `None` when
    /// the report changes nothing. Statuses arrive unordered and repeated, so only forward
    /// moves apply: queued < sent < delivered < read. `failed` ends a message that was not
    /// yet delivered; a later `delivered` or `read` proves it arrived after all.
    pub fn advance(self, next: Delivery) -> Option<Delivery> {
        let moved = match (self, next) {
            (a, b) if a == b => false,
            (Delivery::Failed, Delivery::Delivered | Delivery::Read) => true,
            (Delivery::Failed, _) => false,
            (current, Delivery::Failed) => current.rank() < Delivery::Delivered.rank(),
            (current, next) => next.rank() > current.rank(),
        };
        moved.then_some(next)
    }
}

/// A message. JSON shape: the `message` object of the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub seq: u64,
    pub direction: Direction,
    pub sender: Sender,
    pub agent_id: Option<AgentId>,
    pub text: String,
    pub internal: bool,
    pub channel: ChannelKind,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: UnixMillis,
    pub delivery: Option<Delivery>,
    pub external_id: Option<String>,
    /// The provider's kind of content (`text`, `image`, …) when it is not plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The provider id of the message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Why the last delivery attempt failed, as the provider said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The provider's payload of content shown as a placeholder (media, locations, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<serde_json::Value>,
    /// Why the AI sent this message (or escalated, on a system message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<crate::ai::AiReasoning>,
    /// The files that came with it, in order; file `i` is served at
    /// `GET /api/v1/conversations/{id}/messages/{seq}/attachments/{i}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<MessageAttachment>,
    /// Email: the subject line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The whole text when `text` is shortened (an email without its quoted history and
    /// signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_text: Option<String>,
    /// Sent by a machine (an out-of-office, a mailing list): never answered by the AI,
    /// and it does not reopen the conversation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_reply: bool,
    /// Ours, but written on the provider directly (a person typing in LinkedIn), not
    /// through Confab.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sent_elsewhere: bool,
    /// Reactions, in the order they came (one per person: a new one replaces theirs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    /// Earlier texts of an edited message, oldest first (`text` is the current one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<MessageEdit>,
    /// When the message was deleted on the provider: marked, its text kept for agents.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339_option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub deleted_at: Option<UnixMillis>,
}

/// A reaction to a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reaction {
    pub emoji: String,
    /// `lead`, or `agent` for the account's own user.
    pub by: Sender,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: UnixMillis,
}

/// A message's text before an edit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageEdit {
    pub text: String,
    /// When it was replaced.
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: UnixMillis,
}

/// A file that came with a message: what it is, and where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageAttachment {
    /// The file name the sender gave, if any.
    pub name: Option<String>,
    /// Its media type as the sender declared it (`image/jpeg`, `application/pdf`).
    pub content_type: String,
    /// Its size in bytes, when known before it is fetched.
    pub size: Option<u64>,
    /// The provider's id of the file, fetched through the channel on demand (WhatsApp's
    /// media id); `null` when Confab stores the bytes itself.
    pub media_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::Delivery::*;
    use super::{ChannelKind, ReplyWindow};

    #[test]
    fn the_whatsapp_reply_window_is_24_hours_from_the_last_inbound_message() {
        let day = 24 * 60 * 60 * 1000;
        let rules = ChannelKind::Whatsapp.rules();
        assert_eq!(
            rules.reply_window(Some(1_000), 1_000 + day - 1),
            Some(ReplyWindow {
                open: true,
                closes_at: Some(1_000 + day)
            })
        );
        assert_eq!(
            rules.reply_window(Some(1_000), 1_000 + day).map(|w| w.open),
            Some(false)
        );
        assert_eq!(
            rules.reply_window(None, 1_000),
            Some(ReplyWindow {
                open: false,
                closes_at: None
            })
        );
        assert_eq!(ChannelKind::Email.rules().reply_window(Some(1), 2), None);
    }

    #[test]
    fn delivery_moves_forward_only() {
        assert_eq!(Queued.advance(Sent), Some(Sent));
        assert_eq!(Sent.advance(Read), Some(Read));
        assert_eq!(Read.advance(Delivered), None);
        assert_eq!(Delivered.advance(Sent), None);
        assert_eq!(Sent.advance(Sent), None);
        assert_eq!(Queued.advance(Failed), Some(Failed));
        assert_eq!(Sent.advance(Failed), Some(Failed));
        assert_eq!(Delivered.advance(Failed), None);
        assert_eq!(Failed.advance(Sent), None);
        assert_eq!(Failed.advance(Delivered), Some(Delivered));
        assert_eq!(Failed.advance(Read), Some(Read));
    }
}
