//! The email wire format's parsers of outside input: raw RFC 5322 messages (from webhooks
//! and mailboxes), the signature and Basic credentials, reply-token addresses and quoted
//! history stripping. None may panic, whatever the bytes, and what they return keeps the
//! promises the engine relies on.
//!
//! The input is used whole as a message, and split at its first newline into a header
//! value (when UTF-8) and a body.

#![no_main]

use confab_engine::ids::ChannelId;
use confab_engine::wire::email::{
    base64_decode, conversation_from_recipients, inbound_event, parse, sign, strip_quoted,
    verify_basic, verify_signature, MAX_TEXT_BYTES,
};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-inbound-secret";
const ADDRESS: &str = "sales@agency.example";
const NOW: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    message(data);
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b""[..], data),
    };
    message(body);
    let head = std::str::from_utf8(head).ok();
    // A signature is accepted only when it is the body's.
    if verify_signature(SECRET, body, head).is_ok() {
        assert_eq!(head.map(str::trim), Some(sign(SECRET, body).as_str()));
    }
    let _ = verify_basic(SECRET, head);
    if let Some(text) = head {
        let _ = base64_decode(text);
        let recipients: Vec<String> = text.split(',').map(str::to_owned).collect();
        let _ = conversation_from_recipients(&recipients, ADDRESS, SECRET);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let stripped = strip_quoted(text);
        assert!(stripped.len() <= text.len(), "stripping never adds text");
    }
});

/// A parsed message has what routing needs (a Message-ID, a sender address), a bounded
/// text, a reply text no longer than the whole, and makes an event whose dedupe key is
/// its Message-ID.
fn message(raw: &[u8]) {
    let Ok(email) = parse(raw, NOW) else {
        return;
    };
    assert!(!email.message_id.is_empty());
    assert!(email.from_address.contains('@') && email.from_address.len() <= 320);
    assert!(email.text.len() <= MAX_TEXT_BYTES);
    assert!(email.date <= NOW + 5 * 60 * 1000);
    let event = inbound_event(ChannelId::new(), &email, ADDRESS, SECRET);
    assert_eq!(event.provider_message_id, email.message_id);
    assert_eq!(
        event.contact_email.as_deref(),
        Some(email.from_address.as_str())
    );
    assert_eq!(event.details.files.len(), email.files.len());
}
