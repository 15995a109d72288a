//! The `embed_axum` example's application, driven in-process: callcat's router
//! mounted under `/callcat` in another app with its own API-key
//! authentication, on in-memory stores, the simulator and a manual clock.

#[path = "../examples/embed_axum.rs"]
#[allow(dead_code)]
mod embed;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use callcat::{ManualClock, Owner, SimulatorConfig};
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt as _;

const ADA: &str = "ada-key";

/// Ring 2 s, talk 10 s, analysis 1 s after the end.
fn short_simulator() -> SimulatorConfig {
    SimulatorConfig {
        ring: Duration::from_secs(2),
        talk: Duration::from_secs(10),
        turn: Duration::from_secs(2),
        analysis_delay: Duration::from_secs(1),
        no_answer_after: Duration::from_secs(5),
        lookup_by_call_id: true,
        duplicate_every: None,
    }
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        req = req.header(embed::API_KEY_HEADER, k);
    }
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
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, json)
}

struct Embedded {
    app: Router,
    clock: ManualClock,
    stop: watch::Sender<bool>,
    background: tokio::task::JoinHandle<callcat::Result<()>>,
}

async fn start() -> Embedded {
    let clock = ManualClock::at_fixed_start();
    let keys = embed::ApiKeys::default()
        .with(ADA, Owner::new("acme", "ada"))
        .with("bob-key", Owner::new("acme", "bob"));
    let (stop, stopping) = watch::channel(false);
    let (app, engine) = embed::build_app(
        Arc::new(clock.clone()),
        short_simulator(),
        keys,
        stopping.clone(),
    )
    .await
    .expect("app builds");
    let mut rx = stopping;
    let background = tokio::spawn(async move {
        engine
            .run(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });
    Embedded {
        app,
        clock,
        stop,
        background,
    }
}

impl Embedded {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.background
            .await
            .expect("background stops")
            .expect("the engine stops cleanly");
    }

    /// Advances the manual clock a second at a time until the call is in
    /// `status` (bounded; the short pauses only let the tasks run).
    async fn drive_to(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..400 {
            let (st, call) = send(
                &self.app,
                Method::GET,
                &format!("/callcat/api/calls/{id}"),
                Some(ADA),
                None,
            )
            .await;
            assert_eq!(st, StatusCode::OK, "{call}");
            if call["status"] == status {
                return call;
            }
            last = call;
            self.clock.advance(Duration::from_millis(500));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the call never reached {status}: {last}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_created_through_the_mounted_router_completes() {
    let e = start().await;
    let (st, created) = send(
        &e.app,
        Method::POST,
        "/callcat/api/calls",
        Some(ADA),
        Some(json!({
            "calleeName": "Ada Lovelace",
            "phoneNumber": "+14155552671",
            "subject": "Delivery follow-up",
            "prompt": "Ask whether the parcel arrived.",
        })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let id = created["callId"].as_str().expect("callId").to_owned();
    assert_eq!(created["status"], "SCHEDULED");

    let done = e.drive_to(&id, "COMPLETED").await;
    assert_eq!(done["callId"], id.as_str());
    assert_eq!(done["outcome"], "answered");
    assert!(done["providerCallId"].is_string());
    assert!(done["durationMs"].as_u64().is_some_and(|d| d > 0), "{done}");

    // Owner-scoped through the app's own keys: Bob does not see Ada's call.
    let (st, _) = send(
        &e.app,
        Method::GET,
        &format!("/callcat/api/calls/{id}"),
        Some("bob-key"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_apps_key_are_refused() {
    let e = start().await;
    for key in [None, Some("wrong-key")] {
        let (st, err) = send(&e.app, Method::GET, "/callcat/api/calls", key, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{err}");
        assert_eq!(err["error"]["code"], "unauthorized");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("X-Api-Key")),
            "{err}"
        );
        let (st, _) = send(
            &e.app,
            Method::POST,
            "/callcat/api/calls",
            key,
            Some(json!({})),
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    // The app's own routes sit next to callcat's.
    let (st, me) = send(&e.app, Method::GET, "/whoami", Some(ADA), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me, Value::String("acme/ada\n".into()));
    let (st, _) = send(&e.app, Method::GET, "/callcat/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK);
    // Unknown routes under the prefix answer in callcat's error shape.
    let (st, err) = send(&e.app, Method::GET, "/callcat/api/nope", Some(ADA), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "route_not_found");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_the_mount_prefix() {
    let e = start().await;
    let (st, doc) = send(&e.app, Method::GET, "/callcat/api/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["servers"][0]["url"], "/callcat");
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "apiKey", "{scheme}");
    assert_eq!(scheme["name"], embed::API_KEY_HEADER);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/api/calls"));
    assert!(paths.contains_key("/api/calls/{callId}"));
    // No provider webhooks were registered by this app.
    assert!(!paths.keys().any(|p| p.starts_with("/webhooks")));
    e.stop().await;
}
