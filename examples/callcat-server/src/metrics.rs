//! Prometheus metrics through the `metrics` facade: dials, attempt outcomes,
//! active calls, the lag from due time to dial, webhook results, HTTP responses.
//! Dials and outcomes are observed on the [`UpdateBus`], so they count what this
//! process's scheduler and ingestion did. A dial is an attempt begun and not
//! taken back: the scheduler begins an attempt before its last check (the
//! per-owner cap) and undoes it when that check defers the call, so an
//! attempt is counted once the call is seen past `Dispatching` with it, never
//! for a claim or an attempt that was undone.
//!
//! The process has one Prometheus recorder, installed as the facade's global
//! recorder the first time a [`Metrics`] is made (the facade takes one per
//! process; tests make many servers in one). `/metrics` renders it, so anything
//! else in the process that records through the facade shows there too, and
//! several servers in one process share their counters.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{Call, CallId, CallStatus, CallUpdate, UpdateBus};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::broadcast::error::RecvError;

/// Upper bounds of the due-to-dial lag histogram, in seconds.
pub const LAG_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Dial attempts sent by this process.
pub const DIALS: &str = "callcat_dials_total";
/// Finished attempts by `outcome`.
pub const OUTCOMES: &str = "callcat_call_outcomes_total";
/// Calls being dialed or on the line (gauge).
pub const ACTIVE: &str = "callcat_active_calls";
/// The same per `tenant`, only when tenant labels are enabled (gauge).
pub const ACTIVE_BY_TENANT: &str = "callcat_active_calls_by_tenant";
/// Time from a call's due time to its dial request (histogram, seconds).
pub const DIAL_LAG: &str = "callcat_dial_lag_seconds";
/// Webhook requests by `provider` and `result`.
pub const WEBHOOKS: &str = "callcat_webhook_requests_total";
/// HTTP responses by `route` (the pattern) and `status`.
pub const HTTP: &str = "callcat_http_responses_total";
/// Updates the metrics observer missed (it fell behind the bus).
pub const BUS_LAGGED: &str = "callcat_bus_lagged_total";

/// Histogram observations between two upkeeps of the recorder (upkeep bounds
/// the memory of observations no scrape has collected yet).
const UPKEEP_EVERY: u64 = 1024;

/// The process's Prometheus recorder, installed globally on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DIAL_LAG.to_owned()), &LAG_BUCKETS)
            .expect("LAG_BUCKETS is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed in this process; /metrics shows nothing of callcat's"
            );
        }
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(DIALS, "Dial attempts sent by this process.");
    metrics::describe_counter!(OUTCOMES, "Finished attempts by outcome.");
    metrics::describe_gauge!(ACTIVE, "Calls being dialed or on the line.");
    metrics::describe_gauge!(
        ACTIVE_BY_TENANT,
        "Calls being dialed or on the line, per tenant."
    );
    metrics::describe_histogram!(
        DIAL_LAG,
        metrics::Unit::Seconds,
        "Time from a call's due time to its dial request."
    );
    metrics::describe_counter!(WEBHOOKS, "Webhook requests by result.");
    metrics::describe_counter!(HTTP, "HTTP responses by route and status.");
    metrics::describe_counter!(BUS_LAGGED, "Updates the metrics observer missed.");
    // Present from the start, at zero, so a scrape can tell "none" from "not exported".
    metrics::counter!(DIALS).increment(0);
    metrics::counter!(BUS_LAGGED).increment(0);
    metrics::gauge!(ACTIVE).set(0.0);
}

#[derive(Default)]
struct Seen {
    /// Attempts counted as dials.
    attempts: u32,
    /// When the next attempt is due (scheduled time or retry time).
    due_at: Option<DateTime<Utc>>,
    /// Attempt whose outcome was counted.
    outcome_counted: u32,
}

#[derive(Default)]
struct State {
    calls: HashMap<CallId, Seen>,
    /// Recently finished calls, so a late or repeated record is not counted again.
    finished: HashSet<CallId>,
    finished_order: VecDeque<CallId>,
    /// Tenants whose gauge was last set above zero (set back to zero when they
    /// have no active call left).
    tenants_shown: BTreeSet<String>,
    lag_observations: u64,
}

/// How many finished calls are remembered.
const FINISHED_MEMORY: usize = 10_000;

/// The server's counters, recorded through the `metrics` facade. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
    handle: &'static PrometheusHandle,
    tenant_labels: bool,
}

impl Default for Metrics {
    /// Without tenant labels.
    fn default() -> Self {
        Metrics::new(false)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("tenant_labels", &self.tenant_labels)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics on the process's recorder (installed now if it is not yet).
    /// `tenant_labels` adds the per-tenant active-calls gauge (tenant names as
    /// label values: many series, and the names are the customers').
    pub fn new(tenant_labels: bool) -> Self {
        Metrics {
            state: Arc::default(),
            handle: prometheus(),
            tenant_labels,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one webhook request of `provider` with `result` (`accepted`,
    /// `unauthorized`, `rate_limited`, `invalid`, `error`).
    pub fn webhook(&self, provider: &str, result: &str) {
        metrics::counter!(WEBHOOKS, "provider" => provider.to_owned(), "result" => result.to_owned())
            .increment(1);
    }

    /// Counts one HTTP response of a route (its pattern, not the raw path).
    pub fn http(&self, route: &str, status: u16) {
        metrics::counter!(HTTP, "route" => route.to_owned(), "status" => status.to_string())
            .increment(1);
    }

    /// Observes one call record from the bus.
    pub fn observe_call(&self, c: &Call) {
        let mut st = self.lock();
        let st = &mut *st;
        if st.finished.contains(&c.id) {
            return;
        }
        let seen = st.calls.entry(c.id).or_default();
        if matches!(c.status, CallStatus::Scheduled | CallStatus::RetryPending) {
            seen.due_at = c.next_action_at;
        }
        // While Dispatching, the attempt may still be undone (owner at cap).
        if c.attempts > seen.attempts && c.status != CallStatus::Dispatching {
            metrics::counter!(DIALS).increment(u64::from(c.attempts - seen.attempts));
            seen.attempts = c.attempts;
            let due = seen.due_at.unwrap_or(c.scheduled_for);
            let dialed = c
                .history
                .iter()
                .rev()
                .find(|a| a.number == c.attempts)
                .and_then(|a| a.dialed_at)
                .or(c.dial_started_at);
            if let Some(dialed) = dialed {
                let lag = (dialed - due).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!(DIAL_LAG).record(lag);
                st.lag_observations += 1;
                if st.lag_observations.is_multiple_of(UPKEEP_EVERY) {
                    self.handle.run_upkeep();
                }
            }
        }
        let attempt_over = c.status.is_terminal() || c.status == CallStatus::RetryPending;
        if attempt_over
            && let Some(o) = c.outcome
            && seen.outcome_counted < c.attempts.max(1)
        {
            seen.outcome_counted = c.attempts.max(1);
            metrics::counter!(OUTCOMES, "outcome" => o.as_str().to_owned()).increment(1);
        }
        if c.status.is_terminal() {
            st.calls.remove(&c.id);
            st.finished.insert(c.id);
            st.finished_order.push_back(c.id);
            if st.finished_order.len() > FINISHED_MEMORY
                && let Some(old) = st.finished_order.pop_front()
            {
                st.finished.remove(&old);
            }
        }
    }

    /// Follows the bus until it closes (spawn it).
    pub async fn follow(self, mut rx: tokio::sync::broadcast::Receiver<Arc<CallUpdate>>) {
        loop {
            match rx.recv().await {
                Ok(u) => {
                    if let CallUpdate::Call(c) = &*u {
                        self.observe_call(c);
                    }
                }
                Err(RecvError::Lagged(n)) => metrics::counter!(BUS_LAGGED).increment(n),
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Subscribes to `bus` now (so nothing published after this call is missed)
    /// and returns the future that follows it.
    pub fn follow_bus(&self, bus: &UpdateBus) -> impl std::future::Future<Output = ()> + use<> {
        self.clone().follow(bus.subscribe())
    }

    /// The exposition text of the process's recorder, after setting the
    /// active-calls gauges from `active` (active calls per tenant).
    pub fn render(&self, active: &BTreeMap<String, usize>) -> String {
        let total: usize = active.values().sum();
        metrics::gauge!(ACTIVE).set(total as f64);
        if self.tenant_labels {
            let mut st = self.lock();
            for gone in st.tenants_shown.iter().filter(|t| !active.contains_key(*t)) {
                metrics::gauge!(ACTIVE_BY_TENANT, "tenant" => gone.clone()).set(0.0);
            }
            for (tenant, n) in active {
                metrics::gauge!(ACTIVE_BY_TENANT, "tenant" => tenant.clone()).set(*n as f64);
            }
            st.tenants_shown = active.keys().cloned().collect();
        }
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use callcat_core::chrono::TimeDelta;
    use callcat_core::{CallOutcome, CallTemplate, Limits, NewCall, Owner, PhoneNumber};

    use super::*;

    fn call() -> Call {
        let now = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        NewCall::new(CallTemplate::new(
            "Ada",
            PhoneNumber::parse("+14155552671").unwrap(),
            "s",
            "p",
        ))
        .into_call(Owner::new("t", "u"), now, &Limits::default())
        .unwrap()
    }

    type Scrape = openmetrics_parser::MetricsExposition<
        openmetrics_parser::PrometheusType,
        openmetrics_parser::PrometheusValue,
    >;

    fn scrape(m: &Metrics, active: &BTreeMap<String, usize>) -> Scrape {
        let text = m.render(active);
        openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("{e:?}\n{text}"))
    }

    /// The sum of the counter or gauge series `name` whose labels include `labels`.
    fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some(f) = s.families.get(name) else {
            return 0.0;
        };
        f.iter_samples()
            .filter(|x| {
                let set = x.get_labelset().unwrap();
                labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
            .map(|x| match &x.value {
                openmetrics_parser::PrometheusValue::Counter(c) => c.value.as_f64(),
                openmetrics_parser::PrometheusValue::Gauge(n) => n.as_f64(),
                other => panic!("{name} is {other:?}"),
            })
            .sum()
    }

    /// The lag histogram's count and its count at bucket `le`.
    fn lag(s: &Scrape, le: f64) -> (u64, f64) {
        let Some(f) = s.families.get(DIAL_LAG) else {
            return (0, 0.0);
        };
        match f.iter_samples().next().map(|x| &x.value) {
            Some(openmetrics_parser::PrometheusValue::Histogram(h)) => (
                h.count.unwrap_or(0),
                h.buckets
                    .iter()
                    .find(|b| b.upper_bound == le)
                    .map_or(0.0, |b| b.count.as_f64()),
            ),
            other => panic!("{DIAL_LAG} is {other:?}"),
        }
    }

    /// Rendering sets the shared active-calls gauge: the tests that render take
    /// turns, so each reads back what it set.
    fn rendering() -> MutexGuard<'static, ()> {
        static RENDER: Mutex<()> = Mutex::new(());
        RENDER.lock().unwrap_or_else(|p| p.into_inner())
    }

    // The recorder is the process's, shared with the other tests of this binary;
    // only this test observes calls, so the differences are exact.
    #[test]
    fn dials_lag_and_outcomes_are_counted_once() {
        let _one_at_a_time = rendering();
        let m = Metrics::default();
        let before = scrape(&m, &BTreeMap::new());
        let mut c = call();
        m.observe_call(&c);
        c.status = CallStatus::Ringing;
        c.attempts = 1;
        c.current_attempt_mut().dialed_at = Some(c.scheduled_for + TimeDelta::milliseconds(300));
        m.observe_call(&c);
        m.observe_call(&c);
        c.status = CallStatus::Completed;
        c.outcome = Some(CallOutcome::Answered);
        m.observe_call(&c);
        m.observe_call(&c);
        let after = scrape(&m, &BTreeMap::from([("t-unlabelled".to_owned(), 2)]));
        let diff = |name: &str, labels: &[(&str, &str)]| {
            value(&after, name, labels) - value(&before, name, labels)
        };
        assert_eq!(diff(DIALS, &[]), 1.0);
        assert_eq!(diff(OUTCOMES, &[("outcome", "answered")]), 1.0);
        assert_eq!(lag(&after, 0.25).1 - lag(&before, 0.25).1, 0.0);
        assert_eq!(lag(&after, 0.5).1 - lag(&before, 0.5).1, 1.0);
        assert_eq!(lag(&after, 0.5).0 - lag(&before, 0.5).0, 1);
        assert_eq!(value(&after, ACTIVE, &[]), 2.0);
        assert!(
            after
                .families
                .get(ACTIVE_BY_TENANT)
                .is_none_or(|f| f.iter_samples().all(|x| x
                    .get_labelset()
                    .unwrap()
                    .get_label_value("tenant")
                    != Some("t-unlabelled"))),
            "no tenant label unless enabled"
        );
        assert_eq!(
            after.families[DIALS].help,
            "Dial attempts sent by this process."
        );
    }

    // Claims, and attempts begun then undone (the per-owner cap deferred the
    // call), are not dials; the dial that follows is counted once.
    #[test]
    fn claims_and_undone_attempts_are_not_dials() {
        let _one_at_a_time = rendering();
        let m = Metrics::default();
        let before = scrape(&m, &BTreeMap::new());
        let scheduled = call();
        let mut c = scheduled.clone();
        m.observe_call(&c);
        // Claimed.
        c.status = CallStatus::Dispatching;
        m.observe_call(&c);
        // Attempt 1 begun, then undone: deferred because the owner is at its cap.
        c.attempts = 1;
        c.current_attempt_mut().dialed_at = Some(c.scheduled_for);
        m.observe_call(&c);
        let mut deferred = scheduled.clone();
        deferred.next_action_at = Some(c.scheduled_for + TimeDelta::seconds(30));
        m.observe_call(&deferred);
        let mid = scrape(&m, &BTreeMap::new());
        assert_eq!(value(&mid, DIALS, &[]) - value(&before, DIALS, &[]), 0.0);
        // Claimed again and dialed: one dial.
        let mut c = deferred.clone();
        c.status = CallStatus::Dispatching;
        m.observe_call(&c);
        c.attempts = 1;
        c.current_attempt_mut().dialed_at = Some(c.scheduled_for + TimeDelta::seconds(30));
        m.observe_call(&c);
        c.status = CallStatus::Ringing;
        m.observe_call(&c);
        c.status = CallStatus::Completed;
        c.outcome = Some(CallOutcome::Answered);
        m.observe_call(&c);
        // Another call begun, undone, then canceled: never dialed.
        let mut other = call();
        other.status = CallStatus::Dispatching;
        other.attempts = 1;
        m.observe_call(&other);
        let mut other = call_with_id(other.id);
        m.observe_call(&other);
        other.status = CallStatus::Canceled;
        m.observe_call(&other);
        let after = scrape(&m, &BTreeMap::new());
        assert_eq!(value(&after, DIALS, &[]) - value(&before, DIALS, &[]), 1.0);
    }

    fn call_with_id(id: CallId) -> Call {
        let mut c = call();
        c.id = id;
        c
    }

    #[test]
    fn tenant_gauges_only_when_enabled_and_back_to_zero_when_idle() {
        let _one_at_a_time = rendering();
        let m = Metrics::new(true);
        let s = scrape(&m, &BTreeMap::from([("tenant-a".to_owned(), 3)]));
        assert_eq!(value(&s, ACTIVE_BY_TENANT, &[("tenant", "tenant-a")]), 3.0);
        let s = scrape(&m, &BTreeMap::from([("tenant-b".to_owned(), 1)]));
        assert_eq!(value(&s, ACTIVE_BY_TENANT, &[("tenant", "tenant-a")]), 0.0);
        assert_eq!(value(&s, ACTIVE_BY_TENANT, &[("tenant", "tenant-b")]), 1.0);
        assert_eq!(value(&s, ACTIVE, &[]), 1.0);
    }
}
