//! The example server on PostgreSQL: the same call lifecycle as with in-memory
//! storage, through the `CALLCAT_STORE=postgres` configuration path.
//!
//! Needs `CALLCAT_TEST_POSTGRES_URL` (scripts/test sets it). Without it the test
//! prints why it skipped, except in CI (`CI=true`), where it fails.

mod common;

use std::time::Duration;

use callcat_server::StoreConfig;
use callcat_server::config::Secret;
use common::{TestServer, test_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_completes_on_postgres() {
    let Some(url) = common::postgres_url("the server on PostgreSQL") else {
        return;
    };
    let schema = format!("callcat_e2e_{}", callcat::CallId::new().as_uuid().simple());
    let mut config = test_config();
    config.store = StoreConfig::Postgres {
        database_url: Secret::new(url.clone()),
        schema: Some(schema.clone()),
    };
    let s = TestServer::start_with(config, |b| b.simulator_config(common::short_simulator())).await;
    let ada = s.token("ada");
    let (st, ready) = s.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(st, 200, "{ready}");

    let id = s.create_call(&ada, json!({}), 1).await;
    s.wait_status(&ada, &id, "RINGING").await;
    s.advance(Duration::from_secs(2));
    s.wait_status(&ada, &id, "IN_PROGRESS").await;
    s.advance(Duration::from_secs(10));
    let done = s.wait_status(&ada, &id, "COMPLETED").await;
    assert_eq!(done["outcome"], "answered");
    let (_, t) = s.get(&format!("/api/calls/{id}/transcript"), &ada).await;
    assert!(
        t["segments"].as_array().is_some_and(|a| !a.is_empty()),
        "{t}"
    );
    let (_, finished) = s.get("/api/calls?status=COMPLETED", &ada).await;
    assert_eq!(finished["calls"][0]["callId"], id.as_str());
    let (st, _) = s.get(&format!("/api/calls/{id}"), &s.token("bob")).await;
    assert_eq!(st, 404);
    s.stop().await;

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
