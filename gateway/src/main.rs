//! `confab`: run the engine (`serve`), a self-contained demo (`demo`), or rebuild the
//! search index offline (`reindex`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use confab_gateway::Config;

/// glibc's malloc spent ~20 % of the server's CPU under load (many small, short-lived
/// allocations across threads); mimalloc's thread-local free lists cut that down.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "confab",
    version,
    about = "Confab: a realtime message engine for a unified lead inbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine.
    Serve(ServerArgs),
    /// Run the engine with a seeded demo workspace, a sandbox WhatsApp provider and
    /// simulated leads writing in through the real webhook path.
    Demo(ServerArgs),
    /// Rebuild the search index from the store (offline: stop the server first).
    Reindex(ServerArgs),
}

#[derive(Args)]
struct ServerArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:8080; env CONFAB_LISTEN).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (default ./confab-data; env CONFAB_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ServerArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env()?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn,tantivy=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let config = args.config()?;
                if config.admin_token.is_none() {
                    tracing::warn!("CONFAB_ADMIN_TOKEN is not set: admin routes are disabled");
                }
                let server = confab_gateway::start(config).await?;
                server.run_until(shutdown_signal()).await
            }
            Command::Demo(args) => {
                confab_gateway::demo::run(args.config()?, shutdown_signal()).await
            }
            Command::Reindex(args) => {
                let config = args.config()?;
                let started = std::time::Instant::now();
                let documents =
                    tokio::task::spawn_blocking(move || confab_gateway::server::reindex(&config))
                        .await??;
                tracing::info!(
                    documents,
                    seconds = started.elapsed().as_secs_f64(),
                    "search index rebuilt"
                );
                println!("reindexed {documents} documents");
                Ok(())
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
