//! Booting and stopping the engine: store, committer, actors, HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use confab_actors::{ConnectorSettings, IndexerConfig, ManagerConfig, Runtime, RuntimeConfig};
use confab_engine::committer::Committer;
use confab_engine::store::{Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{router, App, AppState};
use crate::auth::TokenCache;
use crate::config::Config;
use crate::stream::{Hub, Tickets};

/// How long shutdown waits for actors to finish their queues.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server. Dropping it does not stop it: call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    app: AppState,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// Stops accepting, finishes in-flight work, makes everything durable.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Runs until the server stops on its own (it only does on a fatal error) or
    /// `signal` resolves, then shuts down gracefully.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let stop = self.stop.clone();
        let mut task = self.task;
        tokio::select! {
            result = &mut task => return result.context("server task panicked")?,
            () = signal => {}
        }
        let _ = stop.send(true);
        task.await.context("server task panicked")?
    }
}

fn runtime_config(config: &Config) -> RuntimeConfig {
    RuntimeConfig {
        conversations: ManagerConfig {
            idle_timeout: Duration::from_secs(config.conversations.idle_timeout_secs.max(1)),
            max_live: config.conversations.max_live.max(1),
            restart_budget: config.conversations.restart_budget,
            restart_window: Duration::from_secs(config.conversations.restart_window_secs.max(1)),
        },
        connectors: ConnectorSettings {
            max_send_attempts: config.whatsapp.max_send_attempts.max(1),
            whatsapp_per_second: config.whatsapp.messages_per_second.max(1),
            ..ConnectorSettings::default()
        },
        indexer: Some(indexer_config(config)),
    }
}

/// The search indexer's settings: the index lives in `<data_dir>/index`.
pub fn indexer_config(config: &Config) -> IndexerConfig {
    let search = &config.search;
    IndexerConfig {
        commit_interval: Duration::from_millis(search.commit_interval_ms.max(1)),
        commit_docs: search.commit_docs.max(1),
        writer: confab_index::WriterOptions {
            threads: search.writer_threads.max(1),
            memory_bytes: search.writer_memory_mb.max(16) * 1024 * 1024,
        },
        ..IndexerConfig::new(config.data_dir.join("index"))
    }
}

/// Opens the store, starts the committer and actors, binds `config.listen` and serves.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    start_on(config, listener).await
}

/// Like [`start`], on an already bound listener (tests bind port 0).
pub async fn start_on(config: Config, listener: TcpListener) -> anyhow::Result<Server> {
    let addr = listener.local_addr()?;
    // Install the metrics recorder before anything records.
    crate::routes::health::prometheus();
    let options = StoreOptions {
        cache_bytes: config.cache_mb.max(1) * 1024 * 1024,
    };
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, &options))
        .await?
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let (committer, committer_thread) = Committer::start(store.clone(), config.durability)?;
    let hub = Hub::new(config.stream.clone());
    // Encoding and fan-out run off the committer's thread.
    committer.subscribe(crate::stream::FanoutThread::start(hub.clone())?);
    let runtime = Runtime::start(store.clone(), committer.clone(), runtime_config(&config))
        .await
        .context("cannot start the actors")?;

    let (stop, mut stopped) = watch::channel(false);
    let app: AppState = Arc::new(App {
        config,
        store,
        committer,
        runtime,
        hub,
        tickets: Tickets::default(),
        tokens: TokenCache::default(),
        shutting_down: stop.subscribe(),
    });
    crate::stream::spawn_pruner(app.clone());

    let serve_app = app.clone();
    let task = tokio::spawn(async move {
        let service = router(serve_app.clone());
        // Small frames (deltas, acks) must leave at once, not wait for Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await;
        // HTTP is drained: let the actors finish, then make everything durable.
        serve_app.runtime.stop(DRAIN_TIMEOUT).await;
        serve_app.committer.close();
        tokio::task::spawn_blocking(move || committer_thread.join()).await?;
        tracing::info!("stopped");
        served.context("HTTP server failed")
    });
    tracing::info!(%addr, "confab is listening");
    Ok(Server {
        addr,
        app,
        stop,
        task,
    })
}

/// `confab reindex`: rebuilds the search index in `<data_dir>/index` from the store, offline
/// (the server must not be running). Returns the documents written. Blocking.
pub fn reindex(config: &Config) -> anyhow::Result<u64> {
    let options = StoreOptions {
        cache_bytes: config.cache_mb.max(1) * 1024 * 1024,
    };
    let store = Store::open(&config.data_dir, &options)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let indexer = indexer_config(config);
    let index = confab_index::SearchIndex::open(&indexer.dir)
        .with_context(|| format!("cannot open the index in {}", indexer.dir.display()))?;
    let documents = confab_index::reindex(&index, &store, indexer.writer)
        .context("rebuilding the search index failed")?;
    Ok(documents)
}
