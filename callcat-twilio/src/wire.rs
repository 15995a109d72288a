//! Twilio's wire values: call statuses, `AnsweredBy`, the Call resource JSON and
//! the error body, mapped to callcat's types.

use std::collections::BTreeMap;

use callcat_core::{CallCost, CallOutcome, ProviderCall, ProviderCallState, ProviderEventKind};
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// A Twilio call status (`CallStatus` in callbacks, `status` in the REST API).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TwilioCallStatus {
    /// `queued`
    Queued,
    /// `initiated` (callbacks only)
    Initiated,
    /// `ringing`
    Ringing,
    /// `in-progress`
    InProgress,
    /// `completed`
    Completed,
    /// `busy`
    Busy,
    /// `failed`
    Failed,
    /// `no-answer`
    NoAnswer,
    /// `canceled`
    Canceled,
    /// A status this version does not know, verbatim.
    Unknown(String),
}

impl TwilioCallStatus {
    /// Parses Twilio's spelling; unknown values are kept.
    pub fn parse(s: &str) -> Self {
        match s {
            "queued" => Self::Queued,
            "initiated" => Self::Initiated,
            "ringing" => Self::Ringing,
            "in-progress" => Self::InProgress,
            "completed" => Self::Completed,
            "busy" => Self::Busy,
            "failed" => Self::Failed,
            "no-answer" => Self::NoAnswer,
            "canceled" => Self::Canceled,
            other => Self::Unknown(other.to_string()),
        }
    }

    /// Twilio's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::NoAnswer => "no-answer",
            Self::Canceled => "canceled",
            Self::Unknown(s) => s,
        }
    }

    /// Whether the call can still be canceled (not yet answered).
    pub fn is_pre_answer(&self) -> bool {
        matches!(self, Self::Queued | Self::Initiated | Self::Ringing)
    }

    /// Whether the call is over.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Busy | Self::Failed | Self::NoAnswer | Self::Canceled
        )
    }

    /// callcat's view of where the call stands.
    pub fn state(&self) -> ProviderCallState {
        match self {
            Self::Queued | Self::Initiated => ProviderCallState::Queued,
            Self::Ringing => ProviderCallState::Ringing,
            Self::InProgress => ProviderCallState::InProgress,
            Self::Completed | Self::Busy | Self::NoAnswer | Self::Canceled => {
                ProviderCallState::Ended
            }
            Self::Failed => ProviderCallState::Error,
            Self::Unknown(s) => ProviderCallState::Unknown(s.clone()),
        }
    }

    /// The event kind a status callback with this status is.
    pub fn event_kind(&self) -> ProviderEventKind {
        match self {
            Self::Queued | Self::Initiated | Self::Ringing => ProviderEventKind::Ringing,
            Self::InProgress => ProviderEventKind::Started,
            s if s.is_final() => ProviderEventKind::Ended,
            other => ProviderEventKind::Other(other.as_str().to_string()),
        }
    }

    /// How the attempt ended, for final statuses. `completed` means the call
    /// connected (Twilio reports unanswered calls as `no-answer`, `busy`,
    /// `failed` or `canceled`), so it is `Answered` unless AMD found a machine.
    pub fn outcome(&self, answered_by: Option<&AnsweredBy>) -> Option<CallOutcome> {
        match self {
            Self::Completed => Some(if answered_by.is_some_and(AnsweredBy::is_machine) {
                CallOutcome::Voicemail
            } else {
                CallOutcome::Answered
            }),
            Self::Busy => Some(CallOutcome::Busy),
            Self::NoAnswer => Some(CallOutcome::NoAnswer),
            Self::Failed => Some(CallOutcome::DialError),
            Self::Canceled => Some(CallOutcome::Canceled),
            _ => None,
        }
    }
}

/// Twilio's answering-machine detection result (`AnsweredBy`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnsweredBy {
    /// `human`
    Human,
    /// `machine_start`
    MachineStart,
    /// `machine_end_beep`
    MachineEndBeep,
    /// `machine_end_silence`
    MachineEndSilence,
    /// `machine_end_other`
    MachineEndOther,
    /// `fax`
    Fax,
    /// `unknown` or a value this version does not know, verbatim.
    Unknown(String),
}

impl AnsweredBy {
    /// Parses Twilio's spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "human" => Self::Human,
            "machine_start" => Self::MachineStart,
            "machine_end_beep" => Self::MachineEndBeep,
            "machine_end_silence" => Self::MachineEndSilence,
            "machine_end_other" => Self::MachineEndOther,
            "fax" => Self::Fax,
            other => Self::Unknown(other.to_string()),
        }
    }

    /// Twilio's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Human => "human",
            Self::MachineStart => "machine_start",
            Self::MachineEndBeep => "machine_end_beep",
            Self::MachineEndSilence => "machine_end_silence",
            Self::MachineEndOther => "machine_end_other",
            Self::Fax => "fax",
            Self::Unknown(s) => s,
        }
    }

    /// A machine (voicemail) or a fax answered: the `Voicemail` outcome.
    pub fn is_machine(&self) -> bool {
        matches!(
            self,
            Self::MachineStart
                | Self::MachineEndBeep
                | Self::MachineEndSilence
                | Self::MachineEndOther
                | Self::Fax
        )
    }
}

/// Parses Twilio's RFC 2822 timestamps (`Tue, 31 Aug 2010 20:36:28 +0000`).
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A call duration in seconds from Twilio, capped at callcat's maximum
/// ([`callcat_core::time::MAX_CALL_DURATION_MS`], 31 days).
pub(crate) fn clamp_duration_s(s: u64) -> u64 {
    s.min(callcat_core::time::MAX_CALL_DURATION_MS / 1000)
}

/// The Call resource, as far as callcat reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct CallResource {
    pub(crate) sid: String,
    pub(crate) status: Option<String>,
    pub(crate) start_time: Option<String>,
    pub(crate) end_time: Option<String>,
    pub(crate) duration: Option<String>,
    pub(crate) answered_by: Option<String>,
    pub(crate) price: Option<String>,
    pub(crate) price_unit: Option<String>,
}

impl CallResource {
    pub(crate) fn status(&self) -> TwilioCallStatus {
        TwilioCallStatus::parse(self.status.as_deref().unwrap_or("queued"))
    }

    pub(crate) fn into_provider_call(self) -> ProviderCall {
        let status = self.status();
        let answered_by = self.answered_by.as_deref().map(AnsweredBy::parse);
        let mut call = ProviderCall::new(self.sid, status.state());
        call.started_at = self.start_time.as_deref().and_then(parse_time);
        call.ended_at = self.end_time.as_deref().and_then(parse_time);
        call.duration_ms = self
            .duration
            .as_deref()
            .and_then(|d| d.trim().parse::<u64>().ok())
            .map(|s| clamp_duration_s(s).saturating_mul(1000));
        call.outcome = status.outcome(answered_by.as_ref());
        if status.is_final() {
            call.disconnection_reason = Some(status.as_str().to_string());
        }
        if let (Some(price), Some(unit)) = (self.price.as_deref(), self.price_unit.as_deref())
            && let Ok(p) = price.trim().parse::<f64>()
        {
            // Twilio reports charges as negative amounts.
            call.cost = Some(CallCost {
                total: p.abs(),
                currency: unit.to_string(),
                items: BTreeMap::new(),
            });
        }
        call
    }
}

/// Twilio's JSON error body.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) code: Option<i64>,
    pub(crate) message: Option<String>,
    pub(crate) more_info: Option<String>,
    #[allow(dead_code)]
    pub(crate) status: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_states_kinds_and_outcomes() {
        use TwilioCallStatus as S;
        let cases = [
            (
                "queued",
                ProviderCallState::Queued,
                ProviderEventKind::Ringing,
                None,
            ),
            (
                "initiated",
                ProviderCallState::Queued,
                ProviderEventKind::Ringing,
                None,
            ),
            (
                "ringing",
                ProviderCallState::Ringing,
                ProviderEventKind::Ringing,
                None,
            ),
            (
                "in-progress",
                ProviderCallState::InProgress,
                ProviderEventKind::Started,
                None,
            ),
            (
                "completed",
                ProviderCallState::Ended,
                ProviderEventKind::Ended,
                Some(CallOutcome::Answered),
            ),
            (
                "busy",
                ProviderCallState::Ended,
                ProviderEventKind::Ended,
                Some(CallOutcome::Busy),
            ),
            (
                "no-answer",
                ProviderCallState::Ended,
                ProviderEventKind::Ended,
                Some(CallOutcome::NoAnswer),
            ),
            (
                "failed",
                ProviderCallState::Error,
                ProviderEventKind::Ended,
                Some(CallOutcome::DialError),
            ),
            (
                "canceled",
                ProviderCallState::Ended,
                ProviderEventKind::Ended,
                Some(CallOutcome::Canceled),
            ),
        ];
        for (s, state, kind, outcome) in cases {
            let st = S::parse(s);
            assert_eq!(st.as_str(), s);
            assert_eq!(st.state(), state, "{s}");
            assert_eq!(st.event_kind(), kind, "{s}");
            assert_eq!(st.outcome(None), outcome, "{s}");
        }
        let odd = S::parse("transferring");
        assert_eq!(odd, S::Unknown("transferring".into()));
        assert_eq!(
            odd.event_kind(),
            ProviderEventKind::Other("transferring".into())
        );
    }

    #[test]
    fn machines_turn_completed_into_voicemail() {
        for m in [
            "machine_start",
            "machine_end_beep",
            "machine_end_silence",
            "machine_end_other",
            "fax",
        ] {
            assert_eq!(
                TwilioCallStatus::Completed.outcome(Some(&AnsweredBy::parse(m))),
                Some(CallOutcome::Voicemail),
                "{m}"
            );
        }
        for h in ["human", "unknown"] {
            assert_eq!(
                TwilioCallStatus::Completed.outcome(Some(&AnsweredBy::parse(h))),
                Some(CallOutcome::Answered)
            );
        }
        // A machine does not change how an unanswered call ended.
        assert_eq!(
            TwilioCallStatus::Busy.outcome(Some(&AnsweredBy::MachineStart)),
            Some(CallOutcome::Busy)
        );
    }

    #[test]
    fn rfc2822_times_parse() {
        let t = parse_time("Tue, 31 Aug 2010 20:36:28 +0000").expect("time");
        assert_eq!(t.to_rfc3339(), "2010-08-31T20:36:28+00:00");
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn a_huge_duration_from_a_fetch_is_clamped() {
        let r: CallResource = serde_json::from_value(serde_json::json!({
            "sid": "CA1",
            "status": "completed",
            "duration": "18446744073709551615",
        }))
        .expect("resource");
        assert_eq!(
            r.into_provider_call().duration_ms,
            Some(callcat_core::time::MAX_CALL_DURATION_MS)
        );
    }
}
