//! Weekly windows as JSON — `{weekdays: ["mon", ...], start: "09:00", end:
//! "17:00", timezone}` — parsed once for both the recurring call windows of
//! `/api/call-windows` and a call's `dialWindow`, with every error naming its
//! field (prefixed, e.g. `dialWindow.timezone`).

use callcat_core::chrono::{NaiveTime, Weekday};
use callcat_core::chrono_tz::Tz;
use callcat_core::{Error, RecurringWindow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};

/// Most weekdays a window may list (each day once, plus repeats that are ignored).
const MAX_WEEKDAYS: usize = 7;

/// The API spelling of a weekday: `mon` ... `sun`.
pub fn weekday_name(d: Weekday) -> String {
    d.to_string().to_ascii_lowercase()
}

/// An `HH:MM` local time.
pub fn time_name(t: NaiveTime) -> String {
    t.format("%H:%M").to_string()
}

/// A time zone by IANA name; absent or empty is `UTC`.
pub fn timezone(field: &str, v: Option<&str>) -> ApiResult<Tz> {
    match v {
        None | Some("") => Ok(Tz::UTC),
        Some(z) => z
            .parse()
            .map_err(|_| ApiError::validation(field, format!("unknown time zone {z:?}"))),
    }
}

fn time_of_day(field: &str, v: Option<&str>) -> ApiResult<NaiveTime> {
    let v = v.ok_or_else(|| ApiError::validation(field, format!("{field} is required")))?;
    NaiveTime::parse_from_str(v, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(v, "%H:%M:%S"))
        .map_err(|_| ApiError::validation(field, "expected a local time as HH:MM"))
}

/// A core validation error with its field put under `prefix` (`dialWindow.`).
fn prefixed(prefix: &str, e: Error) -> ApiError {
    match e.field() {
        Some(f) => ApiError::validation(format!("{prefix}{f}"), e.message()),
        None => ApiError::from(e),
    }
}

/// Builds and validates a weekly window from its JSON parts; errors name
/// `{prefix}weekdays`, `{prefix}start`, `{prefix}end` or `{prefix}timezone`.
/// `timezone` is parsed by the caller (one-off call windows need it too).
pub fn recurring_window(
    prefix: &str,
    weekdays: Option<&[String]>,
    start: Option<&str>,
    end: Option<&str>,
    timezone: Tz,
) -> ApiResult<RecurringWindow> {
    let field = |name: &str| format!("{prefix}{name}");
    let days =
        weekdays.ok_or_else(|| ApiError::validation(field("weekdays"), "weekdays is required"))?;
    if days.len() > MAX_WEEKDAYS {
        return Err(ApiError::validation(
            field("weekdays"),
            format!("at most {MAX_WEEKDAYS} weekdays"),
        ));
    }
    let mut parsed: Vec<Weekday> = Vec::with_capacity(days.len());
    for d in days {
        let day = d.parse::<Weekday>().map_err(|_| {
            ApiError::validation(field("weekdays"), format!("{d:?} is not a weekday"))
        })?;
        if !parsed.contains(&day) {
            parsed.push(day);
        }
    }
    let window = RecurringWindow {
        weekdays: parsed,
        start: time_of_day(&field("start"), start)?,
        end: time_of_day(&field("end"), end)?,
        timezone,
    };
    window.validate().map_err(|e| prefixed(prefix, e))?;
    Ok(window)
}

/// A call's dial window (quiet hours): outside it the dial is deferred to its
/// next opening.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DialWindowFields {
    /// Days of the week it is open (`mon`, `tuesday`, ...), at most 7.
    pub weekdays: Option<Vec<String>>,
    /// Local opening time, `HH:MM`.
    pub start: Option<String>,
    /// Local closing time, `HH:MM` (same day, after `start`; exclusive).
    pub end: Option<String>,
    /// IANA time zone (`Europe/Berlin`); default `UTC`.
    pub timezone: Option<String>,
}

impl DialWindowFields {
    /// The core window; errors name `dialWindow.<field>`.
    pub fn into_window(self) -> ApiResult<RecurringWindow> {
        const PREFIX: &str = "dialWindow.";
        let tz = timezone("dialWindow.timezone", self.timezone.as_deref())?;
        recurring_window(
            PREFIX,
            self.weekdays.as_deref(),
            self.start.as_deref(),
            self.end.as_deref(),
            tz,
        )
    }
}

/// A weekly window as returned: the input's shape, every part present.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DialWindowDto {
    /// `mon` ... `sun`.
    pub weekdays: Vec<String>,
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM`.
    pub end: String,
    /// IANA time zone.
    pub timezone: String,
}

impl From<&RecurringWindow> for DialWindowDto {
    fn from(w: &RecurringWindow) -> Self {
        DialWindowDto {
            weekdays: w.weekdays.iter().map(|d| weekday_name(*d)).collect(),
            start: time_name(w.start),
            end: time_name(w.end),
            timezone: w.timezone.name().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(days: &[&str], start: &str, end: &str, tz: &str) -> DialWindowFields {
        DialWindowFields {
            weekdays: Some(days.iter().map(|d| (*d).to_owned()).collect()),
            start: Some(start.into()),
            end: Some(end.into()),
            timezone: Some(tz.into()),
        }
    }

    fn field_of(r: ApiResult<RecurringWindow>) -> String {
        r.expect_err("invalid")
            .field()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn dial_window_errors_name_the_nested_field() {
        let ok = fields(&["mon", "Friday", "mon"], "09:00", "17:30", "Europe/Berlin")
            .into_window()
            .expect("valid");
        assert_eq!(ok.weekdays, vec![Weekday::Mon, Weekday::Fri]);
        let dto = DialWindowDto::from(&ok);
        assert_eq!(dto.weekdays, vec!["mon", "fri"]);
        assert_eq!((dto.start.as_str(), dto.end.as_str()), ("09:00", "17:30"));
        assert_eq!(dto.timezone, "Europe/Berlin");

        let bad = |f: DialWindowFields| field_of(f.into_window());
        assert_eq!(
            bad(fields(&["mon"], "09:00", "17:00", "Mars/Base")),
            "dialWindow.timezone"
        );
        assert_eq!(
            bad(fields(&["someday"], "09:00", "17:00", "UTC")),
            "dialWindow.weekdays"
        );
        assert_eq!(
            bad(fields(&[], "09:00", "17:00", "UTC")),
            "dialWindow.weekdays"
        );
        assert_eq!(
            bad(fields(&["mon"], "9am", "17:00", "UTC")),
            "dialWindow.start"
        );
        assert_eq!(
            bad(fields(&["mon"], "10:00", "09:00", "UTC")),
            "dialWindow.end"
        );
        let eight: Vec<&str> = ["mon"; 8].to_vec();
        assert_eq!(
            bad(fields(&eight, "09:00", "10:00", "UTC")),
            "dialWindow.weekdays"
        );
        assert_eq!(
            bad(DialWindowFields::default()),
            "dialWindow.weekdays",
            "weekdays is required"
        );
    }
}
