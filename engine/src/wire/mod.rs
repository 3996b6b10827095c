//! Providers' wire formats: pure parse / verify / normalize / build functions.

pub mod email;
pub mod openai;
pub mod unipile;
pub mod whatsapp;
