//! Booting and stopping the engine: store, committer, actors, HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::{Listener, ListenerExt};
use axum::Router;
use confab_actors::notify::email::EmailRelay;
use confab_actors::notify::push::PushSettings;
use confab_actors::notify::NotifySettings;
use confab_actors::{
    ConnectorSettings, IndexerConfig, ManagerConfig, Runtime, RuntimeConfig, SharedClock,
    SystemClock,
};
use confab_engine::committer::Committer;
use confab_engine::model::{ChannelKind, MailSecurity, MailServer};
use confab_engine::store::{Store, StoreOptions};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::app::{metrics_router, router, App, AppState};
use crate::auth::TokenCache;
use crate::config::Config;
use crate::stream::{Hub, Tickets};

/// How long shutdown waits for actors to finish their queues, and for HTTP requests in
/// flight to be answered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the poison watcher looks at the committer.
const POISON_CHECK_EVERY: Duration = Duration::from_millis(100);

/// A running server. Dropping it does not stop it: call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    app: AppState,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served when it has its own listener (`metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// Stops accepting, finishes in-flight work, makes everything durable.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Runs until the server stops on its own (it only does on a fatal error: the store
    /// poisoned, then an `Err` after `poisoned_exit_grace_secs`) or `signal` resolves, then
    /// shuts down gracefully.
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

fn runtime_config(
    config: &Config,
    clock: SharedClock,
    addr: SocketAddr,
) -> anyhow::Result<RuntimeConfig> {
    Ok(RuntimeConfig {
        conversations: ManagerConfig {
            idle_timeout: Duration::from_secs(config.conversations.idle_timeout_secs.max(1)),
            max_live: config.conversations.max_live.max(1),
            restart_budget: config.conversations.restart_budget,
            restart_window: Duration::from_secs(config.conversations.restart_window_secs.max(1)),
        },
        connectors: ConnectorSettings {
            max_send_attempts: config.whatsapp.max_send_attempts.max(1),
            per_second: [(
                ChannelKind::Whatsapp,
                config.whatsapp.messages_per_second.max(1),
            )]
            .into(),
            retry_base: Duration::from_millis(config.channels.retry_base_ms.max(1)),
            retry_max: Duration::from_millis(config.channels.retry_max_ms.max(1)),
            clock,
            mailbox: confab_actors::channels::imap::MailboxSettings {
                poll_interval: Duration::from_secs(config.email.poll_interval_secs.max(1)),
                idle_timeout: Duration::from_secs(config.email.idle_timeout_secs.max(1)),
                max_message_bytes: config.email.max_message_bytes,
                first_sync_days: config.email.first_sync_days,
                backoff: Duration::from_millis(config.email.reconnect_ms.max(1)),
                max_backoff: Duration::from_secs(config.email.max_backoff_secs.max(1)),
            },
            repair: confab_actors::channels::linkedin::RepairSettings {
                interval: Duration::from_secs(config.linkedin.repair_interval_secs.max(1)),
                overlap: Duration::from_secs(config.linkedin.repair_overlap_secs),
                ..Default::default()
            },
            ..ConnectorSettings::default()
        },
        indexer: Some(indexer_config(config)),
        ai: confab_actors::ai::AiSettings {
            concurrency: config.ai.concurrency.max(1),
            queue_depth: config.ai.queue_depth.max(1),
            backend_timeout: Duration::from_millis(config.ai.backend_timeout_ms.max(1)),
            backend_attempts: config.ai.backend_attempts.max(1),
            allow_private_backends: config.ai.allow_private_backends,
            max_decisions_per_second: config.ai.max_decisions_per_second,
        },
        notify: notify_settings(config, addr)?,
    })
}

/// How notifications leave: the mail relay (checked: no plain SMTP off loopback unless
/// `email.allow_insecure`), Web Push, links.
fn notify_settings(config: &Config, addr: SocketAddr) -> anyhow::Result<NotifySettings> {
    let n = &config.notifications;
    let email = match &n.email {
        None => None,
        Some(relay) => {
            let loopback = relay.host == "localhost"
                || relay
                    .host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if relay.security == MailSecurity::None && !loopback && !config.email.allow_insecure {
                anyhow::bail!(
                    "notifications.email: `security = \"none\"` sends the relay's password in clear; it is allowed on loopback only, unless email.allow_insecure is set"
                );
            }
            Some(EmailRelay {
                server: MailServer {
                    host: relay.host.clone(),
                    port: relay.port,
                    security: relay.security,
                    username: relay.username.clone(),
                    password: relay.password.clone(),
                    mailbox: None,
                },
                from: relay.from.clone(),
                batch: Duration::from_secs(relay.batch_secs),
            })
        }
    };
    Ok(NotifySettings {
        email,
        push: PushSettings {
            subject: n.push_subject.clone(),
            ttl: Duration::from_secs(n.push_ttl_secs.max(60)),
            allow_private: n.allow_private_push,
        },
        public_url: n
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
        tick: Duration::from_millis(n.tick_ms.max(10)),
    })
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
    start_with_clock(config, listener, Arc::new(SystemClock)).await
}

/// Like [`start_on`], with the clock the channels' daily budgets count days by (tests
/// drive a manual one instead of waiting for midnight).
pub async fn start_with_clock(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
) -> anyhow::Result<Server> {
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (metrics_listen)"))?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
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
    let retention_clock = clock.clone();
    let runtime = Runtime::start(
        store.clone(),
        committer.clone(),
        runtime_config(&config, clock, addr)?,
    )
    .await
    .context("cannot start the actors")?;
    // Erasures a previous run did not finish go on now.
    let resumed = runtime
        .resume_erasures(store.clone(), committer.clone())
        .await
        .context("cannot read the open erasures")?;
    if resumed > 0 {
        tracing::info!(erasures = resumed, "resuming erasures");
    }

    let (stop, stopped) = watch::channel(false);
    let app: AppState = Arc::new(App {
        config,
        store,
        committer,
        runtime,
        hub,
        tickets: Tickets::default(),
        tokens: TokenCache::default(),
        sessions: crate::auth::SessionCache::default(),
        logins: crate::routes::auth::LoginLimits::new(),
        canned_writes: tokio::sync::Mutex::new(()),
        webhook_writes: tokio::sync::Mutex::new(()),
        webhook_edits: tokio::sync::Notify::new(),
        webhook_wakes: Default::default(),
        merges: tokio::sync::Mutex::new(()),
        shutting_down: stop.subscribe(),
    });
    crate::stream::spawn_pruner(app.clone());
    crate::webhooks::spawn(app.clone());
    app.runtime.spawn_retention(
        app.store.clone(),
        app.committer.clone(),
        confab_actors::retention::RetentionSettings {
            interval: Duration::from_secs(app.config.retention.interval_secs.max(1)),
            archive_dir: app
                .config
                .retention
                .archive_dir
                .clone()
                .unwrap_or_else(|| app.config.data_dir.join("archive")),
            clock: retention_clock,
            audit_days: app.config.retention.audit_days,
        },
        app.shutting_down.clone(),
    );
    let fatal = spawn_poison_watcher(app.clone(), stop.clone());

    let serve_app = app.clone();
    let task = tokio::spawn(async move {
        let http = Arc::new(crate::edge::http1_builder(&serve_app.config.http));
        let main = serve_http(
            listener,
            router(serve_app.clone()),
            http.clone(),
            stopped.clone(),
        );
        match metrics_listener {
            Some(metrics_listener) => {
                let metrics = serve_http(
                    metrics_listener,
                    metrics_router(serve_app.clone()),
                    http,
                    stopped,
                );
                tokio::join!(main, metrics);
            }
            None => main.await,
        }
        // HTTP is drained: let the actors finish, then make everything durable.
        serve_app.runtime.stop(DRAIN_TIMEOUT).await;
        serve_app.committer.close();
        tokio::task::spawn_blocking(move || committer_thread.join()).await?;
        tracing::info!("stopped");
        match fatal.borrow().clone() {
            Some(reason) => Err(anyhow::anyhow!(
                "stopped because the store is poisoned: {reason}"
            )),
            None => Ok(()),
        }
    });
    tracing::info!(%addr, "confab is listening");
    if let Some(metrics_addr) = metrics_addr {
        tracing::info!(metrics = %metrics_addr, "/metrics is served on its own listener");
    }
    Ok(Server {
        addr,
        metrics_addr,
        app,
        stop,
        task,
    })
}

/// Watches the committer: once the store is poisoned it logs why, leaves `/readyz`
/// reporting it for `poisoned_exit_grace_secs`, then stops the server, which then ends with
/// an error (so that the process exits non-zero and its supervisor restarts it). The
/// returned channel holds the reason once it has.
fn spawn_poison_watcher(
    app: AppState,
    stop: watch::Sender<bool>,
) -> watch::Receiver<Option<String>> {
    let (fatal, reason) = watch::channel(None);
    let grace = Duration::from_secs(app.config.poisoned_exit_grace_secs);
    let mut stopping = app.shutting_down.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(POISON_CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            if app.committer.is_poisoned() {
                break;
            }
        }
        let reason = app
            .committer
            .poison_reason()
            .unwrap_or_else(|| "unknown".to_string());
        tracing::error!(
            %reason,
            grace_secs = grace.as_secs(),
            "the store is poisoned and refuses writes; stopping after the grace period so that a supervisor restarts the engine"
        );
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            // Stopping anyway (a signal): still report the poison as the outcome.
            _ = stopping.wait_for(|stop| *stop) => {}
        }
        let _ = fatal.send(Some(reason));
        let _ = stop.send(true);
    });
    reason
}

/// Serves HTTP/1 on `listener` with our connection settings until `stop` turns true,
/// then stops accepting and lets the open connections finish their requests, for at most
/// [`DRAIN_TIMEOUT`]. (Upgraded WebSocket sessions are not connections any more: they
/// watch the same signal themselves.)
async fn serve_http(
    listener: TcpListener,
    router: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
    mut stop: watch::Receiver<bool>,
) {
    // Small frames (deltas, acks) must leave at once, not wait for Nagle's algorithm.
    let mut listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let mut connections = JoinSet::new();
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|stop| *stop) => {}
            }
            // Finish the request in flight, then close (idle connections close at once).
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "HTTP requests still in flight after the drain timeout are dropped"
        );
        connections.shutdown().await;
    }
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
