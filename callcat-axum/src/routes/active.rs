//! `/api/calls/active`: calls being dialed or on the line (seed 004). A user sees
//! their own; an admin sees every tenant's.

use axum::Json;
use axum::extract::{Path, State};
use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{ActiveCall, LiveScope};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::dto::{CountDto, ms};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::router::ApiState;
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
    /// The number called, masked (`+1***71`).
    pub to_number: String,
    /// The number shown to the callee, masked; `null` when the call did not
    /// choose one (the provider's own number is shown).
    pub from_number: Option<String>,
    /// The agent override, if any.
    pub agent_id: Option<String>,
    /// `outbound` (callcat places every call it tracks).
    pub direction: String,
    /// The call's metadata, as given.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl ActiveCallDto {
    /// From the tracker's summary at `now`.
    pub fn of(c: &ActiveCall, now: DateTime<Utc>) -> Self {
        ActiveCallDto {
            call_id: c.call_id.to_string(),
            tenant: c.owner.tenant.as_str().to_owned(),
            user_id: c.owner.user.as_str().to_owned(),
            status: c.status.as_str().to_owned(),
            callee_name: c.callee_name.clone(),
            subject: c.subject.clone(),
            provider: c.provider.clone(),
            provider_call_id: c.provider_call_id.clone(),
            dialed_at: c.dialed_at.map(ms),
            started_at: c.started_at.map(ms),
            duration_ms: c
                .started_at
                .and_then(|s| u64::try_from((now - s).num_milliseconds()).ok())
                .unwrap_or(0),
            to_number: c.to_number.clone(),
            from_number: c.from_number.clone(),
            agent_id: c.agent_id.clone(),
            direction: "outbound".into(),
            metadata: c.metadata.clone(),
        }
    }
}

/// The active calls `user` may see, most recently started first: an admin's
/// cover every tenant, a user's are their own.
pub fn visible_active(state: &ApiState, user: &AuthUser) -> Vec<ActiveCall> {
    if user.is_admin() {
        state.tracker().active(&LiveScope::All)
    } else {
        state
            .tracker()
            .active(&LiveScope::Tenant(user.owner.tenant.clone()))
            .into_iter()
            .filter(|c| c.owner == user.owner)
            .collect()
    }
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
    State(state): State<ApiState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<ActiveCallDto>>> {
    let now = state.clock().now();
    Ok(Json(
        visible_active(&state, &user)
            .iter()
            .map(|c| ActiveCallDto::of(c, now))
            .collect(),
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
    State(state): State<ApiState>,
    user: AuthUser,
) -> ApiResult<Json<CountDto>> {
    let count = if user.is_admin() {
        state.tracker().total()
    } else {
        visible_active(&state, &user).len()
    };
    Ok(Json(CountDto { count }))
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
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<ActiveCallDto>> {
    let id = call_id(&id)?;
    let scope = if user.is_admin() {
        LiveScope::All
    } else {
        LiveScope::Tenant(user.owner.tenant.clone())
    };
    match state.tracker().get(&scope, id) {
        Some(c) if user.is_admin() || c.owner == user.owner => {
            Ok(Json(ActiveCallDto::of(&c, state.clock().now())))
        }
        _ => Err(ApiError::not_found(format!("no active call {id}"))),
    }
}
