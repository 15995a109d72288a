//! End-to-end tests of the example server's webhooks: the Retell and Twilio
//! providers dial against a local mock API; signed callbacks drive the call,
//! forged ones are refused with 401 and change nothing.

mod common;

use std::time::Duration;

use callcat::Clock as _;
use callcat_server::config::{Secret, TelephonyConfig};
use common::{TestServer, test_config};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const RETELL_KEY: &str = "key_e2e_retell_0123456789";
const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-e2e-token";
const PUBLIC_URL: &str = "https://callcat.example.com";

async fn retell_server() -> (TestServer, MockServer) {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/create-phone-call"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"call_id": "rc_e2e_1", "call_status": "registered"})),
        )
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/v2/get-call/.*"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"call_id": "rc_e2e_1", "call_status": "registered"})),
        )
        .mount(&mock)
        .await;
    let mut config = test_config();
    config.telephony = TelephonyConfig::Retell {
        api_key: Secret::new(RETELL_KEY),
        base_url: Some(mock.uri().parse().expect("url")),
        from_number: callcat::PhoneNumber::parse("+14155550100").expect("phone"),
        agent_id: "agent_e2e".into(),
    };
    (TestServer::start_with(config, |b| b).await, mock)
}

async fn post_retell(s: &TestServer, body: &Value, key: Option<&str>) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).expect("json");
    let mut req = s
        .http
        .post(s.url("/webhooks/retell"))
        .header("content-type", "application/json")
        .body(bytes.clone());
    if let Some(key) = key {
        let sig = callcat_retell::sign_payload(&bytes, key, s.clock.now().timestamp_millis());
        req = req.header(callcat_retell::SIGNATURE_HEADER, sig);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retell_webhooks_are_verified_before_anything_is_stored() {
    let (s, _mock) = retell_server().await;
    let ada = s.token("ada");
    let id = s.create_call(&ada, json!({}), 1).await;
    let ringing = s
        .wait_call(&ada, &id, "dialed at Retell", |c| {
            c["providerCallId"] == "rc_e2e_1"
        })
        .await;
    let start_ms = s.clock.now().timestamp_millis();
    let started = json!({"event": "call_started", "call": {
        "call_id": "rc_e2e_1", "call_status": "ongoing", "start_timestamp": start_ms,
        "metadata": {"callcat_call_id": id}}});
    let ended = json!({"event": "call_ended", "call": {
        "call_id": "rc_e2e_1", "call_status": "ended", "start_timestamp": start_ms,
        "end_timestamp": start_ms + 30_000, "duration_ms": 30_000,
        "disconnection_reason": "agent_hangup",
        "transcript_object": [
            {"role": "agent", "content": "Hello Ada, did the parcel arrive?", "words": []},
            {"role": "user", "content": "Yes, this morning.", "words": []}],
        "metadata": {"callcat_call_id": id}}});

    // Forged: wrong key, no signature, a tampered body. All 401, nothing stored.
    for (body, key) in [
        (&ended, Some("not-the-key")),
        (&ended, None),
        (&started, Some("key_e2e_retell_wrong")),
    ] {
        let (st, err) = post_retell(&s, body, key).await;
        assert_eq!(st, 401, "{err}");
        assert_eq!(err["error"]["code"], "unauthorized");
    }
    let bytes = serde_json::to_vec(&started).expect("json");
    let sig = callcat_retell::sign_payload(&bytes, RETELL_KEY, s.clock.now().timestamp_millis());
    let tampered = serde_json::to_vec(&ended).expect("json");
    let resp = s
        .http
        .post(s.url("/webhooks/retell"))
        .header(callcat_retell::SIGNATURE_HEADER, sig)
        .body(tampered)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401, "a signature over another body");
    let after = s.call(&ada, &id).await;
    assert_eq!(after["status"], ringing["status"]);
    assert_eq!(
        after["updatedAt"], ringing["updatedAt"],
        "the call is untouched"
    );
    let (_, t) = s.get(&format!("/api/calls/{id}/transcript"), &ada).await;
    assert_eq!(t["segments"], json!([]));

    // Signed: applied through the ingestor.
    let (st, ack) = post_retell(&s, &started, Some(RETELL_KEY)).await;
    assert_eq!(st, 200, "{ack}");
    assert_eq!(ack["results"], json!(["applied"]));
    s.wait_status(&ada, &id, "IN_PROGRESS").await;
    let (st, ack) = post_retell(&s, &ended, Some(RETELL_KEY)).await;
    assert_eq!(st, 200, "{ack}");
    let done = s.wait_status(&ada, &id, "COMPLETED").await;
    assert_eq!(done["outcome"], "answered");
    assert_eq!(done["durationMs"], 30_000);
    let (_, t) = s.get(&format!("/api/calls/{id}/transcript"), &ada).await;
    assert_eq!(t["segments"][1]["text"], "Yes, this morning.");
    // A duplicate changes nothing.
    let (st, ack) = post_retell(&s, &ended, Some(RETELL_KEY)).await;
    assert_eq!(st, 200);
    assert_eq!(ack["results"], json!(["duplicate"]));
    assert_eq!(s.call(&ada, &id).await["updatedAt"], done["updatedAt"]);

    // The process's recorder is shared by every test of this binary, so these
    // are lower bounds; tests/server_metrics.rs checks exact values alone.
    let scrape = s.scrape().await;
    let webhooks = |result: &str| {
        common::metric(
            &scrape,
            "callcat_webhook_requests_total",
            &[("provider", "retell"), ("result", result)],
        )
    };
    assert!(webhooks("unauthorized") >= 4.0);
    assert!(webhooks("accepted") >= 3.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_webhooks_over_the_budget_get_429_and_signed_ones_never_do() {
    let mut config = test_config();
    config.telephony = TelephonyConfig::Retell {
        api_key: Secret::new(RETELL_KEY),
        base_url: Some("http://127.0.0.1:9".parse().expect("url")),
        from_number: callcat::PhoneNumber::parse("+14155550100").expect("phone"),
        agent_id: "agent_e2e".into(),
    };
    let s = TestServer::start_with(config, |b| b.webhook_rate_limit(1, 2)).await;
    let body = json!({"event": "call_started", "call": {"call_id": "rc_unknown"}});
    let forged = "key_forged_forged_forged";
    let (a, _) = post_retell(&s, &body, Some(forged)).await;
    let (b, _) = post_retell(&s, &body, Some(forged)).await;
    let (c, err) = post_retell(&s, &body, Some(forged)).await;
    assert_eq!((a, b, c), (401, 401, 429), "{err}");
    assert_eq!(err["error"]["code"], "rate_limited");
    // The same source's signed webhooks are never limited by that budget.
    for _ in 0..5 {
        let (d, ack) = post_retell(&s, &body, Some(RETELL_KEY)).await;
        assert_eq!(d, 200);
        assert_eq!(ack["results"], json!(["unknown_call"]));
    }
    s.advance(Duration::from_secs(1));
    let (e, _) = post_retell(&s, &body, Some(forged)).await;
    assert_eq!(e, 401, "the budget refills on the clock");
    s.stop().await;
}

fn twilio_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn post_twilio(
    s: &TestServer,
    target: &str,
    pairs: &[(&str, &str)],
    token: &str,
) -> (u16, String) {
    let sig = callcat_twilio::compute_signature(token, &format!("{PUBLIC_URL}{target}"), pairs);
    let resp = s
        .http
        .post(s.url(target))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", sig)
        .body(twilio_form(pairs))
        .send()
        .await
        .expect("send");
    let st = resp.status().as_u16();
    (st, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_callbacks_are_verified_and_drive_the_conversation() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"
        )))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "CA_e2e_1", "account_sid": TWILIO_SID, "status": "queued"})))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/2010-04-01/Accounts/.*/Calls/.*"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sid": "CA_e2e_1", "account_sid": TWILIO_SID, "status": "queued"})))
        .mount(&mock)
        .await;
    let mut config = test_config();
    config.public_url = Some(PUBLIC_URL.parse().expect("url"));
    config.telephony = TelephonyConfig::Twilio {
        account_sid: TWILIO_SID.into(),
        auth_token: Secret::new(TWILIO_TOKEN),
        from_number: callcat::PhoneNumber::parse("+14155550100").expect("phone"),
        base_url: Some(mock.uri().parse().expect("url")),
    };
    let s = TestServer::start_with(config, |b| b).await;
    let ada = s.token("ada");
    let id = s
        .create_call(
            &ada,
            json!({"twilio_flow": {"prompts": ["How was your day?"]}}),
            1,
        )
        .await;
    let dialed = s
        .wait_call(&ada, &id, "dialed at Twilio", |c| {
            c["providerCallId"] == "CA_e2e_1"
        })
        .await;

    let status_target = format!("/webhooks/twilio/status?callcat_call_id={id}");
    let in_progress = [
        ("CallSid", "CA_e2e_1"),
        ("CallStatus", "in-progress"),
        ("SequenceNumber", "1"),
    ];
    // Forged: signed with another token. 401, nothing changes.
    let (st, body) = post_twilio(&s, &status_target, &in_progress, "wrong-token").await;
    assert_eq!(st, 401, "{body}");
    let twiml_target = format!("/webhooks/twilio/twiml/{id}");
    let (st, _) = post_twilio(&s, &twiml_target, &[("CallSid", "CA_e2e_1")], "wrong-token").await;
    assert_eq!(st, 401);
    assert_eq!(s.call(&ada, &id).await["updatedAt"], dialed["updatedAt"]);

    let (st, body) = post_twilio(&s, &status_target, &in_progress, TWILIO_TOKEN).await;
    assert_eq!(st, 200, "{body}");
    s.wait_status(&ada, &id, "IN_PROGRESS").await;

    // The conversation: greeting + prompt, the answer, the closing.
    let (st, twiml) =
        post_twilio(&s, &twiml_target, &[("CallSid", "CA_e2e_1")], TWILIO_TOKEN).await;
    assert_eq!(st, 200, "{twiml}");
    assert!(twiml.contains("How was your day?"), "{twiml}");
    assert!(twiml.contains(&format!("{PUBLIC_URL}/webhooks/twilio/gather/{id}?step=0")));
    let gather_target = format!("/webhooks/twilio/gather/{id}?step=0");
    let answer = [
        ("CallSid", "CA_e2e_1"),
        ("SpeechResult", "Lovely, thank you."),
    ];
    let (st, _) = post_twilio(&s, &gather_target, &answer, "wrong-token").await;
    assert_eq!(st, 401);
    let (st, closing) = post_twilio(&s, &gather_target, &answer, TWILIO_TOKEN).await;
    assert_eq!(st, 200, "{closing}");
    assert!(closing.contains("<Hangup"), "{closing}");
    let (_, t) = s.get(&format!("/api/calls/{id}/transcript"), &ada).await;
    let texts: Vec<&str> = t["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect();
    assert_eq!(texts.len(), 4, "{t}");
    assert_eq!(texts[1], "How was your day?");
    assert_eq!(texts[2], "Lovely, thank you.");
    assert_eq!(t["segments"][2]["role"], "user");

    let completed = [
        ("CallSid", "CA_e2e_1"),
        ("CallStatus", "completed"),
        ("CallDuration", "42"),
        ("SequenceNumber", "2"),
    ];
    let (st, _) = post_twilio(&s, &status_target, &completed, TWILIO_TOKEN).await;
    assert_eq!(st, 200);
    let done = s.wait_status(&ada, &id, "COMPLETED").await;
    assert_eq!(done["outcome"], "answered");
    s.stop().await;
}
