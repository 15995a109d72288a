//! SIGTERM while dials are in flight, on PostgreSQL: the server process stops
//! claiming, lets the dials the provider is still answering finish (the drain),
//! and exits; none of those calls is left FAILED or DISPATCHING.
//!
//! The test runs this same test binary a second time as the server process
//! (`child_serves_until_sigterm`, started with `--ignored --exact`), configured
//! through the environment exactly as `cargo run --example server` is, with the
//! real signal handler. The provider is a loopback Retell stand-in that holds
//! every create-phone-call answer until the test releases them, after SIGTERM.
//!
//! Needs `CALLCAT_TEST_POSTGRES_URL` (scripts/test sets it); in CI (`CI=true`) a
//! missing database fails the test.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use callcat::axum::JwtAuthenticator;
use callcat::{CallId, CallStatus, CallStore as _, SystemClock};
use callcat_postgres::{PostgresOptions, PostgresStore};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const CHILD: &str = "CALLCAT_SIGTERM_TEST_CHILD";
const SECRET: &str = "sigterm-test-secret-sigterm-test-secret";
/// A generous bound on each step, so that a regression fails instead of hanging.
const STEP: Duration = Duration::from_secs(60);
const CALLS: usize = 3;

/// The server process: what `examples/server.rs` does, on the real signals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server process of sigterm_lets_dials_in_flight_finish_on_postgres"]
async fn child_serves_until_sigterm() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let config = callcat_server::Config::from_env_and_args(Vec::<String>::new()).expect("config");
    let server = callcat_server::Server::builder(config)
        .build()
        .await
        .expect("server builds");
    let listener = server.bind().await.expect("bind");
    println!(
        "{}",
        server.startup_message(listener.local_addr().expect("addr"))
    );
    server
        .serve(listener, callcat_server::shutdown_signal())
        .await
        .expect("serves and stops cleanly");
    println!("server stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_dials_in_flight_finish_on_postgres() {
    let Some(url) = common::postgres_url("the SIGTERM test") else {
        return;
    };
    let schema = format!("callcat_sigterm_{}", CallId::new().as_uuid().simple());
    let (retell, mut dials, release) = common::retell::held().await;

    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "child_serves_until_sigterm",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("CALLCAT_LISTEN", "127.0.0.1:0")
        .env("CALLCAT_STORE", "postgres")
        .env("DATABASE_URL", &url)
        .env("CALLCAT_POSTGRES_SCHEMA", &schema)
        .env("CALLCAT_TELEPHONY", "retell")
        .env("RETELL_API_KEY", "key_sigterm_test_0123456789")
        .env("RETELL_BASE_URL", &retell)
        .env("RETELL_FROM_NUMBER", "+14155550100")
        .env("RETELL_AGENT_ID", "agent_sigterm")
        .env("CALLCAT_JWT_SECRET", SECRET)
        .env("CALLCAT_DRAIN_SECONDS", "60")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the server process starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if let Some(rest) = line.strip_prefix("callcat server listening on ") {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("the server starts in time")
    .expect("the server prints its address");

    // Three calls of three users to three numbers: all dialed at once.
    let jwt = JwtAuthenticator::new(SECRET.as_bytes(), Arc::new(SystemClock));
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..CALLS {
        let token = jwt
            .mint(
                &format!("user{i}"),
                Some("acme"),
                None,
                Duration::from_secs(600),
            )
            .expect("token");
        let resp = http
            .post(format!("{base}/api/calls"))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "calleeName": "Ada", "phoneNumber": format!("+1415555267{i}"),
                "subject": "Deploy", "prompt": "Say hello."
            }))
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status(), 201);
        let body: serde_json::Value = resp.json().await.expect("json");
        let id: CallId = body["callId"].as_str().expect("id").parse().expect("uuid");
        ids.push(id);
    }
    for _ in 0..CALLS {
        tokio::time::timeout(STEP, dials.recv())
            .await
            .expect("every call is dialed")
            .expect("a dial");
    }

    // A deploy: SIGTERM while all three dials wait for the provider's answer.
    let pid = child.id().expect("pid").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    // The process is draining, not gone: it waits for the answers.
    let drained = tokio::time::timeout(Duration::from_millis(500), child.wait()).await;
    assert!(drained.is_err(), "the server exited with dials in flight");
    release.send(true).expect("the stand-in listens");
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .expect("the server exits once the dials are answered")
        .expect("wait");
    assert!(status.success(), "the server process failed: {status}");

    let store = PostgresStore::connect_with(&url, PostgresOptions::new().schema(schema.as_str()))
        .await
        .expect("connect");
    for id in &ids {
        let c = store.calls().get(*id).await.expect("read").expect("call");
        assert_eq!(c.status, CallStatus::Ringing, "{c:?}");
        assert!(c.provider_call_id.is_some(), "{c:?}");
    }
    let pool = callcat_postgres::sqlx::PgPool::connect(&url)
        .await
        .expect("connect for cleanup");
    // The schema name is ours: a fixed prefix and a UUID's hex digits.
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    callcat_postgres::sqlx::query(callcat_postgres::sqlx::AssertSqlSafe(drop))
        .execute(&pool)
        .await
        .expect("drop the test schema");
}
