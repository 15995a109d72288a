//! [`DynamoDoNotCallStore`]: per-tenant do-not-call lists in their own table,
//! numbers sealed and looked up by blind index when a cipher is configured.

use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
use aws_sdk_dynamodb::types::{Delete, Put, ReturnConsumedCapacity, TransactWriteItem};
use callcat_core::KeyUsage;
use callcat_core::crypto::is_sealed;
use callcat_core::cursor::Cursor;
use callcat_core::rotation::{KeyTally, ResealPage, RowOutcome, check_reseal};
use callcat_core::{
    DoNotCallEntry, DoNotCallStore, Error, ErrorKind, FieldCipher, Owner, Page, PhoneNumber,
    Result, TenantId, UserId,
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::try_join_all;

use crate::calls::item::tenant_key;
use crate::client::{Ctx, Expr, Item, QuerySpec, get_s, page_limit, s};
use crate::error::{DResult, DynamoError};
use crate::keys::time_id_key_ms;
use crate::metrics::{DynamoMetrics, MetricsSnapshot, OpKind};

/// Attribute names of the do-not-call table.
pub(crate) mod attr {
    /// Partition key: `T#<tenant>`.
    pub const TENANT: &str = "tenant";
    /// Sort key: the number's blind index with a cipher, the E.164 number without.
    pub const NUMBER_KEY: &str = "numberKey";
    /// The `added` index's sort key: `<added_at ms, 20 digits>#<numberKey>`.
    pub const ADDED_SORT: &str = "addedSort";
    /// The number: sealed with a cipher, E.164 without.
    pub const NUMBER: &str = "number";
    /// The user who listed it.
    pub const ADDED_BY: &str = "addedBy";
    /// When it was listed (RFC 3339, exact).
    pub const ADDED_AT: &str = "addedAt";
}

/// The local secondary index `list` reads: (`tenant`, `addedSort`).
pub(crate) const ADDED_INDEX: &str = "added";

/// The user half of the encryption owner of a tenant's list.
const OWNER_USER: &str = "do-not-call";
/// The field name bound into each sealed number (associated data).
const FIELD: &str = "do_not_call.phone_number";

/// Per-tenant do-not-call lists in a DynamoDB table (default `callcat-do-not-call`).
///
/// **Key design.** Partition key `tenant` (`T#<tenant>`), sort key `numberKey`: one
/// item per listed number, so `add` (`PutItem` conditional on
/// `attribute_not_exists`), `remove` (`DeleteItem` conditional on `attribute_exists`)
/// and `contains` (a strongly consistent `GetItem`) each touch one item, O(1)
/// however long the list. With a cipher, `numberKey` is the number's blind index
/// under the current key and `number` holds it sealed (AES-256-GCM) for
/// `Owner::new(tenant, "do-not-call")`, field `do_not_call.phone_number` (each
/// tenant's list has its own derived key; a value never opens as a call's number);
/// without one both hold the E.164 number, as the calls table keeps numbers without
/// one. `list` queries the local secondary index `added` (`tenant`, `addedSort =
/// <added_at ms>#<numberKey>`, all attributes projected) forward with a strongly
/// consistent read, so pages come oldest first and an entry is listed as soon as it
/// is added; the cursor is the last item's (added_at ms, numberKey) and becomes
/// `addedSort > <that key>`.
///
/// **Rotation and plain items.** A number may be stored under its blind index for
/// any key of the ring or, written before encryption was enabled, under its plain
/// number. `contains` and `remove` try every one of those keys (one request each,
/// in parallel; `remove` deletes all it finds), and `add` first checks the older
/// keys, so a listed number stays listed across a rotation. Items are never
/// rewritten: they keep their key until removed. (Two writers with different key
/// rings adding the same number at the same instant could both write; `remove`
/// takes both out.)
#[derive(Clone)]
pub struct DynamoDoNotCallStore {
    ctx: Ctx,
    table: String,
    cipher: Option<FieldCipher>,
}

impl std::fmt::Debug for DynamoDoNotCallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoDoNotCallStore")
            .field("table", &self.table)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

fn list_owner(tenant: &TenantId) -> Owner {
    Owner::new(tenant.clone(), OWNER_USER)
}

/// Every key a listed `number` may be stored under: its blind index under each key
/// of the ring (current first), then the plain number (items written without one).
fn lookup_keys(cipher: Option<&FieldCipher>, number: &PhoneNumber) -> Vec<String> {
    let mut keys = cipher
        .map(|c| c.blind_indexes(number.as_str()))
        .unwrap_or_default();
    keys.push(number.as_str().to_owned());
    keys
}

/// The item for a new entry.
fn entry_item(entry: &DoNotCallEntry, cipher: Option<&FieldCipher>) -> DResult<Item> {
    let number = entry.phone_number.as_str();
    let (key, stored) = match cipher {
        Some(c) => (
            c.blind_index(number),
            c.encrypt(&list_owner(&entry.tenant), FIELD, number)
                .map_err(DynamoError::Core)?,
        ),
        None => (number.to_owned(), number.to_owned()),
    };
    let sort = time_id_key_ms(entry.added_at.timestamp_millis(), &key);
    Ok(Item::from([
        (
            attr::TENANT.to_owned(),
            s(tenant_key(entry.tenant.as_str())),
        ),
        (attr::NUMBER_KEY.to_owned(), s(key)),
        (attr::ADDED_SORT.to_owned(), s(sort)),
        (attr::NUMBER.to_owned(), s(stored)),
        (attr::ADDED_BY.to_owned(), s(entry.added_by.as_str())),
        (
            attr::ADDED_AT.to_owned(),
            s(entry.added_at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        ),
    ]))
}

/// The entry in an item of `tenant`'s list, opening a sealed number with `cipher`.
fn entry_from_item(
    item: &Item,
    tenant: &TenantId,
    cipher: Option<&FieldCipher>,
) -> DResult<DoNotCallEntry> {
    let field = |name: &str| {
        get_s(item, name)
            .ok_or_else(|| DynamoError::Corrupt(format!("do-not-call item without `{name}`")))
    };
    let stored = field(attr::NUMBER)?;
    let plain = if is_sealed(stored) {
        let cipher = cipher.ok_or_else(|| {
            DynamoError::Core(Error::new(
                ErrorKind::Crypto,
                "the do-not-call entry is encrypted but no master key is configured",
            ))
        })?;
        cipher
            .decrypt(&list_owner(tenant), FIELD, stored)
            .map_err(DynamoError::Core)?
    } else {
        stored.to_owned()
    };
    let phone_number = PhoneNumber::parse(&plain).map_err(|_| {
        DynamoError::Corrupt("a do-not-call number is not a valid E.164 number".into())
    })?;
    let added_at = DateTime::parse_from_rfc3339(field(attr::ADDED_AT)?)
        .map_err(|e| DynamoError::Corrupt(format!("do-not-call `addedAt` does not parse: {e}")))?
        .with_timezone(&Utc);
    Ok(DoNotCallEntry {
        tenant: tenant.clone(),
        phone_number,
        added_by: UserId::new(field(attr::ADDED_BY)?),
        added_at,
    })
}

/// The `addedSort` of an item (its position in the `added` index).
fn position(item: &Item) -> DResult<Cursor> {
    let sort = get_s(item, attr::ADDED_SORT)
        .ok_or_else(|| DynamoError::Corrupt("do-not-call item without `addedSort`".into()))?;
    let key = get_s(item, attr::NUMBER_KEY)
        .ok_or_else(|| DynamoError::Corrupt("do-not-call item without `numberKey`".into()))?;
    let ms = sort
        .split_once('#')
        .and_then(|(t, _)| t.parse::<u64>().ok())
        .map(|t| (t ^ (1u64 << 63)) as i64)
        .ok_or_else(|| DynamoError::Corrupt(format!("bad `addedSort` {sort:?}")))?;
    Ok(Cursor {
        key: ms,
        id: key.to_owned(),
    })
}

fn key_of(tenant: &TenantId, number_key: &str) -> Item {
    Item::from([
        (attr::TENANT.to_owned(), s(tenant_key(tenant.as_str()))),
        (attr::NUMBER_KEY.to_owned(), s(number_key)),
    ])
}

impl DynamoDoNotCallStore {
    /// A store over an existing table (see [`crate::DynamoStores`] to build them all).
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoDoNotCallStore {
            ctx: Ctx::new(client),
            table: table.into(),
            cipher: None,
        }
    }

    /// The same store, sealing each number with `cipher` and keying it by its blind
    /// index (see the type's docs).
    pub fn with_cipher(mut self, cipher: FieldCipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table with its `added` index (on-demand billing) if it does not
    /// exist, and waits until it is active. For development and tests.
    pub async fn create_table(&self) -> Result<()> {
        Ok(crate::tables::create_do_not_call(&self.ctx.client, &self.table).await?)
    }

    /// Deletes the table (a missing table is not an error). For tests.
    pub async fn delete_table(&self) -> Result<()> {
        Ok(crate::tables::delete_one(&self.ctx.client, &self.table).await?)
    }

    /// This store's request and capacity counters.
    pub fn metrics(&self) -> std::sync::Arc<DynamoMetrics> {
        self.ctx.metrics.clone()
    }

    /// A snapshot of this store's counters.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        self.ctx.metrics.snapshot()
    }

    /// Whether an item `(tenant, number_key)` exists (strongly consistent).
    async fn exists(&self, tenant: &TenantId, number_key: &str) -> DResult<bool> {
        let req = self
            .ctx
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(tenant, number_key)))
            .projection_expression("#k")
            .expression_attribute_names("#k", attr::NUMBER_KEY)
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let out = self
            .ctx
            .send(OpKind::Read, req)
            .await
            .map_err(|e| DynamoError::sdk("GetItem", e))?;
        Ok(out.item.is_some_and(|i| !i.is_empty()))
    }

    /// The entry under `(tenant, number_key)`, if any.
    async fn read(&self, tenant: &TenantId, number_key: &str) -> DResult<Option<DoNotCallEntry>> {
        let req = self
            .ctx
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(tenant, number_key)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let out = self
            .ctx
            .send(OpKind::Read, req)
            .await
            .map_err(|e| DynamoError::sdk("GetItem", e))?;
        out.item
            .filter(|i| !i.is_empty())
            .map(|i| entry_from_item(&i, tenant, self.cipher.as_ref()))
            .transpose()
    }

    /// Whether any of `keys` is listed for `tenant` (one `GetItem` each, in parallel).
    async fn any_exists(&self, tenant: &TenantId, keys: &[String]) -> DResult<bool> {
        let found = try_join_all(keys.iter().map(|k| self.exists(tenant, k))).await?;
        Ok(found.into_iter().any(|f| f))
    }

    async fn add_inner(&self, entry: &DoNotCallEntry) -> DResult<bool> {
        let item = entry_item(entry, self.cipher.as_ref())?;
        // Listed under an older key of the ring, or as a plain number?
        let older: Vec<String> = lookup_keys(self.cipher.as_ref(), &entry.phone_number)
            .into_iter()
            .filter(|k| Some(k.as_str()) != get_s(&item, attr::NUMBER_KEY))
            .collect();
        if self.cipher.is_some() && self.any_exists(&entry.tenant, &older).await? {
            return Ok(false);
        }
        let mut e = Expr::new();
        let cond = format!("attribute_not_exists({})", e.name(attr::NUMBER_KEY));
        let req = self
            .ctx
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        match self.ctx.send(OpKind::Write, req).await {
            Ok(_) => Ok(true),
            Err(err) => match DynamoError::sdk("PutItem", err) {
                DynamoError::Conflict(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Deletes `(tenant, number_key)` if it exists; whether it did.
    async fn delete_key(&self, tenant: &TenantId, number_key: &str) -> DResult<bool> {
        let mut e = Expr::new();
        let cond = format!("attribute_exists({})", e.name(attr::NUMBER_KEY));
        let req = self
            .ctx
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_of(tenant, number_key)))
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        match self.ctx.send(OpKind::Write, req).await {
            Ok(_) => Ok(true),
            Err(err) => match DynamoError::sdk("DeleteItem", err) {
                DynamoError::Conflict(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn remove_inner(&self, tenant: &TenantId, number: &PhoneNumber) -> DResult<()> {
        let keys = lookup_keys(self.cipher.as_ref(), number);
        let deleted = try_join_all(keys.iter().map(|k| self.delete_key(tenant, k))).await?;
        if deleted.into_iter().any(|d| d) {
            Ok(())
        } else {
            Err(DynamoError::NotFound(
                "the number is not on the do-not-call list".into(),
            ))
        }
    }

    async fn list_inner(
        &self,
        tenant: &TenantId,
        limit: u32,
        cursor: Option<&str>,
    ) -> DResult<Page<DoNotCallEntry>> {
        let limit = page_limit(limit)?;
        let after = cursor
            .map(Cursor::decode)
            .transpose()
            .map_err(DynamoError::Core)?;
        let mut e = Expr::new();
        let mut cond = format!(
            "{} = {}",
            e.name(attr::TENANT),
            e.value(s(tenant_key(tenant.as_str())))
        );
        if let Some(c) = &after {
            cond = format!(
                "{cond} AND {} > {}",
                e.name(attr::ADDED_SORT),
                e.value(s(time_id_key_ms(c.key, &c.id)))
            );
        }
        let spec = QuerySpec {
            table: self.table.clone(),
            index: Some(ADDED_INDEX),
            key_condition: cond,
            filter: None,
            expr: e,
            forward: true,
            consistent: true,
        };
        let mut items = self.ctx.query_items(&spec, limit + 1).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = match items.last() {
            Some(last) if more => Some(position(last)?.encode()),
            _ => None,
        };
        let items = items
            .iter()
            .map(|i| entry_from_item(i, tenant, self.cipher.as_ref()))
            .collect::<DResult<Vec<_>>>()?;
        Ok(Page { items, next_cursor })
    }
}

/// Key rotation ([`DoNotCallStore::reseal_page`]): a consistent Scan page; an
/// entry under an old key (or plain) moves to its key under the current one in
/// one transaction: delete the old item (only as it was read) and put the new
/// one (only if the list does not hold that key yet), else it is deferred.
impl DynamoDoNotCallStore {
    async fn reseal_page_inner(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        let cipher = check_reseal(self.cipher.as_ref(), rewrite, limit)?;
        let (items, next_cursor) = crate::rotation::scan_page(
            &self.ctx,
            &self.table,
            &[attr::TENANT, attr::NUMBER_KEY],
            limit,
            cursor,
            None,
        )
        .await?;
        let mut tally = KeyTally::default();
        for item in &items {
            let mut found = KeyUsage::default();
            if let Some(k) = get_s(item, attr::NUMBER_KEY) {
                found.note_index(k);
            }
            if let Some(n) = get_s(item, attr::NUMBER) {
                found.note_value(n);
            }
            let outcome = match cipher {
                Some(c) if found.needs_rewrite(c) => self.reseal(c, item).await?,
                _ => RowOutcome::Untouched,
            };
            tally.record(&found, outcome);
        }
        Ok(ResealPage { tally, next_cursor })
    }

    async fn reseal(&self, cipher: &FieldCipher, item: &Item) -> DResult<RowOutcome> {
        let (Some(tenant), Some(old_key), Some(old_number)) = (
            get_s(item, attr::TENANT).and_then(|t| t.strip_prefix("T#")),
            get_s(item, attr::NUMBER_KEY),
            get_s(item, attr::NUMBER),
        ) else {
            return Ok(RowOutcome::Unreadable);
        };
        let tenant = TenantId::new(tenant);
        let Ok(entry) = entry_from_item(item, &tenant, Some(cipher)) else {
            return Ok(RowOutcome::Unreadable);
        };
        let new_item = entry_item(&entry, Some(cipher))?;
        let mut after = KeyUsage::default();
        if let (Some(k), Some(n)) = (
            get_s(&new_item, attr::NUMBER_KEY),
            get_s(&new_item, attr::NUMBER),
        ) {
            after.note_index(k);
            after.note_value(n);
        }
        let key = Item::from([
            (attr::TENANT.to_owned(), s(tenant_key(tenant.as_str()))),
            (attr::NUMBER_KEY.to_owned(), s(old_key)),
        ]);
        let mut de = Expr::new();
        let delete_cond = format!("{} = {}", de.name(attr::NUMBER), de.value(s(old_number)));
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression(delete_cond)
            .set_expression_attribute_names(de.names())
            .set_expression_attribute_values(de.values())
            .build()
            .map_err(|e| DynamoError::Corrupt(format!("request could not be built: {e}")))?;
        let mut pe = Expr::new();
        let put_cond = format!("attribute_not_exists({})", pe.name(attr::NUMBER_KEY));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(new_item))
            .condition_expression(put_cond)
            .set_expression_attribute_names(pe.names())
            .build()
            .map_err(|e| DynamoError::Corrupt(format!("request could not be built: {e}")))?;
        let req = self
            .ctx
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        match self.ctx.send(OpKind::Write, req).await {
            Ok(_) => Ok(RowOutcome::Rewritten(after)),
            // A condition failed: the item changed, or the new key is listed.
            Err(err) if err.code() == Some("TransactionCanceledException") => {
                Ok(RowOutcome::Deferred)
            }
            Err(err) => match DynamoError::sdk("TransactWriteItems", err) {
                DynamoError::Conflict(_) => Ok(RowOutcome::Deferred),
                other => Err(other),
            },
        }
    }
}

#[async_trait::async_trait]
impl DoNotCallStore for DynamoDoNotCallStore {
    async fn add(&self, entry: &DoNotCallEntry) -> Result<bool> {
        Ok(self.add_inner(entry).await?)
    }

    async fn remove(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<()> {
        Ok(self.remove_inner(tenant, number).await?)
    }

    async fn contains(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<bool> {
        let keys = lookup_keys(self.cipher.as_ref(), number);
        Ok(self.any_exists(tenant, &keys).await?)
    }

    async fn get(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<Option<DoNotCallEntry>> {
        let keys = lookup_keys(self.cipher.as_ref(), number);
        let found = try_join_all(keys.iter().map(|k| self.read(tenant, k))).await?;
        Ok(found.into_iter().flatten().min_by_key(|e| e.added_at))
    }

    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<DoNotCallEntry>> {
        Ok(self.list_inner(tenant, limit, cursor).await?)
    }

    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        self.reseal_page_inner(rewrite, limit, cursor).await
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
            added_at: DateTime::from_timestamp_nanos(1_700_000_000_123_456_789),
        }
    }

    #[test]
    fn sealed_items_hold_no_plaintext_and_round_trip_exactly() {
        let ring = FieldCipher::new(vec![MasterKey::new(1, [1; 32])]).expect("cipher");
        let e = entry();
        let item = entry_item(&e, Some(&ring)).expect("item");
        let shown = format!("{item:?}");
        assert!(!shown.contains("4155550199"), "{shown}");
        let key = get_s(&item, attr::NUMBER_KEY).expect("key");
        assert!(key.starts_with("bi1."));
        assert!(
            get_s(&item, attr::NUMBER)
                .expect("number")
                .starts_with("cc1.1.")
        );
        assert_eq!(
            entry_from_item(&item, &e.tenant, Some(&ring)).expect("open"),
            e
        );
        let err = entry_from_item(&item, &TenantId::new("globex"), Some(&ring))
            .expect_err("another tenant");
        assert!(matches!(err, DynamoError::Core(ref c) if c.kind() == ErrorKind::Crypto));
        let err = entry_from_item(&item, &e.tenant, None).expect_err("no cipher");
        assert!(matches!(err, DynamoError::Core(ref c) if c.kind() == ErrorKind::Crypto));
        assert_eq!(lookup_keys(Some(&ring), &e.phone_number)[0], key);
    }

    #[test]
    fn plain_items_use_the_number_and_positions_decode() {
        let e = entry();
        let item = entry_item(&e, None).expect("item");
        assert_eq!(get_s(&item, attr::NUMBER_KEY), Some("+14155550199"));
        assert_eq!(get_s(&item, attr::TENANT), Some("T#acme"));
        let p = position(&item).expect("position");
        assert_eq!(p.key, e.added_at.timestamp_millis());
        assert_eq!(p.id, "+14155550199");
        assert_eq!(
            time_id_key_ms(p.key, &p.id),
            get_s(&item, attr::ADDED_SORT).expect("sort")
        );
        assert_eq!(entry_from_item(&item, &e.tenant, None).expect("open"), e);
    }
}
