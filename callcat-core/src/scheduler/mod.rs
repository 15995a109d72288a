//! [`Scheduler`]: dials every due call on time, exactly once.
//!
//! It sleeps until the store's `next_due_at()` (bounded by an idle maximum), is
//! woken early through [`Wakeup`] when a call becomes due sooner, claims due calls
//! with a lease, and dispatches them with a global cap and a per-owner cap. The
//! per-call procedure (windows, checks, the dial, retries, crash recovery) is in
//! `dispatch.rs`. For serverless triggers there is [`Scheduler::tick`] and
//! [`Scheduler::dispatch`].

mod checks;
mod dispatch;
pub mod pre_dial;
mod recovery;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

pub use checks::{DoNotCallList, PreDialCheck, PreDialVerdict};
pub use dispatch::DispatchResult;

use crate::bus::UpdateBus;
use crate::call::Call;
use crate::clock::{Clock, delta};
use crate::error::{Error, Result};
use crate::ids::{CallId, Owner, WorkerId};
use crate::provider::TelephonyProvider;
use crate::store::{ActiveScope, CallStore, CallStoreExt, NextDue};
use crate::wakeup::Wakeup;

/// Scheduler settings. Build with [`Scheduler::builder`].
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This instance's name in leases.
    pub worker: WorkerId,
    /// Most calls claimed per store round trip.
    pub batch: u32,
    /// How long a claim holds before another worker may recover the call. Renewed
    /// while a dial is in flight.
    pub lease: Duration,
    /// Most calls being dialed or on the line at once (a provider's concurrency
    /// limit; Retell's default is 20).
    pub global_cap: usize,
    /// Most calls per owner being dialed or on the line at once (`None`: no cap).
    pub owner_cap: Option<usize>,
    /// Longest sleep when nothing is due (a safety net; wake-ups make it rarely matter).
    pub max_idle: Duration,
    /// How long a call waits when its owner is at the cap, before it is tried again.
    pub owner_busy_delay: Duration,
    /// How often to look again while at the global cap.
    pub cap_recheck: Duration,
    /// Seed for retry jitter (the same seed gives the same retry times).
    pub retry_seed: u64,
    /// Most claimed calls waiting for or in dispatch in this process. Claiming
    /// stops at this bound, so a process never holds leases it cannot serve soon.
    pub max_pending: usize,
    /// How long before the next due instant the scheduler wakes: the store round
    /// trips of the claim, the checks and the start of the attempt happen before
    /// that instant, and only the dial waits for it. Only calls due at or before
    /// the instant are claimed, so no call is ever dialed early. Zero claims at the
    /// instant itself.
    pub claim_lead: Duration,
    /// Never two calls in flight to one number (across every owner): a call whose
    /// number has another call dialing or on the line waits, like a busy owner.
    /// Off for a bare scheduler; on in [`crate::EngineSettings::default`].
    pub one_call_per_number: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            worker: WorkerId::new(format!("scheduler-{}", CallId::new())),
            batch: 32,
            lease: Duration::from_secs(30),
            global_cap: 20,
            owner_cap: Some(1),
            max_idle: Duration::from_secs(60),
            owner_busy_delay: Duration::from_secs(2),
            cap_recheck: Duration::from_secs(1),
            retry_seed: 0x00ca_11ca_7000,
            max_pending: 256,
            claim_lead: Duration::from_millis(20),
            one_call_per_number: false,
        }
    }
}

/// Builds a [`Scheduler`]; [`SchedulerBuilder::build`] validates.
pub struct SchedulerBuilder {
    store: Option<Arc<dyn CallStore>>,
    provider: Option<Arc<dyn TelephonyProvider>>,
    clock: Option<Arc<dyn Clock>>,
    wakeup: Wakeup,
    bus: Option<UpdateBus>,
    checks: Vec<Arc<dyn PreDialCheck>>,
    config: SchedulerConfig,
}

impl std::fmt::Debug for SchedulerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SchedulerBuilder {
    /// The call store (required).
    pub fn store(mut self, store: Arc<dyn CallStore>) -> Self {
        self.store = Some(store);
        self
    }
    /// Every setting at once (replaces what earlier setters set).
    pub fn config(mut self, config: SchedulerConfig) -> Self {
        self.config = config;
        self
    }
    /// The telephony provider (required).
    pub fn provider(mut self, provider: Arc<dyn TelephonyProvider>) -> Self {
        self.provider = Some(provider);
        self
    }
    /// The clock (default: [`crate::SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// The wake-up signal shared with whoever creates calls.
    pub fn wakeup(mut self, wakeup: Wakeup) -> Self {
        self.wakeup = wakeup;
        self
    }
    /// Publish every change here.
    pub fn bus(mut self, bus: UpdateBus) -> Self {
        self.bus = Some(bus);
        self
    }
    /// Adds a pre-dial check (they run in the order added).
    pub fn check(mut self, check: Arc<dyn PreDialCheck>) -> Self {
        self.checks.push(check);
        self
    }
    /// This instance's worker id.
    pub fn worker(mut self, worker: impl Into<WorkerId>) -> Self {
        self.config.worker = worker.into();
        self
    }
    /// Claim batch size.
    pub fn batch(mut self, n: u32) -> Self {
        self.config.batch = n;
        self
    }
    /// Lease length.
    pub fn lease(mut self, d: Duration) -> Self {
        self.config.lease = d;
        self
    }
    /// Global concurrency cap.
    pub fn global_cap(mut self, n: usize) -> Self {
        self.config.global_cap = n;
        self
    }
    /// Per-owner in-flight cap (`None` for no cap).
    pub fn owner_cap(mut self, n: Option<usize>) -> Self {
        self.config.owner_cap = n;
        self
    }
    /// Longest idle sleep.
    pub fn max_idle(mut self, d: Duration) -> Self {
        self.config.max_idle = d;
        self
    }
    /// Wait before re-trying a call whose owner is at the cap.
    pub fn owner_busy_delay(mut self, d: Duration) -> Self {
        self.config.owner_busy_delay = d;
        self
    }
    /// Most claimed calls waiting for or in dispatch in this process.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.config.max_pending = n;
        self
    }
    /// How long before a due instant to claim (see [`SchedulerConfig::claim_lead`]).
    pub fn claim_lead(mut self, d: Duration) -> Self {
        self.config.claim_lead = d;
        self
    }
    /// Seed for retry jitter.
    pub fn retry_seed(mut self, seed: u64) -> Self {
        self.config.retry_seed = seed;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Scheduler> {
        let store = self
            .store
            .ok_or_else(|| Error::validation("store", "a scheduler needs a call store"))?;
        let provider = self.provider.ok_or_else(|| {
            Error::validation("provider", "a scheduler needs a telephony provider")
        })?;
        let c = &self.config;
        if c.batch == 0 || c.batch > crate::store::MAX_PAGE_SIZE {
            return Err(Error::validation(
                "batch",
                "batch must be between 1 and 1000",
            ));
        }
        if c.global_cap == 0 || c.owner_cap == Some(0) || c.max_pending == 0 {
            return Err(Error::validation("cap", "caps must be at least 1"));
        }
        if c.lease < Duration::from_millis(100) {
            return Err(Error::validation("lease", "lease must be at least 100 ms"));
        }
        if c.claim_lead > c.lease / 4 {
            return Err(Error::validation(
                "claimLead",
                "the claim lead must not exceed a quarter of the lease",
            ));
        }
        if c.max_idle.is_zero() || c.cap_recheck.is_zero() {
            return Err(Error::validation(
                "maxIdle",
                "sleep bounds must be positive",
            ));
        }
        Ok(Scheduler {
            inner: Arc::new(Inner {
                store,
                provider,
                clock: self.clock.unwrap_or_else(|| Arc::new(crate::SystemClock)),
                wakeup: self.wakeup,
                bus: self.bus,
                checks: self.checks,
                config: self.config,
                pending: std::sync::atomic::AtomicUsize::new(0),
                in_flight: std::sync::Mutex::new(std::collections::HashSet::new()),
            }),
        })
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn CallStore>,
    pub(crate) provider: Arc<dyn TelephonyProvider>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) wakeup: Wakeup,
    pub(crate) bus: Option<UpdateBus>,
    pub(crate) checks: Vec<Arc<dyn PreDialCheck>>,
    pub(crate) config: SchedulerConfig,
    /// Claimed calls not yet through dispatch.
    pub(crate) pending: std::sync::atomic::AtomicUsize,
    /// Calls being dispatched by this process: a call is never dispatched twice
    /// at once here, however it came to be claimed twice.
    pub(crate) in_flight: std::sync::Mutex<std::collections::HashSet<CallId>>,
}

/// Dials due calls. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What one [`Scheduler::tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Calls claimed.
    pub claimed: usize,
    /// Dial requests the provider accepted.
    pub dialed: usize,
    /// Calls put back for later (window, caps, checks).
    pub deferred: usize,
    /// Dials that failed and will be retried.
    pub retrying: usize,
    /// Calls that failed for good.
    pub failed: usize,
    /// Calls past `not_after`.
    pub expired: usize,
    /// Calls canceled (checks, or canceled while claimed).
    pub canceled: usize,
    /// Interrupted dials matched to the provider's call.
    pub reconciled: usize,
    /// Claimed calls that needed nothing (someone else got there first).
    pub skipped: usize,
}

impl TickReport {
    fn add(&mut self, r: &DispatchResult) {
        match r {
            DispatchResult::Dialed { .. } => self.dialed += 1,
            DispatchResult::Deferred { .. } => self.deferred += 1,
            DispatchResult::Retrying { .. } => self.retrying += 1,
            DispatchResult::Failed { .. } => self.failed += 1,
            DispatchResult::Expired => self.expired += 1,
            DispatchResult::Canceled { .. } => self.canceled += 1,
            DispatchResult::Reconciled { .. } => self.reconciled += 1,
            DispatchResult::Skipped => self.skipped += 1,
        }
    }
}

impl Scheduler {
    /// A builder with default settings.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder {
            store: None,
            provider: None,
            clock: None,
            wakeup: Wakeup::new(),
            bus: None,
            checks: Vec::new(),
            config: SchedulerConfig::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.inner.config
    }

    /// The wake-up signal this scheduler listens to.
    pub fn wakeup(&self) -> &Wakeup {
        &self.inner.wakeup
    }

    /// How many more calls may start now under the global cap.
    async fn room(&self) -> Result<usize> {
        let cap = self.inner.config.global_cap;
        let active = self.inner.store.count_active(&ActiveScope::All).await?;
        let active = usize::try_from(active).unwrap_or(usize::MAX);
        if active < cap {
            return Ok(cap - active);
        }
        // At the cap: claims whose worker died (lease lapsed) are counted as active
        // but hold no line until recovered, and recovering them needs room. Without
        // this, enough of them (say, after several crashes) would block every
        // scheduler for good.
        let now = self.inner.clock.now();
        let lapsed = self
            .inner
            .store
            .all_active(&ActiveScope::All)
            .await?
            .iter()
            .filter(|c| {
                c.status == crate::call::CallStatus::Dispatching
                    && c.lease.as_ref().is_none_or(|l| l.expires_at <= now)
            })
            .count();
        Ok(cap.saturating_sub(active.saturating_sub(lapsed)))
    }

    /// The per-owner cap as the store takes it.
    fn owner_cap(&self) -> Option<u32> {
        self.inner
            .config
            .owner_cap
            .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
    }

    /// When the next call this scheduler may claim is due, leaving out the
    /// waiting calls of owners at their cap (`blocked` says some were).
    async fn next_due(&self) -> Result<NextDue> {
        match self.owner_cap() {
            Some(cap) => self.inner.store.next_due_capped(cap).await,
            None => Ok(NextDue {
                at: self.inner.store.next_due_at().await?,
                blocked: false,
            }),
        }
    }

    /// Claims calls due by `due_by` (now, or an instant a claim lead ahead). With
    /// a per-owner cap, calls of owners at their cap are not claimed at all
    /// ([`CallStore::claim_due_capped`]), so a backlog waits for free.
    async fn claim(&self, room: usize, due_by: Option<DateTime<Utc>>) -> Result<Vec<Call>> {
        let now = due_by.unwrap_or_else(|| self.inner.clock.now());
        let pending = self.inner.pending.load(std::sync::atomic::Ordering::SeqCst);
        let capacity = self.inner.config.max_pending.saturating_sub(pending);
        let limit = room.min(capacity).min(self.inner.config.batch as usize) as u32;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease_until = now + delta(self.inner.config.lease);
        let span = tracing::debug_span!("claim", worker = %self.inner.config.worker, limit);
        let store = &self.inner.store;
        let worker = &self.inner.config.worker;
        let claimed = tracing::Instrument::instrument(
            async {
                match self.owner_cap() {
                    Some(cap) => {
                        store
                            .claim_due_capped(now, limit, worker, lease_until, cap)
                            .await
                    }
                    None => store.claim_due(now, limit, worker, lease_until).await,
                }
            },
            span,
        )
        .await?;
        metrics::counter!("callcat_scheduler_claimed_total").increment(claimed.len() as u64);
        Ok(claimed)
    }

    /// Dispatches a batch: calls of one owner one after another (so the per-owner
    /// cap decides in due order), different owners concurrently.
    fn spawn_batch(
        &self,
        calls: Vec<Call>,
        dial_at: Option<DateTime<Utc>>,
        set: &mut JoinSet<Vec<Result<DispatchResult>>>,
    ) {
        self.inner
            .pending
            .fetch_add(calls.len(), std::sync::atomic::Ordering::SeqCst);
        let mut by_owner: BTreeMap<Owner, Vec<Call>> = BTreeMap::new();
        for c in calls {
            by_owner.entry(c.owner.clone()).or_default().push(c);
        }
        for (_, group) in by_owner {
            let this = self.clone();
            set.spawn(async move {
                let mut out = Vec::with_capacity(group.len());
                for c in group {
                    // Released even if the dispatch panics or the task is dropped.
                    let _slot = PendingSlot(&this.inner.pending);
                    let Some(_flight) = InFlight::enter(&this.inner.in_flight, c.id) else {
                        tracing::warn!(call_id = %c.id, "claimed again while its dispatch is in flight here; not dispatched twice");
                        out.push(Ok(DispatchResult::Skipped));
                        continue;
                    };
                    out.push(dispatch::traced(&this.inner, c, dial_at).await);
                }
                out
            });
        }
    }

    /// Claims and dispatches everything due now (under the caps), waits for the dials
    /// to be answered, and reports. For cron- or event-triggered (serverless) use.
    pub async fn tick(&self) -> Result<TickReport> {
        let mut report = TickReport::default();
        let mut set = JoinSet::new();
        loop {
            let room = self.room().await?.saturating_sub(set.len());
            let claimed = self.claim(room, None).await?;
            let full = claimed.len() == self.inner.config.batch as usize;
            report.claimed += claimed.len();
            self.spawn_batch(claimed, None, &mut set);
            if !full {
                break;
            }
        }
        while let Some(joined) = set.join_next().await {
            let results =
                joined.map_err(|e| Error::internal(format!("dispatch task failed: {e}")))?;
            for r in results {
                match r {
                    Ok(r) => report.add(&r),
                    Err(e) => {
                        tracing::warn!(error = %e, "dispatch failed; the lease will expire and the call will be recovered");
                        report.skipped += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Dispatches one call now if it is still claimable and due; a second trigger for
    /// the same call finds it claimed and does nothing ([`DispatchResult::Skipped`]).
    pub async fn dispatch(&self, id: CallId) -> Result<DispatchResult> {
        let now = self.inner.clock.now();
        let lease_until = now + delta(self.inner.config.lease);
        let worker = self.inner.config.worker.clone();
        let Some(current) = self.inner.store.get(id).await? else {
            return Err(Error::not_found(format!("call {id} not found")));
        };
        let Some(claimed) = crate::lifecycle::claim(&current, &worker, now, lease_until) else {
            return Ok(DispatchResult::Skipped);
        };
        let claimed = match self.inner.store.update(&claimed).await {
            Ok(c) => c,
            Err(e) if e.kind() == crate::ErrorKind::Conflict => return Ok(DispatchResult::Skipped),
            Err(e) => return Err(e),
        };
        dispatch::traced(&self.inner, claimed, None).await
    }

    /// Runs until `shutdown` resolves: sleeps until the next due call, claims and
    /// dispatches. On shutdown it stops claiming and waits for in-flight dials.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let mut wake = self.inner.wakeup.subscribe();
        let mut updates = self.inner.bus.as_ref().map(|b| b.subscribe());
        let mut set: JoinSet<Vec<Result<DispatchResult>>> = JoinSet::new();
        let shutdown = futures::FutureExt::fuse(shutdown);
        tokio::pin!(shutdown);
        let cfg = &self.inner.config;
        tracing::info!(worker = %cfg.worker, "scheduler started");
        // Set when the scheduler woke a claim lead before this due instant.
        let mut due_by: Option<DateTime<Utc>> = None;
        loop {
            // Shutdown wins over everything: never claim after it was signalled.
            if futures::FutureExt::now_or_never(&mut shutdown).is_some() {
                break;
            }
            while let Some(done) = set.try_join_next() {
                log_results(done);
            }
            let mut at_cap = false;
            // Some owners' waiting calls were left out: a call ending may free them.
            let mut blocked = false;
            let target = due_by.take().filter(|t| *t > self.inner.clock.now());
            let step: Result<bool> = async {
                let room = self.room().await?;
                let pending = self.inner.pending.load(std::sync::atomic::Ordering::SeqCst);
                at_cap = room == 0 || pending >= cfg.max_pending;
                let claimed = self.claim(room, target).await?;
                let full = claimed.len() == cfg.batch as usize;
                // Claimed ahead: every one is due at or before `target`; each is
                // prepared now and dialed at `target`.
                self.spawn_batch(claimed, target, &mut set);
                Ok(full)
            }
            .await;
            let now = self.inner.clock.now();
            let mut next_due = None;
            let deadline = match step {
                Ok(true) => continue,
                Ok(false) if at_cap => now + delta(cfg.cap_recheck),
                Ok(false) => match self.next_due().await {
                    Ok(NextDue {
                        at: Some(t),
                        blocked: b,
                    }) if t <= now + delta(cfg.max_idle) => {
                        blocked = b;
                        next_due = Some(t);
                        t - delta(cfg.claim_lead)
                    }
                    Ok(NextDue { blocked: b, .. }) => {
                        blocked = b;
                        now + delta(cfg.max_idle)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "next_due_at failed");
                        now + delta(cfg.cap_recheck)
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "claiming failed; retrying shortly");
                    now + delta(cfg.cap_recheck)
                }
            };
            // Blocked owners are freed by a call ending, which the update bus
            // announces; without a bus, look again after the owner-busy delay.
            let deadline = if blocked && updates.is_none() {
                deadline.min(now + delta(cfg.owner_busy_delay))
            } else {
                deadline
            };
            let sleep = self.inner.clock.sleep_until(deadline);
            tokio::pin!(sleep);
            // A finished dispatch only calls for a new pass when it freed room.
            let stop = loop {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break true,
                    _ = &mut sleep => {
                        due_by = next_due;
                        break false;
                    }
                    _ = wake.woken() => break false,
                    Some(done) = set.join_next(), if !set.is_empty() => {
                        log_results(done);
                        if at_cap {
                            break false;
                        }
                    }
                    _ = next_end(&mut updates), if at_cap || blocked => break false,
                }
            };
            if stop {
                break;
            }
        }
        tracing::info!(worker = %cfg.worker, in_flight = set.len(), "scheduler stopping; finishing in-flight dials");
        while let Some(done) = set.join_next().await {
            log_results(done);
        }
        Ok(())
    }

    /// When `t` is, for tests and embedding: the clock's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }
}

/// A call's place in [`Inner::in_flight`] while it is dispatched, given back on drop.
struct InFlight<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<CallId>>,
    id: CallId,
}

impl<'a> InFlight<'a> {
    /// `None` when the call is already being dispatched by this process.
    fn enter(
        set: &'a std::sync::Mutex<std::collections::HashSet<CallId>>,
        id: CallId,
    ) -> Option<Self> {
        let fresh = set.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        fresh.then_some(InFlight { set, id })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// One claimed call's place in [`Inner::pending`], given back on drop.
struct PendingSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn next_end(rx: &mut Option<tokio::sync::broadcast::Receiver<Arc<crate::bus::CallUpdate>>>) {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(u) => {
                if let crate::bus::CallUpdate::Call(c) = u.as_ref()
                    && !c.status.is_active()
                {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return std::future::pending().await;
            }
        }
    }
}

fn log_results(done: std::result::Result<Vec<Result<DispatchResult>>, tokio::task::JoinError>) {
    match done {
        Ok(results) => {
            for r in results {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "dispatch failed; the lease will expire and the call will be recovered");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "dispatch task panicked or was cancelled"),
    }
}
