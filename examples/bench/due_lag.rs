//! `due-lag`: how late calls are dialed. 2,000 calls due at a steady 33 calls/s,
//! the real clock; lag = when the dial request reached the provider minus the
//! call's `scheduled_for`.

use std::collections::HashMap;

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

use callcat::chrono::{TimeDelta, Utc};
use callcat::{
    CallService, CallStatus, CallStore, EventIngestor, ProviderEventKind, Scheduler, Simulator,
    SimulatorConfig, SystemClock, UpdateBus, Wakeup,
};
use serde_json::json;

use crate::common::{
    Backend, CountingStore, Env, Instrumented, Opts, Res, call_request, commit_probe, emit, note,
    owner, pump_events, r3, status_counts, summary,
};

pub async fn run(backend: Backend, opts: &Opts) -> Res<()> {
    let n = opts.u64("calls", 2_000)?;
    let rate = opts.f64("rate", 33.0)?;
    // The emulator serves one request at a time: 2,000 creates (each waking the
    // scheduler, which then queries every shard) need minutes there.
    let default_lead = if backend == Backend::Dynamo {
        180_000
    } else {
        5_000
    };
    let lead_ms = opts.u64("lead-ms", default_lead)?;
    let owners = opts.u64("owners", 200)?;
    let env = Env::open(backend, "duelag").await?;
    let calls = CountingStore::new(env.stores.calls.clone());

    let clock = Arc::new(SystemClock);
    let sim = Simulator::new(clock.clone(), SimulatorConfig::instant());
    let provider = Instrumented::new(Arc::new(sim.clone()));
    let bus = UpdateBus::new(8192);
    let sched_wakeup = Wakeup::new();
    // PostgreSQL: the scheduler hears of new calls only through LISTEN/NOTIFY, as
    // it would in another process. Elsewhere the in-process signal is shared.
    let (service_wakeup, _listener) = match &env.pg {
        Some(pg) => (
            Wakeup::new(),
            Some(pg.wakeup_listener(sched_wakeup.clone()).await?),
        ),
        None => (sched_wakeup.clone(), None),
    };
    let scheduler = Scheduler::builder()
        .store(calls.clone())
        .provider(provider.clone())
        .clock(clock.clone())
        .wakeup(sched_wakeup.clone())
        .bus(bus.clone())
        .worker("bench-due-lag")
        .build()?;
    let ingestor = Arc::new(
        EventIngestor::new(
            calls.clone(),
            env.stores.transcripts.clone(),
            bus.clone(),
            clock.clone(),
        )
        .with_wakeup(sched_wakeup.clone()),
    );
    // Calls end the instant they are dialed (so the default global cap of 20 never
    // binds); the provider's `call_ended` event completes them, as a webhook would.
    let (pump, _) = pump_events(
        sim.clone(),
        ingestor,
        |k| matches!(k, ProviderEventKind::Ended),
        16,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sched = scheduler.clone();
    let running = tokio::spawn(async move {
        sched
            .run(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let service = CallService::new(calls.clone(), clock.clone(), service_wakeup).with_bus(bus);
    let spacing_us = (1_000_000.0 / rate) as i64;
    let dynamo0 = env
        .dynamo
        .as_ref()
        .map(|d| (d.calls.metrics_snapshot(), d.transcripts.metrics_snapshot()))
        .unwrap_or_default();
    let t0 = Utc::now();
    let first_due = t0 + TimeDelta::milliseconds(lead_ms as i64);
    note(format!(
        "due-lag/{}: creating {n} calls due from {lead_ms} ms ahead at {rate}/s",
        backend.name()
    ));
    let mut due = HashMap::with_capacity(n as usize);
    let mut created_late = 0u64;
    let mut ids = Vec::with_capacity(n as usize);
    // Eight creates in flight at a time, as several API clients would send them.
    let mut creates = futures::stream::iter((0..n).map(|i| {
        let service = &service;
        async move {
            let at = first_due + TimeDelta::microseconds(spacing_us * i as i64);
            let created = service
                .create(&owner(i, owners), call_request(i, at)?)
                .await?
                .into_call();
            Res::Ok(created)
        }
    }))
    .buffered(8);
    while let Some(created) = creates.next().await {
        let created = created?;
        if Utc::now() > created.scheduled_for {
            created_late += 1;
        }
        due.insert(created.id, created.scheduled_for);
        ids.push(created.id);
    }
    drop(creates);
    let created_in = (Utc::now() - t0).num_milliseconds();
    let ops_before = calls.total();
    let last_due = first_due + TimeDelta::microseconds(spacing_us * n as i64);
    let wait = (last_due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(60);
    let dialed = provider.wait_for_dials(n as usize, wait).await;
    // Let the last events land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(());
    running.await??;

    // (seconds after the first due instant, lag in ms) per dial.
    let by_time: Vec<(f64, f64)> = provider
        .dials()
        .iter()
        .filter_map(|(id, at)| {
            let d = due.get(id)?;
            let lag = (*at - *d).num_microseconds()? as f64 / 1000.0;
            let offset = (*d - first_due).num_milliseconds() as f64 / 1000.0;
            Some((offset, lag))
        })
        .collect();
    let mut lags: Vec<f64> = by_time.iter().map(|(_, lag)| *lag).collect();
    // Whether the tail is one stall (late dials bunched in time) or spread out.
    let late: Vec<&(f64, f64)> = by_time.iter().filter(|(_, lag)| *lag > 50.0).collect();
    let stalls = json!({
        "dials_over_50ms": late.len(),
        "first_s": late.iter().map(|(t, _)| *t).reduce(f64::min).map(r3),
        "last_s": late.iter().map(|(t, _)| *t).reduce(f64::max).map(r3),
    });
    let commit = match &env.pg {
        Some(pg) => commit_probe(pg).await?,
        None => serde_json::Value::Null,
    };
    let dynamo = match &env.dynamo {
        Some(d) => {
            let used = d.calls.metrics_snapshot().since(&dynamo0.0);
            let used_tr = d.transcripts.metrics_snapshot().since(&dynamo0.1);
            let requests = used.requests + used_tr.requests;
            let secs = (Utc::now() - t0).num_milliseconds() as f64 / 1000.0;
            // One client, one request at a time: what the emulator takes per request.
            let mut probe = Vec::with_capacity(100);
            for _ in 0..100 {
                let t = std::time::Instant::now();
                calls.get(callcat::CallId::new()).await?;
                probe.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            json!({
                "requests": requests,
                "requests_per_call": r3(requests as f64 / n.max(1) as f64),
                "requests_per_s": r3(requests as f64 / secs),
                "conditional_failures": used.conditional_failures,
                "emulator_get_item_ms": summary(&mut probe),
            })
        }
        None => serde_json::Value::Null,
    };
    let statuses = status_counts(calls.as_ref(), &ids).await?;
    let completed = statuses
        .get(CallStatus::Completed.as_str())
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    emit(
        "due-lag",
        backend.name(),
        json!({
            "calls": n,
            "rate_per_s": rate,
            "lead_ms": lead_ms,
            "owners": owners,
            "clock": "SystemClock",
            "simulator": "SimulatorConfig::instant(); completed by call_ended through EventIngestor",
            "scheduler": {
                "batch": scheduler.config().batch,
                "global_cap": scheduler.config().global_cap,
                "owner_cap": scheduler.config().owner_cap,
                "max_idle_s": scheduler.config().max_idle.as_secs(),
            },
            "wakeups": if backend == Backend::Postgres { "LISTEN/NOTIFY" } else { "in-process" },
        }),
        json!({
            "lag_ms": summary(&mut lags),
            "late_dials": stalls,
            "dialed": dialed,
            "completed": completed,
            "statuses": statuses,
            "created_late": created_late,
            "create_ms": created_in,
            "events_ingested": pump.events.load(std::sync::atomic::Ordering::Relaxed),
            "store_ops_per_call_after_create": r3((calls.total() - ops_before) as f64 / n.max(1) as f64),
            "store_ops": calls.snapshot(),
            "pg_one_row_commit_ms": commit,
            "dynamo": dynamo,
        }),
    );
    env.close().await
}
