//! The HTTP routes, one file per area. Each route is registered with
//! `utoipa_axum::routes!`, which adds its OpenAPI operation in the same step.

pub mod active;
pub mod analytics;
pub mod calls;
pub mod do_not_call;
pub mod health;
pub mod windows;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::router::ApiState;

/// Every API route (not the webhooks). Static segments (`active`, `stream`)
/// win over `{callId}`. One `routes!` per path: handlers listed together must
/// share it.
pub(crate) fn api() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(calls::create_call, calls::list_calls))
        .routes(routes!(calls::count_calls))
        .routes(routes!(active::list_active))
        .routes(routes!(active::count_active))
        .routes(routes!(active::get_active))
        .routes(routes!(crate::sse::stream))
        .routes(routes!(
            calls::get_call,
            calls::edit_call,
            calls::delete_call
        ))
        .routes(routes!(calls::cancel_call))
        .routes(routes!(calls::requeue_call))
        .routes(routes!(calls::get_transcript, calls::put_transcript))
        .routes(routes!(calls::append_segments))
        .routes(routes!(calls::live_transcript))
        .routes(routes!(windows::create_window, windows::list_windows))
        .routes(routes!(windows::put_window, windows::delete_window))
        .routes(routes!(
            do_not_call::add_do_not_call,
            do_not_call::list_do_not_call
        ))
        .routes(routes!(do_not_call::remove_do_not_call))
        .routes(routes!(analytics::analytics))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(crate::openapi::openapi))
}
