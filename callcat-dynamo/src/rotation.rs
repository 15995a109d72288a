//! Key rotation over the DynamoDB tables ([`callcat_core::rotation`]): a page
//! is one consistent Scan from the last evaluated key, and a rewrite is a
//! conditional UpdateItem that only matches the item as it was read, so a
//! concurrent write is never lost (the item is deferred instead).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use callcat_core::cursor::Cursor;
use callcat_core::rotation::RowOutcome;

use crate::client::{Ctx, Expr, Item, s};
use crate::error::{DResult, DynamoError};
use crate::metrics::OpKind;

/// One Scan page of `table`: up to `limit` items (after `filter`, if any, on
/// the scanned items), and the cursor of the next page.
pub(crate) async fn scan_page(
    ctx: &Ctx,
    table: &str,
    key_names: &[&str],
    limit: u32,
    cursor: Option<&str>,
    filter: Option<(String, Expr)>,
) -> DResult<(Vec<Item>, Option<String>)> {
    let start = cursor.map(|c| decode(c, key_names)).transpose()?;
    let (filter, e) = match filter {
        Some((f, e)) => (Some(f), e),
        None => (None, Expr::new()),
    };
    let req = ctx
        .client
        .scan()
        .table_name(table)
        .limit(i32::try_from(limit).unwrap_or(i32::MAX))
        .set_filter_expression(filter)
        .set_expression_attribute_names(e.names())
        .set_expression_attribute_values(e.values())
        .set_exclusive_start_key(start)
        .consistent_read(true)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send();
    let out = ctx
        .send(OpKind::Read, req)
        .await
        .map_err(|e| DynamoError::sdk("Scan", e))?;
    let next = out
        .last_evaluated_key()
        .map(|k| encode(k, key_names))
        .transpose()?;
    Ok((out.items().to_vec(), next))
}

fn bad_cursor() -> DynamoError {
    DynamoError::Validation {
        field: "nextToken",
        message: "the page token is not valid".into(),
    }
}

/// The cursor of a last evaluated key: its string key attributes, in order.
fn encode(key: &HashMap<String, AttributeValue>, names: &[&str]) -> DResult<String> {
    let parts = names
        .iter()
        .map(|n| match key.get(*n) {
            Some(AttributeValue::S(v)) => Ok(v.clone()),
            _ => Err(DynamoError::Corrupt(format!("scan key without `{n}`"))),
        })
        .collect::<DResult<Vec<String>>>()?;
    Ok(Cursor {
        key: 0,
        id: serde_json::to_string(&parts).map_err(|_| bad_cursor())?,
    }
    .encode())
}

fn decode(cursor: &str, names: &[&str]) -> DResult<HashMap<String, AttributeValue>> {
    let c = Cursor::decode(cursor).map_err(|_| bad_cursor())?;
    let parts: Vec<String> = serde_json::from_str(&c.id).map_err(|_| bad_cursor())?;
    if parts.len() != names.len() {
        return Err(bad_cursor());
    }
    Ok(names
        .iter()
        .zip(parts)
        .map(|(n, v)| ((*n).to_owned(), s(v)))
        .collect())
}

/// Sends a conditional UpdateItem re-sealing one item: `Rewritten(after)` when
/// it matched, `Deferred` when its condition failed (the item changed).
pub(crate) async fn conditional_update(
    ctx: &Ctx,
    table: &str,
    key: Item,
    update: String,
    condition: String,
    e: Expr,
    after: callcat_core::KeyUsage,
) -> DResult<RowOutcome> {
    let req = ctx
        .client
        .update_item()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(update)
        .condition_expression(condition)
        .set_expression_attribute_names(e.names())
        .set_expression_attribute_values(e.values())
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send();
    match ctx.send(OpKind::Write, req).await {
        Ok(_) => Ok(RowOutcome::Rewritten(after)),
        Err(err) => match DynamoError::sdk("UpdateItem", err) {
            DynamoError::Conflict(_) => Ok(RowOutcome::Deferred),
            other => Err(other),
        },
    }
}
