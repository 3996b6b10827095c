//! The built-in AI agent's decision, as the pool makes it for one lead message: intent
//! rules, retrieval from the knowledge base (tantivy, in memory, workspace-scoped) and the
//! decision. The knowledge index holds 100 workspaces of 50 articles each (5,000
//! articles); the workspace asked has the demo's kind of articles among its 50. The
//! questions mix pricing, meetings, greetings, a person asked for, a question nothing
//! answers and a statement.
//!
//! Before Criterion's own measurement, 20,000 decisions on one thread are timed one by one
//! and their p50 / p99 / max and rate are printed (Criterion reports means, not tails).
//!
//!   cargo bench -p confab-benches --bench ai

use std::time::{Duration, Instant};

use confab_actors::ai::builtin;
use confab_engine::ai::AiConfig;
use confab_engine::ids::{ArticleId, WorkspaceId};
use confab_index::knowledge::{ArticleDoc, KnowledgeIndex};
use criterion::{criterion_group, criterion_main, Criterion};

const WORKSPACES: usize = 100;
const ARTICLES: usize = 50;

const REAL: &[(&str, &str)] = &[
    ("Pricing", "The Starter plan costs 290 dollars per month for one clinic. The Growth plan costs 590 dollars per month and includes two campaigns.\n\nAll plans are billed monthly, with no setup fee and no minimum term."),
    ("Booking a call", "You can book a 20 minute call with our team any weekday between 9:00 and 18:00. Reply with a day and time that suits you and we will send an invitation."),
    ("What is included", "The offer includes campaign setup, landing pages, daily optimisation, a lead inbox answered within minutes, and a weekly report."),
    ("Opening hours", "Our team answers Monday to Friday from 9:00 to 18:00. Outside those hours our assistant answers and a person follows up the next working day."),
    ("Cancellation", "You can cancel at any time with 30 days notice. There is no fee for cancelling."),
    ("Results", "Clinics usually see their first qualified leads within two weeks of launch; the weekly report shows cost per lead and booked appointments."),
];

const VOCABULARY: &[&str] = &[
    "invoice",
    "shipping",
    "warranty",
    "refund",
    "delivery",
    "account",
    "password",
    "report",
    "campaign",
    "budget",
    "audience",
    "creative",
    "landing",
    "page",
    "clinic",
    "dentist",
    "appointment",
    "schedule",
    "team",
    "manager",
    "contract",
    "renewal",
    "discount",
    "coupon",
    "partner",
    "integration",
    "calendar",
    "email",
    "phone",
    "support",
    "training",
    "onboarding",
    "analytics",
    "dashboard",
    "export",
    "import",
];

const QUESTIONS: &[&str] = &[
    "How much does the Growth plan cost per month?",
    "Hi there!",
    "Can we book a call on Thursday afternoon?",
    "What is included in the offer?",
    "I want to talk to a real person please",
    "Do you integrate with Salesforce and HubSpot?",
    "We are a dental clinic with three chairs in Porto.",
    "Is there a setup fee or a minimum term?",
];

fn synthetic(seed: usize, words: usize) -> String {
    (0..words)
        .map(|i| VOCABULARY[(seed * 31 + i * 17 + i * i) % VOCABULARY.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The index, and the workspace whose articles are the real ones.
fn knowledge() -> (KnowledgeIndex, WorkspaceId) {
    let index = KnowledgeIndex::new().expect("index");
    let asked = WorkspaceId::new();
    let tags: Vec<String> = vec!["faq".into()];
    for w in 0..WORKSPACES {
        let ws = if w == 0 { asked } else { WorkspaceId::new() };
        let texts: Vec<(String, String)> = (0..ARTICLES)
            .map(|a| match REAL.get(a).filter(|_| w == 0) {
                Some((title, body)) => (title.to_string(), body.to_string()),
                None => (synthetic(w * ARTICLES + a, 3), synthetic(a + w, 120)),
            })
            .collect();
        let docs: Vec<ArticleDoc<'_>> = texts
            .iter()
            .map(|(title, body)| ArticleDoc {
                workspace: ws,
                id: ArticleId::new(),
                title,
                body,
                tags: &tags,
            })
            .collect();
        index.upsert(&docs).expect("upsert");
    }
    (index, asked)
}

/// One decision, as the pool's built-in backend makes it.
fn decide(
    index: &KnowledgeIndex,
    ws: WorkspaceId,
    config: &AiConfig,
    question: &str,
) -> builtin::Proposal {
    let intent = builtin::intent(question);
    let hits = index.search(ws, question, 3).expect("search");
    builtin::decide(config, &intent, &hits, false)
}

fn tails(index: &KnowledgeIndex, ws: WorkspaceId, config: &AiConfig) {
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let n = 20_000;
    let started = Instant::now();
    let mut answered = 0;
    for i in 0..n {
        let question = QUESTIONS[i % QUESTIONS.len()];
        let t = Instant::now();
        let proposal = decide(index, ws, config, question);
        histogram
            .record(t.elapsed().as_nanos() as u64)
            .expect("record");
        answered += usize::from(matches!(proposal, builtin::Proposal::Reply { .. }));
    }
    let elapsed = started.elapsed();
    println!(
        "builtin decisions: {n} in {:.2} s on one thread = {:.0}/s; p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; {answered} answered, {} escalated",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        histogram.value_at_quantile(0.5) as f64 / 1e3,
        histogram.value_at_quantile(0.99) as f64 / 1e3,
        histogram.max() as f64 / 1e3,
        n - answered,
    );
}

fn bench(c: &mut Criterion) {
    let (index, ws) = knowledge();
    let config = AiConfig {
        enabled: true,
        ..AiConfig::default()
    };
    tails(&index, ws, &config);
    let mut group = c.benchmark_group("ai");
    group.measurement_time(Duration::from_secs(5));
    let mut i = 0;
    group.bench_function("builtin_decision_5000_articles", |b| {
        b.iter(|| {
            i += 1;
            decide(&index, ws, &config, QUESTIONS[i % QUESTIONS.len()])
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
