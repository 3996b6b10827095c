//! A channel's link to its provider, shared by its connector, the connector's send tasks
//! and the registry (which reads health without a mailbox hop): the channel and its
//! adapter, the circuit breaker, the per-second and per-day send budgets, and health.
//!
//! A link outlives connector restarts, so a crash neither resets today's send count nor
//! closes an open circuit. Health changes are committed by the link itself: the
//! `channel_runtime` row (today's count, the last error) and, when the status changes, a
//! `channel_updated` delta to the workspace.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use confab_engine::catalogue::Ks;
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::delta::DeltaBody;
use confab_engine::model::{Channel, ChannelRules, OverDailyCap};
use confab_engine::port::{
    utc_day, AccountEvent, ChannelError, ChannelHealth, ChannelRuntime, ChannelStatus,
    CircuitState, LimitsView, DAY_MS,
};
use confab_engine::time::UnixMillis;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

use super::adapter::{adapter_for, Adapter};
use super::circuit::Circuit;
use super::ConnectorSettings;
use crate::clock::SharedClock;

/// What stands between a send and its provider right now.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// An admin disabled the channel: wait until enabled.
    Disabled,
    /// The provider says the account is disconnected: wait until it runs again.
    Disconnected,
    /// The circuit is open: wait this long (or until woken).
    Paused(Duration),
}

/// Why today's budget refuses a send.
#[derive(Debug, PartialEq, Eq)]
pub struct OverCap {
    pub cap: u32,
    /// When the next UTC day starts (clock time).
    pub next_day: UnixMillis,
    pub fail: bool,
    /// Today's last slots are held by sends under way: wait for them to settle (a failed
    /// one gives its slot back) rather than give up on the day.
    pub busy: bool,
}

pub struct Link {
    channel: Mutex<Arc<Channel>>,
    adapter: Mutex<Arc<dyn Adapter>>,
    limiter: Mutex<Option<Arc<DefaultDirectRateLimiter>>>,
    /// Sends wait for the pace one at a time, in turn (a backlog of sends does not wake
    /// every waiting task at each free slot); it holds when the last send was let through
    /// (for the least spacing between sends).
    pace_turn: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    circuit: Mutex<Circuit>,
    state: Mutex<LinkState>,
    /// Woken when something that held sends changes (enabled, credentials rotated).
    pub wake: Notify,
    /// Woken when the provider says the account runs again after it did not, or its
    /// credentials change: what it missed meanwhile is read back (gap repair).
    pub reconnected: Notify,
    /// Outbound messages of this channel not yet finished (queued, held or sending).
    depth: AtomicU64,
    /// Whether a connector runs for the channel.
    running: AtomicBool,
    published: tokio::sync::Mutex<Published>,
    committer: Committer,
    pub clock: SharedClock,
    settings: ConnectorSettings,
}

#[derive(Debug, Default)]
struct LinkState {
    day: i64,
    sent: u32,
    /// Sends under way that hold a slot of today's budget.
    reserved: u32,
    /// Today's budget ran out and a send waits for tomorrow.
    over_cap: bool,
    auth_failed: bool,
    disconnected: bool,
    /// Why inbound cannot be read (a connected mailbox's connection), while it cannot:
    /// sending is not affected, so the channel is degraded, not disconnected.
    receive_error: Option<ChannelError>,
    last_error: Option<ChannelError>,
}

/// What was last committed, so unchanged health writes nothing.
#[derive(Debug, Default)]
struct Published {
    status: Option<ChannelStatus>,
    runtime: ChannelRuntime,
}

impl Link {
    pub fn new(
        channel: Arc<Channel>,
        runtime: ChannelRuntime,
        committer: Committer,
        settings: ConnectorSettings,
    ) -> Arc<Link> {
        let link = Link {
            adapter: Mutex::new(adapter_for(&channel)),
            limiter: Mutex::new(None),
            pace_turn: tokio::sync::Mutex::new(None),
            channel: Mutex::new(channel),
            circuit: Mutex::new(Circuit::new(settings.retry_max)),
            state: Mutex::new(LinkState {
                day: runtime.day,
                sent: runtime.sent_today,
                // The provider said the account was disconnected and has not said
                // otherwise since: sends keep waiting after a restart.
                disconnected: runtime
                    .last_error
                    .as_ref()
                    .is_some_and(|e| e.code == "disconnected"),
                last_error: runtime.last_error.clone(),
                ..LinkState::default()
            }),
            wake: Notify::new(),
            reconnected: Notify::new(),
            depth: AtomicU64::new(0),
            // A link is made for a connector about to start.
            running: AtomicBool::new(true),
            published: tokio::sync::Mutex::new(Published {
                status: None,
                runtime,
            }),
            committer,
            clock: settings.clock.clone(),
            settings,
        };
        link.rebuild_limiter();
        // Health as the channel starts is not news: only changes stream.
        let status = link.health().status;
        if let Ok(mut published) = link.published.try_lock() {
            published.status = Some(status);
        }
        Arc::new(link)
    }

    pub fn channel(&self) -> Arc<Channel> {
        lock(&self.channel).clone()
    }

    pub fn adapter(&self) -> Arc<dyn Adapter> {
        lock(&self.adapter).clone()
    }

    /// Waits for the channel's pace to allow one more send (first come, first served):
    /// its per-second rate and the least spacing between two sends.
    pub async fn paced(&self) {
        let limiter = lock(&self.limiter).clone();
        let spacing = self.rules().min_interval_ms.map(Duration::from_millis);
        if limiter.is_none() && spacing.is_none() {
            return;
        }
        let mut last = self.pace_turn.lock().await;
        if let (Some(spacing), Some(at)) = (spacing, *last) {
            tokio::time::sleep_until(at + spacing).await;
        }
        if let Some(limiter) = limiter {
            limiter.until_ready().await;
        }
        *last = Some(tokio::time::Instant::now());
    }

    /// The channel's rules: its kind's, the server's per-kind pace, its own limits.
    pub fn rules(&self) -> ChannelRules {
        let channel = self.channel();
        let mut rules = channel.rules();
        if channel.limits.per_second.is_none() {
            if let Some(pace) = self.settings.per_second.get(&channel.kind()) {
                rules.per_second = Some(*pace);
            }
        }
        rules
    }

    fn rebuild_limiter(&self) {
        let limiter = self
            .rules()
            .per_second
            .and_then(NonZeroU32::new)
            .map(|pace| Arc::new(RateLimiter::direct(Quota::per_second(pace))));
        *lock(&self.limiter) = limiter;
    }

    pub fn set_running(self: &Arc<Self>, running: bool) {
        if self.running.swap(running, Ordering::SeqCst) != running {
            self.changed();
        }
    }

    pub fn depth_add(&self, n: u64) {
        self.depth.fetch_add(n, Ordering::Relaxed);
    }

    pub fn depth_done(&self) {
        let _ = self
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(1))
            });
    }

    pub fn set_depth(&self, n: u64) {
        self.depth.store(n, Ordering::Relaxed);
    }

    /// A new configuration (renamed, disabled or enabled, credentials rotated, limits
    /// changed). New credentials close the circuit and clear an authentication failure:
    /// held sends try at once.
    pub fn reconfigure(self: &Arc<Self>, channel: Channel) {
        let credentials_changed = lock(&self.channel).config != channel.config;
        *lock(&self.adapter) = adapter_for(&channel);
        *lock(&self.channel) = Arc::new(channel);
        self.rebuild_limiter();
        if credentials_changed {
            let closed = lock(&self.circuit).reset();
            if closed {
                self.circuit_gauge(-1.0);
            }
            // The account's own state at the provider (disconnected) is the provider's to
            // change: only its word, a probe or a successful send clears it.
            lock(&self.state).auth_failed = false;
        }
        // New limits are looked at again by the next send.
        lock(&self.state).over_cap = false;
        self.wake.notify_waiters();
        if credentials_changed {
            self.reconnected.notify_waiters();
        }
        self.changed();
    }

    pub fn gate(&self) -> Gate {
        if self.channel().disabled {
            return Gate::Disabled;
        }
        if lock(&self.state).disconnected {
            return Gate::Disconnected;
        }
        let pause = lock(&self.circuit).wait(Instant::now());
        if pause.is_zero() {
            Gate::Go
        } else {
            Gate::Paused(pause)
        }
    }

    /// Takes a slot of today's budget, or says when the next day starts.
    pub fn reserve(self: &Arc<Self>) -> Result<(), OverCap> {
        let now = self.clock.now();
        let rules = self.rules();
        let fail = self.channel().limits.over_daily_cap == OverDailyCap::Fail;
        let mut state = lock(&self.state);
        state.roll(now);
        if let Some(cap) = rules.per_day {
            if state.sent < cap && state.sent.saturating_add(state.reserved) >= cap {
                return Err(OverCap {
                    cap,
                    next_day: (utc_day(now) + 1) * DAY_MS,
                    fail: false,
                    busy: true,
                });
            }
            if state.sent >= cap {
                let newly = !state.over_cap;
                state.over_cap = true;
                state.last_error = Some(ChannelError {
                    code: "daily_limit_reached".into(),
                    message: format!("the channel's daily limit of {cap} messages is reached"),
                    at: now,
                });
                drop(state);
                if newly {
                    self.changed();
                }
                return Err(OverCap {
                    cap,
                    next_day: (utc_day(now) + 1) * DAY_MS,
                    fail,
                    busy: false,
                });
            }
        }
        state.reserved += 1;
        Ok(())
    }

    /// A send that held a slot ended; `accepted` ones count toward today.
    pub fn settle(&self, accepted: bool) {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        state.reserved = state.reserved.saturating_sub(1);
        state.roll(now);
        if accepted {
            state.sent = state.sent.saturating_add(1);
        }
        drop(state);
        // A slot was used or came back: a send waiting on today's last slots looks again.
        self.wake.notify_waiters();
    }

    /// The provider accepted a send: the channel works.
    pub fn on_accepted(self: &Arc<Self>) {
        if lock(&self.circuit).success() {
            tracing::info!(channel = %self.channel().id, "provider answers again: circuit closed");
            self.circuit_gauge(-1.0);
        }
        {
            let mut state = lock(&self.state);
            state.auth_failed = false;
            state.disconnected = false;
            if !state.over_cap {
                state.last_error = None;
            }
        }
        self.changed();
    }

    /// A send failed in a way that may pass (`provider_unavailable`, `rate_limited`).
    pub fn on_retryable(self: &Arc<Self>, code: &str, reason: &str) {
        self.error(code, reason);
        if lock(&self.circuit).failure(Instant::now()) {
            tracing::warn!(channel = %self.channel().id, %reason, "provider failing: circuit open, sends pause");
            self.circuit_opened();
        }
        self.changed();
    }

    /// The provider refuses our credentials: sends pause (the circuit trips) until the
    /// credentials are rotated or a probe succeeds.
    pub fn on_auth_failed(self: &Arc<Self>, reason: &str) {
        self.error("auth_failed", reason);
        lock(&self.state).auth_failed = true;
        if lock(&self.circuit).trip(Instant::now()) {
            tracing::warn!(channel = %self.channel().id, %reason, "credentials refused: sends pause");
            self.circuit_opened();
        }
        self.changed();
    }

    pub fn on_account(self: &Arc<Self>, event: &AccountEvent) {
        match event {
            AccountEvent::Connected => {
                let was_down = {
                    let mut state = lock(&self.state);
                    let was_down = state.auth_failed || state.disconnected;
                    state.auth_failed = false;
                    state.disconnected = false;
                    state.last_error = None;
                    was_down
                };
                if was_down {
                    self.reconnected.notify_waiters();
                }
                if lock(&self.circuit).reset() {
                    self.circuit_gauge(-1.0);
                }
                self.wake.notify_waiters();
            }
            AccountEvent::Disconnected { reason } => {
                self.error("disconnected", reason);
                lock(&self.state).disconnected = true;
            }
            AccountEvent::AuthFailed { reason } => {
                self.error("auth_failed", reason);
                lock(&self.state).auth_failed = true;
                if lock(&self.circuit).trip(Instant::now()) {
                    self.circuit_opened();
                }
            }
        }
        self.changed();
    }

    fn error(&self, code: &str, message: &str) {
        lock(&self.state).last_error = Some(ChannelError {
            code: code.to_owned(),
            message: message.to_owned(),
            at: self.clock.now(),
        });
    }

    fn circuit_opened(&self) {
        self.circuit_gauge(1.0);
        metrics::counter!(crate::metrics::CONNECTOR_CIRCUIT_OPENED, "channel" => self.channel().kind().as_str())
            .increment(1);
    }

    fn circuit_gauge(&self, by: f64) {
        metrics::gauge!(crate::metrics::CONNECTOR_CIRCUITS_OPEN, "channel" => self.channel().kind().as_str())
            .increment(by);
    }

    /// Records whether the channel can read its mail (`None`: it can), and publishes the
    /// health when that changes.
    pub async fn set_receive_error(&self, error: Option<(&str, String)>) {
        let now = self.clock.now();
        let changed = {
            let mut state = lock(&self.state);
            let before = state
                .receive_error
                .as_ref()
                .map(|e| (e.code.clone(), e.message.clone()));
            let after = error
                .as_ref()
                .map(|(code, message)| (code.to_string(), message.clone()));
            state.receive_error = error.map(|(code, message)| ChannelError {
                code: code.to_owned(),
                message,
                at: now,
            });
            before != after
        };
        if changed {
            self.publish().await;
        }
    }

    pub fn health(&self) -> ChannelHealth {
        let channel = self.channel();
        let rules = self.rules();
        let circuit = lock(&self.circuit).state(Instant::now());
        let now = self.clock.now();
        let mut state = lock(&self.state);
        state.roll(now);
        let running = self.running.load(Ordering::SeqCst);
        let status = if channel.disabled {
            ChannelStatus::Disabled
        } else if state.auth_failed {
            ChannelStatus::AuthFailed
        } else if state.disconnected || !running {
            ChannelStatus::Disconnected
        } else if circuit != CircuitState::Closed || state.over_cap || state.receive_error.is_some()
        {
            ChannelStatus::Degraded
        } else {
            ChannelStatus::Connected
        };
        let last_error = match (&state.last_error, running) {
            (_, false) if !channel.disabled => Some(ChannelError {
                code: "connector_stopped".into(),
                message:
                    "the channel's connector crashed too often and was stopped; restart the server"
                        .into(),
                at: now,
            }),
            (error, _) => error.clone().or_else(|| state.receive_error.clone()),
        };
        ChannelHealth {
            id: channel.id,
            kind: channel.kind(),
            name: channel.name.clone(),
            status,
            last_error,
            circuit,
            outbox_depth: self.depth.load(Ordering::Relaxed),
            limits: LimitsView {
                per_second: rules.per_second,
                per_day: rules.per_day,
                min_interval_secs: rules
                    .min_interval_ms
                    .map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX)),
                sent_today: state.sent,
            },
        }
    }

    fn runtime(&self) -> ChannelRuntime {
        let state = lock(&self.state);
        ChannelRuntime {
            day: state.day,
            sent_today: state.sent,
            last_error: state.last_error.clone(),
        }
    }

    /// Commits what changed of the channel's health, on a task of its own.
    pub fn changed(self: &Arc<Self>) {
        let link = self.clone();
        tokio::spawn(async move { link.publish().await });
    }

    /// Commits the `channel_runtime` row if it changed and a `channel_updated` delta if the
    /// status changed. Serialized, and always from the latest state, so rows never go back.
    pub async fn publish(&self) {
        let mut published = self.published.lock().await;
        let health = self.health();
        let runtime = self.runtime();
        let status_changed = published.status != Some(health.status);
        if !status_changed && published.runtime == runtime {
            return;
        }
        let channel = self.channel();
        let mut set = WriteSet::new();
        set.put(Ks::ChannelRuntime, channel.id.to_bytes().to_vec(), &runtime);
        if status_changed {
            tracing::info!(channel = %channel.id, status = ?health.status, "channel status");
            set.workspace_delta(
                channel.workspace_id,
                DeltaBody::ChannelUpdated(health.clone()),
            );
        }
        match self.committer.commit(set).await {
            Ok(_) => {
                published.status = Some(health.status);
                published.runtime = runtime;
            }
            Err(e) => {
                tracing::warn!(channel = %channel.id, error = %e, "cannot record the channel's health")
            }
        }
    }
}

impl LinkState {
    /// A new UTC day starts a new count.
    fn roll(&mut self, now: UnixMillis) {
        let today = utc_day(now);
        if today > self.day {
            self.day = today;
            self.sent = 0;
            self.over_cap = false;
            if self
                .last_error
                .as_ref()
                .is_some_and(|e| e.code == "daily_limit_reached")
            {
                self.last_error = None;
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if lock(&self.circuit).is_open() {
            self.circuit_gauge(-1.0);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
