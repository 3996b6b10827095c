//! The OpenAI-compatible answer parser: a chat completion's body from an endpoint we do not
//! control. It may not panic, whatever the bytes, and what it returns keeps the promises
//! the AI pool relies on.
//!
//! The input is used whole as a response body, and, when it is UTF-8, also as the model's
//! `content` inside a well-formed completion (to reach the inner JSON parsing).

#![no_main]

use confab_engine::wire::openai::{parse_answer, MAX_INTENT_CHARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(content) = std::str::from_utf8(data) {
        let body = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]});
        check(body.to_string().as_bytes());
    }
});

/// A confidence in 0..=1, an intent of 1 to 40 characters, a reason, trimmed texts.
fn check(body: &[u8]) {
    let Ok(answer) = parse_answer(body) else {
        return;
    };
    assert!((0.0..=1.0).contains(&answer.confidence), "{answer:?}");
    let intent = answer.intent.chars().count();
    assert!(intent >= 1 && intent <= MAX_INTENT_CHARS, "{answer:?}");
    assert!(!answer.reason.is_empty(), "{answer:?}");
    assert_eq!(answer.reply, answer.reply.trim(), "{answer:?}");
}
