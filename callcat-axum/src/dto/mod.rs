//! The JSON shapes of the HTTP API (camelCase, times as epoch milliseconds) and
//! their conversions to and from core types.

mod create;
pub mod dial_window;
pub mod retry;

use std::collections::BTreeMap;

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{
    AttemptRecord, Call, CallEdit, PhoneNumber, SpeakerRole, Transcript, TranscriptSegment,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use self::create::{CLASSIFY_THEN_CALL, CallFields, CallPlan, CreateCallRequest, Workflow};
pub use self::dial_window::{DialWindowDto, DialWindowFields};
pub use self::retry::{RetryOnDto, RetryOnFields};
use crate::error::ApiError;

/// Epoch milliseconds.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Epoch milliseconds to a time, naming `field` when out of range.
pub fn from_ms(field: &str, v: i64) -> Result<DateTime<Utc>, ApiError> {
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| ApiError::validation(field, "not a valid time in epoch milliseconds"))
}

/// Parses a phone number, naming `field` when invalid.
pub fn phone(field: &str, v: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(v).map_err(|e| ApiError::validation(field, e.to_string()))
}

/// `PUT /api/calls/{callId}`: absent fields are left as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EditCallRequest {
    /// New callee name.
    pub callee_name: Option<String>,
    /// New number.
    pub phone_number: Option<String>,
    /// New caller number (E.164; one allowed for the tenant).
    pub caller_number: Option<String>,
    /// New subject.
    pub subject: Option<String>,
    /// New prompt.
    pub prompt: Option<String>,
    /// New time (epoch ms).
    pub scheduled_at: Option<i64>,
    /// New language.
    pub ai_language: Option<String>,
    /// New voice.
    pub voice_id: Option<String>,
    /// New variables (replace all).
    pub variables: Option<BTreeMap<String, String>>,
    /// New metadata (replaces all).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// New attempt limit.
    pub max_attempts: Option<u32>,
    /// New expiry (epoch ms).
    pub not_after: Option<i64>,
}

impl EditCallRequest {
    /// The core edit.
    pub fn into_edit(self) -> Result<CallEdit, ApiError> {
        Ok(CallEdit {
            callee_name: self.callee_name,
            phone_number: self
                .phone_number
                .map(|n| phone("phoneNumber", &n))
                .transpose()?,
            caller_number: self
                .caller_number
                .map(|n| phone("callerNumber", &n))
                .transpose()?,
            subject: self.subject,
            instructions: self.prompt,
            scheduled_for: self
                .scheduled_at
                .map(|v| from_ms("scheduledAt", v))
                .transpose()?,
            language: self.ai_language,
            voice: self.voice_id,
            variables: self.variables,
            metadata: self.metadata,
            max_attempts: self.max_attempts,
            not_after: self.not_after.map(|v| from_ms("notAfter", v)).transpose()?,
        })
    }
}

/// The provider's post-call analysis.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisDto {
    /// Summary.
    pub summary: Option<String>,
    /// Sentiment.
    pub sentiment: Option<String>,
    /// Whether the call achieved its goal.
    pub successful: Option<bool>,
    /// Whether it reached voicemail.
    pub in_voicemail: Option<bool>,
    /// Things to do.
    pub action_items: Vec<String>,
}

/// What a call cost.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostDto {
    /// Total.
    pub total: f64,
    /// ISO currency.
    pub currency: String,
}

/// One dial attempt of a call.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptDto {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the dial request was sent (epoch ms).
    pub dialed_at: Option<i64>,
    /// The provider's id for this attempt.
    pub provider_call_id: Option<String>,
    /// When the callee answered (epoch ms).
    pub started_at: Option<i64>,
    /// When the attempt ended (epoch ms).
    pub ended_at: Option<i64>,
    /// How it ended (`answered`, `busy`, ...).
    pub outcome: Option<String>,
    /// The provider's disconnection reason, verbatim.
    pub disconnection_reason: Option<String>,
    /// The error, if the attempt failed with one.
    pub error: Option<String>,
}

impl From<&AttemptRecord> for AttemptDto {
    fn from(a: &AttemptRecord) -> Self {
        AttemptDto {
            attempt: a.number,
            dialed_at: a.dialed_at.map(ms),
            provider_call_id: a.provider_call_id.clone(),
            started_at: a.started_at.map(ms),
            ended_at: a.ended_at.map(ms),
            outcome: a.outcome.map(|o| o.as_str().to_owned()),
            disconnection_reason: a.disconnection_reason.clone(),
            error: a.error.clone(),
        }
    }
}

/// A call as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallDto {
    /// The call's id.
    pub call_id: String,
    /// Who is called.
    pub callee_name: String,
    /// The number (in full: the owner sees it).
    pub phone_number: String,
    /// The number shown to the callee.
    pub caller_number: Option<String>,
    /// Subject.
    pub subject: String,
    /// Prompt.
    pub prompt: String,
    /// Language.
    pub ai_language: Option<String>,
    /// Voice.
    pub voice_id: Option<String>,
    /// SCHEDULED, DISPATCHING, RINGING, IN_PROGRESS, RETRY_PENDING, CANCELING,
    /// COMPLETED, FAILED, CANCELED or EXPIRED.
    pub status: String,
    /// How the latest attempt ended (`answered`, `no_answer`, ...).
    pub outcome: Option<String>,
    /// Dial attempts so far.
    pub attempts: u32,
    /// Most attempts.
    pub max_attempts: u32,
    /// Which outcomes are retried.
    pub retry_on: RetryOnDto,
    /// Seconds before each retry (the last repeats); empty: exponential backoff.
    pub retry_delays: Vec<u64>,
    /// The weekly window it may be dialed in; `null`: any time.
    pub dial_window: Option<DialWindowDto>,
    /// The call that led to this one (a workflow's follow-up); `null` otherwise.
    pub parent_call_id: Option<String>,
    /// The workflow step this call is (`metadata.workflow`, e.g. `classify`);
    /// `null` otherwise.
    pub workflow: Option<String>,
    /// Every attempt so far, oldest first.
    pub attempt_history: Vec<AttemptDto>,
    /// When to dial (epoch ms).
    pub scheduled_at: i64,
    /// Expiry (epoch ms).
    pub not_after: Option<i64>,
    /// When the scheduler acts next (epoch ms).
    pub next_action_at: Option<i64>,
    /// When the current attempt was dialed (epoch ms).
    pub dialed_at: Option<i64>,
    /// When the callee answered (epoch ms).
    pub started_at: Option<i64>,
    /// When the call finished (epoch ms).
    pub completed_at: Option<i64>,
    /// Talk time in ms.
    pub duration_ms: Option<u64>,
    /// The provider's call id.
    pub provider_call_id: Option<String>,
    /// Post-call analysis.
    pub analysis: Option<AnalysisDto>,
    /// Recording URL.
    pub recording_url: Option<String>,
    /// Cost.
    pub cost: Option<CostDto>,
    /// The last error or reason for failing.
    pub last_error: Option<String>,
    /// Dynamic variables.
    pub variables: BTreeMap<String, String>,
    /// Metadata as given.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Created (epoch ms).
    pub created_at: i64,
    /// Last changed (epoch ms).
    pub updated_at: i64,
}

impl From<&Call> for CallDto {
    fn from(c: &Call) -> Self {
        let dialed_at = c.dialed_at();
        CallDto {
            call_id: c.id.to_string(),
            callee_name: c.callee_name.clone(),
            phone_number: c.phone_number.as_str().to_owned(),
            caller_number: c.caller_number.as_ref().map(|n| n.as_str().to_owned()),
            subject: c.subject.clone(),
            prompt: c.instructions.clone(),
            ai_language: c.language.clone(),
            voice_id: c.voice.clone(),
            status: c.status.as_str().to_owned(),
            outcome: c.outcome.map(|o| o.as_str().to_owned()),
            attempts: c.attempts,
            max_attempts: c.retry_policy.max_attempts,
            retry_on: RetryOnDto::from(&c.retry_policy),
            retry_delays: retry::delays_as_secs(&c.retry_policy),
            dial_window: c.dial_window.as_ref().map(DialWindowDto::from),
            parent_call_id: c.parent_call_id.map(|p| p.to_string()),
            workflow: c
                .metadata
                .get("workflow")
                .and_then(|w| w.as_str())
                .map(str::to_owned),
            attempt_history: c.history.iter().map(AttemptDto::from).collect(),
            scheduled_at: ms(c.scheduled_for),
            not_after: c.not_after.map(ms),
            next_action_at: c.next_action_at.map(ms),
            dialed_at: dialed_at.map(ms),
            started_at: c.started_at.map(ms),
            completed_at: c.finished_at.map(ms),
            duration_ms: c.duration_ms,
            provider_call_id: c.provider_call_id.clone(),
            analysis: c.analysis.as_ref().map(|a| AnalysisDto {
                summary: a.summary.clone(),
                sentiment: a.sentiment.clone(),
                successful: a.successful,
                in_voicemail: a.in_voicemail,
                action_items: a.action_items.clone(),
            }),
            recording_url: c.recording_url.clone(),
            cost: c.cost.as_ref().map(|k| CostDto {
                total: k.total,
                currency: k.currency.clone(),
            }),
            last_error: c.last_error.clone(),
            variables: c.variables.clone(),
            metadata: c.metadata.clone(),
            created_at: ms(c.created_at),
            updated_at: ms(c.updated_at),
        }
    }
}

/// A page of calls.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallListDto {
    /// The calls.
    pub calls: Vec<CallDto>,
    /// Pass back as `nextToken` for the next page; `null` at the end.
    pub next_token: Option<String>,
}

/// One transcript segment.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentDto {
    /// `agent`, `user` or `system`.
    pub role: String,
    /// What was said.
    pub text: String,
    /// Offset from the start of the call, ms.
    pub start_ms: Option<u64>,
    /// End offset, ms.
    pub end_ms: Option<u64>,
}

/// A call's transcript.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptDto {
    /// Our call id.
    pub call_id: String,
    /// The provider's call id.
    pub provider_call_id: Option<String>,
    /// The whole text (`role: text` lines unless set explicitly).
    pub transcript_text: String,
    /// The segments.
    pub segments: Vec<SegmentDto>,
}

impl TranscriptDto {
    /// From a stored transcript.
    pub fn of(t: &Transcript) -> Self {
        TranscriptDto {
            call_id: t.call_id.to_string(),
            provider_call_id: t.provider_call_id.clone(),
            transcript_text: t.render_text(),
            segments: t
                .segments
                .iter()
                .map(|s| SegmentDto {
                    role: s.role.as_str().to_owned(),
                    text: s.text.clone(),
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                })
                .collect(),
        }
    }

    /// An empty transcript of a call that has none yet.
    pub fn empty(c: &Call) -> Self {
        TranscriptDto {
            call_id: c.id.to_string(),
            provider_call_id: c.provider_call_id.clone(),
            transcript_text: String::new(),
            segments: Vec::new(),
        }
    }
}

/// `PUT /api/calls/{callId}/transcript`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutTranscriptRequest {
    /// The whole text.
    pub transcript_text: String,
}

/// Most segments in one `POST /api/calls/{callId}/transcript/segments`.
pub const MAX_APPENDED_SEGMENTS: usize = 500;

/// One segment to append.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewSegmentDto {
    /// `agent`, `user` or `system`.
    pub role: String,
    /// What was said (at most 16 KiB).
    pub text: String,
    /// Offset from the start of the call, ms.
    pub start_ms: Option<u64>,
    /// End offset, ms.
    pub end_ms: Option<u64>,
}

/// `POST /api/calls/{callId}/transcript/segments`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppendSegmentsRequest {
    /// Segments to add, in order (1 to 500). A segment already in the
    /// transcript (same role, text and offsets) is not added twice.
    pub segments: Vec<NewSegmentDto>,
}

impl AppendSegmentsRequest {
    /// The core segments, checked.
    pub fn into_segments(self) -> Result<Vec<TranscriptSegment>, ApiError> {
        if self.segments.is_empty() || self.segments.len() > MAX_APPENDED_SEGMENTS {
            return Err(ApiError::validation(
                "segments",
                format!("between 1 and {MAX_APPENDED_SEGMENTS} segments"),
            ));
        }
        self.segments
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let role = match s.role.as_str() {
                    "agent" => SpeakerRole::Agent,
                    "user" => SpeakerRole::User,
                    "system" => SpeakerRole::System,
                    _ => {
                        return Err(ApiError::validation(
                            format!("segments[{i}].role"),
                            "role is agent, user or system",
                        ));
                    }
                };
                if s.start_ms.zip(s.end_ms).is_some_and(|(a, b)| b < a) {
                    return Err(ApiError::validation(
                        format!("segments[{i}].endMs"),
                        "endMs must not be before startMs",
                    ));
                }
                Ok(TranscriptSegment {
                    role,
                    text: s.text,
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                })
            })
            .collect()
    }
}

/// `POST /api/calls/{callId}/requeue` (the body may be absent).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequeueRequest {
    /// When to dial (epoch ms); absent or past means now.
    pub scheduled_at: Option<i64>,
    /// Give up if it cannot be placed by then (epoch ms); absent: no limit.
    pub not_after: Option<i64>,
}

/// `{count}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CountDto {
    /// How many.
    pub count: usize,
}

/// `GET /healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthDto {
    /// `ok`.
    pub status: String,
}
