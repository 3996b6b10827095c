//! Retention of the delta log: keeps the last `retention_deltas` offsets for resuming
//! clients and deletes older deltas through the committer (the store's single writer).
//!
//! The pruned mark (`META_DELTA_PRUNED`) is made durable *before* any delta under it is
//! deleted, so a client resuming from a pruned offset is always told to `resync` rather
//! than silently missing deltas.

use std::collections::HashMap;
use std::time::Duration;

use confab_engine::catalogue::{decode_ws_delta_offset, Ks, META_DELTA_PRUNED};
use confab_engine::committer::WriteSet;
use confab_engine::ids::WorkspaceId;

use super::{metrics, read_store, shutdown_requested};
use crate::app::{App, AppState};

/// How often retention runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Deltas deleted per write set (one commit each).
const DELETE_CHUNK: usize = 10_000;

/// Through which offset each workspace's deltas are already deleted, so that a pass reads
/// only the deltas it deletes. (Starting every pass at offset 0 read back, through their
/// tombstones, every block deleted before: on a busy server the pruner's reads filled the
/// block cache with dead deltas, ~150 MB in a heaptrack run.) Empty after a restart: the
/// first pass then starts at 0 once.
pub type PruneProgress = HashMap<WorkspaceId, u64>;

/// Runs [`prune`] every [`PRUNE_EVERY`] until the server shuts down.
pub fn spawn_pruner(app: AppState) {
    tokio::spawn(async move {
        let mut progress = PruneProgress::new();
        let mut shutdown = app.shutting_down.clone();
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown_requested(&mut shutdown) => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = prune(&app, &mut progress).await {
                tracing::warn!(error = %e, "delta retention failed; retrying on the next pass");
            }
        }
    });
}

/// One retention pass: marks everything up to `head - retention_deltas` as pruned, then
/// deletes those deltas workspace by workspace. Returns how many it deleted.
pub async fn prune(app: &App, progress: &mut PruneProgress) -> confab_engine::Result<u64> {
    let head = app.committer.durable_head();
    let Some(cutoff) = head
        .checked_sub(app.config.stream.retention_deltas)
        .filter(|cutoff| *cutoff > 0)
    else {
        return Ok(0);
    };
    let (pruned_through, workspaces, slowest) = read_store(&app.store, |store| {
        Ok((
            store.delta_pruned_through()?,
            store.workspace_ids()?,
            confab_engine::webhooks::slowest_cursor(store)?,
        ))
    })
    .await?;
    // An enabled outgoing webhook still has to deliver what is after its cursor.
    let cutoff = slowest.map_or(cutoff, |cursor| cutoff.min(cursor));
    if cutoff == 0 {
        return Ok(0);
    }
    if cutoff > pruned_through {
        let mut mark = WriteSet::new();
        mark.put_raw(
            Ks::Meta,
            META_DELTA_PRUNED.to_vec(),
            cutoff.to_be_bytes().to_vec(),
        );
        app.committer.commit(mark).await?;
    }
    ::metrics::gauge!(metrics::DELTA_PRUNED_THROUGH).set(cutoff.max(pruned_through) as f64);
    // Deletes run even when the mark did not move: they finish a pass that was cut short.
    let mut deleted = 0u64;
    for workspace in workspaces {
        let mut from = progress.get(&workspace).map_or(0, |through| through + 1);
        while from <= cutoff {
            if *app.shutting_down.borrow() {
                return Ok(deleted);
            }
            let keys = read_store(&app.store, move |store| {
                store.delta_keys_through(workspace, from, cutoff, DELETE_CHUNK)
            })
            .await?;
            let count = keys.len();
            // Offsets at or under the cutoff are all committed: none can appear later.
            let through = match keys.last().and_then(|key| decode_ws_delta_offset(key)) {
                Some(last) if count == DELETE_CHUNK => last,
                _ => cutoff,
            };
            if count > 0 {
                let mut set = WriteSet::new();
                for key in keys {
                    set.delete(Ks::WsDelta, key);
                }
                app.committer.commit(set).await?;
                deleted += count as u64;
                ::metrics::counter!(metrics::DELTAS_PRUNED).increment(count as u64);
            }
            progress.insert(workspace, through);
            from = through.saturating_add(1);
        }
    }
    if deleted > 0 {
        tracing::debug!(deleted, cutoff, "pruned the delta log");
    }
    Ok(deleted)
}
