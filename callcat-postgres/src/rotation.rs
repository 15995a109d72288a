//! Key rotation over the four tables ([`callcat_core::rotation`]): each store's
//! `reseal_page` pages through its table in key order and, when asked, rewrites
//! a row under the current key with a statement that only matches the row as it
//! was read (calls: same version; windows, transcripts, do-not-call rows: same
//! stored values), so a concurrent write is never lost; such a row is deferred.

use callcat_core::crypto::{
    FieldCipher, KeyUsage, is_sealed, open_call, open_transcript, open_window, seal_call,
    seal_transcript, seal_window,
};
use callcat_core::cursor::Cursor;
use callcat_core::rotation::{KeyTally, ResealPage, RowOutcome, check_reseal};
use callcat_core::{CallId, CallStatus, Error, Owner, Result, TenantId, Transcript};
use callcat_core::{DoNotCallEntry, TranscriptSegment};
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use crate::calls::QUARANTINE_PREFIX;
use crate::do_not_call;
use crate::error::PgError;
use crate::store::Db;

fn bad_cursor() -> Error {
    Error::validation("nextToken", "the page token is not valid")
}

fn decode_uuid(cursor: Option<&str>) -> Result<Option<Uuid>> {
    cursor
        .map(|c| Uuid::parse_str(&Cursor::decode(c)?.id).map_err(|_| bad_cursor()))
        .transpose()
}

fn encode_uuid(id: Uuid) -> String {
    Cursor {
        key: 0,
        id: id.to_string(),
    }
    .encode()
}

/// The next cursor: the last row's key when the page was full.
fn next<T>(rows: &[T], limit: u32, key: impl Fn(&T) -> String) -> Option<String> {
    (rows.len() >= limit as usize)
        .then(|| rows.last().map(key))
        .flatten()
}

/// What a conditional rewrite did: `Rewritten` when it matched the row as read,
/// `Deferred` when the row changed meanwhile (left for the next run).
fn written(rows_affected: u64, after: KeyUsage) -> RowOutcome {
    if rows_affected == 1 {
        RowOutcome::Rewritten(after)
    } else {
        RowOutcome::Deferred
    }
}

/// Whether a stored call record was quarantined by the claim (a plain reason).
fn is_quarantined(status: &str, record: &serde_json::Value) -> bool {
    status == CallStatus::Failed.as_str()
        && record
            .get("last_error")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|e| !is_sealed(e) && e.starts_with(QUARANTINE_PREFIX))
}

pub(crate) async fn calls(
    db: &Db,
    rewrite: bool,
    limit: u32,
    cursor: Option<&str>,
) -> Result<ResealPage> {
    let cipher = check_reseal(db.cipher.as_ref(), rewrite, limit)?;
    let t = &db.tables.calls;
    type Row = (Uuid, String, i64, Json<serde_json::Value>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, status, version, record, phone_index FROM {t} \
         WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    )))
    .bind(decode_uuid(cursor)?)
    .bind(i64::from(limit))
    .fetch_all(&db.pool)
    .await
    .map_err(PgError::sqlx("scanning calls for key rotation"))?;
    let update =
        format!("UPDATE {t} SET record = $3, phone_index = $4 WHERE id = $1 AND version = $2");
    let mut tally = KeyTally::default();
    for (id, status, version, record, index) in &rows {
        let mut found = KeyUsage::of_call(&record.0);
        if let Some(i) = index {
            found.note_index(i);
        }
        let outcome = match cipher {
            Some(c) if found.needs_rewrite(c) => {
                let active = status
                    .parse::<CallStatus>()
                    .map(CallStatus::is_active)
                    .unwrap_or(false);
                if is_quarantined(status, &record.0) {
                    RowOutcome::Unreadable
                } else if active {
                    RowOutcome::Deferred
                } else {
                    reseal_call(db, c, &update, *id, *version, &record.0).await?
                }
            }
            _ => RowOutcome::Untouched,
        };
        tally.record(&found, outcome);
    }
    Ok(ResealPage {
        tally,
        next_cursor: next(&rows, limit, |r| encode_uuid(r.0)),
    })
}

async fn reseal_call(
    db: &Db,
    cipher: &FieldCipher,
    update: &str,
    id: Uuid,
    version: i64,
    record: &serde_json::Value,
) -> Result<RowOutcome> {
    let Ok(call) = open_call(record.clone(), Some(cipher)) else {
        return Ok(RowOutcome::Unreadable);
    };
    let sealed = seal_call(&call, Some(cipher))?;
    let mut after = KeyUsage::of_call(&sealed.record);
    if let Some(i) = &sealed.phone_index {
        after.note_index(i);
    }
    let rows = sqlx::query(AssertSqlSafe(update))
        .bind(id)
        .bind(version)
        .bind(Json(&sealed.record))
        .bind(sealed.phone_index.as_deref())
        .execute(&db.pool)
        .await
        .map_err(PgError::sqlx("re-sealing a call"))?
        .rows_affected();
    Ok(written(rows, after))
}

pub(crate) async fn windows(
    db: &Db,
    rewrite: bool,
    limit: u32,
    cursor: Option<&str>,
) -> Result<ResealPage> {
    let cipher = check_reseal(db.cipher.as_ref(), rewrite, limit)?;
    let t = &db.tables.windows;
    let rows: Vec<(Uuid, Json<serde_json::Value>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, record FROM {t} WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    )))
    .bind(decode_uuid(cursor)?)
    .bind(i64::from(limit))
    .fetch_all(&db.pool)
    .await
    .map_err(PgError::sqlx("scanning windows for key rotation"))?;
    let update = format!("UPDATE {t} SET record = $2 WHERE id = $1 AND record = $3");
    let mut tally = KeyTally::default();
    for (id, record) in &rows {
        let found = KeyUsage::of_window(&record.0);
        let outcome = match cipher {
            Some(c) if found.needs_rewrite(c) => match open_window(record.0.clone(), Some(c)) {
                Err(_) => RowOutcome::Unreadable,
                Ok(window) => {
                    let sealed = seal_window(&window, Some(c))?;
                    let after = KeyUsage::of_window(&sealed);
                    let rows = sqlx::query(AssertSqlSafe(update.as_str()))
                        .bind(id)
                        .bind(Json(&sealed))
                        .bind(Json(&record.0))
                        .execute(&db.pool)
                        .await
                        .map_err(PgError::sqlx("re-sealing a window"))?
                        .rows_affected();
                    written(rows, after)
                }
            },
            _ => RowOutcome::Untouched,
        };
        tally.record(&found, outcome);
    }
    Ok(ResealPage {
        tally,
        next_cursor: next(&rows, limit, |r| encode_uuid(r.0)),
    })
}

pub(crate) async fn transcripts(
    db: &Db,
    rewrite: bool,
    limit: u32,
    cursor: Option<&str>,
) -> Result<ResealPage> {
    let cipher = check_reseal(db.cipher.as_ref(), rewrite, limit)?;
    let t = &db.tables.transcripts;
    type Row = (
        Uuid,
        String,
        String,
        Json<serde_json::Value>,
        Option<String>,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT call_id, tenant_id, user_id, segments, text, updated_at, expires_at FROM {t} \
         WHERE ($1::uuid IS NULL OR call_id > $1) ORDER BY call_id LIMIT $2"
    )))
    .bind(decode_uuid(cursor)?)
    .bind(i64::from(limit))
    .fetch_all(&db.pool)
    .await
    .map_err(PgError::sqlx("scanning transcripts for key rotation"))?;
    // Only the row as read: an append in between changes `segments`.
    let update = format!(
        "UPDATE {t} SET segments = $2, text = $3 \
         WHERE call_id = $1 AND segments = $4 AND text IS NOT DISTINCT FROM $5"
    );
    let mut tally = KeyTally::default();
    for (id, tenant, user, segments, text, updated_at, expires_at) in &rows {
        let parsed: Vec<TranscriptSegment> = serde_json::from_value(segments.0.clone())
            .map_err(PgError::json("reading a transcript's segments"))?;
        let stored = Transcript {
            call_id: CallId::from_uuid(*id),
            owner: Owner::new(tenant.clone(), user.clone()),
            provider_call_id: None,
            segments: parsed,
            text: text.clone(),
            updated_at: *updated_at,
            expires_at: *expires_at,
        };
        let found = KeyUsage::of_transcript(&stored);
        let outcome = match cipher {
            Some(c) if found.needs_rewrite(c) => match open_transcript(stored, Some(c)) {
                Err(_) => RowOutcome::Unreadable,
                Ok(plain) => {
                    let sealed = seal_transcript(&plain, Some(c))?;
                    let after = KeyUsage::of_transcript(&sealed);
                    let rows = sqlx::query(AssertSqlSafe(update.as_str()))
                        .bind(id)
                        .bind(Json(&sealed.segments))
                        .bind(sealed.text.as_deref())
                        .bind(Json(&segments.0))
                        .bind(text.as_deref())
                        .execute(&db.pool)
                        .await
                        .map_err(PgError::sqlx("re-sealing a transcript"))?
                        .rows_affected();
                    written(rows, after)
                }
            },
            _ => RowOutcome::Untouched,
        };
        tally.record(&found, outcome);
    }
    Ok(ResealPage {
        tally,
        next_cursor: next(&rows, limit, |r| encode_uuid(r.0)),
    })
}

pub(crate) async fn do_not_call(
    db: &Db,
    rewrite: bool,
    limit: u32,
    cursor: Option<&str>,
) -> Result<ResealPage> {
    let cipher = check_reseal(db.cipher.as_ref(), rewrite, limit)?;
    let t = &db.tables.do_not_call;
    let after: Option<(String, String)> = cursor
        .map(|c| serde_json::from_str(&Cursor::decode(c)?.id).map_err(|_| bad_cursor()))
        .transpose()?;
    let (after_tenant, after_key) = after.unzip();
    type Row = (String, String, String, String, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT tenant_id, number_key, phone_number, added_by, added_at FROM {t} \
         WHERE ($1::text IS NULL OR (tenant_id, number_key) > ($1, $2)) \
         ORDER BY tenant_id, number_key LIMIT $3"
    )))
    .bind(after_tenant)
    .bind(after_key)
    .bind(i64::from(limit))
    .fetch_all(&db.pool)
    .await
    .map_err(PgError::sqlx(
        "scanning do-not-call entries for key rotation",
    ))?;
    // Only the row as read, and never onto a key the list already holds.
    let update = format!(
        "UPDATE {t} SET number_key = $3, phone_number = $4 \
         WHERE tenant_id = $1 AND number_key = $2 AND phone_number = $5 \
         AND NOT EXISTS (SELECT 1 FROM {t} WHERE tenant_id = $1 AND number_key = $3)"
    );
    let mut tally = KeyTally::default();
    for (tenant, key, stored, added_by, added_at) in &rows {
        let mut found = KeyUsage::default();
        found.note_index(key);
        found.note_value(stored);
        let outcome = match cipher {
            Some(c) if found.needs_rewrite(c) => {
                let tenant_id = TenantId::new(tenant.clone());
                let row = (key.clone(), stored.clone(), added_by.clone(), *added_at);
                match do_not_call::open(Some(c), &tenant_id, row) {
                    Err(_) => RowOutcome::Unreadable,
                    Ok(entry) => reseal_entry(db, c, &update, key, stored, &entry).await?,
                }
            }
            _ => RowOutcome::Untouched,
        };
        tally.record(&found, outcome);
    }
    Ok(ResealPage {
        tally,
        next_cursor: next(&rows, limit, |r| {
            Cursor {
                key: 0,
                id: serde_json::json!([r.0, r.1]).to_string(),
            }
            .encode()
        }),
    })
}

async fn reseal_entry(
    db: &Db,
    cipher: &FieldCipher,
    update: &str,
    old_key: &str,
    old_stored: &str,
    entry: &DoNotCallEntry,
) -> Result<RowOutcome> {
    let (key, stored) = do_not_call::seal(Some(cipher), entry)?;
    let mut after = KeyUsage::default();
    after.note_index(&key);
    after.note_value(&stored);
    let rows = sqlx::query(AssertSqlSafe(update))
        .bind(entry.tenant.as_str())
        .bind(old_key)
        .bind(&key)
        .bind(&stored)
        .bind(old_stored)
        .execute(&db.pool)
        .await
        .map_err(PgError::sqlx("re-sealing a do-not-call entry"))?
        .rows_affected();
    Ok(written(rows, after))
}
