//! Provider webhooks, without knowing any provider: a [`WebhookVerifier`]
//! registered by provider name (see [`crate::ApiRouter::webhook`]) serves its
//! path. Every request is rate limited, then verified (401 on a bad signature,
//! nothing stored), then parsed, and every event is handed to the core
//! [`EventIngestor`](callcat_core::EventIngestor).
//!
//! The helpers here ([`refused`], [`rejected`], [`ingest_all`]) are public so
//! that provider-specific routes merged into the router (e.g. Twilio's TwiML
//! flow) answer exactly as the generic ones do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
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

/// Rate limit shared by every webhook route: the 429 to answer when this
/// request is refused (reported to the observer), or `None` to go on.
pub fn refused(state: &ApiState, provider: &str) -> Option<Response> {
    state.webhook_limiter().try_acquire().err().map(|wait| {
        state.observe_webhook(provider, "rate_limited");
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many webhook requests",
        )
        .into_response();
        if let Ok(v) = (wait.as_secs() + 1).to_string().parse() {
            e.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        e
    })
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
                return ApiError::from(callcat_core::Error::unavailable(
                    "the event could not be stored; send it again",
                ))
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
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Could not store; resend", body = ErrorBody),
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
    if let Some(r) = refused(&state, provider) {
        return r;
    }
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
}
