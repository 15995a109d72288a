//! The read paths over the indexes: owner views, provider look-up, active calls,
//! tenant ranges. Cursors are core [`Cursor`]s (sort-key milliseconds + call id),
//! turned into key conditions, so a page starts right after the last item returned
//! even if that item has changed or gone since.

use callcat_core::cursor::Cursor;
use callcat_core::{ActiveScope, Call, CallId, ListQuery, ListView, Owner, Page, TenantId};
use chrono::{DateTime, Utc};
use futures::future::try_join_all;

use super::DynamoCallStore;
use super::item::{active_shard, attr, call_pk, index, owner_view, tenant_key};
use crate::client::{Expr, QuerySpec, get_s, page_limit, s};
use crate::error::{DResult, DynamoError};
use crate::keys::{just_after, ms_key, time_id_key, time_id_key_ms};

/// Decodes a cursor made by [`next_cursor`].
fn decode(cursor: Option<&str>) -> DResult<Option<(i64, CallId)>> {
    cursor
        .map(|c| {
            let invalid = || DynamoError::Validation {
                field: "nextToken",
                message: "the page token is not valid".into(),
            };
            let c = Cursor::decode(c).map_err(|_| invalid())?;
            let id: CallId = c.id.parse().map_err(|_| invalid())?;
            Ok((c.key, id))
        })
        .transpose()
}

/// Cuts `items` to `limit` and makes the cursor from the last one kept.
fn page(mut items: Vec<Call>, limit: usize, key: fn(&Call) -> DateTime<Utc>) -> Page<Call> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = more
        .then(|| {
            items.last().map(|c| {
                Cursor {
                    key: key(c).timestamp_millis(),
                    id: c.id.to_string(),
                }
                .encode()
            })
        })
        .flatten();
    Page { items, next_cursor }
}

fn scheduled(c: &Call) -> DateTime<Utc> {
    c.scheduled_for
}

fn finished(c: &Call) -> DateTime<Utc> {
    c.finished_sort_key()
}

impl DynamoCallStore {
    /// Opens listed items, skipping (with a log and a metric) those that cannot be
    /// opened, so one bad item never fails a listing. A page may then hold fewer
    /// items; its cursor is the last readable item's.
    fn parse_all(&self, items: Vec<crate::client::Item>) -> DResult<Vec<Call>> {
        Ok(items
            .iter()
            .filter_map(|i| match self.open(i) {
                Ok(c) => Some(c),
                Err(e) => {
                    callcat_core::store::report_unreadable(
                        crate::error::SOURCE,
                        get_s(i, attr::PK).unwrap_or("?"),
                        &callcat_core::Error::from(e),
                    );
                    None
                }
            })
            .collect())
    }

    fn spec(
        &self,
        index: &'static str,
        key_condition: String,
        expr: Expr,
        forward: bool,
    ) -> QuerySpec {
        QuerySpec {
            table: self.table.clone(),
            index: Some(index),
            key_condition,
            filter: None,
            expr,
            forward,
            consistent: false,
        }
    }

    pub(super) async fn list_inner(&self, owner: &Owner, query: &ListQuery) -> DResult<Page<Call>> {
        if let Some(st) = query.status
            && ListView::of(st) != query.view
        {
            return Err(DynamoError::Validation {
                field: "status",
                message: "status does not belong to this view".into(),
            });
        }
        let limit = page_limit(query.limit)?;
        let after = decode(query.cursor.as_deref())?;
        let mut e = Expr::new();
        let pk = format!(
            "{} = {}",
            e.name(attr::OWNER_VIEW),
            e.value(s(owner_view(owner, query.view)))
        );
        let forward = query.view == ListView::Upcoming;
        let cond = match after {
            Some((ms, id)) => format!(
                "{pk} AND {} {} {}",
                e.name(attr::VIEW_SORT),
                if forward { ">" } else { "<" },
                e.value(s(time_id_key_ms(ms, &id)))
            ),
            None => pk,
        };
        let filter = query
            .status
            .map(|st| format!("{} = {}", e.name(attr::STATUS), e.value(s(st.as_str()))));
        let mut spec = self.spec(index::OWNER_VIEW, cond, e, forward);
        spec.filter = filter;
        let calls = self.parse_all(self.ctx.query_items(&spec, limit + 1).await?)?;
        let key = match query.view {
            ListView::Upcoming => scheduled,
            ListView::Finished => finished,
        };
        Ok(page(calls, limit, key))
    }

    pub(super) async fn find_by_provider_inner(
        &self,
        provider_call_id: &str,
    ) -> DResult<Option<Call>> {
        if provider_call_id.is_empty() {
            return Ok(None);
        }
        let mut e = Expr::new();
        let cond = format!(
            "{} = {}",
            e.name(attr::PROVIDER),
            e.value(s(provider_call_id))
        );
        let spec = self.spec(index::PROVIDER, cond, e, true);
        // The index is keys-only: read the call itself, consistently, and make sure
        // it still carries this provider call id (the index lags behind writes).
        for item in self.ctx.query_items(&spec, 10).await? {
            let Some(id) = get_s(&item, attr::PK)
                .and_then(|pk| pk.strip_prefix("CALL#"))
                .and_then(|id| id.parse::<CallId>().ok())
            else {
                continue;
            };
            if let Some(call) = self.get_item(call_pk(id)).await? {
                let call = self.open(&call)?;
                if call.provider_call_id.as_deref() == Some(provider_call_id) {
                    return Ok(Some(call));
                }
            }
        }
        Ok(None)
    }

    pub(super) async fn list_active_inner(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> DResult<Page<Call>> {
        let limit = page_limit(limit)?;
        let after = decode(cursor)?.map(|(ms, id)| time_id_key_ms(ms, &id));
        let tenant_spec = |tenant: &TenantId, owner: Option<&Owner>| {
            let mut e = Expr::new();
            let mut cond = format!(
                "{} = {}",
                e.name(attr::ACTIVE_TENANT),
                e.value(s(tenant_key(tenant.as_str())))
            );
            if let Some(a) = &after {
                cond = format!(
                    "{cond} AND {} > {}",
                    e.name(attr::ACTIVE_SORT),
                    e.value(s(a.clone()))
                );
            }
            let filter =
                owner.map(|o| format!("{} = {}", e.name(attr::OWNER), e.value(s(o.key()))));
            let mut spec = self.spec(index::ACTIVE_TENANT, cond, e, true);
            spec.filter = filter;
            spec
        };
        let mut calls = match scope {
            ActiveScope::Tenant(t) => self.parse_all(
                self.ctx
                    .query_items(&tenant_spec(t, None), limit + 1)
                    .await?,
            )?,
            ActiveScope::Owner(o) => self.parse_all(
                self.ctx
                    .query_items(&tenant_spec(&o.tenant, Some(o)), limit + 1)
                    .await?,
            )?,
            ActiveScope::All => {
                let specs: Vec<QuerySpec> = (0..self.shards)
                    .map(|n| {
                        let mut e = Expr::new();
                        let mut cond = format!(
                            "{} = {}",
                            e.name(attr::ACTIVE_SHARD),
                            e.value(s(active_shard(n)))
                        );
                        if let Some(a) = &after {
                            cond = format!(
                                "{cond} AND {} > {}",
                                e.name(attr::ACTIVE_SORT),
                                e.value(s(a.clone()))
                            );
                        }
                        self.spec(index::ACTIVE_SHARD, cond, e, true)
                    })
                    .collect();
                let pages =
                    try_join_all(specs.iter().map(|sp| self.ctx.query_items(sp, limit + 1)))
                        .await?;
                let mut all = self.parse_all(pages.into_iter().flatten().collect())?;
                all.sort_by(|a, b| {
                    time_id_key(a.scheduled_for, &a.id).cmp(&time_id_key(b.scheduled_for, &b.id))
                });
                all
            }
        };
        calls.truncate(limit + 1);
        Ok(page(calls, limit, scheduled))
    }

    pub(super) async fn list_tenant_range_inner(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> DResult<Page<Call>> {
        let limit = page_limit(limit)?;
        let mut lo = ms_key(from.timestamp_millis());
        if let Some((ms, id)) = decode(cursor)? {
            lo = lo.max(just_after(&time_id_key_ms(ms, &id)));
        }
        // Every key at `to` is `ms_key(to)#...`, above `ms_key(to)`: the range is [from, to).
        let hi = ms_key(to.timestamp_millis());
        if lo >= hi {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        let mut e = Expr::new();
        let cond = format!(
            "{} = {} AND {} BETWEEN {} AND {}",
            e.name(attr::TENANT),
            e.value(s(tenant_key(tenant.as_str()))),
            e.name(attr::SCHED_SORT),
            e.value(s(lo)),
            e.value(s(hi)),
        );
        let spec = self.spec(index::TENANT_SCHEDULE, cond, e, true);
        let calls = self.parse_all(self.ctx.query_items(&spec, limit + 1).await?)?;
        Ok(page(calls, limit, scheduled))
    }
}
