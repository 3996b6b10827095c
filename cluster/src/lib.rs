//! Confab on several nodes, on NATS JetStream (issue 18; ARCHITECTURE.md, "Scale-out").
//!
//! This crate holds what every node of a cluster shares: the connection to the NATS
//! servers and the JetStream streams Confab keeps there ([`Cluster::connect`]), the
//! partition of a provider thread ([`partition_of`]), the partition leases that give each
//! partition one owner at a time, with an epoch that fences a former owner's late writes
//! ([`lease::Leases`]), and the inbound log a webhook is acknowledged after
//! ([`Cluster::publish_inbound`]).
//!
//! Written for Debian's nats-server 2.9 (the one the tests run): its JetStream has
//! clustering, key-value buckets and per-subject sequences, but a compare-and-set that is
//! not serialised on replicated streams (nats-server #4320, fixed in 2.9.21), so a lease is
//! only ever taken with a create (atomic there), and every lease carries an epoch.

pub mod changelog;
pub mod lease;
mod partition;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;

pub use partition::partition_of;

/// The key-value bucket of the partition leases and the nodes' liveness keys.
pub const LEASE_BUCKET: &str = "confab-leases";
/// The stream of verified inbound items, one subject per partition.
pub const INBOUND_STREAM: &str = "confab-inbound";
/// Subjects of [`INBOUND_STREAM`]: this, a dot, the partition number.
pub const INBOUND_SUBJECT: &str = "confab.inbound";
/// The changelog: committed write sets every node applies ([`changelog::Changelog`]).
pub const CHANGES_STREAM: &str = "confab-changes";
/// Subjects of [`CHANGES_STREAM`]: this, a dot, the partition number.
pub const CHANGES_SUBJECT: &str = "confab.changes";

/// How a node joins the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster: letters, digits, `-` and `_`, at most 64.
    pub node_id: String,
    /// NATS servers to connect to (any of them; the client learns the others).
    pub urls: Vec<String>,
    /// Fixed number of partitions; every node of a cluster must use the same.
    pub partitions: u16,
    /// JetStream replicas of Confab's streams (3 in a 3-server NATS cluster).
    pub replicas: usize,
    /// A lease not renewed for this long lapses, and another node may take the partition.
    pub lease_ttl: Duration,
    /// How often a holder renews its leases.
    pub renew_every: Duration,
    /// A holder stops writing this long before its lease could lapse on the server.
    pub lease_margin: Duration,
    /// How often a node looks for partitions without an owner.
    pub poll_every: Duration,
    /// How long a webhook's publish to the inbound log keeps retrying (through a NATS
    /// leader election) before the webhook is answered 503.
    pub publish_patience: Duration,
    /// How long inbound items are kept in the log.
    pub inbound_max_age: Duration,
    /// Connect only to `urls`, not to the other servers they announce (for servers that
    /// announce addresses this node cannot reach).
    pub only_listed_servers: bool,
}

impl ClusterConfig {
    /// The defaults of docs/CONFIG.md for a node named `node_id`.
    pub fn new(node_id: impl Into<String>, urls: Vec<String>) -> Self {
        Self {
            node_id: node_id.into(),
            urls,
            partitions: 64,
            replicas: 3,
            lease_ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(3),
            lease_margin: Duration::from_secs(3),
            poll_every: Duration::from_secs(1),
            publish_patience: Duration::from_secs(15),
            inbound_max_age: Duration::from_secs(7 * 24 * 3600),
            only_listed_servers: false,
        }
    }

    /// Checks what would make the cluster misbehave, before connecting.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let id_ok = !self.node_id.is_empty()
            && self.node_id.len() <= 64
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(ClusterError::Config(format!(
                "cluster.node_id {:?} must be 1 to 64 letters, digits, '-' or '_'",
                self.node_id
            )));
        }
        if self.urls.is_empty() {
            return Err(ClusterError::Config(
                "cluster.urls names no NATS server".into(),
            ));
        }
        if self.partitions == 0 {
            return Err(ClusterError::Config(
                "cluster.partitions must be at least 1".into(),
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err(ClusterError::Config(
                "cluster.replicas must be 1 to 5".into(),
            ));
        }
        // The holder must renew at least twice before it stops writing, and stop writing
        // before the server could let the lease lapse.
        if self.lease_margin.is_zero()
            || self.lease_margin >= self.lease_ttl
            || self.renew_every * 2 > self.lease_ttl - self.lease_margin
        {
            return Err(ClusterError::Config(format!(
                "cluster lease timing: need 0 < lease_margin ({:?}) < lease_ttl ({:?}) and \
                 2 × renew_every ({:?}) ≤ lease_ttl − lease_margin",
                self.lease_margin, self.lease_ttl, self.renew_every
            )));
        }
        if self.renew_every.is_zero() || self.poll_every.is_zero() {
            return Err(ClusterError::Config(
                "cluster.renew_every and cluster.poll_every must be above 0".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster configuration: {0}")]
    Config(String),
    #[error("cannot reach NATS: {0}")]
    Connect(String),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("the inbound log did not acknowledge within {0:?}: {1}")]
    Unavailable(Duration, String),
}

/// Aborts a background task when its last handle is dropped.
pub(crate) struct TaskGuard(pub(crate) tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Distinct per process start (wall-clock nanoseconds and the process id), so that a
/// restarted node does not take its former self's lease or message ids for its own.
pub(crate) fn incarnation() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", nanos, std::process::id())
}

/// A node's handle on the cluster: the NATS connection and Confab's streams.
#[derive(Clone)]
pub struct Cluster {
    config: ClusterConfig,
    client: async_nats::Client,
    js: jetstream::Context,
}

/// What the inbound log answered for an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The item's sequence in [`INBOUND_STREAM`].
    pub sequence: u64,
    /// True when the log already held an item with the same id (a provider's retry within
    /// the duplicate window, or our own earlier attempt that was stored though its
    /// acknowledgement was lost): nothing new was stored.
    pub duplicate: bool,
}

impl Cluster {
    /// Connects to NATS and makes sure Confab's streams exist (the first node creates
    /// them; the others find them and check they were made with the same lease timing).
    pub async fn connect(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        config.validate()?;
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("confab-{}", config.node_id))
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)));
        if config.only_listed_servers {
            options = options.ignore_discovered_servers();
        }
        let client = options
            .connect(config.urls.as_slice())
            .await
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .build(client.clone());
        let cluster = Cluster { config, client, js };
        cluster.ensure_streams().await?;
        Ok(cluster)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    async fn ensure_streams(&self) -> Result<(), ClusterError> {
        let c = &self.config;
        // The lease bucket's stream, made by hand: async-nats 0.46's `create_key_value`
        // reads account fields nats-server 2.9 does not send. This is the layout a
        // key-value bucket has (one value per key), with `max_age` as the lease time:
        // a key not written for that long is gone, and can be created anew.
        // The partition count is the cluster's: a node counting differently would route
        // threads to other partitions than its peers. It is written into the bucket's
        // description by the first node and checked by every other.
        let shape = format!("confab leases; partitions={}", c.partitions);
        let leases = self
            .create_stream(stream::Config {
                name: format!("KV_{LEASE_BUCKET}"),
                description: Some(shape.clone()),
                subjects: vec![format!("$KV.{LEASE_BUCKET}.>")],
                max_messages_per_subject: 1,
                max_age: c.lease_ttl,
                num_replicas: c.replicas,
                discard: stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        if leases.description.as_deref() != Some(shape.as_str()) {
            return Err(ClusterError::Config(format!(
                "cluster.partitions is {} here, but the running cluster says {:?}: every node must use the same",
                c.partitions,
                leases.description.unwrap_or_default()
            )));
        }
        if leases.max_age != c.lease_ttl {
            return Err(ClusterError::Config(format!(
                "cluster.lease_ttl is {:?} here but {:?} in the running cluster: every node must use the same",
                c.lease_ttl, leases.max_age
            )));
        }
        self.create_stream(stream::Config {
            name: INBOUND_STREAM.into(),
            subjects: vec![format!("{INBOUND_SUBJECT}.*")],
            num_replicas: c.replicas,
            max_age: c.inbound_max_age,
            // A provider's retry of an item the log holds is found by its id this long.
            duplicate_window: Duration::from_secs(600).min(c.inbound_max_age),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            ..Default::default()
        })
        .await?;
        self.create_stream(stream::Config {
            name: CHANGES_STREAM.into(),
            subjects: vec![format!("{CHANGES_SUBJECT}.*")],
            num_replicas: c.replicas,
            // Kept until snapshots let a new node start without it (a later step).
            max_age: Duration::ZERO,
            duplicate_window: Duration::from_secs(120),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    /// Creates the stream, or finds it: its configuration as the cluster has it.
    async fn create_stream(&self, config: stream::Config) -> Result<stream::Config, ClusterError> {
        let name = config.name.clone();
        let deadline = Instant::now() + self.config.publish_patience;
        loop {
            match self.js.get_or_create_stream(config.clone()).await {
                Ok(mut stream) => {
                    return stream
                        .info()
                        .await
                        .map(|info| info.config.clone())
                        .map_err(|e| ClusterError::JetStream(format!("stream {name}: {e}")));
                }
                // A cluster that has just started may not have elected its JetStream
                // leader yet.
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(stream = %name, error = %e, "waiting for JetStream");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(ClusterError::JetStream(format!("stream {name}: {e}"))),
            }
        }
    }

    /// Appends a verified inbound item (a webhook's message for one thread) to the log of
    /// its partition, and waits until JetStream acknowledges it: stored on a majority of
    /// the servers. `item_id` identifies the item at its provider (the channel and the
    /// provider's message id): a retry with the same id within the duplicate window is
    /// reported as a duplicate and not stored twice. Through a NATS leader election the
    /// publish is retried with the same id for up to `publish_patience`.
    pub async fn publish_inbound(
        &self,
        partition: u16,
        item_id: &str,
        payload: Bytes,
    ) -> Result<Published, ClusterError> {
        if partition >= self.config.partitions {
            return Err(ClusterError::Config(format!(
                "partition {partition} is not below cluster.partitions ({})",
                self.config.partitions
            )));
        }
        self.publish_durably(format!("{INBOUND_SUBJECT}.{partition}"), item_id, payload)
            .await
    }

    /// Publishes `payload` to `subject` with the id `id` and waits for JetStream's
    /// acknowledgement, retrying with the same id (so never storing it twice within the
    /// stream's duplicate window) through elections for up to `publish_patience`.
    pub(crate) async fn publish_durably(
        &self,
        subject: String,
        id: &str,
        payload: Bytes,
    ) -> Result<Published, ClusterError> {
        let deadline = Instant::now() + self.config.publish_patience;
        let mut pause = Duration::from_millis(50);
        loop {
            let attempt = async {
                self.js
                    .send_publish(
                        subject.clone(),
                        jetstream::message::PublishMessage::build()
                            .payload(payload.clone())
                            .message_id(id),
                    )
                    .await?
                    .await
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(left, attempt).await {
                Err(_) => {
                    return Err(ClusterError::Unavailable(
                        self.config.publish_patience,
                        "no acknowledgement in time".into(),
                    ))
                }
                Ok(Ok(ack)) => {
                    return Ok(Published {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    })
                }
                Ok(Err(e)) => e,
            };
            // "No responders" (a stream leader being elected), a timeout (the item may
            // be stored: the same id makes the retry safe) and a broken connection pass;
            // anything else is an answer.
            let transient = matches!(
                error.kind(),
                PublishErrorKind::StreamNotFound
                    | PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe
                    | PublishErrorKind::MaxAckPending
            );
            if !transient {
                return Err(ClusterError::JetStream(error.to_string()));
            }
            if Instant::now() + pause > deadline {
                return Err(ClusterError::Unavailable(
                    self.config.publish_patience,
                    error.to_string(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}
