//! Ending a call its provider no longer knows (the simulator after a restart, a
//! call the provider purged), so it does not stay on the line for an hour.

use crate::apply::{enter, sync_attempt};
use crate::call::{Call, CallOutcome, CallStatus};
use crate::error::Result;
use crate::ids::CallId;
use crate::lifecycle::{LifecycleEvent, Transition, transition};
use crate::store::CallStoreExt;

use super::ingest::{DEFAULT_CAS_ATTEMPTS, EventIngestor};

/// The `last_error` of a call ended because its provider does not know it.
pub(crate) const UNKNOWN_TO_PROVIDER: &str = "the provider no longer knows this call";

/// Ends call `id` if it is still on the line with `provider_call_id`: a
/// Canceling call is Canceled (there is nothing left to hang up), a Ringing or
/// InProgress one Failed with outcome `error` and `last_error` saying why.
/// Returns the call when it was changed.
pub(crate) async fn end_unknown_call(
    ingestor: &EventIngestor,
    id: CallId,
    provider_call_id: &str,
    detail: &str,
) -> Result<Option<Call>> {
    let now = ingestor.clock().now();
    let reason = format!("{UNKNOWN_TO_PROVIDER} ({detail})");
    let mut changed = false;
    let stored = ingestor
        .calls()
        .update_with(id, DEFAULT_CAS_ATTEMPTS, |cur| {
            changed = false;
            if cur.provider_call_id.as_deref() != Some(provider_call_id) {
                return Ok(None);
            }
            let (event, outcome) = match cur.status {
                CallStatus::Canceling => (LifecycleEvent::CancelConfirmed, CallOutcome::Canceled),
                CallStatus::Ringing | CallStatus::InProgress => {
                    (LifecycleEvent::Fail, CallOutcome::Error)
                }
                _ => return Ok(None),
            };
            let to = match transition(cur.status, &event)? {
                Transition::To(to) => to,
                Transition::Ignore(_) => return Ok(None),
            };
            let mut next = cur.clone();
            next.outcome = Some(outcome);
            if to == CallStatus::Failed {
                next.last_error = Some(reason.clone());
            }
            enter(&mut next, to, now);
            sync_attempt(&mut next);
            if next.attempts > 0 && to == CallStatus::Failed {
                next.current_attempt_mut().error = Some(reason.clone());
            }
            next.updated_at = now;
            changed = true;
            Ok(Some(next))
        })
        .await?;
    if !changed {
        return Ok(None);
    }
    tracing::info!(call_id = %stored.id, status = ?stored.status, "{UNKNOWN_TO_PROVIDER}; call ended");
    ingestor.bus().publish_call(&stored);
    Ok(Some(stored))
}
