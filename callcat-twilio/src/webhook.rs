//! Verifying Twilio's requests and parsing status callbacks into
//! [`ProviderEvent`]s: [`TwilioWebhookVerifier`].

use std::fmt;

use callcat_core::{
    CallAnalysis, CallId, Error, ErrorKind, ProviderCall, ProviderCallState, ProviderEvent,
    ProviderEventKind, Result, WebhookRequest, WebhookVerifier,
};
use chrono::{DateTime, TimeDelta, Utc};

use crate::SOURCE;
use crate::config::CALL_ID_PARAM;
use crate::signature::{
    SIGNATURE_HEADER, SignatureError, has_body_sha256, query_param, validate_body_signature,
    validate_form_signature,
};
use crate::wire::{AnsweredBy, TwilioCallStatus, clamp_duration_s, parse_time};

/// What can be wrong with a request from Twilio.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TwilioWebhookError {
    /// The signature is missing or wrong (→ [`ErrorKind::Unauthorized`]).
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The body is not a well-formed form or JSON (→ [`ErrorKind::Validation`]).
    #[error("malformed body: {0}")]
    Malformed(String),
    /// A required field is missing or invalid (→ [`ErrorKind::Validation`]).
    #[error("field {field}: {message}")]
    Field {
        /// The Twilio parameter name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl TwilioWebhookError {
    pub(crate) fn missing(field: &'static str) -> Self {
        TwilioWebhookError::Field {
            field,
            message: "missing".into(),
        }
    }
}

impl From<TwilioWebhookError> for Error {
    fn from(e: TwilioWebhookError) -> Error {
        let err = match &e {
            TwilioWebhookError::Signature(_) => Error::new(ErrorKind::Unauthorized, e.to_string()),
            TwilioWebhookError::Malformed(_) => Error::new(ErrorKind::Validation, e.to_string()),
            TwilioWebhookError::Field { field, .. } => Error::validation(*field, e.to_string()),
        };
        err.with_source_name(SOURCE).with_source(e)
    }
}

/// A verified form body: its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// Parses an `application/x-www-form-urlencoded` body (must be UTF-8).
    pub fn parse(body: &[u8]) -> Result<Self, TwilioWebhookError> {
        if std::str::from_utf8(body).is_err() {
            return Err(TwilioWebhookError::Malformed("body is not UTF-8".into()));
        }
        Ok(FormFields(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name`, or a missing-field error.
    pub fn require(&self, name: &'static str) -> Result<&str, TwilioWebhookError> {
        self.get(name).ok_or(TwilioWebhookError::missing(name))
    }

    /// All fields, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Verifies `X-Twilio-Signature` on requests from Twilio and parses status
/// callbacks (call progress, async AMD, recordings) into [`ProviderEvent`]s.
///
/// The signed URL is the configured public base URL joined with the request's
/// path and query: pass [`WebhookRequest::url`] as the origin-form target the
/// server saw (`/webhooks/twilio/status?callcat_call_id=...`), or as an absolute
/// URL, which is then used as is.
#[derive(Clone)]
pub struct TwilioWebhookVerifier {
    auth_token: String,
    public_base_url: String,
}

impl fmt::Debug for TwilioWebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioWebhookVerifier")
            .field("auth_token", &"<redacted>")
            .field("public_base_url", &self.public_base_url)
            .finish()
    }
}

impl TwilioWebhookVerifier {
    /// A verifier keyed by the account's auth token, for requests to URLs under
    /// `public_base_url`.
    pub fn new(auth_token: impl Into<String>, public_base_url: impl Into<String>) -> Self {
        TwilioWebhookVerifier {
            auth_token: auth_token.into(),
            public_base_url: public_base_url.into().trim_end_matches('/').to_string(),
        }
    }

    /// The full URL Twilio signed for a request target.
    pub fn signed_url(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            target.to_string()
        } else if target.starts_with('/') {
            format!("{}{target}", self.public_base_url)
        } else {
            format!("{}/{target}", self.public_base_url)
        }
    }

    /// Verifies a form-encoded request (or, when the URL has `bodySHA256`, a JSON
    /// one) and returns its form fields (empty for JSON bodies).
    pub fn verify(&self, req: WebhookRequest<'_>) -> Result<FormFields, TwilioWebhookError> {
        let signature = req
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(SignatureError::Missing)?;
        let url = self.signed_url(req.url);
        if has_body_sha256(&url) {
            validate_body_signature(&self.auth_token, signature, &url, req.body)?;
            return Ok(FormFields(Vec::new()));
        }
        let form = FormFields::parse(req.body)?;
        validate_form_signature(&self.auth_token, signature, &url, form.pairs())?;
        Ok(form)
    }

    /// Verifies and parses a status callback into one event (the
    /// [`WebhookVerifier`] trait method, with a typed error).
    pub fn verify_status_callback(
        &self,
        req: WebhookRequest<'_>,
    ) -> Result<ProviderEvent, TwilioWebhookError> {
        let form = self.verify(req)?;
        parse_status_callback(req.url, &form)
    }
}

impl TwilioWebhookVerifier {
    /// Verifies and parses a gather callback of `flow`.
    pub fn verify_gather(
        &self,
        flow: &crate::flow::ConversationFlow,
        req: WebhookRequest<'_>,
    ) -> Result<crate::flow::GatherTurn, TwilioWebhookError> {
        let form = self.verify(req)?;
        flow.parse_gather(req.url, &form)
    }

    /// Verifies and parses a real-time transcription callback.
    pub fn verify_transcription(
        &self,
        req: WebhookRequest<'_>,
    ) -> Result<crate::transcription::TranscriptionEvent, TwilioWebhookError> {
        let form = self.verify(req)?;
        crate::transcription::parse_transcription_callback(req.url, &form)
    }

    /// Verifies a TwiML fetch and returns the requested flow step.
    pub fn verify_twiml_request(
        &self,
        req: WebhookRequest<'_>,
    ) -> Result<usize, TwilioWebhookError> {
        self.verify(req)?;
        crate::flow::step_from_url(req.url)
    }
}

impl WebhookVerifier for TwilioWebhookVerifier {
    /// Twilio signatures carry no timestamp, so `now` is not used.
    fn verify_and_parse(
        &self,
        req: WebhookRequest<'_>,
        _now: DateTime<Utc>,
    ) -> Result<Vec<ProviderEvent>> {
        Ok(vec![self.verify_status_callback(req)?])
    }
}

/// Our call id from the `callcat_call_id` query parameter, if present and valid.
pub(crate) fn call_id_from_url(url: &str) -> Result<Option<CallId>, TwilioWebhookError> {
    match query_param(url, CALL_ID_PARAM) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| TwilioWebhookError::Field {
            field: CALL_ID_PARAM,
            message: "not a callcat call id".into(),
        }),
    }
}

/// Parses a verified status callback form: call progress (`CallStatus`), an
/// async AMD result (`AnsweredBy` without `CallStatus`), or a recording callback
/// (`RecordingStatus`).
pub fn parse_status_callback(
    url: &str,
    form: &FormFields,
) -> Result<ProviderEvent, TwilioWebhookError> {
    let sid = form.require("CallSid")?;
    let call_id = call_id_from_url(url)?;
    let occurred_at = match form.get("Timestamp") {
        None => None,
        Some(t) => Some(parse_time(t).ok_or(TwilioWebhookError::Field {
            field: "Timestamp",
            message: "not an RFC 2822 time".into(),
        })?),
    };
    let sequence = match form.get("SequenceNumber") {
        None => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| TwilioWebhookError::Field {
            field: "SequenceNumber",
            message: "not a number".into(),
        })?),
    };
    let answered_by = form.get("AnsweredBy").map(AnsweredBy::parse);
    let recording_url = form.get("RecordingUrl").map(str::to_string);

    let (kind, mut call) = if let Some(status) = form.get("CallStatus") {
        let status = TwilioCallStatus::parse(status);
        let mut call = ProviderCall::new(sid, status.state());
        call.outcome = status.outcome(answered_by.as_ref());
        if status.is_final() {
            call.disconnection_reason = Some(match form.get("SipResponseCode") {
                Some(code) => format!("{} (SIP {code})", status.as_str()),
                None => status.as_str().to_string(),
            });
        }
        let duration_s = match form.get("CallDuration") {
            None => None,
            Some(d) => Some(d.parse::<u64>().map_err(|_| TwilioWebhookError::Field {
                field: "CallDuration",
                message: "not a whole number of seconds".into(),
            })?),
        };
        // Signed by Twilio, but never trusted to be sane: clamped to 31 days.
        let duration_s = duration_s.map(clamp_duration_s);
        call.duration_ms = duration_s.map(|s| s.saturating_mul(1000));
        match status {
            TwilioCallStatus::InProgress => call.started_at = occurred_at,
            TwilioCallStatus::Completed => {
                call.ended_at = occurred_at;
                if let (Some(end), Some(d)) = (occurred_at, duration_s) {
                    call.started_at = i64::try_from(d)
                        .ok()
                        .and_then(TimeDelta::try_seconds)
                        .and_then(|d| end.checked_sub_signed(d));
                }
            }
            ref s if s.is_final() => call.ended_at = occurred_at,
            _ => {}
        }
        (status.event_kind(), call)
    } else if let Some(by) = &answered_by {
        // Async AMD result: the call is connected; a machine is noted as
        // voicemail in the analysis (the final outcome comes with `completed`).
        let mut call = ProviderCall::new(sid, ProviderCallState::InProgress);
        if by.is_machine() {
            call.analysis = Some(CallAnalysis {
                in_voicemail: Some(true),
                ..CallAnalysis::default()
            });
        }
        (
            ProviderEventKind::Other(format!("amd:{}", by.as_str())),
            call,
        )
    } else if let Some(rec) = form.get("RecordingStatus") {
        let call = ProviderCall::new(sid, ProviderCallState::Unknown("recording".into()));
        (ProviderEventKind::Other(format!("recording:{rec}")), call)
    } else {
        return Err(TwilioWebhookError::missing("CallStatus"));
    };
    call.call_id = call_id;
    call.recording_url = recording_url;
    Ok(ProviderEvent {
        provider: SOURCE.to_string(),
        kind,
        call,
        sequence,
        occurred_at,
    })
}
