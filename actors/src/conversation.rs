//! The conversation actor: the only writer of its conversation.
//!
//! Its state is the conversation as stored; every request becomes one [`WriteSet`] for the
//! committer, and the state only changes once that set is durable. Requests answer through
//! their reply port; the handler itself never fails on a request's behalf.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use confab_engine::ai::{AiDecision, AiReasoning};
use confab_engine::analytics::{self, ConversationStats, Snapshot, CSAT_RANGE};
use confab_engine::audit::{self, ActorKind, Author};
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::delta::{DeltaBody, NotificationReason};
use confab_engine::ids::{AgentId, ConversationId, MessageId};
use confab_engine::inbound::{InboundEvent, PendingStatus};
use confab_engine::model::{
    AiMode, Contact, Conversation, ConversationCard, Delivery, Direction, MergedConversation,
    Message, MessageAttachment, MessageEdit, Reaction, Responder, Sender, Status,
};
use confab_engine::notify::{TIMER_OVERDUE, TIMER_SNOOZE};
use confab_engine::outbox::OutboxEntry;
use confab_engine::port::{utc_day, Change};
use confab_engine::store::Store;
use confab_engine::template::{self, TemplateError, Variables};
use confab_engine::time::{now_millis, UnixMillis};
use confab_engine::views;
use confab_engine::Error as EngineError;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::ai::{unavailable_reasoning, AiAction, AiOutcome, AiQueue, AiRequest, Escalation};
use crate::error::{read_store, ActorError, ActorResult};
use crate::notify::{self, Event, Notifier, To};
use crate::outbound::OutboundPort;

/// Characters of the last message shown on the conversation card.
const PREVIEW_CHARS: usize = 160;

pub enum ConversationMsg {
    /// A lead's message from a connector.
    Inbound(Box<InboundEvent>, RpcReplyPort<ActorResult<InboundOutcome>>),
    /// A message from an agent (or the AI): sent to the lead, or an internal note.
    Send(OutboundRequest, RpcReplyPort<ActorResult<Message>>),
    /// The provider accepted message `seq` under `external_id`. Answered once that is
    /// durable (the message has left the outbox).
    ProviderAccepted {
        seq: u64,
        external_id: String,
        /// The provider thread a conversation we started now has.
        thread: Option<String>,
        done: RpcReplyPort<ActorResult<()>>,
    },
    /// The provider reports a change to message `seq` (a reaction, an edit, a deletion).
    Changed {
        seq: u64,
        change: Change,
        at: UnixMillis,
        reply: RpcReplyPort<ActorResult<()>>,
    },
    /// The lead read the thread: our messages sent up to `at` (`0`: all) are read.
    ThreadRead {
        at: UnixMillis,
        reply: RpcReplyPort<ActorResult<()>>,
    },
    /// The provider refused message `seq` for good. Answered once that is durable.
    ProviderFailed {
        seq: u64,
        error: String,
        done: RpcReplyPort<ActorResult<()>>,
    },
    /// Message `seq` waits in the outbox for this reason (channel disabled, daily limit
    /// reached, credentials refused): shown as its error while it stays queued.
    SendHeld { seq: u64, note: String },
    /// The provider reported a delivery status for message `seq`.
    DeliveryStatus {
        seq: u64,
        status: Delivery,
        error: Option<String>,
        /// Answered once the status is durable (or changed nothing).
        reply: Option<RpcReplyPort<ActorResult<()>>>,
    },
    /// An inbox command: answered with the conversation's card after the change is durable
    /// (or at once when it changes nothing).
    /// A command by an agent (`None`: the system), answered with the card after it.
    Command(
        Command,
        Option<AgentId>,
        RpcReplyPort<ActorResult<ConversationCard>>,
    ),
    /// The AI pool's decision about a lead's message: committed only if the AI is still
    /// active and nothing human happened since that message, else recorded as discarded.
    Ai(Box<AiOutcome>),
    /// The AI pool could not take the lead's message `seq`: escalate to a person.
    AiUnavailable { seq: u64 },
    /// A durable timer of this conversation is due (`confab_engine::notify` kinds).
    Timer { kind: u8, due: UnixMillis },
    /// Delete everything of this conversation (a lead's erasure), then stop: answered with
    /// what was erased once it is durable. Nothing writes the conversation afterwards (a
    /// later message finds no conversation).
    Erase(RpcReplyPort<ActorResult<confab_engine::erasure::ErasedCounts>>),
    /// Retention: delete the messages created before `before`, or, when the conversation
    /// has been inactive since, all of it (then stop). Answered once durable with what was
    /// erased and whether that was the whole conversation.
    Purge {
        before: UnixMillis,
        reply: RpcReplyPort<ActorResult<(confab_engine::erasure::ErasedCounts, bool)>>,
    },
    /// Stop after everything queued before this message is handled.
    Passivate,
    /// Makes the actor panic: lets tests and operators exercise supervision.
    Crash,
}

/// What agents do to a conversation. Each change is one `conversation_updated` delta;
/// repeating a command changes nothing and emits nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Assign to an agent (of this workspace; the caller checks) or unassign; the new
    /// assignee gets a `notification`.
    Assign {
        agent_id: Option<AgentId>,
        by: Option<AgentId>,
    },
    Tags {
        add: Vec<String>,
        remove: Vec<String>,
    },
    Status(Status),
    AiMode(AiMode),
    /// The agent has seen everything: unread count to zero.
    MarkRead,
    /// The lead's details were edited: refresh the conversation's copy.
    ContactChanged(Contact),
    /// Record the lead's satisfaction (1–5), replacing an earlier rating. It is not on the
    /// card, so it streams nothing.
    Csat(u8),
    /// Pending until `until` (or the lead's next message): out of the working views, then
    /// open again with a notification to the assignee (or, if none, to `by`). Snoozing
    /// again moves the time; any status command ends the snooze.
    Snooze {
        until: UnixMillis,
        by: Option<AgentId>,
    },
    /// The lead's outcome: a label of the workspace's list (the caller checks), or none.
    /// Drops the AI's suggestion.
    Outcome(Option<String>),
    /// Merge this conversation into `primary` (of the same workspace; the caller checks):
    /// out of every view, shown in the primary's timeline, its AI mode and assignee the
    /// primary's. Refused while conversations are merged into this one.
    MergeInto {
        primary: ConversationId,
        ai_mode: AiMode,
        assignee_id: Option<AgentId>,
    },
    /// Split off the conversation it is merged into: listed again, as it is.
    Unmerge,
    /// Conversation `id` merged into this one changed (or was just merged): read how it
    /// stands from the store, if its link is there (else it is dropped). Its activity moves
    /// this one's; its lead's new message reopens it.
    Member(ConversationId),
    /// The assignee of the conversation this one is merged into, without a notification
    /// (that one's assignment notified the agent).
    FollowAssignee(Option<AgentId>),
    /// The conversation is no longer merged into this one.
    Unmember(ConversationId),
}

/// Where a conversation's actor sends what other conversations must hear of a merge (its
/// changes to the one it is merged into, a split when it is erased): the manager forwards
/// each command to that conversation's actor, in order.
pub type MergeNotes = tokio::sync::mpsc::UnboundedSender<(ConversationId, Command)>;

/// Most conversations merged into one.
pub const MAX_MERGED: usize = 10;

/// Furthest ahead a conversation can be snoozed.
pub const MAX_SNOOZE_MS: i64 = 366 * 24 * 3600 * 1000;

/// Most tags one conversation carries.
pub const MAX_TAGS: usize = 50;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub enum InboundOutcome {
    Stored(Box<Message>),
    /// The provider delivered this message before; nothing was written.
    Duplicate,
}

#[derive(Clone, Debug)]
pub struct OutboundRequest {
    pub text: String,
    /// An internal note: stored and streamed to agents, never sent to the lead.
    pub internal: bool,
    pub sender: Sender,
    pub agent_id: Option<AgentId>,
    /// Fills `{{agent_name}}`.
    pub agent_name: Option<String>,
    /// Agents `@mentioned` in an internal note: each gets a `notification`.
    pub mentions: Vec<AgentId>,
    /// For the AI's messages: why it sent this (kept on the message and in the log).
    pub ai: Option<AiReasoning>,
    /// Files sent with it (a channel whose rules say `sends_files`, or a note): stored
    /// with the message, read again by the connector when it sends.
    pub files: Vec<(MessageAttachment, Vec<u8>)>,
}

pub struct ConversationActor;

pub struct ConversationArgs {
    pub id: ConversationId,
    pub store: Store,
    pub committer: Committer,
    pub outbound: OutboundPort,
    /// The AI pool's queue.
    pub ai: AiQueue,
    /// This actor's mailbox depth, shared with the handle that sends to it.
    pub queued: Arc<AtomicI64>,
    pub notifier: Notifier,
    pub merges: MergeNotes,
}

pub struct ConversationState {
    conv: Conversation,
    /// What analytics remember of the conversation (see `confab_engine::analytics`).
    stats: ConversationStats,
    store: Store,
    committer: Committer,
    outbound: OutboundPort,
    ai: AiQueue,
    queued: Arc<AtomicI64>,
    notifier: Notifier,
    merges: MergeNotes,
    /// What this conversation last reported to the one it is merged into.
    reported: Option<MergedConversation>,
}

impl Actor for ConversationActor {
    type Msg = ConversationMsg;
    type State = ConversationState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ConversationArgs,
    ) -> Result<ConversationState, ActorProcessingErr> {
        let store = args.store.clone();
        let id = args.id;
        let (conv, stats, gone) = tokio::task::spawn_blocking(move || {
            let conv = store.conversation(id)?;
            // A conversation merged into this one whose link is gone (it was erased, and
            // a crash came before this one heard of it) is dropped at once.
            let mut gone = Vec::new();
            for member in conv.iter().flat_map(|c| &c.merged) {
                if !store.contains(Ks::Merge, &catalogue::merge(id, member.id))? {
                    gone.push(member.id);
                }
            }
            Ok::<_, EngineError>((conv, analytics::conversation_stats(&store, id)?, gone))
        })
        .await??;
        let conv = conv.ok_or(EngineError::ConversationNotFound(id))?;
        for member in gone {
            let (reply, _) = tokio::sync::oneshot::channel();
            args.queued.fetch_add(1, Ordering::Relaxed);
            let _ = myself.cast(ConversationMsg::Command(
                Command::Unmember(member),
                None,
                reply.into(),
            ));
        }
        Ok(ConversationState {
            conv,
            stats,
            store: args.store,
            committer: args.committer,
            outbound: args.outbound,
            ai: args.ai,
            queued: args.queued,
            notifier: args.notifier,
            merges: args.merges,
            reported: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: ConversationMsg,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        state.queued.fetch_sub(1, Ordering::Relaxed);
        // ractor keeps each actor's message loop in one allocation sized for the largest
        // `handle` future: boxing the handling (~6 KB, allocated per message, freed after)
        // keeps that allocation small for every live, idle conversation.
        let mode = state.conv.ai_mode;
        Box::pin(handle_message(myself, msg, state)).await;
        state.report_merge();
        if state.conv.ai_mode != mode {
            // One AI mode for a merged timeline: a take-over (a person's reply, the AI
            // handing over) in any thread holds for all of them.
            let changed = Command::AiMode(state.conv.ai_mode);
            match state.conv.merged_into {
                Some(primary) => {
                    let _ = state.merges.send((primary, changed));
                }
                None => state.follow(Some(changed)),
            }
        }
        Ok(())
    }
}

/// What a conversation does with a message (see [`ConversationActor::handle`]).
async fn handle_message(
    myself: ActorRef<ConversationMsg>,
    msg: ConversationMsg,
    state: &mut ConversationState,
) {
    match msg {
        ConversationMsg::Inbound(event, reply) => {
            let outcome = state.inbound(*event).await;
            let stored = match &outcome {
                Ok(InboundOutcome::Stored(message))
                    if !message.auto_reply && !message.sent_elsewhere =>
                {
                    Some(message.seq)
                }
                _ => None,
            };
            let _ = reply.send(outcome);
            if let Some(seq) = stored {
                state.ask_ai(seq).await;
            }
        }
        ConversationMsg::Ai(outcome) => {
            if let Err(e) = state.ai(*outcome).await {
                tracing::warn!(conversation = %state.conv.id, error = %e, "could not record the AI's decision");
            }
        }
        ConversationMsg::AiUnavailable { seq } => {
            state.ai_unavailable(seq).await;
        }
        ConversationMsg::Timer { kind, due } => {
            if let Err(e) = state.timer(kind, due).await {
                tracing::warn!(conversation = %state.conv.id, error = %e, "could not handle a due timer");
            }
        }
        ConversationMsg::Send(request, reply) => match state.send(request).await {
            Ok((message, outbox)) => {
                let _ = reply.send(Ok(message));
                if let Some(entry) = outbox {
                    state.outbound.dispatch(entry);
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
        ConversationMsg::ProviderAccepted {
            seq,
            external_id,
            thread,
            done,
        } => {
            let outcome = state.accepted(seq, external_id, thread).await;
            if let Err(e) = &outcome {
                tracing::warn!(conversation = %state.conv.id, seq, error = %e, "could not record the provider's acceptance");
            }
            let _ = done.send(outcome);
        }
        ConversationMsg::Changed {
            seq,
            change,
            at,
            reply,
        } => {
            let _ = reply.send(state.changed(seq, change, at).await);
        }
        ConversationMsg::ThreadRead { at, reply } => {
            let _ = reply.send(state.thread_read(at).await);
        }
        ConversationMsg::ProviderFailed { seq, error, done } => {
            let outcome = state.delivery(seq, Delivery::Failed, Some(error)).await;
            if let Err(e) = &outcome {
                tracing::warn!(conversation = %state.conv.id, seq, error = %e, "could not record a send failure");
            }
            let _ = done.send(outcome);
        }
        ConversationMsg::SendHeld { seq, note } => {
            if let Err(e) = state.held(seq, note).await {
                tracing::warn!(conversation = %state.conv.id, seq, error = %e, "could not record why a message waits");
            }
        }
        ConversationMsg::DeliveryStatus {
            seq,
            status,
            error,
            reply,
        } => {
            let outcome = state.delivery(seq, status, error).await;
            match reply {
                Some(reply) => {
                    let _ = reply.send(outcome);
                }
                None => {
                    if let Err(e) = outcome {
                        tracing::warn!(conversation = %state.conv.id, seq, error = %e, "could not record a delivery status");
                    }
                }
            }
        }
        ConversationMsg::Command(command, by, reply) => {
            let _ = reply.send(state.command(command, by).await);
        }
        // Drain, not stop: what was already sent is handled first, and a message sent
        // from now on is handed back to its sender, who gives it to the next actor.
        ConversationMsg::Erase(reply) => {
            let erased = state.erase().await;
            let done = erased.is_ok();
            let _ = reply.send(erased);
            if done {
                state.split_erased().await;
                myself.stop(Some("erased".into()));
            }
        }
        ConversationMsg::Purge { before, reply } => {
            // Decided here, by the conversation's one writer: a message that arrived since
            // retention looked makes it active again, and then only old messages go.
            if state.conv.last_activity_at < before {
                let erased = state.erase().await;
                let done = erased.is_ok();
                let _ = reply.send(erased.map(|counts| (counts, true)));
                if done {
                    state.split_erased().await;
                    myself.stop(Some("erased".into()));
                }
            } else {
                let _ = reply.send(state.purge(before).await.map(|counts| (counts, false)));
            }
        }
        ConversationMsg::Passivate => {
            if myself.drain().is_err() {
                myself.stop(Some("passivated".into()));
            }
        }
        ConversationMsg::Crash => panic!("crash requested for conversation {}", state.conv.id),
    }
}

impl ConversationState {
    /// Tells the conversation this one is merged into how it stands now, if that changed
    /// since it last told it.
    fn report_merge(&mut self) {
        let Some(primary) = self.conv.merged_into else {
            self.reported = None;
            return;
        };
        let now = self.conv.as_merged();
        if self.reported.as_ref() != Some(&now) {
            let _ = self.merges.send((primary, Command::Member(self.conv.id)));
            self.reported = Some(now);
        }
    }

    /// After this conversation's erasure: the one it was merged into drops it, the ones
    /// merged into it (by their links, which they hold) are split off.
    async fn split_erased(&mut self) {
        if let Some(primary) = self.conv.merged_into.take() {
            let _ = self.merges.send((primary, Command::Unmember(self.conv.id)));
        }
        let mut members: Vec<ConversationId> = self.conv.merged.iter().map(|m| m.id).collect();
        let (store, id) = (self.store.clone(), self.conv.id);
        match tokio::task::spawn_blocking(move || store.merged_ids(id)).await {
            Ok(Ok(linked)) => members.extend(linked),
            Ok(Err(e)) => {
                tracing::warn!(conversation = %id, error = %e, "could not read the merge links")
            }
            Err(e) => {
                tracing::warn!(conversation = %id, error = %e, "could not read the merge links")
            }
        }
        members.sort();
        members.dedup();
        for member in members {
            let _ = self.merges.send((member, Command::Unmerge));
        }
    }

    /// The conversations merged into this one follow what an agent did to it.
    fn follow(&self, command: Option<Command>) {
        let Some(command) = command else { return };
        for member in &self.conv.merged {
            let _ = self.merges.send((member.id, command.clone()));
        }
    }

    /// Whether conversations are merged into this one, by their links (what a member
    /// reports may not have arrived yet).
    async fn has_members(&self) -> ActorResult<bool> {
        let (store, id) = (self.store.clone(), self.conv.id);
        let linked = read_store(move || store.merged_ids(id)).await?;
        Ok(!linked.is_empty() || !self.conv.merged.is_empty())
    }

    /// How conversation `member` merged into this one stands, or `None` when its link is
    /// gone (split or erased meanwhile).
    async fn member(&self, member: ConversationId) -> ActorResult<Option<MergedConversation>> {
        let (store, id) = (self.store.clone(), self.conv.id);
        read_store(move || {
            if !store.contains(Ks::Merge, &catalogue::merge(id, member))? {
                return Ok(None);
            }
            Ok(store.conversation(member)?.map(|c| c.as_merged()))
        })
        .await
    }

    /// Commits the erasure of the conversation, in order (state and inbox entries last).
    async fn erase(&mut self) -> ActorResult<confab_engine::erasure::ErasedCounts> {
        let (store, conv) = (self.store.clone(), self.conv.clone());
        let (sets, counts) =
            read_store(move || confab_engine::erasure::conversation_sets(&store, &conv)).await?;
        for set in sets {
            self.committer.commit(set).await?;
        }
        Ok(counts)
    }

    /// Commits the deletion of the messages created before `before`.
    async fn purge(
        &mut self,
        before: UnixMillis,
    ) -> ActorResult<confab_engine::erasure::ErasedCounts> {
        let (store, conv) = (self.store.clone(), self.conv.clone());
        let (sets, counts, _) =
            read_store(move || confab_engine::erasure::purge_sets(&store, &conv, before)).await?;
        for set in sets {
            self.committer.commit(set).await?;
        }
        Ok(counts)
    }

    async fn inbound(&mut self, mut event: InboundEvent) -> ActorResult<InboundOutcome> {
        let now = now_millis();
        let activity = activity_time(&event, now);
        let mut conv = self.conv.clone();
        let mut set = WriteSet::new();
        if let Some(thread) = event.details.adopt_thread.take() {
            // The router found no conversation of this thread before choosing this one.
            adopt_thread(&mut conv, thread, true, &mut set);
        }
        if event.details.from_us {
            if let Some(mut ours) = self.echo_of(&event).await? {
                // Our own send, seen again before the provider's answer named it: the
                // message is already here; it gets its provider id now.
                let ext_key = catalogue::ext_msg(conv.channel_id, &event.provider_message_id);
                ours.external_id = Some(event.provider_message_id);
                set.require_absent(Ks::ExtMsg, ext_key.clone())
                    .put_raw(
                        Ks::ExtMsg,
                        ext_key,
                        catalogue::ext_msg_value(conv.id, ours.seq),
                    )
                    .put(Ks::ConvMsg, catalogue::conv_msg(conv.id, ours.seq), &ours)
                    .delta(conv.workspace_id, conv.id, DeltaBody::MessageUpdated(ours));
                if conv != self.conv {
                    store_state(&mut set, &self.conv, &conv, Author::of(ActorKind::Provider));
                }
                return match self.committer.commit(set).await {
                    Ok(_) => {
                        self.conv = conv;
                        Ok(InboundOutcome::Duplicate)
                    }
                    Err(EngineError::AlreadyExists) => Ok(InboundOutcome::Duplicate),
                    Err(e) => Err(e.into()),
                };
            }
        }
        let message = stage_inbound(&mut conv, event, now, &mut set);
        let from_lead = !message.sent_elsewhere && !message.auto_reply;
        suggest_outcome(&self.notifier, &mut conv, &message)?;
        let mut staged = notify::Staged::default();
        if from_lead {
            let target = self.notifier.response_target_ms(conv.workspace_id)?;
            notify::arm_overdue(&mut set, &mut conv, self.notifier.now(), target);
            if let Some(assignee) = conv.assignee_id {
                staged = self
                    .notify(
                        &mut set,
                        NotificationReason::NewMessage,
                        &conv,
                        Some(&message),
                        None,
                        vec![assignee],
                    )
                    .await?;
            }
        }
        let by = Author::of(if message.sent_elsewhere {
            ActorKind::Provider
        } else {
            ActorKind::Lead
        });
        touch(&mut set, &self.conv, &mut conv, activity, by);
        self.analytics(&mut set, &conv, &self.stats, now);
        set.delta(
            conv.workspace_id,
            conv.id,
            DeltaBody::MessageCreated(message.clone()),
        )
        .delta(
            conv.workspace_id,
            conv.id,
            DeltaBody::ConversationUpdated(conv.card()),
        );
        match self.committer.commit(set).await {
            Ok(_) => {
                self.conv = conv;
                staged.committed();
                let direction = if message.sent_elsewhere {
                    "outbound"
                } else {
                    "inbound"
                };
                metrics::counter!(crate::metrics::MESSAGES, "direction" => direction, "channel" => self.conv.channel.as_str()).increment(1);
                Ok(InboundOutcome::Stored(Box::new(message)))
            }
            Err(EngineError::AlreadyExists) => Ok(InboundOutcome::Duplicate),
            Err(e) => Err(e.into()),
        }
    }

    async fn send(
        &mut self,
        request: OutboundRequest,
    ) -> ActorResult<(Message, Option<OutboxEntry>)> {
        let sender = match (request.sender, request.agent_id) {
            (Sender::Ai, _) => Author::of(ActorKind::Ai),
            (_, agent) => Author::agent_or_system(agent),
        };
        let vars = Variables {
            contact: &self.conv.contact,
            agent_name: request.agent_name.as_deref(),
        };
        // People's messages fill variables; the AI's text is sent as written (a model's
        // `{{` is no variable, and a missing name must not silence the agent).
        let filled = if request.sender == Sender::Ai {
            request.text.clone()
        } else {
            template::fill(&request.text, &vars).map_err(|e| match e {
                TemplateError::Unknown(_) => ActorError::invalid("unknown_variable", e.to_string()),
                TemplateError::NoValue(_) => {
                    ActorError::invalid("variable_without_value", e.to_string())
                }
            })?
        };
        let text = filled.trim();
        if text.is_empty() {
            return Err(ActorError::invalid(
                "empty_text",
                "the message text is empty",
            ));
        }
        let rules = self.conv.channel.rules();
        if text.chars().count() > rules.max_text_chars {
            return Err(ActorError::invalid(
                "text_too_long",
                format!(
                    "the message text is longer than {} characters",
                    rules.max_text_chars
                ),
            ));
        }
        let now = now_millis();
        let window = rules.reply_window(self.conv.last_inbound_at, now);
        if !request.internal && window.is_some_and(|w| !w.open) {
            return Err(ActorError::WindowClosed);
        }
        if !request.internal && !request.files.is_empty() && !rules.sends_files {
            return Err(ActorError::invalid(
                "attachments_unsupported",
                format!(
                    "files cannot be sent on {} from Confab yet",
                    self.conv.channel.as_str()
                ),
            ));
        }

        let mut conv = self.conv.clone();
        let mut stats = self.stats;
        let seq = conv.next_seq;
        let message = Message {
            id: MessageId::new(),
            conversation_id: conv.id,
            seq,
            direction: Direction::Outbound,
            sender: request.sender,
            agent_id: request.agent_id,
            text: text.to_string(),
            internal: request.internal,
            channel: conv.channel,
            created_at: now,
            delivery: (!request.internal).then_some(Delivery::Queued),
            external_id: None,
            content_type: None,
            reply_to: None,
            error: None,
            raw: None,
            ai: request.ai.clone(),
            attachments: request.files.iter().map(|(a, _)| a.clone()).collect(),
            subject: None,
            full_text: None,
            auto_reply: false,
            sent_elsewhere: false,
            reactions: Vec::new(),
            edits: Vec::new(),
            deleted_at: None,
        };
        conv.next_seq += 1;

        let mut set = WriteSet::new();
        set.put(Ks::ConvMsg, catalogue::conv_msg(conv.id, seq), &message);
        for (i, (_, bytes)) in request.files.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            set.put_raw(Ks::Blob, catalogue::blob(message.id, index), bytes.clone());
        }
        if let Some(reasoning) = &request.ai {
            set.put(
                Ks::AiLog,
                catalogue::ai_log(conv.id, reasoning.answers_seq, message.id),
                reasoning,
            );
            analytics::add_changes(
                &mut set,
                conv.workspace_id,
                &analytics::ai_decision(reasoning.decision, None, reasoning.latency_ms, now),
            );
            let today = utc_day(now);
            if conv.ai_day != today {
                conv.ai_day = today;
                conv.ai_replies_today = 0;
            }
            conv.ai_replies_today = conv.ai_replies_today.saturating_add(1);
        }
        // A person writing to the lead: any AI answer still being prepared is stale.
        if request.sender == Sender::Agent && !request.internal {
            conv.ai_epoch = conv.ai_epoch.wrapping_add(1);
        }
        let outbox = (!request.internal).then(|| OutboxEntry {
            message_id: message.id,
            workspace_id: conv.workspace_id,
            conversation_id: conv.id,
            channel_id: conv.channel_id,
            seq,
            thread: conv.external_thread.clone(),
            text: message.text.clone(),
            created_at: now,
            address: conv.contact.email.clone(),
            subject: conv.subject.clone(),
            in_reply_to: conv.references.last().cloned(),
            references: conv.references.clone(),
            attachments: message.attachments.clone(),
            start_with: conv.awaiting_thread.clone(),
        });
        if let Some(entry) = &outbox {
            // Answered: the lead no longer waits.
            notify::disarm_overdue(&mut set, &mut conv);
            // A reply to the lead: the conversation now waits for the lead's answer.
            conv.preview = preview(&message.text);
            if conv.status == Status::Open {
                conv.status = Status::Pending;
            }
            // A human answering while the AI is active takes the conversation over.
            if request.sender == Sender::Agent && conv.ai_mode == AiMode::Active {
                conv.ai_mode = AiMode::Paused;
            }
            if conv.first_inbound_at.is_some() && conv.first_response_at.is_none() {
                conv.first_response_at = Some(now);
                conv.first_responder = Some(match request.sender {
                    Sender::Ai => Responder::Ai,
                    _ => Responder::Human,
                });
            }
            match request.sender {
                Sender::Ai => stats.ai_replies = stats.ai_replies.saturating_add(1),
                Sender::Agent => stats.human_replies = stats.human_replies.saturating_add(1),
                Sender::Lead | Sender::System => {}
            }
            set.put(
                Ks::OutboxEntry,
                catalogue::outbox_entry(entry.message_id),
                entry,
            );
            touch(&mut set, &self.conv, &mut conv, now, sender);
            self.analytics(&mut set, &conv, &stats, now);
        } else {
            // A note is not activity with the lead: the inbox order stays as it is.
            store_state(&mut set, &self.conv, &conv, sender);
        }
        set.delta(
            conv.workspace_id,
            conv.id,
            DeltaBody::MessageCreated(message.clone()),
        )
        .delta(
            conv.workspace_id,
            conv.id,
            DeltaBody::ConversationUpdated(conv.card()),
        );
        let mut staged = notify::Staged::default();
        if request.internal && !request.mentions.is_empty() {
            staged = self
                .notify(
                    &mut set,
                    NotificationReason::Mention,
                    &conv,
                    Some(&message),
                    request.agent_id,
                    request.mentions.clone(),
                )
                .await?;
        }
        self.committer.commit(set).await?;
        staged.committed();
        self.conv = conv;
        self.stats = stats;
        if !request.internal {
            metrics::counter!(crate::metrics::MESSAGES, "direction" => "outbound", "channel" => self.conv.channel.as_str()).increment(1);
        }
        Ok((message, outbox))
    }

    async fn command(
        &mut self,
        command: Command,
        by: Option<AgentId>,
    ) -> ActorResult<ConversationCard> {
        let actor = Author::agent_or_system(by);
        let mut conv = self.conv.clone();
        let mut stats = self.stats;
        let mut assigned = None;
        let mut set = WriteSet::new();
        // Conversations merged into this one follow its AI mode, status and assignee, and
        // are read with it.
        let followed = match &command {
            Command::AiMode(_) | Command::MarkRead | Command::Status(_) => Some(command.clone()),
            Command::Assign { agent_id, .. } => Some(Command::FollowAssignee(*agent_id)),
            _ => None,
        };
        let mut just_merged = false;
        match command {
            Command::Assign { agent_id, by } => {
                if conv.assignee_id != agent_id {
                    conv.assignee_id = agent_id;
                    assigned = agent_id.map(|agent| (agent, by));
                }
            }
            Command::Tags { add, remove } => {
                let add = normalize_tags(add)?;
                let remove = normalize_tags(remove)?;
                conv.tags.retain(|t| !remove.contains(t));
                for tag in add {
                    if !conv.tags.contains(&tag) {
                        conv.tags.push(tag);
                    }
                }
                if conv.tags.len() > MAX_TAGS {
                    return Err(ActorError::invalid(
                        "too_many_tags",
                        format!("a conversation carries at most {MAX_TAGS} tags"),
                    ));
                }
            }
            Command::Status(status) => {
                wake(&mut set, &mut conv);
                if conv.status != status {
                    conv.status = status;
                    conv.closed_at = (status == Status::Closed).then(now_millis);
                }
            }
            Command::Outcome(outcome) => {
                if conv.outcome != outcome {
                    conv.outcome = outcome;
                    conv.outcome_at = Some(now_millis());
                }
                conv.suggested_outcome = None;
            }
            Command::Snooze { until, by } => {
                let now = self.notifier.now();
                if until <= now || until > now.saturating_add(MAX_SNOOZE_MS) {
                    return Err(ActorError::invalid(
                        "invalid_value",
                        "`until` must be in the future, at most 366 days ahead",
                    ));
                }
                if conv.snoozed_until != Some(until) {
                    wake(&mut set, &mut conv);
                    set.put_raw(
                        Ks::Timer,
                        catalogue::timer(until, TIMER_SNOOZE, conv.id),
                        Vec::new(),
                    );
                    conv.snoozed_until = Some(until);
                    conv.snoozed_by = by;
                    // Put aside: an AI answer being prepared is stale.
                    conv.ai_epoch = conv.ai_epoch.wrapping_add(1);
                    if conv.status != Status::Pending {
                        conv.status = Status::Pending;
                        conv.closed_at = None;
                    }
                }
            }
            Command::AiMode(mode) => {
                if conv.ai_mode != mode {
                    conv.ai_mode = mode;
                    // A takeover (or a resume): AI answers prepared before it are stale.
                    conv.ai_epoch = conv.ai_epoch.wrapping_add(1);
                }
            }
            Command::FollowAssignee(agent_id) => conv.assignee_id = agent_id,
            Command::MergeInto {
                primary,
                ai_mode,
                assignee_id,
            } => {
                if conv.merged_into != Some(primary) {
                    if primary == conv.id {
                        return Err(ActorError::invalid(
                            "invalid_value",
                            "a conversation cannot be merged into itself",
                        ));
                    }
                    if conv.merged_into.is_some() {
                        return Err(ActorError::conflict(
                            "already_merged",
                            "this conversation is merged into another: split it off first",
                        ));
                    }
                    if self.has_members().await? {
                        return Err(ActorError::conflict(
                            "has_merged_conversations",
                            "conversations are merged into this one: merge the other way, or split them off first",
                        ));
                    }
                    conv.merged_into = Some(primary);
                    conv.assignee_id = assignee_id;
                    just_merged = true;
                    set.put_raw(Ks::Merge, catalogue::merge(primary, conv.id), Vec::new());
                    if conv.ai_mode != ai_mode {
                        conv.ai_mode = ai_mode;
                        conv.ai_epoch = conv.ai_epoch.wrapping_add(1);
                    }
                }
            }
            Command::Unmerge => {
                if let Some(primary) = conv.merged_into.take() {
                    set.delete(Ks::Merge, catalogue::merge(primary, conv.id));
                }
            }
            Command::Member(id) => {
                if conv.merged_into.is_some() {
                    return Err(ActorError::conflict(
                        "already_merged",
                        "this conversation is merged into another: merge into that one",
                    ));
                }
                let earlier = conv.merged.iter().position(|m| m.id == id);
                match self.member(id).await? {
                    // Split or erased meanwhile: no longer listed.
                    None => conv.merged.retain(|m| m.id != id),
                    Some(member) => {
                        if earlier.is_none() && conv.merged.len() >= MAX_MERGED {
                            return Err(ActorError::conflict(
                                "too_many_merged",
                                format!(
                                    "at most {MAX_MERGED} conversations can be merged into one"
                                ),
                            ));
                        }
                        // Read from the store, so never older than what this one holds.
                        let lead_wrote = earlier.is_some_and(|i| {
                            member.last_inbound_seq > conv.merged[i].last_inbound_seq
                        });
                        if member.last_activity_at > conv.last_activity_at {
                            conv.last_activity_at = member.last_activity_at;
                            conv.preview.clone_from(&member.preview);
                        }
                        if lead_wrote {
                            // As a message in this thread would: back in the working views.
                            wake(&mut set, &mut conv);
                            if conv.status != Status::Open {
                                conv.status = Status::Open;
                                conv.closed_at = None;
                            }
                        }
                        match earlier {
                            Some(i) => conv.merged[i] = member,
                            None => conv.merged.push(member),
                        }
                    }
                }
            }
            Command::Unmember(id) => conv.merged.retain(|m| m.id != id),
            Command::MarkRead => conv.unread_count = 0,
            Command::ContactChanged(contact) => conv.contact = contact,
            Command::Csat(rating) => {
                if !CSAT_RANGE.contains(&rating) {
                    return Err(ActorError::invalid(
                        "invalid_value",
                        "a CSAT rating is 1 to 5",
                    ));
                }
                stats.csat = Some(rating);
            }
        }
        if conv == self.conv && stats == self.stats {
            self.follow(followed);
            return Ok(conv.card());
        }
        if stats.csat != self.stats.csat {
            if let Some(rating) = stats.csat {
                audit::record(
                    &mut set,
                    conv.id,
                    actor,
                    "csat_recorded",
                    [("rating".to_owned(), rating.to_string())].into(),
                );
            }
        }
        if conv != self.conv {
            store_state(&mut set, &self.conv, &conv, actor);
            set.delta(
                conv.workspace_id,
                conv.id,
                DeltaBody::ConversationUpdated(conv.card()),
            );
        }
        self.analytics(&mut set, &conv, &stats, now_millis());
        let mut staged = notify::Staged::default();
        if let Some((agent, by)) = assigned {
            staged = self
                .notify(
                    &mut set,
                    NotificationReason::Assignment,
                    &conv,
                    None,
                    by,
                    vec![agent],
                )
                .await?;
        }
        self.committer.commit(set).await?;
        staged.committed();
        let resumed = self.conv.ai_mode != AiMode::Active && conv.ai_mode == AiMode::Active;
        self.conv = conv;
        self.stats = stats;
        self.follow(followed);
        if just_merged {
            // The merge's own caller tells the primary (as the agent who merged).
            self.reported = Some(self.conv.as_merged());
        }
        // Resumed with the lead's last message unanswered: the AI takes it.
        if let (true, Some(seq)) = (resumed, self.conv.last_inbound_seq) {
            if seq + 1 == self.conv.next_seq {
                self.ask_ai(seq).await;
            }
        }
        Ok(self.conv.card())
    }

    /// Adds the analytics of going from the current state to `conv` / `stats` to `set`.
    fn analytics(
        &self,
        set: &mut WriteSet,
        conv: &Conversation,
        stats: &ConversationStats,
        now: UnixMillis,
    ) {
        let before = Snapshot {
            conv: &self.conv,
            stats: &self.stats,
        };
        analytics::record(set, Some(before), Snapshot { conv, stats }, now);
    }

    /// The message of ours this event (ours, written on the provider) echoes when the
    /// provider's webhook beat its answer to our send: the oldest of ours among the newest
    /// whose request is at the provider right now, not yet named by it, with the same
    /// text (whitespace aside). A held or paced message is not on the wire, so a person
    /// typing the same words on the provider meanwhile is not mistaken for it.
    async fn echo_of(&self, event: &InboundEvent) -> ActorResult<Option<Message>> {
        let store = self.store.clone();
        let conv_id = self.conv.id;
        let recent = tokio::task::spawn_blocking(move || {
            store.messages_before(conv_id, None, ECHO_LOOKBACK)
        })
        .await
        .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = words(&event.text);
        Ok(recent.items.into_iter().rev().find(|m| {
            m.direction == Direction::Outbound
                && !m.internal
                && !m.sent_elsewhere
                && m.external_id.is_none()
                && m.delivery == Some(Delivery::Queued)
                && self.outbound.is_sending(m.id)
                && words(&m.text) == text
        }))
    }

    /// Message `seq` of this conversation as stored (read off the async runtime).
    async fn stored_message(&self, seq: u64) -> ActorResult<Option<Message>> {
        let store = self.store.clone();
        let conv_id = self.conv.id;
        tokio::task::spawn_blocking(move || store.message(conv_id, seq))
            .await
            .map_err(|e| ActorError::Unavailable(e.to_string()))?
            .map_err(Into::into)
    }

    /// Records a provider's change to message `seq`.
    async fn changed(&mut self, seq: u64, change: Change, at: UnixMillis) -> ActorResult<()> {
        let conv_id = self.conv.id;
        let message = self.stored_message(seq).await?;
        let Some(mut message) = message else {
            return Ok(());
        };
        let at = if at > 0 { at } else { now_millis() };
        let before = message.clone();
        match change {
            Change::Reaction { emoji, from_lead } => {
                let by = if from_lead {
                    Sender::Lead
                } else {
                    Sender::Agent
                };
                message.reactions.retain(|r| r.by != by);
                let emoji: String = emoji.chars().take(MAX_REACTION_CHARS).collect();
                if !emoji.is_empty() {
                    message.reactions.push(Reaction { emoji, by, at });
                }
            }
            Change::Edited { text } => {
                if text != message.text {
                    let earlier = std::mem::replace(&mut message.text, text);
                    message.edits.push(MessageEdit { text: earlier, at });
                    let excess = message.edits.len().saturating_sub(MAX_EDITS);
                    message.edits.drain(..excess);
                }
            }
            Change::Deleted => {
                message.deleted_at.get_or_insert(at);
            }
        }
        if message == before {
            return Ok(());
        }
        let mut set = WriteSet::new();
        set.put(Ks::ConvMsg, catalogue::conv_msg(conv_id, seq), &message)
            .delta(
                self.conv.workspace_id,
                conv_id,
                DeltaBody::MessageUpdated(message),
            );
        self.committer.commit(set).await?;
        Ok(())
    }

    /// The lead read the thread: our messages sent up to `at` (`0`: all) move to read.
    async fn thread_read(&mut self, at: UnixMillis) -> ActorResult<()> {
        let store = self.store.clone();
        let conv_id = self.conv.id;
        let recent = tokio::task::spawn_blocking(move || {
            store.messages_before(conv_id, None, READ_LOOKBACK)
        })
        .await
        .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        let mut set = WriteSet::new();
        let mut changed = false;
        for mut message in recent.items {
            let Some(current) = message.delivery else {
                continue;
            };
            if current == Delivery::Read {
                // Everything before it was read too.
                break;
            }
            if at > 0 && message.created_at > at {
                continue;
            }
            if !matches!(current, Delivery::Sent | Delivery::Delivered) {
                continue;
            }
            message.delivery = Some(Delivery::Read);
            set.put(
                Ks::ConvMsg,
                catalogue::conv_msg(conv_id, message.seq),
                &message,
            )
            .delta(
                self.conv.workspace_id,
                conv_id,
                DeltaBody::MessageUpdated(message),
            );
            changed = true;
        }
        if changed {
            self.committer.commit(set).await?;
        }
        Ok(())
    }

    async fn accepted(
        &mut self,
        seq: u64,
        external_id: String,
        thread: Option<String>,
    ) -> ActorResult<()> {
        let store = self.store.clone();
        let (conv_id, channel_id) = (self.conv.id, self.conv.channel_id);
        let ext = external_id.clone();
        let opened = thread.clone();
        let (message, pending, chat_taken) = tokio::task::spawn_blocking(move || {
            let message = store.message(conv_id, seq)?;
            let pending: Option<PendingStatus> =
                store.get(Ks::ExtStatus, &catalogue::ext_msg(channel_id, &ext))?;
            // A thread another conversation already has (its lead wrote there first).
            let taken = match &opened {
                Some(thread) => store
                    .conversation_by_thread(channel_id, thread)?
                    .is_some_and(|other| other != conv_id),
                None => false,
            };
            Ok::<_, EngineError>((message, pending, taken))
        })
        .await
        .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        let Some(mut message) = message else {
            return Ok(());
        };
        message.external_id = Some(external_id.clone());
        // Whatever held it (a disabled channel, a daily limit) is over.
        message.error = None;
        let mut delivery = message.delivery.unwrap_or(Delivery::Queued);
        delivery = delivery.advance(Delivery::Sent).unwrap_or(delivery);
        let ext_key = catalogue::ext_msg(channel_id, &external_id);
        let mut set = WriteSet::new();
        if let Some(pending) = pending {
            // The provider's status webhook beat its answer to our send.
            delivery = delivery.advance(pending.status).unwrap_or(delivery);
            if pending.error.is_some() {
                message.error = pending.error;
            }
            set.delete(Ks::ExtStatus, ext_key.clone());
        }
        message.delivery = Some(delivery);
        set.put_raw(Ks::ExtMsg, ext_key, catalogue::ext_msg_value(conv_id, seq))
            .put(Ks::ConvMsg, catalogue::conv_msg(conv_id, seq), &message)
            .delete(Ks::OutboxEntry, catalogue::outbox_entry(message.id))
            .delta(
                self.conv.workspace_id,
                conv_id,
                DeltaBody::MessageUpdated(message),
            );
        // Email: our message joins the thread's references (the lead's answer names it).
        let mut next = self.conv.clone();
        if next.channel.rules().threads_by_references {
            remember_reference(&mut next, &external_id);
        }
        // A conversation we started: the provider named its thread.
        if let Some(thread) = thread {
            adopt_thread(&mut next, thread, !chat_taken, &mut set);
        }
        let conv = (next != self.conv).then(|| {
            store_state(&mut set, &self.conv, &next, Author::of(ActorKind::Provider));
            next
        });
        self.committer.commit(set).await?;
        if let Some(conv) = conv {
            self.conv = conv;
        }
        Ok(())
    }

    /// Offers the lead's message `seq` to the AI pool when the AI is active; escalates at
    /// once when the pool cannot take it.
    async fn ask_ai(&mut self, seq: u64) {
        if self.conv.ai_mode != AiMode::Active {
            return;
        }
        let request = AiRequest {
            workspace: self.conv.workspace_id,
            conversation: self.conv.id,
            seq,
            epoch: self.conv.ai_epoch,
        };
        if !self.ai.offer(request) {
            self.ai_unavailable(seq).await;
        }
    }

    async fn ai_unavailable(&mut self, seq: u64) {
        if self.conv.ai_mode != AiMode::Active {
            return;
        }
        let outcome = AiOutcome {
            reasoning: unavailable_reasoning(
                seq,
                "the AI agent could not take the message (busy or not running)",
            ),
            action: AiAction::Escalate(Escalation::to_people()),
            max_replies_per_day: 0,
            epoch: self.conv.ai_epoch,
        };
        if let Err(e) = self.ai(outcome).await {
            tracing::warn!(conversation = %self.conv.id, error = %e, "could not escalate");
        }
    }

    /// Why an AI decision about the lead's message `seq` can no longer be applied.
    fn ai_stale(&self, seq: u64, epoch: u64) -> Option<&'static str> {
        if self.conv.ai_mode != AiMode::Active {
            Some("the AI is no longer active in this conversation (a person took over)")
        } else if self.conv.ai_epoch != epoch {
            Some("a person wrote to the lead or changed the AI mode after this message")
        } else if self.conv.last_inbound_seq != Some(seq) {
            Some("the lead wrote again: the newer message gets the answer")
        } else {
            None
        }
    }

    /// Applies (or discards) the AI pool's decision.
    async fn ai(&mut self, outcome: AiOutcome) -> ActorResult<()> {
        let AiOutcome {
            mut reasoning,
            action,
            max_replies_per_day,
            epoch,
        } = outcome;
        let seq = reasoning.answers_seq;
        if let Some(why) = self.ai_stale(seq, epoch) {
            if reasoning.decision != AiDecision::Discarded {
                reasoning.why = format!("discarded: {why} (it would have been: {})", reasoning.why);
            }
            reasoning.decision = AiDecision::Discarded;
            return self.log_ai(reasoning).await;
        }
        match action {
            AiAction::Nothing => self.log_ai(reasoning).await,
            AiAction::Reply(text) => {
                let today = utc_day(now_millis());
                let sent_today = if self.conv.ai_day == today {
                    self.conv.ai_replies_today
                } else {
                    0
                };
                if sent_today >= max_replies_per_day {
                    reasoning.decision = AiDecision::Escalated;
                    reasoning.rule = Some("reply_limit".into());
                    reasoning.why = format!(
                        "the AI already answered {sent_today} times today in this conversation (limit {max_replies_per_day}): a person continues"
                    );
                    return self.escalate(reasoning, Escalation::to_people()).await;
                }
                let request = OutboundRequest {
                    text,
                    internal: false,
                    sender: Sender::Ai,
                    agent_id: None,
                    agent_name: None,
                    mentions: Vec::new(),
                    ai: Some(reasoning.clone()),
                    files: Vec::new(),
                };
                match self.send(request).await {
                    Ok((_, Some(entry))) => {
                        self.outbound.dispatch(entry);
                        Ok(())
                    }
                    Ok((_, None)) => Ok(()),
                    // The channel refuses the text (too long, the reply window closed…):
                    // a person answers instead; the lead is never left in silence.
                    Err(e @ (ActorError::Invalid { .. } | ActorError::WindowClosed)) => {
                        reasoning.decision = AiDecision::Escalated;
                        reasoning.rule = Some("ai_send_failed".into());
                        reasoning.why = match &e {
                            ActorError::Invalid { code, message } => {
                                format!("the answer could not be sent ({code}: {message})")
                            }
                            other => format!("the answer could not be sent: {other}"),
                        };
                        self.escalate(reasoning, Escalation::to_people()).await
                    }
                    Err(e) => Err(e),
                }
            }
            AiAction::Escalate(escalation) => self.escalate(reasoning, escalation).await,
        }
    }

    /// Records an AI decision that changes nothing in the conversation.
    async fn log_ai(&mut self, reasoning: AiReasoning) -> ActorResult<()> {
        let mut set = WriteSet::new();
        set.put(
            Ks::AiLog,
            catalogue::ai_log(self.conv.id, reasoning.answers_seq, MessageId::new()),
            &reasoning,
        );
        analytics::add_changes(
            &mut set,
            self.conv.workspace_id,
            &analytics::ai_decision(
                reasoning.decision,
                reasoning.rule.as_deref(),
                reasoning.latency_ms,
                now_millis(),
            ),
        );
        self.committer.commit(set).await?;
        Ok(())
    }

    /// Hands the conversation to people: AI paused, assigned, tagged, a system message
    /// with the reasoning, the assignee notified; one commit.
    async fn escalate(
        &mut self,
        reasoning: AiReasoning,
        escalation: Escalation,
    ) -> ActorResult<()> {
        let now = now_millis();
        let mut conv = self.conv.clone();
        let mut set = WriteSet::new();
        if escalation.pause_ai && conv.ai_mode == AiMode::Active {
            conv.ai_mode = AiMode::Paused;
        }
        if let Some(agent) = escalation.assignee {
            conv.assignee_id = Some(agent);
        }
        for tag in normalize_tags(escalation.tags).unwrap_or_default() {
            if !conv.tags.contains(&tag) && conv.tags.len() < MAX_TAGS {
                conv.tags.push(tag);
            }
        }
        if let Some(status) = escalation.status {
            // A rule's status ends a snooze as an agent's would.
            wake(&mut set, &mut conv);
            if conv.status != status {
                conv.status = status;
                conv.closed_at = (status == Status::Closed).then_some(now);
            }
        }
        let seq = conv.next_seq;
        let message = Message {
            id: MessageId::new(),
            conversation_id: conv.id,
            seq,
            direction: Direction::Outbound,
            sender: Sender::System,
            agent_id: None,
            text: format!("Escalated to a person: {}", reasoning.why),
            internal: true,
            channel: conv.channel,
            created_at: now,
            delivery: None,
            external_id: None,
            content_type: None,
            reply_to: None,
            error: None,
            raw: None,
            ai: Some(reasoning.clone()),
            attachments: Vec::new(),
            subject: None,
            full_text: None,
            auto_reply: false,
            sent_elsewhere: false,
            reactions: Vec::new(),
            edits: Vec::new(),
            deleted_at: None,
        };
        conv.next_seq += 1;
        set.put(Ks::ConvMsg, catalogue::conv_msg(conv.id, seq), &message)
            .put(
                Ks::AiLog,
                catalogue::ai_log(conv.id, reasoning.answers_seq, message.id),
                &reasoning,
            );
        store_state(&mut set, &self.conv, &conv, Author::of(ActorKind::Ai));
        self.analytics(&mut set, &conv, &self.stats, now);
        analytics::add_changes(
            &mut set,
            conv.workspace_id,
            &analytics::ai_decision(
                reasoning.decision,
                reasoning.rule.as_deref(),
                reasoning.latency_ms,
                now,
            ),
        );
        set.delta(
            conv.workspace_id,
            conv.id,
            DeltaBody::MessageCreated(message),
        )
        .delta(
            conv.workspace_id,
            conv.id,
            DeltaBody::ConversationUpdated(conv.card()),
        );
        let mut staged = notify::Staged::default();
        if let (true, Some(agent_id)) = (escalation.notify, conv.assignee_id) {
            staged = self
                .notify(
                    &mut set,
                    NotificationReason::Escalation,
                    &conv,
                    None,
                    None,
                    vec![agent_id],
                )
                .await?;
        }
        self.committer.commit(set).await?;
        staged.committed();
        self.conv = conv;
        Ok(())
    }

    /// Stages the notifications of `reason` about `conv` for `to` into `set`.
    async fn notify(
        &self,
        set: &mut WriteSet,
        reason: NotificationReason,
        conv: &Conversation,
        message: Option<&Message>,
        by_agent: Option<AgentId>,
        to: Vec<AgentId>,
    ) -> ActorResult<notify::Staged> {
        let event = Event {
            reason,
            conv,
            message,
            by_agent,
        };
        self.notifier.stage(set, event, To::Agents(to)).await
    }

    /// A durable timer is due. Overdue: the lead has waited past the response target
    /// since `due` was armed; the assignee hears of it if the conversation is still open.
    /// Snooze: the conversation opens again at the top of the inbox and its assignee (or
    /// whoever snoozed it) hears of it. A timer the conversation no longer knows
    /// (answered, woken or re-armed since) only goes.
    async fn timer(&mut self, kind: u8, due: UnixMillis) -> ActorResult<()> {
        let mut set = WriteSet::new();
        set.delete(Ks::Timer, catalogue::timer(due, kind, self.conv.id));
        let mut conv = self.conv.clone();
        let mut staged = notify::Staged::default();
        if kind == TIMER_OVERDUE && conv.overdue_at == Some(due) {
            conv.overdue_at = None;
            if let (Status::Open, Some(assignee)) = (conv.status, conv.assignee_id) {
                staged = self
                    .notify(
                        &mut set,
                        NotificationReason::Overdue,
                        &conv,
                        None,
                        None,
                        vec![assignee],
                    )
                    .await?;
            }
            set.put(Ks::ConvState, conv.id.to_bytes().to_vec(), &conv);
        } else if kind == TIMER_SNOOZE && conv.snoozed_until == Some(due) {
            let by = conv.snoozed_by;
            wake(&mut set, &mut conv);
            conv.status = Status::Open;
            let to: Vec<AgentId> = conv.assignee_id.or(by).into_iter().collect();
            let now = self.notifier.now();
            touch(
                &mut set,
                &self.conv,
                &mut conv,
                now,
                Author::of(ActorKind::System),
            );
            set.delta(
                conv.workspace_id,
                conv.id,
                DeltaBody::ConversationUpdated(conv.card()),
            );
            if !to.is_empty() {
                staged = self
                    .notify(
                        &mut set,
                        NotificationReason::SnoozeEnded,
                        &conv,
                        None,
                        None,
                        to,
                    )
                    .await?;
            }
        }
        self.committer.commit(set).await?;
        staged.committed();
        self.conv = conv;
        Ok(())
    }

    async fn held(&mut self, seq: u64, note: String) -> ActorResult<()> {
        let conv_id = self.conv.id;
        let message = self.stored_message(seq).await?;
        let Some(mut message) = message else {
            return Ok(());
        };
        if message.delivery != Some(Delivery::Queued) || message.error.as_ref() == Some(&note) {
            return Ok(());
        }
        message.error = Some(note);
        let mut set = WriteSet::new();
        set.put(Ks::ConvMsg, catalogue::conv_msg(conv_id, seq), &message)
            .delta(
                self.conv.workspace_id,
                conv_id,
                DeltaBody::MessageUpdated(message),
            );
        self.committer.commit(set).await?;
        Ok(())
    }

    async fn delivery(
        &mut self,
        seq: u64,
        status: Delivery,
        error: Option<String>,
    ) -> ActorResult<()> {
        let conv_id = self.conv.id;
        let message = self.stored_message(seq).await?;
        let Some(mut message) = message else {
            return Ok(());
        };
        let current = message.delivery.unwrap_or(Delivery::Queued);
        let Some(next) = current.advance(status) else {
            return Ok(());
        };
        message.delivery = Some(next);
        if next == Delivery::Failed {
            message.error = error.or(message.error);
        }
        let mut set = WriteSet::new();
        set.put(Ks::ConvMsg, catalogue::conv_msg(conv_id, seq), &message);
        if next == Delivery::Failed {
            set.delete(Ks::OutboxEntry, catalogue::outbox_entry(message.id));
        }
        set.delta(
            self.conv.workspace_id,
            conv_id,
            DeltaBody::MessageUpdated(message),
        );
        self.committer.commit(set).await?;
        Ok(())
    }
}

/// A lead's message applied to `conv`: the next seq, unread count, preview, window, a
/// closed conversation reopened, campaign and name filled in if unknown. Adds to `set` the
/// message itself and its dedupe guard (a provider message stored before refuses the whole
/// set); the caller adds the conversation's state, indexes, analytics and deltas. Shared by
/// the conversation actor and the creation of a conversation with its first message.
pub(crate) fn stage_inbound(
    conv: &mut Conversation,
    event: InboundEvent,
    now: UnixMillis,
    set: &mut WriteSet,
) -> Message {
    let seq = conv.next_seq;
    let sent_at = if event.sent_at > 0 {
        event.sent_at
    } else {
        now
    };
    let details = event.details;
    // Files whose bytes came with the message are stored beside it, after the provider's.
    let mut attachments = event.attachments;
    let first_file = attachments.len();
    let mut files = Vec::with_capacity(details.files.len());
    for (attachment, bytes) in details.files {
        attachments.push(attachment);
        files.push(bytes);
    }
    let from_us = details.from_us;
    let message = Message {
        id: MessageId::new(),
        conversation_id: conv.id,
        seq,
        direction: if from_us {
            Direction::Outbound
        } else {
            Direction::Inbound
        },
        sender: if from_us { Sender::Agent } else { Sender::Lead },
        agent_id: None,
        text: event.text,
        internal: false,
        channel: conv.channel,
        created_at: sent_at,
        delivery: from_us.then_some(Delivery::Sent),
        external_id: Some(event.provider_message_id.clone()),
        content_type: event.content_type,
        reply_to: event.reply_to,
        error: None,
        raw: event.raw,
        ai: None,
        attachments,
        subject: details.subject.clone(),
        full_text: details.full_text,
        auto_reply: details.auto_reply,
        sent_elsewhere: from_us,
        reactions: Vec::new(),
        edits: Vec::new(),
        deleted_at: None,
    };
    conv.next_seq += 1;
    conv.preview = preview(&message.text);
    if from_us {
        // A person wrote to the lead on the provider: like a reply from Confab, it hands
        // the conversation to people and any AI answer being prepared is stale.
        if conv.ai_mode == AiMode::Active {
            conv.ai_mode = AiMode::Paused;
        }
        conv.ai_epoch = conv.ai_epoch.wrapping_add(1);
        if conv.status == Status::Open {
            conv.status = Status::Pending;
        }
        if conv.first_inbound_at.is_some() && conv.first_response_at.is_none() {
            conv.first_response_at = Some(sent_at);
            conv.first_responder = Some(Responder::Human);
        }
    } else {
        conv.unread_count = conv.unread_count.saturating_add(1);
    }
    // A machine's message (an out-of-office) is kept but changes nothing the lead's own
    // answer would: no reopening, no AI answer, no reply window.
    if !message.auto_reply && !from_us {
        conv.last_inbound_seq = Some(seq);
        conv.last_inbound_at = Some(conv.last_inbound_at.unwrap_or(0).max(sent_at));
        conv.first_inbound_at.get_or_insert(sent_at);
        if conv.snoozed_until.is_some() {
            // The lead answered before the snooze ran out: it ends now.
            wake(set, conv);
            conv.status = Status::Open;
        }
        if conv.status == Status::Closed {
            conv.status = Status::Open;
        }
    }
    if conv.subject.is_none() {
        conv.subject = details.subject;
    }
    if conv.channel.rules().threads_by_references {
        remember_reference(conv, &event.provider_message_id);
    }
    if let Some(alias) = &details.thread_alias {
        set.put(
            Ks::ThreadAlias,
            catalogue::thread_alias(conv.channel_id, alias),
            &confab_engine::inbound::ThreadAliasValue {
                conversation: conv.id,
                at: now,
            },
        );
    }
    for (i, bytes) in files.into_iter().enumerate() {
        let index = u32::try_from(first_file + i).unwrap_or(u32::MAX);
        set.put_raw(Ks::Blob, catalogue::blob(message.id, index), bytes);
    }
    if conv.campaign.is_none() {
        conv.campaign = event.campaign;
    }
    if conv.contact.name.is_none() {
        conv.contact.name = event.contact_name;
    }
    // What the provider tells of the lead fills what the conversation's copy lacks (a
    // conversation started by us knew only the lead's id).
    for (field, value) in [
        (&mut conv.contact.profile_url, details.profile_url),
        (&mut conv.contact.avatar_url, details.avatar_url),
        (&mut conv.contact.title, details.headline),
    ] {
        if field.is_none() {
            *field = value;
        }
    }
    if let Some(received) = event.received {
        set.received_at(received);
    }
    let ext_key = catalogue::ext_msg(conv.channel_id, &event.provider_message_id);
    set.require_absent(Ks::ExtMsg, ext_key.clone())
        .put_raw(Ks::ExtMsg, ext_key, catalogue::ext_msg_value(conv.id, seq))
        .put(Ks::ConvMsg, catalogue::conv_msg(conv.id, seq), &message);
    message
}

/// Where the AI agent is on (the conversation is not manual-only) and no outcome is set,
/// the lead's message may suggest one (people decide): the newest suggestion stays.
pub(crate) fn suggest_outcome(
    notifier: &Notifier,
    conv: &mut Conversation,
    message: &Message,
) -> ActorResult<()> {
    if message.sent_elsewhere || conv.ai_mode == AiMode::Manual || conv.outcome.is_some() {
        return Ok(());
    }
    let suggestion =
        notifier.suggest_outcome(conv.workspace_id, &message.text, message.auto_reply)?;
    if suggestion.is_some() {
        conv.suggested_outcome = suggestion;
    }
    Ok(())
}

/// A conversation we started takes the provider thread `thread` as its own: its replies
/// go there, the hint that led there is withdrawn, and (when `claim`: no other
/// conversation has the thread) later messages of the thread find it directly.
pub(crate) fn adopt_thread(
    conv: &mut Conversation,
    thread: String,
    claim: bool,
    set: &mut WriteSet,
) {
    let Some(lead) = conv.awaiting_thread.take() else {
        return;
    };
    set.delete(
        Ks::ThreadAlias,
        catalogue::thread_alias(
            conv.channel_id,
            &confab_engine::inbound::awaiting_key(&lead),
        ),
    );
    if claim {
        set.put_raw(
            Ks::ThreadConv,
            catalogue::thread_conv(conv.channel_id, &thread),
            conv.id.to_bytes().to_vec(),
        );
    }
    conv.external_thread = thread;
}

/// When an inbound message makes its conversation active: now, or its own time for mail
/// imported from the past.
pub(crate) fn activity_time(event: &InboundEvent, now: UnixMillis) -> UnixMillis {
    if event.details.imported && event.sent_at > 0 {
        event.sent_at.min(now)
    } else {
        now
    }
}

/// Adds a provider message id to the thread's references (email), keeping the newest.
pub(crate) fn remember_reference(conv: &mut Conversation, provider_id: &str) {
    if conv.references.iter().any(|r| r == provider_id) {
        return;
    }
    conv.references.push(provider_id.to_owned());
    let excess = conv
        .references
        .len()
        .saturating_sub(confab_engine::model::MAX_THREAD_REFERENCES);
    conv.references.drain(..excess);
}

/// Ends the conversation's snooze, if any, disarming its timer; the caller sets the status.
fn wake(set: &mut WriteSet, conv: &mut Conversation) {
    if let Some(until) = conv.snoozed_until.take() {
        set.delete(Ks::Timer, catalogue::timer(until, TIMER_SNOOZE, conv.id));
        conv.snoozed_by = None;
    }
}

/// Moves the conversation's last activity to `now` and stores the new state, keeping the
/// inbox indexes in step.
fn touch(
    set: &mut WriteSet,
    before: &Conversation,
    after: &mut Conversation,
    now: UnixMillis,
    by: Author,
) {
    after.last_activity_at = now.max(before.last_activity_at);
    store_state(set, before, after, by);
}

/// Stores `after` as the conversation's state, with its index changes and the activity
/// entries of what `by` changed.
fn store_state(set: &mut WriteSet, before: &Conversation, after: &Conversation, by: Author) {
    audit::record_changes(set, before, after, by);
    views::update(set, Some(before), after);
    set.put(Ks::ConvState, after.id.to_bytes().to_vec(), after);
}

/// Tags as stored: trimmed, non-empty, at most [`MAX_TAG_CHARS`], each once.
pub fn normalize_tags(tags: Vec<String>) -> ActorResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.trim();
        if tag.is_empty() {
            return Err(ActorError::invalid("invalid_tag", "tags cannot be empty"));
        }
        if tag.chars().count() > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
            return Err(ActorError::invalid(
                "invalid_tag",
                format!("tags are at most {MAX_TAG_CHARS} printable characters"),
            ));
        }
        if !out.iter().any(|t| t == tag) {
            out.push(tag.to_string());
        }
    }
    Ok(out)
}

/// How many of a conversation's newest messages an echo of ours is looked for among.
const ECHO_LOOKBACK: usize = 50;
/// How many of a conversation's newest messages a read receipt moves to read at most.
const READ_LOOKBACK: usize = 200;
/// Earlier texts an edited message keeps.
const MAX_EDITS: usize = 20;
/// Longest reaction kept, in characters.
const MAX_REACTION_CHARS: usize = 16;

pub fn preview(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_deduplicated_and_bounded() {
        let tags =
            normalize_tags(vec![" vip ".into(), "vip".into(), "hot lead".into()]).expect("valid");
        assert_eq!(tags, vec!["vip".to_string(), "hot lead".to_string()]);
        assert!(normalize_tags(vec!["  ".into()]).is_err());
        assert!(normalize_tags(vec!["x".repeat(65)]).is_err());
        assert!(normalize_tags(vec!["a\nb".replace("\\n", "\n")]).is_err());
    }

    #[test]
    fn previews_are_one_short_line() {
        assert_eq!(preview("  hello\n\nworld "), "hello world");
        let long = "é".repeat(500);
        let p = preview(&long);
        assert_eq!(p.chars().count(), PREVIEW_CHARS + 1);
        assert!(p.ends_with('…'));
    }
}
