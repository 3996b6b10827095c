//! Signed WhatsApp webhooks: payload construction in Meta's exact shape, the
//! `X-Hub-Signature-256` header, the open-loop pacing schedule, and the two sending
//! loops (`--rate N`: paced by intended send time; `--rate max`: closed loop with a
//! fixed number of requests in flight).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Semaphore, TryAcquireError};

use crate::replies::ReplyPlanner;
use crate::stats::{new_histogram, record, ErrorCounts, ShardedHistogram};
use crate::tracker::Tracker;

type HmacSha256 = Hmac<Sha256>;

/// wa_id of lead number `conversation`: digits only, distinct per conversation.
pub fn wa_id(conversation: usize) -> String {
    format!("1555{conversation:08}")
}

/// Profile name of lead number `conversation`.
pub fn lead_name(conversation: usize) -> String {
    format!("Lead {conversation}")
}

/// Inverse of [`wa_id`] and [`lead_name`]: which lead a phone number or a name belongs to.
pub fn conversation_of(phone_or_name: &str) -> Option<usize> {
    if let Some(number) = phone_or_name.strip_prefix("Lead ") {
        return number.parse().ok();
    }
    phone_or_name
        .trim_start_matches('+')
        .strip_prefix("1555")?
        .parse()
        .ok()
}

/// Text of inbound message `seq`: a marker unique to the run and the message.
pub fn marker_text(run_id: &str, seq: u64) -> String {
    format!("load {run_id} {seq}")
}

/// The sequence number carried by a [`marker_text`] of this run.
pub fn parse_marker(text: &str, run_id: &str) -> Option<u64> {
    text.strip_prefix("load ")?
        .strip_prefix(run_id)?
        .strip_prefix(' ')?
        .parse()
        .ok()
}

/// `sha256=<lowercase hex HMAC-SHA256(app secret, raw body)>`, computed from scratch;
/// the reference [`PayloadBuilder::sign`] is checked against.
#[cfg(test)]
fn signature_header(app_secret: &[u8], body: &[u8]) -> anyhow::Result<String> {
    let mut mac = HmacSha256::new_from_slice(app_secret).map_err(|e| anyhow!("hmac key: {e}"))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// Builds and signs webhook bodies. The HMAC is keyed once and cloned per message.
pub struct PayloadBuilder {
    phone_number_id: String,
    run_id: String,
    mac: HmacSha256,
}

impl PayloadBuilder {
    pub fn new(phone_number_id: &str, run_id: &str, app_secret: &str) -> anyhow::Result<Self> {
        let mac = HmacSha256::new_from_slice(app_secret.as_bytes())
            .map_err(|e| anyhow!("hmac key: {e}"))?;
        Ok(Self {
            phone_number_id: phone_number_id.to_owned(),
            run_id: run_id.to_owned(),
            mac,
        })
    }

    /// The raw webhook body for inbound message `seq` from lead `conversation`. Every
    /// interpolated value is digits or the hex run id, so no JSON escaping is needed.
    pub fn body(&self, seq: u64, conversation: usize, unix_secs: u64) -> String {
        let wa = wa_id(conversation);
        let name = lead_name(conversation);
        let text = marker_text(&self.run_id, seq);
        let pnid = &self.phone_number_id;
        let run = &self.run_id;
        format!(
            concat!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"WABA","changes":[{{"field":"messages","value":{{"#,
                r#""messaging_product":"whatsapp","metadata":{{"display_phone_number":"15551230000","phone_number_id":"{pnid}"}},"#,
                r#""contacts":[{{"profile":{{"name":"{name}"}},"wa_id":"{wa}"}}],"#,
                r#""messages":[{{"from":"{wa}","id":"wamid.load.{run}.{seq}","timestamp":"{ts}","type":"text","text":{{"body":"{text}"}}}}]"#,
                r#"}}}}]}}]}}"#
            ),
            pnid = pnid,
            name = name,
            wa = wa,
            run = run,
            seq = seq,
            ts = unix_secs,
            text = text,
        )
    }

    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// Number of messages a fixed rate sends in `secs` seconds.
pub fn planned_count(rate: f64, secs: f64) -> u64 {
    let count = (rate * secs).floor();
    if count.is_finite() && count > 0.0 {
        count as u64
    } else {
        0
    }
}

/// Intended send time of message `seq` relative to the start of the schedule.
pub fn intended_offset(seq: u64, rate: f64) -> Duration {
    Duration::try_from_secs_f64(seq as f64 / rate).unwrap_or(Duration::MAX)
}

/// Webhook counters and latency histograms of the measured phase.
pub struct SendStats {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// One past the highest sequence number handed to a request.
    pub issued: AtomicU64,
    /// Latest acknowledgement instant of a measured message, in tracker nanoseconds.
    pub last_ack_nanos: AtomicU64,
    /// From intended send time to response (open loop: includes waiting to be sent).
    pub latency: ShardedHistogram,
    /// From the actual send to the response.
    pub service: ShardedHistogram,
}

impl SendStats {
    pub fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            last_ack_nanos: AtomicU64::new(0),
            latency: ShardedHistogram::new(16),
            service: ShardedHistogram::new(16),
        }
    }
}

/// Short error kind for a failed HTTP request, prefixed with `prefix`.
pub fn classify_reqwest(prefix: &str, error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("{prefix}_{}", crate::stream::io_kind(io));
        }
        source = cause.source();
    }
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("{prefix}_{kind}")
}

pub struct WebhookSender {
    pub client: reqwest::Client,
    pub url: String,
    pub builder: PayloadBuilder,
    pub conversations: usize,
    pub tracker: Arc<Tracker>,
    pub stats: Arc<SendStats>,
    pub errors: Arc<ErrorCounts>,
    pub replies: Option<Arc<ReplyPlanner>>,
}

impl WebhookSender {
    fn conversation_of_seq(&self, seq: u64) -> usize {
        usize::try_from(seq % self.conversations.max(1) as u64).unwrap_or(0)
    }

    /// Sends message `seq` and records its outcome. `intended` is the scheduled send
    /// time (equal to now in closed-loop mode).
    pub async fn send_one(&self, seq: u64, intended: Instant, measured: bool) {
        let conversation = self.conversation_of_seq(seq);
        let unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let body = self.builder.body(seq, conversation, unix_secs);
        let signature = self.builder.sign(body.as_bytes());
        let sent_at = Instant::now();
        self.tracker.mark_sent(seq, sent_at, measured);
        if measured {
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        let result = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await;
        let outcome = match result {
            // Read the body so the keep-alive connection goes back to the pool.
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(_) if status.is_success() => Ok(()),
                    Ok(_) => Err(format!("webhook_http_{}", status.as_u16())),
                    Err(e) => Err(classify_reqwest("webhook", &e)),
                }
            }
            Err(e) => Err(classify_reqwest("webhook", &e)),
        };
        let done = Instant::now();
        match outcome {
            Ok(()) => {
                self.tracker.mark_acked(seq, done);
                if !measured {
                    return;
                }
                let nth = self.stats.acked.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .last_ack_nanos
                    .fetch_max(self.tracker.nanos_since_origin(done), Ordering::Relaxed);
                self.stats
                    .latency
                    .record(seq, done.saturating_duration_since(intended));
                self.stats
                    .service
                    .record(seq, done.saturating_duration_since(sent_at));
                if let Some(replies) = &self.replies {
                    replies.offer(nth, conversation);
                }
            }
            Err(kind) if measured => self.errors.add(&kind),
            Err(_) => {}
        }
    }
}

/// Parameters of [`run_paced`].
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Messages per second.
    pub rate: f64,
    /// Leading messages that are warmup, not measured.
    pub warmup_count: u64,
    /// Messages in the schedule, warmup included.
    pub total: u64,
    /// Intended send time of message 0.
    pub start: Instant,
    pub max_in_flight: usize,
    /// No message is started after this instant.
    pub deadline: Instant,
    /// How long to wait for in-flight requests after the last one started.
    pub drain_timeout: Duration,
}

/// What [`run_paced`] reports besides the shared counters.
pub struct PacedOutcome {
    /// Measured messages never sent because the in-flight bound held the pacer past
    /// the deadline.
    pub not_sent: u64,
    /// How late the pacer handed measured messages to the runtime (actual - intended).
    pub lag: Histogram<u64>,
}

/// Below this, the pacer dispatches instead of sleeping: a sleep costs about as much.
const PACER_SPIN_FLOOR: Duration = Duration::from_micros(20);

/// Open-loop sending at `rate`: message `seq` is due at `start + seq / rate`, the first
/// `warmup_count` are warmup. A dedicated OS thread paces with `std::thread::sleep`
/// (tens of microseconds of slack, where tokio timers round up to whole milliseconds)
/// and spawns each request on the runtime. At most `max_in_flight` requests are
/// outstanding; when the bound holds the pacer back, the delay counts in the latency,
/// which is measured from the intended time.
pub async fn run_paced(sender: Arc<WebhookSender>, pacing: Pacing) -> PacedOutcome {
    let permits = u32::try_from(pacing.max_in_flight).unwrap_or(u32::MAX);
    let in_flight = Arc::new(Semaphore::new(permits as usize));
    let runtime = tokio::runtime::Handle::current();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let pacer_in_flight = Arc::clone(&in_flight);
    let spawned = std::thread::Builder::new()
        .name("confab-load-pacer".to_owned())
        .spawn(move || {
            let outcome = pace(&sender, pacing, &pacer_in_flight, &runtime);
            let _ = done_tx.send(outcome);
        });
    let outcome = match spawned {
        Ok(_) => done_rx.await.ok(),
        Err(e) => {
            eprintln!("confab-load: cannot start the pacer thread: {e}");
            None
        }
    };
    // Every request is bounded by the client timeout; wait for the stragglers.
    let _ = tokio::time::timeout(pacing.drain_timeout, in_flight.acquire_many(permits)).await;
    outcome.unwrap_or_else(|| PacedOutcome {
        not_sent: pacing.total.saturating_sub(pacing.warmup_count),
        lag: new_histogram(),
    })
}

/// The pacer thread's loop; see [`run_paced`].
fn pace(
    sender: &Arc<WebhookSender>,
    pacing: Pacing,
    in_flight: &Arc<Semaphore>,
    runtime: &tokio::runtime::Handle,
) -> PacedOutcome {
    let Pacing {
        rate,
        warmup_count,
        total,
        start,
        deadline,
        ..
    } = pacing;
    let _context = runtime.enter();
    let mut lag = new_histogram();
    for seq in 0..total {
        let intended = start + intended_offset(seq, rate);
        let now = Instant::now();
        if intended > now + PACER_SPIN_FLOOR {
            std::thread::sleep(intended - now);
        }
        let permit = match Arc::clone(in_flight).try_acquire_owned() {
            Ok(permit) => Ok(permit),
            // Timers must be created inside the runtime, hence the async block.
            Err(TryAcquireError::NoPermits) => runtime
                .block_on(async {
                    tokio::time::timeout_at(deadline.into(), Arc::clone(in_flight).acquire_owned())
                        .await
                })
                .map_err(|_| ())
                .and_then(|acquired| acquired.map_err(|_| ())),
            Err(TryAcquireError::Closed) => Err(()),
        };
        let Ok(permit) = permit else {
            return PacedOutcome {
                not_sent: total - seq.max(warmup_count).min(total),
                lag,
            };
        };
        let measured = seq >= warmup_count;
        if measured {
            record(&mut lag, Instant::now().saturating_duration_since(intended));
        }
        sender.stats.issued.fetch_max(seq + 1, Ordering::Relaxed);
        let sender = Arc::clone(sender);
        runtime.spawn(async move {
            sender.send_one(seq, intended, measured).await;
            drop(permit);
        });
    }
    PacedOutcome { not_sent: 0, lag }
}

/// Closed-loop sending: `concurrency` workers each send the next message as soon as the
/// previous one is answered, until `end`. Messages started before `measure_start` are
/// warmup.
pub async fn run_max(
    sender: Arc<WebhookSender>,
    concurrency: usize,
    measure_start: Instant,
    end: Instant,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let sender = Arc::clone(&sender);
        let next = Arc::clone(&next);
        workers.spawn(async move {
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let seq = next.fetch_add(1, Ordering::Relaxed);
                sender.stats.issued.fetch_max(seq + 1, Ordering::Relaxed);
                sender.send_one(seq, now, now >= measure_start).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231-style well-known vector.
        let header = signature_header(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            header.ok().as_deref(),
            Some("sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
        );
        let builder = PayloadBuilder::new("123", "run", "key");
        let builder = match builder {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            builder.sign(b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn body_has_meta_shape_and_a_marker() {
        let builder = match PayloadBuilder::new("109876543210", "ab12cd", "secret") {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        let body = builder.body(42, 17, 1_767_225_600);
        let json: serde_json::Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => panic!("{e}: {body}"),
        };
        assert_eq!(json["object"], "whatsapp_business_account");
        let change = &json["entry"][0]["changes"][0];
        assert_eq!(change["field"], "messages");
        let value = &change["value"];
        assert_eq!(value["messaging_product"], "whatsapp");
        assert_eq!(value["metadata"]["phone_number_id"], "109876543210");
        assert_eq!(value["metadata"]["display_phone_number"], "15551230000");
        assert_eq!(value["contacts"][0]["profile"]["name"], "Lead 17");
        assert_eq!(value["contacts"][0]["wa_id"], "155500000017");
        let message = &value["messages"][0];
        assert_eq!(message["from"], "155500000017");
        assert_eq!(message["id"], "wamid.load.ab12cd.42");
        assert_eq!(message["timestamp"], "1767225600");
        assert_eq!(message["type"], "text");
        let text = message["text"]["body"].as_str().unwrap_or_default();
        assert_eq!(parse_marker(text, "ab12cd"), Some(42));
        assert_eq!(parse_marker(text, "other"), None);
        assert_eq!(conversation_of("155500000017"), Some(17));
        assert_eq!(conversation_of("+155500000017"), Some(17));
        assert_eq!(conversation_of("Lead 17"), Some(17));
        assert_eq!(conversation_of("Ana Lima"), None);
    }

    #[test]
    fn pacing_schedule_is_evenly_spaced() {
        assert_eq!(planned_count(1000.0, 2.0), 2000);
        assert_eq!(planned_count(2.5, 3.0), 7);
        assert_eq!(planned_count(0.1, 1.0), 0);
        assert_eq!(intended_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(intended_offset(2500, 1000.0), Duration::from_millis(2500));
        assert_eq!(intended_offset(3, 4.0), Duration::from_millis(750));
        // Monotonic and never more than one interval apart.
        let rate = 25_000.0;
        let step = Duration::from_secs_f64(1.0 / rate);
        for seq in 0..10_000u64 {
            let a = intended_offset(seq, rate);
            let b = intended_offset(seq + 1, rate);
            assert!(b > a);
            assert!(b - a <= step + Duration::from_nanos(2));
        }
    }
}
