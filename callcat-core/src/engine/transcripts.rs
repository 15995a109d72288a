//! [`TranscriptService`]: owner-scoped transcripts — read by call or by provider
//! call id, append segments (de-duplicated), replace the text, publish partial
//! results live.

use std::sync::Arc;

use crate::bus::{CallUpdate, UpdateBus};
use crate::call::Call;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::{CallId, Owner};
use crate::store::{CallStore, CallStoreExt, TranscriptStore};
use crate::transcript::{Transcript, TranscriptSegment};

/// Most segments one transcript may hold.
pub const MAX_SEGMENTS: usize = 10_000;
/// Longest text of one segment, in bytes.
pub const MAX_SEGMENT_TEXT: usize = 16 * 1024;
/// Longest free transcript text, in bytes.
pub const MAX_TRANSCRIPT_TEXT: usize = 1024 * 1024;

/// Owner-scoped transcripts. Cheap to clone.
#[derive(Clone)]
pub struct TranscriptService {
    transcripts: Arc<dyn TranscriptStore>,
    calls: Arc<dyn CallStore>,
    bus: UpdateBus,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for TranscriptService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptService").finish_non_exhaustive()
    }
}

/// The part of `new` that `stored` does not already end with: a provider that
/// sends the same segments again (Twilio resends callbacks; a client retries a
/// request) adds nothing the second time.
fn unseen<'a>(
    stored: &[TranscriptSegment],
    new: &'a [TranscriptSegment],
) -> &'a [TranscriptSegment] {
    let most = stored.len().min(new.len());
    for k in (1..=most).rev() {
        if stored.ends_with(&new[..k]) {
            return &new[k..];
        }
    }
    new
}

impl TranscriptService {
    /// A service over the transcript store, checking ownership in the call store.
    pub fn new(
        transcripts: Arc<dyn TranscriptStore>,
        calls: Arc<dyn CallStore>,
        bus: UpdateBus,
        clock: Arc<dyn Clock>,
    ) -> Self {
        TranscriptService {
            transcripts,
            calls,
            bus,
            clock,
        }
    }

    fn empty(call: &Call, now: chrono::DateTime<chrono::Utc>) -> Transcript {
        let mut t = Transcript::new(call.id, call.owner.clone(), now);
        t.provider_call_id = call.provider_call_id.clone();
        t
    }

    /// The transcript of a call of `owner` (empty while the call has none;
    /// `NotFound` for anyone else's call).
    pub async fn get(&self, owner: &Owner, call_id: CallId) -> Result<Transcript> {
        let call = self.calls.get_owned(owner, call_id).await?;
        let now = self.clock.now();
        Ok(match self.transcripts.get(call.id, now).await? {
            Some(t) => t,
            None => Self::empty(&call, now),
        })
    }

    /// The transcript by the provider's call id (seed 000's live endpoint);
    /// `NotFound` unless the call is `owner`'s.
    pub async fn get_by_provider_call_id(
        &self,
        owner: &Owner,
        provider_call_id: &str,
    ) -> Result<Transcript> {
        let not_found = || Error::not_found(format!("no call with provider id {provider_call_id}"));
        let now = self.clock.now();
        if let Some(t) = self
            .transcripts
            .get_by_provider_call_id(provider_call_id, now)
            .await?
        {
            return if &t.owner == owner {
                Ok(t)
            } else {
                Err(not_found())
            };
        }
        match self
            .calls
            .find_by_provider_call_id(provider_call_id)
            .await?
        {
            // The transcript may have been stored under the call id only.
            Some(c) if &c.owner == owner => Ok(match self.transcripts.get(c.id, now).await? {
                Some(t) => t,
                None => Self::empty(&c, now),
            }),
            _ => Err(not_found()),
        }
    }

    /// Appends segments to a call of `owner`, leaving out those the transcript
    /// already ends with, and publishes the result. `provider_call_id`, when
    /// given, is recorded. Bounds: [`MAX_SEGMENTS`] per transcript,
    /// [`MAX_SEGMENT_TEXT`] per segment (a `Validation` error on `segments`).
    pub async fn append(
        &self,
        owner: &Owner,
        call_id: CallId,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
    ) -> Result<Transcript> {
        let call = self.calls.get_owned(owner, call_id).await?;
        for s in segments {
            if s.text.len() > MAX_SEGMENT_TEXT {
                return Err(Error::validation(
                    "segments",
                    format!("a segment's text must be at most {MAX_SEGMENT_TEXT} bytes"),
                ));
            }
            if s.text.contains('\0') {
                return Err(Error::validation(
                    "segments",
                    "a segment's text must not contain NUL characters",
                ));
            }
        }
        let now = self.clock.now();
        let current = match self.transcripts.get(call.id, now).await? {
            Some(t) => t,
            None => Self::empty(&call, now),
        };
        let new = unseen(&current.segments, segments);
        if new.is_empty() {
            return Ok(current);
        }
        if current.segments.len() + new.len() > MAX_SEGMENTS {
            return Err(Error::validation(
                "segments",
                format!("a transcript holds at most {MAX_SEGMENTS} segments"),
            ));
        }
        let pid = provider_call_id.or(call.provider_call_id.as_deref());
        let t = self
            .transcripts
            .append(call.id, &call.owner, pid, new, now)
            .await?;
        self.publish(&t, false);
        Ok(t)
    }

    /// Replaces the free text of a call's transcript (segments are kept).
    pub async fn replace_text(
        &self,
        owner: &Owner,
        call_id: CallId,
        text: String,
    ) -> Result<Transcript> {
        if text.len() > MAX_TRANSCRIPT_TEXT {
            return Err(Error::validation(
                "transcriptText",
                format!("the transcript text must be at most {MAX_TRANSCRIPT_TEXT} bytes"),
            ));
        }
        if text.contains('\0') {
            return Err(Error::validation(
                "transcriptText",
                "the transcript text must not contain NUL characters",
            ));
        }
        let call = self.calls.get_owned(owner, call_id).await?;
        let now = self.clock.now();
        let mut t = match self.transcripts.get(call.id, now).await? {
            Some(t) => t,
            None => Self::empty(&call, now),
        };
        if t.provider_call_id.is_none() {
            t.provider_call_id = call.provider_call_id.clone();
        }
        t.text = Some(text);
        t.updated_at = now;
        self.transcripts.put(&t).await?;
        self.publish(&t, false);
        Ok(t)
    }

    /// Publishes a partial (not yet final) utterance live, after the stored
    /// segments; nothing is stored.
    pub async fn publish_partial(
        &self,
        call: &Call,
        provider_call_id: Option<&str>,
        partial: TranscriptSegment,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut t = match self.transcripts.get(call.id, now).await? {
            Some(t) => t,
            None => Self::empty(call, now),
        };
        if let Some(pid) = provider_call_id {
            t.provider_call_id = Some(pid.to_owned());
        }
        t.segments.push(partial);
        self.publish(&t, true);
        Ok(())
    }

    fn publish(&self, t: &Transcript, partial: bool) {
        self.bus.publish(CallUpdate::Transcript {
            call_id: t.call_id,
            owner: t.owner.clone(),
            provider_call_id: t.provider_call_id.clone(),
            segments: t.segments.clone(),
            partial,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::SpeakerRole;

    fn seg(text: &str) -> TranscriptSegment {
        TranscriptSegment::new(SpeakerRole::User, text)
    }

    #[test]
    fn only_what_the_transcript_does_not_end_with_is_new() {
        let stored = vec![seg("a"), seg("b"), seg("c")];
        assert_eq!(unseen(&stored, &[seg("c")]), &[] as &[TranscriptSegment]);
        assert_eq!(
            unseen(&stored, &[seg("b"), seg("c"), seg("d")]),
            &[seg("d")]
        );
        assert_eq!(unseen(&stored, &[seg("d")]), &[seg("d")]);
        // "a" appears earlier but the transcript does not end with it: it is new.
        assert_eq!(unseen(&stored, &[seg("a")]), &[seg("a")]);
        assert_eq!(unseen(&[], &[seg("a")]), &[seg("a")]);
    }
}
