//! Follow-up workflows (seed 003) and the call-window planner (seed 002), on the
//! manual clock, the simulator and in-memory stores.

use std::sync::Arc;

use callcat_core::chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc, Weekday};
use callcat_core::live::EventIngestor;
use callcat_core::testing::fixtures::{owner, t0, template};
use callcat_core::workflow::WorkflowOutcome;
use callcat_core::{
    CallService, CallStatus, CallStore, CallWindow, ClassifyThenCall, Clock, DoneToday,
    InMemoryCallStore, InMemoryTranscriptStore, InMemoryWindowStore, ManualClock, Owner,
    RecurringWindow, Scheduler, Simulator, SimulatorConfig, UpdateBus, Wakeup, WindowId,
    WindowPlanner, WindowSchedule, WindowStore, WorkflowRunner,
};

struct World {
    clock: ManualClock,
    store: Arc<InMemoryCallStore>,
    sim: Simulator,
    service: CallService,
    scheduler: Scheduler,
    ingestor: EventIngestor,
}

fn world() -> World {
    let clock = ManualClock::new(t0());
    let store = Arc::new(InMemoryCallStore::new());
    let sim = Simulator::new(Arc::new(clock.clone()), SimulatorConfig::default());
    let wakeup = Wakeup::new();
    let service = CallService::new(store.clone(), Arc::new(clock.clone()), wakeup.clone());
    let scheduler = Scheduler::builder()
        .store(store.clone())
        .provider(Arc::new(sim.clone()))
        .clock(Arc::new(clock.clone()))
        .wakeup(wakeup)
        .build()
        .expect("scheduler");
    let ingestor = EventIngestor::new(
        store.clone(),
        Arc::new(InMemoryTranscriptStore::new()),
        UpdateBus::default(),
        Arc::new(clock.clone()),
    )
    .with_jitter_seed(7);
    World {
        clock,
        store,
        sim,
        service,
        scheduler,
        ingestor,
    }
}

impl World {
    async fn advance_to(&self, t: DateTime<Utc>) {
        self.clock.set(t);
        for e in self.sim.drain_due_events() {
            self.ingestor.ingest(&e).await.expect("ingest");
        }
        self.scheduler.tick().await.expect("tick");
    }
}

fn secs(s: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(s)
}

fn classify_template(class: &str) -> callcat_core::CallTemplate {
    let mut t = template();
    t.subject = "Who answers?".into();
    t.metadata.insert("simulate_talk_ms".into(), 5000.into());
    t.metadata.insert(
        "simulate_analysis".into(),
        serde_json::json!({ "classification": class }),
    );
    t
}

fn task_template() -> callcat_core::CallTemplate {
    let mut t = template();
    t.subject = "Book the appointment".into();
    t
}

#[tokio::test]
async fn an_ivr_classification_is_followed_by_the_task_call_30_seconds_later() {
    let w = world();
    let flow = Arc::new(ClassifyThenCall::default());
    let runner = WorkflowRunner::new(flow.clone(), w.service.clone(), Arc::new(w.clock.clone()));
    let o = owner("clinic");
    let classify = flow
        .start(
            &w.service,
            &o,
            classify_template("ivr"),
            task_template(),
            w.clock.now(),
        )
        .await
        .expect("start")
        .into_call();
    assert_eq!(
        classify.metadata.get("workflow").and_then(|v| v.as_str()),
        Some("classify")
    );

    w.advance_to(t0()).await; // dialed
    w.advance_to(secs(8)).await; // 3 s ring + 5 s talk: ended
    let ended = w
        .store
        .get(classify.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(ended.status, CallStatus::Completed);
    assert_eq!(
        runner.process(&ended).await.expect("no analysis yet"),
        WorkflowOutcome::Nothing
    );
    w.advance_to(secs(10)).await; // analysis
    let analyzed = w
        .store
        .get(classify.id)
        .await
        .expect("get")
        .expect("present");

    let WorkflowOutcome::FollowUp(task_id) = runner.process(&analyzed).await.expect("workflow")
    else {
        panic!("expected a follow-up");
    };
    let task = w.store.get(task_id).await.expect("get").expect("task call");
    assert_eq!(
        task.scheduled_for,
        secs(40),
        "30 s after the classification"
    );
    assert_eq!(task.parent_call_id, Some(classify.id));
    assert_eq!(task.subject, "Book the appointment");
    assert_eq!(
        task.variables.get("classification").map(String::as_str),
        Some("ivr")
    );
    // Processing the same attempt again (a second process, a restart) adds nothing.
    assert_eq!(
        runner.process(&analyzed).await.expect("again"),
        WorkflowOutcome::FollowUp(task_id)
    );

    w.advance_to(secs(39)).await;
    assert_eq!(w.sim.dial_count(task_id), 0);
    w.advance_to(secs(40)).await;
    assert_eq!(w.sim.dial_count(task_id), 1);

    // The classification is cached per number: the next flow skips straight to the task.
    let next = flow
        .start(
            &w.service,
            &owner("clinic"),
            classify_template("ivr"),
            task_template(),
            w.clock.now(),
        )
        .await
        .expect("start again")
        .into_call();
    assert_eq!(next.subject, "Book the appointment");
    assert!(next.metadata.get("workflow").is_none());
    assert_eq!(
        next.variables.get("classification").map(String::as_str),
        Some("ivr")
    );
}

#[tokio::test]
async fn a_human_classification_calls_at_once_and_a_failed_one_stops() {
    let w = world();
    let flow = Arc::new(ClassifyThenCall::default());
    let runner = WorkflowRunner::new(flow.clone(), w.service.clone(), Arc::new(w.clock.clone()));
    let o = owner("clinic");
    let c = flow
        .start(
            &w.service,
            &o,
            classify_template("human"),
            task_template(),
            t0(),
        )
        .await
        .expect("start");
    w.advance_to(t0()).await;
    w.advance_to(secs(10)).await;
    let done = w
        .store
        .get(c.call().id)
        .await
        .expect("get")
        .expect("present");
    let WorkflowOutcome::FollowUp(id) = runner.process(&done).await.expect("workflow") else {
        panic!("expected a follow-up");
    };
    assert_eq!(
        w.store
            .get(id)
            .await
            .expect("get")
            .expect("task")
            .scheduled_for,
        secs(10)
    );

    let mut failing = classify_template("ivr");
    failing.phone_number = callcat_core::PhoneNumber::parse("+442071838750").expect("phone");
    failing.metadata.insert("simulate".into(), "busy".into());
    failing.retry_policy.max_attempts = 1;
    let mut other_task = task_template();
    other_task.phone_number = failing.phone_number.clone();
    let f = flow
        .start(
            &w.service,
            &owner("clinic-2"),
            failing,
            other_task,
            secs(10),
        )
        .await
        .expect("start");
    assert_eq!(
        f.call().metadata.get("workflow").and_then(|v| v.as_str()),
        Some("classify")
    );
    w.advance_to(secs(60)).await;
    w.advance_to(secs(120)).await;
    let failed = w
        .store
        .get(f.call().id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(failed.status, CallStatus::Failed);
    assert_eq!(
        runner.process(&failed).await.expect("workflow"),
        WorkflowOutcome::Nothing
    );
}

fn berlin(days: &[Weekday], from: (u32, u32), to: (u32, u32)) -> WindowSchedule {
    WindowSchedule::Recurring(RecurringWindow {
        weekdays: days.to_vec(),
        start: NaiveTime::from_hms_opt(from.0, from.1, 0).expect("time"),
        end: NaiveTime::from_hms_opt(to.0, to.1, 0).expect("time"),
        timezone: callcat_core::chrono_tz::Europe::Berlin,
    })
}

fn window(o: &Owner, schedule: WindowSchedule) -> CallWindow {
    CallWindow {
        id: WindowId::new(),
        owner: o.clone(),
        schedule,
        template: template(),
        created_at: t0(),
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("rfc3339").to_utc()
}

struct Journal(std::sync::Mutex<Vec<(Owner, NaiveDate)>>);

#[async_trait::async_trait]
impl DoneToday for Journal {
    async fn done(&self, owner: &Owner, date: NaiveDate) -> callcat_core::Result<bool> {
        Ok(self
            .0
            .lock()
            .expect("lock")
            .iter()
            .any(|(o, d)| o == owner && *d == date))
    }
}

#[tokio::test]
async fn the_planner_places_one_call_per_owner_per_local_day() {
    let clock = ManualClock::new(utc("2030-01-07T07:30:00Z")); // Monday 08:30 Berlin
    let calls = Arc::new(InMemoryCallStore::new());
    let windows = Arc::new(InMemoryWindowStore::new());
    let service = CallService::new(calls.clone(), Arc::new(clock.clone()), Wakeup::new());
    let a = owner("t");
    windows
        .create(&window(
            &a,
            berlin(&[Weekday::Mon, Weekday::Tue], (9, 0), (10, 0)),
        ))
        .await
        .expect("window");

    let planner = WindowPlanner::new(windows.clone(), service.clone(), Arc::new(clock.clone()));
    let other_process =
        WindowPlanner::new(windows.clone(), service.clone(), Arc::new(clock.clone()));
    assert_eq!(
        planner.plan_once().await.expect("plan").created,
        0,
        "window not open yet"
    );

    clock.set(utc("2030-01-07T08:05:00Z")); // 09:05 Berlin
    let (r1, r2) = tokio::join!(planner.plan_once(), other_process.plan_once());
    let (r1, r2) = (r1.expect("plan 1"), r2.expect("plan 2"));
    assert_eq!(r1.created + r2.created, 1, "two planners create one call");
    assert_eq!(r1.already_planned + r2.already_planned, 1);

    let owned = calls
        .list(
            &a,
            &callcat_core::ListQuery::new(callcat_core::ListView::Upcoming, 10),
        )
        .await
        .expect("list");
    assert_eq!(owned.items.len(), 1);
    let call = owned.items[0].clone();
    assert_eq!(call.idempotency_key.as_deref(), Some("window:2030-01-07"));

    // Finished today: still no second call today.
    let mut done = call.clone();
    done.status = CallStatus::Completed;
    done.next_action_at = None;
    done.finished_at = Some(clock.now());
    calls.update(&done).await.expect("complete");
    clock.set(utc("2030-01-07T08:30:00Z"));
    let r = planner.plan_once().await.expect("plan");
    assert_eq!((r.created, r.already_planned), (0, 1));

    // Next local day: a new call, unless the owner is already done or busy.
    clock.set(utc("2030-01-08T08:10:00Z"));
    let journal = Arc::new(Journal(std::sync::Mutex::new(vec![(
        a.clone(),
        NaiveDate::from_ymd_opt(2030, 1, 8).expect("date"),
    )])));
    let careful = WindowPlanner::new(windows.clone(), service.clone(), Arc::new(clock.clone()))
        .with_done_today(journal);
    assert_eq!(careful.plan_once().await.expect("plan").done_today, 1);
    let busy_call = service
        .create(
            &a,
            callcat_core::NewCall::new(template()).at(utc("2030-01-08T08:10:00Z")),
        )
        .await
        .expect("create");
    let mut ringing = busy_call.call().clone();
    ringing.status = CallStatus::Ringing;
    ringing.next_action_at = None;
    calls.update(&ringing).await.expect("ringing");
    assert_eq!(planner.plan_once().await.expect("plan").busy, 1);
}

#[tokio::test]
async fn a_one_off_window_today_takes_precedence_over_recurring_ones() {
    let clock = ManualClock::new(utc("2030-01-07T08:30:00Z")); // Monday 09:30 Berlin
    let calls = Arc::new(InMemoryCallStore::new());
    let windows = Arc::new(InMemoryWindowStore::new());
    let service = CallService::new(calls.clone(), Arc::new(clock.clone()), Wakeup::new());
    let o = owner("t");
    windows
        .create(&window(&o, berlin(&[Weekday::Mon], (9, 0), (10, 0))))
        .await
        .expect("recurring");
    let one_off = WindowSchedule::OneOff {
        start_at: utc("2030-01-07T15:00:00Z"),
        end_at: utc("2030-01-07T16:00:00Z"),
        timezone: callcat_core::chrono_tz::Europe::Berlin,
    };
    windows.create(&window(&o, one_off)).await.expect("one-off");
    let planner = WindowPlanner::new(windows, service, Arc::new(clock.clone()));
    assert_eq!(
        planner.plan_once().await.expect("plan").created,
        0,
        "today follows the one-off window"
    );
    clock.set(utc("2030-01-07T15:30:00Z"));
    let r = planner.plan_once().await.expect("plan");
    assert_eq!(r.created, 1);
    let page = calls
        .list(
            &o,
            &callcat_core::ListQuery::new(callcat_core::ListView::Upcoming, 10),
        )
        .await
        .expect("list");
    assert!(matches!(page.items.as_slice(), [c] if c.scheduled_for == utc("2030-01-07T15:30:00Z")));
}

#[tokio::test]
async fn a_failing_window_never_stops_the_planner_for_other_owners() {
    let clock = ManualClock::new(utc("2030-01-07T08:30:00Z")); // Monday 09:30 Berlin
    let calls = Arc::new(InMemoryCallStore::new());
    let windows = Arc::new(InMemoryWindowStore::new());
    let service = CallService::new(calls.clone(), Arc::new(clock.clone()), Wakeup::new());

    // Stored directly, bypassing validation: instants at the edge of what chrono
    // can represent (their local date in Tokyo / New York overflows).
    let edge = owner("a-edge");
    for (start, end, tz) in [
        (
            8_210_266_873_199_999,
            8_210_266_876_799_999,
            callcat_core::chrono_tz::Asia::Tokyo,
        ),
        (
            -8_334_601_228_800_000,
            -8_334_601_225_200_000,
            callcat_core::chrono_tz::America::New_York,
        ),
    ] {
        let schedule = WindowSchedule::OneOff {
            start_at: DateTime::from_timestamp_millis(start).expect("representable"),
            end_at: DateTime::from_timestamp_millis(end).expect("representable"),
            timezone: tz,
        };
        windows.insert_unchecked(window(&edge, schedule));
    }
    // Open now, but its call fails the metadata limit once the planner adds
    // `callcat_window_id`.
    let full = owner("b-full");
    let mut w = window(&full, berlin(&[Weekday::Mon], (9, 0), (10, 0)));
    let limit = callcat_core::Limits::default().max_metadata_bytes;
    // {"pad":"…"} is the padding plus 10 bytes: exactly at the limit.
    w.template
        .metadata
        .insert("pad".into(), "x".repeat(limit - 10).into());
    w.template
        .validate(&callcat_core::Limits::default())
        .expect("valid on its own");
    windows.create(&w).await.expect("full window");
    // A healthy owner after both.
    let good = owner("z-good");
    windows
        .create(&window(&good, berlin(&[Weekday::Mon], (9, 0), (10, 0))))
        .await
        .expect("good window");

    let planner = WindowPlanner::new(windows, service, Arc::new(clock.clone()));
    let r = planner
        .plan_once()
        .await
        .expect("a pass never fails for one owner");
    assert_eq!((r.windows, r.created, r.failed), (4, 1, 1), "{r:?}");
    let page = calls
        .list(
            &good,
            &callcat_core::ListQuery::new(callcat_core::ListView::Upcoming, 10),
        )
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1, "the healthy owner got its call");
}
