//! `GET /api/v1/analytics`: the manual's conversation metrics for the caller's workspace,
//! read from the daily buckets that every commit keeps current (`confab_engine::analytics`).

use axum::extract::{RawQuery, State};
use axum::Json;
use confab_engine::analytics::{self, Period, Report};
use confab_engine::ids::WorkspaceId;
use confab_engine::time::{now_millis, parse_rfc3339, to_rfc3339, UnixMillis};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::blocking;
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(analytics_report))
}

#[derive(Serialize, ToSchema)]
pub struct AnalyticsPage {
    workspace_id: WorkspaceId,
    /// `today`, `week`, `month`, `all`, or `range` for `from`/`to`.
    period: &'static str,
    /// 00:00 UTC of the first day counted.
    #[schema(format = DateTime)]
    from: String,
    /// 00:00 UTC of the day after the last day counted (exclusive).
    #[schema(format = DateTime)]
    to: String,
    #[serde(flatten)]
    report: Report,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_query", message)
}

/// `period=today|week|month|all` (default `all`), or `from` and/or `to` (RFC 3339; the
/// whole UTC days they fall in are counted).
fn parse_query(raw: Option<&str>, now: UnixMillis) -> Result<(&'static str, Period), ApiError> {
    let mut period = None;
    let (mut from, mut to) = (None, None);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let time = |value: &str| {
            parse_rfc3339(value).ok_or_else(|| {
                invalid(format!(
                    "`{key}` must be an RFC 3339 time (2026-01-31T00:00:00Z), not {value:?}"
                ))
            })
        };
        match key.as_ref() {
            "period" => {
                let parsed = Period::parse(&value).ok_or_else(|| {
                    invalid(format!(
                        "`period` must be today, week, month or all, not {value:?}"
                    ))
                })?;
                period = Some((
                    match parsed {
                        Period::Today => "today",
                        Period::Week => "week",
                        Period::Month => "month",
                        _ => "all",
                    },
                    parsed,
                ));
            }
            "from" => from = Some(time(&value)?),
            "to" => to = Some(time(&value)?),
            other => return Err(invalid(format!("unknown parameter `{other}`"))),
        }
    }
    match (period, from, to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            Err(invalid("give either `period` or `from`/`to`, not both"))
        }
        (Some(period), None, None) => Ok(period),
        (None, None, None) => Ok(("all", Period::All)),
        (None, from, to) => {
            let (from, to) = (from.unwrap_or(0), to.unwrap_or(now));
            if from > to {
                return Err(invalid("`from` is after `to`"));
            }
            Ok(("range", Period::Between(from, to)))
        }
    }
}

/// The conversation metrics of the caller's workspace for a period.
#[utoipa::path(
    get,
    path = "/api/v1/analytics",
    tag = "analytics",
    security(("agent_token" = [])),
    params(
        ("period" = Option<crate::openapi::PeriodParam>, Query, description = "`all` when left out; not with `from`/`to`."),
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339; the whole UTC day it falls in counts."),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339; the whole UTC day it falls in counts."),
    ),
    responses(
        (status = 200, description = "The period's figures.", body = AnalyticsPage),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 422, description = "`invalid_query`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn analytics_report(
    agent: AgentAuth,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<AnalyticsPage>> {
    let now = now_millis();
    let (name, period) = parse_query(raw.as_deref(), now)?;
    let (first, last) = period.days(now);
    let ws = agent.0.workspace_id;
    let store = app.store.clone();
    let totals = blocking(move || analytics::read(&store, ws, first, last)).await?;
    // `all` reads every bucket there is; it reports from the first day of time.
    let last_shown = if period == Period::All {
        analytics::day_of(now)
    } else {
        last
    };
    Ok(Json(AnalyticsPage {
        workspace_id: ws,
        period: name,
        from: to_rfc3339(analytics::start_of_day(first)),
        to: to_rfc3339(analytics::start_of_day(last_shown.saturating_add(1))),
        report: totals.report(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 20_000 * 86_400_000 + 5_000;

    #[test]
    fn queries_name_a_period_or_a_range() {
        assert_eq!(parse_query(None, NOW).expect("default").1, Period::All);
        assert_eq!(
            parse_query(Some("period=week"), NOW).expect("week"),
            ("week", Period::Week)
        );
        let (name, period) = parse_query(
            Some("from=2024-01-01T00:00:00Z&to=2024-01-31T10:00:00Z"),
            NOW,
        )
        .expect("range");
        assert_eq!(name, "range");
        assert!(matches!(period, Period::Between(a, b) if a < b));
        for bad in [
            "period=year",
            "from=yesterday",
            "period=week&from=2024-01-01T00:00:00Z",
            "from=2024-02-01T00:00:00Z&to=2024-01-01T00:00:00Z",
            "limit=3",
        ] {
            let e = parse_query(Some(bad), NOW).expect_err(bad);
            assert_eq!(e.code, "invalid_query", "{bad}");
        }
    }
}
