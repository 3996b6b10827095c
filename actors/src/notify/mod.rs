//! Notifications: staged by the change that causes them (see `confab_engine::notify`),
//! then delivered in the background — by email ([`email`]) and Web Push ([`push`]) —
//! and read by agents through the [`Notifier`]. Durable timers ([`timers`]) tell
//! conversations when a lead has waited past the workspace's response target.

pub mod email;
pub mod push;
pub mod timers;

use std::sync::Arc;
use std::time::Duration;

use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::delta::{DeltaBody, NotificationReason};
use confab_engine::ids::{
    AgentId, ConversationId, NotificationId, PushSubscriptionId, WorkspaceId,
};
use confab_engine::model::{Contact, Conversation, Message};
use confab_engine::notify::{
    self as model, Notification, NotificationSettings, PushSubscription, WorkspaceSettings,
};
use confab_engine::store::Store;
use confab_engine::time::UnixMillis;
use dashmap::DashMap;

use crate::clock::SharedClock;
use crate::error::{ActorError, ActorResult};

/// Characters of a message shown in a notification.
const EXCERPT_CHARS: usize = 140;
/// Notifications marked read per batch by "mark all read".
const READ_BATCH: usize = 1000;
/// Devices one agent may register for push.
pub const MAX_SUBSCRIPTIONS: usize = 20;
/// Unread notifications looked through for those of one conversation.
const CONVERSATION_SCAN: usize = 5000;

/// Which of an agent's unread notifications to mark read.
#[derive(Clone, Debug)]
pub enum Which {
    Ids(Vec<NotificationId>),
    All,
    /// Those about one conversation (the agent opened it).
    Conversation(ConversationId),
}

/// How notifications leave the server.
#[derive(Clone, Debug)]
pub struct NotifySettings {
    /// The mail relay for notification emails; `None`: no emails.
    pub email: Option<email::EmailRelay>,
    pub push: push::PushSettings,
    /// The inbox's address as agents reach it, for links in emails and pushes.
    pub public_url: String,
    /// How often the delivery workers and timers look for work when nothing wakes them.
    pub tick: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            email: None,
            push: push::PushSettings::default(),
            public_url: "http://localhost:8080".into(),
            tick: Duration::from_secs(1),
        }
    }
}

/// What happened, for whom to hear of it.
pub struct Event<'a> {
    pub reason: NotificationReason,
    pub conv: &'a Conversation,
    pub message: Option<&'a Message>,
    /// The agent whose action it was: never notified of it.
    pub by_agent: Option<AgentId>,
}

/// Who hears of an event.
pub enum To {
    Agents(Vec<AgentId>),
    /// The workspace's agents who asked to hear of new unassigned conversations.
    NewConversationListeners,
}

/// Notifications staged into a batch; counted once the batch is durable.
#[must_use = "count the notifications once their batch is durable"]
#[derive(Debug, Default)]
pub struct Staged(Vec<NotificationReason>);

impl Staged {
    pub fn committed(self) {
        for reason in self.0 {
            metrics::counter!(crate::metrics::NOTIFICATIONS_CREATED, "reason" => reason.as_str())
                .increment(1);
        }
    }
}

/// The notifications service: stages notifications into a change's batch, changes an
/// agent's settings and subscriptions, marks notifications read. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    committer: Committer,
    clock: SharedClock,
    email_relay: bool,
    /// Workspaces' settings (the response target), read on every lead message.
    workspaces: DashMap<WorkspaceId, WorkspaceSettings>,
    /// One writer at a time per agent for read marks and subscriptions (notifications
    /// themselves are only ever added, under fresh ids).
    locks: DashMap<AgentId, Arc<tokio::sync::Mutex<()>>>,
    /// Workspace settings are read, changed and written by one caller at a time.
    settings_writes: tokio::sync::Mutex<()>,
}

/// How a lead is named to agents.
pub fn contact_label(contact: &Contact) -> String {
    [&contact.name, &contact.phone, &contact.email]
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .unwrap_or("a lead")
        .to_owned()
}

fn excerpt(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= EXCERPT_CHARS {
        return flat;
    }
    let mut cut: String = flat.chars().take(EXCERPT_CHARS - 1).collect();
    cut.push('…');
    cut
}

fn title(reason: NotificationReason, lead: &str, by: Option<&str>) -> String {
    match reason {
        NotificationReason::Assignment => match by {
            Some(by) => format!("{by} assigned you {lead}"),
            None => format!("You were assigned {lead}"),
        },
        NotificationReason::Mention => {
            format!("{} mentioned you in {lead}", by.unwrap_or("Someone"))
        }
        NotificationReason::Escalation => format!("The AI handed {lead} to you"),
        NotificationReason::NewMessage => format!("New message from {lead}"),
        NotificationReason::NewConversation => format!("New conversation with {lead}"),
        NotificationReason::Overdue => format!("{lead} is waiting for an answer"),
        NotificationReason::SnoozeEnded => format!("{lead} is back from snooze"),
    }
}

impl Notifier {
    pub fn new(store: Store, committer: Committer, clock: SharedClock, email_relay: bool) -> Self {
        Notifier {
            inner: Arc::new(Inner {
                store,
                committer,
                clock,
                email_relay,
                workspaces: DashMap::new(),
                locks: DashMap::new(),
                settings_writes: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn now(&self) -> UnixMillis {
        self.inner.clock.now()
    }

    pub fn email_relay(&self) -> bool {
        self.inner.email_relay
    }

    /// Stages the notifications of `event` into `set`: one per recipient whose settings
    /// want it, never one for the agent who acted.
    pub async fn stage(&self, set: &mut WriteSet, event: Event<'_>, to: To) -> ActorResult<Staged> {
        let conv = event.conv;
        let (ws, reason, by) = (conv.workspace_id, event.reason, event.by_agent);
        let lead = contact_label(&conv.contact);
        let body = event.message.map(|m| excerpt(&m.text)).unwrap_or_default();
        let message_id = event.message.map(|m| m.id);
        let conversation_id = conv.id;
        let now = self.now();
        let email_relay = self.inner.email_relay;
        let store = self.inner.store.clone();
        let planned = crate::error::read_store(move || {
            let mut recipients = match to {
                To::Agents(agents) => agents,
                To::NewConversationListeners => store.new_conversation_listeners(ws)?,
            };
            recipients.sort();
            recipients.dedup();
            recipients.retain(|a| Some(*a) != by);
            if recipients.is_empty() {
                return Ok(Vec::new());
            }
            let by_name = match by {
                Some(by) => store.agent(by)?.map(|a| a.name),
                None => None,
            };
            let title = title(reason, &lead, by_name.as_deref());
            let mut planned = Vec::new();
            for agent in recipients {
                let settings = store.notification_settings(agent)?;
                let Some(plan) = settings.plan(reason, now, email_relay) else {
                    continue;
                };
                let subscriptions: Vec<PushSubscriptionId> = if plan.push {
                    store
                        .push_subscriptions(agent)?
                        .into_iter()
                        .map(|s| s.id)
                        .collect()
                } else {
                    Vec::new()
                };
                let notification = Notification {
                    id: NotificationId::new(),
                    workspace_id: ws,
                    agent_id: agent,
                    reason,
                    conversation_id,
                    message_id,
                    by_agent_id: by,
                    title: title.clone(),
                    body: body.clone(),
                    created_at: now,
                    read_at: None,
                    in_app: plan.in_app,
                    browser: plan.browser,
                };
                planned.push((notification, plan, subscriptions));
            }
            Ok(planned)
        })
        .await?;
        let mut staged = Staged::default();
        for (notification, plan, subscriptions) in planned {
            model::stage(set, &notification, &plan, &subscriptions);
            staged.0.push(reason);
        }
        Ok(staged)
    }

    /// `read` of the workspace's settings (cached; [`Notifier::put_workspace_settings`]
    /// refreshes them).
    fn with_settings<T>(
        &self,
        ws: WorkspaceId,
        read: impl FnOnce(&WorkspaceSettings) -> T,
    ) -> ActorResult<T> {
        if let Some(settings) = self.inner.workspaces.get(&ws) {
            return Ok(read(&settings));
        }
        let settings = self.inner.store.workspace_settings(ws)?;
        let value = read(&settings);
        self.inner.workspaces.insert(ws, settings);
        Ok(value)
    }

    /// The workspace's response target.
    pub fn response_target_ms(&self, ws: WorkspaceId) -> ActorResult<i64> {
        self.with_settings(ws, |s| secs_to_ms(s.response_target_secs))
    }

    /// The workspace's lead outcome labels.
    pub fn outcome_labels(&self, ws: WorkspaceId) -> ActorResult<Vec<String>> {
        self.with_settings(ws, |s| confab_engine::outcomes::labels(s.outcomes.as_ref()))
    }

    /// The outcome a lead's message suggests among the workspace's labels.
    pub fn suggest_outcome(
        &self,
        ws: WorkspaceId,
        text: &str,
        auto_reply: bool,
    ) -> ActorResult<Option<confab_engine::outcomes::OutcomeSuggestion>> {
        self.with_settings(ws, |s| match &s.outcomes {
            Some(list) => confab_engine::outcomes::suggest(text, auto_reply, list),
            None => confab_engine::outcomes::suggest(
                text,
                auto_reply,
                &confab_engine::outcomes::labels(None),
            ),
        })
    }

    /// Held while a workspace's settings are read, changed and put back, so that two
    /// changes (the outcome labels and the response target, say) never lose one another.
    pub async fn settings_write(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.settings_writes.lock().await
    }

    pub async fn put_workspace_settings(
        &self,
        ws: WorkspaceId,
        settings: WorkspaceSettings,
    ) -> ActorResult<()> {
        let mut set = WriteSet::new();
        set.put(Ks::WsSettings, ws.to_bytes().to_vec(), &settings);
        self.inner.committer.commit(set).await?;
        self.inner.workspaces.insert(ws, settings);
        Ok(())
    }

    fn lock(&self, agent: AgentId) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.locks.entry(agent).or_default().clone()
    }

    /// Replaces the agent's settings.
    pub async fn put_settings(
        &self,
        ws: WorkspaceId,
        agent: AgentId,
        settings: &NotificationSettings,
    ) -> ActorResult<()> {
        let mut set = WriteSet::new();
        set.put(Ks::NotifSettings, agent.to_bytes().to_vec(), settings);
        let opt_in = catalogue::notif_opt_in(ws, agent);
        if settings.events.new_conversation.any() {
            set.put_raw(Ks::NotifOptIn, opt_in, Vec::new());
        } else {
            set.delete(Ks::NotifOptIn, opt_in);
        }
        self.inner.committer.commit(set).await?;
        Ok(())
    }

    /// Marks the agent's unread notifications read: those `which` names. Returns the ids
    /// that were unread and now are read.
    pub async fn mark_read(
        &self,
        ws: WorkspaceId,
        agent: AgentId,
        which: Which,
    ) -> ActorResult<Vec<NotificationId>> {
        let lock = self.lock(agent);
        let _held = lock.lock().await;
        let now = self.now();
        let mut marked = Vec::new();
        loop {
            let store = self.inner.store.clone();
            let wanted = which.clone();
            let unread = crate::error::read_store(move || {
                let candidates = match &wanted {
                    Which::Ids(ids) => ids.clone(),
                    Which::All => store.unread_notification_ids(agent, READ_BATCH)?,
                    Which::Conversation(_) => {
                        store.unread_notification_ids(agent, CONVERSATION_SCAN)?
                    }
                };
                let mut unread = Vec::new();
                for id in candidates {
                    let key = catalogue::agent_notif(agent, id);
                    if !store.contains(Ks::NotifUnread, &key)? {
                        continue;
                    }
                    match (store.notification(agent, id)?, &wanted) {
                        (Some(n), Which::Conversation(c)) if n.conversation_id != *c => {}
                        (Some(n), _) => unread.push(n),
                        (None, _) => {}
                    }
                }
                Ok(unread)
            })
            .await?;
            if unread.is_empty() {
                break;
            }
            let mut set = WriteSet::new();
            let mut batch = Vec::with_capacity(unread.len());
            for mut n in unread {
                let key = catalogue::agent_notif(agent, n.id);
                n.read_at = Some(now);
                set.delete(Ks::NotifUnread, key.clone())
                    .put(Ks::Notif, key, &n);
                batch.push(n.id);
            }
            set.add(
                Ks::NotifCount,
                agent.to_bytes().to_vec(),
                -(batch.len() as i64),
            )
            .workspace_delta(
                ws,
                DeltaBody::NotificationsRead {
                    agent_id: agent,
                    notification_ids: batch.clone(),
                },
            );
            self.inner.committer.commit(set).await?;
            marked.extend(batch);
            if !matches!(which, Which::All) {
                break;
            }
        }
        Ok(marked)
    }

    /// Registers a browser's push subscription for the agent; the same endpoint again
    /// gets its keys refreshed and keeps its id. Returns it and whether it is new; a new
    /// one past [`MAX_SUBSCRIPTIONS`] is refused (`too_many_subscriptions`), checked under
    /// the agent's lock so two registrations at once cannot pass the limit together.
    pub async fn subscribe(
        &self,
        agent: AgentId,
        endpoint: String,
        p256dh: String,
        auth: String,
    ) -> ActorResult<(PushSubscription, bool)> {
        let lock = self.lock(agent);
        let _held = lock.lock().await;
        let store = self.inner.store.clone();
        let existing = crate::error::read_store(move || store.push_subscriptions(agent)).await?;
        let count = existing.len();
        let known = existing.into_iter().find(|s| s.endpoint == endpoint);
        if known.is_none() && count >= MAX_SUBSCRIPTIONS {
            return Err(ActorError::invalid(
                "too_many_subscriptions",
                format!("an agent registers at most {MAX_SUBSCRIPTIONS} devices; remove one first"),
            ));
        }
        let created = known.is_none();
        let subscription = PushSubscription {
            id: known
                .as_ref()
                .map_or_else(PushSubscriptionId::new, |s| s.id),
            agent_id: agent,
            endpoint,
            p256dh,
            auth,
            created_at: known.as_ref().map_or_else(|| self.now(), |s| s.created_at),
        };
        if known.as_ref() != Some(&subscription) {
            let mut set = WriteSet::new();
            set.put(
                Ks::PushSub,
                catalogue::push_sub(agent, subscription.id),
                &subscription,
            );
            self.inner.committer.commit(set).await?;
        }
        Ok((subscription, created))
    }

    /// Removes one of the agent's subscriptions; `NotFound` when it has no such one.
    pub async fn unsubscribe(&self, agent: AgentId, id: PushSubscriptionId) -> ActorResult<()> {
        let lock = self.lock(agent);
        let _held = lock.lock().await;
        let key = catalogue::push_sub(agent, id);
        let (store, probe) = (self.inner.store.clone(), key.clone());
        if !crate::error::read_store(move || store.contains(Ks::PushSub, &probe)).await? {
            return Err(ActorError::NotFound);
        }
        let mut set = WriteSet::new();
        set.delete(Ks::PushSub, key);
        self.inner.committer.commit(set).await?;
        Ok(())
    }
}

/// Waits `tick`, or less when the clock jumps (a driven clock in tests): the pace of the
/// delivery workers and the timer task.
pub(crate) async fn pause(clock: &SharedClock, tick: Duration) {
    match clock.jumps() {
        Some(jumped) => {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = jumped.notified() => {}
            }
        }
        None => tokio::time::sleep(tick).await,
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Arms the overdue timer of a conversation whose lead just started waiting (the first
/// unanswered message, at `since`): due one response target later. Does nothing while
/// one is armed.
pub fn arm_overdue(set: &mut WriteSet, conv: &mut Conversation, since: UnixMillis, target_ms: i64) {
    if conv.overdue_at.is_some() {
        return;
    }
    let due = since.saturating_add(target_ms);
    set.put_raw(
        Ks::Timer,
        catalogue::timer(due, model::TIMER_OVERDUE, conv.id),
        Vec::new(),
    );
    conv.overdue_at = Some(due);
}

/// Disarms the overdue timer: someone answered the lead.
pub fn disarm_overdue(set: &mut WriteSet, conv: &mut Conversation) {
    if let Some(due) = conv.overdue_at.take() {
        set.delete(
            Ks::Timer,
            catalogue::timer(due, model::TIMER_OVERDUE, conv.id),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_name_the_lead_and_who_acted() {
        assert_eq!(
            title(NotificationReason::Assignment, "Maria Lopez", Some("Ana")),
            "Ana assigned you Maria Lopez"
        );
        assert_eq!(
            title(NotificationReason::Overdue, "Maria Lopez", None),
            "Maria Lopez is waiting for an answer"
        );
        let long = "word ".repeat(100);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS);
        assert!(cut.ends_with('…'));
        let contact = Contact {
            phone: Some("+4915112345678".into()),
            ..Contact::default()
        };
        assert_eq!(contact_label(&contact), "+4915112345678");
    }
}
