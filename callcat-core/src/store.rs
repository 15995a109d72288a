//! Storage traits: small, object-safe, primitive operations. Every backend runs
//! the conformance suite in `callcat_core::testing` (feature `testing`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::{Call, CallStatus};
use crate::error::Result;
use crate::ids::{CallId, Owner, TenantId, UserId, WindowId, WorkerId};
use crate::phone::PhoneNumber;
use crate::rotation::{ResealPage, reseal_unsupported};
use crate::transcript::{Transcript, TranscriptSegment};
use crate::window::CallWindow;

/// The largest page any list returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Which list of an owner's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListView {
    /// Not yet finished, soonest `scheduled_for` first.
    Upcoming,
    /// Finished (terminal), latest `finished_at` first.
    Finished,
}

impl ListView {
    /// The view a status belongs to.
    pub fn of(status: CallStatus) -> ListView {
        if status.is_upcoming() {
            ListView::Upcoming
        } else {
            ListView::Finished
        }
    }
}

/// A page request over an owner's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Upcoming or finished.
    pub view: ListView,
    /// Only this status (it must belong to `view`).
    pub status: Option<CallStatus>,
    /// Page size, 1 to [`MAX_PAGE_SIZE`].
    pub limit: u32,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// First page of a view.
    pub fn new(view: ListView, limit: u32) -> Self {
        ListQuery {
            view,
            status: None,
            limit,
            cursor: None,
        }
    }

    /// First page of the calls in one status (in that status's view).
    pub fn status(status: CallStatus, limit: u32) -> Self {
        ListQuery {
            view: ListView::of(status),
            status: Some(status),
            limit,
            cursor: None,
        }
    }
}

/// One page of results and the cursor for the next, `None` at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Opaque; pass it back for the next page.
    pub next_cursor: Option<String>,
}

/// Which active calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveScope {
    /// All tenants (admin views, sweeper, poller).
    All,
    /// One tenant.
    Tenant(TenantId),
    /// One owner (per-owner caps).
    Owner(Owner),
}

/// The answer of [`CallStore::next_due_capped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NextDue {
    /// The earliest `next_action_at` among claimable calls the capped claim may take.
    pub at: Option<DateTime<Utc>>,
    /// Some waiting calls due at or before `at` (any, when `at` is `None`) were
    /// left out because their owner is at the cap: they become claimable when
    /// one of that owner's calls ends.
    pub blocked: bool,
}

/// The outcome of [`CallStore::create`].
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new call was stored.
    New(Call),
    /// A call with the same owner and idempotency key existed; nothing was written.
    Existing(Call),
}

impl Created {
    /// The call, new or existing.
    pub fn into_call(self) -> Call {
        match self {
            Created::New(c) | Created::Existing(c) => c,
        }
    }

    /// The call, new or existing.
    pub fn call(&self) -> &Call {
        match self {
            Created::New(c) | Created::Existing(c) => c,
        }
    }
}

/// What a backend can and cannot do, declared rather than silently skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCapabilities {
    /// Wakes schedulers in other processes when a call becomes due earlier.
    pub cross_process_wakeups: bool,
    /// Several processes can share the store (false for in-memory).
    pub shared_between_processes: bool,
}

/// Calls: create, read, compare-and-swap update, list, claim.
///
/// Every write that changes a call goes through [`CallStore::update`], a
/// compare-and-swap on [`Call::version`]: the stored version must equal the given
/// call's version; the store writes it with `version + 1` and returns what it stored.
#[async_trait::async_trait]
pub trait CallStore: Send + Sync + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> StoreCapabilities;

    /// Stores a new call (its `version` must be 0). If it carries an idempotency key
    /// that its owner already used, returns [`Created::Existing`] and writes nothing.
    /// A second call with the same id is a `Conflict`.
    async fn create(&self, call: &Call) -> Result<Created>;

    /// Reads a call by id (no owner check; the engine scopes by owner).
    async fn get(&self, id: CallId) -> Result<Option<Call>>;

    /// Compare-and-swap: `Conflict` if the stored version differs, `NotFound` if gone.
    async fn update(&self, call: &Call) -> Result<Call>;

    /// Deletes a call of `owner` only while it is `Scheduled`: `Conflict` in any other
    /// status, `NotFound` if absent or owned by someone else.
    async fn delete_if_scheduled(&self, owner: &Owner, id: CallId) -> Result<()>;

    /// One page of an owner's calls.
    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page<Call>>;

    /// The call whose current attempt has this provider call id.
    async fn find_by_provider_call_id(&self, provider_call_id: &str) -> Result<Option<Call>>;

    /// Active calls (Dispatching, Ringing, InProgress, Canceling) in scope, oldest
    /// `scheduled_for` first.
    async fn list_active(
        &self,
        scope: &ActiveScope,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>>;

    /// A tenant's calls scheduled in `[from, to)`, soonest first (analytics).
    async fn list_tenant_range(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Call>>;

    /// Atomically claims up to `limit` calls whose `next_action_at <= now` and whose
    /// status is claimable (Scheduled, RetryPending, or Dispatching with a lapsed
    /// lease), earliest first. Each claimed call becomes `Dispatching` with
    /// `lease = (worker, lease_until)`, `next_action_at = lease_until`, version + 1,
    /// `updated_at = now`. Two concurrent claimers never get the same call.
    ///
    /// A due call whose stored record cannot be opened (a key missing from the
    /// ring, a corrupt record) never fails the claim: the store quarantines it in
    /// the same operation (it leaves the claimable and active sets for good, so it
    /// is neither dialed nor counted toward any cap), reports it with
    /// [`report_quarantined`], and returns the other calls.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Call>>;

    /// The earliest `next_action_at` among claimable calls (due or not), so a
    /// scheduler can sleep exactly until then.
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>>;

    /// [`CallStore::claim_due`] that waits for busy owners for free: it never
    /// claims a Scheduled or RetryPending call of an owner who already has
    /// `owner_cap` or more active calls, and claims at most `owner_cap − active`
    /// of an owner's calls at once (earliest due first). A Dispatching call with a
    /// lapsed lease is always claimable (it is already counted, and recovering it
    /// is what frees its owner). So a backlog of one owner at its cap costs no
    /// claim, and never stands in front of another owner's due call.
    ///
    /// The default claims as [`CallStore::claim_due`] does (the scheduler then
    /// defers the extra calls after the claim): correct, but not free.
    async fn claim_due_capped(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        worker: &WorkerId,
        lease_until: DateTime<Utc>,
        owner_cap: u32,
    ) -> Result<Vec<Call>> {
        let _ = owner_cap;
        self.claim_due(now, limit, worker, lease_until).await
    }

    /// [`CallStore::next_due_at`] leaving out the waiting calls of owners with
    /// `owner_cap` or more active calls (what [`CallStore::claim_due_capped`]
    /// would skip), and saying whether any were left out: a scheduler then sleeps
    /// until the next call it can take, and wakes early when a call ends.
    ///
    /// The default answers [`CallStore::next_due_at`] and `blocked: false`.
    async fn next_due_capped(&self, owner_cap: u32) -> Result<NextDue> {
        let _ = owner_cap;
        Ok(NextDue {
            at: self.next_due_at().await?,
            blocked: false,
        })
    }

    /// Calls this store set aside because it could not open their record (see
    /// [`CallStore::claim_due`] and [`report_quarantined`]), for operators. The
    /// default knows none; a backend that can list them cheaply answers.
    async fn list_quarantined(&self) -> Result<Vec<CallId>> {
        Ok(Vec::new())
    }

    /// How many calls in `scope` are active (Dispatching, Ringing, InProgress,
    /// Canceling): the scheduler's global cap. The default pages through
    /// [`CallStore::list_active`]; backends answer with a count from their index.
    async fn count_active(&self, scope: &ActiveScope) -> Result<u64> {
        count_active_matching(self, scope, |_| true).await
    }

    /// How many calls `owner` has in each status (statuses with none are left
    /// out): the per-state view of a user's calls (seed 003's
    /// `scheduler_dashboard`). The default pages through both views of
    /// [`CallStore::list`]; backends answer with one grouped count.
    async fn count_by_status(&self, owner: &Owner) -> Result<BTreeMap<CallStatus, u64>> {
        let mut counts = BTreeMap::new();
        for view in [ListView::Upcoming, ListView::Finished] {
            let mut q = ListQuery::new(view, MAX_PAGE_SIZE);
            loop {
                let page = self.list(owner, &q).await?;
                for c in &page.items {
                    *counts.entry(c.status).or_insert(0) += 1;
                }
                match page.next_cursor {
                    Some(next) => q.cursor = Some(next),
                    None => break,
                }
            }
        }
        Ok(counts)
    }

    /// How many active calls in `scope` go to `number` ("no second call in flight
    /// to this number"). The default pages through the active calls; backends
    /// answer from their (blind) phone index instead.
    async fn active_calls_to_number(
        &self,
        scope: &ActiveScope,
        number: &PhoneNumber,
    ) -> Result<u32> {
        let n = count_active_matching(self, scope, |c| &c.phone_number == number).await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Key rotation ([`crate::rotation`]): one page, in id order from `cursor`,
    /// of the stored calls, counting the master keys their sealed fields and
    /// phone blind index use. With `rewrite`, each call not in flight that holds a
    /// value under another key than the current one (or a plain value of a sealed
    /// field) is first re-sealed under the current key, only if it is unchanged
    /// since it was read (same version); its version does not change. Calls in
    /// flight, and calls changed meanwhile, are counted as deferred; calls that
    /// cannot be opened as unreadable. `limit` is 1 to [`MAX_PAGE_SIZE`]; a
    /// rewrite without a cipher is a `Validation` error. The default answers
    /// `Unsupported`.
    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        let _ = (rewrite, limit, cursor);
        Err(reseal_unsupported("calls"))
    }
}

/// The active calls in `scope` that satisfy `pred`, counted page by page through
/// [`CallStore::list_active`] (the counting defaults).
async fn count_active_matching<S: CallStore + ?Sized>(
    store: &S,
    scope: &ActiveScope,
    pred: impl Fn(&Call) -> bool + Send,
) -> Result<u64> {
    let mut count = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list_active(scope, MAX_PAGE_SIZE, cursor.as_deref())
            .await?;
        count += page.items.iter().filter(|c| pred(c)).count() as u64;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(count),
        }
    }
}

/// Transcripts, keyed by our call id, with a time to live.
#[async_trait::async_trait]
pub trait TranscriptStore: Send + Sync + 'static {
    /// Creates or replaces the whole transcript.
    async fn put(&self, transcript: &Transcript) -> Result<()>;

    /// Appends segments, creating the transcript if needed; returns the result.
    /// `provider_call_id`, when given, is recorded.
    async fn append(
        &self,
        call_id: CallId,
        owner: &Owner,
        provider_call_id: Option<&str>,
        segments: &[TranscriptSegment],
        now: DateTime<Utc>,
    ) -> Result<Transcript>;

    /// Reads a transcript unless it has expired at `now`.
    async fn get(&self, call_id: CallId, now: DateTime<Utc>) -> Result<Option<Transcript>>;

    /// Reads by the provider's call id unless expired at `now`.
    async fn get_by_provider_call_id(
        &self,
        provider_call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transcript>>;

    /// Deletes transcripts expired at `now`; returns how many.
    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Key rotation ([`crate::rotation`]): like [`CallStore::reseal_page`], over
    /// transcripts (in call id order): a rewrite re-seals the segment texts and
    /// free text only if the transcript is unchanged since it was read. The
    /// default answers `Unsupported`.
    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        let _ = (rewrite, limit, cursor);
        Err(reseal_unsupported("transcripts"))
    }
}

/// Call windows.
#[async_trait::async_trait]
pub trait WindowStore: Send + Sync + 'static {
    /// Stores a new window.
    async fn create(&self, window: &CallWindow) -> Result<()>;

    /// An owner's window by id (`None` if absent or someone else's).
    async fn get(&self, owner: &Owner, id: WindowId) -> Result<Option<CallWindow>>;

    /// An owner's windows, oldest first.
    async fn list(&self, owner: &Owner) -> Result<Vec<CallWindow>>;

    /// Every window, page by page (for planners).
    async fn list_all(&self, limit: u32, cursor: Option<&str>) -> Result<Page<CallWindow>>;

    /// Replaces an owner's window (same id, owner and creation time; new schedule
    /// and template); `NotFound` if absent or someone else's.
    async fn update(&self, window: &CallWindow) -> Result<()>;

    /// Deletes an owner's window; `NotFound` if absent or someone else's.
    async fn delete(&self, owner: &Owner, id: WindowId) -> Result<()>;

    /// Key rotation ([`crate::rotation`]): like [`CallStore::reseal_page`], over
    /// windows (in id order): a rewrite re-seals the template only if the window
    /// is unchanged since it was read. The default answers `Unsupported`.
    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        let _ = (rewrite, limit, cursor);
        Err(reseal_unsupported("windows"))
    }
}

/// One number on a tenant's do-not-call list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoNotCallEntry {
    /// The tenant whose list it is (the list is tenant-wide).
    pub tenant: TenantId,
    /// The number that must never be called.
    pub phone_number: PhoneNumber,
    /// The user who listed it.
    pub added_by: UserId,
    /// When it was listed.
    pub added_at: DateTime<Utc>,
}

/// Per-tenant do-not-call lists. Numbers are encrypted at rest where the backend
/// has a cipher; look-ups go through a keyed hash, never the plaintext.
#[async_trait::async_trait]
pub trait DoNotCallStore: Send + Sync + 'static {
    /// Lists a number for its tenant. `true` when it was added, `false` when it was
    /// already listed (the first entry is kept unchanged).
    async fn add(&self, entry: &DoNotCallEntry) -> Result<bool>;

    /// Takes a number off a tenant's list; `NotFound` when it was not listed.
    async fn remove(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<()>;

    /// Whether a number is on a tenant's list.
    async fn contains(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<bool>;

    /// A tenant's entry for a number, if it is listed.
    async fn get(&self, tenant: &TenantId, number: &PhoneNumber) -> Result<Option<DoNotCallEntry>>;

    /// A tenant's entries, oldest first, page by page (`limit` 1 to
    /// [`MAX_PAGE_SIZE`]; the cursor is opaque, an invalid one is a `Validation`
    /// error on `nextToken`).
    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<DoNotCallEntry>>;

    /// Key rotation ([`crate::rotation`]): like [`CallStore::reseal_page`], over
    /// do-not-call entries: a rewrite re-seals the number and recomputes its
    /// blind index under the current key (an entry under a retired key would no
    /// longer be found, so its number could be called). The default answers
    /// `Unsupported`.
    async fn reseal_page(
        &self,
        rewrite: bool,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ResealPage> {
        let _ = (rewrite, limit, cursor);
        Err(reseal_unsupported("do-not-call entries"))
    }
}

/// Conveniences over [`CallStore`] that every backend gets for free.
#[async_trait::async_trait]
pub trait CallStoreExt: CallStore {
    /// Reads a call of `owner`: `NotFound` if absent or someone else's.
    async fn get_owned(&self, owner: &Owner, id: CallId) -> Result<Call> {
        match self.get(id).await? {
            Some(c) if &c.owner == owner => Ok(c),
            _ => Err(crate::Error::not_found(format!("call {id} not found"))),
        }
    }

    /// Every active call in scope (all pages).
    async fn all_active(&self, scope: &ActiveScope) -> Result<Vec<Call>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .list_active(scope, MAX_PAGE_SIZE, cursor.as_deref())
                .await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Like [`CallStoreExt::update_with`], but starts from `current` (a version the
    /// caller just read or wrote) instead of reading it again: one round trip
    /// instead of two when nobody wrote in between. On `Conflict` it re-reads.
    async fn update_from<F>(&self, current: Call, attempts: u32, mut f: F) -> Result<Call>
    where
        F: FnMut(&Call) -> Result<Option<Call>> + Send,
    {
        let Some(next) = f(&current)? else {
            return Ok(current);
        };
        match self.update(&next).await {
            Ok(stored) => Ok(stored),
            Err(e) if e.kind() == crate::ErrorKind::Conflict => {
                self.update_with(current.id, attempts.saturating_sub(1), f)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the call, applies `f`, and writes it with compare-and-swap, re-reading
    /// and re-applying on `Conflict` (up to `attempts` times). `f` returning `Ok(None)`
    /// means "nothing to write" and returns the current call unchanged.
    async fn update_with<F>(&self, id: CallId, attempts: u32, mut f: F) -> Result<Call>
    where
        F: FnMut(&Call) -> Result<Option<Call>> + Send,
    {
        let mut last_err = None;
        for _ in 0..attempts.max(1) {
            let Some(current) = self.get(id).await? else {
                return Err(crate::Error::not_found(format!("call {id} not found")));
            };
            let Some(next) = f(&current)? else {
                return Ok(current);
            };
            match self.update(&next).await {
                Ok(stored) => return Ok(stored),
                Err(e) if e.kind() == crate::ErrorKind::Conflict => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| crate::Error::conflict("update kept conflicting")))
    }
}

impl<T: CallStore + ?Sized> CallStoreExt for T {}

/// Shared handles to the stores.
#[derive(Clone)]
pub struct Stores {
    /// Calls.
    pub calls: Arc<dyn CallStore>,
    /// Transcripts.
    pub transcripts: Arc<dyn TranscriptStore>,
    /// Windows.
    pub windows: Arc<dyn WindowStore>,
    /// Per-tenant do-not-call lists.
    pub do_not_call: Arc<dyn DoNotCallStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::call::CallStatus;
    use crate::memory::InMemoryCallStore;
    use crate::testing::fixtures::{at, owner, scheduled_call};

    /// The counting defaults (for backends without an index) page through
    /// `list_active` and agree with the memory store's indexed answers.
    #[tokio::test]
    async fn the_counting_defaults_page_through_every_active_call() {
        let store = InMemoryCallStore::new();
        let other = PhoneNumber::parse("+442071838750").expect("valid");
        let (a, b) = (owner("tenant-a"), owner("tenant-b"));
        for i in 0..1_500u32 {
            let o = if i % 3 == 0 { &a } else { &b };
            let mut c = scheduled_call(o, at(10 + i64::from(i)));
            if i % 2 == 0 {
                c.phone_number = other.clone();
            }
            let c = store.create(&c).await.expect("create").into_call();
            if i < 1_200 {
                let mut u = c.clone();
                u.status = CallStatus::Ringing;
                u.next_action_at = None;
                store.update(&u).await.expect("ringing");
            }
        }
        for scope in [
            ActiveScope::All,
            ActiveScope::Tenant(a.tenant.clone()),
            ActiveScope::Owner(b.clone()),
        ] {
            let all = count_active_matching(&store, &scope, |_| true).await;
            assert_eq!(
                all.expect("count"),
                store.count_active(&scope).await.expect("count")
            );
            let to_other = count_active_matching(&store, &scope, |c| c.phone_number == other).await;
            let indexed = CallStore::active_calls_to_number(&store, &scope, &other).await;
            assert_eq!(to_other.expect("count"), u64::from(indexed.expect("count")));
        }
        assert_eq!(
            store.count_active(&ActiveScope::All).await.expect("count"),
            1_200
        );
    }
}

/// Logs and counts a call a store quarantined because its record cannot be
/// opened: `error` says why (a decryption or parse error; it never holds the
/// plaintext of a sealed field). Counted in `callcat_store_quarantined_total`.
pub fn report_quarantined(store: &'static str, id: &str, error: &crate::Error) {
    tracing::error!(
        store,
        call_id = %id,
        error = %error,
        "call quarantined: its stored record cannot be opened, so it will not be dialed"
    );
    metrics::counter!("callcat_store_quarantined_total", "store" => store).increment(1);
}

/// Logs and counts a stored call a listing skipped because its record cannot be
/// opened, so one bad row never fails a whole page (the page holds fewer items;
/// its cursor still moves past the row). Counted in
/// `callcat_store_unreadable_total`.
pub fn report_unreadable(store: &'static str, id: &str, error: &crate::Error) {
    tracing::warn!(
        store,
        call_id = %id,
        error = %error,
        "skipped a call whose stored record cannot be opened"
    );
    metrics::counter!("callcat_store_unreadable_total", "store" => store).increment(1);
}
