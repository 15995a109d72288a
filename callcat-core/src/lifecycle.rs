//! The call lifecycle as one pure function: `(status, event) -> Transition`.
//!
//! | from | event | to |
//! |---|---|---|
//! | Scheduled, RetryPending, Dispatching (lease expired) | `Claim` | Dispatching |
//! | Scheduled, RetryPending | `Cancel` | Canceled |
//! | Dispatching, Ringing, InProgress | `Cancel` | Canceling |
//! | Canceling | `CancelConfirmed`, `Ended` | Canceled |
//! | Scheduled | `Edit` | Scheduled |
//! | Dispatching | `Defer` | Scheduled or RetryPending |
//! | Dispatching | `ProviderAccepted` | Ringing |
//! | Dispatching | `DialFailed` | RetryPending (retry) or Failed |
//! | Dispatching, Ringing | `Started` | InProgress |
//! | Dispatching, Ringing, InProgress | `Ended` | Completed (answered), RetryPending (retry) or Failed |
//! | any dialed status | `Analyzed` | unchanged (analysis attached) |
//! | Scheduled, RetryPending, Dispatching | `Expire` | Expired |
//! | Dispatching, Ringing, InProgress, Canceling | `Fail` | Failed |
//!
//! Provider events that arrive late or twice are [`Transition::Ignore`]d, not errors:
//! `Started` after `Ended`, a second `Ended`, `ProviderAccepted` after the call
//! already started or ended.

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use crate::call::{Call, CallOutcome, CallStatus, Lease};
use crate::ids::WorkerId;

/// Something that can happen to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LifecycleEvent {
    /// A worker claims it to dial.
    Claim,
    /// Its owner cancels it.
    Cancel,
    /// The provider confirmed the hang-up.
    CancelConfirmed,
    /// Its owner edits or reschedules it.
    Edit,
    /// A claimed call is put back (outside its window, caps reached, pre-dial check).
    Defer {
        /// Whether an attempt was already made (back to RetryPending, else Scheduled).
        retrying: bool,
    },
    /// The provider accepted the dial.
    ProviderAccepted,
    /// The dial request failed.
    DialFailed {
        /// Whether another attempt is planned.
        retry: bool,
    },
    /// The callee answered.
    Started,
    /// The attempt ended.
    Ended {
        /// How.
        outcome: CallOutcome,
        /// Whether another attempt is planned (for unsuccessful outcomes).
        retry: bool,
    },
    /// Post-call analysis arrived.
    Analyzed,
    /// `not_after` passed before it could be placed.
    Expire,
    /// Given up for a reason of callcat's own (stale, interrupted dial).
    Fail,
    /// Its owner sends a failed or expired call back to be placed again, with
    /// fresh attempts (the dead-letter requeue).
    Requeue,
}

/// Why an event changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IgnoreReason {
    /// The call is already where this event would take it.
    Duplicate,
    /// The call has moved past the point this event describes.
    Stale,
}

/// The result of an allowed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transition {
    /// Move to (or stay in, for `Edit` and `Analyzed`) this status.
    To(CallStatus),
    /// Nothing to do.
    Ignore(IgnoreReason),
}

/// An event that the lifecycle forbids in the call's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply {event:?} to a call that is {from}")]
pub struct TransitionError {
    /// The status the call was in.
    pub from: CallStatus,
    /// The event that was refused.
    pub event: LifecycleEvent,
}

impl From<TransitionError> for crate::Error {
    fn from(e: TransitionError) -> Self {
        crate::Error::new(crate::ErrorKind::InvalidTransition, e.to_string())
    }
}

/// The claim of a due call by `worker`: the call becomes Dispatching, holds a
/// lease until `lease_until`, and its next action is the lease's end (when a
/// dead worker's claim may be recovered). `None` when the call is not claimable
/// at `now` (wrong status, or `next_action_at` not yet come).
///
/// This is the one place the claim is written in Rust: the in-memory and
/// DynamoDB stores and [`crate::Scheduler::dispatch`] call it. PostgreSQL claims
/// in one SQL statement that mirrors it; the conformance suite's claim cases hold
/// every backend to the same result. The version is left to the store's write.
pub fn claim(
    call: &Call,
    worker: &WorkerId,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Option<Call> {
    let due = call.next_action_at.is_some_and(|t| t <= now);
    if !call.status.is_claimable() || !due {
        return None;
    }
    let mut next = call.clone();
    next.status = CallStatus::Dispatching;
    next.lease = Some(Lease {
        worker: worker.clone(),
        expires_at: lease_until,
    });
    next.next_action_at = Some(lease_until);
    next.updated_at = now;
    Some(next)
}

/// The lifecycle: where `event` takes a call that is `from`.
pub fn transition(from: CallStatus, event: &LifecycleEvent) -> Result<Transition, TransitionError> {
    use CallStatus::*;
    use IgnoreReason::*;
    use LifecycleEvent as E;
    use Transition::*;

    let to = match (*event, from) {
        (E::Claim, Scheduled | RetryPending | Dispatching) => To(Dispatching),

        (E::Cancel, Scheduled | RetryPending) => To(Canceled),
        (E::Cancel, Dispatching | Ringing | InProgress) => To(Canceling),
        (E::Cancel, Canceling) => Ignore(Duplicate),
        (E::CancelConfirmed, Canceling) => To(Canceled),
        (E::CancelConfirmed, Canceled) => Ignore(Duplicate),

        (E::Edit, Scheduled) => To(Scheduled),

        (E::Defer { retrying: false }, Dispatching) => To(Scheduled),
        (E::Defer { retrying: true }, Dispatching) => To(RetryPending),

        (E::ProviderAccepted, Dispatching) => To(Ringing),
        (E::ProviderAccepted, Canceling) => Ignore(Duplicate),
        (E::ProviderAccepted, Ringing) => Ignore(Duplicate),
        (E::ProviderAccepted, InProgress | Completed | Failed | RetryPending | Canceled) => {
            Ignore(Stale)
        }

        (E::DialFailed { retry: true }, Dispatching) => To(RetryPending),
        (E::DialFailed { retry: false }, Dispatching) => To(Failed),
        (E::DialFailed { .. }, Canceling) => To(Canceled),

        (E::Started, Dispatching | Ringing) => To(InProgress),
        (E::Started, InProgress) => Ignore(Duplicate),
        (E::Started, Canceling | Completed | Failed | RetryPending | Canceled) => Ignore(Stale),

        (E::Ended { .. }, Canceling) => To(Canceled),
        (
            E::Ended {
                outcome: CallOutcome::Answered,
                ..
            },
            Dispatching | Ringing | InProgress,
        ) => To(Completed),
        (
            E::Ended {
                outcome: CallOutcome::Canceled,
                ..
            },
            Dispatching | Ringing | InProgress,
        ) => To(Canceled),
        (E::Ended { retry: true, .. }, Dispatching | Ringing | InProgress) => To(RetryPending),
        (E::Ended { retry: false, .. }, Dispatching | Ringing | InProgress) => To(Failed),
        (E::Ended { .. }, Completed | Failed | RetryPending | Canceled) => Ignore(Duplicate),

        (
            E::Analyzed,
            Dispatching | Ringing | InProgress | Canceling | RetryPending | Completed | Failed
            | Canceled,
        ) => To(from),

        (E::Expire, Scheduled | RetryPending | Dispatching) => To(Expired),
        (E::Expire, Expired) => Ignore(Duplicate),

        (E::Fail, Dispatching | Ringing | InProgress | Canceling) => To(Failed),
        (E::Fail, Failed) => Ignore(Duplicate),

        (E::Requeue, Failed | Expired) => To(Scheduled),

        _ => {
            return Err(TransitionError {
                from,
                event: *event,
            });
        }
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CallStatus::*;

    fn all_events() -> Vec<LifecycleEvent> {
        use LifecycleEvent as E;
        let outcomes = [
            CallOutcome::Answered,
            CallOutcome::NoAnswer,
            CallOutcome::Busy,
            CallOutcome::Voicemail,
            CallOutcome::DialError,
            CallOutcome::Error,
            CallOutcome::Canceled,
            CallOutcome::Stale,
        ];
        let mut v = vec![
            E::Claim,
            E::Cancel,
            E::CancelConfirmed,
            E::Edit,
            E::Defer { retrying: false },
            E::Defer { retrying: true },
            E::ProviderAccepted,
            E::DialFailed { retry: true },
            E::DialFailed { retry: false },
            E::Started,
            E::Analyzed,
            E::Expire,
            E::Fail,
            E::Requeue,
        ];
        for o in outcomes {
            v.push(E::Ended {
                outcome: o,
                retry: true,
            });
            v.push(E::Ended {
                outcome: o,
                retry: false,
            });
        }
        v
    }

    /// The expected result of every (status, event) pair, written out as a table
    /// independent of `transition`'s match.
    fn expected(from: CallStatus, e: LifecycleEvent) -> Option<Transition> {
        use IgnoreReason::*;
        use LifecycleEvent as E;
        use Transition::*;
        let dialed = [
            Dispatching,
            Ringing,
            InProgress,
            Canceling,
            RetryPending,
            Completed,
            Failed,
            Canceled,
        ];
        Some(match e {
            E::Claim => match from {
                Scheduled | RetryPending | Dispatching => To(Dispatching),
                _ => return None,
            },
            E::Cancel => match from {
                Scheduled | RetryPending => To(Canceled),
                Dispatching | Ringing | InProgress => To(Canceling),
                Canceling => Ignore(Duplicate),
                _ => return None,
            },
            E::CancelConfirmed => match from {
                Canceling => To(Canceled),
                Canceled => Ignore(Duplicate),
                _ => return None,
            },
            E::Edit => match from {
                Scheduled => To(Scheduled),
                _ => return None,
            },
            E::Defer { retrying } => match from {
                Dispatching if retrying => To(RetryPending),
                Dispatching => To(Scheduled),
                _ => return None,
            },
            E::ProviderAccepted => match from {
                Dispatching => To(Ringing),
                Canceling | Ringing => Ignore(Duplicate),
                InProgress | Completed | Failed | RetryPending | Canceled => Ignore(Stale),
                _ => return None,
            },
            E::DialFailed { retry } => match from {
                Dispatching if retry => To(RetryPending),
                Dispatching => To(Failed),
                Canceling => To(Canceled),
                _ => return None,
            },
            E::Started => match from {
                Dispatching | Ringing => To(InProgress),
                InProgress => Ignore(Duplicate),
                Canceling | Completed | Failed | RetryPending | Canceled => Ignore(Stale),
                _ => return None,
            },
            E::Ended { outcome, retry } => match from {
                Canceling => To(Canceled),
                Dispatching | Ringing | InProgress => match outcome {
                    CallOutcome::Answered => To(Completed),
                    CallOutcome::Canceled => To(Canceled),
                    _ if retry => To(RetryPending),
                    _ => To(Failed),
                },
                Completed | Failed | RetryPending | Canceled => Ignore(Duplicate),
                _ => return None,
            },
            E::Analyzed => {
                if dialed.contains(&from) {
                    To(from)
                } else {
                    return None;
                }
            }
            E::Expire => match from {
                Scheduled | RetryPending | Dispatching => To(Expired),
                Expired => Ignore(Duplicate),
                _ => return None,
            },
            E::Fail => match from {
                Dispatching | Ringing | InProgress | Canceling => To(Failed),
                Failed => Ignore(Duplicate),
                _ => return None,
            },
            E::Requeue => match from {
                Failed | Expired => To(Scheduled),
                _ => return None,
            },
        })
    }

    #[test]
    fn every_status_event_pair_matches_the_table() {
        let mut checked = 0;
        for from in CallStatus::ALL {
            for e in all_events() {
                let got = transition(from, &e);
                match expected(from, e) {
                    Some(t) => assert_eq!(got, Ok(t), "{from:?} + {e:?}"),
                    None => assert_eq!(
                        got,
                        Err(TransitionError { from, event: e }),
                        "{from:?} + {e:?}"
                    ),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, CallStatus::ALL.len() * all_events().len());
    }

    #[test]
    fn terminal_statuses_never_move_to_another_status() {
        // The one exit: its owner requeues a FAILED or EXPIRED call (dead letter).
        for from in CallStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for e in all_events() {
                if let Ok(Transition::To(to)) = transition(from, &e) {
                    if e == LifecycleEvent::Requeue {
                        assert!(matches!(from, Failed | Expired) && to == Scheduled);
                        continue;
                    }
                    assert_eq!(to, from, "{from:?} + {e:?} left a terminal status");
                }
            }
        }
    }

    #[test]
    fn illegal_moves_become_invalid_transition_errors() {
        let err: crate::Error = transition(Completed, &LifecycleEvent::Cancel)
            .expect_err("cannot cancel a completed call")
            .into();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidTransition);
        assert!(transition(Ringing, &LifecycleEvent::Edit).is_err());
    }
}
