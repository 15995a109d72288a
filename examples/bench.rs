//! callcat benchmarks: measurements, not tests. Each result is one JSON line on
//! stdout (scenario, backend, parameters, metrics); progress goes to stderr. It
//! never fails on speed. See docs/benchmarks.md for the figures and how they were made.
//!
//! ```sh
//! cargo run --release --example bench --features postgres,dynamo,retell -- <scenario> --backend <memory|postgres|dynamo> [--option value ...]
//! scripts/bench [scenario ...]   # starts PostgreSQL and moto, runs them all (or the named ones)
//! ```
//!
//! Scenarios: `due-lag`, `burn-down`, `live-calls`, `webhooks`, `dynamo-cost`, `idle`,
//! `fairness`, `machine`.
//! PostgreSQL comes from `CALLCAT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`, a fresh schema per run), DynamoDB
//! from `CALLCAT_TEST_DYNAMO_ENDPOINT` (fresh tables per run).

#[path = "bench/burn_down.rs"]
mod burn_down;
#[path = "bench/common.rs"]
mod common;
#[path = "bench/due_lag.rs"]
mod due_lag;
#[path = "bench/dynamo_cost.rs"]
mod dynamo_cost;
#[path = "bench/fairness.rs"]
mod fairness;
#[path = "bench/idle.rs"]
mod idle;
#[path = "bench/live_calls.rs"]
mod live_calls;
#[path = "bench/seed.rs"]
mod seed;
#[path = "bench/webhooks.rs"]
mod webhooks;

use common::{Backend, Opts, Res, emit, fail, machine};

const USAGE: &str = "usage: bench <due-lag|burn-down|live-calls|webhooks|dynamo-cost|idle|fairness|machine> \
                     [--backend memory|postgres|dynamo] [--option value ...]";

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first().cloned() else {
        return Err(fail(USAGE));
    };
    let opts = Opts::parse(&args[1..])?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let workers = opts.u64("threads", 0)? as usize;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    let rt = rt.build()?;
    rt.block_on(run(&scenario, &opts))
}

async fn run(scenario: &str, opts: &Opts) -> Res<()> {
    let backend = |default: Backend| -> Res<Backend> {
        opts.get("backend").map_or(Ok(default), Backend::parse)
    };
    match scenario {
        "due-lag" => due_lag::run(backend(Backend::Memory)?, opts).await,
        "burn-down" => burn_down::run(backend(Backend::Postgres)?, opts).await,
        "live-calls" => live_calls::run(backend(Backend::Memory)?, opts).await,
        "dynamo-cost" => dynamo_cost::run(backend(Backend::Dynamo)?, opts).await,
        "idle" => idle::run(backend(Backend::Postgres)?, opts).await,
        "webhooks" => webhooks::run(backend(Backend::Memory)?, opts).await,
        "fairness" => fairness::run(backend(Backend::Memory)?, opts).await,
        "machine" => {
            emit("machine", "-", serde_json::json!({}), machine());
            Ok(())
        }
        other => Err(fail(format!("unknown scenario {other:?}\n{USAGE}"))),
    }
}
