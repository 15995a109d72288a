//! Applying provider events to a call: pure, idempotent and order-independent.
//!
//! Data from an event is merged monotonically (a field, once known, is kept; the
//! analysis is replaced by a newer one), and the status moves through
//! [`crate::lifecycle::transition`]. Duplicates and stale events change nothing,
//! `Ended` before `Started` is accepted, and every permutation of one attempt's
//! events ends in the same record (see the property test below).

use chrono::{DateTime, Utc};

use crate::call::{Call, CallOutcome, CallStatus};
use crate::error::Result;
use crate::lifecycle::{IgnoreReason, LifecycleEvent, Transition, transition};
use crate::provider::{ProviderCall, ProviderCallState, ProviderEvent, ProviderEventKind};
use crate::retry::{RetryDecision, attempt_rng};

/// What applying an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The call changed; store this (same version: the store bumps it).
    Changed(Box<Call>),
    /// Nothing to store.
    Unchanged(IgnoreReason),
}

/// Applies a provider event to `call` at `now`. `seed` seeds retry jitter (see
/// [`attempt_rng`]), so the retry time does not depend on the order of events.
pub fn apply_provider_event(
    call: &Call,
    event: &ProviderEvent,
    now: DateTime<Utc>,
    seed: u64,
) -> Result<Applied> {
    // Instants out of 2000–2200 and absurd durations from a provider are
    // dropped or clamped before any arithmetic on them.
    let bounded;
    let snap = if needs_bounds(&event.call) {
        bounded = within_bounds(&event.call);
        &bounded
    } else {
        &event.call
    };
    let mut next = call.clone();

    // An event about an earlier attempt only updates that attempt's record.
    let earlier = call.history.iter().any(|a| {
        a.number < call.attempts
            && a.provider_call_id.as_deref() == Some(snap.provider_call_id.as_str())
    });
    if earlier {
        return Ok(apply_to_history(next, snap, now));
    }
    if call
        .provider_call_id
        .as_ref()
        .is_some_and(|current| current != &snap.provider_call_id)
    {
        return Ok(Applied::Unchanged(IgnoreReason::Stale));
    }
    if next.provider_call_id.is_none() {
        // The webhook outran the dial response.
        next.provider_call_id = Some(snap.provider_call_id.clone());
        next.provider = Some(event.provider.clone());
    }
    merge_data(&mut next, snap);

    let mut lifecycle = Vec::new();
    let ended = matches!(event.kind, ProviderEventKind::Ended)
        || (matches!(
            event.kind,
            ProviderEventKind::Analyzed | ProviderEventKind::TranscriptUpdated
        ) && snap.state.is_over());
    match event.kind {
        ProviderEventKind::Started => lifecycle.push(LifecycleEvent::Started),
        ProviderEventKind::Ringing
        | ProviderEventKind::TranscriptUpdated
        | ProviderEventKind::Other(_) => {
            if snap.state == ProviderCallState::InProgress || snap.started_at.is_some() {
                lifecycle.push(LifecycleEvent::Started);
            }
        }
        ProviderEventKind::Ended | ProviderEventKind::Analyzed => {}
    }
    if ended {
        let outcome = snap
            .outcome
            .unwrap_or(if snap.state == ProviderCallState::Error {
                CallOutcome::Error
            } else if next.started_at.is_some() {
                CallOutcome::Answered
            } else {
                CallOutcome::NoAnswer
            });
        let decision = if outcome == CallOutcome::Answered {
            RetryDecision::GiveUp
        } else {
            let mut rng = attempt_rng(seed, call.id, call.attempts);
            call.retry_policy
                .decide(outcome, call.attempts, None, &mut rng)
        };
        lifecycle.push(LifecycleEvent::Ended {
            outcome,
            retry: matches!(decision, RetryDecision::RetryAfter(_)),
        });
        if let RetryDecision::RetryAfter(d) = decision {
            next.next_action_at =
                Some(crate::time::saturating_add(next.ended_at.unwrap_or(now), d));
        }
        next.outcome = Some(outcome);
    }
    if matches!(event.kind, ProviderEventKind::Analyzed) {
        lifecycle.push(LifecycleEvent::Analyzed);
    }

    for ev in &lifecycle {
        match transition(next.status, ev) {
            Ok(Transition::To(to)) => {
                if to != next.status {
                    enter(&mut next, to, now);
                }
            }
            Ok(Transition::Ignore(_)) => {}
            Err(e)
                if call.status == CallStatus::Scheduled || call.status == CallStatus::Expired =>
            {
                return Err(e.into());
            }
            Err(_) => {}
        }
    }
    if next.status != CallStatus::RetryPending {
        // Only a planned retry keeps a due time; finished and live calls have none.
        if next.status != CallStatus::Dispatching {
            next.next_action_at = None;
        }
    }
    if ended && next.status == CallStatus::Canceled {
        next.outcome = Some(CallOutcome::Canceled);
    }
    sync_attempt(&mut next);

    if strip_volatile(&next) == strip_volatile(call) {
        let reason = if call.status.is_terminal() || call.status == CallStatus::RetryPending {
            IgnoreReason::Duplicate
        } else {
            IgnoreReason::Stale
        };
        return Ok(Applied::Unchanged(reason));
    }
    next.updated_at = now;
    Ok(Applied::Changed(Box::new(next)))
}

/// Moves `call` into status `to`, setting the fields that go with it.
pub(crate) fn enter(call: &mut Call, to: CallStatus, now: DateTime<Utc>) {
    call.status = to;
    if to != CallStatus::Dispatching {
        call.lease = None;
    }
    if !matches!(to, CallStatus::Dispatching | CallStatus::Canceling) {
        // Only a dial that may still be in flight keeps its start mark; a stale one
        // would send the next attempt down the crash-recovery path.
        call.dial_started_at = None;
    }
    if to.is_terminal() {
        call.finished_at = Some(call.ended_at.unwrap_or(now));
        call.next_action_at = None;
    }
}

fn merge_data(call: &mut Call, snap: &ProviderCall) {
    fill(&mut call.started_at, snap.started_at);
    fill(&mut call.ended_at, snap.ended_at);
    fill(&mut call.duration_ms, snap.duration_ms);
    fill(
        &mut call.disconnection_reason,
        snap.disconnection_reason.clone(),
    );
    fill(&mut call.recording_url, snap.recording_url.clone());
    if snap.cost.is_some() {
        fill(&mut call.cost, snap.cost.clone());
    }
    if let Some(a) = &snap.analysis {
        call.analysis = Some(a.clone());
    }
    if call.duration_ms.is_none()
        && let (Some(s), Some(e)) = (call.started_at, call.ended_at)
    {
        call.duration_ms = u64::try_from((e - s).num_milliseconds()).ok();
    }
}

fn fill<T>(slot: &mut Option<T>, v: Option<T>) {
    if slot.is_none() {
        *slot = v;
    }
}

fn needs_bounds(snap: &ProviderCall) -> bool {
    let out = |t: Option<DateTime<Utc>>| t.is_some_and(|t| !crate::time::in_range(t));
    out(snap.started_at)
        || out(snap.ended_at)
        || snap
            .duration_ms
            .is_some_and(|d| d != crate::time::clamp_duration_ms(d))
}

/// `snap` with instants outside 2000–2200 dropped and the duration clamped
/// ([`crate::time::MAX_CALL_DURATION_MS`]).
fn within_bounds(snap: &ProviderCall) -> ProviderCall {
    let mut s = snap.clone();
    s.started_at = s.started_at.filter(|t| crate::time::in_range(*t));
    s.ended_at = s.ended_at.filter(|t| crate::time::in_range(*t));
    s.duration_ms = s.duration_ms.map(crate::time::clamp_duration_ms);
    s
}

fn apply_to_history(mut call: Call, snap: &ProviderCall, now: DateTime<Utc>) -> Applied {
    let Some(rec) = call
        .history
        .iter_mut()
        .find(|a| a.provider_call_id.as_deref() == Some(snap.provider_call_id.as_str()))
    else {
        return Applied::Unchanged(IgnoreReason::Stale);
    };
    let before = rec.clone();
    fill(&mut rec.started_at, snap.started_at);
    fill(&mut rec.ended_at, snap.ended_at);
    fill(&mut rec.outcome, snap.outcome);
    fill(
        &mut rec.disconnection_reason,
        snap.disconnection_reason.clone(),
    );
    if *rec == before {
        return Applied::Unchanged(IgnoreReason::Stale);
    }
    call.updated_at = now;
    Applied::Changed(Box::new(call))
}

/// Copies the current attempt's provider data into its history record.
pub(crate) fn sync_attempt(call: &mut Call) {
    if call.attempts == 0 {
        return;
    }
    let (pid, started, ended, outcome, reason) = (
        call.provider_call_id.clone(),
        call.started_at,
        call.ended_at,
        call.outcome,
        call.disconnection_reason.clone(),
    );
    let rec = call.current_attempt_mut();
    fill(&mut rec.provider_call_id, pid);
    fill(&mut rec.started_at, started);
    fill(&mut rec.ended_at, ended);
    if outcome.is_some() {
        rec.outcome = outcome;
    }
    fill(&mut rec.disconnection_reason, reason);
}

fn strip_volatile(c: &Call) -> Call {
    let mut c = c.clone();
    c.updated_at = DateTime::<Utc>::MIN_UTC;
    c
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use proptest::prelude::*;

    use super::*;
    use crate::call::CallAnalysis;
    use crate::ids::Owner;
    use crate::new_call::{CallTemplate, Limits, NewCall};
    use crate::phone::PhoneNumber;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_893_456_000, 0).expect("time")
    }

    /// A call that was dialed and accepted as `pc-1`.
    pub(crate) fn ringing_call() -> Call {
        let template = CallTemplate::new(
            "Ada",
            PhoneNumber::parse("+14155552671").expect("phone"),
            "Checkup",
            "Ask how they are",
        );
        let mut c = NewCall::new(template)
            .into_call(Owner::new("t", "u"), t0(), &Limits::default())
            .expect("valid");
        c.id = crate::CallId::from_uuid(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0001,
        ));
        c.status = CallStatus::Ringing;
        c.attempts = 1;
        c.dial_started_at = Some(t0());
        c.provider = Some("sim".into());
        c.provider_call_id = Some("pc-1".into());
        c.next_action_at = None;
        c.current_attempt_mut().provider_call_id = Some("pc-1".into());
        c
    }

    fn snapshot(state: ProviderCallState) -> ProviderCall {
        ProviderCall::new("pc-1", state)
    }

    fn ev(kind: ProviderEventKind, call: ProviderCall) -> ProviderEvent {
        ProviderEvent {
            provider: "sim".into(),
            kind,
            call,
            sequence: None,
            occurred_at: None,
        }
    }

    /// The events of an answered call: started, transcript, ended, analyzed.
    fn answered_events() -> Vec<ProviderEvent> {
        let started = t0() + TimeDelta::seconds(5);
        let ended = t0() + TimeDelta::seconds(65);
        let mut s = snapshot(ProviderCallState::InProgress);
        s.started_at = Some(started);
        let mut e = snapshot(ProviderCallState::Ended);
        e.started_at = Some(started);
        e.ended_at = Some(ended);
        e.duration_ms = Some(60_000);
        e.outcome = Some(CallOutcome::Answered);
        e.disconnection_reason = Some("user_hangup".into());
        e.recording_url = Some("https://rec.example/1.wav".into());
        let mut a = e.clone();
        a.analysis = Some(CallAnalysis {
            summary: Some("went well".into()),
            successful: Some(true),
            custom: serde_json::Map::new(),
            ..CallAnalysis::default()
        });
        vec![
            ev(ProviderEventKind::Started, s.clone()),
            ev(ProviderEventKind::TranscriptUpdated, s),
            ev(ProviderEventKind::Ended, e),
            ev(ProviderEventKind::Analyzed, a),
        ]
    }

    /// The events of a no-answer attempt: ended (never started), analyzed.
    fn no_answer_events() -> Vec<ProviderEvent> {
        let mut e = snapshot(ProviderCallState::Ended);
        e.ended_at = Some(t0() + TimeDelta::seconds(30));
        e.outcome = Some(CallOutcome::NoAnswer);
        e.disconnection_reason = Some("dial_no_answer".into());
        let mut a = e.clone();
        a.analysis = Some(CallAnalysis::default());
        vec![
            ev(ProviderEventKind::Ended, e),
            ev(ProviderEventKind::Analyzed, a),
        ]
    }

    fn run(events: &[ProviderEvent]) -> Call {
        let mut call = ringing_call();
        for e in events {
            if let Applied::Changed(c) =
                apply_provider_event(&call, e, t0() + TimeDelta::seconds(100), 7).expect("applies")
            {
                let c = *c;
                call = c;
            }
        }
        call.updated_at = t0();
        call
    }

    #[test]
    fn answered_call_completes_with_its_data() {
        let c = run(&answered_events());
        assert_eq!(c.status, CallStatus::Completed);
        assert_eq!(c.outcome, Some(CallOutcome::Answered));
        assert_eq!(c.duration_ms, Some(60_000));
        assert_eq!(c.finished_at, c.ended_at);
        assert_eq!(
            c.analysis.as_ref().and_then(|a| a.summary.as_deref()),
            Some("went well")
        );
        assert_eq!(c.history.len(), 1);
        assert_eq!(c.history[0].outcome, Some(CallOutcome::Answered));
    }

    #[test]
    fn no_answer_plans_a_retry_from_the_end_time() {
        let c = run(&no_answer_events());
        assert_eq!(c.status, CallStatus::RetryPending);
        assert_eq!(c.outcome, Some(CallOutcome::NoAnswer));
        let at = c.next_action_at.expect("retry time");
        let base = t0() + TimeDelta::seconds(30);
        assert!(
            at >= base + TimeDelta::seconds(48) && at <= base + TimeDelta::seconds(72),
            "{at}"
        );
    }

    #[test]
    fn duplicates_and_late_events_change_nothing() {
        let events = answered_events();
        let done = run(&events);
        for e in &events {
            assert!(matches!(
                apply_provider_event(&done, e, t0(), 7).expect("applies"),
                Applied::Unchanged(_)
            ));
        }
    }

    #[test]
    fn event_for_an_earlier_attempt_touches_only_its_history() {
        let mut c = run(&no_answer_events());
        c.attempts = 2;
        c.status = CallStatus::Ringing;
        c.provider_call_id = Some("pc-2".into());
        c.current_attempt_mut().provider_call_id = Some("pc-2".into());
        let late = answered_events().remove(0); // a Started for pc-1
        match apply_provider_event(&c, &late, t0(), 7).expect("applies") {
            Applied::Changed(n) => {
                assert_eq!(n.status, CallStatus::Ringing);
                assert_eq!(n.started_at, None);
                assert!(n.history[0].started_at.is_some());
            }
            Applied::Unchanged(r) => panic!("expected a history update, got {r:?}"),
        }
    }

    #[test]
    fn events_for_a_scheduled_call_are_refused() {
        let mut c = ringing_call();
        c.status = CallStatus::Scheduled;
        c.provider_call_id = None;
        let e = answered_events().remove(0);
        assert!(apply_provider_event(&c, &e, t0(), 7).is_err());
    }

    fn permuted(events: Vec<ProviderEvent>) -> impl Strategy<Value = Vec<ProviderEvent>> {
        let n = events.len();
        (proptest::collection::vec(0..n, 0..6), Just(events)).prop_flat_map(|(dups, events)| {
            let mut all = events.clone();
            all.extend(dups.into_iter().map(|i| events[i].clone()));
            Just(all).prop_shuffle()
        })
    }

    proptest! {
        #[test]
        fn any_order_with_duplicates_ends_in_the_same_record(events in permuted(answered_events())) {
            let expected = run(&answered_events());
            prop_assert_eq!(run(&events), expected);
        }

        #[test]
        fn no_answer_in_any_order_ends_in_the_same_record(events in permuted(no_answer_events())) {
            let expected = run(&no_answer_events());
            prop_assert_eq!(run(&events), expected);
        }
    }

    #[test]
    fn instants_and_durations_out_of_bounds_from_a_provider_are_dropped_or_clamped() {
        let c = ringing_call();
        let mut e = snapshot(ProviderCallState::Ended);
        e.outcome = Some(crate::call::CallOutcome::NoAnswer);
        e.started_at = Some(DateTime::<Utc>::MIN_UTC);
        e.ended_at = Some(DateTime::<Utc>::MAX_UTC);
        e.duration_ms = Some(u64::MAX);
        let Applied::Changed(n) =
            apply_provider_event(&c, &ev(ProviderEventKind::Ended, e), t0(), 7).expect("apply")
        else {
            panic!("changed");
        };
        assert_eq!((n.started_at, n.ended_at), (None, None));
        assert_eq!(n.duration_ms, Some(crate::time::MAX_CALL_DURATION_MS));
        assert_eq!(n.status, CallStatus::RetryPending);
        assert!(n.next_action_at.is_some_and(|t| t > t0()));
    }
}
