//! Search at scale: indexing throughput over 1M generated messages, search latency
//! (p50/p99) for term, AND, phrase and prefix queries on that index, and freshness (from
//! a durable commit to searchable) through the real indexer actor.
//!
//! `CONFAB_SEARCH_BENCH_MESSAGES` changes the corpus size (default 1,000,000).

use std::time::{Duration, Instant};

use confab_actors::indexer::{Indexer, IndexerArgs, IndexerConfig};
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::{Committer, Durability, WriteSet};
use confab_engine::delta::{Delta, DeltaBody};
use confab_engine::ids::{ConversationId, MessageId, WorkspaceId};
use confab_engine::model::{ChannelKind, Direction, Message, Sender};
use confab_engine::store::{Store, StoreOptions};
use confab_index::search::MAX_DEPTH;
use confab_index::{ParsedQuery, SearchIndex, SearchRequest, Writer, WriterOptions};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VOCABULARY: usize = 20_000;
const CONVERSATIONS: usize = 50_000;

/// Pseudo-words from syllables: `kapo`, `tremiba`, …, deterministic.
fn vocabulary() -> Vec<String> {
    const ONSETS: [&str; 16] = [
        "b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "tr", "pl",
    ];
    const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];
    let mut rng = StdRng::seed_from_u64(7);
    let mut words = std::collections::BTreeSet::new();
    while words.len() < VOCABULARY {
        let syllables = rng.gen_range(2..=4);
        let word: String = (0..syllables)
            .map(|_| {
                format!(
                    "{}{}",
                    ONSETS[rng.gen_range(0..ONSETS.len())],
                    VOWELS[rng.gen_range(0..VOWELS.len())]
                )
            })
            .collect();
        words.insert(word);
    }
    let mut words: Vec<String> = words.into_iter().collect();
    // Shuffle so rank (frequency) is unrelated to spelling.
    for i in (1..words.len()).rev() {
        let j = rng.gen_range(0..=i);
        words.swap(i, j);
    }
    words
}

/// A Zipf-like rank: low ranks are frequent.
fn rank(rng: &mut StdRng) -> usize {
    let u: f64 = rng.gen();
    ((u * u * u) * VOCABULARY as f64) as usize % VOCABULARY
}

fn message(conversation_id: ConversationId, seq: u64, text: String, at: i64) -> Message {
    Message {
        id: MessageId::new(),
        conversation_id,
        seq,
        direction: Direction::Inbound,
        sender: Sender::Lead,
        agent_id: None,
        text,
        internal: false,
        channel: ChannelKind::Whatsapp,
        created_at: at,
        delivery: None,
        external_id: None,
        content_type: None,
        reply_to: None,
        error: None,
        raw: None,
        ai: None,
        attachments: Vec::new(),
        subject: None,
        full_text: None,
        auto_reply: false,
        sent_elsewhere: false,
        reactions: Vec::new(),
        edits: Vec::new(),
        deleted_at: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "search/{what}: p50 {:.2} ms, p99 {:.2} ms ({} samples)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );
}

struct Corpus {
    _dir: tempfile::TempDir,
    index: SearchIndex,
    workspace: WorkspaceId,
    words: Vec<String>,
    /// Adjacent word pairs that occur in the corpus.
    pairs: Vec<(String, String)>,
}

fn build(messages: usize) -> Corpus {
    let words = vocabulary();
    let dir = tempfile::tempdir().expect("temp dir");
    let index = SearchIndex::open(&dir.path().join("index")).expect("index");
    let mut writer = Writer::open(
        &index,
        WriterOptions {
            threads: 2,
            memory_bytes: 256 * 1024 * 1024,
        },
    )
    .expect("writer");
    let mut rng = StdRng::seed_from_u64(42);
    // 90% of the messages in the workspace searched, 10% in another one.
    let workspace = WorkspaceId::new();
    let other = WorkspaceId::new();
    let conversations: Vec<ConversationId> =
        (0..CONVERSATIONS).map(|_| ConversationId::new()).collect();
    let mut seqs = vec![0u64; CONVERSATIONS];
    let mut pairs = Vec::new();
    let started = Instant::now();
    for offset in 1..=messages as u64 {
        let c = rng.gen_range(0..CONVERSATIONS);
        seqs[c] += 1;
        let length = rng.gen_range(6..=16);
        let picked: Vec<&str> = (0..length)
            .map(|_| words[rank(&mut rng)].as_str())
            .collect();
        if pairs.len() < 1_000 && offset % 97 == 0 {
            pairs.push((picked[0].to_string(), picked[1].to_string()));
        }
        let ws = if c % 10 == 0 { other } else { workspace };
        let delta = Delta {
            offset,
            workspace_id: ws,
            conversation_id: Some(conversations[c]),
            at: offset as i64,
            body: DeltaBody::MessageCreated(message(
                conversations[c],
                seqs[c],
                picked.join(" "),
                1_700_000_000_000 + offset as i64,
            )),
        };
        writer.apply(&delta);
        if offset % 200_000 == 0 {
            writer.commit().expect("commit");
        }
    }
    writer.commit().expect("commit");
    let elapsed = started.elapsed();
    writer.close().expect("close");
    index.reload().expect("reload");
    println!(
        "search/indexing: {messages} messages in {:.1} s = {:.0} messages/s (2 threads, 256 MiB; \
         generation included)",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64()
    );
    Corpus {
        _dir: dir,
        index,
        workspace,
        words,
        pairs,
    }
}

fn request(corpus: &Corpus, q: &str) -> SearchRequest {
    SearchRequest {
        workspace: corpus.workspace,
        query: ParsedQuery::parse(q).expect("query"),
        channel: None,
        intent: None,
        since: None,
        conversation: None,
        offset: 0,
        limit: 20,
    }
}

fn run(corpus: &Corpus, q: &str) -> usize {
    corpus
        .index
        .search(&request(corpus, q), MAX_DEPTH, |_| Ok(Some(())))
        .expect("search")
        .items
        .len()
}

/// Queries of one kind, drawn at random (mid-frequency words: common enough to match
/// thousands of messages, as real searches do).
fn queries(corpus: &Corpus, kind: &str, n: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(kind.len() as u64);
    let mid = |rng: &mut StdRng| corpus.words[rng.gen_range(50..2_000)].clone();
    (0..n)
        .map(|i| match kind {
            "term" => mid(&mut rng),
            "and" => format!("{} {}", corpus.words[rng.gen_range(0..50)], mid(&mut rng)),
            "phrase" => {
                let (a, b) = &corpus.pairs[i % corpus.pairs.len()];
                format!("\"{a} {b}\"")
            }
            _ => {
                let word = mid(&mut rng);
                format!("{}*", word.chars().take(3).collect::<String>())
            }
        })
        .collect()
}

/// Durable commit → searchable, through the committer and the indexer actor.
fn freshness(samples: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
    let (committer, _thread) =
        Committer::start(store.clone(), Durability::Fsync).expect("committer");
    let index = SearchIndex::open(&dir.path().join("index")).expect("index");
    let conversation = ConversationId::new();
    let waits = rt.block_on(async {
        let (workspace, set) = confab_engine::admin::new_workspace("Bench");
        committer.commit(set).await.expect("workspace");
        let workspace = workspace.id;
        let indexer = Indexer::start(IndexerArgs {
            store,
            committer: committer.clone(),
            index: index.clone(),
            config: IndexerConfig::new(dir.path().join("index")),
        })
        .await
        .expect("indexer");
        let mut waits = Vec::with_capacity(samples);
        for seq in 1..=samples as u64 {
            let word = format!("fresh{seq}x{}", seq * 7919);
            let m = message(conversation, seq, format!("{word} arrived"), seq as i64);
            let mut set = WriteSet::new();
            set.put(Ks::ConvMsg, catalogue::conv_msg(conversation, seq), &m)
                .delta(workspace, conversation, DeltaBody::MessageCreated(m));
            committer.commit(set).await.expect("commit");
            let acknowledged = Instant::now();
            let request = SearchRequest {
                workspace,
                query: ParsedQuery::parse(&word).expect("query"),
                channel: None,
                intent: None,
                since: None,
                conversation: None,
                offset: 0,
                limit: 1,
            };
            loop {
                let index = index.clone();
                let request = request.clone();
                let found = tokio::task::spawn_blocking(move || {
                    index
                        .search(&request, 10, |_| Ok(Some(())))
                        .map(|p| p.items.len())
                })
                .await
                .expect("task")
                .expect("search");
                if found == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            waits.push(acknowledged.elapsed());
            // Land the next commit anywhere in the commit interval.
            tokio::time::sleep(Duration::from_millis(seq * 53 % 200)).await;
        }
        let _ = indexer.drain_and_wait(Some(Duration::from_secs(10))).await;
        waits
    });
    report(
        "freshness (acknowledged → searchable, 200 ms commit interval)",
        waits,
    );
}

fn search(c: &mut Criterion) {
    let messages = std::env::var("CONFAB_SEARCH_BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let corpus = build(messages);
    for kind in ["term", "and", "phrase", "prefix"] {
        let qs = queries(&corpus, kind, 300);
        // Warm the caches, then measure each query once.
        for q in qs.iter().take(30) {
            run(&corpus, q);
        }
        let samples: Vec<Duration> = qs
            .iter()
            .map(|q| {
                let started = Instant::now();
                run(&corpus, q);
                started.elapsed()
            })
            .collect();
        report(kind, samples);
        let mut group = c.benchmark_group("search");
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(4));
        let mut i = 0;
        group.bench_function(kind, |b| {
            b.iter(|| {
                i = (i + 1) % qs.len();
                run(&corpus, &qs[i])
            })
        });
        group.finish();
    }
    freshness(100);
}

criterion_group!(benches, search);
criterion_main!(benches);
