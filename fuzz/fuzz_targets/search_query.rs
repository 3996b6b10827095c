//! The search query language (`confab_index::query`), from the user's text to the hits of a
//! small index: parsing never panics and refuses with a reason; a parsed query compiles to
//! a tantivy query that runs (scoring, highlighting, snippets) and finds nothing outside the
//! caller's workspace. The edit-distance check of highlighting is compared with the textbook
//! optimal string alignment distance.

#![no_main]

use std::sync::OnceLock;

use confab_engine::delta::{Delta, DeltaBody};
use confab_engine::ids::{ChannelId, ContactId, ConversationId, MessageId, WorkspaceId};
use confab_engine::model::{
    AiMode, ChannelKind, Contact, Conversation, Direction, Message, Sender, Status,
};
use confab_index::query::{within_one_edit, Highlight, MAX_QUERY_CHARS, PREFIX_MIN_CHARS};
use confab_index::search::MAX_DEPTH;
use confab_index::{ParsedQuery, QueryError, SearchIndex, SearchRequest, Writer, WriterOptions};
use libfuzzer_sys::fuzz_target;

/// Texts of the index: every kind of token the analyzer meets (accents, e-mail addresses,
/// digits, markup that a snippet must escape, a token too long to index).
const TEXTS: [&str; 8] = [
    "Hi, is the pricing for the enterprise plan still valid?",
    "João Souza from Acme Holdings wants a demo on Friday",
    "ana@acme.io asked for the quarterly invoice numbers",
    "<script>alert('x')</script> & <b>bold</b> \"quotes\"",
    "Preço especial: R$ 1.999,00 até sexta-feira — ñandú über",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa short",
    "5511987654321 +55 (11) 98765-4321 order #A1B2C3",
    "日本語のテキスト and emoji 🎉 mixed with ascii words",
];

struct Fixture {
    index: SearchIndex,
    ours: WorkspaceId,
    ours_convs: Vec<ConversationId>,
}

/// One index for the process: our workspace's and another workspace's conversations hold
/// the same texts, so a hit from the other workspace would be a leak.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // .ci/fuzz points TMPDIR at a directory it removes afterwards.
        let dir = std::env::temp_dir().join(format!("confab-fuzz-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let index = SearchIndex::open(&dir).expect("open the index");
        let mut writer = Writer::open(&index, WriterOptions::default()).expect("writer");
        let (ours, theirs) = (WorkspaceId::new(), WorkspaceId::new());
        let mut ours_convs = Vec::new();
        let mut offset = 0;
        for ws in [ours, theirs] {
            for (i, text) in TEXTS.iter().enumerate() {
                let conv = conversation(ws, i as i64);
                if ws == ours {
                    ours_convs.push(conv.id);
                }
                for body in [
                    DeltaBody::ConversationUpdated(conv.card()),
                    DeltaBody::MessageCreated(message(&conv, text, i as i64)),
                ] {
                    offset += 1;
                    writer.apply(&Delta {
                        offset,
                        workspace_id: ws,
                        conversation_id: Some(conv.id),
                        at: i as i64,
                        body,
                    });
                }
            }
        }
        writer.commit().expect("commit");
        writer.close().expect("close the writer");
        index.reload().expect("reload");
        assert!(index.num_docs() > 0);
        Fixture {
            index,
            ours,
            ours_convs,
        }
    })
}

fn conversation(ws: WorkspaceId, i: i64) -> Conversation {
    let text = TEXTS[i as usize % TEXTS.len()];
    Conversation {
        id: ConversationId::new(),
        workspace_id: ws,
        channel_id: ChannelId::new(),
        channel: ChannelKind::Whatsapp,
        external_thread: format!("55119876543{i:02}"),
        contact: Contact {
            id: ContactId::new(),
            name: Some(text.split(' ').take(3).collect::<Vec<_>>().join(" ")),
            email: Some(format!("lead{i}@acme.io")),
            phone: Some(format!("+55 11 98765-43{i:02}")),
            company: Some(text.split(' ').rev().take(2).collect::<Vec<_>>().join(" ")),
            title: None,
            avatar_url: None,
            profile_url: None,
        },
        status: Status::Open,
        assignee_id: None,
        tags: vec!["vip".into(), format!("tag-{i}"), "pós-venda".into()],
        campaign: None,
        unread_count: 0,
        ai_mode: AiMode::Active,
        created_at: 1_700_000_000_000 + i,
        last_activity_at: 1_700_000_000_000 + i,
        preview: String::new(),
        last_inbound_at: None,
        next_seq: 2,
        first_inbound_at: None,
        first_response_at: None,
        first_responder: None,
        closed_at: None,
        last_inbound_seq: None,
        ai_epoch: 0,
        ai_day: 0,
        ai_replies_today: 0,
        subject: None,
        references: Vec::new(),
        awaiting_thread: None,
        overdue_at: None,
        snoozed_until: None,
        snoozed_by: None,
        outcome: None,
        outcome_at: None,
        suggested_outcome: None,
        merged_into: None,
        merged: Vec::new(),
    }
}

fn message(conv: &Conversation, text: &str, i: i64) -> Message {
    Message {
        id: MessageId::new(),
        conversation_id: conv.id,
        seq: 1,
        direction: Direction::Inbound,
        sender: Sender::Lead,
        agent_id: None,
        text: text.into(),
        internal: i % 3 == 0,
        channel: conv.channel,
        created_at: 1_700_000_000_000 + i,
        delivery: None,
        external_id: None,
        content_type: None,
        reply_to: None,
        error: None,
        raw: None,
        ai: None,
        attachments: Vec::new(),
        subject: None,
        full_text: None,
        auto_reply: false,
        sent_elsewhere: false,
        reactions: Vec::new(),
        edits: Vec::new(),
        deleted_at: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    edits(input);
    let query = match ParsedQuery::parse(input) {
        Ok(query) => query,
        Err(QueryError(why)) => {
            assert!(!why.is_empty(), "a refusal says why");
            return;
        }
    };
    assert!(input.chars().count() <= MAX_QUERY_CHARS);
    let highlights = query.highlights();
    assert!(!highlights.is_empty(), "{input:?}: nothing to highlight");
    for highlight in &highlights {
        match highlight {
            Highlight::Exact(t) | Highlight::Fuzzy(t) => assert!(!t.is_empty(), "{input:?}"),
            Highlight::Prefix(p) => assert!(p.chars().count() >= PREFIX_MIN_CHARS, "{input:?}"),
        }
    }

    let f = fixture();
    let request = SearchRequest {
        workspace: f.ours,
        query,
        channel: None,
        intent: None,
        since: None,
        conversation: None,
        offset: (data.len() % 3) * 7,
        limit: 10,
    };
    let page = f
        .index
        .search(&request, MAX_DEPTH, |_| Ok(Some(())))
        .expect("a parsed query runs");
    assert!(page.items.len() <= request.limit);
    for (hit, ()) in &page.items {
        assert!(
            f.ours_convs.contains(&hit.conversation_id),
            "{input:?} found another workspace's {hit:?}"
        );
        assert!(
            !hit.snippet.contains("<script"),
            "unescaped snippet {hit:?}"
        );
        assert!(!hit.score.is_nan(), "{hit:?}");
    }
});

/// `within_one_edit` agrees with the optimal string alignment distance, on neighbouring
/// words of the input (kept short: the reference is quadratic).
fn edits(input: &str) {
    let words: Vec<&str> = input.split_whitespace().take(8).collect();
    for pair in words.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.chars().count() > 48 || b.chars().count() > 48 {
            continue;
        }
        let expected = osa_distance(a, b) <= 1;
        assert_eq!(within_one_edit(a, b), expected, "{a:?} {b:?}");
        assert_eq!(within_one_edit(b, a), expected, "{b:?} {a:?}");
        assert!(within_one_edit(a, a));
        assert_eq!(
            Highlight::Fuzzy(a.to_owned()).matches(b),
            expected,
            "{a:?} {b:?}"
        );
    }
}

/// Optimal string alignment distance (insertions, deletions, substitutions, adjacent
/// transpositions; no substring edited twice), by dynamic programming over chars.
fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
