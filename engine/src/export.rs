//! Export of a workspace, or of one contact (GDPR Art. 15 and 20), as JSON Lines.
//!
//! Everything is read from one snapshot of the store, so an export is consistent while
//! traffic goes on, and it is produced line by line (the caller streams it). Lines, each a
//! JSON object with a `type`:
//!
//! - `export`: first; the scope, the workspace, the delta head of the snapshot, when.
//! - `contact`: a lead's details.
//! - `conversation`: a conversation's whole state; then its `message`s in order, each
//!   followed by its stored files as `attachment` lines (bytes in base64). Files the
//!   provider keeps (WhatsApp media) are listed in the message with their `media_id` and
//!   not fetched.
//! - `end`: last, with the number of lines of each type. A stream without it was cut.

use base64::Engine as _;
use fjall::{Readable, Snapshot};
use serde::Serialize;

use crate::catalogue::{self, Ks};
use crate::codec;
use crate::error::Result;
use crate::ids::{ContactId, ConversationId, WorkspaceId};
use crate::model::{Conversation, Message, StoredContact};
use crate::store::Store;

/// What an export covers.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    Workspace(WorkspaceId),
    /// One lead of the workspace: its details, conversations, messages and files.
    Contact(WorkspaceId, ContactId),
}

/// Lines of each type written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub contacts: u64,
    pub conversations: u64,
    pub messages: u64,
    pub attachments: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Export {
        scope: &'static str,
        workspace_id: WorkspaceId,
        #[serde(skip_serializing_if = "Option::is_none")]
        contact_id: Option<ContactId>,
        delta_head: u64,
        exported_at: String,
        confab_version: &'a str,
    },
    Contact {
        contact: &'a StoredContact,
    },
    Conversation {
        conversation: &'a Conversation,
    },
    Message {
        message: &'a Message,
    },
    Attachment {
        conversation_id: ConversationId,
        seq: u64,
        index: u32,
        name: Option<&'a str>,
        content_type: &'a str,
        size: usize,
        data_base64: String,
    },
    End {
        #[serde(flatten)]
        counts: Counts,
    },
}

/// Writes the export of `scope` as JSON Lines through `emit`, one line (with its `\n`) at
/// a time; `emit` returns `false` to stop (the reader went away). `None` when the contact
/// is not in the workspace (nothing emitted).
pub fn export(
    store: &Store,
    scope: Scope,
    confab_version: &str,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> Result<Option<Counts>> {
    let snap = store.snapshot();
    let (workspace_id, contact_id) = match scope {
        Scope::Workspace(ws) => (ws, None),
        Scope::Contact(ws, contact) => (ws, Some(contact)),
    };
    let contact = match contact_id {
        Some(id) => match get::<StoredContact>(store, &snap, Ks::ContactState, &id.to_bytes())? {
            Some(c) if c.workspace_id == workspace_id => Some(c),
            _ => return Ok(None),
        },
        None => None,
    };
    let delta_head = snap
        .get(store.ks(Ks::Meta), catalogue::META_DELTA_HEAD)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    let mut out = Writer {
        emit: &mut emit,
        open: true,
        counts: Counts::default(),
    };
    out.line(&Line::Export {
        scope: if contact.is_some() {
            "contact"
        } else {
            "workspace"
        },
        workspace_id,
        contact_id,
        delta_head,
        exported_at: crate::time::to_rfc3339(crate::time::now_millis()),
        confab_version,
    });

    // Contacts, then each conversation with its messages.
    let conversations: Vec<ConversationId> = match &contact {
        Some(c) => {
            out.counts.contacts += 1;
            out.line(&Line::Contact { contact: c });
            snap.prefix(store.ks(Ks::ContactConv), c.contact.id.to_bytes())
                .map(|kv| {
                    let key = kv.key()?;
                    key.get(16..)
                        .and_then(ConversationId::from_key_prefix)
                        .ok_or_else(|| crate::Error::Corrupt("contact_conv key".into()))
                })
                .collect::<Result<_>>()?
        }
        None => {
            // Stores are shared by workspaces and hold no contact or conversation list
            // per workspace besides the inbox views: a scan, filtered.
            for kv in snap.iter(store.ks(Ks::ContactState)) {
                if !out.open {
                    break;
                }
                let c: StoredContact = codec::decode(&kv.value()?)?;
                if c.workspace_id == workspace_id {
                    out.counts.contacts += 1;
                    out.line(&Line::Contact { contact: &c });
                }
            }
            let mut ids = Vec::new();
            for kv in snap.iter(store.ks(Ks::ConvState)) {
                let conv: Conversation = codec::decode(&kv.value()?)?;
                if conv.workspace_id == workspace_id {
                    ids.push(conv.id);
                }
            }
            ids
        }
    };
    for id in conversations {
        if !out.open {
            break;
        }
        let Some(conv) = get::<Conversation>(store, &snap, Ks::ConvState, &id.to_bytes())? else {
            continue;
        };
        if conv.workspace_id != workspace_id {
            continue;
        }
        conversation_lines(store, &snap, &conv, None, &mut out)?;
    }
    let counts = out.counts;
    out.line(&Line::End { counts });
    Ok(Some(counts))
}

/// A conversation's line, then its messages (created before `before`, or all) each
/// followed by its stored files.
fn conversation_lines<E: FnMut(Vec<u8>) -> bool>(
    store: &Store,
    snap: &Snapshot,
    conv: &Conversation,
    before: Option<crate::time::UnixMillis>,
    out: &mut Writer<'_, E>,
) -> Result<()> {
    let id = conv.id;
    out.counts.conversations += 1;
    out.line(&Line::Conversation { conversation: conv });
    for kv in snap.prefix(store.ks(Ks::ConvMsg), id.to_bytes()) {
        if !out.open {
            break;
        }
        let message: Message = codec::decode(&kv.value()?)?;
        if before.is_some_and(|before| message.created_at >= before) {
            continue;
        }
        out.counts.messages += 1;
        out.line(&Line::Message { message: &message });
        for (index, attachment) in message.attachments.iter().enumerate() {
            let index = index as u32;
            let Some(bytes) = snap.get(store.ks(Ks::Blob), catalogue::blob(message.id, index))?
            else {
                continue;
            };
            out.counts.attachments += 1;
            out.line(&Line::Attachment {
                conversation_id: id,
                seq: message.seq,
                index,
                name: attachment.name.as_deref(),
                content_type: &attachment.content_type,
                size: bytes.len(),
                data_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
            });
        }
    }
    Ok(())
}

/// Appends to `out`, as export lines, `conv` and its messages created before `before`
/// (all when `None`) with their stored files: what retention archives before it deletes.
pub fn archive_lines(
    store: &Store,
    conv: &Conversation,
    before: Option<crate::time::UnixMillis>,
    out: &mut Vec<u8>,
) -> Result<Counts> {
    let snap = store.snapshot();
    let mut emit = |line: Vec<u8>| {
        out.extend_from_slice(&line);
        true
    };
    let mut writer = Writer {
        emit: &mut emit,
        open: true,
        counts: Counts::default(),
    };
    conversation_lines(store, &snap, conv, before, &mut writer)?;
    Ok(writer.counts)
}

fn get<T: serde::de::DeserializeOwned>(
    store: &Store,
    snap: &Snapshot,
    ks: Ks,
    key: &[u8],
) -> Result<Option<T>> {
    match snap.get(store.ks(ks), key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

struct Writer<'e, E: FnMut(Vec<u8>) -> bool> {
    emit: &'e mut E,
    /// False once the reader went away: nothing more is produced.
    open: bool,
    counts: Counts,
}

impl<E: FnMut(Vec<u8>) -> bool> Writer<'_, E> {
    fn line(&mut self, line: &Line<'_>) {
        if !self.open {
            return;
        }
        // Serializing our own types into a Vec cannot fail.
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        self.open = (self.emit)(bytes);
    }
}
