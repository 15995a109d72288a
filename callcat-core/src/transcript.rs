//! [`Transcript`]: the ordered segments of one call's conversation.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CallId, Owner};

/// Default transcript lifetime (seed 000: 90 days).
pub const DEFAULT_TRANSCRIPT_TTL: TimeDelta = TimeDelta::days(90);

/// Who spoke.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeakerRole {
    /// The AI agent.
    Agent,
    /// The person called.
    User,
    /// Tool calls, system notes and the like.
    System,
}

impl SpeakerRole {
    /// `agent`, `user` or `system`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SpeakerRole::Agent => "agent",
            SpeakerRole::User => "user",
            SpeakerRole::System => "system",
        }
    }
}

/// One utterance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TranscriptSegment {
    /// Who spoke.
    pub role: SpeakerRole,
    /// What was said.
    pub text: String,
    /// Offset from the start of the call, in milliseconds.
    pub start_ms: Option<u64>,
    /// Offset of the end, in milliseconds.
    pub end_ms: Option<u64>,
}

impl TranscriptSegment {
    /// A segment without timings.
    pub fn new(role: SpeakerRole, text: impl Into<String>) -> Self {
        TranscriptSegment {
            role,
            text: text.into(),
            start_ms: None,
            end_ms: None,
        }
    }
}

/// A call's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// Our call id.
    pub call_id: CallId,
    /// Whose call.
    pub owner: Owner,
    /// The provider's call id, for look-ups by provider id (seed 000's live endpoint).
    pub provider_call_id: Option<String>,
    /// The conversation, in order.
    pub segments: Vec<TranscriptSegment>,
    /// Free text set directly (seed 001's `PUT transcriptText`); when `None` the
    /// text is rendered from the segments.
    pub text: Option<String>,
    /// Last written at.
    pub updated_at: DateTime<Utc>,
    /// Deleted (or hidden) after this instant.
    pub expires_at: DateTime<Utc>,
}

impl Transcript {
    /// An empty transcript that expires after the default TTL.
    pub fn new(call_id: CallId, owner: Owner, now: DateTime<Utc>) -> Self {
        Transcript {
            call_id,
            owner,
            provider_call_id: None,
            segments: Vec::new(),
            text: None,
            updated_at: now,
            expires_at: now + DEFAULT_TRANSCRIPT_TTL,
        }
    }

    /// The transcript as text: the free text if set, else `role: text` lines.
    pub fn render_text(&self) -> String {
        if let Some(t) = &self.text {
            return t.clone();
        }
        self.segments
            .iter()
            .map(|s| format!("{}: {}", s.role.as_str(), s.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}
