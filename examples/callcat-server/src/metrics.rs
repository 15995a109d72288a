//! Prometheus metrics, hand-written in the text exposition format: dials, attempt
//! outcomes, active calls, the lag from due time to dial, webhook results, HTTP
//! requests. Dials and outcomes are observed on the [`UpdateBus`], so they count
//! what this process's scheduler and ingestion did.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use callcat_core::chrono::{DateTime, Utc};
use callcat_core::{Call, CallId, CallStatus, CallUpdate, UpdateBus};
use tokio::sync::broadcast::error::RecvError;

/// Upper bounds of the due-to-dial lag histogram, in seconds.
pub const LAG_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Default)]
struct Seen {
    attempts: u32,
    /// When the next attempt is due (scheduled time or retry time).
    due_at: Option<DateTime<Utc>>,
    /// Attempt whose outcome was counted.
    outcome_counted: u32,
}

#[derive(Default)]
struct State {
    dials: u64,
    outcomes: BTreeMap<String, u64>,
    lag_buckets: [u64; LAG_BUCKETS.len()],
    lag_count: u64,
    lag_sum: f64,
    webhooks: BTreeMap<(String, String), u64>,
    http: BTreeMap<(String, u16), u64>,
    bus_lagged: u64,
    calls: HashMap<CallId, Seen>,
    /// Recently finished calls, so a late or repeated record is not counted again.
    finished: HashSet<CallId>,
    finished_order: VecDeque<CallId>,
}

/// How many finished calls are remembered.
const FINISHED_MEMORY: usize = 10_000;

/// The server's counters. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one webhook request of `provider` with `result` (`accepted`,
    /// `unauthorized`, `rate_limited`, `invalid`, `error`).
    pub fn webhook(&self, provider: &str, result: &str) {
        *self
            .lock()
            .webhooks
            .entry((provider.to_owned(), result.to_owned()))
            .or_default() += 1;
    }

    /// Counts one HTTP response of a route (its pattern, not the raw path).
    pub fn http(&self, route: &str, status: u16) {
        *self
            .lock()
            .http
            .entry((route.to_owned(), status))
            .or_default() += 1;
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
        if c.attempts > seen.attempts {
            seen.attempts = c.attempts;
            st.dials += 1;
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
                st.lag_count += 1;
                st.lag_sum += lag;
                for (i, b) in LAG_BUCKETS.iter().enumerate() {
                    if lag <= *b {
                        st.lag_buckets[i] += 1;
                    }
                }
            }
        }
        let attempt_over = c.status.is_terminal() || c.status == CallStatus::RetryPending;
        if attempt_over
            && let Some(o) = c.outcome
            && seen.outcome_counted < c.attempts.max(1)
        {
            seen.outcome_counted = c.attempts.max(1);
            *st.outcomes.entry(o.as_str().to_owned()).or_default() += 1;
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
                Err(RecvError::Lagged(n)) => self.lock().bus_lagged += n,
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Subscribes to `bus` now (so nothing published after this call is missed)
    /// and returns the future that follows it.
    pub fn follow_bus(&self, bus: &UpdateBus) -> impl std::future::Future<Output = ()> + use<> {
        self.clone().follow(bus.subscribe())
    }

    /// The exposition text. `active` is the number of active calls per tenant.
    pub fn render(&self, active: &BTreeMap<String, usize>) -> String {
        let st = self.lock();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP callcat_dials_total Dial attempts sent by this process."
        );
        let _ = writeln!(s, "# TYPE callcat_dials_total counter");
        let _ = writeln!(s, "callcat_dials_total {}", st.dials);
        let _ = writeln!(
            s,
            "# HELP callcat_call_outcomes_total Finished attempts by outcome."
        );
        let _ = writeln!(s, "# TYPE callcat_call_outcomes_total counter");
        for (o, n) in &st.outcomes {
            let _ = writeln!(
                s,
                "callcat_call_outcomes_total{{outcome=\"{}\"}} {n}",
                esc(o)
            );
        }
        let _ = writeln!(
            s,
            "# HELP callcat_active_calls Calls being dialed or on the line."
        );
        let _ = writeln!(s, "# TYPE callcat_active_calls gauge");
        let total: usize = active.values().sum();
        let _ = writeln!(s, "callcat_active_calls {total}");
        for (t, n) in active {
            let _ = writeln!(
                s,
                "callcat_active_calls_by_tenant{{tenant=\"{}\"}} {n}",
                esc(t)
            );
        }
        let _ = writeln!(
            s,
            "# HELP callcat_dial_lag_seconds Time from a call's due time to its dial request."
        );
        let _ = writeln!(s, "# TYPE callcat_dial_lag_seconds histogram");
        for (i, b) in LAG_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "callcat_dial_lag_seconds_bucket{{le=\"{b}\"}} {}",
                st.lag_buckets[i]
            );
        }
        let _ = writeln!(
            s,
            "callcat_dial_lag_seconds_bucket{{le=\"+Inf\"}} {}",
            st.lag_count
        );
        let _ = writeln!(s, "callcat_dial_lag_seconds_sum {}", st.lag_sum);
        let _ = writeln!(s, "callcat_dial_lag_seconds_count {}", st.lag_count);
        let _ = writeln!(
            s,
            "# HELP callcat_webhook_requests_total Webhook requests by result."
        );
        let _ = writeln!(s, "# TYPE callcat_webhook_requests_total counter");
        for ((p, r), n) in &st.webhooks {
            let _ = writeln!(
                s,
                "callcat_webhook_requests_total{{provider=\"{}\",result=\"{}\"}} {n}",
                esc(p),
                esc(r)
            );
        }
        let _ = writeln!(
            s,
            "# HELP callcat_http_responses_total HTTP responses by route and status."
        );
        let _ = writeln!(s, "# TYPE callcat_http_responses_total counter");
        for ((route, status), n) in &st.http {
            let _ = writeln!(
                s,
                "callcat_http_responses_total{{route=\"{}\",status=\"{status}\"}} {n}",
                esc(route)
            );
        }
        let _ = writeln!(
            s,
            "# HELP callcat_bus_lagged_total Updates the metrics observer missed."
        );
        let _ = writeln!(s, "# TYPE callcat_bus_lagged_total counter");
        let _ = writeln!(s, "callcat_bus_lagged_total {}", st.bus_lagged);
        s
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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

    #[test]
    fn dials_lag_and_outcomes_are_counted_once() {
        let m = Metrics::default();
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
        let text = m.render(&BTreeMap::from([("t".to_owned(), 2)]));
        assert!(text.contains("callcat_dials_total 1\n"), "{text}");
        assert!(text.contains("callcat_call_outcomes_total{outcome=\"answered\"} 1\n"));
        assert!(text.contains("callcat_dial_lag_seconds_bucket{le=\"0.25\"} 0\n"));
        assert!(text.contains("callcat_dial_lag_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("callcat_dial_lag_seconds_count 1\n"));
        assert!(text.contains("callcat_active_calls 2\n"));
    }
}
