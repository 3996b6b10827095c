//! WebSocket subscribers of `GET /api/v1/stream`: connect with the agent token, send
//! `{"type":"subscribe","since":null}`, wait for `subscribed`, then match every
//! `message_created` delta carrying this run's marker to the instant its webhook was
//! sent. A subscriber the server closes as too slow (4008) resumes the way the protocol
//! says: it reconnects with `since` set to the last offset it read, and nothing is lost.
//! Also used, idle, by `--stream-only`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::replies::{is_reply_text, Directory};
use crate::stats::{new_histogram, record, ErrorCounts, ShardedHistogram};
use crate::tracker::Tracker;
use crate::webhook::parse_marker;

/// Connections per loopback source address when spreading is automatic; well inside the
/// default ephemeral port range (32768-60999).
const CONNECTIONS_PER_SOURCE_IP: usize = 20_000;
/// Close code of a subscriber the server dropped as too slow: resume from the last offset.
const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Resumes in a row without a new delta in between after which a subscriber gives up.
const MAX_RESUMES_WITHOUT_PROGRESS: u32 = 3;

fn subscribe_frame(since: Option<u64>) -> String {
    match since {
        Some(offset) => format!(r#"{{"type":"subscribe","since":{offset}}}"#),
        None => r#"{"type":"subscribe","since":null}"#.to_owned(),
    }
}

/// Short error kind for an I/O error, naming the causes a load run can hit.
pub fn io_kind(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        // EMFILE / ENFILE: raise `ulimit -n`.
        Some(24) => return "emfile",
        Some(23) => return "enfile",
        // EADDRNOTAVAIL: ephemeral ports exhausted.
        Some(99) => return "addr_not_available",
        _ => {}
    }
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection_refused",
        io::ErrorKind::ConnectionReset => "connection_reset",
        io::ErrorKind::ConnectionAborted => "connection_aborted",
        io::ErrorKind::BrokenPipe => "broken_pipe",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::UnexpectedEof => "unexpected_eof",
        _ => "io",
    }
}

fn ws_error_kind(error: &WsError) -> String {
    match error {
        WsError::Io(io) => format!("stream_{}", io_kind(io)),
        WsError::Http(response) => format!("stream_http_{}", response.status().as_u16()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "stream_closed".to_owned(),
        WsError::Protocol(_) => "stream_protocol".to_owned(),
        WsError::Capacity(_) => "stream_frame_too_large".to_owned(),
        _ => "stream_handshake".to_owned(),
    }
}

/// The subset of a stream frame the load tool reads; everything else is skipped.
#[derive(Debug, Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind_of_frame: Cow<'a, str>,
    #[serde(default)]
    offset: Option<u64>,
    /// `subscribed`: the offset live deltas follow.
    #[serde(default)]
    head: Option<u64>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    conversation_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<MessageFrame<'a>>,
}

#[derive(Debug, Deserialize)]
struct MessageFrame<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    conversation_id: Option<Cow<'a, str>>,
}

/// Where and how to connect.
pub struct StreamTarget {
    url: String,
    addr: SocketAddr,
    token: String,
    /// Loopback source addresses to spread connections over (0 = let the kernel pick).
    source_ips: usize,
    per_source_ip: usize,
    read_buffer: usize,
    timeout: Duration,
}

impl StreamTarget {
    /// `base_url` is the server's http:// URL; `connections` how many will be opened.
    pub async fn new(
        base_url: &str,
        token: &str,
        connections: usize,
        source_ips: Option<u8>,
        read_buffer: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(base_url).with_context(|| format!("--url {base_url}"))?;
        let rest = match parsed.scheme() {
            "http" => base_url.trim_start_matches("http"),
            "https" => bail!(
                "--url {base_url}: the WebSocket stream is only supported over plain http (ws://)"
            ),
            other => bail!("--url {base_url}: unsupported scheme {other}"),
        };
        let url = format!("ws{}/api/v1/stream", rest.trim_end_matches('/'));
        let host = parsed
            .host_str()
            .context("--url has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .with_context(|| format!("{host} has no address"))?;
        let spread = match addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => source_ips.map_or_else(
                || connections.div_ceil(CONNECTIONS_PER_SOURCE_IP),
                usize::from,
            ),
            _ => 0,
        };
        let source_ips = if spread > 1 { spread.min(254) } else { 0 };
        Ok(Self {
            url,
            addr,
            token: token.to_owned(),
            source_ips,
            per_source_ip: connections.div_ceil(source_ips.max(1)).max(1),
            read_buffer,
            timeout,
        })
    }

    pub fn source_ips(&self) -> usize {
        self.source_ips
    }

    fn source_for(&self, index: usize) -> Option<SocketAddr> {
        if self.source_ips == 0 {
            return None;
        }
        let slot = (index / self.per_source_ip) % self.source_ips;
        let last = u8::try_from(slot + 1).unwrap_or(1);
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))
    }

    /// Connects, upgrades, subscribes (live, or resuming after `since`) and waits for
    /// `subscribed`; returns the socket and the head it reported.
    async fn open(
        &self,
        index: usize,
        since: Option<u64>,
    ) -> Result<(WebSocketStream<TcpStream>, u64), String> {
        let io_err = |e: io::Error| format!("stream_{}", io_kind(&e));
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io_err)?;
        if let Some(source) = self.source_for(index) {
            socket.bind(source).map_err(io_err)?;
        }
        let stream = socket.connect(self.addr).await.map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|_| "stream_bad_url".to_owned())?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .map_err(|_| "stream_bad_token".to_owned())?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        let config = WebSocketConfig::default().read_buffer_size(self.read_buffer);
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| ws_error_kind(&e))?;
        ws.send(Message::text(subscribe_frame(since)))
            .await
            .map_err(|e| ws_error_kind(&e))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) {
                        if frame.kind_of_frame == "subscribed" {
                            return Ok((ws, frame.head.unwrap_or(0)));
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err("stream_closed_before_subscribed".to_owned())
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_error_kind(&e)),
            }
        }
    }
}

/// State shared by all subscribers of a run.
pub struct StreamShared {
    pub run_id: String,
    pub tracker: Arc<Tracker>,
    pub directory: Option<Arc<Directory>>,
    pub conversations: usize,
    pub errors: Arc<ErrorCounts>,
    /// Deltas of measured messages received, over all subscribers.
    pub matched: AtomicU64,
    pub replies_seen: AtomicU64,
    pub resyncs: AtomicU64,
    /// Reconnections with `since` after the server closed a subscriber as too slow.
    pub resumes: AtomicU64,
    /// Send -> delta on the primary subscriber (the first one to subscribe).
    pub delta_primary: Mutex<Histogram<u64>>,
    /// Acknowledgement -> delta on the primary subscriber; zero when the delta came first.
    pub delta_after_ack: Mutex<Histogram<u64>>,
    /// Send -> delta on every subscriber.
    pub delta_all: ShardedHistogram,
    primary: AtomicUsize,
    /// Set once the run stopped waiting for subscribers; later ones disconnect.
    pub connect_window_closed: AtomicBool,
    connect_slots: Semaphore,
}

impl StreamShared {
    pub fn new(
        run_id: &str,
        tracker: Arc<Tracker>,
        directory: Option<Arc<Directory>>,
        conversations: usize,
        errors: Arc<ErrorCounts>,
        connect_parallelism: usize,
    ) -> Self {
        Self {
            run_id: run_id.to_owned(),
            tracker,
            directory,
            conversations: conversations.max(1),
            errors,
            matched: AtomicU64::new(0),
            replies_seen: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            delta_primary: Mutex::new(new_histogram()),
            delta_after_ack: Mutex::new(new_histogram()),
            delta_all: ShardedHistogram::new(16),
            primary: AtomicUsize::new(usize::MAX),
            connect_window_closed: AtomicBool::new(false),
            connect_slots: Semaphore::new(connect_parallelism.max(1)),
        }
    }
}

fn record_locked(hist: &Mutex<Histogram<u64>>, latency: Duration) {
    let mut hist = hist
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    record(&mut hist, latency);
}

/// One subscriber's view while reading frames.
struct Reader<'a> {
    index: usize,
    shared: &'a StreamShared,
    last_offset: Option<u64>,
    kinds: BTreeMap<String, u64>,
}

impl Reader<'_> {
    fn on_text(&mut self, text: &str, received: Instant) {
        let shared = self.shared;
        let frame: Frame<'_> = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(_) => {
                shared.errors.add("stream_bad_frame");
                return;
            }
        };
        match frame.kind_of_frame.as_ref() {
            "delta" => {}
            "resync" => {
                shared.resyncs.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => return,
        }
        if let Some(offset) = frame.offset {
            if self.last_offset.is_some_and(|last| offset <= last) {
                shared.errors.add("stream_offset_not_increasing");
            }
            self.last_offset = Some(offset);
        }
        let kind = frame.kind.as_deref().unwrap_or("unknown");
        match self.kinds.get_mut(kind) {
            Some(count) => *count += 1,
            None => {
                self.kinds.insert(kind.to_owned(), 1);
            }
        }
        if kind != "message_created" {
            return;
        }
        let Some(message) = &frame.message else {
            return;
        };
        let Some(text) = message.text.as_deref() else {
            return;
        };
        let is_primary = shared.primary.load(Ordering::Relaxed) == self.index;
        let Some(seq) = parse_marker(text, &shared.run_id) else {
            if is_primary && is_reply_text(text, &shared.run_id) {
                shared.replies_seen.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        if let Some(directory) = &shared.directory {
            let conversation_id = frame
                .conversation_id
                .as_deref()
                .or(message.conversation_id.as_deref());
            if let Some(id) = conversation_id {
                let lead = usize::try_from(seq % shared.conversations as u64).unwrap_or(0);
                directory.learn(lead, id);
            }
        }
        let Some((sent, measured)) = shared.tracker.sent(seq) else {
            return;
        };
        if !measured {
            return;
        }
        shared.tracker.add_delivery(seq);
        shared.matched.fetch_add(1, Ordering::Relaxed);
        let latency = received.saturating_duration_since(sent);
        shared.delta_all.record(self.index as u64, latency);
        if is_primary {
            record_locked(&shared.delta_primary, latency);
            let after_ack = shared.tracker.acked(seq).map_or(Duration::ZERO, |acked| {
                received.saturating_duration_since(acked)
            });
            record_locked(&shared.delta_after_ack, after_ack);
        }
    }
}

/// One subscriber: reports `true` on `ready` once subscribed (or `false` if it could not
/// subscribe), then reads until `shutdown` flips. Returns its delta counts by kind.
pub async fn run_subscriber(
    index: usize,
    target: Arc<StreamTarget>,
    shared: Arc<StreamShared>,
    ready: mpsc::UnboundedSender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> BTreeMap<String, u64> {
    let opened = {
        let _slot = shared.connect_slots.acquire().await;
        tokio::time::timeout(target.timeout, target.open(index, None)).await
    };
    let (mut ws, head) = match opened {
        Ok(Ok(opened)) if !shared.connect_window_closed.load(Ordering::Acquire) => opened,
        Ok(Ok((mut ws, _))) => {
            shared.errors.add("stream_subscribed_too_late");
            let _ = ready.send(false);
            let _ = ws.close(None).await;
            return BTreeMap::new();
        }
        Ok(Err(kind)) => {
            shared.errors.add(&kind);
            let _ = ready.send(false);
            return BTreeMap::new();
        }
        Err(_) => {
            shared.errors.add("stream_subscribe_timeout");
            let _ = ready.send(false);
            return BTreeMap::new();
        }
    };
    let _ = shared
        .primary
        .compare_exchange(usize::MAX, index, Ordering::AcqRel, Ordering::Acquire);
    let _ = ready.send(true);
    let mut reader = Reader {
        index,
        shared: &shared,
        last_offset: Some(head),
        kinds: BTreeMap::new(),
    };
    // Resumes since the last one that was followed by a new delta.
    let mut stalled_resumes = 0;
    let mut resumed_at = reader.last_offset;
    loop {
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => reader.on_text(text.as_str(), Instant::now()),
                Some(Ok(Message::Binary(_))) => shared.errors.add("stream_binary_frame"),
                Some(Ok(Message::Close(Some(close))))
                    if u16::from(close.code) == CLOSE_SLOW_CONSUMER
                        && (reader.last_offset != resumed_at
                            || stalled_resumes < MAX_RESUMES_WITHOUT_PROGRESS) =>
                {
                    if reader.last_offset == resumed_at {
                        stalled_resumes += 1;
                    } else {
                        stalled_resumes = 0;
                    }
                    resumed_at = reader.last_offset;
                    shared.resumes.fetch_add(1, Ordering::Relaxed);
                    let reopened = tokio::time::timeout(
                        target.timeout,
                        target.open(index, reader.last_offset),
                    )
                    .await;
                    match reopened {
                        Ok(Ok((socket, _))) => ws = socket,
                        Ok(Err(kind)) => {
                            shared.errors.add(&format!("{kind}_on_resume"));
                            return reader.kinds;
                        }
                        Err(_) => {
                            shared.errors.add("stream_resume_timeout");
                            return reader.kinds;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    shared.errors.add("stream_closed_by_server");
                    return reader.kinds;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    shared.errors.add(&format!("{}_while_reading", ws_error_kind(&e)));
                    return reader.kinds;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    reader.kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(run_id: &str, directory: Option<Arc<Directory>>) -> (Arc<StreamShared>, Instant) {
        let origin = Instant::now();
        let tracker = Arc::new(Tracker::new(origin));
        let shared = StreamShared::new(
            run_id,
            tracker,
            directory,
            10,
            Arc::new(ErrorCounts::default()),
            4,
        );
        (Arc::new(shared), origin)
    }

    #[test]
    fn matches_message_created_deltas_to_send_instants() {
        let directory = Arc::new(Directory::new(10));
        let (shared, origin) = shared("r1", Some(Arc::clone(&directory)));
        shared.primary.store(0, Ordering::Relaxed);
        let sent = origin + Duration::from_millis(5);
        shared.tracker.mark_sent(13, sent, true);
        shared
            .tracker
            .mark_acked(13, sent + Duration::from_millis(2));
        let mut reader = Reader {
            index: 0,
            shared: &shared,
            last_offset: None,
            kinds: BTreeMap::new(),
        };
        let delta = r#"{"type":"delta","offset":7,"kind":"message_created","conversation_id":"conv-3",
            "message":{"id":"m1","conversation_id":"conv-3","seq":1,"direction":"inbound","sender":"lead",
            "text":"load r1 13","internal":false,"channel":"whatsapp","delivery":null,"extra":{"nested":[1,2]}}}"#;
        reader.on_text(delta, sent + Duration::from_millis(3));
        reader.on_text(
            r#"{"type":"delta","offset":8,"kind":"conversation_updated","conversation_id":"conv-3","card":{"id":"conv-3"}}"#,
            sent,
        );
        reader.on_text(r#"{"type":"delta","offset":8,"kind":"message_created","conversation_id":"conv-3","message":{"text":"reply r1 0"}}"#, sent);
        reader.on_text(r#"{"type":"resync"}"#, sent);
        assert_eq!(shared.matched.load(Ordering::Relaxed), 1);
        assert_eq!(shared.replies_seen.load(Ordering::Relaxed), 1);
        assert_eq!(shared.resyncs.load(Ordering::Relaxed), 1);
        assert_eq!(directory.get(3), Some("conv-3"));
        let primary = shared
            .delta_primary
            .lock()
            .map(|h| (h.len(), h.max()))
            .unwrap_or_default();
        assert_eq!(primary.0, 1);
        assert!((2990..=3010).contains(&primary.1), "{}", primary.1);
        let after_ack = shared
            .delta_after_ack
            .lock()
            .map(|h| h.max())
            .unwrap_or_default();
        assert!((990..=1010).contains(&after_ack), "{after_ack}");
        assert_eq!(reader.kinds.get("message_created"), Some(&2));
        assert_eq!(reader.kinds.get("conversation_updated"), Some(&1));
        // Offset 8 twice is a contract violation and is counted.
        assert_eq!(
            shared.errors.snapshot().get("stream_offset_not_increasing"),
            Some(&1)
        );
    }

    #[test]
    fn ignores_other_runs_and_warmup() {
        let (shared, origin) = shared("r1", None);
        shared.tracker.mark_sent(1, origin, false);
        let mut reader = Reader {
            index: 0,
            shared: &shared,
            last_offset: None,
            kinds: BTreeMap::new(),
        };
        reader.on_text(r#"{"type":"delta","offset":1,"kind":"message_created","conversation_id":"c","message":{"text":"load r2 1"}}"#, origin);
        reader.on_text(r#"{"type":"delta","offset":2,"kind":"message_created","conversation_id":"c","message":{"text":"load r1 1"}}"#, origin);
        reader.on_text("not json", origin);
        assert_eq!(shared.matched.load(Ordering::Relaxed), 0);
        assert_eq!(shared.errors.snapshot().get("stream_bad_frame"), Some(&1));
    }

    #[tokio::test]
    async fn builds_ws_url_and_spreads_source_addresses() {
        let target = StreamTarget::new(
            "http://127.0.0.1:8080/",
            "tok",
            50_000,
            None,
            4096,
            Duration::from_secs(1),
        )
        .await;
        let target = match target {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(target.url, "ws://127.0.0.1:8080/api/v1/stream");
        assert_eq!(target.source_ips(), 3);
        assert_eq!(target.source_for(0), "127.0.0.1:0".parse().ok());
        assert_eq!(target.source_for(49_999), "127.0.0.3:0".parse().ok());
        let small = StreamTarget::new(
            "http://localhost:9",
            "t",
            10,
            None,
            4096,
            Duration::from_secs(1),
        )
        .await;
        assert!(small.is_ok_and(|t| t.source_for(3).is_none()));
        let tls = StreamTarget::new(
            "https://127.0.0.1",
            "t",
            1,
            None,
            4096,
            Duration::from_secs(1),
        )
        .await;
        assert!(tls.is_err());
    }
}
