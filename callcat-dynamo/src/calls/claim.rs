//! Claims over the sharded due index.
//!
//! A call is in the due index (`dueShard = DUE#<n>`, `dueAt = next_action_at` in
//! epoch ms) exactly while it is claimable. A claimer queries every shard in
//! parallel for `dueAt <= now`, merges the candidates earliest first, and takes
//! each with one conditional UpdateItem: the stored version must still be the one
//! it read, the status claimable and `dueAt <= now`. The update writes the claimed
//! record, which moves `dueAt` to the lease expiry. A failed condition means another
//! worker won that call: it is skipped. So no call is ever claimed twice, and the
//! claims spread over `shards` partitions instead of one hot one.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use callcat_core::store::NextDue;
use callcat_core::{ActiveScope, Call, CallId, CallStatus, WorkerId};
use chrono::{DateTime, Utc};
use futures::future::{join_all, try_join_all};

use super::DynamoCallStore;
use super::item::{CLAIMABLE, attr, call_pk, due_shard, index, update_expression};
use crate::client::{Expr, Item, QuerySpec, get_n, get_s, n, s};
use crate::error::{DResult, DynamoError};
use crate::metrics::OpKind;

/// Query-and-claim rounds per `claim_due`: after losing races, a claimer looks again
/// (the winners' calls have left the due range) a bounded number of times.
const ROUNDS: usize = 3;

struct Candidate {
    due_ms: i64,
    call: Call,
}

/// Items read per request while skipping the due calls of owners at their cap.
const SKIP_PAGE: usize = 100;

/// Each owner's active calls, for the capped claim: a new call of an owner with
/// `cap` or more is skipped; a lapsed Dispatching call never is.
struct OwnerLoad {
    cap: u32,
    active: HashMap<String, u32>,
}

impl OwnerLoad {
    fn at_cap(&self, owner_key: &str, taken: u32) -> bool {
        let active = self.active.get(owner_key).copied().unwrap_or(0);
        active.saturating_add(taken) >= self.cap
    }

    /// Whether a due item (not yet opened) belongs to an owner at the cap.
    fn blocks_item(&self, item: &Item) -> bool {
        if get_s(item, attr::STATUS) == Some(CallStatus::Dispatching.as_str()) {
            return false;
        }
        get_s(item, attr::OWNER).is_some_and(|o| self.at_cap(o, 0))
    }

    /// Whether `call` must wait, given the calls of each owner taken already.
    fn blocks_call(&self, call: &Call, taken: &HashMap<String, u32>) -> bool {
        if call.status == CallStatus::Dispatching {
            return false;
        }
        let key = call.owner.key();
        let taken = taken.get(&key).copied().unwrap_or(0);
        self.at_cap(&key, taken)
    }
}

impl DynamoCallStore {
    fn due_spec(&self, shard: u32, now_ms: Option<i64>) -> QuerySpec {
        let mut e = Expr::new();
        let mut cond = format!(
            "{} = {}",
            e.name(attr::DUE_SHARD),
            e.value(s(due_shard(shard)))
        );
        if let Some(now) = now_ms {
            cond = format!("{cond} AND {} <= {}", e.name(attr::DUE_AT), e.value(n(now)));
        }
        QuerySpec {
            table: self.table.clone(),
            index: Some(index::DUE),
            key_condition: cond,
            filter: None,
            expr: e,
            forward: true,
            consistent: false,
        }
    }

    /// Every owner's active calls (the active indexes), for the capped claim.
    async fn owner_load(&self, cap: u32) -> DResult<OwnerLoad> {
        let specs = self.active_specs(&ActiveScope::All, &[]);
        let pages =
            try_join_all(specs.iter().map(|sp| self.ctx.query_items(sp, usize::MAX))).await?;
        let mut active: HashMap<String, u32> = HashMap::new();
        for item in pages.iter().flatten() {
            if let Some(o) = get_s(item, attr::OWNER) {
                *active.entry(o.to_owned()).or_default() += 1;
            }
        }
        Ok(OwnerLoad { cap, active })
    }

    /// Due candidates from every shard, earliest first, without the ones in `skip`
    /// and (with `load`) without the new calls of owners at their cap, which are
    /// read past but never opened.
    async fn due_candidates(
        &self,
        now_ms: i64,
        per_shard: usize,
        skip: &HashSet<CallId>,
        load: Option<&OwnerLoad>,
    ) -> DResult<(Vec<Candidate>, bool)> {
        let specs: Vec<QuerySpec> = (0..self.shards)
            .map(|sh| self.due_spec(sh, Some(now_ms)))
            .collect();
        let pages = try_join_all(specs.iter().map(|sp| async move {
            match load {
                Some(load) => {
                    self.ctx
                        .query_keeping(sp, per_shard, SKIP_PAGE, |item| !load.blocks_item(item))
                        .await
                }
                None => self.ctx.query_items(sp, per_shard).await,
            }
        }))
        .await?;
        let maybe_more = pages.iter().any(|p| p.len() >= per_shard);
        let mut out = Vec::new();
        for item in pages.into_iter().flatten() {
            let call = match self.open(&item) {
                Ok(call) => call,
                Err(e) => {
                    self.quarantine(&item, e).await?;
                    continue;
                }
            };
            if skip.contains(&call.id) {
                continue;
            }
            let due_ms = get_n::<i64>(&item, attr::DUE_AT).unwrap_or(i64::MAX);
            out.push(Candidate { due_ms, call });
        }
        out.sort_by_key(|c| (c.due_ms, c.call.id));
        Ok((out, maybe_more))
    }

    /// Sets aside a due item whose record cannot be opened, without opening it:
    /// one conditional UpdateItem removes it from the due and active indexes and
    /// records the reason in `quarantined`, so it never fails a claim, comes due
    /// or counts toward a cap again. Losing the condition (the item changed or
    /// another claimer quarantined it first) is fine.
    async fn quarantine(&self, item: &crate::client::Item, error: DynamoError) -> DResult<()> {
        let Some(pk) = get_s(item, attr::PK).map(str::to_owned) else {
            return Err(error);
        };
        let error = callcat_core::Error::from(error);
        let mut e = Expr::new();
        let update = format!(
            "SET {q} = {reason} REMOVE {ds}, {da}, {at}, {ash}, {aso}",
            q = e.name(attr::QUARANTINED),
            reason = e.value(s(format!(
                "the stored record cannot be opened ({:?})",
                error.kind()
            ))),
            ds = e.name(attr::DUE_SHARD),
            da = e.name(attr::DUE_AT),
            at = e.name(attr::ACTIVE_TENANT),
            ash = e.name(attr::ACTIVE_SHARD),
            aso = e.name(attr::ACTIVE_SORT),
        );
        let mut cond = format!("attribute_exists({})", e.name(attr::DUE_SHARD));
        if let Some(v) = get_n::<u64>(item, attr::VERSION) {
            cond = format!("{cond} AND {} = {}", e.name(attr::VERSION), e.value(n(v)));
        }
        let req = self
            .ctx
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(pk.clone()))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        match self.ctx.send(OpKind::Write, req).await {
            Ok(_) => {
                let id = pk.strip_prefix("CALL#").unwrap_or(&pk);
                callcat_core::store::report_quarantined(crate::error::SOURCE, id, &error);
                Ok(())
            }
            Err(err) => match DynamoError::sdk("UpdateItem", err) {
                DynamoError::Conflict(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Takes one candidate; `Ok(None)` when another worker got it first.
    async fn claim_one(
        &self,
        current: &Call,
        now: DateTime<Utc>,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> DResult<Option<Call>> {
        let Some(mut next) = callcat_core::lifecycle::claim(current, worker, now, lease_until)
        else {
            return Ok(None);
        };
        next.version = current.version + 1;
        let item = self.item(&next)?;
        let mut e = Expr::new();
        let update = update_expression(&item, &mut e);
        let statuses: Vec<String> = CLAIMABLE.iter().map(|st| e.value(s(st.as_str()))).collect();
        let cond = format!(
            "{ver} = {v} AND {st} IN ({list}) AND {due} <= {now}",
            ver = e.name(attr::VERSION),
            v = e.value(n(current.version)),
            st = e.name(attr::STATUS),
            list = statuses.join(", "),
            due = e.name(attr::DUE_AT),
            now = e.value(AttributeValue::N(now.timestamp_millis().to_string())),
        );
        let req = self
            .ctx
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(call_pk(current.id)))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        match self.ctx.send(OpKind::Write, req).await {
            Ok(_) => Ok(Some(next)),
            Err(err) => match DynamoError::sdk("UpdateItem", err) {
                DynamoError::Conflict(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The claim; with `owner_cap`, the capped claim (`CallStore::claim_due_capped`).
    pub(super) async fn claim_due_inner(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
        owner_cap: Option<u32>,
    ) -> DResult<Vec<Call>> {
        let now_ms = now.timestamp_millis();
        let limit = limit as usize;
        let load = match owner_cap {
            Some(cap) => Some(self.owner_load(cap).await?),
            None => None,
        };
        // New calls of each owner taken by this claim.
        let mut taken: HashMap<String, u32> = HashMap::new();
        let mut claimed: Vec<(i64, Call)> = Vec::new();
        let mut first_error: Option<DynamoError> = None;
        let mut tried: HashSet<CallId> = HashSet::new();
        for _ in 0..ROUNDS {
            let want = limit - claimed.len();
            if want == 0 {
                break;
            }
            // Calls tried before may still show in the (eventually consistent) index.
            let per_shard = (want + tried.len()).min(1000);
            let (candidates, maybe_more) = self
                .due_candidates(now_ms, per_shard, &tried, load.as_ref())
                .await?;
            let mut batch: Vec<Candidate> = Vec::new();
            for c in candidates {
                let due = c.call.status.is_claimable()
                    && c.call
                        .next_action_at
                        .is_some_and(|t| t.timestamp_millis() <= now_ms);
                if !due || batch.len() >= want {
                    continue;
                }
                if let Some(load) = &load {
                    if load.blocks_call(&c.call, &taken) {
                        continue;
                    }
                    if c.call.status != CallStatus::Dispatching {
                        *taken.entry(c.call.owner.key()).or_default() += 1;
                    }
                }
                batch.push(c);
            }
            if batch.is_empty() {
                break;
            }
            tried.extend(batch.iter().map(|c| c.call.id));
            let results = join_all(
                batch
                    .iter()
                    .map(|c| self.claim_one(&c.call, now, worker, lease_until)),
            )
            .await;
            let mut lost = false;
            for (cand, result) in batch.iter().zip(results) {
                match result {
                    Ok(Some(call)) => claimed.push((cand.due_ms, call)),
                    Ok(None) => lost = true,
                    Err(e) => {
                        tracing::warn!(call_id = %cand.call.id, error = %e, "claim failed");
                        first_error.get_or_insert(e);
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
            if !lost && !maybe_more {
                break;
            }
        }
        // Calls already claimed must reach the caller even if another claim failed.
        if claimed.is_empty()
            && let Some(e) = first_error
        {
            return Err(e);
        }
        claimed.sort_by_key(|(due, c)| (*due, c.id));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    /// `CallStore::next_due_capped`: per shard, the first due item not of an owner
    /// at `cap`, noting the earliest one skipped.
    pub(super) async fn next_due_capped_inner(&self, cap: u32) -> DResult<NextDue> {
        let load = self.owner_load(cap).await?;
        let load = &load;
        let per_shard = try_join_all((0..self.shards).map(|sh| async move {
            let spec = self.due_spec(sh, None);
            let mut skipped: Option<i64> = None;
            let found = self
                .ctx
                .query_keeping(&spec, 1, SKIP_PAGE, |item| {
                    if load.blocks_item(item) {
                        let at = get_n::<i64>(item, attr::DUE_AT).unwrap_or(i64::MAX);
                        skipped = Some(skipped.map_or(at, |s| s.min(at)));
                        false
                    } else {
                        true
                    }
                })
                .await?;
            let at = found
                .first()
                .and_then(|item| get_n::<i64>(item, attr::DUE_AT));
            DResult::Ok((at, skipped))
        }))
        .await?;
        let at = per_shard.iter().filter_map(|(at, _)| *at).min();
        let skipped = per_shard.iter().filter_map(|(_, s)| *s).min();
        let blocked = match (skipped, at) {
            (Some(s), Some(a)) => s <= a,
            (Some(_), None) => true,
            (None, _) => false,
        };
        Ok(NextDue {
            at: at.and_then(DateTime::from_timestamp_millis),
            blocked,
        })
    }

    pub(super) async fn next_due_at_inner(&self) -> DResult<Option<DateTime<Utc>>> {
        let specs: Vec<QuerySpec> = (0..self.shards).map(|sh| self.due_spec(sh, None)).collect();
        let pages = try_join_all(specs.iter().map(|sp| self.ctx.query_items(sp, 1))).await?;
        Ok(pages
            .iter()
            .flatten()
            .filter_map(|item| get_n::<i64>(item, attr::DUE_AT))
            .min()
            .and_then(DateTime::from_timestamp_millis))
    }
}
