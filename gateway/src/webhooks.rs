//! Delivery of outgoing webhooks (`confab_engine::webhooks`): one task per enabled
//! endpoint walks the workspace's delta log from the endpoint's cursor, POSTs each wanted
//! delta (the stream's JSON frame, signed), and stores the cursor after each
//! acknowledgement, so a restart resumes where delivery stopped (a delivery acknowledged
//! just before a crash may come once more, under the same id). A failure waits with
//! exponential backoff and retries the same delta, so order holds; failing for
//! `webhooks.disable_after_secs` disables the endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use confab_engine::committer::DeltaListener;
use confab_engine::delta::Delta;
use dashmap::DashMap;
use tokio::sync::watch;

use confab_engine::catalogue::Ks;
use confab_engine::committer::WriteSet;
use confab_engine::ids::{WebhookId, WorkspaceId};
use confab_engine::time::now_millis;
use confab_engine::webhooks::{self, Disabled, Endpoint};

use crate::app::AppState;

/// Deltas read per step.
const BATCH: usize = 64;
/// How long a caught-up endpoint waits for its workspace's next change before it looks at
/// its own state again (an admin's edit or removal is seen within this).
const IDLE: Duration = Duration::from_secs(5);
/// How long the supervisor waits for an admin's edit before it reads the endpoints again.
const RESCAN: Duration = Duration::from_secs(30);

/// Wakes the delivery tasks of a workspace when the committer publishes its changes: one
/// watch of the workspace's newest offset, created when its first task waits on it. A
/// caught-up endpoint costs nothing until its workspace changes.
#[derive(Default)]
pub struct Wakes {
    workspaces: DashMap<WorkspaceId, watch::Sender<u64>>,
}

impl Wakes {
    fn watch(&self, ws: WorkspaceId) -> watch::Receiver<u64> {
        self.workspaces
            .entry(ws)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes the workspace's delivery tasks (an admin changed or removed an endpoint).
    pub fn touch(&self, ws: WorkspaceId) {
        if let Some(tx) = self.workspaces.get(&ws) {
            tx.send_modify(|_| {});
        }
    }
}

impl DeltaListener for Wakes {
    fn published(&self, deltas: &[Arc<Delta>]) {
        if self.workspaces.is_empty() {
            return;
        }
        let mut last = None;
        for delta in deltas {
            if last == Some(delta.workspace_id) {
                continue;
            }
            last = Some(delta.workspace_id);
            if let Some(tx) = self.workspaces.get(&delta.workspace_id) {
                tx.send_replace(delta.offset);
            }
        }
    }
}

/// Keeps one delivery task per enabled endpoint until the server shuts down: the
/// endpoints are read at start, after each admin's edit (`App::webhook_edits`), and every
/// [`RESCAN`].
pub fn spawn(app: AppState) {
    let wakes = app.webhook_wakes.clone();
    app.committer.subscribe(wakes.clone());
    tokio::spawn(async move {
        let mut workers: HashMap<WebhookId, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut shutdown = app.shutting_down.clone();
        loop {
            let store = app.store.clone();
            match tokio::task::spawn_blocking(move || webhooks::all(&store)).await {
                Ok(Ok(endpoints)) => {
                    workers.retain(|_, task| !task.is_finished());
                    for endpoint in endpoints {
                        if endpoint.disabled.is_none() && !workers.contains_key(&endpoint.id) {
                            let task = tokio::spawn(deliver(
                                app.clone(),
                                wakes.watch(endpoint.workspace_id),
                                endpoint.workspace_id,
                                endpoint.id,
                            ));
                            workers.insert(endpoint.id, task);
                        }
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the webhook endpoints"),
                Err(_) => return,
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {
                    for task in workers.values() {
                        task.abort();
                    }
                    return;
                }
                () = app.webhook_edits.notified() => {}
                () = tokio::time::sleep(RESCAN) => {}
            }
        }
    });
}

/// Stores the delivery progress of `ep` unless an admin changed the endpoint meanwhile
/// (then the stored one wins and delivery goes on from it). Returns whether it was stored.
async fn save(app: &AppState, ep: &Endpoint) -> bool {
    let _writing = app.webhook_writes.lock().await;
    let store = app.store.clone();
    let (ws, id) = (ep.workspace_id, ep.id);
    let current = tokio::task::spawn_blocking(move || webhooks::endpoint(&store, ws, id)).await;
    match current {
        Ok(Ok(Some(current))) if current.generation == ep.generation => {
            let mut set = WriteSet::new();
            set.put(Ks::Webhook, webhooks::key(ws, id), ep);
            app.committer.commit(set).await.is_ok()
        }
        _ => false,
    }
}

async fn deliver(app: AppState, mut changes: watch::Receiver<u64>, ws: WorkspaceId, id: WebhookId) {
    let config = app.config.webhooks.clone();
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms.max(1)))
        .build()
    else {
        return;
    };
    let mut shutdown = app.shutting_down.clone();
    let mut backoff = Duration::from_millis(config.min_backoff_ms);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let store = app.store.clone();
        // Marked seen before the read: a change published after it wakes the next wait.
        changes.borrow_and_update();
        let head = app.committer.durable_head();
        let read = tokio::task::spawn_blocking(move || {
            let Some(ep) = webhooks::endpoint(&store, ws, id)? else {
                return Ok(None);
            };
            let deltas = store.deltas_between(ws, ep.cursor, head, BATCH)?;
            Ok::<_, confab_engine::Error>(Some((ep, deltas)))
        })
        .await;
        let (mut ep, deltas) = match read {
            Ok(Ok(Some(found))) => found,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                tracing::warn!(webhook = %id, error = %e, "cannot read the delta log");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if ep.disabled.is_some() {
            return;
        }
        if deltas.is_empty() {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = changes.changed() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
            continue;
        }
        let mut failed = false;
        for delta in deltas {
            if !ep.wants(delta.body.kind()) {
                ep.cursor = delta.offset;
                continue;
            }
            let body = delta.to_json();
            let answer = client
                .post(&ep.url)
                .header("content-type", "application/json")
                .header(webhooks::WEBHOOK_HEADER, ep.id.to_string())
                .header(webhooks::DELIVERY_HEADER, delta.offset.to_string())
                .header(
                    webhooks::SIGNATURE_HEADER,
                    webhooks::sign(&ep.secret, body.as_bytes()),
                )
                .body(body)
                .send()
                .await;
            let error = match answer {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("the endpoint answered {}", r.status())),
                Err(e) if e.is_timeout() => Some("the endpoint did not answer in time".to_owned()),
                Err(_) => Some("the endpoint could not be reached".to_owned()),
            };
            let now = now_millis();
            match error {
                None => {
                    ep.cursor = delta.offset;
                    ep.failures = 0;
                    ep.failing_since = None;
                    ep.last_error = None;
                    ep.last_delivered_at = Some(now);
                    backoff = Duration::from_millis(config.min_backoff_ms);
                    metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "result" => "delivered")
                        .increment(1);
                    if !save(&app, &ep).await {
                        break;
                    }
                }
                Some(why) => {
                    metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "result" => "failed")
                        .increment(1);
                    ep.failures = ep.failures.saturating_add(1);
                    let since = *ep.failing_since.get_or_insert(now);
                    ep.last_error = Some(why.clone());
                    let sustained = now.saturating_sub(since)
                        >= i64::try_from(config.disable_after_secs.saturating_mul(1000))
                            .unwrap_or(i64::MAX);
                    if sustained {
                        ep.disabled = Some(Disabled {
                            at: now,
                            reason: format!(
                                "failing since {}: {why}",
                                confab_engine::time::to_rfc3339(since)
                            ),
                        });
                        tracing::warn!(webhook = %id, reason = %why, "webhook endpoint disabled after sustained failure");
                    }
                    save(&app, &ep).await;
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            if ep.disabled.is_some() {
                return;
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_millis(config.max_backoff_ms.max(1)));
        } else {
            // Skipped deltas move the cursor too.
            save(&app, &ep).await;
        }
    }
}
