//! Call windows: recurring weekday windows in a time zone, and one-off windows.
//! The arithmetic here is pure and correct across daylight-saving changes.

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{Owner, WindowId};
use crate::new_call::CallTemplate;

/// Every listed weekday from `start` to `end` local time in `timezone`.
///
/// `end` must be after `start` (windows do not cross midnight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringWindow {
    /// The days it is open.
    pub weekdays: Vec<Weekday>,
    /// Local opening time.
    pub start: NaiveTime,
    /// Local closing time (exclusive).
    pub end: NaiveTime,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: Tz,
}

impl RecurringWindow {
    /// Checks the window makes sense.
    pub fn validate(&self) -> Result<()> {
        if self.weekdays.is_empty() {
            return Err(Error::validation(
                "weekdays",
                "a recurring window needs at least one weekday",
            ));
        }
        if self.end <= self.start {
            return Err(Error::validation(
                "end",
                "the window must end after it starts (same day)",
            ));
        }
        Ok(())
    }

    /// Whether `t` is inside the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.timezone);
        let time = local.time();
        self.weekdays.contains(&local.weekday()) && time >= self.start && time < self.end
    }

    /// The window's opening and closing instants on a local date, if it is open
    /// that day. A local time that does not exist (skipped by a DST change) moves
    /// to the first instant after the gap; an ambiguous one takes the earlier.
    pub fn interval_on(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.weekdays.contains(&date.weekday()) {
            return None;
        }
        let open = resolve_local(self.timezone, date, self.start)?;
        let close = resolve_local(self.timezone, date, self.end)?;
        (close > open).then_some((open, close))
    }

    /// The first instant at or after `t` when the window is open.
    pub fn next_open(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.contains(t) {
            return Some(t);
        }
        let start_date = t.with_timezone(&self.timezone).date_naive() - TimeDelta::days(1);
        (0..=9)
            .filter_map(|i| start_date.checked_add_signed(TimeDelta::days(i)))
            .filter_map(|d| self.interval_on(d))
            .find_map(|(open, close)| {
                let at = open.max(t);
                (at < close).then_some(at)
            })
    }
}

/// The UTC instant of a local date and time, mapping DST gaps forward and taking
/// the earlier of two ambiguous instants.
pub fn resolve_local(tz: Tz, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let naive = date.and_time(time);
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => (1..=24 * 4).find_map(|q| {
            let later = naive + TimeDelta::minutes(15 * q);
            match tz.from_local_datetime(&later) {
                LocalResult::Single(t) => {
                    // first instant after the gap: step back to where the gap ends
                    let t = t.with_timezone(&Utc);
                    Some(first_after_gap(tz, naive, t))
                }
                LocalResult::Ambiguous(a, _) => Some(a.with_timezone(&Utc)),
                LocalResult::None => None,
            }
        }),
    }
}

fn first_after_gap(
    tz: Tz,
    gap_local: chrono::NaiveDateTime,
    found: DateTime<Utc>,
) -> DateTime<Utc> {
    // Walk back minute by minute while the local time is still after the gap start.
    let mut t = found;
    loop {
        let prev = t - TimeDelta::minutes(1);
        let local = prev.with_timezone(&tz).naive_local();
        if local < gap_local {
            return t;
        }
        t = prev;
    }
}

/// When a call window is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WindowSchedule {
    /// Every listed weekday between local times.
    Recurring(RecurringWindow),
    /// Once, between two instants.
    OneOff {
        /// Opens at.
        start_at: DateTime<Utc>,
        /// Closes at (exclusive).
        end_at: DateTime<Utc>,
        /// The zone whose local date this window belongs to (for "one call per local day").
        timezone: Tz,
    },
}

impl WindowSchedule {
    /// Checks the schedule makes sense; a one-off window's instants must lie in
    /// 2000–2200 ([`crate::time::check_range`]).
    pub fn validate(&self) -> Result<()> {
        match self {
            WindowSchedule::Recurring(r) => r.validate(),
            WindowSchedule::OneOff {
                start_at, end_at, ..
            } => {
                crate::time::check_range("startAt", *start_at)?;
                crate::time::check_range("endAt", *end_at)?;
                if end_at <= start_at {
                    Err(Error::validation(
                        "endAt",
                        "the window must end after it starts",
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The time zone whose local days count.
    pub fn timezone(&self) -> Tz {
        match self {
            WindowSchedule::Recurring(r) => r.timezone,
            WindowSchedule::OneOff { timezone, .. } => *timezone,
        }
    }

    /// Whether `t` is inside the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        match self {
            WindowSchedule::Recurring(r) => r.contains(t),
            WindowSchedule::OneOff {
                start_at, end_at, ..
            } => *start_at <= t && t < *end_at,
        }
    }
}

/// A user's window during which the planner places a call from `template`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallWindow {
    /// Id.
    pub id: WindowId,
    /// Whose window.
    pub owner: Owner,
    /// When it is open.
    pub schedule: WindowSchedule,
    /// The call to place while it is open.
    pub template: CallTemplate,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn berlin_9_to_10(days: &[Weekday]) -> RecurringWindow {
        RecurringWindow {
            weekdays: days.to_vec(),
            start: NaiveTime::from_hms_opt(9, 0, 0).expect("time"),
            end: NaiveTime::from_hms_opt(10, 0, 0).expect("time"),
            timezone: chrono_tz::Europe::Berlin,
        }
    }

    #[test]
    fn contains_uses_local_time_and_weekday() {
        let w = berlin_9_to_10(&[Weekday::Mon]);
        // 2030-01-07 is a Monday; Berlin is UTC+1 in winter.
        assert!(w.contains(utc("2030-01-07T08:00:00Z")));
        assert!(w.contains(utc("2030-01-07T08:59:59Z")));
        assert!(!w.contains(utc("2030-01-07T09:00:00Z")));
        assert!(!w.contains(utc("2030-01-08T08:30:00Z")));
    }

    #[test]
    fn next_open_crosses_dst_spring_forward() {
        // Berlin moves from UTC+1 to UTC+2 on Sunday 2030-03-31.
        let w = berlin_9_to_10(&[Weekday::Mon]);
        let saturday = utc("2030-03-30T12:00:00Z");
        assert_eq!(w.next_open(saturday), Some(utc("2030-04-01T07:00:00Z")));
        let before = utc("2030-03-25T12:00:00Z");
        assert_eq!(w.next_open(before), Some(utc("2030-04-01T07:00:00Z")));
    }

    #[test]
    fn next_open_inside_window_is_now() {
        let w = berlin_9_to_10(&[Weekday::Mon]);
        let t = utc("2030-01-07T08:30:00Z");
        assert_eq!(w.next_open(t), Some(t));
    }

    #[test]
    fn window_starting_in_a_dst_gap_opens_after_the_gap() {
        // 02:30 does not exist in Berlin on 2030-03-31 (02:00 -> 03:00).
        let w = RecurringWindow {
            weekdays: vec![Weekday::Sun],
            start: NaiveTime::from_hms_opt(2, 30, 0).expect("time"),
            end: NaiveTime::from_hms_opt(4, 0, 0).expect("time"),
            timezone: chrono_tz::Europe::Berlin,
        };
        let (open, close) = w
            .interval_on(NaiveDate::from_ymd_opt(2030, 3, 31).expect("date"))
            .expect("open that day");
        assert_eq!(open, utc("2030-03-31T01:00:00Z")); // 03:00 CEST
        assert_eq!(close, utc("2030-03-31T02:00:00Z")); // 04:00 CEST
    }

    #[test]
    fn ambiguous_fall_back_time_takes_the_earlier_instant() {
        // 02:30 happens twice in Berlin on 2030-10-27.
        let t = resolve_local(
            chrono_tz::Europe::Berlin,
            NaiveDate::from_ymd_opt(2030, 10, 27).expect("date"),
            NaiveTime::from_hms_opt(2, 30, 0).expect("time"),
        );
        assert_eq!(t, Some(utc("2030-10-27T00:30:00Z")));
    }

    #[test]
    fn validation_rejects_empty_or_inverted_windows() {
        let mut w = berlin_9_to_10(&[]);
        assert_eq!(w.validate().expect_err("no days").field(), Some("weekdays"));
        w.weekdays = vec![Weekday::Tue];
        w.end = w.start;
        assert_eq!(w.validate().expect_err("inverted").field(), Some("end"));
    }

    #[test]
    fn one_off_instants_out_of_range_are_validation_errors_naming_the_field() {
        let ok = utc("2030-01-07T08:00:00Z");
        let edge = DateTime::from_timestamp_millis(8_210_266_873_199_999).expect("valid");
        let early = DateTime::from_timestamp_millis(-8_334_601_228_800_000).expect("valid");
        let one_off = |start_at, end_at| WindowSchedule::OneOff {
            start_at,
            end_at,
            timezone: chrono_tz::Asia::Tokyo,
        };
        let e = one_off(edge, edge + TimeDelta::hours(1))
            .validate()
            .expect_err("too late");
        assert_eq!(
            (e.kind(), e.field()),
            (crate::ErrorKind::Validation, Some("startAt"))
        );
        let e = one_off(early, ok).validate().expect_err("too early");
        assert_eq!(e.field(), Some("startAt"));
        let e = one_off(ok, edge).validate().expect_err("too late");
        assert_eq!(e.field(), Some("endAt"));
        assert!(one_off(ok, ok + TimeDelta::hours(1)).validate().is_ok());
    }
}
