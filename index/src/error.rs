//! The index crate's errors.

use crate::query::QueryError;

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The user's query cannot be run; the message says why (shown to the caller).
    #[error("{0}")]
    InvalidQuery(#[from] QueryError),
    /// Another process (or writer) holds the index: `confab serve` while reindexing.
    #[error("the index is in use by another writer: {0}")]
    Locked(String),
    /// tantivy failed (I/O, corrupt segment, …). The index is derived data: rebuild it.
    #[error("search index failure: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// Reading the store failed while catching up or rebuilding.
    #[error(transparent)]
    Store(#[from] confab_engine::Error),
    #[error("search index I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;
