//! `GET /api/v1/conversations/{id}/messages/{seq}/attachments/{index}`: a message's file,
//! streamed from the provider that keeps it (through the channel's adapter, with the
//! channel's credentials), so the browser never needs a provider token.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use confab_actors::channels::adapter::MediaError;
use confab_engine::catalogue::{self, Ks};
use confab_engine::model::MessageAttachment;
use futures_util::stream;

use super::blocking;
use super::conversations::owned_conversation;
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(attachment))
}

/// Media types a browser may show in the page (an `<img>`, `<audio>`, `<video>`); every
/// other file is a download. SVG is a download: it can carry script.
fn shown_inline(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/jpeg" | "image/png" | "image/gif" | "image/webp"
    ) || content_type.starts_with("audio/")
        || content_type.starts_with("video/")
}

/// The attachment's declared type if it is a plain `type/subtype`, else the provider's.
fn served_type(attachment: &MessageAttachment, provider: Option<&HeaderValue>) -> String {
    let plain = |t: &str| {
        let t = t
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let ok = t.split_once('/').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"/.+-_".contains(&c))
        });
        ok.then_some(t)
    };
    plain(&attachment.content_type)
        .or_else(|| provider.and_then(|v| v.to_str().ok()).and_then(plain))
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// `inline` or `attachment`, with the file name in both RFC 6266 forms.
fn disposition(inline: bool, name: Option<&str>) -> String {
    let kind = if inline { "inline" } else { "attachment" };
    let Some(name) = name.filter(|n| !n.trim().is_empty()) else {
        return kind.to_owned();
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// A message's file. Images (JPEG, PNG, GIF, WebP), audio and video are answered inline,
/// anything else as a download; the answer is sandboxed (no script runs in it).
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/messages/{seq}/attachments/{index}",
    tag = "inbox",
    security(("agent_token" = [])),
    params(
        ("id" = String, Path, description = "The conversation."),
        ("seq" = u64, Path, description = "The message's `seq`."),
        ("index" = u32, Path, description = "The attachment's place in the message's `attachments`, from 0."),
    ),
    responses(
        (status = 200, description = "The file, in the type it was sent with.", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, message or attachment in the caller's workspace; `media_gone`: the provider no longer keeps the file.", body = ErrorBody),
        (status = 502, description = "`provider_unavailable`: the provider could not be reached or failed; `provider_auth_failed`: it refused the channel's credentials.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn attachment(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path((id, seq, index)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let conv = owned_conversation(&app, &agent, &id).await?;
    let (Ok(seq), Ok(index)) = (seq.parse::<u64>(), index.parse::<usize>()) else {
        return Err(ApiError::not_found("attachment"));
    };
    let store = app.store.clone();
    let message = blocking(move || store.message(conv.id, seq)).await?;
    let (message_id, attachment) = message
        .and_then(|m| {
            let id = m.id;
            m.attachments.into_iter().nth(index).map(|a| (id, a))
        })
        .ok_or_else(|| ApiError::not_found("attachment"))?;
    let Some(media_id) = attachment.media_id.as_deref() else {
        // Bytes that came with the message (email) are stored beside it.
        let store = app.store.clone();
        let key = catalogue::blob(message_id, u32::try_from(index).unwrap_or(u32::MAX));
        let bytes = blocking(move || store.get_raw(Ks::Blob, &key))
            .await?
            .ok_or_else(|| ApiError::not_found("attachment"))?;
        let content_type = served_type(&attachment, None);
        return Ok(file_response(
            Body::from(bytes::Bytes::copy_from_slice(&bytes)),
            &content_type,
            attachment.name.as_deref(),
            Some(bytes.len() as u64),
        ));
    };
    let upstream = app
        .runtime
        .channels
        .fetch_media(conv.channel_id, media_id)
        .await
        .map_err(|e| match e {
            MediaError::Gone => ApiError::new(
                StatusCode::NOT_FOUND,
                "media_gone",
                "the provider no longer keeps this file",
            ),
            MediaError::Unsupported => ApiError::not_found("attachment"),
            MediaError::AuthFailed(reason) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "provider_auth_failed", reason)
            }
            MediaError::Unavailable(reason) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "provider_unavailable", reason)
            }
        })?;
    let content_type = served_type(&attachment, upstream.headers().get(header::CONTENT_TYPE));
    let length = upstream.content_length();
    let body = stream::unfold(Some(upstream), |upstream| async move {
        let mut upstream = upstream?;
        match upstream.chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(upstream))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(file_response(
        Body::from_stream(body),
        &content_type,
        attachment.name.as_deref(),
        length,
    ))
}

/// A file's answer: its type, inline or as a download, sandboxed.
fn file_response(
    body: Body,
    content_type: &str,
    name: Option<&str>,
    length: Option<u64>,
) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let typed = |value: String| {
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
    };
    headers.insert(
        header::CONTENT_DISPOSITION,
        typed(disposition(shown_inline(content_type), name)),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content_type: &str) -> MessageAttachment {
        MessageAttachment {
            name: None,
            content_type: content_type.into(),
            size: None,
            media_id: Some("m".into()),
        }
    }

    #[test]
    fn only_media_a_page_can_show_is_inline() {
        for t in ["image/jpeg", "image/png", "audio/ogg", "video/mp4"] {
            assert!(shown_inline(t), "{t}");
        }
        for t in ["image/svg+xml", "text/html", "application/pdf"] {
            assert!(!shown_inline(t), "{t}");
        }
    }

    #[test]
    fn served_types_are_plain_media_types() {
        assert_eq!(served_type(&file("image/JPEG"), None), "image/jpeg");
        assert_eq!(
            served_type(&file("audio/ogg; codecs=opus"), None),
            "audio/ogg"
        );
        let provider = HeaderValue::from_static("application/pdf");
        assert_eq!(
            served_type(&file("text/html\r\nX: y"), Some(&provider)),
            "application/pdf"
        );
        assert_eq!(
            served_type(&file("nonsense"), None),
            "application/octet-stream"
        );
    }

    #[test]
    fn dispositions_carry_both_name_forms() {
        assert_eq!(disposition(true, None), "inline");
        assert_eq!(
            disposition(false, Some("Angebot März.pdf")),
            "attachment; filename=\"Angebot M_rz.pdf\"; filename*=UTF-8''Angebot%20M%C3%A4rz.pdf"
        );
        assert_eq!(
            disposition(false, Some("a\"b\r\n.txt")),
            "attachment; filename=\"a_b__.txt\"; filename*=UTF-8''a%22b%0D%0A.txt"
        );
    }
}
