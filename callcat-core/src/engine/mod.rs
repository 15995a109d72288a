//! [`Engine`]: callcat in one value. Built once from the stores, the provider,
//! the clock and the settings, it shares one wake-up signal and one update bus
//! among its services (calls, transcripts, windows, do-not-call) and its
//! background work (scheduler, event ingestion, transcript poller, live tracker,
//! stale-call sweeper, window planner, workflow runner), which
//! [`Engine::run`] runs without any HTTP until shutdown, draining in-flight dials.
//!
//! ```no_run
//! # async fn demo() -> callcat_core::Result<()> {
//! use std::sync::Arc;
//! use callcat_core::{Engine, Simulator, SimulatorConfig, SystemClock};
//! use callcat_core::memory::in_memory_stores;
//!
//! let clock = Arc::new(SystemClock);
//! let engine = Engine::builder()
//!     .stores(in_memory_stores())
//!     .simulator(Simulator::new(clock.clone(), SimulatorConfig::default()))
//!     .clock(clock)
//!     .build()
//!     .await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! // ... hand `stop` to whatever decides to shut down (a signal handler) ...
//! # drop(stop);
//! engine.run(async { let _ = stopped.await; }).await?;
//! # Ok(()) }
//! ```

mod do_not_call;
mod transcripts;
mod windows;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use do_not_call::{DoNotCallCheck, DoNotCallService};
pub use transcripts::{MAX_SEGMENT_TEXT, MAX_SEGMENTS, MAX_TRANSCRIPT_TEXT, TranscriptService};
pub use windows::{MAX_WINDOWS_PER_OWNER, WindowEdit, WindowService};

use crate::bus::UpdateBus;
use crate::caller_numbers::CallerNumbers;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::ids::{CallId, Owner};
use crate::live::{
    EventIngestor, LiveTracker, PollerConfig, StaleCallSweeper, SweeperConfig, TranscriptPoller,
};
use crate::new_call::{CallTemplate, Limits, NewCall};
use crate::planner::{DoneToday, WindowPlanner};
use crate::provider::TelephonyProvider;
use crate::retry::RetryPolicy;
use crate::scheduler::{DispatchResult, PreDialCheck, Scheduler, SchedulerConfig, TickReport};
use crate::service::CallService;
use crate::simulator::Simulator;
use crate::store::{Created, Stores};
use crate::wakeup::Wakeup;
use crate::workflow::{ClassifyThenCall, WorkflowPolicy, WorkflowRunner};

/// The longest drain an engine accepts (5 minutes).
pub const MAX_DRAIN: Duration = Duration::from_secs(300);

/// Everything an [`Engine`] can be told. `Default` is a sensible production setup.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The scheduler: global cap, per-owner cap, lease, batch, one call per number.
    pub scheduler: SchedulerConfig,
    /// The retry policy of calls that do not bring their own (their maximum
    /// attempts, per-outcome switches and delays).
    pub default_retry: RetryPolicy,
    /// Input limits for calls and windows.
    pub limits: Limits,
    /// How the transcript poller paces itself.
    pub poller: PollerConfig,
    /// When the stale-call sweeper ends calls.
    pub sweeper: SweeperConfig,
    /// How long [`Engine::run`] waits, after shutdown was asked for, for dials in
    /// flight to be answered by the provider (at most [`MAX_DRAIN`]).
    pub drain: Duration,
    /// How many live events each live subscriber may fall behind.
    pub live_capacity: usize,
    /// Which caller numbers each tenant may give (default: any).
    pub caller_numbers: CallerNumbers,
    /// At most one open call (SCHEDULED, RETRY_PENDING or in flight) per user
    /// (seed 002; see [`CallService::with_one_open_call_per_user`]); the window
    /// planner then also skips a user with one. Off by default.
    pub one_open_call_per_user: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            scheduler: SchedulerConfig {
                one_call_per_number: true,
                ..SchedulerConfig::default()
            },
            default_retry: RetryPolicy::default(),
            limits: Limits::default(),
            poller: PollerConfig::default(),
            sweeper: SweeperConfig::default(),
            drain: Duration::from_secs(10),
            live_capacity: 256,
            caller_numbers: CallerNumbers::any(),
            one_open_call_per_user: false,
        }
    }
}

impl EngineSettings {
    /// Checks every bound; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        self.default_retry.validate()?;
        self.poller.validate()?;
        self.sweeper.validate()?;
        if self.drain > MAX_DRAIN {
            return Err(Error::validation(
                "drain",
                format!("the drain period must be at most {} s", MAX_DRAIN.as_secs()),
            ));
        }
        if self.live_capacity == 0 || self.live_capacity > 1 << 16 {
            return Err(Error::validation(
                "liveCapacity",
                "the live capacity must be between 1 and 65536",
            ));
        }
        Ok(())
    }
}

/// Builds an [`Engine`]; [`EngineBuilder::build`] validates, loads the live
/// state and returns it ready to [`Engine::run`].
pub struct EngineBuilder {
    stores: Option<Stores>,
    provider: Option<Arc<dyn TelephonyProvider>>,
    simulator: Option<Simulator>,
    clock: Option<Arc<dyn Clock>>,
    settings: EngineSettings,
    checks: Vec<Arc<dyn PreDialCheck>>,
    workflow: Option<Arc<dyn WorkflowPolicy>>,
    done_today: Option<Arc<dyn DoneToday>>,
    wakeup: Wakeup,
    bus: UpdateBus,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// The stores (required).
    pub fn stores(mut self, stores: Stores) -> Self {
        self.stores = Some(stores);
        self
    }

    /// The telephony provider (required unless [`EngineBuilder::simulator`]).
    pub fn provider(mut self, provider: Arc<dyn TelephonyProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Use the simulator as the provider; [`Engine::run`] feeds its events to the
    /// event ingestor, as webhooks would be.
    pub fn simulator(mut self, simulator: Simulator) -> Self {
        self.provider = Some(Arc::new(simulator.clone()));
        self.simulator = Some(simulator);
        self
    }

    /// The clock (default: the system clock). Tests pass a `ManualClock`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Every setting.
    pub fn settings(mut self, settings: EngineSettings) -> Self {
        self.settings = settings;
        self
    }

    /// A pre-dial check, run after the built-in do-not-call check.
    pub fn check(mut self, check: Arc<dyn PreDialCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// The workflow policy run after each attempt (default: [`ClassifyThenCall`],
    /// which acts only on calls started as that workflow).
    pub fn workflow(mut self, policy: Arc<dyn WorkflowPolicy>) -> Self {
        self.workflow = Some(policy);
        self
    }

    /// The "already done today" predicate of the window planner.
    pub fn done_today(mut self, p: Arc<dyn DoneToday>) -> Self {
        self.done_today = Some(p);
        self
    }

    /// The wake-up signal to share (e.g. one a PostgreSQL listener relays to).
    pub fn wakeup(mut self, wakeup: Wakeup) -> Self {
        self.wakeup = wakeup;
        self
    }

    /// Validates the settings, builds every service and loads the live state
    /// (active calls) from the store.
    pub async fn build(self) -> Result<Engine> {
        let stores = self
            .stores
            .ok_or_else(|| Error::validation("stores", "an engine needs stores"))?;
        let provider = self
            .provider
            .ok_or_else(|| Error::validation("provider", "an engine needs a telephony provider"))?;
        self.settings.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let settings = self.settings;
        let (wakeup, bus) = (self.wakeup, self.bus);
        let calls = CallService::new(stores.calls.clone(), clock.clone(), wakeup.clone())
            .with_provider(provider.clone())
            .with_bus(bus.clone())
            .with_limits(settings.limits.clone())
            .with_caller_numbers(settings.caller_numbers.clone())
            .with_one_open_call_per_user(settings.one_open_call_per_user);
        let do_not_call = DoNotCallService::new(stores.do_not_call.clone(), clock.clone());
        let mut scheduler = Scheduler::builder()
            .config(settings.scheduler.clone())
            .store(stores.calls.clone())
            .provider(provider.clone())
            .clock(clock.clone())
            .wakeup(wakeup.clone())
            .bus(bus.clone())
            .check(Arc::new(DoNotCallCheck::new(stores.do_not_call.clone())));
        for c in self.checks {
            scheduler = scheduler.check(c);
        }
        let scheduler = scheduler.build()?;
        let mut planner = WindowPlanner::new(stores.windows.clone(), calls.clone(), clock.clone());
        if let Some(p) = self.done_today {
            planner = planner.with_done_today(p);
        }
        let windows = WindowService::new(
            stores.windows.clone(),
            clock.clone(),
            planner.wakeup().clone(),
            settings.limits.clone(),
        )
        .with_caller_numbers(settings.caller_numbers.clone());
        let ingestor = Arc::new(
            EventIngestor::from_stores(&stores, bus.clone(), clock.clone())
                .with_wakeup(wakeup.clone()),
        );
        let transcripts = TranscriptService::new(
            stores.transcripts.clone(),
            stores.calls.clone(),
            bus.clone(),
            clock.clone(),
        );
        let classify = Arc::new(ClassifyThenCall::default());
        let workflow = self.workflow.unwrap_or_else(|| classify.clone());
        let workflows = WorkflowRunner::new(workflow, calls.clone(), clock.clone());
        let tracker =
            Arc::new(LiveTracker::start(stores.calls.clone(), &bus, settings.live_capacity).await?);
        Ok(Engine {
            inner: Arc::new(Inner {
                stores,
                provider,
                simulator: self.simulator,
                clock,
                settings,
                wakeup,
                bus,
                calls,
                transcripts,
                windows,
                do_not_call,
                scheduler,
                planner,
                ingestor,
                tracker,
                workflows,
                classify,
            }),
        })
    }
}

struct Inner {
    stores: Stores,
    provider: Arc<dyn TelephonyProvider>,
    simulator: Option<Simulator>,
    clock: Arc<dyn Clock>,
    settings: EngineSettings,
    wakeup: Wakeup,
    bus: UpdateBus,
    calls: CallService,
    transcripts: TranscriptService,
    windows: WindowService,
    do_not_call: DoNotCallService,
    scheduler: Scheduler,
    planner: WindowPlanner,
    ingestor: Arc<EventIngestor>,
    tracker: Arc<LiveTracker>,
    workflows: WorkflowRunner,
    classify: Arc<ClassifyThenCall>,
}

/// callcat in one value: its services and its background work. Cheap to clone;
/// clones share everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("provider", &self.inner.provider.name())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Engine {
    /// A builder with default settings.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            stores: None,
            provider: None,
            simulator: None,
            clock: None,
            settings: EngineSettings::default(),
            checks: Vec::new(),
            workflow: None,
            done_today: None,
            wakeup: Wakeup::new(),
            bus: UpdateBus::default(),
        }
    }

    /// Owner-scoped operations on calls.
    pub fn calls(&self) -> &CallService {
        &self.inner.calls
    }

    /// Owner-scoped transcripts.
    pub fn transcripts(&self) -> &TranscriptService {
        &self.inner.transcripts
    }

    /// Owner-scoped call windows.
    pub fn windows(&self) -> &WindowService {
        &self.inner.windows
    }

    /// Per-tenant do-not-call lists.
    pub fn do_not_call(&self) -> &DoNotCallService {
        &self.inner.do_not_call
    }

    /// Active calls per tenant, and live subscriptions.
    pub fn tracker(&self) -> &Arc<LiveTracker> {
        &self.inner.tracker
    }

    /// Applies provider events (webhooks) through the lifecycle.
    pub fn ingestor(&self) -> &Arc<EventIngestor> {
        &self.inner.ingestor
    }

    /// The scheduler (for [`Engine::tick`]-style triggers and its settings).
    pub fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    /// The window planner.
    pub fn planner(&self) -> &WindowPlanner {
        &self.inner.planner
    }

    /// Every call change, transcript and deletion, as it happens in this process.
    pub fn bus(&self) -> &UpdateBus {
        &self.inner.bus
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// The telephony provider.
    pub fn provider(&self) -> &Arc<dyn TelephonyProvider> {
        &self.inner.provider
    }

    /// The simulator, when it is the provider.
    pub fn simulator(&self) -> Option<&Simulator> {
        self.inner.simulator.as_ref()
    }

    /// The settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// The wake-up signal shared by the services and the scheduler.
    pub fn wakeup(&self) -> &Wakeup {
        &self.inner.wakeup
    }

    /// A call template with the engine's default retry policy, for callers that
    /// build calls from outside input.
    pub fn template(
        &self,
        callee_name: impl Into<String>,
        phone_number: crate::phone::PhoneNumber,
        subject: impl Into<String>,
        instructions: impl Into<String>,
    ) -> CallTemplate {
        let mut t = CallTemplate::new(callee_name, phone_number, subject, instructions);
        t.retry_policy = self.inner.settings.default_retry.clone();
        t
    }

    /// Starts seed 003's classify-then-call workflow for `task`: a classification
    /// call first (the task's template with `metadata.workflow = "classify"`),
    /// then the task call as its follow-up (`parentCallId`) once the analysis
    /// says who answers; at once when the number's classification is known.
    pub async fn start_classify_then_call(&self, owner: &Owner, task: NewCall) -> Result<Created> {
        let mut classify = task.template.clone();
        classify.subject = format!("Classification: {}", classify.subject);
        let now = self.inner.clock.now();
        let mut first = NewCall::new(classify);
        first.scheduled_for = task.scheduled_for;
        first.not_after = task.not_after;
        first.idempotency_key = task.idempotency_key.clone();
        self.inner
            .classify
            .start_call(&self.inner.calls, owner, first, task.template, now)
            .await
    }

    /// Claims and dispatches everything due now, for cron- or event-triggered
    /// (serverless) use, and waits for the dials to be answered.
    pub async fn tick(&self) -> Result<TickReport> {
        self.inner.scheduler.tick().await
    }

    /// Dispatches one call now if it is still due and unclaimed.
    pub async fn dispatch(&self, id: CallId) -> Result<DispatchResult> {
        self.inner.scheduler.dispatch(id).await
    }

    /// Runs every background task until `shutdown` resolves: the scheduler, the
    /// window planner, the workflow runner, the transcript poller, the stale-call
    /// sweeper and (with the simulator) simulated event delivery. On shutdown the
    /// scheduler stops claiming at once; dials in flight get up to
    /// [`EngineSettings::drain`] to be answered by the provider (their calls then
    /// stay Ringing and are tracked by whichever process runs next), then
    /// everything stops. A task that fails is logged; the others go on.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let inner = &self.inner;
        let poller = TranscriptPoller::new(
            inner.ingestor.clone(),
            inner.provider.clone(),
            inner.settings.poller.clone(),
        )?
        .start()
        .await?;
        let sweeper = StaleCallSweeper::new(
            inner.ingestor.clone(),
            inner.provider.clone(),
            inner.settings.sweeper.clone(),
        )?
        .spawn();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks: JoinSet<()> = JoinSet::new();
        let planner = inner.planner.clone();
        let rx = stop_rx.clone();
        tasks.spawn(async move { planner.run(stopped(rx)).await });
        let workflows = inner.workflows.clone();
        let bus = inner.bus.clone();
        tasks.spawn(async move { workflows.run(&bus).await });
        if let Some(sim) = inner.simulator.clone() {
            // The simulator's provider events take the webhooks' path: the ingestor.
            let (tx, mut events) = mpsc::channel(256);
            tasks.spawn(sim.run_events(tx));
            let ingestor = inner.ingestor.clone();
            tasks.spawn(async move {
                while let Some(ev) = events.recv().await {
                    if let Err(e) = ingestor.ingest(&ev).await {
                        tracing::error!(error = %e, "a simulated event could not be stored");
                    }
                }
            });
        }
        let scheduler = inner.scheduler.clone();
        let rx = stop_rx.clone();
        let mut scheduling = tokio::spawn(async move { scheduler.run(stopped(rx)).await });
        let store = inner.stores.calls.capabilities();
        tracing::info!(
            provider = inner.provider.name(),
            cross_process_wakeups = store.cross_process_wakeups,
            shared_between_processes = store.shared_between_processes,
            "engine running"
        );

        tokio::select! {
            () = shutdown => {}
            ended = &mut scheduling => {
                // The scheduler only ends on its own by failing: stop the rest too.
                tracing::error!(result = ?ended, "the scheduler stopped unexpectedly");
            }
        }
        let _ = stop_tx.send(true);
        if !scheduling.is_finished() {
            tracing::info!(
                drain_s = inner.settings.drain.as_secs_f64(),
                "engine stopping; draining dials in flight"
            );
            tokio::select! {
                r = &mut scheduling => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "the scheduler failed while draining"),
                    Err(e) => tracing::error!(error = %e, "the scheduler task failed while draining"),
                },
                () = inner.clock.sleep(inner.settings.drain) => {
                    tracing::warn!("drain period over with dials still in flight; their leases will be recovered");
                    scheduling.abort();
                }
            }
        }
        poller.shutdown().await;
        sweeper.shutdown().await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        tracing::info!("engine stopped");
        Ok(())
    }
}
