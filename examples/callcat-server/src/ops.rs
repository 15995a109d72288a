//! The server's operational glue around the [`callcat_axum`] router: `GET
//! /metrics` (documented with the API), counting HTTP responses per route, and
//! counting webhook results — all into [`Metrics`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use callcat_axum::{ApiState, WebhookObserver};
use callcat_core::LiveTracker;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::metrics::Metrics;

/// What `GET /metrics` reads.
#[derive(Clone)]
pub struct MetricsState {
    metrics: Metrics,
    tracker: Arc<LiveTracker>,
}

impl std::fmt::Debug for MetricsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsState").finish_non_exhaustive()
    }
}

/// Active calls per tenant, for the metrics gauge.
pub fn active_by_tenant(tracker: &LiveTracker) -> BTreeMap<String, usize> {
    tracker
        .counts()
        .into_iter()
        .map(|(t, n)| (t.as_str().to_owned(), n))
        .collect()
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<MetricsState>) -> impl IntoResponse {
    let active = active_by_tenant(&state.tracker);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&active),
    )
}

/// `GET /metrics`, to merge into the API router (and its OpenAPI document).
pub fn metrics_routes(counters: Metrics, tracker: Arc<LiveTracker>) -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .with_state(MetricsState {
            metrics: counters,
            tracker,
        })
}

/// Middleware: counts every response by route pattern and status.
pub async fn count_http(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    metrics.http(&route, resp.status().as_u16());
    resp
}

/// Counts webhook results in [`Metrics`].
#[derive(Debug, Clone)]
pub struct WebhookCounter(pub Metrics);

impl WebhookObserver for WebhookCounter {
    fn webhook(&self, provider: &str, result: &str) {
        self.0.webhook(provider, result);
    }
}
