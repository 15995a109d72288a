//! The conformance suite on the in-memory stores.

use std::sync::Arc;

use callcat_core::{
    CallStore, InMemoryCallStore, InMemoryTranscriptStore, InMemoryWindowStore, TranscriptStore,
    WindowStore,
};

async fn calls() -> Arc<dyn CallStore> {
    Arc::new(InMemoryCallStore::new())
}

async fn transcripts() -> Arc<dyn TranscriptStore> {
    Arc::new(InMemoryTranscriptStore::new())
}

async fn windows() -> Arc<dyn WindowStore> {
    Arc::new(InMemoryWindowStore::new())
}

callcat_core::call_store_conformance_tests!(calls);
callcat_core::transcript_store_conformance_tests!(transcripts);
callcat_core::window_store_conformance_tests!(windows);
