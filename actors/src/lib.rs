//! Confab's actor runtime (ractor): conversation actors and their manager, channel
//! connectors and their supervisor, the search indexer.
//!
//! Only a conversation's actor writes its conversation; every write goes through the
//! engine's committer. Nothing here knows HTTP.

pub mod ai;
pub mod channels;
pub mod clock;
pub mod contacts;
pub mod conversation;
pub mod erasure;
pub mod error;
pub mod indexer;
pub mod manager;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod retention;

use std::time::Duration;

use confab_engine::committer::Committer;
use confab_engine::store::Store;
use confab_index::SearchIndex;
use ractor::ActorRef;

pub use channels::{ChannelRegistry, Channels, ConnectorSettings, WebhookError, WebhookReport};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use contacts::{ContactEdit, Contacts};
pub use conversation::{ConversationMsg, InboundOutcome, OutboundRequest};
pub use error::{ActorError, ActorResult};
pub use indexer::IndexerConfig;
pub use manager::{Conversations, ManagerConfig};

#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    pub conversations: ManagerConfig,
    pub connectors: ConnectorSettings,
    /// The search indexer; `None` runs without search.
    pub indexer: Option<IndexerConfig>,
    pub ai: ai::AiSettings,
    pub notify: notify::NotifySettings,
}

/// The running actor system.
#[derive(Clone)]
pub struct Runtime {
    pub conversations: Conversations,
    pub contacts: Contacts,
    /// The AI agent pool (its knowledge index).
    pub ai: ai::AiPool,
    pub channels: Channels,
    /// The search index (`None` when the runtime runs without an indexer).
    pub search: Option<SearchIndex>,
    /// Agents' notifications: settings, read marks, push subscriptions.
    pub notifier: notify::Notifier,
    /// The server's VAPID key pair (Web Push).
    pub vapid: notify::push::Vapid,
    indexer: Option<ActorRef<indexer::IndexerMsg>>,
    /// The notification delivery workers and the timer task.
    background: std::sync::Arc<Vec<tokio::task::JoinHandle<()>>>,
}

impl Runtime {
    /// Starts the manager and the channel supervisor, then a connector for every stored
    /// channel (each resends what its outbox still holds).
    pub async fn start(
        store: Store,
        committer: Committer,
        config: RuntimeConfig,
    ) -> ActorResult<Runtime> {
        let (search, indexer) = match config.indexer {
            Some(indexer_config) => {
                let (search, indexer) =
                    start_indexer(store.clone(), committer.clone(), indexer_config).await?;
                (Some(search), Some(indexer))
            }
            None => (None, None),
        };
        let registry = ChannelRegistry::default();
        let (ai_queue, ai_requests) = ai::AiQueue::bounded(config.ai.queue_depth);
        let clock = config.connectors.clock.clone();
        let notifier = notify::Notifier::new(
            store.clone(),
            committer.clone(),
            clock.clone(),
            config.notify.email.is_some(),
        );
        let vapid = notify::push::Vapid::load_or_create(&store, &committer).await?;
        let conversations = manager::Manager::start(manager::ManagerArgs {
            store: store.clone(),
            committer: committer.clone(),
            outbound: std::sync::Arc::new(registry.clone()),
            ai: ai_queue,
            notifier: notifier.clone(),
            config: config.conversations,
        })
        .await
        .map_err(|e| {
            ActorError::Unavailable(format!("cannot start the conversation manager: {e}"))
        })?;
        let contacts = Contacts::start(store.clone(), committer.clone(), conversations.clone())
            .await
            .map_err(|e| {
                ActorError::Unavailable(format!("cannot start the contacts actor: {e}"))
            })?;
        let http = reqwest::Client::builder()
            .timeout(config.connectors.request_timeout)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ActorError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        let ai =
            ai::AiPool::start(store.clone(), conversations.clone(), config.ai, ai_requests).await?;
        let tick = config.notify.tick;
        let mut background = vec![tokio::spawn(notify::timers::run(
            store.clone(),
            committer.clone(),
            conversations.clone(),
            clock.clone(),
            tick,
        ))];
        background.push(tokio::spawn(
            notify::push::PushWorker {
                store: store.clone(),
                committer: committer.clone(),
                clock: clock.clone(),
                vapid: vapid.clone(),
                settings: config.notify.push.clone(),
                // Public addresses only (DNS rebinding included), unless allowed.
                http: ai::openai::client(config.notify.push.allow_private).map_err(|e| {
                    ActorError::Unavailable(format!("cannot build the push client: {e}"))
                })?,
                public_url: config.notify.public_url.clone(),
                tick,
            }
            .run(),
        ));
        if let Some(relay) = config.notify.email.clone() {
            background.push(tokio::spawn(
                notify::email::EmailWorker {
                    store: store.clone(),
                    committer: committer.clone(),
                    clock: clock.clone(),
                    relay,
                    public_url: config.notify.public_url.clone(),
                    tick,
                }
                .run(),
            ));
        }
        let channels = channels::ChannelSupervisor::start(channels::ConnectorDeps {
            store: store.clone(),
            committer,
            conversations: conversations.clone(),
            registry,
            http,
            settings: config.connectors,
        })
        .await
        .map_err(|e| {
            ActorError::Unavailable(format!("cannot start the channel supervisor: {e}"))
        })?;
        let stored = tokio::task::spawn_blocking(move || store.all_channels())
            .await
            .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        for channel in stored {
            channels.start(channel).await?;
        }
        Ok(Runtime {
            conversations,
            contacts,
            ai,
            channels,
            search,
            notifier,
            vapid,
            indexer,
            background: std::sync::Arc::new(background),
        })
    }

    /// Stops connectors, then conversations, each after finishing what it has queued, then
    /// the indexer after committing what it buffered.
    pub async fn stop(&self, timeout: Duration) {
        for task in self.background.iter() {
            task.abort();
        }
        self.ai.stop();
        self.channels.stop(timeout).await;
        self.contacts.stop(timeout).await;
        let manager = self.conversations.manager();
        manager.drain_children();
        let _ = manager.stop_and_wait(None, Some(timeout)).await;
        self.conversations.end_tasks().await;
        if let Some(indexer) = &self.indexer {
            let _ = indexer.drain_and_wait(Some(timeout)).await;
        }
    }
}

/// Opens the index (off the reactor) and starts its indexer.
async fn start_indexer(
    store: Store,
    committer: Committer,
    config: IndexerConfig,
) -> ActorResult<(SearchIndex, ActorRef<indexer::IndexerMsg>)> {
    let dir = config.dir.clone();
    let search = tokio::task::spawn_blocking(move || SearchIndex::open(&dir))
        .await
        .map_err(|e| ActorError::Unavailable(e.to_string()))?
        .map_err(|e| ActorError::Unavailable(format!("cannot open the search index: {e}")))?;
    let indexer = indexer::Indexer::start(indexer::IndexerArgs {
        store,
        committer,
        index: search.clone(),
        config,
    })
    .await
    .map_err(|e| ActorError::Unavailable(format!("cannot start the indexer: {e}")))?;
    Ok((search, indexer))
}

#[cfg(test)]
mod tests {
    /// The code of a module before its tests.
    fn code(source: &str) -> &str {
        source.split("#[cfg(test)]").next().unwrap_or(source)
    }

    #[test]
    fn modules_depend_one_way_and_shared_code_names_no_provider() {
        let conversation = code(include_str!("conversation.rs"));
        let manager = code(include_str!("manager.rs"));
        let connector = code(include_str!("channels/connector.rs"));
        let link = code(include_str!("channels/link.rs"));
        let outbound = code(include_str!("outbound.rs"));
        // channels → manager → conversation → outbound: nothing points back.
        for (name, source, forbidden) in [
            (
                "conversation",
                conversation,
                &["crate::channels", "crate::manager", "crate::contacts"][..],
            ),
            (
                "manager",
                manager,
                &["crate::channels", "crate::contacts"][..],
            ),
            (
                "outbound",
                outbound,
                &["crate::channels", "crate::manager", "crate::conversation"][..],
            ),
        ] {
            for path in forbidden {
                assert!(!source.contains(path), "{name} uses {path}");
            }
        }
        for (name, source) in [
            ("conversation", conversation),
            ("manager", manager),
            ("connector", connector),
            ("link", link),
        ] {
            let lower = source.to_lowercase();
            for provider in [
                "whatsapp", "wamid", "wa_id", "linkedin", "unipile", "imap", "smtp",
            ] {
                assert!(!lower.contains(provider), "{name} names {provider}");
            }
        }
    }
}
