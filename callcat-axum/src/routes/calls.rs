//! `/api/calls`: create, list, read, edit, delete, cancel; transcripts.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use callcat_core::{CallId, CallStatus, Created, ListQuery, ListView};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::AuthUser;
use crate::dto::{
    AppendSegmentsRequest, CallDto, CallListDto, CreateCallRequest, EditCallRequest,
    PutTranscriptRequest, RequeueRequest, TranscriptDto, Workflow, from_ms,
};
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody, parse_json};
use crate::router::ApiState;

/// Default page size of `GET /api/calls` and `GET /api/do-not-call`.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size of `GET /api/calls` and `GET /api/do-not-call`.
pub const MAX_LIMIT: u32 = 100;

/// The `limit` query parameter of a paged list: 1 to [`MAX_LIMIT`], default
/// [`DEFAULT_LIMIT`].
pub(crate) fn page_limit(raw: Option<&str>) -> ApiResult<u32> {
    match raw {
        None | Some("") => Ok(DEFAULT_LIMIT),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::validation("limit", format!("limit must be between 1 and {MAX_LIMIT}"))
            }),
    }
}

pub(crate) fn call_id(raw: &str) -> ApiResult<CallId> {
    // A malformed id cannot name anyone's call: answer as for an unknown one.
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("call {raw} not found")))
}

/// Creates a call. `Idempotency-Key` makes a retried POST return the first call (200).
/// With `workflow: "classify_then_call"` the call created (and returned) is the
/// classification call; the task call follows with `parentCallId` set to it.
#[utoipa::path(
    post, path = "/api/calls", tag = "calls",
    request_body = CreateCallRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retrying with the same key returns the first call")),
    responses(
        (status = 201, description = "Created", body = CallDto),
        (status = 200, description = "An earlier request with this Idempotency-Key created it", body = CallDto),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_call(
    State(state): State<ApiState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::validation("Idempotency-Key", "must be visible ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    let (new, workflow) =
        CreateCallRequest::from_json(&body)?.into_new_call(state.engine(), key)?;
    let created = match workflow {
        Workflow::Single => state.service().create(&user.owner, new).await?,
        Workflow::ClassifyThenCall => {
            state
                .engine()
                .start_classify_then_call(&user.owner, new)
                .await?
        }
    };
    let status = match &created {
        Created::New(c) => {
            tracing::info!(call = %c.id, to = %c.phone_number, at = %c.scheduled_for, "call created");
            StatusCode::CREATED
        }
        Created::Existing(_) => StatusCode::OK,
    };
    Ok((status, Json(CallDto::from(created.call()))).into_response())
}

/// `GET /api/calls` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only calls in this status (e.g. `SCHEDULED`, `COMPLETED`); without it, the upcoming view.
    pub status: Option<String>,
    /// `upcoming` (soonest first) or `finished` (latest first); default from `status`.
    pub view: Option<String>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<String>,
    /// The `nextToken` of the previous page.
    pub next_token: Option<String>,
}

/// Lists the caller's calls: upcoming soonest first, finished latest first.
#[utoipa::path(
    get, path = "/api/calls", tag = "calls", params(ListParams),
    responses(
        (status = 200, description = "A page of calls", body = CallListDto),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_calls(
    State(state): State<ApiState>,
    user: AuthUser,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<CallListDto>> {
    let limit = page_limit(p.limit.as_deref())?;
    let status = p
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<CallStatus>())
        .transpose()?;
    let view = match p.view.as_deref() {
        None | Some("") => status.map(ListView::of).unwrap_or(ListView::Upcoming),
        Some("upcoming") => ListView::Upcoming,
        Some("finished") => ListView::Finished,
        Some(_) => return Err(ApiError::validation("view", "view is upcoming or finished")),
    };
    if let Some(s) = status
        && ListView::of(s) != view
    {
        return Err(ApiError::validation(
            "status",
            format!("status {s} is not in the {view:?} view"),
        ));
    }
    let query = ListQuery {
        view,
        status,
        limit,
        cursor: p.next_token.filter(|t| !t.is_empty()),
    };
    let page = state.service().list(&user.owner, &query).await?;
    Ok(Json(CallListDto {
        calls: page.items.iter().map(CallDto::from).collect(),
        next_token: page.next_cursor,
    }))
}

/// The caller's calls per status (seed 003's `scheduler_dashboard`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCountsDto {
    /// Every status (`SCHEDULED`, ..., `EXPIRED`) with how many calls are in it.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// All of the caller's calls.
    pub total: u64,
}

/// How many of the caller's calls are in each status.
#[utoipa::path(
    get, path = "/api/calls/counts", tag = "calls",
    responses(
        (status = 200, description = "Counts per status", body = StatusCountsDto),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn count_calls(
    State(state): State<ApiState>,
    user: AuthUser,
) -> ApiResult<Json<StatusCountsDto>> {
    let found = state.service().count_by_status(&user.owner).await?;
    let counts: std::collections::BTreeMap<String, u64> = CallStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), found.get(s).copied().unwrap_or(0)))
        .collect();
    Ok(Json(StatusCountsDto {
        total: counts.values().sum(),
        counts,
    }))
}

/// One of the caller's calls.
#[utoipa::path(
    get, path = "/api/calls/{callId}", tag = "calls",
    params(("callId" = String, Path, description = "The call's id")),
    responses(
        (status = 200, description = "The call", body = CallDto),
        (status = 404, description = "No such call of this user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_call(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<CallDto>> {
    let c = state.service().get(&user.owner, call_id(&id)?).await?;
    Ok(Json(CallDto::from(&c)))
}

/// Edits a scheduled call (409 once it has left SCHEDULED).
#[utoipa::path(
    put, path = "/api/calls/{callId}", tag = "calls",
    params(("callId" = String, Path, description = "The call's id")),
    request_body = EditCallRequest,
    responses(
        (status = 200, description = "The edited call", body = CallDto),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such call of this user", body = ErrorBody),
        (status = 409, description = "The call is no longer scheduled", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn edit_call(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EditCallRequest>,
) -> ApiResult<Json<CallDto>> {
    let id = call_id(&id)?;
    let edit = body.into_edit()?;
    let c = state.service().edit(&user.owner, id, &edit).await?;
    Ok(Json(CallDto::from(&c)))
}

/// Deletes a scheduled call (409 in any other status).
#[utoipa::path(
    delete, path = "/api/calls/{callId}", tag = "calls",
    params(("callId" = String, Path, description = "The call's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such call of this user", body = ErrorBody),
        (status = 409, description = "Only scheduled calls can be deleted", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_call(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.service().delete(&user.owner, call_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels a scheduled or in-flight call (in flight: the provider hangs up).
#[utoipa::path(
    post, path = "/api/calls/{callId}/cancel", tag = "calls",
    params(("callId" = String, Path, description = "The call's id")),
    responses(
        (status = 200, description = "The canceled (or canceling) call", body = CallDto),
        (status = 404, description = "No such call of this user", body = ErrorBody),
        (status = 409, description = "The call has already finished", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_call(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<CallDto>> {
    let c = state.service().cancel(&user.owner, call_id(&id)?).await?;
    Ok(Json(CallDto::from(&c)))
}

/// Sends a FAILED or EXPIRED call back to be placed again (the dead-letter
/// requeue): SCHEDULED with fresh attempts, its attempt history kept. The body
/// may be absent.
#[utoipa::path(
    post, path = "/api/calls/{callId}/requeue", tag = "calls",
    params(("callId" = String, Path, description = "The call's id")),
    request_body(content = Option<RequeueRequest>, description = "When to place it (optional)"),
    responses(
        (status = 200, description = "The call, SCHEDULED again", body = CallDto),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such call of this user", body = ErrorBody),
        (status = 409, description = "Only a FAILED or EXPIRED call can be requeued", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn requeue_call(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<CallDto>> {
    let id = call_id(&id)?;
    let req: RequeueRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RequeueRequest::default()
    } else {
        parse_json(&body)?
    };
    let at = req
        .scheduled_at
        .map(|v| from_ms("scheduledAt", v))
        .transpose()?;
    let not_after = req.not_after.map(|v| from_ms("notAfter", v)).transpose()?;
    let c = state
        .service()
        .requeue(&user.owner, id, at, not_after)
        .await?;
    Ok(Json(CallDto::from(&c)))
}

/// A call's transcript (empty until the call has one).
#[utoipa::path(
    get, path = "/api/calls/{callId}/transcript", tag = "transcripts",
    params(("callId" = String, Path, description = "The call's id")),
    responses(
        (status = 200, description = "The transcript", body = TranscriptDto),
        (status = 404, description = "No such call of this user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_transcript(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<TranscriptDto>> {
    let t = state
        .engine()
        .transcripts()
        .get(&user.owner, call_id(&id)?)
        .await?;
    Ok(Json(TranscriptDto::of(&t)))
}

/// Replaces a call's transcript text (segments are kept).
#[utoipa::path(
    put, path = "/api/calls/{callId}/transcript", tag = "transcripts",
    params(("callId" = String, Path, description = "The call's id")),
    request_body = PutTranscriptRequest,
    responses(
        (status = 200, description = "The saved transcript", body = TranscriptDto),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such call of this user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_transcript(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PutTranscriptRequest>,
) -> ApiResult<Json<TranscriptDto>> {
    let t = state
        .engine()
        .transcripts()
        .replace_text(&user.owner, call_id(&id)?, body.transcript_text)
        .await?;
    Ok(Json(TranscriptDto::of(&t)))
}

/// Appends segments to a call's transcript (creating it if needed). Atomic:
/// concurrent appends all land; a segment already there is not added twice.
#[utoipa::path(
    post, path = "/api/calls/{callId}/transcript/segments", tag = "transcripts",
    params(("callId" = String, Path, description = "The call's id")),
    request_body = AppendSegmentsRequest,
    responses(
        (status = 200, description = "The transcript with the segments", body = TranscriptDto),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such call of this user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn append_segments(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AppendSegmentsRequest>,
) -> ApiResult<Json<TranscriptDto>> {
    let id = call_id(&id)?;
    let segments = body.into_segments()?;
    let t = state
        .engine()
        .transcripts()
        .append(&user.owner, id, None, &segments)
        .await?;
    Ok(Json(TranscriptDto::of(&t)))
}

/// The live transcript by the provider's call id (seed 000's endpoint).
#[utoipa::path(
    get, path = "/api/live_transcripts/{providerId}", tag = "transcripts",
    params(("providerId" = String, Path, description = "The provider's call id")),
    responses(
        (status = 200, description = "The transcript so far", body = TranscriptDto),
        (status = 404, description = "No such call of this user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn live_transcript(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(provider_id): Path<String>,
) -> ApiResult<Json<TranscriptDto>> {
    let t = state
        .engine()
        .transcripts()
        .get_by_provider_call_id(&user.owner, &provider_id)
        .await?;
    Ok(Json(TranscriptDto::of(&t)))
}
