//! Provider webhooks: every request is rate limited, then verified (401 on a bad
//! signature, nothing stored), then parsed and handed to the core
//! [`EventIngestor`]. Retell posts to `/webhooks/retell`; Twilio's paths are in
//! [`twilio`].

pub mod twilio;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{
    Clock, ErrorKind, EventIngestor, ProviderEvent, WebhookRequest, WebhookVerifier,
};
use callcat_retell::RetellWebhookVerifier;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

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

/// Webhook settings and verifiers.
pub struct Webhooks {
    /// Applies provider events.
    pub ingestor: Arc<EventIngestor>,
    /// Retell's verifier, when Retell is configured.
    pub retell: Option<RetellWebhookVerifier>,
    /// Twilio's, when Twilio is configured.
    pub twilio: Option<twilio::TwilioHooks>,
    /// Shared by every webhook route.
    pub limiter: RateLimiter,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("retell", &self.retell.is_some())
            .field("twilio", &self.twilio.is_some())
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

/// What a webhook request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    /// One result per event: `applied`, `transcript_updated`, `duplicate`,
    /// `stale`, `unknown_call` or `rejected`.
    pub results: Vec<String>,
}

/// Rate limit: the 429 to answer when refused (counted).
pub(crate) fn refused(state: &AppState, provider: &str) -> Option<Response> {
    state.webhooks.limiter.try_acquire().err().map(|wait| {
        state.metrics.webhook(provider, "rate_limited");
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

/// The answer to a failed verification or parse, counting it.
pub(crate) fn rejected(state: &AppState, provider: &str, e: callcat_core::Error) -> Response {
    if e.kind() == ErrorKind::Unauthorized {
        state.metrics.webhook(provider, "unauthorized");
        tracing::warn!(provider, error = %e, "webhook signature rejected");
        ApiError::unauthorized("webhook signature verification failed").into_response()
    } else {
        state.metrics.webhook(provider, "invalid");
        tracing::warn!(provider, error = %e, "webhook could not be parsed");
        ApiError::from(e).into_response()
    }
}

/// Hands verified events to the ingestor; a store failure is a 503 so the
/// provider sends the webhook again.
pub(crate) async fn ingest_all(
    state: &AppState,
    provider: &str,
    events: &[ProviderEvent],
) -> Response {
    let mut results = Vec::with_capacity(events.len());
    for ev in events {
        match state.webhooks.ingestor.ingest(ev).await {
            Ok(outcome) => {
                tracing::debug!(provider, result = outcome.label(), "webhook event");
                results.push(outcome.label().to_owned());
            }
            Err(e) => {
                state.metrics.webhook(provider, "error");
                tracing::error!(provider, error = %e, "webhook event could not be stored");
                return ApiError::from(callcat_core::Error::unavailable(
                    "the event could not be stored; send it again",
                ))
                .into_response();
            }
        }
    }
    state.metrics.webhook(provider, "accepted");
    Json(WebhookAck { results }).into_response()
}

/// The request target as the server saw it (`/path?query`).
pub(crate) fn target(uri: &OriginalUri) -> String {
    uri.0
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| uri.0.path().to_owned())
}

fn not_configured(provider: &str) -> Response {
    ApiError::not_found(format!(
        "{provider} webhooks are not configured on this server"
    ))
    .into_response()
}

/// Retell webhooks (`call_started`, `call_ended`, `call_analyzed`,
/// `transcript_updated`), signed with `x-retell-signature`.
#[utoipa::path(
    post, path = "/webhooks/retell", tag = "webhooks",
    request_body(content = String, description = "Retell's JSON webhook body, verbatim", content_type = "application/json"),
    responses(
        (status = 200, description = "Verified and applied", body = WebhookAck),
        (status = 400, description = "Signed but unreadable", body = ErrorBody),
        (status = 401, description = "Bad or missing signature; nothing stored", body = ErrorBody),
        (status = 404, description = "Retell is not configured", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Could not store; resend", body = ErrorBody),
    )
)]
pub async fn retell(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refused(&state, "retell") {
        return r;
    }
    let Some(verifier) = &state.webhooks.retell else {
        return not_configured("retell");
    };
    let url = format!("{}{}", state.base_url, target(&uri));
    let req = WebhookRequest {
        url: &url,
        headers: &headers,
        body: &body,
    };
    match verifier.verify_and_parse(req, state.clock.now()) {
        Ok(events) => ingest_all(&state, "retell", &events).await,
        Err(e) => rejected(&state, "retell", e),
    }
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
