//! Every keyspace of the store and its key layout, in one place.
//!
//! Keyspaces are named `<key>_<value>`. Ids are 16 bytes (ULID, time-ordered); integers are
//! big-endian so that byte order is numeric order. Variable-length parts come last.
//!
//! Text from outside (provider ids, phones, emails, tags, campaigns) is bounded before it
//! becomes part of a key ([`key_text`]): a key never grows with its input, so no input can
//! reach fjall's key limit.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::ids::{
    ActivityId, AgentId, ArticleId, CannedReplyId, ChannelId, ContactId, ConversationId,
    FeedbackId, MessageId, NotificationId, PushSubscriptionId, WorkspaceId,
};

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
    /// workspace id ‖ lane ‖ last activity ‖ conversation id → `LaneSummary`: the inbox
    /// views, newest first (see [`lane_conv`] and `views`).
    LaneConv,
    /// workspace id ‖ facet (tag or campaign) ‖ conversation id → (): membership sets.
    FacetConv,
    /// workspace id ‖ facet or lane → i64 count, maintained by `WriteSet::add`.
    FacetCount,
    /// message id → `OutboxEntry` (outbound messages not yet accepted by the provider)
    OutboxEntry,
    /// contact id ‖ conversation id → () (one lead, several conversations)
    ContactConv,
    /// workspace id ‖ lower-cased email → contact id
    EmailContact,
    /// workspace id ‖ UTC day ‖ stat → i64 count, maintained by `WriteSet::add`: the
    /// conversation analytics' daily buckets (see `analytics`).
    DayStat,
    /// conversation id → `analytics::ConversationStats` (CSAT, replies by AI and humans)
    ConvStats,
    /// channel id → `port::ChannelRuntime` (today's send count, last error), written only
    /// by the channel's connector.
    ChannelRuntime,
    /// workspace id ‖ channel kind ‖ provider profile id → contact id (identities that
    /// are neither a phone nor an email, such as LinkedIn's provider ids).
    ProfileContact,
    /// workspace id → `ai::AiConfig`
    AiConfig,
    /// workspace id → `Vec<ai::EscalationRule>` (absent: the defaults)
    AiRules,
    /// workspace id ‖ article id → `ai::Article`
    KbArticle,
    /// conversation id ‖ seq of the lead's message ‖ ulid → `ai::AiReasoning`: every AI
    /// decision about that message (answered, escalated, discarded).
    AiLog,
    /// conversation id ‖ seq of the AI message ‖ feedback id → `ai::Feedback`
    AiFeedback,
    /// SHA-256 of a browser session's secret → `auth::Session`
    Session,
    /// lowercased email ‖ 0 ‖ agent id → `auth::Login`: the agent's password hash
    Login,
    /// SHA-256 of an invitation's secret → `auth::Invite`
    Invite,
    /// channel id ‖ alias (email: sender ‖ subject digest) → `ThreadAlias`: the
    /// conversation that last used it, and when
    ThreadAlias,
    /// message id ‖ attachment index → the bytes of a file that came with a message
    Blob,
    /// agent id → `notify::NotificationSettings` (absent: the defaults)
    NotifSettings,
    /// workspace id ‖ agent id → (): agents who want to hear of new unassigned
    /// conversations
    NotifOptIn,
    /// agent id ‖ notification id → `notify::Notification`
    Notif,
    /// agent id ‖ notification id → (): the agent's unread notifications
    NotifUnread,
    /// agent id → i64 unread notifications, maintained by `WriteSet::add`
    NotifCount,
    /// agent id ‖ notification id → big-endian i64 (not before, Unix ms): notifications
    /// waiting for the agent's next notification email
    NotifEmail,
    /// agent id ‖ subscription id → `notify::PushSubscription`
    PushSub,
    /// notification id ‖ subscription id → `notify::PushEntry`: Web Push deliveries not
    /// yet accepted by the push service
    PushOutbox,
    /// due (Unix ms, big-endian) ‖ timer kind ‖ conversation id → (): durable timers
    Timer,
    /// workspace id → `notify::WorkspaceSettings`
    WsSettings,
    /// workspace id ‖ erasure id (ULID text) → `erasure::Erasure`: erasures of leads, open
    /// and done (the audit of who erased what, without the erased data)
    Erasure,
    /// workspace id ‖ canned reply id → `canned::CannedReply`
    CannedReply,
    /// workspace id ‖ lower-cased shortcut → canned reply id (one reply per shortcut)
    CannedShortcut,
    /// workspace id ‖ day (u32, UTC days since 1970) ‖ campaign ‖ outcome → i64:
    /// conversations whose outcome was set that day, maintained by `WriteSet::add`
    /// (layout in [`outcome_stat`])
    OutcomeStat,
    /// conversation id ‖ activity id → `audit::Activity`: who changed what, oldest first
    Activity,
    /// workspace id ‖ activity id → `audit::AuditEntry`: admins' changes to the workspace
    Audit,
    /// workspace id ‖ webhook id → `webhooks::Endpoint`: outgoing webhooks and how far
    /// each has delivered
    Webhook,
    /// conversation id ‖ conversation id → (): a conversation (the second) merged into
    /// another (the first), written with the second's `merged_into` (see [`merge`])
    Merge,
}

impl Ks {
    pub const ALL: [Ks; 53] = [
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
        Ks::LaneConv,
        Ks::FacetConv,
        Ks::FacetCount,
        Ks::OutboxEntry,
        Ks::ContactConv,
        Ks::EmailContact,
        Ks::DayStat,
        Ks::ConvStats,
        Ks::ChannelRuntime,
        Ks::ProfileContact,
        Ks::AiConfig,
        Ks::AiRules,
        Ks::KbArticle,
        Ks::AiLog,
        Ks::AiFeedback,
        Ks::Session,
        Ks::Login,
        Ks::Invite,
        Ks::ThreadAlias,
        Ks::Blob,
        Ks::NotifSettings,
        Ks::NotifOptIn,
        Ks::Notif,
        Ks::NotifUnread,
        Ks::NotifCount,
        Ks::NotifEmail,
        Ks::PushSub,
        Ks::PushOutbox,
        Ks::Timer,
        Ks::WsSettings,
        Ks::Erasure,
        Ks::CannedReply,
        Ks::CannedShortcut,
        Ks::OutcomeStat,
        Ks::Activity,
        Ks::Audit,
        Ks::Webhook,
        Ks::Merge,
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
            Ks::LaneConv => "lane_conv",
            Ks::FacetConv => "facet_conv",
            Ks::FacetCount => "facet_count",
            Ks::OutboxEntry => "outbox_entry",
            Ks::ContactConv => "contact_conv",
            Ks::EmailContact => "email_contact",
            Ks::DayStat => "day_stat",
            Ks::ConvStats => "conv_stats",
            Ks::ChannelRuntime => "channel_runtime",
            Ks::ProfileContact => "profile_contact",
            Ks::AiConfig => "ai_config",
            Ks::AiRules => "ai_rules",
            Ks::KbArticle => "kb_article",
            Ks::AiLog => "ai_log",
            Ks::AiFeedback => "ai_feedback",
            Ks::Session => "session",
            Ks::Login => "login",
            Ks::Invite => "invite",
            Ks::ThreadAlias => "thread_alias",
            Ks::Blob => "blob",
            Ks::NotifSettings => "notif_settings",
            Ks::NotifOptIn => "notif_opt_in",
            Ks::Notif => "notif",
            Ks::NotifUnread => "notif_unread",
            Ks::NotifCount => "notif_count",
            Ks::NotifEmail => "notif_email",
            Ks::PushSub => "push_sub",
            Ks::PushOutbox => "push_outbox",
            Ks::Timer => "timer",
            Ks::WsSettings => "ws_settings",
            Ks::Erasure => "erasure",
            Ks::CannedReply => "canned_reply",
            Ks::CannedShortcut => "canned_shortcut",
            Ks::OutcomeStat => "outcome_stat",
            Ks::Activity => "activity",
            Ks::Audit => "audit",
            Ks::Webhook => "webhook",
            Ks::Merge => "merge",
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

/// Longest text kept as it is inside a key.
pub const MAX_KEY_TEXT: usize = 256;
/// Bytes of a longer text kept before its hash.
const HASHED_TEXT_PREFIX: usize = MAX_KEY_TEXT - 32;

/// `text` as a key part: the text itself when it has at most [`MAX_KEY_TEXT`] bytes;
/// otherwise its first bytes, its SHA-256 and a marker byte, [`MAX_KEY_TEXT`] + 1 bytes
/// in all. A hashed form is longer than any text kept as it is, so the two never collide.
pub fn key_text(text: &str) -> Cow<'_, [u8]> {
    let bytes = text.as_bytes();
    if bytes.len() <= MAX_KEY_TEXT {
        return Cow::Borrowed(bytes);
    }
    let mut bounded = Vec::with_capacity(MAX_KEY_TEXT + 1);
    bounded.extend_from_slice(&bytes[..HASHED_TEXT_PREFIX]);
    bounded.extend_from_slice(&Sha256::digest(bytes));
    bounded.push(0xFF);
    Cow::Owned(bounded)
}

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

/// An agent's notification (its unread mark and email wait use the same key).
pub fn agent_notif(agent: AgentId, id: NotificationId) -> Vec<u8> {
    join(&[&agent.to_bytes(), &id.to_bytes()])
}

pub fn push_sub(agent: AgentId, id: PushSubscriptionId) -> Vec<u8> {
    join(&[&agent.to_bytes(), &id.to_bytes()])
}

pub fn push_outbox(id: NotificationId, subscription: PushSubscriptionId) -> Vec<u8> {
    join(&[&id.to_bytes(), &subscription.to_bytes()])
}

pub fn notif_opt_in(ws: WorkspaceId, agent: AgentId) -> Vec<u8> {
    join(&[&ws.to_bytes(), &agent.to_bytes()])
}

/// A durable timer of `kind` for a conversation, due at `due` (Unix ms).
pub fn timer(due: i64, kind: u8, conv: ConversationId) -> Vec<u8> {
    join(&[&due.max(0).to_be_bytes(), &[kind], &conv.to_bytes()])
}

/// A timer key's parts: due, kind, conversation.
pub fn decode_timer(key: &[u8]) -> Option<(i64, u8, ConversationId)> {
    let due = i64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let kind = *key.get(8)?;
    let conv = ConversationId::from_key_prefix(key.get(9..)?)?;
    Some((due, kind, conv))
}

pub fn ws_channel(ws: WorkspaceId, channel: ChannelId) -> Vec<u8> {
    join(&[&ws.to_bytes(), &channel.to_bytes()])
}

pub fn phone_contact(ws: WorkspaceId, phone: &str) -> Vec<u8> {
    join(&[&ws.to_bytes(), &key_text(phone)])
}

pub fn canned_reply(ws: WorkspaceId, reply: CannedReplyId) -> Vec<u8> {
    join(&[&ws.to_bytes(), &reply.to_bytes()])
}

/// A shortcut's key: case-insensitive, so `/Price` and `/price` are one shortcut.
pub fn canned_shortcut(ws: WorkspaceId, shortcut: &str) -> Vec<u8> {
    join(&[&ws.to_bytes(), shortcut.to_lowercase().as_bytes()])
}

pub fn kb_article(ws: WorkspaceId, article: ArticleId) -> Vec<u8> {
    join(&[&ws.to_bytes(), &article.to_bytes()])
}

/// An AI decision about the lead's message `seq` (`id` orders several).
pub fn ai_log(conv: ConversationId, seq: u64, id: MessageId) -> Vec<u8> {
    join(&[&conv.to_bytes(), &seq.to_be_bytes(), &id.to_bytes()])
}

pub fn ai_feedback(conv: ConversationId, seq: u64, id: FeedbackId) -> Vec<u8> {
    join(&[&conv.to_bytes(), &seq.to_be_bytes(), &id.to_bytes()])
}

/// A provider profile id of a lead on a channel kind (`kind` as its name).
pub fn profile_contact(ws: WorkspaceId, kind: &str, profile: &str) -> Vec<u8> {
    join(&[&ws.to_bytes(), kind.as_bytes(), &[0], &key_text(profile)])
}

pub fn contact_conv(contact: ContactId, conv: ConversationId) -> Vec<u8> {
    join(&[&contact.to_bytes(), &conv.to_bytes()])
}

/// Emails compare without case.
pub fn email_contact(ws: WorkspaceId, email: &str) -> Vec<u8> {
    join(&[&ws.to_bytes(), &key_text(&email.trim().to_lowercase())])
}

pub fn thread_conv(channel: ChannelId, thread: &str) -> Vec<u8> {
    join(&[&channel.to_bytes(), &key_text(thread)])
}

pub fn conv_msg(conv: ConversationId, seq: u64) -> Vec<u8> {
    join(&[&conv.to_bytes(), &seq.to_be_bytes()])
}

pub fn ext_msg(channel: ChannelId, provider_id: &str) -> Vec<u8> {
    join(&[&channel.to_bytes(), &key_text(provider_id)])
}

/// `channel_runtime` key of an email channel's mailbox cursor (beside the channel's own
/// runtime, which is keyed by the channel id alone).
pub fn imap_cursor(channel: ChannelId) -> Vec<u8> {
    join(&[&channel.to_bytes(), b"/imap"])
}

/// `channel_runtime` key of a channel's gap repair cursor (until when its provider's
/// history was read back).
pub fn repair_cursor(channel: ChannelId) -> Vec<u8> {
    join(&[&channel.to_bytes(), b"/repair"])
}

/// `thread_alias` key: a channel's alias (see `inbound::ThreadHint::Alias`).
pub fn thread_alias(channel: ChannelId, alias: &[u8]) -> Vec<u8> {
    join(&[&channel.to_bytes(), alias])
}

/// `blob` key: file `index` of message `message`.
pub fn blob(message: MessageId, index: u32) -> Vec<u8> {
    join(&[&message.to_bytes(), &index.to_be_bytes()])
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

/// A lane: one time-ordered list of conversations of a workspace. Every conversation is in
/// exactly one [`Lane::Status`] lane and, when active, in exactly one [`Lane::Assignee`]
/// lane. Lanes are split by channel and AI mode so that those filters pick lanes instead of
/// skipping entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    Status {
        state: LaneState,
        channel: u8,
        mode: u8,
    },
    /// Active conversations by assignee; `None` is unassigned.
    Assignee {
        agent: Option<AgentId>,
        channel: u8,
        mode: u8,
    },
}

/// Which status lane a conversation is in (its byte in the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LaneState {
    /// Open or pending, not snoozed: the working views.
    Active = 0,
    Closed = 1,
    /// Pending until a time or the lead's next message.
    Snoozed = 2,
}

impl LaneState {
    fn decode(byte: u8) -> Option<LaneState> {
        match byte {
            0 => Some(LaneState::Active),
            1 => Some(LaneState::Closed),
            2 => Some(LaneState::Snoozed),
            _ => None,
        }
    }
}

const LANE_STATUS: u8 = 0;
const LANE_ASSIGNEE: u8 = 1;
/// Facet kinds in `facet_conv` and `facet_count`.
pub const FACET_TAG: u8 = 0;
pub const FACET_CAMPAIGN: u8 = 1;
pub const FACET_OUTCOME: u8 = 3;
/// Lane counters live in `facet_count` under this kind.
const FACET_LANE: u8 = 2;

impl Lane {
    /// Fixed length per kind, so lane encodings are prefix-free.
    pub fn encode(self, out: &mut Vec<u8>) {
        match self {
            Lane::Status {
                state,
                channel,
                mode,
            } => out.extend_from_slice(&[LANE_STATUS, state as u8, channel, mode]),
            Lane::Assignee {
                agent,
                channel,
                mode,
            } => {
                out.push(LANE_ASSIGNEE);
                out.extend_from_slice(&agent.map_or([0; 16], AgentId::to_bytes));
                out.extend_from_slice(&[channel, mode]);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Option<Lane> {
        match *bytes.first()? {
            LANE_STATUS if bytes.len() == 4 => Some(Lane::Status {
                state: LaneState::decode(bytes[1])?,
                channel: bytes[2],
                mode: bytes[3],
            }),
            LANE_ASSIGNEE if bytes.len() == 19 => {
                let id: [u8; 16] = bytes[1..17].try_into().ok()?;
                Some(Lane::Assignee {
                    agent: (id != [0; 16]).then(|| AgentId::from_bytes(id)),
                    channel: bytes[17],
                    mode: bytes[18],
                })
            }
            _ => None,
        }
    }
}

/// The part of a `lane_conv` key before the time: a lane's range.
pub fn lane_prefix(ws: WorkspaceId, lane: Lane) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + 19 + 24);
    key.extend_from_slice(&ws.to_bytes());
    lane.encode(&mut key);
    key
}

/// Activity times before the epoch sort as the epoch.
pub fn lane_conv(
    ws: WorkspaceId,
    lane: Lane,
    last_activity_ms: i64,
    conv: ConversationId,
) -> Vec<u8> {
    let mut key = lane_prefix(ws, lane);
    key.extend_from_slice(&u64::try_from(last_activity_ms).unwrap_or(0).to_be_bytes());
    key.extend_from_slice(&conv.to_bytes());
    key
}

/// `(last activity, conversation)` from the last 24 bytes of a `lane_conv` key.
pub fn decode_lane_position(key: &[u8]) -> Option<(i64, ConversationId)> {
    let tail = key.len().checked_sub(24).and_then(|at| key.get(at..))?;
    let at = u64::from_be_bytes(tail[..8].try_into().ok()?);
    let conv = ConversationId::from_key_prefix(&tail[8..])?;
    Some((i64::try_from(at).unwrap_or(i64::MAX), conv))
}

/// workspace ‖ kind ‖ length (u16) ‖ value (bounded by [`key_text`]): the length makes
/// facets prefix-free, so a membership set is exactly the keys under its facet.
pub fn facet(ws: WorkspaceId, kind: u8, value: &str) -> Vec<u8> {
    let bytes = key_text(value);
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(16 + 3 + bytes.len() + 16);
    key.extend_from_slice(&ws.to_bytes());
    key.push(kind);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&bytes);
    key
}

pub fn facet_conv(ws: WorkspaceId, kind: u8, value: &str, conv: ConversationId) -> Vec<u8> {
    let mut key = facet(ws, kind, value);
    key.extend_from_slice(&conv.to_bytes());
    key
}

/// `facet_count` key of a lane's size.
pub fn lane_count(ws: WorkspaceId, lane: Lane) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + 1 + 19);
    key.extend_from_slice(&ws.to_bytes());
    key.push(FACET_LANE);
    lane.encode(&mut key);
    key
}

/// The lane of a `lane_count` key.
pub fn decode_lane_count(key: &[u8]) -> Option<Lane> {
    match key.get(16) {
        Some(&FACET_LANE) => Lane::decode(key.get(17..)?),
        _ => None,
    }
}

/// `day_stat` key: a workspace's counter `stat` for one UTC day (days since 1970).
pub fn day_stat(ws: WorkspaceId, day: u32, stat: u8) -> Vec<u8> {
    join(&[&ws.to_bytes(), &day.to_be_bytes(), &[stat]])
}

pub fn activity(conv: ConversationId, id: ActivityId) -> Vec<u8> {
    join(&[&conv.to_bytes(), &id.to_bytes()])
}

/// `merge` key: `member` is merged into `primary`.
pub fn merge(primary: ConversationId, member: ConversationId) -> Vec<u8> {
    join(&[&primary.to_bytes(), &member.to_bytes()])
}

/// After every key that starts with `prefix` and continues with a 16-byte id.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    join(&[prefix, &[0xFF; 17]])
}

pub fn audit(ws: WorkspaceId, id: ActivityId) -> Vec<u8> {
    join(&[&ws.to_bytes(), &id.to_bytes()])
}

/// The first `outcome_stat` key of a workspace's day.
pub fn outcome_stat_day(ws: WorkspaceId, day: u32) -> Vec<u8> {
    join(&[&ws.to_bytes(), &day.to_be_bytes()])
}

/// workspace ‖ day ‖ 0 (no campaign) or 1 ‖ length (u16) ‖ campaign ‖ outcome, texts
/// bounded by [`key_text`].
pub fn outcome_stat(ws: WorkspaceId, day: u32, campaign: Option<&str>, outcome: &str) -> Vec<u8> {
    let mut key = outcome_stat_day(ws, day);
    match campaign {
        None => key.push(0),
        Some(campaign) => {
            // Cut (at a character) rather than hashed: the report shows it.
            let mut end = campaign.len().min(MAX_KEY_TEXT);
            while !campaign.is_char_boundary(end) {
                end -= 1;
            }
            let bytes = &campaign.as_bytes()[..end];
            key.push(1);
            key.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
            key.extend_from_slice(bytes);
        }
    }
    key.extend_from_slice(&key_text(outcome));
    key
}

/// (campaign, outcome) of an `outcome_stat` key; `None` for texts stored hashed.
pub fn decode_outcome_stat(key: &[u8]) -> Option<(Option<String>, String)> {
    let rest = key.get(20..)?;
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).ok().map(str::to_owned);
    match *rest.first()? {
        0 => Some((None, text(&rest[1..])?)),
        1 => {
            let len = usize::from(u16::from_be_bytes(rest.get(1..3)?.try_into().ok()?));
            let campaign = text(rest.get(3..3 + len)?)?;
            Some((Some(campaign), text(rest.get(3 + len..)?)?))
        }
        _ => None,
    }
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
    fn day_stat_keys_sort_by_workspace_day_then_stat() {
        let ws = WorkspaceId::new();
        let key = day_stat(ws, 20_000, 7);
        assert_eq!(key.len(), 16 + 4 + 1);
        assert!(key.starts_with(&ws.to_bytes()));
        assert!(day_stat(ws, 1, 200) < day_stat(ws, 2, 0));
        assert!(day_stat(ws, 2, 3) < day_stat(ws, 2, 4));
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
    fn lane_keys_sort_by_lane_then_time_and_decode() {
        let ws = WorkspaceId::new();
        let c1 = ConversationId::new();
        let c2 = ConversationId::new();
        let open = Lane::Status {
            state: LaneState::Active,
            channel: 0,
            mode: 1,
        };
        let mine = Lane::Assignee {
            agent: Some(AgentId::new()),
            channel: 2,
            mode: 0,
        };
        assert!(lane_conv(ws, open, 1000, c2) < lane_conv(ws, open, 1001, c1));
        assert!(lane_conv(ws, open, 1000, c1) < lane_conv(ws, open, 1000, c2));
        assert!(lane_conv(ws, open, 1000, c1).starts_with(&lane_prefix(ws, open)));
        assert!(!lane_conv(ws, mine, 5, c1).starts_with(&lane_prefix(ws, open)));
        assert_eq!(
            decode_lane_position(&lane_conv(ws, mine, 1234, c1)),
            Some((1234, c1))
        );
        assert_eq!(
            decode_lane_position(&lane_conv(ws, open, -5, c1)),
            Some((0, c1))
        );
        for lane in [
            open,
            mine,
            Lane::Assignee {
                agent: None,
                channel: 1,
                mode: 2,
            },
        ] {
            assert_eq!(decode_lane_count(&lane_count(ws, lane)), Some(lane));
        }
        assert_eq!(decode_lane_count(&facet(ws, FACET_TAG, "x")), None);
    }

    #[test]
    fn facets_are_prefix_free() {
        let ws = WorkspaceId::new();
        let c = ConversationId::new();
        // "vip" must not list members of "vip2".
        assert!(!facet_conv(ws, FACET_TAG, "vip2", c).starts_with(&facet(ws, FACET_TAG, "vip")));
        assert!(facet_conv(ws, FACET_TAG, "vip", c).starts_with(&facet(ws, FACET_TAG, "vip")));
        assert_ne!(facet(ws, FACET_TAG, "a"), facet(ws, FACET_CAMPAIGN, "a"));
        assert_eq!(
            &facet_conv(ws, FACET_TAG, "vip", c)[16 + 3 + 3..],
            &c.to_bytes()
        );
    }

    #[test]
    fn long_text_is_hashed_into_a_bounded_key_that_never_collides() {
        let ch = ChannelId::new();
        let ws = WorkspaceId::new();
        let exact = "w".repeat(MAX_KEY_TEXT);
        assert_eq!(&thread_conv(ch, &exact)[16..], exact.as_bytes());
        let long = "w".repeat(200_000);
        let longer = format!("{long}x");
        for key in [
            thread_conv(ch, &long),
            ext_msg(ch, &long),
            phone_contact(ws, &long),
            email_contact(ws, &long),
        ] {
            assert_eq!(key.len(), 16 + MAX_KEY_TEXT + 1);
        }
        assert_ne!(ext_msg(ch, &long), ext_msg(ch, &longer));
        assert_eq!(ext_msg(ch, &long), ext_msg(ch, &long.clone()));
        // Same first bytes, one kept as it is and one hashed: different keys.
        let hashed = key_text(&long);
        let raw_lookalike = String::from_utf8_lossy(&hashed[..MAX_KEY_TEXT]).into_owned();
        assert_ne!(key_text(&raw_lookalike).as_ref(), hashed.as_ref());
        let c = ConversationId::new();
        let facet_key = facet_conv(ws, FACET_CAMPAIGN, &long, c);
        assert_eq!(facet_key.len(), 16 + 3 + MAX_KEY_TEXT + 1 + 16);
        assert!(facet_key.starts_with(&facet(ws, FACET_CAMPAIGN, &long)));
        assert!(
            !facet_conv(ws, FACET_CAMPAIGN, &longer, c).starts_with(&facet(
                ws,
                FACET_CAMPAIGN,
                &long
            ))
        );
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
