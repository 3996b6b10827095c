//! `confab-load`: Confab's load generator.
//!
//! It drives a running server strictly through the public contract (docs: API.md):
//! provisions a fresh workspace, agent and WhatsApp channel with the admin token, opens
//! WebSocket subscribers, posts signed WhatsApp webhooks at a target rate (open loop, so
//! latency is measured from each message's intended send time), optionally sends agent
//! replies, and reports acknowledgement latency, delta latency (webhook send -> matching
//! `message_created` delta on a subscriber), delivery completeness, the achieved ingest rate
//! and the server's RSS. `--stream-only K` measures the server's memory per idle
//! WebSocket connection instead. See `confab-load --help` for every flag.
//!
//! Module map: `cli` (flags), `provision` (admin API), `graph_stub` (loopback WhatsApp
//! Graph API stand-in for outbound replies), `webhook` (payloads, signatures, pacing,
//! senders), `stream` (subscribers), `replies` (agent replies), `tracker` (per-message
//! state), `stats` (histograms and reports), `procfs` (server PID, RSS, fd limit).

mod cli;
mod graph_stub;
mod procfs;
mod provision;
mod replies;
mod stats;
mod stream;
mod tracker;
mod webhook;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::cli::{Args, Rate};
use crate::procfs::{CpuProbe, RssProbe};
use crate::replies::{Directory, ReplyContext, ReplyPlanner, ReplyStats};
use crate::stats::{ErrorCounts, LoadReport, Percentiles, StreamOnlyReport};
use crate::stream::{StreamShared, StreamTarget};
use crate::tracker::Tracker;
use crate::webhook::{Pacing, PayloadBuilder, SendStats, WebhookSender};

/// The generator shares the machine with the server it measures: a cheaper allocator
/// leaves more of the CPU to the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Read buffer of a load-run subscriber: deltas arrive in bursts.
const LOAD_READ_BUFFER: usize = 64 * 1024;
/// Read buffer of an idle `--stream-only` connection: keeps the tool's own memory small.
const IDLE_READ_BUFFER: usize = 4 * 1024;
/// Reply requests in flight at most.
const REPLY_PARALLELISM: usize = 32;

fn main() -> ExitCode {
    let args = Args::parse();
    let fd_limit = procfs::raise_nofile_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("confab-load: error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args, fd_limit));
    // Leftover connection tasks must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("confab-load: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn log(message: impl std::fmt::Display) {
    eprintln!("confab-load: {message}");
}

async fn run(args: Args, fd_limit: Option<u64>) -> anyhow::Result<()> {
    let base_url = args.url.trim_end_matches('/').to_owned();
    let sockets_needed = match args.stream_only {
        Some(k) => k,
        None => args.subscribers + args.max_in_flight.max(args.concurrency),
    };
    if let Some(limit) = fd_limit {
        if limit < sockets_needed as u64 + 64 {
            log(format_args!(
                "warning: the open-file limit is {limit} but this run may need about {} \
                 sockets; run `ulimit -n 65536` first (failures are counted as *_emfile errors)",
                sockets_needed + 64
            ));
        }
    }
    let client = http_client(&args)?;
    let run_id = provision::random_hex(12);
    if let Some(connections) = args.stream_only {
        let report = run_stream_only(&args, &client, &base_url, &run_id, connections).await?;
        println!("{}", report.human());
        if args.json {
            println!("{}", report.to_json()?);
        }
    } else {
        let report = run_load(&args, &client, &base_url, &run_id).await?;
        println!("{}", report.human());
        if args.json {
            println!("{}", report.to_json()?);
        }
    }
    Ok(())
}

fn http_client(args: &Args) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs_f64(args.request_timeout.max(0.1)))
        .user_agent(concat!("confab-load/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

/// The server's PID: `--server-pid`, else the process listening on the URL's port when
/// the URL names this machine.
fn find_server_pid(base_url: &str, explicit: Option<u32>) -> Option<u32> {
    if explicit.is_some() {
        return explicit;
    }
    let url = reqwest::Url::parse(base_url).ok()?;
    if !procfs::is_loopback_host(url.host_str()?) {
        return None;
    }
    procfs::pid_listening_on(url.port_or_known_default()?)
}

/// Opens the RSS probes of the server (when its PID is known) and of this process,
/// before sockets can exhaust the file descriptors.
fn rss_probes(server_pid: Option<u32>) -> (Option<RssProbe>, Option<RssProbe>) {
    let server = server_pid.and_then(RssProbe::of_pid);
    match (server_pid, &server) {
        (None, _) => log("server PID unknown (not local, or not found in /proc); RSS will be null"),
        (Some(pid), None) => log(format_args!(
            "cannot read /proc/{pid}/status; RSS will be null"
        )),
        (Some(pid), Some(_)) => log(format_args!("server PID {pid}")),
    }
    (server, RssProbe::of_self())
}

/// Samples the RSS until two readings 250 ms apart differ by less than 0.5 %
/// (the server has finished allocating for what just happened), at most ~3 s.
async fn settled_rss(probe: Option<&RssProbe>) -> Option<u64> {
    let probe = probe?;
    let mut previous = probe.rss_bytes()?;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let current = probe.rss_bytes()?;
        if current.abs_diff(previous) * 200 < previous {
            return Some(current);
        }
        previous = current;
    }
    Some(previous)
}

/// Open subscribers and the means to stop them.
struct Subscribers {
    connected: usize,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<BTreeMap<String, u64>>,
}

impl Subscribers {
    /// Stops every subscriber and merges their delta counts by kind.
    async fn stop(mut self) -> BTreeMap<String, u64> {
        let _ = self.shutdown.send(true);
        let mut kinds = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await
        {
            for (kind, n) in joined.unwrap_or_default() {
                *kinds.entry(kind).or_insert(0) += n;
            }
        }
        self.tasks.abort_all();
        kinds
    }
}

async fn open_subscribers(
    count: usize,
    target: &Arc<StreamTarget>,
    shared: &Arc<StreamShared>,
) -> Subscribers {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for index in 0..count {
        tasks.spawn(stream::run_subscriber(
            index,
            Arc::clone(target),
            Arc::clone(shared),
            ready_tx.clone(),
            shutdown_rx.clone(),
        ));
    }
    drop(ready_tx);
    let started = Instant::now();
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(30) + Duration::from_millis(count as u64);
    let mut connected = 0;
    let mut reported = 0;
    let mut last_progress = Instant::now();
    while reported < count {
        match tokio::time::timeout_at(deadline, ready.recv()).await {
            Ok(Some(ok)) => {
                reported += 1;
                connected += usize::from(ok);
            }
            Ok(None) | Err(_) => break,
        }
        if count >= 1000 && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            log(format_args!(
                "{connected}/{count} subscribed ({reported} tried)"
            ));
        }
    }
    shared.connect_window_closed.store(true, Ordering::Release);
    while let Ok(ok) = ready.try_recv() {
        connected += usize::from(ok);
    }
    log(format_args!(
        "{connected}/{count} subscribers subscribed in {:.2} s",
        started.elapsed().as_secs_f64()
    ));
    Subscribers {
        connected,
        shutdown,
        tasks,
    }
}

async fn run_stream_only(
    args: &Args,
    client: &reqwest::Client,
    base_url: &str,
    run_id: &str,
    connections: usize,
) -> anyhow::Result<StreamOnlyReport> {
    log(format_args!("run {run_id}: provisioning on {base_url}"));
    let provisioned =
        provision::provision(client, base_url, &args.admin_token, run_id, None).await?;
    log(format_args!("workspace {}", provisioned.workspace_id));
    let server_pid = find_server_pid(base_url, args.server_pid);
    let (server_rss, own_rss) = rss_probes(server_pid);
    let target = Arc::new(
        StreamTarget::new(
            base_url,
            &provisioned.agent_token,
            connections,
            args.source_ips,
            IDLE_READ_BUFFER,
            Duration::from_secs_f64(args.request_timeout.max(1.0)),
        )
        .await?,
    );
    if target.source_ips() > 1 {
        log(format_args!(
            "spreading connections over source addresses 127.0.0.1-127.0.0.{}",
            target.source_ips()
        ));
    }
    let errors = Arc::new(ErrorCounts::default());
    let shared = Arc::new(StreamShared::new(
        run_id,
        Arc::new(Tracker::new(Instant::now())),
        None,
        1,
        Arc::clone(&errors),
        args.connect_parallelism,
    ));
    let rss_before = settled_rss(server_rss.as_ref()).await;
    let started = Instant::now();
    let subscribers = open_subscribers(connections, &target, &shared).await;
    let connect_s = started.elapsed().as_secs_f64();
    let connected = subscribers.connected;
    let rss_after = settled_rss(server_rss.as_ref()).await;
    let client_rss = own_rss.as_ref().and_then(RssProbe::rss_bytes);
    subscribers.stop().await;
    Ok(StreamOnlyReport {
        run_id: run_id.to_owned(),
        requested: connections,
        connections: connected,
        errors: errors.snapshot(),
        connect_s,
        server_pid,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        client_rss_bytes: client_rss,
    })
}

/// Prints sent/acked/deltas once a second to stderr until aborted.
fn spawn_progress(
    stats: Arc<SendStats>,
    shared: Arc<StreamShared>,
    errors: Arc<ErrorCounts>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        let mut previous_acked = 0;
        loop {
            ticker.tick().await;
            let acked = stats.acked.load(Ordering::Relaxed);
            log(format_args!(
                "t={:.0}s sent={} acked={} (+{}/s) errors={} deltas={}",
                started.elapsed().as_secs_f64(),
                stats.sent.load(Ordering::Relaxed),
                acked,
                acked - previous_acked,
                errors.total(),
                shared.matched.load(Ordering::Relaxed),
            ));
            previous_acked = acked;
        }
    })
}

/// Starts the reply workers; returns the planner senders consult, the workers' task and
/// the reply counters.
fn start_replies(
    plan: cli::Replies,
    planned_measured: Option<u64>,
    context: ReplyContext,
    request_timeout: Duration,
) -> (
    Arc<ReplyPlanner>,
    tokio::task::JoinHandle<()>,
    Arc<ReplyStats>,
) {
    let stats = Arc::clone(&context.stats);
    let (planner, jobs) = ReplyPlanner::new(
        plan,
        planned_measured,
        Arc::clone(&stats),
        Arc::clone(&context.errors),
    );
    let workers = tokio::spawn(replies::run_workers(
        jobs,
        Arc::new(context),
        REPLY_PARALLELISM,
        request_timeout + Duration::from_secs(1),
    ));
    (Arc::new(planner), workers, stats)
}

/// Where the measured phase began, and what the pacer reports.
struct SendPhase {
    measure_start: Instant,
    not_sent: u64,
    pacer_lag: Percentiles,
}

/// Sends the webhooks of the warmup and measured phases at `--rate`.
async fn send_webhooks(
    args: &Args,
    sender: &Arc<WebhookSender>,
    planned_measured: Option<u64>,
    request_timeout: Duration,
) -> SendPhase {
    let start = Instant::now();
    match args.rate {
        Rate::PerSecond(rate) => {
            let warmup_count = webhook::planned_count(rate, args.warmup);
            let total = warmup_count + planned_measured.unwrap_or(0);
            log(format_args!(
                "sending {total} webhooks at {rate} msg/s ({warmup_count} warmup) over {} conversations",
                args.conversations
            ));
            let measure_start = start + webhook::intended_offset(warmup_count, rate);
            let pacing = Pacing {
                rate,
                warmup_count,
                total,
                start,
                max_in_flight: args.max_in_flight,
                deadline: start + webhook::intended_offset(total, rate) + request_timeout,
                drain_timeout: request_timeout + Duration::from_secs(1),
            };
            let outcome = webhook::run_paced(Arc::clone(sender), pacing).await;
            SendPhase {
                measure_start,
                not_sent: outcome.not_sent,
                pacer_lag: Percentiles::of(&outcome.lag),
            }
        }
        Rate::Max => {
            log(format_args!(
                "sending webhooks as fast as acknowledged, {} in flight, for {} s (+{} s warmup) over {} conversations",
                args.concurrency, args.duration, args.warmup, args.conversations
            ));
            let measure_start = start + Duration::from_secs_f64(args.warmup);
            webhook::run_max(
                Arc::clone(sender),
                args.concurrency,
                measure_start,
                measure_start + Duration::from_secs_f64(args.duration),
            )
            .await;
            SendPhase {
                measure_start,
                not_sent: 0,
                pacer_lag: Percentiles::default(),
            }
        }
    }
}

async fn run_load(
    args: &Args,
    client: &reqwest::Client,
    base_url: &str,
    run_id: &str,
) -> anyhow::Result<LoadReport> {
    let graph = graph_stub::start(run_id).await?;
    log(format_args!(
        "run {run_id}: provisioning on {base_url} (Graph API stand-in at {})",
        graph.base_url
    ));
    let provisioned = provision::provision(
        client,
        base_url,
        &args.admin_token,
        run_id,
        Some(&graph.base_url),
    )
    .await?;
    let channel = provisioned
        .channel
        .context("provisioning returned no channel")?;
    log(format_args!(
        "workspace {} channel {}",
        provisioned.workspace_id, channel.id
    ));
    if args.ai {
        provision::enable_ai(
            client,
            base_url,
            &provisioned.agent_token,
            args.ai_reply_delay_ms,
        )
        .await?;
        log(format_args!("the built-in AI agent answers every message"));
    }
    let server_pid = find_server_pid(base_url, args.server_pid);
    let (server_rss, own_rss) = rss_probes(server_pid);
    let rss_before = server_rss.as_ref().and_then(RssProbe::rss_bytes);
    let server_cpu = server_pid.and_then(CpuProbe::of_pid).map(Arc::new);
    let own_cpu = CpuProbe::of_self().map(Arc::new);
    let request_timeout = Duration::from_secs_f64(args.request_timeout.max(0.1));
    let duration = Duration::from_secs_f64(args.duration);

    let tracker = Arc::new(Tracker::new(Instant::now()));
    let errors = Arc::new(ErrorCounts::default());
    let directory = args
        .replies
        .map(|_| Arc::new(Directory::new(args.conversations)));

    let target = Arc::new(
        StreamTarget::new(
            base_url,
            &provisioned.agent_token,
            args.subscribers,
            args.source_ips,
            LOAD_READ_BUFFER,
            request_timeout.max(Duration::from_secs(1)),
        )
        .await?,
    );
    let shared = Arc::new(StreamShared::new(
        run_id,
        Arc::clone(&tracker),
        directory.clone(),
        args.conversations,
        Arc::clone(&errors),
        args.connect_parallelism,
    ));
    let subscribers = open_subscribers(args.subscribers, &target, &shared).await;

    let planned_measured = match args.rate {
        Rate::PerSecond(rate) => Some(webhook::planned_count(rate, args.duration)),
        Rate::Max => None,
    };
    let replies = match (args.replies, &directory) {
        (Some(plan), Some(directory)) => Some(start_replies(
            plan,
            planned_measured,
            ReplyContext {
                client: client.clone(),
                base_url: base_url.to_owned(),
                agent_token: provisioned.agent_token.clone(),
                run_id: run_id.to_owned(),
                directory: Arc::clone(directory),
                learning_from_stream: subscribers.connected > 0,
                stats: Arc::new(ReplyStats::default()),
                errors: Arc::clone(&errors),
                last_listing: tokio::sync::Mutex::new(None),
            },
            request_timeout,
        )),
        _ => None,
    };
    let (planner, reply_workers, reply_stats) = match replies {
        Some((planner, workers, stats)) => (Some(planner), Some(workers), Some(stats)),
        None => (None, None, None),
    };

    let stats = Arc::new(SendStats::new());
    let sender = Arc::new(WebhookSender {
        client: client.clone(),
        url: format!("{base_url}/webhooks/whatsapp/{}", channel.id),
        builder: PayloadBuilder::new(&channel.phone_number_id, run_id, &channel.app_secret)?,
        conversations: args.conversations,
        tracker: Arc::clone(&tracker),
        stats: Arc::clone(&stats),
        errors: Arc::clone(&errors),
        replies: planner,
    });
    let progress = spawn_progress(Arc::clone(&stats), Arc::clone(&shared), Arc::clone(&errors));

    // CPU time is read when the measured phase begins (after the warmup) and once every
    // delta has arrived, so it covers all the work for the measured messages.
    let cpu_at_start = {
        let (server, own) = (server_cpu.clone(), own_cpu.clone());
        let warmup = Duration::from_secs_f64(args.warmup);
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            (
                server.and_then(|p| p.cpu_seconds()),
                own.and_then(|p| p.cpu_seconds()),
            )
        })
    };
    let SendPhase {
        measure_start,
        not_sent,
        pacer_lag,
    } = send_webhooks(args, &sender, planned_measured, request_timeout).await;
    // The reply queue closes once the last sender reference is gone.
    drop(sender);

    let acked = stats.acked.load(Ordering::Relaxed);
    let expected = acked * subscribers.connected as u64;
    log(format_args!(
        "sending done; waiting up to {} s for {expected} deltas",
        args.drain
    ));
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while shared.matched.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(workers) = reply_workers {
        let bound = request_timeout * 2 + Duration::from_secs(2);
        if tokio::time::timeout(bound, workers).await.is_err() {
            errors.add("reply_workers_timeout");
        }
    }
    progress.abort();
    let (server_cpu_start, own_cpu_start) = cpu_at_start.await.unwrap_or((None, None));
    let cpu_used = |probe: &Option<Arc<CpuProbe>>, start: Option<f64>| {
        Some(probe.as_ref()?.cpu_seconds()? - start?)
    };
    let server_cpu_s = cpu_used(&server_cpu, server_cpu_start);
    let client_cpu_s = cpu_used(&own_cpu, own_cpu_start);

    let rss_after = server_rss.as_ref().and_then(RssProbe::rss_bytes);
    let client_rss = own_rss.as_ref().and_then(RssProbe::rss_bytes);
    let subscribers_connected = subscribers.connected;
    let delta_kinds = subscribers.stop().await;
    let audit = tracker.audit(
        stats.issued.load(Ordering::Relaxed),
        u32::try_from(subscribers_connected).unwrap_or(u32::MAX),
    );

    let last_ack = tracker.instant_at(stats.last_ack_nanos.load(Ordering::Relaxed));
    let window_end = (measure_start + duration).max(last_ack);
    let elapsed = window_end
        .saturating_duration_since(measure_start)
        .as_secs_f64();
    let lock_percentiles = |hist: &std::sync::Mutex<hdrhistogram::Histogram<u64>>| {
        Percentiles::of(
            &hist
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    };
    let reply_counts =
        |pick: fn(&replies::ReplyStats) -> u64| reply_stats.as_deref().map_or(0, pick);
    Ok(LoadReport {
        run_id: run_id.to_owned(),
        target_rate: match args.rate {
            Rate::PerSecond(rate) => Some(rate),
            Rate::Max => None,
        },
        concurrency: (args.rate == Rate::Max).then_some(args.concurrency),
        duration_s: args.duration,
        warmup_s: args.warmup,
        elapsed_s: elapsed,
        conversations: args.conversations,
        subscribers: args.subscribers,
        subscribers_connected,
        sent: stats.sent.load(Ordering::Relaxed),
        acked,
        not_sent,
        errors: errors.snapshot(),
        rate: if elapsed > 0.0 {
            acked as f64 / elapsed
        } else {
            0.0
        },
        webhook: Percentiles::of(&stats.latency.merged()),
        webhook_service: Percentiles::of(&stats.service.merged()),
        pacer_lag,
        delta: lock_percentiles(&shared.delta_primary),
        delta_all: Percentiles::of(&shared.delta_all.merged()),
        delta_after_ack: lock_percentiles(&shared.delta_after_ack),
        deltas_received: shared.matched.load(Ordering::Relaxed),
        deltas_expected: expected,
        deltas_duplicate: audit.duplicates,
        messages_under_delivered: audit.under_delivered,
        messages_never_delivered: if subscribers_connected > 0 {
            audit.never_delivered
        } else {
            0
        },
        delta_kinds,
        resyncs: shared.resyncs.load(Ordering::Relaxed),
        resumes: shared.resumes.load(Ordering::Relaxed),
        replies_planned: reply_counts(|s| s.planned.load(Ordering::Relaxed)),
        replies_sent: reply_counts(|s| s.sent.load(Ordering::Relaxed)),
        replies_accepted: reply_counts(|s| s.accepted.load(Ordering::Relaxed)),
        replies_seen_on_stream: shared.replies_seen.load(Ordering::Relaxed),
        reply: reply_stats
            .as_deref()
            .map_or_else(Percentiles::default, |s| {
                Percentiles::of(&s.latency.merged())
            }),
        graph_api_requests: graph.requests(),
        server_pid,
        server_rss_before_bytes: rss_before,
        server_rss_bytes: rss_after,
        server_cpu_s,
        client_cpu_s,
        client_rss_bytes: client_rss,
    })
}
