//! Confab's actor runtime (ractor): conversation actors and their manager, channel
//! connectors and their supervisor.
//!
//! Only a conversation's actor writes its conversation; every write goes through the
//! engine's committer. Nothing here knows HTTP.

pub mod channels;
pub mod conversation;
pub mod error;
pub mod manager;
pub mod metrics;

use std::time::Duration;

use confab_engine::committer::Committer;
use confab_engine::store::Store;

pub use channels::{ChannelRegistry, Channels, ConnectorSettings, WebhookReport};
pub use conversation::{ConversationMsg, InboundOutcome, OutboundRequest};
pub use error::{ActorError, ActorResult};
pub use manager::{Conversations, ManagerConfig};

#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    pub conversations: ManagerConfig,
    pub connectors: ConnectorSettings,
}

/// The running actor system.
#[derive(Clone)]
pub struct Runtime {
    pub conversations: Conversations,
    pub channels: Channels,
}

impl Runtime {
    /// Starts the manager and the channel supervisor, then a connector for every stored
    /// channel (each resends what its outbox still holds).
    pub async fn start(
        store: Store,
        committer: Committer,
        config: RuntimeConfig,
    ) -> ActorResult<Runtime> {
        let registry = ChannelRegistry::default();
        let conversations = manager::Manager::start(manager::ManagerArgs {
            store: store.clone(),
            committer: committer.clone(),
            channels: registry.clone(),
            config: config.conversations,
        })
        .await
        .map_err(|e| {
            ActorError::Unavailable(format!("cannot start the conversation manager: {e}"))
        })?;
        let http = reqwest::Client::builder()
            .timeout(config.connectors.request_timeout)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ActorError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
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
            channels,
        })
    }

    /// Stops connectors, then conversations, each after finishing what it has queued.
    pub async fn stop(&self, timeout: Duration) {
        self.channels.stop(timeout).await;
        let manager = self.conversations.manager();
        manager.drain_children();
        let _ = manager.stop_and_wait(None, Some(timeout)).await;
    }
}
