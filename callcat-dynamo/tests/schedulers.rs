//! Exactly-once with several schedulers on DynamoDB: 4 `Scheduler` run loops, each
//! over its own client, share one set of tables holding 400 due calls. Every dial
//! is recorded outside the store (a log in front of the simulator); every call must
//! be dialed exactly once.
//!
//! Why a global cap of 64 and a stand-in for webhooks, not an unlimited cap: each
//! scheduler round counts the active calls against the global cap by listing them
//! (up to 1,000 full records from every shard). With an unlimited cap every dialed
//! call stays Ringing, so each round re-reads up to 4,000 items; moto (the emulator
//! this test was written on) serves one request at a time and grew to gigabytes of
//! memory doing it (several minutes for a few hundred dials). So the simulator's `Ended` events are applied to the
//! store (through the core's `apply_provider_event`, as webhook ingestion does):
//! calls complete, the active set stays small and the cap's listing cheap. The cap
//! still never decides which scheduler dials a call, so the test measures claim
//! exclusivity.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callcat_core::{
    Applied, Call, CallId, CallStatus, CallStore, CallStoreExt, CallTemplate, DialAccepted, Limits,
    NewCall, Owner, PhoneNumber, ProviderCall, ProviderCapabilities, ProviderEvent,
    ProviderEventKind, Result, Scheduler, Simulator, SimulatorConfig, SystemClock,
    TelephonyProvider, apply_provider_event,
};
use callcat_dynamo::DynamoStores;
use chrono::Utc;
use futures::StreamExt;

/// 400, not 2,000: sized for moto, the emulator this test first ran on, which serves
/// one request at a time and grows in memory with every request (about 0.5 MB each):
/// there 400 calls took about 100 s to 190 s on a loaded 2-core machine (some 4,500
/// requests) and 2,000 were not done after 9½ minutes. On DynamoDB Local, which
/// `scripts/test` now starts, 400 calls take about 45 s.
const CALLS: usize = 400;
const SCHEDULERS: usize = 4;
/// Owners the calls are spread over: a scheduler dials one owner's calls of a
/// batch one after another, different owners concurrently.
const OWNERS: usize = 8;
/// Calls claimed per round.
const BATCH: u32 = 32;
/// Calls dialing or on the line at once, over all schedulers.
const GLOBAL_CAP: usize = 64;
/// Bound for the schedulers to dial everything: far above the time the run takes
/// (see the test's output), so reaching it means calls were left undialed.
const RUN_DEADLINE: Duration = Duration::from_secs(600);

/// Every dial request, by which scheduler sent it, in front of one shared simulator
/// (one provider, as in production).
type DialLog = Arc<Mutex<Vec<(CallId, usize)>>>;

struct LoggingProvider {
    inner: Simulator,
    log: DialLog,
    scheduler: usize,
}

#[async_trait::async_trait]
impl TelephonyProvider for LoggingProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> ProviderCapabilities {
        self.inner.capabilities()
    }
    async fn place_call(&self, call: &Call) -> Result<DialAccepted> {
        self.log
            .lock()
            .expect("dial log")
            .push((call.id, self.scheduler));
        self.inner.place_call(call).await
    }
    async fn fetch_call(&self, provider_call_id: &str) -> Result<ProviderCall> {
        self.inner.fetch_call(provider_call_id).await
    }
    async fn end_call(&self, provider_call_id: &str) -> Result<()> {
        self.inner.end_call(provider_call_id).await
    }
    async fn find_by_call_id(&self, call_id: CallId) -> Result<Option<ProviderCall>> {
        self.inner.find_by_call_id(call_id).await
    }
}

/// Applies every `Ended` event the simulator emits to the store, 8 at a time.
async fn complete_ended_calls(
    events: tokio::sync::mpsc::Receiver<ProviderEvent>,
    store: Arc<callcat_dynamo::DynamoCallStore>,
) {
    futures::stream::unfold(
        events,
        |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
    )
    .filter(|e| std::future::ready(e.kind == ProviderEventKind::Ended))
    .for_each_concurrent(8, |e| {
        let store = store.clone();
        async move {
            let id = e.call.call_id.expect("simulator events carry our call id");
            store
                .update_with(id, 8, |c| {
                    Ok(match apply_provider_event(c, &e, Utc::now(), 0)? {
                        Applied::Changed(next) => Some(*next),
                        Applied::Unchanged(_) => None,
                    })
                })
                .await
                .expect("apply the end of a call");
        }
    })
    .await;
}

/// A client of its own over the same tables, as another process would have.
fn own_client(endpoint: &str, stores: &DynamoStores) -> DynamoStores {
    DynamoStores::builder()
        .region("us-east-1")
        .endpoint_url(endpoint)
        .credentials("testing", "testing", None)
        .tables(stores.tables().clone())
        .shards(stores.shards())
        // The emulator handles one request at a time: under this load a request can
        // queue far longer than the default operation timeout.
        .operation_timeout(RUN_DEADLINE)
        .build()
        .expect("valid test configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_schedulers_dial_every_call_exactly_once() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let Some(s) = common::test_stores().await else {
        return;
    };
    let monitor = own_client(&endpoint, &s.stores);
    let store: Arc<dyn CallStore> = monitor.calls.clone();
    let started = Instant::now();

    let now = Utc::now();
    let phone = PhoneNumber::parse("+14155550123").expect("valid number");
    let calls: Vec<Call> = (0..CALLS)
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
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let created_in = started.elapsed();
    eprintln!("created {CALLS} calls in {created_in:?}");

    let simulator = Simulator::new(Arc::new(SystemClock), SimulatorConfig::instant());
    let log: DialLog = Arc::default();
    // Webhooks stand-in: every call ends the instant it is dialed; apply the end.
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(1024);
    let pump = tokio::spawn(simulator.clone().run_events(events_tx));
    let completer = tokio::spawn(complete_ended_calls(events_rx, monitor.calls.clone()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run_start = Instant::now();
    let clients: Vec<DynamoStores> = (0..SCHEDULERS)
        .map(|_| own_client(&endpoint, &s.stores))
        .collect();
    let runs: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(n, client)| {
            let scheduler = Scheduler::builder()
                .store(client.calls.clone())
                .provider(Arc::new(LoggingProvider {
                    inner: simulator.clone(),
                    log: log.clone(),
                    scheduler: n,
                }))
                .clock(Arc::new(SystemClock))
                .worker(format!("scheduler-{n}"))
                .owner_cap(None)
                .global_cap(GLOBAL_CAP)
                .batch(BATCH)
                // On the slow emulator a claimed call may wait long for its dial; the
                // lease must not lapse (recovery is not what this test is about).
                .lease(RUN_DEADLINE)
                .build()
                .expect("scheduler");
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                scheduler
                    .run(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            })
        })
        .collect();

    // Done when nothing is claimable any more: every call was dialed by someone.
    let drained = tokio::time::timeout(RUN_DEADLINE, async {
        while store.next_due_at().await.expect("next_due_at").is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let _ = stop.send(true);
    for r in runs {
        r.await.expect("scheduler task").expect("scheduler run");
    }
    let ran_in = run_start.elapsed();
    pump.abort();
    completer.abort();
    assert!(
        drained.is_ok(),
        "calls still claimable after {RUN_DEADLINE:?} ({} dials)",
        log.lock().expect("dial log").len()
    );

    let log = log.lock().expect("dial log").clone();
    let mut per_scheduler: HashMap<usize, usize> = HashMap::new();
    for (_, n) in &log {
        *per_scheduler.entry(*n).or_insert(0) += 1;
    }
    let mut counts: Vec<_> = per_scheduler.iter().collect();
    counts.sort();
    let requests: Vec<u64> = clients
        .iter()
        .map(|c| c.calls.metrics_snapshot().requests)
        .collect();
    eprintln!(
        "{SCHEDULERS} schedulers dialed {CALLS} calls in {ran_in:?}; dials per scheduler: {counts:?}; \
         requests per scheduler: {requests:?}"
    );
    let dialed: HashSet<CallId> = log.iter().map(|(id, _)| *id).collect();
    assert_eq!(dialed.len(), log.len(), "a call was dialed more than once");
    assert_eq!(log.len(), CALLS, "dial log entries");
    assert_eq!(dialed, created, "the dialed calls are not the created ones");
    assert_eq!(
        simulator.total_dials(),
        CALLS,
        "dials the simulator received"
    );
    assert!(
        per_scheduler.len() >= 2,
        "only {per_scheduler:?} dialed: the schedulers did not compete, so exclusivity was not tested"
    );

    // The store agrees: every call was accepted once and is no longer claimable.
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
        .buffer_unordered(8)
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
