//! Provider webhooks. A 200 means everything in the body is durably stored.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use confab_actors::channels::adapter::RefusalKind;
use confab_actors::WebhookError;
use confab_engine::ids::ChannelId;
use confab_engine::model::ChannelKind;
use confab_engine::wire::whatsapp::MAX_ID_BYTES;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::raw_body;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whatsapp_verify, whatsapp_receive))
        .routes(routes!(email_receive))
        .routes(routes!(linkedin_receive))
}

/// A Unipile webhook body: a messaging event (`message_received`, `message_read`,
/// `message_reaction`, `message_edited`, `message_deleted`) or an account status, in
/// either of Unipile's shapes.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct UnipileWebhook(pub serde_json::Value);

/// Receives a Unipile webhook for a LinkedIn channel: the lead's messages, ours written on
/// LinkedIn directly, reads, reactions, edits, deletions and the account's status. The
/// `Unipile-Auth` header must carry the channel's webhook secret. Answered once all of it
/// is durable; events Confab does not use are acknowledged and counted.
#[utoipa::path(
    post,
    path = "/webhooks/linkedin/{channel_id}",
    tag = "webhooks",
    params(
        ("channel_id" = String, Path, description = "The channel."),
        ("Unipile-Auth" = String, Header, description = "The channel's webhook secret."),
    ),
    request_body(content = UnipileWebhook, content_type = "application/json"),
    responses(
        (status = 200, description = "Everything in the body is durably stored (or was before).", body = WebhookStored),
        (status = 400, description = "`not_a_webhook`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`missing_secret`, `invalid_secret`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 422, description = "`invalid_items`: the event can never be stored (no message or chat id).", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`: retry later.", body = ErrorBody),
    )
)]
async fn linkedin_receive(
    State(app): State<AppState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let received = Instant::now();
    receive(
        &app,
        ChannelKind::Linkedin,
        &channel_id,
        &headers,
        body,
        received,
    )
    .await
}

/// A raw RFC 5322 message (`message/rfc822`), or SendGrid's Inbound Parse form
/// (`multipart/form-data` with the message in `email`).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct RawEmail(pub Vec<u8>);

/// Receives one email for an email channel: the raw message signed with
/// `X-Confab-Signature-256`, or SendGrid's Inbound Parse form ("POST the raw, full MIME
/// message") with the channel's `inbound_secret` as the HTTP Basic password. Answered once
/// stored; a bounce marks the message it names failed.
#[utoipa::path(
    post,
    path = "/webhooks/email/{channel_id}",
    tag = "webhooks",
    params(
        ("channel_id" = String, Path, description = "The channel."),
        ("X-Confab-Signature-256" = Option<String>, Header, description = "`sha256=` + hex HMAC-SHA256 of the raw body, keyed by the channel's inbound secret (for `message/rfc822` bodies)."),
    ),
    request_body(content = RawEmail, content_type = "message/rfc822"),
    responses(
        (status = 200, description = "The message is durably stored (or was before).", body = WebhookStored),
        (status = 400, description = "`not_a_message`, `not_raw_mime`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`missing_signature`, `invalid_signature`, `no_inbound_secret`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `email.max_message_bytes`.", body = ErrorBody),
        (status = 422, description = "`invalid_items`: the message has no sender address.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`: retry later.", body = ErrorBody),
    )
)]
async fn email_receive(
    State(app): State<AppState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<impl IntoResponse> {
    // Its own limit (`email.max_message_bytes`, not `max_body_bytes`): mail carries its
    // attachments.
    let limit = app.config.email.max_message_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the message is larger than {limit} bytes (email.max_message_bytes)"),
            ))
        }
    };
    let received = Instant::now();
    receive(
        &app,
        ChannelKind::Email,
        &channel_id,
        &headers,
        Ok(body),
        received,
    )
    .await
}

/// What a webhook stored: every item of the body is durable when this is answered.
#[derive(Serialize, ToSchema)]
pub struct WebhookStored {
    /// New messages stored.
    stored: usize,
    /// Messages delivered before: nothing stored.
    duplicates: usize,
    /// Delivery statuses applied (or kept for a message not known yet).
    statuses: usize,
    /// Items for another sender identity (a phone number this channel does not serve).
    skipped: usize,
    /// Items that can never be stored (no usable id or sender).
    rejected: usize,
    /// Events acknowledged and not used (kinds Confab does not use, changes to messages it
    /// does not know).
    ignored: usize,
}

/// A WhatsApp Cloud API webhook body, as Meta sends it (`object`, `entry[].changes[]`).
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct WhatsappWebhook(pub serde_json::Value);

fn channel_id(raw: &str) -> ApiResult<ChannelId> {
    raw.parse().map_err(|_| ApiError::not_found("channel"))
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::NotFound => ApiError::not_found("channel"),
            WebhookError::Refused(refusal) => match refusal.kind {
                RefusalKind::Unauthenticated => {
                    ApiError::new(StatusCode::UNAUTHORIZED, refusal.code, refusal.message)
                }
                RefusalKind::Malformed => ApiError::bad_request(refusal.code, refusal.message),
            },
            WebhookError::Actor(e) => e.into(),
        }
    }
}

/// Meta's subscription handshake: echoes the challenge for the channel's verify token.
#[utoipa::path(
    get,
    path = "/webhooks/whatsapp/{channel_id}",
    tag = "webhooks",
    params(
        ("channel_id" = String, Path, description = "The channel."),
        ("hub.mode" = Option<String>, Query, description = "`subscribe`."),
        ("hub.verify_token" = Option<String>, Query, description = "The channel's verify token."),
        ("hub.challenge" = Option<String>, Query, description = "Echoed back."),
    ),
    responses(
        (status = 200, description = "The challenge.", body = String, content_type = "text/plain"),
        (status = 400, description = "`malformed_query`.", body = ErrorBody),
        (status = 403, description = "`verification_failed`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel.", body = ErrorBody),
    )
)]
async fn whatsapp_verify(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let answer =
        app.runtime
            .channels
            .handshake(channel_id(&id)?, Some(ChannelKind::Whatsapp), &query)?;
    match answer {
        Some(challenge) => Ok(([(header::CONTENT_TYPE, "text/plain")], challenge)),
        None => Err(ApiError::forbidden(
            "verification_failed",
            "hub.mode must be subscribe and hub.verify_token must match the channel's",
        )),
    }
}

/// Receives a WhatsApp webhook: messages and delivery statuses, answered once all of it is
/// durable. The signature is checked over the raw body before anything else.
#[utoipa::path(
    post,
    path = "/webhooks/whatsapp/{channel_id}",
    tag = "webhooks",
    params(
        ("channel_id" = String, Path, description = "The channel."),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` + hex HMAC-SHA256 of the raw body, keyed by the channel's app secret."),
    ),
    request_body(content = WhatsappWebhook, content_type = "application/json"),
    responses(
        (status = 200, description = "Everything in the body is durably stored.", body = WebhookStored),
        (status = 400, description = "`not_a_webhook`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`missing_signature`, `invalid_signature`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 422, description = "`invalid_items`: every item of the body can never be stored.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`: retry later.", body = ErrorBody),
    )
)]
async fn whatsapp_receive(
    State(app): State<AppState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    // The start of the end-to-end latency (`confab_ingest_to_socket_seconds`). Axum has
    // read the body by now; the request's first byte is not visible to a handler.
    let received = Instant::now();
    receive(
        &app,
        ChannelKind::Whatsapp,
        &channel_id,
        &headers,
        body,
        received,
    )
    .await
}

/// Any provider's webhook, through its channel's adapter: authenticity first, then the
/// body, answered once all of it is durable. Counted by kind and outcome.
pub async fn receive(
    app: &AppState,
    kind: ChannelKind,
    channel: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    received: Instant,
) -> ApiResult<(StatusCode, Json<WebhookStored>)> {
    let outcome = store_webhook(app, kind, channel, headers, body, received).await;
    let label = match &outcome {
        Ok(_) => "stored",
        Err(e) if e.status == StatusCode::UNAUTHORIZED => "bad_signature",
        Err(e) if e.status.is_client_error() => "rejected",
        Err(_) => "failed",
    };
    metrics::counter!(crate::metrics::WEBHOOK_REQUESTS, "channel" => kind.as_str(), "outcome" => label)
        .increment(1);
    outcome
}

async fn store_webhook(
    app: &AppState,
    kind: ChannelKind,
    channel: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    received: Instant,
) -> ApiResult<(StatusCode, Json<WebhookStored>)> {
    let id = channel_id(channel)?;
    if app
        .runtime
        .channels
        .get(id)
        .is_none_or(|c| c.kind() != kind)
    {
        return Err(ApiError::not_found("channel"));
    }
    let body = raw_body(body)?;
    let report = app
        .runtime
        .channels
        .webhook(id, Some(kind), headers, body, received)
        .await?;
    if report.only_rejected() {
        return Err(ApiError::unprocessable(
            "invalid_items",
            format!(
                "none of the {} items can be stored: each lacks a usable id or sender (ids are at most {} bytes)",
                report.rejected, MAX_ID_BYTES
            ),
        ));
    }
    Ok((
        StatusCode::OK,
        Json(WebhookStored {
            stored: report.stored,
            duplicates: report.duplicates,
            statuses: report.statuses,
            skipped: report.skipped,
            rejected: report.rejected,
            ignored: report.ignored,
        }),
    ))
}
