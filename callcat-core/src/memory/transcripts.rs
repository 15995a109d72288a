use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::ids::{CallId, Owner};
use crate::store::TranscriptStore;
use crate::transcript::{Transcript, TranscriptSegment};

/// Transcripts in memory.
#[derive(Default, Debug)]
pub struct InMemoryTranscriptStore {
    state: Mutex<HashMap<CallId, Transcript>>,
}

impl InMemoryTranscriptStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CallId, Transcript>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl TranscriptStore for InMemoryTranscriptStore {
    async fn put(&self, transcript: &Transcript) -> Result<()> {
        let mut st = self.lock();
        if let Some(existing) = st.get(&transcript.call_id)
            && existing.owner != transcript.owner
        {
            return Err(Error::conflict("transcript belongs to another owner"));
        }
        st.insert(transcript.call_id, transcript.clone());
        Ok(())
    }

    async fn append(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
        now: DateTime<Utc>,
    ) -> Result<Transcript> {
        let mut st = self.lock();
        let t = st
            .entry(call_id)
            .or_insert_with(|| Transcript::new(call_id, owner.clone(), now));
        if &t.owner != owner {
            return Err(Error::conflict("transcript belongs to another owner"));
        }
        if let Some(p) = provider_call_id {
            t.provider_call_id = Some(p.to_owned());
        }
        t.segments.extend_from_slice(segments);
        t.updated_at = now;
        Ok(t.clone())
    }

    async fn get(&self, call_id: CallId, now: DateTime<Utc>) -> Result<Option<Transcript>> {
        Ok(self
            .lock()
            .get(&call_id)
            .filter(|t| !t.is_expired(now))
            .cloned())
    }

    async fn get_by_provider_call_id(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transcript>> {
        Ok(self
            .lock()
            .values()
            .find(|t| t.provider_call_id.as_deref() == Some(provider_call_id) && !t.is_expired(now))
            .cloned())
    }

    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut st = self.lock();
        let before = st.len();
        st.retain(|_, t| !t.is_expired(now));
        Ok((before - st.len()) as u64)
    }
}
