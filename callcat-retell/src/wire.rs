//! Retell's JSON, as serde types: the call object, webhook bodies and request bodies.
//!
//! Every enum is `#[non_exhaustive]` with an `Unknown(String)` fallback, and unknown
//! fields are ignored, so a new status, disconnection reason or event from Retell
//! never breaks parsing.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a string enum with an `Unknown(String)` fallback that keeps the value verbatim.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this version does not know, kept verbatim.
            Unknown(String),
        }

        impl $name {
            /// Every value this version knows.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),*];

            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $wire, )*
                    $name::Unknown(s) => s.as_str(),
                }
            }

            /// Parses the wire spelling; unknown values become `Unknown`.
            pub fn parse(s: &str) -> Self {
                match s {
                    $( $wire => $name::$variant, )*
                    other => $name::Unknown(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::parse(&s))
            }
        }
    };
}

wire_enum! {
    /// Retell's `call_status`.
    pub enum CallStatus {
        /// Call id issued; the dial has not connected yet.
        Registered => "registered",
        /// An outbound call that never connected (busy, no answer, dial failure, ...).
        NotConnected => "not_connected",
        /// Connected and going on.
        Ongoing => "ongoing",
        /// Over.
        Ended => "ended",
        /// Retell reports an error for the call.
        Error => "error",
    }
}

wire_enum! {
    /// Retell's `disconnection_reason` (see Retell's "Debug call disconnection" page).
    pub enum DisconnectionReason {
        /// The callee hung up.
        UserHangup => "user_hangup",
        /// The agent hung up.
        AgentHangup => "agent_hangup",
        /// The agent transferred the call.
        CallTransfer => "call_transfer",
        /// Voicemail answered (agent configured with voicemail settings).
        VoicemailReached => "voicemail_reached",
        /// An IVR answered (agent configured to hang up on IVRs).
        IvrReached => "ivr_reached",
        /// An answering machine was detected (older name of `voicemail_reached`).
        MachineDetected => "machine_detected",
        /// Ended after `end_call_after_silence_ms` of silence.
        Inactivity => "inactivity",
        /// The maximum call duration was reached.
        MaxDurationReached => "max_duration_reached",
        /// The account's concurrency limit was reached; the call was not placed.
        ConcurrencyLimitReached => "concurrency_limit_reached",
        /// Over the concurrency limit and no fallback configured.
        NoConcurrencyFallback => "no_concurrency_fallback",
        /// The account has no valid payment method.
        NoValidPayment => "no_valid_payment",
        /// Retell's scam detection stopped the call.
        ScamDetected => "scam_detected",
        /// The number dialed was busy.
        DialBusy => "dial_busy",
        /// Dialing failed with no or an unknown SIP error.
        DialFailed => "dial_failed",
        /// The number dialed did not answer.
        DialNoAnswer => "dial_no_answer",
        /// The number dialed is invalid.
        InvalidDestination => "invalid_destination",
        /// SIP trunk authentication failed.
        TelephonyProviderPermissionDenied => "telephony_provider_permission_denied",
        /// The telephony provider was unavailable or failed.
        TelephonyProviderUnavailable => "telephony_provider_unavailable",
        /// SIP routing loop or error.
        SipRoutingError => "sip_routing_error",
        /// The call was marked as spam.
        MarkedAsSpam => "marked_as_spam",
        /// The callee declined the call.
        UserDeclined => "user_declined",
        /// Retell could not open the LLM websocket.
        ErrorLlmWebsocketOpen => "error_llm_websocket_open",
        /// The LLM websocket connection was lost.
        ErrorLlmWebsocketLostConnection => "error_llm_websocket_lost_connection",
        /// The LLM websocket failed at runtime.
        ErrorLlmWebsocketRuntime => "error_llm_websocket_runtime",
        /// The LLM websocket sent a corrupt payload.
        ErrorLlmWebsocketCorruptPayload => "error_llm_websocket_corrupt_payload",
        /// The frontend sent a corrupt payload (web calls).
        ErrorFrontendCorruptedPayload => "error_frontend_corrupted_payload",
        /// A Twilio error.
        ErrorTwilio => "error_twilio",
        /// No audio was received.
        ErrorNoAudioReceived => "error_no_audio_received",
        /// Speech recognition failed.
        ErrorAsr => "error_asr",
        /// An internal Retell error.
        ErrorRetell => "error_retell",
        /// An unknown error.
        ErrorUnknown => "error_unknown",
        /// The user never joined (web calls).
        ErrorUserNotJoined => "error_user_not_joined",
        /// The inbound webhook failed.
        ErrorInboundWebhook => "error_inbound_webhook",
        /// A registered call was never connected in time.
        RegisteredCallTimeout => "registered_call_timeout",
        /// A transfer was bridged and the agent left.
        TransferBridged => "transfer_bridged",
        /// A transfer was cancelled.
        TransferCancelled => "transfer_cancelled",
        /// The call was stopped through the API (`stop-call`).
        ManualStopped => "manual_stopped",
        /// A human took the call over.
        CallTakeOver => "call_take_over",
    }
}

wire_enum! {
    /// The `event` of a Retell webhook.
    pub enum EventType {
        /// The call connected.
        CallStarted => "call_started",
        /// The call ended (any reason, connected or not).
        CallEnded => "call_ended",
        /// Post-call analysis is ready.
        CallAnalyzed => "call_analyzed",
        /// The live transcript changed.
        TranscriptUpdated => "transcript_updated",
        /// A transfer started.
        TransferStarted => "transfer_started",
        /// A transfer was bridged.
        TransferBridged => "transfer_bridged",
        /// A transfer was cancelled.
        TransferCancelled => "transfer_cancelled",
        /// A transfer ended.
        TransferEnded => "transfer_ended",
    }
}

wire_enum! {
    /// Who spoke an utterance.
    pub enum Role {
        /// The AI agent.
        Agent => "agent",
        /// The person on the line.
        User => "user",
    }
}

/// Retell's call object (`GET /v2/get-call/{call_id}`, webhook `call`). Only the
/// fields callcat uses are typed; the rest are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct RetellCall {
    /// Retell's id for the call.
    pub call_id: String,
    /// `phone_call` or `web_call`.
    #[serde(default)]
    pub call_type: Option<String>,
    /// Where it stands.
    #[serde(default)]
    pub call_status: Option<CallStatus>,
    /// The caller number.
    #[serde(default)]
    pub from_number: Option<String>,
    /// The callee number.
    #[serde(default)]
    pub to_number: Option<String>,
    /// `inbound` or `outbound`.
    #[serde(default)]
    pub direction: Option<String>,
    /// The agent that handled the call.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The metadata given at creation (callcat puts its call id here).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// When the call started, in milliseconds since the epoch.
    #[serde(default)]
    pub start_timestamp: Option<i64>,
    /// When the call ended, in milliseconds since the epoch.
    #[serde(default)]
    pub end_timestamp: Option<i64>,
    /// Talk time in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Why the call ended.
    #[serde(default)]
    pub disconnection_reason: Option<DisconnectionReason>,
    /// The transcript as plain text.
    #[serde(default)]
    pub transcript: Option<String>,
    /// The transcript as utterances with word timings.
    #[serde(default)]
    pub transcript_object: Option<Vec<Utterance>>,
    /// The recording.
    #[serde(default)]
    pub recording_url: Option<String>,
    /// Post-call analysis.
    #[serde(default)]
    pub call_analysis: Option<Analysis>,
    /// What the call cost.
    #[serde(default)]
    pub call_cost: Option<Cost>,
}

/// One utterance of `transcript_object`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Utterance {
    /// Who spoke.
    pub role: Role,
    /// What was said.
    #[serde(default)]
    pub content: String,
    /// The words with their timings.
    #[serde(default)]
    pub words: Vec<Word>,
}

/// One word of an utterance, with its time in seconds from the start of the call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Word {
    /// The word.
    #[serde(default)]
    pub word: Option<String>,
    /// Start, in seconds from the start of the call.
    #[serde(default)]
    pub start: Option<f64>,
    /// End, in seconds from the start of the call.
    #[serde(default)]
    pub end: Option<f64>,
}

/// `call_analysis`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Analysis {
    /// Summary of the call.
    #[serde(default)]
    pub call_summary: Option<String>,
    /// `Positive`, `Negative`, `Neutral`, `Unknown`.
    #[serde(default)]
    pub user_sentiment: Option<String>,
    /// Whether the call achieved its goal.
    #[serde(default)]
    pub call_successful: Option<bool>,
    /// Whether voicemail answered.
    #[serde(default)]
    pub in_voicemail: Option<bool>,
    /// The agent's custom post-call analysis fields.
    #[serde(default)]
    pub custom_analysis_data: Option<serde_json::Value>,
}

/// `call_cost`: amounts in cents (USD).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Cost {
    /// Per-product costs.
    #[serde(default)]
    pub product_costs: Vec<ProductCost>,
    /// The total, in cents.
    #[serde(default)]
    pub combined_cost: Option<f64>,
    /// Billed duration in seconds.
    #[serde(default)]
    pub total_duration_seconds: Option<f64>,
}

/// One product's cost.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ProductCost {
    /// The product (`elevenlabs_tts`, ...).
    pub product: String,
    /// Price per unit.
    #[serde(default)]
    pub unit_price: Option<f64>,
    /// Cost, in cents.
    #[serde(default)]
    pub cost: Option<f64>,
}

/// A webhook body: `{"event": ..., "call": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct WebhookBody {
    /// What happened.
    pub event: EventType,
    /// The call (absent only for event types callcat does not know).
    #[serde(default)]
    pub call: Option<RetellCall>,
}

/// The body of `POST /v2/create-phone-call`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CreatePhoneCall {
    /// The number calling (E.164), one of the account's numbers.
    pub from_number: String,
    /// The number called (E.164).
    pub to_number: String,
    /// Use this agent instead of the number's outbound agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_agent_id: Option<String>,
    /// Stored with the call and returned in webhooks.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Variables injected into the agent's prompt (string values).
    pub retell_llm_dynamic_variables: BTreeMap<String, String>,
}

/// The part of an error body callcat reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub message: Option<serde_json::Value>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
}

impl ErrorBody {
    /// The most specific message in the body, if any.
    pub(crate) fn message(&self) -> Option<String> {
        fn text(v: &serde_json::Value) -> Option<String> {
            match v {
                serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                serde_json::Value::Object(o) => o.get("message").and_then(text),
                serde_json::Value::Array(a) => {
                    let parts: Vec<String> = a.iter().filter_map(text).collect();
                    (!parts.is_empty()).then(|| parts.join("; "))
                }
                _ => None,
            }
        }
        self.message
            .as_ref()
            .and_then(text)
            .or_else(|| self.error_message.clone().filter(|s| !s.trim().is_empty()))
            .or_else(|| self.error.as_ref().and_then(text))
            .or_else(|| self.detail.as_ref().and_then(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_are_kept_verbatim() {
        let r: DisconnectionReason = serde_json::from_str("\"brand_new_reason\"").unwrap();
        assert_eq!(r, DisconnectionReason::Unknown("brand_new_reason".into()));
        assert_eq!(r.as_str(), "brand_new_reason");
        let s: CallStatus = serde_json::from_str("\"paused\"").unwrap();
        assert_eq!(s, CallStatus::Unknown("paused".into()));
        let e: EventType = serde_json::from_str("\"call_paused\"").unwrap();
        assert_eq!(e.to_string(), "call_paused");
    }

    #[test]
    fn known_values_round_trip() {
        for r in DisconnectionReason::KNOWN {
            assert_eq!(&DisconnectionReason::parse(r.as_str()), r);
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(
                &serde_json::from_str::<DisconnectionReason>(&json).unwrap(),
                r
            );
        }
        for s in CallStatus::KNOWN {
            assert_eq!(&CallStatus::parse(s.as_str()), s);
        }
        for e in EventType::KNOWN {
            assert_eq!(&EventType::parse(e.as_str()), e);
        }
    }

    #[test]
    fn error_body_message_is_found_in_common_shapes() {
        let m = |s: &str| serde_json::from_str::<ErrorBody>(s).unwrap().message();
        assert_eq!(
            m(r#"{"message":"bad number"}"#).as_deref(),
            Some("bad number")
        );
        assert_eq!(
            m(r#"{"error":{"message":"agent not found"}}"#).as_deref(),
            Some("agent not found")
        );
        assert_eq!(m(r#"{"error_message":"x"}"#).as_deref(), Some("x"));
        assert_eq!(m(r#"{"message":["a","b"]}"#).as_deref(), Some("a; b"));
        assert_eq!(m(r#"{"status":"error"}"#), None);
    }
}
