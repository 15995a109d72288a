//! Recovery of a dial interrupted by a crash: the previous holder of the claim
//! started a dial and vanished, so the request may have reached the provider.
//! It is never sent again blindly (at-most-once): the provider is asked when it
//! can look calls up by our id, otherwise the call fails with a clear reason.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Inner;
use super::dispatch::{CAS_ATTEMPTS, DispatchResult, mine, moved, publish, write_mine};
use crate::apply::{Applied, apply_provider_event, enter, sync_attempt};
use crate::call::{Call, CallOutcome, CallStatus};
use crate::clock::delta;
use crate::error::{ErrorKind, Result};
use crate::lifecycle::{LifecycleEvent, Transition, transition};
use crate::provider::{ProviderCall, ProviderEvent, ProviderEventKind};
use crate::store::CallStoreExt;

/// What recovery decided.
pub(super) enum Recovery {
    /// Finished: this is the result.
    Done(DispatchResult),
    /// The provider is sure it never got the dial: dial it now.
    DialAgain(Box<Call>),
}

/// A claimed call whose previous holder started a dial and vanished. The dial may
/// have reached the provider, so it is never sent again blindly.
pub(super) async fn recover(inner: &Inner, call: Call) -> Result<Recovery> {
    let now = inner.clock.now();
    let id = call.id;
    if !inner.provider.capabilities().lookup_by_call_id {
        let reason = format!(
            "dial interrupted: the request may have reached {}, which cannot look calls up by our id; not dialed again (at-most-once)",
            inner.provider.name()
        );
        let c = write_mine(inner, id, |c| {
            moved(c, LifecycleEvent::Fail, now, |n| {
                n.last_error = Some(reason.clone());
                n.outcome = Some(CallOutcome::DialError);
                n.current_attempt_mut().error = Some(reason.clone());
            })
        })
        .await?;
        return Ok(Recovery::Done(if c.status == CallStatus::Failed {
            DispatchResult::Failed { reason }
        } else {
            DispatchResult::Skipped
        }));
    }
    match inner.provider.find_by_call_id(id).await {
        Ok(Some(found)) => adopt(inner, &call, found, now).await.map(Recovery::Done),
        Ok(None) => {
            // The provider is sure it never got the dial: undo the attempt and dial.
            let c = write_mine(inner, id, |c| {
                let mut n = c.clone();
                undo_attempt(&mut n);
                n.updated_at = now;
                Some(n)
            })
            .await?;
            if mine(inner, &c) && c.dial_started_at.is_none() {
                Ok(Recovery::DialAgain(Box::new(c)))
            } else {
                Ok(Recovery::Done(DispatchResult::Skipped))
            }
        }
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            let reason = format!(
                "dial interrupted and the provider cannot confirm it: {e}; not dialed again (at-most-once)"
            );
            let c = write_mine(inner, id, |c| {
                moved(c, LifecycleEvent::Fail, now, |n| {
                    n.last_error = Some(reason.clone())
                })
            })
            .await?;
            Ok(Recovery::Done(if c.status == CallStatus::Failed {
                DispatchResult::Failed { reason }
            } else {
                DispatchResult::Skipped
            }))
        }
        Err(e) => {
            // Unknown: leave the call claimed; the lease lapses and recovery runs again.
            tracing::warn!(call_id = %id, error = %e, "cannot reconcile an interrupted dial yet");
            let until = now + delta(inner.config.lease.max(Duration::from_secs(1)));
            Ok(Recovery::Done(DispatchResult::Deferred {
                until,
                reason: format!("reconciliation pending: {e}"),
            }))
        }
    }
}

async fn adopt(
    inner: &Inner,
    call: &Call,
    found: ProviderCall,
    now: DateTime<Utc>,
) -> Result<DispatchResult> {
    let pid = found.provider_call_id.clone();
    let provider = inner.provider.name().to_owned();
    let accepted = write_mine(inner, call.id, |c| {
        let mut n = c.clone();
        n.provider_call_id = Some(pid.clone());
        n.provider = Some(provider.clone());
        if let Ok(Transition::To(to)) = transition(n.status, &LifecycleEvent::ProviderAccepted) {
            enter(&mut n, to, now);
            n.next_action_at = None;
        }
        n.updated_at = now;
        sync_attempt(&mut n);
        Some(n)
    })
    .await?;
    if accepted.provider_call_id.as_deref() != Some(pid.as_str()) {
        return Ok(DispatchResult::Skipped);
    }
    // Bring the record up to what the provider knows (started, ended, ...).
    let kind = if found.state.is_over() {
        ProviderEventKind::Ended
    } else if found.started_at.is_some() {
        ProviderEventKind::Started
    } else {
        ProviderEventKind::Ringing
    };
    let event = ProviderEvent {
        provider,
        kind,
        call: found,
        sequence: None,
        occurred_at: Some(now),
    };
    let seed = inner.config.retry_seed;
    let c = inner
        .store
        .update_with(call.id, CAS_ATTEMPTS, |c| {
            Ok(match apply_provider_event(c, &event, now, seed)? {
                Applied::Changed(n) => Some(*n),
                Applied::Unchanged(_) => None,
            })
        })
        .await?;
    publish(inner, &c);
    Ok(DispatchResult::Reconciled {
        provider_call_id: pid,
    })
}

/// Takes the current attempt back (it never reached the provider).
pub(super) fn undo_attempt(n: &mut Call) {
    if n.history
        .last()
        .is_some_and(|a| a.number == n.attempts && a.provider_call_id.is_none())
    {
        n.history.pop();
    }
    n.attempts = n.attempts.saturating_sub(1);
    n.dial_started_at = None;
}
