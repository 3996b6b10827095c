//! The changelog of a cluster (issue 18; ARCHITECTURE.md, "Scale-out"): committed write
//! sets as entries every node applies, in the same order, through its own committer, so
//! that every node's store is the same replica, down to the delta offsets.
//!
//! An entry is what the owner of a partition wrote in one group: its write sets (the
//! committer's puts, deletes, counter additions, guards and delta drafts), the owner's
//! clock (the deltas' time), and the owner's lease epoch. Applying is deterministic: the
//! guards and counters are evaluated against the node's own store, which holds exactly the
//! entries before this one; the offsets continue the node's head, the same on every node.
//! The store remembers the last position applied (so a restart resumes after it, and an
//! entry delivered twice is applied once) and each partition's newest epoch (an entry under
//! an older epoch is a former owner's late write: skipped, identically everywhere).

use serde::{Deserialize, Serialize};

use crate::catalogue::Ks;
use crate::committer::{Receipt, WriteSet};
use crate::error::{Error, Result};
use crate::time::UnixMillis;

/// One changelog entry, as the owner of `partition` published it.
#[derive(Debug, Default)]
pub struct Entry {
    /// Its place in the changelog (the stream's sequence): strictly increasing.
    pub position: u64,
    pub partition: u16,
    /// The owner's lease epoch: an entry under an older epoch than one already applied
    /// for the partition is not applied. An entry without sets (a new owner's takeover
    /// marker) only raises the partition's epoch.
    pub epoch: u64,
    /// The owner's clock when it published: the deltas' time.
    pub at: UnixMillis,
    pub sets: Vec<WriteSet>,
}

/// What applying an entry did.
#[derive(Debug)]
pub enum Applied {
    /// Applied: each set's outcome, in order (a set whose guard failed wrote nothing).
    Sets(Vec<Result<Receipt>>),
    /// At or before the last position applied: nothing done.
    AlreadyApplied,
    /// Under an older epoch than its partition's newest: nothing but the position written.
    Fenced { newest_epoch: u64 },
}

/// The entry layout's version: a node refuses (stops applying at) an entry of a newer
/// layout rather than apply part of it.
const WIRE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: u32,
    partition: u16,
    epoch: u64,
    at: UnixMillis,
    sets: Vec<WireSet>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireSet {
    pub(crate) ops: Vec<WireOp>,
    pub(crate) absent: Vec<WireKey>,
    pub(crate) deltas: Vec<crate::delta::DeltaDraft>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireKey {
    pub(crate) ks: String,
    #[serde(with = "serde_bytes")]
    pub(crate) key: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum WireOp {
    Put(
        String,
        #[serde(with = "serde_bytes")] Vec<u8>,
        #[serde(with = "serde_bytes")] Vec<u8>,
    ),
    Delete(String, #[serde(with = "serde_bytes")] Vec<u8>),
    Add(String, #[serde(with = "serde_bytes")] Vec<u8>, i64),
}

/// A keyspace by its stored name (names never change; enum positions might).
pub(crate) fn ks_named(name: &str) -> Result<Ks> {
    Ks::ALL
        .iter()
        .copied()
        .find(|ks| ks.name() == name)
        .ok_or_else(|| Error::Corrupt(format!("a changelog entry names keyspace {name:?}")))
}

impl Entry {
    /// The entry's bytes, for the changelog (its position is the changelog's to give).
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(&Wire {
            version: WIRE_VERSION,
            partition: self.partition,
            epoch: self.epoch,
            at: self.at,
            sets: self.sets.iter().map(WriteSet::to_wire).collect(),
        })
    }

    /// Reads an entry found at `position` of the changelog.
    pub fn decode(position: u64, bytes: &[u8]) -> Result<Entry> {
        let wire: Wire = crate::codec::decode(bytes)?;
        if wire.version != WIRE_VERSION {
            return Err(Error::Corrupt(format!(
                "a changelog entry of layout {} (this node reads {WIRE_VERSION})",
                wire.version
            )));
        }
        Ok(Entry {
            position,
            partition: wire.partition,
            epoch: wire.epoch,
            at: wire.at,
            sets: wire
                .sets
                .into_iter()
                .map(WriteSet::from_wire)
                .collect::<Result<_>>()?,
        })
    }
}

/// Where the store's changelog state lives in the `meta` keyspace.
pub(crate) const META_APPLIED: &[u8] = b"changelog_applied";

pub(crate) fn meta_epoch_key(partition: u16) -> Vec<u8> {
    let mut key = b"changelog_epoch.".to_vec();
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committer::{Committer, Durability};
    use crate::delta::DeltaBody;
    use crate::ids::{ConversationId, WorkspaceId};
    use crate::store::{Store, StoreOptions};

    fn node() -> (tempfile::TempDir, Store, Committer) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, _thread) =
            Committer::start_replica(store.clone(), Durability::Buffered).expect("start");
        (dir, store, committer)
    }

    /// Every key and value of every keyspace.
    fn contents(store: &Store) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for ks in Ks::ALL {
            for item in store.ks(ks).iter() {
                let (key, value) = item.into_inner().expect("read");
                out.push((ks.name(), key.to_vec(), value.to_vec()));
            }
        }
        out
    }

    /// A set like a conversation's: a guarded message key, a state, a counter, two deltas.
    fn message_set(ws: WorkspaceId, conv: ConversationId, n: u32) -> WriteSet {
        let mut set = WriteSet::new();
        let ext = format!("ext-{n}").into_bytes();
        set.require_absent(Ks::ExtMsg, ext.clone())
            .put_raw(Ks::ExtMsg, ext, n.to_be_bytes().to_vec())
            .put_raw(
                Ks::ConvState,
                conv.to_bytes().to_vec(),
                n.to_be_bytes().to_vec(),
            )
            .add(Ks::FacetCount, b"messages".to_vec(), 1)
            .delete(
                Ks::LaneConv,
                format!("lane-{}", n.saturating_sub(1)).into_bytes(),
            )
            .put_raw(Ks::LaneConv, format!("lane-{n}").into_bytes(), Vec::new());
        for _ in 0..2 {
            set.delta(
                ws,
                conv,
                DeltaBody::Notification {
                    agent_id: crate::ids::AgentId::new(),
                    reason: crate::delta::NotificationReason::Mention,
                    message_id: None,
                    by_agent_id: None,
                    notification: None,
                },
            );
        }
        set
    }

    /// The entries as a changelog delivers them: encoded by the owner, decoded by each node.
    fn wire(entry: &Entry) -> Entry {
        Entry::decode(entry.position, &entry.encode()).expect("decode")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_applying_the_same_changelog_hold_the_same_store_and_offsets() {
        let ws = WorkspaceId::new();
        let conv = ConversationId::new();
        let mut log = Vec::new();
        let mut position = 0;
        let mut next = |partition: u16, epoch: u64, sets: Vec<WriteSet>| {
            position += 10; // the engine does not require contiguous positions
            Entry {
                position,
                partition,
                epoch,
                at: 1_767_225_600_000 + position as i64,
                sets,
            }
        };
        for n in 0..20u32 {
            log.push(next(
                0,
                5,
                vec![message_set(ws, conv, n), message_set(ws, conv, n + 100)],
            ));
        }
        // A retried item (its guard fails everywhere), a takeover marker of a new owner,
        // a late write of the former owner (fenced everywhere), the new owner's write.
        log.push(next(0, 5, vec![message_set(ws, conv, 3)]));
        log.push(next(0, 9, Vec::new()));
        log.push(next(0, 5, vec![message_set(ws, conv, 500)]));
        log.push(next(0, 9, vec![message_set(ws, conv, 600)]));
        // Another partition's owner, with a lower epoch of its own: not fenced.
        log.push(next(
            1,
            2,
            vec![message_set(ws, ConversationId::new(), 700)],
        ));

        let (_a_dir, a, a_committer) = node();
        let (b_dir, b, b_committer) = node();
        let mut receipts = Vec::new();
        for entry in &log {
            receipts.push(a_committer.apply(wire(entry)).await.expect("apply a"));
        }
        // b applies the first half, restarts, gets some entries twice, then the rest.
        for entry in &log[..12] {
            b_committer.apply(wire(entry)).await.expect("apply b");
        }
        b_committer.close();
        drop(b_committer);
        drop(b);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let b = loop {
            // The committer thread lets go of the store once it has stopped.
            match Store::open(b_dir.path(), &StoreOptions::default()) {
                Ok(store) => break store,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "reopen: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        };
        let (b_committer, _thread) =
            Committer::start_replica(b.clone(), Durability::Buffered).expect("restart");
        for entry in &log[8..] {
            let applied = b_committer.apply(wire(entry)).await.expect("apply b");
            if entry.position <= log[11].position {
                assert!(matches!(applied, Applied::AlreadyApplied), "{applied:?}");
            }
        }

        assert_eq!(contents(&a), contents(&b), "the two replicas differ");
        assert_eq!(a.delta_head().expect("head"), b.delta_head().expect("head"));
        // 20 entries of two sets of two deltas, the new owner's set and the other
        // partition's: 84 offsets, nothing from the retry or the fenced write.
        assert_eq!(a.delta_head().expect("head"), 84);
        let count = a
            .get_raw(Ks::FacetCount, b"messages")
            .expect("read")
            .map(|v| crate::committer::decode_counter(&v));
        assert_eq!(count, Some(42));
        match &receipts[20] {
            Applied::Sets(outcomes) => {
                assert!(
                    matches!(outcomes[0], Err(Error::AlreadyExists)),
                    "{outcomes:?}"
                );
            }
            other => panic!("the retry: {other:?}"),
        }
        assert!(matches!(receipts[22], Applied::Fenced { newest_epoch: 9 }));
        match &receipts[0] {
            Applied::Sets(outcomes) => {
                let offsets: Vec<_> = outcomes
                    .iter()
                    .map(|o| o.as_ref().expect("applied").offsets.clone())
                    .collect();
                assert_eq!(offsets, vec![vec![1, 2], vec![3, 4]]);
            }
            other => panic!("the first entry: {other:?}"),
        }
        // The deltas carry the owner's clock, not the applying node's.
        let deltas = a.deltas_between(ws, 0, 4, 10).expect("deltas");
        assert_eq!(deltas.len(), 4);
        assert!(deltas.iter().all(|d| d.at == log[0].at), "{deltas:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_takes_only_entries_and_a_single_node_only_commits() {
        let ws = WorkspaceId::new();
        let (_dir, store, replica) = node();
        assert!(matches!(
            replica
                .commit(message_set(ws, ConversationId::new(), 1))
                .await,
            Err(Error::WrongCommitter(_))
        ));
        // A fenced entry, the last before a restart, is not applied again after it.
        let entry = |position, epoch| Entry {
            position,
            partition: 3,
            epoch,
            at: 0,
            sets: vec![message_set(ws, ConversationId::new(), position as u32)],
        };
        assert!(matches!(
            replica.apply(entry(1, 4)).await,
            Ok(Applied::Sets(_))
        ));
        assert!(matches!(
            replica.apply(entry(2, 3)).await,
            Ok(Applied::Fenced { newest_epoch: 4 })
        ));
        assert_eq!(store.changelog_applied().expect("applied"), 2);
        assert!(matches!(
            replica.apply(entry(2, 5)).await,
            Ok(Applied::AlreadyApplied)
        ));
        assert_eq!(store.delta_head().expect("head"), 2);

        let dir = tempfile::tempdir().expect("tempdir");
        let single = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, _thread) =
            Committer::start(single.clone(), Durability::Buffered).expect("start");
        assert!(matches!(
            committer.apply(entry(1, 1)).await,
            Err(Error::WrongCommitter(_))
        ));
        assert_eq!(single.delta_head().expect("head"), 0);
    }

    #[test]
    fn an_entry_naming_an_unknown_keyspace_or_garbage_is_corrupt_not_a_panic() {
        let wire = |ks: &str| {
            crate::codec::encode(&Wire {
                version: WIRE_VERSION,
                partition: 0,
                epoch: 1,
                at: 0,
                sets: vec![WireSet {
                    ops: vec![WireOp::Put(ks.into(), b"k".to_vec(), b"v".to_vec())],
                    absent: Vec::new(),
                    deltas: Vec::new(),
                }],
            })
        };
        assert_eq!(
            Entry::decode(1, &wire("conv_state"))
                .expect("decode")
                .sets
                .len(),
            1
        );
        // The committer's own bookkeeping is not an entry's to write.
        assert!(matches!(
            Entry::decode(1, &wire("meta")),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            Entry::decode(1, &wire("nope")),
            Err(Error::Corrupt(_))
        ));
        assert!(Entry::decode(1, b"\x01garbage").is_err());
        assert!(Entry::decode(1, &[]).is_err());
    }
}
