//! The REST client against a wiremock server: exact requests and every error mapping.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{
    Call, CallOutcome, CallTemplate, ErrorKind, Limits, ManualClock, NewCall, Owner, PhoneNumber,
    ProviderCallState, TelephonyProvider,
};
use callcat_retell::RetellProvider;
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "key_test_123";
const FIXTURE: &str = include_str!("fixtures/retell_call_object.json");

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn phone(s: &str) -> PhoneNumber {
    PhoneNumber::parse(s).unwrap()
}

fn call() -> Call {
    let mut t = CallTemplate::new(
        "Ada Lovelace",
        phone("+14155552671"),
        "Dentist appointment",
        "Confirm the appointment on Monday at 10.",
    );
    t.language = Some("en-US".into());
    t.variables.insert("clinic".into(), "Smile Co".into());
    t.metadata.insert("crm_id".into(), json!(42));
    NewCall::new(t)
        .into_call(Owner::new("acme", "u1"), now(), &Limits::default())
        .unwrap()
}

fn provider(server: &MockServer) -> RetellProvider {
    RetellProvider::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .from_number("+4930901820")
        .clock(Arc::new(ManualClock::new(now())))
        .build()
        .unwrap()
}

#[tokio::test]
async fn place_call_sends_the_documented_request() {
    let server = MockServer::start().await;
    let c = call();
    let expected = json!({
        "from_number": "+4930901820",
        "to_number": "+14155552671",
        "metadata": { "crm_id": 42, "callcat_call_id": c.id.to_string() },
        "retell_llm_dynamic_variables": {
            "callee_name": "Ada Lovelace",
            "subject": "Dentist appointment",
            "prompt": "Confirm the appointment on Monday at 10.",
            "language": "en-US",
            "clinic": "Smile Co"
        }
    });
    Mock::given(method("POST"))
        .and(path("/v2/create-phone-call"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(&expected))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "call_id": "rc_new", "call_status": "registered", "agent_id": "ag_default"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let accepted = provider(&server).place_call(&c).await.unwrap();
    assert_eq!(accepted.provider_call_id, "rc_new");

    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    let sent: serde_json::Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(
        sent, expected,
        "no override_agent_id when no agent is configured"
    );
}

#[tokio::test]
async fn place_call_uses_call_caller_number_and_agent_over_defaults() {
    let server = MockServer::start().await;
    let mut c = call();
    c.caller_number = Some(phone("+442071838750"));
    c.agent_id = Some("ag_call".into());
    c.language = None;
    // A variable of the call overrides the built-in of the same name; our id
    // cannot be overridden through metadata.
    c.variables
        .insert("subject".into(), "Custom subject".into());
    c.metadata
        .insert("callcat_call_id".into(), json!("spoofed"));
    let expected = json!({
        "from_number": "+442071838750",
        "to_number": "+14155552671",
        "override_agent_id": "ag_call",
        "metadata": { "crm_id": 42, "callcat_call_id": c.id.to_string() },
        "retell_llm_dynamic_variables": {
            "callee_name": "Ada Lovelace",
            "subject": "Custom subject",
            "prompt": "Confirm the appointment on Monday at 10.",
            "clinic": "Smile Co"
        }
    });
    Mock::given(method("POST"))
        .and(path("/v2/create-phone-call"))
        .and(body_json(&expected))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"call_id": "rc_2"})))
        .expect(1)
        .mount(&server)
        .await;
    let p = RetellProvider::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .from_number("+4930901820")
        .agent_id("ag_builder")
        .build()
        .unwrap();
    assert_eq!(p.place_call(&c).await.unwrap().provider_call_id, "rc_2");

    // Without a per-call agent, the builder's agent is the override.
    c.agent_id = None;
    let body = p.create_request(&c).unwrap();
    assert_eq!(body.override_agent_id.as_deref(), Some("ag_builder"));
}

#[tokio::test]
async fn place_call_without_any_from_number_is_a_validation_error_and_sends_nothing() {
    let server = MockServer::start().await;
    let p = RetellProvider::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .build()
        .unwrap();
    let err = p.place_call(&call()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert_eq!(err.field(), Some("callerNumber"));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn fetch_call_gets_and_maps_the_call_object() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/get-call/Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(FIXTURE, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let p = provider(&server)
        .fetch_call("Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6")
        .await
        .unwrap();
    assert_eq!(p.provider_call_id, "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6");
    assert_eq!(p.outcome, Some(CallOutcome::Answered));
    assert_eq!(p.duration_ms, Some(10_000));
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs[0].body.is_empty());
    assert!(reqs[0].headers.get("content-type").is_none());
}

#[tokio::test]
async fn end_call_posts_stop_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/stop-call/rc_9"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    provider(&server).end_call("rc_9").await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].body.is_empty(), "stop-call has no body");
    assert!(reqs[0].headers.get("content-type").is_none());
    assert_eq!(
        reqs[0].headers.get("accept").unwrap().to_str().unwrap(),
        "application/json"
    );
}

#[tokio::test]
async fn call_ids_are_path_escaped_and_base_path_prefix_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/proxy/retell/v2/get-call/a%2Fb%3Fc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "call_id": "a/b?c", "call_status": "ongoing"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let p = RetellProvider::builder()
        .api_key(KEY)
        .base_url(format!("{}/proxy/retell/", server.uri()))
        .build()
        .unwrap();
    let c = p.fetch_call("a/b?c").await.unwrap();
    assert_eq!(c.state, ProviderCallState::InProgress);
    let err = p.fetch_call(" ").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
}

async fn failing(status: u16, body: &str, retry_after: Option<&str>) -> callcat_core::Error {
    let server = MockServer::start().await;
    let mut resp = ResponseTemplate::new(status).set_body_raw(body, "application/json");
    if let Some(ra) = retry_after {
        resp = resp.insert_header("retry-after", ra);
    }
    Mock::given(method("POST"))
        .and(path("/v2/create-phone-call"))
        .respond_with(resp)
        .mount(&server)
        .await;
    provider(&server).place_call(&call()).await.unwrap_err()
}

#[tokio::test]
async fn status_429_is_rate_limited_with_retry_after_seconds() {
    let err = failing(429, r#"{"message":"Too many requests"}"#, Some("7")).await;
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(err.source_name(), Some("retell"));
    assert!(err.message().contains("Too many requests"), "{err}");
}

#[tokio::test]
async fn retry_after_http_date_is_measured_from_the_injected_clock() {
    // now() is 2025-03-01T12:00:00Z.
    let err = failing(503, "", Some("Sat, 01 Mar 2025 12:01:30 GMT")).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(90)));
}

#[tokio::test]
async fn status_500_is_unavailable_and_retryable() {
    let err = failing(500, r#"{"message":"internal"}"#, None).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn status_400_is_rejected_with_retells_message() {
    let err = failing(
        400,
        r#"{"status":"error","message":"to_number is not a valid E.164 number"}"#,
        None,
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert!(!err.is_retryable());
    assert!(
        err.message()
            .contains("to_number is not a valid E.164 number"),
        "{err}"
    );
    assert!(err.message().contains("400"), "{err}");
}

#[tokio::test]
async fn status_401_and_403_are_unauthorized() {
    for status in [401, 403] {
        let err = failing(status, r#"{"message":"Invalid API key"}"#, None).await;
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{status}");
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn status_404_on_fetch_and_end_is_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/get-call/missing"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"message": "Call not found"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/stop-call/missing"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let p = provider(&server);
    let err = p.fetch_call("missing").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains("Call not found"));
    assert_eq!(
        p.end_call("missing").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn timeout_is_unavailable_and_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/get-call/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(FIXTURE, "application/json")
                .set_delay(Duration::from_secs(30)),
        )
        .mount(&server)
        .await;
    let p = RetellProvider::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = p.fetch_call("slow").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert!(err.message().contains("timed out"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_unavailable_and_retryable() {
    // A port that was just free: nothing listens on it any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = RetellProvider::builder()
        .api_key(KEY)
        .base_url(format!("http://127.0.0.1:{port}"))
        .from_number("+4930901820")
        .build()
        .unwrap();
    let err = p.place_call(&call()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert!(err.message().contains("connect"), "{err}");
}

#[tokio::test]
async fn unreadable_success_body_is_internal_not_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/create-phone-call"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"status": "ok"})))
        .mount(&server)
        .await;
    let err = provider(&server).place_call(&call()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    // The call may exist at Retell: retrying blindly could dial twice.
    assert!(!err.is_retryable());
}

#[test]
fn builder_validates_and_debug_hides_the_key() {
    let err = RetellProvider::builder().build().unwrap_err();
    assert_eq!(
        (err.kind(), err.field()),
        (ErrorKind::Validation, Some("api_key"))
    );
    let bad = [
        RetellProvider::builder().api_key("  "),
        RetellProvider::builder().api_key("a b"),
        RetellProvider::builder().api_key("k").base_url("not a url"),
        RetellProvider::builder().api_key("k").base_url("ftp://x"),
        RetellProvider::builder()
            .api_key("k")
            .base_url("http://x/?q=1"),
        RetellProvider::builder().api_key("k").from_number("12345"),
        RetellProvider::builder().api_key("k").agent_id(" "),
        RetellProvider::builder()
            .api_key("k")
            .request_timeout(Duration::ZERO),
        RetellProvider::builder()
            .api_key("k")
            .connect_timeout(Duration::ZERO),
    ];
    let fields: Vec<_> = bad
        .into_iter()
        .map(|b| {
            let e = b.build().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Validation);
            e.field().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        fields,
        [
            "api_key",
            "api_key",
            "base_url",
            "base_url",
            "base_url",
            "from_number",
            "agent_id",
            "request_timeout",
            "connect_timeout"
        ]
    );

    let builder = RetellProvider::builder()
        .api_key("sk_super_secret")
        .from_number("+4930901820");
    assert!(!format!("{builder:?}").contains("sk_super_secret"));
    let p = builder.build().unwrap();
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("sk_super_secret"), "{dbg}");
    assert!(dbg.contains("api.retellai.com"), "{dbg}");
    assert!(p.capabilities().pushes_transcripts);
    assert!(!p.capabilities().lookup_by_call_id);
    assert_eq!(p.name(), "retell");
}

#[tokio::test]
async fn find_by_call_id_is_unsupported() {
    let server = MockServer::start().await;
    let err = provider(&server)
        .find_by_call_id(call().id)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}
