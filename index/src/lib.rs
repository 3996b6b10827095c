//! Confab's full-text search: derived from the store, never the source of truth.
//!
//! One tantivy index holds every workspace: a document per message (its text, internal
//! notes included) and a document per conversation (the contact's name, company, email,
//! phone and the conversation's tags). Every query carries its workspace as a required
//! filter, added here and not by callers.
//!
//! - [`schema`]: the fields, the analyzer, and how a message or a conversation becomes a
//!   document.
//! - [`query`]: the user's query language (words, `"phrases"`, `prefix*`, `-exclusions`,
//!   `OR`, parentheses), parsed with bounded size and compiled to tantivy queries.
//! - [`writer`]: the single writer: stages deltas, commits with the last indexed offset in
//!   the commit payload, catches up from the store's delta log or rebuilds from its state.
//! - [`search`]: the searcher: workspace filter, filters, relevance with recency as
//!   tie-break (ranked by a collector that keeps score pruning: `ranked`), pagination,
//!   highlighted snippets.
//!
//! This crate knows nothing of actors or HTTP; the indexer actor drives the writer.

pub mod error;
mod forward;
pub mod knowledge;
pub mod metrics;
pub mod query;
mod ranked;
pub mod schema;
pub mod search;
pub mod writer;

#[cfg(test)]
mod tests;

pub use error::{IndexError, Result};
pub use knowledge::{ArticleDoc, KnowledgeHit, KnowledgeIndex};
pub use query::{ParsedQuery, QueryError};
pub use search::{Hit, HitField, SearchIndex, SearchPage, SearchRequest};
pub use writer::{reindex, CatchUp, Writer, WriterOptions};
