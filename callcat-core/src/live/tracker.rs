//! [`LiveTracker`]: the active calls per tenant, kept from the update bus, and a
//! tenant-filtered feed of changes whose slow subscribers are told they lagged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::bus::{CallUpdate, UpdateBus};
use crate::call::{Call, CallStatus};
use crate::error::Result;
use crate::ids::{CallId, Owner, TenantId};
use crate::store::{ActiveScope, CallStore, CallStoreExt};

/// How many ended calls the tracker remembers, so that an older update published
/// late cannot bring an ended call back.
const ENDED_MEMORY: usize = 4096;

/// Which calls a view or subscription covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveScope {
    /// Every tenant (admin views).
    All,
    /// One tenant (company or branch).
    Tenant(TenantId),
}

impl LiveScope {
    /// Whether a call of `owner` is in scope.
    pub fn covers(&self, owner: &Owner) -> bool {
        match self {
            LiveScope::All => true,
            LiveScope::Tenant(t) => &owner.tenant == t,
        }
    }
}

/// An active call, as live views show it (no phone numbers: fetch the call for those).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveCall {
    /// Our call id.
    pub call_id: CallId,
    /// Whose call.
    pub owner: Owner,
    /// Dispatching, Ringing, InProgress or Canceling.
    pub status: CallStatus,
    /// Who is called.
    pub callee_name: String,
    /// The call's subject.
    pub subject: String,
    /// The provider placing it.
    pub provider: Option<String>,
    /// The provider's call id.
    pub provider_call_id: Option<String>,
    /// The agent override, if any.
    pub agent_id: Option<String>,
    /// The number called, masked for live views (`+1***71`).
    pub to_number: String,
    /// The number shown to the callee, masked, when the call chose one (else the
    /// provider's own).
    pub from_number: Option<String>,
    /// The call's free metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// When the dial request went out.
    pub dialed_at: Option<DateTime<Utc>>,
    /// When the callee answered.
    pub started_at: Option<DateTime<Utc>>,
    /// The stored version this summary was taken from.
    pub version: u64,
}

impl ActiveCall {
    /// The summary of a call.
    pub fn of(call: &Call) -> Self {
        ActiveCall {
            call_id: call.id,
            owner: call.owner.clone(),
            status: call.status,
            callee_name: call.callee_name.clone(),
            subject: call.subject.clone(),
            provider: call.provider.clone(),
            provider_call_id: call.provider_call_id.clone(),
            agent_id: call.agent_id.clone(),
            to_number: call.phone_number.masked(),
            from_number: call.caller_number.as_ref().map(|n| n.masked()),
            metadata: call.metadata.clone(),
            dialed_at: call.dialed_at(),
            started_at: call.started_at,
            version: call.version,
        }
    }

    fn since(&self) -> Option<DateTime<Utc>> {
        self.started_at.or(self.dialed_at)
    }
}

/// How an update changed the set of active calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityChange {
    /// The call became active (seed 004's `CallStarted`).
    Started,
    /// An active call changed and is still active.
    Changed,
    /// The call stopped being active (seed 004's `CallEnded`).
    Ended,
    /// No effect on the active set (a transcript, an inactive call, an older update).
    None,
}

/// One item of a [`LiveSubscription`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LiveEvent {
    /// A change published on the bus, in the subscription's scope.
    Update {
        /// The change.
        update: Arc<CallUpdate>,
        /// What it did to the active set.
        activity: ActivityChange,
        /// The tenant's active calls after it.
        tenant_active: usize,
    },
    /// This subscriber fell behind and missed up to `missed` events (some may have
    /// been outside its scope). Re-read [`LiveTracker::active`] to resynchronise.
    Lagged {
        /// How many events were dropped for this subscriber.
        missed: u64,
    },
    /// The tracker itself fell behind the bus and reloaded the active calls from the
    /// store; re-read [`LiveTracker::active`].
    Resynced,
}

/// Keeps the active calls per tenant in memory, from [`CallUpdate`]s on the bus,
/// seeded from the store at start (and reloaded from it if the tracker lags).
///
/// Subscribers get a [`LiveEvent`] per change in their [`LiveScope`]. Fan-out is a
/// broadcast channel: a slow subscriber never blocks the tracker or ingestion; it
/// is told it lagged.
pub struct LiveTracker {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LiveTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTracker")
            .field("active", &self.total())
            .finish_non_exhaustive()
    }
}

struct Shared {
    calls: Arc<dyn CallStore>,
    state: Mutex<State>,
    tx: broadcast::Sender<LiveEvent>,
}

#[derive(Default)]
struct State {
    active: HashMap<CallId, ActiveCall>,
    per_tenant: HashMap<TenantId, usize>,
    ended: HashMap<CallId, u64>,
    ended_order: VecDeque<CallId>,
}

impl State {
    fn load(&mut self, calls: &[Call]) {
        self.active.clear();
        self.per_tenant.clear();
        for c in calls.iter().filter(|c| c.status.is_active()) {
            *self.per_tenant.entry(c.owner.tenant.clone()).or_default() += 1;
            self.active.insert(c.id, ActiveCall::of(c));
        }
    }

    fn count(&self, tenant: &TenantId) -> usize {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    fn remember_ended(&mut self, id: CallId, version: u64) {
        if self.ended.insert(id, version).is_none() {
            self.ended_order.push_back(id);
        }
        while self.ended_order.len() > ENDED_MEMORY {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    fn apply(&mut self, call: &Call) -> ActivityChange {
        if let Some(a) = self.active.get(&call.id)
            && a.version > call.version
        {
            return ActivityChange::None;
        }
        if self.ended.get(&call.id).is_some_and(|v| *v >= call.version) {
            return ActivityChange::None;
        }
        let tenant = call.owner.tenant.clone();
        if call.status.is_active() {
            let was = self.active.insert(call.id, ActiveCall::of(call));
            if was.is_some() {
                ActivityChange::Changed
            } else {
                *self.per_tenant.entry(tenant).or_default() += 1;
                ActivityChange::Started
            }
        } else {
            self.remember_ended(call.id, call.version);
            if self.active.remove(&call.id).is_some() {
                if let Some(n) = self.per_tenant.get_mut(&tenant) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.per_tenant.remove(&tenant);
                    }
                }
                ActivityChange::Ended
            } else {
                ActivityChange::None
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn reload(&self) -> Result<()> {
        let active = self.calls.all_active(&ActiveScope::All).await?;
        self.lock().load(&active);
        Ok(())
    }
}

impl LiveTracker {
    /// Subscribes to `bus`, loads the active calls from `calls`, and starts
    /// tracking. `capacity` is how many events each subscriber may fall behind
    /// before it is told it lagged. Fails if the store cannot be read.
    pub async fn start(
        calls: Arc<dyn CallStore>,
        bus: &UpdateBus,
        capacity: usize,
    ) -> Result<Self> {
        let rx = bus.subscribe();
        let (tx, _) = broadcast::channel(capacity.max(1));
        let shared = Arc::new(Shared {
            calls,
            state: Mutex::new(State::default()),
            tx,
        });
        shared.reload().await?;
        let task = tokio::spawn(run(shared.clone(), rx));
        Ok(LiveTracker { shared, task })
    }

    /// The active calls in scope, most recently started first.
    pub fn active(&self, scope: &LiveScope) -> Vec<ActiveCall> {
        let mut v: Vec<ActiveCall> = self
            .shared
            .lock()
            .active
            .values()
            .filter(|a| scope.covers(&a.owner))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.since().cmp(&a.since()).then(b.call_id.cmp(&a.call_id)));
        v
    }

    /// One active call, if it is active and in scope.
    pub fn get(&self, scope: &LiveScope, id: CallId) -> Option<ActiveCall> {
        self.shared
            .lock()
            .active
            .get(&id)
            .filter(|a| scope.covers(&a.owner))
            .cloned()
    }

    /// How many calls of `tenant` are active.
    pub fn count(&self, tenant: &TenantId) -> usize {
        self.shared.lock().count(tenant)
    }

    /// Active calls per tenant (tenants with none are absent).
    pub fn counts(&self) -> BTreeMap<TenantId, usize> {
        self.shared
            .lock()
            .per_tenant
            .iter()
            .map(|(t, n)| (t.clone(), *n))
            .collect()
    }

    /// How many calls are active across all tenants.
    pub fn total(&self) -> usize {
        self.shared.lock().active.len()
    }

    /// A feed of changes in `scope`, from now on.
    pub fn subscribe(&self, scope: LiveScope) -> LiveSubscription {
        LiveSubscription {
            rx: self.shared.tx.subscribe(),
            scope,
        }
    }
}

impl Drop for LiveTracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(shared: Arc<Shared>, mut rx: broadcast::Receiver<Arc<CallUpdate>>) {
    loop {
        match rx.recv().await {
            Ok(update) => {
                let (activity, tenant_active) = {
                    let mut st = shared.lock();
                    let activity = match &*update {
                        CallUpdate::Call(c) => st.apply(c),
                        _ => ActivityChange::None,
                    };
                    (activity, st.count(&update.owner().tenant))
                };
                let _ = shared.tx.send(LiveEvent::Update {
                    update,
                    activity,
                    tenant_active,
                });
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "live tracker lagged behind the bus; reloading from the store"
                );
                match shared.reload().await {
                    Ok(()) => {
                        let _ = shared.tx.send(LiveEvent::Resynced);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "live tracker could not reload from the store");
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// A feed of [`LiveEvent`]s in one [`LiveScope`].
#[derive(Debug)]
pub struct LiveSubscription {
    rx: broadcast::Receiver<LiveEvent>,
    scope: LiveScope,
}

impl LiveSubscription {
    /// The next event in scope; `None` once the tracker is gone.
    pub async fn recv(&mut self) -> Option<LiveEvent> {
        loop {
            match self.rx.recv().await {
                Ok(ev) if self.in_scope(&ev) => return Some(ev),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(LiveEvent::Lagged { missed });
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The scope this subscription covers.
    pub fn scope(&self) -> &LiveScope {
        &self.scope
    }

    fn in_scope(&self, ev: &LiveEvent) -> bool {
        match ev {
            LiveEvent::Update { update, .. } => self.scope.covers(update.owner()),
            LiveEvent::Lagged { .. } | LiveEvent::Resynced => true,
        }
    }

    /// The subscription as a stream (for Server-Sent Events and the like).
    pub fn into_stream(self) -> impl futures::Stream<Item = LiveEvent> + Send + 'static {
        futures::stream::unfold(
            self,
            |mut s| async move { s.recv().await.map(|ev| (ev, s)) },
        )
    }
}
