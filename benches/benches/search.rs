//! Search at scale: indexing throughput over 1M generated messages in 50,000
//! conversations (each with a named contact), half of them in the workspace searched;
//! search latency (p50/p99, top 20 with snippets) for one word by frequency (common,
//! medium, rare), a misspelt word (fuzzy), two words, a contact's name with a word of
//! their messages, a phrase and a prefix; and freshness (from a durable commit to
//! searchable) through the real indexer actor.
//!
//! `CONFAB_SEARCH_BENCH_MESSAGES` changes the corpus size (default 1,000,000).

use std::time::{Duration, Instant};

use confab_actors::indexer::{Indexer, IndexerArgs, IndexerConfig};
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::{Committer, Durability, WriteSet};
use confab_engine::delta::{Delta, DeltaBody};
use confab_engine::ids::{ChannelId, ContactId, ConversationId, MessageId, WorkspaceId};
use confab_engine::model::{ChannelKind, Contact, ConversationCard, Direction, Message, Sender};
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
    pseudo_words(7, VOCABULARY, 2)
}

/// `count` distinct pseudo-words of at least `min_syllables` syllables, from `seed`.
fn pseudo_words(seed: u64, count: usize, min_syllables: usize) -> Vec<String> {
    const ONSETS: [&str; 16] = [
        "b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "tr", "pl",
    ];
    const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut words = std::collections::BTreeSet::new();
    while words.len() < count {
        let syllables = rng.gen_range(min_syllables..=min_syllables + 2);
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
    /// A contact's first name and a word of one of their messages (in the workspace
    /// searched): the word is in a message document, the name in the conversation's.
    contact_words: Vec<(String, String, ConversationId)>,
}

/// Names of contacts: first names and surnames spelt unlike the message vocabulary
/// (three syllables or more), so that a name query matches contacts only.
fn contact_name(first: &[String], last: &[String], c: usize) -> String {
    format!("{} {}", first[c % first.len()], last[(c / 7) % last.len()])
}

fn card(id: ConversationId, name: String, at: i64) -> ConversationCard {
    ConversationCard {
        id,
        channel: ChannelKind::Whatsapp,
        channel_id: ChannelId::new(),
        status: Default::default(),
        snoozed_until: None,
        outcome: None,
        suggested_outcome: None,
        merged_into: None,
        merged: Vec::new(),
        ai_mode: Default::default(),
        assignee_id: None,
        tags: Vec::new(),
        campaign: None,
        unread_count: 0,
        last_activity_at: at,
        created_at: at,
        preview: String::new(),
        contact: Contact {
            id: ContactId::new(),
            name: Some(name),
            email: None,
            phone: None,
            company: None,
            title: None,
            avatar_url: None,
            profile_url: None,
        },
        reply_window: None,
    }
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
    // Half of the conversations (and so of the messages) in the workspace searched, half
    // in another one.
    let workspace = WorkspaceId::new();
    let other = WorkspaceId::new();
    let conversations: Vec<ConversationId> =
        (0..CONVERSATIONS).map(|_| ConversationId::new()).collect();
    let first_names = pseudo_words(11, 400, 3);
    let surnames = pseudo_words(13, 4_000, 3);
    let mut seqs = vec![0u64; CONVERSATIONS];
    let mut pairs = Vec::new();
    let mut contact_words = Vec::new();
    let started = Instant::now();
    let mut offset = 0u64;
    for (c, &id) in conversations.iter().enumerate() {
        offset += 1;
        let ws = if c % 2 == 0 { other } else { workspace };
        writer.apply(&Delta {
            offset,
            workspace_id: ws,
            conversation_id: Some(id),
            at: offset as i64,
            body: DeltaBody::ConversationCreated(card(
                id,
                contact_name(&first_names, &surnames, c),
                1_700_000_000_000,
            )),
        });
    }
    for _ in 1..=messages as u64 {
        offset += 1;
        let c = rng.gen_range(0..CONVERSATIONS);
        seqs[c] += 1;
        let length = rng.gen_range(6..=16);
        let picked: Vec<&str> = (0..length)
            .map(|_| words[rank(&mut rng)].as_str())
            .collect();
        if pairs.len() < 1_000 && offset.is_multiple_of(97) {
            pairs.push((picked[0].to_string(), picked[1].to_string()));
        }
        let ws = if c % 2 == 0 { other } else { workspace };
        if ws == workspace && contact_words.len() < 1_000 && offset.is_multiple_of(89) {
            let first = contact_name(&first_names, &surnames, c);
            let first = first.split(' ').next().unwrap_or_default().to_owned();
            contact_words.push((
                first,
                picked[picked.len() / 2].to_string(),
                conversations[c],
            ));
        }
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
        if offset.is_multiple_of(200_000) {
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
        contact_words,
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
            "medium" => mid(&mut rng),
            "common" => corpus.words[rng.gen_range(0..50)].clone(),
            "rare" => corpus.words[rng.gen_range(2_000..VOCABULARY)].clone(),
            "typo" => {
                // A medium word of five letters or more with one letter replaced.
                let mut word: Vec<char> = loop {
                    let w = mid(&mut rng);
                    if w.chars().count() >= 6 {
                        break w.chars().collect();
                    }
                };
                let at = rng.gen_range(1..word.len());
                word[at] = if word[at] == 'x' { 'q' } else { 'x' };
                word.into_iter().collect()
            }
            "contact_word" => {
                let (name, word, _) = &corpus.contact_words[i % corpus.contact_words.len()];
                format!("{name} {word}")
            }
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
    for kind in [
        "common",
        "medium",
        "rare",
        "typo",
        "and",
        "contact_word",
        "phrase",
        "prefix",
    ] {
        let qs = queries(&corpus, kind, 300);
        let found = qs.iter().filter(|q| run(&corpus, q) > 0).count();
        println!(
            "search/{kind}: {found} of {} queries find something",
            qs.len()
        );
        if kind == "contact_word" {
            // Found the conversation whose contact has the name and a message the word.
            let right = corpus
                .contact_words
                .iter()
                .filter(|(name, word, id)| {
                    let mut r = request(&corpus, &format!("{name} {word}"));
                    r.conversation = Some(*id);
                    corpus
                        .index
                        .search(&r, MAX_DEPTH, |_| Ok(Some(())))
                        .expect("search")
                        .items
                        .iter()
                        .any(|(hit, ())| hit.message_id.is_some())
                })
                .count();
            println!(
                "search/contact_word: {right} of {} find a message of the contact's own conversation",
                corpus.contact_words.len()
            );
        }
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
