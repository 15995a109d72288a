//! The engine as an embedder runs it: `Engine::run` with the manual clock and the
//! simulator. Time moves only when a test moves the clock; waits are bounded
//! polls for what other tasks do, never for wall-clock time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use callcat_core::chrono::TimeDelta;
use callcat_core::memory::in_memory_stores;
use callcat_core::testing::fixtures::{owner, t0, template};
use callcat_core::{
    Call, CallId, CallOutcome, CallStatus, Clock, DialAccepted, Engine, EngineSettings,
    ManualClock, NewCall, Owner, ProviderCall, ProviderCapabilities, Simulator, SimulatorConfig,
    TelephonyProvider,
};
use tokio::sync::{Semaphore, oneshot};

/// Waits (bounded) for a condition other tasks make true; never for the clock.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..20_000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn get(engine: &Engine, o: &Owner, id: CallId) -> Call {
    engine.calls().get(o, id).await.expect("get")
}

/// A provider whose dials wait at a gate (a dial in flight at a deploy), and
/// which, like Retell and Twilio, cannot look calls up by our id: a dial cut off
/// by shutdown would be failed by recovery (at-most-once).
struct Gated {
    sim: Simulator,
    gate: Semaphore,
    waiting: AtomicUsize,
}

#[async_trait::async_trait]
impl TelephonyProvider for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities::default()
    }
    async fn place_call(&self, call: &Call) -> callcat_core::Result<DialAccepted> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await;
        self.sim.place_call(call).await
    }
    async fn fetch_call(&self, id: &str) -> callcat_core::Result<ProviderCall> {
        self.sim.fetch_call(id).await
    }
    async fn end_call(&self, id: &str) -> callcat_core::Result<()> {
        self.sim.end_call(id).await
    }
}

async fn gated_engine(clock: &ManualClock, drain: Duration) -> (Engine, Arc<Gated>) {
    let sim = Simulator::new(Arc::new(clock.clone()), SimulatorConfig::default());
    let gated = Arc::new(Gated {
        sim,
        gate: Semaphore::new(0),
        waiting: AtomicUsize::new(0),
    });
    let engine = Engine::builder()
        .stores(in_memory_stores())
        .provider(gated.clone())
        .clock(Arc::new(clock.clone()))
        .settings(EngineSettings {
            drain,
            ..EngineSettings::default()
        })
        .build()
        .await
        .expect("engine");
    (engine, gated)
}

fn run(
    engine: &Engine,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<callcat_core::Result<()>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let e = engine.clone();
    let task = tokio::spawn(async move {
        e.run(async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_dials_in_flight_finish_and_claims_nothing_more() {
    let clock = ManualClock::new(t0());
    let (engine, gated) = gated_engine(&clock, Duration::from_secs(7)).await;
    let (a, b) = (owner("t1"), owner("t2"));
    let first = engine
        .calls()
        .create(&a, NewCall::new(template()).at(t0()))
        .await
        .expect("create")
        .into_call();
    let (stop, task) = run(&engine);
    eventually("the dial is in flight", || async {
        gated.waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    // A second call becomes due while the engine drains: it must not be claimed.
    let mut t = template();
    t.phone_number = callcat_core::PhoneNumber::parse("+442071838750").expect("valid");
    let second = engine
        .calls()
        .create(&b, NewCall::new(t).at(t0() + TimeDelta::seconds(5)))
        .await
        .expect("create")
        .into_call();
    let _ = stop.send(());
    // The drain timer (7 s here, before every other timer) shows the engine has
    // stopped the scheduler and is waiting for the dial.
    let c = clock.clone();
    eventually("the engine drains", || {
        let c = c.clone();
        async move { c.next_deadline() == Some(t0() + TimeDelta::seconds(7)) }
    })
    .await;
    assert!(
        !task.is_finished(),
        "run() must wait for the dial in flight"
    );
    clock.set(t0() + TimeDelta::seconds(5));
    tokio::time::sleep(Duration::from_millis(50)).await;
    gated.gate.add_permits(1);
    task.await.expect("joined").expect("run ok");
    let first = get(&engine, &a, first.id).await;
    assert_eq!(first.status, CallStatus::Ringing, "{first:?}");
    assert!(first.provider_call_id.is_some());
    let second = get(&engine, &b, second.id).await;
    assert!(
        matches!(
            second.status,
            CallStatus::Scheduled | CallStatus::Dispatching
        ),
        "{second:?}"
    );
    assert_eq!(second.attempts, 0, "never dialed after shutdown");
    assert_eq!(gated.waiting.load(Ordering::SeqCst), 1, "one dial in all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded() {
    let clock = ManualClock::new(t0());
    let (engine, gated) = gated_engine(&clock, Duration::from_secs(10)).await;
    let o = owner("t1");
    let call = engine
        .calls()
        .create(&o, NewCall::new(template()).at(t0()))
        .await
        .expect("create")
        .into_call();
    let (stop, task) = run(&engine);
    eventually("the dial is in flight", || async {
        gated.waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    let _ = stop.send(());
    // The provider never answers: once the drain period (10 s) has passed on the
    // clock, run() returns.
    let started = clock.now();
    for _ in 0..600 {
        if task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        clock.advance(Duration::from_millis(500));
    }
    assert!(task.is_finished(), "run() outlived its drain");
    assert!(
        clock.now() - started >= TimeDelta::seconds(10),
        "not before the drain period"
    );
    task.await.expect("joined").expect("run ok");
    let c = get(&engine, &o, call.id).await;
    assert_eq!(
        c.status,
        CallStatus::Dispatching,
        "left to lease recovery: {c:?}"
    );
}

async fn sim_engine(clock: &ManualClock, settings: EngineSettings) -> Engine {
    let sim = Simulator::new(Arc::new(clock.clone()), SimulatorConfig::default());
    Engine::builder()
        .stores(in_memory_stores())
        .simulator(sim)
        .clock(Arc::new(clock.clone()))
        .settings(settings)
        .build()
        .await
        .expect("engine")
}

/// Moves the clock a second at a time until `done` holds (bounded).
async fn drive<F, Fut>(clock: &ManualClock, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        for _ in 0..50 {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        clock.advance(Duration::from_secs(1));
    }
    panic!("not reached in 600 simulated seconds: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_on_the_tenants_do_not_call_list_is_canceled_before_any_dial() {
    let clock = ManualClock::new(t0());
    let engine = sim_engine(&clock, EngineSettings::default()).await;
    let admin = Owner::new("acme", "admin");
    let (ada, other_tenant) = (Owner::new("acme", "ada"), Owner::new("globex", "bob"));
    let number = template().phone_number;
    let (_, added) = engine
        .do_not_call()
        .add(&admin, number.clone())
        .await
        .expect("add");
    assert!(added);
    let listed = engine
        .calls()
        .create(&ada, NewCall::new(template()).at(t0()))
        .await
        .expect("create")
        .into_call();
    let (stop, task) = run(&engine);
    let e = engine.clone();
    let a = ada.clone();
    drive(&clock, "the listed call is canceled", || {
        let (e, a) = (e.clone(), a.clone());
        async move { get(&e, &a, listed.id).await.status == CallStatus::Canceled }
    })
    .await;
    let c = get(&engine, &ada, listed.id).await;
    assert!(
        c.last_error
            .as_deref()
            .is_some_and(|e| e.contains("do-not-call")),
        "{c:?}"
    );
    assert_eq!(c.attempts, 0);
    let sim = engine.simulator().expect("simulator");
    assert_eq!(sim.dial_count(listed.id), 0, "never dialed");
    // Another tenant's list is its own: the same number is dialed for them.
    let theirs = engine
        .calls()
        .create(&other_tenant, NewCall::new(template()).at(clock.now()))
        .await
        .expect("create")
        .into_call();
    let sim2 = sim.clone();
    drive(&clock, "the other tenant's call is dialed", || {
        let s = sim2.clone();
        async move { s.dial_count(theirs.id) == 1 }
    })
    .await;
    let _ = stop.send(());
    task.await.expect("joined").expect("run ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_then_call_places_the_task_call_as_a_follow_up() {
    let clock = ManualClock::new(t0());
    let engine = sim_engine(&clock, EngineSettings::default()).await;
    let o = owner("t1");
    let mut task = template();
    task.metadata.insert(
        "simulate_analysis".into(),
        serde_json::json!({"classification": "ivr"}),
    );
    let first = engine
        .start_classify_then_call(&o, NewCall::new(task).at(t0()))
        .await
        .expect("start")
        .into_call();
    assert_eq!(first.metadata["workflow"], "classify");
    let (stop, task) = run(&engine);
    let e = engine.clone();
    let o2 = o.clone();
    drive(&clock, "the follow-up exists", || {
        let (e, o) = (e.clone(), o2.clone());
        async move {
            let page = e
                .calls()
                .list(
                    &o,
                    &callcat_core::ListQuery::new(callcat_core::ListView::Upcoming, 10),
                )
                .await
                .expect("list");
            page.items
                .iter()
                .any(|c| c.parent_call_id == Some(first.id))
        }
    })
    .await;
    let done = get(&engine, &o, first.id).await;
    assert_eq!(done.status, CallStatus::Completed);
    assert_eq!(done.outcome, Some(CallOutcome::Answered));
    let page = engine
        .calls()
        .list(
            &o,
            &callcat_core::ListQuery::new(callcat_core::ListView::Upcoming, 10),
        )
        .await
        .expect("list");
    let follow = page
        .items
        .iter()
        .find(|c| c.parent_call_id == Some(first.id))
        .expect("follow-up");
    assert_eq!(
        follow.variables.get("classification").map(String::as_str),
        Some("ivr")
    );
    assert!(!follow.metadata.contains_key("workflow"));
    // Seed 003: the task call follows an IVR 30 s later.
    let analyzed = done.finished_at.unwrap_or(done.updated_at);
    assert!(
        follow.scheduled_for >= analyzed + TimeDelta::seconds(29),
        "{follow:?}"
    );
    let _ = stop.send(());
    task.await.expect("joined").expect("run ok");
}
