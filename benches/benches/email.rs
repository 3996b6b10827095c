//! The MIME path of an inbound email, as the adapter runs it for every message from a
//! webhook or a mailbox: `mail-parser` (headers, charsets, transfer encodings, multipart),
//! HTML to text, quoted-history stripping, auto-reply and bounce detection, and the port's
//! event with its threading hints. Two shapes: a 5 KB reply (text and HTML alternatives,
//! a quoted history) and a 100 KB one (the same with a base64 attachment).
//!
//! Before Criterion's own measurement, each shape is parsed 2,000 times on one thread and
//! the rate and p50 / p99 are printed.
//!
//!   cargo bench -p confab-benches --bench email

use std::time::{Duration, Instant};

use confab_engine::ids::ChannelId;
use confab_engine::wire::email;
use criterion::{criterion_group, criterion_main, Criterion};

const ADDRESS: &str = "sales@agency.example";
const KEY: &str = "token-key";

/// A Gmail-shaped reply of about `size` bytes: text and HTML, a quoted history, and a
/// base64 attachment making up the rest when `size` asks for more than the text.
fn message(size: usize) -> Vec<u8> {
    let paragraph = "Thanks for the proposal. Could we talk about the pricing for fifty seats, the onboarding timeline and whether the annual plan includes the reporting module? ";
    let mut text = String::from("Hi Ana,\r\n\r\n");
    while text.len() < 1_500 {
        text.push_str(paragraph);
        text.push_str("\r\n");
    }
    text.push_str(
        "\r\nMaria\r\n\r\nOn Mon, 5 Jan 2026 at 18:00, Ana <sales@agency.example> wrote:\r\n",
    );
    for _ in 0..10 {
        text.push_str("> Our plans start at 49 dollars a seat per month, billed monthly.\r\n");
    }
    let html = format!("<div dir=\"ltr\">{}</div>", text.replace("\r\n", "<br>"));
    let mut raw = format!(
        "From: Maria Souza <maria.souza@gmail.com>\r\nTo: Sales <sales+token@agency.example>\r\n\
         Subject: Re: Your proposal\r\nMessage-ID: <bench@mail.gmail.com>\r\n\
         In-Reply-To: <01hx@agency.example>\r\nReferences: <01hx@agency.example>\r\n\
         Date: Mon, 5 Jan 2026 19:20:30 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"mixed\"\r\n\r\n\
         --mixed\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
         --alt\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\n{text}\r\n\
         --alt\r\nContent-Type: text/html; charset=\"UTF-8\"\r\n\r\n{html}\r\n--alt--\r\n"
    );
    let rest = size.saturating_sub(raw.len() + 200);
    if rest > 0 {
        raw.push_str(
            "--mixed\r\nContent-Type: application/pdf; name=\"offer.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"offer.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n",
        );
        let line =
            "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURlY29k\r\n";
        while raw.len() < size - 50 {
            raw.push_str(line);
        }
    }
    raw.push_str("--mixed--\r\n");
    raw.into_bytes()
}

fn parse(raw: &[u8]) -> usize {
    let parsed = email::parse(raw, 1_800_000_000_000).expect("parses");
    let event = email::inbound_event(ChannelId::new(), &parsed, ADDRESS, KEY);
    event.text.len() + event.details.files.len()
}

fn tails(name: &str, raw: &[u8]) {
    let mut times = Vec::with_capacity(2_000);
    let started = Instant::now();
    for _ in 0..2_000 {
        let one = Instant::now();
        std::hint::black_box(parse(raw));
        times.push(one.elapsed());
    }
    let total = started.elapsed();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{name} ({} bytes): {:.0} messages/s on one thread, p50 {:?}, p99 {:?}",
        raw.len(),
        2_000.0 / total.as_secs_f64(),
        at(0.50),
        at(0.99)
    );
}

fn mime(c: &mut Criterion) {
    let small = message(5 * 1024);
    let large = message(100 * 1024);
    tails("5 KB reply", &small);
    tails("100 KB reply with an attachment", &large);
    let mut group = c.benchmark_group("email_mime");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("5KB", |b| b.iter(|| parse(&small)));
    group.bench_function("100KB", |b| b.iter(|| parse(&large)));
    group.finish();
}

criterion_group!(benches, mime);
criterion_main!(benches);
