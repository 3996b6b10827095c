//! Confab's engine: the domain model, the durable store on fjall, the committer (the store's
//! single writer), deltas, and the providers' wire formats as pure functions.
//!
//! This crate knows nothing of actors, HTTP or search.

pub mod admin;
pub mod ai;
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod canned;
pub mod catalogue;
pub mod changelog;
pub mod codec;
pub mod committer;
#[cfg(test)]
mod committer_model;
pub mod contacts;
pub mod delta;
pub mod erasure;
pub mod error;
pub mod export;
pub mod format;
pub mod ids;
pub mod inbound;
pub mod mentions;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod outbox;
pub mod outcomes;
pub mod port;
pub mod store;
pub mod template;
pub mod time;
pub mod views;
pub mod webhooks;
pub mod wire;

pub use error::{Error, Result};
