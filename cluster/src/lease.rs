//! Partition leases: each partition has at most one owner at a time, which alone writes
//! it (processes its inbound items, runs its conversations).
//!
//! A lease is the key `p.<n>` of the [`crate::LEASE_BUCKET`] bucket, whose stream keeps a
//! key for `lease_ttl` after its last write (`max_age`). A node takes a partition only by
//! *creating* the key (refused while it exists: atomic on nats-server 2.9), renews it by
//! writing it again every `renew_every`, and never deletes it: a lease ends by lapsing.
//!
//! **Epochs.** The revision a lease was created at is its epoch: it only grows (a stream
//! sequence), so a later owner of a partition always has a higher epoch than any earlier
//! one. The owner writes under its epoch (the changelog will carry it, and every node will
//! ignore a partition's writes under an epoch older than the newest it has seen), so even
//! a former owner that does not know yet that it lost its lease cannot have a write
//! accepted after its successor's first.
//!
//! **Stopping before losing.** The holder notes the instant *before* sending each renewal;
//! once that renewal is acknowledged the servers do not let the key lapse before that
//! instant plus `lease_ttl` — provided their clocks run at the holder's rate and are not
//! stepped: `max_age` is judged by each server's wall clock against the leader's
//! timestamp, so `lease_margin` must also cover the skew and steps between the NATS
//! servers' clocks (keep them NTP-disciplined). The holder considers the lease valid only
//! until that instant plus `lease_ttl − lease_margin` ([`Leases::epoch`] answers `None`
//! after it, and a lease past it is given up, not renewed), so it stops writing before
//! anyone else could take the partition, even when the renewals stop getting through (a
//! network split, a stalled NATS server). Every call to NATS is bounded, so one that hangs
//! cannot hold the other renewals back.
//!
//! **A compare-and-set that is not one.** nats-server before 2.9.21 does not serialise the
//! expected revision of writes to a replicated stream (nats-server #4320): a renewal by a
//! holder whose lease lapsed and was taken can overwrite its successor's key. So the
//! holder never renews past its validity, and reads the key before renewing and gives the
//! partition up when it finds a newer epoch there (a read any replica may answer, so it
//! can miss a successor for a while). The epochs above keep the data safe meanwhile: the
//! changelog refuses a partition's writes under an older epoch than the newest applied.
//!
//! **Sharing.** Every node keeps its liveness key `n.<node>` (written every renewal) and
//! takes partitions without an owner up to its fair share, ⌈partitions / live nodes⌉,
//! starting at a place of its own in the ring (so that nodes starting together pick
//! different partitions); above its share (a node joined) it lets the excess lapse.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{Cluster, ClusterConfig, ClusterError, LEASE_BUCKET};

/// What a lease key holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseValue {
    node: String,
    /// Random per process start: a restarted node does not take its former self's lease
    /// for its own.
    incarnation: String,
    /// The revision the lease was created at; 0 in the creating write itself (whose
    /// revision it is).
    epoch: u64,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    epoch: u64,
    /// The key's revision as last written by us.
    revision: u64,
    /// Valid for writing until then.
    valid_until: Instant,
}

/// What the lease bucket holds at one moment.
#[derive(Default)]
struct Census {
    nodes: usize,
    leased: std::collections::HashSet<u16>,
}

/// The partitions this node holds, and their epochs.
pub type Owned = BTreeMap<u16, u64>;

/// A node's leases; cheap to clone. Dropping every clone stops the renewals (the leases
/// then lapse after `lease_ttl`).
#[derive(Clone)]
pub struct Leases {
    held: Arc<Mutex<HashMap<u16, Held>>>,
    owned: watch::Receiver<Owned>,
    _task: Arc<crate::TaskGuard>,
}

impl Leases {
    /// Starts taking and renewing this node's share of the partitions.
    pub async fn start(cluster: &Cluster) -> Result<Leases, ClusterError> {
        let kv = cluster
            .jetstream()
            .get_key_value(LEASE_BUCKET)
            .await
            .map_err(|e| ClusterError::JetStream(format!("lease bucket: {e}")))?;
        let held = Arc::new(Mutex::new(HashMap::new()));
        let (tx, owned) = watch::channel(Owned::new());
        let keeper = Keeper {
            config: cluster.config().clone(),
            kv,
            incarnation: crate::incarnation(),
            held: held.clone(),
            owned: tx,
            live_nodes: 1,
            last_renewal: None,
        };
        let task = tokio::spawn(keeper.run());
        Ok(Leases {
            held,
            owned,
            _task: Arc::new(crate::TaskGuard(task.abort_handle())),
        })
    }

    /// The epoch to write partition `p` under, while this node may write it: `None` when
    /// it does not hold `p`, or its lease could lapse before a renewal is acknowledged.
    pub fn epoch(&self, p: u16) -> Option<u64> {
        let held = lock(&self.held);
        held.get(&p)
            .filter(|h| Instant::now() < h.valid_until)
            .map(|h| h.epoch)
    }

    /// The partitions held (renewed in time or not) and their epochs; changes are
    /// announced on the receiver.
    pub fn owned(&self) -> watch::Receiver<Owned> {
        self.owned.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Longest a single NATS call of the keeper may take (the keeper is one loop: a call that
/// hangs must not hold the other partitions' renewals back).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn lease_key(p: u16) -> String {
    format!("p.{p}")
}

fn node_key(node: &str) -> String {
    format!("n.{node}")
}

struct Keeper {
    config: ClusterConfig,
    kv: kv::Store,
    incarnation: String,
    held: Arc<Mutex<HashMap<u16, Held>>>,
    owned: watch::Sender<Owned>,
    live_nodes: usize,
    last_renewal: Option<Instant>,
}

impl Keeper {
    async fn run(mut self) {
        loop {
            let due = self
                .last_renewal
                .is_none_or(|at| at.elapsed() >= self.config.renew_every);
            if due {
                self.last_renewal = Some(Instant::now());
                self.heartbeat().await;
                self.renew_all().await;
            }
            self.share().await;
            self.announce();
            tokio::time::sleep(self.config.poll_every.min(self.config.renew_every)).await;
        }
    }

    fn value(&self, epoch: u64) -> Bytes {
        let value = LeaseValue {
            node: self.config.node_id.clone(),
            incarnation: self.incarnation.clone(),
            epoch,
        };
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }

    fn is_mine(&self, value: &LeaseValue) -> bool {
        value.node == self.config.node_id && value.incarnation == self.incarnation
    }

    /// Keeps this node's liveness key fresh and counts the live nodes.
    async fn heartbeat(&mut self) {
        let key = node_key(&self.config.node_id);
        let put = self.kv.put(&key, Bytes::from(self.incarnation.clone()));
        match tokio::time::timeout(CALL_TIMEOUT, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster: cannot write this node's liveness key")
            }
            Err(_) => tracing::warn!("cluster: writing this node's liveness key timed out"),
        }
        match self.census().await {
            Some(census) => self.live_nodes = census.nodes.max(1),
            None => tracing::warn!("cluster: cannot count the live nodes"),
        }
    }

    async fn renew_all(&mut self) {
        let partitions: Vec<u16> = lock(&self.held).keys().copied().collect();
        for p in partitions {
            self.renew(p).await;
        }
    }

    async fn renew(&mut self, p: u16) {
        let Some(held) = lock(&self.held).get(&p).copied() else {
            return;
        };
        // Past its validity the lease may have lapsed and been taken: a renewal now could
        // land on a successor's key (nats-server 2.9 does not check the revision of a
        // replicated write reliably), so it is given up instead.
        let Some(left) = held.valid_until.checked_duration_since(Instant::now()) else {
            self.lose(p, "it could not be renewed in time");
            return;
        };
        let key = lease_key(p);
        // A successor's key (see the module's note on nats-server 2.9): give up.
        if let Ok(Ok(Some(entry))) = tokio::time::timeout(left, self.kv.entry(key.clone())).await {
            if let Some(value) = parse(&entry) {
                let epoch = effective_epoch(&value, entry.revision);
                if epoch > held.epoch {
                    self.lose(p, "a newer owner holds it");
                    return;
                }
            }
        }
        let sent = Instant::now();
        let Some(left) = held.valid_until.checked_duration_since(sent) else {
            self.lose(p, "it could not be renewed in time");
            return;
        };
        let update = self.kv.update(&key, self.value(held.epoch), held.revision);
        let Ok(updated) = tokio::time::timeout(left, update).await else {
            tracing::warn!(partition = p, "cluster: lease renewal timed out");
            return;
        };
        match updated {
            Ok(revision) => {
                if let Some(h) = lock(&self.held).get_mut(&p) {
                    h.revision = revision;
                    h.valid_until = sent + self.config.lease_ttl - self.config.lease_margin;
                }
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                // Someone wrote the key since our last renewal. Our own renewal that timed
                // out but landed: adopt its revision (without extending the validity: we
                // do not know when it landed). A former owner's late write (an older epoch,
                // let through by nats-server 2.9): ours is the newer lease, the next
                // renewal writes over it. A newer epoch, or no key (it lapsed): lost.
                let entry = tokio::time::timeout(CALL_TIMEOUT, self.kv.entry(key)).await;
                let current = match &entry {
                    Ok(Ok(Some(entry))) if entry.operation == Operation::Put => {
                        parse(entry).map(|v| (v, entry.revision))
                    }
                    _ => None,
                };
                match current {
                    Some((value, revision))
                        if (self.is_mine(&value)
                            && effective_epoch(&value, revision) == held.epoch)
                            || effective_epoch(&value, revision) < held.epoch =>
                    {
                        if let Some(h) = lock(&self.held).get_mut(&p) {
                            h.revision = revision;
                        }
                    }
                    _ if entry.is_err() => {
                        tracing::warn!(partition = p, "cluster: reading a lease timed out");
                    }
                    _ => self.lose(p, "it lapsed and was taken"),
                }
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cluster: lease renewal failed");
            }
        }
    }

    fn lose(&mut self, p: u16, why: &str) {
        if lock(&self.held).remove(&p).is_some() {
            tracing::warn!(partition = p, why, "cluster: partition lease lost");
        }
    }

    /// Takes partitions without an owner up to this node's fair share, or lets the excess
    /// lapse above it.
    async fn share(&mut self) {
        let total = usize::from(self.config.partitions);
        let fair = total.div_ceil(self.live_nodes);
        let holding = lock(&self.held).len();
        if holding > fair {
            let mut mine: Vec<u16> = lock(&self.held).keys().copied().collect();
            mine.sort_unstable();
            for p in mine.into_iter().rev().take(holding - fair) {
                // Not renewed any more: it lapses, and a node below its share takes it.
                lock(&self.held).remove(&p);
                tracing::info!(
                    partition = p,
                    "cluster: partition released (above the fair share)"
                );
            }
            return;
        }
        if holding == fair {
            return;
        }
        // Which partitions have a lease now: one request, instead of a read per partition.
        let Some(census) = self.census().await else {
            return;
        };
        let start = usize::from(crate::partition_of(
            self.config.node_id.as_bytes(),
            "",
            self.config.partitions,
        ));
        for i in 0..total {
            if lock(&self.held).len() >= fair {
                break;
            }
            let p = u16::try_from((start + i) % total).unwrap_or(0);
            if census.leased.contains(&p) || lock(&self.held).contains_key(&p) {
                continue;
            }
            self.try_take(p).await;
        }
    }

    /// The bucket's keys as its stream holds them now (subjects, from the stream's leader):
    /// live nodes and leased partitions. `None` when it cannot be known in time.
    async fn census(&self) -> Option<Census> {
        let prefix = format!("$KV.{LEASE_BUCKET}.");
        let read = async {
            let mut subjects = self
                .kv
                .stream
                .info_with_subjects(format!("{prefix}>"))
                .await
                .ok()?;
            let mut census = Census::default();
            while let Some(item) = subjects.next().await {
                let (subject, _) = item.ok()?;
                let Some(key) = subject.strip_prefix(&prefix) else {
                    continue;
                };
                if key.starts_with("n.") {
                    census.nodes += 1;
                } else if let Some(p) = key.strip_prefix("p.").and_then(|p| p.parse().ok()) {
                    census.leased.insert(p);
                }
            }
            Some(census)
        };
        tokio::time::timeout(CALL_TIMEOUT, read)
            .await
            .ok()
            .flatten()
    }

    /// Creates the lease of `p`, which the census found without one (the create itself
    /// refuses when someone took it meanwhile).
    async fn try_take(&mut self, p: u16) {
        let key = lease_key(p);
        let sent = Instant::now();
        let create = self.kv.create(&key, self.value(0));
        let created = match tokio::time::timeout(CALL_TIMEOUT, create).await {
            Ok(Ok(epoch)) => Some(epoch),
            Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => {
                // Our own create may have landed though its answer was lost (a timeout
                // and a retry): the key then names this process, with no epoch yet.
                match tokio::time::timeout(CALL_TIMEOUT, self.kv.entry(key)).await {
                    Ok(Ok(Some(entry)))
                        if entry.operation == Operation::Put
                            && parse(&entry).is_some_and(|v| self.is_mine(&v) && v.epoch == 0) =>
                    {
                        Some(entry.revision)
                    }
                    _ => None,
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(partition = p, error = %e, "cluster: cannot take a lease");
                None
            }
            Err(_) => None,
        };
        let Some(epoch) = created else {
            return;
        };
        // `sent` precedes the create: the key cannot lapse before `sent + lease_ttl`.
        let valid_until = sent + self.config.lease_ttl - self.config.lease_margin;
        lock(&self.held).insert(
            p,
            Held {
                epoch,
                revision: epoch,
                valid_until,
            },
        );
        tracing::info!(partition = p, epoch, "cluster: partition lease taken");
        // Write the epoch into the key at once, for the check of renew.
        self.renew(p).await;
    }

    fn announce(&self) {
        let owned: Owned = lock(&self.held)
            .iter()
            .map(|(&p, h)| (p, h.epoch))
            .collect();
        self.owned.send_if_modified(|current| {
            if *current == owned {
                false
            } else {
                *current = owned;
                true
            }
        });
    }
}

fn parse(entry: &kv::Entry) -> Option<LeaseValue> {
    serde_json::from_slice(&entry.value).ok()
}

/// A lease's epoch: written in the value, or, in the creating write, its own revision.
fn effective_epoch(value: &LeaseValue, revision: u64) -> u64 {
    if value.epoch == 0 {
        revision
    } else {
        value.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_creating_write_is_its_own_epoch() {
        let v = LeaseValue {
            node: "a".into(),
            incarnation: "x".into(),
            epoch: 0,
        };
        assert_eq!(effective_epoch(&v, 17), 17);
        let v = LeaseValue { epoch: 9, ..v };
        assert_eq!(effective_epoch(&v, 17), 9);
    }
}
