//! A scheduler in one process, asleep for a far-future call with a one-hour idle
//! bound, dials a call that ANOTHER process (this test, over its own pool, with no
//! shared `Wakeup`) creates for now: the only way it can do so in time is the
//! `callcat_due` NOTIFY relayed by its store's wake-up listener.
//!
//! The test binary re-runs itself as the scheduler process (`scheduler_process`,
//! ignored, does nothing unless `CALLCAT_XW_SCHEMA` is set). To see the test fail,
//! run it with `CALLCAT_XW_NO_LISTENER=1`: the worker then starts no listener and
//! the test times out after [`DIAL_BOUND`].

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callcat_core::{
    ActiveScope, Call, CallId, CallService, CallStore, CallTemplate, Created, ListQuery, NewCall,
    Owner, Page, PhoneNumber, Result, Scheduler, Simulator, SimulatorConfig, StoreCapabilities,
    SystemClock, TenantId, Wakeup, WorkerId,
    chrono::{DateTime, TimeDelta, Utc},
};
use callcat_postgres::{PostgresOptions, PostgresStore};
use common::workers::{DialLog, LoggingProvider, ScratchDir, Worker, announce_ready};
use tokio::sync::watch;

const SCHEMA_VAR: &str = "CALLCAT_XW_SCHEMA";
const LOG_VAR: &str = "CALLCAT_XW_DIAL_LOG";
/// Set (to anything) in the environment of a run to make the worker start no
/// wake-up listener: the test must then fail.
const NO_LISTENER_VAR: &str = "CALLCAT_XW_NO_LISTENER";

/// The scheduler's longest sleep: only a wake-up can make it dial sooner.
const MAX_IDLE: Duration = Duration::from_secs(3600);
/// How long the test waits for the dial: generous for a loaded machine, and far
/// below [`MAX_IDLE`]. Not a speed assertion.
const DIAL_BOUND: Duration = Duration::from_secs(60);
const START_PATIENCE: Duration = Duration::from_secs(60);

fn call_for() -> NewCall {
    NewCall::new(CallTemplate::new(
        "Ada",
        PhoneNumber::parse("+14155550123").expect("valid number"),
        "Checkup",
        "Ask how things are going.",
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_created_in_another_process_wakes_a_sleeping_scheduler() {
    let db = db_or_skip!();
    let owner = Owner::new("t", "u");
    // This process's own service: its own pool and a Wakeup nobody else listens to.
    let service = CallService::new(
        Arc::new(db.store.calls()),
        Arc::new(SystemClock),
        Wakeup::new(),
    );
    // What the scheduler sleeps for: a call tomorrow.
    let later = service
        .create(&owner, call_for().at(Utc::now() + TimeDelta::days(1)))
        .await
        .expect("create tomorrow's call");

    let scratch = ScratchDir::new("callcat-cross-process-wakeup");
    let log = scratch.0.join("dials.log");
    let mut worker = Worker::spawn(
        "scheduler",
        "scheduler_process",
        &[
            (common::URL_VAR, db.url.clone()),
            (SCHEMA_VAR, db.schema.clone()),
            (LOG_VAR, log.display().to_string()),
        ],
    );
    // Ready = listening, and the scheduler has looked at the store and gone to sleep.
    worker.wait_ready(START_PATIENCE);

    let created_at = Instant::now();
    let now = service
        .create(&owner, call_for())
        .await
        .expect("create a call for now");
    let Created::New(now) = now else {
        panic!("a fresh call")
    };
    let status = worker.wait_until(created_at + DIAL_BOUND).await;
    let took = created_at.elapsed();
    match status {
        Some(s) => assert!(s.success(), "the scheduler process failed: {s}"),
        None => panic!(
            "the call was not dialed within {DIAL_BOUND:?} (the scheduler sleeps up to \
             {MAX_IDLE:?}): the wake-up did not reach the other process"
        ),
    }
    let lines = DialLog::read(&log);
    eprintln!("dialed {took:?} after it was created in this process");
    let dialed: Vec<CallId> = lines.iter().map(|(id, _)| *id).collect();
    assert_eq!(dialed, vec![now.id], "exactly the new call, once");
    let later_now = db
        .store
        .calls()
        .get(later.call().id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(later_now.attempts, 0, "tomorrow's call is left alone");
}

/// The scheduler process (run only by the test above, through `CALLCAT_XW_SCHEMA`):
/// relays NOTIFY into its scheduler's Wakeup, reports ready once the scheduler has
/// gone to sleep, and exits after its first dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process for a_call_created_in_another_process_wakes_a_sleeping_scheduler"]
async fn scheduler_process() {
    let Some(schema) = common::workers::worker_env(SCHEMA_VAR) else {
        return;
    };
    let url = common::workers::required_env(common::URL_VAR);
    let log = PathBuf::from(common::workers::required_env(LOG_VAR));
    let listen = common::workers::worker_env(NO_LISTENER_VAR).is_none();

    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions::new().schema(&schema).max_connections(4),
    )
    .await
    .expect("connect");
    let wakeup = Wakeup::new();
    let _listener = if listen {
        Some(
            store
                .wakeup_listener(wakeup.clone())
                .await
                .expect("start the wake-up listener"),
        )
    } else {
        eprintln!("{NO_LISTENER_VAR} is set: no wake-up listener (the test should time out)");
        None
    };
    let (looked, mut looked_rx) = watch::channel(0u64);
    let calls = Arc::new(Observed {
        inner: store.calls(),
        looked,
    });
    let provider = Arc::new(LoggingProvider::new(
        Simulator::new(Arc::new(SystemClock), SimulatorConfig::instant()),
        DialLog::open(&log, "scheduler").expect("open the dial log"),
    ));
    let scheduler = Scheduler::builder()
        .store(calls)
        .provider(provider.clone())
        .clock(Arc::new(SystemClock))
        .wakeup(wakeup)
        .max_idle(MAX_IDLE)
        .owner_cap(None)
        .build()
        .expect("scheduler");

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
    // The scheduler asks next_due_at() right before it sleeps (its wake-up
    // subscription is older, so no wake after this point is lost).
    looked_rx
        .wait_for(|n| *n >= 1)
        .await
        .expect("the scheduler looked at the store");
    announce_ready();

    let dialed = tokio::time::timeout(DIAL_BOUND * 2, provider.wait_for_dials(1)).await;
    let _ = stop.send(());
    run.await.expect("scheduler task").expect("scheduler run");
    assert!(dialed.is_ok(), "nothing dialed within {:?}", DIAL_BOUND * 2);
}

/// The store, telling when `next_due_at` was answered (the scheduler's last step
/// before it sleeps).
struct Observed {
    inner: callcat_postgres::PostgresCallStore,
    looked: watch::Sender<u64>,
}

#[async_trait::async_trait]
impl CallStore for Observed {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn create(&self, call: &Call) -> Result<Created> {
        self.inner.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>> {
        self.inner.get(id).await
    }
    async fn update(&self, call: &Call) -> Result<Call> {
        self.inner.update(call).await
    }
    async fn delete_if_scheduled(&self, owner: &Owner, id: CallId) -> Result<()> {
        self.inner.delete_if_scheduled(owner, id).await
    }
    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page<Call>> {
        self.inner.list(owner, query).await
    }
    async fn find_by_provider_call_id(&self, provider_call_id: &str) -> Result<Option<Call>> {
        self.inner.find_by_provider_call_id(provider_call_id).await
    }
    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        self.inner.list_active(scope, limit, cursor).await
    }
    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        self.inner
            .list_tenant_range(tenant, from, to, limit, cursor)
            .await
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Call>> {
        self.inner.claim_due(now, limit, worker, lease_until).await
    }
    // Forwarded so the scheduler counts as it would on PostgreSQL itself.
    async fn count_active(&self, scope: &ActiveScope) -> Result<u64> {
        self.inner.count_active(scope).await
    }
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let at = self.inner.next_due_at().await;
        self.looked.send_modify(|n| *n += 1);
        at
    }
}
