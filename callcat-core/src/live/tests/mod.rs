//! Tests of the live components, with a small scripted provider and a manual clock.

mod ingest;
mod poller;
mod sweeper;
mod tracker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};

use super::EventIngestor;
use crate::bus::UpdateBus;
use crate::call::{Call, CallStatus};
use crate::clock::{Clock, ManualClock};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{CallId, Owner};
use crate::memory::{InMemoryCallStore, InMemoryTranscriptStore};
use crate::new_call::{CallTemplate, Limits, NewCall};
use crate::phone::PhoneNumber;
use crate::provider::{
    DialAccepted, ProviderCall, ProviderCallState, ProviderEvent, ProviderEventKind,
    TelephonyProvider,
};
use crate::store::{CallStore, TranscriptStore};
use crate::transcript::{SpeakerRole, Transcript, TranscriptSegment};
use crate::wakeup::Wakeup;

pub(super) const PROVIDER: &str = "scripted";

/// A provider whose answers the test sets: per provider call id a snapshot, or a
/// hang (the fetch never returns), or an error.
#[derive(Default)]
pub(super) struct ScriptedProvider {
    script: Mutex<Script>,
}

#[derive(Default)]
struct Script {
    calls: HashMap<String, ProviderCall>,
    hanging: HashSet<String>,
    failing: HashMap<String, ErrorKind>,
    fetches: HashMap<String, usize>,
    ended: Vec<String>,
}

impl ScriptedProvider {
    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets what the provider answers for `snap.provider_call_id`.
    pub(super) fn set(&self, snap: ProviderCall) {
        self.lock()
            .calls
            .insert(snap.provider_call_id.clone(), snap);
    }

    /// Fetches of `pid` never return.
    pub(super) fn hang(&self, pid: &str) {
        self.lock().hanging.insert(pid.to_owned());
    }

    /// Fetches of `pid` fail with `kind`.
    pub(super) fn fail(&self, pid: &str, kind: ErrorKind) {
        self.lock().failing.insert(pid.to_owned(), kind);
    }

    /// How many fetches of `pid` started.
    pub(super) fn fetches(&self, pid: &str) -> usize {
        self.lock().fetches.get(pid).copied().unwrap_or(0)
    }

    /// The provider call ids that were asked to end.
    pub(super) fn ended(&self) -> Vec<String> {
        self.lock().ended.clone()
    }
}

#[async_trait::async_trait]
impl TelephonyProvider for ScriptedProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn place_call(&self, _call: &Call) -> Result<DialAccepted> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "the scripted provider does not place calls",
        ))
    }

    async fn fetch_call(&self, provider_call_id: &str) -> Result<ProviderCall> {
        let answer = {
            let mut s = self.lock();
            *s.fetches.entry(provider_call_id.to_owned()).or_default() += 1;
            if s.hanging.contains(provider_call_id) {
                None
            } else if let Some(kind) = s.failing.get(provider_call_id) {
                Some(Err(Error::new(*kind, "scripted failure")))
            } else {
                Some(
                    s.calls
                        .get(provider_call_id)
                        .cloned()
                        .ok_or_else(|| Error::not_found("no such call")),
                )
            }
        };
        match answer {
            Some(a) => a,
            None => std::future::pending().await,
        }
    }

    async fn end_call(&self, provider_call_id: &str) -> Result<()> {
        let mut s = self.lock();
        s.ended.push(provider_call_id.to_owned());
        if let Some(c) = s.calls.get_mut(provider_call_id) {
            c.state = ProviderCallState::Ended;
        }
        Ok(())
    }
}

/// A transcript store that counts writes.
#[derive(Default)]
pub(super) struct CountingTranscripts {
    inner: InMemoryTranscriptStore,
    puts: AtomicUsize,
}

impl CountingTranscripts {
    pub(super) fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TranscriptStore for CountingTranscripts {
    async fn put(&self, transcript: &Transcript) -> Result<()> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put(transcript).await
    }

    async fn append(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
        now: DateTime<Utc>,
    ) -> Result<Transcript> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner
            .append(call_id, owner, provider_call_id, segments, now)
            .await
    }

    async fn get(&self, call_id: CallId, now: DateTime<Utc>) -> Result<Option<Transcript>> {
        self.inner.get(call_id, now).await
    }

    async fn get_by_provider_call_id(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transcript>> {
        self.inner
            .get_by_provider_call_id(provider_call_id, now)
            .await
    }

    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        self.inner.delete_expired(now).await
    }
}

/// Stores, bus, clock, wake-up and ingestor wired together.
pub(super) struct Harness {
    pub calls: Arc<InMemoryCallStore>,
    pub transcripts: Arc<CountingTranscripts>,
    pub bus: UpdateBus,
    pub clock: ManualClock,
    pub wakeup: Wakeup,
    pub ingestor: Arc<EventIngestor>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with_bus(UpdateBus::default())
    }

    pub(super) fn with_bus(bus: UpdateBus) -> Self {
        let calls = Arc::new(InMemoryCallStore::new());
        let transcripts = Arc::new(CountingTranscripts::default());
        let clock = ManualClock::at_fixed_start();
        let wakeup = Wakeup::new();
        let ingestor = Arc::new(
            EventIngestor::new(
                calls.clone(),
                transcripts.clone(),
                bus.clone(),
                Arc::new(clock.clone()),
            )
            .with_wakeup(wakeup.clone())
            .with_jitter_seed(7),
        );
        Harness {
            calls,
            transcripts,
            bus,
            clock,
            wakeup,
            ingestor,
        }
    }

    /// The time the harness clock started at.
    pub(super) fn t0(&self) -> DateTime<Utc> {
        ManualClock::at_fixed_start().now()
    }

    /// Stores a call of `tenant` in `status`, dialed as `pid` (if given) at t0.
    pub(super) async fn store_call(
        &self,
        tenant: &str,
        status: CallStatus,
        pid: Option<&str>,
    ) -> Call {
        let c = dialed_call(tenant, status, pid, self.t0());
        self.calls.create(&c).await.expect("create");
        c
    }

    pub(super) async fn get(&self, id: CallId) -> Call {
        self.calls.get(id).await.expect("get").expect("stored")
    }

    pub(super) async fn transcript(&self, id: CallId) -> Option<Transcript> {
        self.transcripts
            .get(id, self.clock_now())
            .await
            .expect("transcript")
    }

    pub(super) fn clock_now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// A call of `tenant` in `status`; with `pid`, its first attempt was dialed at `at`.
pub(super) fn dialed_call(
    tenant: &str,
    status: CallStatus,
    pid: Option<&str>,
    at: DateTime<Utc>,
) -> Call {
    let template = CallTemplate::new(
        "Ada",
        PhoneNumber::parse("+14155552671").expect("phone"),
        "Checkup",
        "Ask how they are",
    );
    let mut c = NewCall::new(template)
        .at(at)
        .into_call(
            Owner::new(tenant, "u"),
            at - TimeDelta::minutes(5),
            &Limits::default(),
        )
        .expect("valid");
    c.status = status;
    if let Some(pid) = pid {
        c.attempts = 1;
        c.dial_started_at = Some(at);
        c.provider = Some(PROVIDER.into());
        c.provider_call_id = Some(pid.into());
        c.next_action_at = None;
        c.current_attempt_mut().provider_call_id = Some(pid.into());
        c.current_attempt_mut().dialed_at = Some(at);
    }
    if status == CallStatus::InProgress {
        c.started_at = Some(at);
    }
    c
}

pub(super) fn seg(role: SpeakerRole, text: &str) -> TranscriptSegment {
    TranscriptSegment::new(role, text)
}

pub(super) fn snapshot(pid: &str, state: ProviderCallState) -> ProviderCall {
    ProviderCall::new(pid, state)
}

pub(super) fn event(kind: ProviderEventKind, call: ProviderCall) -> ProviderEvent {
    ProviderEvent {
        provider: PROVIDER.into(),
        kind,
        call,
        sequence: None,
        occurred_at: None,
    }
}

/// Lets other tasks run until `cond` holds (no wall-clock waiting).
pub(super) async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("gave up waiting for {what}");
}

/// Lets other tasks run for a while (to check that something does *not* happen).
pub(super) async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}
