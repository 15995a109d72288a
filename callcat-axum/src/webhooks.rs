//! Provider webhooks, without knowing any provider: a [`WebhookVerifier`]
//! registered by provider name (see [`crate::ApiRouter::webhook`]) serves its
//! path. Every request is verified first (401 on a bad signature, nothing
//! stored), then parsed, and every event is handed to the core
//! [`EventIngestor`](callcat_core::EventIngestor).
//!
//! Floods are contained without ever refusing a genuine request: the body is
//! read only up to a small per-provider limit (256 KiB by default), at most a
//! fixed number of webhook requests run at once (503 beyond), and only requests
//! that fail verification draw on a per-source failure budget (the client's IP
//! from the connection, or from a trusted proxy's header): once a source has
//! spent it, its unverified requests get 429. A correctly signed request is
//! never limited by that budget, even from the same source.
//!
//! The helpers here ([`refused`], [`rejected`], [`ingest_all`]) are public so
//! that provider-specific routes merged into the router (e.g. Twilio's TwiML
//! flow) answer exactly as the generic ones do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{Clock, ErrorKind, ProviderEvent, WebhookRequest, WebhookVerifier};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Operation, Parameter};

use crate::error::{ApiError, ErrorBody};
use crate::router::ApiState;

/// A token bucket on the injected clock: `rate` requests per second, bursts of `burst`.
pub struct RateLimiter {
    clock: Arc<dyn Clock>,
    rate: f64,
    burst: f64,
    state: Mutex<(f64, DateTime<Utc>)>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish()
    }
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `per_second`.
    pub fn new(clock: Arc<dyn Clock>, per_second: u32, burst: u32) -> Self {
        let now = clock.now();
        RateLimiter {
            clock,
            rate: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            state: Mutex::new((f64::from(burst.max(1)), now)),
        }
    }

    /// Takes a token, or says how long until one is free.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = (now - st.1).num_milliseconds().max(0) as f64 / 1000.0;
        st.0 = (st.0 + elapsed * self.rate).min(self.burst);
        st.1 = now;
        if st.0 >= 1.0 {
            st.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - st.0) / self.rate))
        }
    }
}

/// One token bucket per source (a client IP): `rate` per second, bursts of
/// `burst`, on the injected clock. At most `max_sources` are remembered; when
/// that many are, the sources whose bucket has refilled are forgotten, and if
/// none has, the new source shares one overflow bucket.
pub struct SourceLimiter {
    clock: Arc<dyn Clock>,
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: Mutex<HashMap<String, (f64, DateTime<Utc>)>>,
}

/// The bucket shared by new sources while the table is full.
const OVERFLOW_SOURCE: &str = "<overflow>";

impl std::fmt::Debug for SourceLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("max_sources", &self.max_sources)
            .finish_non_exhaustive()
    }
}

impl SourceLimiter {
    /// Buckets of `burst` tokens refilled at `per_second`, for at most
    /// `max_sources` sources at once.
    pub fn new(clock: Arc<dyn Clock>, per_second: u32, burst: u32, max_sources: usize) -> Self {
        SourceLimiter {
            clock,
            rate: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            max_sources: max_sources.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `source`'s bucket, or says how long until one is free.
    pub fn try_acquire(&self, source: &str) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let refill = |(tokens, at): (f64, DateTime<Utc>)| {
            let elapsed = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
            (tokens + elapsed * self.rate).min(self.burst)
        };
        let mut key = source;
        if !map.contains_key(key) && map.len() >= self.max_sources {
            map.retain(|_, b| refill(*b) < self.burst);
            if map.len() >= self.max_sources {
                key = OVERFLOW_SOURCE;
            }
        }
        let b = map.entry(key.to_owned()).or_insert((self.burst, now));
        let tokens = refill(*b);
        if tokens >= 1.0 {
            *b = (tokens - 1.0, now);
            Ok(())
        } else {
            *b = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

/// Where a webhook request comes from, for its failure budget: the last
/// address in the trusted proxy's `header` when one is configured and present,
/// else the connection's peer address ([`ConnectInfo`]), else `unknown`.
pub fn request_source(req: &Request, header: Option<&HeaderName>) -> String {
    if let Some(name) = header
        && let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok())
        && let Some(last) = v.rsplit(',').map(str::trim).find(|s| !s.is_empty())
    {
        return last.to_owned();
    }
    match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => addr.ip().to_string(),
        None => "unknown".to_owned(),
    }
}

/// Middleware of every webhook route (registered paths and anything under
/// `/webhooks/`): bounds how many run at once (503 beyond, with
/// `Retry-After`), and charges requests that failed verification (401) to
/// their source's failure budget, answering 429 once it is spent. Verified
/// requests are never charged nor refused by it.
pub(crate) async fn guard(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if !state.is_webhook_path(req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(_permit) = state.webhook_slots().clone().try_acquire_owned() else {
        tracing::warn!("too many webhook requests at once; answering 503");
        let mut r = ApiError::unavailable("too many webhook requests at once; retry shortly")
            .into_response();
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return r;
    };
    let source = request_source(&req, state.client_ip_header());
    let resp = next.run(req).await;
    if resp.status() != StatusCode::UNAUTHORIZED {
        return resp;
    }
    match state.webhook_failures().try_acquire(&source) {
        Ok(()) => resp,
        Err(wait) => {
            tracing::debug!(source, "webhook failure budget spent");
            too_many(wait)
        }
    }
}

fn too_many(wait: Duration) -> Response {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many webhook requests failed verification from this source",
    )
    .into_response();
    if let Ok(v) = (wait.as_secs() + 1).to_string().parse() {
        e.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    e
}

/// Told the result of every webhook request, e.g. to count them.
pub trait WebhookObserver: Send + Sync + 'static {
    /// One request of `provider` ended with `result`: `accepted`,
    /// `unauthorized`, `rate_limited`, `invalid` or `error`.
    fn webhook(&self, provider: &str, result: &str);
}

/// One registered webhook path.
pub(crate) struct WebhookRoute {
    pub(crate) path: String,
    pub(crate) provider: String,
    pub(crate) verifier: Option<Arc<dyn WebhookVerifier>>,
}

impl WebhookRoute {
    pub(crate) fn new(
        path: &str,
        provider: &str,
        verifier: Option<Arc<dyn WebhookVerifier>>,
    ) -> Self {
        WebhookRoute {
            path: path.to_owned(),
            provider: provider.to_owned(),
            verifier,
        }
    }
}

impl std::fmt::Debug for WebhookRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRoute")
            .field("path", &self.path)
            .field("provider", &self.provider)
            .field("configured", &self.verifier.is_some())
            .finish()
    }
}

/// What a webhook request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    /// One result per event: `applied`, `transcript_updated`, `duplicate`,
    /// `stale`, `unknown_call` or `rejected`.
    pub results: Vec<String>,
}

/// Whether to refuse this request before verifying it: the response to
/// answer, or `None` to go on. Nothing is refused before verification any
/// more — a flood of forged requests must not use up the budget of genuine
/// ones — so this is always `None`: the failure budget is applied by the
/// router's webhook middleware to requests that failed verification, and the
/// concurrency bound before the body is read. Kept so that provider routes
/// merged into the router keep compiling and can call it where they did.
pub fn refused(_state: &ApiState, _provider: &str) -> Option<Response> {
    None
}

/// The answer to a failed verification (401) or parse (per the error's kind),
/// reported to the observer.
pub fn rejected(state: &ApiState, provider: &str, e: callcat_core::Error) -> Response {
    if e.kind() == ErrorKind::Unauthorized {
        state.observe_webhook(provider, "unauthorized");
        tracing::warn!(provider, error = %e, "webhook signature rejected");
        ApiError::unauthorized("webhook signature verification failed").into_response()
    } else {
        state.observe_webhook(provider, "invalid");
        tracing::warn!(provider, error = %e, "webhook could not be parsed");
        ApiError::from(e).into_response()
    }
}

/// Hands verified events to the ingestor and answers [`WebhookAck`]; a store
/// failure is a 503 so the provider sends the webhook again.
pub async fn ingest_all(state: &ApiState, provider: &str, events: &[ProviderEvent]) -> Response {
    let mut results = Vec::with_capacity(events.len());
    for ev in events {
        match state.ingestor().ingest(ev).await {
            Ok(outcome) => {
                tracing::debug!(provider, result = outcome.label(), "webhook event");
                results.push(outcome.label().to_owned());
            }
            Err(e) => {
                state.observe_webhook(provider, "error");
                tracing::error!(provider, error = %e, "webhook event could not be stored");
                return ApiError::unavailable("the event could not be stored; send it again")
                    .into_response();
            }
        }
    }
    state.observe_webhook(provider, "accepted");
    Json(WebhookAck { results }).into_response()
}

/// 404 for a provider whose webhooks are routed but not configured.
pub fn not_configured(provider: &str) -> Response {
    ApiError::not_found(format!(
        "{provider} webhooks are not configured on this server"
    ))
    .into_response()
}

/// A provider's webhooks (`/webhooks/{provider}` is the default path; the
/// document lists each registered provider's path), verified with the
/// provider's signature before they are parsed.
#[utoipa::path(
    post, path = "/webhooks/{provider}", tag = "webhooks",
    request_body(content = String, description = "The provider's webhook body, verbatim (JSON or form-encoded)", content_type = "application/json"),
    responses(
        (status = 200, description = "Verified and applied", body = WebhookAck),
        (status = 400, description = "Signed but unreadable", body = ErrorBody),
        (status = 401, description = "Bad or missing signature; nothing stored", body = ErrorBody),
        (status = 404, description = "The provider is not configured", body = ErrorBody),
        (status = 413, description = "The body is over the provider's limit", body = ErrorBody),
        (status = 429, description = "This source sent too many requests that failed verification", body = ErrorBody),
        (status = 503, description = "Could not store, or too many webhook requests at once; resend", body = ErrorBody),
    )
)]
pub(crate) async fn provider_webhook(
    State(state): State<ApiState>,
    route: Arc<WebhookRoute>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let provider = route.provider.as_str();
    let Some(verifier) = &route.verifier else {
        return not_configured(provider);
    };
    let url = state.public_url(&uri, &headers);
    let req = WebhookRequest {
        url: &url,
        headers: &headers,
        body: &body,
    };
    match verifier.verify_and_parse(req, state.clock().now()) {
        Ok(events) => ingest_all(&state, provider, &events).await,
        Err(e) => rejected(&state, provider, e),
    }
}

/// The OpenAPI operation of one registered webhook path: the template of
/// [`provider_webhook`], named for the provider.
pub(crate) fn operation_for(route: &WebhookRoute) -> Operation {
    let mut op = <__path_provider_webhook as utoipa::Path>::operation();
    let provider = &route.provider;
    op.tags = Some(vec!["webhooks".to_owned()]);
    op.operation_id = Some(format!(
        "webhook_{}",
        route
            .path
            .trim_start_matches('/')
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    op.summary = Some(format!("{provider} webhooks"));
    op.description = Some(if route.verifier.is_some() {
        format!("Webhooks of {provider}, verified with its signature before they are parsed.")
    } else {
        format!("Webhooks of {provider}; {provider} is not configured here (404).")
    });
    if let Some(params) = &mut op.parameters {
        params.retain(|p| !matches!(p, RefOr::T(Parameter { name, .. }) if name == "provider"));
        if params.is_empty() {
            op.parameters = None;
        }
    }
    op
}

#[cfg(test)]
mod tests {
    use callcat_core::ManualClock;

    use super::*;

    #[test]
    fn bucket_refills_on_the_clock() {
        let clock = ManualClock::at_fixed_start();
        let l = RateLimiter::new(Arc::new(clock.clone()), 2, 3);
        assert!(l.try_acquire().is_ok());
        assert!(l.try_acquire().is_ok());
        assert!(l.try_acquire().is_ok());
        let wait = l.try_acquire().unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        clock.advance(Duration::from_millis(500));
        assert!(l.try_acquire().is_ok());
        assert!(l.try_acquire().is_err());
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.try_acquire().is_ok());
        }
        assert!(l.try_acquire().is_err());
    }

    #[test]
    fn each_source_has_its_own_budget_and_the_table_is_bounded() {
        let clock = ManualClock::at_fixed_start();
        let l = SourceLimiter::new(Arc::new(clock.clone()), 1, 2, 2);
        assert!(l.try_acquire("a").is_ok());
        assert!(l.try_acquire("a").is_ok());
        assert!(l.try_acquire("a").is_err());
        assert!(l.try_acquire("b").is_ok(), "b is not charged for a");
        // The table is full (a, b) and neither has refilled: c shares the overflow bucket.
        assert!(l.try_acquire("c").is_ok());
        assert!(l.try_acquire("d").is_ok());
        assert!(l.try_acquire("e").is_err());
        clock.advance(Duration::from_secs(10));
        // Refilled sources are forgotten to make room.
        assert!(l.try_acquire("f").is_ok());
        assert!(l.try_acquire("a").is_ok());
    }
}
