//! Test harness: stores over uniquely named tables on the emulator named by
//! `CALLCAT_TEST_DYNAMO_ENDPOINT`, deleted again when the store is dropped.
#![allow(dead_code)]

use std::sync::Arc;

use callcat_core::{
    ActiveScope, Call, CallId, CallStore, CallWindow, Created, ListQuery, Owner, Page, Result,
    StoreCapabilities, TenantId, Transcript, TranscriptSegment, TranscriptStore, WindowId,
    WindowStore, WorkerId,
};
use callcat_dynamo::{DynamoStores, TableNames};
use chrono::{DateTime, Utc};

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
            eprintln!("skipped: set {ENDPOINT_VAR} (scripts/test starts moto_server and sets it)");
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
pub struct Dropping<S> {
    pub inner: Arc<S>,
    _guard: TestStores,
}

impl<S> Dropping<S> {
    pub fn new(inner: Arc<S>, guard: TestStores) -> Self {
        Dropping {
            inner,
            _guard: guard,
        }
    }
}

#[async_trait::async_trait]
impl<S: CallStore> CallStore for Dropping<S> {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn create(&self, call: &Call) -> Result<Created> {
        self.inner.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>> {
        self.inner.get(id).await
    }
    async fn update(&self, call: &Call) -> Result<Call> {
        self.inner.update(call).await
    }
    async fn delete_if_scheduled(&self, owner: &Owner, id: CallId) -> Result<()> {
        self.inner.delete_if_scheduled(owner, id).await
    }
    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page<Call>> {
        self.inner.list(owner, query).await
    }
    async fn find_by_provider_call_id(&self, provider_call_id: &str) -> Result<Option<Call>> {
        self.inner.find_by_provider_call_id(provider_call_id).await
    }
    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        self.inner.list_active(scope, limit, cursor).await
    }
    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        self.inner
            .list_tenant_range(tenant, from, to, limit, cursor)
            .await
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Call>> {
        self.inner.claim_due(now, limit, worker, lease_until).await
    }
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        self.inner.next_due_at().await
    }
}

#[async_trait::async_trait]
impl<S: TranscriptStore> TranscriptStore for Dropping<S> {
    async fn put(&self, transcript: &Transcript) -> Result<()> {
        self.inner.put(transcript).await
    }
    async fn append(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
        now: DateTime<Utc>,
    ) -> Result<Transcript> {
        self.inner
            .append(call_id, owner, provider_call_id, segments, now)
            .await
    }
    async fn get(&self, call_id: CallId, now: DateTime<Utc>) -> Result<Option<Transcript>> {
        self.inner.get(call_id, now).await
    }
    async fn get_by_provider_call_id(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transcript>> {
        self.inner
            .get_by_provider_call_id(provider_call_id, now)
            .await
    }
    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        self.inner.delete_expired(now).await
    }
}

#[async_trait::async_trait]
impl<S: WindowStore> WindowStore for Dropping<S> {
    async fn create(&self, window: &CallWindow) -> Result<()> {
        self.inner.create(window).await
    }
    async fn get(&self, owner: &Owner, id: WindowId) -> Result<Option<CallWindow>> {
        self.inner.get(owner, id).await
    }
    async fn list(&self, owner: &Owner) -> Result<Vec<CallWindow>> {
        self.inner.list(owner).await
    }
    async fn list_all(&self, limit: u32, cursor: Option<&str>) -> Result<Page<CallWindow>> {
        self.inner.list_all(limit, cursor).await
    }
    async fn delete(&self, owner: &Owner, id: WindowId) -> Result<()> {
        self.inner.delete(owner, id).await
    }
}
