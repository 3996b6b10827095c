//! Reading a WhatsApp webhook body, as the webhook route does for every POST: the typed
//! reading (borrowed strings, the shape nearly every webhook has) against the general one
//! (a `serde_json::Value`), on a one-message text webhook as Meta sends it and on a
//! delivery status.
//!
//!   cargo bench -p confab-benches --bench wire

use std::time::Duration;

use confab_engine::wire::whatsapp;
use criterion::{criterion_group, criterion_main, Criterion};

const PHONE_NUMBER_ID: &str = "106540352242922";

fn bodies() -> [(&'static str, Vec<u8>); 2] {
    let text = whatsapp::inbound_text_webhook(
        PHONE_NUMBER_ID,
        "5511987654321",
        "Maria Souza",
        "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFjNFQjBDNzE5RkQ4RjI3QzZBNEE3AA==",
        1_767_000_000,
        "Hi! Is the loft on Rua Augusta still available for a visit this Saturday?",
    );
    let status = whatsapp::status_webhook(
        PHONE_NUMBER_ID,
        "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABEYEjQ2QkZBRDlCRkM1RjA0MjE5AA==",
        "delivered",
        1_767_000_000,
        "5511987654321",
    );
    [
        ("text", text.to_string().into_bytes()),
        ("status", status.to_string().into_bytes()),
    ]
}

fn webhooks(c: &mut Criterion) {
    let mut group = c.benchmark_group("whatsapp_webhook");
    group.measurement_time(Duration::from_secs(4));
    for (name, body) in bodies() {
        assert_eq!(
            whatsapp::parse_webhook_typed(&body),
            Some(whatsapp::parse_webhook_general(&body).expect("parses")),
            "both readings agree"
        );
        group.bench_function(format!("{name}/typed"), |b| {
            b.iter(|| whatsapp::parse_webhook(std::hint::black_box(&body)))
        });
        group.bench_function(format!("{name}/general"), |b| {
            b.iter(|| whatsapp::parse_webhook_general(std::hint::black_box(&body)))
        });
    }
    group.finish();
}

criterion_group!(benches, webhooks);
criterion_main!(benches);
