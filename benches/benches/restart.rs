//! Restart to ready with a large store: the real `confab` binary started on a data
//! directory holding N messages, timed from the process's start until `/readyz` answers
//! 200 (the store, the search index and the actors are open by then), with the process's
//! resident memory once ready.
//!
//! The data directory is seeded once through the real server (in this process: webhooks'
//! inbound events routed to conversation actors, committed, indexed) and kept for later
//! runs, as `target/bench-data/restart-N` (or `CONFAB_BENCH_DATA_DIR`); it is not
//! committed. `CONFAB_BENCH_MESSAGES` sets N (default 1,000,000; the figure is
//! 10,000,000, ~20 minutes to seed and ~25 GB of disk). The binary is
//! `target/release/confab` (or `CONFAB_BIN`): build it first with `cargo build --release
//! -p confab-gateway`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confab_engine::committer::Durability;
use confab_engine::ids::ChannelId;
use confab_engine::inbound::InboundEvent;
use confab_gateway::config::Config;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod shared;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Messages per conversation.
const PER_CONVERSATION: usize = 100;
/// Inbound events in flight while seeding.
const IN_FLIGHT: usize = 2_000;
const ADMIN_TOKEN: &str = "bench";

const WORDS: [&str; 24] = [
    "offer",
    "price",
    "call",
    "meeting",
    "week",
    "demo",
    "contract",
    "discount",
    "team",
    "invoice",
    "trial",
    "budget",
    "monday",
    "friday",
    "proposal",
    "question",
    "support",
    "upgrade",
    "renewal",
    "schedule",
    "thanks",
    "interested",
    "details",
    "available",
];

fn event(channel: ChannelId, n: usize, lead: usize, rng: &mut StdRng) -> InboundEvent {
    let text: Vec<&str> = (0..rng.gen_range(6..20))
        .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
        .collect();
    shared::inbound(channel, lead, n as u64, text.join(" "))
}

fn config(data_dir: &Path) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        admin_token: Some(ADMIN_TOKEN.into()),
        // Seeding only: what the bench measures is the restart, not these writes.
        durability: Durability::Buffered,
        ..Config::default()
    }
}

/// Sends `messages` inbound events through a server on `data_dir`, then stops it.
fn seed(data_dir: &Path, messages: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = confab_gateway::server::start_on(config(data_dir), listener)
            .await
            .expect("server");
        let channel = shared::whatsapp_channel();
        let conversations = server.app().runtime.conversations.clone();
        let started = Instant::now();
        let mut rng = StdRng::seed_from_u64(16);
        // The first message of each lead creates its conversation; the rest are spread
        // over them in turn.
        let leads = (messages / PER_CONVERSATION).max(1);
        let events: Vec<usize> = (0..messages).collect();
        let mut done = 0usize;
        for chunk in events.chunks(100_000) {
            let batch: Vec<InboundEvent> = chunk
                .iter()
                .map(|&n| event(channel.id, n, n % leads, &mut rng))
                .collect();
            futures_util::stream::iter(batch)
                .map(|ev| {
                    let conversations = conversations.clone();
                    let channel = channel.clone();
                    async move {
                        conversations
                            .inbound(channel, ev)
                            .await
                            .expect("routed")
                            .await
                            .expect("answered")
                            .expect("stored");
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .for_each(|()| async {})
                .await;
            done += chunk.len();
            if done.is_multiple_of(1_000_000) || done == messages {
                eprintln!(
                    "seeded {done} messages in {:.0?} ({:.0}/s)",
                    started.elapsed(),
                    done as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        // Let the index catch up before stopping, so the restart does not index.
        let search = server.app().runtime.search.clone().expect("search");
        let head = server.app().committer.durable_head();
        let deadline = Instant::now() + Duration::from_secs(3_600);
        while search.committed_offset().ok().flatten().unwrap_or(0) < head {
            assert!(Instant::now() < deadline, "the index did not catch up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        server.shutdown().await.expect("shutdown");
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn rss_mb(child: &Child) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// Polls `url` until it answers 200, or panics at the deadline.
async fn wait_ready(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let messages: usize = std::env::var("CONFAB_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let data_dir = std::env::var_os("CONFAB_BENCH_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(format!("target/bench-data/restart-{messages}")));
    let binary = std::env::var_os("CONFAB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/confab"));
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release -p confab-gateway",
        binary.display()
    );
    let marker = data_dir.join("seeded-by-bench");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).expect("data dir");
        eprintln!("seeding {messages} messages into {}", data_dir.display());
        seed(&data_dir, messages);
        std::fs::write(&marker, messages.to_string()).expect("marker");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::new();
    for run in 1..=3 {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let mut child = Command::new(&binary)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&data_dir)
            .env("CONFAB_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("confab starts");
        rt.block_on(wait_ready(&http, &format!("{base}/readyz")));
        let ready = started.elapsed();
        let rss_ready = rss_mb(&child);
        println!(
            "restart {run}: {messages} messages stored ({:.1} GB on disk): ready (store, search index and actors open, /readyz 200) in {} ms, RSS {rss_ready} MB",
            dir_bytes(&data_dir) as f64 / 1e9,
            ready.as_millis(),
        );
        // A clean stop, as an operator's restart would.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
