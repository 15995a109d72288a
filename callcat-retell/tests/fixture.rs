//! The real Retell call object (tests/fixtures/retell_call_object.json) parses
//! completely and maps to the expected callcat values.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{CallOutcome, ProviderCallState, SpeakerRole};
use callcat_retell::mapping::to_provider_call;
use callcat_retell::wire::{CallStatus, DisconnectionReason, RetellCall, Role};

const FIXTURE: &str = include_str!("fixtures/retell_call_object.json");

fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap()
}

#[test]
fn wire_object_parses_every_field_callcat_reads() {
    let call: RetellCall = serde_json::from_str(FIXTURE).unwrap();
    assert_eq!(call.call_id, "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6");
    assert_eq!(call.call_type.as_deref(), Some("phone_call"));
    assert_eq!(call.call_status, Some(CallStatus::Registered));
    assert_eq!(call.from_number.as_deref(), Some("+12137771234"));
    assert_eq!(call.to_number.as_deref(), Some("+12137771235"));
    assert_eq!(call.direction.as_deref(), Some("inbound"));
    assert_eq!(
        call.agent_id.as_deref(),
        Some("oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD")
    );
    assert_eq!(call.metadata, Some(serde_json::json!({})));
    assert_eq!(call.start_timestamp, Some(1_703_302_407_333));
    assert_eq!(call.end_timestamp, Some(1_703_302_428_855));
    assert_eq!(call.duration_ms, Some(10_000));
    assert_eq!(
        call.disconnection_reason,
        Some(DisconnectionReason::AgentHangup)
    );
    assert!(
        call.transcript
            .as_deref()
            .unwrap()
            .starts_with("Agent: hi how are you doing?\nUser: Doing pretty well.")
    );
    let utt = call.transcript_object.as_ref().unwrap();
    assert_eq!(utt.len(), 1);
    assert_eq!(utt[0].role, Role::Agent);
    assert_eq!(utt[0].content, "hi how are you doing?");
    assert_eq!(utt[0].words.len(), 1);
    assert_eq!(utt[0].words[0].word.as_deref(), Some("hi"));
    assert_eq!(utt[0].words[0].start, Some(0.7));
    assert_eq!(utt[0].words[0].end, Some(1.3));
    let a = call.call_analysis.as_ref().unwrap();
    assert_eq!(a.user_sentiment.as_deref(), Some("Positive"));
    assert_eq!(a.call_successful, Some(true));
    assert_eq!(a.in_voicemail, Some(false));
    assert_eq!(a.custom_analysis_data, Some(serde_json::json!({})));
    let c = call.call_cost.as_ref().unwrap();
    assert_eq!(c.combined_cost, Some(70.0));
    assert_eq!(c.total_duration_seconds, Some(60.0));
    assert_eq!(c.product_costs.len(), 1);
    assert_eq!(c.product_costs[0].product, "elevenlabs_tts");
    assert_eq!(c.product_costs[0].unit_price, Some(1.0));
    assert_eq!(c.product_costs[0].cost, Some(60.0));
}

#[test]
fn fixture_maps_to_core_values() {
    let call: RetellCall = serde_json::from_str(FIXTURE).unwrap();
    let p = to_provider_call(&call);
    assert_eq!(p.provider_call_id, "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6");
    // The fixture's metadata is empty: it was not placed by callcat.
    assert_eq!(p.call_id, None);
    assert_eq!(p.state, ProviderCallState::Queued);
    assert_eq!(p.started_at, Some(ms(1_703_302_407_333)));
    assert_eq!(p.ended_at, Some(ms(1_703_302_428_855)));
    assert_eq!(p.duration_ms, Some(10_000));
    assert_eq!(p.disconnection_reason.as_deref(), Some("agent_hangup"));
    assert_eq!(p.outcome, Some(CallOutcome::Answered));
    assert_eq!(
        p.recording_url.as_deref(),
        Some(
            "https://retellai.s3.us-west-2.amazonaws.com/Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6/recording.wav"
        )
    );

    let t = p.transcript.as_ref().unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].role, SpeakerRole::Agent);
    assert_eq!(t[0].text, "hi how are you doing?");
    assert_eq!(t[0].start_ms, Some(700));
    assert_eq!(t[0].end_ms, Some(1300));

    let a = p.analysis.as_ref().unwrap();
    assert!(
        a.summary
            .as_deref()
            .unwrap()
            .starts_with("The agent called the user to ask question about his purchase inquiry.")
    );
    assert_eq!(a.sentiment.as_deref(), Some("Positive"));
    assert_eq!(a.successful, Some(true));
    assert_eq!(a.in_voicemail, Some(false));
    assert!(a.action_items.is_empty());
    assert!(a.custom.is_empty());

    let c = p.cost.as_ref().unwrap();
    assert_eq!(c.currency, "USD");
    assert_eq!(c.total, 0.70, "combined_cost 70 cents");
    assert_eq!(c.items.len(), 1);
    assert_eq!(c.items["elevenlabs_tts"], 0.60);
}

#[test]
fn fixture_with_our_metadata_and_final_status_maps_our_id() {
    let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    let id = callcat_core::CallId::new();
    v["metadata"] = serde_json::json!({ "callcat_call_id": id.to_string(), "crm": "42" });
    v["call_status"] = "ended".into();
    v["call_analysis"]["custom_analysis_data"] = serde_json::json!({ "appointment": "Mon 10:00" });
    let p = to_provider_call(&serde_json::from_value(v).unwrap());
    assert_eq!(p.call_id, Some(id));
    assert_eq!(p.state, ProviderCallState::Ended);
    assert_eq!(p.outcome, Some(CallOutcome::Answered));
    assert_eq!(
        p.analysis.unwrap().custom.get("appointment"),
        Some(&serde_json::json!("Mon 10:00"))
    );
}

#[test]
fn unknown_values_and_fields_never_fail_parsing() {
    let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    v["call_status"] = "on_hold".into();
    v["disconnection_reason"] = "quantum_tunneling".into();
    v["a_field_from_the_future"] = serde_json::json!({ "nested": [1, 2, 3] });
    v["transcript_object"][0]["role"] = "transfer_target".into();
    let call: RetellCall = serde_json::from_value(v).unwrap();
    assert_eq!(
        call.call_status,
        Some(CallStatus::Unknown("on_hold".into()))
    );
    let p = to_provider_call(&call);
    assert_eq!(p.state, ProviderCallState::Unknown("on_hold".into()));
    assert_eq!(p.disconnection_reason.as_deref(), Some("quantum_tunneling"));
    assert_eq!(p.outcome, None);
    assert_eq!(p.transcript.unwrap()[0].role, SpeakerRole::System);
}
