//! The WhatsApp wire format's parsers of outside input: webhook bodies, the signature
//! header, and the Graph API's answers to sends. None may panic, whatever the bytes, and what
//! they return keeps the promises the engine relies on, and the typed reading of a webhook
//! agrees with the general one wherever it applies.
//!
//! The input is used whole as a webhook body, and split at its first newline into a
//! signature header (when UTF-8) and a body; its first two bytes are also an HTTP status.

#![no_main]

use confab_engine::ids::ChannelId;
use confab_engine::port::SendOutcome;
use confab_engine::wire::whatsapp::{
    classify_send, inbound_batch, is_window_closed, parse_send_response, parse_webhook,
    parse_webhook_general, parse_webhook_typed, sign, verify_signature, WireError, MAX_ID_BYTES,
    MAX_LABEL_CHARS,
};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-app-secret";

fuzz_target!(|data: &[u8]| {
    webhook(data);

    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b""[..], data),
    };
    webhook(body);
    signature(std::str::from_utf8(head).ok(), body);

    let status = match data {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 200,
    };
    send_response(status, body);
    send_response(200, body);
    send_response(400, body);
});

/// Every message and status kept has what routing needs: a number id, a provider id and a
/// sender, none empty or over [`MAX_ID_BYTES`]; labels are within [`MAX_LABEL_CHARS`];
/// timestamps are never negative.
fn webhook(raw: &[u8]) {
    // The typed reading, where it applies, reads exactly what the general one does, or
    // the general one refuses the body as JSON for what is in a part the typed reading
    // checks for syntax only (invalid UTF-8, a lone surrogate, a number out of range or
    // nesting over 128 levels in a field we do not use).
    if let Some(typed) = parse_webhook_typed(raw) {
        match parse_webhook_general(raw) {
            Err(WireError::NotAWebhook(why)) => assert!(why.starts_with("invalid JSON"), "{why}"),
            general => assert_eq!(Ok(typed), general),
        }
    }
    let Ok(batch) = parse_webhook(raw) else {
        return;
    };
    let id = |id: &str| !id.is_empty() && id.len() <= MAX_ID_BYTES;
    let label = |l: &Option<String>| {
        l.as_ref()
            .is_none_or(|l| l.chars().count() <= MAX_LABEL_CHARS)
    };
    for m in &batch.messages {
        assert!(id(&m.phone_number_id), "{m:?}");
        assert!(id(&m.wamid), "{m:?}");
        assert!(id(&m.from), "{m:?}");
        assert!(m.reply_to.as_deref().is_none_or(id), "{m:?}");
        assert!(label(&m.profile_name), "{m:?}");
        if let Some(r) = &m.referral {
            assert!(label(&r.source_id) && label(&r.source_type), "{m:?}");
            assert!(label(&r.source_url) && label(&r.headline), "{m:?}");
        }
        assert!(!m.kind.is_empty(), "{m:?}");
        assert!(m.timestamp >= 0, "{m:?}");
        assert_eq!(
            m.raw.is_none(),
            m.kind == "text",
            "raw payload for every kind but text"
        );
        if m.kind != "text" {
            assert!(m.text.starts_with('['), "a placeholder: {m:?}");
        }
    }
    for s in &batch.statuses {
        assert!(id(&s.phone_number_id), "{s:?}");
        assert!(id(&s.wamid), "{s:?}");
        assert!(s.timestamp >= 0, "{s:?}");
    }
    // The channel port's view: every item is either ours, skipped or rejected.
    let number = batch
        .messages
        .first()
        .map(|m| m.phone_number_id.clone())
        .unwrap_or_default();
    let port = inbound_batch(raw, ChannelId::new(), &number).expect("parsed once already");
    assert_eq!(
        port.messages.len() + port.statuses.len() + port.skipped,
        batch.messages.len() + batch.statuses.len()
    );
    assert_eq!(port.rejected, batch.rejected);
    for m in &port.messages {
        assert!(id(&m.thread) && id(&m.provider_message_id), "{m:?}");
        assert!(
            m.contact_phone
                .as_deref()
                .is_some_and(|p| p.starts_with('+')),
            "{m:?}"
        );
    }
}

/// Only the body's own signature verifies; Meta's signature of the body always does.
fn signature(header: Option<&str>, body: &[u8]) {
    let expected = sign(SECRET, body);
    let verdict = verify_signature(SECRET, body, header);
    if verdict.is_ok() {
        let header = header.expect("a verified request has a header").trim();
        assert!(
            header.eq_ignore_ascii_case(&expected),
            "{header:?} verified but the signature is {expected:?}"
        );
    }
    assert_eq!(verify_signature(SECRET, body, Some(&expected)), Ok(()));
    assert_eq!(
        verify_signature("", body, Some(&expected)),
        Err(WireError::NoSecret)
    );
}

/// A wamid only from a 2xx; an error keeps the status; retryable never for a success or a
/// closed window.
fn send_response(status: u16, body: &[u8]) {
    let success = (200..300).contains(&status);
    match parse_send_response(status, body) {
        Ok(wamid) => {
            assert!(success, "a wamid from HTTP {status}");
            assert!(!wamid.is_empty());
        }
        Err(e) => {
            assert_eq!(e.http_status, status);
            assert!(!e.message.is_empty());
            assert!(!(e.retryable && success), "{e:?}");
            assert!(!(e.retryable && is_window_closed(e.code)), "{e:?}");
        }
    }
    // The port's classification agrees: accepted exactly when a wamid came back, and a
    // closed window is never retried.
    let outcome = classify_send(status, body);
    let parsed = parse_send_response(status, body);
    assert_eq!(
        matches!(outcome, SendOutcome::Accepted { .. }),
        parsed.is_ok(),
        "{outcome:?}"
    );
    if parsed.as_ref().is_err_and(|e| is_window_closed(e.code)) && status != 401 {
        assert!(
            matches!(outcome, SendOutcome::Permanent { .. }),
            "{outcome:?}"
        );
    }
}
