//! Bulk-loads calls into a PostgreSQL schema: one real call stored through the
//! store, copied `n - 1` times in SQL with fresh ids, owners and due times (the
//! columns and the JSONB record agree). The wake-up trigger is off while loading,
//! so a million rows do not queue a million notifications.

use callcat::chrono::{DateTime, Utc};
use callcat::postgres::PostgresStore;
use callcat::postgres::sqlx::{self, AssertSqlSafe};
use callcat::{CallStore, Created};

use crate::common::{Res, calls_table, fail, new_call, owner};

/// Stores `n` Scheduled calls over `owners` owners, the `g`-th due at
/// `first_due + g * step_ms` milliseconds, and analyzes the table.
pub async fn seed_calls(
    store: &PostgresStore,
    n: u64,
    first_due: DateTime<Utc>,
    step_ms: i64,
    owners: u64,
) -> Res<()> {
    if n == 0 {
        return Ok(());
    }
    let table = calls_table(store);
    let template = new_call(0, &owner(0, owners), first_due, first_due.min(Utc::now()))?;
    match store.calls().create(&template).await? {
        Created::New(_) => {}
        Created::Existing(_) => return Err(fail("the template call already existed")),
    }
    let pool = store.pool();
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE {table} DISABLE TRIGGER calls_notify_due"
    )))
    .execute(pool)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (id, tenant_id, user_id, status, scheduled_for, next_action_at, \
             lease_worker, lease_until, ended_at, finished_at, finished_key, provider_call_id, \
             idempotency_key, version, created_at, updated_at, record) \
         SELECT s.u, s.tenant, s.usr, t.status, s.ts, s.ts, NULL, NULL, NULL, NULL, s.ts, NULL, \
             NULL, 0, t.created_at, t.updated_at, \
             t.record || jsonb_build_object( \
                 'id', s.u, \
                 'owner', jsonb_build_object('tenant', s.tenant, 'user', s.usr), \
                 'scheduled_for', s.ts, \
                 'next_action_at', s.ts) \
         FROM (SELECT gen_random_uuid() AS u, \
                      'tenant-' || ((g % $3) % 10) AS tenant, \
                      'user-' || (g % $3) AS usr, \
                      $4 + (g * $5) * interval '1 millisecond' AS ts \
               FROM generate_series(1, $2) AS g) AS s, \
              {table} AS t \
         WHERE t.id = $1"
    )))
    .bind(template.id.as_uuid())
    .bind((n - 1) as i64)
    .bind(owners.max(1) as i64)
    .bind(first_due)
    .bind(step_ms as f64)
    .execute(pool)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE {table} ENABLE TRIGGER calls_notify_due"
    )))
    .execute(pool)
    .await?;
    sqlx::query(AssertSqlSafe(format!("ANALYZE {table}")))
        .execute(pool)
        .await?;
    Ok(())
}

/// `xact_commit + xact_rollback` of the current database (every client).
pub async fn db_xacts(store: &PostgresStore) -> Res<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .fetch_one(store.pool())
    .await?;
    Ok(n)
}
