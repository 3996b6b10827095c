//! Authentication: agent tokens (hashed, cached), browser sessions (an `HttpOnly`,
//! `SameSite=Strict` cookie; state-changing requests authenticated by it must come from
//! the server's own origin), and the server admin token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use confab_engine::admin::token_hash;
use confab_engine::auth::{login_of, Session};
use confab_engine::catalogue::Ks;
use confab_engine::ids::AgentId;
use confab_engine::model::Agent;
use confab_engine::time::{now_millis, UnixMillis};
use dashmap::DashMap;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;
use crate::stream::origin;

/// Agents by token hash, so a request does not read the store to authenticate.
#[derive(Clone, Default)]
pub struct TokenCache {
    agents: Arc<DashMap<[u8; 32], Arc<Agent>>>,
}

impl TokenCache {
    /// The agent owning `token`, if any.
    pub async fn agent(&self, app: &AppState, token: &str) -> Result<Option<Arc<Agent>>, ApiError> {
        let hash = token_hash(token);
        if let Some(agent) = self.agents.get(&hash) {
            return Ok(Some(agent.clone()));
        }
        let store = app.store.clone();
        let agent = tokio::task::spawn_blocking(move || store.agent_by_token_hash(&hash))
            .await
            .map_err(ApiError::from)??;
        Ok(agent.map(|agent| {
            let agent = Arc::new(agent);
            self.agents.insert(hash, agent.clone());
            agent
        }))
    }
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "confab_session";

/// The session cookie's name over TLS: the `__Host-` prefix makes the browser refuse it
/// unless it is `Secure`, for this host only and for every path, so a sibling subdomain
/// cannot plant a session of its own.
pub const SECURE_SESSION_COOKIE: &str = "__Host-confab_session";

/// Whether requests reach this server over TLS (its proxy says so, or the configuration).
pub fn over_tls(config: &crate::config::Config, headers: &axum::http::HeaderMap) -> bool {
    config.auth.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The session cookie's name for a request over TLS or not.
pub fn session_cookie_name(tls: bool) -> &'static str {
    if tls {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// A session's agent, when it began and when it ends.
#[derive(Clone)]
struct SignedIn {
    agent: Arc<Agent>,
    created_at: UnixMillis,
    expires_at: UnixMillis,
}

/// Signed-in browsers by the hash of their cookie's secret, so a request does not read
/// the store to authenticate. Sign-out removes the entry and the stored session; a new
/// password ends every session of the agent that began before it.
#[derive(Clone, Default)]
pub struct SessionCache {
    sessions: Arc<DashMap<[u8; 32], SignedIn>>,
    /// When each agent's password last changed in this process (older sessions end).
    password_changed: Arc<DashMap<AgentId, UnixMillis>>,
}

impl SessionCache {
    /// The agent of a live session, if `secret` is one.
    pub async fn agent(
        &self,
        app: &AppState,
        secret: &str,
    ) -> Result<Option<Arc<Agent>>, ApiError> {
        let key = token_hash(secret);
        let now = now_millis();
        if let Some(entry) = self.sessions.get(&key).map(|e| e.value().clone()) {
            let revoked = self
                .password_changed
                .get(&entry.agent.id)
                .is_some_and(|at| *at > entry.created_at);
            if entry.expires_at > now && !revoked {
                return Ok(Some(entry.agent));
            }
            self.sessions.remove(&key);
            if revoked {
                return Ok(None);
            }
        }
        let store = app.store.clone();
        let found = crate::routes::blocking(move || {
            let Some(session) = store.get::<Session>(Ks::Session, &key)? else {
                return Ok(None);
            };
            let Some(agent) = store.agent(session.agent_id)? else {
                return Ok(None);
            };
            let password_at = login_of(&store, &agent.email, agent.id)?.map(|l| l.updated_at);
            Ok(Some((agent, session, password_at)))
        })
        .await?;
        Ok(match found {
            Some((agent, session, password_at))
                if session.expires_at > now
                    && password_at.is_none_or(|at| at <= session.created_at) =>
            {
                let agent = Arc::new(agent);
                self.sessions.insert(
                    key,
                    SignedIn {
                        agent: agent.clone(),
                        created_at: session.created_at,
                        expires_at: session.expires_at,
                    },
                );
                Some(agent)
            }
            _ => None,
        })
    }

    /// Forgets a session (signed out).
    pub fn forget(&self, secret: &str) {
        self.sessions.remove(&token_hash(secret));
    }

    /// The agent's password changed at `at`: their sessions begun before end.
    pub fn password_changed(&self, agent: AgentId, at: UnixMillis) {
        self.password_changed.insert(agent, at);
        self.sessions
            .retain(|_, s| s.agent.id != agent || s.created_at >= at);
    }
}

/// The session cookie's secret, if the request carries one: over TLS only the `__Host-`
/// cookie counts.
pub fn session_secret<'a>(parts: &'a Parts, config: &crate::config::Config) -> Option<&'a str> {
    let name = session_cookie_name(over_tls(config, &parts.headers));
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty() && value.len() <= 128)
}

/// What the browser says of the page a request comes from (`Sec-Fetch-Site`, which no
/// script can set): `Some(true)` for this server's own pages. Unlike comparing `Origin`
/// with `Host`, it holds behind a proxy that rewrites `Host`.
fn fetch_site_is_own(parts: &Parts) -> Option<bool> {
    parts
        .headers
        .get("sec-fetch-site")
        .map(|v| v.as_bytes() == b"same-origin")
}

/// Whether a request authenticated by cookie may change anything: it must come from a page
/// of this server (`Origin` is the server's own), or say so (`Sec-Fetch-Site:
/// same-origin`). A page elsewhere cannot make the browser act with the cookie.
pub fn same_origin(parts: &Parts) -> bool {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    fetch_site_is_own(parts)
        .or_else(|| origin::from_own_origin(parts))
        .unwrap_or(false)
}

/// Whether a browser request comes from the server's own pages (`Origin` is this server),
/// or from no page at all (no `Origin`: not a browser).
pub fn own_origin(parts: &Parts) -> bool {
    fetch_site_is_own(parts)
        .or_else(|| origin::from_own_origin(parts))
        .unwrap_or(true)
}

/// 403 `cross_origin`: a cookie sent along by another site's page.
pub fn cross_origin() -> ApiError {
    ApiError::forbidden(
        "cross_origin",
        "a request signed in by cookie must come from this server's own pages",
    )
}

/// The agent a request's session cookie signs in, checked for a same-origin page when the
/// request changes something (403 `cross_origin`).
pub async fn cookie_agent(parts: &Parts, app: &AppState) -> Result<Option<Arc<Agent>>, ApiError> {
    let Some(secret) = session_secret(parts, &app.config) else {
        return Ok(None);
    };
    let Some(agent) = app.sessions.agent(app, secret).await? else {
        return Ok(None);
    };
    if !same_origin(parts) {
        return Err(cross_origin());
    }
    Ok(Some(agent))
}

/// The `Bearer` token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// An authenticated agent: every non-admin route takes one.
pub struct AgentAuth(pub Arc<Agent>);

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts) else {
            return match cookie_agent(parts, app).await? {
                Some(agent) => Ok(AgentAuth(agent)),
                None => Err(ApiError::unauthorized(
                    "sign in, or send an `Authorization: Bearer <token>` header",
                )),
            };
        };
        match app.tokens.agent(app, token).await? {
            Some(agent) => Ok(AgentAuth(agent)),
            None => Err(ApiError::unauthorized("the token is not valid")),
        }
    }
}

/// The server admin: may call `/api/v1/admin/*` only.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = app.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "admin routes are disabled: set CONFAB_ADMIN_TOKEN to enable them",
            ));
        };
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("an `Authorization: Bearer <admin token>` header is required")
        })?;
        if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(AdminAuth)
        } else {
            Err(ApiError::unauthorized("the admin token is not valid"))
        }
    }
}
