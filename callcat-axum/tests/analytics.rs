//! `GET /api/analytics` bounds its range: extreme instants and overlong ranges
//! are 400s naming `from` or `to`, never a panic.

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
    let req = Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
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

#[tokio::test]
async fn the_range_is_bounded_and_extreme_instants_are_400s_naming_the_field() {
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
