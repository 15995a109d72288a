//! End-to-end tests of the example server over HTTP: in-memory storage, the
//! simulator, and a manual clock that the tests advance (no wall-clock waits).

mod common;

use std::time::Duration;

use callcat::Clock as _;
use common::{SseReader, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

fn statuses_of(events: &[common::SseEvent], id: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if e.event == "call.updated" && e.data["callId"] == id {
            let s = e.data["status"].as_str().unwrap_or_default().to_owned();
            if out.last() != Some(&s) {
                out.push(s);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_for_now_is_dialed_transcribed_completed_and_streamed() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let sse = SseReader::open(&s, &ada).await;

    let id = s.create_call(&ada, json!({}), 3).await;
    let ringing = s.wait_status(&ada, &id, "RINGING").await;
    assert_eq!(ringing["attempts"], 1);
    assert!(ringing["providerCallId"].is_string());
    assert!(ringing["dialedAt"].is_i64());

    // Answered after the ring time.
    s.advance(Duration::from_secs(2));
    s.wait_status(&ada, &id, "IN_PROGRESS").await;

    // The transcript grows while the call is in progress.
    let mut lengths = Vec::new();
    for _ in 0..3 {
        s.advance(Duration::from_secs(2));
        let want = lengths.last().copied().unwrap_or(0);
        let mut len = 0;
        for _ in 0..common::WAIT_ROUNDS {
            let (st, t) = s.get(&format!("/api/calls/{id}/transcript"), &ada).await;
            assert_eq!(st, 200, "{t}");
            len = t["segments"].as_array().map_or(0, Vec::len);
            if len > want {
                assert_eq!(t["callId"], id.as_str());
                assert!(
                    t["transcriptText"]
                        .as_str()
                        .unwrap_or("")
                        .contains("Agent turn 1")
                );
                break;
            }
            common::pause().await;
        }
        assert!(len > want, "transcript did not grow past {want}");
        lengths.push(len);
        assert_eq!(s.call(&ada, &id).await["status"], "IN_PROGRESS");
    }

    // Seed 000's live transcript endpoint, by provider id, owner-scoped.
    let pid = s.call(&ada, &id).await["providerCallId"]
        .as_str()
        .expect("provider id")
        .to_owned();
    let (st, live) = s.get(&format!("/api/live_transcripts/{pid}"), &ada).await;
    assert_eq!(st, 200, "{live}");
    assert!(live["segments"].as_array().expect("segments").len() >= lengths[2]);
    let (st, _) = s
        .get(&format!("/api/live_transcripts/{pid}"), &s.token("bob"))
        .await;
    assert_eq!(st, 404);

    // Active while on the line.
    let (_, count) = s.get("/api/calls/active/count", &ada).await;
    assert_eq!(count["count"], 1);
    let (st, active) = s.get(&format!("/api/calls/active/{id}"), &ada).await;
    assert_eq!(st, 200, "{active}");
    assert_eq!(active["status"], "IN_PROGRESS");
    // Seed 004's fields: masked numbers, direction, agent and metadata.
    assert_eq!(active["toNumber"], "+1***71", "{active}");
    assert!(active["fromNumber"].is_null(), "{active}");
    assert_eq!(active["direction"], "outbound");
    assert!(active["agentId"].is_null());
    assert_eq!(active["metadata"], json!({}), "{active}");
    assert!(!active.to_string().contains("4155552671"), "{active}");

    // Ends after the talk time, then the analysis arrives.
    s.advance(Duration::from_secs(4));
    let done = s.wait_status(&ada, &id, "COMPLETED").await;
    assert_eq!(done["outcome"], "answered");
    assert_eq!(done["durationMs"], 10_000);
    assert!(done["completedAt"].is_i64());
    s.advance(Duration::from_secs(1));
    let analyzed = s
        .wait_call(&ada, &id, "analyzed", |c| c["analysis"].is_object())
        .await;
    assert_eq!(analyzed["analysis"]["successful"], true);
    assert!(analyzed["analysis"]["summary"].is_string());
    let (_, count) = s.get("/api/calls/active/count", &ada).await;
    assert_eq!(count["count"], 0);

    // The SSE subscriber saw the same sequence.
    sse.wait_for("the analyzed call", |e| {
        e.event == "call.updated"
            && e.data["callId"] == id.as_str()
            && e.data["analysis"].is_object()
    })
    .await;
    let events = sse.snapshot();
    let seq = statuses_of(&events, &id);
    let pos = |st: &str| {
        seq.iter()
            .position(|s| s == st)
            .unwrap_or_else(|| panic!("{st} missing from {seq:?}"))
    };
    assert!(pos("SCHEDULED") < pos("RINGING"), "{seq:?}");
    assert!(pos("RINGING") < pos("IN_PROGRESS"), "{seq:?}");
    assert!(pos("IN_PROGRESS") < pos("COMPLETED"), "{seq:?}");
    let transcripts: Vec<usize> = events
        .iter()
        .filter(|e| e.event == "transcript.updated" && e.data["callId"] == id.as_str())
        .map(|e| e.data["segments"].as_array().map_or(0, Vec::len))
        .collect();
    assert!(transcripts.len() >= 3, "{transcripts:?}");
    assert!(
        transcripts.windows(2).all(|w| w[0] <= w[1]),
        "{transcripts:?}"
    );
    // Only Ada's calls are on Ada's stream.
    assert!(
        events
            .iter()
            .filter(|e| e.event == "call.updated")
            .all(|e| e.data["callId"] == id.as_str())
    );
    sse.close();

    // The process's recorder is shared by every test of this binary, so these
    // are lower bounds; tests/server_metrics.rs checks exact values alone.
    let scrape = s.scrape().await;
    assert!(common::metric(&scrape, "callcat_dials_total", &[]) >= 1.0);
    assert!(
        common::metric(
            &scrape,
            "callcat_call_outcomes_total",
            &[("outcome", "answered")]
        ) >= 1.0
    );
    assert!(common::histogram(&scrape, "callcat_dial_lag_seconds").count >= Some(1));

    let (st, a) = s.get("/api/analytics", &ada).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["total"], 1);
    assert_eq!(a["byStatus"]["COMPLETED"], 1);
    assert_eq!(a["byOutcome"]["answered"], 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_is_retried_then_fails() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let id = s
        .create_call(&ada, json!({"simulate": "no_answer"}), 2)
        .await;
    s.wait_status(&ada, &id, "RINGING").await;
    s.advance(Duration::from_secs(5));
    let pending = s.wait_status(&ada, &id, "RETRY_PENDING").await;
    assert_eq!(pending["outcome"], "no_answer");
    assert_eq!(pending["attempts"], 1);
    let retry_at = pending["nextActionAt"].as_i64().expect("retry time");
    let now = s.clock.now().timestamp_millis();
    assert!(retry_at > now, "the retry is planned for later");

    s.clock
        .set(callcat::chrono::DateTime::from_timestamp_millis(retry_at).expect("time"));
    let again = s
        .wait_call(&ada, &id, "dialed again", |c| {
            c["attempts"] == 2 && c["status"] == "RINGING"
        })
        .await;
    assert_eq!(again["maxAttempts"], 2);
    s.advance(Duration::from_secs(5));
    let failed = s.wait_status(&ada, &id, "FAILED").await;
    assert_eq!(failed["outcome"], "no_answer");
    assert_eq!(failed["attempts"], 2);
    assert!(failed["completedAt"].is_i64());
    let sim = s.simulator.as_ref().expect("simulator");
    assert_eq!(
        sim.dial_count(id.parse().expect("id")),
        2,
        "exactly one dial per attempt"
    );
    let (_, finished) = s.get("/api/calls?status=FAILED", &ada).await;
    assert_eq!(finished["calls"][0]["callId"], id.as_str());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_call_is_not_found() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let bob = s.token("bob");
    let later = s.clock.now().timestamp_millis() + 3_600_000;
    let (st, call) = s
        .post(
            "/api/calls",
            &ada,
            json!({"calleeName": "Ada", "phoneNumber": "+14155552671", "subject": "s",
                   "prompt": "p", "scheduledAt": later}),
        )
        .await;
    assert_eq!(st, 201, "{call}");
    let id = call["callId"].as_str().expect("id");
    for (method, path, body) in [
        (Method::GET, format!("/api/calls/{id}"), None),
        (
            Method::PUT,
            format!("/api/calls/{id}"),
            Some(json!({"subject": "x"})),
        ),
        (Method::DELETE, format!("/api/calls/{id}"), None),
        (Method::POST, format!("/api/calls/{id}/cancel"), None),
        (Method::GET, format!("/api/calls/{id}/transcript"), None),
        (
            Method::PUT,
            format!("/api/calls/{id}/transcript"),
            Some(json!({"transcriptText": "x"})),
        ),
    ] {
        let (st, err) = s.send(method.clone(), &path, Some(&bob), body).await;
        assert_eq!(st, 404, "{method} {path}: {err}");
        assert_eq!(err["error"]["code"], "not_found");
    }
    let (_, list) = s.get("/api/calls", &bob).await;
    assert_eq!(list["calls"], json!([]));
    // A user of another tenant with the same user id is someone else too.
    let other = s
        .server_state
        .jwt
        .mint("ada", Some("globex"), None, Duration::from_secs(60))
        .expect("token");
    let (st, _) = s.get(&format!("/api/calls/{id}"), &other).await;
    assert_eq!(st, 404);
    // Still Ada's, untouched.
    let mine = s.call(&ada, id).await;
    assert_eq!(mine["subject"], "s");
    assert_eq!(mine["status"], "SCHEDULED");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_auth_and_conflicts_answer_in_the_error_shape() {
    let s = TestServer::start().await;
    let ada = s.token("ada");

    let (st, err) = s
        .post(
            "/api/calls",
            &ada,
            json!({"calleeName": "Ada", "phoneNumber": "555-1234", "subject": "s", "prompt": "p"}),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["code"], "validation");
    assert_eq!(err["error"]["field"], "phoneNumber");

    let (st, err) = s
        .post("/api/calls", &ada, json!({"phoneNumber": "+14155552671"}))
        .await;
    assert_eq!(st, 400);
    assert_eq!(err["error"]["field"], "calleeName");

    let resp = s
        .http
        .post(s.url("/api/calls"))
        .bearer_auth(&ada)
        .header("content-type", "application/json")
        .body("{\"calleeName\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.expect("json");
    assert_eq!(err["error"]["code"], "malformed_json");

    let resp = s
        .http
        .post(s.url("/api/calls"))
        .bearer_auth(&ada)
        .header("content-type", "application/json")
        .body(vec![b' '; 200 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413);
    // The unread body would be taken for the next request: the server closes.
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let err: Value = resp.json().await.expect("json");
    assert_eq!(err["error"]["code"], "payload_too_large");

    let (st, err) = s.send(Method::GET, "/api/calls", None, None).await;
    assert_eq!(st, 401);
    assert_eq!(err["error"]["code"], "unauthorized");
    let (st, _) = s.get("/api/calls", "not-a-token").await;
    assert_eq!(st, 401);
    let expired = s
        .server_state
        .jwt
        .mint("ada", None, None, Duration::from_secs(1))
        .expect("token");
    s.advance(Duration::from_secs(2));
    let (st, _) = s.get("/api/calls", &expired).await;
    assert_eq!(st, 401, "expiry follows the injected clock");

    let (st, err) = s.get("/api/calls?limit=500", &ada).await;
    assert_eq!(st, 400);
    assert_eq!(err["error"]["field"], "limit");

    // Idempotency-Key: the retried POST returns the first call.
    let body = json!({"calleeName": "Ada", "phoneNumber": "+14155552671", "subject": "s",
                      "prompt": "p", "scheduledAt": s.clock.now().timestamp_millis() + 60_000});
    let first = s
        .http
        .post(s.url("/api/calls"))
        .bearer_auth(&ada)
        .header("Idempotency-Key", "k-1")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let again = s
        .http
        .post(s.url("/api/calls"))
        .bearer_auth(&ada)
        .header("Idempotency-Key", "k-1")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["callId"], again["callId"]);

    // Edit while scheduled; deleting a call in progress is a conflict.
    let sid = first["callId"].as_str().expect("id");
    let (st, edited) = s
        .send(
            Method::PUT,
            &format!("/api/calls/{sid}"),
            Some(&ada),
            Some(json!({"subject": "new"})),
        )
        .await;
    assert_eq!(st, 200, "{edited}");
    assert_eq!(edited["subject"], "new");

    let id = s.create_call(&ada, json!({}), 1).await;
    s.wait_status(&ada, &id, "RINGING").await;
    s.advance(Duration::from_secs(2));
    s.wait_status(&ada, &id, "IN_PROGRESS").await;
    let (st, err) = s
        .send(
            Method::DELETE,
            &format!("/api/calls/{id}"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(st, 409, "{err}");
    assert_eq!(err["error"]["code"], "conflict");
    let (st, err) = s
        .send(
            Method::PUT,
            &format!("/api/calls/{id}"),
            Some(&ada),
            Some(json!({"subject": "x"})),
        )
        .await;
    assert_eq!(st, 409, "{err}");
    assert_eq!(s.call(&ada, &id).await["status"], "IN_PROGRESS");
    // Cancel works in flight: the provider hangs up.
    let (st, c) = s
        .send(
            Method::POST,
            &format!("/api/calls/{id}/cancel"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(st, 200, "{c}");
    s.wait_status(&ada, &id, "CANCELED").await;
    let (st, _) = s
        .send(
            Method::POST,
            &format!("/api/calls/{id}/cancel"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(st, 409, "a finished call cannot be canceled");

    // A scheduled call can be deleted.
    let (st, _) = s
        .send(
            Method::DELETE,
            &format!("/api/calls/{sid}"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, _) = s.get(&format!("/api/calls/{sid}"), &ada).await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_windows_place_their_call_when_open() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let now = s.clock.now().timestamp_millis();
    let (st, w) = s
        .post(
            "/api/call-windows",
            &ada,
            json!({"kind": "one_off", "startAt": now, "endAt": now + 3_600_000,
                   "call": {"calleeName": "Ada", "phoneNumber": "+14155552671",
                            "subject": "Reflection", "prompt": "Ask about the day."}}),
        )
        .await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(w["kind"], "one_off");
    let (st, err) = s
        .post(
            "/api/call-windows",
            &ada,
            json!({"kind": "recurring", "weekdays": ["mon"], "start": "10:00", "end": "09:00",
                   "timezone": "Europe/Berlin",
                   "call": {"calleeName": "Ada", "phoneNumber": "+14155552671",
                            "subject": "s", "prompt": "p"}}),
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(err["error"]["field"], "end");
    let (_, list) = s.get("/api/call-windows", &ada).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    // The window is open: its call is placed.
    let mut placed = None;
    for _ in 0..common::WAIT_ROUNDS {
        let (_, calls) = s.get("/api/calls", &ada).await;
        if let Some(c) = calls["calls"].as_array().and_then(|a| a.first()) {
            placed = Some(c.clone());
            break;
        }
        common::pause().await;
    }
    let placed = placed.expect("the window placed a call");
    assert_eq!(placed["subject"], "Reflection");
    let wid = w["windowId"].as_str().expect("id");
    let (st, _) = s
        .send(
            Method::DELETE,
            &format!("/api/call-windows/{wid}"),
            Some(&s.token("bob")),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .send(
            Method::DELETE,
            &format!("/api/call-windows/{wid}"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(st, 204);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_and_every_listed_route_exists() {
    let s = TestServer::start().await;
    let (st, doc) = s.send(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(st, 200);
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("post", "/api/calls"),
        ("get", "/api/calls"),
        ("get", "/api/calls/{callId}"),
        ("put", "/api/calls/{callId}"),
        ("delete", "/api/calls/{callId}"),
        ("post", "/api/calls/{callId}/cancel"),
        ("post", "/api/calls/{callId}/requeue"),
        ("get", "/api/calls/counts"),
        ("get", "/api/calls/{callId}/transcript"),
        ("put", "/api/calls/{callId}/transcript"),
        ("post", "/api/calls/{callId}/transcript/segments"),
        ("get", "/api/live_transcripts/{providerId}"),
        ("get", "/api/calls/active"),
        ("get", "/api/calls/active/count"),
        ("get", "/api/calls/active/{callId}"),
        ("get", "/api/calls/stream"),
        ("post", "/api/call-windows"),
        ("get", "/api/call-windows"),
        ("put", "/api/call-windows/{windowId}"),
        ("delete", "/api/call-windows/{windowId}"),
        ("post", "/api/do-not-call"),
        ("get", "/api/do-not-call"),
        ("delete", "/api/do-not-call/{phoneNumber}"),
        ("get", "/api/analytics"),
        ("post", "/webhooks/retell"),
        ("post", "/webhooks/twilio/status"),
        ("post", "/webhooks/twilio/transcription"),
        ("post", "/webhooks/twilio/twiml/{callId}"),
        ("post", "/webhooks/twilio/gather/{callId}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/api/openapi.json"),
    ];
    let mut listed = 0;
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                listed += 1;
                assert!(
                    expected.contains(&(method, path.as_str())),
                    "{method} {path} is documented but not expected"
                );
            }
        }
    }
    assert_eq!(listed, expected.len(), "documented operations");
    // Every documented operation is routed (it may refuse the request, but
    // never as an unknown route or method).
    let token = s.token("ada");
    for (method, path) in expected {
        if path == "/api/calls/stream" {
            continue; // an open stream; covered by the lifecycle test
        }
        let concrete = path
            .replace("{callId}", "01a1fd92-5d05-728e-abef-189291294b8d")
            .replace("{providerId}", "sim_x")
            .replace("{windowId}", "01a1fd92-5d05-728e-abef-189291294b8d")
            .replace("{phoneNumber}", "%2B14155552671");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (st, body) = s.send(m, &concrete, Some(&token), Some(json!({}))).await;
        assert_ne!(st, 405, "{method} {path}");
        assert_ne!(body["error"]["code"], "route_not_found", "{method} {path}");
    }
    let (st, body) = s.get("/api/nope", &token).await;
    assert_eq!(st, 404);
    assert_eq!(body["error"]["code"], "route_not_found");
    s.stop().await;
}
