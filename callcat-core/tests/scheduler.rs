//! Scheduler behaviour with the manual clock and the simulator. No test sleeps for
//! wall-clock time: time moves only when a test moves the clock.

use std::sync::Arc;
use std::time::Duration;

use callcat_core::chrono::{DateTime, TimeDelta, Utc};
use callcat_core::live::EventIngestor;
use callcat_core::testing::fixtures::{owner, t0, template};
use callcat_core::{
    Call, CallId, CallOutcome, CallService, CallStatus, CallStore, Clock, DispatchResult,
    DoNotCallList, InMemoryCallStore, InMemoryTranscriptStore, ManualClock, NewCall, Owner,
    RetryPolicy, Scheduler, SchedulerBuilder, Simulator, SimulatorConfig, TelephonyProvider,
    UpdateBus, Wakeup,
};

struct Harness {
    clock: ManualClock,
    store: Arc<InMemoryCallStore>,
    sim: Simulator,
    wakeup: Wakeup,
    bus: UpdateBus,
    service: CallService,
    ingestor: EventIngestor,
}

fn harness(cfg: SimulatorConfig) -> Harness {
    let clock = ManualClock::new(t0());
    let store = Arc::new(InMemoryCallStore::new());
    let sim = Simulator::new(Arc::new(clock.clone()), cfg);
    let wakeup = Wakeup::new();
    let bus = UpdateBus::new(10_000);
    let service = CallService::new(store.clone(), Arc::new(clock.clone()), wakeup.clone())
        .with_provider(Arc::new(sim.clone()))
        .with_bus(bus.clone());
    let ingestor = EventIngestor::new(
        store.clone(),
        Arc::new(InMemoryTranscriptStore::new()),
        bus.clone(),
        Arc::new(clock.clone()),
    )
    .with_jitter_seed(7);
    Harness {
        clock,
        store,
        sim,
        wakeup,
        bus,
        service,
        ingestor,
    }
}

impl Harness {
    fn scheduler(&self, f: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder) -> Scheduler {
        f(Scheduler::builder()
            .store(self.store.clone())
            .provider(Arc::new(self.sim.clone()))
            .clock(Arc::new(self.clock.clone()))
            .wakeup(self.wakeup.clone())
            .bus(self.bus.clone())
            .retry_seed(7))
        .build()
        .expect("valid scheduler")
    }

    async fn create(
        &self,
        o: &Owner,
        at: DateTime<Utc>,
        simulate: &str,
        policy: RetryPolicy,
    ) -> Call {
        let mut t = template();
        t.metadata.insert("simulate".into(), simulate.into());
        t.retry_policy = policy;
        self.service
            .create(o, NewCall::new(t).at(at))
            .await
            .expect("create")
            .into_call()
    }

    /// Delivers every simulator event due now, as webhooks would.
    async fn pump(&self) {
        for e in self.sim.drain_due_events() {
            self.ingestor.ingest(&e).await.expect("ingest");
        }
    }

    async fn get(&self, id: CallId) -> Call {
        self.store.get(id).await.expect("get").expect("present")
    }

    fn dial_times(&self, id: CallId) -> Vec<DateTime<Utc>> {
        self.sim
            .dials()
            .into_iter()
            .filter(|d| d.call_id == id)
            .map(|d| d.at)
            .collect()
    }
}

fn no_jitter() -> RetryPolicy {
    RetryPolicy {
        jitter: 0.0,
        ..RetryPolicy::default()
    }
}

fn secs(s: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(s)
}

/// Runs `sched` in a task until the returned sender is used (or dropped).
fn spawn_run(
    sched: &Scheduler,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<callcat_core::Result<()>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = sched.clone();
    let run = tokio::spawn(async move {
        s.run(async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, run)
}

/// Waits (bounded) for a condition other tasks make true; never for the clock.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..20_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_at_the_due_time_and_an_earlier_call_created_later_first() {
    let h = harness(SimulatorConfig::default());
    let o1 = owner("t");
    let o2 = owner("t");
    let later = h.create(&o1, secs(60), "answered", no_jitter()).await;
    let sched = h.scheduler(|b| b.max_idle(Duration::from_secs(3600)));
    let (stop, run) = spawn_run(&sched);
    // It wakes a claim lead before the due instant (claims then), dials at it.
    let lead = TimeDelta::from_std(sched.config().claim_lead).expect("small");
    let clock = h.clock.clone();
    eventually("scheduler sleeps until the first due call", || {
        clock.next_deadline() == Some(secs(60) - lead)
    })
    .await;

    let sooner = h.create(&o2, secs(30), "answered", no_jitter()).await;
    eventually("scheduler re-plans for the sooner call", || {
        clock.next_deadline() == Some(secs(30) - lead)
    })
    .await;
    h.clock.set(secs(30) - lead / 2);
    let store = h.store.clone();
    eventually("claimed ahead, waiting for its instant", || {
        clock.next_deadline() == Some(secs(30))
    })
    .await;
    assert_eq!(
        store
            .get(sooner.id)
            .await
            .expect("read")
            .expect("stored")
            .status,
        CallStatus::Dispatching
    );
    assert_eq!(h.sim.total_dials(), 0, "never dialed before it is due");
    h.clock.set(secs(30));
    let sim = h.sim.clone();
    sim.wait_for_dials(1).await;
    assert_eq!(h.dial_times(sooner.id), vec![secs(30)]);
    assert!(h.dial_times(later.id).is_empty());

    eventually("scheduler sleeps until the later call", || {
        clock.next_deadline() == Some(secs(60) - lead)
    })
    .await;
    h.clock.set(secs(60));
    sim.wait_for_dials(2).await;
    assert_eq!(h.dial_times(later.id), vec![secs(60)]);
    let _ = stop.send(());
    run.await.expect("join").expect("run");
    assert_eq!(h.get(later.id).await.status, CallStatus::Ringing);
}

#[tokio::test]
async fn a_duplicated_trigger_dials_once() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b.owner_cap(None));
    let a = h.create(&owner("t"), t0(), "answered", no_jitter()).await;
    let b = h.create(&owner("t"), t0(), "answered", no_jitter()).await;
    let (r1, r2) = tokio::join!(sched.dispatch(a.id), sched.dispatch(a.id));
    let results = [r1.expect("dispatch 1"), r2.expect("dispatch 2")];
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(r, DispatchResult::Dialed { .. }))
            .count(),
        1,
        "{results:?}"
    );
    assert!(results.contains(&DispatchResult::Skipped));
    assert_eq!(
        sched.dispatch(a.id).await.expect("third"),
        DispatchResult::Skipped
    );

    let first = sched.tick().await.expect("tick");
    let second = sched.tick().await.expect("tick again");
    assert_eq!((first.claimed, first.dialed), (1, 1));
    assert_eq!((second.claimed, second.dialed), (0, 0));
    assert_eq!(h.sim.dial_count(a.id), 1);
    assert_eq!(h.sim.dial_count(b.id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_schedulers_dial_2000_calls_exactly_once() {
    let h = harness(SimulatorConfig::instant());
    let owners: Vec<Owner> = (0..50).map(|_| owner("t")).collect();
    let mut ids = Vec::new();
    for i in 0..2000 {
        ids.push(
            h.create(&owners[i % 50], t0(), "answered", no_jitter())
                .await
                .id,
        );
    }
    let mut runs = Vec::new();
    let mut stops = Vec::new();
    for w in 0..4 {
        let s = h.scheduler(|b| {
            b.worker(format!("w{w}"))
                .owner_cap(None)
                .global_cap(100_000)
                .batch(50)
        });
        let (tx, run) = spawn_run(&s);
        stops.push(tx);
        runs.push(run);
    }
    h.sim.wait_for_dials(2000).await;
    for tx in stops {
        let _ = tx.send(());
    }
    for r in runs {
        r.await.expect("join").expect("run");
    }
    assert_eq!(h.sim.total_dials(), 2000);
    for id in ids {
        assert_eq!(h.sim.dial_count(id), 1, "call {id}");
        assert_eq!(h.get(id).await.status, CallStatus::Ringing);
    }
}

#[tokio::test]
async fn no_answer_retries_with_backoff_then_fails() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b);
    let c = h.create(&owner("t"), t0(), "no_answer", no_jitter()).await;
    // attempt 1 at t0; rings out after 25 s; retry 60 s after the end.
    sched.tick().await.expect("tick");
    h.clock.set(secs(25));
    h.pump().await;
    let after1 = h.get(c.id).await;
    assert_eq!(after1.status, CallStatus::RetryPending);
    assert_eq!(after1.next_action_at, Some(secs(85)));
    assert_eq!(sched.tick().await.expect("early tick").claimed, 0);
    h.clock.set(secs(85));
    sched.tick().await.expect("tick 2");
    h.clock.set(secs(110));
    h.pump().await;
    let after2 = h.get(c.id).await;
    assert_eq!(
        after2.next_action_at,
        Some(secs(230)),
        "backoff doubles: {after2:#?}"
    );
    h.clock.set(secs(230));
    sched.tick().await.expect("tick 3");
    h.clock.set(secs(255));
    h.pump().await;

    let done = h.get(c.id).await;
    assert_eq!(h.dial_times(c.id), vec![t0(), secs(85), secs(230)]);
    assert_eq!(done.status, CallStatus::Failed);
    assert_eq!(done.outcome, Some(CallOutcome::NoAnswer));
    assert_eq!(done.attempts, 3);
    assert_eq!(done.history.len(), 3);
    assert!(
        done.history
            .iter()
            .all(|a| a.outcome == Some(CallOutcome::NoAnswer))
    );
}

/// Fails the first dial with 429 + Retry-After: 600 s, then places calls.
struct RateLimitedOnce {
    sim: Simulator,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl TelephonyProvider for RateLimitedOnce {
    fn name(&self) -> &str {
        "rate-limited-once"
    }
    async fn place_call(&self, call: &Call) -> callcat_core::Result<callcat_core::DialAccepted> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(callcat_core::Error::new(
                callcat_core::ErrorKind::RateLimited,
                "slow down",
            )
            .with_retry_after(Duration::from_secs(600)));
        }
        self.sim.place_call(call).await
    }
    async fn fetch_call(&self, id: &str) -> callcat_core::Result<callcat_core::ProviderCall> {
        self.sim.fetch_call(id).await
    }
    async fn end_call(&self, id: &str) -> callcat_core::Result<()> {
        self.sim.end_call(id).await
    }
}

#[tokio::test]
async fn retry_after_from_the_provider_is_honoured() {
    let h = harness(SimulatorConfig::default());
    let provider = Arc::new(RateLimitedOnce {
        sim: h.sim.clone(),
        failed: Default::default(),
    });
    let sched = h.scheduler(|b| b.provider(provider));
    let c = h.create(&owner("t"), t0(), "answered", no_jitter()).await;
    let r = sched.tick().await.expect("tick");
    assert_eq!(r.retrying, 1);
    let after = h.get(c.id).await;
    assert_eq!(after.status, CallStatus::RetryPending);
    assert_eq!(
        after.next_action_at,
        Some(secs(600)),
        "Retry-After beats the 60 s backoff"
    );
    assert!(
        after
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("slow down"))
    );
    h.clock.set(secs(599));
    assert_eq!(sched.tick().await.expect("tick").claimed, 0);
    h.clock.set(secs(600));
    assert_eq!(sched.tick().await.expect("tick").dialed, 1);
    assert_eq!(h.get(c.id).await.attempts, 2);
}

#[tokio::test]
async fn dial_errors_use_up_attempts_and_permanent_errors_fail_at_once() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b.owner_cap(None));
    let flaky = h
        .create(
            &owner("t"),
            t0(),
            "dial_error",
            RetryPolicy {
                max_attempts: 2,
                ..no_jitter()
            },
        )
        .await;
    let rejected = h.create(&owner("t"), t0(), "rejected", no_jitter()).await;
    sched.tick().await.expect("tick");
    let r = h.get(rejected.id).await;
    assert_eq!(r.status, CallStatus::Failed);
    assert!(
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot be reached")),
        "{:?}",
        r.last_error
    );
    assert_eq!(h.get(flaky.id).await.status, CallStatus::RetryPending);
    h.clock.set(secs(60));
    sched.tick().await.expect("tick");
    let f = h.get(flaky.id).await;
    assert_eq!(f.status, CallStatus::Failed);
    assert_eq!(f.outcome, Some(CallOutcome::DialError));
    assert_eq!(f.attempts, 2);
    assert_eq!(h.sim.dial_count(flaky.id), 2);
    assert_eq!(h.sim.dial_count(rejected.id), 1);
}

#[tokio::test]
async fn a_second_call_of_the_same_owner_waits_for_the_first_to_end() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b);
    let o = owner("t");
    let first = h.create(&o, t0(), "answered", no_jitter()).await;
    let second = h.create(&o, t0(), "answered", no_jitter()).await;
    let r = sched.tick().await.expect("tick");
    // The owner is at its cap of 1 once the first is claimed: the second is not
    // even claimed, so waiting costs it no write.
    assert_eq!((r.claimed, r.dialed, r.deferred), (1, 1, 0));
    assert_eq!(h.sim.dial_count(first.id), 1);
    // While the first call is live, the second keeps waiting, untouched.
    for s in [2, 4, 10, 20] {
        h.clock.set(secs(s));
        h.pump().await;
        let r = sched.tick().await.expect("tick");
        assert_eq!(r.claimed, 0, "at {s} s");
    }
    assert_eq!(h.sim.dial_count(second.id), 0);
    let waiting = h.get(second.id).await;
    assert_eq!(
        (waiting.status, waiting.version),
        (CallStatus::Scheduled, 0)
    );
    // The first ends at 3 s ring + 20 s talk.
    h.clock.set(secs(23));
    h.pump().await;
    assert_eq!(h.get(first.id).await.status, CallStatus::Completed);
    sched.tick().await.expect("tick");
    assert_eq!(h.dial_times(second.id), vec![secs(23)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_at_its_owner_s_cap_waits_for_free_and_never_delays_another_owner() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b);
    let a = owner("a");
    let mut backlog = Vec::new();
    for _ in 0..200 {
        backlog.push(h.create(&a, t0(), "answered", no_jitter()).await);
    }
    let (stop, run) = spawn_run(&sched);
    eventually("one of a's calls is dialed", || h.sim.dials().len() == 1).await;

    // b's call, created behind a's whole backlog, is dialed at once.
    let b = owner("b");
    let theirs = h.create(&b, t0(), "answered", no_jitter()).await;
    eventually("b's call is dialed", || h.sim.dial_count(theirs.id) == 1).await;
    assert_eq!(h.dial_times(theirs.id), vec![t0()]);

    // a's first call rings at 3 s and ends at 23 s; then (woken by the end, not
    // by polling) the scheduler dials a's next call.
    for s in [2, 3, 10, 20] {
        h.clock.set(secs(s));
        h.pump().await;
    }
    h.clock.set(secs(23));
    h.pump().await;
    let a_dials = || {
        h.sim
            .dials()
            .iter()
            .filter(|d| d.call_id != theirs.id)
            .count()
    };
    eventually("a's second call is dialed", || a_dials() == 2).await;
    let _ = stop.send(());
    run.await.expect("scheduler task").expect("scheduler run");

    // Waiting cost nothing: none of a's other calls was ever claimed or written.
    let mut untouched = 0;
    for c in &backlog {
        let now = h.get(c.id).await;
        if h.sim.dial_count(c.id) == 0 {
            assert_eq!((now.status, now.version), (CallStatus::Scheduled, 0));
            untouched += 1;
        }
    }
    assert_eq!(untouched, 198);
}

#[tokio::test]
async fn the_global_cap_is_never_exceeded() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b.global_cap(5).owner_cap(None));
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(
            h.create(&owner("t"), t0(), "answered", no_jitter())
                .await
                .id,
        );
    }
    for _ in 0..1000 {
        sched.tick().await.expect("tick");
        h.pump().await;
        let mut done = true;
        for id in &ids {
            done &= h.get(*id).await.status == CallStatus::Completed;
        }
        if done {
            break;
        }
        let due = h.store.next_due_at().await.expect("next");
        let next = match (h.sim.next_event_at(), due.filter(|d| *d > h.clock.now())) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => h.clock.now() + TimeDelta::seconds(1),
        };
        h.clock.set(next);
        h.pump().await;
    }
    assert_eq!(h.sim.total_dials(), 30);
    assert_eq!(
        h.sim.peak_concurrent(),
        5,
        "the cap is reached and never exceeded"
    );
}

#[tokio::test]
async fn calls_past_not_after_expire() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b);
    let mut t = template();
    t.retry_policy = no_jitter();
    let mut new = NewCall::new(t).at(t0());
    new.not_after = Some(secs(5));
    let c = h
        .service
        .create(&owner("t"), new)
        .await
        .expect("create")
        .into_call();
    h.clock.set(secs(10));
    let r = sched.tick().await.expect("tick");
    assert_eq!(r.expired, 1);
    let e = h.get(c.id).await;
    assert_eq!(e.status, CallStatus::Expired);
    assert!(e.finished_at.is_some());
    assert_eq!(h.sim.total_dials(), 0);
}

#[tokio::test]
async fn calls_outside_their_window_wait_for_it_across_a_dst_change() {
    use callcat_core::chrono::{NaiveTime, Weekday};
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b);
    // Saturday 2030-03-30 12:00Z; Berlin springs forward on Sunday 03-31.
    let saturday = DateTime::parse_from_rfc3339("2030-03-30T12:00:00Z")
        .expect("time")
        .to_utc();
    h.clock.set(saturday);
    let mut t = template();
    t.dial_window = Some(callcat_core::RecurringWindow {
        weekdays: vec![Weekday::Mon],
        start: NaiveTime::from_hms_opt(9, 0, 0).expect("time"),
        end: NaiveTime::from_hms_opt(10, 0, 0).expect("time"),
        timezone: callcat_core::chrono_tz::Europe::Berlin,
    });
    let c = h
        .service
        .create(&owner("t"), NewCall::new(t))
        .await
        .expect("create")
        .into_call();
    let r = sched.tick().await.expect("tick");
    assert_eq!(r.deferred, 1);
    // Monday 09:00 CEST is 07:00Z (it would be 08:00Z without the DST change).
    let monday = DateTime::parse_from_rfc3339("2030-04-01T07:00:00Z")
        .expect("time")
        .to_utc();
    assert_eq!(h.get(c.id).await.next_action_at, Some(monday));
    assert_eq!(h.get(c.id).await.status, CallStatus::Scheduled);
    h.clock.set(monday);
    assert_eq!(sched.tick().await.expect("tick").dialed, 1);
    assert_eq!(h.dial_times(c.id), vec![monday]);
}

#[tokio::test]
async fn cancel_a_scheduled_call_and_an_in_flight_call() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b.owner_cap(None));
    let o = owner("t");
    let scheduled = h.create(&o, secs(60), "answered", no_jitter()).await;
    let live = h.create(&o, t0(), "answered", no_jitter()).await;
    assert_eq!(
        h.service
            .cancel(&o, scheduled.id)
            .await
            .expect("cancel")
            .status,
        CallStatus::Canceled
    );
    sched.tick().await.expect("tick");
    h.clock.set(secs(5));
    h.pump().await;
    assert_eq!(h.get(live.id).await.status, CallStatus::InProgress);
    let canceled = h.service.cancel(&o, live.id).await.expect("cancel live");
    assert_eq!(canceled.status, CallStatus::Canceled);
    assert_eq!(canceled.outcome, Some(CallOutcome::Canceled));
    h.clock.set(secs(100));
    h.pump().await;
    sched.tick().await.expect("tick");
    assert_eq!(
        h.get(live.id).await.status,
        CallStatus::Canceled,
        "late provider events change nothing"
    );
    assert_eq!(h.sim.dial_count(scheduled.id), 0);
    assert_eq!(h.sim.dial_count(live.id), 1);
    let err = h
        .service
        .cancel(&o, live.id)
        .await
        .expect_err("already canceled");
    assert_eq!(err.kind(), callcat_core::ErrorKind::InvalidTransition);
    let err = h
        .service
        .cancel(&owner("t"), live.id)
        .await
        .expect_err("someone else's");
    assert_eq!(err.kind(), callcat_core::ErrorKind::NotFound);
}

async fn crash_mid_dial(lookup: bool) -> (Harness, Call) {
    let h = harness(SimulatorConfig {
        lookup_by_call_id: lookup,
        ..SimulatorConfig::default()
    });
    let c = h.create(&owner("t"), t0(), "hang", no_jitter()).await;
    let doomed = h.scheduler(|b| b.worker("doomed"));
    let task = tokio::spawn(async move { doomed.tick().await });
    h.sim.wait_for_dials(1).await;
    task.abort();
    let _ = task.await;
    let stuck = h.get(c.id).await;
    assert_eq!(stuck.status, CallStatus::Dispatching);
    assert!(stuck.dial_started_at.is_some());
    (h, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_interrupted_by_a_crash_is_reconciled_never_redialed() {
    let (h, c) = crash_mid_dial(true).await;
    let rescuer = h.scheduler(|b| b.worker("rescuer"));
    assert_eq!(
        rescuer.tick().await.expect("tick").claimed,
        0,
        "lease still held"
    );
    h.clock.set(secs(30));
    let r = rescuer.tick().await.expect("tick");
    assert_eq!(r.reconciled, 1, "{r:?}");
    let after = h.get(c.id).await;
    assert_eq!(after.status, CallStatus::Ringing);
    assert!(after.provider_call_id.is_some());
    assert_eq!(h.sim.dial_count(c.id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lookup_an_interrupted_dial_fails_at_most_once() {
    let (h, c) = crash_mid_dial(false).await;
    h.clock.set(secs(30));
    let r = h
        .scheduler(|b| b.worker("rescuer"))
        .tick()
        .await
        .expect("tick");
    assert_eq!(r.failed, 1);
    let after = h.get(c.id).await;
    assert_eq!(after.status, CallStatus::Failed);
    assert!(
        after
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("at-most-once")),
        "{:?}",
        after.last_error
    );
    assert_eq!(h.sim.dial_count(c.id), 1);
}

#[tokio::test]
async fn a_claim_whose_worker_died_before_dialing_is_dialed_by_another() {
    let h = harness(SimulatorConfig::default());
    let c = h.create(&owner("t"), t0(), "answered", no_jitter()).await;
    let dead = callcat_core::WorkerId::new("dead");
    assert_eq!(
        h.store
            .claim_due(t0(), 10, &dead, secs(30))
            .await
            .expect("claim")
            .len(),
        1
    );
    let sched = h.scheduler(|b| b);
    assert_eq!(sched.tick().await.expect("tick").claimed, 0);
    h.clock.set(secs(30));
    assert_eq!(sched.tick().await.expect("tick").dialed, 1);
    assert_eq!(h.dial_times(c.id), vec![secs(30)]);
}

#[tokio::test]
async fn claims_of_dead_workers_do_not_hold_the_global_cap() {
    // As many lapsed claims as the cap: they count as active, yet must be recovered.
    let h = harness(SimulatorConfig::default());
    let mut ids = Vec::new();
    for i in 0..3 {
        let o = callcat_core::Owner::new("t", format!("u{i}"));
        ids.push(h.create(&o, t0(), "answered", no_jitter()).await.id);
    }
    let dead = callcat_core::WorkerId::new("dead");
    let claimed = h.store.claim_due(t0(), 10, &dead, secs(30)).await;
    assert_eq!(claimed.expect("claim").len(), 3);
    let sched = h.scheduler(|b| b.global_cap(3));
    assert_eq!(sched.tick().await.expect("tick").claimed, 0, "leases live");
    h.clock.set(secs(30));
    assert_eq!(sched.tick().await.expect("tick").dialed, 3);
    for id in ids {
        assert_eq!(h.dial_times(id), vec![secs(30)]);
    }
}

#[tokio::test]
async fn the_do_not_call_list_cancels_before_dialing() {
    let h = harness(SimulatorConfig::default());
    let dnc = Arc::new(DoNotCallList::new());
    dnc.add(callcat_core::testing::fixtures::phone());
    let sched = h.scheduler(|b| b.check(dnc.clone()));
    let c = h.create(&owner("t"), t0(), "answered", no_jitter()).await;
    let r = sched.tick().await.expect("tick");
    assert_eq!(r.canceled, 1);
    let after = h.get(c.id).await;
    assert_eq!(after.status, CallStatus::Canceled);
    assert!(
        after
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("do-not-call"))
    );
    assert_eq!(h.sim.total_dials(), 0);
}

/// Holds every dial until the test opens the gate.
struct Gated {
    sim: Simulator,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl TelephonyProvider for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    async fn place_call(&self, call: &Call) -> callcat_core::Result<callcat_core::DialAccepted> {
        let _permit = self.gate.acquire().await.expect("gate open");
        self.sim.place_call(call).await
    }
    async fn fetch_call(&self, id: &str) -> callcat_core::Result<callcat_core::ProviderCall> {
        self.sim.fetch_call(id).await
    }
    async fn end_call(&self, id: &str) -> callcat_core::Result<()> {
        self.sim.end_call(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_claiming_and_finishes_in_flight_dials() {
    let h = harness(SimulatorConfig::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let provider = Arc::new(Gated {
        sim: h.sim.clone(),
        gate: gate.clone(),
    });
    let sched = h.scheduler(|b| b.provider(provider).owner_cap(None));
    let in_flight = h.create(&owner("t"), t0(), "answered", no_jitter()).await;
    let (stop, run) = spawn_run(&sched);
    for i in 0.. {
        if h.get(in_flight.id).await.dial_started_at.is_some() {
            break;
        }
        assert!(i < 20_000, "the dial never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = stop.send(());
    // A call that becomes due after the shutdown signal is not claimed.
    let late = h.create(&owner("t"), t0(), "answered", no_jitter()).await;
    assert!(!run.is_finished(), "run waits for the in-flight dial");
    gate.add_permits(10);
    run.await.expect("join").expect("run");
    assert_eq!(h.get(in_flight.id).await.status, CallStatus::Ringing);
    assert_eq!(h.get(late.id).await.status, CallStatus::Scheduled);
    assert_eq!(h.sim.dial_count(late.id), 0);
}

/// Places the call, then loses the answer (a timeout after sending).
struct TimesOutAfterSending {
    sim: Simulator,
}

#[async_trait::async_trait]
impl TelephonyProvider for TimesOutAfterSending {
    fn name(&self) -> &str {
        "times-out"
    }
    fn capabilities(&self) -> callcat_core::ProviderCapabilities {
        self.sim.capabilities()
    }
    async fn place_call(&self, call: &Call) -> callcat_core::Result<callcat_core::DialAccepted> {
        self.sim.place_call(call).await?;
        Err(callcat_core::Error::unavailable("request timed out").with_maybe_delivered())
    }
    async fn fetch_call(&self, id: &str) -> callcat_core::Result<callcat_core::ProviderCall> {
        self.sim.fetch_call(id).await
    }
    async fn end_call(&self, id: &str) -> callcat_core::Result<()> {
        self.sim.end_call(id).await
    }
    async fn find_by_call_id(
        &self,
        id: CallId,
    ) -> callcat_core::Result<Option<callcat_core::ProviderCall>> {
        self.sim.find_by_call_id(id).await
    }
}

#[tokio::test]
async fn a_dial_whose_answer_was_lost_is_reconciled_or_failed_never_redialed() {
    for lookup in [true, false] {
        let h = harness(SimulatorConfig {
            lookup_by_call_id: lookup,
            ..SimulatorConfig::default()
        });
        let provider = Arc::new(TimesOutAfterSending { sim: h.sim.clone() });
        let sched = h.scheduler(|b| b.provider(provider));
        let c = h.create(&owner("t"), t0(), "answered", no_jitter()).await;
        let r = sched.tick().await.expect("tick");
        let after = h.get(c.id).await;
        if lookup {
            assert_eq!(r.reconciled, 1, "{r:?}");
            assert_eq!(after.status, CallStatus::Ringing);
        } else {
            assert_eq!(r.failed, 1, "{r:?}");
            assert_eq!(after.status, CallStatus::Failed);
            assert!(
                after
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("at-most-once"))
            );
        }
        h.clock.set(secs(3600));
        sched.tick().await.expect("later tick");
        assert_eq!(h.sim.dial_count(c.id), 1, "lookup={lookup}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_claims_no_more_than_it_can_dispatch() {
    let h = harness(SimulatorConfig::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let provider = Arc::new(Gated {
        sim: h.sim.clone(),
        gate: gate.clone(),
    });
    let sched = h.scheduler(|b| b.provider(provider).owner_cap(None).max_pending(2));
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            h.create(&owner("t"), t0(), "answered", no_jitter())
                .await
                .id,
        );
    }
    let (stop, run) = spawn_run(&sched);
    // Two dials hang at the gate; the other four must stay unclaimed.
    let mut claimed = 0;
    for i in 0.. {
        claimed = 0;
        for id in &ids {
            claimed += usize::from(h.get(*id).await.status == CallStatus::Dispatching);
        }
        if claimed == 2 {
            break;
        }
        assert!(i < 20_000, "never reached 2 claimed calls");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let mut scheduled = 0;
    for id in &ids {
        scheduled += usize::from(h.get(*id).await.status == CallStatus::Scheduled);
    }
    assert_eq!((claimed, scheduled), (2, 4));
    gate.add_permits(100);
    h.sim.wait_for_dials(6).await;
    let _ = stop.send(());
    run.await.expect("join").expect("run");
    for id in ids {
        assert_eq!(h.sim.dial_count(id), 1);
    }
}

#[test]
fn the_builder_rejects_settings_it_cannot_honour() {
    let clock = ManualClock::new(t0());
    let sim = Simulator::new(Arc::new(clock.clone()), SimulatorConfig::default());
    let base = || {
        Scheduler::builder()
            .store(Arc::new(InMemoryCallStore::new()))
            .provider(Arc::new(sim.clone()))
            .clock(Arc::new(clock.clone()))
    };
    assert!(base().build().is_ok());
    let bad: Vec<(&str, SchedulerBuilder)> = vec![
        ("batch", base().batch(0)),
        ("cap", base().global_cap(0)),
        ("lease", base().lease(Duration::from_millis(50))),
        (
            "claimLead",
            base()
                .lease(Duration::from_secs(1))
                .claim_lead(Duration::from_millis(300)),
        ),
    ];
    for (field, b) in bad {
        let e = b.build().expect_err(field);
        assert_eq!(e.kind(), callcat_core::ErrorKind::Validation, "{field}");
        assert_eq!(e.field(), Some(field));
    }
}

/// A provider whose dial panics (a bug in an adapter), counting the dials.
#[derive(Default)]
struct PanickingProvider {
    dials: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl TelephonyProvider for PanickingProvider {
    fn name(&self) -> &str {
        "panicking"
    }

    async fn place_call(&self, _call: &Call) -> callcat_core::Result<callcat_core::DialAccepted> {
        self.dials.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        panic!("bug in the provider adapter");
    }

    async fn fetch_call(&self, id: &str) -> callcat_core::Result<callcat_core::ProviderCall> {
        Err(callcat_core::Error::not_found(format!("no call {id}")))
    }

    async fn end_call(&self, id: &str) -> callcat_core::Result<()> {
        Err(callcat_core::Error::not_found(format!("no call {id}")))
    }
}

#[tokio::test]
async fn a_dial_that_panics_is_a_failed_attempt_not_an_endless_loop() {
    let h = harness(SimulatorConfig::default());
    let provider = Arc::new(PanickingProvider::default());
    let sched = Scheduler::builder()
        .store(h.store.clone())
        .provider(provider.clone())
        .clock(Arc::new(h.clock.clone()))
        .wakeup(h.wakeup.clone())
        .retry_seed(7)
        .build()
        .expect("valid scheduler");
    let policy = RetryPolicy {
        max_attempts: 3,
        ..no_jitter()
    };
    let c = h.create(&owner("t"), t0(), "answered", policy).await;

    let report = sched
        .tick()
        .await
        .expect("a panicking dial does not fail the tick");
    assert_eq!(report.claimed, 1);
    let failed = h.get(c.id).await;
    assert_eq!(failed.status, CallStatus::Failed, "{failed:#?}");
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.outcome, Some(CallOutcome::DialError));
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("bug in the provider adapter")),
        "{:?}",
        failed.last_error
    );
    assert_eq!(failed.lease, None);

    // Never dispatched again: not after the lease would have expired, not later.
    for _ in 0..3 {
        h.clock.advance(Duration::from_secs(3600));
        assert_eq!(sched.tick().await.expect("tick").claimed, 0);
    }
    assert_eq!(provider.dials.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_simulator_s_knobs_are_checked_when_a_call_is_created_or_edited() {
    let h = harness(SimulatorConfig::default());
    let o = owner("t");
    let mut t = template();
    t.metadata
        .insert("simulate_talk_ms".into(), 8_210_266_876_799_999u64.into());
    let e = h
        .service
        .create(&o, NewCall::new(t).at(t0()))
        .await
        .expect_err("out of range");
    assert_eq!(e.kind(), callcat_core::ErrorKind::Validation);
    assert_eq!(e.field(), Some("metadata.simulate_talk_ms"));

    let c = h.create(&o, secs(60), "answered", no_jitter()).await;
    let mut metadata = c.metadata.clone();
    metadata.insert("simulate_talk_ms".into(), u64::MAX.into());
    let edit = callcat_core::CallEdit {
        metadata: Some(metadata),
        ..callcat_core::CallEdit::default()
    };
    let e = h
        .service
        .edit(&o, c.id, &edit)
        .await
        .expect_err("out of range");
    assert_eq!(e.field(), Some("metadata.simulate_talk_ms"));
}

/// Lets other tasks run until `cond` holds (bounded; no wall-clock sleep).
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..10_000 {
        if cond().await {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test]
async fn a_call_the_provider_forgot_after_a_restart_ends_after_the_grace_period() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b);
    let c = h.create(&owner("t"), t0(), "answered", no_jitter()).await;
    sched.tick().await.expect("tick");
    h.clock.advance(Duration::from_secs(4));
    h.pump().await;
    assert_eq!(h.get(c.id).await.status, CallStatus::InProgress);

    // The process restarts; the new simulator has never heard of the call.
    let restarted = Simulator::new(Arc::new(h.clock.clone()), SimulatorConfig::default());
    let ingestor = Arc::new(EventIngestor::new(
        h.store.clone(),
        Arc::new(InMemoryTranscriptStore::new()),
        h.bus.clone(),
        Arc::new(h.clock.clone()),
    ));
    let config = callcat_core::PollerConfig::default();
    let grace = config.unknown_call_grace;
    assert_eq!(grace, Duration::from_secs(120));
    let poller = callcat_core::TranscriptPoller::new(ingestor, Arc::new(restarted), config)
        .expect("valid")
        .start()
        .await
        .expect("started");
    assert_eq!(poller.tracked(), vec![c.id]);
    let start = h.clock.now();

    // Within the grace period the call stays on the line.
    until("the first poll", async || h.clock.sleepers() == 1).await;
    while h.clock.now() < start + TimeDelta::seconds(110) {
        h.clock.advance(Duration::from_secs(10));
        until("the next poll", async || h.clock.sleepers() == 1).await;
    }
    assert_eq!(h.get(c.id).await.status, CallStatus::InProgress);

    // Past it, the call ends with a clear reason, long before the sweeper's hour.
    h.clock.set(start + TimeDelta::seconds(121));
    let store = h.store.clone();
    until("the call to end", async || {
        store.get(c.id).await.ok().flatten().map(|c| c.status) == Some(CallStatus::Failed)
    })
    .await;
    let ended = h.get(c.id).await;
    assert_eq!(ended.outcome, Some(CallOutcome::Error));
    assert!(
        ended
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("the provider no longer knows this call")),
        "{:?}",
        ended.last_error
    );
    until("polling to stop", async || poller.tracked().is_empty()).await;
    poller.shutdown().await;
}

#[tokio::test]
async fn canceling_a_call_the_provider_forgot_finishes_the_cancel_locally() {
    let h = harness(SimulatorConfig::default());
    let sched = h.scheduler(|b| b);
    let o = owner("t");
    let c = h.create(&o, t0(), "answered", no_jitter()).await;
    sched.tick().await.expect("tick");
    assert_eq!(h.get(c.id).await.status, CallStatus::Ringing);

    let restarted = Simulator::new(Arc::new(h.clock.clone()), SimulatorConfig::default());
    let service = CallService::new(h.store.clone(), Arc::new(h.clock.clone()), h.wakeup.clone())
        .with_provider(Arc::new(restarted));
    let canceled = service.cancel(&o, c.id).await.expect("canceled, not 404");
    assert_eq!(canceled.status, CallStatus::Canceled);
    assert_eq!(canceled.outcome, Some(CallOutcome::Canceled));
    assert_eq!(h.get(c.id).await.status, CallStatus::Canceled);
}
