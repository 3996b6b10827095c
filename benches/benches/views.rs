//! The cost of one inbox page (limit 50) with 1,000 and with 1,000,000 conversations in the
//! workspace: the view indexes must make both the same.
//!
//! Seeding writes `WriteSet`s directly (conversation state + `views::update`), in big
//! batches with `Durability::Buffered`. The mix: 80 % not closed; 60 % assigned over 10
//! agents; WhatsApp 70 %, email 20 %, LinkedIn 10 %; AI active 70 %, paused 20 %, manual
//! 10 %; tag `common` on 30 %, tag `mid` on 1 %, tag `rare` on exactly 50 conversations.

use std::time::Duration;

use confab_engine::catalogue::Ks;
use confab_engine::committer::{Committer, Durability, WriteSet};
use confab_engine::ids::{AgentId, ChannelId, ContactId, ConversationId, WorkspaceId};
use confab_engine::model::{AiMode, ChannelKind, Contact, Conversation, Status};
use confab_engine::store::{Store, StoreOptions};
use confab_engine::views::{self, Filter, View};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const BATCH: usize = 20_000;
const RARE: usize = 50;

fn conversation(ws: WorkspaceId, agents: &[AgentId], i: usize, n: usize) -> Conversation {
    // A cheap scramble so that attributes do not line up with time.
    let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
    let pick = |modulo: u64, salt: u64| ((h ^ salt.wrapping_mul(0x2545_f491)) % modulo) as usize;
    let mut tags = Vec::new();
    if pick(10, 1) < 3 {
        tags.push("common".to_string());
    }
    if pick(100, 2) == 0 {
        tags.push("mid".to_string());
    }
    let every = (n / RARE).max(1);
    if i.is_multiple_of(every) && i / every < RARE {
        tags.push("rare".to_string());
    }
    let mut conv: Conversation = serde_json::from_value(serde_json::json!({
        "id": ConversationId::new(), "workspace_id": ws, "channel_id": ChannelId::new(),
        "channel": "whatsapp", "external_thread": format!("{i}"),
        "contact": Contact { id: ContactId::new(), name: Some(format!("Lead {i}")), ..Contact::default() },
        "status": "open", "assignee_id": null, "tags": [], "campaign": null,
        "unread_count": 1, "ai_mode": "active", "created_at": 0, "last_activity_at": 0,
        "preview": "Hi, is the offer still valid?", "last_inbound_at": null, "next_seq": 2
    }))
    .expect("conversation");
    conv.channel = [ChannelKind::Whatsapp; 7]
        .into_iter()
        .chain([ChannelKind::Email; 2])
        .chain([ChannelKind::Linkedin])
        .nth(pick(10, 3))
        .unwrap_or(ChannelKind::Whatsapp);
    conv.ai_mode = match pick(10, 4) {
        0..=6 => AiMode::Active,
        7 | 8 => AiMode::Paused,
        _ => AiMode::Manual,
    };
    conv.status = match pick(10, 5) {
        0..=5 => Status::Open,
        6 | 7 => Status::Pending,
        _ => Status::Closed,
    };
    conv.assignee_id = (pick(10, 6) < 6).then(|| agents[pick(agents.len() as u64, 7)]);
    conv.tags = tags;
    conv.last_activity_at = 1_700_000_000_000 + i as i64 * 1_000;
    conv.created_at = conv.last_activity_at;
    conv
}

struct Seeded {
    store: Store,
    ws: WorkspaceId,
    me: AgentId,
    _dir: tempfile::TempDir,
}

fn seed(rt: &tokio::runtime::Runtime, n: usize) -> Seeded {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
    let (committer, thread) =
        Committer::start(store.clone(), Durability::Buffered).expect("committer");
    let ws = WorkspaceId::new();
    let agents: Vec<AgentId> = (0..10).map(|_| AgentId::new()).collect();
    let started = std::time::Instant::now();
    rt.block_on(async {
        let mut i = 0;
        while i < n {
            let mut set = WriteSet::new();
            for _ in 0..BATCH.min(n - i) {
                let conv = conversation(ws, &agents, i, n);
                views::update(&mut set, None, &conv);
                set.put(Ks::ConvState, conv.id.to_bytes().to_vec(), &conv);
                i += 1;
            }
            committer.commit(set).await.expect("commit");
        }
    });
    drop(committer);
    thread.join();
    eprintln!("seeded {n} conversations in {:.1?}", started.elapsed());
    Seeded {
        store,
        ws,
        me: agents[0],
        _dir: dir,
    }
}

fn cases() -> Vec<(&'static str, Filter)> {
    let tag = |t: &str| Filter {
        tags: vec![t.to_string()],
        ..Filter::default()
    };
    vec![
        ("view=all", Filter::default()),
        (
            "view=mine",
            Filter {
                view: View::Mine,
                ..Filter::default()
            },
        ),
        ("tag=rare", tag("rare")),
        ("tag=common", tag("common")),
        ("tag=mid", tag("mid")),
        (
            "channel=email&mode=manual",
            Filter {
                channel: Some(ChannelKind::Email),
                mode: Some(AiMode::Manual),
                ..Filter::default()
            },
        ),
    ]
}

fn pages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("views_page");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [1_000, 1_000_000] {
        let seeded = seed(&rt, n);
        let store = &seeded.store;
        for (name, filter) in cases() {
            let run = || {
                // A first page: a fresh listing snapshot, as the API takes.
                let (listing, snap) = store.listings().begin(store);
                let page = views::page(store, &snap, seeded.ws, seeded.me, &filter, None, 50)
                    .expect("page");
                store.listings().end(listing);
                page
            };
            let page = run();
            eprintln!(
                "{name} at {n}: {} items, plan {:?}, {} entries read",
                page.items.len(),
                page.plan,
                page.read
            );
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| b.iter(run));
        }
    }
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
