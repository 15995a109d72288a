//! [`PostgresDoNotCallStore`]: per-tenant do-not-call lists in the `do_not_call`
//! table, numbers sealed and looked up by blind index when a cipher is configured.

use std::fmt;
use std::sync::Arc;

use callcat_core::crypto::is_sealed;
use callcat_core::cursor::Cursor;
use callcat_core::rotation::ResealPage;
use callcat_core::store::MAX_PAGE_SIZE;
use callcat_core::{
    DoNotCallEntry, DoNotCallStore, Error, ErrorKind, FieldCipher, Owner, Page, PhoneNumber,
    Result, TenantId, UserId,
};
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use crate::error::{PgError, SOURCE};
use crate::store::Db;

/// The user half of the encryption owner of a tenant's list: numbers are sealed
/// for `Owner::new(tenant, "do-not-call")`, so each tenant's list has its own
/// derived key and a value cannot be moved to another tenant's list.
const DO_NOT_CALL_OWNER_USER: &str = "do-not-call";

/// The field name bound into each sealed number (associated data). It differs
/// from the calls' `phone_number`, so a value sealed here never opens as a call's
/// number, even for a real user named `do-not-call`.
const DO_NOT_CALL_FIELD: &str = "do_not_call.phone_number";

/// Per-tenant do-not-call lists in PostgreSQL. Get one from
/// [`crate::PostgresStore::do_not_call`].
///
/// One row per `(tenant_id, number_key)` (the primary key). With a cipher,
/// `number_key` is the number's blind index under the current key and
/// `phone_number` the number sealed for `Owner::new(tenant, "do-not-call")`
/// (field `do_not_call.phone_number`); without one both hold the E.164 number, as the
/// calls table does. Look-ups (`add`'s duplicate check, `remove`, `contains`)
/// match the blind index under every key of the ring, so entries written before
/// a rotation are found, and the plain number, so entries written before
/// encryption was enabled are found too. An entry keeps the key it was sealed
/// under until removed or re-sealed by key rotation
/// ([`callcat_core::rotation::rekey`], which rewrites both columns under the
/// current key): keep an old key in the ring until its report counts no row.
///
/// `list` pages oldest first by `(added_at, number_key)` over
/// `do_not_call_tenant_added_idx`; cursors are the core [`Cursor`] (`added_at` in
/// microseconds, PostgreSQL's precision, and the number key).
#[derive(Clone)]
pub struct PostgresDoNotCallStore {
    db: Arc<Db>,
    sql: Arc<DoNotCallSql>,
}

impl fmt::Debug for PostgresDoNotCallStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDoNotCallStore")
            .field("table", &self.db.tables.do_not_call)
            .field("cipher", &self.db.cipher)
            .finish()
    }
}

/// The statements, built once per store.
struct DoNotCallSql {
    add: String,
    remove: String,
    contains: String,
    get: String,
    first_page: String,
    next_page: String,
}

impl DoNotCallSql {
    fn new(t: &str) -> Self {
        const COLUMNS: &str = "number_key, phone_number, added_by, added_at";
        DoNotCallSql {
            // Inserts only if the number is listed under none of its keys (`$6`:
            // every blind index of the ring and the plain number); the primary
            // key makes a concurrent add of the same key a no-op.
            add: format!(
                "INSERT INTO {t} (tenant_id, {COLUMNS}) \
                 SELECT $1::text, $2::text, $3::text, $4::text, $5::timestamptz \
                 WHERE NOT EXISTS (\
                     SELECT 1 FROM {t} WHERE tenant_id = $1 AND number_key = ANY($6::text[])\
                 ) \
                 ON CONFLICT (tenant_id, number_key) DO NOTHING"
            ),
            remove: format!("DELETE FROM {t} WHERE tenant_id = $1 AND number_key = ANY($2)"),
            contains: format!(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE tenant_id = $1 AND number_key = ANY($2))"
            ),
            get: format!(
                "SELECT {COLUMNS} FROM {t} WHERE tenant_id = $1 AND number_key = ANY($2) \
                 ORDER BY added_at, number_key LIMIT 1"
            ),
            first_page: format!(
                "SELECT {COLUMNS} FROM {t} WHERE tenant_id = $1 \
                 ORDER BY added_at, number_key LIMIT $2"
            ),
            next_page: format!(
                "SELECT {COLUMNS} FROM {t} WHERE tenant_id = $1 \
                 AND (added_at, number_key) > ($3, $4) \
                 ORDER BY added_at, number_key LIMIT $2"
            ),
        }
    }
}

/// A stored row: number key, stored number, added by, added at.
pub(crate) type Row = (String, String, String, DateTime<Utc>);

fn crypto_error(message: &str) -> Error {
    Error::new(ErrorKind::Crypto, message).with_source_name(SOURCE)
}

/// The encryption owner of `tenant`'s list.
fn list_owner(tenant: &TenantId) -> Owner {
    Owner::new(tenant.clone(), DO_NOT_CALL_OWNER_USER)
}

/// Every key a listed `number` may be stored under: its blind index under each
/// key of the ring (current first), then the plain number (rows written without
/// a cipher).
fn lookup_keys(cipher: Option<&FieldCipher>, number: &PhoneNumber) -> Vec<String> {
    let mut keys = cipher
        .map(|c| c.blind_indexes(number.as_str()))
        .unwrap_or_default();
    keys.push(number.as_str().to_owned());
    keys
}

/// `(number_key, stored number)` for a new row: blind index and sealed number
/// with a cipher, the plain number twice without.
pub(crate) fn seal(
    cipher: Option<&FieldCipher>,
    entry: &DoNotCallEntry,
) -> Result<(String, String)> {
    let number = entry.phone_number.as_str();
    match cipher {
        Some(c) => Ok((
            c.blind_index(number),
            c.encrypt(&list_owner(&entry.tenant), DO_NOT_CALL_FIELD, number)
                .map_err(|e| e.with_source_name(SOURCE))?,
        )),
        None => Ok((number.to_owned(), number.to_owned())),
    }
}

/// The entry in a row of `tenant`'s list, opening a sealed number with `cipher`.
pub(crate) fn open(
    cipher: Option<&FieldCipher>,
    tenant: &TenantId,
    row: Row,
) -> Result<DoNotCallEntry> {
    let (_, stored, added_by, added_at) = row;
    let plain = if is_sealed(&stored) {
        let cipher = cipher.ok_or_else(|| {
            crypto_error("the do-not-call entry is encrypted but no master key is configured")
        })?;
        cipher
            .decrypt(&list_owner(tenant), DO_NOT_CALL_FIELD, &stored)
            .map_err(|e| e.with_source_name(SOURCE))?
    } else {
        stored
    };
    let phone_number = PhoneNumber::parse(&plain).map_err(|_| {
        Error::internal("a stored do-not-call number is not a valid E.164 number")
            .with_source_name(SOURCE)
    })?;
    Ok(DoNotCallEntry {
        tenant: tenant.clone(),
        phone_number,
        added_by: UserId::new(added_by),
        added_at,
    })
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

/// A cursor's position: `added_at` (microseconds) and the number key.
fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String)> {
    let c = Cursor::decode(cursor)?;
    let at = DateTime::from_timestamp_micros(c.key)
        .ok_or_else(|| Error::validation("nextToken", "the page token is not valid"))?;
    Ok((at, c.id))
}

fn encode_cursor(row: &Row) -> String {
    Cursor {
        key: row.3.timestamp_micros(),
        id: row.0.clone(),
    }
    .encode()
}

impl PostgresDoNotCallStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        let sql = Arc::new(DoNotCallSql::new(&db.tables.do_not_call));
        PostgresDoNotCallStore { db, sql }
    }

    fn cipher(&self) -> Option<&FieldCipher> {
        self.db.cipher.as_ref()
    }
}

#[async_trait::async_trait]
impl DoNotCallStore for PostgresDoNotCallStore {
    async fn add(&self, entry: &DoNotCallEntry) -> Result<bool> {
        let (key, stored) = seal(self.cipher(), entry)?;
        let keys = lookup_keys(self.cipher(), &entry.phone_number);
        let inserted = sqlx::query(AssertSqlSafe(self.sql.add.as_str()))
            .bind(entry.tenant.as_str())
            .bind(&key)
            .bind(&stored)
            .bind(entry.added_by.as_str())
            .bind(entry.added_at)
            .bind(&keys)
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("adding a do-not-call entry"))?
            .rows_affected();
        Ok(inserted == 1)
    }

    async fn remove(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<()> {
        let keys = lookup_keys(self.cipher(), number);
        let deleted = sqlx::query(AssertSqlSafe(self.sql.remove.as_str()))
            .bind(tenant.as_str())
            .bind(&keys)
            .execute(&self.db.pool)
            .await
            .map_err(PgError::sqlx("removing a do-not-call entry"))?
            .rows_affected();
        if deleted == 0 {
            return Err(
                Error::not_found("the number is not on the do-not-call list")
                    .with_source_name(SOURCE),
            );
        }
        Ok(())
    }

    async fn contains(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<bool> {
        let keys = lookup_keys(self.cipher(), number);
        let (listed,): (bool,) = sqlx::query_as(AssertSqlSafe(self.sql.contains.as_str()))
            .bind(tenant.as_str())
            .bind(&keys)
            .fetch_one(&self.db.pool)
            .await
            .map_err(PgError::sqlx("reading the do-not-call list"))?;
        Ok(listed)
    }

    async fn get(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<Option<DoNotCallEntry>> {
        let keys = lookup_keys(self.cipher(), number);
        let row: Option<Row> = sqlx::query_as(AssertSqlSafe(self.sql.get.as_str()))
            .bind(tenant.as_str())
            .bind(&keys)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(PgError::sqlx("reading the do-not-call list"))?;
        row.map(|r| open(self.cipher(), tenant, r)).transpose()
    }

    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<DoNotCallEntry>> {
        let limit = page_limit(limit)?;
        let after = cursor.map(decode_cursor).transpose()?;
        let mut rows: Vec<Row> = match after {
            None => {
                sqlx::query_as(AssertSqlSafe(self.sql.first_page.as_str()))
                    .bind(tenant.as_str())
                    .bind(limit + 1)
                    .fetch_all(&self.db.pool)
                    .await
            }
            Some((at, key)) => {
                sqlx::query_as(AssertSqlSafe(self.sql.next_page.as_str()))
                    .bind(tenant.as_str())
                    .bind(limit + 1)
                    .bind(at)
                    .bind(key)
                    .fetch_all(&self.db.pool)
                    .await
            }
        }
        .map_err(PgError::sqlx("listing do-not-call entries"))?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(encode_cursor)
        } else {
            None
        };
        let items = rows
            .into_iter()
            .map(|row| open(self.cipher(), tenant, row))
            .collect::<Result<_>>()?;
        Ok(Page { items, next_cursor })
    }

    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        crate::rotation::do_not_call(&self.db, rewrite, limit, cursor)
            .await
            .map_err(|e| e.with_source_name(crate::error::SOURCE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callcat_core::MasterKey;

    fn entry() -> DoNotCallEntry {
        DoNotCallEntry {
            tenant: TenantId::new("acme"),
            phone_number: PhoneNumber::parse("+14155550199").expect("number"),
            added_by: UserId::new("admin"),
            added_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid"),
        }
    }

    fn row(e: &DoNotCallEntry, key: String, stored: String) -> Row {
        (key, stored, e.added_by.as_str().to_owned(), e.added_at)
    }

    #[test]
    fn sealed_rows_hold_no_plaintext_and_open_for_their_tenant_only() {
        let ring = FieldCipher::new(vec![MasterKey::new(1, [1; 32])]).expect("cipher");
        let e = entry();
        let (key, stored) = seal(Some(&ring), &e).expect("seal");
        assert!(key.starts_with("bi1.") && stored.starts_with("cc1.1."));
        assert!(!key.contains("4155550199") && !stored.contains("4155550199"));
        assert_eq!(lookup_keys(Some(&ring), &e.phone_number)[0], key);
        let opened = open(Some(&ring), &e.tenant, row(&e, key.clone(), stored.clone()));
        assert_eq!(opened.expect("open"), e);
        let other = open(
            Some(&ring),
            &TenantId::new("globex"),
            row(&e, key.clone(), stored.clone()),
        )
        .expect_err("another tenant's key");
        assert_eq!(other.kind(), ErrorKind::Crypto);
        let keyless = open(None, &e.tenant, row(&e, key, stored)).expect_err("no cipher");
        assert_eq!(keyless.kind(), ErrorKind::Crypto);
        assert_eq!(keyless.source_name(), Some("postgres"));
    }

    #[test]
    fn plain_rows_use_the_number_and_are_found_by_a_cipher_store() {
        let e = entry();
        let (key, stored) = seal(None, &e).expect("plain");
        assert_eq!(
            (key.as_str(), stored.as_str()),
            ("+14155550199", "+14155550199")
        );
        let ring = FieldCipher::new(vec![MasterKey::new(2, [2; 32]), MasterKey::new(1, [1; 32])])
            .expect("cipher");
        let keys = lookup_keys(Some(&ring), &e.phone_number);
        assert_eq!(keys.len(), 3);
        assert!(keys.contains(&key));
        assert_eq!(
            open(Some(&ring), &e.tenant, row(&e, key, stored)).expect("open"),
            e
        );
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let e = entry();
        let r = row(&e, "bi1.abc".into(), String::new());
        assert_eq!(
            decode_cursor(&encode_cursor(&r)).expect("decodes"),
            (e.added_at, "bi1.abc".to_owned())
        );
        let err = decode_cursor("not-a-cursor").expect_err("garbage");
        assert_eq!(err.field(), Some("nextToken"));
        assert!(page_limit(0).is_err());
        assert!(page_limit(MAX_PAGE_SIZE + 1).is_err());
    }

    #[test]
    fn statements_name_the_table_and_page_by_the_index_order() {
        let sql = DoNotCallSql::new("\"s\".do_not_call");
        assert!(
            sql.add
                .contains("ON CONFLICT (tenant_id, number_key) DO NOTHING")
        );
        assert!(sql.next_page.contains("(added_at, number_key) > ($3, $4)"));
        for s in [
            &sql.add,
            &sql.remove,
            &sql.contains,
            &sql.first_page,
            &sql.next_page,
        ] {
            assert!(s.contains("\"s\".do_not_call") && !s.contains(';'), "{s}");
        }
    }
}
