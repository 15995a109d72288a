//! `/api/do-not-call`: the tenant's do-not-call list. Tenant-wide, so only the
//! tenant's administrators (role `admin`) read or change it; anyone else gets
//! 403. A call to a listed number ends CANCELED before it is dialed.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use callcat_core::DoNotCallEntry;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::AuthUser;
use crate::dto::{ms, phone};
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use crate::router::ApiState;
use crate::routes::calls::page_limit;

/// `POST /api/do-not-call`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddDoNotCallRequest {
    /// The E.164 number never to call, e.g. `+14155552671`.
    pub phone_number: String,
}

/// One listed number.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoNotCallDto {
    /// The number (E.164).
    pub phone_number: String,
    /// The user who listed it.
    pub added_by: String,
    /// When it was listed (epoch ms).
    pub added_at: i64,
}

impl From<&DoNotCallEntry> for DoNotCallDto {
    fn from(e: &DoNotCallEntry) -> Self {
        DoNotCallDto {
            phone_number: e.phone_number.as_str().to_owned(),
            added_by: e.added_by.to_string(),
            added_at: ms(e.added_at),
        }
    }
}

/// A page of the list, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoNotCallListDto {
    /// The entries.
    pub entries: Vec<DoNotCallDto>,
    /// Pass back as `nextToken` for the next page; `null` at the end.
    pub next_token: Option<String>,
}

/// `GET /api/do-not-call` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DoNotCallListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<String>,
    /// The `nextToken` of the previous page.
    pub next_token: Option<String>,
}

fn admin(user: &AuthUser) -> ApiResult<()> {
    if user.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only an administrator of the tenant manages its do-not-call list",
        ))
    }
}

/// Puts a number on the tenant's do-not-call list (administrators only). Calls
/// to it, already scheduled or not, end CANCELED before any dial. Listing a
/// number again changes nothing and answers 200 with the existing entry.
#[utoipa::path(
    post, path = "/api/do-not-call", tag = "do-not-call",
    request_body = AddDoNotCallRequest,
    responses(
        (status = 201, description = "Listed", body = DoNotCallDto),
        (status = 200, description = "It was already listed: the existing entry", body = DoNotCallDto),
        (status = 400, description = "Invalid number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn add_do_not_call(
    State(state): State<ApiState>,
    user: AuthUser,
    ApiJson(body): ApiJson<AddDoNotCallRequest>,
) -> ApiResult<(StatusCode, Json<DoNotCallDto>)> {
    admin(&user)?;
    let number = phone("phoneNumber", &body.phone_number)?;
    // Twice at most: a concurrent removal between our add and our look-up
    // makes the second add the one that lists it.
    for _ in 0..2 {
        let (entry, added) = state
            .engine()
            .do_not_call()
            .add(&user.owner, number.clone())
            .await?;
        if added {
            tracing::info!(to = %number, "number put on the do-not-call list");
            return Ok((StatusCode::CREATED, Json(DoNotCallDto::from(&entry))));
        }
        if let Some(existing) = state
            .engine()
            .do_not_call()
            .get(&user.owner.tenant, &number)
            .await?
        {
            return Ok((StatusCode::OK, Json(DoNotCallDto::from(&existing))));
        }
    }
    Err(ApiError::from(callcat_core::Error::new(
        callcat_core::ErrorKind::Conflict,
        "the number was listed and removed concurrently; try again",
    )))
}

/// The tenant's do-not-call list, oldest first (administrators only).
#[utoipa::path(
    get, path = "/api/do-not-call", tag = "do-not-call", params(DoNotCallListParams),
    responses(
        (status = 200, description = "A page of the list", body = DoNotCallListDto),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_do_not_call(
    State(state): State<ApiState>,
    user: AuthUser,
    Query(p): Query<DoNotCallListParams>,
) -> ApiResult<Json<DoNotCallListDto>> {
    admin(&user)?;
    let limit = page_limit(p.limit.as_deref())?;
    let cursor = p.next_token.filter(|t| !t.is_empty());
    let page = state
        .engine()
        .do_not_call()
        .list(&user.owner.tenant, limit, cursor.as_deref())
        .await?;
    Ok(Json(DoNotCallListDto {
        entries: page.items.iter().map(DoNotCallDto::from).collect(),
        next_token: page.next_cursor,
    }))
}

/// Takes a number off the tenant's list (administrators only). The path
/// segment is the E.164 number, `+` written as `%2B` or as is.
#[utoipa::path(
    delete, path = "/api/do-not-call/{phoneNumber}", tag = "do-not-call",
    params(("phoneNumber" = String, Path, description = "The listed E.164 number, URL-encoded (`%2B14155552671`)")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Not a phone number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "The number is not listed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn remove_do_not_call(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(number): Path<String>,
) -> ApiResult<StatusCode> {
    admin(&user)?;
    let number = phone("phoneNumber", &number)?;
    state
        .engine()
        .do_not_call()
        .remove(&user.owner.tenant, &number)
        .await?;
    tracing::info!(to = %number, "number taken off the do-not-call list");
    Ok(StatusCode::NO_CONTENT)
}
