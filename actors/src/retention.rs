//! Retention: per workspace, messages older than `retention_days` are removed (and first
//! archived as JSON Lines when the workspace asks for it), on a schedule.
//!
//! Each pass recomputes what is older than its cutoff, so a pass cut short by a crash is
//! simply finished by the next one. Within a workspace the order makes that safe:
//! 1. the archive file is written and fsync'd;
//! 2. the stream's deltas older than the cutoff (and those of conversations removed
//!    whole) are deleted, so an index catching up after a crash cannot bring them back;
//! 3. the search documents of what goes are deleted and committed;
//! 4. the store, through each conversation's actor, which decides: inactive since the
//!    cutoff, the conversation is erased whole (as a lead's erasure does); still active
//!    (also when a message arrived since step 1), only its old messages go (with their
//!    files, provider-id and outbox entries, AI decisions);
//! 5. agents' notifications older than the cutoff.
//!
//! Contacts stay (their details are not messages; erasing a lead is `erasure`), and so do
//! the daily analytics counters (aggregates).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use confab_engine::catalogue::Ks;
use confab_engine::codec;
use confab_engine::committer::Committer;
use confab_engine::erasure::{self, ErasedCounts};
use confab_engine::ids::{ConversationId, WorkspaceId};
use confab_engine::model::{Conversation, Message};
use confab_engine::store::Store;
use confab_engine::time::UnixMillis;
use tokio::sync::watch;

use crate::error::{ActorError, ActorResult};
use crate::indexer::IndexerMsg;
use crate::{Runtime, SharedClock};

const DAY_MS: i64 = 86_400_000;

/// How retention runs.
#[derive(Clone)]
pub struct RetentionSettings {
    /// Time between two passes (the first runs at once).
    pub interval: Duration,
    /// Archives go to `<archive_dir>/<workspace id>/`.
    pub archive_dir: PathBuf,
    /// What "now" is (tests drive a manual clock).
    pub clock: SharedClock,
    /// Conversations' activity and admins' audit entries are kept this many days (`None`:
    /// for ever).
    pub audit_days: Option<u32>,
}

/// What one pass removed in one workspace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetentionReport {
    pub erased: ErasedCounts,
    /// The archive written, if any.
    pub archive: Option<PathBuf>,
}

/// Whether the whole conversation is older than `cutoff`: no activity since, and not
/// snoozed to come back after it.
fn gone_quiet(conv: &confab_engine::model::Conversation, cutoff: UnixMillis) -> bool {
    conv.last_activity_at < cutoff && conv.snoozed_until.is_none_or(|until| until < cutoff)
}

fn blocking_failed(e: tokio::task::JoinError) -> ActorError {
    ActorError::Unavailable(format!("a store read failed: {e}"))
}

/// A conversation with something older than the cutoff: whole when it has been inactive
/// since.
struct Candidate {
    conv: Conversation,
    whole: bool,
}

/// A workspace whose retention period has passed for some of what it holds.
struct Due {
    ws: WorkspaceId,
    /// What was created before this goes.
    cutoff: UnixMillis,
    /// Whether it is archived first.
    archive: bool,
}

/// Per workspace with a retention period, its conversations holding a message created
/// before the workspace's cutoff: one pass over the conversations for all of them.
fn candidates(
    store: &Store,
    cutoffs: &HashMap<WorkspaceId, UnixMillis>,
) -> confab_engine::Result<HashMap<WorkspaceId, Vec<Candidate>>> {
    let mut found: HashMap<WorkspaceId, Vec<Candidate>> = HashMap::new();
    let mut after = None;
    loop {
        let page = store.conversations_after(after, 1_000)?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.id);
        for conv in page {
            let Some(&cutoff) = cutoffs.get(&conv.workspace_id) else {
                continue;
            };
            let whole = gone_quiet(&conv, cutoff);
            let old = whole
                || store
                    .ks_first_value(Ks::ConvMsg, &conv.id.to_bytes())?
                    .map(|bytes| codec::decode::<Message>(&bytes))
                    .transpose()?
                    .is_some_and(|m| m.created_at < cutoff);
            if old {
                found
                    .entry(conv.workspace_id)
                    .or_default()
                    .push(Candidate { conv, whole });
            }
        }
    }
    Ok(found)
}

impl Runtime {
    /// Runs retention every `settings.interval` until `stop` turns true.
    pub fn spawn_retention(
        &self,
        store: Store,
        committer: Committer,
        settings: RetentionSettings,
        mut stop: watch::Receiver<bool>,
    ) {
        let runtime = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(settings.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                if let Err(e) = runtime.retention_pass(&store, &committer, &settings).await {
                    tracing::warn!(error = %e, "retention pass failed; the next one finishes it");
                }
            }
        });
    }

    /// One pass over every workspace with a retention period.
    pub async fn retention_pass(
        &self,
        store: &Store,
        committer: &Committer,
        settings: &RetentionSettings,
    ) -> ActorResult<Vec<(WorkspaceId, RetentionReport)>> {
        let now = settings.clock.now();
        let reader = store.clone();
        let (due, mut found) = tokio::task::spawn_blocking(move || {
            let mut due = Vec::new();
            for ws in reader.workspace_ids()? {
                let ws_settings = reader.workspace_settings(ws)?;
                if let Some(days) = ws_settings.retention_days {
                    let cutoff = now.saturating_sub(i64::from(days) * DAY_MS);
                    let archive = ws_settings.retention_archive;
                    due.push(Due {
                        ws,
                        cutoff,
                        archive,
                    });
                }
            }
            let cutoffs = due.iter().map(|d| (d.ws, d.cutoff)).collect();
            let found = if due.is_empty() {
                HashMap::new()
            } else {
                candidates(&reader, &cutoffs)?
            };
            Ok::<_, confab_engine::Error>((due, found))
        })
        .await
        .map_err(blocking_failed)??;
        if let Some(days) = settings.audit_days {
            let cutoff = now.saturating_sub(i64::from(days) * DAY_MS);
            let reader = store.clone();
            let sets = tokio::task::spawn_blocking(move || {
                confab_engine::audit::expired(&reader, cutoff, 1_000_000)
            })
            .await
            .map_err(blocking_failed)??;
            for set in sets {
                committer.commit(set).await?;
            }
        }
        let mut reports = Vec::new();
        for due in due {
            let ws = due.ws;
            let found = found.remove(&ws).unwrap_or_default();
            let report = self.retain(store, committer, settings, due, found).await?;
            if report != RetentionReport::default() {
                tracing::info!(workspace = %ws, erased = ?report.erased, archive = ?report.archive, "retention removed old messages");
                metrics::counter!(crate::metrics::RETENTION_MESSAGES)
                    .increment(report.erased.messages);
            }
            reports.push((ws, report));
        }
        Ok(reports)
    }

    /// Removes (and archives) what of a workspace is older than its cutoff: in `found`,
    /// its conversations holding some of it.
    async fn retain(
        &self,
        store: &Store,
        committer: &Committer,
        settings: &RetentionSettings,
        due: Due,
        found: Vec<Candidate>,
    ) -> ActorResult<RetentionReport> {
        let Due {
            ws,
            cutoff,
            archive,
        } = due;
        let mut report = RetentionReport::default();
        if found.is_empty() {
            return Ok(report);
        }
        // The pass looked at every workspace first: what became active since, or went,
        // is seen again now, just before this workspace's steps.
        let reader = store.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut fresh = Vec::with_capacity(found.len());
            for candidate in found {
                if let Some(conv) = reader.conversation(candidate.conv.id)? {
                    let whole = gone_quiet(&conv, cutoff);
                    fresh.push(Candidate { conv, whole });
                }
            }
            Ok::<_, confab_engine::Error>(fresh)
        })
        .await
        .map_err(blocking_failed)??;
        let whole: HashSet<ConversationId> = found
            .iter()
            .filter(|c| c.whole)
            .map(|c| c.conv.id)
            .collect();

        // 1. The archive, durable before anything goes.
        if archive {
            let reader = store.clone();
            let dir = settings.archive_dir.join(ws.to_string());
            let convs: Vec<(Conversation, bool)> =
                found.iter().map(|c| (c.conv.clone(), c.whole)).collect();
            let path =
                tokio::task::spawn_blocking(move || write_archive(&reader, &dir, cutoff, &convs))
                    .await
                    .map_err(blocking_failed)??;
            report.archive = Some(path);
        }

        // 2. Old deltas, and every delta of what goes whole.
        let reader = store.clone();
        let of = whole.clone();
        let (sets, deltas) = tokio::task::spawn_blocking(move || {
            erasure::delta_sets_where(&reader, ws, |d| {
                d.at < cutoff || d.conversation_id.is_some_and(|c| of.contains(&c))
            })
        })
        .await
        .map_err(blocking_failed)??;
        for set in sets {
            committer.commit(set).await?;
        }
        report.erased.deltas += deltas;

        // 3. The search documents of what goes.
        let reader = store.clone();
        let partial: Vec<ConversationId> = found
            .iter()
            .filter(|c| !c.whole)
            .map(|c| c.conv.id)
            .collect();
        let old_messages = tokio::task::spawn_blocking(move || {
            let mut ids = Vec::new();
            for conv in partial {
                for message in reader.with_prefix::<Message>(Ks::ConvMsg, &conv.to_bytes())? {
                    if message.created_at < cutoff {
                        ids.push(message.id);
                    }
                }
            }
            Ok::<_, confab_engine::Error>(ids)
        })
        .await
        .map_err(blocking_failed)??;
        if let Some(indexer) = &self.indexer {
            let (tx, rx) = tokio::sync::oneshot::channel();
            indexer
                .cast(IndexerMsg::Erase {
                    conversations: whole.iter().copied().collect(),
                    messages: old_messages,
                    reply: tx.into(),
                })
                .map_err(|_| ActorError::Unavailable("the search indexer has stopped".into()))?;
            rx.await
                .map_err(|_| ActorError::Unavailable("the search indexer has stopped".into()))?
                .map_err(ActorError::Unavailable)?;
        }

        // 4. The store, each conversation through its actor.
        let mut gone = HashSet::new();
        for candidate in &found {
            let (erased, whole) = self.conversations.purge(candidate.conv.id, cutoff).await?;
            report.erased.add(erased);
            if whole {
                gone.insert(candidate.conv.id);
            }
            if candidate.whole && !whole {
                // A message arrived since this pass looked: the conversation and its new
                // message stay, but steps 2 and 3 treated it as gone.
                tracing::warn!(
                    conversation = %candidate.conv.id,
                    "a conversation became active while retention removed it: kept; its search documents return with its next change or `confab reindex`"
                );
            }
        }

        self.conversations.forget_threads(&gone);

        // 5. Old notifications, and those about what went whole.
        let reader = store.clone();
        let (sets, notifications) = tokio::task::spawn_blocking(move || {
            erasure::notification_sets_where(&reader, ws, |n| {
                n.created_at < cutoff || whole.contains(&n.conversation_id)
            })
        })
        .await
        .map_err(blocking_failed)??;
        for set in sets {
            committer.commit(set).await?;
        }
        report.erased.notifications += notifications;
        Ok(report)
    }
}

/// Writes what goes (whole conversations, or their messages before `cutoff`) to a new
/// file in `dir` and makes it durable; returns its path.
fn write_archive(
    store: &Store,
    dir: &std::path::Path,
    cutoff: UnixMillis,
    convs: &[(Conversation, bool)],
) -> confab_engine::Result<PathBuf> {
    let failed = |e: std::io::Error| confab_engine::Error::Storage(format!("archive: {e}"));
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut lines = Vec::new();
    for (conv, whole) in convs {
        let before = if *whole { None } else { Some(cutoff) };
        confab_engine::export::archive_lines(store, conv, before, &mut lines)?;
    }
    let stamp = confab_engine::time::to_rfc3339(cutoff).replace(':', "-");
    let path = dir.join(format!(
        "before-{stamp}-{}.jsonl",
        confab_engine::ids::MessageId::new()
    ));
    let mut file = std::fs::File::create(&path).map_err(failed)?;
    file.write_all(&lines).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(path)
}
