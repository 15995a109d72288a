//! Extreme values over HTTP are 400s naming the field, never a panic:
//! `GET /api/analytics` ranges, a call's instants, the simulator's knobs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use callcat_axum::{Api, JwtAuthenticator};
use callcat_core::memory::in_memory_stores;
use callcat_core::{Clock, Engine, ManualClock, Simulator, SimulatorConfig};
use serde_json::Value;
use tower::ServiceExt as _;

const SECRET: &[u8] = b"analytics-test-secret-analytics-test";

async fn get(app: &axum::Router, path: &str, token: &str) -> (StatusCode, Value) {
    send(app, "GET", path, token, None).await
}

async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

struct App {
    app: axum::Router,
    clock: Arc<dyn Clock>,
    user: String,
    admin: String,
}

async fn app() -> App {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let engine = Engine::builder()
        .stores(in_memory_stores())
        .simulator(Simulator::new(clock.clone(), SimulatorConfig::default()))
        .clock(clock.clone())
        .build()
        .await
        .expect("engine");
    let jwt = JwtAuthenticator::new(SECRET, clock.clone());
    let user = jwt
        .mint("ada", Some("acme"), None, Duration::from_secs(600))
        .expect("token");
    let admin = jwt
        .mint(
            "root",
            Some("acme"),
            Some("admin"),
            Duration::from_secs(600),
        )
        .expect("token");
    let app = callcat_axum::router(Api::new(engine), Arc::new(jwt));
    App {
        app,
        clock,
        user,
        admin,
    }
}

#[tokio::test]
async fn the_range_is_bounded_and_extreme_instants_are_400s_naming_the_field() {
    let App {
        app,
        clock,
        user,
        admin,
    } = app().await;

    let now = clock.now().timestamp_millis();
    let day = 24 * 60 * 60 * 1000;
    let cases = [
        ("to=-8334601228800000".to_owned(), "to"),
        ("from=-8334601228800000".to_owned(), "from"),
        (format!("from=-8334601228800000&to={now}"), "from"),
        ("to=8210266876799999".to_owned(), "to"),
        (format!("from={now}&to=9223372036854775807"), "to"),
        (format!("from=-9223372036854775808&to={now}"), "from"),
        (format!("from={}&to={now}", now - 93 * day), "from"),
        (format!("from={now}&to={now}"), "from"),
    ];
    for token in [&user, &admin] {
        for (query, field) in &cases {
            let (st, body) = get(&app, &format!("/api/analytics?{query}"), token).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["error"]["field"], *field, "{query}: {body}");
        }
        let (st, body) = get(
            &app,
            &format!("/api/analytics?from={}&to={now}", now - 92 * day),
            token,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let (st, body) = get(&app, "/api/analytics", token).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn a_call_s_extreme_instants_and_simulator_knobs_are_400s_naming_the_field() {
    let App {
        app, clock, user, ..
    } = app().await;
    let now = clock.now().timestamp_millis();
    let call = |extra: Value| {
        let mut body = serde_json::json!({
            "calleeName": "Ada Lovelace",
            "phoneNumber": "+14155552671",
            "subject": "Demo",
            "prompt": "Say hello.",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let cases = [
        (
            serde_json::json!({"scheduledAt": 8_210_266_873_199_999i64}),
            "scheduledAt",
        ),
        (
            serde_json::json!({"scheduledAt": -8_334_601_228_800_000i64}),
            "scheduledAt",
        ),
        (
            serde_json::json!({"notAfter": 8_210_266_876_799_999i64}),
            "notAfter",
        ),
        (
            serde_json::json!({"metadata": {"simulate_talk_ms": 9_200_000_000_000_000u64}}),
            "metadata.simulate_talk_ms",
        ),
        (
            serde_json::json!({"metadata": {"simulate": "sing"}}),
            "metadata.simulate",
        ),
    ];
    for (extra, field) in cases {
        let (st, body) = send(&app, "POST", "/api/calls", &user, Some(call(extra.clone()))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{extra}: {body}");
        assert_eq!(body["error"]["field"], field, "{extra}: {body}");
    }
    let ok = serde_json::json!({"scheduledAt": now + 60_000, "metadata": {"simulate_talk_ms": 7_200_000}});
    let (st, body) = send(&app, "POST", "/api/calls", &user, Some(call(ok))).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
}
