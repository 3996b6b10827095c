//! Confab's network edge: the HTTP API (axum), provider webhooks, the WebSocket delta
//! stream, authentication, and the `confab` binary's commands.
//!
//! Only this crate knows HTTP. Errors become statuses in exactly one place: [`error`].

pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod edge;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod stream;
pub mod ui;
pub mod webhooks;

pub use config::Config;
pub use server::{start, start_on, start_with_clock, Server};
