//! The durable store: one fjall database with the keyspaces of [`crate::catalogue`].
//!
//! Reads are plain blocking calls; callers on the async runtime go through
//! `spawn_blocking`. Writes only ever go through the [`crate::committer::Committer`].

use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use serde::de::DeserializeOwned;

use crate::catalogue::{self, Ks};
use crate::codec;
use crate::delta::Delta;
use crate::error::Result;
use crate::ids::{AgentId, ChannelId, ContactId, ConversationId, MessageId, WorkspaceId};
use crate::model::{Agent, Channel, Conversation, Message, StoredContact, Workspace};
use crate::outbox::OutboxEntry;

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Block cache size in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    keyspaces: Vec<Keyspace>,
    listings: crate::views::Listings,
}

/// One page of a listing, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

/// Largest memtable of a keyspace before it is flushed (fjall's default is 64 MiB): the
/// hot keyspaces flush smaller tables more often, which keeps the resident set and each
/// flush's burst of work small.
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Most journal kept before the memtables it covers are flushed (fjall's default is
/// 512 MiB, its least 64 MiB). Opening the store replays the journal: fjall writes it in
/// files of 64 MB and, once the sealed ones pass this size, flushes the keyspaces that
/// hold the oldest file back. A start then replays about two files at most (measured:
/// 46 MB in 0.3-0.6 s) instead of up to half a gigabyte.
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// Opens the fjall database under `dir` with every keyspace, as the store lays them out,
/// without looking at the format version.
pub(crate) fn open_keyspaces(
    dir: &Path,
    options: &StoreOptions,
) -> Result<(Database, Vec<Keyspace>)> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::Storage(e.to_string()))?;
    let db = Database::builder(dir.join("store"))
        .cache_size(options.cache_bytes)
        .max_journaling_size(JOURNAL_BYTES)
        .open()?;
    let keyspaces = Ks::ALL
        .iter()
        .map(|ks| {
            db.keyspace(ks.name(), || {
                let options = KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
                // Files (megabytes each) live in blob files beside the tree, so
                // compactions do not rewrite them.
                if *ks == Ks::Blob {
                    options.with_kv_separation(Some(fjall::KvSeparationOptions::default()))
                } else {
                    options
                }
            })
        })
        .collect::<fjall::Result<Vec<_>>>()?;
    Ok((db, keyspaces))
}

impl Store {
    /// Opens (or creates) the store in `dir`, migrating an older format first (see
    /// [`crate::format`]).
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store> {
        let (db, keyspaces) = open_keyspaces(dir, options)?;
        crate::format::upgrade(&db, &keyspaces)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                keyspaces,
                listings: crate::views::Listings::default(),
            }),
        })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// A consistent read-only view of the whole store as it is now.
    pub fn snapshot(&self) -> fjall::Snapshot {
        self.inner.db.snapshot()
    }

    pub(crate) fn ks(&self, ks: Ks) -> &Keyspace {
        &self.inner.keyspaces[ks.index()]
    }

    /// The snapshots of inbox listings in progress (see `views`).
    pub fn listings(&self) -> &crate::views::Listings {
        &self.inner.listings
    }

    pub fn get_raw(&self, ks: Ks, key: &[u8]) -> Result<Option<fjall::Slice>> {
        Ok(self.ks(ks).get(key)?)
    }

    pub fn contains(&self, ks: Ks, key: &[u8]) -> Result<bool> {
        Ok(self.ks(ks).contains_key(key)?)
    }

    pub fn get<T: DeserializeOwned>(&self, ks: Ks, key: &[u8]) -> Result<Option<T>> {
        match self.ks(ks).get(key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The store's format version (see [`crate::format`]); `None` only for a store that
    /// was never opened by [`Store::open`].
    pub fn format_version(&self) -> Result<Option<u32>> {
        crate::format::stored_version(&self.inner.keyspaces)
    }

    /// Last delta offset assigned (0 when none).
    pub fn delta_head(&self) -> Result<u64> {
        self.meta_u64(catalogue::META_DELTA_HEAD)
    }

    /// The last changelog position applied (0 when none; see [`crate::changelog`]).
    pub fn changelog_applied(&self) -> Result<u64> {
        self.meta_u64(crate::changelog::META_APPLIED)
    }

    /// Offsets up to this one may have been pruned from the delta log.
    pub fn delta_pruned_through(&self) -> Result<u64> {
        self.meta_u64(catalogue::META_DELTA_PRUNED)
    }

    fn meta_u64(&self, key: &[u8]) -> Result<u64> {
        Ok(match self.ks(Ks::Meta).get(key)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        })
    }

    pub fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>> {
        self.get(Ks::WorkspaceState, &id.to_bytes())
    }

    pub fn agent(&self, id: AgentId) -> Result<Option<Agent>> {
        self.get(Ks::AgentState, &id.to_bytes())
    }

    pub fn agent_by_token_hash(&self, hash: &[u8; 32]) -> Result<Option<Agent>> {
        match self.get_raw(Ks::TokenAgent, hash)? {
            Some(id) => match AgentId::from_key_prefix(&id) {
                Some(id) => self.agent(id),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    pub fn workspace_agents(&self, ws: WorkspaceId) -> Result<Vec<Agent>> {
        let mut agents = Vec::new();
        for kv in self.ks(Ks::WsAgent).prefix(ws.to_bytes()) {
            let key = kv.key()?;
            if let Some(id) = key.get(16..).and_then(AgentId::from_key_prefix) {
                if let Some(agent) = self.agent(id)? {
                    agents.push(agent);
                }
            }
        }
        Ok(agents)
    }

    pub fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        self.get(Ks::ChannelState, &id.to_bytes())
    }

    /// The first value under a key prefix, if any.
    pub fn ks_first_value(&self, ks: Ks, prefix: &[u8]) -> Result<Option<fjall::Slice>> {
        match self.ks(ks).prefix(prefix).next() {
            Some(kv) => Ok(Some(kv.value()?)),
            None => Ok(None),
        }
    }

    /// Every value of a keyspace (small keyspaces only: settings, articles).
    pub fn all<T: DeserializeOwned>(&self, ks: Ks) -> Result<Vec<T>> {
        self.ks(ks)
            .iter()
            .map(|kv| codec::decode(&kv.value()?))
            .collect()
    }

    /// Every value under a key prefix, in key order.
    pub fn with_prefix<T: DeserializeOwned>(&self, ks: Ks, prefix: &[u8]) -> Result<Vec<T>> {
        self.ks(ks)
            .prefix(prefix)
            .map(|kv| codec::decode(&kv.value()?))
            .collect()
    }

    /// How many keys start with `prefix` (values are not decoded).
    pub fn count_prefix(&self, ks: Ks, prefix: &[u8]) -> Result<usize> {
        let mut count = 0;
        for kv in self.ks(ks).prefix(prefix) {
            kv.key()?;
            count += 1;
        }
        Ok(count)
    }

    pub fn all_channels(&self) -> Result<Vec<Channel>> {
        self.ks(Ks::ChannelState)
            .iter()
            .map(|kv| codec::decode(&kv.value()?))
            .collect()
    }

    pub fn contact(&self, id: ContactId) -> Result<Option<StoredContact>> {
        self.get(Ks::ContactState, &id.to_bytes())
    }

    pub fn contact_by_phone(&self, ws: WorkspaceId, phone: &str) -> Result<Option<ContactId>> {
        Ok(self
            .get_raw(Ks::PhoneContact, &catalogue::phone_contact(ws, phone))?
            .and_then(|v| ContactId::from_key_prefix(&v)))
    }

    pub fn contact_by_email(&self, ws: WorkspaceId, email: &str) -> Result<Option<ContactId>> {
        Ok(self
            .get_raw(Ks::EmailContact, &catalogue::email_contact(ws, email))?
            .and_then(|v| ContactId::from_key_prefix(&v)))
    }

    /// The conversations of a contact, oldest first.
    pub fn contact_conversations(&self, contact: ContactId) -> Result<Vec<ConversationId>> {
        self.ks(Ks::ContactConv)
            .prefix(contact.to_bytes())
            .map(|kv| {
                let key = kv.key()?;
                key.get(16..)
                    .and_then(ConversationId::from_key_prefix)
                    .ok_or_else(|| crate::Error::Corrupt("contact_conv key".into()))
            })
            .collect()
    }

    /// Every merge link: (conversation, conversation merged into it).
    pub fn merge_links(&self) -> Result<Vec<(ConversationId, ConversationId)>> {
        self.ks(Ks::Merge)
            .iter()
            .map(|kv| {
                let key = kv.key()?;
                key.get(..16)
                    .and_then(ConversationId::from_key_prefix)
                    .zip(key.get(16..).and_then(ConversationId::from_key_prefix))
                    .ok_or_else(|| crate::Error::Corrupt("merge key".into()))
            })
            .collect()
    }

    /// The conversations merged into `primary`, by their links.
    pub fn merged_ids(&self, primary: ConversationId) -> Result<Vec<ConversationId>> {
        self.ks(Ks::Merge)
            .prefix(primary.to_bytes())
            .map(|kv| {
                let key = kv.key()?;
                key.get(16..)
                    .and_then(ConversationId::from_key_prefix)
                    .ok_or_else(|| crate::Error::Corrupt("merge key".into()))
            })
            .collect()
    }

    pub fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>> {
        self.get(Ks::ConvState, &id.to_bytes())
    }

    pub fn conversation_by_thread(
        &self,
        channel: ChannelId,
        thread: &str,
    ) -> Result<Option<ConversationId>> {
        Ok(self
            .get_raw(Ks::ThreadConv, &catalogue::thread_conv(channel, thread))?
            .and_then(|v| ConversationId::from_key_prefix(&v)))
    }

    pub fn message(&self, conv: ConversationId, seq: u64) -> Result<Option<Message>> {
        self.get(Ks::ConvMsg, &catalogue::conv_msg(conv, seq))
    }

    /// Messages with `seq < before` (all when `None`), newest first.
    pub fn messages_before(
        &self,
        conv: ConversationId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page<Message, u64>> {
        let start = catalogue::conv_msg(conv, 0);
        let end = catalogue::conv_msg(conv, before.unwrap_or(u64::MAX));
        let mut items = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for kv in self.ks(Ks::ConvMsg).range(start..end).rev() {
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(codec::decode::<Message>(&kv.value()?)?);
        }
        let next = if more {
            items.last().map(|m| m.seq)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Messages with `seq > after`, oldest first: the `limit` right after `after`; `next` is
    /// the last one's `seq` when newer ones remain.
    pub fn messages_since(
        &self,
        conv: ConversationId,
        after: u64,
        limit: usize,
    ) -> Result<Page<Message, u64>> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let start = catalogue::conv_msg(conv, first);
        let end = catalogue::conv_msg(conv, u64::MAX);
        let mut items = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for kv in self.ks(Ks::ConvMsg).range(start..=end) {
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(codec::decode::<Message>(&kv.value()?)?);
        }
        // With `limit` 0, newer messages start right after `after` itself.
        let next = more.then(|| items.last().map_or(after, |m| m.seq));
        Ok(Page { items, next })
    }

    /// Every conversation in id order, starting strictly after `after`, at most `limit`:
    /// a full scan in pages (rebuilding derived data such as the search index).
    pub fn conversations_after(
        &self,
        after: Option<ConversationId>,
        limit: usize,
    ) -> Result<Vec<Conversation>> {
        let iter = match after {
            Some(id) => self.ks(Ks::ConvState).range((
                std::ops::Bound::Excluded(id.to_bytes().to_vec()),
                std::ops::Bound::Unbounded,
            )),
            None => self.ks(Ks::ConvState).range::<Vec<u8>, _>(..),
        };
        iter.take(limit)
            .map(|kv| codec::decode(&kv.value()?))
            .collect()
    }

    /// Every message in (conversation, seq) order, starting strictly after `after`, at most
    /// `limit`: a full scan in pages (rebuilding derived data such as the search index).
    pub fn messages_after(
        &self,
        after: Option<(ConversationId, u64)>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let iter = match after {
            Some((conv, seq)) => self.ks(Ks::ConvMsg).range((
                std::ops::Bound::Excluded(catalogue::conv_msg(conv, seq)),
                std::ops::Bound::Unbounded,
            )),
            None => self.ks(Ks::ConvMsg).range::<Vec<u8>, _>(..),
        };
        iter.take(limit)
            .map(|kv| codec::decode(&kv.value()?))
            .collect()
    }

    /// Where the provider's message id `provider_id` on `channel` is stored.
    pub fn message_by_external_id(
        &self,
        channel: ChannelId,
        provider_id: &str,
    ) -> Result<Option<(ConversationId, u64)>> {
        Ok(self
            .get_raw(Ks::ExtMsg, &catalogue::ext_msg(channel, provider_id))?
            .and_then(|v| catalogue::decode_conv_seq(&v)))
    }

    /// Deltas of `ws` with `after < offset <= up_to`, in offset order, at most `limit`.
    pub fn deltas_between(
        &self,
        ws: WorkspaceId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<Delta>> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        let start = catalogue::ws_delta(ws, after.saturating_add(1));
        let end = catalogue::ws_delta(ws, up_to);
        self.ks(Ks::WsDelta)
            .range(start..=end)
            .take(limit)
            .map(|kv| codec::decode(&kv.value()?))
            .collect()
    }

    /// Ids of every workspace.
    pub fn workspace_ids(&self) -> Result<Vec<WorkspaceId>> {
        self.ks(Ks::WorkspaceState)
            .iter()
            .map(|kv| {
                let key = kv.key()?;
                WorkspaceId::from_key_prefix(&key)
                    .ok_or_else(|| crate::Error::Corrupt("workspace key".into()))
            })
            .collect()
    }

    /// Keys of `ws`'s deltas with offsets `from..=through`, oldest first, at most `limit`:
    /// what a retention pass deletes.
    pub fn delta_keys_through(
        &self,
        ws: WorkspaceId,
        from: u64,
        through: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let start = catalogue::ws_delta(ws, from);
        let end = catalogue::ws_delta(ws, through);
        self.ks(Ks::WsDelta)
            .range(start..=end)
            .take(limit)
            .map(|kv| Ok(kv.key()?.to_vec()))
            .collect()
    }

    /// Every outbound message still waiting for its provider, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.ks(Ks::OutboxEntry)
            .iter()
            .map(|kv| codec::decode(&kv.value()?))
            .collect()
    }

    pub fn outbox_entry(&self, id: MessageId) -> Result<Option<OutboxEntry>> {
        self.get(Ks::OutboxEntry, &catalogue::outbox_entry(id))
    }

    /// Approximate on-disk size of the store in bytes.
    pub fn disk_space(&self) -> u64 {
        self.inner.db.disk_space().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committer::{Committer, Durability, WriteSet};
    use crate::model::{ChannelKind, Direction, Sender};

    fn message(conv: ConversationId, seq: u64) -> Message {
        Message {
            id: MessageId::new(),
            conversation_id: conv,
            seq,
            direction: Direction::Inbound,
            sender: Sender::Lead,
            agent_id: None,
            text: format!("m{seq}"),
            internal: false,
            channel: ChannelKind::Whatsapp,
            created_at: 0,
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

    #[test]
    fn pages_after_a_seq_run_oldest_first_and_say_when_newer_remain() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Buffered).expect("committer");
        let conv = ConversationId::new();
        let mut set = WriteSet::new();
        for seq in 1..=5 {
            set.put(
                Ks::ConvMsg,
                catalogue::conv_msg(conv, seq),
                &message(conv, seq),
            );
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(committer.commit(set)).expect("commit");
        let seqs = |page: &Page<Message, u64>| page.items.iter().map(|m| m.seq).collect::<Vec<_>>();
        let page = store.messages_since(conv, 1, 2).expect("page");
        assert_eq!((seqs(&page), page.next), (vec![2, 3], Some(3)));
        let page = store.messages_since(conv, 3, 2).expect("page");
        assert_eq!((seqs(&page), page.next), (vec![4, 5], None));
        let page = store.messages_since(conv, 2, 0).expect("page");
        assert_eq!((seqs(&page), page.next), (vec![], Some(2)));
        let page = store.messages_since(conv, 5, 3).expect("page");
        assert_eq!((seqs(&page), page.next), (vec![], None));
        let page = store.messages_since(conv, u64::MAX, 3).expect("page");
        assert!(page.items.is_empty());
        committer.close();
        thread.join();
    }

    #[test]
    fn delta_keys_for_retention_are_a_workspaces_own_within_the_range() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Buffered).expect("committer");
        let (ws, other) = (WorkspaceId::new(), WorkspaceId::new());
        let mut set = WriteSet::new();
        for offset in 1..=10u64 {
            let owner = if offset % 2 == 0 { ws } else { other };
            set.put_raw(Ks::WsDelta, catalogue::ws_delta(owner, offset), vec![1]);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(committer.commit(set)).expect("commit");
        let offsets = |from, through, limit| -> Vec<u64> {
            store
                .delta_keys_through(ws, from, through, limit)
                .expect("keys")
                .iter()
                .map(|key| catalogue::decode_ws_delta_offset(key).expect("an offset"))
                .collect()
        };
        assert_eq!(offsets(0, 7, 100), vec![2, 4, 6]);
        assert_eq!(offsets(5, 10, 100), vec![6, 8, 10], "starts at `from`");
        assert_eq!(
            offsets(4, 10, 2),
            vec![4, 6],
            "at most `limit`, oldest first"
        );
        assert_eq!(offsets(9, 9, 100), Vec::<u64>::new());
        committer.close();
        thread.join();
    }

    #[test]
    fn full_scans_page_through_every_message_in_key_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Buffered).expect("committer");
        let convs = [ConversationId::new(), ConversationId::new()];
        let mut set = WriteSet::new();
        for conv in convs {
            for seq in 1..=3 {
                set.put(
                    Ks::ConvMsg,
                    catalogue::conv_msg(conv, seq),
                    &message(conv, seq),
                );
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(committer.commit(set)).expect("commit");
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.messages_after(after, 4).expect("page");
            let Some(last) = page.last() else { break };
            after = Some((last.conversation_id, last.seq));
            seen.extend(page.iter().map(|m| (m.conversation_id, m.seq)));
        }
        let expected: Vec<_> = convs
            .iter()
            .flat_map(|c| (1..=3).map(move |s| (*c, s)))
            .collect();
        assert_eq!(seen, expected);
        assert!(store
            .conversations_after(None, 10)
            .expect("scan")
            .is_empty());
        committer.close();
        thread.join();
    }
}
