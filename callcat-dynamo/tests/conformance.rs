//! The core conformance suite over DynamoDB (moto in `scripts/test`): every case
//! gets stores over freshly created, uniquely named tables, deleted afterwards.
//!
//! Without `CALLCAT_TEST_DYNAMO_ENDPOINT` the cases skip with a message outside
//! CI; in CI (`CI=true`) a missing endpoint panics.

mod common;

use std::sync::Arc;

use callcat_core::{
    CallStore, DoNotCallEntry, DoNotCallStore, Page, PhoneNumber, TenantId, TranscriptStore,
    WindowStore,
};
use common::{Dropping, TestStores, test_stores};

async fn make_calls() -> Option<Arc<dyn CallStore>> {
    let s = test_stores().await?;
    Some(Arc::new(Dropping::new(s.calls.clone(), s)))
}

async fn make_transcripts() -> Option<Arc<dyn TranscriptStore>> {
    let s = test_stores().await?;
    Some(Arc::new(Dropping::new(s.transcripts.clone(), s)))
}

async fn make_windows() -> Option<Arc<dyn WindowStore>> {
    let s = test_stores().await?;
    Some(Arc::new(Dropping::new(s.windows.clone(), s)))
}

/// A do-not-call store that deletes its tables when dropped (core's `KeepAlive`
/// wraps the other three store traits).
struct KeepTables<S> {
    inner: Arc<S>,
    _tables: TestStores,
}

#[async_trait::async_trait]
impl<S: DoNotCallStore> DoNotCallStore for KeepTables<S> {
    async fn add(&self, entry: &DoNotCallEntry) -> callcat_core::Result<bool> {
        self.inner.add(entry).await
    }
    async fn remove(&self, tenant: &TenantId, number: &PhoneNumber) -> callcat_core::Result<()> {
        self.inner.remove(tenant, number).await
    }
    async fn contains(
        &self,
        tenant: &TenantId,
        number: &PhoneNumber,
    ) -> callcat_core::Result<bool> {
        self.inner.contains(tenant, number).await
    }
    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        cursor: Option<&str>,
    ) -> callcat_core::Result<Page<DoNotCallEntry>> {
        self.inner.list(tenant, limit, cursor).await
    }
}

async fn make_do_not_call() -> Option<Arc<dyn DoNotCallStore>> {
    let s = test_stores().await?;
    Some(Arc::new(KeepTables {
        inner: s.do_not_call.clone(),
        _tables: s,
    }))
}

callcat_core::call_store_conformance_tests!(make_calls);
callcat_core::transcript_store_conformance_tests!(make_transcripts);
callcat_core::window_store_conformance_tests!(make_windows);
callcat_core::do_not_call_store_conformance_tests!(make_do_not_call);

/// The same suite with a cipher configured: calls, transcript texts and
/// do-not-call numbers sealed.
mod encrypted {
    use super::*;
    use callcat_core::{FieldCipher, MasterKey};

    fn cipher() -> FieldCipher {
        FieldCipher::new(vec![MasterKey::new(2, [2; 32]), MasterKey::new(1, [1; 32])])
            .expect("cipher")
    }

    async fn make_calls() -> Option<Arc<dyn CallStore>> {
        let s = test_stores().await?;
        let calls = Arc::new(s.calls.as_ref().clone().with_cipher(cipher()));
        Some(Arc::new(Dropping::new(calls, s)))
    }

    async fn make_transcripts() -> Option<Arc<dyn TranscriptStore>> {
        let s = test_stores().await?;
        let transcripts = Arc::new(s.transcripts.as_ref().clone().with_cipher(cipher()));
        Some(Arc::new(Dropping::new(transcripts, s)))
    }

    async fn make_do_not_call() -> Option<Arc<dyn DoNotCallStore>> {
        let s = test_stores().await?;
        let do_not_call = Arc::new(s.do_not_call.as_ref().clone().with_cipher(cipher()));
        Some(Arc::new(KeepTables {
            inner: do_not_call,
            _tables: s,
        }))
    }

    callcat_core::call_store_conformance_tests!(make_calls);
    callcat_core::transcript_store_conformance_tests!(make_transcripts);
    callcat_core::do_not_call_store_conformance_tests!(make_do_not_call);
}
