//! The OpenAPI description, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto;
use crate::error;
use crate::routes::{active, analytics, calls, health, windows};
use crate::sse;
use crate::webhooks;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "callcat",
        description = "Schedules, places and tracks AI voice phone calls. JSON in camelCase; times are epoch milliseconds."
    ),
    paths(
        calls::create_call,
        calls::list_calls,
        calls::get_call,
        calls::edit_call,
        calls::delete_call,
        calls::cancel_call,
        calls::get_transcript,
        calls::put_transcript,
        calls::live_transcript,
        active::list_active,
        active::count_active,
        active::get_active,
        sse::stream,
        windows::create_window,
        windows::list_windows,
        windows::delete_window,
        analytics::analytics,
        webhooks::retell,
        webhooks::twilio::status,
        webhooks::twilio::transcription,
        webhooks::twilio::twiml,
        webhooks::twilio::gather,
        health::healthz,
        health::readyz,
        health::metrics,
        health::openapi,
    ),
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        dto::CallDto,
        dto::CallListDto,
        dto::CreateCallRequest,
        dto::EditCallRequest,
        dto::TranscriptDto,
        dto::SegmentDto,
        dto::PutTranscriptRequest,
        dto::CountDto,
        dto::HealthDto,
        active::ActiveCallDto,
        windows::CreateWindowRequest,
        windows::WindowDto,
        sse::TranscriptEventDto,
        sse::LaggedDto,
        analytics::AnalyticsDto,
        analytics::DurationDto,
        webhooks::WebhookAck,
    )),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The OpenAPI document of every route.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
