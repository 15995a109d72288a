//! The core conformance suite over DynamoDB (Amazon's DynamoDB Local in
//! `scripts/test`): every case gets stores over freshly created, uniquely named
//! tables, deleted afterwards.
//!
//! Without `CALLCAT_TEST_DYNAMO_ENDPOINT` the cases skip with a message outside
//! CI; in CI (`CI=true`) a missing endpoint panics.

mod common;

use std::sync::Arc;

use callcat_core::{CallStore, DoNotCallStore, TranscriptStore, WindowStore};
use common::{Dropping, test_stores};

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

async fn make_do_not_call() -> Option<Arc<dyn DoNotCallStore>> {
    let s = test_stores().await?;
    Some(Arc::new(Dropping::new(s.do_not_call.clone(), s)))
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
        Some(Arc::new(Dropping::new(do_not_call, s)))
    }

    callcat_core::call_store_conformance_tests!(make_calls);
    callcat_core::transcript_store_conformance_tests!(make_transcripts);
    callcat_core::do_not_call_store_conformance_tests!(make_do_not_call);
}
