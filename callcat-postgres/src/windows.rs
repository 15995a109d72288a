//! [`PostgresWindowStore`]: call windows as owner columns plus the record in JSONB.
//! With a cipher, the template's personal fields (phone number, caller number,
//! callee name, subject, prompt, variables) are sealed in the record
//! ([`callcat_core::seal_window`]); records written before read as they are.

use std::fmt;
use std::sync::Arc;

use callcat_core::cursor::Cursor;
use callcat_core::rotation::ResealPage;
use callcat_core::store::MAX_PAGE_SIZE;
use callcat_core::{
    CallWindow, Error, Owner, Page, Result, WindowId, WindowStore, open_window, seal_window,
};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::{PgError, SOURCE};
use crate::store::Db;

/// Call windows in PostgreSQL. Get one from [`crate::PostgresStore::windows`].
#[derive(Clone)]
pub struct PostgresWindowStore {
    db: Arc<Db>,
    sql: Arc<WindowSql>,
}

impl fmt::Debug for PostgresWindowStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresWindowStore")
            .field("table", &self.db.tables.windows)
            .finish()
    }
}

struct WindowSql {
    insert: String,
    get: String,
    list: String,
    list_all_first: String,
    list_all_after: String,
    update: String,
    delete: String,
}

impl WindowSql {
    fn new(w: &str) -> Self {
        WindowSql {
            insert: format!(
                "INSERT INTO {w} (id, tenant_id, user_id, created_at, record) \
                 VALUES ($1, $2, $3, $4, $5)"
            ),
            get: format!(
                "SELECT record FROM {w} WHERE id = $1 AND tenant_id = $2 AND user_id = $3"
            ),
            // Window ids are UUIDv7: id order is creation order.
            list: format!(
                "SELECT record FROM {w} WHERE tenant_id = $1 AND user_id = $2 ORDER BY id"
            ),
            list_all_first: format!("SELECT record FROM {w} ORDER BY id LIMIT $1"),
            list_all_after: format!("SELECT record FROM {w} WHERE id > $2 ORDER BY id LIMIT $1"),
            update: format!(
                "UPDATE {w} SET record = $4 WHERE id = $1 AND tenant_id = $2 AND user_id = $3"
            ),
            delete: format!("DELETE FROM {w} WHERE id = $1 AND tenant_id = $2 AND user_id = $3"),
        }
    }
}

impl PostgresWindowStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        let sql = Arc::new(WindowSql::new(&db.tables.windows));
        PostgresWindowStore { db, sql }
    }

    /// The stored record: sealed under the current key with a cipher.
    fn seal(&self, window: &CallWindow) -> Result<serde_json::Value> {
        seal_window(window, self.db.cipher.as_ref()).map_err(|e| e.with_source_name(SOURCE))
    }

    /// A window from its stored record (plain values read as they are).
    fn open(&self, record: serde_json::Value) -> Result<CallWindow> {
        open_window(record, self.db.cipher.as_ref()).map_err(|e| e.with_source_name(SOURCE))
    }
}

type Row = (Json<serde_json::Value>,);

#[async_trait::async_trait]
impl WindowStore for PostgresWindowStore {
    async fn create(&self, window: &CallWindow) -> Result<()> {
        window.schedule.validate()?;
        sqlx::query(AssertSqlSafe(self.sql.insert.as_str()))
            .bind(window.id.as_uuid())
            .bind(window.owner.tenant.as_str())
            .bind(window.owner.user.as_str())
            .bind(window.created_at)
            .bind(Json(self.seal(window)?))
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("creating a window"))?;
        Ok(())
    }

    async fn get(&self, owner: &Owner, id: WindowId) -> Result<Option<CallWindow>> {
        let row: Option<Row> = sqlx::query_as(AssertSqlSafe(self.sql.get.as_str()))
            .bind(id.as_uuid())
            .bind(owner.tenant.as_str())
            .bind(owner.user.as_str())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(PgError::sqlx("reading a window"))?;
        row.map(|r| self.open(r.0.0)).transpose()
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<CallWindow>> {
        let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(self.sql.list.as_str()))
            .bind(owner.tenant.as_str())
            .bind(owner.user.as_str())
            .fetch_all(&self.db.pool)
            .await
            .map_err(PgError::sqlx("listing windows"))?;
        rows.into_iter().map(|r| self.open(r.0.0)).collect()
    }

    async fn list_all(&self, limit: u32, cursor: Option<&str>) -> Result<Page<CallWindow>> {
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(Error::validation(
                "limit",
                format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        let after: Option<Uuid> = cursor
            .map(|c| {
                Uuid::parse_str(&Cursor::decode(c)?.id)
                    .map_err(|_| Error::validation("nextToken", "the page token is not valid"))
            })
            .transpose()?;
        let fetch = i64::from(limit) + 1;
        let rows: Vec<Row> = match after {
            None => sqlx::query_as(AssertSqlSafe(self.sql.list_all_first.as_str())).bind(fetch),
            Some(a) => sqlx::query_as(AssertSqlSafe(self.sql.list_all_after.as_str()))
                .bind(fetch)
                .bind(a),
        }
        .fetch_all(&self.db.pool)
        .await
        .map_err(PgError::sqlx("listing all windows"))?;
        let mut items = rows
            .into_iter()
            .map(|r| self.open(r.0.0))
            .collect::<Result<Vec<CallWindow>>>()?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = if more {
            items.last().map(|w| {
                Cursor {
                    key: 0,
                    id: w.id.to_string(),
                }
                .encode()
            })
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn update(&self, window: &CallWindow) -> Result<()> {
        window.schedule.validate()?;
        let updated = sqlx::query(AssertSqlSafe(self.sql.update.as_str()))
            .bind(window.id.as_uuid())
            .bind(window.owner.tenant.as_str())
            .bind(window.owner.user.as_str())
            .bind(Json(self.seal(window)?))
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("updating a window"))?
            .rows_affected();
        if updated == 1 {
            Ok(())
        } else {
            Err(Error::not_found(format!("window {} not found", window.id))
                .with_source_name(SOURCE))
        }
    }

    async fn delete(&self, owner: &Owner, id: WindowId) -> Result<()> {
        let deleted = sqlx::query(AssertSqlSafe(self.sql.delete.as_str()))
            .bind(id.as_uuid())
            .bind(owner.tenant.as_str())
            .bind(owner.user.as_str())
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("deleting a window"))?
            .rows_affected();
        if deleted == 1 {
            Ok(())
        } else {
            Err(Error::not_found(format!("window {id} not found")).with_source_name(SOURCE))
        }
    }

    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        crate::rotation::windows(&self.db, rewrite, limit, cursor)
            .await
            .map_err(|e| e.with_source_name(SOURCE))
    }
}
