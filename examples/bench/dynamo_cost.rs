//! `dynamo-cost`: DynamoDB requests and consumed capacity for one answered call
//! with 30 transcript turns, polled every 2 s, from callcat-dynamo's counters.
//! The lifecycle events (started, ended, analyzed) arrive as webhooks would; the
//! transcript comes from the TranscriptPoller. Phases: create, dispatch (claim and
//! dial), live (polling until the call ended), analysis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callcat::chrono::Utc;
use callcat::dynamo::MetricsSnapshot;
use callcat::{
    CallService, CallStatus, CallUpdate, EventIngestor, PollerConfig, ProviderEventKind, Scheduler,
    Simulator, SimulatorConfig, SystemClock, TranscriptPoller, UpdateBus, Wakeup,
};
use serde_json::{Value, json};

use crate::common::{
    Backend, Env, Instrumented, Opts, Res, call_request, emit, fail, note, owner, pump_events, r3,
};

fn cost(m: &MetricsSnapshot) -> Value {
    json!({
        "requests": m.requests,
        "failed_requests": m.failed_requests,
        "conditional_failures": m.conditional_failures,
        "rcu": r3(m.read_capacity_units),
        "wcu": r3(m.write_capacity_units),
    })
}

pub async fn run(backend: Backend, opts: &Opts) -> Res<()> {
    if backend != Backend::Dynamo {
        return Err(fail("dynamo-cost runs on --backend dynamo"));
    }
    let turns = opts.u64("turns", 30)?;
    let interval = Duration::from_millis(opts.u64("interval-ms", 2_000)?);
    let env = Env::open(backend, "cost").await?;
    let dynamo = env
        .dynamo
        .clone()
        .ok_or_else(|| fail("no DynamoDB stores"))?;
    let snap = || {
        (
            dynamo.calls.metrics_snapshot(),
            dynamo.transcripts.metrics_snapshot(),
        )
    };

    let clock = Arc::new(SystemClock);
    // A turn every poll interval; the call ends just before turn `turns + 1`.
    let sim = Simulator::new(
        clock.clone(),
        SimulatorConfig {
            ring: Duration::from_secs(2),
            turn: interval,
            talk: interval * turns as u32 - Duration::from_millis(1),
            analysis_delay: Duration::from_secs(2),
            ..SimulatorConfig::default()
        },
    );
    let provider = Instrumented::new(Arc::new(sim.clone()));
    let bus = UpdateBus::default();
    let wakeup = Wakeup::new();
    let ingestor = Arc::new(
        EventIngestor::from_stores(&env.stores, bus.clone(), clock.clone())
            .with_wakeup(wakeup.clone()),
    );
    // Webhooks: call_started, call_ended, call_analyzed (no transcript pushes).
    let (_pump, _) = pump_events(
        sim,
        ingestor.clone(),
        |k| {
            matches!(
                k,
                ProviderEventKind::Started | ProviderEventKind::Ended | ProviderEventKind::Analyzed
            )
        },
        4,
    );
    let poller = TranscriptPoller::new(
        ingestor,
        provider.clone(),
        PollerConfig {
            interval,
            ..PollerConfig::default()
        },
    )?
    .start()
    .await?;
    let service = CallService::new(env.stores.calls.clone(), clock.clone(), wakeup.clone())
        .with_bus(bus.clone());

    let mut updates = bus.subscribe();
    let s0 = snap();
    let call = service
        .create(&owner(0, 1), call_request(0, Utc::now())?)
        .await?
        .into_call();
    let s_created = snap();

    let scheduler = Scheduler::builder()
        .store(env.stores.calls.clone())
        .provider(provider.clone())
        .clock(clock.clone())
        .wakeup(wakeup)
        .bus(bus)
        .worker("bench-cost")
        .build()?;
    // One pass, as a running scheduler's wake-up would do (its idle cost is `idle`'s subject).
    let report = scheduler.tick().await?;
    if report.dialed != 1 {
        return Err(fail(format!("expected one dial, got {report:?}")));
    }
    let s_dialed = snap();
    note(format!(
        "dynamo-cost: call dialed; ~{} s of conversation",
        (interval * turns as u32).as_secs()
    ));

    // Follow the call on the bus (reading the store would add to the counts).
    let t = Instant::now();
    let deadline = interval * (turns as u32 + 30) + Duration::from_secs(60);
    let mut s_ended = None;
    loop {
        let left = deadline.saturating_sub(t.elapsed());
        let update = match tokio::time::timeout(left, updates.recv()).await {
            Err(_) => return Err(fail("the call did not finish in time")),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => return Err(fail(format!("bus closed: {e}"))),
            Ok(Ok(u)) => u,
        };
        if let CallUpdate::Call(c) = update.as_ref()
            && c.id == call.id
            && c.status.is_terminal()
        {
            if s_ended.is_none() {
                s_ended = Some(snap());
            }
            if c.analysis.is_some() {
                break;
            }
        }
    }
    let s_end = snap();
    poller.shutdown().await;
    let final_call = env
        .stores
        .calls
        .get(call.id)
        .await?
        .ok_or_else(|| fail("the call vanished"))?;
    let transcript = env.stores.transcripts.get(call.id, Utc::now()).await?;
    let segments = transcript.map_or(0, |t| t.segments.len());
    let s_ended = s_ended.unwrap_or(s_end);

    let phase = |a: &(MetricsSnapshot, MetricsSnapshot), b: &(MetricsSnapshot, MetricsSnapshot)| json!({ "calls_table": cost(&b.0.since(&a.0)), "transcripts_table": cost(&b.1.since(&a.1)) });
    let total_calls = s_end.0.since(&s0.0);
    let total_tr = s_end.1.since(&s0.1);
    emit(
        "dynamo-cost",
        "dynamo",
        json!({
            "turns": turns,
            "poll_interval_ms": interval.as_millis() as u64,
            "shards": dynamo.shards(),
            "webhooks": ["call_started", "call_ended", "call_analyzed"],
            "emulator": format!(
                "{} (capacity figures are the emulator's approximation, not AWS billing)",
                std::env::var("CALLCAT_DYNAMO_EMULATOR").unwrap_or_else(|_| "moto".into())
            ),
        }),
        json!({
            "final_status": final_call.status.as_str(),
            "completed": final_call.status == CallStatus::Completed,
            "transcript_segments": segments,
            "fetches_from_provider": provider.fetches(),
            "total": {
                "requests": total_calls.requests + total_tr.requests,
                "rcu": r3(total_calls.read_capacity_units + total_tr.read_capacity_units),
                "wcu": r3(total_calls.write_capacity_units + total_tr.write_capacity_units),
                "calls_table": cost(&total_calls),
                "transcripts_table": cost(&total_tr),
            },
            "phases": {
                "create": phase(&s0, &s_created),
                "dispatch": phase(&s_created, &s_dialed),
                "live_until_ended": phase(&s_dialed, &s_ended),
                "analysis": phase(&s_ended, &s_end),
            },
        }),
    );
    env.close().await
}
