//! Erasure of a lead (GDPR Art. 17): what is deleted, in which write sets.
//!
//! An erasure is first recorded durably ([`Erasure`], in `erasure`), then carried out in
//! steps, each an idempotent write set (or several), and the record is completed last; a
//! server that stops half-way resumes every open record at its next start. The record
//! keeps who asked, when, and the ids involved, never the erased data.
//!
//! The steps (the actors crate runs them; the conversation's own actor writes its part,
//! so nothing writes the conversation after it):
//! 1. each conversation of the contact: its messages and their files, provider-id and
//!    thread entries, outbox entries, AI decisions and feedback, statistics, timers, inbox
//!    view entries and counters, and its state ([`conversation_sets`]);
//! 2. the stream's deltas about those conversations ([`delta_sets`]);
//! 3. the search index's documents of those conversations (the indexer);
//! 4. the agents' notifications about them ([`notification_sets`]);
//! 5. the contact with its identities ([`contact_set`]).
//!
//! Before step 1 the contact's identities are deleted ([`identity_set`]): the lead writing
//! meanwhile becomes a new contact rather than joining the one being erased.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::catalogue::{self, Ks};
use crate::codec;
use crate::committer::WriteSet;
use crate::delta::{Delta, DeltaBody};
use crate::error::Result;
use crate::ids::{AgentId, ContactId, ConversationId, WorkspaceId};
use crate::inbound::ThreadAliasValue;
use crate::model::{Conversation, Message, StoredContact};
use crate::notify::{Notification, TIMER_OVERDUE, TIMER_SNOOZE};
use crate::store::Store;
use crate::time::UnixMillis;

/// Keys deleted in one write set at most (a large conversation is erased in several).
pub const KEYS_PER_SET: usize = 2_000;

/// An erasure: the request, its progress and, once done, what was erased (counts only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Erasure {
    /// The erasure's id (a ULID).
    pub id: String,
    pub workspace_id: WorkspaceId,
    pub contact_id: ContactId,
    /// The workspace admin who asked.
    pub requested_by: AgentId,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub requested_at: UnixMillis,
    /// `null` while it runs.
    #[serde(default, with = "crate::time::rfc3339_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub completed_at: Option<UnixMillis>,
    /// The conversations erased (ids only).
    pub conversations: Vec<ConversationId>,
    pub erased: ErasedCounts,
}

/// What an erasure deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErasedCounts {
    pub conversations: u64,
    pub messages: u64,
    pub files: u64,
    pub deltas: u64,
    pub notifications: u64,
}

impl ErasedCounts {
    pub fn add(&mut self, other: ErasedCounts) {
        self.conversations += other.conversations;
        self.messages += other.messages;
        self.files += other.files;
        self.deltas += other.deltas;
        self.notifications += other.notifications;
    }
}

impl Erasure {
    pub fn new(
        workspace_id: WorkspaceId,
        contact_id: ContactId,
        requested_by: AgentId,
        now: UnixMillis,
    ) -> Erasure {
        Erasure {
            id: ulid::Ulid::new().to_string(),
            workspace_id,
            contact_id,
            requested_by,
            requested_at: now,
            completed_at: None,
            conversations: Vec::new(),
            erased: ErasedCounts::default(),
        }
    }

    pub fn key(&self) -> Vec<u8> {
        erasure_key(self.workspace_id, &self.id)
    }
}

/// `erasure` key: workspace ‖ erasure id.
pub fn erasure_key(ws: WorkspaceId, id: &str) -> Vec<u8> {
    let mut key = ws.to_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

impl Store {
    /// A workspace's erasures, oldest first.
    pub fn erasures(&self, ws: WorkspaceId) -> Result<Vec<Erasure>> {
        self.with_prefix(Ks::Erasure, &ws.to_bytes())
    }

    pub fn erasure(&self, ws: WorkspaceId, id: &str) -> Result<Option<Erasure>> {
        self.get(Ks::Erasure, &erasure_key(ws, id))
    }

    /// Every erasure not completed yet (resumed at start).
    pub fn open_erasures(&self) -> Result<Vec<Erasure>> {
        Ok(self
            .all::<Erasure>(Ks::Erasure)?
            .into_iter()
            .filter(|e| e.completed_at.is_none())
            .collect())
    }
}

/// Splits deletions into write sets of at most [`KEYS_PER_SET`] keys.
struct Sets {
    sets: Vec<WriteSet>,
    keys: usize,
}

impl Sets {
    fn new() -> Sets {
        Sets {
            sets: vec![WriteSet::new()],
            keys: 0,
        }
    }

    /// Keeps the next `keys` changes in one set (they must be applied together).
    fn together(&mut self, keys: usize) {
        if self.keys > 0 && self.keys + keys > KEYS_PER_SET {
            self.sets.push(WriteSet::new());
            self.keys = 0;
        }
    }

    fn current(&mut self) -> &mut WriteSet {
        if self.keys >= KEYS_PER_SET {
            self.sets.push(WriteSet::new());
            self.keys = 0;
        }
        self.keys += 1;
        self.sets.last_mut().expect("one set at least")
    }

    fn delete(&mut self, ks: Ks, key: Vec<u8>) {
        self.current().delete(ks, key);
    }

    /// The set the last change went into.
    fn last_index(&self) -> usize {
        self.sets.len() - 1
    }

    fn done(self) -> Vec<WriteSet> {
        self.sets.into_iter().filter(|s| !s.is_empty()).collect()
    }
}

/// Step 1: the write sets that delete everything of `conv` (as stored now), the state and
/// inbox entries last, with what they erase. For the conversation's own actor to commit,
/// in order.
pub fn conversation_sets(
    store: &Store,
    conv: &Conversation,
) -> Result<(Vec<WriteSet>, ErasedCounts)> {
    let mut counts = ErasedCounts {
        conversations: 1,
        ..ErasedCounts::default()
    };
    let mut sets = Sets::new();
    let id = conv.id;
    for kv in store.ks(Ks::ConvMsg).prefix(id.to_bytes()) {
        let (key, value) = kv.into_inner()?;
        let message: Message = codec::decode(&value)?;
        delete_message(store, &mut sets, conv, &key, &message, &mut counts)?;
    }
    // Its activity (who changed what) goes with it: the admin audit keeps the erasure.
    for ks in [Ks::AiLog, Ks::AiFeedback, Ks::Activity] {
        for kv in store.ks(ks).prefix(id.to_bytes()) {
            sets.delete(ks, kv.key()?.to_vec());
        }
    }
    for kv in store.ks(Ks::ThreadAlias).prefix(conv.channel_id.to_bytes()) {
        let (key, value) = kv.into_inner()?;
        let alias: ThreadAliasValue = codec::decode(&value)?;
        if alias.conversation == id {
            sets.delete(Ks::ThreadAlias, key.to_vec());
        }
    }
    // Its armed timers (a timer it no longer knows goes when due: the conversation is gone).
    if let Some(due) = conv.overdue_at {
        sets.delete(Ks::Timer, catalogue::timer(due, TIMER_OVERDUE, id));
    }
    if let Some(until) = conv.snoozed_until {
        sets.delete(Ks::Timer, catalogue::timer(until, TIMER_SNOOZE, id));
    }
    // Its provider thread, and the provisional one a conversation we started had.
    for kv in store.ks(Ks::ThreadConv).prefix(conv.channel_id.to_bytes()) {
        let (key, owner) = kv.into_inner()?;
        if owner.as_ref() == id.to_bytes() {
            sets.delete(Ks::ThreadConv, key.to_vec());
        }
    }
    sets.delete(Ks::ConvStats, id.to_bytes().to_vec());
    // The state and its inbox entries last, in one set: until then the conversation is
    // listed as it was; after, nowhere.
    let mut sets = sets.done();
    let mut last = WriteSet::new();
    crate::views::remove(&mut last, conv);
    // Its link to the conversation it is merged into goes with it (its actor tells that
    // one). Links of conversations merged into this one stay until each is split off by
    // its own actor: a link whose first conversation is gone is split at the next start.
    if let Some(primary) = conv.merged_into {
        last.delete(Ks::Merge, catalogue::merge(primary, id));
    }
    last.delta(conv.workspace_id, id, DeltaBody::ConversationRemoved);
    last.delete(Ks::ConvState, id.to_bytes().to_vec()).delete(
        Ks::ContactConv,
        catalogue::contact_conv(conv.contact.id, id),
    );
    sets.push(last);
    Ok((sets, counts))
}

/// Adds the deletion of one stored message (`key` in `conv_msg`) with its files,
/// provider-id entry and outbox entry; the message itself last.
fn delete_message(
    store: &Store,
    sets: &mut Sets,
    conv: &Conversation,
    key: &[u8],
    message: &Message,
    counts: &mut ErasedCounts,
) -> Result<()> {
    counts.messages += 1;
    if let Some(external) = &message.external_id {
        sets.delete(Ks::ExtMsg, catalogue::ext_msg(conv.channel_id, external));
    }
    for index in 0..message.attachments.len() as u32 {
        let blob = catalogue::blob(message.id, index);
        if store.contains(Ks::Blob, &blob)? {
            counts.files += 1;
            sets.delete(Ks::Blob, blob);
        }
    }
    sets.delete(Ks::OutboxEntry, catalogue::outbox_entry(message.id));
    sets.delete(Ks::ConvMsg, key.to_vec());
    Ok(())
}

/// Retention inside a conversation that is still active: the write sets that delete its
/// messages created before `before` (with their files, provider-id and outbox entries, AI
/// decisions and feedback), what they erase, and the ids of those messages (for the
/// search index). The conversation's state stays.
pub fn purge_sets(
    store: &Store,
    conv: &Conversation,
    before: UnixMillis,
) -> Result<(Vec<WriteSet>, ErasedCounts, Vec<crate::ids::MessageId>)> {
    let mut counts = ErasedCounts::default();
    let mut sets = Sets::new();
    let mut ids = Vec::new();
    // Per set, the messages whose row it deletes: it announces them (`messages_removed`).
    let mut removed: Vec<Vec<crate::ids::MessageId>> = Vec::new();
    for kv in store.ks(Ks::ConvMsg).prefix(conv.id.to_bytes()) {
        let (key, value) = kv.into_inner()?;
        let message: Message = codec::decode(&value)?;
        if message.created_at >= before {
            continue;
        }
        for ks in [Ks::AiLog, Ks::AiFeedback] {
            for kv in store
                .ks(ks)
                .prefix(catalogue::conv_msg(conv.id, message.seq))
            {
                sets.delete(ks, kv.key()?.to_vec());
            }
        }
        ids.push(message.id);
        delete_message(store, &mut sets, conv, &key, &message, &mut counts)?;
        let at = sets.last_index();
        removed.resize_with(at + 1, Vec::new);
        removed[at].push(message.id);
    }
    for (set, message_ids) in sets.sets.iter_mut().zip(removed) {
        if !message_ids.is_empty() {
            set.delta(
                conv.workspace_id,
                conv.id,
                DeltaBody::MessagesRemoved { message_ids },
            );
        }
    }
    Ok((sets.done(), counts, ids))
}

/// Step 2: the write sets that delete the workspace's stream deltas about `conversations`
/// (a replay then never shows them), with how many.
pub fn delta_sets(
    store: &Store,
    ws: WorkspaceId,
    conversations: &HashSet<ConversationId>,
) -> Result<(Vec<WriteSet>, u64)> {
    // Not the removals' own announcements: ids only, so replays and resuming clients
    // learn what went.
    delta_sets_where(store, ws, |delta| {
        !delta.body.is_removal()
            && delta
                .conversation_id
                .is_some_and(|c| conversations.contains(&c))
    })
}

/// The write sets that delete the workspace's deltas `gone` picks, with how many.
pub fn delta_sets_where(
    store: &Store,
    ws: WorkspaceId,
    gone: impl Fn(&Delta) -> bool,
) -> Result<(Vec<WriteSet>, u64)> {
    let mut sets = Sets::new();
    let mut count = 0;
    for kv in store.ks(Ks::WsDelta).prefix(ws.to_bytes()) {
        let (key, value) = kv.into_inner()?;
        let delta: Delta = codec::decode(&value)?;
        if gone(&delta) {
            count += 1;
            sets.delete(Ks::WsDelta, key.to_vec());
        }
    }
    Ok((sets.done(), count))
}

/// Step 4: the write sets that delete the workspace's agents' notifications about
/// `conversations` (their unread marks and counts, waiting emails and pushes), with how
/// many.
pub fn notification_sets(
    store: &Store,
    ws: WorkspaceId,
    conversations: &HashSet<ConversationId>,
) -> Result<(Vec<WriteSet>, u64)> {
    notification_sets_where(store, ws, |n| conversations.contains(&n.conversation_id))
}

/// The write sets that delete the workspace's agents' notifications `gone` picks (with
/// their unread marks and counts, waiting emails and pushes), with how many.
pub fn notification_sets_where(
    store: &Store,
    ws: WorkspaceId,
    gone: impl Fn(&Notification) -> bool,
) -> Result<(Vec<WriteSet>, u64)> {
    let mut sets = Sets::new();
    let mut count = 0;
    for agent in store.workspace_agents(ws)? {
        for kv in store.ks(Ks::Notif).prefix(agent.id.to_bytes()) {
            let (key, value) = kv.into_inner()?;
            let notification: Notification = codec::decode(&value)?;
            if !gone(&notification) {
                continue;
            }
            count += 1;
            let pushes: Vec<Vec<u8>> = store
                .ks(Ks::PushOutbox)
                .prefix(notification.id.to_bytes())
                .map(|kv| kv.key().map(|k| k.to_vec()))
                .collect::<std::result::Result<_, _>>()?;
            // The unread mark and its count move together: a resumed erasure that found
            // the mark gone would not count it down again.
            sets.together(4 + pushes.len());
            if store.contains(Ks::NotifUnread, &key)? {
                sets.delete(Ks::NotifUnread, key.to_vec());
                sets.current()
                    .add(Ks::NotifCount, agent.id.to_bytes().to_vec(), -1);
            }
            sets.delete(Ks::NotifEmail, key.to_vec());
            for push in pushes {
                sets.delete(Ks::PushOutbox, push);
            }
            sets.delete(Ks::Notif, key.to_vec());
        }
    }
    Ok((sets.done(), count))
}

/// Step 0: the set that deletes every identity of the workspace naming the contact (phone,
/// email, profile ids), so that a message from the lead while the erasure runs makes a
/// new contact instead of joining the one being erased.
pub fn identity_set(store: &Store, contact: &StoredContact) -> Result<WriteSet> {
    let mut set = WriteSet::new();
    let ws = contact.workspace_id;
    let id = contact.contact.id;
    for ks in [Ks::PhoneContact, Ks::EmailContact, Ks::ProfileContact] {
        for kv in store.ks(ks).prefix(ws.to_bytes()) {
            let (key, value) = kv.into_inner()?;
            if value.as_ref() == id.to_bytes() {
                set.delete(ks, key.to_vec());
            }
        }
    }
    Ok(set)
}

/// Step 5: the set that deletes the contact, any identity still naming it and its
/// conversation list.
pub fn contact_set(store: &Store, contact: &StoredContact) -> Result<WriteSet> {
    let mut set = identity_set(store, contact)?;
    let id = contact.contact.id;
    for kv in store.ks(Ks::ContactConv).prefix(id.to_bytes()) {
        set.delete(Ks::ContactConv, kv.key()?.to_vec());
    }
    set.delete(Ks::ContactState, id.to_bytes().to_vec());
    Ok(set)
}
