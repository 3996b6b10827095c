//! The web inbox: `web/dist`, built by `web/build.mjs` and committed, embedded in the binary
//! at compile time, so `cargo` alone builds a server that serves it. `/` is the page;
//! `app.js` and `app.css` are sent gzip-compressed to browsers that accept it.
//!
//! Every answer of the server (API included) carries the security headers: a strict
//! Content-Security-Policy (scripts and styles from this origin only, no inline script, no
//! third-party request, no framing), `nosniff`, no referrer.

use std::sync::LazyLock;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::app::AppState;

struct Asset {
    raw: &'static [u8],
    gzip: Option<&'static [u8]>,
    content_type: &'static str,
    /// `"<first 12 bytes of the SHA-256, hex>"`.
    etag: HeaderValue,
}

impl Asset {
    fn new(raw: &'static [u8], gzip: Option<&'static [u8]>, content_type: &'static str) -> Asset {
        let digest = Sha256::digest(raw);
        Asset {
            raw,
            gzip,
            content_type,
            etag: HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                .unwrap_or(HeaderValue::from_static("\"\"")),
        }
    }

    /// The asset, compressed when the browser accepts gzip; 304 when it has this version.
    fn answer(&self, headers: &HeaderMap) -> Response {
        let etag = self.etag.to_str().unwrap_or_default();
        let cached = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
        let common = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            ),
            // Names carry no version: the browser asks again each time (a 304 when unchanged).
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::VARY, HeaderValue::from_static("accept-encoding")),
            (header::ETAG, self.etag.clone()),
        ];
        if cached {
            return (StatusCode::NOT_MODIFIED, common).into_response();
        }
        let gzip_ok = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(accepts_gzip);
        match self.gzip.filter(|_| gzip_ok) {
            Some(body) => (
                common,
                [(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))],
                body,
            )
                .into_response(),
            None => (common, self.raw).into_response(),
        }
    }
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip;q=0` refuses it).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let quality = parts
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        name.eq_ignore_ascii_case("gzip") && quality > 0.0
    })
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../web/dist/index.html"),
        None,
        "text/html; charset=utf-8",
    )
});
static APP_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../web/dist/app.js"),
        Some(include_bytes!("../../web/dist/app.js.gz")),
        "text/javascript; charset=utf-8",
    )
});
static APP_CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../web/dist/app.css"),
        Some(include_bytes!("../../web/dist/app.css.gz")),
        "text/css; charset=utf-8",
    )
});
static FAVICON: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../web/dist/favicon.svg"),
        None,
        "image/svg+xml",
    )
});

/// The service worker that shows Web Push notifications (scope `/`).
static SERVICE_WORKER: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../web/dist/sw.js"),
        None,
        "text/javascript; charset=utf-8",
    )
});

/// The page and its assets (not part of the API's document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { INDEX.answer(&h) }))
        .route(
            "/app.js",
            get(|h: HeaderMap| async move { APP_JS.answer(&h) }),
        )
        .route(
            "/app.css",
            get(|h: HeaderMap| async move { APP_CSS.answer(&h) }),
        )
        .route(
            "/favicon.svg",
            get(|h: HeaderMap| async move { FAVICON.answer(&h) }),
        )
        .route(
            "/sw.js",
            get(|h: HeaderMap| async move {
                let mut answer = SERVICE_WORKER.answer(&h);
                answer
                    .headers_mut()
                    .insert("service-worker-allowed", HeaderValue::from_static("/"));
                answer
            }),
        )
}

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to every answer.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if api {
        // Agents' data is not kept in the browser's cache after they sign out.
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip(""));
    }
}
