//! The searcher: opens (or creates) the index, runs workspace-scoped queries, ranks by
//! relevance with recency as tie-break, paginates and highlights.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use confab_engine::ids::{ConversationId, MessageId, WorkspaceId};
use confab_engine::model::ChannelKind;
use confab_engine::time::UnixMillis;
use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::error::Result;
use crate::query::{Highlight, ParsedQuery};
use crate::ranked::Ranked;
use crate::schema::{self, Fields, SCHEMA_VERSION};

/// The share of the index's documents a workspace must hold for its searches to check
/// the workspace per hit rather than intersect with it (see
/// `SearchIndex::workspace_in_collector`).
const PRUNING_WORKSPACE_SHARE: f64 = 0.25;

/// One ranked list of a search: the query with its filters (counting matches, and
/// ranking when `unfiltered` is `None`), or the user's query alone with the workspace
/// checked by the collector.
struct RankedList {
    filtered: BooleanQuery,
    unfiltered: Option<Box<dyn Query>>,
    workspace: Option<String>,
}

/// Deepest position a page may start at: relevance pages past this are not worth their
/// cost (refine the query instead).
pub const MAX_DEPTH: usize = 1_000;
/// Characters of a snippet.
const SNIPPET_CHARS: usize = 160;

/// What a commit's payload holds.
#[derive(Serialize, Deserialize)]
struct Payload {
    offset: u64,
    schema: u32,
}

pub(crate) fn payload(offset: u64) -> String {
    serde_json::to_string(&Payload {
        offset,
        schema: SCHEMA_VERSION,
    })
    .unwrap_or_default()
}

/// A handle to the index for searching; cheap to clone. The [`crate::Writer`] reloads
/// it after each commit.
#[derive(Clone)]
pub struct SearchIndex {
    inner: Arc<Inner>,
}

struct Inner {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    dir: PathBuf,
    running: AtomicUsize,
}

/// A search slot: searches beyond [`SearchIndex::try_slot`]'s limit are refused rather
/// than queued.
pub struct Slot {
    inner: Arc<Inner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One search.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    /// Always applied: nothing of another workspace can match.
    pub workspace: WorkspaceId,
    pub query: ParsedQuery,
    pub channel: Option<ChannelKind>,
    /// Only the AI agent's messages and escalation notes about this intent.
    pub intent: Option<String>,
    /// Only messages created at or after this, and conversations whose document time is
    /// at most [`crate::schema::CONVERSATION_AT_SLACK_MS`] before it (a conversation
    /// document's time may lag its last activity by that much): the caller checks a
    /// conversation hit's exact last activity against it.
    pub since: Option<UnixMillis>,
    pub conversation: Option<ConversationId>,
    /// Position of the first hit (from a previous page's `next`).
    pub offset: usize,
    pub limit: usize,
}

/// Which field of a document matched (the one the snippet comes from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HitField {
    Text,
    Name,
    Company,
    Email,
    Phone,
    Tags,
}

/// One matching document.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub conversation_id: ConversationId,
    /// `None` for a conversation-level hit (contact or tags).
    pub message_id: Option<MessageId>,
    /// The message's `seq`; `None` for a conversation-level hit.
    pub seq: Option<u64>,
    /// HTML-escaped text with the matches in `<b>…</b>`.
    pub snippet: String,
    pub field: HitField,
    /// Message: created; conversation: last activity.
    pub at: UnixMillis,
    pub score: f32,
    pub internal: bool,
}

/// One page of results.
#[derive(Debug)]
pub struct SearchPage<T> {
    pub items: Vec<(Hit, T)>,
    /// Offset of the next page, if there may be more.
    pub next: Option<usize>,
}

/// Conversations whose contact may stand for one word of a query of several words
/// (`maria pricing`): past this many, the word must be in the message itself.
pub const MAX_CONTACT_CONVERSATIONS: usize = 1_000;

/// The page being filled.
struct PageBuilder<T> {
    limit: usize,
    scan: usize,
    items: Vec<(Hit, T)>,
    scanned: usize,
}

/// How collecting one ranked list ended.
enum Run {
    /// The page is complete (or the depth limit was reached): `next` is where the next
    /// page starts.
    Done { next: Option<usize> },
    /// The list ran out; `len` is its length when known (`None`: it has nothing from
    /// the page's start on, and may end anywhere before it).
    Exhausted { len: Option<usize> },
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it if absent. An index of another schema
    /// version, or one that cannot be opened, is deleted and created empty: it is derived
    /// data, and the writer's catch-up rebuilds it from the store.
    pub fn open(dir: &Path) -> Result<SearchIndex> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema::build();
        let index = match Self::open_existing(dir, &schema) {
            Some(index) => index,
            None => {
                for entry in std::fs::read_dir(dir)? {
                    let path = entry?.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(&path)?;
                    } else {
                        std::fs::remove_file(&path)?;
                    }
                }
                Index::create_in_dir(dir, schema)?
            }
        };
        schema::register_analyzer(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(SearchIndex {
            inner: Arc::new(Inner {
                index,
                reader,
                fields,
                dir: dir.to_path_buf(),
                running: AtomicUsize::new(0),
            }),
        })
    }

    fn open_existing(dir: &Path, schema: &tantivy::schema::Schema) -> Option<Index> {
        if !dir.join("meta.json").exists() {
            return None;
        }
        let index = match Index::open_in_dir(dir) {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "search index unreadable: rebuilding");
                return None;
            }
        };
        let version = index
            .load_metas()
            .ok()
            .and_then(|m| m.payload)
            .and_then(|p| serde_json::from_str::<Payload>(&p).ok())
            .map(|p| p.schema);
        if index.schema() != *schema || version.is_some_and(|v| v != SCHEMA_VERSION) {
            tracing::warn!(dir = %dir.display(), "search index has another schema: rebuilding");
            return None;
        }
        Some(index)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn tantivy(&self) -> &Index {
        &self.inner.index
    }

    pub fn fields(&self) -> &Fields {
        &self.inner.fields
    }

    /// The offset stored with the last commit (`None` for a new index).
    pub fn committed_offset(&self) -> Result<Option<u64>> {
        Ok(self
            .inner
            .index
            .load_metas()?
            .payload
            .and_then(|p| serde_json::from_str::<Payload>(&p).ok())
            .map(|p| p.offset))
    }

    /// Makes the last commit visible to searches.
    pub fn reload(&self) -> Result<()> {
        Ok(self.inner.reader.reload()?)
    }

    /// Documents visible to searches.
    pub fn num_docs(&self) -> u64 {
        self.inner.reader.searcher().num_docs()
    }

    /// A slot to run a search in, if fewer than `max` are running.
    pub fn try_slot(&self, max: usize) -> Option<Slot> {
        let running = self.inner.running.fetch_add(1, Ordering::AcqRel);
        let slot = Slot {
            inner: self.inner.clone(),
        };
        (running < max).then_some(slot)
    }

    /// Runs `request`. Each candidate hit, best first, goes through `join`, which returns
    /// what to show with it, or `None` to leave it out (a filter the index does not hold,
    /// such as the conversation's current status). At most `scan` candidates are looked
    /// at for one page; a page can then come back short with a `next` offset.
    ///
    /// Near misses (misspellings within one edit, for words of 5+ letters) are searched
    /// only when nothing in the workspace matches exactly (under the request's filters):
    /// a query with exact matches never pays for fuzzy expansion, and a misspelt one
    /// still finds what was meant.
    pub fn search<T>(
        &self,
        request: &SearchRequest,
        scan: usize,
        mut join: impl FnMut(&Hit) -> Result<Option<T>>,
    ) -> Result<SearchPage<T>> {
        let searcher = self.inner.reader.searcher();
        let contacts = self.contact_matches(&searcher, request)?;
        let prune = self.workspace_in_collector(&searcher, request)?;
        let mut lists = vec![self.plan(request, false, &contacts, prune)];
        if request.query.has_fuzzy() {
            lists.push(self.plan(request, true, &contacts, prune));
        }
        let highlights = request.query.highlights();
        let mut page = PageBuilder {
            limit: request.limit.max(1),
            scan,
            items: Vec::new(),
            scanned: 0,
        };
        for (i, list) in lists.iter().enumerate() {
            let last = i + 1 == lists.len();
            let run = self.collect(
                &searcher,
                list,
                request.offset,
                last,
                request,
                &highlights,
                &mut page,
                &mut join,
            )?;
            match run {
                Run::Done { next } => {
                    return Ok(SearchPage {
                        items: page.items,
                        next,
                    })
                }
                Run::Exhausted { len } => {
                    // Near misses only when nothing matched exactly.
                    let matched = match len {
                        Some(len) => len > 0,
                        None => searcher.search(&list.filtered, &Count)? > 0,
                    };
                    if matched {
                        break;
                    }
                }
            }
        }
        Ok(SearchPage {
            items: page.items,
            next: None,
        })
    }

    /// For each part of a query of several words, the conversations of the workspace
    /// whose contact fields or tags match that part (none past
    /// [`MAX_CONTACT_CONVERSATIONS`]: then the part must be in the message itself).
    fn contact_matches(
        &self,
        searcher: &tantivy::Searcher,
        request: &SearchRequest,
    ) -> Result<Vec<Option<Vec<String>>>> {
        let fields = &self.inner.fields;
        let workspace = Term::from_field_text(fields.workspace, &request.workspace.to_string());
        let mut out = Vec::new();
        for part in request.query.contact_parts(fields) {
            let Some(part) = part else {
                out.push(None);
                continue;
            };
            let query = BooleanQuery::new(vec![
                (Occur::Must, part),
                (
                    Occur::Must,
                    Box::new(TermQuery::new(workspace.clone(), IndexRecordOption::Basic)),
                ),
            ]);
            let top = searcher.search(
                &query,
                &TopDocs::with_limit(MAX_CONTACT_CONVERSATIONS + 1).order_by_score(),
            )?;
            if top.len() > MAX_CONTACT_CONVERSATIONS {
                out.push(None);
                continue;
            }
            let mut ids = Vec::with_capacity(top.len());
            for (_, address) in top {
                let doc: TantivyDocument = searcher.doc(address)?;
                if let Some(id) = doc.get_first(fields.conversation).and_then(|v| v.as_str()) {
                    ids.push(id.to_owned());
                }
            }
            out.push(Some(ids));
        }
        Ok(out)
    }

    /// Collects hits of one ranked list into `page`, from position `start`.
    #[allow(clippy::too_many_arguments)]
    fn collect<T>(
        &self,
        searcher: &tantivy::Searcher,
        list: &RankedList,
        start: usize,
        last: bool,
        request: &SearchRequest,
        highlights: &[Highlight],
        page: &mut PageBuilder<T>,
        join: &mut impl FnMut(&Hit) -> Result<Option<T>>,
    ) -> Result<Run> {
        let fields = self.inner.fields;
        let window = (page.limit * 2).max(20);
        let mut position = start;
        loop {
            if position >= MAX_DEPTH {
                return Ok(Run::Done { next: None });
            }
            let want = window.min(MAX_DEPTH - position);
            let collector = Ranked {
                limit: want,
                offset: position,
                workspace: list.workspace.clone(),
            };
            let top: Vec<((f32, i64), DocAddress)> = match &list.unfiltered {
                Some(query) => searcher.search(query.as_ref(), &collector)?,
                None => searcher.search(&list.filtered, &collector)?,
            };
            let exhausted = top.len() < want;
            for (i, ((score, _), address)) in top.iter().enumerate() {
                page.scanned += 1;
                let doc: TantivyDocument = searcher.doc(*address)?;
                let hit = self.hit(&fields, &doc, *score, highlights).filter(|hit| {
                    hit.message_id.is_none() || request.since.is_none_or(|since| hit.at >= since)
                });
                if let Some(hit) = hit {
                    if let Some(extra) = join(&hit)? {
                        page.items.push((hit, extra));
                    }
                }
                if page.items.len() == page.limit || page.scanned >= page.scan {
                    let next = position + i + 1;
                    let at_end = exhausted && i + 1 == top.len();
                    let more = !(at_end && last) && next < MAX_DEPTH;
                    return Ok(Run::Done {
                        next: more.then_some(next),
                    });
                }
            }
            if exhausted {
                let len = (!top.is_empty() || position == 0 || position > start)
                    .then_some(position + top.len());
                return Ok(Run::Exhausted { len });
            }
            position += top.len();
        }
    }

    /// Whether `request` may leave its workspace to the collector ([`Ranked`]) instead of
    /// the query: only without other filters (the query is then the user's alone, whose
    /// posting lists tantivy can skip through by score bounds) and when the workspace
    /// holds at least [`PRUNING_WORKSPACE_SHARE`] of the index (a small workspace is
    /// found faster by intersecting with its own posting list).
    fn workspace_in_collector(
        &self,
        searcher: &tantivy::Searcher,
        request: &SearchRequest,
    ) -> Result<bool> {
        if request.channel.is_some()
            || request.intent.is_some()
            || request.conversation.is_some()
            || request.since.is_some()
        {
            return Ok(false);
        }
        let workspace =
            Term::from_field_text(self.inner.fields.workspace, &request.workspace.to_string());
        let share = searcher.doc_freq(&workspace)? as f64 / searcher.num_docs().max(1) as f64;
        Ok(share >= PRUNING_WORKSPACE_SHARE)
    }

    /// One ranked list of the search (exact, or with near misses).
    fn plan(
        &self,
        request: &SearchRequest,
        near: bool,
        contacts: &[Option<Vec<String>>],
        workspace_in_collector: bool,
    ) -> RankedList {
        let fields = &self.inner.fields;
        let query = request.query.compile(fields, near, contacts);
        RankedList {
            unfiltered: workspace_in_collector.then(|| query.box_clone()),
            filtered: self.filtered_query(request, query),
            workspace: workspace_in_collector.then(|| request.workspace.to_string()),
        }
    }

    /// The user's query, with the workspace (always) and the request's filters. Filters
    /// score nothing: ranking is the query's alone.
    fn filtered_query(&self, request: &SearchRequest, query: Box<dyn Query>) -> BooleanQuery {
        let fields = &self.inner.fields;
        let filter = |query: Box<dyn Query>| -> (Occur, Box<dyn Query>) {
            (Occur::Must, Box::new(ConstScoreQuery::new(query, 0.0)))
        };
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let mut clauses = vec![
            (Occur::Must, query),
            filter(term(fields.workspace, &request.workspace.to_string())),
        ];
        if let Some(channel) = request.channel {
            clauses.push(filter(term(fields.channel, channel.as_str())));
        }
        if let Some(intent) = &request.intent {
            clauses.push(filter(term(fields.intent, intent)));
        }
        if let Some(conversation) = request.conversation {
            clauses.push(filter(term(fields.conversation, &conversation.to_string())));
        }
        if let Some(since) = request.since {
            // Messages are checked exactly against `since` once found.
            let from = since.saturating_sub(crate::schema::CONVERSATION_AT_SLACK_MS);
            clauses.push(filter(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_i64(fields.at, from)),
                Bound::Unbounded,
            ))));
        }
        BooleanQuery::new(clauses)
    }

    fn hit(
        &self,
        fields: &Fields,
        doc: &TantivyDocument,
        score: f32,
        highlights: &[Highlight],
    ) -> Option<Hit> {
        let text = |field: Field| doc.get_first(field).and_then(|v| v.as_str());
        let conversation_id = text(fields.conversation)?.parse().ok()?;
        let message_id = text(fields.message).and_then(|id| id.parse().ok());
        let seq = doc.get_first(fields.seq).and_then(|v| v.as_u64());
        let at = doc
            .get_first(fields.at)
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let internal = doc
            .get_first(fields.internal)
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let candidates: &[(Field, HitField)] = if message_id.is_some() {
            &[(fields.text, HitField::Text)]
        } else {
            &[
                (fields.name, HitField::Name),
                (fields.company, HitField::Company),
                (fields.email, HitField::Email),
                (fields.phone, HitField::Phone),
                (fields.tags, HitField::Tags),
            ]
        };
        // The snippet comes from the field where most of the query's words matched.
        let mut best: Option<(usize, HitField, String)> = None;
        let mut fallback = None;
        for &(field, which) in candidates {
            let value: Vec<&str> = doc.get_all(field).filter_map(|v| v.as_str()).collect();
            if value.is_empty() {
                continue;
            }
            let value = value.join(", ");
            let matched = matched_tokens(&value, highlights);
            if matched.len() > best.as_ref().map_or(0, |b| b.0) {
                if let Some(snippet) = highlight(&self.inner.index, field, &value, matched) {
                    best = Some((snippet.0, which, snippet.1));
                }
            }
            fallback.get_or_insert((which, value));
        }
        let (field, snippet) = match (best, fallback) {
            (Some((_, field, snippet)), _) => (field, snippet),
            (None, Some((field, value))) => (field, plain_snippet(&value)),
            (None, None) => (candidates[0].1, String::new()),
        };
        Some(Hit {
            conversation_id,
            message_id,
            seq,
            snippet,
            field,
            at,
            score,
            internal,
        })
    }
}

/// The distinct tokens of `text` that match the query.
fn matched_tokens(text: &str, highlights: &[Highlight]) -> BTreeMap<String, f32> {
    schema::tokens(text)
        .into_iter()
        .filter(|token| highlights.iter().any(|h| h.matches(token)))
        .map(|token| (token, 1.0))
        .collect()
}

/// The best fragment of `text` with the `matched` tokens in `<b>`, and how many distinct
/// tokens matched; `None` when nothing in it matches.
fn highlight(
    index: &Index,
    field: Field,
    text: &str,
    matched: BTreeMap<String, f32>,
) -> Option<(usize, String)> {
    let count = matched.len();
    if count == 0 {
        return None;
    }
    let analyzer = index.tokenizer_for_field(field).ok()?;
    let generator = SnippetGenerator::new(matched, analyzer, field, SNIPPET_CHARS);
    let snippet = generator.snippet(text);
    if snippet.highlighted().is_empty() {
        return None;
    }
    // A short text is shown whole (tantivy's fragment stops at the last word).
    let start = text
        .find(snippet.fragment())
        .filter(|_| text.len() <= SNIPPET_CHARS);
    let html = match start {
        Some(start) => {
            let mut html = String::with_capacity(text.len() + 16);
            let mut at = 0;
            for range in snippet.highlighted() {
                let (from, to) = (start + range.start, start + range.end);
                html.push_str(&escape(&text[at..from]));
                html.push_str("<b>");
                html.push_str(&escape(&text[from..to]));
                html.push_str("</b>");
                at = to;
            }
            html.push_str(&escape(&text[at..]));
            html
        }
        None => snippet.to_html(),
    };
    Some((count, html))
}

/// The start of `text`, HTML-escaped, when no word of it can be highlighted (a fuzzy
/// match on a field the snippet does not show, for example).
fn plain_snippet(text: &str) -> String {
    let cut: String = text.chars().take(SNIPPET_CHARS).collect();
    escape(&cut)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}
