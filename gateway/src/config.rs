//! Configuration: defaults, then a TOML file (`--config`), then `CONFAB_*` environment
//! variables, then command-line flags; later sources win.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use confab_engine::committer::Durability;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Where the store (and later the index) live.
    pub data_dir: PathBuf,
    /// Token for `/api/v1/admin/*`; admin routes are disabled when unset.
    pub admin_token: Option<String>,
    /// `fsync` (default) or `buffered`.
    pub durability: Durability,
    /// Block cache of the store, in MiB.
    pub cache_mb: u64,
    /// Largest request body accepted (WhatsApp sends up to 3 MB).
    pub max_body_bytes: usize,
    /// Serve `/metrics` on this address instead of on `listen` (e.g. a private interface).
    pub metrics_listen: Option<SocketAddr>,
    /// When set, `/metrics` requires `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
    /// Once the store is poisoned, the process exits (non-zero) after this many seconds,
    /// during which `/readyz` reports why; 0 exits at once.
    pub poisoned_exit_grace_secs: u64,
    pub http: HttpConfig,
    pub conversations: ConversationsConfig,
    pub stream: StreamConfig,
    pub whatsapp: WhatsappConfig,
    pub channels: ChannelsConfig,
    pub ai: AiPoolConfig,
    pub search: SearchConfig,
    pub auth: AuthConfig,
    pub email: EmailConfig,
    pub linkedin: LinkedinConfig,
    pub notifications: NotificationsConfig,
    pub retention: RetentionConfig,
    pub webhooks: WebhooksConfig,
}

/// Outgoing webhooks' delivery.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// An endpoint failing this long without a success is disabled.
    pub disable_after_secs: u64,
    /// First wait after a failure; it doubles per failure up to `max_backoff_ms`.
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Time allowed for one delivery.
    pub timeout_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            disable_after_secs: 3600,
            min_backoff_ms: 1000,
            max_backoff_ms: 300_000,
            timeout_ms: 10_000,
        }
    }
}

/// Workspaces' retention (each sets its own `retention_days`; see docs/OPERATIONS.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Between two retention passes (the first runs at start).
    pub interval_secs: u64,
    /// Where archives go (`<archive_dir>/<workspace id>/…jsonl`); default
    /// `<data_dir>/archive`.
    pub archive_dir: Option<PathBuf>,
    /// Days conversations' activity and the admin audit are kept (`None`: for ever).
    pub audit_days: Option<u32>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval_secs: 3600,
            archive_dir: None,
            audit_days: None,
        }
    }
}

/// Agents' notifications: links, the mail relay of notification emails, Web Push.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// The inbox's address as agents reach it, for links in emails and pushes
    /// (`https://inbox.example.com`); default `http://` and the listening address.
    pub public_url: Option<String>,
    /// The mail relay of notification emails; without one, nobody gets notification
    /// emails (the settings say so).
    pub email: Option<NotificationEmailConfig>,
    /// The VAPID `sub` claim: how push services reach the operator (`mailto:` or https).
    pub push_subject: String,
    /// How long a push service keeps a notification for an offline device (and how
    /// long an undelivered push is retried).
    pub push_ttl_secs: u64,
    /// Accept push subscriptions whose endpoint is on a private or loopback address, over
    /// plain http too (tests, a self-hosted push service).
    pub allow_private_push: bool,
    /// How often delivery workers and timers look for work, in milliseconds.
    pub tick_ms: u64,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            email: None,
            push_subject: "mailto:admin@localhost".into(),
            push_ttl_secs: 24 * 3600,
            allow_private_push: false,
            tick_ms: 1000,
        }
    }
}

/// The SMTP relay notification emails leave through.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationEmailConfig {
    pub host: String,
    pub port: u16,
    /// `starttls`, `tls`, or `none` (loopback only, unless `email.allow_insecure`).
    pub security: confab_engine::model::MailSecurity,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// `From:` of notification emails: `Confab <notify@example.com>`.
    pub from: String,
    /// An agent gets at most one notification email per this many seconds: what happens
    /// meanwhile joins it.
    #[serde(default = "default_batch_secs")]
    pub batch_secs: u64,
}

fn default_batch_secs() -> u64 {
    180
}

/// LinkedIn channels (through Unipile).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkedinConfig {
    /// Between two gap repairs of an account (one also runs at start and when the
    /// account runs again): its chats' recent messages are read back from Unipile.
    pub repair_interval_secs: u64,
    /// Each repair also reads back this much before the previous one.
    pub repair_overlap_secs: u64,
}

impl Default for LinkedinConfig {
    fn default() -> Self {
        Self {
            repair_interval_secs: 300,
            repair_overlap_secs: 600,
        }
    }
}

/// Email channels.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// Whether channels may use `security: "none"` (no TLS) with a mail server that is not
    /// on loopback: their passwords would cross the network in clear.
    pub allow_insecure: bool,
    /// Largest message taken, by webhook or from IMAP (attachments included), in bytes.
    pub max_message_bytes: usize,
    /// Between two reads of a connected mailbox whose server has no IDLE.
    pub poll_interval_secs: u64,
    /// Longest an IMAP IDLE lasts before it is renewed.
    pub idle_timeout_secs: u64,
    /// A mailbox read for the first time (or renumbered) is imported back this many days.
    pub first_sync_days: u32,
    /// First reconnect delay of a mailbox, doubled per failure up to `max_backoff_secs`.
    pub reconnect_ms: u64,
    pub max_backoff_secs: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            allow_insecure: false,
            max_message_bytes: 25 * 1024 * 1024,
            poll_interval_secs: 60,
            idle_timeout_secs: 25 * 60,
            first_sync_days: 30,
            reconnect_ms: 1_000,
            max_backoff_secs: 300,
        }
    }
}

/// Browser sign-in.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Marks the session cookie `Secure` (sent over HTTPS only): set it when the server is
    /// reached through a TLS proxy. A request whose `X-Forwarded-Proto` is `https` gets a
    /// `Secure` cookie either way.
    pub secure_cookies: bool,
}

/// Limits of the HTTP edge: how long a client may take to send a request, how large its
/// head may be.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection whose request head (request line and headers) has not fully arrived
    /// this long after the connection opened, or after its previous response, is closed.
    pub header_read_timeout_secs: u64,
    /// A request body not fully received this long after its head answers 408
    /// `request_timeout`.
    pub body_read_timeout_secs: u64,
    /// Longest request target (path and query) accepted; longer answers 414 `uri_too_long`.
    pub max_uri_bytes: usize,
    /// Most header bytes (names, values and separators) accepted; more answers 431
    /// `headers_too_large`.
    pub max_header_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversationsConfig {
    /// A conversation actor idle this long is passivated.
    pub idle_timeout_secs: u64,
    /// Most conversation actors alive at once; the least recently used go first.
    pub max_live: usize,
    /// Restarts of one crashed conversation actor allowed per window.
    pub restart_budget: u32,
    pub restart_window_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Frames queued for one client before it is considered too slow and closed.
    pub queue_capacity: usize,
    /// Largest frame or message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Ping interval; a client silent for three intervals is closed.
    pub ping_interval_secs: u64,
    /// Deltas kept for resuming clients; older ones are pruned.
    pub retention_deltas: u64,
    /// Browser origins (`scheme://host[:port]`) allowed to open the stream besides the
    /// server's own (same-origin); `"*"` allows any. Requests without `Origin` (non-browser
    /// clients) are always allowed.
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhatsappConfig {
    /// Send attempts before an outbound message is marked failed.
    pub max_send_attempts: u32,
    /// Messages per second per phone number (Meta's default is 80).
    pub messages_per_second: u32,
}

/// The AI agent pool (per process; each workspace configures its agent through the API).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AiPoolConfig {
    /// AI decisions made at once.
    pub concurrency: usize,
    /// Lead messages waiting for the pool; past it conversations escalate to people.
    pub queue_depth: usize,
    /// Longest an OpenAI-compatible backend may take per attempt.
    pub backend_timeout_ms: u64,
    /// Attempts at the backend before escalating with `ai_backend_unavailable`.
    pub backend_attempts: u32,
    /// Whether workspaces may point the `openai` backend at private or local addresses
    /// (a model served on this machine or network). Off: such URLs are refused, and
    /// names that resolve to such addresses are not connected to.
    pub allow_private_backends: bool,
    /// AI decisions a second at most, over all workspaces (0: no limit): the pool's share
    /// of the machine, so that ingest keeps its speed whatever the AI has to do.
    pub max_decisions_per_second: u32,
}

impl Default for AiPoolConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            queue_depth: 10_000,
            backend_timeout_ms: 20_000,
            backend_attempts: 3,
            allow_private_backends: false,
            max_decisions_per_second: 200,
        }
    }
}

/// Every channel's connector, whatever its provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    /// First retry delay of a failed send; doubled per attempt, with jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay, and how long sends pause once the circuit opens.
    pub retry_max_ms: u64,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            retry_base_ms: 250,
            retry_max_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Longest a durable message waits before it is committed to the search index.
    pub commit_interval_ms: u64,
    /// Commit the index at once when this many deltas are waiting.
    pub commit_docs: usize,
    /// The index writer's memory budget, in MiB.
    pub writer_memory_mb: usize,
    /// Indexing threads.
    pub writer_threads: usize,
    /// A search running longer than this answers 503 `search_timeout`.
    pub timeout_ms: u64,
    /// Searches running at once; more answer 503 `search_busy` at once.
    pub max_concurrent: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            commit_interval_ms: 200,
            commit_docs: 10_000,
            writer_memory_mb: 64,
            writer_threads: 1,
            timeout_ms: 2_000,
            max_concurrent: 8,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./confab-data"),
            admin_token: None,
            durability: Durability::Fsync,
            cache_mb: 64,
            max_body_bytes: 4 * 1024 * 1024,
            metrics_listen: None,
            metrics_token: None,
            poisoned_exit_grace_secs: 10,
            http: HttpConfig::default(),
            conversations: ConversationsConfig::default(),
            stream: StreamConfig::default(),
            whatsapp: WhatsappConfig::default(),
            channels: ChannelsConfig::default(),
            ai: AiPoolConfig::default(),
            auth: AuthConfig::default(),
            search: SearchConfig::default(),
            email: EmailConfig::default(),
            linkedin: LinkedinConfig::default(),
            notifications: NotificationsConfig::default(),
            retention: RetentionConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
        }
    }
}

impl Default for ConversationsConfig {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 300,
            max_live: 200_000,
            restart_budget: 5,
            restart_window_secs: 60,
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 16_384,
            max_message_bytes: 64 * 1024,
            ping_interval_secs: 20,
            retention_deltas: 1_000_000,
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for WhatsappConfig {
    fn default() -> Self {
        Self {
            max_send_attempts: 6,
            messages_per_second: 80,
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))
    }

    /// Applies `CONFAB_LISTEN`, `CONFAB_DATA_DIR`, `CONFAB_ADMIN_TOKEN`, `CONFAB_DURABILITY`,
    /// `CONFAB_METRICS_LISTEN`, `CONFAB_METRICS_TOKEN`.
    pub fn apply_env(&mut self) -> anyhow::Result<()> {
        self.apply_vars(|name| std::env::var(name).ok())
    }

    /// [`Config::apply_env`] over any source of variables.
    fn apply_vars(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(listen) = var("CONFAB_LISTEN") {
            self.listen = listen
                .parse()
                .map_err(|e| anyhow::anyhow!("CONFAB_LISTEN={listen:?}: {e}"))?;
        }
        if let Some(dir) = var("CONFAB_DATA_DIR") {
            self.data_dir = PathBuf::from(dir);
        }
        if let Some(token) = var("CONFAB_ADMIN_TOKEN") {
            self.admin_token = Some(token).filter(|t| !t.is_empty());
        }
        if let Some(listen) = var("CONFAB_METRICS_LISTEN") {
            self.metrics_listen = if listen.is_empty() {
                None
            } else {
                Some(
                    listen
                        .parse()
                        .map_err(|e| anyhow::anyhow!("CONFAB_METRICS_LISTEN={listen:?}: {e}"))?,
                )
            };
        }
        if let Some(token) = var("CONFAB_METRICS_TOKEN") {
            self.metrics_token = Some(token).filter(|t| !t.is_empty());
        }
        if let Some(mode) = var("CONFAB_DURABILITY") {
            self.durability = match mode.as_str() {
                "fsync" => Durability::Fsync,
                "buffered" => Durability::Buffered,
                other => {
                    anyhow::bail!("CONFAB_DURABILITY must be fsync or buffered, not {other:?}")
                }
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_toml_file_keeps_the_other_defaults() {
        let config: Config =
            toml::from_str("listen = \"0.0.0.0:9000\"\n[conversations]\nmax_live = 10\n")
                .expect("parse");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.conversations.max_live, 10);
        assert_eq!(config.conversations.idle_timeout_secs, 300);
        assert_eq!(config.data_dir, PathBuf::from("./confab-data"));
    }

    #[test]
    fn edge_settings_are_read_from_the_file() {
        let config: Config = toml::from_str(
            "metrics_listen = \"127.0.0.1:9100\"\nmetrics_token = \"t\"\npoisoned_exit_grace_secs = 0\n\
             [http]\nbody_read_timeout_secs = 5\n\
             [stream]\nallowed_origins = [\"https://app.example.com\"]\n",
        )
        .expect("parse");
        assert_eq!(config.metrics_listen.map(|a| a.port()), Some(9100));
        assert_eq!(config.metrics_token.as_deref(), Some("t"));
        assert_eq!(config.poisoned_exit_grace_secs, 0);
        assert_eq!(config.http.body_read_timeout_secs, 5);
        assert_eq!(config.http.header_read_timeout_secs, 10);
        assert_eq!(config.stream.allowed_origins, ["https://app.example.com"]);
    }

    #[test]
    fn metrics_settings_come_from_the_environment() {
        let vars = |name: &str| match name {
            "CONFAB_METRICS_LISTEN" => Some("127.0.0.1:9100".to_string()),
            "CONFAB_METRICS_TOKEN" => Some("scrape-me".to_string()),
            _ => None,
        };
        let mut config = Config::default();
        config.apply_vars(vars).expect("valid");
        assert_eq!(
            config.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        assert_eq!(config.metrics_token.as_deref(), Some("scrape-me"));
        let mut config = Config::default();
        let bad = |name: &str| (name == "CONFAB_METRICS_LISTEN").then(|| "nowhere".to_string());
        assert!(config.apply_vars(bad).is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("listn = \"0.0.0.0:9000\"").is_err());
    }
}
