//! Command-line interface of `confab-load`: flag definitions, their help text and the
//! parsers for the few flags whose values are not plain numbers.

use clap::Parser;

/// Webhook pacing: a fixed open-loop rate or as fast as the server answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Messages per second, scheduled by intended send time (open loop).
    PerSecond(f64),
    /// Closed loop: `--concurrency` requests always in flight.
    Max,
}

/// How many agent replies to send through the REST API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Replies {
    /// Reply to this fraction of acknowledged inbound messages (0.0..=1.0).
    Ratio(f64),
    /// Send exactly this many replies in total (spread over the run when the rate is fixed).
    Count(u64),
}

/// Highest accepted `--rate`; far beyond what one machine can ingest, but keeps the
/// schedule arithmetic away from float edge cases.
const MAX_RATE: f64 = 10_000_000.0;

/// Parses `--rate`: `max` or a positive number of messages per second.
pub fn parse_rate(raw: &str) -> Result<Rate, String> {
    if raw.trim().eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let rate: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("expected messages per second or `max`, got `{raw}`"))?;
    if !(0.001..=MAX_RATE).contains(&rate) {
        return Err(format!(
            "rate must be between 0.001 and {MAX_RATE} msg/s, got {rate}"
        ));
    }
    Ok(Rate::PerSecond(rate))
}

/// Parses `--replies`: a value with a decimal point (or below 1) is a ratio of acknowledged
/// inbound messages, a whole number >= 1 is an absolute count.
pub fn parse_replies(raw: &str) -> Result<Replies, String> {
    let raw = raw.trim();
    let looks_fractional = raw.contains(['.', 'e', 'E']);
    if !looks_fractional {
        if let Ok(count) = raw.parse::<u64>() {
            return Ok(Replies::Count(count));
        }
    }
    let ratio: f64 = raw
        .parse()
        .map_err(|_| format!("expected a ratio like 0.1 or a count like 500, got `{raw}`"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("reply ratio must be within 0.0..=1.0, got {ratio}"));
    }
    Ok(Replies::Ratio(ratio))
}

/// Parses a non-negative number of seconds (fractions allowed).
pub fn parse_secs(raw: &str) -> Result<f64, String> {
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("expected seconds, got `{raw}`"))?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("seconds must be within 0..=86400, got {secs}"));
    }
    Ok(secs)
}

/// Parses a count that must be at least one.
pub fn parse_positive(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number, got `{raw}`")),
    }
}

const LONG_ABOUT: &str = "\
Load generator for Confab. It provisions a fresh workspace, an admin agent and a WhatsApp \
channel through the admin API, starts a loopback stand-in for the WhatsApp Graph API (so \
outbound replies succeed), opens --subscribers WebSocket subscribers, then posts signed \
WhatsApp webhooks at --rate across --conversations leads for --duration seconds. Every \
message text carries a unique marker, so the `message_created` delta seen by subscribers is \
matched to the send instant. It reports webhook acknowledgement latency, delta latency, \
deltas received versus expected, the achieved ingest rate and the server's RSS.

With --stream-only K it instead opens K idle authenticated WebSocket subscribers and reports \
the server's memory per connection.

The run is bounded in time and stops by itself. Progress goes to stderr; the report goes to \
stdout, and with --json its last line is one JSON object.

Many sockets need many file descriptors: the tool raises its own soft RLIMIT_NOFILE to the \
hard limit (via prlimit(1) when available); if that is not enough run `ulimit -n 65536` \
first. 'Too many open files' failures are counted as `*_emfile` errors.";

/// `confab-load` flags. Outside checks use these names exactly.
#[derive(Debug, Clone, Parser)]
#[command(name = "confab-load", version, about = "Load generator for the Confab engine", long_about = LONG_ABOUT)]
pub struct Args {
    /// Base URL of the Confab server (http only for the WebSocket stream).
    #[arg(long, env = "CONFAB_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Server admin token (the server's CONFAB_ADMIN_TOKEN), used only to provision.
    #[arg(long, env = "CONFAB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,

    /// Target webhook rate in messages per second, or `max` for as fast as the server
    /// acknowledges with --concurrency requests in flight. Fixed rates are open loop:
    /// each message has an intended send time and webhook latency is measured from it,
    /// so a stalling server cannot hide its latency (no coordinated omission).
    #[arg(long, value_name = "MSGS_PER_S|max", default_value = "1000", value_parser = parse_rate)]
    pub rate: Rate,

    /// Length of the measured sending phase in seconds (after --warmup).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub duration: f64,

    /// Number of WebSocket subscribers (agent token, `since: null`) receiving deltas.
    /// Delta latency percentiles (delta_p*) use the first subscriber to subscribe;
    /// delta_all_p* and deltas_received cover all of them. A subscriber the server closes
    /// as too slow (4008) reconnects with `since` set to its last offset, as the protocol
    /// asks; `resumes` counts those reconnections.
    #[arg(long, value_name = "N", default_value = "1")]
    pub subscribers: usize,

    /// Number of distinct leads (WhatsApp wa_ids, hence conversations) the messages are
    /// spread over, round-robin.
    #[arg(long, value_name = "M", default_value = "100", value_parser = parse_positive)]
    pub conversations: usize,

    /// Also print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,

    /// Agent replies through `POST /api/v1/conversations/{id}/messages` after inbound
    /// messages are acknowledged: a ratio of acknowledged inbound messages (e.g. `0.1`,
    /// `1.0`) or, as a whole number, an absolute count (e.g. `500`).
    #[arg(long, value_name = "RATIO_OR_COUNT", value_parser = parse_replies)]
    pub replies: Option<Replies>,
    /// Enable the workspace's built-in AI agent (no daily reply limit) with a knowledge
    /// article that matches the load's messages, so the AI answers every message: compare
    /// ingest with and without it. Its decisions are in `/metrics`
    /// (`confab_ai_decisions_total`, `confab_ai_decision_seconds`).
    #[arg(long)]
    pub ai: bool,
    /// With --ai: the agent's quiet period (`reply_delay_ms`): 0 answers as soon as it
    /// can (the most AI work), 1500 is the product's default.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub ai_reply_delay_ms: u64,

    /// Instead of the message load, open K idle subscribed WebSocket connections and
    /// report the server's RSS before and after, and bytes per connection.
    #[arg(long, value_name = "K")]
    pub stream_only: Option<usize>,

    /// In-flight webhook requests with `--rate max` (closed loop).
    #[arg(long, value_name = "C", default_value = "64", value_parser = parse_positive)]
    pub concurrency: usize,

    /// Seconds of load at the target rate before measuring; their messages are excluded
    /// from every count and histogram.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    pub warmup: f64,

    /// Upper bound on in-flight webhook requests with a fixed --rate. When reached the
    /// sender waits, and the wait shows up in the latency (measured from intended time).
    #[arg(long, value_name = "N", default_value = "4096", value_parser = parse_positive)]
    pub max_in_flight: usize,

    /// After sending, wait at most this many seconds for outstanding deltas.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub drain: f64,

    /// Timeout of every HTTP request, in seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub request_timeout: f64,

    /// PID of the server process for RSS readings. By default it is found through the
    /// listening port in /proc when --url points at a local address.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Loopback source addresses (127.0.0.1, 127.0.0.2, ...) to spread WebSocket
    /// connections over, to get past the ephemeral port range with very many sockets.
    /// Default: one per 20,000 connections, and only for a 127.x.x.x server address.
    #[arg(long, value_name = "N")]
    pub source_ips: Option<u8>,

    /// WebSocket handshakes in flight at once while opening subscribers.
    #[arg(long, value_name = "N", default_value = "256", value_parser = parse_positive)]
    pub connect_parallelism: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_accepts_numbers_and_max() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("MAX"), Ok(Rate::Max));
        assert_eq!(parse_rate("2500"), Ok(Rate::PerSecond(2500.0)));
        assert_eq!(parse_rate("0.5"), Ok(Rate::PerSecond(0.5)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("NaN").is_err());
    }

    #[test]
    fn replies_distinguish_ratio_and_count() {
        assert_eq!(parse_replies("0.25"), Ok(Replies::Ratio(0.25)));
        assert_eq!(parse_replies("1.0"), Ok(Replies::Ratio(1.0)));
        assert_eq!(parse_replies("1"), Ok(Replies::Count(1)));
        assert_eq!(parse_replies("500"), Ok(Replies::Count(500)));
        assert!(parse_replies("1.5").is_err());
        assert!(parse_replies("many").is_err());
    }

    #[test]
    fn the_documented_command_line_parses() {
        let args = Args::try_parse_from([
            "confab-load",
            "--url",
            "http://127.0.0.1:8080",
            "--admin-token",
            "secret",
            "--rate",
            "max",
            "--duration",
            "30",
            "--subscribers",
            "4",
            "--conversations",
            "1000",
            "--json",
            "--replies",
            "0.1",
            "--concurrency",
            "128",
            "--warmup",
            "5",
        ]);
        let args = match args {
            Ok(args) => args,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(args.rate, Rate::Max);
        assert_eq!(args.subscribers, 4);
        assert_eq!(args.conversations, 1000);
        assert_eq!(args.replies, Some(Replies::Ratio(0.1)));
        assert!(args.json);

        let stream_only = Args::try_parse_from([
            "confab-load",
            "--admin-token",
            "t",
            "--stream-only",
            "10000",
        ]);
        assert!(matches!(stream_only, Ok(a) if a.stream_only == Some(10_000)));
    }
}
