//! [`CallService`]: what an application (or the HTTP API) does with calls —
//! create, read, list, edit, delete, cancel — scoped to an owner, with wake-ups
//! for schedulers and updates on the bus.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::apply::enter;
use crate::bus::UpdateBus;
use crate::call::{Call, CallOutcome, CallStatus};
use crate::caller_numbers::CallerNumbers;
use crate::clock::{Clock, to_millis_precision};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{CallId, Owner};
use crate::lifecycle::{LifecycleEvent, Transition, transition};
use crate::new_call::{CallEdit, Limits, NewCall};
use crate::provider::TelephonyProvider;
use crate::store::{CallStore, CallStoreExt, Created, ListQuery, Page};
use crate::time::check_range;
use crate::wakeup::Wakeup;

const CAS_ATTEMPTS: u32 = 8;

/// Owner-scoped operations on calls.
#[derive(Clone)]
pub struct CallService {
    store: Arc<dyn CallStore>,
    provider: Option<Arc<dyn TelephonyProvider>>,
    clock: Arc<dyn Clock>,
    wakeup: Wakeup,
    bus: Option<UpdateBus>,
    limits: Limits,
    caller_numbers: CallerNumbers,
    /// With one open call per user: creates of one owner, one at a time (in
    /// this process), striped by owner.
    one_open_call: Option<Arc<[tokio::sync::Mutex<()>]>>,
}

/// Stripes of the one-open-call lock.
const OPEN_CALL_STRIPES: usize = 64;

impl std::fmt::Debug for CallService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallService")
            .field("limits", &self.limits)
            .field("caller_numbers", &self.caller_numbers)
            .field("one_open_call_per_user", &self.one_open_call.is_some())
            .finish_non_exhaustive()
    }
}

impl CallService {
    /// A service over `store`, waking schedulers through `wakeup`.
    pub fn new(store: Arc<dyn CallStore>, clock: Arc<dyn Clock>, wakeup: Wakeup) -> Self {
        CallService {
            store,
            provider: None,
            clock,
            wakeup,
            bus: None,
            limits: Limits::default(),
            caller_numbers: CallerNumbers::any(),
            one_open_call: None,
        }
    }

    /// One open call per user (seed 002): creating a call while its owner has
    /// one SCHEDULED, RETRY_PENDING or in flight is a `Conflict` naming the open
    /// call (the same request again, with its idempotency key, still answers the
    /// call it created). Creates of one owner are serialised in this process;
    /// two processes creating for one user at the same instant can both pass.
    pub fn with_one_open_call_per_user(mut self, on: bool) -> Self {
        self.one_open_call = on.then(|| {
            (0..OPEN_CALL_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect::<Vec<_>>()
                .into()
        });
        self
    }

    /// Whether a user may have only one open call.
    pub fn one_open_call_per_user(&self) -> bool {
        self.one_open_call.is_some()
    }

    /// `owner`'s open call (SCHEDULED, RETRY_PENDING or in flight), if any.
    pub async fn open_call(&self, owner: &Owner) -> Result<Option<Call>> {
        let page = self
            .store
            .list(owner, &ListQuery::new(crate::store::ListView::Upcoming, 1))
            .await?;
        Ok(page.items.into_iter().next())
    }

    /// The provider used to hang up calls canceled in flight.
    pub fn with_provider(mut self, provider: Arc<dyn TelephonyProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Publish every change on `bus`.
    pub fn with_bus(mut self, bus: UpdateBus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Validation limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Which caller numbers each tenant may give (default: any).
    pub fn with_caller_numbers(mut self, caller_numbers: CallerNumbers) -> Self {
        self.caller_numbers = caller_numbers;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CallStore> {
        &self.store
    }

    fn publish(&self, c: &Call) {
        if let Some(bus) = &self.bus {
            bus.publish_call(c);
        }
    }

    /// Validates and stores a new call, and wakes the schedulers. With an
    /// idempotency key already used by this owner, returns the first call.
    pub async fn create(&self, owner: &Owner, new: NewCall) -> Result<Created> {
        let call = new.into_call(owner.clone(), self.clock.now(), &self.limits)?;
        self.caller_numbers
            .check(owner, call.caller_number.as_ref())?;
        self.check_with_provider(&call)?;
        let _one_at_a_time = match &self.one_open_call {
            Some(stripes) => {
                let stripe = {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    owner.hash(&mut h);
                    (h.finish() % stripes.len() as u64) as usize
                };
                let guard = stripes[stripe].lock().await;
                if let Some(open) = self.open_call(owner).await? {
                    if open.idempotency_key.is_some()
                        && open.idempotency_key == call.idempotency_key
                    {
                        return Ok(Created::Existing(open));
                    }
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "the user already has an open call ({}, {}); one open call per user",
                            open.id, open.status
                        ),
                    ));
                }
                Some(guard)
            }
            None => None,
        };
        let created = self.store.create(&call).await?;
        if let Created::New(c) = &created {
            self.publish(c);
            self.wakeup.wake();
        }
        Ok(created)
    }

    /// The provider's own checks ([`TelephonyProvider::check_call`]), if there is one.
    fn check_with_provider(&self, call: &Call) -> Result<()> {
        match &self.provider {
            Some(p) => p.check_call(call),
            None => Ok(()),
        }
    }

    /// A call of `owner` (`NotFound` for anyone else's).
    pub async fn get(&self, owner: &Owner, id: CallId) -> Result<Call> {
        self.store.get_owned(owner, id).await
    }

    /// A page of the owner's calls.
    pub async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page<Call>> {
        self.store.list(owner, query).await
    }

    /// Edits a scheduled call (`InvalidTransition` in any other status).
    pub async fn edit(&self, owner: &Owner, id: CallId, edit: &CallEdit) -> Result<Call> {
        self.store.get_owned(owner, id).await?;
        let now = self.clock.now();
        let c = self
            .store
            .update_with(id, CAS_ATTEMPTS, |c| {
                let next = edit.apply(c, now, &self.limits)?;
                if edit.caller_number.is_some() {
                    self.caller_numbers
                        .check(owner, next.caller_number.as_ref())?;
                }
                self.check_with_provider(&next)?;
                Ok(Some(next))
            })
            .await?;
        self.publish(&c);
        self.wakeup.wake();
        Ok(c)
    }

    /// Sends a FAILED or EXPIRED call back to be placed again (the dead-letter
    /// requeue): SCHEDULED for `at` (default now) with fresh attempts and a new
    /// `not_after` (default none), its attempt history kept. The last attempt's
    /// result (outcome, provider call id, times, error) is cleared, so a late
    /// provider event of the old attempt matches nothing. Any other status is
    /// `InvalidTransition`.
    pub async fn requeue(
        &self,
        owner: &Owner,
        id: CallId,
        at: Option<DateTime<Utc>>,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<Call> {
        self.store.get_owned(owner, id).await?;
        let now = to_millis_precision(self.clock.now());
        if let Some(t) = at {
            check_range("scheduledAt", t)?;
        }
        if let Some(t) = not_after {
            check_range("notAfter", t)?;
        }
        let at = to_millis_precision(at.unwrap_or(now).max(now));
        let not_after = not_after.map(to_millis_precision);
        if not_after.is_some_and(|na| na <= at) {
            return Err(Error::validation(
                "notAfter",
                "notAfter must be after the scheduled time",
            ));
        }
        let c = self
            .store
            .update_with(id, CAS_ATTEMPTS, |c| {
                match transition(c.status, &LifecycleEvent::Requeue)? {
                    Transition::To(to) => {
                        let mut n = c.clone();
                        n.status = to;
                        n.scheduled_for = at;
                        n.next_action_at = Some(at);
                        n.not_after = not_after;
                        n.attempts = 0;
                        n.lease = None;
                        n.dial_started_at = None;
                        n.provider = None;
                        n.provider_call_id = None;
                        n.started_at = None;
                        n.ended_at = None;
                        n.finished_at = None;
                        n.duration_ms = None;
                        n.disconnection_reason = None;
                        n.outcome = None;
                        n.last_error = None;
                        n.updated_at = now;
                        Ok(Some(n))
                    }
                    Transition::Ignore(_) => Ok(None),
                }
            })
            .await?;
        self.publish(&c);
        self.wakeup.wake();
        Ok(c)
    }

    /// How many calls `owner` has in each status (statuses with none left out).
    pub async fn count_by_status(
        &self,
        owner: &Owner,
    ) -> Result<std::collections::BTreeMap<CallStatus, u64>> {
        self.store.count_by_status(owner).await
    }

    /// Deletes a scheduled call (`Conflict` in any other status).
    pub async fn delete(&self, owner: &Owner, id: CallId) -> Result<()> {
        self.store.delete_if_scheduled(owner, id).await?;
        if let Some(bus) = &self.bus {
            bus.publish(crate::bus::CallUpdate::Deleted {
                call_id: id,
                owner: owner.clone(),
            });
        }
        Ok(())
    }

    /// Cancels a call: a scheduled or retry-pending call becomes Canceled; a call
    /// being dialed or on the line becomes Canceling, the provider is asked to hang
    /// up, then it becomes Canceled. A finished call is `InvalidTransition`.
    pub async fn cancel(&self, owner: &Owner, id: CallId) -> Result<Call> {
        self.store.get_owned(owner, id).await?;
        let now = self.clock.now();
        let c = self
            .store
            .update_with(id, CAS_ATTEMPTS, |c| {
                match transition(c.status, &LifecycleEvent::Cancel)? {
                    Transition::To(to) => {
                        let mut n = c.clone();
                        enter(&mut n, to, now);
                        if to == CallStatus::Canceled {
                            n.finished_at = Some(now);
                        }
                        n.last_error = Some("canceled by its owner".into());
                        n.updated_at = now;
                        Ok(Some(n))
                    }
                    Transition::Ignore(_) => Ok(None),
                }
            })
            .await?;
        self.publish(&c);
        if c.status != CallStatus::Canceling {
            return Ok(c);
        }
        // In flight. A Dispatching call without a provider id is finished by its
        // dispatcher once the dial returns; otherwise hang up here.
        let Some(pid) = c.provider_call_id.clone() else {
            return Ok(c);
        };
        let Some(provider) = &self.provider else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "no provider configured to hang up the call",
            ));
        };
        match provider.end_call(&pid).await {
            Ok(()) => {}
            // Nothing left to hang up (the provider restarted or purged the call):
            // finish the cancel here rather than leave the call Canceling.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::info!(call_id = %id, error = %e, "the provider no longer knows the call; canceled locally");
            }
            Err(e) => return Err(e),
        }
        let c = self
            .store
            .update_with(id, CAS_ATTEMPTS, |c| {
                match transition(c.status, &LifecycleEvent::CancelConfirmed) {
                    Ok(Transition::To(to)) => {
                        let mut n = c.clone();
                        enter(&mut n, to, now);
                        n.outcome = Some(CallOutcome::Canceled);
                        n.finished_at = Some(now);
                        n.updated_at = now;
                        Ok(Some(n))
                    }
                    _ => Ok(None),
                }
            })
            .await?;
        self.publish(&c);
        Ok(c)
    }
}
