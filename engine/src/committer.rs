//! The committer: the store's single writer.
//!
//! Actors hand it a [`WriteSet`] per request. It drains its queue into a group, checks each
//! request's guards against the store and the group's earlier requests (a refused request
//! writes nothing), gives every delta the next global offset, writes the whole group as one
//! atomic fjall batch (a key written twice is written once, counters once per group), makes
//! it durable with one fsync, then publishes the deltas in offset order and answers every
//! waiting request. Nothing is acknowledged before it is on disk.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use fjall::PersistMode;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::catalogue::{self, Ks};
use crate::codec;
use crate::delta::{Delta, DeltaBody, DeltaDraft};
use crate::error::{Error, Result};
use crate::ids::{ConversationId, WorkspaceId};
use crate::store::Store;
use crate::time::now_millis;

/// How hard the committer works to make a group durable before acknowledging it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// fsync the journal once per group: survives process crashes and power loss.
    #[default]
    Fsync,
    /// Hand the journal to the OS only: survives a process crash, not a power loss.
    Buffered,
}

/// Most requests written as one group (one fsync).
const MAX_GROUP: usize = 4096;

/// Longest key a [`WriteSet`] may write or guard. fjall refuses (panics on) keys over
/// 65,535 bytes; ours are ids and bounded text (`catalogue` hashes long text), far below.
pub const MAX_KEY_BYTES: usize = 16 * 1024;
/// Largest value a [`WriteSet`] may write: far above any message a route accepts.
pub const MAX_VALUE_BYTES: usize = 32 * 1024 * 1024;

/// Everything one request writes, applied atomically or not at all.
#[derive(Default, Debug)]
pub struct WriteSet {
    ops: Vec<Op>,
    absent: Vec<(Ks, Vec<u8>)>,
    deltas: Vec<DeltaDraft>,
    /// When the input this set stores reached the process (a webhook's receipt), for the
    /// end-to-end latency metric; never stored.
    received: Option<Instant>,
}

#[derive(Debug)]
enum Op {
    Put(Ks, Vec<u8>, Vec<u8>),
    Delete(Ks, Vec<u8>),
    /// Adds to a big-endian i64 counter (absent = 0); a counter that reaches 0 is removed.
    Add(Ks, Vec<u8>, i64),
}

impl WriteSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` (codec-encoded) under `key`.
    pub fn put<T: Serialize + ?Sized>(&mut self, ks: Ks, key: Vec<u8>, value: &T) -> &mut Self {
        self.ops.push(Op::Put(ks, key, codec::encode(value)));
        self
    }

    /// Stores raw bytes (index entries, id references).
    pub fn put_raw(&mut self, ks: Ks, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Put(ks, key, value));
        self
    }

    pub fn delete(&mut self, ks: Ks, key: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Delete(ks, key));
        self
    }

    /// Adds `by` to the counter under `key`, read-modify-write on the committer thread so
    /// that concurrent writers never lose an update. Several adds to one key in a set are
    /// summed; do not also put or delete that key in the same set.
    pub fn add(&mut self, ks: Ks, key: Vec<u8>, by: i64) -> &mut Self {
        if by != 0 {
            self.ops.push(Op::Add(ks, key, by));
        }
        self
    }

    /// The whole set is refused with [`Error::AlreadyExists`] if `key` exists when the
    /// committer applies it: an atomic insert-if-absent (dedupe keys, unique indexes).
    pub fn require_absent(&mut self, ks: Ks, key: Vec<u8>) -> &mut Self {
        self.absent.push((ks, key));
        self
    }

    pub fn delta(
        &mut self,
        workspace_id: WorkspaceId,
        conversation_id: ConversationId,
        body: DeltaBody,
    ) -> &mut Self {
        self.deltas.push(DeltaDraft {
            workspace_id,
            conversation_id: Some(conversation_id),
            body,
        });
        self
    }

    /// A workspace-wide delta, about no conversation (a channel's status).
    pub fn workspace_delta(&mut self, workspace_id: WorkspaceId, body: DeltaBody) -> &mut Self {
        self.deltas.push(DeltaDraft {
            workspace_id,
            conversation_id: None,
            body,
        });
        self
    }

    /// Marks the set's deltas as caused by input received at `at`: listeners get the
    /// instant with the deltas (see [`DeltaListener::published_received`]).
    pub fn received_at(&mut self, at: Instant) -> &mut Self {
        self.received = Some(at);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.deltas.is_empty()
    }

    /// Refuses a set with an empty key, or a key or value over the limits
    /// ([`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`]): fjall would panic on them. Such a set is a
    /// bug upstream, never a reason to stop the store.
    fn check_sizes(&self) -> Result<()> {
        let keys = self
            .absent
            .iter()
            .map(|(ks, key)| (*ks, key))
            .chain(self.ops.iter().map(|op| match op {
                Op::Put(ks, key, _) | Op::Delete(ks, key) | Op::Add(ks, key, _) => (*ks, key),
            }));
        for (ks, key) in keys {
            if key.is_empty() {
                return Err(Error::TooLarge(format!("an empty {} key", ks.name())));
            }
            if key.len() > MAX_KEY_BYTES {
                return Err(Error::TooLarge(format!(
                    "a {} key of {} bytes (at most {MAX_KEY_BYTES})",
                    ks.name(),
                    key.len()
                )));
            }
        }
        for op in &self.ops {
            if let Op::Put(ks, _, value) = op {
                if value.len() > MAX_VALUE_BYTES {
                    return Err(Error::TooLarge(format!(
                        "a {} value of {} bytes (at most {MAX_VALUE_BYTES})",
                        ks.name(),
                        value.len()
                    )));
                }
            }
        }
        Ok(())
    }
}

impl WriteSet {
    pub(crate) fn to_wire(&self) -> crate::changelog::WireSet {
        use crate::changelog::WireOp;
        crate::changelog::WireSet {
            ops: self
                .ops
                .iter()
                .map(|op| match op {
                    Op::Put(ks, key, value) => {
                        WireOp::Put(ks.name().into(), key.clone(), value.clone())
                    }
                    Op::Delete(ks, key) => WireOp::Delete(ks.name().into(), key.clone()),
                    Op::Add(ks, key, by) => WireOp::Add(ks.name().into(), key.clone(), *by),
                })
                .collect(),
            absent: self
                .absent
                .iter()
                .map(|(ks, key)| crate::changelog::WireKey {
                    ks: ks.name().into(),
                    key: key.clone(),
                })
                .collect(),
            deltas: self.deltas.clone(),
        }
    }

    pub(crate) fn from_wire(wire: crate::changelog::WireSet) -> Result<WriteSet> {
        use crate::changelog::WireOp;
        // The store's bookkeeping (delta head, changelog position, epochs) is the
        // committer's own: an entry that writes or guards it is refused whole.
        let ks_named = |name: &str| match crate::changelog::ks_named(name)? {
            Ks::Meta => Err(Error::Corrupt(
                "a changelog entry writes the meta keyspace".into(),
            )),
            ks => Ok(ks),
        };
        let ops = wire
            .ops
            .into_iter()
            .map(|op| {
                Ok(match op {
                    WireOp::Put(ks, key, value) => Op::Put(ks_named(&ks)?, key, value),
                    WireOp::Delete(ks, key) => Op::Delete(ks_named(&ks)?, key),
                    WireOp::Add(ks, key, by) => Op::Add(ks_named(&ks)?, key, by),
                })
            })
            .collect::<Result<_>>()?;
        let absent = wire
            .absent
            .into_iter()
            .map(|k| Ok((ks_named(&k.ks)?, k.key)))
            .collect::<Result<_>>()?;
        Ok(WriteSet {
            ops,
            absent,
            deltas: wire.deltas,
            received: None,
        })
    }
}

/// What a committed request got.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Receipt {
    /// The offsets of the request's deltas, in the order they were added.
    pub offsets: Vec<u64>,
}

/// Receives every committed delta, in offset order, right after the group is durable.
/// Called on the committer thread: implementations must not block.
pub trait DeltaListener: Send + Sync + 'static {
    fn published(&self, deltas: &[Arc<Delta>]);

    /// Like [`DeltaListener::published`], with `received[i]` the instant the input that
    /// caused `deltas[i]` reached the process, when known ([`WriteSet::received_at`]).
    fn published_received(&self, deltas: &[Arc<Delta>], received: &[Option<Instant>]) {
        let _ = received;
        self.published(deltas);
    }
}

enum Command {
    Commit(Request),
    /// A changelog entry from the cluster (every node applies every entry, in order).
    Apply(ApplyRequest),
    /// Write what was queued before, then stop.
    Stop,
}

struct ApplyRequest {
    entry: crate::changelog::Entry,
    reply: oneshot::Sender<Result<crate::changelog::Applied>>,
}

struct Request {
    set: WriteSet,
    reply: oneshot::Sender<Result<Receipt>>,
    enqueued: Instant,
}

struct Shared {
    /// A cluster replica's committer: it applies changelog entries only (see
    /// [`Committer::start_replica`]).
    replica: bool,
    durable_head: AtomicU64,
    poisoned: AtomicBool,
    /// Why the store was poisoned (set once, before `poisoned`).
    poison_reason: Mutex<Option<String>>,
    queue_depth: AtomicUsize,
    listeners: RwLock<Vec<Arc<dyn DeltaListener>>>,
}

/// A handle to the committer; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

/// Owns the committer thread; [`CommitterThread::join`] waits until it stopped, after
/// [`Committer::close`] or once every [`Committer`] handle is dropped.
pub struct CommitterThread {
    handle: JoinHandle<()>,
}

impl CommitterThread {
    pub fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("committer thread panicked");
        }
    }
}

impl Committer {
    pub fn start(store: Store, durability: Durability) -> Result<(Committer, CommitterThread)> {
        Self::start_as(store, durability, false)
    }

    /// The committer of a cluster replica: it writes only what the changelog brings
    /// ([`Committer::apply`]) and refuses local commits, which would move this node's
    /// offsets and state away from the other replicas'.
    pub fn start_replica(
        store: Store,
        durability: Durability,
    ) -> Result<(Committer, CommitterThread)> {
        Self::start_as(store, durability, true)
    }

    fn start_as(
        store: Store,
        durability: Durability,
        replica: bool,
    ) -> Result<(Committer, CommitterThread)> {
        let head = store.delta_head()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            replica,
            durable_head: AtomicU64::new(head),
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(None),
            queue_depth: AtomicUsize::new(0),
            listeners: RwLock::new(Vec::new()),
        });
        let worker = Worker {
            store,
            durability,
            head,
            shared: shared.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("confab-committer".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| Error::Storage(format!("cannot start the committer thread: {e}")))?;
        Ok((Committer { tx, shared }, CommitterThread { handle }))
    }

    /// Adds a listener for deltas committed from now on.
    pub fn subscribe(&self, listener: Arc<dyn DeltaListener>) {
        self.shared
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
    }

    /// Commits `set`; resolves once it is durable (or refused).
    pub async fn commit(&self, set: WriteSet) -> Result<Receipt> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if self.shared.replica {
            return Err(Error::WrongCommitter(
                "a cluster replica writes through the changelog",
            ));
        }
        let (reply, answer) = oneshot::channel();
        self.shared.queue_depth.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            set,
            reply,
            enqueued: Instant::now(),
        };
        if self.tx.send(Command::Commit(request)).is_err() {
            self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::CommitterClosed);
        }
        answer.await.unwrap_or(Err(Error::CommitterClosed))
    }

    /// Applies a changelog entry (its position in the changelog, then its write sets as
    /// one group, under the entry's clock), unless it was applied already or its epoch is
    /// older than the newest applied for its partition: the same entries in the same order
    /// leave every node's store, and its delta offsets, the same. See
    /// [`crate::changelog`].
    pub async fn apply(&self, entry: crate::changelog::Entry) -> Result<crate::changelog::Applied> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if !self.shared.replica {
            return Err(Error::WrongCommitter(
                "a changelog is applied by a replica's committer (Committer::start_replica)",
            ));
        }
        let (reply, answer) = oneshot::channel();
        if self
            .tx
            .send(Command::Apply(ApplyRequest { entry, reply }))
            .is_err()
        {
            return Err(Error::CommitterClosed);
        }
        answer.await.unwrap_or(Err(Error::CommitterClosed))
    }

    /// Stops the committer once everything queued before this call is durable; later
    /// commits fail with [`Error::CommitterClosed`].
    pub fn close(&self) {
        let _ = self.tx.send(Command::Stop);
    }

    /// The last offset that is durable and published.
    pub fn durable_head(&self) -> u64 {
        self.shared.durable_head.load(Ordering::Acquire)
    }

    /// True once a storage failure (or a panic on the committer thread) made the store
    /// refuse writes. It stays poisoned until the process restarts.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Why the store refuses writes, once it does: for operators (`/readyz`, logs), never
    /// for API clients.
    pub fn poison_reason(&self) -> Option<String> {
        if !self.is_poisoned() {
            return None;
        }
        lock(&self.shared.poison_reason).clone()
    }

    /// Requests waiting to be written.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue_depth.load(Ordering::Relaxed)
    }
}

struct Worker {
    store: Store,
    durability: Durability,
    head: u64,
    shared: Arc<Shared>,
}

/// What a group will write, gathered request by request, then written as one batch.
/// Later requests of the group see earlier ones through it (guards, counters).
struct Pending {
    /// The last write of each key: a value, or `None` for a delete.
    writes: HashMap<(Ks, Vec<u8>), Option<Vec<u8>>>,
    /// Each counter's running total (stored value plus the group's adds).
    counters: HashMap<(Ks, Vec<u8>), i64>,
    /// The group's delta records, keys and encoded values.
    deltas: Vec<(Vec<u8>, Vec<u8>)>,
    /// The last offset given out.
    head: u64,
    published: Vec<Arc<Delta>>,
    received: Vec<Option<Instant>>,
}

impl Pending {
    fn new(head: u64) -> Self {
        Self {
            writes: HashMap::new(),
            counters: HashMap::new(),
            deltas: Vec::new(),
            head,
            published: Vec::new(),
            received: Vec::new(),
        }
    }
}

impl Worker {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut group = Vec::with_capacity(64);
        let mut stopping = false;
        while !stopping {
            let mut apply = None;
            match rx.blocking_recv() {
                Some(Command::Commit(first)) => group.push(first),
                Some(Command::Apply(request)) => apply = Some(request),
                Some(Command::Stop) | None => break,
            }
            while apply.is_none() && group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Command::Commit(request)) => group.push(request),
                    Ok(Command::Apply(request)) => apply = Some(request),
                    Ok(Command::Stop) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let waiting = self
                .shared
                .queue_depth
                .fetch_sub(group.len(), Ordering::Relaxed)
                .saturating_sub(group.len());
            metrics::gauge!(crate::metrics::COMMIT_QUEUE_DEPTH).set(waiting as f64);
            if !group.is_empty() {
                self.commit_group(&mut group);
            }
            if let Some(request) = apply {
                let outcome = self.apply_entry(request.entry);
                let _ = request.reply.send(outcome);
            }
        }
        rx.close();
        // Requests that raced with the stop are refused, never left hanging.
        while let Ok(command) = rx.try_recv() {
            match command {
                Command::Commit(request) => {
                    let _ = request.reply.send(Err(Error::CommitterClosed));
                }
                Command::Apply(request) => {
                    let _ = request.reply.send(Err(Error::CommitterClosed));
                }
                Command::Stop => {}
            }
        }
        if let Err(e) = self.store.db().persist(PersistMode::SyncAll) {
            tracing::error!(error = %e, "final persist failed");
        }
        tracing::debug!("committer stopped");
    }

    fn commit_group(&mut self, group: &mut Vec<Request>) {
        let started = Instant::now();
        let size = group.len();
        let mut sets = Vec::with_capacity(size);
        let mut replies = Vec::with_capacity(size);
        for request in group.drain(..) {
            metrics::histogram!(crate::metrics::COMMIT_WAIT_SECONDS)
                .record(request.enqueued.elapsed().as_secs_f64());
            sets.push(request.set);
            replies.push(request.reply);
        }
        let outcomes = self
            .write_guarded(sets, now_millis(), Vec::new())
            .unwrap_or_else(|| (0..size).map(|_| Err(Error::Poisoned)).collect());
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The requester may have gone away; its write stands.
            let _ = reply.send(outcome);
        }
        metrics::histogram!(crate::metrics::COMMIT_GROUP_SIZE).record(size as f64);
        metrics::histogram!(crate::metrics::COMMIT_GROUP_SECONDS)
            .record(started.elapsed().as_secs_f64());
    }

    /// [`Worker::write_and_publish`], with a panic caught: a panic while writing (a bug,
    /// or a storage library's assertion) must not take the thread and every later write
    /// down silently: it poisons the store (`None`), so writes are refused with a clear
    /// error and readiness fails. The poison is set before anyone is answered.
    fn write_guarded(
        &mut self,
        sets: Vec<WriteSet>,
        at: crate::time::UnixMillis,
        meta: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Option<Vec<Result<Receipt>>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.write_and_publish(sets, at, meta)
        }))
        .map_err(|panic| {
            self.poison(&format!("the committer panicked: {}", panic_text(&*panic)));
        })
        .ok()
    }

    /// Applies a changelog entry as one group (see [`crate::changelog`]).
    fn apply_entry(&mut self, entry: crate::changelog::Entry) -> Result<crate::changelog::Applied> {
        use crate::changelog::{meta_epoch_key, Applied, META_APPLIED};
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        let read = |key: &[u8]| -> Result<u64> {
            match self.store.get_raw(Ks::Meta, key)? {
                None => Ok(0),
                Some(v) => <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| Error::Corrupt("the changelog's bookkeeping in meta".into())),
            }
        };
        let applied = read(META_APPLIED).inspect_err(|e| self.poison(&e.to_string()))?;
        if entry.position <= applied {
            return Ok(Applied::AlreadyApplied);
        }
        let epoch_key = meta_epoch_key(entry.partition);
        let newest = read(&epoch_key).inspect_err(|e| self.poison(&e.to_string()))?;
        let position = (META_APPLIED.to_vec(), entry.position.to_be_bytes().to_vec());
        let fenced = entry.epoch < newest;
        let mut meta = vec![position];
        if entry.epoch > newest {
            meta.push((epoch_key, entry.epoch.to_be_bytes().to_vec()));
        }
        let sets = if fenced { Vec::new() } else { entry.sets };
        let Some(outcomes) = self.write_guarded(sets, entry.at, meta) else {
            return Err(Error::Poisoned);
        };
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        Ok(if fenced {
            Applied::Fenced {
                newest_epoch: newest,
            }
        } else {
            Applied::Sets(outcomes)
        })
    }

    /// Stages every set of the group, writes them as one batch, makes it durable and
    /// publishes its deltas: each set's outcome, in order. The deltas are stamped `at`;
    /// `meta` is written in the same batch (even when every set was refused: a changelog
    /// position).
    fn write_and_publish(
        &mut self,
        sets: Vec<WriteSet>,
        at: crate::time::UnixMillis,
        meta: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Vec<Result<Receipt>> {
        let mut pending = Pending::new(self.head);
        let mut outcomes = Vec::with_capacity(sets.len());
        for set in sets {
            let outcome = if self.shared.poisoned.load(Ordering::Acquire) {
                Err(Error::Poisoned)
            } else {
                self.stage(set, &mut pending, at)
            };
            outcomes.push(outcome);
        }
        for (key, value) in meta {
            pending.writes.insert((Ks::Meta, key), Some(value));
        }

        if outcomes.iter().any(Result::is_ok) || !pending.writes.is_empty() {
            let durable = self.write_group(&mut pending);
            if let Err(e) = durable {
                self.poison(&e.to_string());
                for outcome in &mut outcomes {
                    if outcome.is_ok() {
                        *outcome = Err(Error::Poisoned);
                    }
                }
                pending.published.clear();
                pending.received.clear();
            } else {
                self.head = pending.head;
            }
        }

        if let Some(last) = pending.published.last() {
            let last: &Arc<Delta> = last;
            self.shared
                .durable_head
                .store(last.offset, Ordering::Release);
            let listeners = self
                .shared
                .listeners
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for listener in &listeners {
                listener.published_received(&pending.published, &pending.received);
            }
            metrics::gauge!(crate::metrics::DELTA_HEAD).set(last.offset as f64);
        }
        outcomes
    }

    /// Adds one request to the group's pending writes, or refuses it whole (a guard
    /// failed, or a read failed: then the store is poisoned and the group is dropped).
    /// Deltas get their offsets here.
    fn stage(
        &mut self,
        set: WriteSet,
        pending: &mut Pending,
        now: crate::time::UnixMillis,
    ) -> Result<Receipt> {
        set.check_sizes()?;
        for (ks, key) in &set.absent {
            // The group's earlier requests first: a write, or a counter they moved (a
            // counter at 0 is removed).
            let earlier = pending
                .writes
                .get(&(*ks, key.clone()))
                .map(Option::is_some)
                .or_else(|| pending.counters.get(&(*ks, key.clone())).map(|n| *n != 0));
            let exists = match earlier {
                Some(exists) => exists,
                None => self.store.contains(*ks, key).inspect_err(|e| {
                    self.poison(&e.to_string());
                })?,
            };
            if exists {
                return Err(Error::AlreadyExists);
            }
        }
        // Counter reads first: a failed read refuses the request before it wrote anything.
        for op in &set.ops {
            if let Op::Add(ks, key, _) = op {
                if let Entry::Vacant(slot) = pending.counters.entry((*ks, key.clone())) {
                    let current = self.store.get_raw(*ks, key).inspect_err(|e| {
                        self.poison(&e.to_string());
                    })?;
                    slot.insert(current.map_or(0, |v| decode_counter(&v)));
                }
            }
        }
        for op in set.ops {
            match op {
                Op::Put(ks, key, value) => {
                    pending.writes.insert((ks, key), Some(value));
                }
                Op::Delete(ks, key) => {
                    pending.writes.insert((ks, key), None);
                }
                Op::Add(ks, key, by) => {
                    // Read above; the group's single writer makes the running sum exact.
                    if let Some(total) = pending.counters.get_mut(&(ks, key)) {
                        *total = total.saturating_add(by);
                    }
                }
            }
        }
        let mut offsets = Vec::with_capacity(set.deltas.len());
        for draft in set.deltas {
            pending.head += 1;
            let delta = Delta {
                offset: pending.head,
                workspace_id: draft.workspace_id,
                conversation_id: draft.conversation_id,
                at: now,
                body: draft.body,
            };
            pending.deltas.push((
                catalogue::ws_delta(delta.workspace_id, pending.head),
                codec::encode(&delta),
            ));
            offsets.push(pending.head);
            pending.published.push(Arc::new(delta));
            pending.received.push(set.received);
        }
        Ok(Receipt { offsets })
    }

    /// Writes the group's pending writes as one atomic batch and makes it durable.
    fn write_group(&mut self, pending: &mut Pending) -> Result<()> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        let mut batch = self.store.db().batch();
        for ((ks, key), write) in pending.writes.drain() {
            match write {
                Some(value) => batch.insert(self.store.ks(ks), key, value),
                None => batch.remove(self.store.ks(ks), key),
            }
        }
        for ((ks, key), total) in pending.counters.drain() {
            match total {
                0 => batch.remove(self.store.ks(ks), key),
                total => batch.insert(self.store.ks(ks), key, total.to_be_bytes().to_vec()),
            }
        }
        for (key, value) in pending.deltas.drain(..) {
            batch.insert(self.store.ks(Ks::WsDelta), key, value);
        }
        if pending.head != self.head {
            batch.insert(
                self.store.ks(Ks::Meta),
                catalogue::META_DELTA_HEAD.to_vec(),
                pending.head.to_be_bytes().to_vec(),
            );
        }
        batch.commit()?;
        let mode = match self.durability {
            Durability::Fsync => PersistMode::SyncAll,
            Durability::Buffered => PersistMode::Buffer,
        };
        let fsync_started = Instant::now();
        self.store.db().persist(mode)?;
        metrics::histogram!(crate::metrics::FSYNC_SECONDS)
            .record(fsync_started.elapsed().as_secs_f64());
        Ok(())
    }

    fn poison(&self, why: &str) {
        {
            let mut reason = lock(&self.shared.poison_reason);
            if reason.is_none() {
                *reason = Some(why.to_owned());
            }
        }
        if !self.shared.poisoned.swap(true, Ordering::AcqRel) {
            metrics::gauge!(crate::metrics::STORE_POISONED).set(1.0);
            tracing::error!(error = why, "store failure: refusing all further writes");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The message a panic carried, when it is text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A counter's value as [`WriteSet::add`] stores it; anything unreadable counts as 0.
pub fn decode_counter(bytes: &[u8]) -> i64 {
    bytes.try_into().map_or(0, i64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::ids::ConversationId;
    use crate::store::StoreOptions;

    struct Recorder(Mutex<Vec<u64>>);
    impl DeltaListener for Recorder {
        fn published(&self, deltas: &[Arc<Delta>]) {
            self.0
                .lock()
                .expect("lock")
                .extend(deltas.iter().map(|d| d.offset));
        }
    }

    fn notification(set: &mut WriteSet, ws: WorkspaceId) {
        set.delta(
            ws,
            ConversationId::new(),
            DeltaBody::Notification {
                agent_id: crate::ids::AgentId::new(),
                reason: crate::delta::NotificationReason::Mention,
                message_id: None,
                by_agent_id: None,
                notification: None,
            },
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_get_contiguous_offsets_published_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Fsync).expect("start");
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        committer.subscribe(recorder.clone());
        let ws = WorkspaceId::new();

        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let committer = committer.clone();
            tasks.push(tokio::spawn(async move {
                let mut set = WriteSet::new();
                set.put_raw(Ks::Meta, format!("k{i}").into_bytes(), vec![1]);
                notification(&mut set, ws);
                notification(&mut set, ws);
                committer.commit(set).await
            }));
        }
        let mut all_offsets = Vec::new();
        for task in tasks {
            let receipt = task.await.expect("join").expect("commit");
            assert_eq!(receipt.offsets.len(), 2);
            assert_eq!(
                receipt.offsets[1],
                receipt.offsets[0] + 1,
                "one request's deltas are adjacent"
            );
            all_offsets.extend(receipt.offsets);
        }
        all_offsets.sort_unstable();
        assert_eq!(all_offsets, (1..=400).collect::<Vec<_>>());
        assert_eq!(
            *recorder.0.lock().expect("lock"),
            (1..=400).collect::<Vec<_>>()
        );
        assert_eq!(committer.durable_head(), 400);
        assert_eq!(store.delta_head().expect("head"), 400);
        let stored = store.deltas_between(ws, 0, 400, 1000).expect("deltas");
        assert_eq!(stored.len(), 400);
        assert!(stored.windows(2).all(|w| w[0].offset < w[1].offset));
        assert_eq!(
            store
                .deltas_between(ws, 390, 395, 100)
                .expect("deltas")
                .len(),
            5
        );
        drop(committer);
        thread.join();
    }

    #[tokio::test]
    async fn require_absent_refuses_the_whole_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Fsync).expect("start");
        let ws = WorkspaceId::new();
        let mut first = WriteSet::new();
        first.require_absent(Ks::ExtMsg, b"dedupe".to_vec());
        first.put_raw(Ks::ExtMsg, b"dedupe".to_vec(), vec![1]);
        notification(&mut first, ws);
        assert_eq!(
            committer.commit(first).await.expect("first").offsets,
            vec![1]
        );

        let mut again = WriteSet::new();
        again.require_absent(Ks::ExtMsg, b"dedupe".to_vec());
        again.put_raw(Ks::Meta, b"side-effect".to_vec(), vec![1]);
        notification(&mut again, ws);
        assert!(matches!(
            committer.commit(again).await,
            Err(Error::AlreadyExists)
        ));
        assert!(!store.contains(Ks::Meta, b"side-effect").expect("read"));
        assert_eq!(committer.durable_head(), 1);
        drop(committer);
        thread.join();
    }

    /// Requests racing for one guard key in one group (one batch): exactly one wins, the
    /// others write nothing.
    #[tokio::test]
    async fn racing_guards_in_one_group_let_exactly_one_request_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Fsync).expect("start");
        let ws = WorkspaceId::new();
        // A big first request keeps the committer busy while the racers queue up behind
        // it, so they are drained as one group.
        let mut big = WriteSet::new();
        for i in 0..20_000u32 {
            big.put_raw(Ks::Meta, format!("big-{i}").into_bytes(), vec![0; 64]);
        }
        let mut commits = vec![committer.commit(big)];
        for i in 0..64u32 {
            let mut set = WriteSet::new();
            set.require_absent(Ks::ExtMsg, b"same".to_vec());
            set.put_raw(Ks::ExtMsg, b"same".to_vec(), i.to_be_bytes().to_vec());
            set.put_raw(Ks::Meta, format!("side-{i}").into_bytes(), vec![1]);
            notification(&mut set, ws);
            commits.push(committer.commit(set));
        }
        let mut outcomes = futures_util::future::join_all(commits).await.into_iter();
        outcomes.next().expect("big").expect("big commit");
        let mut winners = Vec::new();
        for (i, outcome) in outcomes.enumerate() {
            match outcome {
                Ok(receipt) => winners.push((i as u32, receipt.offsets)),
                Err(Error::AlreadyExists) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(winners, vec![(0, vec![1])], "the first queued racer wins");
        assert_eq!(
            store.get_raw(Ks::ExtMsg, b"same").expect("read").as_deref(),
            Some(&0u32.to_be_bytes()[..])
        );
        for i in 0..64u32 {
            let side = store
                .contains(Ks::Meta, format!("side-{i}").as_bytes())
                .expect("read");
            assert_eq!(side, i == 0, "side effect of request {i}");
        }
        assert_eq!(committer.durable_head(), 1);
        drop(committer);
        thread.join();
    }

    /// A guard sees a counter an earlier request of the same group created.
    #[tokio::test]
    async fn a_guard_sees_a_counter_moved_earlier_in_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Fsync).expect("start");
        let mut big = WriteSet::new();
        for i in 0..20_000u32 {
            big.put_raw(Ks::Meta, format!("big-{i}").into_bytes(), vec![0; 64]);
        }
        let mut adds = WriteSet::new();
        adds.add(Ks::FacetCount, b"c".to_vec(), 1);
        let mut guarded = WriteSet::new();
        guarded
            .require_absent(Ks::FacetCount, b"c".to_vec())
            .put_raw(Ks::Meta, b"guarded".to_vec(), vec![1]);
        let (big, adds, guarded) = tokio::join!(
            committer.commit(big),
            committer.commit(adds),
            committer.commit(guarded)
        );
        big.expect("big");
        adds.expect("adds");
        assert!(matches!(guarded, Err(Error::AlreadyExists)));
        assert!(!store.contains(Ks::Meta, b"guarded").expect("read"));
        drop(committer);
        thread.join();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_adds_are_exact_and_zero_removes_the_counter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Buffered).expect("start");
        let count = |store: &Store| {
            store
                .get_raw(Ks::FacetCount, b"n")
                .expect("read")
                .map(|v| decode_counter(&v))
        };
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let committer = committer.clone();
            tasks.push(tokio::spawn(async move {
                let mut set = WriteSet::new();
                // Two adds to one key in one set are summed.
                set.add(Ks::FacetCount, b"n".to_vec(), 2);
                set.add(Ks::FacetCount, b"n".to_vec(), 1);
                committer.commit(set).await
            }));
        }
        for task in tasks {
            task.await.expect("join").expect("commit");
        }
        assert_eq!(count(&store), Some(300));
        let mut set = WriteSet::new();
        set.add(Ks::FacetCount, b"n".to_vec(), -300);
        committer.commit(set).await.expect("commit");
        assert_eq!(count(&store), None, "a zero counter is removed");
        drop(committer);
        thread.join();
    }

    #[tokio::test]
    async fn an_oversize_key_or_value_is_refused_and_the_store_keeps_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Fsync).expect("start");
        let ws = WorkspaceId::new();
        // Past fjall's own limit (65,535 bytes), which panicked the committer thread.
        let huge_key = vec![b'k'; 70_000];
        let cases = [
            {
                let mut set = WriteSet::new();
                set.put_raw(Ks::Meta, huge_key.clone(), vec![1]);
                set
            },
            {
                let mut set = WriteSet::new();
                set.require_absent(Ks::ExtMsg, huge_key.clone());
                set
            },
            {
                let mut set = WriteSet::new();
                set.add(Ks::FacetCount, huge_key.clone(), 1);
                set
            },
            {
                let mut set = WriteSet::new();
                set.delete(Ks::Meta, vec![b'k'; MAX_KEY_BYTES + 1]);
                set
            },
            {
                let mut set = WriteSet::new();
                set.put_raw(Ks::Meta, b"big".to_vec(), vec![0; MAX_VALUE_BYTES + 1]);
                set
            },
            {
                // fjall asserts on an empty key too.
                let mut set = WriteSet::new();
                set.put_raw(Ks::ExtMsg, Vec::new(), vec![1]);
                set
            },
        ];
        for mut set in cases {
            set.put_raw(Ks::Meta, b"side-effect".to_vec(), vec![1]);
            notification(&mut set, ws);
            assert!(matches!(
                committer.commit(set).await,
                Err(Error::TooLarge(_))
            ));
        }
        assert!(!store.contains(Ks::Meta, b"side-effect").expect("read"));
        assert!(!committer.is_poisoned());
        assert_eq!(committer.durable_head(), 0, "refused sets publish nothing");
        let mut fine = WriteSet::new();
        fine.put_raw(Ks::Meta, vec![b'k'; MAX_KEY_BYTES], vec![1]);
        notification(&mut fine, ws);
        assert_eq!(
            committer.commit(fine).await.expect("commit").offsets,
            vec![1]
        );
        drop(committer);
        thread.join();
    }

    /// Anything that panics on the committer thread poisons the store: writes are refused
    /// from then on, with the reason kept for readiness.
    #[tokio::test]
    async fn a_panic_on_the_committer_thread_poisons_the_store() {
        struct Panics;
        impl DeltaListener for Panics {
            fn published(&self, _: &[Arc<Delta>]) {
                panic!("listener bug");
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Fsync).expect("start");
        assert_eq!(committer.poison_reason(), None);
        committer.subscribe(Arc::new(Panics));
        let ws = WorkspaceId::new();
        let mut set = WriteSet::new();
        notification(&mut set, ws);
        assert!(committer.commit(set).await.is_err());
        assert!(committer.is_poisoned());
        let reason = committer.poison_reason().expect("a reason");
        assert!(
            reason.contains("panicked") && reason.contains("listener bug"),
            "{reason}"
        );
        let mut later = WriteSet::new();
        later.put_raw(Ks::Meta, b"later".to_vec(), vec![1]);
        assert!(matches!(
            committer.commit(later).await,
            Err(Error::Poisoned)
        ));
        assert!(!store.contains(Ks::Meta, b"later").expect("read"));
        drop(committer);
        thread.join();
    }

    #[tokio::test]
    async fn offsets_continue_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = WorkspaceId::new();
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            let (committer, thread) = Committer::start(store, Durability::Fsync).expect("start");
            let mut set = WriteSet::new();
            notification(&mut set, ws);
            notification(&mut set, ws);
            committer.commit(set).await.expect("commit");
            drop(committer);
            thread.join();
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        let (committer, thread) = Committer::start(store, Durability::Fsync).expect("start");
        assert_eq!(committer.durable_head(), 2);
        let mut set = WriteSet::new();
        notification(&mut set, ws);
        assert_eq!(
            committer.commit(set).await.expect("commit").offsets,
            vec![3]
        );
        drop(committer);
        thread.join();
    }
}
