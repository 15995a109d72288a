//! The [`Call`] record and the values it is made of.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::{CallId, Owner, WorkerId};
use crate::phone::PhoneNumber;
use crate::retry::RetryPolicy;
use crate::window::RecurringWindow;

/// What phase a call is in. See the lifecycle table in [`crate::lifecycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallStatus {
    /// Waiting for its time.
    Scheduled,
    /// Claimed by a worker that is placing it.
    Dispatching,
    /// The provider accepted the dial; the phone rings.
    Ringing,
    /// Answered; the conversation is going on.
    InProgress,
    /// An attempt ended without success; another is planned at `next_action_at`.
    RetryPending,
    /// A hang-up was requested from the provider.
    Canceling,
    /// Finished normally.
    Completed,
    /// Finished without success (attempts used up, permanent error, stale).
    Failed,
    /// Canceled by its owner.
    Canceled,
    /// Could not be placed before `not_after`.
    Expired,
}

impl CallStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CallStatus; 10] = [
        CallStatus::Scheduled,
        CallStatus::Dispatching,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::RetryPending,
        CallStatus::Canceling,
        CallStatus::Completed,
        CallStatus::Failed,
        CallStatus::Canceled,
        CallStatus::Expired,
    ];

    /// The API spelling: `SCHEDULED`, `IN_PROGRESS`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Scheduled => "SCHEDULED",
            CallStatus::Dispatching => "DISPATCHING",
            CallStatus::Ringing => "RINGING",
            CallStatus::InProgress => "IN_PROGRESS",
            CallStatus::RetryPending => "RETRY_PENDING",
            CallStatus::Canceling => "CANCELING",
            CallStatus::Completed => "COMPLETED",
            CallStatus::Failed => "FAILED",
            CallStatus::Canceled => "CANCELED",
            CallStatus::Expired => "EXPIRED",
        }
    }

    /// No further change of status can happen (analysis may still arrive).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallStatus::Completed | CallStatus::Failed | CallStatus::Canceled | CallStatus::Expired
        )
    }

    /// A scheduler may claim a call in this status once `next_action_at` has come
    /// (for `Dispatching`, once its lease has expired).
    pub fn is_claimable(self) -> bool {
        matches!(
            self,
            CallStatus::Scheduled | CallStatus::RetryPending | CallStatus::Dispatching
        )
    }

    /// Being dialed or on the line: counts against concurrency caps and live views.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            CallStatus::Dispatching
                | CallStatus::Ringing
                | CallStatus::InProgress
                | CallStatus::Canceling
        )
    }

    /// Listed in the "upcoming" view (soonest first); the rest are "finished".
    pub fn is_upcoming(self) -> bool {
        !self.is_terminal()
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        CallStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::validation("status", format!("unknown call status {s:?}")))
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallOutcome {
    /// The callee answered and the call ended normally.
    Answered,
    /// Nobody picked up.
    NoAnswer,
    /// The line was busy.
    Busy,
    /// An answering machine or voicemail took the call.
    Voicemail,
    /// The dial itself failed (invalid route, carrier error, provider refused).
    DialError,
    /// The call broke off with an error after connecting.
    Error,
    /// Canceled by its owner while in flight.
    Canceled,
    /// No terminal event arrived for too long and the provider did not know better.
    Stale,
}

impl CallOutcome {
    /// The API spelling (`answered`, `no_answer`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Busy => "busy",
            CallOutcome::Voicemail => "voicemail",
            CallOutcome::DialError => "dial_error",
            CallOutcome::Error => "error",
            CallOutcome::Canceled => "canceled",
            CallOutcome::Stale => "stale",
        }
    }
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The provider's post-call analysis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallAnalysis {
    /// A summary of the conversation.
    pub summary: Option<String>,
    /// The callee's sentiment (`Positive`, `Negative`, `Neutral`, ...).
    pub sentiment: Option<String>,
    /// Whether the call achieved its goal.
    pub successful: Option<bool>,
    /// Whether the call reached voicemail.
    pub in_voicemail: Option<bool>,
    /// Things to do after the call.
    #[serde(default)]
    pub action_items: Vec<String>,
    /// Provider-specific extracted data.
    #[serde(default)]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// What a call cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallCost {
    /// The total, in `currency` units (e.g. US dollars).
    pub total: f64,
    /// ISO currency code.
    pub currency: String,
    /// Itemised parts (product name → amount), when the provider gives them.
    #[serde(default)]
    pub items: BTreeMap<String, f64>,
}

/// A worker's claim on a call while it dials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it.
    pub worker: WorkerId,
    /// When it lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// The record of one finished or running attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub number: u32,
    /// When the dial request was sent.
    pub dialed_at: Option<DateTime<Utc>>,
    /// The provider's id for this attempt's call.
    pub provider_call_id: Option<String>,
    /// When the callee answered.
    pub started_at: Option<DateTime<Utc>>,
    /// When the attempt ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub outcome: Option<CallOutcome>,
    /// The provider's disconnection reason, verbatim.
    pub disconnection_reason: Option<String>,
    /// The error, if the attempt failed with one.
    pub error: Option<String>,
}

/// A scheduled, running or finished phone call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Our id (UUIDv7).
    pub id: CallId,
    /// Who it belongs to.
    pub owner: Owner,
    /// Who is called.
    pub callee_name: String,
    /// The number called.
    pub phone_number: PhoneNumber,
    /// The number shown to the callee, when not the provider's default.
    pub caller_number: Option<PhoneNumber>,
    /// A short description.
    pub subject: String,
    /// Instructions for the AI agent (the prompt).
    pub instructions: String,
    /// Language the agent speaks (BCP 47, e.g. `en-US`).
    pub language: Option<String>,
    /// Voice id at the provider.
    pub voice: Option<String>,
    /// Agent id override at the provider.
    pub agent_id: Option<String>,
    /// Dynamic variables handed to the agent.
    pub variables: BTreeMap<String, String>,
    /// Free metadata, returned as given.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The client's idempotency key, unique per owner.
    pub idempotency_key: Option<String>,
    /// When to dial.
    pub scheduled_for: DateTime<Utc>,
    /// Give up (Expired) if it cannot be placed by then.
    pub not_after: Option<DateTime<Utc>>,
    /// Only dial inside this window (quiet hours); outside it the call is deferred.
    pub dial_window: Option<RecurringWindow>,
    /// The call that led to this one (follow-up workflows).
    pub parent_call_id: Option<CallId>,
    /// Current phase.
    pub status: CallStatus,
    /// How the latest attempt ended.
    pub outcome: Option<CallOutcome>,
    /// Attempts made so far (dial requests sent).
    pub attempts: u32,
    /// When and whether to try again.
    pub retry_policy: RetryPolicy,
    /// When the scheduler must act next (due time, retry time, or lease expiry).
    pub next_action_at: Option<DateTime<Utc>>,
    /// The worker's claim while dispatching.
    pub lease: Option<Lease>,
    /// When the current attempt's dial request was about to be sent. Set before
    /// the provider is called, so a crash after it is never dialed blindly again;
    /// kept only while the dial may be in flight (Dispatching, Canceling).
    pub dial_started_at: Option<DateTime<Utc>>,
    /// The provider that placed the current attempt.
    pub provider: Option<String>,
    /// The provider's id for the current attempt.
    pub provider_call_id: Option<String>,
    /// When the callee answered (current attempt).
    pub started_at: Option<DateTime<Utc>>,
    /// When the provider says the current attempt ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// When the call reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Talk time of the current attempt, in milliseconds.
    pub duration_ms: Option<u64>,
    /// The provider's disconnection reason, verbatim.
    pub disconnection_reason: Option<String>,
    /// Post-call analysis.
    pub analysis: Option<CallAnalysis>,
    /// Where the recording is.
    pub recording_url: Option<String>,
    /// What it cost.
    pub cost: Option<CallCost>,
    /// The last error or reason for failing, in words.
    pub last_error: Option<String>,
    /// Every attempt so far, oldest first.
    pub history: Vec<AttemptRecord>,
    /// Optimistic-concurrency version; every stored write increments it.
    pub version: u64,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last written at.
    pub updated_at: DateTime<Utc>,
}

impl Call {
    /// The sort key of the "finished" view: when it finished (latest first).
    pub fn finished_sort_key(&self) -> DateTime<Utc> {
        self.finished_at
            .or(self.ended_at)
            .unwrap_or(self.updated_at)
    }

    /// When the current attempt's dial request was sent.
    pub fn dialed_at(&self) -> Option<DateTime<Utc>> {
        self.history
            .iter()
            .rev()
            .find(|a| a.number == self.attempts)
            .and_then(|a| a.dialed_at)
            .or(self.dial_started_at)
    }

    /// The attempt record for the current attempt, creating it if needed.
    pub fn current_attempt_mut(&mut self) -> &mut AttemptRecord {
        let n = self.attempts.max(1);
        if self.history.last().map(|a| a.number) != Some(n) {
            self.history.push(AttemptRecord {
                number: n,
                ..AttemptRecord::default()
            });
        }
        let last = self.history.len() - 1;
        &mut self.history[last]
    }
}
