//! `kill -9` at random moments, many times, under concurrent signed-webhook load: the real
//! binary restarted on the same data directory each time. Every acknowledged message is
//! stored exactly once, in its lead's order, and found by search exactly once.
//!
//! The senders behave like Meta: a webhook whose request failed (the connection died with
//! the server) is re-sent, to whichever server is up, until it is acknowledged. Each lead's
//! messages are sent one after the other, so their order is defined; several senders run
//! at once, and each moves on to a new lead every [`MESSAGES_PER_LEAD`] messages, so new
//! conversations are created all the time, kills included.
//!
//! Most kills come a random delay after the server's first acknowledgement, in the middle
//! of the load; some come right after it started (recovery, the index catching up, the
//! senders' re-sends). The kill schedule comes from a seeded generator; the seed is
//! printed, and `CONFAB_CRASHLOOP_SEED=<seed>` repeats the schedule (the moments the server
//! is in are still up to the machine).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::harness::{GraphStandIn, Tenant};
use crate::process::{
    all_conversations, confab_binary, provision, search_all, signed_text_webhook, Process,
};

/// Concurrent senders, each sequential.
const SENDERS: usize = 6;
/// Messages per lead before a sender moves on to a new lead (a new conversation).
const MESSAGES_PER_LEAD: u32 = 25;
/// Kills while the load runs; one more follows once it has stopped.
const KILLS_UNDER_LOAD: usize = 8;
/// The random delay between a restarted server's first acknowledgement and its kill.
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 20..=1500;
/// One kill in this many (at random) comes early instead: this many milliseconds after the
/// server printed its address, whether or not it acknowledged anything yet (recovery, the
/// index catching up, the senders' first re-sends).
const EARLY_KILL_ONE_IN: u64 = 4;
const EARLY_KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 0..=50;
/// How long anything may take before the test gives up (a restart, an acknowledgement,
/// the index catching up).
const PATIENCE: Duration = Duration::from_secs(60);

/// splitmix64: a few lines instead of a dependency, enough for a kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn in_range(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        range.start() + self.next() % (range.end() - range.start() + 1)
    }
}

/// The server currently up: its incarnation (0, 1, …) and base URL.
type Current = (usize, String);

/// What the senders share with the test.
struct Load {
    tenant: Tenant,
    http: reqwest::Client,
    server: watch::Receiver<Current>,
    stop: AtomicBool,
    /// Acknowledgements per incarnation of the server.
    acks: Mutex<Vec<u64>>,
}

impl Load {
    fn acks_of(&self, incarnation: usize) -> u64 {
        self.acks
            .lock()
            .expect("lock")
            .get(incarnation)
            .copied()
            .unwrap_or(0)
    }
}

/// One lead as its sender saw it: messages `1..=acked` were acknowledged, each after all
/// earlier ones.
struct Lead {
    wa_id: String,
    acked: u32,
}

/// A lead's conversation as stored.
struct Stored {
    conversation: String,
    /// The numbers of its messages' texts, in seq order.
    numbers: Vec<u32>,
    message_ids: Vec<String>,
}

#[derive(Default)]
struct SenderStats {
    acked: u64,
    /// Requests that got no answer (the server died under them, or refused the connection).
    failed: u64,
    /// Re-sent webhooks answered as duplicates: the failed request had been stored.
    stored_before_failing: u64,
    /// Non-2xx answers by status.
    refused: BTreeMap<u16, u64>,
}

fn lead_key(sender: usize, lead: u32) -> String {
    format!("s{sender}l{lead}")
}

fn message_text(sender: usize, lead: u32, n: u32) -> String {
    format!("crashloop sender {sender} lead {lead} message {n}")
}

/// `(sender, lead, n)` back from [`message_text`].
fn parse_text(text: &str) -> Option<(usize, u32, u32)> {
    let mut words = text.strip_prefix("crashloop sender ")?.split(' ');
    let sender = words.next()?.parse().ok()?;
    (words.next()? == "lead").then_some(())?;
    let lead = words.next()?.parse().ok()?;
    (words.next()? == "message").then_some(())?;
    let n = words.next()?.parse().ok()?;
    words.next().is_none().then_some((sender, lead, n))
}

async fn sender(load: Arc<Load>, sender: usize) -> (Vec<Lead>, SenderStats) {
    let mut server = load.server.clone();
    let mut stats = SenderStats::default();
    let mut leads = Vec::new();
    'leads: for lead in 0.. {
        let wa_id = format!("4479{sender:02}{lead:05}");
        let mut acked = 0;
        for n in 1..=MESSAGES_PER_LEAD {
            if load.stop.load(Ordering::Acquire) {
                if acked > 0 {
                    leads.push(Lead { wa_id, acked });
                }
                break 'leads;
            }
            let wamid = format!("wamid.CL.{}.{n}", lead_key(sender, lead));
            let (body, signature) = signed_text_webhook(
                &load.tenant,
                &wa_id,
                &format!("Lead {sender}-{lead}"),
                &wamid,
                &message_text(sender, lead, n),
            );
            // The same body until it is acknowledged, as the provider retries.
            let mut resent = false;
            loop {
                let (incarnation, base) = server.borrow_and_update().clone();
                let sent = load
                    .http
                    .post(format!(
                        "{base}/webhooks/whatsapp/{}",
                        load.tenant.channel_id
                    ))
                    .header("content-type", "application/json")
                    .header("X-Hub-Signature-256", &signature)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => {
                        // A body that does not arrive whole is no acknowledgement.
                        if let Ok(answer) = response.json::<Value>().await {
                            assert_eq!(
                                answer["stored"].as_u64().unwrap_or(0)
                                    + answer["duplicates"].as_u64().unwrap_or(0),
                                1,
                                "{wamid}: {answer}"
                            );
                            if answer["duplicates"] == 1 {
                                assert!(resent, "{wamid} a duplicate at its first delivery");
                                stats.stored_before_failing += 1;
                            }
                            stats.acked += 1;
                            let mut acks = load.acks.lock().expect("lock");
                            if acks.len() <= incarnation {
                                acks.resize(incarnation + 1, 0);
                            }
                            acks[incarnation] += 1;
                            break;
                        }
                        stats.failed += 1;
                    }
                    Ok(response) => {
                        *stats.refused.entry(response.status().as_u16()).or_default() += 1;
                    }
                    Err(_) => stats.failed += 1,
                }
                resent = true;
                // The server is probably gone: wait for the next one (or retry soon).
                let _ = tokio::time::timeout(Duration::from_millis(100), server.changed()).await;
            }
            acked = n;
        }
        leads.push(Lead { wa_id, acked });
    }
    (leads, stats)
}

async fn serve(binary: PathBuf, dir: PathBuf, admin: String) -> Process {
    tokio::task::spawn_blocking(move || Process::serve(&binary, &dir, &admin))
        .await
        .expect("server start task")
}

async fn kill(process: Process) {
    tokio::task::spawn_blocking(move || process.kill_9())
        .await
        .expect("kill task");
}

/// Waits until the incarnation has acknowledged a webhook: the server is up and taking load.
async fn wait_for_acks(load: &Load, incarnation: usize) {
    let started = Instant::now();
    while load.acks_of(incarnation) == 0 {
        assert!(
            started.elapsed() < PATIENCE,
            "incarnation {incarnation} acknowledged nothing within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every search hit for the conversation's messages (all pages), as message ids.
async fn search_hits(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    conversation: &str,
) -> Vec<String> {
    let params = [("q", "crashloop"), ("conversation_id", conversation)];
    search_all(http, base, token, &params)
        .await
        .iter()
        .map(|hit| {
            let id = hit["message_id"].as_str();
            id.expect("only messages say crashloop").to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_moments_under_webhook_load_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let seed = std::env::var("CONFAB_CRASHLOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        });
    println!("crashloop: seed {seed} (CONFAB_CRASHLOOP_SEED={seed} repeats the kill schedule)");
    let mut rng = Rng(seed);

    let binary = confab_binary().await;
    let built = started.elapsed();
    let dir = tempfile::tempdir().expect("temp dir");
    let data: &Path = dir.path();
    let admin = format!("admin-{}", confab_engine::admin::new_token());
    let graph = GraphStandIn::start().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");

    let mut process = serve(binary.clone(), data.to_path_buf(), admin.clone()).await;
    let tenant = provision(&http, &process.base, &admin, &graph.base_url).await;
    let (current, server) = watch::channel((0, process.base.clone()));
    let load = Arc::new(Load {
        tenant: tenant.clone(),
        http: http.clone(),
        server,
        stop: AtomicBool::new(false),
        acks: Mutex::new(Vec::new()),
    });
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| tokio::spawn(sender(load.clone(), s)))
        .collect();

    let mut kills = 0;
    let mut early_kills = 0;
    let mut restarts = Vec::new();
    for incarnation in 0..KILLS_UNDER_LOAD {
        let early = incarnation > 0 && rng.next().is_multiple_of(EARLY_KILL_ONE_IN);
        let delay = if early {
            rng.in_range(EARLY_KILL_DELAY_MS)
        } else {
            wait_for_acks(&load, incarnation).await;
            rng.in_range(KILL_DELAY_MS)
        };
        early_kills += usize::from(early);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        kill(process).await;
        kills += 1;
        let restarting = Instant::now();
        process = serve(binary.clone(), data.to_path_buf(), admin.clone()).await;
        restarts.push(restarting.elapsed());
        println!(
            "crashloop: kill {kills} {} {delay} ms of incarnation {incarnation} \
             ({} acknowledged there), restarted in {:?}",
            if early {
                "early, at"
            } else {
                "after its first acknowledgement +"
            },
            load.acks_of(incarnation),
            restarting.elapsed()
        );
        current
            .send((incarnation + 1, process.base.clone()))
            .expect("senders listen");
    }
    // The last server takes load too, then the senders finish what they have in flight.
    wait_for_acks(&load, KILLS_UNDER_LOAD).await;
    load.stop.store(true, Ordering::Release);
    let mut leads: BTreeMap<String, Lead> = BTreeMap::new();
    let mut stats = SenderStats::default();
    for (s, handle) in senders.into_iter().enumerate() {
        let (sent, st) = tokio::time::timeout(PATIENCE, handle)
            .await
            .expect("the senders finish once the server is up")
            .expect("sender task");
        for (lead, record) in sent.into_iter().enumerate() {
            leads.insert(lead_key(s, lead as u32), record);
        }
        stats.acked += st.acked;
        stats.failed += st.failed;
        stats.stored_before_failing += st.stored_before_failing;
        for (status, count) in st.refused {
            *stats.refused.entry(status).or_default() += count;
        }
    }
    // And one kill at rest: what the last incarnation acknowledged is durable too.
    kill(process).await;
    kills += 1;
    let process = serve(binary.clone(), data.to_path_buf(), admin.clone()).await;
    let load_time = started.elapsed() - built;
    let verifying = Instant::now();

    // What is stored: per conversation, its messages in seq order.
    let conversations = all_conversations(&http, &process.base, &tenant.token).await;
    let mut stored = 0u64;
    let mut duplicated = 0u64;
    let mut out_of_order = 0u64;
    let mut foreign = Vec::new();
    let mut empty = Vec::new();
    let mut by_lead: HashMap<String, Vec<Stored>> = HashMap::new();
    for (card, messages) in &conversations {
        let id = card["id"].as_str().expect("id").to_string();
        if messages.is_empty() {
            empty.push(id.clone());
            continue;
        }
        let seqs: Vec<u64> = messages
            .iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect();
        let contiguous: Vec<u64> = (1..=messages.len() as u64).collect();
        assert_eq!(seqs, contiguous, "conversation {id}: seq contiguous from 1");
        let mut lead_of_conversation = None;
        let mut numbers = Vec::new();
        let mut message_ids = Vec::new();
        for m in messages {
            let text = m["text"].as_str().expect("text");
            let Some((s, lead, n)) = parse_text(text) else {
                foreign.push(m.clone());
                continue;
            };
            let key = lead_key(s, lead);
            assert_eq!(
                m["external_id"],
                format!("wamid.CL.{key}.{n}"),
                "conversation {id}: {m}"
            );
            assert_eq!(m["direction"], "inbound", "{m}");
            match &lead_of_conversation {
                None => lead_of_conversation = Some(key),
                Some(k) => assert_eq!(*k, key, "conversation {id} holds two leads' messages"),
            }
            numbers.push(n);
            message_ids.push(m["id"].as_str().expect("message id").to_string());
        }
        stored += numbers.len() as u64;
        let distinct: BTreeSet<u32> = numbers.iter().copied().collect();
        duplicated += (numbers.len() - distinct.len()) as u64;
        out_of_order += numbers.windows(2).filter(|w| w[0] >= w[1]).count() as u64;
        if let Some(key) = lead_of_conversation {
            by_lead.entry(key).or_default().push(Stored {
                conversation: id,
                numbers,
                message_ids,
            });
        }
    }
    let mut lost = 0u64;
    let mut not_acked_but_stored = 0u64;
    let mut split_leads = Vec::new();
    for (key, lead) in &leads {
        let stored_numbers: BTreeSet<u32> = by_lead
            .get(key)
            .map(|convs| {
                convs
                    .iter()
                    .flat_map(|c| c.numbers.iter().copied())
                    .collect()
            })
            .unwrap_or_default();
        lost += (1..=lead.acked)
            .filter(|n| !stored_numbers.contains(n))
            .count() as u64;
        not_acked_but_stored += stored_numbers.iter().filter(|&&n| n > lead.acked).count() as u64;
        if by_lead.get(key).is_some_and(|convs| convs.len() > 1) {
            split_leads.push((key.clone(), lead.wa_id.clone()));
        }
    }
    let unknown_leads: Vec<&String> = by_lead.keys().filter(|k| !leads.contains_key(*k)).collect();

    println!(
        "crashloop: {kills} kills ({KILLS_UNDER_LOAD} under load of which {early_kills} early, \
         1 at rest), restarts took {:?}; \
         {} leads in {} conversations; acked {}, stored {stored}, lost {lost}, \
         duplicated {duplicated}, out of order {out_of_order}; {} requests failed \
         ({} of them had been stored: their re-sends were answered as duplicates); \
         non-2xx answers {:?}; load and kills took {load_time:?}",
        restarts,
        leads.len(),
        conversations.len(),
        stats.acked,
        stats.failed,
        stats.stored_before_failing,
        stats.refused,
    );
    assert_eq!(lost, 0, "acknowledged messages lost");
    assert_eq!(duplicated, 0, "messages stored twice");
    assert_eq!(out_of_order, 0, "a lead's messages out of order");
    assert_eq!(not_acked_but_stored, 0, "messages never sent stored");
    assert!(foreign.is_empty(), "messages nobody sent: {foreign:?}");
    assert!(
        empty.is_empty(),
        "conversations without messages: {empty:?}"
    );
    assert!(
        split_leads.is_empty(),
        "leads with two conversations: {split_leads:?}"
    );
    assert!(
        unknown_leads.is_empty(),
        "leads nobody wrote as: {unknown_leads:?}"
    );
    assert_eq!(
        stored, stats.acked,
        "every acknowledged message stored once"
    );
    assert!(
        stats.refused.keys().all(|s| *s >= 500),
        "valid webhooks refused: {:?}",
        stats.refused
    );

    // Search: the index catches up asynchronously (after the last kill, from the store);
    // wait until every stored message is found, then it must be found exactly once.
    let searching = Instant::now();
    let mut pending: Vec<(&String, &Vec<String>)> = by_lead
        .values()
        .flatten()
        .map(|c| (&c.conversation, &c.message_ids))
        .collect();
    let mut hits_total = 0u64;
    let mut searched_twice = Vec::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (conversation, expected) in pending {
            let hits = search_hits(&http, &process.base, &tenant.token, conversation).await;
            let found: BTreeSet<&String> = hits.iter().collect();
            if expected.iter().all(|id| found.contains(id)) {
                hits_total += hits.len() as u64;
                let expected_set: BTreeSet<&String> = expected.iter().collect();
                if hits.len() != expected.len() || found != expected_set {
                    searched_twice.push((conversation.clone(), hits.len(), expected.len()));
                }
            } else {
                still.push((conversation, expected));
            }
        }
        pending = still;
        if !pending.is_empty() {
            assert!(
                searching.elapsed() < PATIENCE,
                "search did not find every stored message within {PATIENCE:?}: \
                 {} conversations incomplete",
                pending.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "crashloop: search found {hits_total} hits for {stored} messages after {:?}; \
         binary build check {built:?}, verification {:?}, total {:?}",
        searching.elapsed(),
        verifying.elapsed(),
        started.elapsed()
    );
    assert!(
        searched_twice.is_empty(),
        "search hits differ from the stored messages (conversation, hits, stored): \
         {searched_twice:?}"
    );
    assert_eq!(
        hits_total, stored,
        "each message found by search exactly once"
    );
    kill(process).await;
}
