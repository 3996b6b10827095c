//! Names of the engine's metrics (Prometheus, via the `metrics` facade), and their help
//! texts. `docs/METRICS.md` lists every metric of the process.

/// Histogram: write sets per committed group (one fsync each).
pub const COMMIT_GROUP_SIZE: &str = "confab_commit_group_size";
/// Histogram: time to write, fsync and publish one group.
pub const COMMIT_GROUP_SECONDS: &str = "confab_commit_group_seconds";
/// Histogram: time a write set waited in the committer's queue.
pub const COMMIT_WAIT_SECONDS: &str = "confab_commit_wait_seconds";
/// Gauge: write sets waiting for the committer.
pub const COMMIT_QUEUE_DEPTH: &str = "confab_commit_queue_depth";
/// Histogram: one group's fsync (or buffered persist).
pub const FSYNC_SECONDS: &str = "confab_fsync_seconds";
/// Gauge: the last durable, published delta offset.
pub const DELTA_HEAD: &str = "confab_delta_head_offset";
/// Gauge: 1 once the store refuses writes after a storage failure or a committer panic.
pub const STORE_POISONED: &str = "confab_store_poisoned";
/// Inbox list pages served, by `plan` (empty, walk, members).
pub const LIST_PAGES: &str = "confab_list_pages_total";

/// Registers the help texts of the engine's metrics with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        COMMIT_GROUP_SIZE,
        Unit::Count,
        "Write sets per committed group (one fsync per group)."
    );
    describe_histogram!(
        COMMIT_GROUP_SECONDS,
        Unit::Seconds,
        "Time to write, fsync and publish one committed group."
    );
    describe_histogram!(
        COMMIT_WAIT_SECONDS,
        Unit::Seconds,
        "Time a write set waited in the committer's queue before being written."
    );
    describe_gauge!(
        STORE_POISONED,
        "1 once the store refuses writes (storage failure or committer panic); restart to recover."
    );
    describe_gauge!(
        COMMIT_QUEUE_DEPTH,
        "Write sets waiting for the committer (single writer)."
    );
    describe_histogram!(
        FSYNC_SECONDS,
        Unit::Seconds,
        "Duration of one group's fsync (or buffered persist)."
    );
    describe_gauge!(DELTA_HEAD, "The last durable, published delta offset.");
    describe_counter!(LIST_PAGES, "Inbox list pages served, by query plan.");
}
