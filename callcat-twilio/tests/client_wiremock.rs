//! The REST client against wiremock: the exact create form, fetch parsing,
//! end-call decisions, and every error mapping.

use std::time::Duration;

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{
    Call, CallId, CallOutcome, CallTemplate, ErrorKind, Limits, NewCall, Owner, PhoneNumber,
    ProviderCallState, TelephonyProvider,
};
use callcat_twilio::TwilioProvider;
use wiremock::matchers::{basic_auth, body_string, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const CALLS: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";
const CALL: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls/CA11111111111111111111111111111111.json";
const CALL_SID: &str = "CA11111111111111111111111111111111";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).expect("time")
}

fn call() -> Call {
    let template = CallTemplate::new(
        "Ada",
        PhoneNumber::parse("+14155552671").expect("phone"),
        "Reflection",
        "Ask the reflection prompts",
    );
    let mut c = NewCall::new(template)
        .into_call(Owner::new("t", "u"), t0(), &Limits::default())
        .expect("call");
    c.id = "01900000-0000-7000-8000-000000000001"
        .parse::<CallId>()
        .expect("id");
    c
}

fn provider(server: &MockServer) -> TwilioProvider {
    TwilioProvider::builder()
        .account_sid(SID)
        .auth_token("secret-token")
        .from_number(PhoneNumber::parse("+14155550100").expect("phone"))
        .base_url(server.uri())
        .public_base_url("https://calls.example.com/")
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("provider")
}

fn call_json(status: &str) -> serde_json::Value {
    serde_json::json!({
        "sid": CALL_SID,
        "account_sid": SID,
        "status": status,
        "start_time": "Tue, 31 Aug 2010 20:36:29 +0000",
        "end_time": "Tue, 31 Aug 2010 20:36:44 +0000",
        "duration": "15",
        "answered_by": null,
        "price": "-0.03000",
        "price_unit": "USD"
    })
}

fn twilio_error(code: i64, status: u16, message: &str) -> serde_json::Value {
    serde_json::json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status
    })
}

#[tokio::test]
async fn create_sends_the_exact_form_body() {
    let server = MockServer::start().await;
    let id = "01900000-0000-7000-8000-000000000001";
    let status = format!(
        "https%3A%2F%2Fcalls.example.com%2Fwebhooks%2Ftwilio%2Fstatus%3Fcallcat_call_id%3D{id}"
    );
    let expected = [
        "To=%2B14155552671".to_string(),
        "From=%2B14155550100".into(),
        format!("Url=https%3A%2F%2Fcalls.example.com%2Fwebhooks%2Ftwilio%2Ftwiml%2F{id}"),
        "Method=POST".into(),
        format!("StatusCallback={status}"),
        "StatusCallbackMethod=POST".into(),
        "StatusCallbackEvent=initiated".into(),
        "StatusCallbackEvent=ringing".into(),
        "StatusCallbackEvent=answered".into(),
        "StatusCallbackEvent=completed".into(),
        "Timeout=30".into(),
        "MachineDetection=Enable".into(),
        "AsyncAmd=true".into(),
        format!("AsyncAmdStatusCallback={status}"),
        "AsyncAmdStatusCallbackMethod=POST".into(),
    ]
    .join("&");
    Mock::given(method("POST"))
        .and(path(CALLS))
        .and(basic_auth(SID, "secret-token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(expected))
        .respond_with(ResponseTemplate::new(201).set_body_json(call_json("queued")))
        .expect(1)
        .mount(&server)
        .await;
    let accepted = provider(&server).place_call(&call()).await.expect("placed");
    assert_eq!(accepted.provider_call_id, CALL_SID);
}

#[tokio::test]
async fn create_uses_the_callers_number_and_asks_for_recording() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS))
        .respond_with(ResponseTemplate::new(201).set_body_json(call_json("queued")))
        .mount(&server)
        .await;
    let p = TwilioProvider::builder()
        .account_sid(SID)
        .auth_token("secret-token")
        .base_url(server.uri())
        .public_base_url("https://calls.example.com")
        .machine_detection(false)
        .record(true)
        .ring_timeout(Duration::from_secs(45))
        .build()
        .expect("provider");
    let mut c = call();
    // No from number anywhere: a validation error, nothing sent.
    let err = p.place_call(&c).await.expect_err("no from");
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert!(
        server
            .received_requests()
            .await
            .expect("recorded")
            .is_empty()
    );

    c.caller_number = Some(PhoneNumber::parse("+14155550199").expect("phone"));
    p.place_call(&c).await.expect("placed");
    let reqs = server.received_requests().await.expect("recorded");
    let body = String::from_utf8(reqs[0].body.clone()).expect("utf8");
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("From"), ["+14155550199"]);
    assert_eq!(get("Record"), ["true"]);
    assert_eq!(get("Timeout"), ["45"]);
    assert!(get("MachineDetection").is_empty());
    assert!(get("AsyncAmd").is_empty());
    assert_eq!(
        get("RecordingStatusCallback"),
        [format!(
            "https://calls.example.com/webhooks/twilio/status?callcat_call_id={}",
            c.id
        )
        .as_str()]
    );
}

#[tokio::test]
async fn fetch_parses_the_call_resource() {
    let server = MockServer::start().await;
    let mut body = call_json("completed");
    body["answered_by"] = "machine_end_beep".into();
    Mock::given(method("GET"))
        .and(path(CALL))
        .and(basic_auth(SID, "secret-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let pc = provider(&server)
        .fetch_call(CALL_SID)
        .await
        .expect("fetched");
    assert_eq!(pc.provider_call_id, CALL_SID);
    assert_eq!(pc.state, ProviderCallState::Ended);
    assert_eq!(pc.outcome, Some(CallOutcome::Voicemail));
    assert_eq!(pc.duration_ms, Some(15_000));
    assert_eq!(
        pc.started_at.map(|t| t.to_rfc3339()),
        Some("2010-08-31T20:36:29+00:00".into())
    );
    let cost = pc.cost.expect("cost");
    assert!((cost.total - 0.03).abs() < 1e-9);
    assert_eq!(cost.currency, "USD");
}

#[tokio::test]
async fn fetch_refuses_a_sid_that_would_change_the_path() {
    let server = MockServer::start().await;
    let err = provider(&server)
        .fetch_call("../Accounts")
        .await
        .expect_err("bad sid");
    assert_eq!(err.kind(), ErrorKind::Validation);
}

async fn end_with(initial: &str, after_cancel: Option<&str>) -> Vec<String> {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(CALL))
        .respond_with(ResponseTemplate::new(200).set_body_json(call_json(initial)))
        .mount(&server)
        .await;
    let after = after_cancel.unwrap_or("canceled").to_string();
    Mock::given(method("POST"))
        .and(path(CALL))
        .respond_with(move |req: &Request| {
            let body = String::from_utf8_lossy(&req.body).to_string();
            let status = if body == "Status=canceled" {
                after.clone()
            } else {
                "completed".to_string()
            };
            ResponseTemplate::new(200).set_body_json(call_json(&status))
        })
        .mount(&server)
        .await;
    provider(&server).end_call(CALL_SID).await.expect("ended");
    server
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| String::from_utf8_lossy(&r.body).to_string())
        .collect()
}

#[tokio::test]
async fn end_cancels_before_answer_and_completes_after() {
    assert_eq!(end_with("queued", None).await, ["Status=canceled"]);
    assert_eq!(end_with("ringing", None).await, ["Status=canceled"]);
    assert_eq!(end_with("in-progress", None).await, ["Status=completed"]);
    assert!(end_with("completed", None).await.is_empty());
    assert!(end_with("busy", None).await.is_empty());
    // Answered between the fetch and the cancel: Twilio ignores the cancel.
    assert_eq!(
        end_with("ringing", Some("in-progress")).await,
        ["Status=canceled", "Status=completed"]
    );
}

async fn create_error(resp: ResponseTemplate) -> callcat_core::Error {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS))
        .respond_with(resp)
        .mount(&server)
        .await;
    provider(&server)
        .place_call(&call())
        .await
        .expect_err("error")
}

#[tokio::test]
async fn rate_limits_are_retryable_with_retry_after() {
    let e = create_error(
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "7")
            .set_body_json(twilio_error(20429, 429, "Too Many Requests")),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(e.source_name(), Some("twilio"));
    assert!(e.message().contains("Too Many Requests"));

    // Code 20429 under another HTTP status is a rate limit too.
    let e = create_error(
        ResponseTemplate::new(400).set_body_json(twilio_error(20429, 400, "Too many")),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::RateLimited);
}

#[tokio::test]
async fn server_errors_are_unavailable() {
    for status in [500, 502, 503] {
        let e = create_error(
            ResponseTemplate::new(status)
                .insert_header("Retry-After", "3")
                .set_body_string("<html>bad gateway</html>"),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{status}");
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(e.message().contains("bad gateway"), "{}", e.message());
    }
}

#[tokio::test]
async fn invalid_numbers_are_permanent_rejections() {
    for code in [21211, 21214, 21217] {
        let msg = format!("The 'To' number +1415 is not valid ({code})");
        let e =
            create_error(ResponseTemplate::new(400).set_body_json(twilio_error(code, 400, &msg)))
                .await;
        assert_eq!(e.kind(), ErrorKind::Rejected, "{code}");
        assert!(!e.is_retryable());
        assert!(e.message().contains(&msg), "{}", e.message());
        assert!(e.message().contains("docs/errors"));
        assert_eq!(e.field(), Some("phoneNumber"));
    }
    // Another 4xx: rejected, no field.
    let e = create_error(ResponseTemplate::new(400).set_body_json(twilio_error(
        21205,
        400,
        "Url is not valid",
    )))
    .await;
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert_eq!(e.field(), None);
    // Retry-After on a permanent error is not attached.
    let e = create_error(
        ResponseTemplate::new(403)
            .insert_header("Retry-After", "5")
            .set_body_json(twilio_error(20403, 403, "Forbidden")),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert_eq!(e.retry_after(), None);
}

#[tokio::test]
async fn unauthorized_and_not_found() {
    let e = create_error(ResponseTemplate::new(401).set_body_json(twilio_error(
        20003,
        401,
        "Authenticate",
    )))
    .await;
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(!e.is_retryable());

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(CALL))
        .respond_with(ResponseTemplate::new(404).set_body_json(twilio_error(
            20404,
            404,
            "not found",
        )))
        .mount(&server)
        .await;
    let e = provider(&server)
        .fetch_call(CALL_SID)
        .await
        .expect_err("404");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_unavailable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(call_json("queued"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let p = TwilioProvider::builder()
        .account_sid(SID)
        .auth_token("secret-token")
        .from_number(PhoneNumber::parse("+14155550100").expect("phone"))
        .base_url(server.uri())
        .public_base_url("https://calls.example.com")
        .request_timeout(Duration::from_millis(200))
        .build()
        .expect("provider");
    let e = p.place_call(&call()).await.expect_err("timeout");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_retryable());

    // Nothing listens on a port taken from a closed listener.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let p = TwilioProvider::builder()
        .account_sid(SID)
        .auth_token("secret-token")
        .from_number(PhoneNumber::parse("+14155550100").expect("phone"))
        .base_url(format!("http://127.0.0.1:{port}"))
        .public_base_url("https://calls.example.com")
        .build()
        .expect("provider");
    let e = p.place_call(&call()).await.expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn a_garbled_success_body_is_not_retried() {
    let e = create_error(ResponseTemplate::new(201).set_body_string("not json")).await;
    assert!(!e.is_retryable());
}

#[test]
fn builder_validates_and_debug_hides_the_token() {
    let ok = || {
        TwilioProvider::builder()
            .account_sid(SID)
            .auth_token("super-secret-token")
            .public_base_url("https://calls.example.com")
    };
    let p = ok().build().expect("valid");
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("super-secret-token"), "{dbg}");
    assert!(dbg.contains("redacted"));
    assert!(!format!("{:?}", ok()).contains("super-secret-token"));

    let kind = |b: callcat_twilio::TwilioProviderBuilder| {
        b.build().expect_err("invalid").field().map(str::to_string)
    };
    assert_eq!(kind(ok().account_sid("XX123")), Some("account_sid".into()));
    assert_eq!(kind(ok().auth_token("")), Some("auth_token".into()));
    assert_eq!(kind(ok().base_url("ftp://x")), Some("base_url".into()));
    assert_eq!(
        kind(ok().public_base_url("not a url")),
        Some("public_base_url".into())
    );
    assert_eq!(
        kind(ok().public_base_url("https://x.example/?a=1")),
        Some("public_base_url".into())
    );
    assert_eq!(
        kind(ok().ring_timeout(Duration::from_secs(2))),
        Some("ring_timeout".into())
    );
    assert_eq!(
        kind(ok().status_callback_events(["initiated", "bogus"])),
        Some("status_callback_events".into())
    );
    let paths = callcat_twilio::CallbackPaths {
        twiml: "/twiml".into(),
        ..Default::default()
    };
    assert_eq!(kind(ok().callback_paths(paths)), Some("twiml_path".into()));
    let missing = TwilioProvider::builder()
        .account_sid(SID)
        .auth_token("t")
        .build()
        .expect_err("no public url");
    assert_eq!(missing.field(), Some("public_base_url"));
}
