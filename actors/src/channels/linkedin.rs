//! The LinkedIn adapter, through Unipile: one channel per connected LinkedIn account. The
//! wire format is `confab_engine::wire::unipile` (pure functions); this adds Unipile's
//! HTTP calls (sends as multipart forms, attachments) and the gap repair that reads back
//! what webhooks missed.
//!
//! Gap repair: Unipile does not guarantee its webhooks, and sends none while an account is
//! not running. So when the connector starts, when the account runs again, and every
//! `repair_interval`, the chats active since the last repair are listed and their messages
//! since then read back (cursor pages) and handed to the connector as one batch: the
//! same routing and the same dedupe (the provider message id) as a webhook, so a message
//! that came by webhook, by repair or by both is stored once. The cursor moves only once
//! everything read is durable.

use std::time::{Duration, Instant};

use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::WriteSet;
use confab_engine::ids::ChannelId;
use confab_engine::inbound::InboundEvent;
use confab_engine::model::LinkedinConfig;
use confab_engine::port::{InboundBatch, OutboundRequest, SendOutcome};
use confab_engine::time::{to_rfc3339, UnixMillis};
use confab_engine::wire::unipile::{self as wire, ListedChat, UnipileError};
use reqwest::header::HeaderMap;
use reqwest::multipart::{Form, Part};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::adapter::{media_answer, Adapter, MediaError, MediaFuture, Refusal, SendFuture};
use super::connector::Inbound;
use super::provider_answer;

pub struct Linkedin {
    channel_id: ChannelId,
    config: LinkedinConfig,
}

impl Linkedin {
    pub fn new(channel_id: ChannelId, config: LinkedinConfig) -> Linkedin {
        Linkedin { channel_id, config }
    }
}

/// `{api_base_url}/api/v1/` and then `segments`, each escaped as a path segment.
fn api_url(config: &LinkedinConfig, segments: &[&str]) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(&config.api_base_url)
        .map_err(|e| format!("the channel's api_base_url is not a URL: {e}"))?;
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| "the channel's api_base_url cannot take a path".to_owned())?;
        path.pop_if_empty().push("api").push("v1");
        for segment in segments {
            path.push(segment);
        }
    }
    Ok(url)
}

/// The send's form: the text, the files, and for a new chat the account and the lead.
fn send_form(account_id: &str, request: &OutboundRequest) -> Result<Form, String> {
    let mut form = Form::new().text("text", request.text.clone());
    if let Some(lead) = &request.start_with {
        form = form
            .text("account_id", account_id.to_owned())
            .text("attendees_ids", lead.clone());
    }
    for file in &request.attachments {
        let part = Part::bytes(file.bytes.clone())
            .file_name(file.name.clone().unwrap_or_else(|| "attachment".into()))
            .mime_str(&file.content_type)
            .map_err(|e| format!("attachment type {:?}: {e}", file.content_type))?;
        form = form.part("attachments", part);
    }
    Ok(form)
}

impl Adapter for Linkedin {
    fn verify(&self, headers: &HeaderMap, _body: &[u8]) -> Result<(), Refusal> {
        let header = headers.get(wire::AUTH_HEADER).and_then(|v| v.to_str().ok());
        wire::verify_secret(&self.config.webhook_secret, header).map_err(|e| match e {
            UnipileError::MissingSecret => {
                Refusal::unauthenticated("missing_secret", e.to_string())
            }
            _ => Refusal::unauthenticated("invalid_secret", e.to_string()),
        })
    }

    fn parse(&self, body: &[u8]) -> Result<InboundBatch, Refusal> {
        wire::inbound_batch(body, self.channel_id, &self.config.account_id)
            .map_err(|e| Refusal::malformed("not_a_webhook", e.to_string()))
    }

    /// A reply goes to the chat (`POST /chats/{chat_id}/messages`); a conversation we
    /// start has no chat yet, so its first message opens one (`POST /chats`).
    fn send<'a>(
        &'a self,
        http: &'a reqwest::Client,
        request: &'a OutboundRequest,
    ) -> SendFuture<'a> {
        Box::pin(async move {
            let url = match &request.start_with {
                Some(_) => api_url(&self.config, &["chats"]),
                None => api_url(&self.config, &["chats", &request.thread, "messages"]),
            };
            let prepared =
                url.and_then(|url| Ok((url, send_form(&self.config.account_id, request)?)));
            let (url, form) = match prepared {
                Ok(prepared) => prepared,
                Err(reason) => {
                    return SendOutcome::Permanent {
                        code: "invalid_request".into(),
                        reason,
                    }
                }
            };
            let call = http
                .post(url)
                .header(wire::API_KEY_HEADER, &self.config.api_key)
                .header(reqwest::header::ACCEPT, "application/json")
                .multipart(form);
            match provider_answer(call).await {
                Ok(answer) => wire::classify_send(answer.status, &answer.body, answer.retry_after),
                Err(outcome) => outcome,
            }
        })
    }

    /// `media_id` is `{message id}/{attachment id}`:
    /// `GET /api/v1/messages/{message_id}/attachments/{attachment_id}`.
    fn fetch_media<'a>(&'a self, http: &'a reqwest::Client, media_id: &'a str) -> MediaFuture<'a> {
        Box::pin(async move {
            let Some((message, attachment)) = media_id.split_once('/') else {
                return Err(MediaError::Gone);
            };
            let url = api_url(
                &self.config,
                &["messages", message, "attachments", attachment],
            )
            .map_err(MediaError::Unavailable)?;
            media_answer(
                http.get(url)
                    .header(wire::API_KEY_HEADER, &self.config.api_key),
            )
            .await
        })
    }
}

/// How LinkedIn channels repair gaps in their webhooks.
#[derive(Clone, Debug)]
pub struct RepairSettings {
    /// Between two repairs (one also runs at start and when an account runs again).
    pub interval: Duration,
    /// Read back this much before the last repair too: clocks and webhooks lag.
    pub overlap: Duration,
    /// Items asked per page.
    pub page_size: u32,
    /// Pages read per chat list or chat at most, per repair.
    pub max_pages: u32,
}

impl Default for RepairSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            overlap: Duration::from_secs(600),
            page_size: 50,
            max_pages: 20,
        }
    }
}

/// Where gap repair stands (`channel_runtime`, key [`catalogue::repair_cursor`]): the
/// provider's history was read back up to `through`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairCursor {
    pub through: UnixMillis,
}

/// Runs a LinkedIn channel's gap repair until the channels stop.
pub(super) async fn repair(
    inbound: Inbound,
    settings: RepairSettings,
    mut stopping: watch::Receiver<bool>,
) {
    let kind = "linkedin";
    loop {
        let link = inbound.link.clone();
        let reconnected = link.reconnected.notified();
        tokio::pin!(reconnected);
        reconnected.as_mut().enable();
        if *stopping.borrow_and_update() {
            return;
        }
        // While the account is down Unipile has nothing new to give. It says when it
        // runs again; in case that webhook is lost, the account is asked directly.
        let down = matches!(
            link.health().status,
            confab_engine::port::ChannelStatus::Disconnected
                | confab_engine::port::ChannelStatus::AuthFailed
        );
        if down {
            if probe_account(&inbound).await == Some(true) {
                tracing::info!(channel = %link.channel().id, "Unipile says the account runs again");
                link.on_account(&confab_engine::port::AccountEvent::Connected);
                // `on_account` wakes this loop too, but the wake-up armed above predates
                // it: repair at once.
                continue;
            }
        } else {
            match repair_once(&inbound, &settings).await {
                Ok(found) => {
                    metrics::counter!(crate::metrics::REPAIR_RUNS, "channel" => kind, "outcome" => "ok").increment(1);
                    if found > 0 {
                        tracing::info!(channel = %link.channel().id, found, "gap repair stored messages the webhooks missed");
                        metrics::counter!(crate::metrics::REPAIRED_MESSAGES, "channel" => kind)
                            .increment(found as u64);
                    }
                    link.set_receive_error(None).await;
                }
                Err(reason) => {
                    metrics::counter!(crate::metrics::REPAIR_RUNS, "channel" => kind, "outcome" => "failed").increment(1);
                    tracing::warn!(channel = %link.channel().id, %reason, "gap repair failed");
                    link.set_receive_error(Some(("repair_failed", reason)))
                        .await;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(settings.interval) => {}
            () = reconnected => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// Whether Unipile says the channel's account runs (`GET /api/v1/accounts/{id}`);
/// `None` when it cannot tell.
async fn probe_account(inbound: &Inbound) -> Option<bool> {
    let channel = inbound.link.channel();
    let config = channel.config.linkedin()?;
    let url = api_url(config, &["accounts", &config.account_id]).ok()?;
    let body = get(&inbound.deps.http, config, url).await.ok()?;
    wire::account_running(&body)
}

/// One repair: every message of the chats active since the cursor, stored (or found
/// stored) before the cursor moves. Returns how many were new.
async fn repair_once(inbound: &Inbound, settings: &RepairSettings) -> Result<usize, String> {
    let channel = inbound.link.channel();
    let Some(config) = channel.config.linkedin().cloned() else {
        return Ok(0);
    };
    let started = inbound.link.clock.now();
    let store = inbound.deps.store.clone();
    let id = channel.id;
    let cursor: Option<RepairCursor> = tokio::task::spawn_blocking(move || {
        store.get(Ks::ChannelRuntime, &catalogue::repair_cursor(id))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    // A new channel repairs from its creation: history before it is not imported.
    let through = cursor.map_or(channel.created_at, |c| c.through);
    let since = through.saturating_sub(settings.overlap.as_millis() as i64);
    let since_text = to_rfc3339(since);
    let http = &inbound.deps.http;

    // Whether everything since `since` was read: only then does the cursor move.
    let mut complete = true;
    let mut chats: Vec<ListedChat> = Vec::new();
    let mut page_cursor: Option<String> = None;
    for page in 1..=settings.max_pages {
        let mut url = api_url(&config, &["chats"])?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("account_id", &config.account_id)
                .append_pair("after", &since_text)
                .append_pair("limit", &settings.page_size.to_string());
            if let Some(c) = &page_cursor {
                query.append_pair("cursor", c);
            }
        }
        let body = get(http, &config, url).await.map_err(|(_, e)| e)?;
        let listed = wire::chat_list(&body).ok_or("Unipile's chat list is unreadable")?;
        chats.extend(
            listed
                .items
                .into_iter()
                .filter(|c| c.timestamp == 0 || c.timestamp >= since),
        );
        match listed.cursor {
            Some(next) if !next.is_empty() => {
                complete &= page < settings.max_pages;
                page_cursor = Some(next);
            }
            _ => break,
        }
    }

    let mut events: Vec<InboundEvent> = Vec::new();
    for chat in &chats {
        let mut chat_events: Vec<InboundEvent> = Vec::new();
        let mut page_cursor: Option<String> = None;
        for page in 1..=settings.max_pages {
            let mut url = api_url(&config, &["chats", &chat.id, "messages"])?;
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("after", &since_text)
                    .append_pair("limit", &settings.page_size.to_string());
                if let Some(c) = &page_cursor {
                    query.append_pair("cursor", c);
                }
            }
            let body = match get(http, &config, url).await {
                Ok(body) => body,
                // A chat deleted since it was listed has nothing left to repair.
                Err((Some(404 | 410), _)) => {
                    tracing::debug!(chat = %chat.id, "a listed chat is gone");
                    break;
                }
                Err((_, e)) => return Err(e),
            };
            let listed = wire::message_list(&body, channel.id, chat)
                .ok_or("Unipile's message list is unreadable")?;
            let older = listed
                .items
                .iter()
                .any(|m| m.sent_at > 0 && m.sent_at < since);
            chat_events.extend(
                listed
                    .items
                    .into_iter()
                    .filter(|m| m.sent_at == 0 || m.sent_at >= since),
            );
            match listed.cursor {
                Some(next) if !next.is_empty() && !older => {
                    complete &= page < settings.max_pages;
                    page_cursor = Some(next);
                }
                _ => break,
            }
        }
        // Unipile lists newest first.
        chat_events.reverse();
        events.extend(chat_events);
    }
    // Oldest first, as they happened (a stable sort: a chat's order where times tie).
    events.sort_by_key(|e| e.sent_at);
    for event in &mut events {
        event.details.imported = true;
    }
    let found = if events.is_empty() {
        0
    } else {
        let batch = InboundBatch {
            messages: events,
            ..InboundBatch::default()
        };
        let pending = inbound
            .batch(batch, Instant::now())
            .await
            .map_err(|e| e.to_string())?;
        super::wait_all(pending)
            .await
            .map_err(|e| e.to_string())?
            .stored
    };
    if !complete {
        // More than one repair's worth: the next one starts from the same point again
        // (what this one stored is deduplicated then).
        tracing::warn!(channel = %channel.id, "gap repair read its page limit: the cursor stays");
        return Ok(found);
    }
    let mut set = WriteSet::new();
    set.put(
        Ks::ChannelRuntime,
        catalogue::repair_cursor(channel.id),
        &RepairCursor { through: started },
    );
    inbound
        .deps
        .committer
        .commit(set)
        .await
        .map_err(|e| e.to_string())?;
    Ok(found)
}

/// One `GET` of Unipile's API: its body when it answers 2xx, else its status (when it
/// answered) and why.
async fn get(
    http: &reqwest::Client,
    config: &LinkedinConfig,
    url: reqwest::Url,
) -> Result<bytes::Bytes, (Option<u16>, String)> {
    let response = http
        .get(url)
        .header(wire::API_KEY_HEADER, &config.api_key)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| (None, format!("Unipile could not be reached: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err((
            Some(status.as_u16()),
            format!("Unipile answered {status} to a history read"),
        ));
    }
    response
        .bytes()
        .await
        .map_err(|e| (None, format!("reading Unipile's answer: {e}")))
}
