use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::page_limit;
use crate::call::{Call, CallStatus, Lease};
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::ids::{CallId, Owner, TenantId, WorkerId};
use crate::store::{ActiveScope, CallStore, Created, ListQuery, ListView, Page, StoreCapabilities};

/// Calls in memory, behind one mutex, with a due index so claims and
/// `next_due_at` cost O(log n).
#[derive(Default)]
pub struct InMemoryCallStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    calls: HashMap<CallId, Call>,
    idempotency: HashMap<(Owner, String), CallId>,
    by_provider_id: HashMap<String, CallId>,
    due: BTreeSet<(i64, CallId)>,
}

impl std::fmt::Debug for InMemoryCallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryCallStore")
            .field("calls", &self.lock().calls.len())
            .finish()
    }
}

fn due_key(c: &Call) -> Option<(i64, CallId)> {
    match (c.status.is_claimable(), c.next_action_at) {
        (true, Some(at)) => Some((at.timestamp_millis(), c.id)),
        _ => None,
    }
}

impl State {
    fn index(&mut self, c: &Call) {
        if let Some(k) = due_key(c) {
            self.due.insert(k);
        }
        if let Some(p) = &c.provider_call_id {
            self.by_provider_id.insert(p.clone(), c.id);
        }
    }

    fn unindex(&mut self, c: &Call) {
        if let Some(k) = due_key(c) {
            self.due.remove(&k);
        }
        if let Some(p) = &c.provider_call_id
            && self.by_provider_id.get(p) == Some(&c.id)
        {
            self.by_provider_id.remove(p);
        }
    }

    fn replace(&mut self, c: Call) {
        if let Some(old) = self.calls.remove(&c.id) {
            self.unindex(&old);
        }
        self.index(&c);
        self.calls.insert(c.id, c);
    }
}

impl InMemoryCallStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many calls are stored.
    pub fn len(&self) -> usize {
        self.lock().calls.len()
    }

    /// Whether no call is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn paginate<F>(mut items: Vec<Call>, limit: usize, key: F) -> Page<Call>
where
    F: Fn(&Call) -> i64,
{
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more {
        items.last().map(|c| {
            Cursor {
                key: key(c),
                id: c.id.to_string(),
            }
            .encode()
        })
    } else {
        None
    };
    Page { items, next_cursor }
}

fn after_cursor(cursor: Option<&str>) -> Result<Option<(i64, CallId)>> {
    cursor
        .map(|s| {
            let c = Cursor::decode(s)?;
            let id: CallId =
                c.id.parse()
                    .map_err(|_| Error::validation("nextToken", "the page token is not valid"))?;
            Ok((c.key, id))
        })
        .transpose()
}

fn asc_page(
    calls: Vec<Call>,
    limit: u32,
    cursor: Option<&str>,
    key: fn(&Call) -> i64,
) -> Result<Page<Call>> {
    let limit = page_limit(limit)?;
    let after = after_cursor(cursor)?;
    let mut items: Vec<Call> = calls
        .into_iter()
        .filter(|c| after.is_none_or(|a| (key(c), c.id) > a))
        .collect();
    items.sort_by_key(|c| (key(c), c.id));
    items.truncate(limit + 1);
    Ok(paginate(items, limit, key))
}

fn scheduled_key(c: &Call) -> i64 {
    c.scheduled_for.timestamp_millis()
}

fn finished_key(c: &Call) -> i64 {
    c.finished_sort_key().timestamp_millis()
}

#[async_trait::async_trait]
impl CallStore for InMemoryCallStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities {
            cross_process_wakeups: false,
            shared_between_processes: false,
        }
    }

    async fn create(&self, call: &Call) -> Result<Created> {
        let mut st = self.lock();
        if let Some(key) = &call.idempotency_key
            && let Some(id) = st.idempotency.get(&(call.owner.clone(), key.clone()))
            && let Some(existing) = st.calls.get(id)
        {
            return Ok(Created::Existing(existing.clone()));
        }
        if st.calls.contains_key(&call.id) {
            return Err(Error::conflict(format!("call {} already exists", call.id)));
        }
        if let Some(p) = &call.provider_call_id
            && st.by_provider_id.contains_key(p)
        {
            return Err(Error::conflict(
                "provider call id already belongs to another call",
            ));
        }
        if let Some(key) = &call.idempotency_key {
            st.idempotency
                .insert((call.owner.clone(), key.clone()), call.id);
        }
        st.replace(call.clone());
        Ok(Created::New(call.clone()))
    }

    async fn get(&self, id: CallId) -> Result<Option<Call>> {
        Ok(self.lock().calls.get(&id).cloned())
    }

    async fn update(&self, call: &Call) -> Result<Call> {
        let mut st = self.lock();
        let Some(stored) = st.calls.get(&call.id) else {
            return Err(Error::not_found(format!("call {} not found", call.id)));
        };
        if stored.version != call.version {
            return Err(Error::conflict(format!(
                "call {} was changed concurrently (version {} != {})",
                call.id, stored.version, call.version
            )));
        }
        if stored.owner != call.owner {
            return Err(Error::conflict("a call's owner cannot change"));
        }
        if let Some(p) = &call.provider_call_id
            && st.by_provider_id.get(p).is_some_and(|id| *id != call.id)
        {
            return Err(Error::conflict(
                "provider call id already belongs to another call",
            ));
        }
        let mut next = call.clone();
        next.version += 1;
        st.replace(next.clone());
        Ok(next)
    }

    async fn delete_if_scheduled(&self, owner: &Owner, id: CallId) -> Result<()> {
        let mut st = self.lock();
        let Some(stored) = st.calls.get(&id).filter(|c| &c.owner == owner) else {
            return Err(Error::not_found(format!("call {id} not found")));
        };
        if stored.status != CallStatus::Scheduled {
            return Err(Error::conflict(format!(
                "only a scheduled call can be deleted; this one is {}",
                stored.status
            )));
        }
        let stored = stored.clone();
        st.unindex(&stored);
        if let Some(key) = &stored.idempotency_key {
            st.idempotency.remove(&(stored.owner.clone(), key.clone()));
        }
        st.calls.remove(&id);
        Ok(())
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page<Call>> {
        if let Some(s) = query.status
            && ListView::of(s) != query.view
        {
            return Err(Error::validation(
                "status",
                "status does not belong to this view",
            ));
        }
        let calls: Vec<Call> = self
            .lock()
            .calls
            .values()
            .filter(|c| &c.owner == owner)
            .filter(|c| ListView::of(c.status) == query.view)
            .filter(|c| query.status.is_none_or(|s| c.status == s))
            .cloned()
            .collect();
        match query.view {
            ListView::Upcoming => {
                asc_page(calls, query.limit, query.cursor.as_deref(), scheduled_key)
            }
            ListView::Finished => {
                let limit = page_limit(query.limit)?;
                let after = after_cursor(query.cursor.as_deref())?;
                let mut items: Vec<Call> = calls
                    .into_iter()
                    .filter(|c| after.is_none_or(|a| (finished_key(c), c.id) < a))
                    .collect();
                items.sort_by_key(|c| std::cmp::Reverse((finished_key(c), c.id)));
                items.truncate(limit + 1);
                Ok(paginate(items, limit, finished_key))
            }
        }
    }

    async fn find_by_provider_call_id(&self, provider_call_id: &str) -> Result<Option<Call>> {
        let st = self.lock();
        Ok(st
            .by_provider_id
            .get(provider_call_id)
            .and_then(|id| st.calls.get(id))
            .cloned())
    }

    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        let calls: Vec<Call> = self
            .lock()
            .calls
            .values()
            .filter(|c| c.status.is_active())
            .filter(|c| match scope {
                ActiveScope::All => true,
                ActiveScope::Tenant(t) => &c.owner.tenant == t,
                ActiveScope::Owner(o) => &c.owner == o,
            })
            .cloned()
            .collect();
        asc_page(calls, limit, cursor, scheduled_key)
    }

    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        let calls: Vec<Call> = self
            .lock()
            .calls
            .values()
            .filter(|c| {
                &c.owner.tenant == tenant && c.scheduled_for >= from && c.scheduled_for < to
            })
            .cloned()
            .collect();
        asc_page(calls, limit, cursor, scheduled_key)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Call>> {
        let mut st = self.lock();
        let now_ms = now.timestamp_millis();
        let due: Vec<CallId> = st
            .due
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit as usize)
            .map(|(_, id)| *id)
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        for id in due {
            let Some(mut c) = st.calls.get(&id).cloned() else {
                continue;
            };
            c.status = CallStatus::Dispatching;
            c.lease = Some(Lease {
                worker: worker.clone(),
                expires_at: lease_until,
            });
            c.next_action_at = Some(lease_until);
            c.version += 1;
            c.updated_at = now;
            st.replace(c.clone());
            claimed.push(c);
        }
        Ok(claimed)
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .lock()
            .due
            .first()
            .and_then(|(ms, _)| DateTime::from_timestamp_millis(*ms)))
    }
}
