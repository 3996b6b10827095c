//! Leads' identities: what names one contact within a workspace (a phone, an email, a
//! provider's profile id), how an inbound message's lead is resolved to the workspace's
//! contact, and how a new contact is staged into the batch that creates its first
//! conversation. Edits of existing contacts go through the contacts actor (actors crate),
//! which keeps the same rules.
//!
//! An identity names one contact per workspace: each is an insert-if-absent index entry,
//! so two creators racing for one phone (or an edit taking a phone another contact has)
//! lose atomically and write nothing.

use crate::catalogue::{self, Ks};
use crate::committer::WriteSet;
use crate::ids::{ContactId, WorkspaceId};
use crate::inbound::InboundEvent;
use crate::model::{ChannelKind, Contact, StoredContact};
use crate::store::Store;
use crate::time::UnixMillis;

/// Something that names a lead within a workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Normalized: `+` and digits.
    Phone(String),
    /// Compared without case.
    Email(String),
    /// A provider's id of the lead's profile (LinkedIn's provider id).
    Profile { kind: ChannelKind, id: String },
}

impl Identity {
    pub fn key(&self, ws: WorkspaceId) -> (Ks, Vec<u8>) {
        match self {
            Identity::Phone(phone) => (Ks::PhoneContact, catalogue::phone_contact(ws, phone)),
            Identity::Email(email) => (Ks::EmailContact, catalogue::email_contact(ws, email)),
            Identity::Profile { kind, id } => (
                Ks::ProfileContact,
                catalogue::profile_contact(ws, kind.as_str(), id),
            ),
        }
    }
}

/// The identities an inbound message gives its lead, strongest first.
pub fn identities(kind: ChannelKind, event: &InboundEvent) -> Vec<Identity> {
    let mut out = Vec::with_capacity(3);
    if let Some(phone) = &event.contact_phone {
        out.push(Identity::Phone(phone.clone()));
    }
    if let Some(email) = &event.contact_email {
        out.push(Identity::Email(email.clone()));
    }
    if let Some(id) = &event.contact_profile {
        out.push(Identity::Profile {
            kind,
            id: id.clone(),
        });
    }
    out
}

/// The workspace's contact any of `identities` names (the first that names one). Blocking:
/// call off the reactor.
pub fn resolve(
    store: &Store,
    ws: WorkspaceId,
    identities: &[Identity],
) -> crate::Result<Option<StoredContact>> {
    for identity in identities {
        let (ks, key) = identity.key(ws);
        if let Some(raw) = store.get_raw(ks, &key)? {
            if let Some(id) = ContactId::from_key_prefix(&raw) {
                if let Some(contact) = store.contact(id)? {
                    return Ok(Some(contact));
                }
            }
        }
    }
    Ok(None)
}

/// Stages a new contact of `ws` into `set`, claiming each of its identities (the set is
/// refused if another contact claimed one first). `seed` holds what else is known of the
/// lead (a name, a picture); its id is replaced.
pub fn stage_new(
    set: &mut WriteSet,
    ws: WorkspaceId,
    seed: Contact,
    identities: &[Identity],
    now: UnixMillis,
) -> Contact {
    let mut contact = Contact {
        id: ContactId::new(),
        ..seed
    };
    for identity in identities {
        match identity {
            Identity::Phone(phone) => contact.phone = Some(phone.clone()),
            Identity::Email(email) => contact.email = Some(email.clone()),
            Identity::Profile { .. } => {}
        }
    }
    let stored = StoredContact {
        workspace_id: ws,
        contact: contact.clone(),
        created_at: now,
    };
    set.put(Ks::ContactState, contact.id.to_bytes().to_vec(), &stored);
    for identity in identities {
        claim(set, ws, identity, contact.id);
    }
    contact
}

/// Claims `identity` for contact `id` in `set` (refused if another contact has it).
pub fn claim(set: &mut WriteSet, ws: WorkspaceId, identity: &Identity, id: ContactId) {
    let (ks, key) = identity.key(ws);
    set.require_absent(ks, key.clone())
        .put_raw(ks, key, id.to_bytes().to_vec());
}
