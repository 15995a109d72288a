//! The core conformance suite (`callcat_core::testing`) on PostgreSQL: every
//! case gets fresh, empty stores in a schema of its own, dropped afterwards.
//!
//! Like the other test files, the cases skip (with a message) when
//! `CALLCAT_TEST_POSTGRES_URL` is unset outside CI, and fail in CI.

mod common;

use std::sync::Arc;

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{
    ActiveScope, Call, CallId, CallStore, CallWindow, Created, ListQuery, Owner, Page, Result,
    StoreCapabilities, TenantId, Transcript, TranscriptSegment, TranscriptStore, WindowId,
    WindowStore, WorkerId,
};
use common::SchemaGuard;

/// A store that keeps its test schema alive, and drops it with the store.
struct Guarded<S> {
    store: S,
    _guard: SchemaGuard,
}

async fn calls() -> Option<Arc<dyn CallStore>> {
    let db = common::test_db().await?;
    Some(Arc::new(Guarded {
        store: db.store.calls(),
        _guard: db.guard,
    }))
}

async fn transcripts() -> Option<Arc<dyn TranscriptStore>> {
    let db = common::test_db().await?;
    Some(Arc::new(Guarded {
        store: db.store.transcripts(),
        _guard: db.guard,
    }))
}

async fn windows() -> Option<Arc<dyn WindowStore>> {
    let db = common::test_db().await?;
    Some(Arc::new(Guarded {
        store: db.store.windows(),
        _guard: db.guard,
    }))
}

callcat_core::call_store_conformance_tests!(calls);
callcat_core::transcript_store_conformance_tests!(transcripts);
callcat_core::window_store_conformance_tests!(windows);

/// The same suite with a cipher configured: calls and transcript texts sealed.
mod encrypted {
    use super::*;
    use callcat_core::{FieldCipher, MasterKey};

    fn cipher() -> FieldCipher {
        FieldCipher::new(vec![MasterKey::new(2, [2; 32]), MasterKey::new(1, [1; 32])])
            .expect("cipher")
    }

    async fn calls() -> Option<Arc<dyn CallStore>> {
        let db = common::test_db().await?;
        Some(Arc::new(Guarded {
            store: db.store.with_cipher(cipher()).calls(),
            _guard: db.guard,
        }))
    }

    async fn transcripts() -> Option<Arc<dyn TranscriptStore>> {
        let db = common::test_db().await?;
        Some(Arc::new(Guarded {
            store: db.store.with_cipher(cipher()).transcripts(),
            _guard: db.guard,
        }))
    }

    callcat_core::call_store_conformance_tests!(calls);
    callcat_core::transcript_store_conformance_tests!(transcripts);
}

#[async_trait::async_trait]
impl<S: CallStore> CallStore for Guarded<S> {
    fn capabilities(&self) -> StoreCapabilities {
        self.store.capabilities()
    }
    async fn create(&self, call: &Call) -> Result<Created> {
        self.store.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>> {
        self.store.get(id).await
    }
    async fn update(&self, call: &Call) -> Result<Call> {
        self.store.update(call).await
    }
    async fn delete_if_scheduled(&self, owner: &Owner, id: CallId) -> Result<()> {
        self.store.delete_if_scheduled(owner, id).await
    }
    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page<Call>> {
        self.store.list(owner, query).await
    }
    async fn find_by_provider_call_id(&self, provider_call_id: &str) -> Result<Option<Call>> {
        self.store.find_by_provider_call_id(provider_call_id).await
    }
    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        self.store.list_active(scope, limit, cursor).await
    }
    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        self.store
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
        self.store.claim_due(now, limit, worker, lease_until).await
    }
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        self.store.next_due_at().await
    }
}

#[async_trait::async_trait]
impl<S: TranscriptStore> TranscriptStore for Guarded<S> {
    async fn put(&self, transcript: &Transcript) -> Result<()> {
        self.store.put(transcript).await
    }
    async fn append(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
        now: DateTime<Utc>,
    ) -> Result<Transcript> {
        self.store
            .append(call_id, owner, provider_call_id, segments, now)
            .await
    }
    async fn get(&self, call_id: CallId, now: DateTime<Utc>) -> Result<Option<Transcript>> {
        self.store.get(call_id, now).await
    }
    async fn get_by_provider_call_id(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transcript>> {
        self.store
            .get_by_provider_call_id(provider_call_id, now)
            .await
    }
    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        self.store.delete_expired(now).await
    }
}

#[async_trait::async_trait]
impl<S: WindowStore> WindowStore for Guarded<S> {
    async fn create(&self, window: &CallWindow) -> Result<()> {
        self.store.create(window).await
    }
    async fn get(&self, owner: &Owner, id: WindowId) -> Result<Option<CallWindow>> {
        self.store.get(owner, id).await
    }
    async fn list(&self, owner: &Owner) -> Result<Vec<CallWindow>> {
        self.store.list(owner).await
    }
    async fn list_all(&self, limit: u32, cursor: Option<&str>) -> Result<Page<CallWindow>> {
        self.store.list_all(limit, cursor).await
    }
    async fn delete(&self, owner: &Owner, id: WindowId) -> Result<()> {
        self.store.delete(owner, id).await
    }
}
