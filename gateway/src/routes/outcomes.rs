//! Lead outcomes: the workspace's list of labels (`GET|PUT /api/v1/outcomes`) and the
//! breakdown by outcome and campaign (`GET /api/v1/analytics/outcomes`). A conversation's
//! outcome is set by the `outcome` command (`routes::commands`) or a bulk action.

use axum::extract::{RawQuery, State};
use axum::Json;
use confab_engine::analytics::{self, Period};
use confab_engine::catalogue::FACET_OUTCOME;
use confab_engine::ids::WorkspaceId;
use confab_engine::model::Role;
use confab_engine::outcomes;
use confab_engine::time::{now_millis, to_rfc3339};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{blocking, Body};
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_outcomes, put_outcomes))
        .routes(routes!(outcome_report))
}

/// The workspace's label that `name` names (whatever the case), or 422 `unknown_outcome`.
pub(crate) fn label(app: &AppState, ws: WorkspaceId, name: &str) -> ApiResult<String> {
    let list = app.runtime.notifier.outcome_labels(ws)?;
    outcomes::find(&list, name)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::unprocessable(
                "unknown_outcome",
                format!(
                    "{name:?} is not one of this workspace's outcomes ({})",
                    list.join(", ")
                ),
            )
        })
}

#[derive(Serialize, ToSchema)]
pub struct OutcomeCount {
    name: String,
    /// Conversations with this outcome now.
    count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct OutcomeList {
    /// In the workspace's order.
    items: Vec<OutcomeCount>,
}

async fn outcome_list(app: &AppState, ws: WorkspaceId) -> ApiResult<OutcomeList> {
    let labels = app.runtime.notifier.outcome_labels(ws)?;
    let store = app.store.clone();
    let counts = blocking(move || {
        confab_engine::views::facet_values(&store, ws, FACET_OUTCOME, outcomes::MAX_OUTCOMES * 4)
    })
    .await?;
    Ok(OutcomeList {
        items: labels
            .into_iter()
            .map(|name| OutcomeCount {
                count: counts
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |(_, c)| *c),
                name,
            })
            .collect(),
    })
}

/// The workspace's outcome labels, with how many conversations have each.
#[utoipa::path(
    get,
    path = "/api/v1/outcomes",
    tag = "inbox",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The labels (Interested, Meeting booked, Not interested, Wrong person, Out of office until an admin changes them).", body = OutcomeList),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn list_outcomes(
    agent: AgentAuth,
    State(app): State<AppState>,
) -> ApiResult<Json<OutcomeList>> {
    Ok(Json(outcome_list(&app, agent.0.workspace_id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomesBody {
    /// The labels, in order: 1 to 40 printable characters each (trimmed), each once
    /// whatever the case, at most 30.
    #[schema(max_items = 30)]
    items: Vec<String>,
}

/// Replaces the workspace's outcome labels (admins). Conversations keep an outcome that
/// leaves the list (and its counts); it can no longer be set.
#[utoipa::path(
    put,
    path = "/api/v1/outcomes",
    tag = "inbox",
    security(("agent_token" = [])),
    request_body = OutcomesBody,
    responses(
        (status = 200, description = "The labels as stored.", body = OutcomeList),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`: an empty, long or repeated label, or over 30.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn put_outcomes(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<OutcomesBody>,
) -> ApiResult<Json<OutcomeList>> {
    if agent.0.role != Role::Admin {
        return Err(ApiError::forbidden(
            "admin_only",
            "only workspace admins may change the outcome labels",
        ));
    }
    let list = outcomes::check_labels(body.items)
        .map_err(|why| ApiError::unprocessable("invalid_value", why))?;
    let ws = agent.0.workspace_id;
    let store = app.store.clone();
    let writing = app.runtime.notifier.settings_write().await;
    let mut settings = blocking(move || store.workspace_settings(ws)).await?;
    let joined = list.join(", ");
    settings.outcomes = Some(list);
    app.runtime
        .notifier
        .put_workspace_settings(ws, settings)
        .await?;
    drop(writing);
    super::audit(
        &app,
        ws,
        confab_engine::audit::Author::agent(agent.0.id),
        "outcomes_changed",
        None,
        &[("outcomes", joined)],
    )
    .await?;
    Ok(Json(outcome_list(&app, ws).await?))
}

#[derive(Serialize, ToSchema)]
pub struct OutcomeRow {
    /// The campaign the leads came from (`null`: none).
    campaign: Option<String>,
    outcome: String,
    /// Conversations whose outcome was set to this in the period and still is.
    conversations: u64,
}

#[derive(Serialize, ToSchema)]
pub struct OutcomeReport {
    /// `today`, `week`, `month` or `all`.
    period: &'static str,
    /// 00:00 UTC of the first day counted.
    #[schema(format = DateTime)]
    from: String,
    /// 00:00 UTC of the day after the last day counted (exclusive).
    #[schema(format = DateTime)]
    to: String,
    /// By campaign and outcome, most first.
    items: Vec<OutcomeRow>,
    /// By outcome alone, most first.
    by_outcome: Vec<OutcomeCount>,
}

/// How many conversations got each outcome, by campaign: what an agency reports to its
/// client ("12 meetings booked this week from the spring campaign"). A conversation
/// counts on the day its outcome was last set, for the outcome it has now.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/outcomes",
    tag = "analytics",
    security(("agent_token" = [])),
    params(
        ("period" = Option<crate::openapi::PeriodParam>, Query, description = "`all` when left out."),
    ),
    responses(
        (status = 200, description = "The breakdown.", body = OutcomeReport),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 422, description = "`invalid_query`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn outcome_report(
    agent: AgentAuth,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<OutcomeReport>> {
    let mut period = ("all", Period::All);
    for (key, value) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match (key.as_ref(), Period::parse(&value)) {
            ("period", Some(parsed)) => period = (parsed.name(), parsed),
            ("period", None) => {
                return Err(ApiError::unprocessable(
                    "invalid_query",
                    format!("`period` must be today, week, month or all, not {value:?}"),
                ))
            }
            (other, _) => {
                return Err(ApiError::unprocessable(
                    "invalid_query",
                    format!("unknown parameter `{other}`"),
                ))
            }
        }
    }
    let now = now_millis();
    let (first, last) = period.1.days(now);
    let last = if period.1 == Period::All {
        analytics::day_of(now)
    } else {
        last
    };
    let ws = agent.0.workspace_id;
    let store = app.store.clone();
    let counts = blocking(move || outcomes::read(&store, ws, first, last)).await?;
    let mut by_outcome: Vec<OutcomeCount> = Vec::new();
    for ((_, outcome), n) in &counts {
        match by_outcome.iter_mut().find(|o| o.name == *outcome) {
            Some(o) => o.count += n,
            None => by_outcome.push(OutcomeCount {
                name: outcome.clone(),
                count: *n,
            }),
        }
    }
    by_outcome.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    let mut items: Vec<OutcomeRow> = counts
        .into_iter()
        .map(|((campaign, outcome), conversations)| OutcomeRow {
            campaign,
            outcome,
            conversations,
        })
        .collect();
    items.sort_by_key(|row| std::cmp::Reverse(row.conversations));
    Ok(Json(OutcomeReport {
        period: period.0,
        from: to_rfc3339(analytics::start_of_day(first)),
        to: to_rfc3339(analytics::start_of_day(last.saturating_add(1))),
        items,
        by_outcome,
    }))
}
