//! Providers' wire formats: pure parse / verify / normalize / build functions.

pub mod openai;
pub mod whatsapp;
