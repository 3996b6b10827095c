//! Names of the engine's metrics (Prometheus, via the `metrics` facade).

pub const COMMIT_GROUP_SIZE: &str = "confab_commit_group_size";
pub const COMMIT_GROUP_SECONDS: &str = "confab_commit_group_seconds";
pub const COMMIT_WAIT_SECONDS: &str = "confab_commit_wait_seconds";
pub const FSYNC_SECONDS: &str = "confab_fsync_seconds";
pub const DELTA_HEAD: &str = "confab_delta_head_offset";
/// Inbox list pages served, by `plan` (empty, walk, members).
pub const LIST_PAGES: &str = "confab_list_pages_total";
