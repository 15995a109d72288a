//! Sample values for tests.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc, Weekday};

use crate::call::{AttemptRecord, Call, CallAnalysis, CallCost, CallOutcome, CallStatus};
use crate::ids::{CallId, Owner};
use crate::new_call::{CallTemplate, Limits, NewCall};
use crate::phone::PhoneNumber;
use crate::retry::RetryPolicy;
use crate::window::RecurringWindow;

/// 2030-01-01T00:00:00Z: the suite's fixed "now".
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default()
}

/// `t0() + secs`.
pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// A valid US number.
pub fn phone() -> PhoneNumber {
    PhoneNumber::parse("+14155552671").unwrap_or_else(|e| panic!("fixture phone: {e}"))
}

/// A minimal template.
pub fn template() -> CallTemplate {
    CallTemplate::new("Ada Lovelace", phone(), "Checkup", "Ask how the week went.")
}

/// A scheduled call for `owner` due at `scheduled_for` (created at `t0()`).
pub fn scheduled_call(owner: &Owner, scheduled_for: DateTime<Utc>) -> Call {
    let mut c = NewCall::new(template())
        .into_call(owner.clone(), t0(), &Limits::default())
        .unwrap_or_else(|e| panic!("fixture call: {e}"));
    c.scheduled_for = scheduled_for;
    c.next_action_at = Some(scheduled_for);
    c
}

/// A call with every optional field set, as after an answered and analysed attempt.
pub fn fully_populated_call(owner: &Owner) -> Call {
    let mut c = scheduled_call(owner, at(60));
    c.caller_number = Some(PhoneNumber::parse("+442071838750").unwrap_or_else(|e| panic!("{e}")));
    c.language = Some("en-US".into());
    c.voice = Some("11labs-Adrian".into());
    c.agent_id = Some("agent_123".into());
    c.variables = BTreeMap::from([("order".to_owned(), "A-17".to_owned())]);
    c.metadata = serde_json::json!({"crm": {"id": 42, "tags": ["vip"]}, "simulate": "answered"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    c.idempotency_key = Some("key-full".into());
    c.not_after = Some(at(3600));
    c.dial_window = Some(RecurringWindow {
        weekdays: vec![Weekday::Mon, Weekday::Fri],
        start: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default(),
        end: NaiveTime::from_hms_opt(17, 30, 0).unwrap_or_default(),
        timezone: chrono_tz::America::New_York,
    });
    c.parent_call_id = Some(CallId::new());
    c.status = CallStatus::Completed;
    c.outcome = Some(CallOutcome::Answered);
    c.attempts = 2;
    c.retry_policy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(1500),
        ..RetryPolicy::default()
    };
    c.next_action_at = None;
    c.lease = None;
    c.dial_started_at = Some(at(61));
    c.provider = Some("retell".into());
    c.provider_call_id = Some(format!("pc-full-{}", c.id));
    c.started_at = Some(at(65));
    c.ended_at = Some(at(125));
    c.finished_at = Some(at(125));
    c.duration_ms = Some(60_000);
    c.disconnection_reason = Some("user_hangup".into());
    c.analysis = Some(CallAnalysis {
        summary: Some("Customer confirmed delivery.".into()),
        sentiment: Some("Positive".into()),
        successful: Some(true),
        in_voicemail: Some(false),
        action_items: vec!["send invoice".into()],
        custom: serde_json::json!({"rating": 5})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    });
    c.recording_url = Some("https://recordings.example/abc.wav".into());
    c.cost = Some(CallCost {
        total: 0.1234,
        currency: "USD".into(),
        items: BTreeMap::from([("llm".to_owned(), 0.02)]),
    });
    c.last_error = Some("first attempt: no answer".into());
    c.history = vec![
        AttemptRecord {
            number: 1,
            dialed_at: Some(at(1)),
            provider_call_id: Some("pc-old".into()),
            started_at: None,
            ended_at: Some(at(31)),
            outcome: Some(CallOutcome::NoAnswer),
            disconnection_reason: Some("dial_no_answer".into()),
            error: None,
        },
        AttemptRecord {
            number: 2,
            dialed_at: Some(at(61)),
            provider_call_id: Some(format!("pc-full-{}", c.id)),
            started_at: Some(at(65)),
            ended_at: Some(at(125)),
            outcome: Some(CallOutcome::Answered),
            disconnection_reason: Some("user_hangup".into()),
            error: None,
        },
    ];
    c.updated_at = at(130);
    c
}

/// A unique owner for a test (tenant `tenant`, random user).
pub fn owner(tenant: &str) -> Owner {
    Owner::new(tenant, format!("user-{}", CallId::new()))
}
