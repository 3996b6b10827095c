//! Agents' notifications: the signed-in agent's notification list, read marks, settings
//! and Web Push subscriptions (`/api/v1/me/…`), and the workspace's response target.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use confab_actors::notify::push::{check_endpoint, EndpointRefused, PushSettings};
use confab_actors::notify::Which;
use confab_actors::ActorError;
use confab_engine::ids::{NotificationId, PushSubscriptionId};
use confab_engine::model::Role;
use confab_engine::notify::{
    EventSettings, Notification, NotificationSettings, PushSubscription, QuietHours,
    WorkspaceSettings,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{blocking, parse_limit, Body};
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read_one))
        .routes(routes!(read_all))
        .routes(routes!(show_settings, put_settings))
        .routes(routes!(subscriptions, subscribe))
        .routes(routes!(unsubscribe))
        .routes(routes!(show_workspace_settings, patch_workspace_settings))
}

const MAX_LIMIT: usize = 200;
/// Shortest and longest response target.
const MIN_TARGET_SECS: u64 = 60;
const MAX_TARGET_SECS: u64 = 30 * 24 * 3600;

#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    /// Newest first.
    items: Vec<Notification>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<NotificationId>,
    /// The agent's unread notifications, in all.
    unread_count: u64,
}

/// The signed-in agent's notifications, newest first, with the unread count. Each is
/// also streamed live to the agent's sessions as a `notification` delta.
#[utoipa::path(
    get,
    path = "/api/v1/me/notifications",
    tag = "notifications",
    security(("agent_token" = [])),
    params(
        ("unread" = Option<bool>, Query, description = "`true`: unread ones only."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, default 50."),
    ),
    responses(
        (status = 200, description = "A page of notifications.", body = NotificationPage),
        (status = 400, description = "`invalid_cursor`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 422, description = "`invalid_query`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn list(
    agent: AgentAuth,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<NotificationPage>> {
    let (mut unread, mut cursor, mut limit) = (false, None, 50);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "unread" => {
                unread = match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::unprocessable(
                            "invalid_query",
                            "`unread` is `true` or `false`",
                        ))
                    }
                }
            }
            "cursor" => {
                cursor = Some(value.parse::<NotificationId>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        "`cursor` is not one this server gave out",
                    )
                })?)
            }
            "limit" => limit = parse_limit(&value, MAX_LIMIT)?,
            _ => {}
        }
    }
    let store = app.store.clone();
    let me = agent.0.id;
    let (page, unread_count) = blocking(move || {
        Ok((
            store.notifications(me, cursor, unread, limit)?,
            store.unread_notifications(me)?,
        ))
    })
    .await?;
    Ok(Json(NotificationPage {
        items: page.items,
        next_cursor: page.next,
        unread_count,
    }))
}

/// Marks one of the signed-in agent's notifications read (again: no change).
#[utoipa::path(
    post,
    path = "/api/v1/me/notifications/{id}/read",
    tag = "notifications",
    security(("agent_token" = [])),
    params(("id" = NotificationId, Path, description = "The notification.")),
    responses(
        (status = 200, description = "The notification, read.", body = Notification),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such notification of this agent.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn read_one(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Notification>> {
    // Not an id: no such notification.
    let id: NotificationId = id
        .parse()
        .map_err(|_| ApiError::not_found("notification"))?;
    let me = agent.0.id;
    let store = app.store.clone();
    if blocking(move || store.notification(me, id))
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("notification"));
    }
    app.runtime
        .notifier
        .mark_read(agent.0.workspace_id, me, Which::Ids(vec![id]))
        .await?;
    let store = app.store.clone();
    blocking(move || store.notification(me, id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("notification"))
}

#[derive(Serialize, ToSchema)]
pub struct Marked {
    /// Notifications that were unread and now are read.
    marked: usize,
}

/// Marks every notification of the signed-in agent read.
#[utoipa::path(
    post,
    path = "/api/v1/me/notifications/read-all",
    tag = "notifications",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "How many were marked.", body = Marked),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn read_all(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Json<Marked>> {
    let marked = app
        .runtime
        .notifier
        .mark_read(agent.0.workspace_id, agent.0.id, Which::All)
        .await?;
    Ok(Json(Marked {
        marked: marked.len(),
    }))
}

/// An agent's notification settings, with what the server can deliver.
#[derive(Serialize, ToSchema)]
pub struct SettingsView {
    /// For each event, which deliveries are on.
    events: EventSettings,
    /// Quiet hours in the agent's time zone; `null`: none.
    quiet_hours: Option<QuietHours>,
    /// Whether the server has a mail relay (without one, `email` delivers nothing).
    email_available: bool,
    /// Whether the server delivers Web Push (it always can: its VAPID key is made on
    /// first start).
    push_available: bool,
}

fn settings_view(app: &AppState, settings: NotificationSettings) -> SettingsView {
    SettingsView {
        events: settings.events,
        quiet_hours: settings.quiet_hours,
        email_available: app.runtime.notifier.email_relay(),
        push_available: true,
    }
}

/// The signed-in agent's notification settings (defaults until changed: assignments,
/// mentions and escalations everywhere, new messages in the inbox only, new unassigned
/// conversations off, overdue conversations in the inbox, browser and email).
#[utoipa::path(
    get,
    path = "/api/v1/me/notification-settings",
    tag = "notifications",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The settings.", body = SettingsView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn show_settings(
    agent: AgentAuth,
    State(app): State<AppState>,
) -> ApiResult<Json<SettingsView>> {
    let store = app.store.clone();
    let me = agent.0.id;
    let settings = blocking(move || store.notification_settings(me)).await?;
    Ok(Json(settings_view(&app, settings)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// Events left out get their defaults.
    #[serde(default)]
    events: EventSettings,
    /// `null` or left out: no quiet hours.
    #[serde(default)]
    quiet_hours: Option<QuietHours>,
}

/// Replaces the signed-in agent's notification settings.
#[utoipa::path(
    put,
    path = "/api/v1/me/notification-settings",
    tag = "notifications",
    security(("agent_token" = [])),
    request_body = SettingsBody,
    responses(
        (status = 200, description = "The settings as stored.", body = SettingsView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_timezone`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn put_settings(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<SettingsBody>,
) -> ApiResult<Json<SettingsView>> {
    if let Some(quiet) = &body.quiet_hours {
        match quiet.check() {
            Ok(()) => {}
            Err("timezone") => {
                return Err(ApiError::unprocessable(
                    "invalid_timezone",
                    "`quiet_hours.timezone` is an IANA time zone (`Europe/Berlin`), `UTC` or an offset such as `-03:00`",
                ))
            }
            Err(_) => {
                return Err(ApiError::unprocessable(
                    "invalid_value",
                    "`quiet_hours.from` and `quiet_hours.to` are times as HH:MM",
                ))
            }
        }
    }
    let settings = NotificationSettings {
        events: body.events,
        quiet_hours: body.quiet_hours,
    };
    app.runtime
        .notifier
        .put_settings(agent.0.workspace_id, agent.0.id, &settings)
        .await?;
    Ok(Json(settings_view(&app, settings)))
}

/// A registered device.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionView {
    id: PushSubscriptionId,
    endpoint: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: String,
}

impl From<PushSubscription> for SubscriptionView {
    fn from(s: PushSubscription) -> Self {
        SubscriptionView {
            id: s.id,
            endpoint: s.endpoint,
            created_at: confab_engine::time::to_rfc3339(s.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionsView {
    /// The server's VAPID public key for `pushManager.subscribe`'s
    /// `applicationServerKey`: an uncompressed P-256 point, base64url.
    vapid_public_key: String,
    items: Vec<SubscriptionView>,
}

/// The signed-in agent's push subscriptions, and the key browsers subscribe with.
#[utoipa::path(
    get,
    path = "/api/v1/me/push-subscriptions",
    tag = "notifications",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The key and the agent's devices.", body = SubscriptionsView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn subscriptions(
    agent: AgentAuth,
    State(app): State<AppState>,
) -> ApiResult<Json<SubscriptionsView>> {
    let store = app.store.clone();
    let me = agent.0.id;
    let items = blocking(move || store.push_subscriptions(me)).await?;
    Ok(Json(SubscriptionsView {
        vapid_public_key: app.runtime.vapid.public_key.clone(),
        items: items.into_iter().map(SubscriptionView::from).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key (65 bytes), base64url.
    #[schema(max_length = 200)]
    p256dh: String,
    /// The browser's authentication secret (16 bytes), base64url.
    #[schema(max_length = 100)]
    auth: String,
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(Deserialize, ToSchema)]
pub struct SubscriptionBody {
    /// The push service's URL for this browser (https).
    #[schema(max_length = 2048)]
    endpoint: String,
    keys: SubscriptionKeys,
    /// As the browser gives it; not used.
    #[serde(default, rename = "expirationTime")]
    #[allow(dead_code)]
    expiration_time: Option<serde_json::Value>,
}

fn decoded_len(text: &str) -> Option<usize> {
    let engine = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    engine
        .decode(text.trim_end_matches('='))
        .ok()
        .map(|b| b.len())
}

/// Registers a browser for Web Push to the signed-in agent; the same endpoint again
/// refreshes its keys (200).
#[utoipa::path(
    post,
    path = "/api/v1/me/push-subscriptions",
    tag = "notifications",
    security(("agent_token" = [])),
    request_body = SubscriptionBody,
    responses(
        (status = 201, description = "Registered.", body = SubscriptionView),
        (status = 200, description = "Already registered: keys refreshed.", body = SubscriptionView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_url`, `private_address`, `too_many_subscriptions`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn subscribe(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<SubscriptionBody>,
) -> ApiResult<(StatusCode, Json<SubscriptionView>)> {
    let endpoint = body.endpoint.trim().to_owned();
    if endpoint.len() > 2048 {
        return Err(ApiError::unprocessable(
            "invalid_url",
            "`endpoint` is at most 2048 bytes",
        ));
    }
    let settings = PushSettings {
        allow_private: app.config.notifications.allow_private_push,
        ..PushSettings::default()
    };
    if let Err(why) = check_endpoint(&endpoint, &settings) {
        let code = match why {
            EndpointRefused::NotHttps => "invalid_url",
            EndpointRefused::Private(_) => "private_address",
        };
        return Err(ApiError::unprocessable(code, format!("`endpoint`: {why}")));
    }
    if decoded_len(&body.keys.p256dh) != Some(65) || decoded_len(&body.keys.auth) != Some(16) {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`keys.p256dh` is a P-256 public key (65 bytes) and `keys.auth` a 16-byte secret, both base64url",
        ));
    }
    let me = agent.0.id;
    let (subscription, created) = app
        .runtime
        .notifier
        .subscribe(
            me,
            endpoint,
            body.keys.p256dh.trim_end_matches('=').to_owned(),
            body.keys.auth.trim_end_matches('=').to_owned(),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(subscription.into())))
}

/// Removes one of the signed-in agent's push subscriptions.
#[utoipa::path(
    delete,
    path = "/api/v1/me/push-subscriptions/{id}",
    tag = "notifications",
    security(("agent_token" = [])),
    params(("id" = PushSubscriptionId, Path, description = "The subscription.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn unsubscribe(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: PushSubscriptionId = id
        .parse()
        .map_err(|_| ApiError::not_found("push subscription"))?;
    match app.runtime.notifier.unsubscribe(agent.0.id, id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ActorError::NotFound) => Err(ApiError::not_found("push subscription")),
        Err(e) => Err(e.into()),
    }
}

/// The workspace's settings that are not the AI agent's.
#[derive(Serialize, ToSchema)]
pub struct WorkspaceSettingsView {
    /// A lead's message unanswered this long makes its conversation overdue (the
    /// assignee is notified). Default 86400 (the manual's 24 hours).
    response_target_secs: u64,
    /// Messages older than this many days are removed (`null`: kept for ever, the
    /// default). See docs/OPERATIONS.md, "Retention".
    retention_days: Option<u32>,
    /// What retention removes is first archived as JSON Lines on the server.
    retention_archive: bool,
}

impl From<&WorkspaceSettings> for WorkspaceSettingsView {
    fn from(settings: &WorkspaceSettings) -> Self {
        WorkspaceSettingsView {
            response_target_secs: settings.response_target_secs,
            retention_days: settings.retention_days,
            retention_archive: settings.retention_archive,
        }
    }
}

/// Longest retention period that can be set (100 years).
const MAX_RETENTION_DAYS: u32 = 36_500;

/// The workspace's settings (any agent may read them).
#[utoipa::path(
    get,
    path = "/api/v1/workspace/settings",
    tag = "notifications",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The settings.", body = WorkspaceSettingsView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn show_workspace_settings(
    agent: AgentAuth,
    State(app): State<AppState>,
) -> ApiResult<Json<WorkspaceSettingsView>> {
    let store = app.store.clone();
    let ws = agent.0.workspace_id;
    let settings = blocking(move || store.workspace_settings(ws)).await?;
    Ok(Json(WorkspaceSettingsView::from(&settings)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSettingsBody {
    /// 60 seconds to 30 days (a whole number; `600.0` is 600). Conversations already
    /// waiting keep the target they started waiting under.
    #[schema(value_type = Option<u64>, minimum = 60, maximum = 2592000)]
    response_target_secs: Option<serde_json::Number>,
    /// 1 to 36500 days; `null` keeps messages for ever. Applied by the next retention pass
    /// (hourly by default).
    #[serde(default, deserialize_with = "super::admin::present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 36500)]
    retention_days: Option<Option<serde_json::Number>>,
    retention_archive: Option<bool>,
}

/// Changes the workspace's settings (workspace admins).
#[utoipa::path(
    patch,
    path = "/api/v1/workspace/settings",
    tag = "notifications",
    security(("agent_token" = [])),
    request_body = WorkspaceSettingsBody,
    responses(
        (status = 200, description = "The settings as stored.", body = WorkspaceSettingsView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn patch_workspace_settings(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<WorkspaceSettingsBody>,
) -> ApiResult<Json<WorkspaceSettingsView>> {
    if agent.0.role != Role::Admin {
        return Err(ApiError::forbidden(
            "admin_only",
            "only workspace admins may change the workspace's settings",
        ));
    }
    let ws = agent.0.workspace_id;
    let store = app.store.clone();
    let writing = app.runtime.notifier.settings_write().await;
    let mut settings: WorkspaceSettings = blocking(move || store.workspace_settings(ws)).await?;
    if let Some(target) = body.response_target_secs {
        let range = MIN_TARGET_SECS as f64..=MAX_TARGET_SECS as f64;
        let target = target
            .as_f64()
            .filter(|t| t.fract() == 0.0 && range.contains(t))
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_value",
                    "`response_target_secs` is a whole number from 60 (a minute) to 2592000 (30 days)",
                )
            })?;
        settings.response_target_secs = target as u64;
    }
    if let Some(days) = body.retention_days {
        // A whole number as JSON writes it (`30` or `30.0`), or null.
        let range = 1.0..=f64::from(MAX_RETENTION_DAYS);
        settings.retention_days = match days {
            None => None,
            Some(days) => Some(
                days.as_f64()
                    .filter(|d| d.fract() == 0.0 && range.contains(d))
                    .map(|d| d as u32)
                    .ok_or_else(|| {
                        ApiError::unprocessable(
                            "invalid_value",
                            "`retention_days` is a whole number from 1 to 36500, or null to keep messages for ever",
                        )
                    })?,
            ),
        };
    }
    if let Some(archive) = body.retention_archive {
        settings.retention_archive = archive;
    }
    app.runtime
        .notifier
        .put_workspace_settings(ws, settings.clone())
        .await?;
    drop(writing);
    super::audit(
        &app,
        ws,
        confab_engine::audit::Author::agent(agent.0.id),
        "workspace_settings_changed",
        None,
        &[
            (
                "response_target_secs",
                settings.response_target_secs.to_string(),
            ),
            (
                "retention_days",
                settings
                    .retention_days
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            ),
        ],
    )
    .await?;
    Ok(Json(WorkspaceSettingsView::from(&settings)))
}
