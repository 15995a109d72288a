//! [`PostgresCallStore`]: calls as indexed columns plus the whole record in JSONB.

use std::fmt;
use std::sync::Arc;

use callcat_core::cursor::Cursor;
use callcat_core::rotation::ResealPage;
use callcat_core::store::MAX_PAGE_SIZE;
use callcat_core::{
    ActiveScope, Call, CallId, CallStatus, CallStore, Created, Error, Lease, ListQuery, ListView,
    NextDue, Owner, Page, PhoneNumber, Result, SealedCall, StoreCapabilities, TenantId, WorkerId,
    open_call, seal_call,
};
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::{Query, QueryAs};
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::PgError;
use crate::sql::{ACTIVE, CLAIMABLE, FINISHED, UPCOMING};
use crate::store::Db;

/// The column list written by create and update, in bind order `$1..$18`.
const COLUMNS: &str = "id, tenant_id, user_id, status, scheduled_for, next_action_at, \
    lease_worker, lease_until, ended_at, finished_at, finished_key, provider_call_id, \
    idempotency_key, version, created_at, updated_at, record, phone_index";

/// Calls in PostgreSQL. Get one from [`crate::PostgresStore::calls`].
#[derive(Clone)]
pub struct PostgresCallStore {
    db: Arc<Db>,
    sql: Arc<CallSql>,
}

impl fmt::Debug for PostgresCallStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresCallStore")
            .field("table", &self.db.tables.calls)
            .finish()
    }
}

/// The statements that do not vary per call, built once per store.
struct CallSql {
    insert: String,
    select_by_idempotency: String,
    get: String,
    update: String,
    version_of: String,
    delete: String,
    status_of: String,
    by_provider_id: String,
    claim: String,
    claim_capped: String,
    quarantine: String,
    quarantined: String,
    next_due: String,
    next_due_capped: String,
    active_to_number: String,
    count_active: String,
    count_by_status: String,
}

/// What a claim sets: Dispatching under this worker's lease (`$3` worker, `$4`
/// lease expiry), the JSONB record given the same values as the columns
/// (serialized by serde in Rust: `$5` lease, `$6` next_action_at, `$7` updated_at).
const CLAIM_SET: &str = "status = 'DISPATCHING', \
     lease_worker = $3, \
     lease_until = $4, \
     next_action_at = $4, \
     version = c.version + 1, \
     updated_at = $1, \
     finished_key = COALESCE(c.finished_at, c.ended_at, $1), \
     record = c.record || jsonb_build_object(\
         'status', 'DISPATCHING', \
         'lease', $5::jsonb, \
         'next_action_at', $6::jsonb, \
         'version', c.version + 1, \
         'updated_at', $7::jsonb)";

/// [`CLAIMABLE`] over the alias `p` (the same predicate, so `calls_due_idx` applies).
const CLAIMABLE_P: &str = "p.status IN ('SCHEDULED', 'RETRY_PENDING', 'DISPATCHING')";

impl CallSql {
    fn new(calls: &str) -> Self {
        let placeholders: Vec<String> = (1..=18).map(|i| format!("${i}")).collect();
        let placeholders = placeholders.join(", ");
        CallSql {
            insert: format!(
                "INSERT INTO {calls} ({COLUMNS}) VALUES ({placeholders}) \
                 ON CONFLICT (tenant_id, user_id, idempotency_key) DO NOTHING"
            ),
            select_by_idempotency: format!(
                "SELECT record FROM {calls} \
                 WHERE tenant_id = $1 AND user_id = $2 AND idempotency_key = $3"
            ),
            get: format!("SELECT record FROM {calls} WHERE id = $1"),
            update: format!(
                "UPDATE {calls} SET status = $4, scheduled_for = $5, next_action_at = $6, \
                 lease_worker = $7, lease_until = $8, ended_at = $9, finished_at = $10, \
                 finished_key = $11, provider_call_id = $12, idempotency_key = $13, \
                 version = $14, created_at = $15, updated_at = $16, record = $17, \
                 phone_index = $18 \
                 WHERE id = $1 AND tenant_id = $2 AND user_id = $3 AND version = $19"
            ),
            version_of: format!("SELECT version, tenant_id, user_id FROM {calls} WHERE id = $1"),
            delete: format!(
                "DELETE FROM {calls} \
                 WHERE id = $1 AND tenant_id = $2 AND user_id = $3 AND status = 'SCHEDULED'"
            ),
            status_of: format!(
                "SELECT status FROM {calls} WHERE id = $1 AND tenant_id = $2 AND user_id = $3"
            ),
            by_provider_id: format!("SELECT record FROM {calls} WHERE provider_call_id = $1"),
            // One statement: pick the earliest due claimable rows, skipping rows other
            // claimers hold locked, and move them to Dispatching under a lease. The
            // JSONB record gets the same values as the columns (serialized by serde
            // in Rust: $5 lease, $6 next_action_at, $7 updated_at).
            claim: format!(
                "UPDATE {calls} AS c SET {CLAIM_SET} \
                 FROM (\
                     SELECT id, next_action_at FROM {calls} \
                     WHERE {CLAIMABLE} AND next_action_at <= $1 \
                     ORDER BY next_action_at, id \
                     LIMIT $2 \
                     FOR UPDATE SKIP LOCKED\
                 ) AS due \
                 WHERE c.id = due.id \
                 RETURNING c.id, c.record, due.next_action_at"
            ),
            // The claim skipping owners at their cap (`$8`): `busy` counts each
            // owner's active calls (`calls_active_idx`); `picked` locks the earliest
            // due rows of owners below the cap (a lapsed Dispatching row always:
            // it is counted already); `ranked` numbers each owner's new calls so
            // at most `cap - active` of them are taken. Rows picked but not taken
            // are unlocked at the end of the statement.
            claim_capped: format!(
                "WITH busy AS (\
                     SELECT tenant_id, user_id, count(*) AS n FROM {calls} \
                     WHERE {ACTIVE} GROUP BY tenant_id, user_id\
                 ), picked AS (\
                     SELECT p.id, p.next_action_at, p.status, p.tenant_id, p.user_id \
                     FROM {calls} AS p \
                     WHERE {CLAIMABLE_P} AND p.next_action_at <= $1 \
                       AND (p.status = 'DISPATCHING' OR NOT EXISTS (\
                           SELECT 1 FROM busy b WHERE b.tenant_id = p.tenant_id \
                           AND b.user_id = p.user_id AND b.n >= $8)) \
                     ORDER BY p.next_action_at, p.id \
                     LIMIT $2 \
                     FOR UPDATE OF p SKIP LOCKED\
                 ), ranked AS (\
                     SELECT picked.id, picked.next_action_at, picked.status, \
                         COALESCE(b.n, 0) AS n, \
                         row_number() OVER (\
                             PARTITION BY picked.tenant_id, picked.user_id, \
                                 picked.status = 'DISPATCHING' \
                             ORDER BY picked.next_action_at, picked.id) AS rn \
                     FROM picked LEFT JOIN busy b \
                         ON b.tenant_id = picked.tenant_id AND b.user_id = picked.user_id\
                 ) \
                 UPDATE {calls} AS c SET {CLAIM_SET} \
                 FROM ranked AS due \
                 WHERE c.id = due.id AND (due.status = 'DISPATCHING' OR due.n + due.rn <= $8) \
                 RETURNING c.id, c.record, due.next_action_at"
            ),
            // Sets aside a just-claimed row whose record cannot be opened, without
            // opening it: Failed (out of the due and active indexes for good), the
            // reason in the record's plain `last_error`. `$1` id, `$2` worker (only
            // while this claim's lease holds), `$3` now, `$4` the JSON of now, `$5`
            // the reason.
            quarantine: format!(
                "UPDATE {calls} SET \
                     status = 'FAILED', \
                     next_action_at = NULL, \
                     lease_worker = NULL, \
                     lease_until = NULL, \
                     version = version + 1, \
                     updated_at = $3, \
                     finished_key = COALESCE(finished_at, ended_at, $3), \
                     record = record || jsonb_build_object(\
                         'status', 'FAILED', \
                         'lease', NULL, \
                         'next_action_at', NULL, \
                         'version', version + 1, \
                         'updated_at', $4::jsonb, \
                         'last_error', $5::text) \
                 WHERE id = $1 AND lease_worker = $2 AND status = 'DISPATCHING'"
            ),
            // Operators only (a scan of failed rows): the quarantine's reason prefix.
            quarantined: format!(
                "SELECT id FROM {calls} WHERE status = 'FAILED' \
                 AND record->>'last_error' LIKE '{QUARANTINE_PREFIX}%' ORDER BY id LIMIT 10000"
            ),
            next_due: format!(
                "SELECT min(next_action_at) FROM {calls} \
                 WHERE {CLAIMABLE} AND next_action_at IS NOT NULL"
            ),
            // `next_due` leaving out the waiting rows of owners with `$1` or more
            // active calls, and whether any due by then were left out.
            next_due_capped: format!(
                "WITH busy AS (\
                     SELECT tenant_id, user_id FROM {calls} WHERE {ACTIVE} \
                     GROUP BY tenant_id, user_id HAVING count(*) >= $1\
                 ), next AS (\
                     SELECT (SELECT p.next_action_at FROM {calls} AS p \
                         WHERE {CLAIMABLE_P} AND p.next_action_at IS NOT NULL \
                           AND (p.status = 'DISPATCHING' OR NOT EXISTS (\
                               SELECT 1 FROM busy b WHERE b.tenant_id = p.tenant_id \
                               AND b.user_id = p.user_id)) \
                         ORDER BY p.next_action_at, p.id LIMIT 1) AS at\
                 ) \
                 SELECT next.at, EXISTS (\
                     SELECT 1 FROM {calls} AS p JOIN busy b \
                         ON b.tenant_id = p.tenant_id AND b.user_id = p.user_id \
                     WHERE {CLAIMABLE_P} AND p.status <> 'DISPATCHING' \
                       AND p.next_action_at IS NOT NULL \
                       AND (next.at IS NULL OR p.next_action_at <= next.at)) \
                 FROM next"
            ),
            // Sealed rows match by blind index (under any key of the ring:
            // `calls_active_phone_idx`); rows written without a cipher by number.
            // `$3`/`$4` narrow to a tenant / user when not NULL.
            active_to_number: format!(
                "SELECT \
                 (SELECT count(*) FROM {calls} WHERE {ACTIVE} AND phone_index IS NOT NULL \
                     AND phone_index = ANY($1) \
                     AND ($3::text IS NULL OR tenant_id = $3) \
                     AND ($4::text IS NULL OR user_id = $4)) + \
                 (SELECT count(*) FROM {calls} WHERE {ACTIVE} AND phone_index IS NULL \
                     AND record->>'phone_number' = $2 \
                     AND ($3::text IS NULL OR tenant_id = $3) \
                     AND ($4::text IS NULL OR user_id = $4))"
            ),
            // `calls_active_idx` / `calls_tenant_active_idx`; `$1`/`$2` narrow to
            // a tenant / user when not NULL.
            count_active: format!(
                "SELECT count(*) FROM {calls} WHERE {ACTIVE} \
                 AND ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR user_id = $2)"
            ),
            // One owner's calls per status (the owner's upcoming and finished
            // indexes cover every status between them).
            count_by_status: format!(
                "SELECT status, count(*) FROM {calls} \
                 WHERE tenant_id = $1 AND user_id = $2 GROUP BY status"
            ),
        }
    }
}

fn version_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::validation("version", "version is out of range"))
}

/// Binds the 18 columns of [`COLUMNS`] in order: the call's fields, then its
/// stored form (sealed when a cipher is configured) and phone blind index.
fn bind_columns<'q>(
    q: Query<'q, Postgres, PgArguments>,
    c: &'q Call,
    sealed: SealedCall,
) -> Result<Query<'q, Postgres, PgArguments>> {
    Ok(q.bind(c.id.as_uuid())
        .bind(c.owner.tenant.as_str())
        .bind(c.owner.user.as_str())
        .bind(c.status.as_str())
        .bind(c.scheduled_for)
        .bind(c.next_action_at)
        .bind(c.lease.as_ref().map(|l| l.worker.as_str()))
        .bind(c.lease.as_ref().map(|l| l.expires_at))
        .bind(c.ended_at)
        .bind(c.finished_at)
        .bind(c.finished_sort_key())
        .bind(c.provider_call_id.as_deref())
        .bind(c.idempotency_key.as_deref())
        .bind(version_i64(c.version)?)
        .bind(c.created_at)
        .bind(c.updated_at)
        .bind(Json(sealed.record))
        .bind(sealed.phone_index))
}

fn page_limit(limit: u32) -> Result<i64> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(Error::validation(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    Ok(i64::from(limit))
}

/// Cursors carry the sort key in microseconds (PostgreSQL's precision) and the id.
fn decode_cursor(cursor: Option<&str>) -> Result<Option<(DateTime<Utc>, Uuid)>> {
    let invalid = || Error::validation("nextToken", "the page token is not valid");
    cursor
        .map(|s| {
            let c = Cursor::decode(s)?;
            let at = DateTime::from_timestamp_micros(c.key).ok_or_else(invalid)?;
            let id = Uuid::parse_str(&c.id).map_err(|_| invalid())?;
            Ok((at, id))
        })
        .transpose()
}

fn encode_cursor(key: DateTime<Utc>, id: CallId) -> String {
    Cursor {
        key: key.timestamp_micros(),
        id: id.to_string(),
    }
    .encode()
}

/// A page query under construction: SQL text plus its bind values in order.
struct PageQuery {
    sql: String,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Time(DateTime<Utc>),
    Uuid(Uuid),
    Int(i64),
}

impl PageQuery {
    fn new(select: String) -> Self {
        PageQuery {
            sql: select,
            args: Vec::new(),
        }
    }

    /// Adds a bind value; returns its placeholder.
    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn and(&mut self, clause: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
    }

    /// Runs it (`SELECT record, key, id`), returning `(call, sort key, id)` rows;
    /// the call is `None` (logged and counted) when its record cannot be opened.
    async fn fetch(self, db: &Db) -> Result<Vec<(Option<Call>, DateTime<Utc>, CallId)>> {
        type Row = (Json<serde_json::Value>, DateTime<Utc>, Uuid);
        let mut q: QueryAs<'_, Postgres, Row, PgArguments> =
            sqlx::query_as(AssertSqlSafe(self.sql));
        for a in self.args {
            q = match a {
                Arg::Text(s) => q.bind(s),
                Arg::Time(t) => q.bind(t),
                Arg::Uuid(u) => q.bind(u),
                Arg::Int(i) => q.bind(i),
            };
        }
        let rows = q
            .fetch_all(&db.pool)
            .await
            .map_err(PgError::sqlx("listing calls"))?;
        Ok(rows
            .into_iter()
            .map(|(c, k, id)| {
                let id = CallId::from_uuid(id);
                (open_or_skip(db, id, c.0), k, id)
            })
            .collect())
    }
}

/// Opens a stored record with the store's cipher (plain records read as they are).
fn open(db: &Db, record: serde_json::Value) -> Result<Call> {
    open_call(record, db.cipher.as_ref()).map_err(|e| e.with_source_name(crate::error::SOURCE))
}

/// Opens a listed record; one that cannot be opened is skipped with a log and a
/// metric, so one bad row never fails a listing.
fn open_or_skip(db: &Db, id: CallId, record: serde_json::Value) -> Option<Call> {
    match open(db, record) {
        Ok(c) => Some(c),
        Err(e) => {
            callcat_core::store::report_unreadable(STORE, &id.to_string(), &e);
            None
        }
    }
}

/// The store name in logs and metrics.
const STORE: &str = "postgres";

/// How a quarantined row's `last_error` starts (see `CallSql::quarantine`).
pub(crate) const QUARANTINE_PREFIX: &str = "quarantined:";

/// Cuts the `limit + 1` fetched rows to a page with the next cursor. The cursor
/// is the last row's, read or not, so paging moves past skipped rows.
fn into_page(mut rows: Vec<(Option<Call>, DateTime<Utc>, CallId)>, limit: i64) -> Page<Call> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().map(|(_, k, id)| encode_cursor(*k, *id))
    } else {
        None
    };
    Page {
        items: rows.into_iter().filter_map(|(c, _, _)| c).collect(),
        next_cursor,
    }
}

impl PostgresCallStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        let sql = Arc::new(CallSql::new(&db.tables.calls));
        PostgresCallStore { db, sql }
    }

    /// The exact statement [`CallStore::claim_due`] runs (for `EXPLAIN` and
    /// review). Parameters: `$1` now, `$2` limit, `$3` worker, `$4` lease
    /// expiry, then the JSON of `$5` the lease, `$6` the lease expiry, `$7` now.
    pub fn claim_statement(&self) -> &str {
        &self.sql.claim
    }

    /// The exact statement [`CallStore::claim_due_capped`] runs: the parameters
    /// of [`PostgresCallStore::claim_statement`], then `$8` the per-owner cap.
    pub fn claim_capped_statement(&self) -> &str {
        &self.sql.claim_capped
    }

    /// Runs the claim (`owner_cap`: the capped one, see
    /// [`CallStore::claim_due_capped`]) and opens the rows, quarantining those
    /// that cannot be opened.
    async fn claim_rows(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
        owner_cap: Option<u32>,
    ) -> Result<Vec<Call>> {
        let (mut claimed, mut quarantined) = self
            .claim_once(now, limit, worker, lease_until, owner_cap)
            .await?;
        // The capped claim gave an unreadable row its owner's share: now that it
        // is set aside, claim again (bounded) so the owner's next call is not
        // left for a later pass.
        let mut rounds = 1;
        while owner_cap.is_some() && quarantined > 0 && rounds < 4 {
            let want = limit.saturating_sub(u32::try_from(claimed.len()).unwrap_or(limit));
            if want == 0 {
                break;
            }
            let (more, q) = self
                .claim_once(now, want, worker, lease_until, owner_cap)
                .await?;
            claimed.extend(more);
            quarantined = q;
            rounds += 1;
        }
        Ok(claimed)
    }

    /// One claim statement; the opened calls (earliest due first) and how many
    /// rows were quarantined.
    async fn claim_once(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
        owner_cap: Option<u32>,
    ) -> Result<(Vec<Call>, usize)> {
        let sql = match owner_cap {
            Some(_) => self.sql.claim_capped.as_str(),
            None => self.sql.claim.as_str(),
        };
        if limit == 0 {
            return Ok((Vec::new(), 0));
        }
        let lease = Lease {
            worker: worker.clone(),
            expires_at: lease_until,
        };
        let json = |v: serde_json::Result<serde_json::Value>| {
            v.map_err(PgError::json("encoding the lease"))
        };
        let mut query = sqlx::query_as(AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .bind(worker.as_str())
            .bind(lease_until)
            .bind(json(serde_json::to_value(&lease))?)
            .bind(json(serde_json::to_value(lease_until))?)
            .bind(json(serde_json::to_value(now))?);
        if let Some(cap) = owner_cap {
            query = query.bind(i64::from(cap));
        }
        let rows: Vec<(Uuid, Json<serde_json::Value>, DateTime<Utc>)> = query
            .fetch_all(&self.db.pool)
            .await
            .map_err(PgError::sqlx("claiming due calls"))?;
        // A row that cannot be opened is quarantined, never returned: it neither
        // fails this claim nor holds a lease, nor comes due again.
        let mut opened: Vec<(DateTime<Utc>, Call)> = Vec::with_capacity(rows.len());
        let mut quarantined = 0;
        for (id, c, due) in rows {
            match open(&self.db, c.0) {
                Ok(call) => opened.push((due, call)),
                Err(e) => {
                    self.quarantine(id, worker, now, &e).await?;
                    quarantined += 1;
                }
            }
        }
        let mut rows = opened;
        // RETURNING has no order: restore "earliest due first".
        rows.sort_by_key(|(due, c)| (*due, c.id));
        Ok((rows.into_iter().map(|(_, c)| c).collect(), quarantined))
    }

    /// Quarantines the row `id` this claim just leased because its record cannot
    /// be opened (see `CallSql::quarantine`), and reports it.
    async fn quarantine(
        &self,
        id: Uuid,
        worker: &WorkerId,
        now: DateTime<Utc>,
        error: &Error,
    ) -> Result<()> {
        let now_json =
            serde_json::to_value(now).map_err(PgError::json("encoding the quarantine time"))?;
        let reason = format!(
            "{QUARANTINE_PREFIX} the stored record cannot be opened ({:?})",
            error.kind()
        );
        sqlx::query(AssertSqlSafe(self.sql.quarantine.as_str()))
            .bind(id)
            .bind(worker.as_str())
            .bind(now)
            .bind(now_json)
            .bind(reason)
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("quarantining an unreadable call"))?;
        callcat_core::store::report_quarantined(STORE, &id.to_string(), error);
        Ok(())
    }

    /// The stored form of `call`: sealed under the current key when a cipher is
    /// configured (so rewriting a row sealed under an older key re-encrypts it).
    fn seal(&self, call: &Call) -> Result<SealedCall> {
        seal_call(call, self.db.cipher.as_ref())
            .map_err(|e| e.with_source_name(crate::error::SOURCE))
    }

    /// How many active calls (Dispatching, Ringing, InProgress, Canceling) in
    /// `scope` are to `number`: the "no second call in flight to this number"
    /// check. Sealed rows match by the blind index under every key of the ring
    /// (rows written before a rotation count too), rows written without a cipher
    /// by their number. Uses `calls_active_phone_idx`.
    pub async fn active_calls_to_number(
        &self,
        scope: &ActiveScope,
        number: &PhoneNumber,
    ) -> Result<u32> {
        let indexes: Vec<String> = self
            .db
            .cipher
            .as_ref()
            .map(|c| c.blind_indexes(number.as_str()))
            .unwrap_or_default();
        let (tenant, user) = match scope {
            ActiveScope::All => (None, None),
            ActiveScope::Tenant(t) => (Some(t.as_str()), None),
            ActiveScope::Owner(o) => (Some(o.tenant.as_str()), Some(o.user.as_str())),
        };
        let (n,): (Option<i64>,) =
            sqlx::query_as(AssertSqlSafe(self.sql.active_to_number.as_str()))
                .bind(&indexes)
                .bind(number.as_str())
                .bind(tenant)
                .bind(user)
                .fetch_one(&self.db.pool)
                .await
                .map_err(PgError::sqlx("counting active calls to a number"))?;
        Ok(u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX))
    }

    async fn get_by_idempotency(&self, owner: &Owner, key: &str) -> Result<Option<Call>> {
        let row: Option<(Json<serde_json::Value>,)> =
            sqlx::query_as(AssertSqlSafe(self.sql.select_by_idempotency.as_str()))
                .bind(owner.tenant.as_str())
                .bind(owner.user.as_str())
                .bind(key)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(PgError::sqlx("reading a call by idempotency key"))?;
        row.map(|r| open(&self.db, r.0.0)).transpose()
    }

    fn upcoming_or_finished(&self, owner: &Owner, query: &ListQuery) -> Result<PageQuery> {
        let limit = page_limit(query.limit)?;
        if let Some(s) = query.status
            && ListView::of(s) != query.view
        {
            return Err(Error::validation(
                "status",
                "status does not belong to this view",
            ));
        }
        let after = decode_cursor(query.cursor.as_deref())?;
        let (key, view_pred, cmp, order) = match query.view {
            ListView::Upcoming => ("scheduled_for", UPCOMING, ">", "ASC"),
            ListView::Finished => ("finished_key", FINISHED, "<", "DESC"),
        };
        let mut q = PageQuery::new(format!(
            "SELECT record, {key}, id FROM {} WHERE {view_pred}",
            self.db.tables.calls
        ));
        let t = q.arg(Arg::Text(owner.tenant.as_str().to_owned()));
        let u = q.arg(Arg::Text(owner.user.as_str().to_owned()));
        q.and(&format!("tenant_id = {t} AND user_id = {u}"));
        if let Some(s) = query.status {
            let p = q.arg(Arg::Text(s.as_str().to_owned()));
            q.and(&format!("status = {p}"));
        }
        if let Some((at, id)) = after {
            let a = q.arg(Arg::Time(at));
            let i = q.arg(Arg::Uuid(id));
            q.and(&format!("({key}, id) {cmp} ({a}, {i})"));
        }
        let l = q.arg(Arg::Int(limit + 1));
        q.sql
            .push_str(&format!(" ORDER BY {key} {order}, id {order} LIMIT {l}"));
        Ok(q)
    }

    /// Ascending pages by `(scheduled_for, id)` over `base` (a `SELECT ... WHERE ...`).
    fn scheduled_page(
        &self,
        mut q: PageQuery,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(PageQuery, i64)> {
        let limit = page_limit(limit)?;
        if let Some((at, id)) = decode_cursor(cursor)? {
            let a = q.arg(Arg::Time(at));
            let i = q.arg(Arg::Uuid(id));
            q.and(&format!("(scheduled_for, id) > ({a}, {i})"));
        }
        let l = q.arg(Arg::Int(limit + 1));
        q.sql
            .push_str(&format!(" ORDER BY scheduled_for, id LIMIT {l}"));
        Ok((q, limit))
    }
}

#[async_trait::async_trait]
impl CallStore for PostgresCallStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities {
            cross_process_wakeups: true,
            shared_between_processes: true,
        }
    }

    async fn create(&self, call: &Call) -> Result<Created> {
        if call.version != 0 {
            return Err(Error::validation(
                "version",
                "a new call must have version 0",
            ));
        }
        // The idempotent insert can lose a race with a delete of the call holding
        // the key (then neither the insert nor the read finds it): try again.
        for _ in 0..3 {
            let q = sqlx::query(AssertSqlSafe(self.sql.insert.as_str()));
            let inserted = bind_columns(q, call, self.seal(call)?)?
                .execute(&self.db.pool)
                .await
                .map_err(PgError::sqlx("creating a call"))?
                .rows_affected();
            if inserted == 1 {
                return Ok(Created::New(call.clone()));
            }
            let Some(key) = &call.idempotency_key else {
                return Err(
                    Error::internal("insert wrote nothing without an idempotency key")
                        .with_source_name(crate::error::SOURCE),
                );
            };
            if let Some(existing) = self.get_by_idempotency(&call.owner, key).await? {
                return Ok(Created::Existing(existing));
            }
        }
        Err(
            Error::conflict("the idempotency key kept changing hands; try again")
                .with_source_name(crate::error::SOURCE),
        )
    }

    async fn get(&self, id: CallId) -> Result<Option<Call>> {
        let row: Option<(Json<serde_json::Value>,)> =
            sqlx::query_as(AssertSqlSafe(self.sql.get.as_str()))
                .bind(id.as_uuid())
                .fetch_optional(&self.db.pool)
                .await
                .map_err(PgError::sqlx("reading a call"))?;
        row.map(|r| open(&self.db, r.0.0)).transpose()
    }

    async fn update(&self, call: &Call) -> Result<Call> {
        let mut next = call.clone();
        next.version = call
            .version
            .checked_add(1)
            .ok_or_else(|| Error::validation("version", "version is out of range"))?;
        let q = sqlx::query(AssertSqlSafe(self.sql.update.as_str()));
        let written = bind_columns(q, &next, self.seal(&next)?)?
            .bind(version_i64(call.version)?)
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("updating a call"))?
            .rows_affected();
        if written == 1 {
            return Ok(next);
        }
        let row: Option<(i64, String, String)> =
            sqlx::query_as(AssertSqlSafe(self.sql.version_of.as_str()))
                .bind(call.id.as_uuid())
                .fetch_optional(&self.db.pool)
                .await
                .map_err(PgError::sqlx("reading a call's version"))?;
        let err = match row {
            None => Error::not_found(format!("call {} not found", call.id)),
            Some((_, tenant, user))
                if tenant != call.owner.tenant.as_str() || user != call.owner.user.as_str() =>
            {
                Error::conflict("a call's owner cannot change")
            }
            Some((version, _, _)) => Error::conflict(format!(
                "call {} was changed concurrently (version {version} != {})",
                call.id, call.version
            )),
        };
        Err(err.with_source_name(crate::error::SOURCE))
    }

    async fn delete_if_scheduled(&self, owner: &Owner, id: CallId) -> Result<()> {
        let deleted = sqlx::query(AssertSqlSafe(self.sql.delete.as_str()))
            .bind(id.as_uuid())
            .bind(owner.tenant.as_str())
            .bind(owner.user.as_str())
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("deleting a call"))?
            .rows_affected();
        if deleted == 1 {
            return Ok(());
        }
        let status: Option<(String,)> = sqlx::query_as(AssertSqlSafe(self.sql.status_of.as_str()))
            .bind(id.as_uuid())
            .bind(owner.tenant.as_str())
            .bind(owner.user.as_str())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(PgError::sqlx("reading a call's status"))?;
        let err = match status {
            None => Error::not_found(format!("call {id} not found")),
            Some((s,)) => Error::conflict(format!(
                "only a scheduled call can be deleted; this one is {s}"
            )),
        };
        Err(err.with_source_name(crate::error::SOURCE))
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page<Call>> {
        let limit = page_limit(query.limit)?;
        let q = self.upcoming_or_finished(owner, query)?;
        Ok(into_page(q.fetch(&self.db).await?, limit))
    }

    async fn find_by_provider_call_id(&self, provider_call_id: &str) -> Result<Option<Call>> {
        let row: Option<(Json<serde_json::Value>,)> =
            sqlx::query_as(AssertSqlSafe(self.sql.by_provider_id.as_str()))
                .bind(provider_call_id)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(PgError::sqlx("reading a call by provider call id"))?;
        row.map(|r| open(&self.db, r.0.0)).transpose()
    }

    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        let mut q = PageQuery::new(format!(
            "SELECT record, scheduled_for, id FROM {} WHERE {ACTIVE}",
            self.db.tables.calls
        ));
        match scope {
            ActiveScope::All => {}
            ActiveScope::Tenant(t) => {
                let p = q.arg(Arg::Text(t.as_str().to_owned()));
                q.and(&format!("tenant_id = {p}"));
            }
            ActiveScope::Owner(o) => {
                let t = q.arg(Arg::Text(o.tenant.as_str().to_owned()));
                let u = q.arg(Arg::Text(o.user.as_str().to_owned()));
                q.and(&format!("tenant_id = {t} AND user_id = {u}"));
            }
        }
        let (q, limit) = self.scheduled_page(q, limit, cursor)?;
        Ok(into_page(q.fetch(&self.db).await?, limit))
    }

    async fn count_active(&self, scope: &ActiveScope) -> Result<u64> {
        let (tenant, user) = match scope {
            ActiveScope::All => (None, None),
            ActiveScope::Tenant(t) => (Some(t.as_str()), None),
            ActiveScope::Owner(o) => (Some(o.tenant.as_str()), Some(o.user.as_str())),
        };
        let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(self.sql.count_active.as_str()))
            .bind(tenant)
            .bind(user)
            .fetch_one(&self.db.pool)
            .await
            .map_err(PgError::sqlx("counting active calls"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        let mut q = PageQuery::new(format!(
            "SELECT record, scheduled_for, id FROM {} WHERE TRUE",
            self.db.tables.calls
        ));
        let t = q.arg(Arg::Text(tenant.as_str().to_owned()));
        let f = q.arg(Arg::Time(from));
        let e = q.arg(Arg::Time(to));
        q.and(&format!(
            "tenant_id = {t} AND scheduled_for >= {f} AND scheduled_for < {e}"
        ));
        let (q, limit) = self.scheduled_page(q, limit, cursor)?;
        Ok(into_page(q.fetch(&self.db).await?, limit))
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Call>> {
        self.claim_rows(now, limit, worker, lease_until, None).await
    }

    async fn claim_due_capped(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
        owner_cap: u32,
    ) -> Result<Vec<Call>> {
        self.claim_rows(now, limit, worker, lease_until, Some(owner_cap))
            .await
    }

    async fn count_by_status(
        &self,
        owner: &Owner,
    ) -> Result<std::collections::BTreeMap<CallStatus, u64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as(AssertSqlSafe(self.sql.count_by_status.as_str()))
                .bind(owner.tenant.as_str())
                .bind(owner.user.as_str())
                .fetch_all(&self.db.pool)
                .await
                .map_err(PgError::sqlx("counting calls by status"))?;
        let mut counts = std::collections::BTreeMap::new();
        for (status, n) in rows {
            let status: CallStatus = status.parse()?;
            counts.insert(status, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    async fn next_due_capped(&self, owner_cap: u32) -> Result<NextDue> {
        let (at, blocked): (Option<DateTime<Utc>>, bool) =
            sqlx::query_as(AssertSqlSafe(self.sql.next_due_capped.as_str()))
                .bind(i64::from(owner_cap))
                .fetch_one(&self.db.pool)
                .await
                .map_err(PgError::sqlx("reading the next due time"))?;
        Ok(NextDue { at, blocked })
    }

    async fn list_quarantined(&self) -> Result<Vec<CallId>> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(AssertSqlSafe(self.sql.quarantined.as_str()))
            .fetch_all(&self.db.pool)
            .await
            .map_err(PgError::sqlx("listing quarantined calls"))?;
        Ok(rows
            .into_iter()
            .map(|(id,)| CallId::from_uuid(id))
            .collect())
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let (at,): (Option<DateTime<Utc>>,) =
            sqlx::query_as(AssertSqlSafe(self.sql.next_due.as_str()))
                .fetch_one(&self.db.pool)
                .await
                .map_err(PgError::sqlx("reading the next due time"))?;
        Ok(at)
    }

    async fn active_calls_to_number(
        &self,
        scope: &ActiveScope,
        number: &PhoneNumber,
    ) -> Result<u32> {
        // The inherent method answers from the blind phone index.
        Self::active_calls_to_number(self, scope, number).await
    }

    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        crate::rotation::calls(&self.db, rewrite, limit, cursor)
            .await
            .map_err(|e| e.with_source_name(crate::error::SOURCE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_in_microseconds() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid");
        let id = CallId::new();
        let decoded = decode_cursor(Some(&encode_cursor(at, id)))
            .expect("decodes")
            .expect("some");
        assert_eq!(decoded, (at, id.as_uuid()));
        let bad = Cursor {
            key: 1,
            id: "not-a-uuid".into(),
        }
        .encode();
        assert_eq!(
            decode_cursor(Some(&bad)).expect_err("invalid").field(),
            Some("nextToken")
        );
        assert!(decode_cursor(Some("%%%")).is_err());
    }

    #[test]
    fn page_limits_are_validated() {
        assert!(page_limit(0).is_err());
        assert!(page_limit(MAX_PAGE_SIZE + 1).is_err());
        assert_eq!(
            page_limit(MAX_PAGE_SIZE).expect("ok"),
            i64::from(MAX_PAGE_SIZE)
        );
    }

    #[test]
    fn the_claim_is_one_statement_with_skip_locked() {
        let sql = CallSql::new("calls").claim;
        assert!(sql.starts_with("UPDATE calls AS c SET"));
        assert!(sql.contains("FOR UPDATE SKIP LOCKED"));
        assert!(sql.contains(CLAIMABLE));
        assert!(sql.contains("ORDER BY next_action_at, id"));
        assert!(!sql.contains(';'));
    }
}
