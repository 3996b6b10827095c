//! Notifications for agents: what each agent wants to hear about and through which
//! delivery (the inbox, the open browser tab, email, Web Push), the notifications
//! themselves, and what each delivery still owes.
//!
//! A notification is staged into the [`WriteSet`] of the change that causes it (an
//! assignment, a mention, a lead's message …): the record, its unread mark, and one
//! durable entry per delivery that works in the background (email, push), so a crash
//! loses none and a delivery worker resends at most what it had not acknowledged.

use serde::{Deserialize, Serialize};

use crate::catalogue::{self, Ks};
use crate::committer::WriteSet;
use crate::delta::{DeltaBody, NotificationReason};
use crate::error::Result;
use crate::ids::{
    AgentId, ConversationId, MessageId, NotificationId, PushSubscriptionId, WorkspaceId,
};
use crate::store::Store;
use crate::time::UnixMillis;

/// Which deliveries an agent wants for one kind of event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Deliveries {
    /// In the inbox's notification list (and its unread count).
    pub in_app: bool,
    /// A system notification from the open inbox tab (the Notifications API).
    pub browser: bool,
    /// A notification email, batched.
    pub email: bool,
    /// Web Push to the agent's registered devices.
    pub push: bool,
}

impl Deliveries {
    const ALL: Deliveries = Deliveries {
        in_app: true,
        browser: true,
        email: true,
        push: true,
    };
    const IN_APP: Deliveries = Deliveries {
        in_app: true,
        browser: false,
        email: false,
        push: false,
    };
    const NONE: Deliveries = Deliveries {
        in_app: false,
        browser: false,
        email: false,
        push: false,
    };

    pub fn any(&self) -> bool {
        self.in_app || self.browser || self.email || self.push
    }
}

/// One [`Deliveries`] per event. Left out of a stored or sent value: the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// A conversation was assigned to me (by someone else). Default: everywhere.
    pub assignment: Deliveries,
    /// Someone mentioned me in an internal note. Default: everywhere.
    pub mention: Deliveries,
    /// The lead wrote in a conversation assigned to me. Default: in the inbox only.
    pub new_message: Deliveries,
    /// A conversation started with nobody assigned. Default: off.
    pub new_conversation: Deliveries,
    /// The AI handed a conversation to me. Default: everywhere.
    pub escalation: Deliveries,
    /// A conversation of mine waits for an answer longer than the workspace's response
    /// target. Default: inbox, browser and email.
    pub overdue: Deliveries,
    /// A conversation of mine (or one I snoozed, nobody assigned) is back from snooze.
    /// Default: everywhere.
    pub snooze_ended: Deliveries,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            assignment: Deliveries::ALL,
            mention: Deliveries::ALL,
            new_message: Deliveries::IN_APP,
            new_conversation: Deliveries::NONE,
            escalation: Deliveries::ALL,
            overdue: Deliveries {
                push: false,
                ..Deliveries::ALL
            },
            snooze_ended: Deliveries::ALL,
        }
    }
}

impl EventSettings {
    pub fn of(&self, reason: NotificationReason) -> Deliveries {
        match reason {
            NotificationReason::Assignment => self.assignment,
            NotificationReason::Mention => self.mention,
            NotificationReason::NewMessage => self.new_message,
            NotificationReason::NewConversation => self.new_conversation,
            NotificationReason::Escalation => self.escalation,
            NotificationReason::Overdue => self.overdue,
            NotificationReason::SnoozeEnded => self.snooze_ended,
        }
    }
}

/// Hours during which nothing interrupts the agent: no browser notification, no push;
/// emails wait for the end. The inbox still lists everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local time `HH:MM` at which quiet hours begin.
    #[cfg_attr(feature = "openapi", schema(example = "22:00"))]
    pub from: String,
    /// Local time `HH:MM` at which they end (before `from`: the next day).
    #[cfg_attr(feature = "openapi", schema(example = "07:00"))]
    pub to: String,
    /// IANA time zone (`Europe/Paris`), `UTC` or an offset such as `-03:00`.
    pub timezone: String,
}

impl QuietHours {
    /// Whether the settings are well formed: both times `HH:MM` and a known time zone.
    pub fn check(&self) -> std::result::Result<(), &'static str> {
        if crate::ai::time_zone(&self.timezone).is_none() {
            return Err("timezone");
        }
        match (
            crate::ai::parse_hhmm(&self.from),
            crate::ai::parse_hhmm(&self.to),
        ) {
            (Some(_), Some(_)) => Ok(()),
            _ => Err("hours"),
        }
    }

    /// When the quiet hours around `now` end, or `None` when `now` is not in them.
    pub fn ends_after(&self, now: UnixMillis) -> Option<UnixMillis> {
        let zone = crate::ai::time_zone(&self.timezone)?;
        let from = crate::ai::parse_hhmm(&self.from)?;
        let to = crate::ai::parse_hhmm(&self.to)?;
        if from == to {
            return None;
        }
        let local = jiff::Timestamp::from_millisecond(now).ok()?.to_zoned(zone);
        let minute = i64::from(local.hour()) * 60 + i64::from(local.minute());
        let (quiet, ends_tomorrow) = if from < to {
            ((from..to).contains(&minute), false)
        } else if minute >= from {
            (true, true)
        } else {
            (minute < to, false)
        };
        if !quiet {
            return None;
        }
        let mut date = local.date();
        if ends_tomorrow {
            date = date.tomorrow().ok()?;
        }
        let (hour, min) = (to / 60, to % 60);
        let end = if hour == 24 {
            date.tomorrow().ok()?.at(0, 0, 0, 0)
        } else {
            date.at(i8::try_from(hour).ok()?, i8::try_from(min).ok()?, 0, 0)
        };
        let end = end.to_zoned(local.time_zone().clone()).ok()?;
        Some(end.timestamp().as_millisecond())
    }
}

/// An agent's notification settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationSettings {
    #[serde(default)]
    pub events: EventSettings,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
}

/// A workspace's settings that are not the AI agent's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSettings {
    /// A lead's message unanswered this long makes the conversation overdue.
    pub response_target_secs: u64,
    /// Messages older than this many days are removed (`None`: kept for ever).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// What retention removes is first written to the archive (JSON Lines).
    #[serde(default)]
    pub retention_archive: bool,
    /// The lead outcome labels (`None`: never edited, `outcomes::DEFAULT_OUTCOMES`).
    #[serde(default)]
    pub outcomes: Option<Vec<String>>,
}

/// The manual's "respond within 24 hours".
pub const DEFAULT_RESPONSE_TARGET_SECS: u64 = 24 * 3600;

impl Default for WorkspaceSettings {
    fn default() -> Self {
        WorkspaceSettings {
            response_target_secs: DEFAULT_RESPONSE_TARGET_SECS,
            retention_days: None,
            retention_archive: false,
            outcomes: None,
        }
    }
}

/// One notification for one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    pub id: NotificationId,
    pub workspace_id: WorkspaceId,
    pub agent_id: AgentId,
    pub reason: NotificationReason,
    pub conversation_id: ConversationId,
    pub message_id: Option<MessageId>,
    /// The agent whose action caused it (`null`: the lead, the AI or the system).
    pub by_agent_id: Option<AgentId>,
    /// Ready to show: "Ana assigned you Maria Lopez".
    pub title: String,
    /// A short excerpt of the message it is about (may be empty).
    pub body: String,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: UnixMillis,
    #[serde(default, with = "crate::time::rfc3339_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub read_at: Option<UnixMillis>,
    /// Listed in the inbox (the agent's `in_app` setting when it was made).
    #[serde(default = "yes")]
    pub in_app: bool,
    /// Whether the open inbox tab should show a system notification for it.
    #[serde(default)]
    pub browser: bool,
}

fn yes() -> bool {
    true
}

/// A browser's Web Push subscription (the Push API's `PushSubscription`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscription {
    pub id: PushSubscriptionId,
    pub agent_id: AgentId,
    pub endpoint: String,
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// The browser's authentication secret, base64url.
    pub auth: String,
    pub created_at: UnixMillis,
}

/// A Web Push delivery waiting to be accepted by the push service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEntry {
    pub agent_id: AgentId,
    pub notification_id: NotificationId,
    pub subscription_id: PushSubscriptionId,
    pub created_at: UnixMillis,
}

/// Timer kinds ([`catalogue::timer`]).
pub const TIMER_OVERDUE: u8 = 1;
/// A snoozed conversation comes back (`Conversation::snoozed_until`).
pub const TIMER_SNOOZE: u8 = 2;

/// `meta` key of the server's VAPID private key (32 bytes, P-256).
pub const META_VAPID_KEY: &[u8] = b"vapid_private_key";

/// What to stage for one agent: the event and what its settings ask for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub in_app: bool,
    pub browser: bool,
    /// Email: not before this instant (the end of quiet hours, or now).
    pub email_not_before: Option<UnixMillis>,
    pub push: bool,
}

impl NotificationSettings {
    /// What the agent gets for `reason` at `now`; `None`: nothing at all. Quiet hours keep
    /// the inbox entry, hold the email until they end and drop browser and push alerts.
    /// `email_relay`: whether the server can send email at all.
    pub fn plan(
        &self,
        reason: NotificationReason,
        now: UnixMillis,
        email_relay: bool,
    ) -> Option<Plan> {
        let wanted = self.events.of(reason);
        let quiet_until = self.quiet_hours.as_ref().and_then(|q| q.ends_after(now));
        let plan = Plan {
            in_app: wanted.in_app,
            browser: wanted.browser && quiet_until.is_none(),
            email_not_before: (wanted.email && email_relay).then(|| quiet_until.unwrap_or(now)),
            push: wanted.push && quiet_until.is_none(),
        };
        let any = plan.in_app || plan.browser || plan.email_not_before.is_some() || plan.push;
        any.then_some(plan)
    }
}

/// Stages `notification` with its deliveries: the record; its unread mark and count when
/// it is listed; the email wait; one push entry per subscription; and the `notification`
/// delta for the agent's open sessions (when listed or alerting the browser).
pub fn stage(
    set: &mut WriteSet,
    notification: &Notification,
    plan: &Plan,
    subscriptions: &[PushSubscriptionId],
) {
    let agent = notification.agent_id;
    let key = catalogue::agent_notif(agent, notification.id);
    set.put(Ks::Notif, key.clone(), notification);
    if plan.in_app {
        set.put_raw(Ks::NotifUnread, key.clone(), Vec::new()).add(
            Ks::NotifCount,
            agent.to_bytes().to_vec(),
            1,
        );
    }
    if let Some(at) = plan.email_not_before {
        set.put_raw(Ks::NotifEmail, key, at.to_be_bytes().to_vec());
    }
    if plan.push {
        for sub in subscriptions {
            set.put(
                Ks::PushOutbox,
                catalogue::push_outbox(notification.id, *sub),
                &PushEntry {
                    agent_id: agent,
                    notification_id: notification.id,
                    subscription_id: *sub,
                    created_at: notification.created_at,
                },
            );
        }
    }
    if plan.in_app || plan.browser {
        set.delta(
            notification.workspace_id,
            notification.conversation_id,
            DeltaBody::Notification {
                agent_id: agent,
                reason: notification.reason,
                message_id: notification.message_id,
                by_agent_id: notification.by_agent_id,
                notification: Some(Box::new(notification.clone())),
            },
        );
    }
}

/// Reads of the notification keyspaces.
impl Store {
    pub fn notification_settings(&self, agent: AgentId) -> Result<NotificationSettings> {
        Ok(self
            .get(Ks::NotifSettings, &agent.to_bytes())?
            .unwrap_or_default())
    }

    pub fn workspace_settings(&self, ws: WorkspaceId) -> Result<WorkspaceSettings> {
        Ok(self
            .get(Ks::WsSettings, &ws.to_bytes())?
            .unwrap_or_default())
    }

    /// Agents of `ws` who want to hear of new unassigned conversations.
    pub fn new_conversation_listeners(&self, ws: WorkspaceId) -> Result<Vec<AgentId>> {
        let mut agents = Vec::new();
        for kv in self.ks(Ks::NotifOptIn).prefix(ws.to_bytes()) {
            let key = kv.key()?;
            if let Some(agent) = key.get(16..).and_then(AgentId::from_key_prefix) {
                agents.push(agent);
            }
        }
        Ok(agents)
    }

    pub fn push_subscriptions(&self, agent: AgentId) -> Result<Vec<PushSubscription>> {
        self.with_prefix(Ks::PushSub, &agent.to_bytes())
    }

    pub fn notification(&self, agent: AgentId, id: NotificationId) -> Result<Option<Notification>> {
        self.get(Ks::Notif, &catalogue::agent_notif(agent, id))
    }

    /// The agent's listed notifications, newest first, older than `before` (all when
    /// `None`); only unread ones with `unread_only`. `next` is the last one's id when more
    /// remain.
    pub fn notifications(
        &self,
        agent: AgentId,
        before: Option<NotificationId>,
        unread_only: bool,
        limit: usize,
    ) -> Result<crate::store::Page<Notification, NotificationId>> {
        let start = catalogue::agent_notif(agent, NotificationId::from_bytes([0; 16]));
        let end = match before {
            Some(id) => catalogue::agent_notif(agent, id),
            None => catalogue::agent_notif(agent, NotificationId::from_bytes([0xff; 16])),
        };
        let ks = if unread_only {
            Ks::NotifUnread
        } else {
            Ks::Notif
        };
        let mut items = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for kv in self.ks(ks).range(start..end).rev() {
            let (key, value) = kv.into_inner()?;
            let notification: Notification = if unread_only {
                match self.get(Ks::Notif, &key)? {
                    Some(n) => n,
                    None => continue,
                }
            } else {
                crate::codec::decode(&value)?
            };
            if !notification.in_app {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(notification);
        }
        let next = if more {
            items.last().map(|n| n.id)
        } else {
            None
        };
        Ok(crate::store::Page { items, next })
    }

    pub fn unread_notifications(&self, agent: AgentId) -> Result<u64> {
        Ok(match self.get_raw(Ks::NotifCount, &agent.to_bytes())? {
            Some(v) => u64::try_from(i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
                .unwrap_or(0),
            None => 0,
        })
    }

    /// Ids of the agent's unread notifications, oldest first (at most `limit`).
    pub fn unread_notification_ids(
        &self,
        agent: AgentId,
        limit: usize,
    ) -> Result<Vec<NotificationId>> {
        let mut ids = Vec::new();
        for kv in self
            .ks(Ks::NotifUnread)
            .prefix(agent.to_bytes())
            .take(limit)
        {
            let key = kv.key()?;
            if let Some(id) = key.get(16..).and_then(NotificationId::from_key_prefix) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Every notification waiting for an email: (agent, notification, not before).
    pub fn pending_emails(
        &self,
        limit: usize,
    ) -> Result<Vec<(AgentId, NotificationId, UnixMillis)>> {
        let mut out = Vec::new();
        for kv in self.ks(Ks::NotifEmail).iter().take(limit) {
            let (key, value) = kv.into_inner()?;
            let (Some(agent), Some(id)) = (
                AgentId::from_key_prefix(&key),
                key.get(16..).and_then(NotificationId::from_key_prefix),
            ) else {
                continue;
            };
            let at = i64::from_be_bytes(value.as_ref().try_into().unwrap_or([0; 8]));
            out.push((agent, id, at));
        }
        Ok(out)
    }

    /// Web Push deliveries not yet accepted, oldest notification first.
    pub fn push_outbox(&self, limit: usize) -> Result<Vec<PushEntry>> {
        let mut out = Vec::new();
        for kv in self.ks(Ks::PushOutbox).iter().take(limit) {
            out.push(crate::codec::decode(&kv.value()?)?);
        }
        Ok(out)
    }

    /// Timers due at or before `now`: (due, kind, conversation), earliest first.
    pub fn due_timers(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<(i64, u8, ConversationId)>> {
        let end = catalogue::timer(
            now.saturating_add(1),
            0,
            ConversationId::from_bytes([0; 16]),
        );
        let mut out = Vec::new();
        for kv in self.ks(Ks::Timer).range(..end).take(limit) {
            if let Some(timer) = catalogue::decode_timer(&kv.key()?) {
                out.push(timer);
            }
        }
        Ok(out)
    }

    /// The server's VAPID private key, if one was made.
    pub fn vapid_key(&self) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_raw(Ks::Meta, META_VAPID_KEY)?
            .map(|v| v.as_ref().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> UnixMillis {
        crate::time::parse_rfc3339(text).expect("a time")
    }

    fn quiet(from: &str, to: &str, tz: &str) -> QuietHours {
        QuietHours {
            from: from.into(),
            to: to.into(),
            timezone: tz.into(),
        }
    }

    #[test]
    fn overnight_quiet_hours_end_the_next_morning_in_the_agents_zone() {
        let q = quiet("22:00", "07:00", "Europe/Paris");
        // 23:30 in Paris (UTC+1 in December) → ends 07:00 Paris the next day.
        assert_eq!(
            q.ends_after(at("2026-12-07T22:30:00Z")),
            Some(at("2026-12-08T06:00:00Z"))
        );
        // 05:00 Paris → ends 07:00 the same day.
        assert_eq!(
            q.ends_after(at("2026-12-08T04:00:00Z")),
            Some(at("2026-12-08T06:00:00Z"))
        );
        assert_eq!(q.ends_after(at("2026-12-08T12:00:00Z")), None);
    }

    #[test]
    fn daytime_quiet_hours_and_empty_ones() {
        let q = quiet("12:00", "13:30", "UTC");
        assert_eq!(
            q.ends_after(at("2026-12-07T12:10:00Z")),
            Some(at("2026-12-07T13:30:00Z"))
        );
        assert_eq!(q.ends_after(at("2026-12-07T13:30:00Z")), None);
        assert_eq!(
            quiet("09:00", "09:00", "UTC").ends_after(at("2026-12-07T09:00:00Z")),
            None
        );
        assert!(quiet("25:00", "07:00", "UTC").check().is_err());
        assert!(quiet("22:00", "07:00", "Mars/Olympus").check().is_err());
    }

    #[test]
    fn plans_follow_settings_and_quiet_hours() {
        let mut settings = NotificationSettings::default();
        let now = at("2026-12-07T12:00:00Z");
        let plan = settings
            .plan(NotificationReason::Assignment, now, true)
            .expect("assignments notify");
        assert!(plan.in_app && plan.browser && plan.push);
        assert_eq!(plan.email_not_before, Some(now));
        // Without a mail relay there is no email.
        let plan = settings
            .plan(NotificationReason::Assignment, now, false)
            .expect("still in the inbox");
        assert_eq!(plan.email_not_before, None);
        // New messages: inbox only; new conversations: nothing by default.
        let plan = settings
            .plan(NotificationReason::NewMessage, now, true)
            .expect("in the inbox");
        assert!(plan.in_app && !plan.browser && !plan.push && plan.email_not_before.is_none());
        assert_eq!(
            settings.plan(NotificationReason::NewConversation, now, true),
            None
        );
        // Quiet hours: listed, email after they end, no alerts.
        settings.quiet_hours = Some(quiet("11:00", "13:00", "UTC"));
        let plan = settings
            .plan(NotificationReason::Mention, now, true)
            .expect("listed");
        assert!(plan.in_app && !plan.browser && !plan.push);
        assert_eq!(plan.email_not_before, Some(at("2026-12-07T13:00:00Z")));
    }

    #[test]
    fn settings_left_out_keep_their_defaults() {
        let settings: NotificationSettings =
            serde_json::from_str(r#"{"events":{"new_message":{"in_app":false,"browser":false,"email":true,"push":false}}}"#)
                .expect("settings");
        assert!(settings.events.new_message.email && !settings.events.new_message.in_app);
        assert_eq!(settings.events.assignment, Deliveries::ALL);
    }
}
