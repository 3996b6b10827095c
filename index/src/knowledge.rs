//! The knowledge base's index: articles cut into chunks, in an in-memory tantivy index
//! rebuilt from the store at start (articles are few and the store is the truth). Every
//! change is committed at once, so an edited article answers the next question. Every
//! search is scoped to one workspace here.
//!
//! A hit's `score` is how much of the question the chunk covers (0 to 1: the share of the
//! question's content words found in the chunk or its article's title), a measure a
//! threshold can be set on; tantivy's BM25 ranks the candidates first.

use std::collections::HashSet;
use std::sync::Mutex;

use confab_engine::ids::{ArticleId, WorkspaceId};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::Result;
use crate::schema::{register_analyzer, tokens, ANALYZER};

/// Longest chunk, in characters: a paragraph or a few.
const CHUNK_CHARS: usize = 700;
/// Candidates BM25 hands to the coverage score.
const CANDIDATES: usize = 20;

/// Words that carry no meaning of their own in a question (English, Portuguese, Spanish).
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "am", "was", "be", "do", "does", "did", "i", "you", "we", "me",
    "my", "your", "our", "it", "to", "of", "in", "on", "for", "and", "or", "with", "at", "by",
    "can", "could", "would", "will", "what", "how", "when", "where", "which", "who", "this",
    "that", "there", "any", "have", "has", "hi", "hello", "please", "thanks", "o", "os", "as",
    "um", "uma", "de", "do", "da", "dos", "das", "e", "em", "no", "na", "para", "por", "com",
    "que", "qual", "quais", "como", "voces", "vc", "eu", "el", "la", "los", "las", "y", "en", "es",
    "se", "su", "sus", "un", "una", "tem", "ter", "tiene", "sobre", "about", "if", "so", "just",
    "some", "get", "know", "want", "like", "need", "tell",
];

/// The content words of `text`, as indexed.
pub fn content_words(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    tokens(text)
        .into_iter()
        .filter(|t| t.len() > 1 && !STOP_WORDS.contains(&t.as_str()))
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

#[derive(Clone, Copy)]
struct Fields {
    workspace: Field,
    article: Field,
    /// The article's title as written (stored only).
    name: Field,
    /// Title and tags (indexed).
    title: Field,
    body: Field,
}

/// An article to index.
pub struct ArticleDoc<'a> {
    pub workspace: WorkspaceId,
    pub id: ArticleId,
    pub title: &'a str,
    pub body: &'a str,
    pub tags: &'a [String],
}

/// A chunk that matches a question.
#[derive(Clone, Debug, PartialEq)]
pub struct KnowledgeHit {
    pub article: ArticleId,
    pub title: String,
    /// The chunk's text: what the built-in agent may answer with.
    pub text: String,
    /// Share of the question's content words the chunk (or its title) has, 0 to 1.
    pub score: f64,
}

pub struct KnowledgeIndex {
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
}

impl KnowledgeIndex {
    pub fn new() -> Result<KnowledgeIndex> {
        let mut builder = Schema::builder();
        let text = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(ANALYZER)
                    .set_index_option(IndexRecordOption::WithFreqs),
            )
            .set_stored();
        let fields = Fields {
            workspace: builder.add_text_field("workspace", STRING),
            article: builder.add_text_field("article", STRING | STORED),
            name: builder.add_text_field("name", STORED),
            title: builder.add_text_field("title", text.clone()),
            body: builder.add_text_field("body", text),
        };
        let index = Index::create_in_ram(builder.build());
        register_analyzer(&index);
        let writer = index.writer_with_num_threads(1, 15_000_000)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(KnowledgeIndex {
            fields,
            reader,
            writer: Mutex::new(writer),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces articles, then commits: searchable when this returns. Blocking.
    pub fn upsert(&self, articles: &[ArticleDoc<'_>]) -> Result<()> {
        let mut writer = self.lock();
        for article in articles {
            writer.delete_term(Term::from_field_text(
                self.fields.article,
                &article.id.to_string(),
            ));
            let tagged = format!("{} {}", article.title, article.tags.join(" "));
            for chunk in chunks(article.body) {
                let mut doc = TantivyDocument::default();
                doc.add_text(self.fields.workspace, article.workspace.to_string());
                doc.add_text(self.fields.article, article.id.to_string());
                doc.add_text(self.fields.name, article.title);
                doc.add_text(self.fields.title, &tagged);
                doc.add_text(self.fields.body, &chunk);
                writer.add_document(doc)?;
            }
        }
        writer.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Removes an article, then commits. Blocking.
    pub fn delete(&self, id: ArticleId) -> Result<()> {
        let mut writer = self.lock();
        writer.delete_term(Term::from_field_text(self.fields.article, &id.to_string()));
        writer.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// The chunks of `workspace` that best answer `question`, best first, at most `limit`.
    pub fn search(
        &self,
        workspace: WorkspaceId,
        question: &str,
        limit: usize,
    ) -> Result<Vec<KnowledgeHit>> {
        let words = content_words(question);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for word in &words {
            for field in [self.fields.title, self.fields.body] {
                should.push((
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, word),
                        IndexRecordOption::WithFreqs,
                    )),
                ));
            }
        }
        let query = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.workspace, &workspace.to_string()),
                    IndexRecordOption::Basic,
                )),
            ),
            (Occur::Must, Box::new(BooleanQuery::new(should))),
        ]);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(CANDIDATES).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (bm25, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text_of = |field: Field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let (title, text) = (text_of(self.fields.title), text_of(self.fields.body));
            let name = text_of(self.fields.name);
            let Ok(article) = text_of(self.fields.article).parse::<ArticleId>() else {
                continue;
            };
            let have: HashSet<String> = tokens(&title).into_iter().chain(tokens(&text)).collect();
            let covered = words.iter().filter(|w| have.contains(*w)).count();
            let score = covered as f64 / words.len() as f64;
            hits.push((
                score,
                bm25,
                KnowledgeHit {
                    article,
                    title: name,
                    text,
                    score,
                },
            ));
        }
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
        let mut seen = HashSet::new();
        Ok(hits
            .into_iter()
            .map(|(_, _, hit)| hit)
            .filter(|hit| seen.insert(hit.article))
            .take(limit)
            .collect())
    }
}

/// An article's body cut at paragraphs into chunks of at most [`CHUNK_CHARS`]; a longer
/// paragraph is cut at sentence ends, a longer sentence between words.
pub fn chunks(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut push = |piece: &str, separator: &str, out: &mut Vec<String>| {
        let len = |s: &str| s.chars().count();
        if !current.is_empty() && len(&current) + len(separator) + len(piece) > CHUNK_CHARS {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push_str(separator);
        }
        current.push_str(piece);
    };
    for paragraph in body.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if paragraph.chars().count() <= CHUNK_CHARS {
            push(paragraph, "\n\n", &mut out);
            continue;
        }
        for sentence in paragraph.split_inclusive(['.', '?', '!']).map(str::trim) {
            if sentence.chars().count() <= CHUNK_CHARS {
                push(sentence, " ", &mut out);
            } else {
                for word in sentence.split_whitespace() {
                    let word: String = word.chars().take(CHUNK_CHARS).collect();
                    push(&word, " ", &mut out);
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_covering_chunk_of_the_workspace_answers() {
        let index = KnowledgeIndex::new().expect("index");
        let (ours, theirs) = (WorkspaceId::new(), WorkspaceId::new());
        let pricing = ArticleId::new();
        let hours = ArticleId::new();
        index
            .upsert(&[
                ArticleDoc {
                    workspace: ours,
                    id: pricing,
                    title: "Pricing",
                    body: "The Pro plan costs 49 dollars per month.\n\nAnnual billing saves 20 percent.",
                    tags: &[],
                },
                ArticleDoc {
                    workspace: ours,
                    id: hours,
                    title: "Opening hours",
                    body: "Support is open Monday to Friday, 9 to 18.",
                    tags: &["support".to_string()],
                },
                ArticleDoc {
                    workspace: theirs,
                    id: ArticleId::new(),
                    title: "Pricing",
                    body: "Their plan costs 1 dollar per month.",
                    tags: &[],
                },
            ])
            .expect("indexed");
        let hits = index
            .search(ours, "How much does the Pro plan cost per month?", 3)
            .expect("search");
        assert_eq!(hits[0].article, pricing);
        assert!(hits[0].text.contains("49 dollars"));
        assert!(hits[0].score > 0.5, "{hits:?}");
        assert!(hits
            .iter()
            .all(|h| h.article != hours || h.score < hits[0].score));
        assert!(index.search(ours, "hello!", 3).expect("search").is_empty());

        index.delete(pricing).expect("deleted");
        let hits = index
            .search(ours, "Pro plan cost per month", 3)
            .expect("search");
        assert!(hits.iter().all(|h| h.article != pricing), "{hits:?}");
    }

    #[test]
    fn bodies_are_cut_at_paragraphs() {
        let long = "word ".repeat(200);
        let body = format!("First.\n\nSecond.\n\n{long}");
        let chunks = chunks(&body);
        assert!(chunks[0].starts_with("First.\n\nSecond."), "{chunks:?}");
        assert!(chunks.len() >= 2);
        assert!(chunks.iter().all(|c| c.chars().count() <= CHUNK_CHARS));
    }
}
