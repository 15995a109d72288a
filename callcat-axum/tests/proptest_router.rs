//! A property test of the whole router: arbitrary JSON, form and byte bodies
//! and arbitrary header values, with and without a valid token, thrown at every
//! route of the OpenAPI document (path parameters replaced by arbitrary strings
//! and by ids of real records, the caller's and another tenant's) and at every
//! webhook. Whatever comes in: the router answers (no panic), never with a 5xx
//! other than 503, and a request answered 4xx changes no record.
//!
//! Bounded and deterministic: a fixed number of cases from a fixed seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use callcat_axum::{Api, ApiRouter, JwtAuthenticator};
use callcat_core::chrono::{DateTime, Utc};
use callcat_core::memory::in_memory_stores;
use callcat_core::{
    CallId, CallerNumbers, Clock, Engine, EngineSettings, Error, ErrorKind, ListQuery, ListView,
    ManualClock, Owner, PhoneNumber, ProviderEvent, Simulator, SimulatorConfig, WebhookRequest,
    WebhookVerifier,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const SECRET: &[u8] = b"proptest-secret-proptest-secret-proptest";
/// Cases per run; `CALLCAT_PROPTEST_CASES` asks for more (a longer hunt).
const CASES: u32 = 128;
/// The one caller number tenant `acme` may give.
const ACME_CALLER: &str = "+14155550100";

/// Refuses every request: a webhook whose signature never matches.
struct Rejects;

impl WebhookVerifier for Rejects {
    fn verify_and_parse(
        &self,
        _req: WebhookRequest<'_>,
        _now: DateTime<Utc>,
    ) -> callcat_core::Result<Vec<ProviderEvent>> {
        Err(Error::new(ErrorKind::Unauthorized, "bad signature"))
    }
}

/// Accepts a request whose `x-sig` is `good` (with no events), refuses others.
struct AcceptsGood;

impl WebhookVerifier for AcceptsGood {
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

/// The router, the engine behind it, and what the cases draw from.
struct World {
    app: Router,
    engine: Engine,
    owners: Vec<Owner>,
    /// (method, path template) of every documented route and every webhook.
    routes: Vec<(Method, String)>,
    /// Real path parameters: the caller's records, another tenant's records.
    ids: Vec<String>,
    tokens: Vec<String>,
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    if status.is_success() {
        // Not read: an event stream never ends.
        return (status, String::new());
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn post_json(app: &Router, path: &str, token: &str, body: Value) -> Value {
    let req = Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json")
}

/// A day after the clock's fixed start (2030-01-01T00:00:00Z), in milliseconds.
const TOMORROW_MS: i64 = 1_893_542_400_000;

fn call_fields() -> Value {
    json!({"calleeName": "Ada Lovelace", "phoneNumber": "+14155552671",
           "subject": "Delivery follow-up", "prompt": "Ask whether the parcel arrived."})
}

fn call_body() -> Value {
    let mut b = call_fields();
    b["scheduledAt"] = json!(TOMORROW_MS);
    b
}

async fn world() -> World {
    let clock = ManualClock::at_fixed_start();
    let clock: Arc<dyn Clock> = Arc::new(clock);
    let engine = Engine::builder()
        .stores(in_memory_stores())
        .simulator(Simulator::new(clock.clone(), SimulatorConfig::default()))
        .clock(clock.clone())
        .settings(EngineSettings {
            caller_numbers: CallerNumbers::only([])
                .allow("acme", [PhoneNumber::parse(ACME_CALLER).expect("number")]),
            ..EngineSettings::default()
        })
        .build()
        .await
        .expect("engine");
    let jwt = JwtAuthenticator::new(SECRET, clock.clone());
    let hour = Duration::from_secs(3600);
    let ada = jwt.mint("ada", Some("acme"), None, hour).expect("token");
    let admin = jwt
        .mint("root", Some("acme"), Some("admin"), hour)
        .expect("token");
    let bob = jwt.mint("bob", Some("beta"), None, hour).expect("token");
    let beta_admin = jwt
        .mint("boss", Some("beta"), Some("admin"), hour)
        .expect("token");
    let (app, doc) = ApiRouter::new(Api::new(engine.clone()), Arc::new(jwt))
        .webhook("retell", Arc::new(Rejects))
        .webhook_at("/webhooks/good", "good", Arc::new(AcceptsGood))
        .unconfigured_webhook("/webhooks/twilio", "twilio")
        .build_with_openapi()
        .expect("router");
    let mut routes = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (m, op) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
        ] {
            if op.is_some() {
                routes.push((m, path.clone()));
            }
        }
    }
    for w in ["/webhooks/retell", "/webhooks/good", "/webhooks/twilio"] {
        if !routes.iter().any(|(m, p)| *m == Method::POST && p == w) {
            routes.push((Method::POST, w.to_owned()));
        }
    }
    // Real records, of the caller and of another tenant.
    let mut ids = Vec::new();
    for (token, admin) in [(&ada, &admin), (&bob, &beta_admin)] {
        let c = post_json(&app, "/api/calls", token, call_body()).await;
        ids.push(c["callId"].as_str().expect("callId").to_owned());
        let w = post_json(
            &app,
            "/api/call-windows",
            token,
            json!({"kind": "recurring", "weekdays": ["mon"], "start": "09:00", "end": "10:00",
                   "timezone": "UTC", "call": call_fields()}),
        )
        .await;
        ids.push(w["windowId"].as_str().expect("windowId").to_owned());
        post_json(
            &app,
            "/api/do-not-call",
            admin,
            json!({"phoneNumber": "+14155550123"}),
        )
        .await;
    }
    ids.push("+14155550123".to_owned());
    ids.push("%2B14155550123".to_owned());
    World {
        app,
        engine,
        owners: vec![
            Owner::new("acme", "ada"),
            Owner::new("acme", "root"),
            Owner::new("beta", "bob"),
            Owner::new("beta", "boss"),
        ],
        routes,
        ids,
        tokens: vec![ada, admin, bob, beta_admin],
    }
}

/// Every record of the test owners, as JSON text.
async fn snapshot(w: &World) -> String {
    let mut out = Vec::new();
    let e = &w.engine;
    for o in &w.owners {
        for view in [ListView::Upcoming, ListView::Finished] {
            let page = e
                .calls()
                .list(o, &ListQuery::new(view, 100))
                .await
                .expect("list calls");
            for c in &page.items {
                out.push(serde_json::to_value(c).expect("call"));
                if let Ok(t) = e.transcripts().get(o, c.id).await {
                    out.push(serde_json::to_value(&t).expect("transcript"));
                }
            }
        }
        let windows = e.windows().list(o).await.expect("list windows");
        out.push(serde_json::to_value(&windows).expect("windows"));
        let dnc = e
            .do_not_call()
            .list(&o.tenant, 100, None)
            .await
            .expect("list do-not-call");
        out.push(serde_json::to_value(&dnc.items).expect("do-not-call"));
    }
    serde_json::to_string(&out).expect("snapshot")
}

/// What one case sends.
#[derive(Debug, Clone)]
struct Case {
    route: usize,
    /// For each path parameter: a real id (Ok) or an arbitrary string (Err).
    params: Vec<Result<usize, String>>,
    query: Option<String>,
    /// None: no token; Some(i): a valid token; a garbage one past the end.
    token: Option<usize>,
    body: BodyKind,
    headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone)]
enum BodyKind {
    Empty,
    Json(Value),
    Form(Vec<(String, String)>),
    Bytes(Vec<u8>),
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(TOMORROW_MS)),
        any::<f64>().prop_map(|f| json!(f)),
        // Numbers, names and times the API knows, and anything else.
        prop_oneof![
            Just("+14155552671".to_owned()),
            Just(ACME_CALLER.to_owned()),
            Just("2030-01-02T09:00:00Z".to_owned()),
            Just("recurring".to_owned()),
            Just("one_off".to_owned()),
            Just("mon".to_owned()),
            "\\PC{0,24}",
            ".{0,8}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names of the API's bodies, and any other.
fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "calleeName",
            "phoneNumber",
            "subject",
            "prompt",
            "scheduledAt",
            "notAfter",
            "callerNumber",
            "metadata",
            "variables",
            "maxAttempts",
            "retryOn",
            "retryDelays",
            "dialWindow",
            "idempotencyKey",
            "kind",
            "weekdays",
            "start",
            "end",
            "timezone",
            "startAt",
            "endAt",
            "call",
            "segments",
            "text",
            "event",
            "status",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,12}",
    ]
}

/// A valid body of one of the API's requests with a few fields replaced by
/// arbitrary values, removed or added: it passes the JSON parsing and reaches
/// validation and the engine, where a refusal after a partial change would be.
fn arb_near_valid_json() -> impl Strategy<Value = Value> {
    let window = json!({"kind": "recurring", "weekdays": ["mon"], "start": "09:00",
                        "end": "10:00", "timezone": "UTC", "call": call_fields()});
    let bases = vec![
        call_body(),
        call_fields(),
        window,
        json!({"phoneNumber": "+14155550124"}),
        json!({"transcriptText": "Agent: hello"}),
    ];
    let change = (arb_key(), proptest::option::of(arb_json()));
    (
        prop::sample::select(bases),
        prop::collection::vec(change, 0..3),
        any::<bool>(),
    )
        .prop_map(|(mut base, changes, in_call)| {
            for (key, value) in changes {
                let target = match base.get_mut("call") {
                    Some(call) if in_call => call,
                    _ => &mut base,
                };
                let Some(obj) = target.as_object_mut() else {
                    continue;
                };
                match value {
                    Some(v) => obj.insert(key, v),
                    None => obj.remove(&key),
                };
            }
            base
        })
}

fn arb_body() -> impl Strategy<Value = BodyKind> {
    prop_oneof![
        1 => Just(BodyKind::Empty),
        3 => arb_json().prop_map(BodyKind::Json),
        3 => arb_near_valid_json().prop_map(BodyKind::Json),
        2 => prop::collection::vec((arb_key(), "\\PC{0,16}"), 0..8).prop_map(BodyKind::Form),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(BodyKind::Bytes),
    ]
}

fn arb_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop::sample::select(vec![
        "content-type",
        "authorization",
        "x-sig",
        "x-retell-signature",
        "x-twilio-signature",
        "idempotency-key",
        "x-forwarded-for",
        "x-forwarded-proto",
        "host",
        "accept",
        "last-event-id",
        "content-encoding",
    ])
    .prop_map(str::to_owned);
    let value = prop_oneof![
        Just(b"application/json".to_vec()),
        Just(b"application/x-www-form-urlencoded".to_vec()),
        Just(b"good".to_vec()),
        Just(b"Bearer ".to_vec()),
        prop::collection::vec(any::<u8>(), 0..48),
    ];
    prop::collection::vec((name, value), 0..4)
}

fn arb_case(routes: usize, ids: usize, tokens: usize) -> impl Strategy<Value = Case> {
    let param = prop_oneof![
        (0..ids).prop_map(Ok),
        prop_oneof![
            "\\PC{0,40}",
            "[0-9a-f-]{36}",
            Just(CallId::new().to_string()),
            Just("..".to_owned()),
            Just("%00".to_owned()),
            Just("%2F".to_owned()),
        ]
        .prop_map(Err),
    ];
    (
        0..routes,
        prop::collection::vec(param, 2),
        proptest::option::of("[a-zA-Z0-9=&%_.+-]{0,40}"),
        prop_oneof![1 => Just(None), 4 => (0..=tokens).prop_map(Some)],
        arb_body(),
        arb_headers(),
    )
        .prop_map(|(route, params, query, token, body, headers)| Case {
            route,
            params,
            query,
            token,
            body,
            headers,
        })
}

/// Percent-encodes what cannot stand in a path segment.
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~%+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn request(w: &World, case: &Case) -> Option<Request<Body>> {
    let (method, template) = &w.routes[case.route];
    let mut path = String::new();
    let mut params = case.params.iter();
    for part in template.split('/').skip(1) {
        path.push('/');
        if part.starts_with('{') {
            match params.next() {
                Some(Ok(i)) => path.push_str(&w.ids[*i]),
                Some(Err(s)) => path.push_str(&segment(s)),
                None => path.push('x'),
            }
        } else {
            path.push_str(part);
        }
    }
    if let Some(q) = &case.query {
        path.push('?');
        path.push_str(q);
    }
    let mut req = Request::builder().method(method.clone()).uri(path);
    match case.token {
        Some(i) if i < w.tokens.len() => {
            req = req.header("authorization", format!("Bearer {}", w.tokens[i]));
        }
        Some(_) => req = req.header("authorization", "Bearer not.a.token"),
        None => {}
    }
    let body = match &case.body {
        BodyKind::Empty => Body::empty(),
        BodyKind::Json(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        BodyKind::Form(pairs) => {
            req = req.header("content-type", "application/x-www-form-urlencoded");
            let text = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", segment(k), segment(v)))
                .collect::<Vec<_>>()
                .join("&");
            Body::from(text)
        }
        BodyKind::Bytes(b) => Body::from(b.clone()),
    };
    for (name, value) in &case.headers {
        // Values the HTTP layer could never deliver are not sent.
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        req = req.header(n, v);
    }
    req.body(body).ok()
}

#[test]
fn no_input_panics_the_router_fails_it_or_changes_a_record_it_refuses() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let w = rt.block_on(world());
    assert!(w.routes.len() > 20, "{:?}", w.routes);
    let config = Config {
        cases: std::env::var("CALLCAT_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: None,
        ..Config::default()
    };
    // Fixed unless `CALLCAT_PROPTEST_SEED` (a number) asks for another hunt.
    let rng = match std::env::var("CALLCAT_PROPTEST_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
        }
        None => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = arb_case(w.routes.len(), w.ids.len(), w.tokens.len());
    let seen = Mutex::new(BTreeMap::<u16, usize>::new());
    let result = runner.run(&strategy, |case| {
        let Some(req) = request(&w, &case) else {
            return Ok(());
        };
        let (status, body) = rt.block_on(async {
            let before = snapshot(&w).await;
            let (status, body) = send(&w.app, req).await;
            if status.is_client_error() {
                let after = snapshot(&w).await;
                prop_assert_eq!(
                    &before,
                    &after,
                    "a request answered {} changed a record: {}",
                    status,
                    body
                );
            }
            Ok((status, body))
        })?;
        *seen
            .lock()
            .expect("lock")
            .entry(status.as_u16())
            .or_default() += 1;
        prop_assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "answered {}: {}",
            status,
            body
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The cases reached the handlers, not only the refusals in front of them.
    let seen = seen.into_inner().expect("lock");
    eprintln!("statuses: {seen:?}");
    assert!(seen.keys().any(|s| (200..300).contains(s)), "{seen:?}");
    assert!(seen.contains_key(&400), "{seen:?}");
}
