//! In-memory stores: correct under concurrency, for tests, demos and single-process use.

mod calls;
mod do_not_call;
mod entry;
#[cfg(test)]
mod tests;
mod transcripts;
mod windows;

pub use calls::InMemoryCallStore;
pub use do_not_call::InMemoryDoNotCallStore;
pub use transcripts::InMemoryTranscriptStore;
pub use windows::InMemoryWindowStore;

use std::sync::Arc;

use crate::store::Stores;

/// All the in-memory stores, ready to use.
pub fn in_memory_stores() -> Stores {
    Stores {
        calls: Arc::new(InMemoryCallStore::new()),
        transcripts: Arc::new(InMemoryTranscriptStore::new()),
        windows: Arc::new(InMemoryWindowStore::new()),
        do_not_call: Arc::new(InMemoryDoNotCallStore::new()),
    }
}

fn page_limit(limit: u32) -> crate::Result<usize> {
    if limit == 0 || limit > crate::store::MAX_PAGE_SIZE {
        return Err(crate::Error::validation(
            "limit",
            format!(
                "limit must be between 1 and {}",
                crate::store::MAX_PAGE_SIZE
            ),
        ));
    }
    Ok(limit as usize)
}
