//! `/api/calls/active`: calls being dialed or on the line (seed 004). A user sees
//! their own; an admin sees every tenant's.

use axum::Json;
use axum::extract::{Path, State};
use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{ActiveScope, Call, CallStoreExt as _};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::dto::{CountDto, ms};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::calls::call_id;

/// An active call, as live views show it (no phone number).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveCallDto {
    /// Our call id.
    pub call_id: String,
    /// The tenant.
    pub tenant: String,
    /// The user.
    pub user_id: String,
    /// DISPATCHING, RINGING, IN_PROGRESS or CANCELING.
    pub status: String,
    /// Who is called.
    pub callee_name: String,
    /// Subject.
    pub subject: String,
    /// The provider placing it.
    pub provider: Option<String>,
    /// The provider's call id.
    pub provider_call_id: Option<String>,
    /// When the dial request went out (epoch ms).
    pub dialed_at: Option<i64>,
    /// When the callee answered (epoch ms).
    pub started_at: Option<i64>,
    /// Time on the line so far, ms (0 before answer).
    pub duration_ms: u64,
}

impl ActiveCallDto {
    /// From a stored call at `now`.
    pub fn of(c: &Call, now: DateTime<Utc>) -> Self {
        ActiveCallDto {
            call_id: c.id.to_string(),
            tenant: c.owner.tenant.as_str().to_owned(),
            user_id: c.owner.user.as_str().to_owned(),
            status: c.status.as_str().to_owned(),
            callee_name: c.callee_name.clone(),
            subject: c.subject.clone(),
            provider: c.provider.clone(),
            provider_call_id: c.provider_call_id.clone(),
            dialed_at: c.dial_started_at.map(ms),
            started_at: c.started_at.map(ms),
            duration_ms: c
                .started_at
                .and_then(|s| u64::try_from((now - s).num_milliseconds()).ok())
                .unwrap_or(0),
        }
    }
}

fn scope(user: &AuthUser) -> ActiveScope {
    if user.admin {
        ActiveScope::All
    } else {
        ActiveScope::Owner(user.owner.clone())
    }
}

async fn active(state: &AppState, user: &AuthUser) -> ApiResult<Vec<Call>> {
    Ok(state.stores.calls.all_active(&scope(user)).await?)
}

/// Active calls, most recently started first.
#[utoipa::path(
    get, path = "/api/calls/active", tag = "active",
    responses(
        (status = 200, description = "Active calls", body = [ActiveCallDto]),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_active(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<ActiveCallDto>>> {
    let now = state.clock.now();
    let mut calls = active(&state, &user).await?;
    calls.sort_by_key(|c| std::cmp::Reverse(c.started_at.or(c.dial_started_at)));
    Ok(Json(
        calls.iter().map(|c| ActiveCallDto::of(c, now)).collect(),
    ))
}

/// How many calls are active.
#[utoipa::path(
    get, path = "/api/calls/active/count", tag = "active",
    responses(
        (status = 200, description = "The count", body = CountDto),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn count_active(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<CountDto>> {
    Ok(Json(CountDto {
        count: active(&state, &user).await?.len(),
    }))
}

/// One active call (404 when it is not active or not visible).
#[utoipa::path(
    get, path = "/api/calls/active/{callId}", tag = "active",
    params(("callId" = String, Path, description = "The call's id")),
    responses(
        (status = 200, description = "The active call", body = ActiveCallDto),
        (status = 404, description = "Not an active call of this user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_active(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<ActiveCallDto>> {
    let id = call_id(&id)?;
    let c = state.stores.calls.get(id).await?;
    match c {
        Some(c) if c.status.is_active() && (user.admin || c.owner == user.owner) => {
            Ok(Json(ActiveCallDto::of(&c, state.clock.now())))
        }
        _ => Err(ApiError::not_found(format!("no active call {id}"))),
    }
}
