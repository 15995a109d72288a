//! Bounds on time from outside: every instant callcat accepts lies in 2000–2200,
//! every provider-given wait is capped, and local dates are computed without
//! panicking at the edge of what `chrono` can represent.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};

use crate::error::{Error, Result};

/// 2000-01-01T00:00:00Z in seconds since the epoch.
const EARLIEST_SECS: i64 = 946_684_800;
/// 2200-01-01T00:00:00Z in seconds since the epoch.
const LATEST_SECS: i64 = 7_258_118_400;

/// The longest wait callcat takes from a provider's `Retry-After` (1 day).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest call duration callcat believes from a provider (31 days); longer
/// values are clamped to it.
pub const MAX_CALL_DURATION_MS: u64 = 31 * 24 * 60 * 60 * 1000;

/// The earliest instant callcat accepts from outside (2000-01-01T00:00:00Z).
pub fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(EARLIEST_SECS, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The first instant callcat no longer accepts from outside (2200-01-01T00:00:00Z).
pub fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(LATEST_SECS, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether `t` is in callcat's range, 2000-01-01 (inclusive) to 2200-01-01 (exclusive).
pub fn in_range(t: DateTime<Utc>) -> bool {
    earliest() <= t && t < latest()
}

/// `Validation` naming `field` unless `t` is between 2000-01-01 and 2200-01-01.
///
/// Every instant core takes from outside (a call's schedule and expiry, a
/// window's instants, an analytics range) goes through this, so no stored
/// record carries an instant whose arithmetic or time-zone conversion overflows.
pub fn check_range(field: &str, t: DateTime<Utc>) -> Result<()> {
    if in_range(t) {
        Ok(())
    } else {
        Err(Error::validation(
            field,
            format!("{field} must be between 2000-01-01 and 2200-01-01"),
        ))
    }
}

/// An instant from epoch milliseconds, in callcat's range, else `Validation` naming `field`.
pub fn from_millis(field: &str, ms: i64) -> Result<DateTime<Utc>> {
    let t = DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        Error::validation(field, format!("{field} is not a representable instant"))
    })?;
    check_range(field, t)?;
    Ok(t)
}

/// The local date and time of `t` in `tz`, or `None` when it is not
/// representable (instants near the edge of chrono's range). Never panics,
/// unlike `t.with_timezone(&tz).naive_local()`.
pub fn local_naive<Z: TimeZone>(t: DateTime<Utc>, tz: &Z) -> Option<NaiveDateTime> {
    let offset = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    t.naive_utc().checked_add_offset(offset)
}

/// The local date of `t` in `tz`, or `None` when it is not representable; never
/// panics, unlike `t.with_timezone(&tz).date_naive()`.
pub fn local_date<Z: TimeZone>(t: DateTime<Utc>, tz: &Z) -> Option<NaiveDate> {
    local_naive(t, tz).map(|local| local.date())
}

/// `t + d`, or `None` on overflow.
pub fn add(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
}

/// `t + d`, saturating at the largest representable instant instead of panicking.
pub fn saturating_add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    add(t, d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A provider's `Retry-After`, capped at [`MAX_RETRY_AFTER`].
pub fn clamp_retry_after(d: Duration) -> Duration {
    d.min(MAX_RETRY_AFTER)
}

/// A provider-reported call duration in milliseconds, capped at
/// [`MAX_CALL_DURATION_MS`].
pub fn clamp_duration_ms(ms: u64) -> u64 {
    ms.min(MAX_CALL_DURATION_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_2000_to_2200() {
        assert!(check_range("t", earliest()).is_ok());
        assert!(check_range("t", latest() - TimeDelta::milliseconds(1)).is_ok());
        for t in [
            earliest() - TimeDelta::milliseconds(1),
            latest(),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ] {
            let e = check_range("startAt", t).expect_err("out of range");
            assert_eq!(e.kind(), crate::ErrorKind::Validation);
            assert_eq!(e.field(), Some("startAt"));
        }
    }

    #[test]
    fn extreme_millis_are_validation_errors_naming_the_field() {
        for ms in [
            8_210_266_873_199_999,
            -8_334_601_228_800_000,
            i64::MAX,
            i64::MIN,
        ] {
            let e = from_millis("to", ms).expect_err("out of range");
            assert_eq!(e.field(), Some("to"), "{ms}");
        }
        assert!(from_millis("to", 1_893_456_000_000).is_ok());
    }

    #[test]
    fn local_dates_at_the_edge_of_time_do_not_panic() {
        let tokyo = chrono_tz::Asia::Tokyo;
        let ny = chrono_tz::America::New_York;
        let max = DateTime::from_timestamp_millis(8_210_266_876_799_999).expect("representable");
        assert_eq!(local_date(max, &tokyo), None);
        assert_eq!(local_date(DateTime::<Utc>::MAX_UTC, &tokyo), None);
        assert_eq!(local_date(DateTime::<Utc>::MIN_UTC, &ny), None);
        let t = DateTime::from_timestamp(1_893_456_000, 0).expect("2030"); // 2030-01-01T00:00Z
        assert_eq!(
            local_date(t, &ny),
            NaiveDate::from_ymd_opt(2029, 12, 31),
            "New York is behind UTC"
        );
        assert_eq!(local_date(t, &tokyo), NaiveDate::from_ymd_opt(2030, 1, 1));
    }

    #[test]
    fn clamps() {
        assert_eq!(
            clamp_retry_after(Duration::from_secs(u64::MAX)),
            MAX_RETRY_AFTER
        );
        assert_eq!(
            clamp_retry_after(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(clamp_duration_ms(u64::MAX), MAX_CALL_DURATION_MS);
        assert_eq!(
            saturating_add(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
