//! Twilio's callbacks as routes of callcat-axum's router (feature `axum`):
//! [`TwilioRoutes::register`] adds the status callback (callcat-axum's generic
//! webhook route with the [`TwilioWebhookVerifier`]), real-time transcription
//! and the TwiML conversation flow (TwiML fetches and speech gather callbacks)
//! at the provider's [`CallbackPaths`]. Every request is rate limited and
//! verified with `X-Twilio-Signature` over its public URL first; the routes
//! share the router's state, rate limit, error shape and OpenAPI document.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use callcat_axum::error::{ApiError, ErrorBody};
use callcat_axum::webhooks::{WebhookAck, refused, rejected};
use callcat_axum::{ApiRouter, ApiState, WEBHOOK_BODY_LIMIT};
use callcat_core::{Call, CallId, TranscriptSegment, WebhookRequest};
use tower_http::limit::RequestBodyLimitLayer;
use utoipa::openapi::HttpMethod;
use utoipa::openapi::path::Operation;
use utoipa_axum::router::OpenApiRouter;

use crate::{
    CallbackPaths, CallbackUrls, ConversationFlow, TranscriptionEvent, TwilioProvider,
    TwilioWebhookVerifier,
};

const PROVIDER: &str = "twilio";

/// Twilio's verifier and the callback URLs the flow renders.
#[derive(Debug)]
struct TwilioHooks {
    verifier: TwilioWebhookVerifier,
    urls: CallbackUrls,
}

/// Twilio's hooks when Twilio is configured (the routes answer 404 otherwise).
#[derive(Debug, Clone)]
struct Configured(Option<Arc<TwilioHooks>>);

/// Twilio's callback routes for a callcat-axum [`ApiRouter`].
///
/// ```no_run
/// # fn demo(api: callcat_axum::Api, auth: std::sync::Arc<dyn callcat_axum::Authenticator>,
/// #         twilio: &callcat_twilio::TwilioProvider) -> callcat_core::Result<axum::Router> {
/// let router = callcat_twilio::TwilioRoutes::new(twilio)
///     .register(callcat_axum::ApiRouter::new(api, auth))
///     .build()?;
/// # Ok(router)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TwilioRoutes {
    hooks: Option<Arc<TwilioHooks>>,
    paths: CallbackPaths,
}

impl TwilioRoutes {
    /// The routes of `provider`: verified with its auth token, at its
    /// callback paths, rendering TwiML with its callback URLs.
    pub fn new(provider: &TwilioProvider) -> Self {
        let urls = provider.callback_urls().clone();
        TwilioRoutes {
            paths: urls.paths().clone(),
            hooks: Some(Arc::new(TwilioHooks {
                verifier: provider.webhook_verifier(),
                urls,
            })),
        }
    }

    /// The routes at the default paths, answering 404 because Twilio is not
    /// configured, so that the API's shape does not depend on the configuration.
    pub fn unconfigured() -> Self {
        TwilioRoutes {
            hooks: None,
            paths: CallbackPaths::default(),
        }
    }

    /// Adds the status callback, transcription, TwiML and gather routes (and
    /// their OpenAPI operations) to `router`.
    pub fn register(self, router: ApiRouter) -> ApiRouter {
        let router = match &self.hooks {
            Some(h) => {
                router.webhook_at(&self.paths.status, PROVIDER, Arc::new(h.verifier.clone()))
            }
            None => router.unconfigured_webhook(&self.paths.status, PROVIDER),
        };
        let call_path = |p: &str| p.replace("{call_id}", "{callId}");
        let routes = OpenApiRouter::new();
        let routes = documented(
            routes,
            &self.paths.transcription,
            <__path_transcription as utoipa::Path>::operation(),
            post(transcription),
        );
        let routes = documented(
            routes,
            &call_path(&self.paths.twiml),
            <__path_twiml as utoipa::Path>::operation(),
            post(twiml),
        );
        let routes = documented(
            routes,
            &call_path(&self.paths.gather),
            <__path_gather as utoipa::Path>::operation(),
            post(gather),
        );
        router.merge(
            routes
                .layer(Extension(Configured(self.hooks)))
                .layer(RequestBodyLimitLayer::new(WEBHOOK_BODY_LIMIT)),
        )
    }
}

/// Routes `path` to `handler` and documents it with `op` (the handler's
/// annotated operation), so a configured path is documented where it is served.
fn documented(
    mut routes: OpenApiRouter<ApiState>,
    path: &str,
    mut op: Operation,
    handler: MethodRouter<ApiState>,
) -> OpenApiRouter<ApiState> {
    op.tags = Some(vec!["webhooks".to_owned()]);
    routes
        .get_openapi_mut()
        .paths
        .add_path_operation(path, vec![HttpMethod::Post], op);
    routes.route(path, handler)
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

/// The call a callback is about: by our id, else by Twilio's call SID. A store
/// error is an error (the callback is answered 503 and Twilio sends it again),
/// never "unknown call".
async fn call_for(
    state: &ApiState,
    call_id: Option<CallId>,
    sid: &str,
) -> callcat_core::Result<Option<Call>> {
    if let Some(id) = call_id
        && let Some(c) = state.stores().calls.get(id).await?
        && c.provider_call_id.as_deref().is_none_or(|p| p == sid)
    {
        return Ok(Some(c));
    }
    state.stores().calls.find_by_provider_call_id(sid).await
}

/// Appends what was said to the call's transcript through the engine (atomic;
/// segments Twilio sends again are not added twice).
async fn append(
    state: &ApiState,
    call: &Call,
    sid: &str,
    new: &[TranscriptSegment],
) -> callcat_core::Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let sid = Some(sid).filter(|s| !s.is_empty());
    state
        .engine()
        .transcripts()
        .append(&call.owner, call.id, sid, new)
        .await
        .map(|_| ())
}

fn unavailable(state: &ApiState, e: &callcat_core::Error) -> Response {
    state.observe_webhook(PROVIDER, "error");
    tracing::error!(error = %e, "transcription could not be stored");
    ApiError::from(callcat_core::Error::unavailable(
        "the transcription could not be stored; send it again",
    ))
    .into_response()
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
    let call = match call_for(&state, u.call_id, &u.call_sid).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            state.observe_webhook(PROVIDER, "accepted");
            return axum::Json(WebhookAck {
                results: vec!["unknown_call".into()],
            })
            .into_response();
        }
        Err(e) => return unavailable(&state, &e),
    };
    let transcripts = state.engine().transcripts();
    let result = if u.should_store() {
        // An atomic append through the engine; a segment Twilio sends again is
        // recognised and not added twice.
        match append(&state, &call, &u.call_sid, std::slice::from_ref(&u.segment)).await {
            Ok(()) => "transcript_updated",
            Err(e) => return unavailable(&state, &e),
        }
    } else {
        match transcripts
            .publish_partial(&call, Some(&u.call_sid), u.segment.clone())
            .await
        {
            Ok(()) => "partial_published",
            Err(e) => return unavailable(&state, &e),
        }
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
    let sid = crate::FormFields::parse(&body)
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
