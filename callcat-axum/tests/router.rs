//! The router as an embedder sees it: every route is in the OpenAPI document
//! (and every documented operation is routed), webhooks registered by provider
//! name are verified against the public URL even under a mount prefix,
//! authentication goes through the given `Authenticator`, and the builder
//! refuses bad settings.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use callcat_axum::{Api, ApiRouter, JwtAuthenticator, WebhookObserver};
use callcat_core::chrono::{DateTime, Utc};
use callcat_core::memory::in_memory_stores;
use callcat_core::{
    Clock, Engine, Error, ErrorKind, ManualClock, ProviderEvent, Simulator, SimulatorConfig,
    WebhookRequest, WebhookVerifier,
};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const SECRET: &[u8] = b"router-test-secret-router-test-secret";

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

/// Accepts requests whose `x-sig` is `good` (no events), remembering the URL
/// it was asked to verify.
#[derive(Default)]
struct FakeVerifier {
    urls: Mutex<Vec<String>>,
}

impl WebhookVerifier for FakeVerifier {
    fn verify_and_parse(
        &self,
        req: WebhookRequest<'_>,
        _now: DateTime<Utc>,
    ) -> callcat_core::Result<Vec<ProviderEvent>> {
        self.urls.lock().expect("lock").push(req.url.to_owned());
        match req.headers.get("x-sig") {
            Some(v) if v == "good" => Ok(Vec::new()),
            _ => Err(Error::new(ErrorKind::Unauthorized, "bad signature")),
        }
    }
}

#[derive(Default)]
struct Counter(Mutex<Vec<(String, String)>>);

impl WebhookObserver for Counter {
    fn webhook(&self, provider: &str, result: &str) {
        self.0
            .lock()
            .expect("lock")
            .push((provider.to_owned(), result.to_owned()));
    }
}

/// An embedder's own documented route.
#[utoipa::path(get, path = "/extra", responses((status = 200, description = "Extra")))]
async fn extra() -> &'static str {
    "extra"
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
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
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, json)
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_routed() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let jwt = JwtAuthenticator::new(SECRET, clock.clone());
    let token = jwt
        .mint("ada", Some("acme"), None, Duration::from_secs(600))
        .expect("token");
    let verifier = Arc::new(FakeVerifier::default());
    let (router, doc) = ApiRouter::new(api(clock).await, Arc::new(jwt))
        .webhook("acme", verifier.clone())
        .webhook_at("/webhooks/other/status", "other", verifier)
        .unconfigured_webhook("/webhooks/none", "none")
        .merge(OpenApiRouter::new().routes(routes!(extra)))
        .build_with_openapi()
        .expect("router");
    let documented: BTreeSet<(String, String)> = serde_json::to_value(&doc).expect("json")["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            ["get", "post", "put", "delete", "patch"]
                .into_iter()
                .filter(|m| item.get(*m).is_some())
                .map(|m| (m.to_owned(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    // Every route the router serves.
    let routed: BTreeSet<(String, String)> = [
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
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/api/openapi.json"),
        ("post", "/webhooks/acme"),
        ("post", "/webhooks/other/status"),
        ("post", "/webhooks/none"),
        ("get", "/extra"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(documented, routed);

    // Mounted under a prefix, every documented operation is routed: it may
    // refuse the request, but never as an unknown route or method.
    let app = Router::new().nest("/p", router);
    let auth = format!("Bearer {token}");
    for (method, path) in &documented {
        if path == "/api/calls/stream" {
            continue; // an open stream
        }
        let concrete = path
            .replace("{callId}", "01a1fd92-5d05-728e-abef-189291294b8d")
            .replace("{providerId}", "sim_x")
            .replace("{windowId}", "01a1fd92-5d05-728e-abef-189291294b8d")
            .replace("{phoneNumber}", "%2B14155552671");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (st, body) = send(
            &app,
            m,
            &format!("/p{concrete}"),
            &[("authorization", &auth)],
            Some(json!({})),
        )
        .await;
        assert_ne!(st, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(body["error"]["code"], "route_not_found", "{method} {path}");
    }
    let (st, body) = send(&app, Method::GET, "/p/api/nope", &[], None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "route_not_found");
}

#[tokio::test]
async fn webhooks_are_verified_against_the_public_url_under_a_prefix() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let verifier = Arc::new(FakeVerifier::default());
    let counter = Arc::new(Counter::default());
    let router = ApiRouter::new(
        api(clock.clone()).await,
        Arc::new(JwtAuthenticator::new(SECRET, clock)),
    )
    .webhook("acme", verifier.clone())
    .unconfigured_webhook("/webhooks/none", "none")
    .public_base_url("https://example.com/")
    .webhook_observer(counter.clone())
    .build()
    .expect("router");
    let app = Router::new().nest("/callcat", router);

    let (st, ack) = send(
        &app,
        Method::POST,
        "/callcat/webhooks/acme?call=1",
        &[("x-sig", "good")],
        Some(json!({"event": "x"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{ack}");
    assert_eq!(ack, json!({"results": []}));
    let (st, err) = send(
        &app,
        Method::POST,
        "/callcat/webhooks/acme",
        &[("x-sig", "forged")],
        Some(json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "unauthorized");
    assert_eq!(
        *verifier.urls.lock().expect("lock"),
        [
            "https://example.com/callcat/webhooks/acme?call=1",
            "https://example.com/callcat/webhooks/acme",
        ]
    );
    let (st, err) = send(&app, Method::POST, "/callcat/webhooks/none", &[], None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "not_found");
    assert_eq!(
        *counter.0.lock().expect("lock"),
        [
            ("acme".to_owned(), "accepted".to_owned()),
            ("acme".to_owned(), "unauthorized".to_owned()),
        ]
    );
}

#[tokio::test]
async fn without_a_public_base_url_the_host_header_names_the_server() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let verifier = Arc::new(FakeVerifier::default());
    let router = ApiRouter::new(
        api(clock.clone()).await,
        Arc::new(JwtAuthenticator::new(SECRET, clock)),
    )
    .webhook("acme", verifier.clone())
    .build()
    .expect("router");
    let (st, _) = send(
        &router,
        Method::POST,
        "/webhooks/acme",
        &[("x-sig", "good"), ("host", "calls.internal:8080")],
        Some(json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        *verifier.urls.lock().expect("lock"),
        ["http://calls.internal:8080/webhooks/acme"]
    );
}

#[tokio::test]
async fn the_authenticator_decides_and_refusals_are_401() {
    let clock = ManualClock::at_fixed_start();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let jwt = JwtAuthenticator::new(SECRET, shared.clone());
    let token = jwt
        .mint("ada", Some("acme"), None, Duration::from_secs(60))
        .expect("token");
    let app = callcat_axum::router(api(shared).await, Arc::new(jwt));
    let (st, list) = send(
        &app,
        Method::GET,
        "/api/calls",
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["calls"], json!([]));
    let (st, err) = send(&app, Method::GET, "/api/calls", &[], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "unauthorized");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Authorization")),
        "{err}"
    );
    clock.advance(Duration::from_secs(61));
    let (st, err) = send(
        &app,
        Method::GET,
        "/api/calls",
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["message"], "the token has expired");
}

#[tokio::test]
async fn the_builders_refuse_bad_settings() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_fixed_start());
    let auth = Arc::new(JwtAuthenticator::new(SECRET, clock.clone()));
    let api = api(clock).await;
    let field = |r: Result<Router, Error>| match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.field().map(str::to_owned),
    };
    let base = || ApiRouter::new(api.clone(), auth.clone());
    assert_eq!(
        field(base().body_limit(10).build()).as_deref(),
        Some("bodyLimit")
    );
    assert_eq!(
        field(base().webhook_body_limit(10).build()).as_deref(),
        Some("webhookBodyLimit")
    );
    assert_eq!(
        field(base().webhook_rate_limit(0, 5).build()).as_deref(),
        Some("webhookRateLimit")
    );
    assert_eq!(
        field(base().public_base_url("ftp://x").build()).as_deref(),
        Some("publicBaseUrl")
    );
    let v: Arc<dyn WebhookVerifier> = Arc::new(FakeVerifier::default());
    assert_eq!(
        field(
            base()
                .webhook("acme", v.clone())
                .webhook_at("/webhooks/acme", "again", v.clone())
                .build()
        )
        .as_deref(),
        Some("webhookPath")
    );
    assert_eq!(
        field(base().webhook_at("/webhooks/{x}", "x", v).build()).as_deref(),
        Some("webhookPath")
    );
}
