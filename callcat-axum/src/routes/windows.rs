//! `/api/call-windows`: recurring or one-off windows in which the server places a
//! call from the window's template (seed 002); the window planner runs in the server.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use callcat_core::{CallTemplate, CallWindow, WindowEdit, WindowId, WindowSchedule};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::dto::dial_window::{self, DialWindowDto};
use crate::dto::retry::{self, RetryOnDto};
use crate::dto::{CallFields, from_ms, ms};
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use crate::router::ApiState;

/// `POST /api/call-windows`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateWindowRequest {
    /// `recurring` or `one_off`.
    pub kind: String,
    /// Recurring: days of the week (`mon`, `tuesday`, ...).
    pub weekdays: Option<Vec<String>>,
    /// Recurring: local opening time, `HH:MM`.
    pub start: Option<String>,
    /// Recurring: local closing time, `HH:MM` (same day, after `start`).
    pub end: Option<String>,
    /// IANA time zone (`Europe/Berlin`); default `UTC`.
    pub timezone: Option<String>,
    /// One-off: opening instant (epoch ms).
    pub start_at: Option<i64>,
    /// One-off: closing instant (epoch ms).
    pub end_at: Option<i64>,
    /// The call to place in the window: the fields of `POST /api/calls`
    /// without `scheduledAt`, `notAfter` and `workflow` (`maxAttempts`,
    /// `retryOn`, `retryDelays` and `dialWindow` apply to the calls it places).
    pub call: CallFields,
}

/// The call a window places.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateDto {
    /// Who is called.
    pub callee_name: String,
    /// The number.
    pub phone_number: String,
    /// Subject.
    pub subject: String,
    /// Prompt.
    pub prompt: String,
    /// Language.
    pub ai_language: Option<String>,
    /// Voice.
    pub voice_id: Option<String>,
    /// Caller number.
    pub caller_number: Option<String>,
    /// Variables.
    pub variables: BTreeMap<String, String>,
    /// Metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Most attempts.
    pub max_attempts: u32,
    /// Which outcomes are retried.
    pub retry_on: RetryOnDto,
    /// Seconds before each retry; empty: exponential backoff.
    pub retry_delays: Vec<u64>,
    /// The weekly window the call may be dialed in; `null`: any time.
    pub dial_window: Option<DialWindowDto>,
}

impl From<&CallTemplate> for TemplateDto {
    fn from(t: &CallTemplate) -> Self {
        TemplateDto {
            callee_name: t.callee_name.clone(),
            phone_number: t.phone_number.as_str().to_owned(),
            subject: t.subject.clone(),
            prompt: t.instructions.clone(),
            ai_language: t.language.clone(),
            voice_id: t.voice.clone(),
            caller_number: t.caller_number.as_ref().map(|n| n.as_str().to_owned()),
            variables: t.variables.clone(),
            metadata: t.metadata.clone(),
            max_attempts: t.retry_policy.max_attempts,
            retry_on: RetryOnDto::from(&t.retry_policy),
            retry_delays: retry::delays_as_secs(&t.retry_policy),
            dial_window: t.dial_window.as_ref().map(DialWindowDto::from),
        }
    }
}

/// A call window.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowDto {
    /// The window's id.
    pub window_id: String,
    /// `recurring` or `one_off`.
    pub kind: String,
    /// Recurring: weekdays (`mon` ... `sun`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekdays: Option<Vec<String>>,
    /// Recurring: `HH:MM`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Recurring: `HH:MM`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// IANA time zone.
    pub timezone: String,
    /// One-off: epoch ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_at: Option<i64>,
    /// One-off: epoch ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_at: Option<i64>,
    /// The call placed in the window.
    pub call: TemplateDto,
    /// Created (epoch ms).
    pub created_at: i64,
}

impl From<&CallWindow> for WindowDto {
    fn from(w: &CallWindow) -> Self {
        let mut dto = WindowDto {
            window_id: w.id.to_string(),
            kind: String::new(),
            weekdays: None,
            start: None,
            end: None,
            timezone: w.schedule.timezone().name().to_owned(),
            start_at: None,
            end_at: None,
            call: TemplateDto::from(&w.template),
            created_at: ms(w.created_at),
        };
        match &w.schedule {
            WindowSchedule::Recurring(r) => {
                let days = DialWindowDto::from(r);
                dto.kind = "recurring".into();
                dto.weekdays = Some(days.weekdays);
                dto.start = Some(days.start);
                dto.end = Some(days.end);
            }
            WindowSchedule::OneOff {
                start_at, end_at, ..
            } => {
                dto.kind = "one_off".into();
                dto.start_at = Some(ms(*start_at));
                dto.end_at = Some(ms(*end_at));
            }
        }
        dto
    }
}

impl CreateWindowRequest {
    fn into_schedule(self) -> ApiResult<(WindowSchedule, CallFields)> {
        let timezone = dial_window::timezone("timezone", self.timezone.as_deref())?;
        let schedule = match self.kind.as_str() {
            "recurring" => WindowSchedule::Recurring(dial_window::recurring_window(
                "",
                self.weekdays.as_deref(),
                self.start.as_deref(),
                self.end.as_deref(),
                timezone,
            )?),
            "one_off" => {
                let start_at = self
                    .start_at
                    .ok_or_else(|| ApiError::validation("startAt", "startAt is required"))?;
                let end_at = self
                    .end_at
                    .ok_or_else(|| ApiError::validation("endAt", "endAt is required"))?;
                WindowSchedule::OneOff {
                    start_at: from_ms("startAt", start_at)?,
                    end_at: from_ms("endAt", end_at)?,
                    timezone,
                }
            }
            other => {
                return Err(ApiError::validation(
                    "kind",
                    format!("{other:?} is not recurring or one_off"),
                ));
            }
        };
        schedule.validate()?;
        Ok((schedule, self.call))
    }
}

/// Creates a call window; if it is open now, its call is placed at once.
#[utoipa::path(
    post, path = "/api/call-windows", tag = "windows",
    request_body = CreateWindowRequest,
    responses(
        (status = 201, description = "Created", body = WindowDto),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_window(
    State(state): State<ApiState>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateWindowRequest>,
) -> ApiResult<(StatusCode, Json<WindowDto>)> {
    let (schedule, fields) = body.into_schedule()?;
    let template = fields.into_template(state.engine())?;
    // The planner places its call at once if it is open (idempotent per owner and day).
    let w = state
        .engine()
        .windows()
        .create(&user.owner, schedule, template)
        .await?;
    Ok((StatusCode::CREATED, Json(WindowDto::from(&w))))
}

/// The caller's windows, oldest first.
#[utoipa::path(
    get, path = "/api/call-windows", tag = "windows",
    responses((status = 200, description = "The windows", body = [WindowDto])),
    security(("bearer" = []))
)]
pub async fn list_windows(
    State(state): State<ApiState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<WindowDto>>> {
    let ws = state.engine().windows().list(&user.owner).await?;
    Ok(Json(ws.iter().map(WindowDto::from).collect()))
}

/// Deletes one of the caller's windows.
#[utoipa::path(
    delete, path = "/api/call-windows/{windowId}", tag = "windows",
    params(("windowId" = String, Path, description = "The window's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such window of this user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_window(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = window_id(&id)?;
    state.engine().windows().delete(&user.owner, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn window_id(raw: &str) -> ApiResult<WindowId> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("window {raw} not found")))
}

/// Replaces one of the caller's windows: its schedule and its call (the same
/// body as creating one). The planner is woken, so a window moved to open now
/// places its call at once.
#[utoipa::path(
    put, path = "/api/call-windows/{windowId}", tag = "windows",
    params(("windowId" = String, Path, description = "The window's id")),
    request_body = CreateWindowRequest,
    responses(
        (status = 200, description = "The window as saved", body = WindowDto),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such window of this user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_window(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateWindowRequest>,
) -> ApiResult<Json<WindowDto>> {
    let id = window_id(&id)?;
    let (schedule, fields) = body.into_schedule()?;
    let template = fields.into_template(state.engine())?;
    let edit = WindowEdit {
        schedule: Some(schedule),
        template: Some(template),
    };
    let w = state.engine().windows().edit(&user.owner, id, edit).await?;
    Ok(Json(WindowDto::from(&w)))
}
