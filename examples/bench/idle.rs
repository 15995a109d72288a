//! `idle`: database transactions per second an idle scheduler causes in
//! PostgreSQL, with 1,000,000 future calls stored: `pg_stat_database`
//! (xact_commit + xact_rollback) over a window with the scheduler, minus the same
//! window without it. Runs in a database of its own (`callcat_bench_idle`, created
//! if missing) so other clients do not blur the count; the scheduler's store calls
//! are also counted exactly in-process. Also prints the claim statement's plan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callcat::chrono::{TimeDelta, Utc};
use callcat::postgres::PostgresStore;
use callcat::postgres::sqlx::{self, AssertSqlSafe, Connection};
use callcat::{Lease, Scheduler, Simulator, SimulatorConfig, SystemClock, Wakeup, WorkerId};
use serde_json::json;

use crate::common::{
    Backend, CountingStore, Opts, Res, drop_schema, emit, fail, note, pg_store, pg_url, r3,
};
use crate::seed::{db_xacts, seed_calls};

const IDLE_DB: &str = "callcat_bench_idle";

/// The URL of a private database next to `url`'s (created if missing); `url`
/// itself if that is not possible.
async fn private_db(url: &str) -> Res<(String, bool)> {
    let Some((base, _db)) = url.rsplit_once('/') else {
        return Ok((url.to_owned(), false));
    };
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(IDLE_DB)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none()
        && let Err(e) = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {IDLE_DB}")))
            .execute(&mut conn)
            .await
    {
        note(format!(
            "idle: cannot create database {IDLE_DB} ({e}); measuring in the shared one"
        ));
        return Ok((url.to_owned(), false));
    }
    Ok((format!("{base}/{IDLE_DB}"), true))
}

/// Average transactions per second in the database over `window`.
async fn xact_rate(store: &PostgresStore, window: Duration) -> Res<(i64, f64)> {
    let a = db_xacts(store).await?;
    let t = Instant::now();
    tokio::time::sleep(window).await;
    // Statistics reach pg_stat_database when a backend reports them (at most once
    // a second, and idle backends within ~10 s): wait for stragglers.
    let secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let b = db_xacts(store).await?;
    // Our own sampling statement counts as one transaction.
    let n = b - a - 1;
    Ok((n, n as f64 / secs))
}

pub async fn run(backend: Backend, opts: &Opts) -> Res<()> {
    if backend != Backend::Postgres {
        return Err(fail("idle runs on --backend postgres"));
    }
    let n = opts.u64("calls", 1_000_000)?;
    let window = Duration::from_secs(opts.u64("window-secs", 65)?);
    let (url, private) = private_db(&pg_url()).await?;
    let store = pg_store(&url, "idle", 4).await?;
    note(format!("idle: storing {n} future calls"));
    let t = Instant::now();
    // Due from an hour from now, spread over the following days.
    seed_calls(&store, n, Utc::now() + TimeDelta::hours(1), 500, 1_000).await?;
    let seed_secs = t.elapsed().as_secs_f64();

    // The claim's plan at this size (no rows are due, so ANALYZE changes nothing;
    // it runs in a transaction that is rolled back anyway).
    let plan = explain(&store, false).await?;
    let plan_analyzed = explain(&store, true).await?;
    let uses_partial_index = plan.iter().any(|l| l.contains("calls_due_idx"));

    note(format!("idle: baseline over {} s", window.as_secs()));
    let (base_n, base_rate) = xact_rate(&store, window).await?;

    let calls = CountingStore::new(Arc::new(store.calls()));
    let clock = Arc::new(SystemClock);
    let wakeup = Wakeup::new();
    let listener = store.wakeup_listener(wakeup.clone()).await?;
    let scheduler = Scheduler::builder()
        .store(calls.clone())
        .provider(Arc::new(Simulator::new(
            clock.clone(),
            SimulatorConfig::instant(),
        )))
        .clock(clock)
        .wakeup(wakeup)
        .worker("bench-idle")
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
    // Let it start (its first pass: room, claim, next due) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ops_start = calls.total();
    note(format!(
        "idle: with an idle scheduler over {} s",
        window.as_secs()
    ));
    let t = Instant::now();
    let (with_n, with_rate) = xact_rate(&store, window).await?;
    let ops = calls.total() - ops_start;
    let ops_secs = t.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    running.await??;
    listener.stop();

    emit(
        "idle",
        "postgres",
        json!({
            "future_calls": n,
            "window_s": window.as_secs(),
            "private_database": private,
            "scheduler": {
                "max_idle_s": scheduler.config().max_idle.as_secs(),
                "wakeups": "LISTEN/NOTIFY",
            },
        }),
        json!({
            "idle_xacts_per_s": r3(with_rate - base_rate),
            "xacts_with_scheduler": with_n,
            "xacts_per_s_with_scheduler": r3(with_rate),
            "xacts_baseline": base_n,
            "xacts_per_s_baseline": r3(base_rate),
            "scheduler_store_ops": ops,
            "scheduler_store_ops_per_s": r3(ops as f64 / ops_secs),
            "store_ops": calls.snapshot(),
            "claim_plan_uses_calls_due_idx": uses_partial_index,
            "claim_plan": plan,
            "claim_plan_analyze": plan_analyzed,
            "seed_seconds": r3(seed_secs),
        }),
    );
    drop_schema(&store).await
}

async fn explain(store: &PostgresStore, analyze: bool) -> Res<Vec<String>> {
    let now = Utc::now();
    let lease_until = now + TimeDelta::seconds(30);
    let worker = WorkerId::new("bench-explain");
    let lease = Lease {
        worker: worker.clone(),
        expires_at: lease_until,
    };
    let prefix = if analyze {
        "EXPLAIN (ANALYZE, BUFFERS)"
    } else {
        "EXPLAIN"
    };
    let mut tx = store.pool().begin().await?;
    let rows: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
        "{prefix} {}",
        store.calls().claim_statement()
    )))
    .bind(now)
    .bind(32_i64)
    .bind(worker.as_str())
    .bind(lease_until)
    .bind(serde_json::to_value(&lease)?)
    .bind(serde_json::to_value(lease_until)?)
    .bind(serde_json::to_value(now)?)
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(rows.into_iter().map(|(l,)| l).collect())
}
