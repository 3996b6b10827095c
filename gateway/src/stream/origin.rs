//! Which browser pages may open the stream. A WebSocket upgrade is not subject to the
//! same-origin policy, so a page on any site could open one with a visitor's ticket or
//! cookie-less credentials; the `Origin` header a browser always sends is checked before
//! the upgrade instead.
//!
//! Allowed: no `Origin` (not a browser), the server's own origin (`Origin`'s host and port
//! are the request's `Host`), and the configured `stream.allowed_origins` (`"*"`: any).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::uri::Authority;
use axum::http::{header, Uri};

use crate::app::AppState;
use crate::error::ApiError;

/// Extractor: passes when the request's `Origin` may open the stream, else 403
/// `origin_not_allowed`.
pub struct AllowedOrigin;

impl FromRequestParts<AppState> for AllowedOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let origin = parts.headers.get(header::ORIGIN).map(|v| v.to_str());
        let origin = match origin {
            None => return Ok(AllowedOrigin),
            Some(Ok(origin)) => origin,
            Some(Err(_)) => "",
        };
        if allowed(
            origin,
            request_host(parts),
            &app.config.stream.allowed_origins,
        ) {
            return Ok(AllowedOrigin);
        }
        tracing::info!(%origin, "stream refused: origin not allowed");
        Err(ApiError::forbidden(
            "origin_not_allowed",
            format!(
                "the origin {origin:?} may not open the stream (not this server's origin nor one in stream.allowed_origins)"
            ),
        ))
    }
}

/// The host and port the request was addressed to: its `Host` header, else the target's
/// authority.
pub fn request_host(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(Authority::as_str))
}

/// Whether the request's `Origin` is the server's own origin; `None` without an `Origin`
/// header (not a page of any site).
pub fn from_own_origin(parts: &Parts) -> Option<bool> {
    match parts.headers.get(header::ORIGIN)?.to_str() {
        Ok(origin) => Some(allowed(origin, request_host(parts), &[])),
        Err(_) => Some(false),
    }
}

/// Whether a browser page of `origin` may open the stream of a server reached as `host`.
pub fn allowed(origin: &str, host: Option<&str>, allowed_origins: &[String]) -> bool {
    let Some(origin) = Origin::parse(origin) else {
        // `null` (sandboxed pages, files) or garbage.
        return allowed_origins.iter().any(|allowed| allowed == "*");
    };
    let listed = allowed_origins
        .iter()
        .any(|allowed| allowed == "*" || Origin::parse(allowed).as_ref() == Some(&origin));
    listed
        || host
            .and_then(|host| origin.host_port(host))
            .is_some_and(|(host, port)| host == origin.host && port == origin.port)
}

/// `scheme://host:port`, lower-cased, the port made explicit.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let uri: Uri = text.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        let port = match uri.port_u16() {
            Some(port) => port,
            None => default_port(&scheme)?,
        };
        Some(Origin { scheme, host, port })
    }

    /// A `Host` header's host and port, the port defaulting to this origin's scheme's.
    fn host_port(&self, host: &str) -> Option<(String, u16)> {
        let authority: Authority = host.trim().parse().ok()?;
        let port = match authority.port_u16() {
            Some(port) => port,
            None => default_port(&self.scheme)?,
        };
        Some((authority.host().to_ascii_lowercase(), port))
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(origins: &[&str]) -> Vec<String> {
        origins.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn the_servers_own_origin_is_allowed() {
        assert!(allowed(
            "http://127.0.0.1:8080",
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(allowed(
            "https://Chat.Example.com",
            Some("chat.example.com"),
            &[]
        ));
        assert!(allowed(
            "https://chat.example.com",
            Some("chat.example.com:443"),
            &[]
        ));
        assert!(allowed("http://[::1]:8080", Some("[::1]:8080"), &[]));
    }

    #[test]
    fn another_host_or_port_is_refused() {
        assert!(!allowed(
            "http://127.0.0.1:8081",
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(!allowed(
            "https://evil.example",
            Some("chat.example.com"),
            &[]
        ));
        assert!(!allowed(
            "http://chat.example.com",
            Some("chat.example.com:443"),
            &[]
        ));
        assert!(!allowed("https://chat.example.com", None, &[]));
        assert!(!allowed("null", Some("chat.example.com"), &[]));
        assert!(!allowed("", Some("chat.example.com"), &[]));
    }

    #[test]
    fn configured_origins_are_allowed() {
        let origins = list(&["https://app.example.com", "http://localhost:3000/"]);
        assert!(allowed(
            "https://app.example.com",
            Some("api.example.com"),
            &origins
        ));
        assert!(allowed(
            "https://app.example.com:443",
            Some("api.example.com"),
            &origins
        ));
        assert!(allowed(
            "http://localhost:3000",
            Some("api.example.com"),
            &origins
        ));
        assert!(!allowed(
            "http://localhost:3001",
            Some("api.example.com"),
            &origins
        ));
        assert!(!allowed(
            "http://app.example.com",
            Some("api.example.com"),
            &origins
        ));
        assert!(allowed(
            "https://anything.example",
            Some("x"),
            &list(&["*"])
        ));
        assert!(allowed("null", Some("x"), &list(&["*"])));
    }
}
