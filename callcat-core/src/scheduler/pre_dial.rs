//! The pre-dial sequence as pure functions over the call, the time and the
//! settings: expiry, then the call's dial window, then the pre-dial checks, then
//! "one call in flight per number"; after the attempt has begun, the per-owner
//! cap. The dispatcher gathers the facts a step asks for (the checks' verdicts,
//! a count from the store) and asks again, so every decision is tested here
//! without I/O and the I/O happens only when a decision needs it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::checks::PreDialVerdict;
use crate::call::Call;
use crate::clock::delta;

/// The settings the sequence reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreDialSettings {
    /// How long a call waits when its owner or its number is busy (a per-call
    /// spread of up to the same again is added for a busy number, so two calls
    /// to one number claimed together do not keep meeting).
    pub busy_delay: Duration,
    /// Never two calls in flight to one number.
    pub one_call_per_number: bool,
    /// Whether any pre-dial check is registered.
    pub has_checks: bool,
}

/// What the dispatcher has found out so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreDialFacts {
    /// The verdicts of the pre-dial checks, in registration order (a check that
    /// failed is given as a `Defer`).
    pub checks: Option<Vec<PreDialVerdict>>,
    /// Active calls to the call's number, this one included.
    pub calls_to_number: Option<u32>,
}

/// The next step before a dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreDialStep {
    /// Past `not_after`, or the dial window does not open again before it.
    Expire {
        /// For the call's `last_error`.
        reason: String,
    },
    /// Not now: put the call back until this instant.
    Defer {
        /// When to try again.
        until: DateTime<Utc>,
        /// For the call's `last_error` and logs.
        reason: String,
    },
    /// Never: a check said so.
    Cancel {
        /// For the call's `last_error`.
        reason: String,
    },
    /// Run the pre-dial checks and ask again with [`PreDialFacts::checks`].
    RunChecks,
    /// Count the active calls to the number and ask again with
    /// [`PreDialFacts::calls_to_number`].
    CountCallsToNumber,
    /// Begin the attempt.
    Proceed,
}

/// Decides the next pre-dial step for `call` at `now`.
pub fn pre_dial(
    call: &Call,
    now: DateTime<Utc>,
    settings: &PreDialSettings,
    facts: &PreDialFacts,
) -> PreDialStep {
    if call.not_after.is_some_and(|na| na <= now) {
        return PreDialStep::Expire {
            reason: "not placed before notAfter".into(),
        };
    }
    if let Some(window) = &call.dial_window
        && !window.contains(now)
    {
        return match window.next_open(now) {
            Some(t) if call.not_after.is_none_or(|na| t < na) => PreDialStep::Defer {
                until: t,
                reason: "outside its dial window".into(),
            },
            _ => PreDialStep::Expire {
                reason: "its dial window does not open again before notAfter".into(),
            },
        };
    }
    if settings.has_checks {
        let Some(verdicts) = &facts.checks else {
            return PreDialStep::RunChecks;
        };
        for v in verdicts {
            match v {
                PreDialVerdict::Allow => {}
                PreDialVerdict::Defer { until, reason } => {
                    return PreDialStep::Defer {
                        until: *until,
                        reason: reason.clone(),
                    };
                }
                PreDialVerdict::Cancel { reason } => {
                    return PreDialStep::Cancel {
                        reason: reason.clone(),
                    };
                }
            }
        }
    }
    if settings.one_call_per_number {
        match facts.calls_to_number {
            None => return PreDialStep::CountCallsToNumber,
            Some(n) if n > 1 => {
                return PreDialStep::Defer {
                    until: now + delta(settings.busy_delay) + spread(call, settings.busy_delay),
                    reason: "another call to this number is in flight".into(),
                };
            }
            Some(_) => {}
        }
    }
    PreDialStep::Proceed
}

/// After the attempt has begun: whether the owner is at its cap. `others` counts
/// the owner's other calls whose dial has begun or that are on the line.
pub fn owner_at_cap(
    others: usize,
    cap: Option<usize>,
    now: DateTime<Utc>,
    busy_delay: Duration,
) -> Option<(DateTime<Utc>, String)> {
    match cap {
        Some(cap) if others >= cap => Some((
            now + delta(busy_delay),
            "another call of this owner is in flight".into(),
        )),
        _ => None,
    }
}

/// A per-call share (0 to 100 %) of `d`, the same for the same call.
fn spread(call: &Call, d: Duration) -> chrono::TimeDelta {
    let permille = (call.id.as_uuid().as_u128() % 1000) as u32;
    delta(d.mul_f64(f64::from(permille) / 1000.0))
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, TimeDelta, Weekday};

    use super::*;
    use crate::ids::Owner;
    use crate::testing_support::sample_call;
    use crate::window::RecurringWindow;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        // Wednesday 2026-01-07.
        chrono::NaiveDate::from_ymd_opt(2026, 1, 7)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .map(|d| d.and_utc())
            .unwrap_or_default()
    }

    fn settings(has_checks: bool, one_call_per_number: bool) -> PreDialSettings {
        PreDialSettings {
            busy_delay: Duration::from_secs(2),
            one_call_per_number,
            has_checks,
        }
    }

    fn call() -> Call {
        sample_call(&Owner::new("t", "u"))
    }

    fn office_hours() -> RecurringWindow {
        RecurringWindow {
            weekdays: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed],
            start: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default(),
            end: NaiveTime::from_hms_opt(17, 0, 0).unwrap_or_default(),
            timezone: chrono_tz::UTC,
        }
    }

    #[test]
    fn nothing_to_check_proceeds() {
        let s = settings(false, false);
        assert_eq!(
            pre_dial(&call(), t(10, 0), &s, &PreDialFacts::default()),
            PreDialStep::Proceed
        );
    }

    #[test]
    fn expiry_comes_first_even_inside_the_window_and_before_any_check() {
        let mut c = call();
        c.not_after = Some(t(10, 0));
        c.dial_window = Some(office_hours());
        let step = pre_dial(
            &c,
            t(10, 0),
            &settings(true, true),
            &PreDialFacts::default(),
        );
        assert!(matches!(step, PreDialStep::Expire { .. }), "{step:?}");
    }

    #[test]
    fn a_closed_window_defers_to_its_next_opening_without_asking_the_checks() {
        let mut c = call();
        c.dial_window = Some(office_hours());
        let step = pre_dial(
            &c,
            t(18, 0),
            &settings(true, true),
            &PreDialFacts::default(),
        );
        assert_eq!(
            step,
            PreDialStep::Defer {
                // Thursday is not in the window: Monday 2026-01-12 09:00.
                until: t(9, 0) + TimeDelta::days(5),
                reason: "outside its dial window".into()
            }
        );
    }

    #[test]
    fn a_window_that_opens_only_after_not_after_expires_the_call() {
        let mut c = call();
        c.dial_window = Some(office_hours());
        c.not_after = Some(t(23, 0));
        let step = pre_dial(
            &c,
            t(18, 0),
            &settings(false, false),
            &PreDialFacts::default(),
        );
        assert!(matches!(step, PreDialStep::Expire { .. }), "{step:?}");
    }

    #[test]
    fn checks_are_asked_for_then_their_first_objection_wins() {
        let c = call();
        let s = settings(true, false);
        let now = t(10, 0);
        assert_eq!(
            pre_dial(&c, now, &s, &PreDialFacts::default()),
            PreDialStep::RunChecks
        );
        let facts = |v: Vec<PreDialVerdict>| PreDialFacts {
            checks: Some(v),
            calls_to_number: None,
        };
        let cancel = PreDialVerdict::Cancel {
            reason: "listed".into(),
        };
        let defer = PreDialVerdict::Defer {
            until: t(11, 0),
            reason: "later".into(),
        };
        assert_eq!(
            pre_dial(
                &c,
                now,
                &s,
                &facts(vec![PreDialVerdict::Allow, cancel.clone(), defer.clone()])
            ),
            PreDialStep::Cancel {
                reason: "listed".into()
            }
        );
        assert_eq!(
            pre_dial(&c, now, &s, &facts(vec![defer, cancel])),
            PreDialStep::Defer {
                until: t(11, 0),
                reason: "later".into()
            }
        );
        assert_eq!(
            pre_dial(&c, now, &s, &facts(vec![PreDialVerdict::Allow])),
            PreDialStep::Proceed
        );
    }

    #[test]
    fn a_number_with_another_call_in_flight_waits_a_spread_delay() {
        let c = call();
        let s = settings(false, true);
        let now = t(10, 0);
        assert_eq!(
            pre_dial(&c, now, &s, &PreDialFacts::default()),
            PreDialStep::CountCallsToNumber
        );
        let with = |n| PreDialFacts {
            checks: None,
            calls_to_number: Some(n),
        };
        // Only this call: go.
        assert_eq!(pre_dial(&c, now, &s, &with(1)), PreDialStep::Proceed);
        let PreDialStep::Defer { until, reason } = pre_dial(&c, now, &s, &with(2)) else {
            panic!("a busy number must defer");
        };
        assert!(until >= now + TimeDelta::seconds(2) && until <= now + TimeDelta::seconds(4));
        assert!(reason.contains("number"));
        // The same call always gets the same delay; two calls (almost always) differ.
        assert_eq!(
            pre_dial(&c, now, &s, &with(2)),
            pre_dial(&c, now, &s, &with(2))
        );
    }

    #[test]
    fn the_owner_cap_defers_only_at_the_cap() {
        let now = t(10, 0);
        let d = Duration::from_secs(2);
        assert_eq!(owner_at_cap(0, Some(1), now, d), None);
        assert_eq!(owner_at_cap(5, None, now, d), None);
        let (until, _) = owner_at_cap(1, Some(1), now, d).expect("at cap");
        assert_eq!(until, now + TimeDelta::seconds(2));
    }
}
