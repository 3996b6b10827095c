//! The HTTP edge: what every request passes before any route sees it, and the HTTP/1
//! connection settings.
//!
//! Every refusal carries our JSON error body. hyper enforces a few limits itself, before a
//! request exists, and answers those without a body; so our own limits sit below hyper's
//! and hyper's are set above them (see [`http1_builder`]): a request too large for us but
//! within hyper's reach gets `414 uri_too_long` or `431 headers_too_large` from
//! [`guard`]. What remains to hyper is listed in `docs/API.md`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::config::HttpConfig;
use crate::error::ApiError;

/// hyper's own cap on a request target (`MAX_URI_LEN` in its HTTP/1 parser): longer ones
/// get hyper's bodiless 414.
pub const HYPER_MAX_URI_BYTES: usize = u16::MAX as usize - 1;
/// The smallest read buffer we give hyper: a head up to this size is parsed and reaches
/// [`guard`] (a URI at hyper's cap plus our default header allowance fits).
const MIN_HYPER_BUFFER_BYTES: usize = 128 * 1024;
/// Most bytes of a non-JSON error body turned into a JSON message.
const MAX_PLAIN_ERROR_BYTES: usize = 4 * 1024;

/// The HTTP/1 connection settings: the header read timeout, and a read buffer large enough
/// that heads over our own limits still reach [`guard`].
pub fn http1_builder(config: &HttpConfig) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Some(Duration::from_secs(
            config.header_read_timeout_secs.max(1),
        )))
        .max_buf_size(hyper_buffer_bytes(config));
    builder
}

fn hyper_buffer_bytes(config: &HttpConfig) -> usize {
    let head = config.max_uri_bytes.saturating_add(config.max_header_bytes);
    head.saturating_mul(2).max(MIN_HYPER_BUFFER_BYTES)
}

/// Middleware, outermost: refuses over-long URIs and over-large headers, bounds the time a
/// body may take to arrive (408), gives every error answer our JSON body, and turns a
/// handler's panic into a 500 that says nothing of it.
pub async fn guard(
    State(limits): State<Arc<HttpConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let uri_bytes = uri_len(request.uri());
    if uri_bytes > limits.max_uri_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is {uri_bytes} bytes; at most {} are accepted",
                limits.max_uri_bytes
            ),
        )
        .into_response();
    }
    let header_bytes = header_len(request.headers());
    if header_bytes > limits.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request headers are {header_bytes} bytes; at most {} are accepted",
                limits.max_header_bytes
            ),
        )
        .into_response();
    }
    let body_timeout = Duration::from_secs(limits.body_read_timeout_secs.max(1));
    let (request, expired) = with_body_deadline(request, body_timeout);
    let response = match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            // The panic hook has logged it; the client learns nothing of it.
            tracing::error!("a request handler panicked");
            return ApiError::internal("the request failed; it may be retried").into_response();
        }
    };
    if expired.is_some_and(|expired| expired.load(Ordering::Acquire)) {
        let mut response = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                body_timeout.as_secs()
            ),
        )
        .into_response();
        // The rest of the body may still be on its way: this connection is done.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    json_errors(response).await
}

/// The request target's length as sent: path and query, plus scheme and authority in the
/// absolute form.
fn uri_len(uri: &axum::http::Uri) -> usize {
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + "://".len());
    path + authority + scheme
}

/// Header bytes as on the wire: `name: value\r\n` for each.
fn header_len(headers: &axum::http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// Wraps a request body that has yet to arrive so that reading it fails once `timeout` has
/// passed; the flag tells the middleware the request timed out (the handler saw only a
/// body error, which it may answer in any way).
fn with_body_deadline(request: Request, timeout: Duration) -> (Request, Option<Arc<AtomicBool>>) {
    if http_body::Body::is_end_stream(request.body()) {
        return (request, None);
    }
    let expired = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        expired: expired.clone(),
    });
    (Request::from_parts(parts, body), Some(expired))
}

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

/// The error a body read gets once its time is up.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An error answer without our JSON body (a framework rejection, a bare status) gets one:
/// its text, if any, becomes the message.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR_BYTES)
        .await
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .filter(|text| !text.is_empty());
    let message = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_string()
    });
    let mut json = ApiError::new(status, code_for(status), message).into_response();
    // Keep what the status implies (`allow`, `retry-after`, `www-authenticate`, …).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name, value.clone());
        }
    }
    json
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

/// The stable code of an error answer that came without one.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "malformed_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "no_route",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_value",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        status if status.is_server_error() => "internal",
        _ => "request_refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_is_measured_as_sent() {
        let origin: axum::http::Uri = "/a/b?c=d".parse().expect("uri");
        assert_eq!(uri_len(&origin), "/a/b?c=d".len());
        let absolute: axum::http::Uri = "http://example.com:8080/a?b".parse().expect("uri");
        assert_eq!(uri_len(&absolute), "http://example.com:8080/a?b".len());
    }

    #[test]
    fn headers_are_measured_as_on_the_wire() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("22"));
        let wire = "host: example.com\r\nx-a: 1\r\nx-a: 22\r\n";
        assert_eq!(header_len(&headers), wire.len());
    }

    #[test]
    fn hyper_reads_heads_larger_than_our_limits() {
        let config = HttpConfig::default();
        let buffer = hyper_buffer_bytes(&config);
        assert!(buffer > HYPER_MAX_URI_BYTES + config.max_header_bytes);
        let large = HttpConfig {
            max_header_bytes: 1024 * 1024,
            ..HttpConfig::default()
        };
        assert!(hyper_buffer_bytes(&large) > large.max_uri_bytes + large.max_header_bytes);
    }

    /// A router behind [`guard`] with a panicking route and a plain-text error route,
    /// served on port 0.
    async fn serve_guarded() -> std::net::SocketAddr {
        use axum::routing::get;
        async fn panics() -> &'static str {
            panic!("secret internals in the panic text")
        }
        async fn plain() -> (StatusCode, &'static str) {
            (StatusCode::BAD_REQUEST, "not like this")
        }
        async fn bare() -> StatusCode {
            StatusCode::CONFLICT
        }
        let router = axum::Router::new()
            .route("/panics", get(panics))
            .route("/plain", get(plain))
            .route("/bare", get(bare))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(HttpConfig::default()),
                guard,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    async fn get_json(url: String) -> (u16, serde_json::Value, Option<String>) {
        let response = reqwest::get(url).await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.json().await.expect("a JSON body");
        (status, body, content_type)
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_without_the_panic_text() {
        let addr = serve_guarded().await;
        let (status, body, _) = get_json(format!("http://{addr}/panics")).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret"), "{body}");
    }

    #[tokio::test]
    async fn error_answers_without_json_get_our_json_body() {
        let addr = serve_guarded().await;
        let (status, body, content_type) = get_json(format!("http://{addr}/plain")).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "malformed_request");
        assert_eq!(body["error"]["message"], "not like this");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let (status, body, _) = get_json(format!("http://{addr}/bare")).await;
        assert_eq!(status, 409);
        assert_eq!(body["error"]["code"], "request_refused");
        assert_eq!(body["error"]["message"], "Conflict");
    }

    #[test]
    fn statuses_without_a_code_get_one() {
        assert_eq!(code_for(StatusCode::PAYLOAD_TOO_LARGE), "payload_too_large");
        assert_eq!(code_for(StatusCode::BAD_GATEWAY), "internal");
        assert_eq!(code_for(StatusCode::IM_A_TEAPOT), "request_refused");
    }
}
