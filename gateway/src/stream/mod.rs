//! The WebSocket delta stream (`GET /api/v1/stream`) and its tickets, the hub that fans
//! committed deltas out to sessions, and retention of the delta log.
//!
//! Invariant: a subscribed client receives every delta of its workspace after its offset
//! exactly once, in order, or an explicit `resync`; a slow client is closed, never waited
//! for — the committer thread never blocks on a socket.

pub mod frames;
mod hub;
pub mod metrics;
pub(crate) mod origin;
mod pruner;
mod session;
mod tickets;

use confab_engine::store::Store;
use tokio::sync::watch;

use crate::app::AppState;

pub use hub::{FanoutThread, Hub};
pub use origin::AllowedOrigin;
pub use pruner::{prune, spawn_pruner, PruneProgress, PRUNE_EVERY};
pub use session::{CLOSE_IDLE, CLOSE_SLOW_CONSUMER, MAX_BAD_FRAMES, SLOW_CONSUMER_REASON};
pub use tickets::{Tickets, TICKET_TTL};

pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(session::connect))
        .routes(routes!(tickets::create))
}

/// Resolves once the server begins shutting down (or its handle is gone, which stops the
/// HTTP server too).
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// Runs a blocking store read off the async reactor.
async fn read_store<T: Send + 'static>(
    store: &Store,
    read: impl FnOnce(&Store) -> confab_engine::Result<T> + Send + 'static,
) -> confab_engine::Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(|e| confab_engine::Error::Storage(format!("a store read task failed: {e}")))?
}
