//! [`KeepAlive`]: a store that holds a guard (a test schema, test tables) for as
//! long as the store lives, delegating every operation to the store inside. Backends
//! use it so each conformance case cleans up after itself.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::call::Call;
use crate::error::Result;
use crate::ids::{CallId, Owner, TenantId, WindowId, WorkerId};
use crate::phone::PhoneNumber;
use crate::rotation::ResealPage;
use crate::store::{
    ActiveScope, CallStore, Created, DoNotCallEntry, DoNotCallStore, ListQuery, Page,
    StoreCapabilities, TranscriptStore, WindowStore,
};
use crate::transcript::{Transcript, TranscriptSegment};
use crate::window::CallWindow;

/// `inner`, with `guard` dropped only when this store is.
pub struct KeepAlive<S: ?Sized, G> {
    inner: Arc<S>,
    _guard: G,
}

impl<S: ?Sized, G> KeepAlive<S, G> {
    /// Wraps `inner`, keeping `guard` alive.
    pub fn new(inner: Arc<S>, guard: G) -> Self {
        KeepAlive {
            inner,
            _guard: guard,
        }
    }
}

#[async_trait::async_trait]
impl<S: CallStore + ?Sized, G: Send + Sync + 'static> CallStore for KeepAlive<S, G> {
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
    async fn count_active(&self, scope: &ActiveScope) -> Result<u64> {
        self.inner.count_active(scope).await
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
    async fn claim_due_capped(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
        owner_cap: u32,
    ) -> Result<Vec<Call>> {
        self.inner
            .claim_due_capped(now, limit, worker, lease_until, owner_cap)
            .await
    }
    async fn next_due_capped(&self, owner_cap: u32) -> Result<crate::store::NextDue> {
        self.inner.next_due_capped(owner_cap).await
    }
    async fn count_by_status(
        &self,
        owner: &Owner,
    ) -> Result<std::collections::BTreeMap<crate::call::CallStatus, u64>> {
        self.inner.count_by_status(owner).await
    }
    async fn list_quarantined(&self) -> Result<Vec<CallId>> {
        self.inner.list_quarantined().await
    }
    async fn active_calls_to_number(
        &self,
        scope: &ActiveScope,
        number: &PhoneNumber,
    ) -> Result<u32> {
        self.inner.active_calls_to_number(scope, number).await
    }
    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        self.inner.reseal_page(rewrite, limit, cursor).await
    }
}

#[async_trait::async_trait]
impl<S: TranscriptStore + ?Sized, G: Send + Sync + 'static> TranscriptStore for KeepAlive<S, G> {
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
    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        self.inner.reseal_page(rewrite, limit, cursor).await
    }
}

#[async_trait::async_trait]
impl<S: WindowStore + ?Sized, G: Send + Sync + 'static> WindowStore for KeepAlive<S, G> {
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
    async fn update(&self, window: &CallWindow) -> Result<()> {
        self.inner.update(window).await
    }
    async fn delete(&self, owner: &Owner, id: WindowId) -> Result<()> {
        self.inner.delete(owner, id).await
    }
    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        self.inner.reseal_page(rewrite, limit, cursor).await
    }
}

#[async_trait::async_trait]
impl<S: DoNotCallStore + ?Sized, G: Send + Sync + 'static> DoNotCallStore for KeepAlive<S, G> {
    async fn add(&self, entry: &DoNotCallEntry) -> Result<bool> {
        self.inner.add(entry).await
    }
    async fn remove(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<()> {
        self.inner.remove(tenant, number).await
    }
    async fn contains(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<bool> {
        self.inner.contains(tenant, number).await
    }
    async fn get(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<Option<DoNotCallEntry>> {
        self.inner.get(tenant, number).await
    }
    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<DoNotCallEntry>> {
        self.inner.list(tenant, limit, cursor).await
    }
    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        self.inner.reseal_page(rewrite, limit, cursor).await
    }
}
