//! Latency histograms (HdrHistogram, microsecond resolution), error counters by kind,
//! and the run reports with their human-readable and JSON renderings.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest recordable latency: one minute, in microseconds. Larger values saturate.
const HIST_MAX_MICROS: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(micros.max(1));
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking recorder cannot leave a histogram or a counter map inconsistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A histogram split over a few mutexes so that concurrent recorders rarely contend.
pub struct ShardedHistogram {
    shards: Box<[Mutex<Histogram<u64>>]>,
}

impl ShardedHistogram {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    pub fn record(&self, key: u64, latency: Duration) {
        let index = usize::try_from(key).unwrap_or(0) % self.shards.len();
        if let Some(shard) = self.shards.get(index) {
            record(&mut lock(shard), latency);
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in self.shards.iter() {
            if let Err(e) = all.add(&*lock(shard)) {
                eprintln!("confab-load: could not merge a histogram shard: {e:?}");
            }
        }
        all
    }
}

/// Error counts keyed by a short snake_case kind such as `webhook_http_503`.
#[derive(Default)]
pub struct ErrorCounts {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl ErrorCounts {
    pub fn add(&self, kind: &str) {
        self.add_n(kind, 1);
    }

    pub fn add_n(&self, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut counts = lock(&self.counts);
        match counts.get_mut(kind) {
            Some(count) => *count += n,
            None => {
                counts.insert(kind.to_owned(), n);
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.counts).clone()
    }

    pub fn total(&self) -> u64 {
        lock(&self.counts).values().sum()
    }
}

/// Percentiles of one histogram in milliseconds; `None` when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

fn micros_to_ms(micros: f64) -> f64 {
    (micros).round() / 1000.0
}

impl Percentiles {
    pub fn of(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        let at = |q: f64| Some(micros_to_ms(hist.value_at_quantile(q) as f64));
        Self {
            count: hist.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: Some(micros_to_ms(hist.max() as f64)),
            mean_ms: Some(micros_to_ms(hist.mean())),
        }
    }

    fn human(&self) -> String {
        if self.count == 0 {
            return "no samples".to_owned();
        }
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}  mean {}  (n={})",
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.p999_ms),
            ms(self.max_ms),
            ms(self.mean_ms),
            self.count
        )
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "unknown".to_owned(),
        |b| format!("{:.1} MiB ({b} bytes)", b as f64 / (1024.0 * 1024.0)),
    )
}

fn kinds(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything a message-load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub run_id: String,
    /// `None` for `--rate max`.
    pub target_rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub elapsed_s: f64,
    pub conversations: usize,
    pub subscribers: usize,
    pub subscribers_connected: usize,
    pub sent: u64,
    pub acked: u64,
    /// Planned messages that were never sent because the in-flight bound held the
    /// sender past the end of the run.
    pub not_sent: u64,
    pub errors: BTreeMap<String, u64>,
    pub rate: f64,
    pub webhook: Percentiles,
    pub webhook_service: Percentiles,
    /// How late the open-loop pacer dispatched messages (generator health).
    pub pacer_lag: Percentiles,
    pub delta: Percentiles,
    pub delta_all: Percentiles,
    pub delta_after_ack: Percentiles,
    pub deltas_received: u64,
    pub deltas_expected: u64,
    pub deltas_duplicate: u64,
    pub messages_under_delivered: u64,
    pub messages_never_delivered: u64,
    pub delta_kinds: BTreeMap<String, u64>,
    pub resyncs: u64,
    pub resumes: u64,
    pub replies_planned: u64,
    pub replies_sent: u64,
    pub replies_accepted: u64,
    pub replies_seen_on_stream: u64,
    pub reply: Percentiles,
    pub graph_api_requests: u64,
    pub server_pid: Option<u32>,
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_bytes: Option<u64>,
    pub client_rss_bytes: Option<u64>,
    /// Server CPU time (user + system) from the end of the warmup until every delta came.
    pub server_cpu_s: Option<f64>,
    /// The load generator's own CPU time over the same span.
    pub client_cpu_s: Option<f64>,
}

impl LoadReport {
    /// Server CPU time per acknowledged message of the measured phase, in microseconds.
    pub fn server_cpu_us_per_message(&self) -> Option<f64> {
        (self.acked > 0).then_some(self.server_cpu_s? * 1e6 / self.acked as f64)
    }
}

#[derive(Serialize)]
struct LoadJson<'a> {
    mode: &'static str,
    run_id: &'a str,
    target_rate: Option<f64>,
    concurrency: Option<usize>,
    duration_s: f64,
    warmup_s: f64,
    elapsed_s: f64,
    conversations: usize,
    subscribers: usize,
    subscribers_connected: usize,
    sent: u64,
    acked: u64,
    not_sent: u64,
    errors: u64,
    errors_by_kind: &'a BTreeMap<String, u64>,
    rate: f64,
    webhook_p50_ms: Option<f64>,
    webhook_p99_ms: Option<f64>,
    webhook_p999_ms: Option<f64>,
    webhook_max_ms: Option<f64>,
    webhook_service_p50_ms: Option<f64>,
    webhook_service_p99_ms: Option<f64>,
    webhook_service_p999_ms: Option<f64>,
    pacer_lag_p50_ms: Option<f64>,
    pacer_lag_p99_ms: Option<f64>,
    pacer_lag_max_ms: Option<f64>,
    delta_p50_ms: Option<f64>,
    delta_p99_ms: Option<f64>,
    delta_p999_ms: Option<f64>,
    delta_max_ms: Option<f64>,
    delta_samples: u64,
    delta_all_p50_ms: Option<f64>,
    delta_all_p99_ms: Option<f64>,
    delta_all_p999_ms: Option<f64>,
    delta_after_ack_p50_ms: Option<f64>,
    delta_after_ack_p99_ms: Option<f64>,
    delta_after_ack_p999_ms: Option<f64>,
    deltas_received: u64,
    deltas_expected: u64,
    deltas_duplicate: u64,
    messages_under_delivered: u64,
    messages_never_delivered: u64,
    delta_kinds: &'a BTreeMap<String, u64>,
    resyncs: u64,
    resumes: u64,
    replies_planned: u64,
    replies_sent: u64,
    replies_accepted: u64,
    replies_seen_on_stream: u64,
    reply_p50_ms: Option<f64>,
    reply_p99_ms: Option<f64>,
    graph_api_requests: u64,
    server_pid: Option<u32>,
    server_rss_before_bytes: Option<u64>,
    server_rss_bytes: Option<u64>,
    client_rss_bytes: Option<u64>,
    server_cpu_s: Option<f64>,
    server_cpu_us_per_msg: Option<f64>,
    client_cpu_s: Option<f64>,
}

impl LoadReport {
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&LoadJson {
            mode: "load",
            run_id: &self.run_id,
            target_rate: self.target_rate,
            concurrency: self.concurrency,
            duration_s: self.duration_s,
            warmup_s: self.warmup_s,
            elapsed_s: round3(self.elapsed_s),
            conversations: self.conversations,
            subscribers: self.subscribers,
            subscribers_connected: self.subscribers_connected,
            sent: self.sent,
            acked: self.acked,
            not_sent: self.not_sent,
            errors: self.error_total(),
            errors_by_kind: &self.errors,
            rate: round3(self.rate),
            webhook_p50_ms: self.webhook.p50_ms,
            webhook_p99_ms: self.webhook.p99_ms,
            webhook_p999_ms: self.webhook.p999_ms,
            webhook_max_ms: self.webhook.max_ms,
            webhook_service_p50_ms: self.webhook_service.p50_ms,
            webhook_service_p99_ms: self.webhook_service.p99_ms,
            webhook_service_p999_ms: self.webhook_service.p999_ms,
            pacer_lag_p50_ms: self.pacer_lag.p50_ms,
            pacer_lag_p99_ms: self.pacer_lag.p99_ms,
            pacer_lag_max_ms: self.pacer_lag.max_ms,
            delta_p50_ms: self.delta.p50_ms,
            delta_p99_ms: self.delta.p99_ms,
            delta_p999_ms: self.delta.p999_ms,
            delta_max_ms: self.delta.max_ms,
            delta_samples: self.delta.count,
            delta_all_p50_ms: self.delta_all.p50_ms,
            delta_all_p99_ms: self.delta_all.p99_ms,
            delta_all_p999_ms: self.delta_all.p999_ms,
            delta_after_ack_p50_ms: self.delta_after_ack.p50_ms,
            delta_after_ack_p99_ms: self.delta_after_ack.p99_ms,
            delta_after_ack_p999_ms: self.delta_after_ack.p999_ms,
            deltas_received: self.deltas_received,
            deltas_expected: self.deltas_expected,
            deltas_duplicate: self.deltas_duplicate,
            messages_under_delivered: self.messages_under_delivered,
            messages_never_delivered: self.messages_never_delivered,
            delta_kinds: &self.delta_kinds,
            resyncs: self.resyncs,
            resumes: self.resumes,
            replies_planned: self.replies_planned,
            replies_sent: self.replies_sent,
            replies_accepted: self.replies_accepted,
            replies_seen_on_stream: self.replies_seen_on_stream,
            reply_p50_ms: self.reply.p50_ms,
            reply_p99_ms: self.reply.p99_ms,
            graph_api_requests: self.graph_api_requests,
            server_pid: self.server_pid,
            server_rss_before_bytes: self.server_rss_before_bytes,
            server_rss_bytes: self.server_rss_bytes,
            client_rss_bytes: self.client_rss_bytes,
            server_cpu_s: self.server_cpu_s,
            server_cpu_us_per_msg: self.server_cpu_us_per_message(),
            client_cpu_s: self.client_cpu_s,
        })
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let target = match (self.target_rate, self.concurrency) {
            (Some(rate), _) => format!("{rate} msg/s open loop"),
            (None, Some(c)) => format!("max rate, {c} in flight"),
            (None, None) => "max rate".to_owned(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "confab-load run {}: {target} for {} s (warmup {} s), {} conversations, \
             {}/{} subscribers connected",
            self.run_id,
            self.duration_s,
            self.warmup_s,
            self.conversations,
            self.subscribers_connected,
            self.subscribers
        );
        let _ = writeln!(
            out,
            "webhooks      sent {}  acked {}  errors {}  not sent {}  achieved {:.1} msg/s over {:.2} s",
            self.sent,
            self.acked,
            self.error_total(),
            self.not_sent,
            self.rate,
            self.elapsed_s
        );
        let _ = writeln!(out, "errors        {}", kinds(&self.errors));
        let _ = writeln!(
            out,
            "webhook ms    {}   [from intended send time]",
            self.webhook.human()
        );
        let _ = writeln!(
            out,
            "  service ms  {}   [from actual send]",
            self.webhook_service.human()
        );
        if self.pacer_lag.count > 0 {
            let _ = writeln!(
                out,
                "  pacer lag   {}   [intended -> dispatched; generator health]",
                self.pacer_lag.human()
            );
        }
        let _ = writeln!(
            out,
            "delta ms      {}   [first subscriber, send -> delta]",
            self.delta.human()
        );
        let _ = writeln!(out, "  all subs ms {}", self.delta_all.human());
        let _ = writeln!(
            out,
            "  after ack   {}   [first subscriber, ack -> delta, 0 if before ack]",
            self.delta_after_ack.human()
        );
        let _ = writeln!(
            out,
            "deltas        received {} / expected {}  duplicates {}  messages short of a subscriber {}  never seen {}  resyncs {}  resumes {}",
            self.deltas_received,
            self.deltas_expected,
            self.deltas_duplicate,
            self.messages_under_delivered,
            self.messages_never_delivered,
            self.resyncs,
            self.resumes
        );
        let _ = writeln!(out, "delta kinds   {}", kinds(&self.delta_kinds));
        if self.replies_planned > 0 || self.replies_sent > 0 {
            let _ = writeln!(
                out,
                "replies       planned {}  sent {}  accepted {}  seen on stream {}  {}",
                self.replies_planned,
                self.replies_sent,
                self.replies_accepted,
                self.replies_seen_on_stream,
                self.reply.human()
            );
        }
        let _ = writeln!(
            out,
            "graph stub    {} outbound requests received",
            self.graph_api_requests
        );
        let _ = writeln!(
            out,
            "server        pid {}  rss {}  (before {})",
            self.server_pid
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            mib(self.server_rss_bytes),
            mib(self.server_rss_before_bytes)
        );
        let _ = writeln!(
            out,
            "server cpu    {} s  = {} µs per message (user + system, warmup excluded)",
            self.server_cpu_s
                .map_or_else(|| "unknown".to_owned(), |s| format!("{s:.2}")),
            self.server_cpu_us_per_message()
                .map_or_else(|| "unknown".to_owned(), |us| format!("{us:.1}"))
        );
        let _ = write!(
            out,
            "client        rss {}  cpu {} s",
            mib(self.client_rss_bytes),
            self.client_cpu_s
                .map_or_else(|| "unknown".to_owned(), |s| format!("{s:.2}"))
        );
        out
    }
}

/// What a `--stream-only` run measured.
#[derive(Debug, Clone, Default)]
pub struct StreamOnlyReport {
    pub run_id: String,
    pub requested: usize,
    pub connections: usize,
    pub errors: BTreeMap<String, u64>,
    pub connect_s: f64,
    pub server_pid: Option<u32>,
    pub rss_before_bytes: Option<u64>,
    pub rss_after_bytes: Option<u64>,
    pub client_rss_bytes: Option<u64>,
}

#[derive(Serialize)]
struct StreamOnlyJson<'a> {
    mode: &'static str,
    run_id: &'a str,
    requested: usize,
    connections: usize,
    errors: u64,
    errors_by_kind: &'a BTreeMap<String, u64>,
    connect_s: f64,
    server_pid: Option<u32>,
    rss_before_bytes: Option<u64>,
    rss_after_bytes: Option<u64>,
    bytes_per_connection: Option<i64>,
    server_rss_bytes: Option<u64>,
    client_rss_bytes: Option<u64>,
}

impl StreamOnlyReport {
    /// `(after - before) / connections`; negative if the server shrank meanwhile.
    pub fn bytes_per_connection(&self) -> Option<i64> {
        let before = i64::try_from(self.rss_before_bytes?).ok()?;
        let after = i64::try_from(self.rss_after_bytes?).ok()?;
        let connections = i64::try_from(self.connections).ok()?;
        (connections > 0).then(|| (after - before) / connections)
    }

    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&StreamOnlyJson {
            mode: "stream_only",
            run_id: &self.run_id,
            requested: self.requested,
            connections: self.connections,
            errors: self.errors.values().sum(),
            errors_by_kind: &self.errors,
            connect_s: round3(self.connect_s),
            server_pid: self.server_pid,
            rss_before_bytes: self.rss_before_bytes,
            rss_after_bytes: self.rss_after_bytes,
            bytes_per_connection: self.bytes_per_connection(),
            server_rss_bytes: self.rss_after_bytes,
            client_rss_bytes: self.client_rss_bytes,
        })
    }

    pub fn human(&self) -> String {
        let per_connection = self.bytes_per_connection().map_or_else(
            || "unknown".to_owned(),
            |b| {
                let note = if b < 0 {
                    "; the server's RSS shrank meanwhile, so this reading says nothing"
                } else {
                    ""
                };
                format!("{b} bytes ({:.2} KiB){note}", b as f64 / 1024.0)
            },
        );
        format!(
            "confab-load run {}: stream only\n\
             connections   {} of {} subscribed in {:.2} s\n\
             errors        {}\n\
             server        pid {}  rss before {}  after {}\n\
             per conn      {per_connection}\n\
             client        rss {}",
            self.run_id,
            self.connections,
            self.requested,
            self.connect_s,
            kinds(&self.errors),
            self.server_pid
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            mib(self.rss_before_bytes),
            mib(self.rss_after_bytes),
            mib(self.client_rss_bytes),
        )
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut hist = new_histogram();
        for micros in 1..=1000u64 {
            record(&mut hist, Duration::from_micros(micros * 10));
        }
        let p = Percentiles::of(&hist);
        assert_eq!(p.count, 1000);
        let p50 = p.p50_ms.unwrap_or_default();
        let p99 = p.p99_ms.unwrap_or_default();
        let p999 = p.p999_ms.unwrap_or_default();
        assert!((p50 - 5.0).abs() < 0.01, "p50 {p50}");
        assert!((p99 - 9.9).abs() < 0.02, "p99 {p99}");
        assert!((p999 - 9.99).abs() < 0.02, "p999 {p999}");
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn sharded_histogram_merges_all_shards() {
        let sharded = ShardedHistogram::new(4);
        for key in 0..100u64 {
            sharded.record(key, Duration::from_millis(1));
        }
        assert_eq!(sharded.merged().len(), 100);
    }

    #[test]
    fn load_json_has_the_contract_keys() {
        let mut hist = new_histogram();
        record(&mut hist, Duration::from_micros(1234));
        let mut errors = BTreeMap::new();
        errors.insert("webhook_http_503".to_owned(), 2);
        errors.insert("webhook_timeout".to_owned(), 1);
        let report = LoadReport {
            run_id: "abc".to_owned(),
            sent: 10,
            acked: 7,
            errors,
            rate: 7.0,
            webhook: Percentiles::of(&hist),
            deltas_received: 7,
            server_rss_bytes: Some(4096),
            server_cpu_s: Some(0.0014),
            ..LoadReport::default()
        };
        let json: serde_json::Value = match report.to_json() {
            Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
            Err(e) => panic!("{e}"),
        };
        for key in [
            "sent",
            "acked",
            "errors",
            "rate",
            "webhook_p50_ms",
            "webhook_p99_ms",
            "webhook_p999_ms",
            "delta_p50_ms",
            "delta_p99_ms",
            "delta_p999_ms",
            "deltas_received",
            "server_rss_bytes",
        ] {
            assert!(json.get(key).is_some(), "missing key {key}");
        }
        assert_eq!(json["errors"], 3);
        assert_eq!(json["errors_by_kind"]["webhook_http_503"], 2);
        assert_eq!(json["webhook_p50_ms"], 1.234);
        assert!(json["delta_p99_ms"].is_null());
        assert_eq!(json["server_rss_bytes"], 4096);
        assert!((json["server_cpu_us_per_msg"].as_f64().unwrap_or_default() - 200.0).abs() < 1e-6);
        assert!(report.human().contains("200.0 µs per message"));
        assert!(report.human().contains("webhook_http_503=2"));
    }

    #[test]
    fn stream_only_json_reports_bytes_per_connection() {
        let report = StreamOnlyReport {
            requested: 10,
            connections: 10,
            rss_before_bytes: Some(1_000_000),
            rss_after_bytes: Some(1_100_000),
            ..StreamOnlyReport::default()
        };
        let json: serde_json::Value = match report.to_json() {
            Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(json["connections"], 10);
        assert_eq!(json["rss_before_bytes"], 1_000_000);
        assert_eq!(json["rss_after_bytes"], 1_100_000);
        assert_eq!(json["bytes_per_connection"], 10_000);
        let unknown = StreamOnlyReport::default();
        assert_eq!(unknown.bytes_per_connection(), None);
    }
}
