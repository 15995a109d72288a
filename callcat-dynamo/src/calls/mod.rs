//! [`DynamoCallStore`]: calls in one DynamoDB table with six global secondary indexes.

mod by_number;
mod claim;
pub(crate) mod item;
mod list;
mod rotation;

use std::sync::Arc;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    Delete, Put, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use callcat_core::rotation::ResealPage;
use callcat_core::{
    ActiveScope, Call, CallId, CallStatus, CallStore, Created, FieldCipher, ListQuery, Owner, Page,
    Result, StoreCapabilities, TenantId, WorkerId,
};
use chrono::{DateTime, Utc};

use crate::client::{Ctx, Expr, Item, get_s, s};
use crate::error::{DResult, DynamoError};
use crate::metrics::{DynamoMetrics, MetricsSnapshot, OpKind};
use item::{attr, call_from_item, call_item, call_pk, idem_pk, provider_pk, update_expression};

/// How many times a write re-reads and tries again when racing another writer
/// on a guard item (not a CAS conflict, which is returned to the caller).
const GUARD_ATTEMPTS: usize = 4;

/// Calls in a DynamoDB table. See the crate documentation for the key design.
#[derive(Clone)]
pub struct DynamoCallStore {
    ctx: Ctx,
    table: String,
    shards: u32,
    cipher: Option<FieldCipher>,
}

impl std::fmt::Debug for DynamoCallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoCallStore")
            .field("table", &self.table)
            .field("shards", &self.shards)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

fn item_key(
    pk: String,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    std::collections::HashMap::from([(attr::PK.to_owned(), s(pk))])
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> DynamoError {
    DynamoError::Corrupt(format!("request could not be built: {e}"))
}

/// Which transaction items failed their condition, when DynamoDB says.
fn canceled_reasons(
    err: &SdkError<TransactWriteItemsError, impl std::fmt::Debug>,
) -> Option<Vec<bool>> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e))
            if !e.cancellation_reasons().is_empty() =>
        {
            Some(
                e.cancellation_reasons()
                    .iter()
                    .map(|r| r.code() == Some("ConditionalCheckFailed"))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Whether the transaction was canceled only because another transaction raced it.
fn canceled_by_race(err: &SdkError<TransactWriteItemsError, impl std::fmt::Debug>) -> bool {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("TransactionConflict")),
        _ => err.code() == Some("TransactionConflictException"),
    }
}

impl DynamoCallStore {
    /// A store over an existing table (see [`crate::DynamoStores`] to build all three).
    /// `shards` is the number of due-index and active-index shards (1 to 256).
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, shards: u32) -> Self {
        DynamoCallStore {
            ctx: Ctx::new(client),
            table: table.into(),
            shards: shards.clamp(1, crate::config::MAX_SHARDS),
            cipher: None,
        }
    }

    /// The same store, sealing each call's phone number, caller number and recording
    /// URL with `cipher` and storing the phone number's blind index in `phoneIndex`
    /// (see the crate docs, "Encryption at rest").
    pub fn with_cipher(mut self, cipher: FieldCipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// The item for `call` (sealed under the current key with a cipher).
    fn item(&self, call: &Call) -> DResult<Item> {
        call_item(call, self.shards, self.cipher.as_ref())
    }

    /// The call in `item` (opened with the cipher).
    fn open(&self, item: &Item) -> DResult<Call> {
        call_from_item(item, self.cipher.as_ref())
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the calls table with its six indexes (on-demand billing) if it does not exist, and waits
    /// until it is active. For development and tests.
    pub async fn create_table(&self) -> Result<()> {
        Ok(crate::tables::create_calls(&self.ctx.client, &self.table).await?)
    }

    /// Deletes the table (a missing table is not an error). For tests.
    pub async fn delete_table(&self) -> Result<()> {
        Ok(crate::tables::delete_one(&self.ctx.client, &self.table).await?)
    }

    /// The number of due and active index shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// This store's request and capacity counters.
    pub fn metrics(&self) -> Arc<DynamoMetrics> {
        self.ctx.metrics.clone()
    }

    /// A snapshot of this store's counters.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        self.ctx.metrics.snapshot()
    }

    async fn get_item(&self, pk: String) -> DResult<Option<Item>> {
        let req = self
            .ctx
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item_key(pk)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let out = self
            .ctx
            .send(OpKind::Read, req)
            .await
            .map_err(|e| DynamoError::sdk("GetItem", e))?;
        Ok(out.item)
    }

    async fn get_call(&self, id: CallId) -> DResult<Option<Call>> {
        self.get_item(call_pk(id))
            .await?
            .map(|i| self.open(&i))
            .transpose()
    }

    fn put_new_call(&self, item: Item) -> DResult<Put> {
        let mut e = Expr::new();
        let cond = format!("attribute_not_exists({})", e.name(attr::PK));
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .build()
            .map_err(build_err)
    }

    fn guard_put(&self, pk: String, id: CallId, exclusive: bool) -> DResult<Put> {
        let mut e = Expr::new();
        let pk_name = e.name(attr::PK);
        let cond = if exclusive {
            format!("attribute_not_exists({pk_name})")
        } else {
            let idn = e.name(attr::CALL_ID);
            let idv = e.value(s(id.to_string()));
            format!("attribute_not_exists({pk_name}) OR {idn} = {idv}")
        };
        Put::builder()
            .table_name(&self.table)
            .item(attr::PK, s(pk))
            .item(attr::CALL_ID, s(id.to_string()))
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .build()
            .map_err(build_err)
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> std::result::Result<
        (),
        SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
    > {
        let req = self
            .ctx
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        self.ctx.send(OpKind::Write, req).await.map(|_| ())
    }

    /// The call an idempotency guard points to, if both still exist.
    async fn existing_for_key(&self, owner: &Owner, key: &str) -> DResult<Option<Call>> {
        let Some(guard) = self.get_item(idem_pk(owner, key)).await? else {
            return Ok(None);
        };
        let id: CallId = get_s(&guard, attr::CALL_ID)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| DynamoError::Corrupt("idempotency guard without a call id".into()))?;
        match self.get_call(id).await? {
            Some(c) => Ok(Some(c)),
            None => {
                // The guard outlived its call (deleted by hand): remove it so the key is free.
                let mut e = Expr::new();
                let cond = format!("{} = {}", e.name(attr::CALL_ID), e.value(s(id.to_string())));
                let req = self
                    .ctx
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(item_key(idem_pk(owner, key))))
                    .condition_expression(cond)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send();
                match self.ctx.send(OpKind::Write, req).await {
                    Ok(_) => Ok(None),
                    Err(e) => match DynamoError::sdk("DeleteItem", e) {
                        DynamoError::Conflict(_) => Ok(None),
                        other => Err(other),
                    },
                }
            }
        }
    }

    async fn create_inner(&self, call: &Call) -> DResult<Created> {
        if call.version != 0 {
            return Err(DynamoError::Validation {
                field: "version",
                message: "a new call must have version 0".into(),
            });
        }
        let provider = call.provider_call_id.as_deref().filter(|p| !p.is_empty());
        let idem = call.idempotency_key.as_deref();
        if idem.is_none() && provider.is_none() {
            let mut e = Expr::new();
            let cond = format!("attribute_not_exists({})", e.name(attr::PK));
            let req = self
                .ctx
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(self.item(call)?))
                .condition_expression(cond)
                .set_expression_attribute_names(e.names())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send();
            return match self.ctx.send(OpKind::Write, req).await {
                Ok(_) => Ok(Created::New(call.clone())),
                Err(e) => Err(match DynamoError::sdk("PutItem", e) {
                    DynamoError::Conflict(_) => {
                        DynamoError::Conflict(format!("call {} already exists", call.id))
                    }
                    other => other,
                }),
            };
        }
        for _ in 0..GUARD_ATTEMPTS {
            if let Some(key) = idem
                && let Some(existing) = self.existing_for_key(&call.owner, key).await?
            {
                return Ok(Created::Existing(existing));
            }
            let mut items = vec![
                TransactWriteItem::builder()
                    .put(self.put_new_call(self.item(call)?)?)
                    .build(),
            ];
            let idem_at = idem.map(|key| {
                items.push(
                    TransactWriteItem::builder()
                        .put(self.guard_put(idem_pk(&call.owner, key), call.id, true)?)
                        .build(),
                );
                Ok::<usize, DynamoError>(items.len() - 1)
            });
            let idem_at = idem_at.transpose()?;
            let provider_at = provider.map(|p| {
                items.push(
                    TransactWriteItem::builder()
                        .put(self.guard_put(provider_pk(p), call.id, false)?)
                        .build(),
                );
                Ok::<usize, DynamoError>(items.len() - 1)
            });
            let provider_at = provider_at.transpose()?;
            let err = match self.transact(items).await {
                Ok(()) => return Ok(Created::New(call.clone())),
                Err(e) => e,
            };
            if canceled_by_race(&err) {
                continue;
            }
            let Some(failed) = canceled_reasons(&err) else {
                return Err(DynamoError::sdk("TransactWriteItems", err));
            };
            let failed_at = |i: Option<usize>| i.is_some_and(|i| failed.get(i) == Some(&true));
            if failed_at(idem_at) {
                // Someone holds the key: loop to read what they stored.
                continue;
            }
            if failed.first() == Some(&true) {
                return Err(DynamoError::Conflict(format!(
                    "call {} already exists",
                    call.id
                )));
            }
            if failed_at(provider_at) {
                return Err(DynamoError::Conflict(
                    "provider call id already belongs to another call".into(),
                ));
            }
            return Err(DynamoError::sdk("TransactWriteItems", err));
        }
        Err(DynamoError::Conflict(format!(
            "call {} could not be created: its idempotency key kept changing hands",
            call.id
        )))
    }

    /// The compare-and-swap condition on a call item, filling `e`.
    fn cas_condition(&self, call: &Call, e: &mut Expr) -> String {
        format!(
            "attribute_exists({pk}) AND {ver} = {v} AND {own} = {o}",
            pk = e.name(attr::PK),
            ver = e.name(attr::VERSION),
            v = e.value(crate::client::n(call.version)),
            own = e.name(attr::OWNER),
            o = e.value(s(call.owner.key())),
        )
    }

    /// Why a CAS on `call` failed, given the stored item (if any).
    fn diagnose(&self, call: &Call, stored: Option<&Item>) -> DResult<DynamoError> {
        let Some(stored) = stored else {
            return Ok(DynamoError::NotFound(format!("call {} not found", call.id)));
        };
        let stored = self.open(stored)?;
        if stored.version != call.version {
            return Ok(DynamoError::Conflict(format!(
                "call {} was changed concurrently (version {} != {})",
                call.id, stored.version, call.version
            )));
        }
        if stored.owner != call.owner {
            return Ok(DynamoError::Conflict("a call's owner cannot change".into()));
        }
        Ok(DynamoError::Conflict(format!(
            "call {} could not be written",
            call.id
        )))
    }

    async fn update_inner(&self, call: &Call) -> DResult<Call> {
        let mut next = call.clone();
        next.version = call
            .version
            .checked_add(1)
            .ok_or_else(|| DynamoError::Conflict("version overflow".into()))?;
        let item = self.item(&next)?;
        let provider = next.provider_call_id.as_deref().filter(|p| !p.is_empty());

        // Fast path: one UpdateItem, conditional on the version, the owner, and the
        // provider call id being unchanged (so its uniqueness guard already exists).
        let mut e = Expr::new();
        let update = update_expression(&item, &mut e);
        let mut cond = self.cas_condition(call, &mut e);
        if let Some(p) = provider {
            cond = format!("{cond} AND {} = {}", e.name(attr::PROVIDER), e.value(s(p)));
        }
        let req = self
            .ctx
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(call_pk(call.id))))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let err = match self.ctx.send(OpKind::Write, req).await {
            Ok(_) => return Ok(next),
            Err(e) => e,
        };
        let old = match err.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => c.item().cloned(),
            _ => return Err(DynamoError::sdk("UpdateItem", err)),
        };
        // DynamoDB returns the old item on a failed condition; fall back to a read.
        let old = match old {
            Some(o) => Some(o),
            None => self.get_item(call_pk(call.id)).await?,
        };
        let stored_provider = old.as_ref().and_then(|o| get_s(o, attr::PROVIDER));
        let cas_ok = match &old {
            Some(o) => {
                let stored = self.open(o)?;
                stored.version == call.version && stored.owner == call.owner
            }
            None => false,
        };
        if !cas_ok || provider.is_none() || stored_provider == provider {
            return Err(self.diagnose(call, old.as_ref())?);
        }
        let Some(p) = provider else {
            return Err(self.diagnose(call, old.as_ref())?);
        };

        // The provider call id is new: claim its guard in the same transaction.
        let mut e = Expr::new();
        let update = update_expression(&item, &mut e);
        let cond = self.cas_condition(call, &mut e);
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(call_pk(call.id))))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .build()
            .map_err(build_err)?;
        let items = vec![
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder()
                .put(self.guard_put(provider_pk(p), call.id, false)?)
                .build(),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(next),
            Err(err) => {
                let failed = canceled_reasons(&err);
                if let Some(failed) = failed {
                    if failed.first() == Some(&true) {
                        let stored = self.get_item(call_pk(call.id)).await?;
                        return Err(self.diagnose(call, stored.as_ref())?);
                    }
                    if failed.get(1) == Some(&true) {
                        return Err(DynamoError::Conflict(
                            "provider call id already belongs to another call".into(),
                        ));
                    }
                }
                if canceled_by_race(&err) {
                    return Err(DynamoError::Conflict(format!(
                        "call {} was changed concurrently",
                        call.id
                    )));
                }
                Err(DynamoError::sdk("TransactWriteItems", err))
            }
        }
    }

    async fn delete_inner(&self, owner: &Owner, id: CallId) -> DResult<()> {
        for _ in 0..GUARD_ATTEMPTS {
            let Some(stored) = self.get_call(id).await?.filter(|c| &c.owner == owner) else {
                return Err(DynamoError::NotFound(format!("call {id} not found")));
            };
            if stored.status != CallStatus::Scheduled {
                return Err(DynamoError::Conflict(format!(
                    "only a scheduled call can be deleted; this one is {}",
                    stored.status
                )));
            }
            let mut e = Expr::new();
            let cond = format!(
                "{} = {} AND {} = {}",
                e.name(attr::VERSION),
                e.value(crate::client::n(stored.version)),
                e.name(attr::STATUS),
                e.value(s(CallStatus::Scheduled.as_str())),
            );
            let mut guards = Vec::new();
            if let Some(k) = &stored.idempotency_key {
                guards.push(idem_pk(owner, k));
            }
            if let Some(p) = stored.provider_call_id.as_deref().filter(|p| !p.is_empty()) {
                guards.push(provider_pk(p));
            }
            let result = if guards.is_empty() {
                let req = self
                    .ctx
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(item_key(call_pk(id))))
                    .condition_expression(cond)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send();
                match self.ctx.send(OpKind::Write, req).await {
                    Ok(_) => Ok(()),
                    Err(err) => Err(DynamoError::sdk("DeleteItem", err)),
                }
            } else {
                let mut items = vec![
                    TransactWriteItem::builder()
                        .delete(
                            Delete::builder()
                                .table_name(&self.table)
                                .set_key(Some(item_key(call_pk(id))))
                                .condition_expression(cond)
                                .set_expression_attribute_names(e.names())
                                .set_expression_attribute_values(e.values())
                                .build()
                                .map_err(build_err)?,
                        )
                        .build(),
                ];
                for g in guards {
                    let mut ge = Expr::new();
                    let gcond = format!(
                        "attribute_not_exists({}) OR {} = {}",
                        ge.name(attr::PK),
                        ge.name(attr::CALL_ID),
                        ge.value(s(id.to_string()))
                    );
                    items.push(
                        TransactWriteItem::builder()
                            .delete(
                                Delete::builder()
                                    .table_name(&self.table)
                                    .set_key(Some(item_key(g)))
                                    .condition_expression(gcond)
                                    .set_expression_attribute_names(ge.names())
                                    .set_expression_attribute_values(ge.values())
                                    .build()
                                    .map_err(build_err)?,
                            )
                            .build(),
                    );
                }
                match self.transact(items).await {
                    Ok(()) => Ok(()),
                    Err(err) if canceled_reasons(&err).is_some() || canceled_by_race(&err) => {
                        Err(DynamoError::Conflict("changed while deleting".into()))
                    }
                    Err(err) => Err(DynamoError::sdk("TransactWriteItems", err)),
                }
            };
            match result {
                Ok(()) => return Ok(()),
                // Changed between the read and the delete: read again and re-decide.
                Err(DynamoError::Conflict(_)) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(DynamoError::Conflict(format!(
            "call {id} kept changing while being deleted"
        )))
    }
}

#[async_trait::async_trait]
impl CallStore for DynamoCallStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities {
            cross_process_wakeups: false,
            shared_between_processes: true,
        }
    }

    async fn create(&self, call: &Call) -> Result<Created> {
        Ok(self.create_inner(call).await?)
    }

    async fn get(&self, id: CallId) -> Result<Option<Call>> {
        Ok(self.get_call(id).await?)
    }

    async fn update(&self, call: &Call) -> Result<Call> {
        Ok(self.update_inner(call).await?)
    }

    async fn delete_if_scheduled(&self, owner: &Owner, id: CallId) -> Result<()> {
        Ok(self.delete_inner(owner, id).await?)
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page<Call>> {
        Ok(self.list_inner(owner, query).await?)
    }

    async fn find_by_provider_call_id(&self, provider_call_id: &str) -> Result<Option<Call>> {
        Ok(self.find_by_provider_inner(provider_call_id).await?)
    }

    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        Ok(self.list_active_inner(scope, limit, cursor).await?)
    }

    async fn count_active(&self, scope: &ActiveScope) -> Result<u64> {
        Ok(self.count_active_inner(scope).await?)
    }

    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        Ok(self
            .list_tenant_range_inner(tenant, from, to, limit, cursor)
            .await?)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Call>> {
        Ok(self
            .claim_due_inner(now, limit, worker, lease_until, None)
            .await?)
    }

    async fn claim_due_capped(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
        owner_cap: u32,
    ) -> Result<Vec<Call>> {
        Ok(self
            .claim_due_inner(now, limit, worker, lease_until, Some(owner_cap))
            .await?)
    }

    async fn next_due_capped(&self, owner_cap: u32) -> Result<callcat_core::store::NextDue> {
        Ok(self.next_due_capped_inner(owner_cap).await?)
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self.next_due_at_inner().await?)
    }

    async fn active_calls_to_number(
        &self,
        scope: &ActiveScope,
        number: &callcat_core::PhoneNumber,
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
        self.reseal_page_inner(rewrite, limit, cursor).await
    }
}
