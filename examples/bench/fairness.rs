//! `fairness`: owner A has 20,000 calls due now and one of them on the line (the
//! owner cap is 1, so the rest wait); then owner B creates one call due now.
//! Reports B's due-to-dial lag and the store operations per second (and CPU) that
//! A's waiting backlog costs while A's call is in flight. Runs twice in one
//! process: with the capped claim (`CallStore::claim_due_capped`: owners at their
//! cap are skipped by the claim) and, for comparison, with the claim-then-defer
//! path the scheduler used before (every waiting call claimed, found over the cap
//! and deferred by 2 s, again and again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use callcat::chrono::Utc;
use callcat::{
    CallService, CallStore, Created, Owner, Scheduler, Simulator, SimulatorConfig, SystemClock,
    UpdateBus, Wakeup,
};
use futures::StreamExt;
use serde_json::json;

use crate::common::{
    Backend, CountingStore, Env, Instrumented, Opts, Res, call_request, cpu_seconds, emit, fail,
    new_call, note, r3,
};
use crate::seed::seed_calls;

pub async fn run(backend: Backend, opts: &Opts) -> Res<()> {
    if backend == Backend::Dynamo {
        return Err(fail("fairness runs on --backend memory or postgres"));
    }
    let n = opts.u64("calls", 20_000)?;
    let window = Duration::from_secs(opts.u64("window-secs", 10)?);
    let patience = Duration::from_secs(opts.u64("patience-secs", 300)?);
    for capped in [true, false] {
        run_one(backend, n, window, patience, capped).await?;
    }
    Ok(())
}

async fn run_one(
    backend: Backend,
    n: u64,
    window: Duration,
    patience: Duration,
    capped: bool,
) -> Res<()> {
    let mode = if capped {
        "capped-claim"
    } else {
        "claim-then-defer"
    };
    let env = Env::open(backend, "fairness").await?;
    let a = Owner::new("tenant-a", "user-a");
    let b = Owner::new("tenant-b", "user-b");
    let due = Utc::now();
    note(format!(
        "fairness/{}/{mode}: storing {n} calls of owner A due now",
        backend.name()
    ));
    match &env.pg {
        // One owner: `seed_calls` gives every row `tenant-0`/`user-0`.
        Some(pg) => seed_calls(pg, n, due, 0, 1).await?,
        None => {
            let store = env.stores.calls.clone();
            let mut creates = futures::stream::iter((0..n).map(|i| {
                let store = store.clone();
                let a = a.clone();
                async move {
                    match store.create(&new_call(i, &a, due, due)?).await? {
                        Created::New(_) => Res::Ok(()),
                        Created::Existing(_) => Err(fail("a seeded call already existed")),
                    }
                }
            }))
            .buffer_unordered(16);
            while let Some(r) = creates.next().await {
                r?;
            }
        }
    }
    let a = match &env.pg {
        Some(_) => Owner::new("tenant-0", "user-0"),
        None => a,
    };

    let calls = if capped {
        CountingStore::new(env.stores.calls.clone())
    } else {
        CountingStore::without_capped_claim(env.stores.calls.clone())
    };
    let clock = Arc::new(SystemClock);
    // A's call stays on the line for the whole measurement (no events are fed
    // back, so it stays Ringing: active, holding A at its cap).
    let sim = Simulator::new(clock.clone(), SimulatorConfig::default());
    let provider = Instrumented::new(Arc::new(sim));
    let bus = UpdateBus::new(8192);
    let wakeup = Wakeup::new();
    let scheduler = Scheduler::builder()
        .store(calls.clone())
        .provider(provider.clone())
        .clock(clock.clone())
        .wakeup(wakeup.clone())
        .bus(bus.clone())
        .worker("bench-fairness")
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sched = scheduler.clone();
    let running = tokio::spawn(async move {
        sched
            .run(async {
                let _ = stop_rx.await;
            })
            .await
    });
    if provider.wait_for_dials(1, Duration::from_secs(60)).await < 1 {
        return Err(fail("owner A's first call was not dialed within 60 s"));
    }
    // Let the first passes settle, then watch the waiting backlog.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ops0, cpu0, t) = (calls.total(), cpu_seconds()?, Instant::now());
    tokio::time::sleep(window).await;
    let secs = t.elapsed().as_secs_f64();
    let waiting_ops = calls.total() - ops0;
    let waiting_cpu = cpu_seconds()? - cpu0;
    let waiting_by_op = calls.snapshot();

    // Owner B creates one call, due now.
    let service = CallService::new(calls.clone(), clock.clone(), wakeup).with_bus(bus);
    let theirs = service
        .create(&b, call_request(0, Utc::now())?)
        .await?
        .into_call();
    let deadline = Instant::now() + patience;
    let b_dial = loop {
        if let Some((_, at)) = provider
            .dials()
            .into_iter()
            .find(|(id, _)| *id == theirs.id)
        {
            break Some(at);
        }
        if Instant::now() >= deadline {
            break None;
        }
        provider
            .wait_for_dials(provider.dial_count() + 1, Duration::from_millis(200))
            .await;
    };
    let b_lag_ms = b_dial
        .map(|at| (at - theirs.scheduled_for).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    let a_dials = provider
        .dials()
        .iter()
        .filter(|(id, _)| *id != theirs.id)
        .count();
    let _ = stop_tx.send(());
    running.await??;
    let a_active = calls
        .count_active(&callcat::ActiveScope::Owner(a.clone()))
        .await?;

    emit(
        "fairness",
        backend.name(),
        json!({
            "mode": mode,
            "owner_a_due_calls": n,
            "window_s": window.as_secs(),
            "scheduler": {
                "owner_cap": scheduler.config().owner_cap,
                "global_cap": scheduler.config().global_cap,
                "batch": scheduler.config().batch,
                "owner_busy_delay_s": scheduler.config().owner_busy_delay.as_secs(),
            },
            "clock": "SystemClock",
        }),
        json!({
            "b_due_to_dial_lag_ms": b_lag_ms.map(r3),
            "b_dialed": b_dial.is_some(),
            "waiting_store_ops_per_s": r3(waiting_ops as f64 / secs),
            "waiting_cpu_share_of_a_core": r3(waiting_cpu / secs),
            "store_ops_since_start": waiting_by_op,
            "owner_a_dials": a_dials,
            "owner_a_active_at_end": a_active,
        }),
    );
    env.close().await
}
