//! Retell's call object → callcat's [`ProviderCall`]. Pure functions.

use std::collections::BTreeMap;

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::provider::CALL_ID_METADATA_KEY;
use callcat_core::{
    CallAnalysis, CallCost, CallId, CallOutcome, ProviderCall, ProviderCallState, SpeakerRole,
    TranscriptSegment,
};

use crate::wire::{
    Analysis, CallStatus, Cost, DisconnectionReason as R, RetellCall, Role, Utterance,
};

/// Maps a Retell call object to callcat's snapshot of it.
///
/// Never fails: unknown statuses and reasons are kept verbatim, and a metadata
/// `callcat_call_id` that is not a callcat id is ignored (the call was not placed
/// by callcat).
pub fn to_provider_call(call: &RetellCall) -> ProviderCall {
    let state = call
        .call_status
        .as_ref()
        .map(map_state)
        .unwrap_or_else(|| ProviderCallState::Unknown(String::new()));
    let connected = connected(call);
    let mut out = ProviderCall::new(call.call_id.clone(), state);
    out.call_id = call_id_from_metadata(call.metadata.as_ref());
    out.started_at = if connected {
        call.start_timestamp.and_then(from_millis)
    } else {
        None
    };
    out.ended_at = call.end_timestamp.and_then(from_millis);
    // Clamped to callcat's maximum (31 days), whatever Retell says.
    out.duration_ms = call.duration_ms.map(callcat_core::time::clamp_duration_ms);
    out.outcome = outcome(call, connected);
    out.disconnection_reason = call
        .disconnection_reason
        .as_ref()
        .map(|r| r.as_str().to_owned());
    out.transcript = call
        .transcript_object
        .as_ref()
        .map(|utts| utts.iter().map(segment).collect());
    out.analysis = call.call_analysis.as_ref().map(analysis);
    out.recording_url = call.recording_url.clone().filter(|u| !u.is_empty());
    out.cost = call.call_cost.as_ref().and_then(cost);
    out
}

/// Retell's `call_status` → callcat's provider state.
pub fn map_state(status: &CallStatus) -> ProviderCallState {
    match status {
        CallStatus::Registered => ProviderCallState::Queued,
        CallStatus::Ongoing => ProviderCallState::InProgress,
        CallStatus::Ended | CallStatus::NotConnected => ProviderCallState::Ended,
        CallStatus::Error => ProviderCallState::Error,
        CallStatus::Unknown(s) => ProviderCallState::Unknown(s.clone()),
    }
}

/// Whether the reason says the call never reached a person or a machine.
fn never_connected(reason: &R) -> bool {
    matches!(
        reason,
        R::DialBusy
            | R::DialFailed
            | R::DialNoAnswer
            | R::InvalidDestination
            | R::TelephonyProviderPermissionDenied
            | R::TelephonyProviderUnavailable
            | R::SipRoutingError
            | R::MarkedAsSpam
            | R::UserDeclined
            | R::ConcurrencyLimitReached
            | R::NoConcurrencyFallback
            | R::NoValidPayment
            | R::RegisteredCallTimeout
            | R::ErrorUserNotJoined
    )
}

/// Whether the call connected (someone or something answered).
fn connected(call: &RetellCall) -> bool {
    if call.call_status == Some(CallStatus::NotConnected) {
        return false;
    }
    if call
        .disconnection_reason
        .as_ref()
        .is_some_and(never_connected)
    {
        return false;
    }
    call.call_status == Some(CallStatus::Ongoing)
        || call.start_timestamp.is_some()
        || call.duration_ms.is_some_and(|d| d > 0)
}

/// How the call ended, in callcat's terms. `None` while the call is not over and
/// has no disconnection reason, or when nothing says how it ended.
pub(crate) fn outcome(call: &RetellCall, connected: bool) -> Option<CallOutcome> {
    let over_without_connecting = || {
        if connected {
            CallOutcome::Answered
        } else {
            CallOutcome::NoAnswer
        }
    };
    let Some(reason) = &call.disconnection_reason else {
        return match call.call_status {
            Some(CallStatus::Error) => Some(CallOutcome::Error),
            Some(CallStatus::NotConnected) => Some(CallOutcome::DialError),
            Some(CallStatus::Ended) if connected => Some(CallOutcome::Answered),
            _ => None,
        };
    };
    Some(match reason {
        R::DialNoAnswer => CallOutcome::NoAnswer,
        R::DialBusy | R::UserDeclined => CallOutcome::Busy,
        R::VoicemailReached | R::MachineDetected | R::IvrReached => CallOutcome::Voicemail,
        R::DialFailed
        | R::InvalidDestination
        | R::TelephonyProviderPermissionDenied
        | R::TelephonyProviderUnavailable
        | R::SipRoutingError
        | R::MarkedAsSpam
        | R::RegisteredCallTimeout
        | R::ConcurrencyLimitReached
        | R::NoConcurrencyFallback
        | R::NoValidPayment
        | R::ScamDetected => CallOutcome::DialError,
        R::UserHangup
        | R::AgentHangup
        | R::CallTransfer
        | R::Inactivity
        | R::MaxDurationReached
        | R::TransferBridged
        | R::TransferCancelled
        | R::CallTakeOver => over_without_connecting(),
        R::ManualStopped => {
            if connected {
                CallOutcome::Answered
            } else {
                CallOutcome::Canceled
            }
        }
        R::ErrorLlmWebsocketOpen
        | R::ErrorLlmWebsocketLostConnection
        | R::ErrorLlmWebsocketRuntime
        | R::ErrorLlmWebsocketCorruptPayload
        | R::ErrorFrontendCorruptedPayload
        | R::ErrorTwilio
        | R::ErrorNoAudioReceived
        | R::ErrorAsr
        | R::ErrorRetell
        | R::ErrorUnknown
        | R::ErrorUserNotJoined
        | R::ErrorInboundWebhook => CallOutcome::Error,
        R::Unknown(s) if s.starts_with("error") => CallOutcome::Error,
        // A reason this version does not know: fall back on the status.
        _ => match call.call_status {
            Some(CallStatus::Error) => CallOutcome::Error,
            Some(CallStatus::NotConnected) => CallOutcome::DialError,
            Some(CallStatus::Ended) if connected => CallOutcome::Answered,
            _ => return None,
        },
    })
}

/// Our call id from Retell's `metadata.callcat_call_id`, if it is one.
pub(crate) fn call_id_from_metadata(metadata: Option<&serde_json::Value>) -> Option<CallId> {
    metadata?
        .get(CALL_ID_METADATA_KEY)?
        .as_str()?
        .parse::<CallId>()
        .ok()
}

/// A millisecond timestamp as a UTC instant; values outside callcat's range
/// (2000–2200, [`callcat_core::time::in_range`]) are dropped.
pub(crate) fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).filter(|t| callcat_core::time::in_range(*t))
}

/// Seconds (Retell's word timings) → whole milliseconds; negative or non-finite → `None`.
fn seconds_to_ms(s: f64) -> Option<u64> {
    if s.is_finite() && s >= 0.0 {
        // Saturating float-to-int cast: absurdly large values clamp to u64::MAX.
        Some((s * 1000.0).round() as u64)
    } else {
        None
    }
}

fn segment(u: &Utterance) -> TranscriptSegment {
    let role = match &u.role {
        Role::Agent => SpeakerRole::Agent,
        Role::User => SpeakerRole::User,
        _ => SpeakerRole::System,
    };
    let start_ms = u
        .words
        .iter()
        .filter_map(|w| w.start.and_then(seconds_to_ms))
        .min();
    let end_ms = u
        .words
        .iter()
        .filter_map(|w| w.end.and_then(seconds_to_ms))
        .max();
    TranscriptSegment {
        role,
        text: u.content.clone(),
        start_ms,
        end_ms,
    }
}

fn analysis(a: &Analysis) -> CallAnalysis {
    let custom = match &a.custom_analysis_data {
        Some(serde_json::Value::Object(m)) => m.clone(),
        Some(serde_json::Value::Null) | None => serde_json::Map::new(),
        // Not an object: keep it rather than drop it.
        Some(other) => {
            let mut m = serde_json::Map::new();
            m.insert("value".to_owned(), other.clone());
            m
        }
    };
    CallAnalysis {
        summary: a.call_summary.clone(),
        sentiment: a.user_sentiment.clone(),
        successful: a.call_successful,
        in_voicemail: a.in_voicemail,
        action_items: Vec::new(),
        custom,
    }
}

/// Retell's costs are in cents; callcat's are in US dollars.
fn cost(c: &Cost) -> Option<CallCost> {
    let mut items: BTreeMap<String, f64> = BTreeMap::new();
    for p in &c.product_costs {
        if let Some(cents) = p.cost.filter(|v| v.is_finite()) {
            *items.entry(p.product.clone()).or_default() += cents / 100.0;
        }
    }
    let total = match c.combined_cost.filter(|v| v.is_finite()) {
        Some(cents) => cents / 100.0,
        None if !items.is_empty() => items.values().sum(),
        None => return None,
    };
    Some(CallCost {
        total,
        currency: "USD".to_owned(),
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(v: serde_json::Value) -> RetellCall {
        serde_json::from_value(v).unwrap()
    }

    fn ended(reason: &str, started: bool) -> ProviderCall {
        let mut v = json!({
            "call_id": "c1",
            "call_status": if started { "ended" } else { "not_connected" },
            "disconnection_reason": reason,
            "end_timestamp": 1_703_302_428_855_i64,
        });
        if started {
            v["start_timestamp"] = json!(1_703_302_407_333_i64);
            v["duration_ms"] = json!(21_522);
        }
        to_provider_call(&call(v))
    }

    #[test]
    fn dial_failures_map_to_their_outcomes() {
        let cases = [
            ("dial_no_answer", CallOutcome::NoAnswer),
            ("dial_busy", CallOutcome::Busy),
            ("user_declined", CallOutcome::Busy),
            ("dial_failed", CallOutcome::DialError),
            ("invalid_destination", CallOutcome::DialError),
            (
                "telephony_provider_permission_denied",
                CallOutcome::DialError,
            ),
            ("telephony_provider_unavailable", CallOutcome::DialError),
            ("sip_routing_error", CallOutcome::DialError),
            ("marked_as_spam", CallOutcome::DialError),
            ("concurrency_limit_reached", CallOutcome::DialError),
            ("no_concurrency_fallback", CallOutcome::DialError),
            ("no_valid_payment", CallOutcome::DialError),
            ("registered_call_timeout", CallOutcome::DialError),
        ];
        for (reason, want) in cases {
            let p = ended(reason, false);
            assert_eq!(p.outcome, Some(want), "{reason}");
            assert_eq!(p.state, ProviderCallState::Ended, "{reason}");
            assert_eq!(p.started_at, None, "{reason}: never answered");
            assert_eq!(p.disconnection_reason.as_deref(), Some(reason));
        }
    }

    #[test]
    fn dial_no_answer_with_a_start_timestamp_is_still_not_answered() {
        let p = to_provider_call(&call(json!({
            "call_id": "c1", "call_status": "ended",
            "disconnection_reason": "dial_no_answer",
            "start_timestamp": 1_703_302_407_333_i64,
        })));
        assert_eq!(p.outcome, Some(CallOutcome::NoAnswer));
        assert_eq!(p.started_at, None);
    }

    #[test]
    fn normal_endings_are_answered_when_connected() {
        for reason in [
            "user_hangup",
            "agent_hangup",
            "call_transfer",
            "inactivity",
            "max_duration_reached",
            "transfer_bridged",
            "transfer_cancelled",
            "manual_stopped",
        ] {
            let p = ended(reason, true);
            assert_eq!(p.outcome, Some(CallOutcome::Answered), "{reason}");
            assert!(p.started_at.is_some(), "{reason}");
        }
        // Without a connection, a hang-up means nobody answered; a manual stop is ours.
        assert_eq!(
            ended("user_hangup", false).outcome,
            Some(CallOutcome::NoAnswer)
        );
        assert_eq!(
            ended("manual_stopped", false).outcome,
            Some(CallOutcome::Canceled)
        );
    }

    #[test]
    fn voicemail_and_machines() {
        for reason in ["voicemail_reached", "machine_detected", "ivr_reached"] {
            assert_eq!(
                ended(reason, true).outcome,
                Some(CallOutcome::Voicemail),
                "{reason}"
            );
        }
    }

    #[test]
    fn errors_map_to_error() {
        for reason in [
            "error_llm_websocket_open",
            "error_llm_websocket_lost_connection",
            "error_llm_websocket_runtime",
            "error_llm_websocket_corrupt_payload",
            "error_frontend_corrupted_payload",
            "error_twilio",
            "error_no_audio_received",
            "error_asr",
            "error_retell",
            "error_unknown",
            "error_inbound_webhook",
            "error_some_future_thing",
        ] {
            assert_eq!(
                ended(reason, true).outcome,
                Some(CallOutcome::Error),
                "{reason}"
            );
        }
        assert_eq!(
            ended("scam_detected", true).outcome,
            Some(CallOutcome::DialError)
        );
    }

    #[test]
    fn unknown_reasons_are_kept_and_fall_back_on_status() {
        let p = ended("alien_abduction", true);
        assert_eq!(p.disconnection_reason.as_deref(), Some("alien_abduction"));
        assert_eq!(p.outcome, Some(CallOutcome::Answered));
        let p = ended("alien_abduction", false);
        assert_eq!(p.outcome, Some(CallOutcome::DialError));
        let p = to_provider_call(&call(json!({
            "call_id": "c1", "call_status": "error", "disconnection_reason": "alien_abduction"
        })));
        assert_eq!(p.state, ProviderCallState::Error);
        assert_eq!(p.outcome, Some(CallOutcome::Error));
        let p = to_provider_call(&call(json!({
            "call_id": "c1", "call_status": "ongoing", "disconnection_reason": "alien_abduction"
        })));
        assert_eq!(p.outcome, None);
    }

    #[test]
    fn states_map_and_live_calls_have_no_outcome() {
        let st = |s: &str| to_provider_call(&call(json!({"call_id": "c", "call_status": s})));
        assert_eq!(st("registered").state, ProviderCallState::Queued);
        assert_eq!(st("registered").outcome, None);
        assert_eq!(st("ongoing").state, ProviderCallState::InProgress);
        assert_eq!(st("ongoing").outcome, None);
        assert_eq!(st("ended").state, ProviderCallState::Ended);
        assert_eq!(st("not_connected").state, ProviderCallState::Ended);
        assert_eq!(st("not_connected").outcome, Some(CallOutcome::DialError));
        assert_eq!(st("error").state, ProviderCallState::Error);
        assert_eq!(st("error").outcome, Some(CallOutcome::Error));
        assert_eq!(
            st("paused").state,
            ProviderCallState::Unknown("paused".into())
        );
    }

    #[test]
    fn foreign_metadata_is_ignored() {
        assert_eq!(
            call_id_from_metadata(Some(&json!({"callcat_call_id": "not-a-uuid"}))),
            None
        );
        assert_eq!(call_id_from_metadata(Some(&json!("text"))), None);
        assert_eq!(
            call_id_from_metadata(Some(&json!({"callcat_call_id": 42}))),
            None
        );
        let id = CallId::new();
        assert_eq!(
            call_id_from_metadata(Some(&json!({"callcat_call_id": id.to_string()}))),
            Some(id)
        );
    }

    #[test]
    fn word_timings_become_millisecond_offsets() {
        let p = to_provider_call(&call(json!({
            "call_id": "c",
            "transcript_object": [
                {"role": "user", "content": "yes please", "words": [
                    {"word": "yes", "start": 2.0049, "end": 2.3},
                    {"word": "please", "start": 2.4, "end": 2.95}
                ]},
                {"role": "agent", "content": "(no timings)", "words": []},
                {"role": "transfer_target", "content": "hello", "words": [{"word": "hello", "start": -1.0}]}
            ]
        })));
        let t = p.transcript.unwrap();
        assert_eq!(t[0].role, SpeakerRole::User);
        assert_eq!((t[0].start_ms, t[0].end_ms), (Some(2005), Some(2950)));
        assert_eq!((t[1].start_ms, t[1].end_ms), (None, None));
        assert_eq!(t[2].role, SpeakerRole::System);
        assert_eq!(t[2].start_ms, None);
    }

    #[test]
    fn cost_without_combined_total_sums_the_items() {
        let p = to_provider_call(&call(json!({
            "call_id": "c",
            "call_cost": {"product_costs": [
                {"product": "tts", "cost": 25}, {"product": "llm", "cost": 5}, {"product": "tts", "cost": 5}
            ]}
        })));
        let c = p.cost.unwrap();
        assert!((c.items["tts"] - 0.30).abs() < 1e-9);
        assert!((c.items["llm"] - 0.05).abs() < 1e-9);
        assert!((c.total - 0.35).abs() < 1e-9);
        let p = to_provider_call(&call(json!({"call_id": "c", "call_cost": {}})));
        assert_eq!(p.cost, None);
    }

    #[test]
    fn extreme_durations_and_timestamps_are_clamped_or_dropped() {
        let p = to_provider_call(&call(json!({
            "call_id": "c",
            "call_status": "ended",
            "start_timestamp": 8_210_266_873_199_999i64,
            "end_timestamp": -8_334_601_228_800_000i64,
            "duration_ms": u64::MAX,
        })));
        assert_eq!(
            p.duration_ms,
            Some(callcat_core::time::MAX_CALL_DURATION_MS)
        );
        assert_eq!((p.started_at, p.ended_at), (None, None));
    }
}
