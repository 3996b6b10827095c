//! Unipile's wire format for LinkedIn: webhook bodies (messages, ours and the lead's,
//! reads, reactions, edits, deletions, account statuses in both shapes), the chat and
//! message lists gap repair reads, answers to sends, and the webhook secret. None may
//! panic, whatever the bytes, and what they return keeps the promises the engine relies
//! on (bounded ids, items of this account only).

#![no_main]

use confab_engine::ids::ChannelId;
use confab_engine::wire::unipile::{
    chat_list, classify_send, inbound_batch, message_list, verify_secret, ListedChat, MAX_ID_BYTES,
};
use libfuzzer_sys::fuzz_target;

const ACCOUNT: &str = "acc-fuzz";

fuzz_target!(|data: &[u8]| {
    let channel = ChannelId::new();
    if let Ok(batch) = inbound_batch(data, channel, ACCOUNT) {
        for event in &batch.messages {
            assert!(!event.provider_message_id.is_empty());
            assert!(event.provider_message_id.len() <= MAX_ID_BYTES);
            assert!(!event.thread.is_empty() && event.thread.len() <= MAX_ID_BYTES);
            assert_eq!(event.channel_id, channel);
        }
        for change in &batch.changes {
            assert!(change.provider_message_id.len() <= MAX_ID_BYTES);
        }
        for read in &batch.reads {
            assert!(read.thread.len() <= MAX_ID_BYTES);
        }
    }
    if let Some(page) = chat_list(data) {
        for chat in &page.items {
            assert!(!chat.id.is_empty() && chat.id.len() <= MAX_ID_BYTES);
        }
    }
    let chat = ListedChat {
        id: "chat-fuzz".into(),
        attendee_provider_id: Some("ACoAAFUZZ".into()),
        name: None,
        timestamp: 0,
    };
    if let Some(page) = message_list(data, channel, &chat) {
        for event in &page.items {
            assert_eq!(event.thread, "chat-fuzz");
            assert!(event.provider_message_id.len() <= MAX_ID_BYTES);
        }
    }
    let status = data.first().map_or(200, |b| 200 + u16::from(*b) * 2);
    let _ = classify_send(status, data, None);
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(verify_secret(text, Some(text)).is_ok() || text.trim() != text || text.is_empty());
        assert!(verify_secret("fuzz-secret", Some(text)).is_err() || text.trim() == "fuzz-secret");
    }
});
