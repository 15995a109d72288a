//! Shared test setup: every test gets its own freshly migrated schema
//! (`callcat_test_<uuidv7>`), dropped when the returned [`TestDb`] is dropped.
//!
//! The database comes from `CALLCAT_TEST_POSTGRES_URL` (scripts/test sets it).
//! Unset: with `CI=true` the test fails; otherwise it prints why and is skipped.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};

use callcat_core::{
    CallTemplate, Limits, NewCall, Owner, PhoneNumber,
    chrono::{DateTime, TimeDelta, Utc},
};
use callcat_postgres::sqlx::{self, AssertSqlSafe, Connection, Executor, PgConnection};
use callcat_postgres::{PostgresOptions, PostgresStore};

pub const URL_VAR: &str = "CALLCAT_TEST_POSTGRES_URL";

/// The test database URL, or `None` (skip) outside CI when unset.
pub fn test_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{URL_VAR} is not set but CI=true: the PostgreSQL tests must run \
                     (scripts/test starts PostgreSQL and sets it)"
                );
            }
            eprintln!("skipped: set {URL_VAR} (scripts/test does) to run the PostgreSQL tests");
            None
        }
    }
}

/// A migrated store in a schema of its own; the schema is dropped on drop.
pub struct TestDb {
    pub store: PostgresStore,
    pub url: String,
    pub schema: String,
    pub guard: SchemaGuard,
}

/// Drops its schema (CASCADE) when dropped, even when a test panics.
pub struct SchemaGuard {
    url: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        // Drop may run inside a runtime (or while unwinding): use a thread with its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&url).await?;
                conn.execute(AssertSqlSafe(sql)).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("warning: could not drop test schema {}", self.schema);
        }
    }
}

static SWEPT: AtomicBool = AtomicBool::new(false);

/// Drops test schemas left behind by killed runs (older than an hour; the
/// UUIDv7 in the name carries its creation time).
async fn sweep_stale_schemas(url: &str) {
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let Ok(mut conn) = PgConnection::connect(url).await else {
        return;
    };
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'callcat\\_test\\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    let cutoff = Utc::now().timestamp_millis() - 3_600_000;
    for (name,) in names {
        let created = name
            .strip_prefix("callcat_test_")
            .and_then(|hex| hex.get(..12))
            .and_then(|ms| i64::from_str_radix(ms, 16).ok());
        if created.is_some_and(|ms| ms < cutoff) {
            let _ = conn
                .execute(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .await;
        }
    }
}

/// A fresh, empty, migrated store in its own schema; `None` when skipped.
pub async fn test_db() -> Option<TestDb> {
    let url = test_url()?;
    sweep_stale_schemas(&url).await;
    let schema = format!("callcat_test_{}", uuid::Uuid::now_v7().simple());
    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions::new().schema(&schema).max_connections(8),
    )
    .await
    .expect("connect to the test database");
    let guard = SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    store.migrate().await.expect("migrate");
    Some(TestDb {
        store,
        url,
        schema,
        guard,
    })
}

/// Skips the test (returns) when no database is configured outside CI.
#[macro_export]
macro_rules! db_or_skip {
    () => {
        match common::test_db().await {
            Some(db) => db,
            None => return,
        }
    };
}

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_767_225_600_000).expect("valid") // 2026-01-01T00:00:00Z
}

pub fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

pub fn owner(tenant: &str, user: &str) -> Owner {
    Owner::new(tenant, user)
}

/// A valid scheduled call for `owner` at `at`, created at [`t0`].
pub fn call_at(owner: &Owner, at: DateTime<Utc>) -> callcat_core::Call {
    let template = CallTemplate::new(
        "Ada",
        PhoneNumber::parse("+14155550123").expect("valid number"),
        "Checkup",
        "Ask how things are going.",
    );
    NewCall::new(template)
        .at(at)
        .into_call(owner.clone(), t0(), &Limits::default())
        .expect("valid call")
}

pub mod workers;
