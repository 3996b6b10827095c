//! One WebSocket connection: the origin and authentication checks before the upgrade, the
//! subscribe handshake, replay from the store, live forwarding, keep-alive, and closing.
//!
//! A client that breaks the rules is told why with a close code: 1009 for a frame or
//! message over `stream.max_message_bytes`, 1002 for a WebSocket protocol violation, 1007
//! for a text frame that is not UTF-8, 1003 for a binary frame (the protocol is JSON text),
//! 1008 after [`MAX_BAD_FRAMES`] frames the server does not understand.
//!
//! One task per connection serves both directions. Until the client subscribes it holds
//! no queue; while it is far behind it catches up from the store alone, and joins the hub
//! only near the head, so that live deltas are buffered for a short final replay only.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::Response;
use confab_engine::ids::{AgentId, WorkspaceId};
use confab_engine::model::Agent;
use confab_engine::store::Store;
use futures_util::SinkExt;
use tokio::sync::watch;
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::hub::{self, Batch, Subscription};
use super::origin::AllowedOrigin;
use super::{frames, metrics, shutdown_requested};
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::ApiError;

/// Deltas read from the store per page while replaying.
const REPLAY_PAGE: usize = 1000;
/// A resuming client joins the hub once it is this close to the head...
const LIVE_SLACK: u64 = REPLAY_PAGE as u64;
/// ...or after this many catch-up passes, so that a busy workspace cannot keep it out.
const MAX_CATCH_UP_PASSES: u32 = 4;
/// Live batches written before one flush.
const MAX_BATCHES_PER_FLUSH: usize = 64;
/// Read buffer per connection: clients only send small control frames (it grows for a
/// larger one), and 100k idle connections must fit in 1 GiB.
const READ_BUFFER_BYTES: usize = 1024;
/// Frames are gathered up to this much before a write (every batch ends with a flush).
const WRITE_BUFFER_BYTES: usize = 4 * 1024;
/// How long closing may take before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Close code for a session whose queue overflowed.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
pub const SLOW_CONSUMER_REASON: &str = "slow consumer: resume from your last offset";
/// Close code for a client silent for three ping intervals.
pub const CLOSE_IDLE: u16 = 4000;
/// Frames the server does not understand (each answered with an `error` frame) before it
/// closes the connection with 1008 (policy violation).
pub const MAX_BAD_FRAMES: u32 = 16;

/// `GET /api/v1/stream`: checks the origin (before a ticket is spent), authenticates, then
/// upgrades to a WebSocket session.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "stream",
    security(("agent_token" = [])),
    params(("ticket" = Option<String>, Query, description = "A one-time ticket (`POST /api/v1/stream/ticket`), instead of the `Authorization` header.")),
    responses(
        (status = 101, description = "Switched to WebSocket: JSON text frames, described in docs/API.md and by the `StreamClientFrame` and `StreamServerFrame` schemas."),
        (status = 400, description = "`websocket_upgrade_required`: not a WebSocket upgrade.", body = crate::openapi::ErrorBody),
        (status = 401, description = "`unauthorized`.", body = crate::openapi::ErrorBody),
        (status = 403, description = "`origin_not_allowed`: a browser page of another origin.", body = crate::openapi::ErrorBody),
        (status = 426, description = "`websocket_upgrade_required`: the connection cannot be upgraded.", body = crate::openapi::ErrorBody),
        (status = 503, description = "`shutting_down`.", body = crate::openapi::ErrorBody),
    )
)]
pub async fn connect(
    State(app): State<AppState>,
    _origin: AllowedOrigin,
    StreamAuth(agent): StreamAuth,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "websocket_upgrade_required",
            format!(
                "this endpoint speaks WebSocket only: {}",
                rejection.body_text()
            ),
        )
    })?;
    if *app.shutting_down.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the engine is shutting down",
        ));
    }
    let max_message = app.config.stream.max_message_bytes.max(256);
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "stream upgrade failed"))
        .on_upgrade(move |socket| Session::run(app, agent, socket)))
}

/// The agent of a stream request: from the `Authorization` header when present, else from
/// a one-time `?ticket=`.
pub struct StreamAuth(pub Arc<Agent>);

impl FromRequestParts<AppState> for StreamAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let AgentAuth(agent) = AgentAuth::from_request_parts(parts, app).await?;
            return Ok(StreamAuth(agent));
        }
        let Some(ticket) = ticket_param(parts.uri.query()) else {
            // A signed-in browser: its cookie opens the stream from this server's own
            // pages only (`stream.allowed_origins` is for token and ticket clients).
            if crate::auth::session_secret(parts, &app.config).is_some()
                && crate::auth::own_origin(parts)
            {
                if let Some(agent) = crate::auth::cookie_agent(parts, app).await? {
                    return Ok(StreamAuth(agent));
                }
            }
            return Err(ApiError::unauthorized(
                "an `Authorization: Bearer <token>` header, a session cookie or a `?ticket=` from POST /api/v1/stream/ticket is required",
            ));
        };
        app.tickets.redeem(ticket).map(StreamAuth).ok_or_else(|| {
            ApiError::unauthorized("the stream ticket is unknown, expired or already used")
        })
    }
}

/// The `ticket` query parameter (tickets are hex: nothing to percent-decode).
fn ticket_param(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("ticket="))
        .filter(|ticket| !ticket.is_empty())
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client closed or the connection broke.
    Gone,
    /// Its queue overflowed: hint and close with [`CLOSE_SLOW_CONSUMER`].
    Slow,
    /// A write did not complete within the idle allowance: drop without ceremony.
    Stalled,
    /// Silent for three ping intervals.
    Idle,
    /// The server is stopping: close with 1001.
    Shutdown,
    /// The store could not be read: close with 1011.
    Unavailable,
    /// A frame or message over the size limit: close with 1009.
    TooLarge,
    /// A WebSocket protocol violation (unmasked frame, reserved bits, bad opcode …): 1002.
    ProtocolViolation,
    /// A text frame that is not UTF-8: 1007.
    NotUtf8,
    /// A binary frame: 1003.
    Binary,
    /// Too many frames the server does not understand: 1008.
    TooManyBadFrames,
}

impl Ending {
    /// What a failed read says about the client.
    fn of_read_error(error: axum::Error) -> Ending {
        use tungstenite::error::ProtocolError;
        use tungstenite::Error as E;
        let Ok(error) = error.into_inner().downcast::<E>() else {
            return Ending::Gone;
        };
        match *error {
            E::Capacity(_) => Ending::TooLarge,
            E::Utf8(_) => Ending::NotUtf8,
            E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Gone,
            E::Protocol(_) => Ending::ProtocolViolation,
            _ => Ending::Gone,
        }
    }
}

/// Why a replay stopped early.
enum ReplayStop {
    /// The history it needed was pruned meanwhile.
    Pruned,
    End(Ending),
}

impl From<Ending> for ReplayStop {
    fn from(ending: Ending) -> Self {
        ReplayStop::End(ending)
    }
}

enum Event {
    Shutdown,
    Client(Option<Result<Message, axum::Error>>),
    Live(Option<Arc<Batch>>),
    Tick,
}

struct Session {
    app: AppState,
    agent_id: AgentId,
    workspace: WorkspaceId,
    socket: WebSocket,
    shutdown: watch::Receiver<bool>,
    /// Set once the client subscribed (a second subscribe is refused).
    subscribed: bool,
    /// The hub queue, once the session is close enough to the head to go live.
    live: Option<Subscription>,
    /// Every delta of the workspace with an offset up to here has been sent (or predates
    /// the subscription): what the client would resume from.
    cursor: u64,
    last_heard: Instant,
    ping_every: Duration,
    /// Frames received that the server did not understand.
    bad_frames: u32,
}

impl Session {
    async fn run(app: AppState, agent: Arc<Agent>, socket: WebSocket) {
        let _connected = app.hub.client_connected();
        let ping_every = Duration::from_secs(app.config.stream.ping_interval_secs.max(1));
        let mut session = Session {
            shutdown: app.shutting_down.clone(),
            app,
            agent_id: agent.id,
            workspace: agent.workspace_id,
            socket,
            subscribed: false,
            live: None,
            cursor: 0,
            last_heard: Instant::now(),
            ping_every,
            bad_frames: 0,
        };
        let ending = session.serve().await;
        tracing::debug!(agent_id = %session.agent_id, ?ending, cursor = session.cursor, "stream session ended");
        Box::pin(session.close(ending)).await;
    }

    /// A client that takes no frame (nor sends one) for this long is dead.
    fn allowance(&self) -> Duration {
        self.ping_every * 3
    }

    async fn serve(&mut self) -> Ending {
        let mut ticker =
            tokio::time::interval_at(Instant::now() + self.ping_every, self.ping_every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if self.live.as_ref().is_some_and(Subscription::is_slow) {
                return Ending::Slow;
            }
            let event = tokio::select! {
                () = shutdown_requested(&mut self.shutdown) => Event::Shutdown,
                incoming = self.socket.recv() => Event::Client(incoming),
                batch = next_batch(&mut self.live) => Event::Live(batch),
                _ = ticker.tick() => Event::Tick,
            };
            let step = match event {
                Event::Shutdown => Err(Ending::Shutdown),
                Event::Client(None) => Err(Ending::Gone),
                Event::Client(Some(Err(error))) => Err(Ending::of_read_error(error)),
                Event::Client(Some(Ok(message))) => {
                    self.last_heard = Instant::now();
                    self.on_client(message).await
                }
                Event::Live(Some(batch)) => self.forward(batch).await,
                // The hub only lets go of a session it marked slow.
                Event::Live(None) => Err(Ending::Slow),
                Event::Tick => self.keep_alive().await,
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    async fn on_client(&mut self, message: Message) -> Result<(), Ending> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => return Err(Ending::Binary),
            // Pongs only prove liveness; pings are answered by the WebSocket layer; after
            // a close the next read ends the session.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Ok(()),
        };
        match frames::ClientFrame::parse(&text) {
            Ok(frames::ClientFrame::Subscribe { since }) if !self.subscribed => {
                self.subscribed = true;
                let subscribed = Box::pin(self.subscribe(since)).await;
                // Replaying read nothing from the client: do not hold that against it.
                self.last_heard = Instant::now();
                subscribed
            }
            Ok(frames::ClientFrame::Subscribe { .. }) => {
                self.send(frames::error(
                    "already_subscribed",
                    "this connection is already subscribed; open a new one to subscribe again",
                ))
                .await
            }
            Ok(frames::ClientFrame::Ping) => self.send(frames::pong()).await,
            Err(message) => {
                self.bad_frames += 1;
                if self.bad_frames > MAX_BAD_FRAMES {
                    return Err(Ending::TooManyBadFrames);
                }
                self.send(frames::error("bad_frame", &message)).await
            }
        }
    }

    /// Handles `subscribe`: `subscribed`, then a replay after `since` (or `resync`), and
    /// leaves the session registered in the hub with `cursor` at what it has sent.
    async fn subscribe(&mut self, since: Option<u64>) -> Result<(), Ending> {
        let Some(since) = since else {
            self.go_live();
            let head = self.app.committer.durable_head();
            self.cursor = head;
            return self.send(frames::subscribed(head)).await;
        };
        ::metrics::counter!(metrics::WS_RESUMES).increment(1);
        let head = self.app.committer.durable_head();
        self.send(frames::subscribed(head)).await?;
        let pruned = self.read(|store| store.delta_pruned_through()).await?;
        // Offsets come from this server: one above its head means its data was replaced.
        if since < pruned || since > head {
            return self.resync().await;
        }
        self.cursor = since;
        let mut passes = 0;
        loop {
            let live = self.live.is_some();
            let target = self.app.committer.durable_head();
            if !live
                && (target.saturating_sub(self.cursor) <= LIVE_SLACK
                    || passes >= MAX_CATCH_UP_PASSES)
            {
                // Registered first, the head read next: nothing can fall between the two.
                self.go_live();
                continue;
            }
            match self.replay(target).await {
                Ok(()) => {}
                Err(ReplayStop::Pruned) => return self.resync().await,
                Err(ReplayStop::End(ending)) => return Err(ending),
            }
            if live {
                return Ok(());
            }
            passes += 1;
        }
    }

    fn go_live(&mut self) {
        if self.live.is_none() {
            self.live = Some(self.app.hub.register(self.workspace));
        }
    }

    /// Tells the client its history is gone and continues live from the head.
    async fn resync(&mut self) -> Result<(), Ending> {
        self.go_live();
        let head = self.app.committer.durable_head();
        self.cursor = head;
        ::metrics::counter!(metrics::WS_RESYNCS).increment(1);
        self.send(frames::resync(head)).await
    }

    /// Sends the workspace's deltas in `(cursor, up_to]` from the store, page by page.
    async fn replay(&mut self, up_to: u64) -> Result<(), ReplayStop> {
        while self.cursor < up_to {
            if *self.shutdown.borrow() {
                return Err(Ending::Shutdown.into());
            }
            if self.live.as_ref().is_some_and(Subscription::is_slow) {
                return Err(Ending::Slow.into());
            }
            let (workspace, after) = (self.workspace, self.cursor);
            let (page, pruned) = self
                .read(move |store| {
                    let page = store.deltas_between(workspace, after, up_to, REPLAY_PAGE)?;
                    // Read after the page: the pruner marks before it deletes, so a page
                    // missing pruned deltas is always caught here.
                    let pruned = store.delta_pruned_through()?;
                    let page: Vec<(u64, Utf8Bytes)> = page
                        .iter()
                        .map(|delta| (delta.offset, Utf8Bytes::from(delta.to_json())))
                        .collect();
                    Ok((page, pruned))
                })
                .await?;
            if pruned > after {
                return Err(ReplayStop::Pruned);
            }
            let next_cursor = match page.last() {
                Some((last, _)) if page.len() == REPLAY_PAGE => *last,
                _ => up_to,
            };
            let count = page.len();
            let allowance = self.allowance();
            let socket = &mut self.socket;
            let write = async {
                for (_, text) in page {
                    socket.feed(Message::Text(text)).await?;
                }
                socket.flush().await
            };
            within(allowance, write).await?;
            ::metrics::counter!(metrics::WS_FRAMES_SENT).increment(count as u64);
            self.cursor = next_cursor;
        }
        Ok(())
    }

    /// Writes a live batch, and whatever else is already queued, with one flush.
    async fn forward(&mut self, first: Arc<Batch>) -> Result<(), Ending> {
        let allowance = self.allowance();
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        if live.is_slow() {
            return Err(Ending::Slow);
        }
        let mut batches = vec![first];
        while batches.len() < MAX_BATCHES_PER_FLUSH {
            match live.try_recv() {
                Some(batch) => batches.push(batch),
                None => break,
            }
        }
        let mut cursor = self.cursor;
        let mut sent = Vec::with_capacity(batches.len());
        let socket = &mut self.socket;
        let mut ingested = Vec::new();
        let write = async {
            for batch in &batches {
                let mut count = 0;
                for frame in hub::unsent(batch, cursor) {
                    socket.feed(Message::Text(frame.text.clone())).await?;
                    cursor = frame.offset;
                    count += 1;
                    ingested.extend(frame.received);
                }
                sent.push(count);
            }
            socket.flush().await
        };
        within(allowance, write).await?;
        if !ingested.is_empty() {
            let histogram = ::metrics::histogram!(metrics::INGEST_TO_SOCKET_SECONDS);
            for received in ingested {
                histogram.record(received.elapsed().as_secs_f64());
            }
        }
        self.cursor = cursor;
        let histogram = ::metrics::histogram!(metrics::DELTA_PUBLISH_TO_SEND_SECONDS);
        let mut total = 0;
        for (batch, count) in batches.iter().zip(sent) {
            live.written(batch.frames.len());
            if count > 0 {
                histogram.record_many(batch.published_at.elapsed().as_secs_f64(), count);
                total += count;
            }
        }
        if total > 0 {
            ::metrics::counter!(metrics::WS_FRAMES_SENT).increment(total as u64);
        }
        Ok(())
    }

    /// Pings the client, or ends a session that has been silent too long.
    async fn keep_alive(&mut self) -> Result<(), Ending> {
        if self.last_heard.elapsed() >= self.allowance() {
            return Err(Ending::Idle);
        }
        self.send_message(Message::Ping(bytes::Bytes::new())).await
    }

    async fn send(&mut self, text: Utf8Bytes) -> Result<(), Ending> {
        self.send_message(Message::Text(text)).await
    }

    async fn send_message(&mut self, message: Message) -> Result<(), Ending> {
        let allowance = self.allowance();
        within(allowance, self.socket.send(message)).await
    }

    /// Runs a blocking store read off the reactor. (The future holds no borrow of the
    /// session, which is not `Sync`.)
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> confab_engine::Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T, Ending>> + Send + 'static {
        let store = self.app.store.clone();
        async move {
            match tokio::task::spawn_blocking(move || read(&store)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "stream: store read failed");
                    Err(Ending::Unavailable)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stream: store read task failed");
                    Err(Ending::Unavailable)
                }
            }
        }
    }

    /// Says why, closes, and waits (briefly) for the client's close.
    async fn close(mut self, ending: Ending) {
        let (code, reason, last_word) = match ending {
            Ending::Gone => return,
            Ending::Stalled => {
                ::metrics::counter!(metrics::WS_SLOW_DISCONNECTS).increment(1);
                return;
            }
            Ending::Slow => {
                ::metrics::counter!(metrics::WS_SLOW_DISCONNECTS).increment(1);
                (
                    CLOSE_SLOW_CONSUMER,
                    SLOW_CONSUMER_REASON,
                    Some(frames::resync_hint(self.cursor)),
                )
            }
            Ending::Idle => (
                CLOSE_IDLE,
                "idle: nothing received for three ping intervals",
                None,
            ),
            Ending::Shutdown => (close_code::AWAY, "server shutting down", None),
            Ending::Unavailable => (
                close_code::ERROR,
                "the stream is unavailable; reconnect later",
                Some(frames::error(
                    "unavailable",
                    "the delta log could not be read",
                )),
            ),
            Ending::TooLarge => (
                close_code::SIZE,
                "frame or message too large (stream.max_message_bytes)",
                None,
            ),
            Ending::ProtocolViolation => {
                (close_code::PROTOCOL, "WebSocket protocol violation", None)
            }
            Ending::NotUtf8 => (close_code::INVALID, "text frame is not UTF-8", None),
            Ending::Binary => (
                close_code::UNSUPPORTED,
                "binary frames are not supported: frames are JSON text",
                None,
            ),
            Ending::TooManyBadFrames => (
                close_code::POLICY,
                "too many frames the server does not understand",
                None,
            ),
        };
        // Frames still queued are dropped with the subscription: the client resumes.
        self.live = None;
        let socket = &mut self.socket;
        let closing = async {
            if let Some(text) = last_word {
                socket.send(Message::Text(text)).await?;
            }
            socket
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                })))
                .await?;
            while let Some(Ok(_)) = socket.recv().await {}
            Ok::<(), axum::Error>(())
        };
        let _ = timeout(CLOSE_TIMEOUT, closing).await;
    }
}

/// The next live batch, or never while the session is not live.
async fn next_batch(live: &mut Option<Subscription>) -> Option<Arc<Batch>> {
    match live {
        Some(live) => live.recv().await,
        None => std::future::pending().await,
    }
}

/// A socket write that must finish within `allowance`.
async fn within(
    allowance: Duration,
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), Ending> {
    match timeout(allowance, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ending::Gone),
        Err(_) => Err(Ending::Stalled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_is_found_among_other_parameters() {
        assert_eq!(ticket_param(Some("ticket=abc")), Some("abc"));
        assert_eq!(ticket_param(Some("x=1&ticket=abc&y=2")), Some("abc"));
        assert_eq!(ticket_param(Some("xticket=abc")), None);
        assert_eq!(ticket_param(Some("ticket=")), None);
        assert_eq!(ticket_param(Some("")), None);
        assert_eq!(ticket_param(None), None);
    }
}
