//! The changelog on JetStream: the owner of a partition publishes its committed write sets
//! to [`crate::CHANGES_STREAM`]; every node (the owner too) reads the stream in its order
//! and applies each entry through its own committer ([`confab_engine::changelog`]), so
//! every node's store is the same replica. The owner learns what its write did (each set's
//! offsets, or the guard that refused it) from its own node's applying, which is also when
//! its deltas reach its stream clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use bytes::Bytes;
use confab_engine::changelog::{Applied, Entry};
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::store::Store;
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use crate::{Cluster, ClusterError, CHANGES_STREAM, CHANGES_SUBJECT};

/// A node's reading and writing of the changelog; cheap to clone. Dropping every clone
/// stops the reading.
#[derive(Clone)]
pub struct Changelog {
    cluster: Cluster,
    waiting: Waiting,
    applied: watch::Receiver<u64>,
    next_id: Arc<AtomicU64>,
    incarnation: String,
    _task: Arc<crate::TaskGuard>,
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Applied>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Changelog {
    /// Starts applying the changelog to `store` through `committer` (a replica's:
    /// [`Committer::start_replica`]), from the entry after the last one the store applied.
    pub async fn start(
        cluster: &Cluster,
        store: &Store,
        committer: Committer,
    ) -> Result<Changelog, ClusterError> {
        // A store read: on the blocking pool, not the async runtime.
        let reader = store.clone();
        let from = tokio::task::spawn_blocking(move || reader.changelog_applied())
            .await
            .map_err(|e| ClusterError::JetStream(format!("reading the applied position: {e}")))?
            .map_err(|e| ClusterError::JetStream(format!("reading the applied position: {e}")))?;
        let waiting: Waiting = Arc::default();
        let (applied_tx, applied) = watch::channel(from);
        let task = tokio::spawn(apply_loop(
            cluster.clone(),
            committer,
            waiting.clone(),
            applied_tx,
        ));
        Ok(Changelog {
            cluster: cluster.clone(),
            waiting,
            applied,
            next_id: Arc::new(AtomicU64::new(0)),
            incarnation: crate::incarnation(),
            _task: Arc::new(crate::TaskGuard(task.abort_handle())),
        })
    }

    /// The last changelog position this node applied, as it moves.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Publishes `sets` as one entry of `partition` under the owner's lease `epoch`, and
    /// waits until this node applied it: what each set did, or that the entry was fenced
    /// (a newer owner wrote the partition first).
    pub async fn commit(
        &self,
        partition: u16,
        epoch: u64,
        sets: Vec<WriteSet>,
    ) -> Result<Applied, ClusterError> {
        // A node that stopped applying (its store refuses writes, or an entry it cannot
        // read) must not publish: it would never learn what its entry did.
        if self.applied.has_changed().is_err() {
            return Err(ClusterError::JetStream(
                "this node has stopped applying the changelog".into(),
            ));
        }
        let entry = Entry {
            partition,
            epoch,
            at: confab_engine::time::now_millis(),
            sets,
            ..Entry::default()
        };
        let id = format!(
            "{}.{}.{}",
            self.cluster.config().node_id,
            self.incarnation,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), tx);
        let published = self
            .cluster
            .publish_durably(
                format!("{CHANGES_SUBJECT}.{partition}"),
                &id,
                Bytes::from(entry.encode()),
            )
            .await;
        if let Err(e) = published {
            lock(&self.waiting).remove(&id);
            return Err(e);
        }
        let patience = self.cluster.config().publish_patience;
        match tokio::time::timeout(patience, rx).await {
            Ok(Ok(applied)) => Ok(applied),
            _ => {
                lock(&self.waiting).remove(&id);
                Err(ClusterError::Unavailable(
                    patience,
                    "the entry is in the changelog, but this node has not applied it".into(),
                ))
            }
        }
    }
}

/// How long the reader waits for the next entry before it checks that it is not stuck
/// (a reader lives on one server; when that server dies the reader is made anew).
const IDLE: Duration = Duration::from_secs(1);
/// Pause before a reader is made anew.
const REBUILD_PAUSE: Duration = Duration::from_millis(200);

async fn apply_loop(
    cluster: Cluster,
    committer: Committer,
    waiting: Waiting,
    applied: watch::Sender<u64>,
) {
    read_and_apply(&cluster, &committer, &waiting, &applied).await;
    // Stopped: whoever waits for an entry learns it now, not at its patience's end.
    lock(&waiting).clear();
}

async fn read_and_apply(
    cluster: &Cluster,
    committer: &Committer,
    waiting: &Waiting,
    applied: &watch::Sender<u64>,
) {
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(REBUILD_PAUSE).await;
        }
        first = false;
        let from = *applied.borrow();
        let mut messages = match reader(cluster, from).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot read the changelog; retrying");
                continue;
            }
        };
        loop {
            let message = match tokio::time::timeout(IDLE, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "cluster: changelog reader; making it anew");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    // Quiet: fine, unless the changelog holds entries past ours.
                    let at = *applied.borrow();
                    if behind(cluster, at).await {
                        break;
                    }
                    continue;
                }
            };
            let position = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => {
                    tracing::error!(error = %e, "cluster: a changelog message without its position");
                    break;
                }
            };
            if position <= *applied.borrow() {
                // The client made its reader anew from the stream's start (async-nats
                // does when its server goes before the first message): read from ours.
                break;
            }
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned());
            let entry = match Entry::decode(position, &message.payload) {
                Ok(entry) => entry,
                Err(e) => {
                    // Written by a newer node (a rolling upgrade), or damaged. Skipping it
                    // would let this node's store part from the others': it stops here,
                    // and goes on once it runs a release that reads it.
                    tracing::error!(position, error = %e, "cluster: a changelog entry this node cannot read; applying stops");
                    return;
                }
            };
            match committer.apply(entry).await {
                Ok(outcome) => {
                    applied.send_replace(position);
                    if let Some(waiter) = id.and_then(|id| lock(waiting).remove(&id)) {
                        let _ = waiter.send(outcome);
                    }
                }
                Err(e) => {
                    // The store refuses writes (poisoned): nothing more can be applied;
                    // the node's readiness says why.
                    tracing::error!(position, error = %e, "cluster: the changelog cannot be applied");
                    return;
                }
            }
        }
    }
}

/// A reader of the changelog from the entry after `from`.
async fn reader(cluster: &Cluster, from: u64) -> Result<pull::Ordered, ClusterError> {
    let stream = cluster
        .jetstream()
        .get_stream(CHANGES_STREAM)
        .await
        .map_err(|e| ClusterError::JetStream(format!("changelog: {e}")))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::JetStream(format!("changelog reader: {e}")))?;
    consumer
        .messages()
        .await
        .map_err(|e| ClusterError::JetStream(format!("changelog reader: {e}")))
}

/// Whether the changelog holds entries after `applied` (false when that cannot be known).
async fn behind(cluster: &Cluster, applied: u64) -> bool {
    // Looking the stream up fetches its state: one request.
    let info = async {
        let stream = cluster.jetstream().get_stream(CHANGES_STREAM).await.ok()?;
        Some(stream.cached_info().state.last_sequence)
    };
    matches!(
        tokio::time::timeout(IDLE, info).await,
        Ok(Some(last)) if last > applied
    )
}
