//! Names of the stream's metrics (Prometheus, via the `metrics` facade), and their help
//! texts. No labels: the stream has no bounded dimension worth splitting by.

/// Gauge: open WebSocket connections (upgraded, subscribed or not).
pub const WS_CLIENTS: &str = "confab_ws_clients";
/// Counter: delta frames written to sockets, live and replayed.
pub const WS_FRAMES_SENT: &str = "confab_ws_frames_sent_total";
/// Counter: sessions closed because they fell more than a queue behind (or stalled).
pub const WS_SLOW_DISCONNECTS: &str = "confab_ws_slow_disconnects_total";
/// Counter: subscriptions with a `since` offset (resuming clients).
pub const WS_RESUMES: &str = "confab_ws_resumes_total";
/// Counter: `resync` frames sent (history gone, or an offset from the future).
pub const WS_RESYNCS: &str = "confab_ws_resyncs_total";
/// Histogram: from the committer publishing a delta to its frame being flushed to a socket.
pub const DELTA_PUBLISH_TO_SEND_SECONDS: &str = "confab_delta_publish_to_send_seconds";
/// Histogram: from a webhook's receipt to a delta it caused being flushed to a socket
/// (once per socket that gets it; live deltas only, not replays).
pub const INGEST_TO_SOCKET_SECONDS: &str = "confab_ingest_to_socket_seconds";
/// Counter: deltas deleted by retention.
pub const DELTAS_PRUNED: &str = "confab_deltas_pruned_total";
/// Gauge: offsets up to this one may have been pruned; older resumes get `resync`.
pub const DELTA_PRUNED_THROUGH: &str = "confab_delta_pruned_through_offset";

/// Registers the help texts of the stream's metrics.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(WS_CLIENTS, "Open WebSocket connections.");
    describe_counter!(
        WS_FRAMES_SENT,
        "Delta frames written to WebSocket clients, live and replayed."
    );
    describe_counter!(
        WS_SLOW_DISCONNECTS,
        "WebSocket sessions closed because the client read too slowly."
    );
    describe_counter!(WS_RESUMES, "Subscriptions resuming from an offset.");
    describe_counter!(
        WS_RESYNCS,
        "Resync frames sent (history no longer retained)."
    );
    describe_histogram!(
        DELTA_PUBLISH_TO_SEND_SECONDS,
        Unit::Seconds,
        "From a delta being durable and published to its frame being flushed to a socket."
    );
    describe_histogram!(
        INGEST_TO_SOCKET_SECONDS,
        Unit::Seconds,
        "From a webhook's receipt to a delta it caused being flushed to a socket, per socket."
    );
    describe_counter!(DELTAS_PRUNED, "Deltas deleted by retention.");
    describe_gauge!(
        DELTA_PRUNED_THROUGH,
        "Offsets up to this one may have been pruned; older resumes get resync."
    );
}
