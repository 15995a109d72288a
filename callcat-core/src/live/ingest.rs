//! [`EventIngestor`]: applies provider events (webhooks, poll results) to stored calls
//! with compare-and-swap; idempotent, order-independent, and every change is published.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::apply::{Applied, apply_provider_event};
use crate::bus::{CallUpdate, UpdateBus};
use crate::call::{Call, CallStatus};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{CallId, Owner};
use crate::lifecycle::IgnoreReason;
use crate::provider::{ProviderEvent, ProviderEventKind};
use crate::store::{CallStore, CallStoreExt, Stores, TranscriptStore};
use crate::transcript::{Transcript, TranscriptSegment};
use crate::wakeup::Wakeup;

/// How many times a compare-and-swap conflict is retried by default.
pub const DEFAULT_CAS_ATTEMPTS: u32 = 8;

/// What ingesting one event did, so a webhook endpoint can report it.
///
/// Every variant is an acknowledgement: the provider should not resend the event.
/// Store failures are returned as `Err` instead (retryable: answer 5xx so the
/// provider resends).
#[derive(Debug)]
#[non_exhaustive]
pub enum IngestOutcome {
    /// The stored call changed; this is the stored record (its transcript may have
    /// changed too).
    Applied(Box<Call>),
    /// Only the call's transcript changed.
    TranscriptUpdated {
        /// Our call id.
        call_id: CallId,
    },
    /// The call already reflected this event.
    Duplicate {
        /// Our call id.
        call_id: CallId,
    },
    /// The call has moved past what this event describes (or it belongs to an
    /// attempt the call no longer knows); nothing changed.
    Stale {
        /// Our call id.
        call_id: CallId,
    },
    /// No stored call matches the provider call id or the call id in its metadata;
    /// nothing was stored.
    UnknownCall {
        /// The provider's call id from the event.
        provider_call_id: String,
    },
    /// The event is invalid or the lifecycle forbids it (e.g. events for a call that
    /// was never dialed); nothing was stored.
    Rejected {
        /// Our call id, when the call was found.
        call_id: Option<CallId>,
        /// Why.
        error: Error,
    },
}

impl IngestOutcome {
    /// A stable lower-case label (`applied`, `transcript_updated`, `duplicate`,
    /// `stale`, `unknown_call`, `rejected`) for logs and responses.
    pub fn label(&self) -> &'static str {
        match self {
            IngestOutcome::Applied(_) => "applied",
            IngestOutcome::TranscriptUpdated { .. } => "transcript_updated",
            IngestOutcome::Duplicate { .. } => "duplicate",
            IngestOutcome::Stale { .. } => "stale",
            IngestOutcome::UnknownCall { .. } => "unknown_call",
            IngestOutcome::Rejected { .. } => "rejected",
        }
    }

    /// The call the event was matched to, if any.
    pub fn call_id(&self) -> Option<CallId> {
        match self {
            IngestOutcome::Applied(c) => Some(c.id),
            IngestOutcome::TranscriptUpdated { call_id }
            | IngestOutcome::Duplicate { call_id }
            | IngestOutcome::Stale { call_id } => Some(*call_id),
            IngestOutcome::UnknownCall { .. } => None,
            IngestOutcome::Rejected { call_id, .. } => *call_id,
        }
    }
}

/// Counters of ingested events by result, since the ingestor was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestMetrics {
    /// Events that changed a call or its transcript.
    pub applied: u64,
    /// Events the call already reflected.
    pub duplicate: u64,
    /// Events older than the call's state.
    pub stale: u64,
    /// Events for calls callcat does not know.
    pub unknown_call: u64,
    /// Invalid events and events the lifecycle refused.
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    applied: AtomicU64,
    duplicate: AtomicU64,
    stale: AtomicU64,
    unknown_call: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    fn count(&self, outcome: &IngestOutcome) {
        let c = match outcome {
            IngestOutcome::Applied(_) | IngestOutcome::TranscriptUpdated { .. } => &self.applied,
            IngestOutcome::Duplicate { .. } => &self.duplicate,
            IngestOutcome::Stale { .. } => &self.stale,
            IngestOutcome::UnknownCall { .. } => &self.unknown_call,
            IngestOutcome::Rejected { .. } => &self.rejected,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> IngestMetrics {
        IngestMetrics {
            applied: self.applied.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            unknown_call: self.unknown_call.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Applies [`ProviderEvent`]s to stored calls.
///
/// An event is matched to its call by the provider call id, or else by our call id
/// carried in the provider's metadata ([`crate::provider::CALL_ID_METADATA_KEY`]).
/// The merge is [`apply_provider_event`], written with compare-and-swap
/// ([`CallStoreExt::update_from`]): duplicates are no-ops, stale events are
/// ignored, `ended` before `started` is accepted, and each attempt's provider data
/// is kept. Transcript content in an event replaces the stored segments when it
/// changed. Every stored change is published on the [`UpdateBus`]; a planned retry
/// wakes the schedulers through [`Wakeup`].
pub struct EventIngestor {
    calls: Arc<dyn CallStore>,
    transcripts: Arc<dyn TranscriptStore>,
    bus: UpdateBus,
    clock: Arc<dyn Clock>,
    wakeup: Option<Wakeup>,
    jitter_seed: u64,
    cas_attempts: u32,
    counters: Counters,
    pushes: Mutex<HashMap<CallId, DateTime<Utc>>>,
}

impl std::fmt::Debug for EventIngestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIngestor")
            .field("metrics", &self.metrics())
            .field("jitter_seed", &self.jitter_seed)
            .field("cas_attempts", &self.cas_attempts)
            .finish_non_exhaustive()
    }
}

impl EventIngestor {
    /// An ingestor over these stores, publishing on `bus`, with time from `clock`.
    pub fn new(
        calls: Arc<dyn CallStore>,
        transcripts: Arc<dyn TranscriptStore>,
        bus: UpdateBus,
        clock: Arc<dyn Clock>,
    ) -> Self {
        EventIngestor {
            calls,
            transcripts,
            bus,
            clock,
            wakeup: None,
            jitter_seed: 0,
            cas_attempts: DEFAULT_CAS_ATTEMPTS,
            counters: Counters::default(),
            pushes: Mutex::new(HashMap::new()),
        }
    }

    /// An ingestor over the call and transcript stores of `stores`.
    pub fn from_stores(stores: &Stores, bus: UpdateBus, clock: Arc<dyn Clock>) -> Self {
        Self::new(stores.calls.clone(), stores.transcripts.clone(), bus, clock)
    }

    /// Wakes these schedulers when an event plans a retry.
    pub fn with_wakeup(mut self, wakeup: Wakeup) -> Self {
        self.wakeup = Some(wakeup);
        self
    }

    /// Seeds retry jitter (use the scheduler's seed so both agree on retry times).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = seed;
        self
    }

    /// How many compare-and-swap conflicts to retry before giving up (at least 1).
    pub fn with_cas_attempts(mut self, attempts: u32) -> Self {
        self.cas_attempts = attempts.max(1);
        self
    }

    /// Counters of ingested events so far.
    pub fn metrics(&self) -> IngestMetrics {
        self.counters.snapshot()
    }

    /// The bus changes are published on.
    pub fn bus(&self) -> &UpdateBus {
        &self.bus
    }

    /// The call store.
    pub fn calls(&self) -> &Arc<dyn CallStore> {
        &self.calls
    }

    /// The transcript store.
    pub fn transcripts(&self) -> &Arc<dyn TranscriptStore> {
        &self.transcripts
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// When the provider last pushed a transcript for this active call (the poller
    /// leaves such calls alone for a while).
    pub fn last_transcript_push(&self, call_id: CallId) -> Option<DateTime<Utc>> {
        self.lock_pushes().get(&call_id).copied()
    }

    fn lock_pushes(&self) -> std::sync::MutexGuard<'_, HashMap<CallId, DateTime<Utc>>> {
        self.pushes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one event. `Err` only when a store failed (retryable); every other
    /// result, including unknown calls and refused events, is an [`IngestOutcome`].
    pub async fn ingest(&self, event: &ProviderEvent) -> Result<IngestOutcome> {
        let span = tracing::debug_span!(
            "ingest",
            provider = %event.provider,
            call_id = ?event.call.call_id,
            kind = ?event.kind,
        );
        let outcome = tracing::Instrument::instrument(self.ingest_inner(event), span).await?;
        self.counters.count(&outcome);
        metrics::counter!("callcat_ingest_events_total", "outcome" => outcome.label()).increment(1);
        match &outcome {
            IngestOutcome::UnknownCall { provider_call_id } => tracing::info!(
                provider = %event.provider,
                provider_call_id = %provider_call_id,
                "event for an unknown call acknowledged"
            ),
            IngestOutcome::Rejected { call_id, error } => tracing::warn!(
                provider = %event.provider,
                call_id = ?call_id,
                error = %error,
                "provider event rejected"
            ),
            _ => {}
        }
        Ok(outcome)
    }

    async fn ingest_inner(&self, event: &ProviderEvent) -> Result<IngestOutcome> {
        let pid = event.call.provider_call_id.as_str();
        if pid.trim().is_empty() {
            return Ok(IngestOutcome::Rejected {
                call_id: event.call.call_id,
                error: Error::validation("call_id", "the event has no provider call id"),
            });
        }
        let Some(found) = self.locate(event).await? else {
            return Ok(IngestOutcome::UnknownCall {
                provider_call_id: pid.to_owned(),
            });
        };
        let call_id = found.id;
        let now = self.clock.now();
        let seed = self.jitter_seed;
        let mut ignored: Option<IgnoreReason> = None;
        let result = self
            .calls
            .update_from(
                found,
                self.cas_attempts,
                |current| match apply_provider_event(current, event, now, seed)? {
                    Applied::Changed(next) => {
                        ignored = None;
                        Ok(Some(*next))
                    }
                    Applied::Unchanged(reason) => {
                        ignored = Some(reason);
                        Ok(None)
                    }
                },
            )
            .await;
        let stored = match result {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::InvalidTransition => {
                return Ok(IngestOutcome::Rejected {
                    call_id: Some(call_id),
                    error: e,
                });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Deleted between the look-up and the update.
                return Ok(IngestOutcome::UnknownCall {
                    provider_call_id: pid.to_owned(),
                });
            }
            Err(e) => return Err(e),
        };
        let changed = ignored.is_none();
        if changed {
            self.bus.publish_call(&stored);
            if stored.status == CallStatus::RetryPending
                && stored.next_action_at.is_some()
                && let Some(w) = &self.wakeup
            {
                w.wake();
            }
            if !stored.status.is_active() {
                self.lock_pushes().remove(&stored.id);
            }
        }

        // Transcript content belongs to the call only while it is the current attempt.
        let current_attempt = stored.provider_call_id.as_deref() == Some(pid);
        let mut transcript_changed = false;
        if current_attempt {
            if event.kind == ProviderEventKind::TranscriptUpdated && stored.status.is_active() {
                self.lock_pushes().insert(stored.id, now);
            }
            if let Some(segments) = &event.call.transcript {
                transcript_changed = self
                    .store_transcript(stored.id, &stored.owner, pid, segments)
                    .await?;
            }
        }

        Ok(match ignored {
            None => IngestOutcome::Applied(Box::new(stored)),
            Some(_) if transcript_changed => IngestOutcome::TranscriptUpdated { call_id },
            Some(IgnoreReason::Duplicate) => IngestOutcome::Duplicate { call_id },
            Some(IgnoreReason::Stale) => IngestOutcome::Stale { call_id },
        })
    }

    async fn locate(&self, event: &ProviderEvent) -> Result<Option<Call>> {
        if let Some(c) = self
            .calls
            .find_by_provider_call_id(&event.call.provider_call_id)
            .await?
        {
            return Ok(Some(c));
        }
        match event.call.call_id {
            Some(id) => self.calls.get(id).await,
            None => Ok(None),
        }
    }

    /// Replaces a call's transcript segments with `segments` when they differ from
    /// what is stored, and publishes the change. Returns whether it wrote.
    ///
    /// A shorter snapshot that is a prefix of the stored one for the same provider
    /// call is an older snapshot arriving late and is ignored.
    pub async fn store_transcript(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: &str,
        segments: &[TranscriptSegment],
    ) -> Result<bool> {
        let now = self.clock.now();
        let existing = self.transcripts.get(call_id, now).await?;
        let mut t = match existing {
            Some(t) => {
                if &t.owner != owner {
                    return Err(Error::conflict(format!(
                        "the transcript of call {call_id} belongs to another owner"
                    )));
                }
                let same_call = t.provider_call_id.as_deref() == Some(provider_call_id);
                if same_call
                    && (t.segments == segments
                        || (segments.len() < t.segments.len() && t.segments.starts_with(segments)))
                {
                    return Ok(false);
                }
                t
            }
            None if segments.is_empty() => return Ok(false),
            None => Transcript::new(call_id, owner.clone(), now),
        };
        t.provider_call_id = Some(provider_call_id.to_owned());
        t.segments = segments.to_vec();
        t.updated_at = now;
        self.transcripts.put(&t).await?;
        self.bus.publish(CallUpdate::Transcript {
            call_id,
            owner: owner.clone(),
            provider_call_id: Some(provider_call_id.to_owned()),
            segments: t.segments,
            partial: false,
        });
        Ok(true)
    }
}
