//! `/healthz`, `/readyz`, `/metrics` and `/api/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::app::AppState;
use crate::dto::HealthDto;
use crate::error::{ApiResult, ErrorBody};
use crate::server::active_by_tenant;

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
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<HealthDto>> {
    state.stores.calls.next_due_at().await?;
    Ok(Json(HealthDto {
        status: "ready".into(),
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let active = active_by_tenant(&state);
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&active),
    ))
}

/// This API's OpenAPI description.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 JSON"))
)]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
