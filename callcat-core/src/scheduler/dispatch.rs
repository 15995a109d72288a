//! One claimed call, from claim to the provider's answer: expiry, dial window,
//! pre-dial checks, the per-owner cap, the dial (with lease renewal), retries,
//! and recovery of a dial interrupted by a crash (at-most-once).

use chrono::{DateTime, Utc};

use super::Inner;
use super::checks::PreDialVerdict;
use super::pre_dial::{PreDialFacts, PreDialSettings, PreDialStep, owner_at_cap, pre_dial};
use super::recovery::{Recovery, recover, undo_attempt};
use crate::apply::{enter, sync_attempt};
use crate::call::{AttemptRecord, Call, CallOutcome, CallStatus};
use crate::clock::delta;
use futures::FutureExt;

use crate::error::{Error, Result};
use crate::lifecycle::{LifecycleEvent, Transition, transition};
use crate::retry::{RetryDecision, attempt_rng};
use crate::store::{ActiveScope, CallStoreExt};

/// What happened to one claimed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchResult {
    /// The provider accepted the dial.
    Dialed {
        /// The provider's call id.
        provider_call_id: String,
    },
    /// Put back until this instant (dial window, owner busy, pre-dial check).
    Deferred {
        /// When it will be tried again.
        until: DateTime<Utc>,
        /// Why.
        reason: String,
    },
    /// The dial failed; another attempt is planned.
    Retrying {
        /// When.
        at: DateTime<Utc>,
    },
    /// Failed for good.
    Failed {
        /// Why.
        reason: String,
    },
    /// Past `not_after`.
    Expired,
    /// Canceled (by a pre-dial check, or by its owner while claimed).
    Canceled {
        /// Why.
        reason: String,
    },
    /// An interrupted dial was matched to the provider's call.
    Reconciled {
        /// The provider's call id.
        provider_call_id: String,
    },
    /// Nothing to do: the call was no longer ours.
    Skipped,
}

pub(super) const CAS_ATTEMPTS: u32 = 8;

pub(super) fn mine(inner: &Inner, c: &Call) -> bool {
    c.status == CallStatus::Dispatching
        && c.lease
            .as_ref()
            .is_some_and(|l| l.worker == inner.config.worker)
}

pub(super) fn publish(inner: &Inner, c: &Call) {
    if let Some(bus) = &inner.bus {
        bus.publish_call(c);
    }
}

/// Writes `f(current)` with compare-and-swap, only while the call is still ours.
pub(super) async fn write_mine<F>(inner: &Inner, id: crate::CallId, mut f: F) -> Result<Call>
where
    F: FnMut(&Call) -> Option<Call> + Send,
{
    let c = inner
        .store
        .update_with(id, CAS_ATTEMPTS, |c| {
            Ok(if mine(inner, c) { f(c) } else { None })
        })
        .await?;
    publish(inner, &c);
    Ok(c)
}

/// Moves the call through `event`, applying `edit` to the result.
pub(super) fn moved(
    c: &Call,
    event: LifecycleEvent,
    now: DateTime<Utc>,
    edit: impl FnOnce(&mut Call),
) -> Option<Call> {
    match transition(c.status, &event) {
        Ok(Transition::To(to)) => {
            let mut n = c.clone();
            enter(&mut n, to, now);
            n.updated_at = now;
            edit(&mut n);
            Some(n)
        }
        _ => None,
    }
}

impl DispatchResult {
    /// A stable lower-case label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            DispatchResult::Dialed { .. } => "dialed",
            DispatchResult::Deferred { .. } => "deferred",
            DispatchResult::Retrying { .. } => "retrying",
            DispatchResult::Failed { .. } => "failed",
            DispatchResult::Expired => "expired",
            DispatchResult::Canceled { .. } => "canceled",
            DispatchResult::Reconciled { .. } => "reconciled",
            DispatchResult::Skipped => "skipped",
        }
    }
}

/// [`dispatch_claimed`] in a span carrying the call, its owner and the attempt,
/// counted in `callcat_scheduler_dispatch_total{result}`.
pub(crate) async fn traced(
    inner: &Inner,
    claimed: Call,
    dial_at: Option<DateTime<Utc>>,
) -> Result<DispatchResult> {
    let span = tracing::info_span!(
        "dispatch",
        call_id = %claimed.id,
        owner = %claimed.owner,
        attempt = claimed.attempts + 1,
    );
    let r = tracing::Instrument::instrument(dispatch_claimed(inner, claimed, dial_at), span).await;
    let label = match &r {
        Ok(d) => d.label(),
        Err(_) => "error",
    };
    metrics::counter!("callcat_scheduler_dispatch_total", "result" => label).increment(1);
    r
}

/// Dispatches a claimed call. With `dial_at` (claimed a lead ahead of that
/// instant), every decision is taken as of `dial_at` and the attempt is begun
/// ahead too, so only the dial itself waits for the instant.
pub(crate) async fn dispatch_claimed(
    inner: &Inner,
    claimed: Call,
    dial_at: Option<DateTime<Utc>>,
) -> Result<DispatchResult> {
    let id = claimed.id;
    let now = match dial_at {
        Some(t) => t.max(inner.clock.now()),
        None => inner.clock.now(),
    };
    let mut call = claimed;

    if call.dial_started_at.is_some() {
        match recover(inner, call).await? {
            Recovery::Done(r) => return Ok(r),
            Recovery::DialAgain(c) => call = *c,
        }
    }

    let settings = PreDialSettings {
        busy_delay: inner.config.owner_busy_delay,
        one_call_per_number: inner.config.one_call_per_number,
        has_checks: !inner.checks.is_empty(),
    };
    let mut facts = PreDialFacts::default();
    loop {
        match pre_dial(&call, now, &settings, &facts) {
            PreDialStep::Proceed => break,
            PreDialStep::RunChecks => facts.checks = Some(run_checks(inner, &call, now).await),
            PreDialStep::CountCallsToNumber => {
                let n = inner
                    .store
                    .active_calls_to_number(&ActiveScope::All, &call.phone_number)
                    .await?;
                facts.calls_to_number = Some(n);
            }
            PreDialStep::Defer { until, reason } => {
                return defer(inner, &call, until, &reason).await;
            }
            PreDialStep::Expire { reason } => {
                let c = write_mine(inner, id, |c| {
                    moved(c, LifecycleEvent::Expire, now, |n| {
                        n.last_error = Some(reason.clone());
                    })
                })
                .await?;
                return Ok(if c.status == CallStatus::Expired {
                    DispatchResult::Expired
                } else {
                    DispatchResult::Skipped
                });
            }
            PreDialStep::Cancel { reason } => {
                let c = write_mine(inner, id, |c| {
                    moved(c, LifecycleEvent::Cancel, now, |n| {
                        n.last_error = Some(reason.clone());
                    })
                })
                .await?;
                // Dispatching + Cancel is Canceling; nothing was dialed, so confirm at once.
                let c = confirm_cancel_undialed(inner, c, now).await?;
                return Ok(if c.status == CallStatus::Canceled {
                    DispatchResult::Canceled { reason }
                } else {
                    DispatchResult::Skipped
                });
            }
        }
    }

    // Begin the attempt: record dial_started_at before the provider hears of it.
    let started = inner
        .store
        .update_from(call, CAS_ATTEMPTS, |c| {
            Ok(if mine(inner, c) {
                let mut n = c.clone();
                begin_attempt(&mut n, now);
                Some(n)
            } else {
                None
            })
        })
        .await?;
    if !(mine(inner, &started) && started.dial_started_at == Some(now)) {
        return lost_before_dial(inner, started, now).await;
    }
    publish(inner, &started);

    if let Some(cap) = inner.config.owner_cap {
        let others = inner
            .store
            .all_active(&ActiveScope::Owner(started.owner.clone()))
            .await?
            .into_iter()
            .filter(|o| o.id != id)
            .filter(|o| o.status != CallStatus::Dispatching || o.dial_started_at.is_some())
            .count();
        if let Some((until, reason)) =
            owner_at_cap(others, Some(cap), now, inner.config.owner_busy_delay)
        {
            let c = write_mine(inner, id, |c| {
                let mut n = c.clone();
                undo_attempt(&mut n);
                moved(
                    &n,
                    LifecycleEvent::Defer {
                        retrying: n.attempts > 0,
                    },
                    now,
                    |m| {
                        m.next_action_at = Some(until);
                    },
                )
            })
            .await?;
            inner.wakeup.wake();
            return Ok(if c.status == CallStatus::Dispatching {
                DispatchResult::Skipped
            } else {
                DispatchResult::Deferred { until, reason }
            });
        }
    }

    if dial_at.is_some() && now > inner.clock.now() {
        inner.clock.sleep_until(now).await;
    }
    let result = dial_with_renewal(inner, &started).await;
    let now = inner.clock.now();
    match result {
        Ok(accepted) => accepted_dial(inner, &started, accepted.provider_call_id, now).await,
        Err(e) => failed_dial(inner, &started, e, now).await,
    }
}

/// Runs the pre-dial checks in order, stopping at the first that objects. A check
/// that fails is a short deferral: it could not decide, so it never lets a call through.
async fn run_checks(inner: &Inner, call: &Call, now: DateTime<Utc>) -> Vec<PreDialVerdict> {
    let mut verdicts = Vec::with_capacity(inner.checks.len());
    for check in &inner.checks {
        let verdict = match check.check(call, now).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(call_id = %call.id, error = %e, "pre-dial check failed; deferring");
                PreDialVerdict::Defer {
                    until: now + delta(inner.config.owner_busy_delay),
                    reason: format!("pre-dial check failed: {e}"),
                }
            }
        };
        let objects = verdict != PreDialVerdict::Allow;
        verdicts.push(verdict);
        if objects {
            break;
        }
    }
    verdicts
}

fn begin_attempt(n: &mut Call, now: DateTime<Utc>) {
    n.attempts += 1;
    n.dial_started_at = Some(now);
    n.provider = None;
    n.provider_call_id = None;
    n.started_at = None;
    n.ended_at = None;
    n.duration_ms = None;
    n.disconnection_reason = None;
    n.recording_url = None;
    n.cost = None;
    n.analysis = None;
    n.outcome = None;
    n.updated_at = now;
    n.history.push(AttemptRecord {
        number: n.attempts,
        dialed_at: Some(now),
        ..AttemptRecord::default()
    });
}

async fn defer(
    inner: &Inner,
    call: &Call,
    until: DateTime<Utc>,
    reason: &str,
) -> Result<DispatchResult> {
    let now = inner.clock.now();
    let c = write_mine(inner, call.id, |c| {
        moved(
            c,
            LifecycleEvent::Defer {
                retrying: c.attempts > 0,
            },
            now,
            |n| {
                n.next_action_at = Some(until);
            },
        )
    })
    .await?;
    inner.wakeup.wake();
    Ok(if c.status == CallStatus::Dispatching {
        DispatchResult::Skipped
    } else {
        DispatchResult::Deferred {
            until,
            reason: reason.to_owned(),
        }
    })
}

/// The call stopped being ours before the dial (canceled meanwhile, or another
/// worker recovered it). A Canceling call that was never dialed is confirmed.
async fn lost_before_dial(inner: &Inner, c: Call, now: DateTime<Utc>) -> Result<DispatchResult> {
    if c.status == CallStatus::Canceling && c.dial_started_at.is_none() {
        let c = confirm_cancel_undialed(inner, c, now).await?;
        if c.status == CallStatus::Canceled {
            return Ok(DispatchResult::Canceled {
                reason: "canceled by its owner".into(),
            });
        }
    }
    Ok(DispatchResult::Skipped)
}

async fn confirm_cancel_undialed(inner: &Inner, c: Call, now: DateTime<Utc>) -> Result<Call> {
    if c.status != CallStatus::Canceling || c.dial_started_at.is_some() {
        return Ok(c);
    }
    let c = inner
        .store
        .update_with(c.id, CAS_ATTEMPTS, |c| {
            Ok(
                if c.status == CallStatus::Canceling && c.dial_started_at.is_none() {
                    moved(c, LifecycleEvent::CancelConfirmed, now, |n| {
                        n.outcome = None
                    })
                } else {
                    None
                },
            )
        })
        .await?;
    publish(inner, &c);
    Ok(c)
}

async fn dial_with_renewal(inner: &Inner, call: &Call) -> Result<crate::provider::DialAccepted> {
    let sent = inner.clock.now();
    let span = tracing::info_span!("dial", provider = inner.provider.name());
    let r = tracing::Instrument::instrument(dial_renewing_the_lease(inner, call), span).await;
    let secs = (inner.clock.now() - sent).num_milliseconds().max(0) as f64 / 1000.0;
    let provider = inner.provider.name().to_owned();
    metrics::histogram!("callcat_provider_dial_seconds", "provider" => provider.clone())
        .record(secs);
    let result = if r.is_ok() { "accepted" } else { "error" };
    metrics::counter!("callcat_provider_dials_total", "provider" => provider, "result" => result)
        .increment(1);
    r
}

async fn dial_renewing_the_lease(
    inner: &Inner,
    call: &Call,
) -> Result<crate::provider::DialAccepted> {
    // A provider that panics is a failed dial, not a dead dispatch task (which
    // would leave the call to lease recovery, and possibly to the same panic
    // again and again).
    let dial = std::panic::AssertUnwindSafe(inner.provider.place_call(call)).catch_unwind();
    let dial = async move {
        match dial.await {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                tracing::error!(call_id = %call.id, panic = %what, "the provider panicked while dialing");
                Err(Error::internal(format!(
                    "the provider failed unexpectedly while dialing (panic: {what})"
                ))
                .with_retryable(false))
            }
        }
    };
    tokio::pin!(dial);
    let every = inner.config.lease / 3;
    loop {
        let tick = inner.clock.sleep(every);
        tokio::select! {
            r = &mut dial => return r,
            _ = tick => {
                let now = inner.clock.now();
                let until = now + delta(inner.config.lease);
                let renewed = inner
                    .store
                    .update_with(call.id, CAS_ATTEMPTS, |c| {
                        Ok(match &c.lease {
                            Some(l) if c.status == CallStatus::Dispatching && l.worker == inner.config.worker => {
                                let mut n = c.clone();
                                n.lease = Some(crate::call::Lease { worker: l.worker.clone(), expires_at: until });
                                n.next_action_at = Some(until);
                                Some(n)
                            }
                            _ => None,
                        })
                    })
                    .await;
                if let Err(e) = renewed {
                    tracing::warn!(call_id = %call.id, error = %e, "lease renewal failed");
                }
            }
        }
    }
}

async fn accepted_dial(
    inner: &Inner,
    started: &Call,
    pid: String,
    now: DateTime<Utc>,
) -> Result<DispatchResult> {
    let provider = inner.provider.name().to_owned();
    let c = inner
        .store
        .update_from(started.clone(), CAS_ATTEMPTS, |c| {
            if c.attempts != started.attempts {
                return Ok(None);
            }
            let mut n = c.clone();
            if n.provider_call_id.is_none() {
                n.provider_call_id = Some(pid.clone());
                n.provider = Some(provider.clone());
            }
            if let Ok(Transition::To(to)) = transition(n.status, &LifecycleEvent::ProviderAccepted)
            {
                enter(&mut n, to, now);
                n.next_action_at = None;
            }
            n.lease = None;
            sync_attempt(&mut n);
            n.updated_at = now;
            Ok((n != *c).then_some(n))
        })
        .await?;
    publish(inner, &c);
    if c.status == CallStatus::Canceling {
        // Canceled while the dial was in flight: hang up now.
        match inner.provider.end_call(&pid).await {
            Ok(()) => {}
            // Nothing left to hang up: the cancel is complete.
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                tracing::info!(call_id = %c.id, error = %e, "the provider no longer knows the call; canceled locally");
            }
            Err(e) => return Err(e),
        }
        let c = inner
            .store
            .update_from(c, CAS_ATTEMPTS, |c| {
                Ok(moved(c, LifecycleEvent::CancelConfirmed, now, |n| {
                    n.outcome = Some(CallOutcome::Canceled)
                }))
            })
            .await?;
        publish(inner, &c);
        return Ok(DispatchResult::Canceled {
            reason: "canceled by its owner while dialing".into(),
        });
    }
    Ok(DispatchResult::Dialed {
        provider_call_id: pid,
    })
}

async fn failed_dial(
    inner: &Inner,
    started: &Call,
    e: crate::Error,
    now: DateTime<Utc>,
) -> Result<DispatchResult> {
    if e.maybe_delivered() {
        // The provider may have placed the call: never dial again blindly.
        tracing::warn!(call_id = %started.id, error = %e, "dial outcome unknown; reconciling");
        match recover(inner, started.clone()).await? {
            Recovery::Done(r) => return Ok(r),
            // The provider is sure it has no such call: an ordinary failed dial.
            Recovery::DialAgain(_) => {}
        }
    }
    let retryable = e.is_retryable();
    let message = e.to_string();
    let decision = if retryable {
        let mut rng = attempt_rng(inner.config.retry_seed, started.id, started.attempts);
        started.retry_policy.decide(
            CallOutcome::DialError,
            started.attempts,
            e.retry_after(),
            &mut rng,
        )
    } else {
        RetryDecision::GiveUp
    };
    let retry_at = match decision {
        RetryDecision::RetryAfter(d) => Some(crate::time::saturating_add(now, d)),
        RetryDecision::GiveUp => None,
    };
    let c = inner
        .store
        .update_from(started.clone(), CAS_ATTEMPTS, |c| {
            if c.attempts != started.attempts {
                return Ok(None);
            }
            Ok(moved(
                c,
                LifecycleEvent::DialFailed {
                    retry: retry_at.is_some(),
                },
                now,
                |n| {
                    n.outcome = Some(CallOutcome::DialError);
                    n.last_error = Some(message.clone());
                    n.dial_started_at = None;
                    if let Some(at) = retry_at
                        && n.status == CallStatus::RetryPending
                    {
                        n.next_action_at = Some(at);
                    }
                    let rec = n.current_attempt_mut();
                    rec.outcome = Some(CallOutcome::DialError);
                    rec.error = Some(message.clone());
                    rec.ended_at = Some(now);
                },
            ))
        })
        .await?;
    publish(inner, &c);
    Ok(match c.status {
        CallStatus::RetryPending => {
            inner.wakeup.wake();
            DispatchResult::Retrying {
                at: c.next_action_at.unwrap_or(now),
            }
        }
        CallStatus::Failed => DispatchResult::Failed { reason: message },
        CallStatus::Canceled => DispatchResult::Canceled {
            reason: "canceled by its owner while dialing".into(),
        },
        _ => DispatchResult::Skipped,
    })
}
