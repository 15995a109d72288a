//! The HTTP routes, one file per area.

pub mod active;
pub mod analytics;
pub mod calls;
pub mod health;
pub mod windows;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::app::AppState;

/// Every route. Static segments (`active`, `stream`) win over `{callId}`.
pub fn api() -> Router<AppState> {
    Router::new()
        .route(
            "/api/calls",
            post(calls::create_call).get(calls::list_calls),
        )
        .route("/api/calls/active", get(active::list_active))
        .route("/api/calls/active/count", get(active::count_active))
        .route("/api/calls/active/{callId}", get(active::get_active))
        .route("/api/calls/stream", get(crate::sse::stream))
        .route(
            "/api/calls/{callId}",
            get(calls::get_call)
                .put(calls::edit_call)
                .delete(calls::delete_call),
        )
        .route("/api/calls/{callId}/cancel", post(calls::cancel_call))
        .route(
            "/api/calls/{callId}/transcript",
            get(calls::get_transcript).put(calls::put_transcript),
        )
        .route(
            "/api/live_transcripts/{providerId}",
            get(calls::live_transcript),
        )
        .route(
            "/api/call-windows",
            post(windows::create_window).get(windows::list_windows),
        )
        .route(
            "/api/call-windows/{windowId}",
            delete(windows::delete_window),
        )
        .route("/api/analytics", get(analytics::analytics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/openapi.json", get(health::openapi))
}

/// The provider webhook routes (their own body limit).
pub fn webhooks() -> Router<AppState> {
    use crate::webhooks::{retell, twilio};
    Router::new()
        .route("/webhooks/retell", post(retell))
        .route("/webhooks/twilio/status", post(twilio::status))
        .route(
            "/webhooks/twilio/transcription",
            post(twilio::transcription),
        )
        .route("/webhooks/twilio/twiml/{callId}", post(twilio::twiml))
        .route("/webhooks/twilio/gather/{callId}", post(twilio::gather))
}
