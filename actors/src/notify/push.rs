//! Web Push: the server's VAPID key (RFC 8292), made once and kept in the store, and the
//! worker that delivers the `push_outbox` — each notification to each of the agent's
//! subscriptions, encrypted for it (RFC 8291, `aes128gcm`) and signed (a VAPID JWT), by
//! the `web-push-native` crate; sent with our HTTP client (RFC 8030). An entry leaves the outbox
//! when the push service accepted it, refused it for good, or the subscription expired
//! (404/410: the subscription is removed too); other failures are retried with backoff
//! until the entry is older than the push TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::delta::NotificationReason;
use confab_engine::notify::{Notification, PushEntry, PushSubscription, META_VAPID_KEY};
use confab_engine::store::Store;
use confab_engine::time::UnixMillis;
use futures_util::StreamExt;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256KeyPair};
use web_push_native::p256::PublicKey;
use web_push_native::{Auth, WebPushBuilder};

use crate::clock::SharedClock;
use crate::error::{ActorError, ActorResult};

/// Entries read per look.
const SCAN: usize = 10_000;
/// Pushes in flight at once.
const CONCURRENCY: usize = 16;
const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;
/// Longest a push service may take to answer one push.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct PushSettings {
    /// The VAPID `sub` claim: how push services reach the operator (`mailto:` or https).
    pub subject: String,
    /// How long a push service keeps a notification for an offline device, and how long
    /// we retry one it did not take.
    pub ttl: Duration,
    /// Allow subscriptions whose endpoint is on a private or loopback address (tests, a
    /// self-hosted push service).
    pub allow_private: bool,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            subject: "mailto:admin@localhost".into(),
            ttl: Duration::from_secs(24 * 3600),
            allow_private: false,
        }
    }
}

/// The server's VAPID key pair.
#[derive(Clone)]
pub struct Vapid {
    key: Arc<ES256KeyPair>,
    /// The public key as browsers take it (`applicationServerKey`): the uncompressed
    /// P-256 point, base64url without padding.
    pub public_key: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Vapid {
    fn from_private(bytes: &[u8]) -> Option<Vapid> {
        let key = ES256KeyPair::from_bytes(bytes).ok()?;
        let public_key = b64(&key.public_key().public_key().to_bytes_uncompressed());
        Some(Vapid {
            key: Arc::new(key),
            public_key,
        })
    }

    /// The store's key pair, made (and stored) on first use.
    pub async fn load_or_create(store: &Store, committer: &Committer) -> ActorResult<Vapid> {
        let reader = store.clone();
        let stored = tokio::task::spawn_blocking(move || reader.vapid_key())
            .await
            .map_err(|e| ActorError::Unavailable(e.to_string()))??;
        if let Some(bytes) = stored {
            return Vapid::from_private(&bytes).ok_or_else(|| {
                ActorError::Unavailable("the stored VAPID key is not a P-256 private key".into())
            });
        }
        // A random scalar is a valid key but for a vanishing few values: draw again then.
        let (bytes, vapid) = loop {
            let bytes: [u8; 32] = rand::random();
            if let Some(vapid) = Vapid::from_private(&bytes) {
                break (bytes, vapid);
            }
        };
        let mut set = WriteSet::new();
        set.require_absent(Ks::Meta, META_VAPID_KEY.to_vec())
            .put_raw(Ks::Meta, META_VAPID_KEY.to_vec(), bytes.to_vec());
        match committer.commit(set).await {
            Ok(_) => Ok(vapid),
            // Made at the same time elsewhere: that one is the key.
            Err(confab_engine::Error::AlreadyExists) => {
                Box::pin(Vapid::load_or_create(store, committer)).await
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Why a push endpoint is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefused {
    #[error("a push endpoint is an https URL")]
    NotHttps,
    #[error("{0} is a private or local address (allowed only with the server's `notifications.allow_private_push`)")]
    Private(String),
}

/// Whether `endpoint` may receive pushes: https (http only where private addresses are
/// allowed), and not a private or local address unless allowed.
pub fn check_endpoint(endpoint: &str, settings: &PushSettings) -> Result<(), EndpointRefused> {
    let url = reqwest::Url::parse(endpoint).map_err(|_| EndpointRefused::NotHttps)?;
    match url.scheme() {
        "https" => {}
        "http" if settings.allow_private => {}
        _ => return Err(EndpointRefused::NotHttps),
    }
    if !settings.allow_private {
        if let Some(host) = crate::ai::openai::private_host(&url) {
            return Err(EndpointRefused::Private(host.to_owned()));
        }
    }
    Ok(())
}

/// What one worker needs.
pub struct PushWorker {
    pub store: Store,
    pub committer: Committer,
    pub clock: SharedClock,
    pub vapid: Vapid,
    pub settings: PushSettings,
    pub http: reqwest::Client,
    pub public_url: String,
    pub tick: Duration,
}

/// How one delivery went.
enum Outcome {
    Sent,
    /// The subscription is no more (404/410): it goes too.
    Gone,
    /// Refused for good (a bad request, a payload too large, keys that do not work).
    Rejected,
    Retry(String),
}

fn count(outcome: &'static str) {
    metrics::counter!(crate::metrics::NOTIFICATION_DELIVERIES, "channel" => "push", "outcome" => outcome)
        .increment(1);
}

impl PushWorker {
    pub async fn run(self) {
        let mut backoff: HashMap<Vec<u8>, (u32, UnixMillis)> = HashMap::new();
        let ttl_ms = i64::try_from(self.settings.ttl.as_millis()).unwrap_or(i64::MAX);
        loop {
            let now = self.clock.now();
            let store = self.store.clone();
            let entries = tokio::task::spawn_blocking(move || {
                let mut work = Vec::new();
                for entry in store.push_outbox(SCAN)? {
                    let subscription = store.get::<PushSubscription>(
                        Ks::PushSub,
                        &catalogue::push_sub(entry.agent_id, entry.subscription_id),
                    )?;
                    let notification = store.notification(entry.agent_id, entry.notification_id)?;
                    work.push((entry, subscription, notification));
                }
                Ok::<_, confab_engine::Error>(work)
            })
            .await;
            let entries = match entries {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the push outbox");
                    Vec::new()
                }
                Err(_) => return,
            };
            let live: Vec<Vec<u8>> = entries.iter().map(|(e, _, _)| key(e)).collect();
            backoff.retain(|k, _| live.contains(k));
            let due: Vec<_> = entries
                .into_iter()
                .filter(|(e, _, _)| backoff.get(&key(e)).is_none_or(|(_, next)| *next <= now))
                .collect();
            let worker = &self;
            let results: Vec<(PushEntry, Option<PushSubscription>, Outcome)> =
                futures_util::stream::iter(due)
                    .map(|(entry, subscription, notification)| async move {
                        let outcome = match (&subscription, &notification) {
                            (Some(s), Some(n)) if now - entry.created_at <= ttl_ms => {
                                worker.deliver(s, n).await
                            }
                            // No subscription, no notification, or too old to matter.
                            _ => Outcome::Rejected,
                        };
                        (entry, subscription, outcome)
                    })
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
            let mut set = WriteSet::new();
            for (entry, subscription, outcome) in results {
                let k = key(&entry);
                match outcome {
                    Outcome::Sent => count("sent"),
                    Outcome::Gone => {
                        count("expired");
                        if let Some(s) = subscription {
                            set.delete(Ks::PushSub, catalogue::push_sub(s.agent_id, s.id));
                        }
                    }
                    Outcome::Rejected => count("rejected"),
                    Outcome::Retry(reason) => {
                        count("retry");
                        tracing::debug!(reason, "a push will be retried");
                        let failures = backoff.get(&k).map_or(1, |(n, _)| n + 1);
                        let wait = (2_000i64 << failures.min(9)).min(MAX_BACKOFF_MS);
                        backoff.insert(k, (failures, now + wait));
                        continue;
                    }
                }
                backoff.remove(&k);
                set.delete(Ks::PushOutbox, k);
            }
            if !set.is_empty() {
                if let Err(e) = self.committer.commit(set).await {
                    tracing::warn!(error = %e, "cannot clear delivered pushes");
                }
            }
            super::pause(&self.clock, self.tick).await;
        }
    }

    async fn deliver(&self, subscription: &PushSubscription, n: &Notification) -> Outcome {
        if check_endpoint(&subscription.endpoint, &self.settings).is_err() {
            return Outcome::Rejected;
        }
        let base = self.public_url.trim_end_matches('/');
        let payload = serde_json::json!({
            "title": n.title,
            "body": n.body,
            "url": format!("{base}/#/conversations/{}", n.conversation_id),
            "notification_id": n.id,
            "conversation_id": n.conversation_id,
            "reason": n.reason,
        })
        .to_string();
        // Keys that do not make a message (a malformed p256dh) never will.
        let engine = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let keys = (
            engine
                .decode(&subscription.p256dh)
                .ok()
                .and_then(|k| PublicKey::from_sec1_bytes(&k).ok()),
            engine
                .decode(&subscription.auth)
                .ok()
                .filter(|a| a.len() == 16),
            subscription.endpoint.parse().ok(),
        );
        let (Some(public), Some(auth), Some(endpoint)) = keys else {
            return Outcome::Rejected;
        };
        // The TTL is also the VAPID token's lifetime, which RFC 8292 caps at 24 hours.
        let valid = self.settings.ttl.min(Duration::from_secs(24 * 3600));
        let request = WebPushBuilder::new(endpoint, public, Auth::clone_from_slice(&auth))
            .with_valid_duration(valid)
            .with_vapid(&self.vapid.key, &self.settings.subject)
            .build(payload);
        let Ok(request) = request else {
            return Outcome::Rejected;
        };
        let urgency = match n.reason {
            NotificationReason::NewMessage | NotificationReason::NewConversation => "normal",
            _ => "high",
        };
        let (parts, body) = request.into_parts();
        let outgoing = self
            .http
            .post(subscription.endpoint.as_str())
            .timeout(PUSH_TIMEOUT)
            .headers(parts.headers)
            .header("urgency", urgency)
            .body(body);
        match outgoing.send().await {
            Ok(response) => match response.status().as_u16() {
                200..=299 => Outcome::Sent,
                404 | 410 => Outcome::Gone,
                429 | 500..=599 => {
                    Outcome::Retry(format!("push service answered {}", response.status()))
                }
                _ => Outcome::Rejected,
            },
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

fn key(entry: &PushEntry) -> Vec<u8> {
    catalogue::push_outbox(entry.notification_id, entry.subscription_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_public_https_unless_private_ones_are_allowed() {
        let strict = PushSettings::default();
        assert_eq!(
            check_endpoint("https://fcm.googleapis.com/fcm/send/x", &strict),
            Ok(())
        );
        assert_eq!(
            check_endpoint("http://push.example.com/x", &strict),
            Err(EndpointRefused::NotHttps)
        );
        assert_eq!(
            check_endpoint("not a url", &strict),
            Err(EndpointRefused::NotHttps)
        );
        let refused = check_endpoint("https://10.0.0.7/x", &strict).expect_err("private");
        assert_eq!(refused, EndpointRefused::Private("10.0.0.7".into()));
        assert!(refused
            .to_string()
            .contains("notifications.allow_private_push"));
        let open = PushSettings {
            allow_private: true,
            ..PushSettings::default()
        };
        assert_eq!(check_endpoint("http://127.0.0.1:9/push", &open), Ok(()));
    }
}
