//! Channels: one generic connector actor per channel account, the adapters of the
//! providers behind it, and their supervisor.
//!
//! A provider is an [`adapter::Adapter`] in one file (`whatsapp`, `email`, `linkedin`, and
//! the test-only `loopback`); the [`connector`] does everything else the same way for all of them:
//! queues per thread, pacing and daily budgets, retries with backoff, the circuit breaker,
//! outbox replay, status routing and health (see [`link`]). The supervisor restarts a
//! crashed connector (within a budget); a connector rebuilds its send queue from the
//! durable outbox when it starts.

pub mod adapter;
pub mod circuit;
pub mod connector;
pub mod email;
pub mod imap;
pub mod link;
pub mod linkedin;
#[cfg(feature = "loopback")]
pub mod loopback;
pub mod whatsapp;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_engine::catalogue::Ks;
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::ids::{ChannelId, MessageId, WorkspaceId};
use confab_engine::model::{Channel, ChannelKind};
use confab_engine::outbox::OutboxEntry;
use confab_engine::port::{ChannelHealth, ChannelRuntime, SendOutcome};
use confab_engine::store::Store;
use dashmap::DashMap;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use reqwest::header::HeaderMap;
use tokio::sync::oneshot;

use self::adapter::Refusal;
use self::connector::{Connector, ConnectorArgs, ConnectorMsg};
use self::link::Link;
use crate::clock::{SharedClock, SystemClock};
use crate::conversation::InboundOutcome;
use crate::error::{ActorError, ActorResult};
use crate::manager::Conversations;
use crate::outbound::Outbound;

/// Settings shared by every connector.
#[derive(Clone, Debug)]
pub struct ConnectorSettings {
    /// Send attempts before a message is marked failed.
    pub max_send_attempts: u32,
    /// First retry delay; doubled per attempt, with jitter.
    pub retry_base: Duration,
    /// Longest retry delay, and the circuit's cool-down.
    pub retry_max: Duration,
    /// The server's sends per second per sender, by kind, over the kinds' defaults (a
    /// channel's own limit wins over both).
    pub per_second: HashMap<ChannelKind, u32>,
    pub request_timeout: Duration,
    pub restart_budget: u32,
    pub restart_window: Duration,
    /// What daily budgets count days by.
    pub clock: SharedClock,
    /// How email channels read their connected mailboxes.
    pub mailbox: imap::MailboxSettings,
    /// How LinkedIn channels read back what their webhooks missed.
    pub repair: linkedin::RepairSettings,
}

impl Default for ConnectorSettings {
    fn default() -> Self {
        Self {
            max_send_attempts: 6,
            retry_base: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            per_second: HashMap::new(),
            request_timeout: Duration::from_secs(15),
            restart_budget: 5,
            restart_window: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            mailbox: imap::MailboxSettings::default(),
            repair: linkedin::RepairSettings::default(),
        }
    }
}

/// Every channel's link, and the connector of each running one: readable without a
/// mailbox hop.
#[derive(Clone)]
pub struct ChannelRegistry {
    links: Arc<DashMap<ChannelId, Arc<Link>>>,
    connectors: Arc<DashMap<ChannelId, ActorRef<ConnectorMsg>>>,
    /// Outbound messages a send task is working on, across connector restarts.
    in_flight: Arc<DashMap<MessageId, ChannelId>>,
    /// Outbound messages whose request is at the provider right now.
    sending: Arc<dashmap::DashSet<MessageId>>,
    /// Each email channel's mailbox reader: a restarted connector (even after a panic,
    /// which skips `post_stop`) replaces the one before.
    readers: Arc<DashMap<ChannelId, tokio::task::AbortHandle>>,
    /// Turns true when the channels stop: held sends give up waiting (their messages stay
    /// in the outbox for the next start).
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for ChannelRegistry {
    fn default() -> Self {
        Self {
            links: Arc::default(),
            connectors: Arc::default(),
            in_flight: Arc::default(),
            sending: Arc::default(),
            readers: Arc::default(),
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl ChannelRegistry {
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    pub fn link(&self, id: ChannelId) -> Option<Arc<Link>> {
        self.links.get(&id).map(|l| l.clone())
    }

    pub(crate) fn connector(&self, id: ChannelId) -> Option<ActorRef<ConnectorMsg>> {
        self.connectors.get(&id).map(|c| c.clone())
    }

    /// The actor id of the channel's running connector (changes when it restarts).
    pub fn connector_id(&self, id: ChannelId) -> Option<ActorId> {
        self.connectors.get(&id).map(|c| c.get_id())
    }

    /// Channels with a running connector.
    pub fn len(&self) -> usize {
        self.connectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connectors.is_empty()
    }

    pub(crate) fn in_flight(&self) -> &DashMap<MessageId, ChannelId> {
        &self.in_flight
    }

    pub(crate) fn sending(&self) -> &dashmap::DashSet<MessageId> {
        &self.sending
    }

    /// Makes `reader` the channel's mailbox reader, stopping the one before.
    pub(crate) fn replace_reader(&self, channel: ChannelId, reader: tokio::task::AbortHandle) {
        if let Some(old) = self.readers.insert(channel, reader) {
            old.abort();
        }
    }
}

impl Outbound for ChannelRegistry {
    /// Hands an outbound message to its channel's connector. If the connector is not
    /// running, the message stays in the outbox and is sent when it starts.
    fn dispatch(&self, entry: OutboxEntry) {
        let channel = entry.channel_id;
        match self.connector(channel) {
            Some(connector) if connector.cast(ConnectorMsg::Send(entry)).is_ok() => {}
            _ => tracing::warn!(%channel, "no running connector: the message waits in the outbox"),
        }
    }

    fn is_sending(&self, message: MessageId) -> bool {
        self.sending.contains(&message)
    }
}

/// The result of one webhook: how many messages were new, repeated, and statuses applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookReport {
    pub stored: usize,
    pub duplicates: usize,
    pub statuses: usize,
    /// Messages or statuses addressed to another sender identity (another number).
    pub skipped: usize,
    /// Items that can never be stored (no usable id or sender): answered, not retried.
    pub rejected: usize,
    /// Events the channel does not use, or about messages it does not know.
    pub ignored: usize,
}

impl WebhookReport {
    /// True when the body held items and every one of them can never be stored: the
    /// provider must be told (4xx), since retrying the same body cannot help.
    pub fn only_rejected(&self) -> bool {
        self.rejected > 0
            && self.stored + self.duplicates + self.statuses + self.skipped + self.ignored == 0
    }
}

/// Answers a webhook's items will arrive on, in the order they were queued.
pub enum Pending {
    Inbound(oneshot::Receiver<ActorResult<InboundOutcome>>),
    Status(oneshot::Receiver<ActorResult<()>>),
    /// A status already made durable.
    Applied,
    /// This many items were for another sender identity.
    Skipped(usize),
    /// This many items can never be stored.
    Rejected(usize),
    /// This many items were acknowledged and not used.
    Ignored(usize),
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
            Pending::Skipped(n) => report.skipped += n,
            Pending::Rejected(n) => report.rejected += n,
            Pending::Ignored(n) => report.ignored += n,
        }
    }
    Ok(report)
}

/// Why a webhook was not taken.
#[derive(Debug)]
pub enum WebhookError {
    /// No such channel (or not of the provider the route serves).
    NotFound,
    /// The adapter refused it: not from the provider, or not its format.
    Refused(Refusal),
    Actor(ActorError),
}

/// The handle the gateway uses to reach channels. Cheap to clone.
#[derive(Clone)]
pub struct Channels {
    registry: ChannelRegistry,
    supervisor: ActorRef<SupervisorMsg>,
    /// Fetches attachments from providers: no limit on a whole download (files are
    /// large), only on connecting and on each read.
    media_http: reqwest::Client,
}

impl Channels {
    pub fn registry(&self) -> &ChannelRegistry {
        &self.registry
    }

    pub fn get(&self, id: ChannelId) -> Option<Arc<Channel>> {
        self.registry.link(id).map(|l| l.channel())
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

    /// Changes a channel's configuration (name, disabled, credentials, limits): stored,
    /// then applied at once (held sends look again). Changes are serialized.
    pub async fn update(&self, id: ChannelId, change: ChannelChange) -> ActorResult<Channel> {
        let (tx, rx) = oneshot::channel();
        self.supervisor
            .cast(SupervisorMsg::Update(id, change, tx.into()))
            .map_err(|_| ActorError::Unavailable("the channel supervisor has stopped".into()))?;
        rx.await
            .map_err(|_| ActorError::Unavailable("the channel supervisor has stopped".into()))?
    }

    /// The file a provider keeps for one of the channel's messages (`media_id` from the
    /// message's attachment), as the provider's streaming answer.
    pub async fn fetch_media(
        &self,
        id: ChannelId,
        media_id: &str,
    ) -> Result<reqwest::Response, adapter::MediaError> {
        let link = self
            .registry
            .link(id)
            .ok_or_else(|| adapter::MediaError::Unavailable("the channel is not running".into()))?;
        link.adapter().fetch_media(&self.media_http, media_id).await
    }

    /// The health of one channel.
    pub fn health(&self, id: ChannelId) -> Option<ChannelHealth> {
        self.registry.link(id).map(|l| l.health())
    }

    /// The health of every channel of a workspace, oldest channel first.
    pub fn workspace_health(&self, workspace: WorkspaceId) -> Vec<ChannelHealth> {
        let mut links: Vec<Arc<Link>> = self
            .registry
            .links
            .iter()
            .filter(|l| l.channel().workspace_id == workspace)
            .map(|l| l.clone())
            .collect();
        links.sort_by_key(|l| l.channel().id);
        links.iter().map(|l| l.health()).collect()
    }

    fn kind_link(
        &self,
        id: ChannelId,
        kind: Option<ChannelKind>,
    ) -> Result<Arc<Link>, WebhookError> {
        self.registry
            .link(id)
            .filter(|l| kind.is_none_or(|k| l.channel().kind() == k))
            .ok_or(WebhookError::NotFound)
    }

    /// The provider's subscription handshake for the channel: what to answer, `Ok(None)`
    /// when the request is not a valid one.
    pub fn handshake(
        &self,
        id: ChannelId,
        kind: Option<ChannelKind>,
        query: &HashMap<String, String>,
    ) -> Result<Option<String>, WebhookError> {
        Ok(self.kind_link(id, kind)?.adapter().handshake(query))
    }

    /// Checks a webhook's authenticity with the channel's adapter, then hands the body to
    /// the channel's connector and waits until everything in it is durable. `kind`, when
    /// given, is the provider the route serves.
    pub async fn webhook(
        &self,
        id: ChannelId,
        kind: Option<ChannelKind>,
        headers: &HeaderMap,
        body: Bytes,
        received: Instant,
    ) -> Result<WebhookReport, WebhookError> {
        let link = self.kind_link(id, kind)?;
        let adapter = link.adapter();
        adapter
            .verify(headers, &body)
            .map_err(WebhookError::Refused)?;
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let body = adapter
            .normalize(content_type, body)
            .await
            .map_err(WebhookError::Refused)?;
        let connector = self.registry.connector(id).ok_or_else(|| {
            WebhookError::Actor(ActorError::Unavailable(
                "the channel's connector is not running".into(),
            ))
        })?;
        let (tx, rx) = oneshot::channel();
        connector
            .cast(ConnectorMsg::Webhook(body, received, tx.into()))
            .map_err(|_| {
                WebhookError::Actor(ActorError::Unavailable(
                    "the channel's connector is restarting".into(),
                ))
            })?;
        let pending = rx
            .await
            .map_err(|_| {
                WebhookError::Actor(ActorError::Unavailable(
                    "the channel's connector stopped".into(),
                ))
            })?
            .map_err(|e| match e {
                ActorError::Invalid { code, message } => {
                    WebhookError::Refused(Refusal::malformed(code, message))
                }
                other => WebhookError::Actor(other),
            })?;
        wait_all(pending).await.map_err(WebhookError::Actor)
    }

    /// Lets every connector finish what it has queued, then stops them.
    pub async fn stop(&self, timeout: Duration) {
        self.registry.stopping.send_replace(true);
        self.supervisor.drain_children();
        let _ = self.supervisor.stop_and_wait(None, Some(timeout)).await;
    }

    /// Test hook: makes a channel's connector panic.
    #[doc(hidden)]
    pub fn crash(&self, id: ChannelId) {
        if let Some(connector) = self.registry.connector(id) {
            let _ = connector.cast(ConnectorMsg::Crash);
        }
    }
}

/// The delay a provider's `Retry-After` header asks for, in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A provider's HTTP answer to one send, read whole.
pub(crate) struct ProviderAnswer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// Sends one request to a provider and reads its answer; a provider that cannot be
/// reached, or whose answer cannot be read, is a retryable outcome. Shared by adapters.
pub(crate) async fn provider_answer(
    request: reqwest::RequestBuilder,
) -> Result<ProviderAnswer, SendOutcome> {
    let retryable = |reason: String| SendOutcome::Retryable {
        reason,
        retry_after: None,
    };
    let response = request
        .send()
        .await
        .map_err(|e| retryable(format!("the provider could not be reached: {e}")))?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|e| retryable(format!("reading the provider's answer failed: {e}")))?;
    Ok(ProviderAnswer {
        status,
        retry_after,
        body,
    })
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

/// A change to a channel's stored configuration.
pub type ChannelChange = Box<dyn FnOnce(&mut Channel) + Send>;

pub enum SupervisorMsg {
    Start(Box<Channel>, RpcReplyPort<ActorResult<()>>),
    /// Applies a change to the channel's current configuration, stores it and hands it to
    /// the channel's link; changes are serialized here.
    Update(ChannelId, ChannelChange, RpcReplyPort<ActorResult<Channel>>),
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
        let timeout = deps.settings.request_timeout;
        let media_http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .build()
            .map_err(|e| ractor::SpawnErr::StartupFailed(e.to_string().into()))?;
        let (supervisor, _) = Actor::spawn(None, ChannelSupervisor, deps).await?;
        Ok(Channels {
            registry,
            supervisor,
            media_http,
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
                let _ = reply.send(state.start(&myself, *channel).await);
            }
            SupervisorMsg::Update(id, change, reply) => {
                let _ = reply.send(state.update(id, change).await);
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
                state.deps.registry.connectors.remove(&channel_id);
                let Some(link) = state.deps.registry.link(channel_id) else {
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
                    link.set_running(false);
                    return Ok(());
                }
                if let Err(e) = state.spawn(&myself, link).await {
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
    /// Starts a channel's connector, with a new link (its health and budget as stored).
    async fn start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        channel: Channel,
    ) -> ActorResult<()> {
        if self.children.values().any(|id| *id == channel.id) {
            return Ok(());
        }
        let store = self.deps.store.clone();
        let id = channel.id;
        let runtime: ChannelRuntime =
            tokio::task::spawn_blocking(move || store.get(Ks::ChannelRuntime, &id.to_bytes()))
                .await
                .map_err(|e| ActorError::Unavailable(e.to_string()))??
                .unwrap_or_default();
        let link = Link::new(
            Arc::new(channel),
            runtime,
            self.deps.committer.clone(),
            self.deps.settings.clone(),
        );
        self.deps.registry.links.insert(id, link.clone());
        self.spawn(myself, link).await
    }

    async fn update(&mut self, id: ChannelId, change: ChannelChange) -> ActorResult<Channel> {
        let link = self.deps.registry.link(id).ok_or(ActorError::NotFound)?;
        let mut channel = (*link.channel()).clone();
        change(&mut channel);
        let mut set = WriteSet::new();
        set.put(Ks::ChannelState, channel.id.to_bytes().to_vec(), &channel);
        self.deps.committer.commit(set).await?;
        link.reconfigure(channel.clone());
        Ok(channel)
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        link: Arc<Link>,
    ) -> ActorResult<()> {
        let id = link.channel().id;
        let args = ConnectorArgs {
            link,
            deps: self.deps.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, Connector, args, myself.get_cell())
            .await
            .map_err(|e| ActorError::Unavailable(format!("cannot start the connector: {e}")))?;
        self.children.insert(actor.get_id(), id);
        self.deps.registry.connectors.insert(id, actor);
        Ok(())
    }
}
