//! Outgoing webhooks: a workspace admin registers a URL and the kinds of change it wants;
//! Confab POSTs each such delta of the workspace to it, in offset order (so in order per
//! conversation), signed with HMAC-SHA256, the delta's offset as its stable id. The delta
//! log is the durable queue: an endpoint is a cursor over it (`cursor`, the last offset it
//! acknowledged or skipped), stored with the endpoint, and the log is not pruned past the
//! slowest enabled endpoint. After sustained failure the endpoint is disabled (visible,
//! re-enabled by an admin); an admin can replay from any offset still retained.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::catalogue::Ks;
use crate::codec;
use crate::error::Result;
use crate::ids::{WebhookId, WorkspaceId};
use crate::store::Store;
use crate::time::UnixMillis;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body with the endpoint's secret>`.
pub const SIGNATURE_HEADER: &str = "x-confab-signature";
/// The header carrying the delta's offset: the delivery's stable id (a retry or a replay
/// repeats it).
pub const DELIVERY_HEADER: &str = "x-confab-delivery";
/// The header naming the endpoint.
pub const WEBHOOK_HEADER: &str = "x-confab-webhook";

/// The delta kinds a webhook can carry (agents' own notifications are not among them).
pub const KINDS: [&str; 7] = [
    "conversation_created",
    "conversation_updated",
    "conversation_removed",
    "message_created",
    "message_updated",
    "messages_removed",
    "channel_updated",
];

/// Most endpoints per workspace.
pub const MAX_ENDPOINTS: usize = 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: WebhookId,
    pub workspace_id: WorkspaceId,
    pub url: String,
    /// Signs each body; shown once, when the endpoint is made.
    pub secret: String,
    /// Delta kinds delivered (`message_created` …); empty: every kind.
    pub kinds: Vec<String>,
    pub created_at: UnixMillis,
    /// The last offset delivered (acknowledged with a 2xx) or skipped (not a wanted kind).
    pub cursor: u64,
    /// Failed attempts in a row.
    pub failures: u32,
    /// When the current run of failures began.
    pub failing_since: Option<UnixMillis>,
    pub last_error: Option<String>,
    pub last_delivered_at: Option<UnixMillis>,
    /// Set when sustained failure disabled it (or an admin did): why and when.
    pub disabled: Option<Disabled>,
    /// Bumped by each admin change: a delivery in flight under an older generation does
    /// not write its progress over the change.
    pub generation: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub at: UnixMillis,
    pub reason: String,
}

impl Endpoint {
    /// Whether a delta of `kind` is for this endpoint.
    pub fn wants(&self, kind: &str) -> bool {
        KINDS.contains(&kind) && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
    }
}

pub fn key(ws: WorkspaceId, id: WebhookId) -> Vec<u8> {
    let mut key = ws.to_bytes().to_vec();
    key.extend_from_slice(&id.to_bytes());
    key
}

/// `sha256=<hex>` of `body` with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A workspace's endpoints, oldest first.
pub fn endpoints(store: &Store, ws: WorkspaceId) -> Result<Vec<Endpoint>> {
    store
        .ks(Ks::Webhook)
        .prefix(ws.to_bytes())
        .map(|kv| codec::decode(&kv.value()?))
        .collect()
}

/// Every workspace's endpoints.
pub fn all(store: &Store) -> Result<Vec<Endpoint>> {
    store
        .ks(Ks::Webhook)
        .iter()
        .map(|kv| codec::decode(&kv.value()?))
        .collect()
}

pub fn endpoint(store: &Store, ws: WorkspaceId, id: WebhookId) -> Result<Option<Endpoint>> {
    store
        .ks(Ks::Webhook)
        .get(key(ws, id))?
        .map(|v| codec::decode(&v))
        .transpose()
}

/// The lowest cursor of the enabled endpoints: the delta log keeps what is after it.
pub fn slowest_cursor(store: &Store) -> Result<Option<u64>> {
    Ok(all(store)?
        .iter()
        .filter(|e| e.disabled.is_none())
        .map(|e| e.cursor)
        .min())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
