//! Provisioning with the server admin token: workspaces, agents, channels; and online
//! backups.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use confab_engine::admin;
use confab_engine::ids::{AgentId, ChannelId, WorkspaceId};
use confab_engine::model::{
    Channel, ChannelConfig, ChannelKind, EmailConfig, LinkedinConfig, MailSecurity, MailServer,
    OverDailyCap, Role, WhatsappConfig, WHATSAPP_DEFAULT_API_BASE,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::blocking;
use super::Body;
use crate::app::AppState;
use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workspace))
        .routes(routes!(create_agent))
        .routes(routes!(create_channel))
        .routes(routes!(update_channel))
        .routes(routes!(create_backup))
}

const MAX_NAME: usize = 200;

/// A required text field, trimmed. Its length counts as sent (the document's `maxLength`).
fn required(field: &'static str, value: Option<String>, max: usize) -> ApiResult<String> {
    let value = value.unwrap_or_default();
    if value.chars().count() > max {
        return Err(ApiError::unprocessable(
            "field_too_long",
            format!("`{field}` is longer than {max} characters"),
        ));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::unprocessable(
            "missing_field",
            format!("`{field}` is required"),
        ));
    }
    Ok(value.to_string())
}

#[derive(Deserialize, ToSchema)]
pub struct NewWorkspace {
    /// 1 to 200 characters.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "[^\\s\\u0085]"
    )]
    name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WorkspaceView {
    id: WorkspaceId,
    name: String,
}

/// Creates a workspace.
#[utoipa::path(
    post,
    path = "/api/v1/admin/workspaces",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = NewWorkspace,
    responses(
        (status = 201, description = "Created.", body = WorkspaceView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`missing_field`, `field_too_long`, `invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn create_workspace(
    _: AdminAuth,
    State(app): State<AppState>,
    Body(body): Body<NewWorkspace>,
) -> ApiResult<(StatusCode, Json<WorkspaceView>)> {
    let name = required("name", body.name, MAX_NAME)?;
    let (workspace, set) = admin::new_workspace(&name);
    app.committer.commit(set).await?;
    Ok((
        StatusCode::CREATED,
        Json(WorkspaceView {
            id: workspace.id,
            name: workspace.name,
        }),
    ))
}

async fn existing_workspace(app: &AppState, id: &str) -> ApiResult<WorkspaceId> {
    let id: WorkspaceId = id.parse().map_err(|_| ApiError::not_found("workspace"))?;
    let store = app.store.clone();
    match blocking(move || store.workspace(id)).await? {
        Some(_) => Ok(id),
        None => Err(ApiError::not_found("workspace")),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct NewAgent {
    /// 1 to 200 characters.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "[^\\s\\u0085]"
    )]
    name: Option<String>,
    #[schema(
        required = true,
        nullable = false,
        max_length = 320,
        pattern = "^\\s*[^@\\s][^@]*@"
    )]
    email: Option<String>,
    /// `agent` when left out or `null`.
    role: Option<Role>,
}

/// An agent as created: its token is shown this once.
#[derive(Serialize, ToSchema)]
pub struct AgentCreated {
    pub id: AgentId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub email: String,
    pub role: Role,
    /// `cfb_` + 64 hex digits; only its hash is stored.
    pub token: String,
}

/// Creates an agent of the workspace; the answer carries its token, shown once.
#[utoipa::path(
    post,
    path = "/api/v1/admin/workspaces/{workspace_id}/agents",
    tag = "admin",
    security(("admin_token" = [])),
    params(("workspace_id" = String, Path, description = "The workspace.")),
    request_body = NewAgent,
    responses(
        (status = 201, description = "Created.", body = AgentCreated),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`missing_field`, `field_too_long`, `invalid_email`, `invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn create_agent(
    _: AdminAuth,
    State(app): State<AppState>,
    Path(workspace_id): Path<String>,
    Body(body): Body<NewAgent>,
) -> ApiResult<(StatusCode, Json<AgentCreated>)> {
    let workspace_id = existing_workspace(&app, &workspace_id).await?;
    let name = required("name", body.name, MAX_NAME)?;
    let email = required("email", body.email, 320)?;
    if !email.contains('@') {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "`email` is not an email address",
        ));
    }
    let role = body.role.unwrap_or(Role::Agent);
    let (agent, token, mut set) = admin::new_agent(workspace_id, &name, &email, role);
    super::audit_into(
        &mut set,
        workspace_id,
        confab_engine::audit::Author::of(confab_engine::audit::ActorKind::Operator),
        "agent_created",
        Some(agent.id.to_string()),
        &[
            ("name", agent.name.clone()),
            ("role", format!("{:?}", agent.role).to_lowercase()),
        ],
    );
    app.committer.commit(set).await?;
    Ok((
        StatusCode::CREATED,
        Json(AgentCreated {
            id: agent.id,
            workspace_id: agent.workspace_id,
            name: agent.name,
            email: agent.email,
            role: agent.role,
            token,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
pub struct NewChannel {
    /// `whatsapp`, `email` or `linkedin`. The other fields are those of the kind:
    /// `phone_number_id`, `app_secret`, `verify_token`, `access_token`, `api_base_url` for
    /// WhatsApp; `address`, `display_name`, `inbound_secret`, `smtp`, `imap`, `daily_limit`
    /// for email; `account_id`, `api_base_url`, `api_key`, `webhook_secret`,
    /// `daily_limit`, `min_interval_secs` for LinkedIn (through Unipile).
    #[schema(
        required = true,
        nullable = false,
        pattern = "^(whatsapp|email|linkedin)$"
    )]
    kind: Option<String>,
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "[^\\s\\u0085]"
    )]
    name: Option<String>,
    /// WhatsApp (required).
    #[schema(min_length = 1, max_length = 64, pattern = "[^\\s\\u0085]")]
    phone_number_id: Option<String>,
    /// WhatsApp (required).
    #[schema(min_length = 1, max_length = 512, pattern = "[^\\s\\u0085]")]
    app_secret: Option<String>,
    /// WhatsApp (required).
    #[schema(min_length = 1, max_length = 512, pattern = "[^\\s\\u0085]")]
    verify_token: Option<String>,
    /// WhatsApp (required).
    #[schema(min_length = 1, max_length = 4096, pattern = "[^\\s\\u0085]")]
    access_token: Option<String>,
    /// WhatsApp: the Graph API's base URL (http or https); Meta's when left out, empty or
    /// `null`. LinkedIn (required): the account's Unipile API (`https://apiN.unipile.com:PORT`).
    api_base_url: Option<String>,
    /// LinkedIn (required): Unipile's id of the connected account.
    #[schema(min_length = 1, max_length = 256, pattern = "[^\\s\\u0085]")]
    account_id: Option<String>,
    /// LinkedIn (required): the Unipile API key, sent as `X-API-KEY`.
    #[schema(min_length = 1, max_length = 4096, pattern = "[^\\s\\u0085]")]
    api_key: Option<String>,
    /// LinkedIn (required): the secret Unipile sends in the webhook's `Unipile-Auth` header.
    #[schema(min_length = 1, max_length = 512, pattern = "[^\\s\\u0085]")]
    webhook_secret: Option<String>,
    /// LinkedIn: the least seconds between two sends of the account (default 20; `0`:
    /// none).
    #[schema(minimum = 0, maximum = 86400)]
    min_interval_secs: Option<u32>,
    /// Email (required): the address mail is sent from and replies come to.
    #[schema(max_length = 320)]
    address: Option<String>,
    /// Email: the name shown with the address.
    #[schema(max_length = 200)]
    display_name: Option<String>,
    /// Email: signs `POST /webhooks/email/{id}` (HMAC-SHA256), or is its HTTP Basic
    /// password (SendGrid); without it the channel takes no webhooks (IMAP only).
    #[schema(max_length = 512)]
    inbound_secret: Option<String>,
    /// Email (required): the server mail is sent through.
    smtp: Option<MailServerInput>,
    /// Email: the mailbox read for replies (IDLE, else polling).
    imap: Option<MailServerInput>,
    /// Email, LinkedIn: messages sent a UTC day at most (the mailbox provider's cap; a
    /// LinkedIn account's defaults to 100).
    #[schema(minimum = 1, maximum = 10000000)]
    daily_limit: Option<u32>,
}

/// A mail server and the account on it. Secrets are never shown.
#[derive(Deserialize, ToSchema)]
pub struct MailServerInput {
    #[schema(min_length = 1, max_length = 253)]
    host: String,
    #[schema(minimum = 1, maximum = 65535)]
    port: u16,
    /// `starttls`, `tls`, or `none` (loopback only, unless the server's configuration allows it).
    security: MailSecurity,
    #[serde(default)]
    #[schema(max_length = 320)]
    username: String,
    #[serde(default)]
    #[schema(max_length = 1024)]
    password: String,
    /// IMAP: the mailbox read, `INBOX` when left out.
    #[schema(max_length = 200)]
    mailbox: Option<String>,
}

/// Creates a channel of the workspace and starts its connector. Secrets are never shown.
#[utoipa::path(
    post,
    path = "/api/v1/admin/workspaces/{workspace_id}/channels",
    tag = "admin",
    security(("admin_token" = [])),
    params(("workspace_id" = String, Path, description = "The workspace.")),
    request_body = NewChannel,
    responses(
        (status = 201, description = "Created; point the provider's webhook at `webhook_path`.", body = ChannelView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`missing_field`, `field_too_long`, `invalid_url`, `invalid_channel_kind`, `unsupported_channel_kind`, `invalid_value`, `invalid_email`, `insecure_mail_server`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn create_channel(
    _: AdminAuth,
    State(app): State<AppState>,
    Path(workspace_id): Path<String>,
    Body(body): Body<NewChannel>,
) -> ApiResult<(StatusCode, Json<ChannelView>)> {
    let workspace_id = existing_workspace(&app, &workspace_id).await?;
    let mut body = body;
    let name = required("name", body.name.take(), MAX_NAME)?;
    let daily_limit = body.daily_limit;
    if daily_limit.is_some_and(|n| !(1..=10_000_000).contains(&n)) {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`daily_limit` is a whole number from 1 to 10,000,000",
        ));
    }
    if body
        .min_interval_secs
        .is_some_and(|n| n > MAX_MIN_INTERVAL_SECS)
    {
        return Err(ApiError::unprocessable(
            "invalid_value",
            format!("`min_interval_secs` is a whole number from 0 to {MAX_MIN_INTERVAL_SECS}"),
        ));
    }
    let email_fields = body.address.is_some()
        || body.display_name.is_some()
        || body.inbound_secret.is_some()
        || body.smtp.is_some()
        || body.imap.is_some();
    let linkedin_fields = body.account_id.is_some()
        || body.api_key.is_some()
        || body.webhook_secret.is_some()
        || body.min_interval_secs.is_some();
    let whatsapp_fields = body.phone_number_id.is_some()
        || body.app_secret.is_some()
        || body.verify_token.is_some()
        || body.access_token.is_some();
    let config = match body.kind.as_deref() {
        Some("whatsapp") => {
            if email_fields || linkedin_fields || body.daily_limit.is_some() {
                return Err(other_kinds_settings("whatsapp"));
            }
            let api_base_url = base_url(body.api_base_url)?;
            ChannelConfig::Whatsapp(WhatsappConfig {
                phone_number_id: required("phone_number_id", body.phone_number_id, 64)?,
                app_secret: required("app_secret", body.app_secret, 512)?,
                verify_token: required("verify_token", body.verify_token, 512)?,
                access_token: required("access_token", body.access_token, 4096)?,
                api_base_url,
            })
        }
        Some("email") => {
            if whatsapp_fields || linkedin_fields || body.api_base_url.is_some() {
                return Err(other_kinds_settings("email"));
            }
            ChannelConfig::Email(email_config(&app, &mut body)?)
        }
        Some("linkedin") => {
            if whatsapp_fields || email_fields {
                return Err(other_kinds_settings("linkedin"));
            }
            let api_base_url = required("api_base_url", body.api_base_url.take(), 2048)?;
            ChannelConfig::Linkedin(LinkedinConfig {
                account_id: required("account_id", body.account_id.take(), 256)?,
                api_base_url: base_url(Some(api_base_url))?,
                api_key: required("api_key", body.api_key.take(), 4096)?,
                webhook_secret: required("webhook_secret", body.webhook_secret.take(), 512)?,
            })
        }
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_channel_kind",
                format!("unknown channel kind {other:?}: expected whatsapp, email or linkedin"),
            ))
        }
        None => {
            return Err(ApiError::unprocessable(
                "missing_field",
                "`kind` is required",
            ))
        }
    };
    let (mut channel, _) = admin::new_channel(workspace_id, &name, config);
    if matches!(channel.kind(), ChannelKind::Email | ChannelKind::Linkedin) {
        channel.limits.per_day = daily_limit;
    }
    channel.limits.min_interval_secs = body.min_interval_secs;
    let mut set = admin::channel_set(&channel);
    super::audit_into(
        &mut set,
        workspace_id,
        confab_engine::audit::Author::of(confab_engine::audit::ActorKind::Operator),
        "channel_created",
        Some(channel.id.to_string()),
        &[
            ("name", channel.name.clone()),
            ("kind", channel.kind().as_str().to_owned()),
        ],
    );
    app.committer.commit(set).await?;
    app.runtime.channels.start(channel.clone()).await?;
    Ok((StatusCode::CREATED, Json(ChannelView::of(&channel))))
}

/// The longest least spacing between sends a channel may ask for: a day.
const MAX_MIN_INTERVAL_SECS: u32 = 86_400;

/// 422 `invalid_value`: settings of another kind of channel than `kind`.
fn other_kinds_settings(kind: &str) -> ApiError {
    ApiError::unprocessable(
        "invalid_value",
        format!("a {kind} channel has no such settings (they belong to another kind of channel)"),
    )
}

/// An email channel's settings from the request: 422 `missing_field`, `invalid_email`,
/// `insecure_mail_server` (no TLS to a server off loopback, unless the configuration
/// allows it).
fn email_config(app: &AppState, body: &mut NewChannel) -> ApiResult<EmailConfig> {
    let address = required("address", body.address.take(), 320)?.to_lowercase();
    let valid = address.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') || domain == "localhost"
    }) && !address.contains(|c: char| c.is_whitespace() || c.is_control() || c == '+');
    if !valid {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "`address` must be an email address without `+` (replies come to address+token)",
        ));
    }
    let smtp = body
        .smtp
        .take()
        .map(|input| mail_server(app, "smtp", input))
        .transpose()?
        .ok_or_else(|| {
            ApiError::unprocessable("missing_field", "`smtp` is required for an email channel")
        })?;
    let imap = body
        .imap
        .take()
        .map(|input| mail_server(app, "imap", input))
        .transpose()?;
    for (name, value, max) in [
        ("display_name", body.display_name.as_ref(), 200),
        ("inbound_secret", body.inbound_secret.as_ref(), 512),
    ] {
        if value.is_some_and(|v| v.chars().count() > max) {
            return Err(ApiError::unprocessable(
                "field_too_long",
                format!("`{name}` is at most {max} characters"),
            ));
        }
    }
    Ok(EmailConfig {
        address,
        display_name: body
            .display_name
            .take()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty()),
        inbound_secret: body.inbound_secret.take().filter(|s| !s.is_empty()),
        smtp,
        imap,
        token_key: confab_engine::auth::new_secret(),
    })
}

/// A mail server's settings from the request: 422 `invalid_value`, or
/// `insecure_mail_server` for no TLS to a server off loopback (unless the configuration
/// allows it).
fn mail_server(
    app: &AppState,
    field: &'static str,
    input: MailServerInput,
) -> ApiResult<MailServer> {
    let host = input.host.trim().to_owned();
    if host.is_empty() || host.len() > 253 || host.contains(|c: char| c.is_whitespace() || c == '/')
    {
        return Err(ApiError::unprocessable(
            "invalid_value",
            format!("`{field}.host` must be a host name or address"),
        ));
    }
    if input.port == 0 {
        return Err(ApiError::unprocessable(
            "invalid_value",
            format!("`{field}.port` must be from 1 to 65535"),
        ));
    }
    for (name, value, max) in [
        ("username", Some(&input.username), 320),
        ("password", Some(&input.password), 1024),
        ("mailbox", input.mailbox.as_ref(), 200),
    ] {
        if value.is_some_and(|v| v.chars().count() > max) {
            return Err(ApiError::unprocessable(
                "field_too_long",
                format!("`{field}.{name}` is at most {max} characters"),
            ));
        }
    }
    if input.security == MailSecurity::None
        && !app.config.email.allow_insecure
        && !is_loopback(&host)
    {
        return Err(ApiError::unprocessable(
            "insecure_mail_server",
            format!("`{field}.security: none` sends the password in clear: only for a server on this machine (or set email.allow_insecure)"),
        ));
    }
    Ok(MailServer {
        host,
        port: input.port,
        security: input.security,
        username: input.username,
        password: input.password,
        mailbox: input
            .mailbox
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .or_else(|| (field == "imap").then(|| "INBOX".to_owned())),
    })
}

/// Whether `host` is this machine (a name or a loopback address).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The Graph API base URL given (trimmed, without a trailing `/`), Meta's when left out,
/// empty or `null`; 422 `invalid_url` unless it is http(s).
fn base_url(value: Option<String>) -> ApiResult<String> {
    let url = value
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| WHATSAPP_DEFAULT_API_BASE.to_string());
    if reqwest::Url::parse(&url)
        .map(|u| !matches!(u.scheme(), "http" | "https"))
        .unwrap_or(true)
    {
        return Err(ApiError::unprocessable(
            "invalid_url",
            "`api_base_url` must be an http(s) URL",
        ));
    }
    Ok(url)
}

/// A channel as the API shows it: never its secrets.
#[derive(Serialize, ToSchema)]
pub struct ChannelView {
    pub id: ChannelId,
    pub workspace_id: WorkspaceId,
    pub kind: ChannelKind,
    pub name: String,
    pub phone_number_id: String,
    pub api_base_url: String,
    /// Email: the address mail is sent from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// LinkedIn: Unipile's id of the connected account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Email: the SMTP server (`host:port`, security), never its credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<MailServerView>,
    /// Email: the IMAP server and mailbox read, never its credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap: Option<MailServerView>,
    /// Where the provider posts its webhooks.
    pub webhook_path: String,
    /// A disabled channel stores its webhooks; its sends wait in the outbox.
    pub disabled: bool,
    pub limits: LimitsConfig,
}

/// A mail server as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct MailServerView {
    pub host: String,
    pub port: u16,
    pub security: MailSecurity,
    pub username: String,
    pub mailbox: Option<String>,
}

impl MailServerView {
    fn of(server: &MailServer) -> MailServerView {
        MailServerView {
            host: server.host.clone(),
            port: server.port,
            security: server.security,
            username: server.username.clone(),
            mailbox: server.mailbox.clone(),
        }
    }
}

/// A channel's own send limits (`null`: its kind's default).
#[derive(Serialize, ToSchema)]
pub struct LimitsConfig {
    pub per_second: Option<u32>,
    pub per_day: Option<u32>,
    pub over_daily_cap: OverDailyCap,
    /// The least seconds between two sends (`0`: none).
    pub min_interval_secs: Option<u32>,
}

impl ChannelView {
    pub fn of(channel: &Channel) -> ChannelView {
        let whatsapp = channel.config.whatsapp();
        let linkedin = channel.config.linkedin();
        ChannelView {
            id: channel.id,
            workspace_id: channel.workspace_id,
            kind: channel.kind(),
            name: channel.name.clone(),
            phone_number_id: whatsapp
                .map(|c| c.phone_number_id.clone())
                .unwrap_or_default(),
            api_base_url: whatsapp
                .map(|c| c.api_base_url.clone())
                .or_else(|| linkedin.map(|c| c.api_base_url.clone()))
                .unwrap_or_default(),
            address: channel.config.email().map(|c| c.address.clone()),
            account_id: linkedin.map(|c| c.account_id.clone()),
            smtp: channel.config.email().map(|c| MailServerView::of(&c.smtp)),
            imap: channel
                .config
                .email()
                .and_then(|c| c.imap.as_ref())
                .map(MailServerView::of),
            webhook_path: format!("/webhooks/{}/{}", channel.kind().as_str(), channel.id),
            disabled: channel.disabled,
            limits: LimitsConfig {
                per_second: channel.limits.per_second,
                per_day: channel.limits.per_day,
                over_daily_cap: channel.limits.over_daily_cap,
                min_interval_secs: channel.limits.min_interval_secs,
            },
        }
    }
}

/// Any subset of a channel's settings. Credentials are write-only; those of another
/// provider than the channel's are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    #[schema(min_length = 1, max_length = 200, pattern = "[^\\s\\u0085]")]
    name: Option<String>,
    /// `true` holds every send in the outbox (webhooks are still stored); `false` sends
    /// them.
    disabled: Option<bool>,
    /// WhatsApp: the number's id.
    #[schema(min_length = 1, max_length = 64, pattern = "[^\\s\\u0085]")]
    phone_number_id: Option<String>,
    /// WhatsApp: the app secret that signs webhooks.
    #[schema(min_length = 1, max_length = 512, pattern = "[^\\s\\u0085]")]
    app_secret: Option<String>,
    /// WhatsApp: the webhook verification token.
    #[schema(min_length = 1, max_length = 512, pattern = "[^\\s\\u0085]")]
    verify_token: Option<String>,
    /// WhatsApp: the Graph API access token.
    #[schema(min_length = 1, max_length = 4096, pattern = "[^\\s\\u0085]")]
    access_token: Option<String>,
    /// WhatsApp: the Graph API's base URL (http or https).
    api_base_url: Option<String>,
    /// Email: the name shown with the address.
    #[schema(max_length = 200)]
    display_name: Option<String>,
    /// Email: a new secret for `POST /webhooks/email/{id}`.
    #[schema(min_length = 1, max_length = 512, pattern = "[^\\s\\u0085]")]
    inbound_secret: Option<String>,
    /// Email: the SMTP server and account, replaced whole.
    smtp: Option<MailServerInput>,
    /// Email: the IMAP server and account, replaced whole (the mailbox reconnects).
    imap: Option<MailServerInput>,
    /// LinkedIn: a new Unipile API key.
    #[schema(min_length = 1, max_length = 4096, pattern = "[^\\s\\u0085]")]
    api_key: Option<String>,
    /// LinkedIn: a new secret for the webhook's `Unipile-Auth` header.
    #[schema(min_length = 1, max_length = 512, pattern = "[^\\s\\u0085]")]
    webhook_secret: Option<String>,
    limits: Option<LimitsPatch>,
}

/// Send limits; a field left out keeps its value, `null` returns it to the kind's default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    per_second: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000000)]
    per_day: Option<Option<u32>>,
    /// `wait` (the message goes the next UTC day) or `fail` (`daily_limit_reached`).
    over_daily_cap: Option<OverDailyCap>,
    /// The least seconds between two sends (`0`: none; `null`: the kind's default).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 86400)]
    min_interval_secs: Option<Option<u32>>,
}

/// Tells a field sent as `null` (Some(None)) from one not sent (None).
pub(crate) fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

fn limit(
    field: &'static str,
    value: Option<Option<u32>>,
    max: u32,
) -> ApiResult<Option<Option<u32>>> {
    match value {
        Some(Some(n)) if n == 0 || n > max => Err(ApiError::unprocessable(
            "invalid_value",
            format!("`limits.{field}` is a whole number from 1 to {max}, or null"),
        )),
        other => Ok(other),
    }
}

/// Changes a channel: rename it, disable or enable it, rotate its credentials, set its
/// send limits. Applied at once: held sends look again. Secrets are never shown.
#[utoipa::path(
    patch,
    path = "/api/v1/admin/workspaces/{workspace_id}/channels/{channel_id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("workspace_id" = String, Path, description = "The workspace."),
        ("channel_id" = String, Path, description = "The channel."),
    ),
    request_body = ChannelPatch,
    responses(
        (status = 200, description = "The channel as stored.", body = ChannelView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workspace, or no such channel in it.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`missing_field`, `field_too_long`, `invalid_url`, `invalid_value`: a credential of another provider, or a limit out of range; `insecure_mail_server`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `conversation_unavailable`.", body = ErrorBody),
    )
)]
async fn update_channel(
    _: AdminAuth,
    State(app): State<AppState>,
    Path((workspace_id, channel_id)): Path<(String, String)>,
    Body(patch): Body<ChannelPatch>,
) -> ApiResult<Json<ChannelView>> {
    let workspace_id = existing_workspace(&app, &workspace_id).await?;
    let id: ChannelId = channel_id
        .parse()
        .map_err(|_| ApiError::not_found("channel"))?;
    let current = app
        .runtime
        .channels
        .get(id)
        .filter(|c| c.workspace_id == workspace_id)
        .ok_or_else(|| ApiError::not_found("channel"))?;
    let name = patch
        .name
        .map(|n| required("name", Some(n), MAX_NAME))
        .transpose()?;
    let credentials = [
        ("phone_number_id", patch.phone_number_id, 64),
        ("app_secret", patch.app_secret, 512),
        ("verify_token", patch.verify_token, 512),
        ("access_token", patch.access_token, 4096),
    ];
    let mut given = Vec::new();
    for (field, value, max) in credentials {
        if let Some(value) = value {
            given.push((field, required(field, Some(value), max)?));
        }
    }
    // Meta's default fills an empty WhatsApp base URL; a LinkedIn account has no default.
    if current.config.linkedin().is_some()
        && patch
            .api_base_url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
    {
        return Err(ApiError::unprocessable(
            "missing_field",
            "`api_base_url` cannot be empty for a LinkedIn channel",
        ));
    }
    let api_base_url = patch.api_base_url.map(|u| base_url(Some(u))).transpose()?;
    let mail_given = patch.display_name.is_some()
        || patch.inbound_secret.is_some()
        || patch.smtp.is_some()
        || patch.imap.is_some();
    let api_key = patch
        .api_key
        .map(|s| required("api_key", Some(s), 4096))
        .transpose()?;
    let webhook_secret = patch
        .webhook_secret
        .map(|s| required("webhook_secret", Some(s), 512))
        .transpose()?;
    let is_linkedin = current.config.linkedin().is_some();
    if (current.config.whatsapp().is_none() && !given.is_empty())
        || (current.config.whatsapp().is_none() && !is_linkedin && api_base_url.is_some())
        || (current.config.email().is_none() && mail_given)
        || (!is_linkedin && (api_key.is_some() || webhook_secret.is_some()))
    {
        return Err(ApiError::unprocessable(
            "invalid_value",
            format!("a {} channel has no such settings", current.kind().as_str()),
        ));
    }
    let inbound_secret = patch
        .inbound_secret
        .map(|s| required("inbound_secret", Some(s), 512))
        .transpose()?;
    let display_name = patch.display_name.map(|n| n.trim().to_owned());
    if display_name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 200)
    {
        return Err(ApiError::unprocessable(
            "field_too_long",
            "`display_name` is at most 200 characters",
        ));
    }
    let smtp = patch
        .smtp
        .map(|input| mail_server(&app, "smtp", input))
        .transpose()?;
    let imap = patch
        .imap
        .map(|input| mail_server(&app, "imap", input))
        .transpose()?;
    let limits = match patch.limits {
        Some(l) => {
            if l.min_interval_secs
                .is_some_and(|n| n.is_some_and(|n| n > MAX_MIN_INTERVAL_SECS))
            {
                return Err(ApiError::unprocessable(
                    "invalid_value",
                    format!("`limits.min_interval_secs` is a whole number from 0 to {MAX_MIN_INTERVAL_SECS}, or null"),
                ));
            }
            Some((
                limit("per_second", l.per_second, 10_000)?,
                limit("per_day", l.per_day, 10_000_000)?,
                l.over_daily_cap,
                l.min_interval_secs,
            ))
        }
        None => None,
    };
    let disabled = patch.disabled;
    let change = Box::new(move |channel: &mut Channel| {
        if let Some(name) = name {
            channel.name = name;
        }
        if let Some(disabled) = disabled {
            channel.disabled = disabled;
        }
        if let Some((per_second, per_day, over, min_interval)) = limits {
            if let Some(min_interval) = min_interval {
                channel.limits.min_interval_secs = min_interval;
            }
            if let Some(per_second) = per_second {
                channel.limits.per_second = per_second;
            }
            if let Some(per_day) = per_day {
                channel.limits.per_day = per_day;
            }
            if let Some(over) = over {
                channel.limits.over_daily_cap = over;
            }
        }
        if let Some(config) = channel.config.whatsapp_mut() {
            for (field, value) in given {
                match field {
                    "phone_number_id" => config.phone_number_id = value,
                    "app_secret" => config.app_secret = value,
                    "verify_token" => config.verify_token = value,
                    _ => config.access_token = value,
                }
            }
            if let Some(url) = api_base_url.clone() {
                config.api_base_url = url;
            }
        }
        if let Some(config) = channel.config.linkedin_mut() {
            if let Some(key) = api_key {
                config.api_key = key;
            }
            if let Some(secret) = webhook_secret {
                config.webhook_secret = secret;
            }
            if let Some(url) = api_base_url {
                config.api_base_url = url;
            }
        }
        if let Some(config) = channel.config.email_mut() {
            if let Some(secret) = inbound_secret {
                config.inbound_secret = Some(secret);
            }
            if let Some(name) = display_name {
                config.display_name = (!name.is_empty()).then_some(name);
            }
            if let Some(smtp) = smtp {
                config.smtp = smtp;
            }
            if let Some(imap) = imap {
                config.imap = Some(imap);
            }
        }
    });
    let channel = app.runtime.channels.update(id, change).await?;
    super::audit(
        &app,
        channel.workspace_id,
        confab_engine::audit::Author::of(confab_engine::audit::ActorKind::Operator),
        "channel_updated",
        Some(channel.id.to_string()),
        &[("disabled", channel.disabled.to_string())],
    )
    .await?;
    Ok(Json(ChannelView::of(&channel)))
}

#[derive(Deserialize, ToSchema)]
pub struct NewBackup {
    /// Where the backup goes, on the server's machine: an absolute path to a directory
    /// that does not exist yet or is empty.
    #[schema(max_length = 4096, example = "/var/backups/confab/2026-12-07")]
    to: Option<String>,
}

/// A finished backup: what its `manifest.json` says.
#[derive(Serialize, ToSchema)]
pub struct BackupView {
    /// The backup's directory.
    to: String,
    /// Every delta up to this offset, and every write acknowledged with it, is in the
    /// backup.
    delta_head: u64,
    /// When its snapshot was taken.
    created_at: String,
    store_format: u32,
    backup_format: u32,
    confab_version: String,
    /// Keys and values copied.
    records: u64,
    /// Bytes of its keyspace files.
    bytes: u64,
    /// Time the backup took.
    seconds: f64,
}

/// Writes an online backup of the store into a directory on the server's machine while
/// traffic goes on (a consistent snapshot, see docs/OPERATIONS.md). Answers once the
/// backup, its checksums and its manifest are on disk. `confab backup --to DIR` calls
/// this route; `confab restore --from DIR --data-dir NEW` turns the result into a data
/// directory.
#[utoipa::path(
    post,
    path = "/api/v1/admin/backups",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = NewBackup,
    responses(
        (status = 201, description = "The backup is complete and durable.", body = BackupView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 409, description = "`backup_dir_not_empty`: `to` exists and is not an empty directory.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`missing_field`, `field_too_long`, `path_not_absolute`, `backup_dir_unusable` (it cannot be created or read: permissions, a file on the way).", body = ErrorBody),
        (status = 500, description = "`backup_failed`: the backup could not be written (the message says why: a full disk, permissions); nothing of it is usable.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn create_backup(
    _: AdminAuth,
    State(app): State<AppState>,
    Body(body): Body<NewBackup>,
) -> ApiResult<(StatusCode, Json<BackupView>)> {
    let to = required("to", body.to, 4096)?;
    let to = std::path::PathBuf::from(to);
    let store = app.store.clone();
    let started = std::time::Instant::now();
    let dir = to.clone();
    let written = tokio::task::spawn_blocking(move || {
        confab_engine::backup::backup(&store, &dir, env!("CARGO_PKG_VERSION"))
    })
    .await?;
    let outcome = if written.is_ok() { "ok" } else { "failed" };
    metrics::counter!(crate::metrics::BACKUPS, "outcome" => outcome).increment(1);
    let manifest = written.map_err(backup_error)?;
    metrics::gauge!(crate::metrics::BACKUP_LAST_SUCCESS).set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(to = %to.display(), delta_head = manifest.delta_head, records = manifest.records(), seconds, "backup written");
    Ok((
        StatusCode::CREATED,
        Json(BackupView {
            to: to.display().to_string(),
            delta_head: manifest.delta_head,
            records: manifest.records(),
            bytes: manifest.bytes(),
            created_at: manifest.created_at,
            store_format: manifest.store_format,
            backup_format: manifest.backup_format,
            confab_version: manifest.confab_version,
            seconds,
        }),
    ))
}

fn backup_error(e: confab_engine::backup::BackupError) -> ApiError {
    use confab_engine::backup::BackupError as E;
    match e {
        E::NotAbsolute(_) => ApiError::unprocessable("path_not_absolute", e.to_string()),
        E::Unusable { .. } => ApiError::unprocessable("backup_dir_unusable", e.to_string()),
        E::NotEmpty(_) => {
            ApiError::new(StatusCode::CONFLICT, "backup_dir_not_empty", e.to_string())
        }
        E::Store(inner) => inner.into(),
        other => {
            tracing::error!(error = %other, "backup failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backup_failed",
                other.to_string(),
            )
        }
    }
}
