//! Shared helpers for the end-to-end tests: an in-process server on an ephemeral
//! port with a manual clock, tokens, HTTP helpers, condition waits and an SSE reader.
#![allow(dead_code)]

pub mod retell;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use callcat::{ManualClock, SimulatorConfig};
use callcat_server::config::Secret;
use callcat_server::{Config, RunningServer, Server, ServerBuilder};
use serde_json::Value;

pub const JWT_SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e";

/// Short, deterministic simulated calls: ring 2 s, talk 10 s, a transcript turn
/// every 2 s, analysis 1 s after the end, no answer after 5 s.
pub fn short_simulator() -> SimulatorConfig {
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

pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        ..Config::default()
    }
}

pub struct TestServer {
    pub clock: ManualClock,
    pub running: Option<RunningServer>,
    pub server_state: callcat_server::AppState,
    pub simulator: Option<callcat::Simulator>,
    pub http: reqwest::Client,
    pub base: String,
}

impl TestServer {
    /// Starts the simulator-backed server with the short simulator.
    pub async fn start() -> TestServer {
        Self::start_with(test_config(), |b| b.simulator_config(short_simulator())).await
    }

    pub async fn start_with(
        config: Config,
        customize: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> TestServer {
        let clock = ManualClock::at_fixed_start();
        let builder = customize(Server::builder(config).clock(Arc::new(clock.clone())));
        let server = builder.build().await.expect("server builds");
        let state = server.state().clone();
        let simulator = server.simulator().cloned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = server.spawn(listener).expect("spawn");
        let base = running.url();
        TestServer {
            clock,
            running: Some(running),
            server_state: state,
            simulator,
            http: reqwest::Client::new(),
            base,
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// A token for `user` in tenant `acme`, valid for an hour of the test clock.
    pub fn token(&self, user: &str) -> String {
        self.server_state
            .jwt
            .mint(user, Some("acme"), None, Duration::from_secs(3600))
            .expect("token")
    }

    pub fn admin_token(&self, user: &str) -> String {
        self.server_state
            .jwt
            .mint(user, Some("acme"), Some("admin"), Duration::from_secs(3600))
            .expect("token")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// Creates a call for now; returns its id.
    pub async fn create_call(&self, token: &str, metadata: Value, max_attempts: u32) -> String {
        let (status, call) = self
            .post(
                "/api/calls",
                token,
                serde_json::json!({
                    "calleeName": "Ada Lovelace",
                    "phoneNumber": "+14155552671",
                    "subject": "Delivery follow-up",
                    "prompt": "Ask whether the parcel arrived.",
                    "metadata": metadata,
                    "maxAttempts": max_attempts,
                }),
            )
            .await;
        assert_eq!(status, 201, "{call}");
        call["callId"].as_str().expect("callId").to_owned()
    }

    pub async fn call(&self, token: &str, id: &str) -> Value {
        let (status, call) = self.get(&format!("/api/calls/{id}"), token).await;
        assert_eq!(status, 200, "{call}");
        call
    }

    /// Waits (bounded) until the call satisfies `pred`; returns it.
    pub async fn wait_call(
        &self,
        token: &str,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..WAIT_ROUNDS {
            last = self.call(token, id).await;
            if pred(&last) {
                return last;
            }
            pause().await;
        }
        panic!("call never became {what}: {last}");
    }

    pub async fn wait_status(&self, token: &str, id: &str, status: &str) -> Value {
        self.wait_call(token, id, status, |c| c["status"] == status)
            .await
    }

    /// `GET /metrics`, parsed with a Prometheus text-format parser (the answer
    /// must be `text/plain` in exposition format 0.0.4 and parse whole).
    pub async fn scrape(&self) -> Scrape {
        let resp = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status().as_u16(), 200);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = resp.text().await.expect("metrics text");
        openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("the exposition text does not parse: {e:?}\n{text}"))
    }

    /// Advances the test clock.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}

/// How many times a wait looks before failing (with [`pause`] between looks).
pub const WAIT_ROUNDS: usize = 500;

/// Lets the server's tasks run between two looks at a condition. This is not a
/// wait for time to pass (time is the manual clock); it bounds the busy loop.
pub async fn pause() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

/// Reads an SSE stream in the background, collecting events.
pub struct SseReader {
    pub events: Arc<Mutex<Vec<SseEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SseReader {
    /// Opens the stream and waits until `stream.ready` arrived (so the
    /// subscription exists before anything else happens).
    pub async fn open(server: &TestServer, token: &str) -> SseReader {
        let mut resp = server
            .http
            .get(server.url("/api/calls/stream"))
            .bearer_auth(token)
            .send()
            .await
            .expect("stream");
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("text/event-stream")
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let mut event = String::from("message");
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if data.is_empty() && event == "message" {
                        continue; // keep-alive comment
                    }
                    let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    sink.lock().expect("lock").push(SseEvent { event, data });
                }
            }
        });
        let reader = SseReader { events, task };
        reader
            .wait_for("stream.ready", |e| e.event == "stream.ready")
            .await;
        reader
    }

    pub fn snapshot(&self) -> Vec<SseEvent> {
        self.events.lock().expect("lock").clone()
    }

    /// Waits (bounded) until an event satisfies `pred`.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&SseEvent) -> bool) -> SseEvent {
        for _ in 0..WAIT_ROUNDS {
            if let Some(e) = self.snapshot().into_iter().find(|e| pred(e)) {
                return e;
            }
            pause().await;
        }
        panic!("no SSE event {what}; got {:?}", self.snapshot());
    }

    pub fn close(self) {
        self.task.abort();
    }
}

/// A parsed `/metrics` answer.
pub type Scrape = openmetrics_parser::MetricsExposition<
    openmetrics_parser::PrometheusType,
    openmetrics_parser::PrometheusValue,
>;

/// The samples of family `name` whose labels include `labels`.
pub fn series<'a>(
    scrape: &'a Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a openmetrics_parser::Sample<openmetrics_parser::PrometheusValue>> {
    let Some(family) = scrape.families.get(name) else {
        return Vec::new();
    };
    family
        .iter_samples()
        .filter(|s| {
            let set = s.get_labelset().expect("a parsed sample has label names");
            labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .collect()
}

/// The sum of the counter or gauge series of family `name` whose labels include
/// `labels` (0 when there is none).
pub fn metric(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(scrape, name, labels)
        .into_iter()
        .map(|s| match &s.value {
            openmetrics_parser::PrometheusValue::Counter(c) => c.value.as_f64(),
            openmetrics_parser::PrometheusValue::Gauge(n)
            | openmetrics_parser::PrometheusValue::Unknown(n) => n.as_f64(),
            other => panic!("{name} is not a single value: {other:?}"),
        })
        .sum()
}

/// The histogram `name` (one series, without labels).
pub fn histogram(scrape: &Scrape, name: &str) -> openmetrics_parser::HistogramValue {
    let all = series(scrape, name, &[]);
    assert_eq!(all.len(), 1, "{name}: {all:?}");
    match &all[0].value {
        openmetrics_parser::PrometheusValue::Histogram(h) => h.clone(),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

/// The PostgreSQL URL of the service-backed tests (`CALLCAT_TEST_POSTGRES_URL`,
/// set by scripts/test). Without it `what` is skipped with a message, except in
/// CI (`CI=true`), where it fails.
pub fn postgres_url(what: &str) -> Option<String> {
    match std::env::var("CALLCAT_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CALLCAT_TEST_POSTGRES_URL is not set; in CI the PostgreSQL tests must run")
        }
        _ => {
            eprintln!("skipped: set CALLCAT_TEST_POSTGRES_URL to run {what}");
            None
        }
    }
}
