//! The core conformance suite over DynamoDB (moto in `scripts/test`): every case
//! gets stores over freshly created, uniquely named tables, deleted afterwards.
//!
//! The suite's macros need a store from `make`, so they cannot skip: without
//! `CALLCAT_TEST_DYNAMO_ENDPOINT` outside CI, `make` prints a "skipped" line and
//! hands out the in-memory store, which keeps the case meaningful but says loudly
//! that DynamoDB was not exercised. In CI (`CI=true`) a missing endpoint panics.

mod common;

use std::sync::Arc;

use callcat_core::{
    CallStore, InMemoryCallStore, InMemoryTranscriptStore, InMemoryWindowStore, TranscriptStore,
    WindowStore,
};
use common::{Dropping, test_stores};

async fn make_calls() -> Arc<dyn CallStore> {
    match test_stores().await {
        Some(s) => Arc::new(Dropping::new(s.calls.clone(), s)),
        None => {
            eprintln!("DynamoDB not exercised: this case ran against InMemoryCallStore");
            Arc::new(InMemoryCallStore::new())
        }
    }
}

async fn make_transcripts() -> Arc<dyn TranscriptStore> {
    match test_stores().await {
        Some(s) => Arc::new(Dropping::new(s.transcripts.clone(), s)),
        None => {
            eprintln!("DynamoDB not exercised: this case ran against InMemoryTranscriptStore");
            Arc::new(InMemoryTranscriptStore::new())
        }
    }
}

async fn make_windows() -> Arc<dyn WindowStore> {
    match test_stores().await {
        Some(s) => Arc::new(Dropping::new(s.windows.clone(), s)),
        None => {
            eprintln!("DynamoDB not exercised: this case ran against InMemoryWindowStore");
            Arc::new(InMemoryWindowStore::new())
        }
    }
}

callcat_core::call_store_conformance_tests!(make_calls);
callcat_core::transcript_store_conformance_tests!(make_transcripts);
callcat_core::window_store_conformance_tests!(make_windows);
