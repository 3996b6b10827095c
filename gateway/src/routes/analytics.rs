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
    /// With `interval=day`: the same figures for each UTC day of the period, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    days: Option<Vec<DayReport>>,
}

#[derive(Serialize, ToSchema)]
pub struct DayReport {
    /// The UTC day, `2026-01-31`.
    #[schema(format = Date)]
    date: String,
    #[serde(flatten)]
    report: Report,
}

/// The longest period `interval=day` reports day by day.
const MAX_DAYS: u32 = 400;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_query", message)
}

/// `period=today|week|month|all` (default `all`), or `from` and/or `to` (RFC 3339; the
/// whole UTC days they fall in are counted), and `interval=day` for each day's figures:
/// the period's name, its days, and whether each day is asked for.
fn parse_query(
    raw: Option<&str>,
    now: UnixMillis,
) -> Result<(&'static str, Period, bool), ApiError> {
    let mut daily = false;
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
                period = Some((parsed.name(), parsed));
            }
            "from" => from = Some(time(&value)?),
            "to" => to = Some(time(&value)?),
            "interval" if value == "day" => daily = true,
            "interval" => {
                return Err(invalid(format!(
                    "`interval` can only be day, not {value:?}"
                )))
            }
            other => return Err(invalid(format!("unknown parameter `{other}`"))),
        }
    }
    let (name, period) = match (period, from, to) {
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
    }?;
    if daily {
        let (first, last) = period.days(now);
        if period == Period::All || last.saturating_sub(first) >= MAX_DAYS {
            return Err(invalid(format!(
                "`interval=day` needs a period of at most {MAX_DAYS} days"
            )));
        }
    }
    Ok((name, period, daily))
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
        ("interval" = Option<String>, Query, description = "`day`: add the figures of each day (`days`); the period must be at most 400 days, so not `all`."),
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
    let (name, period, daily) = parse_query(raw.as_deref(), now)?;
    let (first, last) = period.days(now);
    let ws = agent.0.workspace_id;
    let store = app.store.clone();
    let (totals, days) = blocking(move || {
        if !daily {
            return analytics::read(&store, ws, first, last).map(|t| (t, None));
        }
        let days = analytics::read_days(&store, ws, first, last)?;
        let mut totals = analytics::Totals::default();
        for (_, day) in &days {
            totals.merge(day);
        }
        Ok((totals, Some(days)))
    })
    .await?;
    let days = days.map(|days| {
        days.into_iter()
            .map(|(day, totals)| DayReport {
                date: to_rfc3339(analytics::start_of_day(day))[..10].to_owned(),
                report: totals.report(),
            })
            .collect()
    });
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
        days,
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
            ("week", Period::Week, false)
        );
        assert_eq!(
            parse_query(Some("period=month&interval=day"), NOW).expect("daily"),
            ("month", Period::Month, true)
        );
        let (name, period, _) = parse_query(
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
            "interval=day",
            "period=all&interval=day",
            "period=week&interval=week",
            "from=2020-01-01T00:00:00Z&to=2024-01-01T00:00:00Z&interval=day",
        ] {
            let e = parse_query(Some(bad), NOW).expect_err(bad);
            assert_eq!(e.code, "invalid_query", "{bad}");
        }
    }
}
