//! The conformance suite on the in-memory stores.

use std::sync::Arc;

use callcat_core::{
    CallStore, DoNotCallStore, InMemoryCallStore, InMemoryDoNotCallStore, InMemoryTranscriptStore,
    InMemoryWindowStore, TranscriptStore, WindowStore,
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

async fn do_not_call() -> Arc<dyn DoNotCallStore> {
    Arc::new(InMemoryDoNotCallStore::new())
}

callcat_core::call_store_conformance_tests!(calls);
callcat_core::transcript_store_conformance_tests!(transcripts);
callcat_core::window_store_conformance_tests!(windows);
callcat_core::do_not_call_store_conformance_tests!(do_not_call);

/// The same suite with a cipher: calls and transcript texts are kept sealed.
mod encrypted {
    use std::sync::Arc;

    use callcat_core::{
        CallStore, FieldCipher, InMemoryCallStore, InMemoryTranscriptStore, MasterKey,
        TranscriptStore,
    };

    fn cipher() -> FieldCipher {
        FieldCipher::new(vec![MasterKey::new(2, [2; 32]), MasterKey::new(1, [1; 32])])
            .expect("cipher")
    }

    async fn calls() -> Arc<dyn CallStore> {
        Arc::new(InMemoryCallStore::with_cipher(cipher()))
    }

    async fn transcripts() -> Arc<dyn TranscriptStore> {
        Arc::new(InMemoryTranscriptStore::with_cipher(cipher()))
    }

    callcat_core::call_store_conformance_tests!(calls);
    callcat_core::transcript_store_conformance_tests!(transcripts);
}
