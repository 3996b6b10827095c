//! Durable timers: keys `due ‖ kind ‖ conversation` in the `timer` keyspace, written by the
//! conversation that arms them in the batch of the change that does. One task looks for
//! due timers and tells their conversations, which disarm them in the batch of what they
//! do about it; so a timer fires after a restart, and at most once more when a crash
//! comes between the tell and that batch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::store::Store;

use crate::clock::SharedClock;
use crate::conversation::ConversationMsg;
use crate::error::ActorError;
use crate::manager::Conversations;

/// Timers taken per look.
const BATCH: usize = 512;
/// A timer told to its conversation and still there after this long is told again.
const RETELL: Duration = Duration::from_secs(30);

/// Runs until the runtime stops: every `tick` (or when the clock jumps), tells the
/// conversations of due timers.
pub async fn run(
    store: Store,
    committer: Committer,
    conversations: Conversations,
    clock: SharedClock,
    tick: Duration,
) {
    let mut told: HashMap<Vec<u8>, Instant> = HashMap::new();
    loop {
        let now = clock.now();
        let reader = store.clone();
        let due = tokio::task::spawn_blocking(move || reader.due_timers(now, BATCH)).await;
        let due = match due {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read due timers");
                Vec::new()
            }
            Err(_) => return,
        };
        let keys: Vec<Vec<u8>> = due
            .iter()
            .map(|(at, kind, conv)| catalogue::timer(*at, *kind, *conv))
            .collect();
        told.retain(|key, _| keys.contains(key));
        for ((at, kind, conv), key) in due.into_iter().zip(keys) {
            if told.get(&key).is_some_and(|when| when.elapsed() < RETELL) {
                continue;
            }
            match conversations
                .tell(conv, ConversationMsg::Timer { kind, due: at })
                .await
            {
                Ok(()) => {
                    told.insert(key, Instant::now());
                }
                Err(ActorError::NotFound) => {
                    // The conversation is gone: so is its timer.
                    let mut set = WriteSet::new();
                    set.delete(Ks::Timer, key);
                    let _ = committer.commit(set).await;
                }
                Err(e) => {
                    tracing::debug!(conversation = %conv, error = %e, "a due timer waits");
                }
            }
        }
        super::pause(&clock, tick).await;
    }
}
