//! The conversation manager: activates conversation actors on demand, passivates idle ones,
//! caps how many live at once, and restarts crashed ones from the store.
//!
//! Routing reads the live map directly (no mailbox hop); only activation and supervision go
//! through the manager's mailbox, which serializes them: at most one actor per conversation
//! ever runs. Creating a conversation for a new provider thread runs on the caller's task,
//! concurrently with others: the store's insert-if-absent guards make it exactly-once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::contacts;
use confab_engine::delta::{DeltaBody, NotificationReason};
use confab_engine::ids::{ChannelId, ConversationId};
use confab_engine::inbound::{awaiting_key, InboundEvent, ThreadAliasValue, ThreadHint};
use confab_engine::model::{AiMode, Channel, Contact, Conversation, Message, Status};
use confab_engine::store::Store;
use confab_engine::time::{now_millis, UnixMillis};
use dashmap::DashMap;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;

use crate::ai::{AiQueue, AiRequest};
use crate::conversation::{
    stage_inbound, Command, ConversationActor, ConversationArgs, ConversationMsg, InboundOutcome,
};
use crate::error::{ActorError, ActorResult};
use crate::notify::Notifier;
use crate::outbound::OutboundPort;

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub idle_timeout: Duration,
    pub max_live: usize,
    /// Restarts allowed per conversation within `restart_window`; past it the conversation
    /// answers `Unavailable` until the window has passed.
    pub restart_budget: u32,
    pub restart_window: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            max_live: 200_000,
            restart_budget: 5,
            restart_window: Duration::from_secs(60),
        }
    }
}

/// A live conversation actor and when it was last used.
pub struct Live {
    pub actor: ActorRef<ConversationMsg>,
    last_used_ms: AtomicU64,
    /// Messages sent to the actor and not yet handled (ractor does not expose its
    /// mailbox's length): counted up before a send, down when the actor takes one.
    queued: Arc<AtomicI64>,
}

/// Milliseconds on a process-local monotonic clock.
fn clock_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// The handle everything else uses to reach conversations. Cheap to clone.
#[derive(Clone)]
pub struct Conversations {
    live: Arc<DashMap<ConversationId, Arc<Live>>>,
    /// Provider threads seen lately, a shortcut past the store; emptied when it grows
    /// past `max_threads`.
    threads: Arc<DashMap<(ChannelId, String), ConversationId>>,
    max_threads: usize,
    manager: ActorRef<ManagerMsg>,
    store: Store,
    committer: Committer,
    ai: AiQueue,
    notifier: Notifier,
    epoch: Instant,
    /// The merge notes' forwarder and the start's reconciliation: they hold this handle
    /// (and so the store), and end at [`Conversations::end_tasks`].
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Conversations {
    /// Ends the background tasks (after the actors stopped: a merge note not yet handed
    /// on is reconciled at the next start).
    pub async fn end_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// The conversation's actor, activating it from the store if needed.
    pub async fn actor(&self, id: ConversationId) -> ActorResult<ActorRef<ConversationMsg>> {
        match self.live_actor(id) {
            Some(actor) => Ok(actor),
            None => {
                self.ask_manager(|reply| ManagerMsg::Activate(id, reply))
                    .await
            }
        }
    }

    /// The conversation's live actor, if it has one, marked as just used.
    fn live_actor(&self, id: ConversationId) -> Option<ActorRef<ConversationMsg>> {
        self.live.get(&id).map(|live| {
            live.last_used_ms
                .store(clock_ms(self.epoch), Ordering::Relaxed);
            live.actor.clone()
        })
    }

    /// Sends the manager the message `make` builds around a reply port, and waits for
    /// the answer.
    async fn ask_manager<T: Send + 'static>(
        &self,
        make: impl FnOnce(RpcReplyPort<ActorResult<T>>) -> ManagerMsg,
    ) -> ActorResult<T> {
        let stopped = || ActorError::Unavailable("the conversation manager has stopped".into());
        let (tx, rx) = oneshot::channel();
        self.manager.cast(make(tx.into())).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Sends a request to the conversation and waits for its answer.
    pub async fn request<T: Send + 'static>(
        &self,
        id: ConversationId,
        make: impl FnOnce(RpcReplyPort<ActorResult<T>>) -> ConversationMsg,
    ) -> ActorResult<T> {
        let receiver = self.submit(id, make).await?;
        receiver.await.map_err(|_| gone())?
    }

    /// Queues a request on the conversation and returns where its answer will arrive, so
    /// a caller can queue several requests in order before waiting.
    pub async fn submit<T: Send + 'static>(
        &self,
        id: ConversationId,
        make: impl FnOnce(RpcReplyPort<ActorResult<T>>) -> ConversationMsg,
    ) -> ActorResult<oneshot::Receiver<ActorResult<T>>> {
        let (tx, rx) = oneshot::channel();
        self.deliver(id, make(tx.into())).await?;
        Ok(rx)
    }

    /// Hands `msg` to the conversation's actor. A message for a conversation without a
    /// live actor, or one its actor refused because it is being passivated (it drains what
    /// it was sent and hands back the rest), goes through the manager: it casts the
    /// message into the next actor (activated once the old one has exited, so the order is
    /// kept) from its own mailbox, before it could passivate that actor in turn.
    async fn deliver(&self, id: ConversationId, msg: ConversationMsg) -> ActorResult<()> {
        let msg = match self.live_actor(id) {
            Some(actor) => match cast_counted(&self.live, id, &actor, msg) {
                Cast::Sent => return Ok(()),
                Cast::Refused(refused) => refused,
                Cast::Gone => return Err(gone()),
            },
            None => Box::new(msg),
        };
        self.ask_manager(|reply| ManagerMsg::Deliver(id, msg, reply))
            .await
    }

    /// Messages waiting in live conversation mailboxes: the sum, and the deepest one.
    /// O(live actors): meant for a scrape, not a hot path.
    pub fn mailbox_depths(&self) -> (u64, u64) {
        self.live.iter().fold((0, 0), |(sum, max), live| {
            let depth = live.queued.load(Ordering::Relaxed).max(0) as u64;
            (sum + depth, max.max(depth))
        })
    }

    /// Erases the conversation through its actor (see [`ConversationMsg::Erase`]); a
    /// conversation already gone erased nothing. The caller then calls
    /// [`Conversations::forget_threads`] once for all it erased.
    pub async fn erase(
        &self,
        id: ConversationId,
    ) -> ActorResult<confab_engine::erasure::ErasedCounts> {
        let erased = match self.request(id, ConversationMsg::Erase).await {
            Ok(counts) => counts,
            Err(ActorError::NotFound) => Default::default(),
            Err(e) => return Err(e),
        };
        Ok(erased)
    }

    /// Forgets the provider threads of conversations erased (one pass over the cache
    /// for many). Until then a message on such a thread finds its conversation gone and
    /// is refused for a retry (see [`Conversations::inbound`]), so this only spares that
    /// round trip.
    pub fn forget_threads(&self, erased: &std::collections::HashSet<ConversationId>) {
        if !erased.is_empty() {
            self.threads.retain(|_, conv| !erased.contains(conv));
        }
    }

    /// Retention through the conversation's actor (see [`ConversationMsg::Purge`]): what
    /// was erased, and whether that was the whole conversation (then see
    /// [`Conversations::forget_threads`]). A conversation gone purged nothing.
    pub async fn purge(
        &self,
        id: ConversationId,
        before: confab_engine::time::UnixMillis,
    ) -> ActorResult<(confab_engine::erasure::ErasedCounts, bool)> {
        let purged = match self
            .request(id, |reply| ConversationMsg::Purge { before, reply })
            .await
        {
            Err(ActorError::NotFound) => return Ok(Default::default()),
            other => other?,
        };
        Ok(purged)
    }

    /// Sends a one-way message to the conversation.
    pub async fn tell(&self, id: ConversationId, msg: ConversationMsg) -> ActorResult<()> {
        self.deliver(id, msg).await
    }

    /// Stores a lead's message: in its conversation (through the conversation's actor), or,
    /// for a thread not seen before, together with the new conversation (and contact) in
    /// one batch, so no listing ever shows a conversation without its first message.
    /// Returns where the outcome arrives.
    ///
    /// Creation runs on the caller's task. Two callers creating the same thread (or two
    /// contacts with one phone or email) race on insert-if-absent guards: the loser's batch
    /// writes nothing and its message goes to the winner's conversation.
    pub async fn inbound(
        &self,
        channel: Arc<Channel>,
        mut event: InboundEvent,
    ) -> ActorResult<oneshot::Receiver<ActorResult<InboundOutcome>>> {
        if !event.details.thread_hints.is_empty() {
            let (store, channel_id) = (self.store.clone(), channel.id);
            let hints = std::mem::take(&mut event.details.thread_hints);
            let own = event.thread.clone();
            let found =
                tokio::task::spawn_blocking(move || thread_of(&store, channel_id, &own, &hints))
                    .await
                    .map_err(|e| ActorError::Unavailable(format!("a store read failed: {e}")))??;
            if let Some((thread, adopt)) = found {
                // A conversation we started takes the provider's thread as its own.
                if adopt && thread != event.thread {
                    event.details.adopt_thread = Some(std::mem::replace(&mut event.thread, thread));
                } else {
                    event.thread = thread;
                }
            }
        }
        let key = (channel.id, event.thread.clone());
        for _ in 0..RESOLVE_ATTEMPTS {
            let known = self.threads.get(&key).map(|id| *id);
            let id = match known {
                Some(id) => id,
                None => {
                    match find_or_create(
                        &self.store,
                        &self.committer,
                        &self.notifier,
                        &channel,
                        &event,
                    )
                    .await
                    {
                        Ok(Resolved::Existing(id)) => {
                            self.remember_thread(key.clone(), id);
                            id
                        }
                        Ok(Resolved::Created(id, message, ai_active)) => {
                            self.remember_thread(key, id);
                            let seq = message.seq;
                            let outcome = answered(InboundOutcome::Stored(message));
                            if ai_active {
                                let request = AiRequest {
                                    workspace: channel.workspace_id,
                                    conversation: id,
                                    seq,
                                    epoch: 0,
                                };
                                if !self.ai.offer(request) {
                                    let _ =
                                        self.tell(id, ConversationMsg::AiUnavailable { seq }).await;
                                }
                            }
                            return Ok(outcome);
                        }
                        Ok(Resolved::Duplicate) => return Ok(answered(InboundOutcome::Duplicate)),
                        Err(Resolve::Lost) => continue,
                        Err(Resolve::Failed(e)) => return Err(e),
                    }
                }
            };
            let submitted = self
                .submit(id, |reply| ConversationMsg::Inbound(Box::new(event), reply))
                .await;
            if matches!(submitted, Err(ActorError::NotFound)) {
                // Erased since its thread was looked up: forget it, so the provider's
                // retry of this message finds the thread anew (and the lead is new).
                self.threads.remove(&key);
                return Err(ActorError::Unavailable(
                    "the conversation was erased meanwhile; retry".into(),
                ));
            }
            return submitted;
        }
        Err(ActorError::Unavailable(
            "the conversation could not be created: too much contention".into(),
        ))
    }

    /// The conversation with the lead whose provider id is `lead` on `channel`: the one
    /// the channel already has with them, else a new one without messages, waiting for
    /// the provider to name its thread (the first message sent opens it). Returns the
    /// conversation and whether it was created.
    pub async fn start(
        &self,
        channel: Arc<Channel>,
        lead: String,
        name: Option<String>,
    ) -> ActorResult<(ConversationId, bool)> {
        if !channel.rules().starts_by_profile_id {
            return Err(ActorError::invalid(
                "cannot_start_conversation",
                format!(
                    "a {} channel cannot write to a lead first",
                    channel.kind().as_str()
                ),
            ));
        }
        for _ in 0..RESOLVE_ATTEMPTS {
            match start_or_find(&self.store, &self.committer, &channel, &lead, name.clone()).await {
                Ok(found) => return Ok(found),
                Err(Resolve::Lost) => continue,
                Err(Resolve::Failed(e)) => return Err(e),
            }
        }
        Err(ActorError::Unavailable(
            "the conversation could not be created: too much contention".into(),
        ))
    }

    fn remember_thread(&self, key: (ChannelId, String), id: ConversationId) {
        if self.threads.len() >= self.max_threads {
            self.threads.clear();
        }
        self.threads.insert(key, id);
    }

    /// Number of live conversation actors.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    pub fn is_live(&self, id: ConversationId) -> bool {
        self.live.contains_key(&id)
    }

    /// Asks the manager to passivate every live conversation idle for at least `idle`.
    pub fn sweep_idle(&self, idle: Duration) {
        let _ = self.manager.cast(ManagerMsg::Sweep(Some(idle)));
    }

    pub fn manager(&self) -> &ActorRef<ManagerMsg> {
        &self.manager
    }
}

/// Attempts to create a conversation more than once only when racing another creator.
const RESOLVE_ATTEMPTS: usize = 4;

/// An answer that is already there: for a message stored or refused without an actor.
fn answered(outcome: InboundOutcome) -> oneshot::Receiver<ActorResult<InboundOutcome>> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Ok(outcome));
    rx
}

/// What [`find_or_create`] found or did.
enum Resolved {
    /// The thread has a conversation: the message is for its actor.
    Existing(ConversationId),
    /// The conversation was created with the message in it.
    /// The conversation was created with the message in it (and whether its AI is
    /// active: the message is then for the AI pool).
    Created(ConversationId, Box<Message>, bool),
    /// The message was stored before (in a conversation the thread no longer names).
    Duplicate,
}

/// Why one attempt at [`find_or_create`] gave no answer.
enum Resolve {
    /// Another creator won a guard (thread, phone or email) first: try again.
    Lost,
    Failed(ActorError),
}

impl<E: Into<ActorError>> From<E> for Resolve {
    fn from(e: E) -> Self {
        Resolve::Failed(e.into())
    }
}

/// Finds the conversation of a provider thread, or creates it with the lead's first
/// message. Creation is one batch: the thread mapping, the contact if the workspace does
/// not know the lead's phone or email yet (with its phone and email index entries), the
/// conversation with its first message, view entries, analytics, and the deltas
/// (`conversation_created`, then `message_created`). The thread, phone, email and message
/// dedupe entries are insert-if-absent: a batch that loses a race writes nothing.
async fn find_or_create(
    store: &Store,
    committer: &Committer,
    notifier: &Notifier,
    channel: &Arc<Channel>,
    event: &InboundEvent,
) -> Result<Resolved, Resolve> {
    let ws = channel.workspace_id;
    let (store_in, channel_id) = (store.clone(), channel.id);
    let thread = event.thread.clone();
    let identities = contacts::identities(channel.kind(), event);
    let lookup = identities.clone();
    let campaign = event.campaign.clone();
    let (existing, known_contact, ai_mode) = blocking(move || {
        let store = store_in;
        let existing = store.conversation_by_thread(channel_id, &thread)?;
        if existing.is_some() {
            return Ok((existing, None, AiMode::Manual));
        }
        // One lead, several conversations: an identity the workspace already knows is
        // the same contact.
        let contact = contacts::resolve(&store, ws, &lookup)?;
        // Manual until the workspace's AI agent is enabled: nothing claims to answer.
        let mode = crate::ai::config(&store, ws)?.new_conversation_mode(campaign.as_deref());
        Ok((None, contact, mode))
    })
    .await?;
    if let Some(id) = existing {
        return Ok(Resolved::Existing(id));
    }

    let now = now_millis();
    let activity = crate::conversation::activity_time(event, now);
    let mut set = WriteSet::new();
    let contact = match known_contact {
        Some(stored) => stored.contact,
        None => {
            let details = &event.details;
            let seed = Contact {
                name: event.contact_name.clone(),
                title: details.headline.clone(),
                avatar_url: details.avatar_url.clone(),
                profile_url: details.profile_url.clone(),
                ..Contact::default()
            };
            contacts::stage_new(&mut set, ws, seed, &identities, now)
        }
    };
    let mut conv = fresh_conversation(channel, event.thread.clone(), contact, ai_mode, activity);
    let message = stage_inbound(&mut conv, event.clone(), now, &mut set);
    crate::conversation::suggest_outcome(notifier, &mut conv, &message)?;
    let mut staged = crate::notify::Staged::default();
    if !message.sent_elsewhere && !message.auto_reply {
        let target = notifier.response_target_ms(ws)?;
        crate::notify::arm_overdue(&mut set, &mut conv, notifier.now(), target);
    }
    stage_created(&mut set, &conv, now);
    set.delta(ws, conv.id, DeltaBody::MessageCreated(message.clone()));
    if !message.sent_elsewhere {
        staged = notifier
            .stage(
                &mut set,
                crate::notify::Event {
                    reason: NotificationReason::NewConversation,
                    conv: &conv,
                    message: Some(&message),
                    by_agent: None,
                },
                crate::notify::To::NewConversationListeners,
            )
            .await?;
    }
    match committer.commit(set).await {
        Ok(_) => staged.committed(),
        Err(confab_engine::Error::AlreadyExists) => {
            // A lost race on the thread, phone or email; or the message itself was stored
            // before (its dedupe guard).
            let (store, provider_id) = (store.clone(), event.provider_message_id.clone());
            let seen =
                blocking(move || store.message_by_external_id(channel_id, &provider_id)).await?;
            return match seen {
                Some(_) => Ok(Resolved::Duplicate),
                None => Err(Resolve::Lost),
            };
        }
        Err(e) => return Err(e.into()),
    }
    let kind = conv.channel.as_str();
    metrics::counter!(crate::metrics::CONVERSATIONS_CREATED, "channel" => kind).increment(1);
    let direction = if message.sent_elsewhere {
        "outbound"
    } else {
        "inbound"
    };
    metrics::counter!(crate::metrics::MESSAGES, "direction" => direction, "channel" => kind)
        .increment(1);
    let ai_active = conv.ai_mode == AiMode::Active && !message.auto_reply;
    Ok(Resolved::Created(conv.id, Box::new(message), ai_active))
}

/// A new conversation of `channel` on the provider thread `thread`, with no messages yet,
/// created (and last active) at `at`.
fn fresh_conversation(
    channel: &Channel,
    thread: String,
    contact: Contact,
    ai_mode: AiMode,
    at: UnixMillis,
) -> Conversation {
    Conversation {
        id: ConversationId::new(),
        workspace_id: channel.workspace_id,
        channel_id: channel.id,
        channel: channel.kind(),
        external_thread: thread,
        contact,
        status: Status::Open,
        assignee_id: None,
        tags: Vec::new(),
        campaign: None,
        unread_count: 0,
        ai_mode,
        created_at: at,
        last_activity_at: at,
        preview: String::new(),
        last_inbound_at: None,
        next_seq: 1,
        first_inbound_at: None,
        first_response_at: None,
        first_responder: None,
        closed_at: None,
        last_inbound_seq: None,
        ai_epoch: 0,
        ai_day: 0,
        ai_replies_today: 0,
        subject: None,
        references: Vec::new(),
        awaiting_thread: None,
        overdue_at: None,
        snoozed_until: None,
        snoozed_by: None,
        outcome: None,
        outcome_at: None,
        suggested_outcome: None,
        merged_into: None,
        merged: Vec::new(),
    }
}

/// Adds a new conversation's creation to `set`: its thread (insert-if-absent: a batch that
/// loses the race writes nothing), its state, the contact's link to it, its view entries
/// and analytics, and `conversation_created`.
fn stage_created(set: &mut WriteSet, conv: &Conversation, now: UnixMillis) {
    let thread_key = catalogue::thread_conv(conv.channel_id, &conv.external_thread);
    set.require_absent(Ks::ThreadConv, thread_key.clone())
        .put_raw(Ks::ThreadConv, thread_key, conv.id.to_bytes().to_vec())
        .put(Ks::ConvState, conv.id.to_bytes().to_vec(), conv)
        .put_raw(
            Ks::ContactConv,
            catalogue::contact_conv(conv.contact.id, conv.id),
            Vec::new(),
        )
        .delta(
            conv.workspace_id,
            conv.id,
            DeltaBody::ConversationCreated(conv.card()),
        );
    confab_engine::views::update(set, None, conv);
    let stats = confab_engine::analytics::ConversationStats::default();
    confab_engine::analytics::record(
        set,
        None,
        confab_engine::analytics::Snapshot {
            conv,
            stats: &stats,
        },
        now,
    );
}

/// [`Conversations::start`]'s one attempt: an existing conversation of the channel with
/// the lead, or a new one (with the contact when the workspace does not know the lead),
/// its provisional thread and the alias the lead's first message finds it by.
async fn start_or_find(
    store: &Store,
    committer: &Committer,
    channel: &Arc<Channel>,
    lead: &str,
    name: Option<String>,
) -> Result<(ConversationId, bool), Resolve> {
    let ws = channel.workspace_id;
    let identity = contacts::Identity::Profile {
        kind: channel.kind(),
        id: lead.to_owned(),
    };
    let thread = confab_engine::inbound::provisional_thread(lead);
    let (store_in, channel_id, lookup) = (store.clone(), channel.id, identity.clone());
    let probe_thread = thread.clone();
    let (existing, known_contact, ai_mode) = blocking(move || {
        let store = store_in;
        if let Some(id) = store.conversation_by_thread(channel_id, &probe_thread)? {
            return Ok((Some(id), None, AiMode::Manual));
        }
        let contact = contacts::resolve(&store, ws, std::slice::from_ref(&lookup))?;
        if let Some(contact) = &contact {
            // The lead wrote on this channel before: that conversation goes on.
            for id in store.contact_conversations(contact.contact.id)? {
                if store
                    .conversation(id)?
                    .is_some_and(|c| c.channel_id == channel_id)
                {
                    return Ok((Some(id), None, AiMode::Manual));
                }
            }
        }
        let mode = crate::ai::config(&store, ws)?.new_conversation_mode(None);
        Ok((None, contact, mode))
    })
    .await?;
    if let Some(id) = existing {
        return Ok((id, false));
    }
    let now = now_millis();
    let mut set = WriteSet::new();
    let contact = match known_contact {
        Some(stored) => stored.contact,
        None => contacts::stage_new(
            &mut set,
            ws,
            Contact {
                name,
                ..Contact::default()
            },
            std::slice::from_ref(&identity),
            now,
        ),
    };
    let conv = Conversation {
        awaiting_thread: Some(lead.to_owned()),
        overdue_at: None,
        snoozed_until: None,
        snoozed_by: None,
        outcome: None,
        outcome_at: None,
        suggested_outcome: None,
        merged_into: None,
        merged: Vec::new(),
        ..fresh_conversation(channel, thread, contact, ai_mode, now)
    };
    set.put(
        Ks::ThreadAlias,
        catalogue::thread_alias(channel.id, &awaiting_key(lead)),
        &ThreadAliasValue {
            conversation: conv.id,
            at: now,
        },
    );
    stage_created(&mut set, &conv, now);
    match committer.commit(set).await {
        Ok(_) => {}
        Err(confab_engine::Error::AlreadyExists) => return Err(Resolve::Lost),
        Err(e) => return Err(e.into()),
    }
    metrics::counter!(crate::metrics::CONVERSATIONS_CREATED, "channel" => conv.channel.as_str())
        .increment(1);
    Ok((conv.id, true))
}

/// The thread of the first hint that names a conversation of `channel`, if any (see
/// [`ThreadHint`]), and whether that conversation awaits the message's thread as its own.
fn thread_of(
    store: &Store,
    channel: ChannelId,
    own: &str,
    hints: &[ThreadHint],
) -> confab_engine::Result<Option<(String, bool)>> {
    let now = now_millis();
    for hint in hints {
        let adopt = matches!(hint, ThreadHint::Awaiting(_));
        // A thread with a conversation of its own stays there: only a new thread can be
        // the one a conversation we started waits for.
        if adopt && store.conversation_by_thread(channel, own)?.is_some() {
            continue;
        }
        let conversation = match hint {
            ThreadHint::Conversation(id) => Some(*id),
            ThreadHint::Replies(provider_id) => store
                .message_by_external_id(channel, provider_id)?
                .map(|(conversation, _)| conversation),
            ThreadHint::Alias { key, within_ms } => store
                .get::<ThreadAliasValue>(Ks::ThreadAlias, &catalogue::thread_alias(channel, key))?
                .filter(|alias| now.saturating_sub(alias.at) <= *within_ms)
                .map(|alias| alias.conversation),
            ThreadHint::Awaiting(lead) => store
                .get::<ThreadAliasValue>(
                    Ks::ThreadAlias,
                    &catalogue::thread_alias(channel, &awaiting_key(lead)),
                )?
                .map(|alias| alias.conversation),
        };
        if let Some(conv) = conversation
            .map(|id| store.conversation(id))
            .transpose()?
            .flatten()
        {
            if conv.channel_id == channel {
                let adopt = adopt && conv.awaiting_thread.is_some();
                return Ok(Some((conv.external_thread, adopt)));
            }
        }
    }
    Ok(None)
}

/// Runs a store read on the blocking pool; a panic there is an internal failure.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> confab_engine::Result<T> + Send + 'static,
) -> Result<T, Resolve> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(Resolve::Failed(ActorError::Unavailable(format!(
            "a store read failed: {e}"
        )))),
    }
}

/// Casts `msg` to `actor`, counting it in the mailbox depth of the conversation's live
/// entry (if `actor` is still the one live); a message the actor refused comes back.
fn cast_counted(
    live: &DashMap<ConversationId, Arc<Live>>,
    id: ConversationId,
    actor: &ActorRef<ConversationMsg>,
    msg: ConversationMsg,
) -> Cast {
    let queued = live
        .get(&id)
        .filter(|live| live.actor.get_id() == actor.get_id())
        .map(|live| live.queued.clone());
    if let Some(queued) = &queued {
        queued.fetch_add(1, Ordering::Relaxed);
    }
    let refused = match actor.cast(msg) {
        Ok(()) => return Cast::Sent,
        Err(ractor::MessagingErr::SendErr(refused)) => Cast::Refused(Box::new(refused)),
        Err(_) => Cast::Gone,
    };
    if let Some(queued) = &queued {
        queued.fetch_sub(1, Ordering::Relaxed);
    }
    refused
}

/// What became of a message cast to a conversation's actor.
enum Cast {
    Sent,
    /// The actor is draining (being passivated): the message is handed back.
    Refused(Box<ConversationMsg>),
    Gone,
}

fn paused() -> ActorError {
    ActorError::Unavailable("this conversation keeps crashing; it is paused for a while".into())
}

fn gone() -> ActorError {
    ActorError::Unavailable("the conversation actor stopped before answering".into())
}

pub enum ManagerMsg {
    Activate(
        ConversationId,
        RpcReplyPort<ActorResult<ActorRef<ConversationMsg>>>,
    ),
    /// A message for a conversation without a live actor, or refused by one being
    /// passivated: cast into the conversation's next actor.
    Deliver(
        ConversationId,
        Box<ConversationMsg>,
        RpcReplyPort<ActorResult<()>>,
    ),
    /// Passivates idle actors: those idle past the configured timeout, or past the given one.
    Sweep(Option<Duration>),
}

/// What waits for a passivating actor to stop.
enum Waiter {
    Activation(RpcReplyPort<ActorResult<ActorRef<ConversationMsg>>>),
    Delivery(Box<ConversationMsg>, RpcReplyPort<ActorResult<()>>),
}

pub struct Manager;

pub struct ManagerArgs {
    pub store: Store,
    pub committer: Committer,
    pub outbound: OutboundPort,
    pub ai: AiQueue,
    pub notifier: Notifier,
    pub config: ManagerConfig,
}

pub struct ManagerState {
    store: Store,
    committer: Committer,
    outbound: OutboundPort,
    ai: AiQueue,
    notifier: Notifier,
    config: ManagerConfig,
    live: Arc<DashMap<ConversationId, Arc<Live>>>,
    epoch: Instant,
    /// Which conversation each running actor serves.
    actors: HashMap<ActorId, ConversationId>,
    /// Conversations whose actor was asked to passivate and has not stopped yet, with the
    /// activations and messages waiting for it to stop, in arrival order.
    stopping: HashMap<ConversationId, Vec<Waiter>>,
    restarts: HashMap<ConversationId, VecDeque<Instant>>,
    merges: crate::conversation::MergeNotes,
}

impl Manager {
    /// Starts the manager and returns the handle to reach conversations.
    pub async fn start(args: ManagerArgs) -> Result<Conversations, ractor::SpawnErr> {
        let live = Arc::new(DashMap::new());
        let threads = Arc::new(DashMap::new());
        let epoch = Instant::now();
        let max_threads = args.config.max_live.max(1024);
        let (merges, notes) = tokio::sync::mpsc::unbounded_channel();
        let state = ManagerState {
            store: args.store.clone(),
            committer: args.committer.clone(),
            outbound: args.outbound,
            ai: args.ai.clone(),
            notifier: args.notifier.clone(),
            config: args.config,
            live: live.clone(),
            epoch,
            actors: HashMap::new(),
            stopping: HashMap::new(),
            restarts: HashMap::new(),
            merges,
        };
        let (manager, _) = Actor::spawn(None, Manager, Box::new(state)).await?;
        let conversations = Conversations {
            live,
            threads,
            max_threads,
            manager,
            store: args.store,
            committer: args.committer,
            ai: args.ai,
            notifier: args.notifier,
            epoch,
            tasks: Default::default(),
        };
        let tasks = vec![
            tokio::spawn(forward_merge_notes(conversations.clone(), notes)),
            tokio::spawn(reconcile_merges(conversations.clone())),
        ];
        *conversations
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(conversations)
    }
}

/// Hands each merge note to its conversation, in the order they came.
async fn forward_merge_notes(
    conversations: Conversations,
    mut notes: tokio::sync::mpsc::UnboundedReceiver<(ConversationId, Command)>,
) {
    while let Some((id, command)) = notes.recv().await {
        // A member whose primary is gone (erased) is split off.
        let orphan = match &command {
            Command::Member(member) => Some(*member),
            _ => None,
        };
        match conversations
            .submit(id, |reply| ConversationMsg::Command(command, None, reply))
            .await
        {
            Ok(answer) => {
                tokio::spawn(async move {
                    if let Ok(Err(e)) = answer.await {
                        tracing::warn!(conversation = %id, error = %e, "a merged conversation's report was refused");
                    }
                });
            }
            Err(ActorError::NotFound) => {
                if let Some(member) = orphan {
                    let _ = conversations
                        .submit(member, |reply| {
                            ConversationMsg::Command(Command::Unmerge, None, reply)
                        })
                        .await;
                }
            }
            Err(e) => {
                tracing::warn!(conversation = %id, error = %e, "a merged conversation's report did not arrive");
            }
        }
    }
}

/// At start: every merge link's conversation reads how its merged one stands (a report a
/// crash cut off arrives now), and a conversation merged into one that is gone is split.
async fn reconcile_merges(conversations: Conversations) {
    let store = conversations.store.clone();
    let links = tokio::task::spawn_blocking(move || {
        let mut links = Vec::new();
        for (primary, member) in store.merge_links()? {
            links.push((primary, member, store.conversation(primary)?.is_some()));
        }
        Ok::<_, confab_engine::Error>(links)
    })
    .await;
    let links = match links {
        Ok(Ok(links)) => links,
        Ok(Err(e)) => return tracing::error!(error = %e, "could not read the merge links"),
        Err(e) => return tracing::error!(error = %e, "could not read the merge links"),
    };
    for (primary, member, primary_exists) in links {
        let (id, command) = if primary_exists {
            (primary, Command::Member(member))
        } else {
            (member, Command::Unmerge)
        };
        let answer = conversations
            .request(id, |reply| ConversationMsg::Command(command, None, reply))
            .await;
        if let Err(e) = answer {
            tracing::warn!(conversation = %id, error = %e, "could not reconcile a merge");
        }
    }
}

impl Actor for Manager {
    type Msg = ManagerMsg;
    type State = ManagerState;
    type Arguments = Box<ManagerState>;

    async fn pre_start(
        &self,
        myself: ActorRef<ManagerMsg>,
        state: Box<ManagerState>,
    ) -> Result<ManagerState, ActorProcessingErr> {
        let every = (state.config.idle_timeout / 4).max(Duration::from_millis(250));
        myself.send_interval(every, || ManagerMsg::Sweep(None));
        Ok(*state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ManagerMsg>,
        msg: ManagerMsg,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ManagerMsg::Activate(id, reply) => {
                state.activate(&myself, id, Waiter::Activation(reply)).await
            }
            ManagerMsg::Deliver(id, msg, reply) => {
                state
                    .activate(&myself, id, Waiter::Delivery(msg, reply))
                    .await
            }
            ManagerMsg::Sweep(idle) => state.sweep(idle),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ManagerMsg>,
        event: SupervisionEvent,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        // Deliberately not ractor's default (stop the parent): a conversation's exit is
        // either passivation or a crash to recover from.
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.exited(&myself, cell.get_id(), false).await;
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(actor = %cell.get_id(), %error, "conversation actor crashed");
                state.exited(&myself, cell.get_id(), true).await;
            }
            _ => {}
        }
        Ok(())
    }
}

impl ManagerState {
    /// Answers `waiter` with the conversation's actor, activating it if needed; after the
    /// actor being passivated has stopped, if there is one.
    async fn activate(
        &mut self,
        myself: &ActorRef<ManagerMsg>,
        id: ConversationId,
        waiter: Waiter,
    ) {
        let live = self.live.get(&id).map(|live| live.actor.clone());
        let actor = match live {
            Some(actor) => Ok(actor),
            None => {
                if let Some(waiting) = self.stopping.get_mut(&id) {
                    waiting.push(waiter);
                    return;
                }
                if self.over_restart_budget(id) {
                    Err(paused())
                } else {
                    self.spawn(myself, id).await
                }
            }
        };
        self.answer(id, waiter, &actor);
    }

    /// Gives `waiter` the conversation's actor, or casts its message into it.
    fn answer(
        &self,
        id: ConversationId,
        waiter: Waiter,
        actor: &ActorResult<ActorRef<ConversationMsg>>,
    ) {
        match waiter {
            Waiter::Activation(reply) => {
                let _ = reply.send(actor.clone_ref());
            }
            Waiter::Delivery(msg, reply) => {
                let delivered = actor.clone_ref().and_then(|actor| {
                    // Only the manager passivates, so the actor it just activated (or
                    // found live) is not draining: the message can only fail to arrive
                    // if the actor crashed meanwhile.
                    match cast_counted(&self.live, id, &actor, *msg) {
                        Cast::Sent => Ok(()),
                        Cast::Refused(_) | Cast::Gone => Err(gone()),
                    }
                });
                let _ = reply.send(delivered);
            }
        }
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<ManagerMsg>,
        id: ConversationId,
    ) -> ActorResult<ActorRef<ConversationMsg>> {
        self.make_room();
        let queued = Arc::new(AtomicI64::new(0));
        let args = ConversationArgs {
            id,
            store: self.store.clone(),
            committer: self.committer.clone(),
            outbound: self.outbound.clone(),
            ai: self.ai.clone(),
            queued: queued.clone(),
            notifier: self.notifier.clone(),
            merges: self.merges.clone(),
        };
        match Actor::spawn_linked(None, ConversationActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.actors.insert(actor.get_id(), id);
                self.live.insert(
                    id,
                    Arc::new(Live {
                        actor: actor.clone(),
                        last_used_ms: AtomicU64::new(clock_ms(self.epoch)),
                        queued,
                    }),
                );
                metrics::counter!(crate::metrics::ACTIVATIONS).increment(1);
                metrics::gauge!(crate::metrics::LIVE_CONVERSATIONS).set(self.live.len() as f64);
                Ok(actor)
            }
            Err(ractor::SpawnErr::StartupFailed(e))
                if matches!(
                    e.downcast_ref::<confab_engine::Error>(),
                    Some(confab_engine::Error::ConversationNotFound(_))
                ) =>
            {
                Err(ActorError::NotFound)
            }
            Err(e) => {
                tracing::error!(conversation = %id, error = %e, "cannot activate conversation");
                Err(ActorError::Unavailable(format!(
                    "cannot load the conversation: {e}"
                )))
            }
        }
    }

    /// Keeps the number of live actors under the cap by passivating the least recently
    /// used of a sample (an approximation of LRU that costs O(sample), not O(live)).
    fn make_room(&mut self) {
        const SAMPLE: usize = 32;
        while self.live.len() >= self.config.max_live.max(1) {
            let victim = self
                .live
                .iter()
                .take(SAMPLE)
                .min_by_key(|e| e.value().last_used_ms.load(Ordering::Relaxed))
                .map(|e| *e.key());
            match victim {
                Some(id) => self.passivate(id),
                None => break,
            }
        }
    }

    fn passivate(&mut self, id: ConversationId) {
        if let Some((_, live)) = self.live.remove(&id) {
            self.stopping.entry(id).or_default();
            // Queued behind everything already sent to it, so nothing is dropped.
            live.queued.fetch_add(1, Ordering::Relaxed);
            if live.actor.cast(ConversationMsg::Passivate).is_err() {
                live.actor.stop(None);
            }
        }
    }

    fn sweep(&mut self, idle: Option<Duration>) {
        let idle = idle.unwrap_or(self.config.idle_timeout).as_millis() as u64;
        let now = clock_ms(self.epoch);
        let idle_ones: Vec<ConversationId> = self
            .live
            .iter()
            .filter(|e| now.saturating_sub(e.value().last_used_ms.load(Ordering::Relaxed)) >= idle)
            .map(|e| *e.key())
            .collect();
        for id in idle_ones {
            self.passivate(id);
        }
    }

    async fn exited(&mut self, myself: &ActorRef<ManagerMsg>, actor: ActorId, crashed: bool) {
        let Some(id) = self.actors.remove(&actor) else {
            return;
        };
        if self
            .live
            .get(&id)
            .is_some_and(|l| l.actor.get_id() == actor)
        {
            self.live.remove(&id);
        }
        metrics::gauge!(crate::metrics::LIVE_CONVERSATIONS).set(self.live.len() as f64);
        let waiting = self.stopping.remove(&id).unwrap_or_default();
        if crashed {
            metrics::counter!(crate::metrics::RESTARTS).increment(1);
            self.restarts
                .entry(id)
                .or_default()
                .push_back(Instant::now());
            if self.over_restart_budget(id) {
                tracing::error!(conversation = %id, "restart budget spent: not restarting");
                for waiter in waiting {
                    self.answer(id, waiter, &Err(paused()));
                }
                return;
            }
            // Restart from the store right away, so the conversation is live again.
            let restarted = self.spawn(myself, id).await;
            for waiter in waiting {
                self.answer(id, waiter, &restarted);
            }
        } else {
            metrics::counter!(crate::metrics::PASSIVATIONS).increment(1);
            if !waiting.is_empty() {
                let activated = self.spawn(myself, id).await;
                for waiter in waiting {
                    self.answer(id, waiter, &activated);
                }
            }
        }
    }

    fn over_restart_budget(&mut self, id: ConversationId) -> bool {
        let Some(times) = self.restarts.get_mut(&id) else {
            return false;
        };
        while times
            .front()
            .is_some_and(|t| t.elapsed() > self.config.restart_window)
        {
            times.pop_front();
        }
        if times.is_empty() {
            self.restarts.remove(&id);
            return false;
        }
        times.len() > self.config.restart_budget as usize
    }
}

trait CloneRef {
    fn clone_ref(&self) -> Self;
}

impl CloneRef for ActorResult<ActorRef<ConversationMsg>> {
    fn clone_ref(&self) -> Self {
        match self {
            Ok(actor) => Ok(actor.clone()),
            Err(e) => Err(ActorError::Unavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use confab_engine::committer::{Committer, Durability};
    use confab_engine::ids::{ChannelId, WorkspaceId};
    use confab_engine::model::{ChannelConfig, WhatsappConfig};
    use confab_engine::store::StoreOptions;

    use super::*;
    use crate::conversation::InboundOutcome;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        conversations: Conversations,
        channel: Arc<Channel>,
    }

    async fn fixture(config: ManagerConfig) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
        let (committer, _thread) =
            Committer::start(store.clone(), Durability::Fsync).expect("committer");
        let notifier = Notifier::new(
            store.clone(),
            committer.clone(),
            Arc::new(crate::clock::SystemClock),
            false,
        );
        let conversations = Manager::start(ManagerArgs {
            store: store.clone(),
            committer,
            outbound: Arc::new(crate::outbound::Nowhere),
            ai: crate::ai::AiQueue::bounded(16).0,
            notifier,
            config,
        })
        .await
        .expect("manager");
        let channel = Arc::new(Channel {
            id: ChannelId::new(),
            workspace_id: WorkspaceId::new(),
            name: "test".into(),
            config: ChannelConfig::Whatsapp(WhatsappConfig {
                phone_number_id: "1".into(),
                app_secret: "s".into(),
                verify_token: "v".into(),
                access_token: "a".into(),
                api_base_url: "http://127.0.0.1:9".into(),
            }),
            disabled: false,
            limits: Default::default(),
            created_at: 0,
        });
        Fixture {
            _dir: dir,
            store,
            conversations,
            channel,
        }
    }

    fn event(channel: ChannelId, thread: &str, id: &str) -> InboundEvent {
        InboundEvent {
            channel_id: channel,
            thread: thread.into(),
            provider_message_id: id.into(),
            contact_name: Some("Lead".into()),
            contact_phone: Some(format!("+{thread}")),
            contact_email: None,
            contact_profile: None,
            sent_at: 0,
            text: format!("message {id}"),
            content_type: None,
            raw: None,
            reply_to: None,
            campaign: None,
            received: None,
            details: Default::default(),
            attachments: Vec::new(),
        }
    }

    async fn deliver(f: &Fixture, thread: &str, id: &str) -> (ConversationId, InboundOutcome) {
        let ev = event(f.channel.id, thread, id);
        let outcome = f
            .conversations
            .inbound(f.channel.clone(), ev)
            .await
            .expect("routed")
            .await
            .expect("answered")
            .expect("stored");
        let conv = f
            .store
            .conversation_by_thread(f.channel.id, thread)
            .expect("read")
            .expect("the thread has its conversation");
        (conv, outcome)
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn seq(outcome: &InboundOutcome) -> u64 {
        match outcome {
            InboundOutcome::Stored(m) => m.seq,
            InboundOutcome::Duplicate => 0,
        }
    }

    /// Creation runs on the callers' tasks, concurrently: callers racing for one new
    /// thread get one conversation, and one new lead writing on two channels at once gets
    /// one contact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_creators_make_one_conversation_per_thread_and_one_contact() {
        let f = fixture(ManagerConfig::default()).await;
        let second = Arc::new(Channel {
            id: ChannelId::new(),
            ..(*f.channel).clone()
        });
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32 {
            for channel in [f.channel.clone(), second.clone()] {
                let conversations = f.conversations.clone();
                tasks.spawn(async move {
                    let ev = event(channel.id, "5511987650000", &format!("m{i}"));
                    let outcome = conversations
                        .inbound(channel.clone(), ev)
                        .await
                        .expect("routed")
                        .await
                        .expect("answered")
                        .expect("stored");
                    let InboundOutcome::Stored(message) = outcome else {
                        panic!("m{i} is new: {outcome:?}");
                    };
                    (channel.id, (message.conversation_id, message.seq))
                });
            }
        }
        let mut by_channel: HashMap<ChannelId, Vec<ConversationId>> = HashMap::new();
        let mut seqs: HashMap<ChannelId, Vec<u64>> = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (channel, (id, seq)) = joined.expect("join");
            by_channel.entry(channel).or_default().push(id);
            seqs.entry(channel).or_default().push(seq);
        }
        for seqs in seqs.values_mut() {
            seqs.sort_unstable();
            assert_eq!(
                *seqs,
                (1..=32).collect::<Vec<_>>(),
                "every message stored once"
            );
        }
        let first = &by_channel[&f.channel.id];
        let other = &by_channel[&second.id];
        assert!(first.iter().all(|id| *id == first[0]), "{first:?}");
        assert!(other.iter().all(|id| *id == other[0]), "{other:?}");
        assert_ne!(first[0], other[0], "one conversation per channel");
        let conv = |id| f.store.conversation(id).expect("read").expect("stored");
        let contact = conv(first[0]).contact.id;
        assert_eq!(conv(other[0]).contact.id, contact, "one contact");
        assert_eq!(
            f.store
                .contact_by_phone(f.channel.workspace_id, "+5511987650000")
                .expect("read"),
            Some(contact)
        );
        assert_eq!(
            f.store.conversations_after(None, 100).expect("read").len(),
            2
        );
    }

    #[tokio::test]
    async fn one_thread_resolves_to_one_conversation() {
        let f = fixture(ManagerConfig::default()).await;
        let (a, first) = deliver(&f, "111", "m1").await;
        let (b, second) = deliver(&f, "111", "m2").await;
        let (c, _) = deliver(&f, "222", "m3").await;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!((seq(&first), seq(&second)), (1, 2));
        let (_, again) = deliver(&f, "111", "m1").await;
        assert_eq!(again, InboundOutcome::Duplicate);
    }

    #[tokio::test]
    async fn a_new_threads_conversation_is_created_with_its_first_message_and_no_actor() {
        let f = fixture(ManagerConfig::default()).await;
        let (conv, first) = deliver(&f, "111", "m1").await;
        assert_eq!(seq(&first), 1);
        assert!(!f.conversations.is_live(conv), "creation needs no actor");
        let stored = f.store.conversation(conv).expect("read").expect("stored");
        assert_eq!((stored.next_seq, stored.unread_count), (2, 1));
        assert_eq!(stored.preview, "message m1");
        let (_, second) = deliver(&f, "111", "m2").await;
        assert_eq!(seq(&second), 2);
        assert!(f.conversations.is_live(conv));
    }

    #[tokio::test]
    async fn passivated_conversations_reactivate_with_their_state() {
        let f = fixture(ManagerConfig::default()).await;
        let (conv, _) = deliver(&f, "111", "m1").await;
        deliver(&f, "111", "m2").await;
        assert!(f.conversations.is_live(conv));
        f.conversations.sweep_idle(Duration::ZERO);
        eventually("passivation", || !f.conversations.is_live(conv)).await;
        let (_, outcome) = deliver(&f, "111", "m3").await;
        assert_eq!(seq(&outcome), 3, "sequence continues from the store");
        assert!(f.conversations.is_live(conv));
    }

    #[tokio::test]
    async fn the_live_cap_passivates_the_least_recently_used() {
        let f = fixture(ManagerConfig {
            max_live: 3,
            ..ManagerConfig::default()
        })
        .await;
        for lead in 0..10 {
            // The first message creates the conversation; the second needs its actor.
            deliver(&f, &format!("9{lead}"), &format!("m{lead}")).await;
            deliver(&f, &format!("9{lead}"), &format!("n{lead}")).await;
            assert!(f.conversations.live_count() <= 3);
        }
        assert_eq!(f.conversations.live_count(), 3);
    }

    /// Passivation under the live cap races senders that already hold the old actor:
    /// every message must still be stored, once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_racing_a_passivation_under_the_live_cap_are_all_stored_in_order() {
        let f = fixture(ManagerConfig {
            max_live: 2,
            ..ManagerConfig::default()
        })
        .await;
        const LEADS: usize = 12;
        const MESSAGES: usize = 15;
        for lead in 0..LEADS {
            deliver(&f, &format!("7{lead}"), &format!("first-{lead}")).await;
        }
        // Each lead's messages in order, all leads at once: activations keep evicting.
        let per_lead = (0..LEADS).map(|lead| {
            let f = &f;
            async move {
                let mut seqs = Vec::new();
                for n in 0..MESSAGES {
                    let (_, outcome) =
                        deliver(f, &format!("7{lead}"), &format!("m{lead}-{n}")).await;
                    seqs.push(seq(&outcome));
                }
                seqs
            }
        });
        for seqs in futures_util::future::join_all(per_lead).await {
            assert_eq!(seqs, (2..=MESSAGES as u64 + 1).collect::<Vec<_>>());
        }
        assert!(f.conversations.live_count() <= 2);
    }

    #[tokio::test]
    async fn a_crashed_actor_restarts_from_the_store_until_the_budget_is_spent() {
        let f = fixture(ManagerConfig {
            restart_budget: 2,
            restart_window: Duration::from_secs(60),
            ..ManagerConfig::default()
        })
        .await;
        let (conv, _) = deliver(&f, "111", "m1").await;
        deliver(&f, "111", "m2").await;
        for round in 0..2 {
            let before = f.conversations.actor(conv).await.expect("live").get_id();
            f.conversations
                .tell(conv, ConversationMsg::Crash)
                .await
                .expect("told");
            let mut restarted = None;
            let deadline = Instant::now() + Duration::from_secs(10);
            while restarted.is_none() {
                assert!(Instant::now() < deadline, "restart {round} did not happen");
                if let Ok(actor) = f.conversations.actor(conv).await {
                    if actor.get_id() != before {
                        restarted = Some(actor);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let (_, outcome) = deliver(&f, "111", &format!("after-{round}")).await;
            assert_eq!(seq(&outcome), round + 3);
        }
        // A third crash inside the window spends the budget: the conversation rests.
        f.conversations
            .tell(conv, ConversationMsg::Crash)
            .await
            .expect("told");
        eventually("the crash to be handled", || !f.conversations.is_live(conv)).await;
        let refused = f.conversations.actor(conv).await;
        assert!(
            matches!(refused, Err(ActorError::Unavailable(_))),
            "{:?}",
            refused.map(|a| a.get_id())
        );
    }
}
