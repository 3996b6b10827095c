//! Authentication: agent tokens (hashed, cached) and the server admin token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use confab_engine::admin::token_hash;
use confab_engine::model::Agent;
use dashmap::DashMap;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

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
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("an `Authorization: Bearer <token>` header is required")
        })?;
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
