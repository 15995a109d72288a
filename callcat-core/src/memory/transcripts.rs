use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::crypto::{FieldCipher, KeyUsage, open_transcript, seal_segments, seal_transcript};
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::ids::{CallId, Owner};
use crate::rotation::{KeyTally, ResealPage, RowOutcome, check_reseal};
use crate::store::TranscriptStore;
use crate::transcript::{Transcript, TranscriptSegment};

/// Transcripts in memory.
///
/// With a [`FieldCipher`] ([`InMemoryTranscriptStore::with_cipher`]) segment texts
/// and the free text are kept sealed (fields `transcript.segments` and
/// `transcript.text`, see [`crate::crypto::seal_transcript`]) and opened on read.
#[derive(Default, Debug)]
pub struct InMemoryTranscriptStore {
    state: Mutex<HashMap<CallId, Transcript>>,
    cipher: Mutex<Option<FieldCipher>>,
}

impl InMemoryTranscriptStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps transcript texts sealed with `cipher`.
    pub fn with_cipher(cipher: FieldCipher) -> Self {
        let store = Self::default();
        store.set_cipher(cipher);
        store
    }

    /// Replaces the key ring (the first key seals new text; all open).
    pub fn set_cipher(&self, cipher: FieldCipher) {
        *self.cipher.lock().unwrap_or_else(|p| p.into_inner()) = Some(cipher);
    }

    fn cipher(&self) -> Option<FieldCipher> {
        self.cipher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CallId, Transcript>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl TranscriptStore for InMemoryTranscriptStore {
    async fn put(&self, transcript: &Transcript) -> Result<()> {
        let sealed = seal_transcript(transcript, self.cipher().as_ref())?;
        let mut st = self.lock();
        if let Some(existing) = st.get(&transcript.call_id)
            && existing.owner != transcript.owner
        {
            return Err(Error::conflict("transcript belongs to another owner"));
        }
        st.insert(transcript.call_id, sealed);
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
        let cipher = self.cipher();
        let sealed = seal_segments(owner, segments, cipher.as_ref())?;
        let mut st = self.lock();
        let mut next = st
            .get(&call_id)
            .cloned()
            .unwrap_or_else(|| Transcript::new(call_id, owner.clone(), now));
        if &next.owner != owner {
            return Err(Error::conflict("transcript belongs to another owner"));
        }
        if let Some(p) = provider_call_id {
            next.provider_call_id = Some(p.to_owned());
        }
        next.segments.extend(sealed);
        next.updated_at = now;
        // Open before storing: a transcript that cannot be read is not extended.
        let opened = open_transcript(next.clone(), cipher.as_ref())?;
        st.insert(call_id, next);
        Ok(opened)
    }

    async fn get(&self, call_id: CallId, now: DateTime<Utc>) -> Result<Option<Transcript>> {
        let found = self
            .lock()
            .get(&call_id)
            .filter(|t| !t.is_expired(now))
            .cloned();
        found
            .map(|t| open_transcript(t, self.cipher().as_ref()))
            .transpose()
    }

    async fn get_by_provider_call_id(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transcript>> {
        let found = self
            .lock()
            .values()
            .find(|t| t.provider_call_id.as_deref() == Some(provider_call_id) && !t.is_expired(now))
            .cloned();
        found
            .map(|t| open_transcript(t, self.cipher().as_ref()))
            .transpose()
    }

    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut st = self.lock();
        let before = st.len();
        st.retain(|_, t| !t.is_expired(now));
        Ok((before - st.len()) as u64)
    }

    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        let cipher = self.cipher();
        let cipher = check_reseal(cipher.as_ref(), rewrite, limit)?;
        let after: Option<CallId> = cursor
            .map(|c| {
                Cursor::decode(c)?
                    .id
                    .parse()
                    .map_err(|_| Error::validation("nextToken", "the page token is not valid"))
            })
            .transpose()?;
        // Under the lock throughout: a rewrite never races an append.
        let mut st = self.lock();
        let mut ids: Vec<CallId> = st
            .keys()
            .filter(|id| after.is_none_or(|a| **id > a))
            .copied()
            .collect();
        ids.sort_unstable();
        let limit = limit as usize;
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut tally = KeyTally::default();
        for id in &ids {
            let Some(stored) = st.get(id).cloned() else {
                continue;
            };
            let found = KeyUsage::of_transcript(&stored);
            let outcome = match cipher {
                Some(c) if found.needs_rewrite(c) => match open_transcript(stored, Some(c)) {
                    Err(_) => RowOutcome::Unreadable,
                    Ok(plain) => {
                        let resealed = seal_transcript(&plain, Some(c))?;
                        let now = KeyUsage::of_transcript(&resealed);
                        st.insert(*id, resealed);
                        RowOutcome::Rewritten(now)
                    }
                },
                _ => RowOutcome::Untouched,
            };
            tally.record(&found, outcome);
        }
        let next_cursor = more
            .then(|| {
                ids.last().map(|id| {
                    Cursor {
                        key: 0,
                        id: id.to_string(),
                    }
                    .encode()
                })
            })
            .flatten();
        Ok(ResealPage { tally, next_cursor })
    }
}
