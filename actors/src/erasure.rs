//! Carries out a lead's erasure, step by step (see `confab_engine::erasure`): every step
//! is idempotent and the record is stored before the steps it depends on, so an erasure
//! cut short by a crash is resumed at the next start ([`Runtime::resume_erasures`]).

use std::collections::HashSet;

use confab_engine::catalogue::Ks;
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::erasure::{self, Erasure};
use confab_engine::store::Store;

use crate::error::{ActorError, ActorResult};
use crate::indexer::IndexerMsg;
use crate::Runtime;

/// Conversations created for the lead while it is being erased are erased too, up to this
/// many rounds.
const ROUNDS: usize = 10;

fn blocking_failed(e: tokio::task::JoinError) -> ActorError {
    ActorError::Unavailable(format!("a store read failed: {e}"))
}

async fn save(committer: &Committer, record: &Erasure) -> ActorResult<()> {
    let mut set = WriteSet::new();
    set.put(Ks::Erasure, record.key(), record);
    committer.commit(set).await?;
    Ok(())
}

impl Runtime {
    /// Records an erasure of `record.contact_id` durably, then carries it out in the
    /// background; returns the record as stored.
    pub async fn start_erasure(
        &self,
        store: Store,
        committer: Committer,
        record: Erasure,
    ) -> ActorResult<Erasure> {
        save(&committer, &record).await?;
        self.spawn_erasure(store, committer, record.clone());
        Ok(record)
    }

    /// Resumes every erasure a previous run did not complete.
    pub async fn resume_erasures(&self, store: Store, committer: Committer) -> ActorResult<usize> {
        let reader = store.clone();
        let open = tokio::task::spawn_blocking(move || reader.open_erasures())
            .await
            .map_err(blocking_failed)??;
        let count = open.len();
        for record in open {
            tracing::info!(erasure = %record.id, "resuming an erasure");
            self.spawn_erasure(store.clone(), committer.clone(), record);
        }
        Ok(count)
    }

    fn spawn_erasure(&self, store: Store, committer: Committer, record: Erasure) {
        let runtime = self.clone();
        metrics::gauge!(crate::metrics::ERASURES_RUNNING).increment(1.0);
        tokio::spawn(async move {
            // Counted down however the task ends (completed, or left to the next start).
            struct Running;
            impl Drop for Running {
                fn drop(&mut self) {
                    metrics::gauge!(crate::metrics::ERASURES_RUNNING).decrement(1.0);
                }
            }
            let _running = Running;
            let id = record.id.clone();
            // A step that fails (the store or the index unavailable for a moment) is
            // tried again; the record stays open until every step is done.
            let mut wait = std::time::Duration::from_millis(100);
            let mut record = record;
            loop {
                match runtime.erase(&store, &committer, record.clone()).await {
                    Ok(done) => {
                        metrics::counter!(crate::metrics::ERASURES_COMPLETED).increment(1);
                        tracing::info!(erasure = %id, erased = ?done.erased, "erasure completed");
                        return;
                    }
                    Err(ActorError::Store(confab_engine::Error::Poisoned))
                    | Err(ActorError::Store(confab_engine::Error::CommitterClosed)) => {
                        // Shutting down or the store refuses writes: the next start resumes.
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(erasure = %id, error = %e, "erasure step failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(30));
                        let reader = store.clone();
                        let (ws, key) = (record.workspace_id, record.id.clone());
                        if let Ok(Ok(Some(latest))) =
                            tokio::task::spawn_blocking(move || reader.erasure(ws, &key)).await
                        {
                            record = latest;
                        }
                    }
                }
            }
        });
    }

    /// Runs every step of `record` and completes it.
    async fn erase(
        &self,
        store: &Store,
        committer: &Committer,
        mut record: Erasure,
    ) -> ActorResult<Erasure> {
        let (ws, contact) = (record.workspace_id, record.contact_id);
        // 0. The lead's phone, email and profile ids no longer lead to this contact.
        self.contacts.erase(ws, contact, true).await?;
        // 1. The contact's conversations, each through its actor. The record lists them
        //    before they are erased: the later steps need their ids after the contact's
        //    list of conversations is gone.
        let mut settled = false;
        for round in 0..ROUNDS {
            let reader = store.clone();
            let found = tokio::task::spawn_blocking(move || reader.contact_conversations(contact))
                .await
                .map_err(blocking_failed)??;
            if round > 0 && found.is_empty() {
                settled = true;
                break;
            }
            let new: Vec<_> = found
                .iter()
                .filter(|c| !record.conversations.contains(c))
                .copied()
                .collect();
            if !new.is_empty() {
                record.conversations.extend(new);
                save(committer, &record).await?;
            }
            // The first round also finishes those a previous run had started.
            let targets = if round == 0 {
                record.conversations.clone()
            } else {
                found
            };
            for conv in targets {
                let erased = self.conversations.erase(conv).await?;
                if erased != Default::default() {
                    // What was erased is on record even if a crash follows.
                    record.erased.add(erased);
                    save(committer, &record).await?;
                }
            }
        }
        if !settled {
            return Err(ActorError::Unavailable(
                "conversations kept being created for the lead; trying again".into(),
            ));
        }
        let conversations: HashSet<_> = record.conversations.iter().copied().collect();
        self.conversations.forget_threads(&conversations);

        // 2. The stream's deltas about them.
        let reader = store.clone();
        let of = conversations.clone();
        let (sets, deltas) =
            tokio::task::spawn_blocking(move || erasure::delta_sets(&reader, ws, &of))
                .await
                .map_err(blocking_failed)??;
        for set in sets {
            committer.commit(set).await?;
        }
        record.erased.deltas += deltas;

        // 3. Their search documents.
        if let Some(indexer) = &self.indexer {
            let ids = record.conversations.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            indexer
                .cast(IndexerMsg::Erase {
                    conversations: ids,
                    messages: Vec::new(),
                    reply: tx.into(),
                })
                .map_err(|_| ActorError::Unavailable("the search indexer has stopped".into()))?;
            rx.await
                .map_err(|_| ActorError::Unavailable("the search indexer has stopped".into()))?
                .map_err(ActorError::Unavailable)?;
        }

        // 4. Agents' notifications about them.
        let reader = store.clone();
        let (sets, notifications) = tokio::task::spawn_blocking(move || {
            erasure::notification_sets(&reader, ws, &conversations)
        })
        .await
        .map_err(blocking_failed)??;
        for set in sets {
            committer.commit(set).await?;
        }
        record.erased.notifications += notifications;

        // 5. The contact and its identities.
        self.contacts.erase(ws, contact, false).await?;

        record.completed_at = Some(confab_engine::time::now_millis());
        save(committer, &record).await?;
        Ok(record)
    }
}
