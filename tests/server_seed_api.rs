//! Seed 001's API details, end to end over HTTP (in-memory storage, the
//! simulator, a manual clock): unknown JSON fields are refused naming the field,
//! and the call list pages over HTTP return each call once, in order.

mod common;

use std::collections::BTreeSet;

use callcat::Clock as _;
use common::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

fn call_body(extra: Value) -> Value {
    let mut b = json!({"calleeName": "Ada Lovelace", "phoneNumber": "+14155552671",
                       "subject": "Delivery follow-up", "prompt": "Ask whether the parcel arrived."});
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

fn now_ms(s: &TestServer) -> i64 {
    s.clock.now().timestamp_millis()
}

async fn listed(s: &TestServer, token: &str) -> usize {
    let (st, list) = s.get("/api/calls?limit=100", token).await;
    assert_eq!(st, 200, "{list}");
    list["calls"].as_array().expect("calls").len()
}

#[tokio::test]
async fn unknown_fields_are_refused_naming_the_field_and_nothing_is_stored() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let in_an_hour = now_ms(&s) + 3_600_000;

    // A misspelled `scheduledAt` would otherwise mean "dial now".
    let (st, err) = s
        .post(
            "/api/calls",
            &ada,
            call_body(json!({"scheduledAtt": in_an_hour})),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["code"], "validation");
    assert_eq!(err["error"]["field"], "scheduledAtt");

    // Nested objects name the whole path.
    let (st, err) = s
        .post(
            "/api/calls",
            &ada,
            call_body(json!({"retryOn": {"noAnswr": false}})),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "retryOn.noAnswr");
    let (st, err) = s
        .post(
            "/api/calls",
            &ada,
            call_body(json!({"dialWindow": {"weekdays": ["mon"], "start": "09:00",
                                            "end": "17:00", "timeZone": "Europe/Berlin"}})),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "dialWindow.timeZone");
    assert_eq!(listed(&s, &ada).await, 0, "a refused request stored a call");

    // Known fields of both parts of the body are accepted together.
    let (st, call) = s
        .post(
            "/api/calls",
            &ada,
            call_body(json!({"scheduledAt": in_an_hour, "retryOn": {"noAnswer": false}})),
        )
        .await;
    assert_eq!(st, 201, "{call}");
    let id = call["callId"].as_str().expect("id").to_owned();

    // Editing and the other bodies refuse unknown fields too.
    let (st, err) = s
        .send(
            Method::PUT,
            &format!("/api/calls/{id}"),
            Some(&ada),
            Some(json!({"subjekt": "Changed"})),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "subjekt");
    // Seed 001's PUT took a status; here it is refused with the way to cancel.
    let (st, err) = s
        .send(
            Method::PUT,
            &format!("/api/calls/{id}"),
            Some(&ada),
            Some(json!({"status": "CANCELED"})),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "status");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/cancel")),
        "{err}"
    );
    assert_eq!(s.call(&ada, &id).await["subject"], "Delivery follow-up");
    let (st, err) = s
        .post(
            "/api/call-windows",
            &ada,
            json!({"kind": "recurring", "weekdays": ["mon"], "start": "09:00", "end": "10:00",
                   "call": call_body(json!({"maxAttempt": 2}))}),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "call.maxAttempt");
    let admin = s.admin_token("root");
    let (st, err) = s
        .post(
            "/api/do-not-call",
            &admin,
            json!({"phoneNumber": "+14155552671", "reason": "asked"}),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "reason");
    s.stop().await;
}

#[tokio::test]
async fn paging_over_http_returns_every_call_once_in_order_in_both_views() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let start = now_ms(&s) + 3_600_000;
    let mut created = Vec::new();
    for i in 0..45i64 {
        // Due in reverse creation order, so the list's order is not the ids'.
        let at = start + (45 - i) * 60_000;
        let (st, c) = s
            .post("/api/calls", &ada, call_body(json!({"scheduledAt": at})))
            .await;
        assert_eq!(st, 201, "{c}");
        created.push((at, c["callId"].as_str().expect("id").to_owned()));
    }
    created.sort();
    let expected: Vec<String> = created.into_iter().map(|(_, id)| id).collect();
    let upcoming = pages(&s, &ada, "/api/calls?limit=20").await;
    assert_eq!(upcoming.0, expected, "upcoming: soonest first, each once");
    assert_eq!(upcoming.1, 3, "45 calls in pages of 20");

    // Cancel them all: the finished view pages the same calls.
    for id in &expected {
        let (st, body) = s
            .post(&format!("/api/calls/{id}/cancel"), &ada, json!({}))
            .await;
        assert_eq!(st, 200, "{body}");
    }
    let (ids, pages_seen) = pages(&s, &ada, "/api/calls?view=finished&limit=20").await;
    assert_eq!(pages_seen, 3);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 45, "every call once: {ids:?}");
    assert_eq!(
        unique,
        expected.iter().collect::<BTreeSet<_>>(),
        "the same calls"
    );
    s.stop().await;
}

/// Follows `nextCursor` from `first`; returns the ids in order and the page count.
async fn pages(s: &TestServer, token: &str, first: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut path = first.to_owned();
    let mut n = 0;
    loop {
        let (st, page) = s.get(&path, token).await;
        assert_eq!(st, 200, "{page}");
        n += 1;
        let calls = page["calls"].as_array().expect("calls");
        assert!(calls.len() <= 20, "a page over the limit");
        ids.extend(
            calls
                .iter()
                .map(|c| c["callId"].as_str().expect("id").to_owned()),
        );
        match page["nextToken"].as_str() {
            // The token is URL-safe base64.
            Some(c) => path = format!("{first}&nextToken={c}"),
            None => return (ids, n),
        }
        assert!(n < 10, "paging does not end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_can_be_requeued_with_fresh_attempts_and_its_history_kept() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let bob = s.token("bob");
    let id = s
        .create_call(&ada, json!({"simulate": "no_answer"}), 1)
        .await;
    s.wait_status(&ada, &id, "RINGING").await;
    s.advance(std::time::Duration::from_secs(5));
    let failed = s.wait_status(&ada, &id, "FAILED").await;
    assert_eq!(failed["attempts"], 1);

    // Only the owner, and only a FAILED or EXPIRED call.
    let requeue = format!("/api/calls/{id}/requeue");
    let (st, _) = s.post(&requeue, &bob, json!({})).await;
    assert_eq!(st, 404);
    let later = now_ms(&s) + 60_000;
    let (st, err) = s
        .post(
            &requeue,
            &ada,
            json!({"scheduledAt": later, "notAfter": later - 1}),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "notAfter");

    // Back to SCHEDULED in a minute, with fresh attempts and the history kept.
    let (st, again) = s.post(&requeue, &ada, json!({"scheduledAt": later})).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["status"], "SCHEDULED");
    assert_eq!(again["attempts"], 0);
    assert_eq!(again["scheduledAt"], later);
    assert!(again["outcome"].is_null(), "{again}");
    assert_eq!(again["attemptHistory"].as_array().map(Vec::len), Some(1));
    let (st, _) = s.post(&requeue, &ada, json!({})).await;
    assert_eq!(st, 409, "a SCHEDULED call is not requeued");

    // This time the callee answers: dialed at its new time, completed.
    let (st, edited) = s
        .send(
            Method::PUT,
            &format!("/api/calls/{id}"),
            Some(&ada),
            Some(json!({"metadata": {"simulate": "answered", "simulate_talk_ms": 1000}})),
        )
        .await;
    assert_eq!(st, 200, "{edited}");
    s.clock
        .set(callcat::chrono::DateTime::from_timestamp_millis(later).expect("time"));
    s.wait_status(&ada, &id, "RINGING").await;
    s.advance(std::time::Duration::from_secs(10));
    let done = s.wait_status(&ada, &id, "COMPLETED").await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["attemptHistory"].as_array().map(Vec::len), Some(2));
    let sim = s.simulator.as_ref().expect("simulator");
    assert_eq!(sim.dial_count(id.parse().expect("id")), 2);
    let (st, _) = s.post(&requeue, &ada, json!({})).await;
    assert_eq!(st, 409, "a COMPLETED call is not requeued");
    s.stop().await;
}

#[tokio::test]
async fn transcript_segments_are_appended_over_http() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let bob = s.token("bob");
    let later = now_ms(&s) + 3_600_000;
    let (st, call) = s
        .post("/api/calls", &ada, call_body(json!({"scheduledAt": later})))
        .await;
    assert_eq!(st, 201, "{call}");
    let path = format!(
        "/api/calls/{}/transcript/segments",
        call["callId"].as_str().expect("id")
    );
    let first = json!({"segments": [
        {"role": "agent", "text": "Hello, this is the clinic.", "startMs": 0, "endMs": 1800},
        {"role": "user", "text": "Hi!", "startMs": 2000, "endMs": 2400}
    ]});
    let (st, t) = s.post(&path, &ada, first.clone()).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["segments"].as_array().map(Vec::len), Some(2));
    // Sent again (a retry) plus one more: only the new one is added.
    let mut more = first.clone();
    more["segments"]
        .as_array_mut()
        .expect("array")
        .push(json!({"role": "agent", "text": "Can you come on Tuesday?"}));
    let (st, t) = s.post(&path, &ada, more).await;
    assert_eq!(st, 200, "{t}");
    let said: Vec<&str> = t["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|x| x["text"].as_str().expect("text"))
        .collect();
    assert_eq!(
        said,
        vec![
            "Hello, this is the clinic.",
            "Hi!",
            "Can you come on Tuesday?"
        ]
    );
    assert!(
        t["transcriptText"]
            .as_str()
            .is_some_and(|x| x.contains("user: Hi!")),
        "{t}"
    );

    // Bad input is a 400 naming the field, and another user's call is 404.
    for (body, field) in [
        (json!({"segments": []}), "segments"),
        (
            json!({"segments": [{"role": "bot", "text": "x"}]}),
            "segments[0].role",
        ),
        (
            json!({"segments": [{"role": "user", "text": "x", "startMs": 5, "endMs": 1}]}),
            "segments[0].endMs",
        ),
        (
            json!({"segments": [{"role": "user", "text": "x", "speaker": "me"}]}),
            "segments.0.speaker",
        ),
    ] {
        let (st, err) = s.post(&path, &ada, body).await;
        assert_eq!(st, 400, "{err}");
        assert_eq!(err["error"]["field"], field);
    }
    let (st, _) = s
        .post(
            &path,
            &bob,
            json!({"segments": [{"role": "user", "text": "x"}]}),
        )
        .await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_per_status_show_the_callers_calls_only() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let bob = s.token("bob");
    let later = now_ms(&s) + 3_600_000;
    for _ in 0..3 {
        let (st, c) = s
            .post("/api/calls", &ada, call_body(json!({"scheduledAt": later})))
            .await;
        assert_eq!(st, 201, "{c}");
    }
    let (st, c) = s
        .post("/api/calls", &ada, call_body(json!({"scheduledAt": later})))
        .await;
    assert_eq!(st, 201, "{c}");
    let id = c["callId"].as_str().expect("id");
    let (st, _) = s
        .post(&format!("/api/calls/{id}/cancel"), &ada, json!({}))
        .await;
    assert_eq!(st, 200);
    let (st, c) = s
        .post("/api/calls", &bob, call_body(json!({"scheduledAt": later})))
        .await;
    assert_eq!(st, 201, "{c}");

    let (st, counts) = s.get("/api/calls/counts", &ada).await;
    assert_eq!(st, 200, "{counts}");
    assert_eq!(counts["total"], 4);
    assert_eq!(counts["counts"]["SCHEDULED"], 3);
    assert_eq!(counts["counts"]["CANCELED"], 1);
    assert_eq!(counts["counts"]["FAILED"], 0);
    assert_eq!(counts["counts"].as_object().map(|m| m.len()), Some(10));
    let (_, theirs) = s.get("/api/calls/counts", &bob).await;
    assert_eq!(theirs["total"], 1);
    s.stop().await;
}

/// Seed 002: with `CALLCAT_ONE_OPEN_CALL_PER_USER=1` a user has at most one
/// open call, and the window planner skips a user who has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_open_call_per_user_refuses_a_second_and_the_planner_waits() {
    let mut config = common::test_config();
    config.one_open_call_per_user = true;
    let s = TestServer::start_with(config, |b| b).await;
    let ada = s.token("ada");
    let later = now_ms(&s) + 3_600_000;
    let create = |key: &'static str| {
        s.http
            .post(s.url("/api/calls"))
            .bearer_auth(&ada)
            .header("idempotency-key", key)
            .json(&call_body(json!({"scheduledAt": later})))
            .send()
    };
    let first = create("first").await.expect("request");
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.expect("json");
    let first_id = first["callId"].as_str().expect("id").to_owned();

    // A second call is refused, naming the open one; the first request
    // retried with its key still answers the first call.
    let second = create("second").await.expect("request");
    assert_eq!(second.status().as_u16(), 409);
    let err: Value = second.json().await.expect("json");
    assert_eq!(err["error"]["code"], "conflict");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&first_id)),
        "{err}"
    );
    let again = create("first").await.expect("request");
    assert_eq!(again.status().as_u16(), 200);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["callId"], first_id.as_str());
    // Other users are not affected.
    let (st, _) = s
        .post(
            "/api/calls",
            &s.token("bob"),
            call_body(json!({"scheduledAt": later})),
        )
        .await;
    assert_eq!(st, 201);

    // A window open now places nothing while the call is open...
    let (st, w) = s
        .post(
            "/api/call-windows",
            &ada,
            json!({"kind": "recurring", "weekdays": ["tue"], "start": "00:00", "end": "23:00",
                   "timezone": "UTC", "call": call_body(json!({}))}),
        )
        .await;
    assert_eq!(st, 201, "{w}");
    for _ in 0..20 {
        common::pause().await;
    }
    let (_, counts) = s.get("/api/calls/counts", &ada).await;
    assert_eq!(counts["total"], 1, "{counts}");

    // ...and once it is canceled, the next planning pass places the window's call.
    let (st, _) = s
        .post(&format!("/api/calls/{first_id}/cancel"), &ada, json!({}))
        .await;
    assert_eq!(st, 200);
    s.advance(std::time::Duration::from_secs(61));
    let mut placed = Value::Null;
    for _ in 0..common::WAIT_ROUNDS {
        let (_, list) = s.get("/api/calls?limit=100", &ada).await;
        if let Some(c) = list["calls"].as_array().and_then(|a| a.first()) {
            placed = c.clone();
            break;
        }
        common::pause().await;
    }
    assert_eq!(
        placed["metadata"]["callcat_window_id"], w["windowId"],
        "{placed}"
    );
    s.stop().await;
}
