//! The server's operational glue around the [`callcat_axum`] router: `GET
//! /metrics` (documented with the API), counting HTTP responses per route, and
//! counting webhook results — all into [`Metrics`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use callcat_axum::{ApiError, ApiState, WebhookObserver};
use callcat_core::LiveTracker;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::metrics::Metrics;

/// What `GET /metrics` reads.
#[derive(Clone)]
pub struct MetricsState {
    metrics: Metrics,
    tracker: Arc<LiveTracker>,
    /// The bearer token a scrape must present, if any.
    token: Option<Arc<str>>,
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

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Prometheus metrics (text exposition format). When the server is given
/// `CALLCAT_METRICS_TOKEN`, a scrape must send `Authorization: Bearer <token>`.
/// Tenant names appear only with `CALLCAT_METRICS_TENANT_LABELS=1`.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "A metrics token is configured and was not sent", body = callcat_axum::error::ErrorBody),
    )
)]
pub async fn metrics(State(state): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !same_secret(sent, token.as_bytes()) {
            let mut r =
                ApiError::unauthorized("/metrics needs Authorization: Bearer <metrics token>")
                    .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let active = active_by_tenant(&state.tracker);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&active),
    )
        .into_response()
}

/// `GET /metrics`, to merge into the API router (and its OpenAPI document);
/// with `token`, a scrape must present it as a bearer token.
pub fn metrics_routes(
    counters: Metrics,
    tracker: Arc<LiveTracker>,
    token: Option<&str>,
) -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .with_state(MetricsState {
            metrics: counters,
            tracker,
            token: token.map(Arc::from),
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
