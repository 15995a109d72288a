//! End-to-end over HTTP: `CALLCAT_CALLER_NUMBERS` decides which caller numbers
//! (`callerNumber`) each tenant may give, on calls and on call windows' `call`.
//! In-memory storage, the simulator and a manual clock.

mod common;

use std::time::Duration;

use callcat_server::config::CallerNumbersConfig;
use common::{TestServer, short_simulator, test_config};
use reqwest::Method;
use serde_json::{Value, json};

const ACME: &str = "+14155550100";
const BETA: &str = "+14155550200";
const FOREIGN: &str = "+14155550999";

fn call(caller: Option<&str>) -> Value {
    let mut b = json!({"calleeName": "Ada Lovelace", "phoneNumber": "+14155552671",
                       "subject": "Delivery follow-up", "prompt": "Ask whether the parcel arrived."});
    if let Some(c) = caller {
        b["callerNumber"] = json!(c);
    }
    b
}

async fn start(setting: Option<&str>) -> TestServer {
    let mut config = test_config();
    config.caller_numbers =
        setting.map(|v| CallerNumbersConfig::parse(v).expect("the setting parses"));
    TestServer::start_with(config, |b| b.simulator_config(short_simulator())).await
}

fn beta_token(s: &TestServer) -> String {
    s.server_state
        .jwt
        .mint("bea", Some("beta"), None, Duration::from_secs(3600))
        .expect("token")
}

async fn calls_of(s: &TestServer, token: &str) -> usize {
    let (st, list) = s.get("/api/calls", token).await;
    assert_eq!(st, 200, "{list}");
    list["calls"].as_array().expect("calls").len()
}

#[tokio::test]
async fn a_tenant_may_give_only_its_own_caller_numbers() {
    let s = start(Some(&format!("acme={ACME};beta={BETA}"))).await;
    let ada = s.token("ada");

    let (st, c) = s.post("/api/calls", &ada, call(Some(ACME))).await;
    assert_eq!(st, 201, "an allowed number is accepted: {c}");
    assert_eq!(c["callerNumber"], ACME);
    let (st, c) = s.post("/api/calls", &ada, call(None)).await;
    assert_eq!(st, 201, "no caller number uses the provider's default: {c}");

    // Edits: to an allowed number, yes; to another tenant's, no.
    let path = format!("/api/calls/{}", c["callId"].as_str().expect("callId"));
    let (st, edited) = s
        .send(
            Method::PUT,
            &path,
            Some(&ada),
            Some(json!({"callerNumber": ACME})),
        )
        .await;
    assert_eq!(st, 200, "{edited}");
    assert_eq!(edited["callerNumber"], ACME);
    let (st, err) = s
        .send(
            Method::PUT,
            &path,
            Some(&ada),
            Some(json!({"callerNumber": BETA})),
        )
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "callerNumber");
    assert_eq!(
        s.call(&ada, c["callId"].as_str().expect("id")).await["callerNumber"],
        ACME
    );

    for refused in [FOREIGN, BETA] {
        let (st, err) = s.post("/api/calls", &ada, call(Some(refused))).await;
        assert_eq!(st, 400, "{refused}: {err}");
        assert_eq!(err["error"]["field"], "callerNumber", "{err}");
    }
    assert_eq!(calls_of(&s, &ada).await, 2, "no refused call was stored");

    // beta may use its own number, not acme's.
    let bea = beta_token(&s);
    let (st, c) = s.post("/api/calls", &bea, call(Some(BETA))).await;
    assert_eq!(st, 201, "{c}");
    let (st, err) = s.post("/api/calls", &bea, call(Some(ACME))).await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "callerNumber");

    // Call windows: their call's callerNumber, on create and on edit.
    let window = |caller: &str| {
        json!({"kind": "recurring", "weekdays": ["mon"], "start": "09:00", "end": "10:00",
               "timezone": "UTC", "call": call(Some(caller))})
    };
    let (st, err) = s.post("/api/call-windows", &ada, window(FOREIGN)).await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "callerNumber");
    let (st, w) = s.post("/api/call-windows", &ada, window(ACME)).await;
    assert_eq!(st, 201, "{w}");
    let path = format!("/api/call-windows/{}", w["windowId"].as_str().expect("id"));
    let (st, err) = s
        .send(Method::PUT, &path, Some(&ada), Some(window(BETA)))
        .await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "callerNumber");
    let (st, ws) = s.get("/api/call-windows", &ada).await;
    assert_eq!(st, 200, "{ws}");
    assert_eq!(
        ws[0]["call"]["callerNumber"], ACME,
        "the refused edit changed nothing"
    );
    s.stop().await;
}

#[tokio::test]
async fn without_the_setting_the_simulator_allows_no_caller_number() {
    let s = start(None).await;
    let ada = s.token("ada");
    let (st, err) = s.post("/api/calls", &ada, call(Some(ACME))).await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["field"], "callerNumber");
    let (st, c) = s.post("/api/calls", &ada, call(None)).await;
    assert_eq!(st, 201, "{c}");
    s.stop().await;
}
