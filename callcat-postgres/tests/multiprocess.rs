//! Exactly-once across OS processes: 4 processes, each with its own pool and its
//! own `Scheduler` run loop, share one schema holding 5,000 due calls. Every dial
//! any of them sends is appended to a dial log file outside the store; every call
//! must appear in it exactly once.
//!
//! The test binary re-runs itself as the workers (`worker_process`, ignored, does
//! nothing unless `CALLCAT_MP_SCHEMA` is set).

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callcat_core::{
    CallId, CallStatus, CallStore, CallTemplate, Limits, NewCall, Owner, PhoneNumber, Scheduler,
    Simulator, SimulatorConfig, SystemClock, chrono::Utc,
};
use callcat_postgres::{PostgresOptions, PostgresStore};
use common::workers::{DialLog, LoggingProvider, ScratchDir, Worker, ready_then_wait_for_go};
use futures::StreamExt;

const CALLS: usize = 5_000;
const PROCESSES: usize = 4;
/// Owners the calls are spread over (a scheduler dials one owner's calls of a
/// batch one after another, different owners concurrently).
const OWNERS: usize = 200;

const SCHEMA_VAR: &str = "CALLCAT_MP_SCHEMA";
const WORKER_VAR: &str = "CALLCAT_MP_WORKER";
const LOG_VAR: &str = "CALLCAT_MP_DIAL_LOG";

/// Bound for a worker to connect and report ready.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// Bound for all workers to finish: far above the time the run takes (about
/// 10 s when idle, 80 s on a loaded 2-core machine in a debug build), so reaching
/// it means calls were left undialed (the workers then fail loudly).
const RUN_DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_dial_every_call_exactly_once() {
    let db = db_or_skip!();
    let store = db.store.calls();
    let started = Instant::now();

    // 5,000 calls, all due now.
    let now = Utc::now();
    let phone = PhoneNumber::parse("+14155550123").expect("valid number");
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let owner = Owner::new(format!("t{}", i % 10), format!("u{}", i % OWNERS));
            NewCall::new(CallTemplate::new(
                "Ada",
                phone.clone(),
                "Checkup",
                "Ask how things are going.",
            ))
            .at(now)
            .into_call(owner, now, &Limits::default())
            .expect("valid call")
        })
        .collect();
    let created: HashSet<CallId> = calls.iter().map(|c| c.id).collect();
    futures::stream::iter(calls)
        .map(|c| {
            let store = store.clone();
            async move { store.create(&c).await.expect("create") }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let created_in = started.elapsed();

    // 4 worker processes; all connected before any starts claiming.
    let scratch = ScratchDir::new("callcat-multiprocess");
    let log = scratch.0.join("dials.log");
    let mut workers: Vec<Worker> = (0..PROCESSES)
        .map(|w| {
            Worker::spawn(
                &format!("worker-{w}"),
                "worker_process",
                &[
                    (common::URL_VAR, db.url.clone()),
                    (SCHEMA_VAR, db.schema.clone()),
                    (WORKER_VAR, format!("worker-{w}")),
                    (LOG_VAR, log.display().to_string()),
                ],
            )
        })
        .collect();
    for w in &mut workers {
        w.wait_ready(START_PATIENCE);
    }
    let run_start = Instant::now();
    for w in &mut workers {
        w.go();
    }
    let deadline = run_start + RUN_DEADLINE;
    for w in &mut workers {
        let status = w.wait_until(deadline).await;
        match status {
            Some(s) => assert!(s.success(), "{} failed: {s}", w.name),
            None => panic!("{} still running after {RUN_DEADLINE:?}; killed", w.name),
        }
    }
    let ran_in = run_start.elapsed();

    // The dial log: every created call exactly once.
    let lines = DialLog::read(&log);
    let per_worker = DialLog::per_worker(&lines);
    let mut counts: Vec<_> = per_worker.iter().collect();
    counts.sort();
    eprintln!(
        "created {CALLS} calls in {created_in:?}; {PROCESSES} processes dialed them in {ran_in:?}; dials per process: {counts:?}"
    );
    let dialed: HashSet<CallId> = lines.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        dialed.len(),
        lines.len(),
        "a call was dialed more than once"
    );
    assert_eq!(lines.len(), CALLS, "dial log lines");
    assert_eq!(dialed, created, "the dialed calls are not the created ones");
    assert!(
        per_worker.len() >= 2,
        "only {per_worker:?} dialed: the processes did not compete, so exclusivity was not tested"
    );

    // The store agrees: nothing claimable is left, every call was accepted once.
    assert_eq!(store.next_due_at().await.expect("next_due_at"), None);
    let bad: Vec<String> = futures::stream::iter(created.iter().copied())
        .map(|id| {
            let store = store.clone();
            async move {
                let c = store.get(id).await.expect("get").expect("call exists");
                let ok = matches!(c.status, CallStatus::Ringing | CallStatus::Completed)
                    && c.attempts == 1
                    && c.provider_call_id.is_some()
                    && c.lease.is_none();
                (!ok).then(|| {
                    format!(
                        "{id}: {:?} attempts {} provider id {:?} last error {:?}",
                        c.status, c.attempts, c.provider_call_id, c.last_error
                    )
                })
            }
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    assert!(
        bad.is_empty(),
        "{} calls not dialed cleanly, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

/// One worker process (run only by the test above, through `CALLCAT_MP_SCHEMA`):
/// its own pool and scheduler; exits once no call is claimable any more and its
/// in-flight dials are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process for four_processes_dial_every_call_exactly_once"]
async fn worker_process() {
    let Some(schema) = common::workers::worker_env(SCHEMA_VAR) else {
        return;
    };
    let url = common::workers::required_env(common::URL_VAR);
    let name = common::workers::required_env(WORKER_VAR);
    let log = PathBuf::from(common::workers::required_env(LOG_VAR));

    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions::new()
            .schema(&schema)
            .max_connections(8)
            .acquire_timeout(RUN_DEADLINE),
    )
    .await
    .expect("connect");
    let calls: Arc<dyn CallStore> = Arc::new(store.calls());
    // Each process has a simulator of its own, which cannot see the others' dials:
    // it must not claim to look calls up by our id, or a recovered lease would be
    // "reconciled" against the wrong simulator. (At-most-once recovery instead.)
    let simulator = Simulator::new(
        Arc::new(SystemClock),
        SimulatorConfig {
            lookup_by_call_id: false,
            ..SimulatorConfig::instant()
        },
    );
    let provider = Arc::new(LoggingProvider::new(
        simulator,
        DialLog::open(&log, &name).expect("open the dial log"),
    ));
    let scheduler = Scheduler::builder()
        .store(calls.clone())
        .provider(provider.clone())
        .clock(Arc::new(SystemClock))
        .worker(name.clone())
        .owner_cap(None)
        .global_cap(1_000_000)
        .batch(50)
        // With no effective cap a process claims far more than it can dial at once;
        // on a loaded machine that backlog must not outlive the lease, or another
        // process recovers the call (at-most-once: it fails it). Recovery is not what
        // this test is about (the conformance suite covers lapsed leases).
        .lease(RUN_DEADLINE)
        .build()
        .expect("scheduler");

    ready_then_wait_for_go().await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn({
        let scheduler = scheduler.clone();
        async move {
            scheduler
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    // Done when nothing is claimable any more (no Scheduled, RetryPending or
    // Dispatching call in any process): every call has been dialed by someone.
    let drained = tokio::time::timeout(RUN_DEADLINE, async {
        while calls.next_due_at().await.expect("next_due_at").is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _ = stop.send(());
    run.await.expect("scheduler task").expect("scheduler run");
    assert!(
        drained.is_ok(),
        "{name}: calls still claimable after {RUN_DEADLINE:?} ({} dials here)",
        provider.dials()
    );
    eprintln!("{name}: done, {} dials", provider.dials());
}
