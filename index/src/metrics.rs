//! Names of the index's metrics. Labels are bounded: no ids, no query text.

/// Gauge: offsets committed by the store but not yet searchable (durable head − indexed).
pub const INDEX_LAG_OFFSETS: &str = "confab_index_lag_offsets";
/// Histogram: one index commit (flush, fsync, searcher reload), in seconds.
pub const INDEX_COMMIT_SECONDS: &str = "confab_index_commit_seconds";
/// Counter: documents written (added or replaced) by the indexer.
pub const INDEX_DOCUMENTS: &str = "confab_index_documents_total";
/// Counter: index failures that made the indexer reopen the index and catch up.
pub const INDEX_FAILURES: &str = "confab_index_failures_total";
/// Histogram: one search request, label `outcome` = `ok` | `invalid` | `timeout` | `busy` |
/// `error`.
pub const SEARCH_SECONDS: &str = "confab_search_seconds";
