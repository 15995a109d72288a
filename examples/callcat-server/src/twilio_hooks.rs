//! Twilio's callbacks beyond status callbacks (which callcat-axum's generic
//! webhook route serves with the Twilio verifier): real-time transcription and
//! the TwiML conversation flow (TwiML fetches and speech gather callbacks).
//! Every request is rate limited and verified with `X-Twilio-Signature` over
//! the public URL first. [`routes`] is merged into the callcat-axum router, so
//! they share its state, rate limit, error shape and OpenAPI document.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callcat_axum::error::{ApiError, ErrorBody};
use callcat_axum::webhooks::{WebhookAck, refused, rejected};
use callcat_axum::{ApiState, WEBHOOK_BODY_LIMIT};
use callcat_core::{Call, CallId, CallUpdate, TranscriptSegment, WebhookRequest};
use callcat_twilio::{CallbackUrls, ConversationFlow, TranscriptionEvent, TwilioWebhookVerifier};
use tower_http::limit::RequestBodyLimitLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Twilio's verifier and the callback URLs the flow renders.
#[derive(Debug, Clone)]
pub struct TwilioHooks {
    /// Checks `X-Twilio-Signature`.
    pub verifier: TwilioWebhookVerifier,
    /// Where Twilio calls back.
    pub urls: CallbackUrls,
}

const PROVIDER: &str = "twilio";

/// Twilio's hooks when Twilio is configured (the routes answer 404 otherwise).
#[derive(Debug, Clone)]
struct Configured(Option<Arc<TwilioHooks>>);

/// The transcription, TwiML and gather routes, answering 404 when `hooks` is
/// `None` (Twilio not configured), with the webhook body limit.
pub fn routes(hooks: Option<TwilioHooks>) -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(transcription))
        .routes(routes!(twiml))
        .routes(routes!(gather))
        .layer(Extension(Configured(hooks.map(Arc::new))))
        .layer(RequestBodyLimitLayer::new(WEBHOOK_BODY_LIMIT))
}

fn hooks(configured: &Configured) -> Result<&TwilioHooks, ApiError> {
    configured
        .0
        .as_deref()
        .ok_or_else(|| ApiError::not_found("twilio webhooks are not configured on this server"))
}

fn xml(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn call_for(state: &ApiState, call_id: Option<CallId>, sid: &str) -> Option<Call> {
    if let Some(id) = call_id
        && let Ok(Some(c)) = state.stores().calls.get(id).await
    {
        return Some(c);
    }
    state
        .stores()
        .calls
        .find_by_provider_call_id(sid)
        .await
        .ok()
        .flatten()
}

/// Appends `new` to the call's transcript through the ingestor, unless the
/// transcript already ends with it (Twilio resends callbacks).
async fn append(
    state: &ApiState,
    call: &Call,
    sid: &str,
    new: &[TranscriptSegment],
) -> callcat_core::Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let now = state.clock().now();
    let mut segments = state
        .stores()
        .transcripts
        .get(call.id, now)
        .await?
        .map(|t| t.segments)
        .unwrap_or_default();
    if segments.ends_with(new) {
        return Ok(());
    }
    segments.extend_from_slice(new);
    state
        .ingestor()
        .store_transcript(call.id, &call.owner, sid, &segments)
        .await?;
    Ok(())
}

/// Twilio real-time transcription results (final ones are stored, partial ones
/// only published live).
#[utoipa::path(
    post, path = "/webhooks/twilio/transcription", tag = "webhooks",
    params(("callcat_call_id" = Option<String>, Query, description = "Our call id")),
    request_body(content = String, description = "Twilio's form-encoded transcription callback", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Verified and stored", body = WebhookAck),
        (status = 401, description = "Bad or missing signature; nothing stored", body = ErrorBody),
        (status = 404, description = "Twilio is not configured", body = ErrorBody),
    )
)]
async fn transcription(
    State(state): State<ApiState>,
    Extension(configured): Extension<Configured>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refused(&state, PROVIDER) {
        return r;
    }
    let hooks = match hooks(&configured) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let url = state.public_url(&uri, &headers);
    let req = WebhookRequest {
        url: &url,
        headers: &headers,
        body: &body,
    };
    let event = match hooks.verifier.verify_transcription(req) {
        Ok(e) => e,
        Err(e) => return rejected(&state, PROVIDER, e.into()),
    };
    let TranscriptionEvent::Content(u) = event else {
        state.observe_webhook(PROVIDER, "accepted");
        return axum::Json(WebhookAck {
            results: vec!["ignored".into()],
        })
        .into_response();
    };
    let Some(call) = call_for(&state, u.call_id, &u.call_sid).await else {
        state.observe_webhook(PROVIDER, "accepted");
        return axum::Json(WebhookAck {
            results: vec!["unknown_call".into()],
        })
        .into_response();
    };
    let result = if u.should_store() {
        match append(&state, &call, &u.call_sid, std::slice::from_ref(&u.segment)).await {
            Ok(()) => "transcript_updated",
            Err(e) => {
                state.observe_webhook(PROVIDER, "error");
                tracing::error!(error = %e, "transcription could not be stored");
                return ApiError::from(callcat_core::Error::unavailable(
                    "the transcription could not be stored; send it again",
                ))
                .into_response();
            }
        }
    } else {
        let mut segments = state
            .stores()
            .transcripts
            .get(call.id, state.clock().now())
            .await
            .ok()
            .flatten()
            .map(|t| t.segments)
            .unwrap_or_default();
        segments.push(u.segment.clone());
        state.bus().publish(CallUpdate::Transcript {
            call_id: call.id,
            owner: call.owner.clone(),
            provider_call_id: Some(u.call_sid.clone()),
            segments,
            partial: true,
        });
        "partial_published"
    };
    state.observe_webhook(PROVIDER, "accepted");
    axum::Json(WebhookAck {
        results: vec![result.into()],
    })
    .into_response()
}

async fn flow_call(state: &ApiState, raw_id: &str) -> Result<(Call, ConversationFlow), ApiError> {
    let id: CallId = raw_id
        .parse()
        .map_err(|_| ApiError::not_found(format!("call {raw_id} not found")))?;
    let call = state
        .stores()
        .calls
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("call {id} not found")))?;
    let flow = ConversationFlow::for_call(&call)?;
    Ok((call, flow))
}

/// The TwiML for a step of the call's conversation (Twilio fetches it when the
/// call connects and after each answer).
#[utoipa::path(
    post, path = "/webhooks/twilio/twiml/{callId}", tag = "webhooks",
    params(
        ("callId" = String, Path, description = "Our call id"),
        ("step" = Option<usize>, Query, description = "Flow step, 0 when absent"),
    ),
    responses(
        (status = 200, description = "TwiML", content_type = "text/xml"),
        (status = 401, description = "Bad or missing signature", body = ErrorBody),
        (status = 404, description = "Unknown call, or Twilio is not configured", body = ErrorBody),
    )
)]
async fn twiml(
    State(state): State<ApiState>,
    Extension(configured): Extension<Configured>,
    Path(call_id): Path<String>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refused(&state, PROVIDER) {
        return r;
    }
    let hooks = match hooks(&configured) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let url = state.public_url(&uri, &headers);
    let req = WebhookRequest {
        url: &url,
        headers: &headers,
        body: &body,
    };
    let step = match hooks.verifier.verify_twiml_request(req) {
        Ok(s) => s,
        Err(e) => return rejected(&state, PROVIDER, e.into()),
    };
    let (call, flow) = match flow_call(&state, &call_id).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let sid = callcat_twilio::FormFields::parse(&body)
        .ok()
        .and_then(|f| f.get("CallSid").map(str::to_owned))
        .or_else(|| call.provider_call_id.clone())
        .unwrap_or_default();
    let said = if step == 0 {
        vec![flow.greeting_segment()]
    } else if step + 1 == flow.steps() {
        vec![flow.closing_segment()]
    } else {
        Vec::new()
    };
    if let Err(e) = append(&state, &call, &sid, &said).await {
        tracing::warn!(error = %e, "could not record the flow's words in the transcript");
    }
    match flow.render_step(&hooks.urls, call.id, step) {
        Ok(doc) => {
            state.observe_webhook(PROVIDER, "accepted");
            xml(doc)
        }
        Err(e) => rejected(&state, PROVIDER, e),
    }
}

/// A spoken answer to a prompt of the flow; answers with the next step's TwiML.
#[utoipa::path(
    post, path = "/webhooks/twilio/gather/{callId}", tag = "webhooks",
    params(
        ("callId" = String, Path, description = "Our call id"),
        ("step" = usize, Query, description = "The prompt answered"),
    ),
    responses(
        (status = 200, description = "TwiML of the next step", content_type = "text/xml"),
        (status = 401, description = "Bad or missing signature; nothing stored", body = ErrorBody),
        (status = 404, description = "Unknown call, or Twilio is not configured", body = ErrorBody),
    )
)]
async fn gather(
    State(state): State<ApiState>,
    Extension(configured): Extension<Configured>,
    Path(call_id): Path<String>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refused(&state, PROVIDER) {
        return r;
    }
    let hooks = match hooks(&configured) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    // Verify before reading anything the request names.
    let url = state.public_url(&uri, &headers);
    let req = WebhookRequest {
        url: &url,
        headers: &headers,
        body: &body,
    };
    if let Err(e) = hooks.verifier.verify(req) {
        return rejected(&state, PROVIDER, e.into());
    }
    let (call, flow) = match flow_call(&state, &call_id).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let turn = match hooks.verifier.verify_gather(&flow, req) {
        Ok(t) => t,
        Err(e) => return rejected(&state, PROVIDER, e.into()),
    };
    let mut said = turn.segments();
    if turn.next_step() + 1 == flow.steps() {
        said.push(flow.closing_segment());
    }
    if let Err(e) = append(&state, &call, &turn.call_sid, &said).await {
        state.observe_webhook(PROVIDER, "error");
        tracing::error!(error = %e, "gather answer could not be stored");
        return ApiError::from(callcat_core::Error::unavailable(
            "the answer could not be stored; send it again",
        ))
        .into_response();
    }
    match flow.render_step(&hooks.urls, call.id, turn.next_step()) {
        Ok(doc) => {
            state.observe_webhook(PROVIDER, "accepted");
            xml(doc)
        }
        Err(e) => rejected(&state, PROVIDER, e),
    }
}
