//! Key rotation over the calls table ([`callcat_core::CallStore::reseal_page`]).

use callcat_core::rotation::{KeyTally, ResealPage, RowOutcome, check_reseal};
use callcat_core::{CallStatus, FieldCipher, KeyUsage, open_call, seal_call};

use super::DynamoCallStore;
use super::item::{attr, call_pk};
use super::item_key;
use crate::client::{Expr, Item, get_n, get_s, s};
use crate::error::{DResult, DynamoError};
use crate::rotation::{conditional_update, scan_page};

/// The key usage of a call item: its record and its phone blind index.
fn usage_of(record: &serde_json::Value, index: Option<&str>) -> KeyUsage {
    let mut usage = KeyUsage::of_call(record);
    if let Some(i) = index {
        usage.note_index(i);
    }
    usage
}

impl DynamoCallStore {
    pub(super) async fn reseal_page_inner(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> callcat_core::Result<ResealPage> {
        let cipher = check_reseal(self.cipher.as_ref(), rewrite, limit)?;
        // Only call items (not the idempotency and provider-id guards).
        let mut e = Expr::new();
        let filter = format!("begins_with({}, {})", e.name(attr::PK), e.value(s("CALL#")));
        let (items, next_cursor) = scan_page(
            &self.ctx,
            &self.table,
            &[attr::PK],
            limit,
            cursor,
            Some((filter, e)),
        )
        .await?;
        let mut tally = KeyTally::default();
        for item in &items {
            let Some(json) = get_s(item, attr::CALL) else {
                continue;
            };
            let record: serde_json::Value = serde_json::from_str(json)
                .map_err(|e| DynamoError::Corrupt(format!("a call does not parse: {e}")))?;
            let found = usage_of(&record, get_s(item, attr::PHONE_INDEX));
            let outcome = match cipher {
                Some(c) if found.needs_rewrite(c) => self.reseal(c, item, record).await?,
                _ => RowOutcome::Untouched,
            };
            tally.record(&found, outcome);
        }
        Ok(ResealPage { tally, next_cursor })
    }

    /// Re-seals one call item unless it is in flight or quarantined, only if its
    /// version is unchanged (the version itself stays).
    async fn reseal(
        &self,
        cipher: &FieldCipher,
        item: &Item,
        record: serde_json::Value,
    ) -> DResult<RowOutcome> {
        if item.contains_key(attr::QUARANTINED) {
            return Ok(RowOutcome::Unreadable);
        }
        let active = get_s(item, attr::STATUS)
            .and_then(|st| st.parse::<CallStatus>().ok())
            .is_some_and(CallStatus::is_active);
        if active {
            return Ok(RowOutcome::Deferred);
        }
        let Ok(call) = open_call(record, Some(cipher)) else {
            return Ok(RowOutcome::Unreadable);
        };
        let version: u64 = get_n(item, attr::VERSION)
            .ok_or_else(|| DynamoError::Corrupt("a call item has no version".into()))?;
        let sealed = seal_call(&call, Some(cipher)).map_err(DynamoError::Core)?;
        let json = serde_json::to_string(&sealed.record)
            .map_err(|e| DynamoError::Corrupt(format!("a call does not serialize: {e}")))?;
        let after = usage_of(&sealed.record, sealed.phone_index.as_deref());
        let mut e = Expr::new();
        let mut update = format!("SET {} = {}", e.name(attr::CALL), e.value(s(json)));
        if let Some(i) = sealed.phone_index {
            update.push_str(&format!(
                ", {} = {}",
                e.name(attr::PHONE_INDEX),
                e.value(s(i))
            ));
        }
        let condition = format!(
            "{} = {}",
            e.name(attr::VERSION),
            e.value(crate::client::n(version))
        );
        conditional_update(
            &self.ctx,
            &self.table,
            item_key(call_pk(call.id)),
            update,
            condition,
            e,
            after,
        )
        .await
    }
}
