//! The committer and the store against a model (`BTreeMap`s): random write sets of puts,
//! deletes, counter adds, insert-if-absent guards, deltas and keys or values over the size
//! limits are committed one at a time or several at once (queued together, so that groups
//! hold several requests and guards race on one key), the store is closed and reopened at
//! random points, and after every step the whole store (every keyspace), the delta log, the
//! durable head and every request's answer equal the model's.
//!
//! The model applies the sets one after another in the order they were queued: the
//! committer's groups must not be observable. Counter keyspaces are written only with
//! `WriteSet::add`, and guards and puts only go to the other keyspaces, as the committer
//! requires.
//!
//! `PROPTEST_CASES` sets the number of cases (default [`DEFAULT_CASES`]);
//! `PROPTEST_RNG_SEED` another seed than the fixed one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use crate::catalogue::{Ks, META_DELTA_HEAD};
use crate::committer::{
    Committer, CommitterThread, DeltaListener, Durability, WriteSet, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
use crate::delta::{Delta, DeltaBody, NotificationReason};
use crate::ids::{AgentId, ConversationId, WorkspaceId};
use crate::store::{Store, StoreOptions};
use crate::Error;

/// Cases of a plain `cargo test` run: 3 to 8 s in debug on 2 cores (more on a busy disk).
const DEFAULT_CASES: u32 = 32;
/// The seed of a plain run, so that CI runs the same cases every time.
const DEFAULT_SEED: u64 = 0x00c0_f1ab_5eed;

/// Keyspaces written with puts and deletes, and guarded.
const PLAIN: [Ks; 3] = [Ks::ExtMsg, Ks::ThreadConv, Ks::ConvStats];
/// Keyspaces written only with counter adds.
const COUNTERS: [Ks; 2] = [Ks::FacetCount, Ks::DayStat];
const WORKSPACES: usize = 2;
const CONVERSATIONS: usize = 3;

/// A key of the test's universe.
#[derive(Clone, Copy, Debug)]
enum KeyRef {
    /// One of a few short keys (prefixes of each other, a zero byte, 0xff bytes).
    Short(u8),
    /// Exactly [`MAX_KEY_BYTES`]: the longest key accepted.
    Longest,
    /// Over [`MAX_KEY_BYTES`]: by one byte, by a lot, and past fjall's own limit (65,535).
    Oversize(u8),
}

impl KeyRef {
    fn bytes(self) -> Vec<u8> {
        match self {
            KeyRef::Short(0) => b"a".to_vec(),
            KeyRef::Short(1) => b"ab".to_vec(),
            KeyRef::Short(2) => b"b\0".to_vec(),
            KeyRef::Short(_) => vec![0xff; 3],
            KeyRef::Longest => vec![b'l'; MAX_KEY_BYTES],
            KeyRef::Oversize(0) => vec![b'o'; MAX_KEY_BYTES + 1],
            KeyRef::Oversize(1) => vec![b'o'; 2 * MAX_KEY_BYTES],
            KeyRef::Oversize(_) => vec![b'o'; usize::from(u16::MAX) + 1],
        }
    }
}

fn short_key() -> impl Strategy<Value = KeyRef> {
    (0u8..4).prop_map(KeyRef::Short)
}

fn key() -> impl Strategy<Value = KeyRef> {
    prop_oneof![
        30 => short_key(),
        1 => Just(KeyRef::Longest),
        1 => (0u8..3).prop_map(KeyRef::Oversize),
    ]
}

/// One operation of a write set, as generated.
#[derive(Clone, Debug)]
enum OpSpec {
    /// `put_raw` into `PLAIN[ks]`.
    Put(usize, KeyRef, Vec<u8>),
    /// A value one byte over [`MAX_VALUE_BYTES`] (made when the set is built).
    PutHuge(usize, KeyRef),
    Delete(usize, KeyRef),
    /// `add` to `COUNTERS[ks]`.
    Add(usize, KeyRef, i64),
    /// `require_absent` in `PLAIN[ks]`.
    Guard(usize, KeyRef),
    /// A delta of workspace, conversation and agent number so and so.
    Delta(usize, usize, usize),
}

fn op() -> impl Strategy<Value = OpSpec> {
    let plain = 0..PLAIN.len();
    let counters = 0..COUNTERS.len();
    let value = proptest::collection::vec(any::<u8>(), 0..6);
    let by = prop_oneof![
        12 => -3i64..=3,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
    ];
    prop_oneof![
        8 => (plain.clone(), key(), value).prop_map(|(ks, k, v)| OpSpec::Put(ks, k, v)),
        1 => (plain.clone(), short_key()).prop_map(|(ks, k)| OpSpec::PutHuge(ks, k)),
        4 => (plain.clone(), key()).prop_map(|(ks, k)| OpSpec::Delete(ks, k)),
        8 => (counters, key(), by).prop_map(|(ks, k, by)| OpSpec::Add(ks, k, by)),
        3 => (plain, key()).prop_map(|(ks, k)| OpSpec::Guard(ks, k)),
        5 => (0..WORKSPACES, 0..CONVERSATIONS, 0..3usize)
            .prop_map(|(ws, conv, agent)| OpSpec::Delta(ws, conv, agent)),
    ]
}

fn set() -> impl Strategy<Value = Vec<OpSpec>> {
    proptest::collection::vec(op(), 0..6)
}

/// One step of a case.
#[derive(Clone, Debug)]
enum Step {
    /// One set, committed and awaited alone.
    Alone(Vec<OpSpec>),
    /// Several sets queued at once, in this order.
    Together(Vec<Vec<OpSpec>>),
    /// Several sets queued at once, each inserting the same key if absent (with its own
    /// value) besides its other operations and one delta.
    Race {
        ks: usize,
        key: KeyRef,
        racers: Vec<(Vec<u8>, Vec<OpSpec>)>,
    },
    /// Stop the committer, close the store, open it again and start a new committer.
    Reopen { fsync: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => set().prop_map(Step::Alone),
        3 => proptest::collection::vec(set(), 2..7).prop_map(Step::Together),
        2 => (
            0..PLAIN.len(),
            short_key(),
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 1..4), set()),
                2..6
            )
        )
            .prop_map(|(ks, key, racers)| Step::Race { ks, key, racers }),
        1 => any::<bool>().prop_map(|fsync| Step::Reopen { fsync }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(), 1..24)
}

/// The names a delta draws from.
struct Names {
    workspaces: [WorkspaceId; WORKSPACES],
    conversations: [ConversationId; CONVERSATIONS],
    agents: [AgentId; 3],
}

impl Names {
    fn new() -> Self {
        Names {
            workspaces: [WorkspaceId::new(), WorkspaceId::new()],
            conversations: [
                ConversationId::new(),
                ConversationId::new(),
                ConversationId::new(),
            ],
            agents: [AgentId::new(), AgentId::new(), AgentId::new()],
        }
    }

    fn delta(
        &self,
        ws: usize,
        conv: usize,
        agent: usize,
    ) -> (WorkspaceId, ConversationId, DeltaBody) {
        let body = DeltaBody::Notification {
            agent_id: self.agents[agent],
            reason: if agent % 2 == 0 {
                NotificationReason::Mention
            } else {
                NotificationReason::Assignment
            },
            message_id: None,
            by_agent_id: Some(self.agents[(agent + 1) % 3]),
            notification: None,
        };
        (self.workspaces[ws], self.conversations[conv], body)
    }
}

/// A set's operations with their keys and values made, in the order they were added.
enum Resolved {
    Put(Ks, Vec<u8>, Vec<u8>),
    PutHuge(Ks, Vec<u8>),
    Delete(Ks, Vec<u8>),
    Add(Ks, Vec<u8>, i64),
    Guard(Ks, Vec<u8>),
    Delta(WorkspaceId, ConversationId, Box<DeltaBody>),
}

fn resolve(spec: &[OpSpec], names: &Names) -> Vec<Resolved> {
    spec.iter()
        .map(|op| match op {
            OpSpec::Put(ks, k, v) => Resolved::Put(PLAIN[*ks], k.bytes(), v.clone()),
            OpSpec::PutHuge(ks, k) => Resolved::PutHuge(PLAIN[*ks], k.bytes()),
            OpSpec::Delete(ks, k) => Resolved::Delete(PLAIN[*ks], k.bytes()),
            OpSpec::Add(ks, k, by) => Resolved::Add(COUNTERS[*ks], k.bytes(), *by),
            OpSpec::Guard(ks, k) => Resolved::Guard(PLAIN[*ks], k.bytes()),
            OpSpec::Delta(ws, conv, agent) => {
                let (ws, conv, body) = names.delta(*ws, *conv, *agent);
                Resolved::Delta(ws, conv, Box::new(body))
            }
        })
        .collect()
}

fn write_set(ops: &[Resolved]) -> WriteSet {
    let mut set = WriteSet::new();
    for op in ops {
        match op {
            Resolved::Put(ks, k, v) => set.put_raw(*ks, k.clone(), v.clone()),
            Resolved::PutHuge(ks, k) => set.put_raw(*ks, k.clone(), vec![0; MAX_VALUE_BYTES + 1]),
            Resolved::Delete(ks, k) => set.delete(*ks, k.clone()),
            Resolved::Add(ks, k, by) => set.add(*ks, k.clone(), *by),
            Resolved::Guard(ks, k) => set.require_absent(*ks, k.clone()),
            Resolved::Delta(ws, conv, body) => set.delta(*ws, *conv, (**body).clone()),
        };
    }
    set
}

/// What a request must be answered.
#[derive(Clone, Debug, PartialEq)]
enum Answer {
    Committed(Vec<u64>),
    TooLarge,
    AlreadyExists,
}

fn answer(result: &crate::Result<crate::committer::Receipt>) -> Result<Answer, TestCaseError> {
    match result {
        Ok(receipt) => Ok(Answer::Committed(receipt.offsets.clone())),
        Err(Error::TooLarge(_)) => Ok(Answer::TooLarge),
        Err(Error::AlreadyExists) => Ok(Answer::AlreadyExists),
        Err(e) => Err(TestCaseError::fail(format!("unexpected error: {e}"))),
    }
}

/// What the store should hold.
#[derive(Default)]
struct Model {
    plain: HashMap<Ks, BTreeMap<Vec<u8>, Vec<u8>>>,
    counters: HashMap<Ks, BTreeMap<Vec<u8>, i64>>,
    /// Every delta: offset, workspace, conversation, body.
    deltas: Vec<(u64, WorkspaceId, ConversationId, DeltaBody)>,
    head: u64,
}

impl Model {
    /// Applies one set, or refuses it whole, as the committer must.
    fn apply(&mut self, ops: &[Resolved]) -> Answer {
        // An add of 0 is no operation at all, not even a key to check.
        let oversize = ops.iter().any(|op| match op {
            Resolved::Put(_, k, _) | Resolved::Delete(_, k) | Resolved::Guard(_, k) => {
                k.len() > MAX_KEY_BYTES
            }
            Resolved::Add(_, k, by) => *by != 0 && k.len() > MAX_KEY_BYTES,
            Resolved::PutHuge(..) => true,
            Resolved::Delta(..) => false,
        });
        if oversize {
            return Answer::TooLarge;
        }
        let taken = ops.iter().any(|op| match op {
            Resolved::Guard(ks, k) => self.plain.get(ks).is_some_and(|m| m.contains_key(k)),
            _ => false,
        });
        if taken {
            return Answer::AlreadyExists;
        }
        let mut offsets = Vec::new();
        for op in ops {
            match op {
                Resolved::Put(ks, k, v) => {
                    self.plain
                        .entry(*ks)
                        .or_default()
                        .insert(k.clone(), v.clone());
                }
                Resolved::Delete(ks, k) => {
                    self.plain.entry(*ks).or_default().remove(k);
                }
                Resolved::Add(ks, k, by) => {
                    let counters = self.counters.entry(*ks).or_default();
                    let total = counters.get(k).copied().unwrap_or(0).saturating_add(*by);
                    if total == 0 {
                        counters.remove(k);
                    } else {
                        counters.insert(k.clone(), total);
                    }
                }
                Resolved::Delta(ws, conv, body) => {
                    self.head += 1;
                    self.deltas.push((self.head, *ws, *conv, (**body).clone()));
                    offsets.push(self.head);
                }
                Resolved::Guard(..) | Resolved::PutHuge(..) => {}
            }
        }
        Answer::Committed(offsets)
    }

    /// Every key and value the store should hold, keyspace by keyspace.
    fn contents(&self, ks: Ks) -> Vec<(Vec<u8>, Vec<u8>)> {
        if let Some(map) = self.plain.get(&ks) {
            return map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        if let Some(map) = self.counters.get(&ks) {
            return map
                .iter()
                .map(|(k, n)| (k.clone(), n.to_be_bytes().to_vec()))
                .collect();
        }
        if ks == Ks::Meta {
            // Opening the store records its format version; the head once a delta was
            // written.
            let mut meta = vec![(
                crate::format::META_FORMAT_VERSION.to_vec(),
                crate::format::FORMAT_VERSION.to_be_bytes().to_vec(),
            )];
            if self.head > 0 {
                meta.push((META_DELTA_HEAD.to_vec(), self.head.to_be_bytes().to_vec()));
            }
            meta.sort();
            return meta;
        }
        Vec::new()
    }
}

/// The offsets of every delta published, one list per group.
#[derive(Default)]
struct Published(Mutex<Vec<Vec<u64>>>);

impl DeltaListener for Published {
    fn published(&self, deltas: &[Arc<Delta>]) {
        self.0
            .lock()
            .expect("lock")
            .push(deltas.iter().map(|d| d.offset).collect());
    }
}

/// What the cases did, to check that they exercised what the test is about.
#[derive(Default, Debug)]
struct Seen {
    groups_of_several: usize,
    races_lost: usize,
    too_large: usize,
    reopens: usize,
}

struct Running {
    store: Store,
    committer: Committer,
    thread: CommitterThread,
    published: Arc<Published>,
    /// The head when this committer started: it publishes from the next offset on.
    started_at: u64,
}

fn start(dir: &std::path::Path, fsync: bool) -> Result<Running, TestCaseError> {
    let store = Store::open(dir, &StoreOptions::default())
        .map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
    let durability = if fsync {
        Durability::Fsync
    } else {
        Durability::Buffered
    };
    let (committer, thread) = Committer::start(store.clone(), durability)
        .map_err(|e| TestCaseError::fail(format!("start: {e}")))?;
    let published = Arc::new(Published::default());
    committer.subscribe(published.clone());
    let started_at = committer.durable_head();
    Ok(Running {
        store,
        committer,
        thread,
        published,
        started_at,
    })
}

fn stop(running: Running) {
    let Running {
        store,
        committer,
        thread,
        ..
    } = running;
    drop(committer);
    thread.join();
    drop(store);
}

/// The whole store, keyspace by keyspace, equals the model; so do the deltas as a resuming
/// client reads them, the head, and what the listener was handed.
fn check(running: &Running, model: &Model, names: &Names) -> Result<(), TestCaseError> {
    let store = &running.store;
    for ks in Ks::ALL {
        if ks == Ks::WsDelta {
            continue;
        }
        let stored: Vec<(Vec<u8>, Vec<u8>)> = store
            .ks(ks)
            .iter()
            .map(|kv| kv.into_inner().map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("scan {}: {e}", ks.name())))?;
        prop_assert_eq!(stored, model.contents(ks), "keyspace {}", ks.name());
    }

    let stored_deltas = store
        .ks(Ks::WsDelta)
        .len()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(stored_deltas, model.deltas.len(), "delta records");
    for ws in names.workspaces {
        let stored: Vec<_> = store
            .deltas_between(ws, 0, u64::MAX, usize::MAX)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .into_iter()
            .map(|d| {
                (
                    d.offset,
                    d.workspace_id,
                    d.conversation_id.expect("a conversation delta"),
                    d.body,
                )
            })
            .collect();
        let expected: Vec<_> = model.deltas.iter().filter(|d| d.1 == ws).cloned().collect();
        prop_assert_eq!(&stored, &expected, "deltas of a workspace");
        // A resume from the middle reads exactly the later ones, within the limit.
        if let Some(middle) = expected.get(expected.len() / 2) {
            let after = middle.0;
            let later = store
                .deltas_between(ws, after, model.head, 2)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let want: Vec<u64> = expected
                .iter()
                .map(|d| d.0)
                .filter(|o| *o > after)
                .take(2)
                .collect();
            prop_assert_eq!(later.iter().map(|d| d.offset).collect::<Vec<_>>(), want);
        }
    }

    prop_assert_eq!(running.committer.durable_head(), model.head, "durable head");
    prop_assert_eq!(
        store
            .delta_head()
            .map_err(|e| TestCaseError::fail(e.to_string()))?,
        model.head,
        "stored head"
    );
    prop_assert!(!running.committer.is_poisoned());
    let published: Vec<u64> = running.published.0.lock().expect("lock").concat();
    prop_assert_eq!(
        published,
        (running.started_at + 1..=model.head).collect::<Vec<_>>(),
        "published once each, in offset order"
    );
    Ok(())
}

/// Counts the groups whose published deltas came from several requests, and checks that
/// each request's deltas were published in one group.
fn groups_of_several(published: &Published, answers: &[Answer]) -> Result<usize, TestCaseError> {
    let groups = published.0.lock().expect("lock").clone();
    let group_of = |offset: u64| groups.iter().position(|g| g.contains(&offset));
    let mut requests_per_group = vec![0usize; groups.len()];
    for answer in answers {
        if let Answer::Committed(offsets) = answer {
            let Some(first) = offsets.first() else {
                continue;
            };
            let group = group_of(*first);
            prop_assert!(group.is_some(), "offset {} never published", first);
            prop_assert!(
                offsets.iter().all(|o| group_of(*o) == group),
                "one request's deltas {:?} split over groups",
                offsets
            );
            if let Some(group) = group {
                requests_per_group[group] += 1;
            }
        }
    }
    Ok(requests_per_group.iter().filter(|n| **n > 1).count())
}

fn run_case(
    rt: &tokio::runtime::Runtime,
    steps: &[Step],
    seen: &Mutex<Seen>,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let names = Names::new();
    let mut model = Model::default();
    // Buffered at first: fsync is slow on a busy disk, and a reopen brings Fsync in half
    // the time (what survives a power loss is the power-loss test's business).
    let mut running = start(dir.path(), false)?;
    for step in steps {
        let sets: Vec<Vec<Resolved>> = match step {
            Step::Reopen { fsync } => {
                stop(running);
                running = start(dir.path(), *fsync)?;
                seen.lock().expect("lock").reopens += 1;
                check(&running, &model, &names)?;
                continue;
            }
            Step::Alone(ops) => vec![resolve(ops, &names)],
            Step::Together(sets) => sets.iter().map(|ops| resolve(ops, &names)).collect(),
            Step::Race { ks, key, racers } => racers
                .iter()
                .enumerate()
                .map(|(i, (value, ops))| {
                    let (k, ks) = (key.bytes(), PLAIN[*ks]);
                    let mut set = vec![
                        Resolved::Guard(ks, k.clone()),
                        Resolved::Put(ks, k, value.clone()),
                    ];
                    set.extend(resolve(ops, &names));
                    let (ws, conv, body) = names.delta(i % WORKSPACES, 0, i % 3);
                    set.push(Resolved::Delta(ws, conv, Box::new(body)));
                    set
                })
                .collect(),
        };
        let expected: Vec<Answer> = sets.iter().map(|ops| model.apply(ops)).collect();
        // Queued in order (`join_all` polls its futures in order, and the first poll of a
        // commit queues it); the committer drains whatever is queued into one group.
        let commits: Vec<_> = sets
            .iter()
            .map(|ops| running.committer.commit(write_set(ops)))
            .collect();
        let results = rt.block_on(futures_util::future::join_all(commits));
        let answers = results.iter().map(answer).collect::<Result<Vec<_>, _>>()?;
        prop_assert_eq!(&answers, &expected, "answers to {:?}", step);
        check(&running, &model, &names)?;

        let several = groups_of_several(&running.published, &answers)?;
        let mut seen = seen.lock().expect("lock");
        seen.groups_of_several += several;
        seen.too_large += answers.iter().filter(|a| **a == Answer::TooLarge).count();
        if matches!(step, Step::Race { .. }) {
            seen.races_lost += answers
                .iter()
                .filter(|a| **a == Answer::AlreadyExists)
                .count();
        }
    }
    stop(running);
    Ok(())
}

#[test]
fn the_committer_and_the_store_equal_a_model() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seen = Mutex::new(Seen::default());
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&steps(), |steps| run_case(&rt, &steps, &seen)) {
        panic!("{e}");
    }
    let seen = seen.into_inner().expect("lock");
    // The cases exercised what this test is about (a plain run: all of it, many times; a
    // run of a handful of cases may miss some).
    if cases < DEFAULT_CASES {
        return;
    }
    assert!(
        seen.groups_of_several > 0,
        "no group held several requests: {seen:?}"
    );
    assert!(seen.races_lost > 0, "no guard race was lost: {seen:?}");
    assert!(seen.too_large > 0, "no set was over a limit: {seen:?}");
    assert!(seen.reopens > 0, "the store was never reopened: {seen:?}");
}
