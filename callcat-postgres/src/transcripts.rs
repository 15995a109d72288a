//! [`PostgresTranscriptStore`]: one row per call, segments as a JSONB array.
//! With a cipher, each segment's text and the free text are sealed
//! (`transcript.segments`, `transcript.text`); roles, timings and ids stay plain.

use std::fmt;
use std::sync::Arc;

use callcat_core::crypto::{open_transcript, seal_segments, seal_transcript};
use callcat_core::rotation::ResealPage;
use callcat_core::transcript::DEFAULT_TRANSCRIPT_TTL;
use callcat_core::{CallId, Error, Owner, Result, Transcript, TranscriptSegment, TranscriptStore};
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::{PgError, SOURCE};
use crate::store::Db;

/// Transcripts in PostgreSQL. Get one from [`crate::PostgresStore::transcripts`].
#[derive(Clone)]
pub struct PostgresTranscriptStore {
    db: Arc<Db>,
    sql: Arc<TranscriptSql>,
}

impl fmt::Debug for PostgresTranscriptStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTranscriptStore")
            .field("table", &self.db.tables.transcripts)
            .finish()
    }
}

const RETURNED: &str =
    "call_id, tenant_id, user_id, provider_call_id, segments, text, updated_at, expires_at";

/// An upsert only overwrites the owner's own transcript.
const OWNER_MATCHES: &str =
    "WHERE t.tenant_id = EXCLUDED.tenant_id AND t.user_id = EXCLUDED.user_id";

struct TranscriptSql {
    put: String,
    append: String,
    get: String,
    by_provider_id: String,
    delete_expired: String,
}

impl TranscriptSql {
    fn new(t: &str) -> Self {
        TranscriptSql {
            put: format!(
                "INSERT INTO {t} AS t ({RETURNED}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (call_id) DO UPDATE SET provider_call_id = EXCLUDED.provider_call_id, \
                 segments = EXCLUDED.segments, text = EXCLUDED.text, \
                 updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at \
                 {OWNER_MATCHES}"
            ),
            append: format!(
                "INSERT INTO {t} AS t ({RETURNED}) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7) \
                 ON CONFLICT (call_id) DO UPDATE SET segments = t.segments || EXCLUDED.segments, \
                 provider_call_id = COALESCE(EXCLUDED.provider_call_id, t.provider_call_id), \
                 updated_at = EXCLUDED.updated_at \
                 {OWNER_MATCHES} RETURNING {RETURNED}"
            ),
            get: format!("SELECT {RETURNED} FROM {t} WHERE call_id = $1 AND expires_at > $2"),
            by_provider_id: format!(
                "SELECT {RETURNED} FROM {t} WHERE provider_call_id = $1 AND expires_at > $2 \
                 ORDER BY updated_at DESC LIMIT 1"
            ),
            delete_expired: format!("DELETE FROM {t} WHERE expires_at <= $1"),
        }
    }
}

type Row = (
    Uuid,
    String,
    String,
    Option<String>,
    Json<Vec<TranscriptSegment>>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// The transcript of a row, its texts opened with the store's cipher.
fn from_row(db: &Db, r: Row) -> Result<Transcript> {
    let (call_id, tenant, user, provider_call_id, segments, text, updated_at, expires_at) = r;
    let stored = Transcript {
        call_id: CallId::from_uuid(call_id),
        owner: Owner::new(tenant, user),
        provider_call_id,
        segments: segments.0,
        text,
        updated_at,
        expires_at,
    };
    open_transcript(stored, db.cipher.as_ref()).map_err(|e| e.with_source_name(SOURCE))
}

fn other_owner() -> Error {
    Error::conflict("transcript belongs to another owner").with_source_name(SOURCE)
}

impl PostgresTranscriptStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        let sql = Arc::new(TranscriptSql::new(&db.tables.transcripts));
        PostgresTranscriptStore { db, sql }
    }
}

#[async_trait::async_trait]
impl TranscriptStore for PostgresTranscriptStore {
    async fn put(&self, t: &Transcript) -> Result<()> {
        let t = &seal_transcript(t, self.db.cipher.as_ref())?;
        let written = sqlx::query(AssertSqlSafe(self.sql.put.as_str()))
            .bind(t.call_id.as_uuid())
            .bind(t.owner.tenant.as_str())
            .bind(t.owner.user.as_str())
            .bind(t.provider_call_id.as_deref())
            .bind(Json(&t.segments))
            .bind(t.text.as_deref())
            .bind(t.updated_at)
            .bind(t.expires_at)
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("writing a transcript"))?
            .rows_affected();
        if written == 1 {
            Ok(())
        } else {
            Err(other_owner())
        }
    }

    async fn append(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
        now: DateTime<Utc>,
    ) -> Result<Transcript> {
        let segments = seal_segments(owner, segments, self.db.cipher.as_ref())?;
        let row: Option<Row> = sqlx::query_as(AssertSqlSafe(self.sql.append.as_str()))
            .bind(call_id.as_uuid())
            .bind(owner.tenant.as_str())
            .bind(owner.user.as_str())
            .bind(provider_call_id)
            .bind(Json(&segments))
            .bind(now)
            .bind(now + DEFAULT_TRANSCRIPT_TTL)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(PgError::sqlx("appending to a transcript"))?;
        from_row(&self.db, row.ok_or_else(other_owner)?)
    }

    async fn get(&self, call_id: CallId, now: DateTime<Utc>) -> Result<Option<Transcript>> {
        let row: Option<Row> = sqlx::query_as(AssertSqlSafe(self.sql.get.as_str()))
            .bind(call_id.as_uuid())
            .bind(now)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(PgError::sqlx("reading a transcript"))?;
        row.map(|r| from_row(&self.db, r)).transpose()
    }

    async fn get_by_provider_call_id(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transcript>> {
        let row: Option<Row> = sqlx::query_as(AssertSqlSafe(self.sql.by_provider_id.as_str()))
            .bind(provider_call_id)
            .bind(now)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(PgError::sqlx("reading a transcript by provider call id"))?;
        row.map(|r| from_row(&self.db, r)).transpose()
    }

    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query(AssertSqlSafe(self.sql.delete_expired.as_str()))
            .bind(now)
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("deleting expired transcripts"))?
            .rows_affected())
    }

    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        crate::rotation::transcripts(&self.db, rewrite, limit, cursor)
            .await
            .map_err(|e| e.with_source_name(crate::error::SOURCE))
    }
}
