//! `confab`: run the engine (`serve`), a self-contained demo (`demo`), rebuild the search
//! index offline (`reindex`), back a running server up (`backup`) and make a data
//! directory from a backup (`restore`).

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
    /// Back a running server up, online: it writes a consistent copy of its store into
    /// DIR (on its own machine) while traffic goes on.
    Backup(BackupArgs),
    /// Make a new data directory from a backup, after verifying every checksum.
    Restore(RestoreArgs),
}

#[derive(Args)]
struct BackupArgs {
    /// Directory for the backup: absent or empty, on the server's machine.
    #[arg(long)]
    to: PathBuf,
    /// The running server.
    #[arg(long, env = "CONFAB_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's admin token.
    #[arg(long, env = "CONFAB_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

#[derive(Args)]
struct RestoreArgs {
    /// The backup's directory (the one holding manifest.json).
    #[arg(long)]
    from: PathBuf,
    /// The data directory to create (absent or empty); start `confab serve` on it.
    #[arg(long)]
    data_dir: PathBuf,
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
            Command::Backup(args) => backup(args).await,
            Command::Restore(args) => {
                let from = std::path::absolute(&args.from)?;
                let data_dir = std::path::absolute(&args.data_dir)?;
                let manifest = {
                    let data_dir = data_dir.clone();
                    tokio::task::spawn_blocking(move || {
                        confab_engine::backup::restore(&from, &data_dir)
                    })
                    .await??
                };
                println!(
                    "restored {} records up to delta offset {} (backup of {} by Confab {}) into {}; the search index is rebuilt when `confab serve` first starts on it",
                    manifest.records(),
                    manifest.delta_head,
                    manifest.created_at,
                    manifest.confab_version,
                    data_dir.display()
                );
                Ok(())
            }
        }
    })
}

/// `confab backup`: asks the running server for a backup into `--to`.
async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let to = std::path::absolute(&args.to)?;
    let url = format!("{}/api/v1/admin/backups", args.url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&args.admin_token)
        .json(&serde_json::json!({ "to": to }))
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {}", args.url))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("unreadable answer from {url} ({status})"))?;
    if !status.is_success() {
        anyhow::bail!(
            "the backup failed ({status}): {}",
            body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given")
        );
    }
    println!(
        "backup written to {}: {} records, {} bytes, every delta up to offset {} (taken {}, {:.1} s)",
        to.display(),
        body["records"],
        body["bytes"],
        body["delta_head"],
        body["created_at"].as_str().unwrap_or("?"),
        body["seconds"].as_f64().unwrap_or(0.0)
    );
    Ok(())
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
