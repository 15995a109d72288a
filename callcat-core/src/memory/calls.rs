use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::entry::Entry;
use super::page_limit;
use crate::call::{Call, CallStatus};
use crate::crypto::FieldCipher;
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::ids::{CallId, Owner, TenantId, WorkerId};
use crate::phone::PhoneNumber;
use crate::rotation::ResealPage;
use crate::store::{ActiveScope, CallStore, Created, ListQuery, ListView, Page, StoreCapabilities};

mod rotation;

/// Calls in memory, behind one mutex, with a due index so claims and
/// `next_due_at` cost O(log n).
///
/// With a [`FieldCipher`] ([`InMemoryCallStore::with_cipher`]) each call is kept
/// sealed ([`crate::crypto::seal_call`]: phone number, caller number and recording
/// URL encrypted under the owner's key) beside the plain fields its queries need
/// (ids, owner, status, times, provider call id, version) and the blind index of
/// its phone number, so a dump of the store's memory holds no plaintext number.
/// Reads open the sealed call; every write seals under the current key.
#[derive(Default)]
pub struct InMemoryCallStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    calls: HashMap<CallId, Entry>,
    idempotency: HashMap<(Owner, String), CallId>,
    by_provider_id: HashMap<String, CallId>,
    due: BTreeSet<(i64, CallId)>,
    /// Active calls by (`scheduled_for` ms, id): list_active's order.
    active: BTreeSet<(i64, CallId)>,
    /// How many active calls each owner has (owners with none are absent).
    active_by_owner: HashMap<Owner, u32>,
    /// Calls set aside because their record cannot be opened: in no index, so
    /// never claimed nor counted as active again.
    quarantined: BTreeSet<CallId>,
    cipher: Option<FieldCipher>,
}

impl std::fmt::Debug for InMemoryCallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("InMemoryCallStore")
            .field("calls", &st.calls.len())
            .field("cipher", &st.cipher)
            .finish()
    }
}

/// The store name in logs and metrics.
const SOURCE: &str = "memory";

fn due_key(c: &Entry) -> Option<(i64, CallId)> {
    match (c.status.is_claimable(), c.next_action_at) {
        (true, Some(at)) => Some((at.timestamp_millis(), c.id)),
        _ => None,
    }
}

impl State {
    fn index(&mut self, c: &Entry) {
        if let Some(k) = due_key(c) {
            self.due.insert(k);
        }
        if c.status.is_active() {
            self.active.insert((scheduled_key(c), c.id));
            *self.active_by_owner.entry(c.owner.clone()).or_default() += 1;
        }
        if let Some(p) = &c.provider_call_id {
            self.by_provider_id.insert(p.clone(), c.id);
        }
    }

    fn unindex(&mut self, c: &Entry) {
        if let Some(k) = due_key(c) {
            self.due.remove(&k);
        }
        if c.status.is_active()
            && self.active.remove(&(scheduled_key(c), c.id))
            && let Some(n) = self.active_by_owner.get_mut(&c.owner)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.active_by_owner.remove(&c.owner);
            }
        }
        if let Some(p) = &c.provider_call_id
            && self.by_provider_id.get(p) == Some(&c.id)
        {
            self.by_provider_id.remove(p);
        }
    }

    /// Seals (when a cipher is set) and stores `c`, replacing any older version.
    /// Nothing changes when sealing fails.
    fn replace(&mut self, c: &Call) -> Result<()> {
        let entry = Entry::new(c, self.cipher.as_ref())?;
        if let Some(old) = self.calls.remove(&c.id) {
            self.unindex(&old);
        }
        self.index(&entry);
        self.calls.insert(c.id, entry);
        Ok(())
    }

    fn open(&self, e: &Entry) -> Result<Call> {
        e.open(self.cipher.as_ref())
    }

    /// Opens `entries`, skipping (with a log and a metric) those that cannot be
    /// opened, so one unreadable call never fails a listing.
    fn open_all<'a>(&self, entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Call> {
        entries
            .into_iter()
            .filter_map(|e| match self.open(e) {
                Ok(c) => Some(c),
                Err(err) => {
                    crate::store::report_unreadable(SOURCE, &e.id.to_string(), &err);
                    None
                }
            })
            .collect()
    }

    /// Whether the capped claim may take `e` now, given the calls of each owner
    /// it has already taken (`taken`): a lapsed Dispatching call always, any
    /// other only while its owner has fewer than `cap` active calls.
    fn capped_allows(&self, e: &Entry, cap: u32, taken: &HashMap<Owner, u32>) -> bool {
        if e.status == CallStatus::Dispatching {
            return true;
        }
        let active = self.active_by_owner.get(&e.owner).copied().unwrap_or(0);
        let taken = taken.get(&e.owner).copied().unwrap_or(0);
        active.saturating_add(taken) < cap
    }

    /// Leases the calls `due` (already chosen) to `worker`, quarantining those
    /// that cannot be opened.
    fn claim_ids(
        &mut self,
        due: Vec<CallId>,
        now: DateTime<Utc>,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Call>> {
        // A call that cannot be opened (missing key, tampered) is quarantined, so it
        // neither fails this claim nor comes due again; the others are claimed.
        let mut opened = Vec::with_capacity(due.len());
        for id in due {
            let Some(e) = self.calls.get(&id) else {
                continue;
            };
            match self.open(e) {
                Ok(c) => opened.push(c),
                Err(err) => self.quarantine(id, &err),
            }
        }
        self.lease_opened(opened, now, worker, lease_until)
    }

    /// Leases calls already opened to `worker`.
    fn lease_opened(
        &mut self,
        opened: Vec<Call>,
        now: DateTime<Utc>,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Call>> {
        let mut claimed = Vec::with_capacity(opened.len());
        for c in opened {
            let Some(mut c) = crate::lifecycle::claim(&c, worker, now, lease_until) else {
                continue;
            };
            c.version += 1;
            self.replace(&c)?;
            claimed.push(c);
        }
        Ok(claimed)
    }

    /// Takes a call that cannot be opened out of every index and remembers it.
    fn quarantine(&mut self, id: CallId, err: &Error) {
        if let Some(e) = self.calls.get(&id).cloned() {
            self.unindex(&e);
        }
        self.quarantined.insert(id);
        crate::store::report_quarantined(SOURCE, &id.to_string(), err);
    }
}

impl InMemoryCallStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps calls sealed with `cipher` (see the type docs).
    pub fn with_cipher(cipher: FieldCipher) -> Self {
        let store = Self::default();
        store.lock().cipher = Some(cipher);
        store
    }

    /// Replaces the key ring (rotation: put the new key first and keep the old ones
    /// so existing calls still open; each call is re-sealed under the new key on its
    /// next write). Calls already stored are not rewritten.
    pub fn set_cipher(&self, cipher: FieldCipher) {
        self.lock().cipher = Some(cipher);
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

    /// How many active calls (Dispatching, Ringing, InProgress, Canceling) in
    /// `scope` are to `number`: the "no second call in flight to this number"
    /// check. Sealed calls match by blind index under every key of the ring (so
    /// calls written before a rotation count too), plain ones by number.
    pub fn active_calls_to_number(&self, scope: &ActiveScope, number: &PhoneNumber) -> Result<u32> {
        let st = self.lock();
        let indexes = st
            .cipher
            .as_ref()
            .map(|c| c.blind_indexes(number.as_str()))
            .unwrap_or_default();
        let n = st
            .active
            .iter()
            .filter_map(|(_, id)| st.calls.get(id))
            .filter(|e| in_scope(scope, &e.owner))
            .filter(|e| e.is_to(number, &indexes))
            .count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
impl InMemoryCallStore {
    /// Everything the store holds, as `Debug` text (what a memory dump would show).
    pub(super) fn dump(&self) -> String {
        let st = self.lock();
        format!(
            "{:?} {:?} {:?} {:?}",
            st.calls, st.idempotency, st.by_provider_id, st.due
        )
    }

    /// Edits the stored (sealed) record of a call in place, as an attacker with
    /// write access to memory could.
    pub(super) fn tamper(&self, id: CallId, f: impl FnOnce(&mut serde_json::Value)) {
        if let Some(e) = self.lock().calls.get_mut(&id)
            && let super::entry::Body::Sealed(record) = &mut e.body
        {
            f(record);
        }
    }
}

fn in_scope(scope: &ActiveScope, owner: &Owner) -> bool {
    match scope {
        ActiveScope::All => true,
        ActiveScope::Tenant(t) => &owner.tenant == t,
        ActiveScope::Owner(o) => owner == o,
    }
}

/// Cuts sorted `entries` (at most `limit + 1`) to a page and opens it.
fn paginate(
    st: &State,
    mut entries: Vec<&Entry>,
    limit: usize,
    key: fn(&Entry) -> i64,
) -> Result<Page<Call>> {
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next_cursor = if more {
        entries.last().map(|c| {
            Cursor {
                key: key(c),
                id: c.id.to_string(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Page {
        items: st.open_all(entries),
        next_cursor,
    })
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

fn asc_page<'a>(
    st: &State,
    entries: impl Iterator<Item = &'a Entry>,
    limit: u32,
    cursor: Option<&str>,
    key: fn(&Entry) -> i64,
) -> Result<Page<Call>> {
    let limit = page_limit(limit)?;
    let after = after_cursor(cursor)?;
    let mut items: Vec<&Entry> = entries
        .filter(|c| after.is_none_or(|a| (key(c), c.id) > a))
        .collect();
    items.sort_by_key(|c| (key(c), c.id));
    items.truncate(limit + 1);
    paginate(st, items, limit, key)
}

fn scheduled_key(c: &Entry) -> i64 {
    c.scheduled_for.timestamp_millis()
}

fn finished_key(c: &Entry) -> i64 {
    c.finished_key.timestamp_millis()
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
            return Ok(Created::Existing(st.open(existing)?));
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
        st.replace(call)?;
        if let Some(key) = &call.idempotency_key {
            st.idempotency
                .insert((call.owner.clone(), key.clone()), call.id);
        }
        Ok(Created::New(call.clone()))
    }

    async fn get(&self, id: CallId) -> Result<Option<Call>> {
        let st = self.lock();
        st.calls.get(&id).map(|e| st.open(e)).transpose()
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
        st.replace(&next)?;
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
        let st = self.lock();
        let entries = st
            .calls
            .values()
            .filter(|c| &c.owner == owner)
            .filter(|c| ListView::of(c.status) == query.view)
            .filter(|c| query.status.is_none_or(|s| c.status == s));
        match query.view {
            ListView::Upcoming => asc_page(
                &st,
                entries,
                query.limit,
                query.cursor.as_deref(),
                scheduled_key,
            ),
            ListView::Finished => {
                let limit = page_limit(query.limit)?;
                let after = after_cursor(query.cursor.as_deref())?;
                let mut items: Vec<&Entry> = entries
                    .filter(|c| after.is_none_or(|a| (finished_key(c), c.id) < a))
                    .collect();
                items.sort_by_key(|c| std::cmp::Reverse((finished_key(c), c.id)));
                items.truncate(limit + 1);
                paginate(&st, items, limit, finished_key)
            }
        }
    }

    async fn count_by_status(
        &self,
        owner: &Owner,
    ) -> Result<std::collections::BTreeMap<CallStatus, u64>> {
        let st = self.lock();
        let mut counts = std::collections::BTreeMap::new();
        for c in st.calls.values().filter(|c| &c.owner == owner) {
            *counts.entry(c.status).or_insert(0) += 1;
        }
        Ok(counts)
    }

    async fn find_by_provider_call_id(&self, provider_call_id: &str) -> Result<Option<Call>> {
        let st = self.lock();
        st.by_provider_id
            .get(provider_call_id)
            .and_then(|id| st.calls.get(id))
            .map(|e| st.open(e))
            .transpose()
    }

    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        let limit = page_limit(limit)?;
        let after = after_cursor(cursor)?;
        let st = self.lock();
        let range = match after {
            Some(a) => st.active.range((Bound::Excluded(a), Bound::Unbounded)),
            None => st.active.range(..),
        };
        let entries: Vec<&Entry> = range
            .filter_map(|(_, id)| st.calls.get(id))
            .filter(|c| in_scope(scope, &c.owner))
            .take(limit + 1)
            .collect();
        paginate(&st, entries, limit, scheduled_key)
    }

    async fn count_active(&self, scope: &ActiveScope) -> Result<u64> {
        let st = self.lock();
        Ok(match scope {
            ActiveScope::All => st.active.len() as u64,
            _ => st
                .active
                .iter()
                .filter_map(|(_, id)| st.calls.get(id))
                .filter(|c| in_scope(scope, &c.owner))
                .count() as u64,
        })
    }

    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>> {
        let st = self.lock();
        let entries = st.calls.values().filter(|c| {
            &c.owner.tenant == tenant && c.scheduled_for >= from && c.scheduled_for < to
        });
        asc_page(&st, entries, limit, cursor, scheduled_key)
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
        st.claim_ids(due, now, worker, lease_until)
    }

    async fn claim_due_capped(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
        owner_cap: u32,
    ) -> Result<Vec<Call>> {
        let mut st = self.lock();
        let now_ms = now.timestamp_millis();
        let mut taken: HashMap<Owner, u32> = HashMap::new();
        let mut opened = Vec::new();
        // Opened here, before it counts toward its owner's share: a call that
        // cannot be opened is quarantined and takes no one's place.
        let mut unreadable = Vec::new();
        for (at, id) in &st.due {
            if *at > now_ms || opened.len() >= limit as usize {
                break;
            }
            let Some(e) = st.calls.get(id) else { continue };
            if !st.capped_allows(e, owner_cap, &taken) {
                continue;
            }
            match st.open(e) {
                Ok(c) => {
                    if e.status != CallStatus::Dispatching {
                        *taken.entry(e.owner.clone()).or_default() += 1;
                    }
                    opened.push(c);
                }
                Err(err) => unreadable.push((*id, err)),
            }
        }
        for (id, err) in unreadable {
            st.quarantine(id, &err);
        }
        st.lease_opened(opened, now, worker, lease_until)
    }

    async fn next_due_capped(&self, owner_cap: u32) -> Result<crate::store::NextDue> {
        let st = self.lock();
        let none = HashMap::new();
        let mut blocked = false;
        for (at, id) in &st.due {
            let Some(e) = st.calls.get(id) else { continue };
            if st.capped_allows(e, owner_cap, &none) {
                return Ok(crate::store::NextDue {
                    at: DateTime::from_timestamp_millis(*at),
                    blocked,
                });
            }
            blocked = true;
        }
        Ok(crate::store::NextDue { at: None, blocked })
    }

    async fn list_quarantined(&self) -> Result<Vec<CallId>> {
        Ok(self.lock().quarantined.iter().copied().collect())
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .lock()
            .due
            .first()
            .and_then(|(ms, _)| DateTime::from_timestamp_millis(*ms)))
    }

    async fn active_calls_to_number(
        &self,
        scope: &ActiveScope,
        number: &PhoneNumber,
    ) -> Result<u32> {
        // The inherent method answers from the blind phone index.
        Self::active_calls_to_number(self, scope, number)
    }

    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        self.lock().reseal_page(rewrite, limit, cursor)
    }
}
