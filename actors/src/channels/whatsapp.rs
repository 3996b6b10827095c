//! The WhatsApp Cloud API adapter: one channel per phone number. The wire format is
//! `confab_engine::wire::whatsapp` (pure functions); this adds the Graph API call.

use std::collections::HashMap;

use confab_engine::ids::ChannelId;
use confab_engine::model::WhatsappConfig;
use confab_engine::port::{InboundBatch, OutboundRequest, SendOutcome};
use confab_engine::wire::whatsapp::{self as wire, WireError};
use reqwest::header::HeaderMap;

use super::adapter::{media_answer, Adapter, MediaError, MediaFuture, Refusal, SendFuture};
use super::provider_answer;

pub struct Whatsapp {
    channel_id: ChannelId,
    config: WhatsappConfig,
    /// `{api_base_url}/{phone_number_id}/messages`
    send_url: String,
}

impl Whatsapp {
    pub fn new(channel_id: ChannelId, config: WhatsappConfig) -> Whatsapp {
        let send_url = format!(
            "{}/{}/messages",
            config.api_base_url.trim_end_matches('/'),
            config.phone_number_id
        );
        Whatsapp {
            channel_id,
            config,
            send_url,
        }
    }
}

impl Adapter for Whatsapp {
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        let signature = headers
            .get(wire::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        wire::verify_signature(&self.config.app_secret, body, signature).map_err(|e| match e {
            WireError::MissingSignature => {
                Refusal::unauthenticated("missing_signature", e.to_string())
            }
            _ => Refusal::unauthenticated("invalid_signature", e.to_string()),
        })
    }

    fn handshake(&self, query: &HashMap<String, String>) -> Option<String> {
        wire::verify_handshake(
            query.get("hub.mode").map(String::as_str),
            query.get("hub.verify_token").map(String::as_str),
            query.get("hub.challenge").map(String::as_str),
            &self.config.verify_token,
        )
    }

    fn parse(&self, body: &[u8]) -> Result<InboundBatch, Refusal> {
        wire::inbound_batch(body, self.channel_id, &self.config.phone_number_id)
            .map_err(|e| Refusal::malformed("not_a_webhook", e.to_string()))
    }

    fn send<'a>(
        &'a self,
        http: &'a reqwest::Client,
        request: &'a OutboundRequest,
    ) -> SendFuture<'a> {
        Box::pin(async move {
            let body = wire::text_message_body(&request.thread, &request.text);
            let request = http
                .post(&self.send_url)
                .bearer_auth(&self.config.access_token)
                .json(&body);
            let answer = match provider_answer(request).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
            match wire::classify_send(answer.status, &answer.body) {
                SendOutcome::RateLimited { reason, .. } => SendOutcome::RateLimited {
                    reason,
                    retry_after: answer.retry_after,
                },
                outcome => outcome,
            }
        })
    }

    /// Two Graph API calls: `GET {api_base_url}/{media-id}` names a short-lived URL, which
    /// is fetched with the same bearer token.
    fn fetch_media<'a>(&'a self, http: &'a reqwest::Client, media_id: &'a str) -> MediaFuture<'a> {
        Box::pin(async move {
            let mut url = reqwest::Url::parse(&self.config.api_base_url)
                .map_err(|e| MediaError::Unavailable(format!("bad api_base_url: {e}")))?;
            url.path_segments_mut()
                .map_err(|()| MediaError::Unavailable("bad api_base_url".into()))?
                .pop_if_empty()
                .push(media_id);
            let answer = media_answer(http.get(url).bearer_auth(&self.config.access_token))
                .await?
                .bytes()
                .await
                .map_err(|e| MediaError::Unavailable(format!("reading the media answer: {e}")))?;
            let location = wire::parse_media_location(&answer)
                .ok_or_else(|| MediaError::Unavailable("the media answer names no URL".into()))?;
            media_answer(
                http.get(&location.url)
                    .bearer_auth(&self.config.access_token),
            )
            .await
        })
    }
}
