//! Signatures (Twilio's published vector, tampering, the bodySHA256 variant),
//! status callbacks, AMD, recordings, real-time transcription.

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{
    CallId, CallOutcome, ErrorKind, ProviderCallState, ProviderEventKind, SpeakerRole,
    WebhookRequest, WebhookVerifier,
};
use callcat_twilio::signature::{
    body_sha256_hex, validate_body_signature, validate_form_signature,
};
use callcat_twilio::{
    SignatureError, TranscriptStage, TranscriptionEvent, TwilioWebhookError, TwilioWebhookVerifier,
    compute_signature,
};
use http::{HeaderMap, HeaderValue};

const VECTOR_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const VECTOR_PARAMS: [(&str, &str); 5] = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675309"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
];
const VECTOR_SIGNATURE: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

const TOKEN: &str = "test-auth-token";
const PUBLIC: &str = "https://calls.example.com";
const CALL_ID: &str = "01900000-0000-7000-8000-000000000001";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).expect("time")
}

#[test]
fn twilios_published_vector() {
    assert_eq!(
        compute_signature("12345", VECTOR_URL, &VECTOR_PARAMS),
        VECTOR_SIGNATURE
    );
    // Order of the given parameters does not matter: they are sorted.
    let mut shuffled = VECTOR_PARAMS;
    shuffled.reverse();
    assert_eq!(
        compute_signature("12345", VECTOR_URL, &shuffled),
        VECTOR_SIGNATURE
    );
    validate_form_signature("12345", VECTOR_SIGNATURE, VECTOR_URL, &VECTOR_PARAMS).expect("valid");
    // Twilio may have signed the URL with the default port spelled out.
    validate_form_signature(
        "12345",
        VECTOR_SIGNATURE,
        "https://mycompany.com:443/myapp.php?foo=1&bar=2",
        &VECTOR_PARAMS,
    )
    .expect("valid with :443");
}

#[test]
fn tampering_other_urls_and_wrong_tokens_are_rejected() {
    let mut tampered = VECTOR_PARAMS;
    tampered[2] = ("Digits", "1235");
    assert_eq!(
        validate_form_signature("12345", VECTOR_SIGNATURE, VECTOR_URL, &tampered),
        Err(SignatureError::Mismatch)
    );
    let extra: Vec<(&str, &str)> = VECTOR_PARAMS
        .iter()
        .copied()
        .chain([("Extra", "1")])
        .collect();
    assert!(validate_form_signature("12345", VECTOR_SIGNATURE, VECTOR_URL, &extra).is_err());
    for url in [
        "https://mycompany.com/myapp.php?foo=1&bar=3",
        "http://mycompany.com/myapp.php?foo=1&bar=2",
        "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
        "https://evil.com/myapp.php?foo=1&bar=2",
    ] {
        assert!(
            validate_form_signature("12345", VECTOR_SIGNATURE, url, &VECTOR_PARAMS).is_err(),
            "{url}"
        );
    }
    assert!(
        validate_form_signature("54321", VECTOR_SIGNATURE, VECTOR_URL, &VECTOR_PARAMS).is_err()
    );
    assert!(validate_form_signature("12345", "", VECTOR_URL, &VECTOR_PARAMS).is_err());
}

#[test]
fn body_sha256_variant() {
    let body = br#"{"property": "value", "boolean": true}"#;
    let hash = body_sha256_hex(body);
    assert_eq!(hash.len(), 64);
    let url = format!("https://mycompany.com/myapp?bodySHA256={hash}");
    // Signed over the URL alone.
    let sig = compute_signature::<&str, &str>("12345", &url, &[]);
    validate_body_signature("12345", &sig, &url, body).expect("valid");
    // A different body no longer matches the hash, although the URL signature does.
    assert_eq!(
        validate_body_signature("12345", &sig, &url, b"{\"property\": \"other\"}"),
        Err(SignatureError::BodyHashMismatch)
    );
    assert_eq!(
        validate_body_signature("wrong", &sig, &url, body),
        Err(SignatureError::Mismatch)
    );
    // Through the verifier: the bodySHA256 URL selects this variant.
    let v = TwilioWebhookVerifier::new("12345", "https://mycompany.com");
    let headers = headers_with(&sig);
    let target = format!("/myapp?bodySHA256={hash}");
    v.verify(WebhookRequest {
        url: &target,
        headers: &headers,
        body,
    })
    .expect("verified");
    let err = v
        .verify(WebhookRequest {
            url: &target,
            headers: &headers,
            body: b"{}",
        })
        .expect_err("tampered body");
    assert_eq!(
        err,
        TwilioWebhookError::Signature(SignatureError::BodyHashMismatch)
    );
}

fn headers_with(sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "x-twilio-signature",
        HeaderValue::from_str(sig).expect("header"),
    );
    h
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes()
}

/// A signed status callback request to the status path.
fn signed(pairs: &[(&str, &str)]) -> (String, HeaderMap, Vec<u8>) {
    let target = format!("/webhooks/twilio/status?callcat_call_id={CALL_ID}");
    let sig = compute_signature(TOKEN, &format!("{PUBLIC}{target}"), pairs);
    (target, headers_with(&sig), form(pairs))
}

fn verifier() -> TwilioWebhookVerifier {
    TwilioWebhookVerifier::new(TOKEN, format!("{PUBLIC}/"))
}

fn status_event(pairs: &[(&str, &str)]) -> callcat_core::ProviderEvent {
    let (target, headers, body) = signed(pairs);
    let mut events = verifier()
        .verify_and_parse(
            WebhookRequest {
                url: &target,
                headers: &headers,
                body: &body,
            },
            now(),
        )
        .expect("parsed");
    assert_eq!(events.len(), 1);
    events.remove(0)
}

const BASE: [(&str, &str); 4] = [
    ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
    ("CallSid", "CA11111111111111111111111111111111"),
    ("From", "+14155550100"),
    ("To", "+14155552671"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    BASE.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn status_callbacks_become_events() {
    let ringing = status_event(&with(&[
        ("CallStatus", "ringing"),
        ("SequenceNumber", "1"),
        ("Timestamp", "Tue, 31 Aug 2010 20:36:28 +0000"),
        ("CallbackSource", "call-progress-events"),
    ]));
    assert_eq!(ringing.provider, "twilio");
    assert_eq!(ringing.kind, ProviderEventKind::Ringing);
    assert_eq!(ringing.sequence, Some(1));
    assert_eq!(ringing.call.state, ProviderCallState::Ringing);
    assert_eq!(
        ringing.call.provider_call_id,
        "CA11111111111111111111111111111111"
    );
    assert_eq!(
        ringing.call.call_id,
        Some(CALL_ID.parse::<CallId>().expect("id"))
    );
    assert_eq!(
        ringing.occurred_at.map(|t| t.to_rfc3339()),
        Some("2010-08-31T20:36:28+00:00".into())
    );

    let answered = status_event(&with(&[
        ("CallStatus", "in-progress"),
        ("SequenceNumber", "2"),
        ("Timestamp", "Tue, 31 Aug 2010 20:36:30 +0000"),
    ]));
    assert_eq!(answered.kind, ProviderEventKind::Started);
    assert_eq!(answered.call.started_at, answered.occurred_at);

    let completed = status_event(&with(&[
        ("CallStatus", "completed"),
        ("CallDuration", "42"),
        ("SequenceNumber", "3"),
        ("Timestamp", "Tue, 31 Aug 2010 20:37:12 +0000"),
        ("RecordingUrl", "https://api.twilio.com/recordings/RE1"),
    ]));
    assert_eq!(completed.kind, ProviderEventKind::Ended);
    assert_eq!(completed.call.outcome, Some(CallOutcome::Answered));
    assert_eq!(completed.call.duration_ms, Some(42_000));
    assert_eq!(
        completed.call.started_at.map(|t| t.to_rfc3339()),
        Some("2010-08-31T20:36:30+00:00".into())
    );
    assert_eq!(
        completed.call.recording_url.as_deref(),
        Some("https://api.twilio.com/recordings/RE1")
    );

    for (status, outcome, state) in [
        ("busy", CallOutcome::Busy, ProviderCallState::Ended),
        ("no-answer", CallOutcome::NoAnswer, ProviderCallState::Ended),
        ("failed", CallOutcome::DialError, ProviderCallState::Error),
        ("canceled", CallOutcome::Canceled, ProviderCallState::Ended),
    ] {
        let e = status_event(&with(&[("CallStatus", status)]));
        assert_eq!(e.kind, ProviderEventKind::Ended, "{status}");
        assert_eq!(e.call.outcome, Some(outcome), "{status}");
        assert_eq!(e.call.state, state, "{status}");
    }
    let machine = status_event(&with(&[
        ("CallStatus", "completed"),
        ("AnsweredBy", "machine_end_beep"),
    ]));
    assert_eq!(machine.call.outcome, Some(CallOutcome::Voicemail));
    let human = status_event(&with(&[
        ("CallStatus", "completed"),
        ("AnsweredBy", "human"),
    ]));
    assert_eq!(human.call.outcome, Some(CallOutcome::Answered));
}

#[test]
fn async_amd_and_recording_callbacks() {
    let amd = status_event(&with(&[
        ("AnsweredBy", "machine_start"),
        ("MachineDetectionDuration", "2500"),
    ]));
    assert_eq!(
        amd.kind,
        ProviderEventKind::Other("amd:machine_start".into())
    );
    assert_eq!(amd.call.state, ProviderCallState::InProgress);
    assert_eq!(amd.call.analysis.and_then(|a| a.in_voicemail), Some(true));
    let human = status_event(&with(&[("AnsweredBy", "human")]));
    assert!(human.call.analysis.is_none());

    let rec = status_event(&with(&[
        ("RecordingStatus", "completed"),
        ("RecordingSid", "RE1"),
        ("RecordingUrl", "https://api.twilio.com/recordings/RE1"),
    ]));
    assert_eq!(
        rec.kind,
        ProviderEventKind::Other("recording:completed".into())
    );
    assert_eq!(
        rec.call.recording_url.as_deref(),
        Some("https://api.twilio.com/recordings/RE1")
    );
}

#[test]
fn bad_signatures_are_unauthorized_and_bad_forms_validation() {
    let pairs = with(&[("CallStatus", "ringing")]);
    let (target, headers, body) = signed(&pairs);
    let v = verifier();
    let verify = |url: &str, headers: &HeaderMap, body: &[u8]| {
        v.verify_and_parse(WebhookRequest { url, headers, body }, now())
    };
    // Tampered body.
    let tampered = form(&with(&[("CallStatus", "completed")]));
    let e = verify(&target, &headers, &tampered).expect_err("tampered");
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert_eq!(e.source_name(), Some("twilio"));
    // Another call id in the URL.
    let other = target.replace("0001", "0002");
    assert_eq!(
        verify(&other, &headers, &body).expect_err("url").kind(),
        ErrorKind::Unauthorized
    );
    // No header.
    assert_eq!(
        verify(&target, &HeaderMap::new(), &body)
            .expect_err("missing")
            .kind(),
        ErrorKind::Unauthorized
    );
    // Another token.
    let e = TwilioWebhookVerifier::new("other", PUBLIC)
        .verify_and_parse(
            WebhookRequest {
                url: &target,
                headers: &headers,
                body: &body,
            },
            now(),
        )
        .expect_err("token");
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    // The absolute public URL works as the target too.
    let absolute = format!("{PUBLIC}{target}");
    verify(&absolute, &headers, &body).expect("absolute URL");

    // Signed but malformed: validation errors, never panics.
    let cases: [(Vec<(&str, &str)>, &str); 5] = [
        (vec![("CallStatus", "ringing")], "CallSid"),
        (BASE.to_vec(), "CallStatus"),
        (
            with(&[("CallStatus", "ringing"), ("SequenceNumber", "x")]),
            "SequenceNumber",
        ),
        (
            with(&[("CallStatus", "completed"), ("CallDuration", "-1")]),
            "CallDuration",
        ),
        (
            with(&[("CallStatus", "ringing"), ("Timestamp", "soon")]),
            "Timestamp",
        ),
    ];
    for (pairs, field) in cases {
        let (target, headers, body) = signed(&pairs);
        let e = verify(&target, &headers, &body).expect_err(field);
        assert_eq!(e.kind(), ErrorKind::Validation, "{field}");
        assert_eq!(e.field(), Some(field));
    }
    // A bad call id in the URL.
    let target = "/webhooks/twilio/status?callcat_call_id=nope";
    let sig = compute_signature(TOKEN, &format!("{PUBLIC}{target}"), &pairs);
    let e = verify(target, &headers_with(&sig), &body).expect_err("bad id");
    assert_eq!(e.kind(), ErrorKind::Validation);
    // A body that is not UTF-8.
    let raw = b"CallSid=\xff\xfe";
    let e = verify(&target.replace("nope", CALL_ID), &headers_with(&sig), raw).expect_err("utf8");
    assert_eq!(e.kind(), ErrorKind::Validation);
}

fn transcription(pairs: &[(&str, &str)]) -> Result<TranscriptionEvent, TwilioWebhookError> {
    let target = format!("/webhooks/twilio/transcription?callcat_call_id={CALL_ID}");
    let sig = compute_signature(TOKEN, &format!("{PUBLIC}{target}"), pairs);
    let headers = headers_with(&sig);
    let body = form(pairs);
    verifier().verify_transcription(WebhookRequest {
        url: &target,
        headers: &headers,
        body: &body,
    })
}

#[test]
fn realtime_transcription_final_and_partial() {
    let base = [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallSid", "CA11111111111111111111111111111111"),
        ("TranscriptionSid", "GT1"),
        ("TranscriptionEvent", "transcription-content"),
        ("LanguageCode", "en-US"),
        ("Track", "inbound_track"),
        ("Timestamp", "2025-01-01T10:00:01.5Z"),
    ];
    let mut fin = base.to_vec();
    fin.extend([
        ("SequenceId", "4"),
        ("Final", "true"),
        (
            "TranscriptionData",
            r#"{"transcript":"I am grateful for my family.","confidence":0.93}"#,
        ),
    ]);
    let TranscriptionEvent::Content(u) = transcription(&fin).expect("parsed") else {
        panic!("not content");
    };
    assert_eq!(u.stage, TranscriptStage::Final);
    assert!(u.should_store());
    assert_eq!(u.sequence, Some(4));
    assert_eq!(u.segment.role, SpeakerRole::User);
    assert_eq!(u.segment.text, "I am grateful for my family.");
    assert_eq!(u.confidence, Some(0.93));
    assert_eq!(u.call_id, Some(CALL_ID.parse().expect("id")));
    assert!(u.occurred_at.is_some());

    let mut partial = base.to_vec();
    partial[5] = ("Track", "outbound_track");
    partial.extend([
        ("SequenceId", "3"),
        ("Final", "false"),
        ("TranscriptionData", r#"{"transcript":"What are you"}"#),
    ]);
    let TranscriptionEvent::Content(p) = transcription(&partial).expect("parsed") else {
        panic!("not content");
    };
    assert_eq!(p.stage, TranscriptStage::Partial);
    assert!(!p.should_store());
    assert_eq!(p.segment.role, SpeakerRole::Agent);

    let mut started = base.to_vec();
    started[3] = ("TranscriptionEvent", "transcription-started");
    assert!(matches!(
        transcription(&started),
        Ok(TranscriptionEvent::Started { .. })
    ));

    let mut bad_json = base.to_vec();
    bad_json.extend([("Final", "true"), ("TranscriptionData", "{not json")]);
    assert!(matches!(
        transcription(&bad_json),
        Err(TwilioWebhookError::Field {
            field: "TranscriptionData",
            ..
        })
    ));
    let mut bad_final = base.to_vec();
    bad_final.extend([
        ("Final", "maybe"),
        ("TranscriptionData", r#"{"transcript":"x"}"#),
    ]);
    let e: callcat_core::Error = transcription(&bad_final).expect_err("final").into();
    assert_eq!(e.kind(), ErrorKind::Validation);
    assert_eq!(e.field(), Some("Final"));
}

#[test]
fn a_huge_signed_call_duration_is_clamped_never_a_panic() {
    let max_s = callcat_core::time::MAX_CALL_DURATION_MS / 1000;
    for huge in [
        "9223372036854775",
        "9200000000000000",
        "18446744073709551615",
    ] {
        let completed = status_event(&with(&[
            ("CallStatus", "completed"),
            ("CallDuration", huge),
            ("Timestamp", "Tue, 31 Aug 2010 20:37:12 +0000"),
        ]));
        assert_eq!(
            completed.call.duration_ms,
            Some(callcat_core::time::MAX_CALL_DURATION_MS),
            "{huge}"
        );
        let end = completed.call.ended_at.expect("ended");
        assert_eq!(
            completed.call.started_at,
            Some(end - callcat_core::chrono::TimeDelta::seconds(max_s as i64)),
            "{huge}"
        );
    }
}
