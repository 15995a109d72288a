//! [`DynamoWindowStore`]: call windows keyed by owner and window id.
//!
//! Partition key `ownerKey`, sort key `windowId` (UUIDv7, so id order is creation
//! order): get, list and delete for an owner hit one partition. `list_all` reads the
//! sharded `all-windows` index (`allShard = W#<n>`, sort key `windowId`) and merges
//! the shards in id order.
//!
//! The `window` attribute holds the window's JSON record; with a cipher
//! ([`DynamoWindowStore::with_cipher`]) the template's personal fields are sealed
//! in it ([`callcat_core::seal_window`]). Records written before read as they are.

use aws_sdk_dynamodb::types::ReturnConsumedCapacity;
use callcat_core::cursor::Cursor;
use callcat_core::rotation::{KeyTally, ResealPage, RowOutcome, check_reseal};
use callcat_core::{
    CallWindow, FieldCipher, KeyUsage, Owner, Page, Result, WindowId, WindowStore, open_window,
    seal_window,
};
use futures::future::try_join_all;

use crate::client::{Ctx, Expr, Item, QuerySpec, get_s, page_limit, s};
use crate::error::{DResult, DynamoError};
use crate::keys::shard_of;
use crate::metrics::{DynamoMetrics, MetricsSnapshot, OpKind};

mod attr {
    pub const OWNER: &str = "ownerKey";
    pub const WINDOW_ID: &str = "windowId";
    pub const WINDOW: &str = "window";
    pub const ALL_SHARD: &str = "allShard";
}

const ALL_INDEX: &str = "all-windows";

/// Call windows in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoWindowStore {
    ctx: Ctx,
    table: String,
    shards: u32,
    cipher: Option<FieldCipher>,
}

impl std::fmt::Debug for DynamoWindowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoWindowStore")
            .field("table", &self.table)
            .field("shards", &self.shards)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// The stored record of an item (sealed fields still sealed).
fn record_of(item: &Item) -> DResult<serde_json::Value> {
    let json = get_s(item, attr::WINDOW)
        .ok_or_else(|| DynamoError::Corrupt("window item without `window`".into()))?;
    serde_json::from_str(json)
        .map_err(|e| DynamoError::Corrupt(format!("window does not parse: {e}")))
}

/// The window of an item, its sealed fields opened with `cipher`.
fn window_from_item(item: &Item, cipher: Option<&FieldCipher>) -> DResult<CallWindow> {
    open_window(record_of(item)?, cipher).map_err(DynamoError::Core)
}

impl DynamoWindowStore {
    /// A store over an existing table; `shards` spreads the `all-windows` index.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, shards: u32) -> Self {
        DynamoWindowStore {
            ctx: Ctx::new(client),
            table: table.into(),
            shards: shards.clamp(1, crate::config::MAX_SHARDS),
            cipher: None,
        }
    }

    /// The same store, sealing each window's template (phone number, caller
    /// number, callee name, subject, prompt, variables) with `cipher` before it
    /// is stored.
    pub fn with_cipher(mut self, cipher: FieldCipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the windows table with its index (on-demand billing) if it does not exist, and waits
    /// until it is active. For development and tests.
    pub async fn create_table(&self) -> Result<()> {
        Ok(crate::tables::create_windows(&self.ctx.client, &self.table).await?)
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

    fn key(owner: &Owner, id: WindowId) -> Item {
        Item::from([
            (attr::OWNER.to_owned(), s(owner.key())),
            (attr::WINDOW_ID.to_owned(), s(id.to_string())),
        ])
    }

    /// Writes the window: a new one (`exists = false`: `Conflict` if its id is
    /// taken) or a replacement (`exists = true`: `NotFound` unless the owner's
    /// window is there).
    async fn put_inner(&self, window: &CallWindow, exists: bool) -> DResult<()> {
        let record = seal_window(window, self.cipher.as_ref()).map_err(DynamoError::Core)?;
        let json = serde_json::to_string(&record)
            .map_err(|e| DynamoError::Corrupt(format!("window does not serialize: {e}")))?;
        let mut item = Self::key(&window.owner, window.id);
        item.insert(attr::WINDOW.into(), s(json));
        item.insert(
            attr::ALL_SHARD.into(),
            s(format!("W#{}", shard_of(window.id.as_uuid(), self.shards))),
        );
        let mut e = Expr::new();
        let cond = if exists {
            format!("attribute_exists({})", e.name(attr::WINDOW_ID))
        } else {
            format!("attribute_not_exists({})", e.name(attr::WINDOW_ID))
        };
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
            Ok(_) => Ok(()),
            Err(err) => Err(match DynamoError::sdk("PutItem", err) {
                DynamoError::Conflict(_) if exists => {
                    DynamoError::NotFound(format!("window {} not found", window.id))
                }
                DynamoError::Conflict(_) => {
                    DynamoError::Conflict(format!("window {} already exists", window.id))
                }
                other => other,
            }),
        }
    }

    async fn get_inner(&self, owner: &Owner, id: WindowId) -> DResult<Option<CallWindow>> {
        let req = self
            .ctx
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, id)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let out = self
            .ctx
            .send(OpKind::Read, req)
            .await
            .map_err(|e| DynamoError::sdk("GetItem", e))?;
        out.item
            .as_ref()
            .map(|i| window_from_item(i, self.cipher.as_ref()))
            .transpose()
            .map(|w| w.filter(|w| &w.owner == owner))
    }

    async fn list_inner(&self, owner: &Owner) -> DResult<Vec<CallWindow>> {
        let mut e = Expr::new();
        let cond = format!("{} = {}", e.name(attr::OWNER), e.value(s(owner.key())));
        let spec = QuerySpec {
            table: self.table.clone(),
            index: None,
            key_condition: cond,
            filter: None,
            expr: e,
            forward: true,
            consistent: true,
        };
        self.ctx
            .query_items(&spec, usize::MAX)
            .await?
            .iter()
            .map(|i| window_from_item(i, self.cipher.as_ref()))
            .collect()
    }

    async fn list_all_inner(&self, limit: u32, cursor: Option<&str>) -> DResult<Page<CallWindow>> {
        let limit = page_limit(limit)?;
        let after: Option<WindowId> = cursor
            .map(|c| {
                Cursor::decode(c)
                    .ok()
                    .and_then(|c| c.id.parse().ok())
                    .ok_or_else(|| DynamoError::Validation {
                        field: "nextToken",
                        message: "the page token is not valid".into(),
                    })
            })
            .transpose()?;
        let specs: Vec<QuerySpec> = (0..self.shards)
            .map(|n| {
                let mut e = Expr::new();
                let mut cond = format!(
                    "{} = {}",
                    e.name(attr::ALL_SHARD),
                    e.value(s(format!("W#{n}")))
                );
                if let Some(a) = after {
                    cond = format!(
                        "{cond} AND {} > {}",
                        e.name(attr::WINDOW_ID),
                        e.value(s(a.to_string()))
                    );
                }
                QuerySpec {
                    table: self.table.clone(),
                    index: Some(ALL_INDEX),
                    key_condition: cond,
                    filter: None,
                    expr: e,
                    forward: true,
                    consistent: false,
                }
            })
            .collect();
        let pages =
            try_join_all(specs.iter().map(|sp| self.ctx.query_items(sp, limit + 1))).await?;
        let mut items = pages
            .iter()
            .flatten()
            .map(|i| window_from_item(i, self.cipher.as_ref()))
            .collect::<DResult<Vec<_>>>()?;
        items.sort_by_key(|w| w.id);
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = more
            .then(|| {
                items.last().map(|w| {
                    Cursor {
                        key: 0,
                        id: w.id.to_string(),
                    }
                    .encode()
                })
            })
            .flatten();
        Ok(Page { items, next_cursor })
    }

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
            &[attr::OWNER, attr::WINDOW_ID],
            limit,
            cursor,
            None,
        )
        .await?;
        let mut tally = KeyTally::default();
        for item in &items {
            let record = record_of(item)?;
            let found = KeyUsage::of_window(&record);
            let outcome = match cipher {
                Some(c) if found.needs_rewrite(c) => self.reseal(c, item, record).await?,
                _ => RowOutcome::Untouched,
            };
            tally.record(&found, outcome);
        }
        Ok(ResealPage { tally, next_cursor })
    }

    /// Re-seals one window item, only if its record is unchanged since read.
    async fn reseal(
        &self,
        cipher: &FieldCipher,
        item: &Item,
        record: serde_json::Value,
    ) -> DResult<RowOutcome> {
        let (Ok(window), Some(old)) =
            (open_window(record, Some(cipher)), get_s(item, attr::WINDOW))
        else {
            return Ok(RowOutcome::Unreadable);
        };
        let sealed = seal_window(&window, Some(cipher)).map_err(DynamoError::Core)?;
        let after = KeyUsage::of_window(&sealed);
        let json = serde_json::to_string(&sealed)
            .map_err(|e| DynamoError::Corrupt(format!("window does not serialize: {e}")))?;
        let mut e = Expr::new();
        let name = e.name(attr::WINDOW);
        let update = format!("SET {name} = {}", e.value(s(json)));
        let condition = format!("{name} = {}", e.value(s(old)));
        crate::rotation::conditional_update(
            &self.ctx,
            &self.table,
            Self::key(&window.owner, window.id),
            update,
            condition,
            e,
            after,
        )
        .await
    }

    async fn delete_inner(&self, owner: &Owner, id: WindowId) -> DResult<()> {
        let mut e = Expr::new();
        let cond = format!("attribute_exists({})", e.name(attr::WINDOW_ID));
        let req = self
            .ctx
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, id)))
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        match self.ctx.send(OpKind::Write, req).await {
            Ok(_) => Ok(()),
            Err(err) => Err(match DynamoError::sdk("DeleteItem", err) {
                DynamoError::Conflict(_) => DynamoError::NotFound(format!("window {id} not found")),
                other => other,
            }),
        }
    }
}

#[async_trait::async_trait]
impl WindowStore for DynamoWindowStore {
    async fn create(&self, window: &CallWindow) -> Result<()> {
        window.schedule.validate()?;
        Ok(self.put_inner(window, false).await?)
    }

    async fn get(&self, owner: &Owner, id: WindowId) -> Result<Option<CallWindow>> {
        Ok(self.get_inner(owner, id).await?)
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<CallWindow>> {
        Ok(self.list_inner(owner).await?)
    }

    async fn list_all(&self, limit: u32, cursor: Option<&str>) -> Result<Page<CallWindow>> {
        Ok(self.list_all_inner(limit, cursor).await?)
    }

    async fn update(&self, window: &CallWindow) -> Result<()> {
        window.schedule.validate()?;
        Ok(self.put_inner(window, true).await?)
    }

    async fn delete(&self, owner: &Owner, id: WindowId) -> Result<()> {
        Ok(self.delete_inner(owner, id).await?)
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
