//! The contacts actor: the one writer of existing contacts. Edits are serialized through
//! its mailbox (no lock anywhere), applied to the current version, and reach every
//! conversation with the lead. New contacts are staged into the batch that creates their
//! first conversation by the engine's `contacts` module, whose identity rules (one
//! contact per phone, email or profile id in a workspace) this actor keeps too.

use confab_engine::catalogue::Ks;
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::contacts::{claim, Identity};
use confab_engine::ids::{AgentId, ContactId, WorkspaceId};
use confab_engine::model::{Contact, StoredContact};
use confab_engine::store::Store;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::conversation::{Command, ConversationMsg};
use crate::error::{ActorError, ActorResult};
use crate::manager::Conversations;

/// A change of a contact's details: each field `None` to keep it, `Some(None)` to clear
/// it. Values arrive validated and normalized (phones as `+` and digits).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactEdit {
    pub name: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub company: Option<Option<String>>,
    pub title: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    /// Who edits (the conversations' activity names them).
    pub by: Option<AgentId>,
}

impl ContactEdit {
    fn apply(self, contact: &mut Contact) {
        let fields = [
            (self.name, &mut contact.name),
            (self.email, &mut contact.email),
            (self.phone, &mut contact.phone),
            (self.company, &mut contact.company),
            (self.title, &mut contact.title),
            (self.avatar_url, &mut contact.avatar_url),
        ];
        for (change, field) in fields {
            if let Some(value) = change {
                *field = value;
            }
        }
    }
}

pub enum ContactsMsg {
    Edit {
        workspace: WorkspaceId,
        id: ContactId,
        edit: ContactEdit,
        reply: RpcReplyPort<ActorResult<StoredContact>>,
    },
    /// Deletes the contact and its identities (the last step of its erasure): serialized
    /// with edits, so no edit writes it back. Answers whether there was one to delete.
    Erase {
        workspace: WorkspaceId,
        id: ContactId,
        /// Only unlink its phone, email and profile ids (the erasure's first step).
        identities_only: bool,
        reply: RpcReplyPort<ActorResult<bool>>,
    },
}

/// The handle to the contacts' owner. Cheap to clone.
#[derive(Clone)]
pub struct Contacts {
    actor: ActorRef<ContactsMsg>,
}

impl Contacts {
    pub async fn start(
        store: Store,
        committer: Committer,
        conversations: Conversations,
    ) -> Result<Contacts, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn(
            None,
            ContactsActor,
            ContactsState {
                store,
                committer,
                conversations,
            },
        )
        .await?;
        Ok(Contacts { actor })
    }

    /// Edits a contact of `workspace`; every conversation with the lead streams its new
    /// card. `NotFound` for a contact of another workspace; `Store(AlreadyExists)` when
    /// another contact has the new phone or email.
    pub async fn edit(
        &self,
        workspace: WorkspaceId,
        id: ContactId,
        edit: ContactEdit,
    ) -> ActorResult<StoredContact> {
        let unavailable = || ActorError::Unavailable("the contacts actor has stopped".into());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.actor
            .cast(ContactsMsg::Edit {
                workspace,
                id,
                edit,
                reply: tx.into(),
            })
            .map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())?
    }

    /// Deletes a contact of `workspace` with its identities, or only its identities (see
    /// [`ContactsMsg::Erase`]).
    pub async fn erase(
        &self,
        workspace: WorkspaceId,
        id: ContactId,
        identities_only: bool,
    ) -> ActorResult<bool> {
        let unavailable = || ActorError::Unavailable("the contacts actor has stopped".into());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.actor
            .cast(ContactsMsg::Erase {
                workspace,
                id,
                identities_only,
                reply: tx.into(),
            })
            .map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())?
    }

    pub async fn stop(&self, timeout: std::time::Duration) {
        let _ = self.actor.drain_and_wait(Some(timeout)).await;
    }
}

struct ContactsActor;

struct ContactsState {
    store: Store,
    committer: Committer,
    conversations: Conversations,
}

impl Actor for ContactsActor {
    type Msg = ContactsMsg;
    type State = ContactsState;
    type Arguments = ContactsState;

    async fn pre_start(
        &self,
        _myself: ActorRef<ContactsMsg>,
        state: ContactsState,
    ) -> Result<ContactsState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ContactsMsg>,
        msg: ContactsMsg,
        state: &mut ContactsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ContactsMsg::Edit {
                workspace,
                id,
                edit,
                reply,
            } => {
                let _ = reply.send(state.edit(workspace, id, edit).await);
            }
            ContactsMsg::Erase {
                workspace,
                id,
                identities_only,
                reply,
            } => {
                let _ = reply.send(state.erase(workspace, id, identities_only).await);
            }
        }
        Ok(())
    }
}

impl ContactsState {
    async fn erase(
        &self,
        ws: WorkspaceId,
        id: ContactId,
        identities_only: bool,
    ) -> ActorResult<bool> {
        let store = self.store.clone();
        let set = tokio::task::spawn_blocking(move || {
            match store.contact(id)?.filter(|c| c.workspace_id == ws) {
                Some(contact) if identities_only => {
                    confab_engine::erasure::identity_set(&store, &contact).map(Some)
                }
                Some(contact) => confab_engine::erasure::contact_set(&store, &contact).map(Some),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        match set {
            Some(set) => {
                self.committer.commit(set).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn edit(
        &self,
        ws: WorkspaceId,
        id: ContactId,
        edit: ContactEdit,
    ) -> ActorResult<StoredContact> {
        let store = self.store.clone();
        let before = tokio::task::spawn_blocking(move || store.contact(id))
            .await
            .map_err(|e| ActorError::Unavailable(e.to_string()))??
            .filter(|c| c.workspace_id == ws)
            .ok_or(ActorError::NotFound)?;
        let mut contact = before.contact.clone();
        let edit_by = edit.by;
        edit.apply(&mut contact);
        if contact == before.contact {
            return Ok(before);
        }
        let mut set = WriteSet::new();
        // Phones and emails identify a lead within the workspace: one contact each.
        let old = [
            before.contact.phone.clone().map(Identity::Phone),
            before.contact.email.clone().map(Identity::Email),
        ];
        let new = [
            contact.phone.clone().map(Identity::Phone),
            contact.email.clone().map(Identity::Email),
        ];
        for (old, new) in old.into_iter().zip(new) {
            let old_key = old.as_ref().map(|i| i.key(ws));
            let new_key = new.as_ref().map(|i| i.key(ws));
            if old_key == new_key {
                continue;
            }
            if let Some((ks, key)) = old_key {
                set.delete(ks, key);
            }
            if let Some(identity) = &new {
                claim(&mut set, ws, identity, contact.id);
            }
        }
        let stored = StoredContact {
            contact: contact.clone(),
            ..before
        };
        set.put(Ks::ContactState, contact.id.to_bytes().to_vec(), &stored);
        self.committer.commit(set).await?;

        // Each conversation keeps a copy for its card: its actor refreshes and streams it.
        let store = self.store.clone();
        let conversations = tokio::task::spawn_blocking(move || store.contact_conversations(id))
            .await
            .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        // The edit is durable: a conversation that cannot be reached now does not undo it
        // (its card keeps the old copy until the next edit).
        for conversation in conversations {
            let command = Command::ContactChanged(contact.clone());
            let by = edit_by;
            if let Err(e) = self
                .conversations
                .request(conversation, |reply| {
                    ConversationMsg::Command(command, by, reply)
                })
                .await
            {
                tracing::warn!(%conversation, error = %e, "a conversation did not take the contact's edit");
            }
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_changes_only_the_fields_it_names() {
        let mut contact = Contact {
            name: Some("Ana".into()),
            phone: Some("+1".into()),
            company: Some("Acme".into()),
            ..Contact::default()
        };
        ContactEdit {
            name: Some(Some("Ana Lima".into())),
            company: Some(None),
            ..ContactEdit::default()
        }
        .apply(&mut contact);
        assert_eq!(contact.name.as_deref(), Some("Ana Lima"));
        assert_eq!(contact.phone.as_deref(), Some("+1"));
        assert_eq!(contact.company, None);
    }
}
