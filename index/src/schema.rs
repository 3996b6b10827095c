//! The index's fields, its analyzer, and documents made from messages and conversations.
//!
//! Every document has a unique `key` (`m<message id>` or `c<conversation id>`): replacing a
//! document is "delete by key, then add", so applying a delta twice leaves one document.

use confab_engine::ids::{ConversationId, MessageId, WorkspaceId};
use confab_engine::model::{ChannelKind, ConversationCard, Message};
use confab_engine::time::UnixMillis;
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST,
    INDEXED, STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{Index, TantivyDocument, Term};

/// Bumped whenever fields or analysis change: an index with another version is rebuilt.
pub const SCHEMA_VERSION: u32 = 5;

/// Name of the analyzer of every full-text field.
pub const ANALYZER: &str = "confab";

/// Tokens longer than this are dropped (base64 blobs, URLs without separators).
const MAX_TOKEN_BYTES: usize = 40;

/// Splits on anything not alphanumeric, lowercases, folds accents (`João` → `joao`). No
/// stemming: prefix and fuzzy matching stay predictable.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The tokens `text` is indexed (and queried) as.
pub fn tokens(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    stream.process(&mut |token| out.push(token.text.clone()));
    out
}

/// The schema's fields by role.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    /// `m<message id>` / `c<conversation id>`: the delete-by-id key.
    pub key: Field,
    pub workspace: Field,
    pub conversation: Field,
    /// Stored only; absent on conversation documents.
    pub message: Field,
    /// The message's `seq` in its conversation: stored only, absent on conversation
    /// documents (a hit opens the conversation at that message).
    pub seq: Field,
    pub channel: Field,
    /// Message: when it was created. Conversation: its last activity. Ranks (recency
    /// tie-break) and filters (`period`).
    pub at: Field,
    /// Stored: whether a message is an internal note.
    pub internal: Field,
    pub text: Field,
    pub name: Field,
    pub company: Field,
    pub email: Field,
    pub phone: Field,
    pub tags: Field,
    /// The intent the AI agent saw, on its answers and escalation notes (`pricing`,
    /// `human_request` …): a filter, not searched as text.
    pub intent: Field,
}

impl Fields {
    /// The full-text fields a query word is looked for in, with their boosts: a match on
    /// the contact's name says more than a word somewhere in a message.
    pub fn searchable(&self) -> [(Field, f32); 6] {
        [
            (self.text, 1.0),
            (self.name, 3.0),
            (self.company, 2.0),
            (self.email, 2.0),
            (self.phone, 2.0),
            (self.tags, 1.5),
        ]
    }
}

impl Fields {
    /// The conversation document's full-text fields: the contact's and the tags.
    pub fn contact(&self) -> [Field; 5] {
        [self.name, self.company, self.email, self.phone, self.tags]
    }
}

/// The schema and its fields.
pub fn build() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let full_text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        key: b.add_text_field("key", STRING),
        workspace: b.add_text_field("workspace", STRING | FAST),
        conversation: b.add_text_field("conversation", STRING | STORED),
        message: b.add_text_field("message", STORED),
        seq: b.add_u64_field("seq", STORED),
        channel: b.add_text_field("channel", STRING),
        at: b.add_i64_field(
            "at",
            NumericOptions::from(INDEXED) | NumericOptions::from(FAST) | STORED,
        ),
        internal: b.add_bool_field("internal", STORED),
        text: b.add_text_field("text", full_text.clone()),
        name: b.add_text_field("name", full_text.clone()),
        company: b.add_text_field("company", full_text.clone()),
        email: b.add_text_field("email", full_text.clone()),
        phone: b.add_text_field("phone", full_text.clone()),
        tags: b.add_text_field("tags", full_text),
        intent: b.add_text_field("intent", STRING),
    };
    (b.build(), fields)
}

/// Registers the analyzer on an opened or created index.
pub fn register_analyzer(index: &Index) {
    index.tokenizers().register(ANALYZER, analyzer());
}

pub fn message_key(id: MessageId) -> String {
    format!("m{id}")
}

pub fn conversation_key(id: ConversationId) -> String {
    format!("c{id}")
}

pub fn key_term(fields: &Fields, key: &str) -> Term {
    Term::from_field_text(fields.key, key)
}

fn base(
    fields: &Fields,
    key: &str,
    ws: WorkspaceId,
    conv: ConversationId,
    channel: ChannelKind,
    at: UnixMillis,
) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_text(fields.key, key);
    doc.add_text(fields.workspace, ws.to_string());
    doc.add_text(fields.conversation, conv.to_string());
    doc.add_text(fields.channel, channel.as_str());
    doc.add_i64(fields.at, at);
    doc
}

/// A message's document: its text, whatever its direction; internal notes included.
pub fn message_doc(fields: &Fields, ws: WorkspaceId, message: &Message) -> TantivyDocument {
    let key = message_key(message.id);
    let mut doc = base(
        fields,
        &key,
        ws,
        message.conversation_id,
        message.channel,
        message.created_at,
    );
    doc.add_text(fields.message, message.id.to_string());
    doc.add_u64(fields.seq, message.seq);
    doc.add_bool(fields.internal, message.internal);
    doc.add_text(fields.text, &message.text);
    // Email: the subject is searched with the body.
    if let Some(subject) = &message.subject {
        doc.add_text(fields.text, subject);
    }
    if let Some(ai) = &message.ai {
        doc.add_text(fields.intent, &ai.intent);
    }
    doc
}

/// How long a conversation document's time (`at`, its last activity) may lag behind:
/// activity alone refreshes the document only once it is this old, so a busy
/// conversation is not re-indexed on every message. Period filters widen their bound on
/// conversation documents by this much; the caller checks the exact last activity.
pub const CONVERSATION_AT_SLACK_MS: UnixMillis = 60 * 60 * 1000;

/// A digest of everything [`conversation_doc`] indexes except its time: when it is
/// unchanged, only the time moved.
pub fn conversation_content(ws: WorkspaceId, card: &ConversationCard) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ws.hash(&mut hasher);
    card.id.hash(&mut hasher);
    card.channel.as_str().hash(&mut hasher);
    let contact = &card.contact;
    for value in [
        &contact.name,
        &contact.company,
        &contact.title,
        &contact.email,
        &contact.phone,
    ] {
        value.hash(&mut hasher);
    }
    card.tags.hash(&mut hasher);
    hasher.finish()
}

/// A conversation's document: who the lead is and how the conversation is tagged.
pub fn conversation_doc(
    fields: &Fields,
    ws: WorkspaceId,
    card: &ConversationCard,
) -> TantivyDocument {
    let key = conversation_key(card.id);
    let mut doc = base(
        fields,
        &key,
        ws,
        card.id,
        card.channel,
        card.last_activity_at,
    );
    let contact = &card.contact;
    let optional = [
        (fields.name, &contact.name),
        (fields.company, &contact.company),
        // A headline (LinkedIn's "Head of Growth at Acme") is searched like the company.
        (fields.company, &contact.title),
        (fields.email, &contact.email),
        (fields.phone, &contact.phone),
    ];
    for (field, value) in optional {
        if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
            doc.add_text(field, value);
        }
    }
    for tag in &card.tags {
        doc.add_text(fields.tags, tag);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analyzer_folds_case_and_accents_and_splits_on_punctuation() {
        assert_eq!(tokens("João Müller"), vec!["joao", "muller"]);
        assert_eq!(
            tokens("ana.silva@Acme.io"),
            vec!["ana", "silva", "acme", "io"]
        );
        assert_eq!(
            tokens("+55 (11) 98765-4321"),
            vec!["55", "11", "98765", "4321"]
        );
        assert!(
            tokens(&"x".repeat(200)).is_empty(),
            "overlong tokens are dropped"
        );
    }

    #[test]
    fn keys_are_distinct_per_kind() {
        let id = ConversationId::new();
        assert!(conversation_key(id).starts_with('c'));
        assert!(message_key(MessageId::new()).starts_with('m'));
    }
}
