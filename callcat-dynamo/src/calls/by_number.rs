//! The "no second call in flight to this number" look-up, by blind index.

use callcat_core::{ActiveScope, PhoneNumber, Result};
use futures::future::try_join_all;

use super::DynamoCallStore;
use super::item::{active_shard, attr, index, tenant_key};
use crate::client::{Expr, QuerySpec, get_s, s};
use crate::error::DResult;

impl DynamoCallStore {
    /// How many active calls (Dispatching, Ringing, InProgress, Canceling) in
    /// `scope` are to `number`.
    ///
    /// Reads the sparse `active-tenant` index (one tenant or owner) or every
    /// `active-shard` partition (all tenants). With a cipher, DynamoDB filters on
    /// `phoneIndex` against the number's blind index under every key of the ring, so
    /// calls written before a rotation count too and nothing is decrypted; items
    /// written without a cipher (no `phoneIndex`) are compared by their number. Global
    /// secondary indexes are eventually consistent: a call that became active a
    /// moment ago may not be counted yet.
    pub async fn active_calls_to_number(
        &self,
        scope: &ActiveScope,
        number: &PhoneNumber,
    ) -> Result<u32> {
        Ok(self.active_to_number_inner(scope, number).await?)
    }

    /// How many active calls are in `scope`: `Select: COUNT` over the sparse
    /// `active-tenant` index (one tenant or owner) or every `active-shard`
    /// partition (all tenants). Eventually consistent, like every GSI read.
    pub(super) async fn count_active_inner(&self, scope: &ActiveScope) -> DResult<u64> {
        let specs = self.active_specs(scope, &[]);
        let counts = try_join_all(specs.iter().map(|sp| self.ctx.query_count(sp))).await?;
        Ok(counts.into_iter().sum())
    }

    /// The queries over the active indexes that cover `scope`, filtered to the
    /// blind `indexes` of a number (or items without one) when any are given.
    pub(super) fn active_specs(&self, scope: &ActiveScope, indexes: &[String]) -> Vec<QuerySpec> {
        let spec = |index: &'static str, key_attr: &str, key: String, owner: Option<String>| {
            let mut e = Expr::new();
            let cond = format!("{} = {}", e.name(key_attr), e.value(s(key)));
            let mut filters = Vec::new();
            if !indexes.is_empty() {
                let pi = e.name(attr::PHONE_INDEX);
                let values: Vec<String> = indexes.iter().map(|i| e.value(s(i.clone()))).collect();
                filters.push(format!(
                    "({pi} IN ({}) OR attribute_not_exists({pi}))",
                    values.join(", ")
                ));
            }
            if let Some(o) = owner {
                filters.push(format!("{} = {}", e.name(attr::OWNER), e.value(s(o))));
            }
            QuerySpec {
                table: self.table.clone(),
                index: Some(index),
                key_condition: cond,
                filter: (!filters.is_empty()).then(|| filters.join(" AND ")),
                expr: e,
                forward: true,
                consistent: false,
            }
        };
        match scope {
            ActiveScope::Tenant(t) => vec![spec(
                index::ACTIVE_TENANT,
                attr::ACTIVE_TENANT,
                tenant_key(t.as_str()),
                None,
            )],
            ActiveScope::Owner(o) => vec![spec(
                index::ACTIVE_TENANT,
                attr::ACTIVE_TENANT,
                tenant_key(o.tenant.as_str()),
                Some(o.key()),
            )],
            ActiveScope::All => (0..self.shards)
                .map(|n| {
                    spec(
                        index::ACTIVE_SHARD,
                        attr::ACTIVE_SHARD,
                        active_shard(n),
                        None,
                    )
                })
                .collect(),
        }
    }

    async fn active_to_number_inner(
        &self,
        scope: &ActiveScope,
        number: &PhoneNumber,
    ) -> DResult<u32> {
        let indexes = self
            .cipher
            .as_ref()
            .map(|c| c.blind_indexes(number.as_str()))
            .unwrap_or_default();
        let specs = self.active_specs(scope, &indexes);
        let pages =
            try_join_all(specs.iter().map(|sp| self.ctx.query_items(sp, usize::MAX))).await?;
        let mut count = 0u32;
        for item in pages.iter().flatten() {
            let matches = match get_s(item, attr::PHONE_INDEX) {
                Some(i) => indexes.iter().any(|x| x == i),
                // Written without a cipher: the record is plain, compare numbers.
                None => &self.open(item)?.phone_number == number,
            };
            count = count.saturating_add(u32::from(matches));
        }
        Ok(count)
    }
}
