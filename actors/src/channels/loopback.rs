//! A test-only provider (feature `loopback`): a trivial JSON format over HTTP, so the
//! end-to-end tests prove the channel port and the generic connector without any real
//! provider's name. The whole adapter is this file: what adding a provider costs.
//!
//! Webhook (`Authorization: Bearer <secret>`):
//! `{"messages":[{"id","from","name"?,"email"?,"text"}],"statuses":[{"id","status","error"?}],
//!   "account":"connected"|"disconnected"|"auth_failed"?}`.
//! Send: `POST {base_url}/send` with the same bearer, body `{"to","text"}`; the provider
//! answers `200 {"id"}`, `401` (credentials refused), `429` (slow down, `Retry-After`),
//! `5xx` (try again) or another `4xx {"error"}` (never).

use confab_engine::ids::ChannelId;
use confab_engine::inbound::InboundEvent;
use confab_engine::model::{Delivery, LoopbackConfig};
use confab_engine::port::{AccountEvent, InboundBatch, OutboundRequest, SendOutcome, StatusReport};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::adapter::{Adapter, Refusal, SendFuture};
use super::provider_answer;

pub struct Loopback {
    channel_id: ChannelId,
    config: LoopbackConfig,
}

impl Loopback {
    pub fn new(channel_id: ChannelId, config: LoopbackConfig) -> Loopback {
        Loopback { channel_id, config }
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Adapter for Loopback {
    fn verify(&self, headers: &HeaderMap, _body: &[u8]) -> Result<(), Refusal> {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => Err(Refusal::unauthenticated(
                "missing_signature",
                "no bearer token",
            )),
            Some(token) if bool::from(token.as_bytes().ct_eq(self.config.secret.as_bytes())) => {
                Ok(())
            }
            Some(_) => Err(Refusal::unauthenticated(
                "invalid_signature",
                "wrong bearer token",
            )),
        }
    }

    fn parse(&self, body: &[u8]) -> Result<InboundBatch, Refusal> {
        let root: Value = serde_json::from_slice(body)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| Refusal::malformed("not_a_webhook", "not a JSON object"))?;
        let mut batch = InboundBatch::default();
        let items = |key: &str| {
            root.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        for m in items("messages") {
            let (Some(id), Some(from)) = (text(&m, "id"), text(&m, "from")) else {
                batch.rejected += 1;
                continue;
            };
            batch.messages.push(InboundEvent {
                channel_id: self.channel_id,
                thread: from.clone(),
                provider_message_id: id,
                contact_name: text(&m, "name"),
                contact_phone: None,
                contact_email: text(&m, "email"),
                contact_profile: Some(from),
                sent_at: 0,
                text: text(&m, "text").unwrap_or_default(),
                content_type: None,
                raw: None,
                reply_to: None,
                campaign: None,
                received: None,
                details: Default::default(),
                attachments: Vec::new(),
            });
        }
        for s in items("statuses") {
            let status = match text(&s, "status").as_deref() {
                Some("sent") => Delivery::Sent,
                Some("delivered") => Delivery::Delivered,
                Some("read") => Delivery::Read,
                Some("failed") => Delivery::Failed,
                _ => {
                    batch.rejected += 1;
                    continue;
                }
            };
            let Some(id) = text(&s, "id") else {
                batch.rejected += 1;
                continue;
            };
            batch.statuses.push(StatusReport {
                provider_message_id: id,
                status,
                error: text(&s, "error"),
                at: 0,
            });
        }
        match text(&root, "account").as_deref() {
            Some("connected") => batch.account.push(AccountEvent::Connected),
            Some("disconnected") => batch.account.push(AccountEvent::Disconnected {
                reason: "the provider reports the account disconnected".into(),
            }),
            Some("auth_failed") => batch.account.push(AccountEvent::AuthFailed {
                reason: "the provider refuses the account's credentials".into(),
            }),
            _ => {}
        }
        Ok(batch)
    }

    fn send<'a>(
        &'a self,
        http: &'a reqwest::Client,
        request: &'a OutboundRequest,
    ) -> SendFuture<'a> {
        Box::pin(async move {
            let url = format!("{}/send", self.config.base_url.trim_end_matches('/'));
            let request = http
                .post(url)
                .bearer_auth(&self.config.secret)
                .json(&json!({"to": request.thread, "text": request.text}));
            let answer = match provider_answer(request).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
            let (status, after) = (answer.status, answer.retry_after);
            let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            let reason = text(&body, "error").unwrap_or_else(|| format!("HTTP {status}"));
            match status {
                200..=299 => match text(&body, "id") {
                    Some(provider_id) => SendOutcome::Accepted {
                        provider_id,
                        thread: None,
                    },
                    None => SendOutcome::Permanent {
                        code: "no_message_id".into(),
                        reason: "the answer carries no message id".into(),
                    },
                },
                401 => SendOutcome::AuthFailed { reason },
                429 => SendOutcome::RateLimited {
                    reason,
                    retry_after: after,
                },
                500.. => SendOutcome::Retryable {
                    reason,
                    retry_after: after,
                },
                _ => SendOutcome::Permanent {
                    code: format!("http_{status}"),
                    reason,
                },
            }
        })
    }
}
