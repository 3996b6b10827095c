//! The process's Prometheus recorder, the gateway's own metrics (HTTP requests, webhooks),
//! and the middleware that measures every HTTP request by route template.
//! `docs/METRICS.md` lists every metric of the process.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use dashmap::DashMap;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: HTTP requests, by `method`, `route` (the template, `unmatched` for none) and
/// `status` class (`2xx` …).
pub const HTTP_REQUESTS: &str = "confab_http_requests_total";
/// Histogram: HTTP request latency until the response head, by `method` and `route`.
pub const HTTP_REQUEST_SECONDS: &str = "confab_http_request_duration_seconds";
/// Counter: provider webhook requests, by `channel` and `outcome`.
pub const WEBHOOK_REQUESTS: &str = "confab_webhook_requests_total";

/// Counter: online backups, by `outcome` (`ok`, `failed`).
pub const BACKUPS: &str = "confab_backups_total";
/// Outgoing webhook deliveries, by result (`delivered`, `failed`).
pub const WEBHOOK_DELIVERIES: &str = "confab_outgoing_webhook_deliveries_total";
/// Gauge: when the last backup finished (Unix seconds; 0: none since the process started).
pub const BACKUP_LAST_SUCCESS: &str = "confab_backup_last_success_timestamp_seconds";

/// Latency buckets (seconds) for every `*_seconds` histogram: 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets for the committer's group sizes.
const GROUP_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// The process-wide Prometheus recorder (one per process, shared by every server in it),
/// with histograms (not summaries) and every metric described.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(confab_engine::metrics::COMMIT_GROUP_SIZE.into()),
                        GROUP_SIZE_BUCKETS,
                    )
                })
                .and_then(|b| b.install_recorder());
            match installed {
                Ok(handle) => {
                    describe();
                    register_initial();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The recorder keeps every histogram sample until it is folded into the buckets, which
/// only a scrape or an upkeep does: without this thread a server nobody scrapes would
/// grow by every request's samples, forever. A thread, not a task: the recorder is
/// installed by whichever runtime (or none) first asks for it, and lives as long as the
/// process.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started: histograms are folded only when scraped");
    }
}

/// Registers the help text of every metric of the process.
fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    confab_engine::metrics::describe();
    confab_actors::metrics::describe();
    crate::stream::metrics::describe();
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests, by method, route template and status class."
    );
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "HTTP request latency until the response head, by method and route template."
    );
    describe_counter!(BACKUPS, "Online backups, by outcome (ok, failed).");
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Outgoing webhook deliveries, by result (delivered, failed)."
    );
    metrics::describe_gauge!(
        BACKUP_LAST_SUCCESS,
        Unit::Seconds,
        "When the last online backup finished (Unix time; 0: none since the process started)."
    );
    describe_counter!(
        WEBHOOK_REQUESTS,
        "Provider webhook requests, by channel kind and outcome (stored, bad_signature, rejected, failed)."
    );
}

/// Channel kinds a channel can be created with (the label values of `channel`).
const CHANNEL_KINDS: &[confab_engine::model::ChannelKind] =
    &[confab_engine::model::ChannelKind::Whatsapp];

/// Creates every counter and gauge of the process (and the unlabelled histograms) at its
/// current value, 0 on a fresh process, so that a scrape shows them before anything
/// happened and alerts on "== 0" or `rate()` see a series from the start. Labelled metrics
/// get their known label values (channel kinds, outcomes, plans); HTTP requests only the
/// operational routes. Registering never changes a value: counters and gauges are moved
/// by 0.
fn register_initial() {
    use confab_actors::metrics as actors;
    use confab_engine::metrics as engine;
    use confab_index::metrics as index;
    use metrics::{counter, gauge, histogram};

    use crate::stream::metrics as stream;

    for name in [
        actors::ACTIVATIONS,
        actors::PASSIVATIONS,
        actors::RESTARTS,
        actors::CONNECTOR_RESTARTS,
        actors::AI_SKIPPED,
        actors::ERASURES_COMPLETED,
        actors::RETENTION_MESSAGES,
        index::INDEX_DOCUMENTS,
        index::INDEX_FAILURES,
        stream::WS_FRAMES_SENT,
        stream::WS_SLOW_DISCONNECTS,
        stream::WS_RESUMES,
        stream::WS_RESYNCS,
        stream::DELTAS_PRUNED,
    ] {
        counter!(name).increment(0);
    }
    for name in [
        engine::COMMIT_QUEUE_DEPTH,
        engine::DELTA_HEAD,
        engine::STORE_POISONED,
        actors::LIVE_CONVERSATIONS,
        actors::MAILBOX_MESSAGES,
        actors::MAILBOX_MAX,
        index::INDEX_LAG_OFFSETS,
        actors::AI_QUEUE,
        actors::AI_IN_FLIGHT,
        actors::ERASURES_RUNNING,
        stream::WS_CLIENTS,
        stream::DELTA_PRUNED_THROUGH,
    ] {
        gauge!(name).increment(0.0);
    }
    for name in [
        engine::COMMIT_GROUP_SIZE,
        engine::COMMIT_GROUP_SECONDS,
        engine::COMMIT_WAIT_SECONDS,
        engine::FSYNC_SECONDS,
        index::INDEX_COMMIT_SECONDS,
        stream::DELTA_PUBLISH_TO_SEND_SECONDS,
        stream::INGEST_TO_SOCKET_SECONDS,
        actors::AI_DECISION_SECONDS,
    ] {
        let _ = histogram!(name);
    }
    for reason in confab_engine::delta::NotificationReason::ALL {
        counter!(actors::NOTIFICATIONS_CREATED, "reason" => reason.as_str()).increment(0);
    }
    for channel in ["email", "push"] {
        for outcome in ["sent", "retry", "rejected", "expired"] {
            counter!(actors::NOTIFICATION_DELIVERIES, "channel" => channel, "outcome" => outcome)
                .increment(0);
        }
    }
    for outcome in ["ok", "failed"] {
        counter!(BACKUPS, "outcome" => outcome).increment(0);
    }
    for result in ["delivered", "failed"] {
        counter!(WEBHOOK_DELIVERIES, "result" => result).increment(0);
    }

    gauge!(BACKUP_LAST_SUCCESS).increment(0.0);
    for decision in ["answered", "escalated", "discarded"] {
        counter!(actors::AI_DECISIONS, "decision" => decision).increment(0);
    }
    for plan in [
        confab_engine::views::Plan::Empty,
        confab_engine::views::Plan::Walk,
        confab_engine::views::Plan::Members,
    ] {
        counter!(engine::LIST_PAGES, "plan" => plan.label()).increment(0);
    }
    for outcome in ["ok", "invalid", "timeout", "busy", "error"] {
        let _ = histogram!(index::SEARCH_SECONDS, "outcome" => outcome);
    }
    for kind in CHANNEL_KINDS {
        let channel = kind.as_str();
        counter!(actors::CONVERSATIONS_CREATED, "channel" => channel).increment(0);
        counter!(actors::WEBHOOK_ITEMS_REJECTED, "channel" => channel).increment(0);
        counter!(actors::WEBHOOK_ITEMS_IGNORED, "channel" => channel).increment(0);
        counter!(actors::REPAIRED_MESSAGES, "channel" => channel).increment(0);
        for outcome in ["ok", "failed"] {
            counter!(actors::REPAIR_RUNS, "channel" => channel, "outcome" => outcome).increment(0);
        }
        for direction in ["inbound", "outbound"] {
            counter!(actors::MESSAGES, "direction" => direction, "channel" => channel).increment(0);
        }
        for outcome in ["accepted", "retried", "failed"] {
            counter!(actors::CONNECTOR_SENDS, "channel" => channel, "outcome" => outcome)
                .increment(0);
        }
        gauge!(actors::CONNECTOR_CIRCUITS_OPEN, "channel" => channel).increment(0.0);
        counter!(actors::CONNECTOR_CIRCUIT_OPENED, "channel" => channel).increment(0);
        for outcome in ["stored", "bad_signature", "rejected", "failed"] {
            counter!(WEBHOOK_REQUESTS, "channel" => channel, "outcome" => outcome).increment(0);
        }
    }
    for (route, status) in [
        ("/healthz", "2xx"),
        ("/readyz", "2xx"),
        ("/readyz", "5xx"),
        ("/metrics", "2xx"),
    ] {
        counter!(HTTP_REQUESTS, "method" => "GET", "route" => route, "status" => status)
            .increment(0);
    }
}

/// Middleware: counts and times every request by its route template, never its path (ids
/// would make the label unbounded).
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str());
    let handles = route_metrics(route, request.method());
    let response = next.run(request).await;
    let status = (usize::from(response.status().as_u16() / 100))
        .saturating_sub(1)
        .min(STATUS_CLASSES.len() - 1);
    handles.requests[status]
        .get_or_init(|| {
            metrics::counter!(HTTP_REQUESTS, "method" => handles.method, "route" => handles.route.clone(), "status" => STATUS_CLASSES[status])
        })
        .increment(1);
    handles.seconds.record(started.elapsed().as_secs_f64());
    response
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The registered metric handles of one route and method: looked up by name once, then
/// reused (building a metric key per request hashed and cloned its labels every time).
struct RouteMetrics {
    method: &'static str,
    route: String,
    seconds: metrics::Histogram,
    requests: [OnceLock<metrics::Counter>; 5],
}

/// Method labels; anything not standard is `other` (a client may send any token).
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];

/// The handles of each method (by [`METHODS`] index) of one route, made on first use.
type PerMethod = [OnceLock<Arc<RouteMetrics>>; METHODS.len()];

fn route_metrics(route: &str, method: &axum::http::Method) -> Arc<RouteMetrics> {
    static CACHE: OnceLock<DashMap<String, Arc<PerMethod>>> = OnceLock::new();
    let cache = CACHE.get_or_init(DashMap::new);
    // Route templates are few and fixed (`unmatched` stands for every unknown path), so
    // the cache stays small; looked up by `&str`, nothing is allocated once it is warm.
    let per_method = match cache.get(route) {
        Some(found) => Arc::clone(&found),
        None => Arc::clone(cache.entry(route.to_owned()).or_default().value()),
    };
    let i = method_index(method);
    Arc::clone(per_method[i].get_or_init(|| {
        Arc::new(RouteMetrics {
            method: METHODS[i],
            route: route.to_owned(),
            seconds: metrics::histogram!(HTTP_REQUEST_SECONDS, "method" => METHODS[i], "route" => route.to_owned()),
            requests: Default::default(),
        })
    }))
}

/// The [`METHODS`] index of `method`.
fn method_index(method: &axum::http::Method) -> usize {
    use axum::http::Method;
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn route_handles_are_made_once_per_route_and_method() {
        let route = "/api/v1/test-only/route-handles";
        let first = route_metrics(route, &Method::GET);
        let again = route_metrics(route, &Method::GET);
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same route and method share handles"
        );
        let post = route_metrics(route, &Method::POST);
        assert!(
            !Arc::ptr_eq(&first, &post),
            "each method has its own handles"
        );
        assert_eq!((first.method, post.method), ("GET", "POST"));
        assert_eq!(first.route, route);
        let odd = route_metrics(
            route,
            &Method::from_bytes(b"PURGE").expect("a method token"),
        );
        assert_eq!(odd.method, "other");
        let other = route_metrics("/api/v1/test-only/another", &Method::GET);
        assert!(
            !Arc::ptr_eq(&first, &other),
            "each route has its own handles"
        );
    }
}
