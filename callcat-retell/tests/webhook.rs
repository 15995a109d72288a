//! Webhook signature verification and event parsing.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use callcat_core::chrono::{DateTime, Duration, Utc};
use callcat_core::{
    CallId, CallOutcome, ErrorKind, ProviderCallState, ProviderEventKind, WebhookRequest,
    WebhookVerifier,
};
use callcat_retell::{
    MalformedReason, RetellWebhookVerifier, SIGNATURE_HEADER, SignatureError, WebhookError,
    sign_payload, verify_and_parse, verify_signature,
};
use http::{HeaderMap, HeaderValue};

const KEY: &str = "test-api-key";
const TS: i64 = 1_700_000_000_000;
const VECTOR_BODY: &str = r#"{"event":"call_ended"}"#;
const VECTOR_DIGEST: &str = "07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e";

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn headers(sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
    h
}

fn sig_err(h: &HeaderMap, body: &[u8], key: &str, now: DateTime<Utc>) -> SignatureError {
    verify_signature(h, body, key, now).unwrap_err()
}

#[test]
fn retells_published_vector_passes() {
    let sig = sign_payload(VECTOR_BODY, KEY, TS);
    assert_eq!(sig, format!("v={TS},d={VECTOR_DIGEST}"));
    let h = headers(&format!("v=1700000000000,d={VECTOR_DIGEST}"));
    assert_eq!(
        verify_signature(&h, VECTOR_BODY.as_bytes(), KEY, at(TS)).unwrap(),
        at(TS)
    );
}

#[test]
fn tampered_body_wrong_key_and_forged_digest_mismatch() {
    let h = headers(&format!("v={TS},d={VECTOR_DIGEST}"));
    assert_eq!(
        sig_err(&h, br#"{"event":"call_started"}"#, KEY, at(TS)),
        SignatureError::Mismatch
    );
    assert_eq!(
        sig_err(&h, VECTOR_BODY.as_bytes(), "other-key", at(TS)),
        SignatureError::Mismatch
    );
    // The timestamp is signed too: moving it breaks the digest.
    let moved = headers(&format!("v={},d={VECTOR_DIGEST}", TS + 1));
    assert_eq!(
        sig_err(&moved, VECTOR_BODY.as_bytes(), KEY, at(TS)),
        SignatureError::Mismatch
    );
    let forged = headers(&format!("v={TS},d={}", "0".repeat(64)));
    assert_eq!(
        sig_err(&forged, VECTOR_BODY.as_bytes(), KEY, at(TS)),
        SignatureError::Mismatch
    );
}

#[test]
fn timestamps_outside_five_minutes_are_stale() {
    let h = headers(&sign_payload(VECTOR_BODY, KEY, TS));
    let five_min = 5 * 60 * 1000;
    // Exactly at the edges is accepted, either way.
    assert!(verify_signature(&h, VECTOR_BODY.as_bytes(), KEY, at(TS + five_min)).is_ok());
    assert!(verify_signature(&h, VECTOR_BODY.as_bytes(), KEY, at(TS - five_min)).is_ok());
    for now in [TS + five_min + 1, TS - five_min - 1, TS + 3_600_000] {
        assert_eq!(
            sig_err(&h, VECTOR_BODY.as_bytes(), KEY, at(now)),
            SignatureError::StaleTimestamp {
                timestamp_ms: TS,
                now_ms: now
            }
        );
    }
}

#[test]
fn malformed_and_missing_headers_have_distinct_errors() {
    let body = VECTOR_BODY.as_bytes();
    let now = at(TS);
    assert_eq!(
        sig_err(&HeaderMap::new(), body, KEY, now),
        SignatureError::MissingHeader
    );
    let malformed = |sig: &str| match sig_err(&headers(sig), body, KEY, now) {
        SignatureError::MalformedHeader(r) => r,
        other => panic!("{sig:?}: expected MalformedHeader, got {other:?}"),
    };
    let short = &VECTOR_DIGEST[..63];
    assert_eq!(
        malformed(&format!("v={TS},d={short}")),
        MalformedReason::InvalidDigest
    );
    assert_eq!(
        malformed(&format!("v={TS},d={}", VECTOR_DIGEST.to_uppercase())),
        MalformedReason::InvalidDigest
    );
    assert_eq!(
        malformed(&format!("d={VECTOR_DIGEST}")),
        MalformedReason::MissingTimestamp
    );
    assert_eq!(
        malformed(&format!("v={TS}")),
        MalformedReason::MissingDigest
    );
    assert_eq!(
        malformed(&format!("v=soon,d={VECTOR_DIGEST}")),
        MalformedReason::InvalidTimestamp
    );
    assert_eq!(
        malformed(&format!("v=-1,d={VECTOR_DIGEST}")),
        MalformedReason::InvalidTimestamp
    );
    assert_eq!(
        malformed(&format!("v={TS},d={VECTOR_DIGEST},x=1")),
        MalformedReason::UnexpectedPart
    );
    assert_eq!(malformed(""), MalformedReason::UnexpectedPart);

    let mut twice = headers(&sign_payload(VECTOR_BODY, KEY, TS));
    twice.append(
        SIGNATURE_HEADER,
        HeaderValue::from_str(&sign_payload(VECTOR_BODY, KEY, TS)).unwrap(),
    );
    assert_eq!(
        sig_err(&twice, body, KEY, now),
        SignatureError::MalformedHeader(MalformedReason::Repeated)
    );
    let mut binary = HeaderMap::new();
    binary.insert(
        SIGNATURE_HEADER,
        HeaderValue::from_bytes(b"v=1,d=\xff").unwrap(),
    );
    assert_eq!(
        sig_err(&binary, body, KEY, now),
        SignatureError::MalformedHeader(MalformedReason::NotText)
    );
    assert_eq!(
        sig_err(&headers(&sign_payload(VECTOR_BODY, "", TS)), body, "", now),
        SignatureError::MissingKey
    );
}

#[test]
fn header_name_is_case_insensitive_and_parts_may_have_spaces() {
    let mut h = HeaderMap::new();
    h.insert(
        "X-Retell-Signature",
        HeaderValue::from_str(&format!("v={TS}, d={VECTOR_DIGEST}")).unwrap(),
    );
    assert!(verify_signature(&h, VECTOR_BODY.as_bytes(), KEY, at(TS)).is_ok());
}

fn signed(body: &str, now_ms: i64) -> HeaderMap {
    headers(&sign_payload(body, KEY, now_ms))
}

fn event_body(event: &str, call: serde_json::Value) -> String {
    serde_json::json!({ "event": event, "call": call }).to_string()
}

#[test]
fn every_event_type_parses() {
    let id = CallId::new();
    let call = serde_json::json!({
        "call_id": "rc_1",
        "call_status": "ongoing",
        "metadata": { "callcat_call_id": id.to_string() },
        "start_timestamp": TS - 10_000,
    });
    let cases = [
        ("call_started", ProviderEventKind::Started),
        ("call_ended", ProviderEventKind::Ended),
        ("call_analyzed", ProviderEventKind::Analyzed),
        ("transcript_updated", ProviderEventKind::TranscriptUpdated),
        (
            "transfer_started",
            ProviderEventKind::Other("transfer_started".into()),
        ),
        (
            "transfer_bridged",
            ProviderEventKind::Other("transfer_bridged".into()),
        ),
        (
            "transfer_cancelled",
            ProviderEventKind::Other("transfer_cancelled".into()),
        ),
        (
            "transfer_ended",
            ProviderEventKind::Other("transfer_ended".into()),
        ),
        (
            "call_paused_someday",
            ProviderEventKind::Other("call_paused_someday".into()),
        ),
    ];
    for (event, kind) in cases {
        let body = event_body(event, call.clone());
        let events = verify_and_parse(&signed(&body, TS), body.as_bytes(), KEY, at(TS)).unwrap();
        assert_eq!(events.len(), 1, "{event}");
        let e = &events[0];
        assert_eq!(e.kind, kind, "{event}");
        assert_eq!(e.provider, "retell");
        assert_eq!(e.call.provider_call_id, "rc_1");
        assert_eq!(e.call.call_id, Some(id));
        assert_eq!(e.call.state, ProviderCallState::InProgress);
        assert_eq!(e.sequence, None);
    }
}

#[test]
fn call_started_and_ended_carry_times_and_outcome() {
    let started = event_body(
        "call_started",
        serde_json::json!({"call_id": "rc_2", "call_status": "ongoing", "start_timestamp": TS - 5_000}),
    );
    let ev = verify_and_parse(&signed(&started, TS), started.as_bytes(), KEY, at(TS)).unwrap();
    assert_eq!(ev[0].occurred_at, Some(at(TS - 5_000)));
    assert_eq!(ev[0].call.started_at, Some(at(TS - 5_000)));
    assert_eq!(ev[0].call.outcome, None);

    let ended = event_body(
        "call_ended",
        serde_json::json!({
            "call_id": "rc_2", "call_status": "not_connected",
            "disconnection_reason": "dial_busy",
            "start_timestamp": TS - 30_000, "end_timestamp": TS - 1_000,
        }),
    );
    let ev = verify_and_parse(&signed(&ended, TS), ended.as_bytes(), KEY, at(TS)).unwrap();
    assert_eq!(ev[0].kind, ProviderEventKind::Ended);
    assert_eq!(ev[0].occurred_at, Some(at(TS - 1_000)));
    assert_eq!(ev[0].call.state, ProviderCallState::Ended);
    assert_eq!(ev[0].call.outcome, Some(CallOutcome::Busy));
    assert_eq!(
        ev[0].call.started_at, None,
        "a busy line was never answered"
    );
}

#[test]
fn unknown_event_without_call_is_not_an_error_but_known_one_is() {
    let body = r#"{"event":"account_notice"}"#;
    let ev = verify_and_parse(&signed(body, TS), body.as_bytes(), KEY, at(TS)).unwrap();
    assert!(ev.is_empty());

    let body = r#"{"event":"call_ended"}"#;
    let err = verify_and_parse(&signed(body, TS), body.as_bytes(), KEY, at(TS)).unwrap_err();
    assert!(matches!(err, WebhookError::MissingCall { ref event } if event == "call_ended"));
    let core: callcat_core::Error = err.into();
    assert_eq!(core.kind(), ErrorKind::Validation);
}

#[test]
fn bad_json_after_a_valid_signature_is_a_validation_error() {
    for body in [
        "not json",
        r#"{"call":{"call_id":"x"}}"#,
        r#"{"event":"call_ended","call":{"no_id":1}}"#,
    ] {
        let err = verify_and_parse(&signed(body, TS), body.as_bytes(), KEY, at(TS)).unwrap_err();
        assert!(
            matches!(err, WebhookError::InvalidBody(_)),
            "{body}: {err:?}"
        );
        let core: callcat_core::Error = err.into();
        assert_eq!(core.kind(), ErrorKind::Validation, "{body}");
        assert_eq!(core.source_name(), Some("retell"));
    }
}

#[test]
fn signature_is_checked_before_the_body_is_parsed() {
    // Garbage body with a bad signature: the signature error wins.
    let err = verify_and_parse(
        &headers(&format!("v={TS},d={VECTOR_DIGEST}")),
        b"not json",
        KEY,
        at(TS),
    )
    .unwrap_err();
    assert_eq!(err.signature_error(), Some(&SignatureError::Mismatch));
}

#[test]
fn verifier_implements_the_core_trait_and_maps_to_unauthorized() {
    let verifier = RetellWebhookVerifier::new(KEY).unwrap();
    assert!(!format!("{verifier:?}").contains(KEY));
    let body = event_body(
        "call_analyzed",
        serde_json::json!({
            "call_id": "rc_3", "call_status": "ended", "end_timestamp": TS - 100,
            "call_analysis": {"call_summary": "booked", "call_successful": true}
        }),
    );
    let now = at(TS) + Duration::seconds(30);
    let h = signed(&body, TS);
    let req = WebhookRequest {
        url: "https://example.test/hooks/retell",
        headers: &h,
        body: body.as_bytes(),
    };
    let ev = verifier.verify_and_parse(req, now).unwrap();
    assert_eq!(ev[0].kind, ProviderEventKind::Analyzed);
    assert_eq!(
        ev[0].call.analysis.as_ref().unwrap().summary.as_deref(),
        Some("booked")
    );

    let stale_now = at(TS) + Duration::minutes(6);
    let err = verifier.verify_and_parse(req, stale_now).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(!err.is_retryable());
    assert_eq!(err.source_name(), Some("retell"));
    let source = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<SignatureError>())
        .unwrap();
    assert!(matches!(source, SignatureError::StaleTimestamp { .. }));

    let empty = HeaderMap::new();
    let req = WebhookRequest {
        url: "",
        headers: &empty,
        body: body.as_bytes(),
    };
    assert_eq!(
        verifier.verify_and_parse(req, now).unwrap_err().kind(),
        ErrorKind::Unauthorized
    );

    assert_eq!(
        RetellWebhookVerifier::new("  ").unwrap_err().kind(),
        ErrorKind::Validation
    );
}
