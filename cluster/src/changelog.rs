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
    _task: Arc<crate::lease::TaskGuard>,
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Applied>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Changelog {
    /// Starts applying the changelog to `store` through `committer`, from the entry after
    /// the last one the store applied.
    pub async fn start(
        cluster: &Cluster,
        store: &Store,
        committer: Committer,
    ) -> Result<Changelog, ClusterError> {
        let from = store
            .changelog_applied()
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
            incarnation: crate::lease::incarnation(),
            _task: Arc::new(crate::lease::TaskGuard(task.abort_handle())),
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

async fn apply_loop(
    cluster: Cluster,
    committer: Committer,
    waiting: Waiting,
    applied: watch::Sender<u64>,
) {
    loop {
        let from = *applied.borrow();
        let mut messages = match reader(&cluster, from).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot read the changelog; retrying");
                tokio::time::sleep(IDLE).await;
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
                    if behind(&cluster, at).await {
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
                continue;
            }
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned());
            let entry = Entry::decode(position, &message.payload).unwrap_or_else(|e| {
                // Written by a node of another version, or damaged: skipped by every
                // node alike (only its position is recorded).
                tracing::error!(position, error = %e, "cluster: unreadable changelog entry skipped");
                Entry {
                    position,
                    ..Entry::default()
                }
            });
            match committer.apply(entry).await {
                Ok(outcome) => {
                    applied.send_replace(position);
                    if let Some(waiter) = id.and_then(|id| lock(&waiting).remove(&id)) {
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
    let info = async {
        let mut stream = cluster.jetstream().get_stream(CHANGES_STREAM).await.ok()?;
        stream.info().await.ok().map(|i| i.state.last_sequence)
    };
    matches!(
        tokio::time::timeout(IDLE, info).await,
        Ok(Some(last)) if last > applied
    )
}
