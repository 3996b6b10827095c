//! The WhatsApp Cloud API connector: one actor per phone number.
//!
//! Inbound: a verified webhook body is parsed (pure functions in the engine), each message
//! routed to its conversation (created if new) and each status to the message it reports
//! on; the gateway waits until all of it is durable. Each webhook is handled on a task of
//! its own, so that creating one lead's conversation never holds up the others; the
//! conversation actors put each conversation's messages in order.
//!
//! Outbound: messages are sent in order per lead, at most `whatsapp_per_second` per number,
//! retried with exponential backoff and jitter on retryable errors, and the provider's
//! answer is reported to the conversation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::WriteSet;
use confab_engine::inbound::{InboundEvent, PendingStatus};
use confab_engine::model::{Channel, ChannelConfig, WhatsappConfig};
use confab_engine::outbox::OutboxEntry;
use confab_engine::wire::whatsapp::{self as wire, StatusUpdate};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::Rng;
use tokio::sync::oneshot;

use super::circuit::Circuit;
use super::{ConnectorDeps, Pending};
use crate::conversation::ConversationMsg;
use crate::error::{ActorError, ActorResult};

pub enum WhatsappMsg {
    /// A webhook body whose signature the gateway verified, and when it was received.
    Webhook(
        Bytes,
        std::time::Instant,
        RpcReplyPort<ActorResult<Vec<Pending>>>,
    ),
    /// Send an outbound message.
    Send(OutboxEntry),
    /// A send task finished with this lead; start the next message for them.
    SendFinished { to: String },
    /// Makes the connector panic: lets tests exercise supervision.
    Crash,
}

pub struct WhatsappConnector;

pub struct WhatsappArgs {
    pub channel: Arc<Channel>,
    pub deps: ConnectorDeps,
}

pub struct WhatsappState {
    /// The channel, its configuration and the engine: also all a webhook needs.
    inbound: Inbound,
    limiter: Arc<DefaultDirectRateLimiter>,
    /// Messages waiting, per lead, so that a lead receives them in order.
    queues: HashMap<String, VecDeque<OutboxEntry>>,
    /// Leads with a send under way.
    busy: HashSet<String>,
    /// Shared by this connector's send tasks: the provider's health as they see it.
    circuit: Arc<SharedCircuit>,
}

/// The connector's circuit; an open one is counted in `confab_connector_circuits_open`
/// until it closes or the connector goes away.
struct SharedCircuit(Mutex<Circuit>);

impl SharedCircuit {
    fn lock(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SharedCircuit {
    fn drop(&mut self) {
        if self.lock().is_open() {
            metrics::gauge!(crate::metrics::CONNECTOR_CIRCUITS_OPEN, "channel" => "whatsapp")
                .decrement(1.0);
        }
    }
}

impl Actor for WhatsappConnector {
    type Msg = WhatsappMsg;
    type State = WhatsappState;
    type Arguments = WhatsappArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WhatsappMsg>,
        args: WhatsappArgs,
    ) -> Result<WhatsappState, ActorProcessingErr> {
        let ChannelConfig::Whatsapp(config) = &args.channel.config;
        let per_second = NonZeroU32::new(args.deps.settings.whatsapp_per_second.max(1))
            .unwrap_or(NonZeroU32::MIN);
        // Anything still in the outbox was never answered by the provider: send it again.
        let store = args.deps.store.clone();
        let channel_id = args.channel.id;
        let waiting = tokio::task::spawn_blocking(move || store.outbox()).await??;
        for entry in waiting.into_iter().filter(|e| e.channel_id == channel_id) {
            myself.cast(WhatsappMsg::Send(entry))?;
        }
        let circuit = Circuit::new(args.deps.settings.retry_max);
        Ok(WhatsappState {
            circuit: Arc::new(SharedCircuit(Mutex::new(circuit))),
            inbound: Inbound {
                config: Arc::new(config.clone()),
                channel: args.channel,
                deps: args.deps,
                pending_statuses: Arc::new(tokio::sync::Mutex::new(())),
            },
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(per_second))),
            queues: HashMap::new(),
            busy: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WhatsappMsg>,
        msg: WhatsappMsg,
        state: &mut WhatsappState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WhatsappMsg::Webhook(body, received, reply) => {
                let inbound = state.inbound.clone();
                tokio::spawn(async move {
                    let _ = reply.send(inbound.webhook(&body, received).await);
                });
            }
            WhatsappMsg::Send(entry) => {
                if state
                    .inbound
                    .deps
                    .registry
                    .in_flight()
                    .contains_key(&entry.message_id)
                {
                    return Ok(());
                }
                let to = entry.to.clone();
                let queue = state.queues.entry(to.clone()).or_default();
                if queue.iter().all(|e| e.message_id != entry.message_id) {
                    queue.push_back(entry);
                }
                state.start_next(&myself, to);
            }
            WhatsappMsg::SendFinished { to } => {
                state.busy.remove(&to);
                state.start_next(&myself, to);
            }
            WhatsappMsg::Crash => {
                panic!("crash requested for connector {}", state.inbound.channel.id)
            }
        }
        Ok(())
    }
}

/// What handling a webhook needs: shared, so each webhook runs on a task of its own.
#[derive(Clone)]
struct Inbound {
    channel: Arc<Channel>,
    config: Arc<WhatsappConfig>,
    deps: ConnectorDeps,
    /// Serializes the read-modify-write of statuses kept for messages not yet known.
    pending_statuses: Arc<tokio::sync::Mutex<()>>,
}

impl Inbound {
    async fn webhook(
        &self,
        body: &[u8],
        received: std::time::Instant,
    ) -> ActorResult<Vec<Pending>> {
        let batch = wire::parse_webhook(body)
            .map_err(|e| ActorError::invalid("not_a_webhook", e.to_string()))?;
        let mut pending = Vec::with_capacity(batch.messages.len() + batch.statuses.len() + 1);
        if batch.rejected > 0 {
            metrics::counter!(crate::metrics::WEBHOOK_ITEMS_REJECTED, "channel" => "whatsapp")
                .increment(batch.rejected as u64);
            pending.push(Pending::Rejected(batch.rejected));
        }
        for message in batch.messages {
            if message.phone_number_id != self.config.phone_number_id {
                tracing::warn!(channel = %self.channel.id, number = %message.phone_number_id, "message for another phone number skipped");
                pending.push(Pending::Skipped);
                continue;
            }
            let mut event = InboundEvent::from_whatsapp(self.channel.id, message);
            event.received = Some(received);
            let rx = self
                .deps
                .conversations
                .inbound(self.channel.clone(), event)
                .await?;
            pending.push(Pending::Inbound(rx));
        }
        for status in batch.statuses {
            if status.phone_number_id != self.config.phone_number_id {
                pending.push(Pending::Skipped);
                continue;
            }
            pending.push(self.status(status).await?);
        }
        Ok(pending)
    }

    /// Routes a status to the message it reports on, or keeps it until that message's id
    /// is known (a status can arrive before the provider's answer to our send).
    async fn status(&self, status: StatusUpdate) -> ActorResult<Pending> {
        let store = self.deps.store.clone();
        let channel_id = self.channel.id;
        let wamid = status.wamid.clone();
        let found =
            tokio::task::spawn_blocking(move || store.message_by_external_id(channel_id, &wamid))
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
                let key = catalogue::ext_msg(channel_id, &status.wamid);
                let store = self.deps.store.clone();
                let earlier_key = key.clone();
                let earlier: Option<PendingStatus> =
                    tokio::task::spawn_blocking(move || store.get(Ks::ExtStatus, &earlier_key))
                        .await
                        .map_err(|e| ActorError::Unavailable(e.to_string()))??;
                let current = earlier.as_ref().map(|p| p.status);
                let next = match current {
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
                            at: status.timestamp,
                        },
                    );
                    self.deps.committer.commit(set).await?;
                }
                Ok(Pending::Applied)
            }
        }
    }
}

impl WhatsappState {
    fn start_next(&mut self, myself: &ActorRef<WhatsappMsg>, to: String) {
        if self.busy.contains(&to) {
            return;
        }
        let Some(entry) = self.queues.get_mut(&to).and_then(|q| q.pop_front()) else {
            self.queues.remove(&to);
            return;
        };
        self.busy.insert(to);
        let Inbound {
            channel,
            config,
            deps,
            ..
        } = &self.inbound;
        deps.registry.in_flight().insert(entry.message_id, ());
        let task = SendTask {
            config: config.clone(),
            deps: deps.clone(),
            limiter: self.limiter.clone(),
            circuit: self.circuit.clone(),
            channel_id: channel.id,
            connector: myself.clone(),
        };
        tokio::spawn(task.run(entry));
    }
}

/// Sends one message, retrying as the provider allows, and reports the outcome.
struct SendTask {
    config: Arc<WhatsappConfig>,
    deps: ConnectorDeps,
    limiter: Arc<DefaultDirectRateLimiter>,
    circuit: Arc<SharedCircuit>,
    channel_id: confab_engine::ids::ChannelId,
    connector: ActorRef<WhatsappMsg>,
}

impl SendTask {
    async fn run(self, entry: OutboxEntry) {
        let outcome = self.send_with_retries(&entry).await;
        let report = match outcome {
            Ok(wamid) => ConversationMsg::ProviderAccepted {
                seq: entry.seq,
                external_id: wamid,
            },
            Err(error) => ConversationMsg::ProviderFailed {
                seq: entry.seq,
                error,
            },
        };
        if let Err(e) = self
            .deps
            .conversations
            .tell(entry.conversation_id, report)
            .await
        {
            tracing::error!(conversation = %entry.conversation_id, error = %e, "cannot report a send outcome; the outbox will resend it");
        }
        self.deps.registry.in_flight().remove(&entry.message_id);
        // The connector may have been restarted since: tell whichever one runs now.
        let finished = WhatsappMsg::SendFinished { to: entry.to };
        let current = match self.deps.registry.get(self.channel_id).map(|e| e.connector) {
            Some(super::Connector::Whatsapp(actor)) => actor,
            None => self.connector,
        };
        let _ = current.cast(finished);
    }

    async fn send_with_retries(&self, entry: &OutboxEntry) -> Result<String, String> {
        let settings = &self.deps.settings;
        let url = format!(
            "{}/{}/messages",
            self.config.api_base_url.trim_end_matches('/'),
            self.config.phone_number_id
        );
        let body = wire::text_message_body(&entry.to, &entry.text);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let pause = self.circuit.lock().wait(std::time::Instant::now());
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            self.limiter.until_ready().await;
            let result = self
                .deps
                .http
                .post(&url)
                .bearer_auth(&self.config.access_token)
                .json(&body)
                .send()
                .await;
            let (error, retryable) = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.bytes().await {
                        Ok(bytes) => match wire::parse_send_response(status, &bytes) {
                            Ok(wamid) => {
                                metrics::counter!(crate::metrics::CONNECTOR_SENDS, "channel" => "whatsapp", "outcome" => "accepted").increment(1);
                                if self.circuit.lock().success() {
                                    tracing::info!(channel = %self.channel_id, "provider answers again: circuit closed");
                                    metrics::gauge!(crate::metrics::CONNECTOR_CIRCUITS_OPEN, "channel" => "whatsapp").decrement(1.0);
                                }
                                return Ok(wamid);
                            }
                            Err(e) => (e.message, e.retryable),
                        },
                        Err(e) => (format!("reading the provider's answer failed: {e}"), true),
                    }
                }
                Err(e) => (format!("the provider could not be reached: {e}"), true),
            };
            if retryable && self.circuit.lock().failure(std::time::Instant::now()) {
                tracing::warn!(channel = %self.channel_id, %error, "provider failing: circuit open, sends pause");
                metrics::gauge!(crate::metrics::CONNECTOR_CIRCUITS_OPEN, "channel" => "whatsapp")
                    .increment(1.0);
                metrics::counter!(crate::metrics::CONNECTOR_CIRCUIT_OPENED, "channel" => "whatsapp")
                    .increment(1);
            }
            if !retryable || attempt >= settings.max_send_attempts {
                metrics::counter!(crate::metrics::CONNECTOR_SENDS, "channel" => "whatsapp", "outcome" => "failed").increment(1);
                tracing::warn!(message = %entry.message_id, attempt, %error, "WhatsApp send failed");
                return Err(error);
            }
            metrics::counter!(crate::metrics::CONNECTOR_SENDS, "channel" => "whatsapp", "outcome" => "retried").increment(1);
            tokio::time::sleep(backoff(settings.retry_base, settings.retry_max, attempt)).await;
        }
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
