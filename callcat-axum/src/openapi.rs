//! The OpenAPI document: its fixed part (title, schemas, security scheme) and
//! `GET /api/openapi.json`. The paths come from the routes themselves (see
//! [`crate::ApiRouter`]).

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::response::IntoResponse;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::Server;

use crate::dto;
use crate::error;
use crate::error::ApiError;
use crate::router::ApiState;
use crate::routes::{active, analytics, do_not_call, windows};
use crate::sse;
use crate::webhooks;

/// Where the document is served, relative to the router's root.
pub const OPENAPI_PATH: &str = "/api/openapi.json";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "callcat",
        description = "Schedules, places and tracks AI voice phone calls. JSON in camelCase; times are epoch milliseconds."
    ),
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        dto::CallDto,
        dto::CallListDto,
        dto::CreateCallRequest,
        dto::CallPlan,
        dto::AttemptDto,
        dto::RetryOnFields,
        dto::RetryOnDto,
        dto::DialWindowFields,
        dto::DialWindowDto,
        dto::EditCallRequest,
        dto::TranscriptDto,
        dto::SegmentDto,
        dto::PutTranscriptRequest,
        dto::CountDto,
        dto::HealthDto,
        active::ActiveCallDto,
        windows::CreateWindowRequest,
        windows::WindowDto,
        do_not_call::AddDoNotCallRequest,
        do_not_call::DoNotCallDto,
        do_not_call::DoNotCallListDto,
        sse::TranscriptEventDto,
        sse::LaggedDto,
        analytics::AnalyticsDto,
        analytics::DurationDto,
        webhooks::WebhookAck,
    ))
)]
struct ApiDoc;

/// The document without paths, with `security` (default: HTTP bearer, JWT)
/// as the `bearer` scheme the operations refer to.
pub(crate) fn base(security: Option<SecurityScheme>) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let scheme = security.unwrap_or_else(|| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        )
    });
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", scheme);
    doc
}

/// This API's OpenAPI description. Mounted under a prefix, its `servers`
/// entry is that prefix.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 JSON"))
)]
pub async fn openapi(State(state): State<ApiState>, uri: OriginalUri) -> impl IntoResponse {
    let Some(doc) = state.openapi() else {
        return Err(ApiError::from(callcat_core::Error::unavailable(
            "the OpenAPI document is not assembled yet",
        )));
    };
    let mut doc = doc.clone();
    let prefix = uri.0.path().strip_suffix(OPENAPI_PATH).unwrap_or_default();
    if !prefix.is_empty() {
        doc.servers = Some(vec![Server::new(prefix)]);
    }
    Ok(Json(doc))
}
