//! The generic connector: one actor per channel, whatever its provider. The provider is
//! its [`Adapter`](super::adapter::Adapter); everything here is the same for all.
//!
//! Inbound: a verified webhook body is parsed by the adapter into the port's batch, each
//! message routed to its conversation (created if new), each status to the message it
//! reports on, each account event to the channel's health; the gateway waits until all of
//! it is durable. Each webhook is handled on a task of its own, so that creating one
//! lead's conversation never holds up the others; conversation actors order each
//! conversation's messages.
//!
//! Outbound: messages are sent in order per thread (one send under way per thread), at
//! most the channel's per-second pace, within its daily budget, retried with exponential
//! backoff and jitter on retryable errors, paused while the circuit is open or the
//! channel is disabled, and the outcome is reported to the conversation. Nothing is
//! dropped: a message leaves the outbox only when the provider accepted it or it failed
//! for good.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::WriteSet;
use confab_engine::inbound::PendingStatus;
use confab_engine::outbox::OutboxEntry;
use confab_engine::port::{MessageChange, SendOutcome, StatusReport, ThreadRead};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::Rng;
use tokio::sync::futures::Notified;
use tokio::sync::{oneshot, watch};

use super::link::{Gate, Link};
use super::{ConnectorDeps, Pending};
use crate::conversation::ConversationMsg;
use crate::error::{ActorError, ActorResult};

pub enum ConnectorMsg {
    /// A webhook body whose authenticity was verified, and when it was received.
    Webhook(Bytes, Instant, RpcReplyPort<ActorResult<Vec<Pending>>>),
    /// Send an outbound message.
    Send(OutboxEntry),
    /// A send task finished with this thread; start its next message.
    SendFinished { thread: String },
    /// Makes the connector panic: lets tests exercise supervision.
    Crash,
}

pub struct Connector;

pub struct ConnectorArgs {
    pub link: Arc<Link>,
    pub deps: ConnectorDeps,
}

pub struct ConnectorState {
    inbound: Inbound,
    /// Messages waiting, per thread, so that a lead receives them in order.
    queues: HashMap<String, VecDeque<OutboxEntry>>,
    /// Threads with a send under way.
    busy: HashSet<String>,
    /// The task reading the channel's inbound when its provider must be read (a mailbox).
    mailbox: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for Connector {
    type Msg = ConnectorMsg;
    type State = ConnectorState;
    type Arguments = ConnectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnectorMsg>,
        args: ConnectorArgs,
    ) -> Result<ConnectorState, ActorProcessingErr> {
        let channel_id = args.link.channel().id;
        // Sends still under way from before a restart count; the outbox adds the rest.
        let in_flight = args
            .deps
            .registry
            .in_flight()
            .iter()
            .filter(|e| *e.value() == channel_id)
            .count();
        args.link.set_depth(in_flight as u64);
        // Anything still in the outbox was never answered by the provider: send it again.
        let store = args.deps.store.clone();
        let waiting = tokio::task::spawn_blocking(move || store.outbox()).await??;
        for entry in waiting.into_iter().filter(|e| e.channel_id == channel_id) {
            myself.cast(ConnectorMsg::Send(entry))?;
        }
        args.link.set_running(true);
        let inbound = Inbound {
            link: args.link,
            deps: args.deps,
            pending_statuses: Arc::new(tokio::sync::Mutex::new(())),
        };
        let channel = inbound.link.channel();
        let mailbox = super::adapter::reader_for(&channel, &inbound).map(|reader| {
            let reader = tokio::spawn(reader);
            inbound
                .deps
                .registry
                .replace_reader(channel_id, reader.abort_handle());
            reader
        });
        Ok(ConnectorState {
            inbound,
            queues: HashMap::new(),
            busy: HashSet::new(),
            mailbox,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnectorMsg>,
        state: &mut ConnectorState,
    ) -> Result<(), ActorProcessingErr> {
        // A restarted connector starts its own reader; the mailbox's cursor is durable.
        if let Some(mailbox) = state.mailbox.take() {
            mailbox.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnectorMsg>,
        msg: ConnectorMsg,
        state: &mut ConnectorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConnectorMsg::Webhook(body, received, reply) => {
                let inbound = state.inbound.clone();
                tokio::spawn(async move {
                    let _ = reply.send(inbound.webhook(&body, received).await);
                });
            }
            ConnectorMsg::Send(entry) => {
                let registry = &state.inbound.deps.registry;
                if registry.in_flight().contains_key(&entry.message_id) {
                    return Ok(());
                }
                let thread = entry.thread.clone();
                let queue = state.queues.entry(thread.clone()).or_default();
                if queue.iter().all(|e| e.message_id != entry.message_id) {
                    queue.push_back(entry);
                    state.inbound.link.depth_add(1);
                }
                state.start_next(&myself, thread);
            }
            ConnectorMsg::SendFinished { thread } => {
                state.busy.remove(&thread);
                state.start_next(&myself, thread);
            }
            ConnectorMsg::Crash => {
                panic!(
                    "crash requested for connector {}",
                    state.inbound.link.channel().id
                )
            }
        }
        Ok(())
    }
}

/// What handling a webhook needs: shared, so each webhook runs on a task of its own.
#[derive(Clone)]
pub(super) struct Inbound {
    pub(super) link: Arc<Link>,
    pub(super) deps: ConnectorDeps,
    /// Serializes the read-modify-write of statuses kept for messages not yet known.
    pending_statuses: Arc<tokio::sync::Mutex<()>>,
}

impl Inbound {
    async fn webhook(&self, body: &[u8], received: Instant) -> ActorResult<Vec<Pending>> {
        let batch = self
            .link
            .adapter()
            .parse(body)
            .map_err(|e| ActorError::invalid(e.code, e.message))?;
        self.batch(batch, received).await
    }

    /// Routes everything a batch carries (from a webhook, or read from a mailbox).
    pub(super) async fn batch(
        &self,
        batch: confab_engine::port::InboundBatch,
        received: Instant,
    ) -> ActorResult<Vec<Pending>> {
        let channel = self.link.channel();
        let mut pending = Vec::with_capacity(batch.messages.len() + batch.statuses.len() + 2);
        if batch.rejected > 0 {
            metrics::counter!(crate::metrics::WEBHOOK_ITEMS_REJECTED, "channel" => channel.kind().as_str())
                .increment(batch.rejected as u64);
            pending.push(Pending::Rejected(batch.rejected));
        }
        if batch.skipped > 0 {
            tracing::warn!(channel = %channel.id, items = batch.skipped, "items for another sender identity skipped");
            pending.push(Pending::Skipped(batch.skipped));
        }
        for mut event in batch.messages {
            event.channel_id = channel.id;
            event.received = Some(received);
            let rx = self
                .deps
                .conversations
                .inbound(channel.clone(), event)
                .await?;
            pending.push(Pending::Inbound(rx));
        }
        for status in batch.statuses {
            pending.push(self.status(status).await?);
        }
        let mut ignored = batch.ignored;
        for change in batch.changes {
            match self.change(change).await? {
                Some(done) => pending.push(done),
                None => ignored += 1,
            }
        }
        for read in batch.reads {
            match self.read(read).await? {
                Some(done) => pending.push(done),
                None => ignored += 1,
            }
        }
        if ignored > 0 {
            metrics::counter!(crate::metrics::WEBHOOK_ITEMS_IGNORED, "channel" => channel.kind().as_str())
                .increment(ignored as u64);
            pending.push(Pending::Ignored(ignored));
        }
        for event in &batch.account {
            self.link.on_account(event);
        }
        Ok(pending)
    }

    /// Routes a change to the message it names; `None` when no message has that id (a
    /// change to one from before the channel was connected).
    async fn change(&self, change: MessageChange) -> ActorResult<Option<Pending>> {
        let store = self.deps.store.clone();
        let channel_id = self.link.channel().id;
        let provider_id = change.provider_message_id.clone();
        let found = tokio::task::spawn_blocking(move || {
            store.message_by_external_id(channel_id, &provider_id)
        })
        .await
        .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        let Some((conversation, seq)) = found else {
            return Ok(None);
        };
        let (tx, rx) = oneshot::channel();
        self.deps
            .conversations
            .tell(
                conversation,
                ConversationMsg::Changed {
                    seq,
                    change: change.change,
                    at: change.at,
                    reply: tx.into(),
                },
            )
            .await?;
        Ok(Some(Pending::Status(rx)))
    }

    /// Routes a read receipt to the thread's conversation; `None` for a thread we do not
    /// know.
    async fn read(&self, read: ThreadRead) -> ActorResult<Option<Pending>> {
        let store = self.deps.store.clone();
        let channel_id = self.link.channel().id;
        let thread = read.thread.clone();
        let found =
            tokio::task::spawn_blocking(move || store.conversation_by_thread(channel_id, &thread))
                .await
                .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        let Some(conversation) = found else {
            return Ok(None);
        };
        let (tx, rx) = oneshot::channel();
        self.deps
            .conversations
            .tell(
                conversation,
                ConversationMsg::ThreadRead {
                    at: read.at,
                    reply: tx.into(),
                },
            )
            .await?;
        Ok(Some(Pending::Status(rx)))
    }

    /// Routes a status to the message it reports on, or keeps it until that message's id
    /// is known (a status can arrive before the provider's answer to our send).
    async fn status(&self, status: StatusReport) -> ActorResult<Pending> {
        let store = self.deps.store.clone();
        let channel_id = self.link.channel().id;
        let provider_id = status.provider_message_id.clone();
        let found = tokio::task::spawn_blocking(move || {
            store.message_by_external_id(channel_id, &provider_id)
        })
        .await
        .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        match found {
            Some((conversation, seq)) => {
                let (done_tx, done_rx) = oneshot::channel();
                self.deps
                    .conversations
                    .tell(
                        conversation,
                        ConversationMsg::DeliveryStatus {
                            seq,
                            status: status.status,
                            error: status.error,
                            reply: Some(done_tx.into()),
                        },
                    )
                    .await?;
                Ok(Pending::Status(done_rx))
            }
            None => {
                // Webhooks run concurrently: two statuses for one unknown message must
                // not both read the same earlier one.
                let _serial = self.pending_statuses.lock().await;
                let key = catalogue::ext_msg(channel_id, &status.provider_message_id);
                let store = self.deps.store.clone();
                let earlier_key = key.clone();
                let earlier: Option<PendingStatus> =
                    tokio::task::spawn_blocking(move || store.get(Ks::ExtStatus, &earlier_key))
                        .await
                        .map_err(|e| ActorError::Unavailable(e.to_string()))??;
                let next = match earlier.as_ref().map(|p| p.status) {
                    Some(current) => current.advance(status.status),
                    None => Some(status.status),
                };
                if let Some(next) = next {
                    let mut set = WriteSet::new();
                    set.put(
                        Ks::ExtStatus,
                        key,
                        &PendingStatus {
                            status: next,
                            error: status.error.or(earlier.and_then(|p| p.error)),
                            at: status.at,
                        },
                    );
                    self.deps.committer.commit(set).await?;
                }
                Ok(Pending::Applied)
            }
        }
    }
}

impl ConnectorState {
    fn start_next(&mut self, myself: &ActorRef<ConnectorMsg>, thread: String) {
        if self.busy.contains(&thread) {
            return;
        }
        let Some(entry) = self.queues.get_mut(&thread).and_then(|q| q.pop_front()) else {
            self.queues.remove(&thread);
            return;
        };
        self.busy.insert(thread);
        let Inbound { link, deps, .. } = &self.inbound;
        deps.registry
            .in_flight()
            .insert(entry.message_id, entry.channel_id);
        let task = SendTask {
            link: link.clone(),
            deps: deps.clone(),
            connector: myself.clone(),
        };
        tokio::spawn(task.run(entry));
    }
}

/// Sends one message, waiting and retrying as the channel allows, and reports the outcome.
struct SendTask {
    link: Arc<Link>,
    deps: ConnectorDeps,
    connector: ActorRef<ConnectorMsg>,
}

/// How long a finished send waits for its conversation to record the outcome before it
/// stops counting as under way (the conversation's store is failing, or it is stuck).
const CONFIRM_WITHIN: Duration = Duration::from_secs(30);

/// The longest a held send sleeps before looking again (a clock may have jumped, a day
/// may have begun).
const LOOK_AGAIN: Duration = Duration::from_secs(60);

impl SendTask {
    async fn run(self, entry: OutboxEntry) {
        // The message stays marked as under way until its conversation has durably taken
        // it out of the outbox: a connector restarted in between must not send it again.
        let (done_tx, done_rx) = oneshot::channel();
        let report = match self.deliver(&entry).await {
            Delivered::Stopped | Delivered::Withdrawn => {
                // Stopped: the message stays in the outbox for the next start.
                self.deps.registry.in_flight().remove(&entry.message_id);
                self.link.depth_done();
                return;
            }
            Delivered::Accepted(external_id, thread) => ConversationMsg::ProviderAccepted {
                seq: entry.seq,
                external_id,
                thread,
                done: done_tx.into(),
            },
            Delivered::Failed(error) => ConversationMsg::ProviderFailed {
                seq: entry.seq,
                error,
                done: done_tx.into(),
            },
        };
        let told = self
            .deps
            .conversations
            .tell(entry.conversation_id, report)
            .await;
        let recorded = match told {
            Ok(()) => match tokio::time::timeout(CONFIRM_WITHIN, done_rx).await {
                Ok(Ok(outcome)) => outcome.map_err(|e| e.to_string()),
                Ok(Err(_)) => Err("the conversation stopped before recording it".into()),
                Err(_) => Err("the conversation did not record it in time".into()),
            },
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = recorded {
            tracing::error!(conversation = %entry.conversation_id, error = %e, "cannot record a send outcome; the outbox will resend it");
        }
        self.deps.registry.in_flight().remove(&entry.message_id);
        self.deps.registry.sending().remove(&entry.message_id);
        self.link.depth_done();
        // The connector may have been restarted since: tell whichever one runs now.
        let current = self
            .deps
            .registry
            .connector(entry.channel_id)
            .unwrap_or(self.connector);
        let _ = current.cast(ConnectorMsg::SendFinished {
            thread: entry.thread,
        });
    }

    /// Tells the conversation why its message waits (shown on the message), once per
    /// reason.
    async fn hold(&self, entry: &OutboxEntry, note: String, shown: &mut Option<String>) {
        if shown.as_ref() == Some(&note) {
            return;
        }
        *shown = Some(note.clone());
        let _ = self
            .deps
            .conversations
            .tell(
                entry.conversation_id,
                ConversationMsg::SendHeld {
                    seq: entry.seq,
                    note,
                },
            )
            .await;
    }

    /// The bytes of the message's files, stored with it.
    async fn files(
        &self,
        entry: &OutboxEntry,
    ) -> Result<Vec<confab_engine::port::OutboundFile>, String> {
        let store = self.deps.store.clone();
        let (message, attachments) = (entry.message_id, entry.attachments.clone());
        tokio::task::spawn_blocking(move || {
            attachments
                .into_iter()
                .enumerate()
                .map(|(i, attachment)| {
                    let key = catalogue::blob(message, u32::try_from(i).unwrap_or(u32::MAX));
                    match store.get_raw(Ks::Blob, &key) {
                        Ok(Some(bytes)) => Ok(confab_engine::port::OutboundFile {
                            name: attachment.name,
                            content_type: attachment.content_type,
                            bytes: bytes.to_vec(),
                        }),
                        Ok(None) => Err(format!("attachment {i} of the message is missing")),
                        Err(e) => Err(format!("reading attachment {i}: {e}")),
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The provider's id for the message, or why it failed for good; or the channels
    /// stopped while it waited.
    async fn deliver(&self, entry: &OutboxEntry) -> Delivered {
        let settings = &self.deps.settings;
        let mut stopping = self.deps.registry.stopping();
        let kind = self.link.channel().kind().as_str();
        let mut request = entry.request();
        if !entry.attachments.is_empty() {
            match self.files(entry).await {
                Ok(files) => request.attachments = files,
                Err(reason) => return Delivered::Failed(reason),
            }
        }
        let mut attempt = 0u32;
        let mut shown: Option<String> = None;
        loop {
            if *stopping.borrow_and_update() {
                return Delivered::Stopped;
            }
            let woken = self.link.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let clock = self.link.clock.clone();
            let mut jumped = clock.jumps().map(|jumps| Box::pin(jumps.notified()));
            if let Some(jumped) = jumped.as_mut() {
                jumped.as_mut().enable();
            }
            let jumped = jumped.as_mut().map(|j| j.as_mut());
            match self.link.gate() {
                Gate::Go => {}
                Gate::Disabled => {
                    let note = "channel_disabled: the channel is disabled; the message waits in the outbox".to_owned();
                    self.hold(entry, note, &mut shown).await;
                    wait(woken, jumped, &mut stopping, None).await;
                    continue;
                }
                Gate::Disconnected => {
                    let note = "disconnected: the account is disconnected at the provider; the message waits in the outbox and goes when it runs again".to_owned();
                    self.hold(entry, note, &mut shown).await;
                    wait(woken, jumped, &mut stopping, None).await;
                    continue;
                }
                Gate::Paused(pause) => {
                    wait(woken, jumped, &mut stopping, Some(pause)).await;
                    continue;
                }
            }
            if let Err(over) = self.link.reserve() {
                if over.busy {
                    wait(woken, jumped, &mut stopping, Some(Duration::from_secs(1))).await;
                    continue;
                }
                let note = format!(
                    "daily_limit_reached: the channel's daily limit of {} messages is reached",
                    over.cap
                );
                if over.fail {
                    metrics::counter!(crate::metrics::CONNECTOR_SENDS, "channel" => kind, "outcome" => "failed").increment(1);
                    return Delivered::Failed(note);
                }
                self.hold(
                    entry,
                    format!("{note}; the message goes the next day"),
                    &mut shown,
                )
                .await;
                let until = over.next_day.saturating_sub(self.link.clock.now()).max(0);
                let until = Some(Duration::from_millis(until as u64));
                wait(woken, jumped, &mut stopping, until).await;
                continue;
            }
            self.link.paced().await;
            // The pace may have kept it a while: what holds sends is looked at again.
            if self.link.gate() != Gate::Go {
                self.link.settle(false);
                continue;
            }
            // A message erased with its lead while it waited is not sent.
            let (store, id) = (self.deps.store.clone(), entry.message_id);
            let still_queued = tokio::task::spawn_blocking(move || store.outbox_entry(id))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|queued| queued.is_some());
            if still_queued == Some(false) {
                self.link.settle(false);
                return Delivered::Withdrawn;
            }
            let adapter = self.link.adapter();
            let sending = self.deps.registry.sending();
            sending.insert(entry.message_id);
            let outcome = adapter.send(&self.deps.http, &request).await;
            self.link
                .settle(matches!(outcome, SendOutcome::Accepted { .. }));
            // Accepted: the conversation records the id next (an echo until then is
            // still recognized by the text); otherwise it is no longer on the wire.
            if !matches!(outcome, SendOutcome::Accepted { .. }) {
                sending.remove(&entry.message_id);
            }
            let (code, reason, retry_after) = match outcome {
                SendOutcome::Accepted {
                    provider_id,
                    thread,
                } => {
                    metrics::counter!(crate::metrics::CONNECTOR_SENDS, "channel" => kind, "outcome" => "accepted").increment(1);
                    self.link.on_accepted();
                    return Delivered::Accepted(provider_id, thread);
                }
                SendOutcome::Permanent { reason, .. } => {
                    metrics::counter!(crate::metrics::CONNECTOR_SENDS, "channel" => kind, "outcome" => "failed").increment(1);
                    tracing::warn!(message = %entry.message_id, %reason, "send failed for good");
                    return Delivered::Failed(reason);
                }
                SendOutcome::AuthFailed { reason } => {
                    // Not the message's fault: it waits for working credentials.
                    self.link.on_auth_failed(&reason);
                    let note = format!("auth_failed: {reason}; the message waits in the outbox");
                    self.hold(entry, note, &mut shown).await;
                    continue;
                }
                SendOutcome::Retryable {
                    reason,
                    retry_after,
                } => ("provider_unavailable", reason, retry_after),
                SendOutcome::RateLimited {
                    reason,
                    retry_after,
                } => ("rate_limited", reason, retry_after),
            };
            attempt += 1;
            self.link.on_retryable(code, &reason);
            if attempt >= settings.max_send_attempts {
                metrics::counter!(crate::metrics::CONNECTOR_SENDS, "channel" => kind, "outcome" => "failed").increment(1);
                tracing::warn!(message = %entry.message_id, attempt, %reason, "send failed");
                return Delivered::Failed(reason);
            }
            metrics::counter!(crate::metrics::CONNECTOR_SENDS, "channel" => kind, "outcome" => "retried").increment(1);
            let delay = backoff(settings.retry_base, settings.retry_max, attempt)
                .max(retry_after.unwrap_or_default().min(settings.retry_max));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        }
    }
}

/// How a send task ended.
enum Delivered {
    /// The provider's id for the message, and the thread it opened (if it did).
    Accepted(String, Option<String>),
    Failed(String),
    /// The channels stopped while the message waited: it stays in the outbox.
    Stopped,
    /// It left the outbox without being sent (its lead was erased).
    Withdrawn,
}

/// Waits until `woken`, the clock jumps (`jumped`) or `at_most` passes (capped at
/// [`LOOK_AGAIN`]). Both wake-ups are armed before the caller looks at what holds it, so
/// none is missed.
async fn wait(
    woken: Pin<&mut Notified<'_>>,
    jumped: Option<Pin<&mut Notified<'_>>>,
    stopping: &mut watch::Receiver<bool>,
    at_most: Option<Duration>,
) {
    let nap = at_most.unwrap_or(LOOK_AGAIN).min(LOOK_AGAIN);
    let jumped = async {
        match jumped {
            Some(jumped) => jumped.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep(nap) => {}
        () = woken => {}
        () = jumped => {}
        _ = stopping.wait_for(|stop| *stop) => {}
    }
}

/// Exponential backoff with full jitter: a random delay up to `base * 2^(attempt-1)`,
/// capped at `max`, and never less than a tenth of the base.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(max);
    let floor = base / 10;
    let jittered = rand::thread_rng().gen_range(0..=ceiling.as_millis() as u64);
    Duration::from_millis(jittered).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..20 {
            let d = backoff(base, max, attempt);
            assert!(d <= max);
            assert!(d >= base / 10);
            let ceiling = base
                .saturating_mul(2u32.saturating_pow(attempt - 1))
                .min(max);
            assert!(d <= ceiling.max(base / 10));
        }
    }
}
