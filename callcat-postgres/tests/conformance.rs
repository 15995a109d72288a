//! The core conformance suite (`callcat_core::testing`) on PostgreSQL: every
//! case gets fresh, empty stores in a schema of its own, dropped afterwards.
//!
//! Like the other test files, the cases skip (with a message) when
//! `CALLCAT_TEST_POSTGRES_URL` is unset outside CI, and fail in CI.

mod common;

use std::sync::Arc;

use callcat_core::testing::KeepAlive;
use callcat_core::{CallStore, TranscriptStore, WindowStore};

async fn calls() -> Option<Arc<dyn CallStore>> {
    let db = common::test_db().await?;
    Some(Arc::new(KeepAlive::new(
        Arc::new(db.store.calls()),
        db.guard,
    )))
}

async fn transcripts() -> Option<Arc<dyn TranscriptStore>> {
    let db = common::test_db().await?;
    Some(Arc::new(KeepAlive::new(
        Arc::new(db.store.transcripts()),
        db.guard,
    )))
}

async fn windows() -> Option<Arc<dyn WindowStore>> {
    let db = common::test_db().await?;
    Some(Arc::new(KeepAlive::new(
        Arc::new(db.store.windows()),
        db.guard,
    )))
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
        Some(Arc::new(KeepAlive::new(
            Arc::new(db.store.with_cipher(cipher()).calls()),
            db.guard,
        )))
    }

    async fn transcripts() -> Option<Arc<dyn TranscriptStore>> {
        let db = common::test_db().await?;
        Some(Arc::new(KeepAlive::new(
            Arc::new(db.store.with_cipher(cipher()).transcripts()),
            db.guard,
        )))
    }

    callcat_core::call_store_conformance_tests!(calls);
    callcat_core::transcript_store_conformance_tests!(transcripts);
}
