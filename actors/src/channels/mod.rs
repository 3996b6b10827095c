//! Channel connectors and their supervisor.
//!
//! One connector actor per channel account turns the provider's webhooks into inbound
//! events for conversations and sends outbound messages through the provider's API. The
//! supervisor restarts a crashed connector (within a budget); a connector rebuilds its send
//! queue from the durable outbox when it starts.

pub mod circuit;
pub mod whatsapp;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_engine::committer::Committer;
use confab_engine::ids::{ChannelId, MessageId};
use confab_engine::model::{Channel, ChannelConfig};
use confab_engine::outbox::OutboxEntry;
use confab_engine::store::Store;
use dashmap::DashMap;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;

use crate::conversation::InboundOutcome;
use crate::error::{ActorError, ActorResult};
use crate::manager::Conversations;

use self::whatsapp::{WhatsappArgs, WhatsappConnector, WhatsappMsg};

/// Settings shared by every connector.
#[derive(Clone, Debug)]
pub struct ConnectorSettings {
    /// Send attempts before a message is marked failed.
    pub max_send_attempts: u32,
    /// First retry delay; doubled per attempt, with jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// WhatsApp messages per second per phone number.
    pub whatsapp_per_second: u32,
    pub request_timeout: Duration,
    pub restart_budget: u32,
    pub restart_window: Duration,
}

impl Default for ConnectorSettings {
    fn default() -> Self {
        Self {
            max_send_attempts: 6,
            retry_base: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            whatsapp_per_second: 80,
            request_timeout: Duration::from_secs(15),
            restart_budget: 5,
            restart_window: Duration::from_secs(60),
        }
    }
}

/// A connector of any kind.
#[derive(Clone)]
pub enum Connector {
    Whatsapp(ActorRef<WhatsappMsg>),
}

impl Connector {
    fn send(&self, entry: OutboxEntry) -> bool {
        match self {
            Connector::Whatsapp(actor) => actor.cast(WhatsappMsg::Send(entry)).is_ok(),
        }
    }

    fn cell(&self) -> ractor::ActorCell {
        match self {
            Connector::Whatsapp(actor) => actor.get_cell(),
        }
    }
}

#[derive(Clone)]
pub struct ChannelEntry {
    pub channel: Arc<Channel>,
    pub connector: Connector,
}

/// Every running channel and its connector, readable without a mailbox hop.
#[derive(Clone, Default)]
pub struct ChannelRegistry {
    entries: Arc<DashMap<ChannelId, ChannelEntry>>,
    /// Outbound messages a send task is working on, across connector restarts.
    in_flight: Arc<DashMap<MessageId, ()>>,
}

impl ChannelRegistry {
    pub fn get(&self, id: ChannelId) -> Option<ChannelEntry> {
        self.entries.get(&id).map(|e| e.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Hands an outbound message to its channel's connector. If the connector is not
    /// running, the message stays in the outbox and is sent when it starts.
    pub fn dispatch(&self, entry: OutboxEntry) {
        let channel = entry.channel_id;
        match self.entries.get(&channel).map(|e| e.connector.clone()) {
            Some(connector) if connector.send(entry) => {}
            _ => tracing::warn!(%channel, "no running connector: the message waits in the outbox"),
        }
    }

    pub(crate) fn in_flight(&self) -> &DashMap<MessageId, ()> {
        &self.in_flight
    }
}

/// The result of one webhook: how many messages were new, repeated, and statuses applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookReport {
    pub stored: usize,
    pub duplicates: usize,
    pub statuses: usize,
    /// Messages or statuses addressed to a phone number this channel does not serve.
    pub skipped: usize,
    /// Items that can never be stored (no usable id or sender): answered, not retried.
    pub rejected: usize,
}

impl WebhookReport {
    /// True when the body held items and every one of them can never be stored: the
    /// provider must be told (4xx), since retrying the same body cannot help.
    pub fn only_rejected(&self) -> bool {
        self.rejected > 0 && self.stored + self.duplicates + self.statuses + self.skipped == 0
    }
}

/// Answers a webhook's items will arrive on, in the order they were queued.
pub enum Pending {
    Inbound(oneshot::Receiver<ActorResult<InboundOutcome>>),
    Status(oneshot::Receiver<ActorResult<()>>),
    /// A status already made durable.
    Applied,
    Skipped,
    /// This many items can never be stored.
    Rejected(usize),
}

/// Waits until every item of a webhook is durable (or one failed).
pub async fn wait_all(pending: Vec<Pending>) -> ActorResult<WebhookReport> {
    let gone =
        || ActorError::Unavailable("a conversation stopped before storing the webhook".into());
    let mut report = WebhookReport::default();
    for item in pending {
        match item {
            Pending::Inbound(rx) => match rx.await.map_err(|_| gone())?? {
                InboundOutcome::Stored(_) => report.stored += 1,
                InboundOutcome::Duplicate => report.duplicates += 1,
            },
            Pending::Status(rx) => {
                rx.await.map_err(|_| gone())??;
                report.statuses += 1;
            }
            Pending::Applied => report.statuses += 1,
            Pending::Skipped => report.skipped += 1,
            Pending::Rejected(n) => report.rejected += n,
        }
    }
    Ok(report)
}

/// The handle the gateway uses to reach channels. Cheap to clone.
#[derive(Clone)]
pub struct Channels {
    registry: ChannelRegistry,
    supervisor: ActorRef<SupervisorMsg>,
}

impl Channels {
    pub fn registry(&self) -> &ChannelRegistry {
        &self.registry
    }

    pub fn get(&self, id: ChannelId) -> Option<Arc<Channel>> {
        self.registry.get(id).map(|e| e.channel)
    }

    /// Starts the connector of a (stored) channel.
    pub async fn start(&self, channel: Channel) -> ActorResult<()> {
        let (tx, rx) = oneshot::channel();
        self.supervisor
            .cast(SupervisorMsg::Start(Box::new(channel), tx.into()))
            .map_err(|_| ActorError::Unavailable("the channel supervisor has stopped".into()))?;
        rx.await
            .map_err(|_| ActorError::Unavailable("the channel supervisor has stopped".into()))?
    }

    /// Hands a verified WhatsApp webhook body, received at `received`, to the channel's
    /// connector and waits until everything in it is durable.
    pub async fn whatsapp_webhook(
        &self,
        id: ChannelId,
        body: Bytes,
        received: Instant,
    ) -> ActorResult<WebhookReport> {
        let Some(ChannelEntry {
            connector: Connector::Whatsapp(actor),
            ..
        }) = self.registry.get(id)
        else {
            return Err(ActorError::NotFound);
        };
        let (tx, rx) = oneshot::channel();
        actor
            .cast(WhatsappMsg::Webhook(body, received, tx.into()))
            .map_err(|_| ActorError::Unavailable("the channel's connector is restarting".into()))?;
        let pending = rx
            .await
            .map_err(|_| ActorError::Unavailable("the channel's connector stopped".into()))??;
        wait_all(pending).await
    }

    /// Lets every connector finish what it has queued, then stops them.
    pub async fn stop(&self, timeout: Duration) {
        self.supervisor.drain_children();
        let _ = self.supervisor.stop_and_wait(None, Some(timeout)).await;
    }

    /// Test hook: makes a channel's connector panic.
    #[doc(hidden)]
    pub fn crash(&self, id: ChannelId) {
        if let Some(ChannelEntry {
            connector: Connector::Whatsapp(actor),
            ..
        }) = self.registry.get(id)
        {
            let _ = actor.cast(WhatsappMsg::Crash);
        }
    }
}

/// What a connector needs from the rest of the engine.
#[derive(Clone)]
pub struct ConnectorDeps {
    pub store: Store,
    pub committer: Committer,
    pub conversations: Conversations,
    pub registry: ChannelRegistry,
    pub http: reqwest::Client,
    pub settings: ConnectorSettings,
}

pub enum SupervisorMsg {
    Start(Box<Channel>, RpcReplyPort<ActorResult<()>>),
}

pub struct ChannelSupervisor;

pub struct SupervisorState {
    deps: ConnectorDeps,
    children: HashMap<ActorId, ChannelId>,
    restarts: HashMap<ChannelId, VecDeque<Instant>>,
}

impl ChannelSupervisor {
    pub async fn start(deps: ConnectorDeps) -> Result<Channels, ractor::SpawnErr> {
        let registry = deps.registry.clone();
        let (supervisor, _) = Actor::spawn(None, ChannelSupervisor, deps).await?;
        Ok(Channels {
            registry,
            supervisor,
        })
    }
}

impl Actor for ChannelSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ConnectorDeps;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        deps: ConnectorDeps,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            deps,
            children: HashMap::new(),
            restarts: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(channel, reply) => {
                let _ = reply.send(state.spawn(&myself, Arc::new(*channel)).await);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Not ractor's default (stop the supervisor): a connector crash is restarted.
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(channel_id) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(channel = %channel_id, %error, "channel connector crashed");
                metrics::counter!(crate::metrics::CONNECTOR_RESTARTS).increment(1);
                let Some(entry) = state.deps.registry.get(channel_id) else {
                    return Ok(());
                };
                let times = state.restarts.entry(channel_id).or_default();
                let window = state.deps.settings.restart_window;
                while times.front().is_some_and(|t| t.elapsed() > window) {
                    times.pop_front();
                }
                times.push_back(Instant::now());
                if times.len() > state.deps.settings.restart_budget as usize {
                    tracing::error!(channel = %channel_id, "connector restart budget spent: channel stopped");
                    state.deps.registry.entries.remove(&channel_id);
                    return Ok(());
                }
                if let Err(e) = state.spawn(&myself, entry.channel).await {
                    tracing::error!(channel = %channel_id, error = %e, "cannot restart connector");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.children.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        channel: Arc<Channel>,
    ) -> ActorResult<()> {
        if self.children.values().any(|id| *id == channel.id) {
            return Ok(());
        }
        let connector = match &channel.config {
            ChannelConfig::Whatsapp(_) => {
                let args = WhatsappArgs {
                    channel: channel.clone(),
                    deps: self.deps.clone(),
                };
                let (actor, _) =
                    Actor::spawn_linked(None, WhatsappConnector, args, myself.get_cell())
                        .await
                        .map_err(|e| {
                            ActorError::Unavailable(format!("cannot start the connector: {e}"))
                        })?;
                Connector::Whatsapp(actor)
            }
        };
        self.children.insert(connector.cell().get_id(), channel.id);
        self.deps
            .registry
            .entries
            .insert(channel.id, ChannelEntry { channel, connector });
        Ok(())
    }
}
