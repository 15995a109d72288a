//! End-to-end tests over HTTP of the call options and the do-not-call list:
//! in-memory storage, the simulator and a manual clock that only the tests move
//! (the fixed start, 2030-01-01T00:00:00Z, is a Tuesday). Other tasks are
//! waited for with bounded polling, never with wall-clock sleeps.

mod common;

use std::time::Duration;

use callcat::Clock as _;
use callcat::chrono::{DateTime, Utc};
use common::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const NUMBER: &str = "+14155552671";

fn call_body(extra: Value) -> Value {
    let mut b = json!({"calleeName": "Ada Lovelace", "phoneNumber": NUMBER,
                       "subject": "Delivery follow-up", "prompt": "Ask whether the parcel arrived."});
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

/// Creates a call; returns it as answered.
async fn create(s: &TestServer, token: &str, extra: Value) -> Value {
    let (st, c) = s.post("/api/calls", token, call_body(extra)).await;
    assert_eq!(st, 201, "{c}");
    c
}

fn id_of(c: &Value) -> String {
    c["callId"].as_str().expect("callId").to_owned()
}

fn dials(s: &TestServer, id: &str) -> usize {
    s.simulator
        .as_ref()
        .expect("simulator")
        .dial_count(id.parse().expect("call id"))
}

fn now_ms(s: &TestServer) -> i64 {
    s.clock.now().timestamp_millis()
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("time")
}

/// Lets the server's tasks run for `rounds` looks without anything expected to
/// change (used only to give a wrong behaviour the chance to show).
async fn settle(rounds: usize) {
    for _ in 0..rounds {
        common::pause().await;
    }
}

/// Waits (bounded) until the user's call list holds a call matching `pred`.
async fn wait_listed(
    s: &TestServer,
    token: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..common::WAIT_ROUNDS {
        let (st, list) = s.get("/api/calls?limit=100", token).await;
        assert_eq!(st, 200, "{list}");
        if let Some(c) = list["calls"]
            .as_array()
            .and_then(|a| a.iter().find(|c| pred(c)))
        {
            return c.clone();
        }
        last = list;
        common::pause().await;
    }
    panic!("no call {what} was listed: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_on_the_do_not_call_list_is_never_dialed_for_that_tenant_only() {
    let s = TestServer::start().await;
    let admin = s.admin_token("root");
    let ada = s.token("ada");
    let encoded = "/api/do-not-call/%2B14155552671";

    // Only administrators manage the list.
    let (st, err) = s
        .post("/api/do-not-call", &ada, json!({"phoneNumber": NUMBER}))
        .await;
    assert_eq!(st, 403, "{err}");
    assert_eq!(err["error"]["code"], "forbidden");
    let (st, _) = s.get("/api/do-not-call", &ada).await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post(
            "/api/do-not-call",
            &admin,
            json!({"phoneNumber": "555-1234"}),
        )
        .await;
    assert_eq!(st, 400);

    let (st, entry) = s
        .post("/api/do-not-call", &admin, json!({"phoneNumber": NUMBER}))
        .await;
    assert_eq!(st, 201, "{entry}");
    assert_eq!(entry["phoneNumber"], NUMBER);
    assert_eq!(entry["addedBy"], "root");
    assert_eq!(entry["addedAt"], now_ms(&s));
    // Listing it again answers the existing entry.
    s.advance(Duration::from_secs(5));
    let (st, again) = s
        .post("/api/do-not-call", &admin, json!({"phoneNumber": NUMBER}))
        .await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again, entry);
    let (st, list) = s.get("/api/do-not-call?limit=10", &admin).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["entries"], json!([entry]));
    assert_eq!(list["nextToken"], Value::Null);

    let (st, _) = s.send(Method::DELETE, encoded, Some(&ada), None).await;
    assert_eq!(st, 403, "a user cannot take a number off the list");

    // A call of the tenant to the listed number is canceled before any dial.
    let blocked = id_of(&create(&s, &ada, json!({})).await);
    let canceled = s.wait_status(&ada, &blocked, "CANCELED").await;
    assert!(
        canceled["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("do-not-call list"),
        "{canceled}"
    );
    assert_eq!(canceled["attempts"], 0);
    assert_eq!(canceled["attemptHistory"], json!([]));
    assert_eq!(dials(&s, &blocked), 0, "never dialed");

    // Another tenant's list is its own: its call to the same number is dialed.
    let globex = s
        .server_state
        .jwt
        .mint("gil", Some("globex"), None, Duration::from_secs(3600))
        .expect("token");
    let other = id_of(&create(&s, &globex, json!({})).await);
    s.wait_status(&globex, &other, "RINGING").await;
    assert_eq!(dials(&s, &other), 1);
    s.advance(Duration::from_secs(2));
    s.wait_status(&globex, &other, "IN_PROGRESS").await;
    s.advance(Duration::from_secs(10));
    s.wait_status(&globex, &other, "COMPLETED").await;

    // Taken off the list (the `+` URL-encoded), the number can be called again.
    let (st, body) = s.send(Method::DELETE, encoded, Some(&admin), None).await;
    assert_eq!(st, 204, "{body}");
    let (st, err) = s.send(Method::DELETE, encoded, Some(&admin), None).await;
    assert_eq!(st, 404, "{err}");
    let (_, list) = s.get("/api/do-not-call", &admin).await;
    assert_eq!(list["entries"], json!([]));
    let allowed = id_of(&create(&s, &ada, json!({})).await);
    let ringing = s.wait_status(&ada, &allowed, "RINGING").await;
    assert_eq!(ringing["attempts"], 1);
    assert_eq!(dials(&s, &allowed), 1);
    assert_eq!(
        s.call(&ada, &blocked).await["status"],
        "CANCELED",
        "unchanged"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_then_call_places_the_task_call_30_s_after_an_ivr() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let first = create(
        &s,
        &ada,
        json!({"workflow": "classify_then_call",
               "metadata": {"simulate_analysis": {"classification": "ivr"}}}),
    )
    .await;
    assert_eq!(first["workflow"], "classify");
    assert_eq!(first["parentCallId"], Value::Null);
    let first_id = id_of(&first);

    // The classification call: answered, ended, analyzed.
    s.wait_status(&ada, &first_id, "RINGING").await;
    s.advance(Duration::from_secs(2));
    s.wait_status(&ada, &first_id, "IN_PROGRESS").await;
    s.advance(Duration::from_secs(10));
    s.wait_status(&ada, &first_id, "COMPLETED").await;
    s.advance(Duration::from_secs(1));
    let analyzed_at = now_ms(&s);

    let task = wait_listed(&s, &ada, "with the classification call as parent", |c| {
        c["parentCallId"] == first_id.as_str()
    })
    .await;
    let task_id = id_of(&task);
    assert_ne!(task_id, first_id);
    assert_eq!(task["status"], "SCHEDULED");
    assert!(
        task["scheduledAt"].as_i64().expect("scheduledAt") >= analyzed_at + 30_000,
        "the task call waits 30 s after an IVR: {task}"
    );
    assert_eq!(task["variables"]["classification"], "ivr");
    assert_eq!(task["workflow"], Value::Null);
    assert_eq!(dials(&s, &task_id), 0);

    // It is dialed once its time comes.
    s.clock
        .set(at_ms(task["scheduledAt"].as_i64().expect("time")));
    let dialed = s.wait_status(&ada, &task_id, "RINGING").await;
    assert_eq!(dialed["parentCallId"], first_id.as_str());
    assert_eq!(dialed["attemptHistory"].as_array().map(Vec::len), Some(1));
    assert_eq!(dialed["attemptHistory"][0]["attempt"], 1);

    // GET shows the classification call's attempt.
    let first = s.call(&ada, &first_id).await;
    let history = first["attemptHistory"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{first}");
    let a = &history[0];
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["outcome"], "answered");
    assert_eq!(a["providerCallId"], first["providerCallId"]);
    assert!(
        a["dialedAt"].is_i64() && a["startedAt"].is_i64() && a["endedAt"].is_i64(),
        "{a}"
    );
    assert!(a["startedAt"].as_i64() < a["endedAt"].as_i64());
    assert!(a["error"].is_null());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outside_its_dial_window_waits_for_the_opening() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    // Tuesday 00:00 UTC; the window opens on Monday 2030-01-07 at 09:00 UTC.
    let opening = DateTime::parse_from_rfc3339("2030-01-07T09:00:00Z")
        .expect("time")
        .timestamp_millis();
    let window = json!({"weekdays": ["mon"], "start": "09:00", "end": "17:00", "timezone": "UTC"});
    let c = create(&s, &ada, json!({"dialWindow": window})).await;
    assert_eq!(c["dialWindow"], window);
    let id = id_of(&c);

    let deferred = s
        .wait_call(&ada, &id, "deferred to the opening", |c| {
            c["nextActionAt"] == opening
        })
        .await;
    assert_eq!(deferred["status"], "SCHEDULED");
    assert_eq!(deferred["attempts"], 0);
    assert_eq!(dials(&s, &id), 0);

    // A second before the opening it is still waiting. (Six days later: a
    // fresh token, the first one has expired on the test clock.)
    s.clock.set(at_ms(opening - 1_000));
    let ada = s.token("ada");
    settle(20).await;
    assert_eq!(s.call(&ada, &id).await["attempts"], 0);
    assert_eq!(dials(&s, &id), 0);

    s.clock.set(at_ms(opening));
    let ringing = s.wait_status(&ada, &id, "RINGING").await;
    assert_eq!(ringing["dialedAt"], opening, "dialed at the opening");
    assert_eq!(dials(&s, &id), 1);

    // Invalid windows are refused, naming the field.
    let (st, err) = s
        .post(
            "/api/calls",
            &ada,
            call_body(json!({"dialWindow": {"weekdays": ["mon"], "start": "09:00",
                                            "end": "17:00", "timezone": "Mars/Olympus"}})),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "dialWindow.timezone");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_switches_and_retry_delays_decide_what_is_retried_and_when() {
    let s = TestServer::start().await;
    let ada = s.token("ada");

    // Busy is retried by default; switched off, one busy attempt is final.
    let no = create(
        &s,
        &ada,
        json!({"metadata": {"simulate": "busy"}, "maxAttempts": 3, "retryOn": {"busy": false}}),
    )
    .await;
    assert_eq!(
        no["retryOn"],
        json!({"noAnswer": true, "busy": false, "voicemail": false, "dialError": true})
    );
    let no = id_of(&no);
    s.wait_status(&ada, &no, "RINGING").await;
    s.advance(Duration::from_secs(2));
    let failed = s.wait_status(&ada, &no, "FAILED").await;
    assert_eq!(failed["outcome"], "busy");
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["attemptHistory"][0]["outcome"], "busy");
    assert_eq!(dials(&s, &no), 1);

    // Switched on, with explicit delays: 60 s before the second attempt, then
    // 900 s (the default backoff would wait 60 s, then 120 s).
    let yes = create(
        &s,
        &ada,
        json!({"metadata": {"simulate": "busy"}, "maxAttempts": 3,
               "retryOn": {"busy": true}, "retryDelays": [60, 900]}),
    )
    .await;
    assert_eq!(yes["retryDelays"], json!([60, 900]));
    let yes = id_of(&yes);
    for (attempt, delay_s) in [(1, 60), (2, 900)] {
        s.wait_call(&ada, &yes, "ringing", |c| {
            c["status"] == "RINGING" && c["attempts"] == attempt
        })
        .await;
        s.advance(Duration::from_secs(2));
        let ended_at = now_ms(&s);
        let pending = s.wait_status(&ada, &yes, "RETRY_PENDING").await;
        assert_eq!(pending["outcome"], "busy");
        assert_eq!(pending["attempts"], attempt);
        let wait = pending["nextActionAt"].as_i64().expect("retry time") - ended_at;
        let (lo, hi) = (delay_s * 800, delay_s * 1200); // ± 20 % jitter
        assert!((lo..=hi).contains(&wait), "retry {attempt} after {wait} ms");
        s.clock.set(at_ms(ended_at + wait));
        s.wait_call(&ada, &yes, "dialed again", |c| c["attempts"] == attempt + 1)
            .await;
        assert_eq!(dials(&s, &yes), attempt as usize + 1);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_window_so_that_it_opens_now_places_its_call() {
    let s = TestServer::start().await;
    let ada = s.token("ada");
    let call = json!({"calleeName": "Ada", "phoneNumber": NUMBER, "subject": "Reflection",
                      "prompt": "Ask about the day.", "retryOn": {"noAnswer": false}});
    // Closed: Mondays only, and it is Tuesday.
    let (st, w) = s
        .post(
            "/api/call-windows",
            &ada,
            json!({"kind": "recurring", "weekdays": ["mon"], "start": "09:00", "end": "10:00",
                   "timezone": "UTC", "call": call}),
        )
        .await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(w["call"]["retryOn"]["noAnswer"], false);
    let path = format!("/api/call-windows/{}", w["windowId"].as_str().expect("id"));
    settle(20).await;
    let (_, list) = s.get("/api/calls", &ada).await;
    assert_eq!(list["calls"], json!([]), "a closed window places no call");

    let open_now = json!({"kind": "recurring", "weekdays": ["tue"], "start": "00:00",
                          "end": "23:00", "timezone": "UTC", "call": call});
    // Someone else's window is not found; an invalid body names the field.
    let (st, _) = s
        .send(
            Method::PUT,
            &path,
            Some(&s.token("bob")),
            Some(open_now.clone()),
        )
        .await;
    assert_eq!(st, 404);
    let mut bad = open_now.clone();
    bad["weekdays"] = json!(["someday"]);
    let (st, err) = s.send(Method::PUT, &path, Some(&ada), Some(bad)).await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "weekdays");
    let mut bad = open_now.clone();
    bad["call"]["retryOn"] = json!({"busy": "no"});
    let (st, err) = s.send(Method::PUT, &path, Some(&ada), Some(bad)).await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "call.retryOn.busy");
    settle(10).await;
    let (_, list) = s.get("/api/calls", &ada).await;
    assert_eq!(
        list["calls"],
        json!([]),
        "neither refused edit placed a call"
    );

    let (st, edited) = s.send(Method::PUT, &path, Some(&ada), Some(open_now)).await;
    assert_eq!(st, 200, "{edited}");
    assert_eq!(edited["weekdays"], json!(["tue"]));
    let placed = wait_listed(&s, &ada, "from the edited window", |c| {
        c["subject"] == "Reflection"
    })
    .await;
    assert_eq!(
        placed["retryOn"]["noAnswer"], false,
        "the window's call options apply"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_max_attempts_is_the_default_and_an_explicit_one_wins() {
    let mut config = common::test_config();
    config.dispatch.max_attempts = 5;
    let s = TestServer::start_with(config, |b| b.simulator_config(common::short_simulator())).await;
    let ada = s.token("ada");
    let later = now_ms(&s) + 3_600_000;
    let default = create(&s, &ada, json!({"scheduledAt": later})).await;
    assert_eq!(default["maxAttempts"], 5, "CALLCAT_MAX_ATTEMPTS applies");
    let explicit = create(&s, &ada, json!({"scheduledAt": later, "maxAttempts": 2})).await;
    assert_eq!(explicit["maxAttempts"], 2);
    let (st, w) = s
        .post(
            "/api/call-windows",
            &ada,
            json!({"kind": "recurring", "weekdays": ["mon"], "start": "09:00", "end": "10:00",
                   "call": {"calleeName": "Ada", "phoneNumber": NUMBER, "subject": "s", "prompt": "p"}}),
        )
        .await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(w["call"]["maxAttempts"], 5, "a window's call too");
    s.stop().await;
}
