//! Confab's end-to-end tests: the real server on port 0 with a temp dir, driven through
//! HTTP and WebSocket, with loopback stand-ins for the providers' APIs.

mod harness;
mod process;

mod ai;
mod analytics;
mod bad_input;
mod browser;
mod channels;
mod cluster;
mod commands;
mod contract;
mod crashloop;
mod demo;
mod dovecot;
mod durability;
mod edge;
mod email;
mod inbox;
mod linkedin;
mod merge;
mod metrics;
mod nats;
mod notifications;
mod operations;
mod outgoing;
mod powerloss;
mod search;
mod signin;
mod stream;
mod supervision;
mod tenancy;
mod views;
mod whatsapp;
