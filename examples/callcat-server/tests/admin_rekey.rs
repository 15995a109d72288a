//! The server's key rotation commands (`--rekey`, `--key-report`): on the
//! in-memory store (nothing stored, every store counted) and on PostgreSQL,
//! where rows sealed under key 1 are re-sealed under key 2 and the report says
//! key 1 can be retired.
//!
//! The PostgreSQL test needs `CALLCAT_TEST_POSTGRES_URL`; without it it prints
//! why it skipped.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use callcat_core::{
    CallStore, CallTemplate, FieldCipher, Limits, MasterKey, NewCall, Owner, PhoneNumber,
};
use callcat_postgres::{PostgresOptions, PostgresStore};
use callcat_server::config::{MasterKeys, Secret};
use callcat_server::{AdminCommand, Config, StoreConfig, admin};

/// `2:<key 2>,1:<key 1>`: key 2 current, key 1 still in the ring.
fn rotated_keys() -> MasterKeys {
    let k = |b: u8| STANDARD.encode([b; 32]);
    MasterKeys::parse(&format!("2:{},1:{}", k(2), k(1))).expect("keys")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_report_on_the_memory_store_counts_every_store() {
    let config = Config {
        master_key: Some(rotated_keys()),
        ..Config::default()
    };
    let report = admin::run(&config, AdminCommand::KeyReport)
        .await
        .expect("report");
    assert!(report.unsupported.is_empty(), "{report}");
    assert_eq!(report.tables.len(), 4, "{report}");
    assert!(report.can_retire(1), "{report}");
    assert!(report.to_string().contains("key 1: 0 rows: can be retired"));
    let no_key = admin::run(&Config::default(), AdminCommand::Rekey).await;
    assert!(no_key.is_err(), "rekey needs the master key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_on_postgres_reseals_rows_so_the_old_key_can_be_retired() {
    let Ok(url) = std::env::var("CALLCAT_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set CALLCAT_TEST_POSTGRES_URL");
        return;
    };
    let schema = format!(
        "callcat_admin_{}",
        callcat_core::CallId::new().as_uuid().simple()
    );
    let key1 = FieldCipher::new(vec![MasterKey::new(1, [1; 32])]).expect("cipher");
    let v1 = PostgresStore::connect_with(
        &url,
        PostgresOptions::new().schema(schema.as_str()).cipher(key1),
    )
    .await
    .expect("connect");
    v1.migrate().await.expect("migrate");
    let owner = Owner::new("acme", "alice");
    let now = callcat_core::chrono::Utc::now();
    let template = CallTemplate::new(
        "Ada Secretname",
        PhoneNumber::parse("+14155552671").expect("number"),
        "subject",
        "prompt",
    );
    let call = NewCall::new(template)
        .at(now + callcat_core::chrono::TimeDelta::days(1))
        .into_call(owner, now, &Limits::default())
        .expect("call");
    v1.calls().create(&call).await.expect("create under key 1");

    let config = Config {
        store: StoreConfig::Postgres {
            database_url: Secret::new(url.clone()),
            schema: Some(schema.clone()),
        },
        master_key: Some(rotated_keys()),
        ..Config::default()
    };
    let before = admin::run(&config, AdminCommand::KeyReport)
        .await
        .expect("report");
    assert_eq!(before.rows_under(1), 1, "{before}");
    let report = admin::run(&config, AdminCommand::Rekey)
        .await
        .expect("rekey");
    assert_eq!(report.tables["calls"].rewritten, 1, "{report}");
    assert!(report.can_retire(1), "{report}");
    let after = admin::run(&config, AdminCommand::KeyReport)
        .await
        .expect("report");
    assert_eq!(after.rows_under(1), 0, "{after}");

    // Key 1 retired: the call still reads.
    let key2 = FieldCipher::new(vec![MasterKey::new(2, [2; 32])]).expect("cipher");
    let read = v1
        .with_cipher(key2)
        .calls()
        .get(call.id)
        .await
        .expect("get");
    assert_eq!(
        read.map(|c| c.callee_name),
        Some("Ada Secretname".to_owned())
    );

    // The schema name is ours: a fixed prefix and a UUID's hex digits.
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    callcat_postgres::sqlx::query(callcat_postgres::sqlx::AssertSqlSafe(drop))
        .execute(v1.pool())
        .await
        .expect("drop the test schema");
}
