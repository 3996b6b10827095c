//! The WebSocket delta stream (being written).

use std::sync::Arc;

use axum::Router;
use confab_engine::committer::DeltaListener;
use confab_engine::delta::Delta;

use crate::app::AppState;
use crate::config::StreamConfig;

pub struct Hub;

impl Hub {
    pub fn new(_config: StreamConfig) -> Arc<Hub> {
        Arc::new(Hub)
    }
}

impl DeltaListener for Hub {
    fn published(&self, _deltas: &[Arc<Delta>]) {}
}

#[derive(Clone, Default)]
pub struct Tickets;

pub fn routes() -> Router<AppState> {
    Router::new()
}

pub fn spawn_pruner(_app: AppState) {}
