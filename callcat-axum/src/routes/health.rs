//! `/healthz` and `/readyz`.

use axum::Json;
use axum::extract::State;

use crate::dto::HealthDto;
use crate::error::{ApiResult, ErrorBody};
use crate::router::ApiState;

/// The process is up.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = HealthDto))
)]
pub async fn healthz() -> Json<HealthDto> {
    Json(HealthDto {
        status: "ok".into(),
    })
}

/// The store can be reached.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthDto),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<ApiState>) -> ApiResult<Json<HealthDto>> {
    state.stores().calls.next_due_at().await?;
    Ok(Json(HealthDto {
        status: "ready".into(),
    }))
}
