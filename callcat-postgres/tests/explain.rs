//! The claim statement uses the partial index `calls_due_idx`, shown with
//! `EXPLAIN` on a table shaped like production: most calls finished (outside the
//! index), a few claimable ones. No planner settings are changed.
//!
//! The same check at 1,000,000 rows is ignored by default (it takes a while):
//! `CALLCAT_TEST_POSTGRES_URL=... cargo test -p callcat-postgres --test explain -- --ignored`

mod common;

use callcat_core::{Lease, WorkerId};
use callcat_postgres::sqlx::{self, AssertSqlSafe};
use common::{secs, t0};

/// Fills the schema's `calls` table with `finished` terminal calls and
/// `claimable` scheduled ones (a tenth of them due), analyzes it, and returns
/// the plan of the store's own claim statement (the capped one with `capped`).
async fn claim_plan(db: &common::TestDb, finished: i64, claimable: i64, capped: bool) -> String {
    let pool = db.store.pool();
    let calls = format!("\"{}\".calls", db.schema);
    // Rows need only the indexed columns to be realistic for the planner; the
    // record is a placeholder (these rows are never read back as calls).
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {calls} (id, tenant_id, user_id, status, scheduled_for, next_action_at, \
             finished_at, finished_key, version, created_at, updated_at, record) \
         SELECT gen_random_uuid(), 'tenant' || (i % 50), 'user' || (i % 1000), \
             CASE WHEN i <= $1 THEN 'COMPLETED' ELSE 'SCHEDULED' END, \
             $3 - make_interval(secs => i), \
             CASE WHEN i <= $1 THEN NULL \
                  WHEN i % 10 = 0 THEN $3 - make_interval(secs => i) \
                  ELSE $3 + make_interval(secs => i) END, \
             CASE WHEN i <= $1 THEN $3 ELSE NULL END, $3, 0, $3, $3, '{{}}'::jsonb \
         FROM generate_series(1, $1 + $2) AS i"
    )))
    .bind(finished)
    .bind(claimable)
    .bind(t0())
    .execute(pool)
    .await
    .expect("fill");
    sqlx::query(AssertSqlSafe(format!("ANALYZE {calls}")))
        .execute(pool)
        .await
        .expect("analyze");

    let now = t0();
    let lease_until = now + secs(60);
    let worker = WorkerId::new("explain");
    let lease = Lease {
        worker: worker.clone(),
        expires_at: lease_until,
    };
    let calls_store = db.store.calls();
    let statement = if capped {
        calls_store.claim_capped_statement()
    } else {
        calls_store.claim_statement()
    };
    let query = sqlx::query_as(AssertSqlSafe(format!("EXPLAIN {statement}")))
        .bind(now)
        .bind(100_i64)
        .bind(worker.as_str())
        .bind(lease_until)
        .bind(serde_json::to_value(&lease).expect("json"))
        .bind(serde_json::to_value(lease_until).expect("json"))
        .bind(serde_json::to_value(now).expect("json"));
    let query = if capped { query.bind(1_i64) } else { query };
    let rows: Vec<(String,)> = query.fetch_all(pool).await.expect("explain");
    rows.into_iter()
        .map(|(l,)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_claim_uses_the_partial_due_index() {
    let db = db_or_skip!();
    let plan = claim_plan(&db, 50_000, 2_000, false).await;
    assert!(plan.contains("calls_due_idx"), "plan:\n{plan}");
    assert!(plan.contains("LockRows"), "FOR UPDATE SKIP LOCKED:\n{plan}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_capped_claim_uses_the_partial_due_index() {
    let db = db_or_skip!();
    let plan = claim_plan(&db, 50_000, 2_000, true).await;
    assert!(plan.contains("calls_due_idx"), "plan:\n{plan}");
    assert!(plan.contains("LockRows"), "FOR UPDATE SKIP LOCKED:\n{plan}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "bench-like: builds 1,000,000 rows; run with --ignored"]
async fn the_claim_uses_the_partial_due_index_at_a_million_rows() {
    let db = db_or_skip!();
    let plan = claim_plan(&db, 990_000, 10_000, false).await;
    println!("{plan}");
    assert!(plan.contains("calls_due_idx"), "plan:\n{plan}");
}
