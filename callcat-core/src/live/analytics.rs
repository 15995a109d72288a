//! Call analytics over a time range: counts by status and outcome, durations,
//! calls per hour of day, peak concurrency, cost. The aggregation is pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::call::{Call, CallStatus};
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::store::{CallStore, MAX_PAGE_SIZE};

/// Talk-time statistics over the calls that have a duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurationStats {
    /// How many calls have a duration.
    pub count: u64,
    /// Mean duration in milliseconds (rounded), `None` without calls.
    pub mean_ms: Option<u64>,
    /// Median (nearest rank) in milliseconds.
    pub p50_ms: Option<u64>,
    /// 90th percentile (nearest rank) in milliseconds.
    pub p90_ms: Option<u64>,
}

/// Aggregates over a set of calls (see [`analyze_calls`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallAnalytics {
    /// How many calls.
    pub total: u64,
    /// Calls per current status.
    pub by_status: BTreeMap<CallStatus, u64>,
    /// Calls per outcome of their latest attempt (`answered`, `no_answer`, ...);
    /// calls without an outcome are not counted here.
    pub by_outcome: BTreeMap<String, u64>,
    /// Talk time.
    pub duration: DurationStats,
    /// Calls per hour of day (index 0 = 00:00–00:59) in `time_zone`, by when the
    /// callee answered, or else when the dial went out; never-dialed calls are not counted.
    pub per_hour: [u64; 24],
    /// The IANA time zone of `per_hour`.
    pub time_zone: String,
    /// The most calls connected at the same time (from answered/ended intervals).
    pub peak_concurrent: u64,
    /// When that peak was first reached.
    pub peak_at: Option<DateTime<Utc>>,
    /// Total cost per currency.
    pub cost_by_currency: BTreeMap<String, f64>,
}

/// The nearest-rank percentile `p` (0–100) of sorted values.
fn percentile(sorted: &[u64], p: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (p * n).div_ceil(100).max(1);
    let idx = usize::try_from(rank - 1)
        .unwrap_or(usize::MAX)
        .min(sorted.len() - 1);
    Some(sorted[idx])
}

/// Aggregates `calls`. Connected calls with no end yet count as connected until
/// `open_until` (normally the end of the range, or now if earlier); hours of day
/// are taken in `tz`. Pure.
pub fn analyze_calls<'a>(
    calls: impl IntoIterator<Item = &'a Call>,
    open_until: DateTime<Utc>,
    tz: Tz,
) -> CallAnalytics {
    let mut a = Accumulator::default();
    for c in calls {
        a.add(c, open_until);
    }
    a.finish(tz)
}

#[derive(Default)]
struct Accumulator {
    total: u64,
    by_status: BTreeMap<CallStatus, u64>,
    by_outcome: BTreeMap<String, u64>,
    durations: Vec<u64>,
    activity_times: Vec<DateTime<Utc>>,
    /// (instant, +1 start / -1 end).
    edges: Vec<(DateTime<Utc>, i8)>,
    cost: BTreeMap<String, f64>,
}

impl Accumulator {
    fn add(&mut self, c: &Call, open_until: DateTime<Utc>) {
        self.total += 1;
        *self.by_status.entry(c.status).or_default() += 1;
        if let Some(o) = c.outcome {
            *self.by_outcome.entry(o.as_str().to_owned()).or_default() += 1;
        }
        if let Some(d) = c.duration_ms {
            self.durations.push(d);
        }
        if let Some(t) = c.started_at.or(c.dial_started_at) {
            self.activity_times.push(t);
        }
        if let Some(start) = c.started_at {
            let end = c
                .ended_at
                .or(if c.status.is_active() {
                    None
                } else {
                    c.finished_at
                })
                .unwrap_or(open_until);
            if end > start {
                self.edges.push((start, 1));
                self.edges.push((end, -1));
            }
        }
        if let Some(cost) = &c.cost
            && cost.total.is_finite()
        {
            *self.cost.entry(cost.currency.clone()).or_default() += cost.total;
        }
    }

    fn finish(mut self, tz: Tz) -> CallAnalytics {
        self.durations.sort_unstable();
        let count = self.durations.len() as u64;
        let mean_ms = (count > 0).then(|| {
            let sum: u128 = self.durations.iter().map(|d| u128::from(*d)).sum();
            let mean = (sum + u128::from(count) / 2) / u128::from(count);
            u64::try_from(mean).unwrap_or(u64::MAX)
        });
        let mut per_hour = [0u64; 24];
        for t in &self.activity_times {
            // Checked: a provider-given instant at the edge of time is not counted.
            if let Some(local) = crate::time::local_naive(*t, &tz) {
                per_hour[local.hour() as usize % 24] += 1;
            }
        }
        // Intervals are half-open: at equal instants, ends come before starts.
        self.edges.sort_by_key(|(t, d)| (*t, *d));
        let (mut current, mut peak, mut peak_at) = (0i64, 0i64, None);
        for (t, d) in &self.edges {
            current += i64::from(*d);
            if current > peak {
                peak = current;
                peak_at = Some(*t);
            }
        }
        CallAnalytics {
            total: self.total,
            by_status: self.by_status,
            by_outcome: self.by_outcome,
            duration: DurationStats {
                count,
                mean_ms,
                p50_ms: percentile(&self.durations, 50),
                p90_ms: percentile(&self.durations, 90),
            },
            per_hour,
            time_zone: tz.name().to_owned(),
            peak_concurrent: u64::try_from(peak).unwrap_or(0),
            peak_at,
            cost_by_currency: self.cost,
        }
    }
}

/// The longest analytics range, in days.
pub const MAX_ANALYTICS_DAYS: i64 = 92;

/// Checks an analytics range: both ends in 2000–2200
/// ([`crate::time::check_range`]), `from` before `to`, at most
/// [`MAX_ANALYTICS_DAYS`] long. `Validation` naming `from` or `to` otherwise.
pub fn check_analytics_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<()> {
    crate::time::check_range("from", from)?;
    crate::time::check_range("to", to)?;
    if from >= to {
        return Err(Error::validation(
            "from",
            "the range must start before it ends",
        ));
    }
    // Both ends are in range: the difference cannot overflow.
    if to - from > chrono::TimeDelta::days(MAX_ANALYTICS_DAYS) {
        return Err(Error::validation(
            "from",
            format!("the range must be at most {MAX_ANALYTICS_DAYS} days long"),
        ));
    }
    Ok(())
}

/// Analytics over a tenant's calls scheduled in `[from, to)`, read page by page
/// through [`CallStore::list_tenant_range`]. Calls still connected count as
/// connected until `min(to, now)`. `Validation` unless the range passes
/// [`check_analytics_range`].
pub async fn tenant_analytics(
    store: &dyn CallStore,
    tenant: &TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    tz: Tz,
) -> Result<CallAnalytics> {
    check_analytics_range(from, to)?;
    let open_until = to.min(now);
    let mut acc = Accumulator::default();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list_tenant_range(tenant, from, to, MAX_PAGE_SIZE, cursor.as_deref())
            .await?;
        for c in &page.items {
            acc.add(c, open_until);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(acc.finish(tz)),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::call::{CallCost, CallOutcome};
    use crate::ids::Owner;
    use crate::memory::InMemoryCallStore;
    use crate::new_call::{CallTemplate, Limits, NewCall};
    use crate::phone::PhoneNumber;

    fn t0() -> DateTime<Utc> {
        // 2030-01-01T00:00:00Z
        DateTime::from_timestamp(1_893_456_000, 0).expect("time")
    }

    fn call(tenant: &str, at: DateTime<Utc>) -> Call {
        let template = CallTemplate::new(
            "Ada",
            PhoneNumber::parse("+14155552671").expect("phone"),
            "Checkup",
            "Ask how they are",
        );
        NewCall::new(template)
            .at(at)
            .into_call(
                Owner::new(tenant, "u"),
                at - TimeDelta::hours(1),
                &Limits::default(),
            )
            .expect("valid")
    }

    /// An answered call from `start` (hours after t0) lasting `secs` seconds.
    fn answered(start_h: i64, start_m: i64, secs: i64, cost: f64) -> Call {
        let start = t0() + TimeDelta::hours(start_h) + TimeDelta::minutes(start_m);
        let mut c = call("acme", start);
        c.status = CallStatus::Completed;
        c.outcome = Some(CallOutcome::Answered);
        c.attempts = 1;
        c.dial_started_at = Some(start - TimeDelta::seconds(10));
        c.started_at = Some(start);
        c.ended_at = Some(start + TimeDelta::seconds(secs));
        c.finished_at = c.ended_at;
        c.duration_ms = Some(u64::try_from(secs * 1000).expect("positive"));
        c.cost = Some(CallCost {
            total: cost,
            currency: "USD".into(),
            items: BTreeMap::new(),
        });
        c
    }

    fn sample() -> Vec<Call> {
        let mut no_answer = call("acme", t0() + TimeDelta::hours(9));
        no_answer.status = CallStatus::RetryPending;
        no_answer.outcome = Some(CallOutcome::NoAnswer);
        no_answer.attempts = 1;
        no_answer.dial_started_at = Some(t0() + TimeDelta::hours(9));
        let scheduled = call("acme", t0() + TimeDelta::hours(20));
        vec![
            answered(9, 0, 60, 0.10),
            answered(9, 0, 120, 0.20), // overlaps the first
            answered(9, 1, 30, 0.05),  // starts when the first ends: not concurrent with it
            answered(14, 0, 600, 1.00),
            no_answer,
            scheduled,
        ]
    }

    #[test]
    fn counts_durations_hours_peak_and_cost() {
        let a = analyze_calls(&sample(), t0() + TimeDelta::days(1), Tz::UTC);
        assert_eq!(a.total, 6);
        assert_eq!(a.by_status.get(&CallStatus::Completed), Some(&4));
        assert_eq!(a.by_status.get(&CallStatus::RetryPending), Some(&1));
        assert_eq!(a.by_status.get(&CallStatus::Scheduled), Some(&1));
        assert_eq!(a.by_outcome.get("answered"), Some(&4));
        assert_eq!(a.by_outcome.get("no_answer"), Some(&1));
        assert_eq!(a.duration.count, 4);
        // 30, 60, 120, 600 s
        assert_eq!(a.duration.mean_ms, Some(202_500));
        assert_eq!(a.duration.p50_ms, Some(60_000));
        assert_eq!(a.duration.p90_ms, Some(600_000));
        assert_eq!(a.per_hour[9], 4);
        assert_eq!(a.per_hour[14], 1);
        assert_eq!(a.per_hour.iter().sum::<u64>(), 5);
        // 09:00–09:01 two calls; the third starts at 09:01 when the first ends.
        assert_eq!(a.peak_concurrent, 2);
        assert_eq!(a.peak_at, Some(t0() + TimeDelta::hours(9)));
        let usd = a.cost_by_currency.get("USD").copied().expect("usd");
        assert!((usd - 1.35).abs() < 1e-9, "{usd}");
        assert_eq!(a.time_zone, "UTC");
    }

    #[test]
    fn hours_follow_the_time_zone() {
        // 09:00 UTC is 04:00 in New York in January.
        let a = analyze_calls(
            &sample(),
            t0() + TimeDelta::days(1),
            chrono_tz::America::New_York,
        );
        assert_eq!(a.per_hour[4], 4);
        assert_eq!(a.per_hour[9], 1);
        assert_eq!(a.time_zone, "America/New_York");
    }

    #[test]
    fn open_calls_count_until_the_range_end() {
        let mut live = answered(9, 0, 60, 0.0);
        live.status = CallStatus::InProgress;
        live.outcome = None;
        live.ended_at = None;
        live.finished_at = None;
        live.duration_ms = None;
        let late = answered(10, 0, 60, 0.0);
        let calls = [live.clone(), late.clone()];
        // Open until 11:00: overlaps the 10:00 call.
        let a = analyze_calls(&calls, t0() + TimeDelta::hours(11), Tz::UTC);
        assert_eq!(a.peak_concurrent, 2);
        // Open until 09:30: no overlap.
        let a = analyze_calls(&calls, t0() + TimeDelta::minutes(9 * 60 + 30), Tz::UTC);
        assert_eq!(a.peak_concurrent, 1);
    }

    #[test]
    fn empty_input_has_no_stats() {
        let a = analyze_calls(&[], t0(), Tz::UTC);
        assert_eq!(a.total, 0);
        assert_eq!(a.duration, DurationStats::default());
        assert_eq!(a.peak_concurrent, 0);
        assert_eq!(a.peak_at, None);
        assert!(a.cost_by_currency.is_empty());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50), Some(5));
        assert_eq!(percentile(&v, 90), Some(9));
        assert_eq!(percentile(&[7], 90), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[tokio::test]
    async fn tenant_analytics_pages_through_the_range_of_one_tenant() {
        let store = InMemoryCallStore::new();
        // More than one page of calls for acme, plus another tenant's and out-of-range calls.
        for i in 0..(MAX_PAGE_SIZE as i64 + 5) {
            let c = answered(9, 0, 1 + (i % 7), 0.01);
            let mut c2 = c.clone();
            c2.id = crate::CallId::new();
            store.create(&c2).await.expect("create");
        }
        store
            .create(&call("other", t0() + TimeDelta::hours(9)))
            .await
            .expect("create");
        store
            .create(&answered(30, 0, 60, 5.0))
            .await
            .expect("create");
        let a = tenant_analytics(
            &store,
            &TenantId::new("acme"),
            t0(),
            t0() + TimeDelta::days(1),
            t0() + TimeDelta::days(2),
            Tz::UTC,
        )
        .await
        .expect("analytics");
        assert_eq!(a.total, u64::from(MAX_PAGE_SIZE) + 5);
        assert_eq!(a.peak_concurrent, u64::from(MAX_PAGE_SIZE) + 5);
        let usd = a.cost_by_currency.get("USD").copied().expect("usd");
        assert!((usd - 10.05).abs() < 1e-6, "{usd}");

        let err = tenant_analytics(&store, &TenantId::new("acme"), t0(), t0(), t0(), Tz::UTC)
            .await
            .expect_err("empty range");
        assert_eq!(err.kind(), crate::ErrorKind::Validation);
    }

    #[tokio::test]
    async fn ranges_out_of_bounds_are_validation_errors_naming_the_end() {
        let store = InMemoryCallStore::new();
        let tenant = TenantId::new("acme");
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).expect("representable");
        let edge = at(-8_334_601_228_800_000);
        let cases = [
            (edge, t0(), "from"),
            (t0(), edge, "to"),
            (t0(), at(8_210_266_876_799_999), "to"),
            (t0() - TimeDelta::days(93), t0(), "from"),
            (t0(), t0(), "from"),
        ];
        for (from, to, field) in cases {
            let e = tenant_analytics(&store, &tenant, from, to, t0(), Tz::UTC)
                .await
                .expect_err("out of bounds");
            assert_eq!(
                (e.kind(), e.field()),
                (crate::ErrorKind::Validation, Some(field)),
                "{from} .. {to}"
            );
        }
        let ok = tenant_analytics(
            &store,
            &tenant,
            t0() - TimeDelta::days(92),
            t0(),
            t0(),
            Tz::UTC,
        )
        .await
        .expect("92 days is fine");
        assert_eq!(ok.total, 0);
    }

    #[test]
    fn an_activity_time_at_the_edge_of_time_is_not_counted_and_does_not_panic() {
        let mut c = answered(9, 0, 60, 0.1);
        c.started_at = Some(DateTime::<Utc>::MAX_UTC);
        c.dial_started_at = None;
        let a = analyze_calls([&c], t0(), chrono_tz::Asia::Tokyo);
        assert_eq!(a.per_hour.iter().sum::<u64>(), 0);
        assert_eq!(a.total, 1);
    }
}
