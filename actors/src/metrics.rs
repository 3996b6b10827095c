//! Names of the actor runtime's metrics, and their help texts. `docs/METRICS.md` lists
//! every metric of the process.

pub const LIVE_CONVERSATIONS: &str = "confab_conversation_actors_live";
pub const ACTIVATIONS: &str = "confab_conversation_activations_total";
pub const PASSIVATIONS: &str = "confab_conversation_passivations_total";
pub const RESTARTS: &str = "confab_conversation_restarts_total";
pub const CONVERSATIONS_CREATED: &str = "confab_conversations_created_total";
pub const MESSAGES: &str = "confab_messages_total";
/// Counter: notifications created, by `reason`.
pub const NOTIFICATIONS_CREATED: &str = "confab_notifications_created_total";
/// Counter: notification deliveries by `channel` (`email`, `push`) and `outcome` (`sent`,
/// `retry`, `rejected`, `expired`).
pub const NOTIFICATION_DELIVERIES: &str = "confab_notification_deliveries_total";
/// Counter: webhook items that can never be stored (no usable id or sender), by channel kind.
pub const WEBHOOK_ITEMS_REJECTED: &str = "confab_webhook_items_rejected_total";
/// Counter: webhook events acknowledged and not used (kinds we do not use, changes to
/// messages we do not know), by channel kind.
pub const WEBHOOK_ITEMS_IGNORED: &str = "confab_webhook_items_ignored_total";
/// Counter: messages a channel's gap repair found that its webhooks had not delivered.
pub const REPAIRED_MESSAGES: &str = "confab_channel_repaired_messages_total";
/// Counter: gap repair runs, by channel kind and outcome (`ok`, `failed`).
pub const REPAIR_RUNS: &str = "confab_channel_repair_runs_total";
/// Gauge: messages queued in live conversation actors' mailboxes, summed (sampled at scrape).
pub const MAILBOX_MESSAGES: &str = "confab_conversation_mailbox_messages";
/// Gauge: the deepest single conversation mailbox (sampled at scrape).
pub const MAILBOX_MAX: &str = "confab_conversation_mailbox_max_messages";
pub const CONNECTOR_SENDS: &str = "confab_connector_sends_total";
pub const CONNECTOR_RESTARTS: &str = "confab_connector_restarts_total";
/// Gauge: connectors whose circuit breaker is open (sends paused), by channel kind.
pub const CONNECTOR_CIRCUITS_OPEN: &str = "confab_connector_circuits_open";
/// Counter: times a connector's circuit opened, by channel kind.
pub const CONNECTOR_CIRCUIT_OPENED: &str = "confab_connector_circuit_opened_total";

/// Gauge: lead messages waiting for the AI pool.
pub const AI_QUEUE: &str = "confab_ai_queue_depth";
/// Gauge: AI decisions being made (backend calls in flight).
pub const AI_IN_FLIGHT: &str = "confab_ai_in_flight";
/// Histogram: seconds from the quiet period's end to the AI's decision.
pub const AI_DECISION_SECONDS: &str = "confab_ai_decision_seconds";
/// Counter: AI decisions, by `decision` (answered, escalated, discarded).
pub const AI_DECISIONS: &str = "confab_ai_decisions_total";
/// Counter: AI requests dropped before deciding, already superseded (the lead wrote
/// again, a person stepped in).
pub const AI_SKIPPED: &str = "confab_ai_skipped_total";

/// Registers the help texts of the runtime's metrics, and of the search index's (the
/// indexer actor reports them; the index crate only names them).
/// Gauge: erasures of leads recorded and not completed yet (resumed after a restart).
pub const ERASURES_RUNNING: &str = "confab_erasures_running";
/// Counter: messages removed by retention.
pub const RETENTION_MESSAGES: &str = "confab_retention_messages_removed_total";
/// Counter: erasures of leads completed.
pub const ERASURES_COMPLETED: &str = "confab_erasures_completed_total";

pub fn describe() {
    use confab_index::metrics as index;
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(LIVE_CONVERSATIONS, "Conversation actors in memory.");
    describe_gauge!(
        ERASURES_RUNNING,
        "Erasures of leads recorded and not completed yet (they resume after a restart)."
    );
    describe_counter!(ERASURES_COMPLETED, "Erasures of leads completed.");
    describe_counter!(
        RETENTION_MESSAGES,
        "Messages removed by retention (older than their workspace's retention_days)."
    );
    describe_counter!(
        NOTIFICATIONS_CREATED,
        "Notifications created for agents, by reason."
    );
    describe_counter!(
        NOTIFICATION_DELIVERIES,
        "Notification deliveries, by channel (email, push) and outcome (sent, retry, rejected, expired)."
    );
    describe_gauge!(AI_QUEUE, "Lead messages waiting for the AI pool.");
    describe_gauge!(
        AI_IN_FLIGHT,
        "AI decisions being made (backend calls in flight)."
    );
    describe_histogram!(
        AI_DECISION_SECONDS,
        Unit::Seconds,
        "Time to an AI decision, after the quiet period (knowledge retrieval and backend)."
    );
    describe_counter!(
        AI_DECISIONS,
        "AI decisions, by decision (answered, escalated, discarded)."
    );
    describe_counter!(
        AI_SKIPPED,
        "AI requests dropped before deciding: already superseded by a newer message or a person."
    );
    describe_counter!(ACTIVATIONS, "Conversation actors activated from the store.");
    describe_counter!(PASSIVATIONS, "Idle conversation actors passivated.");
    describe_counter!(
        RESTARTS,
        "Crashed conversation actors restarted from the store."
    );
    describe_counter!(
        CONVERSATIONS_CREATED,
        "Conversations created, by channel kind."
    );
    describe_counter!(
        MESSAGES,
        "Messages stored, by direction (inbound, outbound) and channel kind."
    );
    describe_counter!(
        WEBHOOK_ITEMS_REJECTED,
        "Webhook items that can never be stored (no usable id or sender), by channel kind."
    );
    describe_counter!(
        WEBHOOK_ITEMS_IGNORED,
        "Webhook events acknowledged and not used (kinds not used, changes to unknown messages), by channel kind."
    );
    describe_counter!(
        REPAIRED_MESSAGES,
        "Messages a channel's gap repair stored that no webhook had delivered, by channel kind."
    );
    describe_counter!(
        REPAIR_RUNS,
        "Gap repair runs, by channel kind and outcome (ok, failed)."
    );
    describe_gauge!(
        MAILBOX_MESSAGES,
        "Messages waiting in live conversation actors' mailboxes, summed."
    );
    describe_gauge!(
        MAILBOX_MAX,
        "Messages waiting in the deepest live conversation actor's mailbox."
    );
    describe_counter!(
        CONNECTOR_SENDS,
        "Provider send attempts, by channel kind and outcome (accepted, retried, failed)."
    );
    describe_counter!(CONNECTOR_RESTARTS, "Crashed connectors restarted.");
    describe_gauge!(
        CONNECTOR_CIRCUITS_OPEN,
        "Connectors whose circuit breaker is open (sends paused), by channel kind."
    );
    describe_counter!(
        CONNECTOR_CIRCUIT_OPENED,
        "Times a connector's circuit breaker opened, by channel kind."
    );
    describe_gauge!(
        index::INDEX_LAG_OFFSETS,
        "Delta offsets durable in the store but not yet committed to the search index."
    );
    describe_histogram!(
        index::INDEX_COMMIT_SECONDS,
        Unit::Seconds,
        "Duration of one search index commit."
    );
    describe_counter!(
        index::INDEX_DOCUMENTS,
        "Documents written to the search index."
    );
    describe_counter!(
        index::INDEX_FAILURES,
        "Search index failures (the writer is reopened and catches up)."
    );
    describe_histogram!(
        index::SEARCH_SECONDS,
        Unit::Seconds,
        "Duration of a search, by outcome."
    );
}
