//! Memory per live conversation actor: seeds conversations straight into the store, then
//! activates every one of them (as a message to each would) and reads the process's
//! anonymous resident memory before and after. Also reports the activation rate.
//!
//! `CONFAB_BENCH_ACTORS` sets how many (default 100,000; the figure is 1,000,000,
//! which needs about 2 GB of disk for the seeded store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_actors::{ManagerConfig, Runtime, RuntimeConfig};
use confab_engine::catalogue::Ks;
use confab_engine::committer::{Committer, Durability, WriteSet};
use confab_engine::ids::{ChannelId, ContactId, ConversationId, WorkspaceId};
use confab_engine::model::{Contact, Conversation};
use confab_engine::store::{Store, StoreOptions};
use confab_engine::views;
use futures_util::StreamExt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 20_000;
/// Activations in flight at once.
const CONCURRENCY: usize = 512;

fn conversation(ws: WorkspaceId, channel: ChannelId, i: usize) -> Conversation {
    let mut conv: Conversation = serde_json::from_value(serde_json::json!({
        "id": ConversationId::new(), "workspace_id": ws, "channel_id": channel,
        "channel": "whatsapp", "external_thread": format!("5511{i:09}"),
        "contact": Contact {
            id: ContactId::new(),
            name: Some(format!("Lead {i}")),
            phone: Some(format!("+5511{i:09}")),
            ..Contact::default()
        },
        "status": "open", "assignee_id": null, "tags": [], "campaign": null,
        "unread_count": 1, "ai_mode": "active", "created_at": 0, "last_activity_at": 0,
        "preview": "Hi, is the offer still valid? I would like to book a call next week.",
        "last_inbound_at": null, "next_seq": 2
    }))
    .expect("conversation");
    conv.last_activity_at = 1_700_000_000_000 + i as i64;
    conv.created_at = conv.last_activity_at;
    conv
}

/// The process's anonymous resident memory (heap and stacks), in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("RssAnon")
        * 1024
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("CONFAB_BENCH_ACTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
    let (committer, _thread) =
        Committer::start(store.clone(), Durability::Buffered).expect("committer");
    let ws = WorkspaceId::new();
    let channel = ChannelId::new();
    let started = Instant::now();
    let ids: Vec<ConversationId> = rt.block_on(async {
        let mut ids = Vec::with_capacity(n);
        while ids.len() < n {
            let mut set = WriteSet::new();
            for _ in 0..BATCH.min(n - ids.len()) {
                let conv = conversation(ws, channel, ids.len());
                views::update(&mut set, None, &conv);
                set.put(Ks::ConvState, conv.id.to_bytes().to_vec(), &conv);
                ids.push(conv.id);
            }
            committer.commit(set).await.expect("commit");
        }
        ids
    });
    eprintln!("seeded {n} conversations in {:.1?}", started.elapsed());

    let config = RuntimeConfig {
        conversations: ManagerConfig {
            max_live: n + 1,
            idle_timeout: Duration::from_secs(24 * 3600),
            ..ManagerConfig::default()
        },
        ..RuntimeConfig::default()
    };
    let runtime = rt
        .block_on(Runtime::start(store, committer, config))
        .expect("actors");
    let conversations = Arc::new(runtime.conversations.clone());
    // Let the store's background work after seeding settle before the baseline.
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_anon();
    let started = Instant::now();
    rt.block_on(async {
        futures_util::stream::iter(ids.iter().copied())
            .map(|id| {
                let conversations = conversations.clone();
                async move { conversations.actor(id).await.map(|_| ()) }
            })
            .buffer_unordered(CONCURRENCY)
            .for_each(|activated| async move { activated.expect("activated") })
            .await;
    });
    let took = started.elapsed();
    let live = runtime.conversations.live_count();
    assert_eq!(live, n, "every conversation is live");
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_anon();
    let per_actor = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "live actors: {live}, activated in {took:.1?} ({:.0}/s); anonymous RSS {} MB -> {} MB: {:.0} bytes ({:.1} KiB) per live actor",
        n as f64 / took.as_secs_f64(),
        before / 1_000_000,
        after / 1_000_000,
        per_actor,
        per_actor / 1024.0,
    );
}
