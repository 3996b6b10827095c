//! The single writer of the index: stages deltas, commits them with the last indexed
//! offset in the commit payload, catches up from the store.
//!
//! Invariant: the offset in a commit's payload is one below which every delta is in that
//! commit. Documents are only ever replaced (delete by key, then add), so replaying deltas
//! the index already holds changes nothing; a crash loses at most what was not committed,
//! and the next start replays it from the store.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Instant;

use confab_engine::delta::{Delta, DeltaBody};
use confab_engine::ids::{ConversationId, WorkspaceId};
use confab_engine::store::Store;
use confab_engine::time::UnixMillis;
use tantivy::{IndexWriter, TantivyDocument};

use crate::error::{IndexError, Result};
use crate::schema::{self, conversation_key, message_key};
use crate::search::SearchIndex;

/// How much memory and how many threads the writer uses.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Indexing threads (each needs at least 15 MB of the budget).
    pub threads: usize,
    /// The writer's whole memory budget; it flushes a segment when a thread's share fills.
    pub memory_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            memory_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Staged documents handed to tantivy at once when this many are waiting.
const STAGE_FLUSH_DOCS: usize = 10_000;
/// Deltas or rows read from the store per page while catching up.
const STORE_PAGE: usize = 1_024;

/// What [`Writer::catch_up`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    UpToDate,
    /// Replayed this many deltas from the store's delta log.
    Replayed {
        deltas: u64,
    },
    /// The log no longer held what the index missed: rebuilt from the store's state.
    Rebuilt {
        documents: u64,
    },
}

/// Conversations whose indexed document the writer remembers, at most.
const MAX_REMEMBERED_CONVERSATIONS: usize = 1 << 20;

/// What a conversation's document in the index holds.
#[derive(Clone, Copy)]
struct IndexedConversation {
    content: u64,
    at: UnixMillis,
}

/// A document waiting to be handed to tantivy.
struct Staged {
    doc: TantivyDocument,
    /// An older version may be in the index: delete it by key first.
    replaces: bool,
}

/// The index writer. Exactly one exists per index (tantivy's lock file enforces it).
pub struct Writer {
    index: SearchIndex,
    writer: IndexWriter<TantivyDocument>,
    /// Latest version of each document changed since the last flush, by key.
    staged: HashMap<String, Staged>,
    /// A created document at or below this offset may already be in the index (a rebuild
    /// reads state newer than its offset); above it, a `*_created` delta is a document
    /// the index has never seen, added without a delete.
    created_may_exist_through: u64,
    /// What the latest staged or committed document of each recently changed
    /// conversation holds: an update that only moves its time by less than
    /// [`schema::CONVERSATION_AT_SLACK_MS`] is skipped. Emptied when it grows past
    /// [`MAX_REMEMBERED_CONVERSATIONS`], on a rollback and on a rebuild.
    conversations: HashMap<ConversationId, IndexedConversation>,
    /// Every delta up to this offset is staged, flushed or committed.
    applied: u64,
    /// The offset in the last commit's payload.
    committed: u64,
    /// Documents were handed to tantivy since the last commit.
    dirty: bool,
}

impl Writer {
    /// Takes the index's writer lock. Fails with [`IndexError::Locked`] if another writer
    /// (another process) holds it.
    pub fn open(index: &SearchIndex, options: WriterOptions) -> Result<Writer> {
        let threads = options.threads.max(1);
        let memory = options.memory_bytes.max(threads * 16 * 1024 * 1024);
        let writer = index
            .tantivy()
            .writer_with_num_threads(threads, memory)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(lock, why) => {
                    IndexError::Locked(why.unwrap_or_else(|| lock.to_string()))
                }
                other => IndexError::Tantivy(other),
            })?;
        let committed = index.committed_offset()?.unwrap_or(0);
        Ok(Writer {
            index: index.clone(),
            writer,
            staged: HashMap::new(),
            created_may_exist_through: committed,
            conversations: HashMap::new(),
            applied: committed,
            committed,
            dirty: false,
        })
    }

    /// Every delta up to this offset has been given to the writer (maybe not committed).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The offset of the last commit: what survives a crash.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Documents staged and not yet handed to tantivy.
    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Stages the next live delta. Deltas at or below [`Writer::applied`] are skipped
    /// (already indexed); the caller checks contiguity (see [`Writer::catch_up`]).
    pub fn apply(&mut self, delta: &Delta) {
        if delta.offset <= self.applied {
            return;
        }
        self.stage(delta);
        self.applied = delta.offset;
    }

    fn stage(&mut self, delta: &Delta) {
        let fields = self.index.fields();
        let (key, doc, created) = match &delta.body {
            DeltaBody::MessageCreated(m) | DeltaBody::MessageUpdated(m) => (
                message_key(m.id),
                schema::message_doc(fields, delta.workspace_id, m),
                matches!(delta.body, DeltaBody::MessageCreated(_)),
            ),
            DeltaBody::ConversationCreated(card) | DeltaBody::ConversationUpdated(card) => {
                let content = schema::conversation_content(delta.workspace_id, card);
                let at = card.last_activity_at;
                let indexed = self.conversations.get(&card.id).copied();
                if indexed.is_some_and(|doc| {
                    doc.content == content
                        && (doc.at..doc.at + schema::CONVERSATION_AT_SLACK_MS).contains(&at)
                }) {
                    // Only the time moved, and not far: the document stays as it is.
                    return;
                }
                if self.conversations.len() >= MAX_REMEMBERED_CONVERSATIONS {
                    self.conversations.clear();
                }
                self.conversations
                    .insert(card.id, IndexedConversation { content, at });
                (
                    conversation_key(card.id),
                    schema::conversation_doc(fields, delta.workspace_id, card),
                    matches!(delta.body, DeltaBody::ConversationCreated(_)),
                )
            }
            // Removals reach the index through the erasure's and retention's own step
            // (`Writer::erase_conversations`, `Writer::erase_messages`), in their order.
            DeltaBody::Notification { .. }
            | DeltaBody::ChannelUpdated(_)
            | DeltaBody::NotificationsRead { .. }
            | DeltaBody::ConversationRemoved
            | DeltaBody::MessagesRemoved { .. } => return,
        };
        // Deleting by key costs a term lookup in every segment at commit: skip it for a
        // document that cannot be in the index yet.
        let replaces = !created || delta.offset <= self.created_may_exist_through;
        match self.staged.entry(key) {
            // The first staged version decides: a later update of a document created in
            // this flush still replaces nothing in the index.
            Entry::Occupied(mut staged) => staged.get_mut().doc = doc,
            Entry::Vacant(slot) => {
                slot.insert(Staged { doc, replaces });
            }
        }
        if self.staged.len() >= STAGE_FLUSH_DOCS {
            self.flush();
        }
    }

    /// Deletes every document of these conversations (their messages and their own),
    /// staged ones included; the next [`Writer::commit`] makes it durable (a lead's
    /// erasure).
    pub fn erase_conversations(&mut self, ids: &[ConversationId]) {
        // Staged documents go to tantivy first: a delete removes what was added before it.
        self.flush();
        let fields = *self.index.fields();
        for id in ids {
            self.writer.delete_term(tantivy::Term::from_field_text(
                fields.conversation,
                &id.to_string(),
            ));
            self.conversations.remove(id);
        }
        self.dirty = true;
    }

    /// Deletes these messages' documents, staged ones included; the next
    /// [`Writer::commit`] makes it durable (retention).
    pub fn erase_messages(&mut self, ids: &[confab_engine::ids::MessageId]) {
        self.flush();
        let fields = *self.index.fields();
        for id in ids {
            self.writer
                .delete_term(schema::key_term(&fields, &message_key(*id)));
        }
        self.dirty = true;
    }

    /// Hands the staged documents to tantivy: delete by key (unless new), then add.
    fn flush(&mut self) {
        let fields = *self.index.fields();
        let count = self.staged.len();
        for (key, staged) in self.staged.drain() {
            if staged.replaces {
                self.writer.delete_term(schema::key_term(&fields, &key));
            }
            // Only fails once the writer's threads died; the commit then reports it.
            let _ = self.writer.add_document(staged.doc);
        }
        if count > 0 {
            self.dirty = true;
            metrics::counter!(crate::metrics::INDEX_DOCUMENTS).increment(count as u64);
        }
    }

    /// Commits everything applied, with [`Writer::applied`] as the payload offset, and
    /// reloads the searcher. Returns false when there was nothing to commit.
    pub fn commit(&mut self) -> Result<bool> {
        self.flush();
        if !self.dirty && self.applied == self.committed {
            return Ok(false);
        }
        let started = Instant::now();
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&crate::search::payload(self.applied));
        prepared.commit()?;
        self.index.reload()?;
        self.committed = self.applied;
        self.dirty = false;
        metrics::histogram!(crate::metrics::INDEX_COMMIT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(true)
    }

    /// Drops everything not committed (tests use it to simulate a crash).
    pub fn rollback(&mut self) -> Result<()> {
        self.staged.clear();
        self.conversations.clear();
        self.writer.rollback()?;
        self.applied = self.committed;
        self.dirty = false;
        Ok(())
    }

    /// Brings the index up to `through` (a durable offset) from the store: replays the
    /// delta log after [`Writer::applied`] (of every workspace in `workspace_state`), or
    /// rebuilds from the store's conversations and messages when the log was pruned past
    /// it, or when the index is ahead of the store: the store lost acknowledged writes
    /// (buffered durability and a power cut, or a store restored from an older backup), so
    /// the offsets the index holds will be given out again to other deltas. Does not commit.
    pub fn catch_up(&mut self, store: &Store, through: u64) -> Result<CatchUp> {
        let from = self.applied;
        if from == through {
            return Ok(CatchUp::UpToDate);
        }
        if from > through {
            tracing::warn!(
                index = from,
                store = through,
                "the search index is ahead of the store (writes were lost): rebuilding it"
            );
            let documents = self.rebuild(store, through)?;
            return Ok(CatchUp::Rebuilt { documents });
        }
        if store.delta_pruned_through()? > from {
            let documents = self.rebuild(store, through)?;
            return Ok(CatchUp::Rebuilt { documents });
        }
        let mut deltas = 0u64;
        // Per workspace, in offset order: a document's deltas all belong to one workspace,
        // so the last staged version of each document is its newest.
        for ws in store.workspace_ids()? {
            let mut after = from;
            loop {
                let page = store.deltas_between(ws, after, through, STORE_PAGE)?;
                let Some(last) = page.last() else { break };
                after = last.offset;
                deltas += page.len() as u64;
                for delta in &page {
                    self.stage(delta);
                }
            }
        }
        if store.delta_pruned_through()? > from {
            // Pruned while we read: what we missed is only in the state now.
            let documents = self.rebuild(store, through)?;
            return Ok(CatchUp::Rebuilt { documents });
        }
        self.applied = through;
        Ok(CatchUp::Replayed { deltas })
    }

    /// Replaces the whole index with documents made from the store's conversations and
    /// messages, as of `through` or later (deltas after `through` replayed on top change
    /// nothing or bring documents newer). Does not commit. Returns the documents written.
    pub fn rebuild(&mut self, store: &Store, through: u64) -> Result<u64> {
        let started = Instant::now();
        self.staged.clear();
        self.conversations.clear();
        self.writer.rollback()?;
        self.writer.delete_all_documents()?;
        let fields = *self.index.fields();
        let mut documents = 0u64;
        let mut workspaces: HashMap<ConversationId, WorkspaceId> = HashMap::new();
        let mut after = None;
        loop {
            let page = store.conversations_after(after, STORE_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for conv in &page {
                workspaces.insert(conv.id, conv.workspace_id);
                self.writer.add_document(schema::conversation_doc(
                    &fields,
                    conv.workspace_id,
                    &conv.card(),
                ))?;
                documents += 1;
            }
        }
        let mut after = None;
        loop {
            let page = store.messages_after(after, STORE_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some((last.conversation_id, last.seq));
            for message in &page {
                let ws = match workspaces.get(&message.conversation_id) {
                    Some(ws) => *ws,
                    // Created after the conversations were read.
                    None => match store.conversation(message.conversation_id)? {
                        Some(conv) => {
                            workspaces.insert(conv.id, conv.workspace_id);
                            conv.workspace_id
                        }
                        None => continue,
                    },
                };
                self.writer
                    .add_document(schema::message_doc(&fields, ws, message))?;
                documents += 1;
            }
        }
        metrics::counter!(crate::metrics::INDEX_DOCUMENTS).increment(documents);
        self.applied = through;
        // The state read may be newer than `through`: every delta committed by now may
        // name a document already added.
        self.created_may_exist_through = store.delta_head()?.max(through);
        self.dirty = true;
        tracing::info!(
            documents,
            through,
            seconds = started.elapsed().as_secs_f64(),
            "search index rebuilt from the store"
        );
        Ok(documents)
    }

    /// Forgets what was applied after `offset` without touching the index (tests: as if
    /// the commit's offset were older than its documents).
    #[cfg(test)]
    pub(crate) fn rewind_to(&mut self, offset: u64) {
        self.created_may_exist_through = self.created_may_exist_through.max(self.applied);
        self.applied = offset;
    }

    /// Waits for background merges to finish and releases the lock.
    pub fn close(self) -> Result<()> {
        self.writer.wait_merging_threads()?;
        Ok(())
    }
}

/// Rebuilds the index in `index` from `store` and commits it: `confab reindex`.
pub fn reindex(index: &SearchIndex, store: &Store, options: WriterOptions) -> Result<u64> {
    let mut writer = Writer::open(index, options)?;
    let head = store.delta_head()?;
    let documents = writer.rebuild(store, head)?;
    writer.commit()?;
    writer.close()?;
    Ok(documents)
}
