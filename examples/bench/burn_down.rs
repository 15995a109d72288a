//! `burn-down`: 100,000 calls already due in PostgreSQL, burned down by 1 / 4 / 16
//! schedulers (claim → dial on the simulator with no talk time → completed by the
//! provider's `call_ended` event through the EventIngestor, as a webhook would).
//! Against the same table, a raw-SQL ceiling: a plain sqlx loop doing the same
//! `FOR UPDATE SKIP LOCKED` claim and a completion, 1 and 100 rows per statement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callcat::chrono::{TimeDelta, Utc};
use callcat::postgres::PostgresStore;
use callcat::postgres::sqlx::{self, AssertSqlSafe};
use callcat::{
    EventIngestor, ProviderEventKind, Scheduler, Simulator, SimulatorConfig, SystemClock, UpdateBus,
};
use serde_json::{Value, json};

use crate::common::{
    Backend, CountingStore, Instrumented, Opts, Res, calls_table, drop_schema, emit, fail, note,
    pg_store, pg_url, pump_events, r3,
};
use crate::seed::{db_xacts, seed_calls};

pub async fn run(backend: Backend, opts: &Opts) -> Res<()> {
    if backend != Backend::Postgres {
        return Err(fail("burn-down runs on --backend postgres"));
    }
    let n = opts.u64("calls", 100_000)?;
    let claimers = opts.list("claimers", &[1, 4, 16])?;
    let batch = opts.u64("batch", 100)? as u32;
    let global_cap = opts.u64("global-cap", 200)? as usize;
    let owners = opts.u64("owners", 1_000)?;
    let url = pg_url();
    let mut ratios = Vec::new();
    for &k in &claimers {
        let lib = callcat_run(&url, n, k as usize, batch, global_cap, owners).await?;
        let raw1 = raw_run(&url, n, k as usize, 1, owners).await?;
        let raw100 = raw_run(&url, n, k as usize, 100, owners).await?;
        ratios.push(json!({
            "claimers": k,
            "callcat_calls_per_s": r3(lib),
            "raw_1_row_calls_per_s": r3(raw1),
            "raw_100_rows_calls_per_s": r3(raw100),
            "callcat_over_raw_1_row": r3(lib / raw1),
            "callcat_over_raw_100_rows": r3(lib / raw100),
        }));
    }
    emit(
        "burn-down-summary",
        "postgres",
        json!({ "calls": n, "batch": batch, "global_cap": global_cap, "owners": owners }),
        json!({ "runs": ratios }),
    );
    Ok(())
}

async fn fresh(url: &str, n: u64, owners: u64, pool: u32) -> Res<PostgresStore> {
    let store = pg_store(url, "burn", pool).await?;
    let t = Instant::now();
    // All due in the past, 1 ms apart so "earliest first" is well defined.
    seed_calls(&store, n, Utc::now() - TimeDelta::hours(2), 1, owners).await?;
    note(format!(
        "seeded {n} due calls in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(store)
}

/// The library: `k` schedulers sharing one store and one simulator.
async fn callcat_run(
    url: &str,
    n: u64,
    k: usize,
    batch: u32,
    global_cap: usize,
    owners: u64,
) -> Res<f64> {
    let store = fresh(url, n, owners, 24).await?;
    let calls = CountingStore::new(Arc::new(store.calls()));
    let clock = Arc::new(SystemClock);
    let sim = Simulator::new(clock.clone(), SimulatorConfig::instant());
    let provider = Instrumented::new(Arc::new(sim.clone()));
    let bus = UpdateBus::new(8192);
    let ingestor = Arc::new(EventIngestor::new(
        calls.clone(),
        Arc::new(store.transcripts()),
        bus.clone(),
        clock.clone(),
    ));
    let (pump, mut finished) =
        pump_events(sim, ingestor, |k| matches!(k, ProviderEventKind::Ended), 16);
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    let xacts0 = db_xacts(&store).await?;
    let started = Instant::now();
    for i in 0..k {
        let s = Scheduler::builder()
            .store(calls.clone())
            .provider(provider.clone())
            .clock(clock.clone())
            .bus(bus.clone())
            .worker(format!("burn-{i}"))
            .batch(batch)
            .global_cap(global_cap)
            .owner_cap(None)
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        runs.push(tokio::spawn(async move {
            s.run(async {
                let _ = rx.await;
            })
            .await
        }));
    }
    let done =
        tokio::time::timeout(Duration::from_secs(1800), finished.wait_for(|c| *c >= n)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let xacts = db_xacts(&store).await? - xacts0;
    for tx in stops {
        let _ = tx.send(());
    }
    for r in runs {
        r.await??;
    }
    let completed = pump.finished();
    let dials = provider.dials();
    let mut ids: Vec<_> = dials.iter().map(|(id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    let rate = completed as f64 / elapsed;
    emit(
        "burn-down",
        "postgres",
        json!({
            "engine": "callcat",
            "calls": n,
            "claimers": k,
            "batch": batch,
            "global_cap": global_cap,
            "owner_cap": Value::Null,
            "completion": "call_ended event through EventIngestor (webhook path)",
        }),
        json!({
            "calls_per_s": r3(rate),
            "seconds": r3(elapsed),
            "completed": completed,
            "finished_in_time": done.is_ok(),
            "dials": dials.len(),
            "duplicate_dials": dials.len() - ids.len(),
            "store_ops_per_call": calls.per(completed.max(1)),
            "store_ops": calls.snapshot(),
            "db_xacts_per_call_all_clients": r3(xacts as f64 / completed.max(1) as f64),
        }),
    );
    drop_schema(&store).await?;
    Ok(rate)
}

/// The ceiling: `k` plain sqlx loops, claim `rows` due rows (same subquery and
/// index as the store's claim, columns only) then mark them completed.
async fn raw_run(url: &str, n: u64, k: usize, rows: i64, owners: u64) -> Res<f64> {
    let store = fresh(url, n, owners, (k as u32).max(1) + 1).await?;
    let table = calls_table(&store);
    let claim = Arc::new(format!(
        "UPDATE {table} AS c SET status = 'DISPATCHING', lease_worker = $2, lease_until = $3, \
             next_action_at = $3, version = c.version + 1, updated_at = $1 \
         FROM (SELECT id FROM {table} \
               WHERE status IN ('SCHEDULED', 'RETRY_PENDING', 'DISPATCHING') \
                 AND next_action_at IS NOT NULL AND next_action_at <= $1 \
               ORDER BY next_action_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) AS due \
         WHERE c.id = due.id RETURNING c.id"
    ));
    let complete = Arc::new(if rows == 1 {
        format!(
            "UPDATE {table} SET status = 'COMPLETED', next_action_at = NULL, lease_worker = NULL, \
                 lease_until = NULL, ended_at = $2, finished_at = $2, finished_key = $2, \
                 version = version + 1, updated_at = $2 WHERE id = $1"
        )
    } else {
        format!(
            "UPDATE {table} SET status = 'COMPLETED', next_action_at = NULL, lease_worker = NULL, \
                 lease_until = NULL, ended_at = $2, finished_at = $2, finished_key = $2, \
                 version = version + 1, updated_at = $2 WHERE id = ANY($1)"
        )
    });
    let xacts0 = db_xacts(&store).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..k {
        let pool = store.pool().clone();
        let claim = claim.clone();
        let complete = complete.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("raw-{i}");
            let mut done = 0u64;
            loop {
                let now = Utc::now();
                let ids: Vec<(callcat::postgres::sqlx::types::Uuid,)> =
                    sqlx::query_as(AssertSqlSafe(claim.as_str()))
                        .bind(now)
                        .bind(worker.as_str())
                        .bind(now + TimeDelta::seconds(60))
                        .bind(rows)
                        .fetch_all(&pool)
                        .await?;
                if ids.is_empty() {
                    return Ok::<u64, sqlx::Error>(done);
                }
                let now = Utc::now();
                if rows == 1 {
                    for (id,) in &ids {
                        sqlx::query(AssertSqlSafe(complete.as_str()))
                            .bind(id)
                            .bind(now)
                            .execute(&pool)
                            .await?;
                    }
                } else {
                    let all: Vec<_> = ids.iter().map(|(id,)| *id).collect();
                    sqlx::query(AssertSqlSafe(complete.as_str()))
                        .bind(all)
                        .bind(now)
                        .execute(&pool)
                        .await?;
                }
                done += ids.len() as u64;
            }
        }));
    }
    let mut completed = 0;
    for t in tasks {
        completed += t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let xacts = db_xacts(&store).await? - xacts0;
    let rate = completed as f64 / elapsed;
    emit(
        "burn-down",
        "postgres",
        json!({
            "engine": "raw-sql",
            "calls": n,
            "claimers": k,
            "rows_per_statement": rows,
        }),
        json!({
            "calls_per_s": r3(rate),
            "seconds": r3(elapsed),
            "completed": completed,
            "db_xacts_per_call_all_clients": r3(xacts as f64 / completed.max(1) as f64),
        }),
    );
    drop_schema(&store).await?;
    Ok(rate)
}
