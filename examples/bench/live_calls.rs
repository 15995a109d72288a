//! `live-calls`: 10,000 and 100,000 calls on the line at once, each one's
//! transcript polled every 2 s from the simulator by the TranscriptPoller.
//! Measures resident memory per active call (VmRSS before and after) and CPU use
//! over a window (/proc/self/stat). Each size runs in its own process, so memory
//! freed by one size is not reused by the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callcat::chrono::Utc;
use callcat::{
    EventIngestor, PollerConfig, Scheduler, Simulator, SimulatorConfig, SystemClock,
    TranscriptPoller, UpdateBus,
};
use serde_json::json;

use crate::common::{
    Backend, Env, Instrumented, Opts, Res, cpu_seconds, emit, fail, new_call, note, owner, r3,
    rss_kib,
};

pub async fn run(backend: Backend, opts: &Opts) -> Res<()> {
    let Some(n) = opts.get("calls") else {
        // One child process per size.
        let exe = std::env::current_exe()?;
        for size in opts.list("sizes", &[10_000, 100_000])? {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["live-calls", "--backend", backend.name()]);
            cmd.args(["--calls", &size.to_string()]);
            for key in ["window-secs", "warmup-secs", "interval-ms", "bus", "owners"] {
                if let Some(v) = opts.get(key) {
                    cmd.args([format!("--{key}"), v.to_owned()]);
                }
            }
            let status = tokio::task::spawn_blocking(move || cmd.status()).await??;
            if !status.success() {
                return Err(fail(format!("live-calls --calls {size} failed: {status}")));
            }
        }
        return Ok(());
    };
    let n: u64 = n
        .parse()
        .map_err(|_| fail("--calls must be a whole number"))?;
    let window = Duration::from_secs(opts.u64("window-secs", 20)?);
    let warmup = Duration::from_secs(opts.u64("warmup-secs", 10)?);
    let interval = Duration::from_millis(opts.u64("interval-ms", 2_000)?);
    let bus_capacity = opts.u64("bus", 1024)? as usize;
    let owners = opts.u64("owners", 1_000)?;

    let env = Env::open(backend, "live").await?;
    let clock = Arc::new(SystemClock);
    let sim = Simulator::new(
        clock.clone(),
        SimulatorConfig {
            ring: Duration::from_secs(1),
            talk: Duration::from_secs(3600),
            turn: Duration::from_secs(4),
            ..SimulatorConfig::default()
        },
    );
    let provider = Instrumented::new(Arc::new(sim));
    let bus = UpdateBus::new(bus_capacity);
    let rss_start = rss_kib()?;

    note(format!("live-calls: creating {n} calls"));
    let now = Utc::now();
    for i in 0..n {
        let call = new_call(i, &owner(i, owners), now, now)?;
        env.stores.calls.create(&call).await?;
    }
    let rss_created = rss_kib()?;

    note(format!("live-calls: dialing {n} calls"));
    let t = Instant::now();
    let scheduler = Scheduler::builder()
        .store(env.stores.calls.clone())
        .provider(provider.clone())
        .clock(clock.clone())
        .batch(1000)
        .global_cap(n as usize + 1)
        .owner_cap(None)
        .lease(Duration::from_secs(600))
        .build()?;
    loop {
        let report = scheduler.tick().await?;
        if report.claimed == 0 {
            break;
        }
    }
    let dial_secs = t.elapsed().as_secs_f64();
    let dialed = provider.dial_count();
    let rss_dialed = rss_kib()?;

    note("live-calls: starting the transcript poller");
    let t = Instant::now();
    let ingestor = Arc::new(EventIngestor::from_stores(
        &env.stores,
        bus.clone(),
        clock.clone(),
    ));
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
    let poller_start_secs = t.elapsed().as_secs_f64();
    let tracked = poller.tracked().len();
    tokio::time::sleep(warmup).await;

    let cpu0 = cpu_seconds()?;
    let fetch0 = provider.fetches();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu = cpu_seconds()? - cpu0;
    let polls = provider.fetches() - fetch0;
    let secs = t0.elapsed().as_secs_f64();
    let rss_live = rss_kib()?;
    let sample = env
        .stores
        .calls
        .list_active(&callcat::ActiveScope::All, 1, None)
        .await?;
    let segments = match sample.items.first() {
        Some(c) => env
            .stores
            .transcripts
            .get(c.id, Utc::now())
            .await?
            .map_or(0, |t| t.segments.len()),
        None => 0,
    };
    let expected_polls_per_s = n as f64 / interval.as_secs_f64();
    let per_call = |kib: u64| r3((kib.saturating_sub(rss_start) * 1024) as f64 / n.max(1) as f64);
    emit(
        "live-calls",
        backend.name(),
        json!({
            "active_calls": n,
            "poll_interval_ms": interval.as_millis() as u64,
            "window_s": window.as_secs(),
            "warmup_s": warmup.as_secs(),
            "bus_capacity": bus_capacity,
            "simulator": "ring 1 s, talk 1 h, a transcript turn every 4 s",
            "tokio_worker_threads": std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0),
        }),
        json!({
            "dialed": dialed,
            "polled_calls": tracked,
            "bytes_per_active_call": per_call(rss_live),
            "bytes_per_call_polling": r3(
                (rss_live.saturating_sub(rss_dialed) * 1024) as f64 / n.max(1) as f64
            ),
            "bytes_per_call_stored_only": per_call(rss_created),
            "bytes_per_call_stored_and_dialed": per_call(rss_dialed),
            "rss_kib": { "start": rss_start, "created": rss_created, "dialed": rss_dialed, "live": rss_live },
            "transcript_segments_per_call_at_end": segments,
            "polls_per_s": r3(polls as f64 / secs),
            "expected_polls_per_s": r3(expected_polls_per_s),
            "cpu_cores_used": r3(cpu / secs),
            "cpu_us_per_poll": r3(cpu * 1e6 / polls.max(1) as f64),
            "dial_seconds": r3(dial_secs),
            "poller_start_seconds": r3(poller_start_secs),
        }),
    );
    poller.shutdown().await;
    env.close().await
}
