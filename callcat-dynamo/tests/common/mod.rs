//! Test harness: stores over uniquely named tables on the emulator named by
//! `CALLCAT_TEST_DYNAMO_ENDPOINT`, deleted again when the store is dropped.
#![allow(dead_code)]

use callcat_dynamo::{DynamoStores, TableNames};

pub const ENDPOINT_VAR: &str = "CALLCAT_TEST_DYNAMO_ENDPOINT";

/// The emulator endpoint; `None` (after printing why) when unset outside CI.
/// In CI (`CI=true`) a missing endpoint fails the test.
pub fn endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(e) if !e.trim().is_empty() => Some(e),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{ENDPOINT_VAR} is not set: the DynamoDB tests need an emulator in CI (scripts/test starts one)"
                );
            }
            eprintln!(
                "skipped: set {ENDPOINT_VAR} (scripts/test starts DynamoDB Local and sets it)"
            );
            None
        }
    }
}

/// Stores over fresh tables named with a random suffix (tables not yet created).
pub fn fresh(endpoint: &str) -> DynamoStores {
    let suffix = format!("-t{}", uuid::Uuid::now_v7().simple());
    DynamoStores::builder()
        .region("us-east-1")
        .endpoint_url(endpoint)
        .credentials("testing", "testing", None)
        .tables(TableNames::with_suffix(&suffix))
        .shards(4)
        .build()
        .expect("valid test configuration")
}

/// Deletes `tables` from a thread of its own (Drop cannot await), with its own client.
fn delete_tables_blocking(endpoint: String, tables: TableNames) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let stores = DynamoStores::builder()
                .region("us-east-1")
                .endpoint_url(endpoint)
                .credentials("testing", "testing", None)
                .tables(tables)
                .build()
                .expect("config");
            if let Err(e) = stores.delete_tables().await {
                eprintln!("could not delete test tables: {e}");
            }
        });
    })
    .join();
}

/// All three stores with their tables created; the tables go when this is dropped.
pub struct TestStores {
    pub stores: DynamoStores,
    endpoint: String,
}

impl std::ops::Deref for TestStores {
    type Target = DynamoStores;
    fn deref(&self) -> &DynamoStores {
        &self.stores
    }
}

impl Drop for TestStores {
    fn drop(&mut self) {
        delete_tables_blocking(self.endpoint.clone(), self.stores.tables().clone());
    }
}

/// Fresh stores with tables, or `None` when the emulator is not configured (local runs).
pub async fn test_stores() -> Option<TestStores> {
    let endpoint = endpoint()?;
    let stores = fresh(&endpoint);
    stores.create_tables().await.expect("create tables");
    Some(TestStores { stores, endpoint })
}

/// A store that deletes its tables when the last handle is dropped.
pub type Dropping<S> = callcat_core::testing::KeepAlive<S, TestStores>;
