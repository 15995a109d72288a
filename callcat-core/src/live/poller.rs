//! [`TranscriptPoller`]: polls the provider for the transcript of every active call
//! (every 2 s by default), writes only changes, and stops when the call ends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinHandle;

use super::ingest::EventIngestor;
use super::unknown::end_unknown_call;
use super::{stopped, with_timeout};
use crate::bus::CallUpdate;
use crate::call::{Call, CallStatus};
use crate::clock::{Clock, delta};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{CallId, Owner};
use crate::provider::{
    ProviderCall, ProviderCallState, ProviderEvent, ProviderEventKind, TelephonyProvider,
};
use crate::store::{ActiveScope, CallStoreExt};
use crate::transcript::TranscriptSegment;

/// How the [`TranscriptPoller`] paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    /// Time between two polls of one call (seed 000: 2 s).
    pub interval: Duration,
    /// A fetch that takes longer than this is abandoned and counts as a failure.
    pub fetch_timeout: Duration,
    /// At most this many polls (a fetch and the writes it leads to) run at once,
    /// across all calls.
    pub max_concurrent_fetches: usize,
    /// A call whose provider pushed a transcript is not polled until this long after
    /// the last push.
    pub push_quiet_period: Duration,
    /// After failures a call's next poll waits `interval * 2^failures`, capped here
    /// (and never shorter than a Retry-After the provider gave).
    pub max_backoff: Duration,
    /// When the provider keeps answering that it does not know a call (the
    /// simulator after a restart, a call the provider purged) for this long, the
    /// call is ended: Failed with `last_error` "the provider no longer knows this
    /// call" (Canceled if it was being canceled). At most an hour.
    pub unknown_call_grace: Duration,
}

/// The longest [`PollerConfig::unknown_call_grace`] (1 hour; the stale-call
/// sweeper's default limit).
pub const MAX_UNKNOWN_CALL_GRACE: Duration = Duration::from_secs(60 * 60);

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            interval: Duration::from_secs(2),
            fetch_timeout: Duration::from_secs(10),
            max_concurrent_fetches: 16,
            push_quiet_period: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            unknown_call_grace: Duration::from_secs(2 * 60),
        }
    }
}

impl PollerConfig {
    /// Checks the numbers: positive interval and timeout, at least one fetch at a
    /// time, a backoff cap no shorter than the interval.
    pub fn validate(&self) -> Result<()> {
        if self.interval.is_zero() {
            return Err(Error::validation(
                "interval",
                "the poll interval must be positive",
            ));
        }
        if self.fetch_timeout.is_zero() {
            return Err(Error::validation(
                "fetch_timeout",
                "the fetch timeout must be positive",
            ));
        }
        if self.max_concurrent_fetches == 0 {
            return Err(Error::validation(
                "max_concurrent_fetches",
                "at least one fetch must be allowed",
            ));
        }
        if self.max_backoff < self.interval {
            return Err(Error::validation(
                "max_backoff",
                "the backoff cap must not be shorter than the interval",
            ));
        }
        if self.unknown_call_grace > MAX_UNKNOWN_CALL_GRACE {
            return Err(Error::validation(
                "unknown_call_grace",
                "the grace period for calls the provider does not know must be at most 1 hour",
            ));
        }
        Ok(())
    }

    /// The wait before the next poll after `failures` consecutive failures.
    fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(16));
        let d = self.interval.saturating_mul(factor).min(self.max_backoff);
        retry_after.map_or(d, |ra| ra.max(d))
    }
}

/// Polls a [`TelephonyProvider`] for the live transcript of every active call.
///
/// Tracks calls that are Ringing or InProgress with a provider call id at this
/// provider: found in the store at start (so a restart resumes them) and from
/// [`CallUpdate`]s on the bus. Each call is polled by its own task (a slow or
/// hanging provider call delays no other), with a global cap on concurrent
/// fetches, a timeout per fetch and per-call backoff on errors. Transcripts are
/// written only when they changed. When the provider reports the call over, that is
/// fed through the [`EventIngestor`] so the call record ends too, and polling stops;
/// it also stops when the bus shows the call ended. A call whose provider pushes
/// transcripts (seen by this process's ingestor) is left alone while pushes keep
/// coming ([`PollerConfig::push_quiet_period`]).
pub struct TranscriptPoller {
    ingestor: Arc<EventIngestor>,
    provider: Arc<dyn TelephonyProvider>,
    config: PollerConfig,
}

impl std::fmt::Debug for TranscriptPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptPoller")
            .field("provider", &self.provider.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TranscriptPoller {
    /// A poller for calls placed with `provider`; writes go through `ingestor`.
    /// Fails with `Validation` if the config is invalid.
    pub fn new(
        ingestor: Arc<EventIngestor>,
        provider: Arc<dyn TelephonyProvider>,
        config: PollerConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(TranscriptPoller {
            ingestor,
            provider,
            config,
        })
    }

    /// Subscribes to the bus, resumes every active call found in the store, and
    /// starts polling. Fails if the store cannot be read.
    pub async fn start(self) -> Result<PollerHandle> {
        let bus_rx = self.ingestor.bus().subscribe();
        let shared = Arc::new(Shared {
            clock: self.ingestor.clock().clone(),
            semaphore: Arc::new(Semaphore::new(self.config.max_concurrent_fetches)),
            ingestor: self.ingestor,
            provider: self.provider,
            config: self.config,
            tasks: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(0),
        });
        shared.resync().await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let supervisor = tokio::spawn(supervise(shared.clone(), bus_rx, stop_rx));
        Ok(PollerHandle {
            shared,
            stop: stop_tx,
            supervisor: Some(supervisor),
        })
    }
}

/// A running [`TranscriptPoller`]. Dropping it stops polling; [`PollerHandle::shutdown`]
/// also waits until every task has finished.
pub struct PollerHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    supervisor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PollerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollerHandle")
            .field("tracked", &self.tracked().len())
            .finish_non_exhaustive()
    }
}

impl PollerHandle {
    /// The calls being polled now.
    pub fn tracked(&self) -> Vec<CallId> {
        let mut ids: Vec<CallId> = self.shared.lock_tasks().keys().copied().collect();
        ids.sort();
        ids
    }

    /// Stops polling and waits for every task to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.supervisor.take() {
            let _ = h.await;
        }
    }
}

impl Drop for PollerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What the poller keeps of the last transcript it stored for a call: a count
/// and a 64-bit hash of the segments instead of a copy, so a long call's
/// transcript is held once (in the store), not again per poll task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Digest {
    segments: usize,
    hash: u64,
}

impl Digest {
    fn of(segments: &[TranscriptSegment]) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        segments.hash(&mut h);
        Digest {
            segments: segments.len(),
            hash: h.finish(),
        }
    }
}

struct Tracked {
    provider_call_id: String,
    generation: u64,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

struct Shared {
    ingestor: Arc<EventIngestor>,
    provider: Arc<dyn TelephonyProvider>,
    config: PollerConfig,
    clock: Arc<dyn Clock>,
    semaphore: Arc<Semaphore>,
    tasks: Mutex<HashMap<CallId, Tracked>>,
    next_generation: AtomicU64,
}

/// What a per-call task knows about its call.
#[derive(Clone)]
struct PolledCall {
    id: CallId,
    owner: Owner,
    provider_call_id: String,
    started: bool,
}

impl Shared {
    fn lock_tasks(&self) -> MutexGuard<'_, HashMap<CallId, Tracked>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The provider call id to poll, if this call should be polled by us.
    fn pollable<'c>(&self, call: &'c Call) -> Option<&'c str> {
        let live = matches!(call.status, CallStatus::Ringing | CallStatus::InProgress);
        let ours = call
            .provider
            .as_deref()
            .is_none_or(|p| p == self.provider.name());
        match (live && ours, call.provider_call_id.as_deref()) {
            (true, Some(pid)) if !pid.is_empty() => Some(pid),
            _ => None,
        }
    }

    /// Starts or stops polling `call` according to its state; a new task polls
    /// first after `first_poll_in`.
    fn observe(self: &Arc<Self>, call: &Call, first_poll_in: Duration) {
        let mut tasks = self.lock_tasks();
        match self.pollable(call) {
            Some(pid) => {
                if tasks
                    .get(&call.id)
                    .is_some_and(|t| t.provider_call_id == pid)
                {
                    return;
                }
                if let Some(old) = tasks.remove(&call.id) {
                    let _ = old.stop.send(true);
                }
                let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                let (stop_tx, stop_rx) = watch::channel(false);
                let polled = PolledCall {
                    id: call.id,
                    owner: call.owner.clone(),
                    provider_call_id: pid.to_owned(),
                    started: call.status == CallStatus::InProgress,
                };
                let handle = tokio::spawn(poll_call(
                    self.clone(),
                    polled,
                    generation,
                    first_poll_in,
                    stop_rx,
                ));
                tasks.insert(
                    call.id,
                    Tracked {
                        provider_call_id: pid.to_owned(),
                        generation,
                        stop: stop_tx,
                        handle,
                    },
                );
            }
            None => {
                if let Some(old) = tasks.remove(&call.id) {
                    let _ = old.stop.send(true);
                }
            }
        }
    }

    /// Makes the tracked set match the store's active calls. When more calls are
    /// found than may be fetched at once (a restart with many calls on the line),
    /// their first polls are spread evenly over one interval instead of all
    /// landing on the provider, the store and the allocator in the same instant.
    async fn resync(self: &Arc<Self>) -> Result<()> {
        let active = self.ingestor.calls().all_active(&ActiveScope::All).await?;
        let mut keep = HashSet::new();
        for c in &active {
            if self.pollable(c).is_some() {
                keep.insert(c.id);
            }
        }
        let herd = keep.len() > self.config.max_concurrent_fetches;
        let n = keep.len().max(1) as u32;
        let mut i = 0u32;
        for c in &active {
            let mut first_poll_in = Duration::ZERO;
            if herd && keep.contains(&c.id) {
                first_poll_in = self.config.interval.mul_f64(f64::from(i) / f64::from(n));
                i += 1;
            }
            self.observe(c, first_poll_in);
        }
        let mut tasks = self.lock_tasks();
        tasks.retain(|id, t| {
            let k = keep.contains(id);
            if !k {
                let _ = t.stop.send(true);
            }
            k
        });
        Ok(())
    }

    /// The task for `id` ended on its own: forget it (unless already replaced).
    fn finished(&self, id: CallId, generation: u64) {
        let mut tasks = self.lock_tasks();
        if tasks.get(&id).is_some_and(|t| t.generation == generation) {
            tasks.remove(&id);
        }
    }

    /// Acts on one provider snapshot. Returns `true` when the call is over.
    async fn handle_snapshot(
        &self,
        call: &mut PolledCall,
        mut snap: ProviderCall,
        last: &mut Option<Digest>,
    ) -> Result<bool> {
        if snap.call_id.is_none() {
            snap.call_id = Some(call.id);
        }
        if snap.state.is_over() {
            // Let the ingestor end the record (and store the final transcript).
            let outcome = self
                .ingestor
                .ingest(&self.event(ProviderEventKind::Ended, snap))
                .await?;
            tracing::debug!(call_id = %call.id, result = outcome.label(), "poll saw the call end");
            return Ok(true);
        }
        if snap.state == ProviderCallState::InProgress && !call.started {
            let mut started = snap.clone();
            started.transcript = None;
            self.ingestor
                .ingest(&self.event(ProviderEventKind::Started, started))
                .await?;
            call.started = true;
        }
        if let Some(segments) = snap.transcript {
            let digest = Digest::of(&segments);
            if last.as_ref() != Some(&digest) {
                self.ingestor
                    .store_transcript(call.id, &call.owner, &call.provider_call_id, &segments)
                    .await?;
                *last = Some(digest);
            }
        }
        Ok(false)
    }

    fn event(&self, kind: ProviderEventKind, call: ProviderCall) -> ProviderEvent {
        ProviderEvent {
            provider: self.provider.name().to_owned(),
            kind,
            call,
            sequence: None,
            occurred_at: None,
        }
    }
}

async fn supervise(
    shared: Arc<Shared>,
    mut bus: broadcast::Receiver<Arc<CallUpdate>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            r = bus.recv() => match r {
                Ok(update) => {
                    if let CallUpdate::Call(c) = &*update {
                        shared.observe(c, Duration::ZERO);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "transcript poller lagged behind the bus; resyncing from the store");
                    if let Err(e) = shared.resync().await {
                        tracing::warn!(error = %e, "transcript poller could not resync from the store");
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    stopped(&mut stop).await;
                    break;
                }
            }
        }
    }
    let tasks: Vec<Tracked> = shared.lock_tasks().drain().map(|(_, t)| t).collect();
    for t in &tasks {
        let _ = t.stop.send(true);
    }
    for t in tasks {
        let _ = t.handle.await;
    }
}

/// Sleeps until `at` on the clock; `false` if stopped first.
async fn wait_until(
    clock: &dyn Clock,
    at: DateTime<Utc>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        () = clock.sleep_until(at) => true,
        () = stopped(stop) => false,
    }
}

async fn poll_call(
    shared: Arc<Shared>,
    mut call: PolledCall,
    generation: u64,
    first_poll_in: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let clock = shared.clock.clone();
    let cfg = shared.config.clone();
    let mut last: Option<Digest> = None;
    let mut loaded = false;
    let mut failures = 0u32;
    // When the provider first said (in a row) that it does not know the call.
    let mut unknown_since: Option<DateTime<Utc>> = None;
    let mut next = clock.now() + delta(first_poll_in);
    loop {
        if !wait_until(clock.as_ref(), next, &mut stop).await {
            break;
        }
        if !loaded {
            // Start from what is stored, so a restart does not rewrite an unchanged
            // transcript. (Cold futures are boxed so the future that stays resident
            // per call is small.)
            let stored = Box::pin(shared.ingestor.transcripts().get(call.id, clock.now())).await;
            last = match stored {
                Ok(t) => t
                    .filter(|t| {
                        t.provider_call_id.as_deref() == Some(call.provider_call_id.as_str())
                    })
                    .map(|t| Digest::of(&t.segments)),
                Err(_) => None,
            };
            loaded = true;
        }
        let now = clock.now();
        if let Some(pushed) = shared.ingestor.last_transcript_push(call.id) {
            let quiet_until = pushed + delta(cfg.push_quiet_period);
            if quiet_until > now {
                next = quiet_until;
                continue;
            }
        }
        let permit = tokio::select! {
            p = shared.semaphore.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let polled_at = clock.now();
        let fetched = tokio::select! {
            r = with_timeout(clock.as_ref(), cfg.fetch_timeout, shared.provider.fetch_call(&call.provider_call_id)) => r,
            () = stopped(&mut stop) => break,
        };
        // The permit is held while the snapshot is stored too: when the store falls
        // behind, waiting polls hold only their small resident future, not a
        // snapshot and a pending write each.
        let err = match fetched {
            Some(Ok(snap)) => {
                let span = tracing::debug_span!("poll", call_id = %call.id);
                let handled = Box::pin(tracing::Instrument::instrument(
                    shared.handle_snapshot(&mut call, snap, &mut last),
                    span,
                ))
                .await;
                let result = if handled.is_ok() { "ok" } else { "error" };
                metrics::counter!("callcat_transcript_polls_total", "result" => result)
                    .increment(1);
                drop(permit);
                match handled {
                    Ok(true) => break,
                    Ok(false) => None,
                    Err(e) => Some(e),
                }
            }
            Some(Err(e)) => Some(e),
            None => Some(Error::unavailable(format!(
                "fetching the call took longer than {:?}",
                cfg.fetch_timeout
            ))),
        };
        match err {
            None => {
                failures = 0;
                unknown_since = None;
                next = polled_at + delta(cfg.interval);
            }
            Some(e) if e.kind() == ErrorKind::NotFound => {
                let since = *unknown_since.get_or_insert(polled_at);
                let now = clock.now();
                if now >= since + delta(cfg.unknown_call_grace) {
                    let detail = format!("not found since {since}: {e}");
                    let ended = Box::pin(end_unknown_call(
                        &shared.ingestor,
                        call.id,
                        &call.provider_call_id,
                        &detail,
                    ))
                    .await;
                    match ended {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(call_id = %call.id, error = %e, "could not end a call the provider does not know");
                        }
                    }
                }
                failures = failures.saturating_add(1);
                tracing::warn!(call_id = %call.id, failures, error = %e, "the provider does not know a polled call");
                // Never past the end of the grace period.
                let retry = now + delta(cfg.backoff(failures, e.retry_after()));
                let deadline = since + delta(cfg.unknown_call_grace);
                next = if deadline > now {
                    retry.min(deadline)
                } else {
                    retry
                };
            }
            Some(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(call_id = %call.id, failures, error = %e, "transcript poll failed");
                next = clock.now() + delta(cfg.backoff(failures, e.retry_after()));
            }
        }
    }
    shared.finished(call.id, generation);
}

#[cfg(test)]
mod resident {
    use super::*;
    use crate::clock::ManualClock;

    /// What every polled call keeps alive between polls: its task's future. It
    /// stays small because the rarely-run parts (the first transcript read, acting
    /// on a snapshot) are boxed only while they run.
    #[tokio::test]
    async fn a_polled_call_s_resident_future_is_small() {
        let clock = Arc::new(ManualClock::new(chrono::DateTime::UNIX_EPOCH));
        let stores = crate::memory::in_memory_stores();
        let ingestor = Arc::new(EventIngestor::from_stores(
            &stores,
            crate::bus::UpdateBus::new(16),
            clock.clone(),
        ));
        let shared = Arc::new(Shared {
            clock,
            semaphore: Arc::new(Semaphore::new(1)),
            ingestor,
            provider: Arc::new(crate::simulator::Simulator::new(
                Arc::new(ManualClock::new(chrono::DateTime::UNIX_EPOCH)),
                crate::simulator::SimulatorConfig::default(),
            )),
            config: PollerConfig::default(),
            tasks: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(0),
        });
        let (_stop, stop_rx) = watch::channel(false);
        let call = PolledCall {
            id: CallId::new(),
            owner: Owner::new("t", "u"),
            provider_call_id: "p".into(),
            started: false,
        };
        let task = poll_call(shared, call, 0, Duration::ZERO, stop_rx);
        let bytes = std::mem::size_of_val(&task);
        println!("poll_call future: {bytes} bytes");
        assert!(bytes <= 1536, "poll_call's future is {bytes} bytes");
    }
}
