//! The in-process ingest path: an inbound event routed to its conversation actor,
//! committed (fsync on, group commit) and its deltas published, measured in messages/s.
//!
//! Each iteration sends a burst of messages spread over many conversations concurrently
//! (as a busy webhook endpoint would) and waits until every one is acknowledged, i.e.
//! durable and published.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_actors::{ConversationMsg, InboundOutcome, Runtime, RuntimeConfig};
use confab_engine::committer::{Committer, DeltaListener, Durability};
use confab_engine::delta::Delta;
use confab_engine::ids::ChannelId;
use confab_engine::inbound::InboundEvent;
use confab_engine::store::{Store, StoreOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod shared;

struct Published(AtomicU64);

impl DeltaListener for Published {
    fn published(&self, deltas: &[Arc<Delta>]) {
        self.0.fetch_add(deltas.len() as u64, Ordering::Relaxed);
    }
}

fn event(channel: ChannelId, lead: usize, n: u64) -> InboundEvent {
    shared::inbound(
        channel,
        lead,
        n,
        "Hi, is the offer still valid? I would like to book a call next week.".into(),
    )
}

fn ingest(c: &mut Criterion) {
    const CONVERSATIONS: usize = 200;
    const BURST: usize = 2_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
    let (committer, _thread) =
        Committer::start(store.clone(), Durability::Fsync).expect("committer");
    let published = Arc::new(Published(AtomicU64::new(0)));
    committer.subscribe(published.clone());
    let runtime = rt
        .block_on(Runtime::start(store, committer, RuntimeConfig::default()))
        .expect("actors");
    let channel = shared::whatsapp_channel();
    // Create the conversations up front: the benchmark measures steady-state ingest.
    let conversations: Vec<_> = rt.block_on(async {
        let mut ids = Vec::new();
        for lead in 0..CONVERSATIONS {
            let outcome = runtime
                .conversations
                .inbound(channel.clone(), event(channel.id, lead, 0))
                .await
                .expect("routed")
                .await
                .expect("answered")
                .expect("conversation");
            let InboundOutcome::Stored(message) = outcome else {
                panic!("the first message of lead {lead} is new");
            };
            ids.push(message.conversation_id);
        }
        ids
    });

    let counter = AtomicU64::new(1);
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(BURST as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("inbound_event_to_published_delta_fsync", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                rt.block_on(async {
                    let mut waiting = Vec::with_capacity(BURST);
                    for i in 0..BURST {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let lead = i % CONVERSATIONS;
                        let ev = event(channel.id, lead, n);
                        let rx = runtime
                            .conversations
                            .submit(conversations[lead], |reply| {
                                ConversationMsg::Inbound(Box::new(ev), reply)
                            })
                            .await
                            .expect("queued");
                        waiting.push(rx);
                    }
                    for rx in waiting {
                        rx.await.expect("answered").expect("stored");
                    }
                });
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    eprintln!(
        "deltas published during the run: {}",
        published.0.load(Ordering::Relaxed)
    );
}

criterion_group!(benches, ingest);
criterion_main!(benches);
