//! Real-time transcription callbacks (`<Start><Transcription statusCallbackUrl>`):
//! `transcription-content` events become [`TranscriptionUpdate`]s; final ones
//! are stored, partial ones only published live.

use callcat_core::{CallId, SpeakerRole, TranscriptSegment};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::webhook::{FormFields, TwilioWebhookError, call_id_from_url};
use crate::wire::parse_time;

/// Whether a transcription result is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptStage {
    /// `Final=true`: store it (append to the transcript) and publish it.
    Final,
    /// `Final=false`: an interim guess; publish it live, never store it.
    Partial,
}

/// One transcription result.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionUpdate {
    /// Twilio's call SID.
    pub call_sid: String,
    /// Our call id, from the callback URL.
    pub call_id: Option<CallId>,
    /// Twilio's `SequenceId` (orders results of one transcription).
    pub sequence: Option<u64>,
    /// Which audio: `inbound_track` (the callee: [`SpeakerRole::User`]) or
    /// `outbound_track` (what we play: [`SpeakerRole::Agent`]).
    pub track: Option<String>,
    /// Final or partial.
    pub stage: TranscriptStage,
    /// The text as a segment.
    pub segment: TranscriptSegment,
    /// Recognition confidence, when given.
    pub confidence: Option<f64>,
    /// When Twilio produced it.
    pub occurred_at: Option<DateTime<Utc>>,
}

impl TranscriptionUpdate {
    /// Final results are stored; partial ones are only published.
    pub fn should_store(&self) -> bool {
        self.stage == TranscriptStage::Final
    }
}

/// A parsed transcription callback.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TranscriptionEvent {
    /// `transcription-started`.
    Started {
        /// Twilio's call SID.
        call_sid: String,
        /// Our call id.
        call_id: Option<CallId>,
    },
    /// `transcription-content`.
    Content(TranscriptionUpdate),
    /// `transcription-stopped`.
    Stopped {
        /// Twilio's call SID.
        call_sid: String,
        /// Our call id.
        call_id: Option<CallId>,
    },
    /// `transcription-error`.
    Error {
        /// Twilio's call SID.
        call_sid: String,
        /// Our call id.
        call_id: Option<CallId>,
        /// Twilio's description.
        message: String,
    },
    /// An event this version does not know, verbatim.
    Other {
        /// Twilio's call SID.
        call_sid: String,
        /// The `TranscriptionEvent` value.
        event: String,
    },
}

#[derive(Deserialize)]
struct TranscriptionData {
    transcript: String,
    confidence: Option<f64>,
}

/// Parses a (verified) transcription callback; `url` is the request URL (it
/// carries `callcat_call_id`).
pub fn parse_transcription_callback(
    url: &str,
    form: &FormFields,
) -> Result<TranscriptionEvent, TwilioWebhookError> {
    let call_sid = form.require("CallSid")?.to_string();
    let call_id = call_id_from_url(url)?;
    let event = form.require("TranscriptionEvent")?;
    match event {
        "transcription-started" => Ok(TranscriptionEvent::Started { call_sid, call_id }),
        "transcription-stopped" => Ok(TranscriptionEvent::Stopped { call_sid, call_id }),
        "transcription-error" => Ok(TranscriptionEvent::Error {
            call_sid,
            call_id,
            message: form
                .get("TranscriptionError")
                .or(form.get("ErrorMessage"))
                .unwrap_or("transcription error")
                .to_string(),
        }),
        "transcription-content" => {
            let raw = form.require("TranscriptionData")?;
            let data: TranscriptionData =
                serde_json::from_str(raw).map_err(|e| TwilioWebhookError::Field {
                    field: "TranscriptionData",
                    message: format!("not the expected JSON: {e}"),
                })?;
            let stage = match form.get("Final") {
                Some(f) if f.eq_ignore_ascii_case("true") => TranscriptStage::Final,
                Some(f) if f.eq_ignore_ascii_case("false") => TranscriptStage::Partial,
                Some(_) => {
                    return Err(TwilioWebhookError::Field {
                        field: "Final",
                        message: "must be true or false".into(),
                    });
                }
                None => return Err(TwilioWebhookError::missing("Final")),
            };
            let sequence = match form.get("SequenceId") {
                None => None,
                Some(s) => Some(s.parse::<u64>().map_err(|_| TwilioWebhookError::Field {
                    field: "SequenceId",
                    message: "not a number".into(),
                })?),
            };
            let track = form.get("Track").map(str::to_string);
            let role = match track.as_deref() {
                Some("outbound_track") => SpeakerRole::Agent,
                _ => SpeakerRole::User,
            };
            let occurred_at = form.get("Timestamp").and_then(|t| {
                DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
                    .or_else(|| parse_time(t))
            });
            Ok(TranscriptionEvent::Content(TranscriptionUpdate {
                call_sid,
                call_id,
                sequence,
                track,
                stage,
                segment: TranscriptSegment::new(role, data.transcript.trim()),
                confidence: data.confidence,
                occurred_at,
            }))
        }
        other => Ok(TranscriptionEvent::Other {
            call_sid,
            event: other.to_string(),
        }),
    }
}
