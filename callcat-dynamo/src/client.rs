//! The shared client handle: sends requests, counts them, and builds expressions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity};

use crate::error::{DResult, DynamoError};
use crate::metrics::{DynamoMetrics, OpKind};
use callcat_core::store::MAX_PAGE_SIZE;

/// An item as DynamoDB returns it.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// A client plus the counters of the store that uses it.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) metrics: Arc<DynamoMetrics>,
}

impl Ctx {
    pub(crate) fn new(client: Client) -> Self {
        Ctx {
            client,
            metrics: Arc::new(DynamoMetrics::new()),
        }
    }

    /// Awaits one request, counting it and the capacity it consumed.
    pub(crate) async fn send<O, E, R>(
        &self,
        kind: OpKind,
        request: impl Future<Output = Result<O, SdkError<E, R>>>,
    ) -> Result<O, SdkError<E, R>>
    where
        O: Capacity,
        E: ProvideErrorMetadata,
    {
        self.metrics.request();
        let out = request.await;
        match &out {
            Ok(o) => self.metrics.consumed(kind, o.capacity()),
            Err(e) => {
                let conditional = matches!(
                    e.code(),
                    Some("ConditionalCheckFailedException" | "TransactionCanceledException")
                );
                let result = if conditional {
                    "condition_failed"
                } else {
                    "error"
                };
                metrics::counter!("callcat_dynamo_requests_total", "kind" => kind.label(), "result" => result)
                    .increment(1);
                self.metrics.failed(conditional)
            }
        }
        out
    }
}

/// Outputs that report consumed capacity.
pub(crate) trait Capacity {
    fn capacity(&self) -> Vec<&ConsumedCapacity>;
}

macro_rules! capacity_one {
    ($($t:ty),*) => {$(
        impl Capacity for $t {
            fn capacity(&self) -> Vec<&ConsumedCapacity> {
                self.consumed_capacity().into_iter().collect()
            }
        }
    )*};
}

macro_rules! capacity_many {
    ($($t:ty),*) => {$(
        impl Capacity for $t {
            fn capacity(&self) -> Vec<&ConsumedCapacity> {
                self.consumed_capacity().iter().collect()
            }
        }
    )*};
}

use aws_sdk_dynamodb::operation::{
    batch_write_item::BatchWriteItemOutput, delete_item::DeleteItemOutput, get_item::GetItemOutput,
    put_item::PutItemOutput, query::QueryOutput, scan::ScanOutput,
    transact_write_items::TransactWriteItemsOutput, update_item::UpdateItemOutput,
};

capacity_one!(
    GetItemOutput,
    PutItemOutput,
    UpdateItemOutput,
    DeleteItemOutput,
    QueryOutput,
    ScanOutput
);
capacity_many!(TransactWriteItemsOutput, BatchWriteItemOutput);

/// Collects expression attribute names and values under generated placeholders,
/// so reserved words (`status`, `name`, ...) never appear in an expression.
#[derive(Debug, Default)]
pub(crate) struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The placeholder for attribute `attr` (`#n0`, ...), reused for the same name.
    pub(crate) fn name(&mut self, attr: &str) -> String {
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == attr) {
            return k.clone();
        }
        let k = format!("#n{}", self.names.len());
        self.names.insert(k.clone(), attr.to_owned());
        k
    }

    /// A placeholder for a value (`:v0`, ...).
    pub(crate) fn value(&mut self, v: AttributeValue) -> String {
        let k = format!(":v{}", self.values.len());
        self.values.insert(k.clone(), v);
        k
    }

    /// The names, or `None` when there are none (DynamoDB rejects an empty map).
    pub(crate) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    /// The values, or `None` when there are none.
    pub(crate) fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// `S` attribute.
pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// `N` attribute.
pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The string attribute `name` of an item.
pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.as_str()),
        _ => None,
    }
}

/// The number attribute `name` of an item, parsed.
pub(crate) fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// One Query, described once and run page after page.
pub(crate) struct QuerySpec {
    pub(crate) table: String,
    pub(crate) index: Option<&'static str>,
    pub(crate) key_condition: String,
    pub(crate) filter: Option<String>,
    pub(crate) expr: Expr,
    pub(crate) forward: bool,
    pub(crate) consistent: bool,
}

impl Ctx {
    /// Runs `spec`, following `LastEvaluatedKey`, until `want` items matched or the
    /// range is exhausted. Returns at most `want` items, in index order.
    pub(crate) async fn query_items(
        &self,
        spec: &QuerySpec,
        want: usize,
    ) -> crate::error::DResult<Vec<Item>> {
        let mut items: Vec<Item> = Vec::new();
        let mut start: Option<Item> = None;
        while items.len() < want {
            // With a filter, Limit bounds the items read, not returned: read a little more.
            let page = if spec.filter.is_some() {
                (want - items.len()).max(100)
            } else {
                want - items.len()
            };
            let req = self
                .query(spec, start.take())
                .scan_index_forward(spec.forward)
                .limit(i32::try_from(page.min(1000)).unwrap_or(1000))
                .send();
            let out = self
                .send(crate::metrics::OpKind::Read, req)
                .await
                .map_err(|e| crate::error::DynamoError::sdk("Query", e))?;
            let last = out.last_evaluated_key().cloned();
            items.extend(out.items.unwrap_or_default());
            match last {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        items.truncate(want);
        Ok(items)
    }

    /// Runs `spec` page by page (`page` items read per request), keeping the
    /// items `keep` accepts, until `want` were kept or the range is exhausted.
    /// `keep` sees every item read, in index order (so it can note what it skipped).
    pub(crate) async fn query_keeping(
        &self,
        spec: &QuerySpec,
        want: usize,
        page: usize,
        mut keep: impl FnMut(&Item) -> bool + Send,
    ) -> crate::error::DResult<Vec<Item>> {
        let mut items: Vec<Item> = Vec::new();
        let mut start: Option<Item> = None;
        while items.len() < want {
            let req = self
                .query(spec, start.take())
                .scan_index_forward(spec.forward)
                .limit(i32::try_from(page.clamp(1, 1000)).unwrap_or(1000))
                .send();
            let out = self
                .send(crate::metrics::OpKind::Read, req)
                .await
                .map_err(|e| crate::error::DynamoError::sdk("Query", e))?;
            let last = out.last_evaluated_key().cloned();
            for item in out.items.unwrap_or_default() {
                if items.len() < want && keep(&item) {
                    items.push(item);
                }
            }
            match last {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(items)
    }

    /// The Query request for `spec`, one page from `start`, with capacity reported.
    fn query(
        &self,
        spec: &QuerySpec,
        start: Option<Item>,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&spec.table)
            .set_index_name(spec.index.map(str::to_owned))
            .key_condition_expression(&spec.key_condition)
            .set_filter_expression(spec.filter.clone())
            .set_expression_attribute_names(spec.expr.names())
            .set_expression_attribute_values(spec.expr.values())
            .consistent_read(spec.consistent)
            .set_exclusive_start_key(start)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
    }

    /// Counts the items `spec` matches (`Select: COUNT`), following
    /// `LastEvaluatedKey`: no item is returned or parsed.
    pub(crate) async fn query_count(&self, spec: &QuerySpec) -> crate::error::DResult<u64> {
        let mut count = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let req = self
                .query(spec, start.take())
                .select(aws_sdk_dynamodb::types::Select::Count)
                .send();
            let out = self
                .send(crate::metrics::OpKind::Read, req)
                .await
                .map_err(|e| crate::error::DynamoError::sdk("Query", e))?;
            count += u64::try_from(out.count()).unwrap_or(0);
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(count),
            }
        }
    }
}

/// Validates a page size.
pub(crate) fn page_limit(limit: u32) -> DResult<usize> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(DynamoError::Validation {
            field: "limit",
            message: format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
        });
    }
    Ok(limit as usize)
}
