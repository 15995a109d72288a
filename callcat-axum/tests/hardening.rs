//! Hardening of the router: webhook floods cannot starve genuine webhooks,
//! webhook bodies are small and webhook requests bounded, every request has a
//! timeout and a bounded line to wait in, event streams end when the token
//! expires, and a JSON type error names its field.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use callcat_axum::{Api, ApiRouter, JwtAuthenticator};
use callcat_core::chrono::{DateTime, Utc};
use callcat_core::memory::in_memory_stores;
use callcat_core::{
    Clock, Engine, Error, ErrorKind, ManualClock, ProviderEvent, Simulator, SimulatorConfig,
    WebhookRequest, WebhookVerifier,
};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::ServiceExt as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const SECRET: &[u8] = b"hardening-test-secret-hardening-test";

async fn api(clock: Arc<dyn Clock>) -> Api {
    let engine = Engine::builder()
        .stores(in_memory_stores())
        .simulator(Simulator::new(clock.clone(), SimulatorConfig::default()))
        .clock(clock)
        .build()
        .await
        .expect("engine");
    Api::new(engine)
}

/// Accepts requests whose `x-sig` is `good` (no events).
struct FakeVerifier;

impl WebhookVerifier for FakeVerifier {
    fn verify_and_parse(
        &self,
        req: WebhookRequest<'_>,
        _now: DateTime<Utc>,
    ) -> callcat_core::Result<Vec<ProviderEvent>> {
        match req.headers.get("x-sig") {
            Some(v) if v == "good" => Ok(Vec::new()),
            _ => Err(Error::new(ErrorKind::Unauthorized, "bad signature")),
        }
    }
}

fn webhook(sig: &str, from: [u8; 4], body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/webhooks/acme")
        .header("x-sig", sig)
        .body(body.into())
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((from, 40000))));
    req
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    read(resp).await
}

async fn read(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, json)
}

async fn acme(clock: Arc<dyn Clock>) -> ApiRouter {
    ApiRouter::new(
        api(clock.clone()).await,
        Arc::new(JwtAuthenticator::new(SECRET, clock)),
    )
    .webhook("acme", Arc::new(FakeVerifier))
}

#[tokio::test]
async fn a_flood_of_forged_webhooks_never_makes_a_signed_one_429() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let app = acme(clock).await.build().expect("router");
    let attacker = [203, 0, 113, 7];
    let mut refused = 0;
    for _ in 0..300 {
        let (status, body) = call(&app, webhook("forged", attacker, "{}")).await;
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(body["error"]["code"], "rate_limited");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        refused > 200,
        "the forged flood spent its budget: {refused}"
    );
    // Signed requests from the very same source, and from another, go through.
    for _ in 0..300 {
        let (status, body) = call(&app, webhook("good", attacker, "{}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = call(&app, webhook("good", [198, 51, 100, 1], "{}")).await;
    assert_eq!(status, StatusCode::OK);
    // Another source's forged requests are judged on their own budget.
    let (status, _) = call(&app, webhook("forged", [198, 51, 100, 1], "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_trusted_proxy_header_names_the_source() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let app = acme(clock)
        .await
        .client_ip_header("x-forwarded-for")
        .webhook_rate_limit(1, 1)
        .build()
        .expect("router");
    let via_proxy = |client: &str| {
        let mut req = webhook("forged", [10, 0, 0, 1], "{}");
        req.headers_mut().insert(
            "x-forwarded-for",
            format!("spoofed, {client}").parse().expect("header"),
        );
        req
    };
    assert_eq!(
        call(&app, via_proxy("192.0.2.1")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, via_proxy("192.0.2.1")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Same proxy connection, another client: its own budget.
    assert_eq!(
        call(&app, via_proxy("192.0.2.2")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn webhook_bodies_are_small_unless_the_provider_needs_more() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let big = vec![b' '; 300 * 1024];
    let app = acme(clock.clone()).await.build().expect("router");
    let (status, body) = call(&app, webhook("good", [192, 0, 2, 9], big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let app = acme(clock)
        .await
        .provider_body_limit("acme", 512 * 1024)
        .build()
        .expect("router");
    let (status, body) = call(&app, webhook("good", [192, 0, 2, 9], big)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn webhook_requests_at_once_are_bounded_before_the_body_is_read() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let app = acme(clock)
        .await
        .max_concurrent_webhooks(1)
        .build()
        .expect("router");
    // A client that never finishes sending its body holds the one slot.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let slow = Body::from_stream(tokio_stream(rx));
    let first = app.clone().oneshot(webhook("good", [192, 0, 2, 1], slow));
    tokio::pin!(first);
    assert!(futures::poll!(&mut first).is_pending());
    let (status, body) = call(&app, webhook("good", [192, 0, 2, 2], "{}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // The slow body ends: the first request completes and frees the slot.
    tx.send(Ok(Bytes::from_static(b"{}"))).await.expect("send");
    drop(tx);
    let (status, _) = read(first.await.expect("infallible")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, webhook("good", [192, 0, 2, 2], "{}")).await;
    assert_eq!(status, StatusCode::OK);
}

fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Waits until notified.
#[utoipa::path(get, path = "/blocked", responses((status = 200, description = "Released")))]
async fn blocked(axum::Extension(gate): axum::Extension<Arc<Notify>>) -> &'static str {
    gate.notified().await;
    "released"
}

fn get(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .body(Body::empty())
        .expect("request")
}

#[tokio::test(start_paused = true)]
async fn a_request_that_takes_too_long_is_answered_408() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let gate = Arc::new(Notify::new());
    let app = acme(clock)
        .await
        .request_timeout(Duration::from_secs(5))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(blocked))
                .layer(axum::Extension(gate)),
        )
        .build()
        .expect("router");
    // Tokio's paused clock jumps to the deadline as soon as everything waits.
    let (status, body) = call(&app, get("/blocked")).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
}

#[tokio::test]
async fn requests_beyond_the_slots_wait_and_beyond_the_line_get_503() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let gate = Arc::new(Notify::new());
    let app = acme(clock)
        .await
        .max_concurrent_requests(1, 1)
        .merge(
            OpenApiRouter::new()
                .routes(routes!(blocked))
                .layer(axum::Extension(gate.clone())),
        )
        .build()
        .expect("router");
    let running = app.clone().oneshot(get("/blocked"));
    tokio::pin!(running);
    assert!(futures::poll!(&mut running).is_pending());
    let waiting = app.clone().oneshot(get("/blocked"));
    tokio::pin!(waiting);
    assert!(futures::poll!(&mut waiting).is_pending());
    let (status, body) = call(&app, get("/blocked")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    // Release the running one; the waiting one gets the slot and runs.
    gate.notify_one();
    assert_eq!(running.await.expect("infallible").status(), StatusCode::OK);
    assert!(futures::poll!(&mut waiting).is_pending());
    gate.notify_one();
    assert_eq!(waiting.await.expect("infallible").status(), StatusCode::OK);
}

#[tokio::test]
async fn the_event_stream_ends_when_the_token_expires() {
    let manual = ManualClock::at_fixed_start();
    let clock: Arc<dyn Clock> = Arc::new(manual.clone());
    let jwt = JwtAuthenticator::new(SECRET, clock.clone());
    let token = jwt
        .mint("ada", Some("acme"), None, Duration::from_secs(60))
        .expect("token");
    let app = ApiRouter::new(api(clock).await, Arc::new(jwt))
        .build()
        .expect("router");
    let req = Request::builder()
        .uri("/api/calls/stream")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let resp = app.oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    let first = body.next().await.expect("a frame").expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("stream.ready"));
    manual.advance(Duration::from_secs(61));
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
    }
    assert!(rest.contains("event: stream.expired"), "{rest}");
}

#[tokio::test]
async fn a_json_type_error_names_its_field() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let jwt = JwtAuthenticator::new(SECRET, clock.clone());
    let token = jwt
        .mint("ada", None, None, Duration::from_secs(60))
        .expect("token");
    let app = ApiRouter::new(api(clock).await, Arc::new(jwt))
        .build()
        .expect("router");
    let body = json!({
        "calleeName": "Ada",
        "phoneNumber": "+14155552671",
        "subject": "s",
        "prompt": "p",
        "maxAttempts": "x",
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/calls")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "maxAttempts", "{body}");
    // A NUL character never reaches the store.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/calls")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({
                "calleeName": "Ada",
                "phoneNumber": "+14155552671",
                "subject": "s\u{0}",
                "prompt": "p",
            })
            .to_string(),
        ))
        .expect("request");
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "subject", "{body}");
}

#[tokio::test]
async fn the_builder_refuses_bad_limits() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let auth = Arc::new(JwtAuthenticator::new(SECRET, clock.clone()));
    let api = api(clock).await;
    let base = || ApiRouter::new(api.clone(), auth.clone());
    let field = |r: Result<Router, Error>| match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.field().map(str::to_owned),
    };
    let cases = [
        (base().provider_body_limit("acme", 10), "webhookBodyLimit"),
        (base().webhook_body_limit(64 << 20), "webhookBodyLimit"),
        (base().body_limit(64 << 20), "bodyLimit"),
        (base().max_concurrent_webhooks(0), "maxConcurrentWebhooks"),
        (
            base().max_concurrent_requests(0, 10),
            "maxConcurrentRequests",
        ),
        (
            base().request_timeout(Duration::from_millis(10)),
            "requestTimeout",
        ),
        (base().client_ip_header("not a header"), "clientIpHeader"),
    ];
    for (builder, expected) in cases {
        assert_eq!(field(builder.build()).as_deref(), Some(expected));
    }
    assert!(
        base()
            .provider_body_limit("acme", 1 << 20)
            .max_concurrent_requests(8, 0)
            .client_ip_header("x-forwarded-for")
            .build()
            .is_ok()
    );
}
