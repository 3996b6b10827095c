//! The delta hub: fans committed deltas out to the WebSocket sessions of their workspace.
//!
//! The committer hands each durable group to a [`FanoutThread`], so its own thread, the
//! store's single writer, only passes pointers on. On the fan-out thread [`Hub::published`]
//! runs in offset order and must not block: each delta is encoded once, the deltas of one
//! workspace become one shared [`Batch`], and every session of that workspace gets a
//! pointer to it through a non-blocking send. A session is bounded by the frames it has
//! queued and not yet written ([`StreamConfig::queue_capacity`]); one that would go past
//! it is marked slow and dropped from the hub, and its task closes it with a resync hint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use confab_engine::committer::DeltaListener;
use confab_engine::delta::Delta;
use confab_engine::ids::WorkspaceId;
use dashmap::DashMap;
use tokio::sync::mpsc;

use super::metrics;
use crate::config::StreamConfig;

/// Routes committed deltas to the sessions of their workspace.
pub struct Hub {
    queue_capacity: usize,
    workspaces: DashMap<WorkspaceId, HashMap<u64, Outlet>>,
    next_session: AtomicU64,
    clients: AtomicUsize,
}

/// One delta, encoded once as its wire frame.
#[derive(Debug)]
pub struct Frame {
    pub offset: u64,
    pub text: Utf8Bytes,
    /// When the webhook that caused the delta was received, if one did.
    pub received: Option<Instant>,
}

/// The deltas of one workspace from one committed group, shared by all its sessions.
#[derive(Debug)]
pub struct Batch {
    pub published_at: Instant,
    pub frames: Vec<Frame>,
}

/// What the hub and a session share about the session's queue.
#[derive(Debug, Default)]
struct QueueState {
    /// Frames queued and not yet written to the socket.
    queued: AtomicUsize,
    /// Set by the hub when the queue overflowed; the session then closes.
    slow: AtomicBool,
}

/// The hub's end of a session's queue.
struct Outlet {
    tx: mpsc::UnboundedSender<Arc<Batch>>,
    state: Arc<QueueState>,
}

impl Outlet {
    /// Queues `batch`; false when the session must leave the hub (too slow, or gone).
    ///
    /// A batch always fits into an empty queue, so a group larger than the capacity does
    /// not disconnect a client that keeps up; otherwise a session may hold at most
    /// `capacity` frames, plus one batch.
    fn offer(&self, batch: &Arc<Batch>, capacity: usize) -> bool {
        let len = batch.frames.len();
        let queued = self.state.queued.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(len) > capacity {
            self.state.slow.store(true, Ordering::Release);
            return false;
        }
        self.state.queued.fetch_add(len, Ordering::AcqRel);
        self.tx.send(batch.clone()).is_ok()
    }
}

/// A session's registration in the hub: its queue of live batches. Dropping it leaves
/// the hub.
pub struct Subscription {
    hub: Arc<Hub>,
    workspace: WorkspaceId,
    id: u64,
    rx: mpsc::UnboundedReceiver<Arc<Batch>>,
    state: Arc<QueueState>,
}

impl Subscription {
    /// The next live batch; `None` once the hub dropped this session (see [`Self::is_slow`]).
    pub async fn recv(&mut self) -> Option<Arc<Batch>> {
        self.rx.recv().await
    }

    /// The next live batch if one is already queued.
    pub fn try_recv(&mut self) -> Option<Arc<Batch>> {
        self.rx.try_recv().ok()
    }

    /// `frames` queued frames were written (or skipped): they no longer count against
    /// the queue's capacity.
    pub fn written(&self, frames: usize) {
        self.state.queued.fetch_sub(frames, Ordering::AcqRel);
    }

    /// True once the queue overflowed: the session must close and the client resume.
    pub fn is_slow(&self) -> bool {
        self.state.slow.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unregister(self.workspace, self.id);
    }
}

/// Counts an open connection for as long as it lives.
pub struct ClientGuard {
    hub: Arc<Hub>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let now = self.hub.clients.fetch_sub(1, Ordering::AcqRel) - 1;
        ::metrics::gauge!(metrics::WS_CLIENTS).set(now as f64);
    }
}

impl Hub {
    pub fn new(config: StreamConfig) -> Arc<Hub> {
        Arc::new(Hub {
            queue_capacity: config.queue_capacity.max(1),
            workspaces: DashMap::new(),
            next_session: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
        })
    }

    /// Starts queueing the deltas of `workspace` published from now on.
    ///
    /// To resume without a gap, register first and only then read the store up to
    /// [`confab_engine::committer::Committer::durable_head`]: any delta published after
    /// the registration is queued, and any published before it is at or below that head.
    pub fn register(self: &Arc<Self>, workspace: WorkspaceId) -> Subscription {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(QueueState::default());
        self.workspaces.entry(workspace).or_default().insert(
            id,
            Outlet {
                tx,
                state: state.clone(),
            },
        );
        Subscription {
            hub: self.clone(),
            workspace,
            id,
            rx,
            state,
        }
    }

    fn unregister(&self, workspace: WorkspaceId, id: u64) {
        let now_empty = match self.workspaces.get_mut(&workspace) {
            Some(mut sessions) => {
                sessions.remove(&id);
                sessions.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.workspaces
                .remove_if(&workspace, |_, sessions| sessions.is_empty());
        }
    }

    /// Counts a new connection in `confab_ws_clients` until the guard drops.
    pub fn client_connected(self: &Arc<Self>) -> ClientGuard {
        let now = self.clients.fetch_add(1, Ordering::AcqRel) + 1;
        ::metrics::gauge!(metrics::WS_CLIENTS).set(now as f64);
        ClientGuard { hub: self.clone() }
    }

    /// Open connections.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }

    /// Sessions registered for live deltas.
    pub fn subscribed_sessions(&self) -> usize {
        self.workspaces.iter().map(|sessions| sessions.len()).sum()
    }
}

type Group = (Vec<Arc<Delta>>, Vec<Option<Instant>>);

/// Runs the hub's encoding and fan-out on a thread of its own, one group at a time in the
/// order the committer published them. Sessions resume correctly even while it lags: the
/// committer advances its durable head before handing a group over, and sessions skip
/// offsets they already sent.
pub struct FanoutThread {
    hub: Arc<Hub>,
    groups: std::sync::mpsc::Sender<Group>,
}

impl FanoutThread {
    /// Starts the thread; it ends when the returned listener is dropped.
    pub fn start(hub: Arc<Hub>) -> std::io::Result<Arc<FanoutThread>> {
        let (groups, incoming) = std::sync::mpsc::channel::<Group>();
        let fanout_hub = hub.clone();
        std::thread::Builder::new()
            .name("confab-fanout".into())
            .spawn(move || {
                while let Ok((deltas, received)) = incoming.recv() {
                    fanout_hub.published_received(&deltas, &received);
                }
            })?;
        Ok(Arc::new(FanoutThread { hub, groups }))
    }
}

impl DeltaListener for FanoutThread {
    fn published(&self, deltas: &[Arc<Delta>]) {
        self.published_received(deltas, &[]);
    }

    fn published_received(&self, deltas: &[Arc<Delta>], received: &[Option<Instant>]) {
        // Nobody listening: nothing to hand over (a session registering later reads the
        // store up to the durable head, which already covers these deltas).
        if self.hub.workspaces.is_empty() {
            return;
        }
        let _ = self.groups.send((deltas.to_vec(), received.to_vec()));
    }
}

impl DeltaListener for Hub {
    fn published(&self, deltas: &[Arc<Delta>]) {
        self.published_received(deltas, &[]);
    }

    fn published_received(&self, deltas: &[Arc<Delta>], received: &[Option<Instant>]) {
        if self.workspaces.is_empty() {
            return;
        }
        let published_at = Instant::now();
        // Workspace → its frames, or `None` when nobody listens (then nothing is encoded).
        let mut groups: HashMap<WorkspaceId, Option<Vec<Frame>>> = HashMap::new();
        for (i, delta) in deltas.iter().enumerate() {
            let group = groups.entry(delta.workspace_id).or_insert_with(|| {
                self.workspaces
                    .contains_key(&delta.workspace_id)
                    .then(Vec::new)
            });
            if let Some(frames) = group {
                frames.push(Frame {
                    offset: delta.offset,
                    text: Utf8Bytes::from(delta.to_json()),
                    received: received.get(i).copied().flatten(),
                });
            }
        }
        for (workspace, frames) in groups {
            let Some(frames) = frames else { continue };
            let batch = Arc::new(Batch {
                published_at,
                frames,
            });
            let now_empty = match self.workspaces.get_mut(&workspace) {
                Some(mut sessions) => {
                    sessions.retain(|_, outlet| outlet.offer(&batch, self.queue_capacity));
                    sessions.is_empty()
                }
                None => false,
            };
            if now_empty {
                self.workspaces
                    .remove_if(&workspace, |_, sessions| sessions.is_empty());
            }
        }
    }
}

/// The frames of `batch` a session whose every offset up to `cursor` is already
/// delivered still has to send: replay and live queue overlap around the head read at
/// subscription, and this is where each offset is kept exactly once.
pub fn unsent(batch: &Batch, cursor: u64) -> impl Iterator<Item = &Frame> {
    batch
        .frames
        .iter()
        .filter(move |frame| frame.offset > cursor)
}

#[cfg(test)]
mod tests {
    use confab_engine::delta::{DeltaBody, NotificationReason};
    use confab_engine::ids::{AgentId, ConversationId};

    use super::*;

    fn hub(capacity: usize) -> Arc<Hub> {
        Hub::new(StreamConfig {
            queue_capacity: capacity,
            ..StreamConfig::default()
        })
    }

    fn delta(workspace: WorkspaceId, offset: u64) -> Arc<Delta> {
        Arc::new(Delta {
            offset,
            workspace_id: workspace,
            conversation_id: Some(ConversationId::new()),
            at: 0,
            body: DeltaBody::Notification {
                agent_id: AgentId::new(),
                reason: NotificationReason::Mention,
                message_id: None,
                by_agent_id: None,
                notification: None,
            },
        })
    }

    fn offsets(batch: &Batch) -> Vec<u64> {
        batch.frames.iter().map(|f| f.offset).collect()
    }

    #[test]
    fn deltas_go_only_to_their_workspace() {
        let hub = hub(16);
        let (a, b, quiet) = (WorkspaceId::new(), WorkspaceId::new(), WorkspaceId::new());
        let mut a1 = hub.register(a);
        let mut a2 = hub.register(a);
        let mut b1 = hub.register(b);
        hub.published(&[delta(a, 1), delta(b, 2), delta(quiet, 3), delta(a, 4)]);

        for session in [&mut a1, &mut a2] {
            let batch = session.try_recv().expect("a batch for a");
            assert_eq!(offsets(&batch), vec![1, 4]);
            let v: serde_json::Value = serde_json::from_str(&batch.frames[0].text).expect("json");
            assert_eq!(v["type"], "delta");
            assert_eq!(v["offset"], 1);
            assert!(session.try_recv().is_none());
        }
        let batch = b1.try_recv().expect("a batch for b");
        assert_eq!(offsets(&batch), vec![2]);
        assert!(b1.try_recv().is_none());
    }

    #[test]
    fn sessions_of_a_workspace_share_one_encoding() {
        let hub = hub(16);
        let ws = WorkspaceId::new();
        let mut one = hub.register(ws);
        let mut two = hub.register(ws);
        hub.published(&[delta(ws, 1)]);
        let (x, y) = (one.try_recv().expect("one"), two.try_recv().expect("two"));
        assert!(Arc::ptr_eq(&x, &y));
    }

    #[test]
    fn dropping_a_subscription_leaves_the_hub() {
        let hub = hub(16);
        let ws = WorkspaceId::new();
        let one = hub.register(ws);
        let two = hub.register(ws);
        assert_eq!(hub.subscribed_sessions(), 2);
        drop(one);
        assert_eq!(hub.subscribed_sessions(), 1);
        drop(two);
        assert_eq!(hub.subscribed_sessions(), 0);
        assert!(hub.workspaces.is_empty());
        hub.published(&[delta(ws, 1)]);
    }

    #[test]
    fn an_overflowing_queue_marks_the_session_slow_and_drops_it() {
        let hub = hub(2);
        let ws = WorkspaceId::new();
        let mut slow = hub.register(ws);
        let mut fast = hub.register(ws);
        for offset in 1..=3 {
            hub.published(&[delta(ws, offset)]);
            // `fast` keeps up: it writes each batch as it comes.
            let batch = fast.try_recv().expect("fast gets every batch");
            fast.written(batch.frames.len());
        }
        assert!(slow.is_slow());
        assert!(!fast.is_slow());
        assert_eq!(hub.subscribed_sessions(), 1);
        // What was queued before the overflow is still there, then the queue ends.
        assert_eq!(slow.try_recv().map(|b| offsets(&b)), Some(vec![1]));
        assert_eq!(slow.try_recv().map(|b| offsets(&b)), Some(vec![2]));
        assert!(slow.try_recv().is_none());
        assert!(slow.rx.is_closed());
    }

    #[test]
    fn a_large_group_fits_into_an_empty_queue() {
        let hub = hub(2);
        let ws = WorkspaceId::new();
        let mut session = hub.register(ws);
        hub.published(&(1..=10).map(|o| delta(ws, o)).collect::<Vec<_>>());
        assert!(!session.is_slow());
        let batch = session.try_recv().expect("batch");
        assert_eq!(batch.frames.len(), 10);
        session.written(batch.frames.len());
        hub.published(&[delta(ws, 11)]);
        assert!(!session.is_slow());
        // 1 queued + 10 more > 2: now it is behind.
        hub.published(&(12..=21).map(|o| delta(ws, o)).collect::<Vec<_>>());
        assert!(session.is_slow());
    }

    #[test]
    fn unsent_skips_what_the_replay_already_delivered() {
        let batch = Batch {
            published_at: Instant::now(),
            frames: (5..=8)
                .map(|offset| Frame {
                    offset,
                    text: Utf8Bytes::from(offset.to_string()),
                    received: None,
                })
                .collect(),
        };
        let left = |cursor| unsent(&batch, cursor).map(|f| f.offset).collect::<Vec<_>>();
        assert_eq!(left(0), vec![5, 6, 7, 8]);
        assert_eq!(left(6), vec![7, 8]);
        assert_eq!(left(8), Vec::<u64>::new());
        assert_eq!(left(100), Vec::<u64>::new());
    }
}
