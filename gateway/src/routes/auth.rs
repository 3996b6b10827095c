//! Signing in from a browser: with email and password, or with an API token; signing out;
//! who is signed in; passwords set by workspace admins (or by agents for themselves); and
//! invitations that let an agent choose a password.
//!
//! A session is a random secret in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when
//! the server says it is behind TLS); the store keeps its SHA-256. Sign-in attempts are
//! limited per email and in all, since each one costs an argon2 hash.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use confab_engine::auth::{
    hash_password, legacy_login_key, login_key, login_of, login_prefix, logins_for_email,
    new_secret, password_problem, secret_key, verify_password, Invite, Login, Session, INVITE_MS,
    PASSWORD_CHARS, SESSION_MS,
};
use confab_engine::catalogue::Ks;
use confab_engine::committer::WriteSet;
use confab_engine::ids::{AgentId, WorkspaceId};
use confab_engine::model::{Agent, Role};
use confab_engine::time::{now_millis, to_rfc3339, UnixMillis};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{blocking, Body};
use crate::app::AppState;
use crate::auth::{session_cookie_name, session_secret, AgentAuth};
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(accept_invite))
        .routes(routes!(set_password))
        .routes(routes!(invite))
}

/// Sign-in attempts allowed: per email, and in all.
pub struct LoginLimits {
    per_email: DefaultKeyedRateLimiter<[u8; 32]>,
    all: DefaultDirectRateLimiter,
    /// Invitations being accepted: one acceptance at a time per invitation, so two
    /// requests racing with one code cannot both set a password.
    accepting: dashmap::DashSet<Vec<u8>>,
}

/// Holds an invitation while it is accepted; lets go when dropped.
struct Accepting<'a> {
    limits: &'a LoginLimits,
    key: Vec<u8>,
}

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        self.limits.accepting.remove(&self.key);
    }
}

impl LoginLimits {
    /// The invitation `key` for this request alone, or `None` while another accepts it.
    fn accept(&self, key: &[u8]) -> Option<Accepting<'_>> {
        self.accepting.insert(key.to_vec()).then(|| Accepting {
            limits: self,
            key: key.to_vec(),
        })
    }
}

impl LoginLimits {
    pub fn new() -> LoginLimits {
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        LoginLimits {
            // Five tries a minute for one account, then one every 12 s.
            per_email: RateLimiter::keyed(per_minute(5)),
            accepting: dashmap::DashSet::new(),
            // An argon2 hash is tens of milliseconds of a core.
            all: RateLimiter::direct(
                Quota::per_second(NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(40).unwrap_or(NonZeroU32::MIN)),
            ),
        }
    }

    fn check(&self, email: Option<&str>) -> ApiResult<()> {
        let limited = || {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many sign-in attempts: wait a minute and try again",
            )
        };
        self.all.check().map_err(|_| limited())?;
        if let Some(email) = email {
            if self.per_email.len() > 100_000 {
                self.per_email.retain_recent();
            }
            // Keyed by a digest of the email as the store keys it: case and spaces do
            // not make another account, and long input costs no memory.
            let key: [u8; 32] = sha2::Sha256::digest(login_prefix(email)).into();
            self.per_email.check_key(&key).map_err(|_| limited())?;
        }
        Ok(())
    }
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits::new()
    }
}

#[derive(Serialize, ToSchema)]
pub struct MeAgent {
    id: AgentId,
    name: String,
    email: String,
    role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct MeWorkspace {
    id: WorkspaceId,
    name: String,
}

/// The signed-in agent and their workspace.
#[derive(Serialize, ToSchema)]
pub struct Me {
    agent: MeAgent,
    workspace: MeWorkspace,
}

async fn me_of(app: &AppState, agent: &Agent) -> ApiResult<Me> {
    let (store, ws) = (app.store.clone(), agent.workspace_id);
    let workspace = blocking(move || store.workspace(ws)).await?;
    Ok(Me {
        agent: MeAgent {
            id: agent.id,
            name: agent.name.clone(),
            email: agent.email.clone(),
            role: agent.role,
        },
        workspace: MeWorkspace {
            id: agent.workspace_id,
            name: workspace.map(|w| w.name).unwrap_or_default(),
        },
    })
}

/// Email and password, or an API token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(max_length = 320)]
    email: Option<String>,
    #[schema(max_length = 200)]
    password: Option<String>,
    /// An agent's API token, instead of email and password.
    #[schema(max_length = 200)]
    token: Option<String>,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the email and password (or the token) do not match an agent",
    )
}

/// An argon2id hash to verify against when an email has no login, so that an unknown
/// email takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no such login, only timing").unwrap_or_default())
}

fn over_tls(app: &AppState, headers: &HeaderMap) -> bool {
    crate::auth::over_tls(&app.config, headers)
}

/// The session cookie; over TLS `Secure` and named with the `__Host-` prefix.
fn session_cookie(secret: &str, max_age_secs: i64, tls: bool) -> HeaderValue {
    let name = session_cookie_name(tls);
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("confab_session=; Path=/; Max-Age=0"))
}

/// Stores a new session for `agent` and answers with its cookie and who signed in.
async fn start_session(
    app: &AppState,
    headers: &HeaderMap,
    agent: &Agent,
    mut set: WriteSet,
) -> ApiResult<Response> {
    let secret = new_secret();
    let now = now_millis();
    set.put(
        Ks::Session,
        secret_key(&secret),
        &Session {
            agent_id: agent.id,
            workspace_id: agent.workspace_id,
            created_at: now,
            expires_at: now + SESSION_MS,
        },
    );
    app.committer.commit(set).await?;
    let me = me_of(app, agent).await?;
    let cookie = session_cookie(&secret, SESSION_MS / 1000, over_tls(app, headers));
    Ok(([(header::SET_COOKIE, cookie)], Json(me)).into_response())
}

/// Signs in: sets the session cookie.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in: the `confab_session` cookie is set.", body = Me),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`missing_field`: neither email and password nor a token.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many attempts for this email, or in all.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<LoginBody>,
) -> ApiResult<Response> {
    if let Some(token) = body.token.as_deref().filter(|t| !t.is_empty()) {
        if token.len() > 200 {
            return Err(invalid_credentials());
        }
        app.logins.check(None)?;
        let agent = app
            .tokens
            .agent(&app, token)
            .await?
            .ok_or_else(invalid_credentials)?;
        return start_session(&app, &headers, &agent, WriteSet::new()).await;
    }
    let (Some(email), Some(password)) = (body.email, body.password) else {
        return Err(ApiError::unprocessable(
            "missing_field",
            "sign in with `email` and `password`, or with `token`",
        ));
    };
    if email.len() > 320 || password.chars().count() > *PASSWORD_CHARS.end() {
        return Err(invalid_credentials());
    }
    app.logins.check(Some(&email))?;
    let store = app.store.clone();
    let agent = blocking(move || {
        // Agents of several workspaces may share the email: the password picks the agent
        // (the most recently changed login first when two share it too).
        let logins = logins_for_email(&store, &email)?;
        if logins.is_empty() {
            verify_password(&password, dummy_hash());
            return Ok(None);
        }
        match logins
            .into_iter()
            .find(|l| verify_password(&password, &l.password_hash))
        {
            Some(login) => store.agent(login.agent_id),
            None => Ok(None),
        }
    })
    .await?
    .ok_or_else(invalid_credentials)?;
    start_session(&app, &headers, &agent, WriteSet::new()).await
}

/// Signs out: the session ends on the server, and the cookie is cleared.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "Signed out (also when no session was signed in)."),
        (status = 403, description = "`cross_origin`: a cookie sent from another site's page.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn logout(State(app): State<AppState>, parts: Parts) -> ApiResult<Response> {
    if let Some(secret) = session_secret(&parts, &app.config) {
        if !crate::auth::same_origin(&parts) {
            return Err(crate::auth::cross_origin());
        }
        let mut set = WriteSet::new();
        set.delete(Ks::Session, secret_key(secret));
        app.committer.commit(set).await?;
        app.sessions.forget(secret);
    }
    let cleared = session_cookie("", 0, over_tls(&app, &parts.headers));
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cleared)]).into_response())
}

/// Who is signed in (by cookie or token).
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "auth",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The agent and their workspace.", body = Me),
        (status = 401, description = "`unauthorized`: not signed in.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn me(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Json<Me>> {
    Ok(Json(me_of(&app, &agent.0).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// 10 to 200 characters.
    #[schema(min_length = 10, max_length = 200)]
    password: String,
    /// Required when agents change their own password and already have one.
    #[schema(max_length = 200)]
    current_password: Option<String>,
}

/// The `WriteSet` that gives `agent` the password `password` (hashed off the runtime).
async fn password_set(
    app: &AppState,
    agent: &Agent,
    password: String,
) -> ApiResult<(WriteSet, UnixMillis)> {
    if let Some(problem) = password_problem(&password) {
        return Err(ApiError::unprocessable("invalid_password", problem));
    }
    let (store, email) = (app.store.clone(), agent.email.clone());
    let (agent_id, ws) = (agent.id, agent.workspace_id);
    let (legacy, hash) = blocking(move || {
        let legacy: Option<Login> = store.get(Ks::Login, &legacy_login_key(&email))?;
        Ok((legacy, hash_password(&password)?))
    })
    .await?;
    let mut set = WriteSet::new();
    if legacy.is_some_and(|l| l.agent_id == agent_id) {
        set.delete(Ks::Login, legacy_login_key(&agent.email));
    }
    let now = now_millis();
    set.put(
        Ks::Login,
        login_key(&agent.email, agent_id),
        &Login {
            agent_id,
            workspace_id: ws,
            password_hash: hash,
            updated_at: now,
        },
    );
    Ok((set, now))
}

async fn workspace_agent(app: &AppState, ws: WorkspaceId, id: &str) -> ApiResult<Agent> {
    let id: AgentId = id.parse().map_err(|_| ApiError::not_found("agent"))?;
    let store = app.store.clone();
    blocking(move || store.agent(id))
        .await?
        .filter(|a| a.workspace_id == ws)
        .ok_or_else(|| ApiError::not_found("agent"))
}

/// Sets or resets an agent's password: workspace admins for any agent of the workspace,
/// anyone for themselves (with `current_password` once they have one). Every session of the
/// agent begun before ends.
#[utoipa::path(
    put,
    path = "/api/v1/agents/{id}/password",
    tag = "agents",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The agent.")),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "Set: the agent signs in with their email and this password."),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`; `invalid_credentials`: `current_password` is wrong.", body = ErrorBody),
        (status = 403, description = "`admin_only`: another agent's password; `cross_origin`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such agent in the caller's workspace.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_password`; `invalid_value`: `current_password` over 200 characters.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many attempts at one's own current password (shared with sign-in's limit for the email).", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn set_password(
    caller: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<PasswordBody>,
) -> ApiResult<StatusCode> {
    if body
        .current_password
        .as_ref()
        .is_some_and(|p| p.chars().count() > *PASSWORD_CHARS.end())
    {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`current_password` is at most 200 characters",
        ));
    }
    let agent = workspace_agent(&app, caller.0.workspace_id, &id).await?;
    if agent.id != caller.0.id && caller.0.role != Role::Admin {
        return Err(ApiError::forbidden(
            "admin_only",
            "only workspace admins set other agents' passwords",
        ));
    }
    // Anyone changing their own password proves they know the current one (a stolen
    // session must not lock the owner out).
    if agent.id == caller.0.id {
        app.logins.check(Some(&agent.email))?;
        let (store, email, agent_id) = (app.store.clone(), agent.email.clone(), agent.id);
        let current = body.current_password.clone().unwrap_or_default();
        let ok = blocking(move || {
            let login = login_of(&store, &email, agent_id)?;
            Ok(login.is_none_or(|l| verify_password(&current, &l.password_hash)))
        })
        .await?;
        if !ok {
            return Err(invalid_credentials());
        }
    }
    let (mut set, at) = password_set(&app, &agent, body.password).await?;
    super::audit_into(
        &mut set,
        agent.workspace_id,
        confab_engine::audit::Author::agent(caller.0.id),
        "agent_password_set",
        Some(agent.id.to_string()),
        &[],
    );
    app.committer.commit(set).await?;
    // Every session begun before the new password ends (the caller's own too).
    app.sessions.password_changed(agent.id, at);
    Ok(StatusCode::NO_CONTENT)
}

/// An invitation link.
#[derive(Serialize, ToSchema)]
pub struct InviteCreated {
    /// The code to accept (`POST /api/v1/auth/accept-invite`); shown once.
    invite: String,
    /// The inbox page that accepts it, relative to the server.
    url: String,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// Invites an agent to choose a password (workspace admins): a link valid for 7 days.
#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/invite",
    tag = "agents",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The agent.")),
    responses(
        (status = 201, description = "The invitation.", body = InviteCreated),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`; `cross_origin`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such agent in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn invite(
    caller: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<InviteCreated>)> {
    if caller.0.role != Role::Admin {
        return Err(ApiError::forbidden(
            "admin_only",
            "only workspace admins invite agents",
        ));
    }
    let agent = workspace_agent(&app, caller.0.workspace_id, &id).await?;
    let code = new_secret();
    let now = now_millis();
    let mut set = WriteSet::new();
    set.put(
        Ks::Invite,
        secret_key(&code),
        &Invite {
            agent_id: agent.id,
            workspace_id: agent.workspace_id,
            created_at: now,
            expires_at: now + INVITE_MS,
        },
    );
    super::audit_into(
        &mut set,
        agent.workspace_id,
        confab_engine::audit::Author::agent(caller.0.id),
        "agent_invited",
        Some(agent.id.to_string()),
        &[],
    );
    app.committer.commit(set).await?;
    Ok((
        StatusCode::CREATED,
        Json(InviteCreated {
            url: format!("/#/invite/{code}"),
            invite: code,
            expires_at: to_rfc3339(now + INVITE_MS),
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInviteBody {
    #[schema(max_length = 128)]
    invite: String,
    #[schema(min_length = 10, max_length = 200)]
    password: String,
}

/// Accepts an invitation: sets the password, ends the invitation, signs in.
#[utoipa::path(
    post,
    path = "/api/v1/auth/accept-invite",
    tag = "auth",
    request_body = AcceptInviteBody,
    responses(
        (status = 200, description = "Password set and signed in: the `confab_session` cookie is set.", body = Me),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`invalid_invite`: unknown, used or expired.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_password`.", body = ErrorBody),
        (status = 429, description = "`rate_limited`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn accept_invite(
    State(app): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<AcceptInviteBody>,
) -> ApiResult<Response> {
    app.logins.check(None)?;
    let key = secret_key(body.invite.trim());
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_invite",
            "this invitation is unknown, already used or expired: ask your admin for a new one",
        )
    };
    // Held until the invitation is deleted (or this fails): a second request with the same
    // code finds it taken now, or gone once this one commits.
    let _accepting = app.logins.accept(&key).ok_or_else(invalid)?;
    let store = app.store.clone();
    let lookup = key.clone();
    let found = blocking(move || {
        let Some(invite) = store.get::<Invite>(Ks::Invite, &lookup)? else {
            return Ok(None);
        };
        Ok(store.agent(invite.agent_id)?.map(|a| (a, invite)))
    })
    .await?;
    let agent = match found {
        Some((agent, invite)) if invite.expires_at > now_millis() => agent,
        _ => return Err(invalid()),
    };
    let (mut set, at) = password_set(&app, &agent, body.password).await?;
    set.delete(Ks::Invite, key);
    let answer = start_session(&app, &headers, &agent, set).await?;
    app.sessions.password_changed(agent.id, at);
    Ok(answer)
}
