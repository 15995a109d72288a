//! `GET /api/analytics`: counts, durations, calls per hour, peak concurrency and
//! cost over a time range — the tenant's calls for an admin, the caller's own
//! otherwise.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use callcat_core::CallAnalytics;
use callcat_core::chrono::TimeDelta;
use callcat_core::chrono_tz::Tz;
use callcat_core::live::{analyze_calls, check_analytics_range, tenant_analytics};
use callcat_core::store::MAX_PAGE_SIZE;
use callcat_core::time::from_millis;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::AuthUser;
use crate::dto::ms;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::router::ApiState;

/// The query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AnalyticsParams {
    /// Start of the range, epoch ms (default: 7 days before `to`); the range is
    /// at most 92 days, both ends between 2000 and 2200.
    pub from: Option<i64>,
    /// End of the range (exclusive), epoch ms (default: now).
    pub to: Option<i64>,
    /// IANA time zone for `perHour` (default UTC).
    pub timezone: Option<String>,
}

/// Talk-time statistics.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DurationDto {
    /// Calls with a duration.
    pub count: u64,
    /// Mean, ms.
    pub mean_ms: Option<u64>,
    /// Median, ms.
    pub p50_ms: Option<u64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<u64>,
}

/// Aggregates over the calls scheduled in `[from, to)`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsDto {
    /// Range start, epoch ms.
    pub from: i64,
    /// Range end, epoch ms.
    pub to: i64,
    /// `tenant` (admin) or `user`.
    pub scope: String,
    /// How many calls.
    pub total: u64,
    /// Calls per status (`COMPLETED`, ...).
    pub by_status: BTreeMap<String, u64>,
    /// Calls per outcome of the latest attempt (`answered`, ...).
    pub by_outcome: BTreeMap<String, u64>,
    /// Talk time.
    pub duration: DurationDto,
    /// Calls per hour of day (0–23) in `timeZone`.
    pub per_hour: Vec<u64>,
    /// The time zone of `perHour`.
    pub time_zone: String,
    /// Most calls connected at once.
    pub peak_concurrent: u64,
    /// When that peak was first reached, epoch ms.
    pub peak_at: Option<i64>,
    /// Total cost per currency.
    pub cost_by_currency: BTreeMap<String, f64>,
}

impl AnalyticsDto {
    fn of(a: CallAnalytics, from: i64, to: i64, scope: &str) -> Self {
        AnalyticsDto {
            from,
            to,
            scope: scope.to_owned(),
            total: a.total,
            by_status: a
                .by_status
                .into_iter()
                .map(|(s, n)| (s.as_str().to_owned(), n))
                .collect(),
            by_outcome: a.by_outcome,
            duration: DurationDto {
                count: a.duration.count,
                mean_ms: a.duration.mean_ms,
                p50_ms: a.duration.p50_ms,
                p90_ms: a.duration.p90_ms,
            },
            per_hour: a.per_hour.to_vec(),
            time_zone: a.time_zone,
            peak_concurrent: a.peak_concurrent,
            peak_at: a.peak_at.map(ms),
            cost_by_currency: a.cost_by_currency,
        }
    }
}

/// Analytics over a time range.
#[utoipa::path(
    get, path = "/api/analytics", tag = "analytics", params(AnalyticsParams),
    responses(
        (status = 200, description = "Aggregates", body = AnalyticsDto),
        (status = 400, description = "Invalid range or time zone", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn analytics(
    State(state): State<ApiState>,
    user: AuthUser,
    Query(p): Query<AnalyticsParams>,
) -> ApiResult<Json<AnalyticsDto>> {
    let now = state.clock().now();
    // Each end in 2000–2200 before any arithmetic on it, the range at most 92 days.
    let to = match p.to {
        Some(v) => from_millis("to", v)?,
        None => now,
    };
    let from = match p.from {
        Some(v) => from_millis("from", v)?,
        None => to
            .checked_sub_signed(TimeDelta::days(7))
            .ok_or_else(|| ApiError::validation("to", "to is out of range"))?,
    };
    check_analytics_range(from, to)?;
    let tz: Tz = match p.timezone.as_deref() {
        None | Some("") => Tz::UTC,
        Some(z) => z
            .parse()
            .map_err(|_| ApiError::validation("timezone", format!("unknown time zone {z:?}")))?,
    };
    let tenant = &user.owner.tenant;
    let calls = state.stores().calls.as_ref();
    if user.is_admin() {
        let a = tenant_analytics(calls, tenant, from, to, now, tz).await?;
        return Ok(Json(AnalyticsDto::of(a, ms(from), ms(to), "tenant")));
    }
    let mut own = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = calls
            .list_tenant_range(tenant, from, to, MAX_PAGE_SIZE, cursor.as_deref())
            .await?;
        own.extend(page.items.into_iter().filter(|c| c.owner == user.owner));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let a = analyze_calls(&own, to.min(now), tz);
    Ok(Json(AnalyticsDto::of(a, ms(from), ms(to), "user")))
}
