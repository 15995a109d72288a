//! Request and consumed-capacity counters, one set per store.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::ConsumedCapacity;

/// Counts the DynamoDB requests a store made and the capacity they consumed
/// (every request asks for `ReturnConsumedCapacity::Total`).
///
/// Capacity is kept in thousandths of a unit, so sums stay exact for the
/// half-unit steps DynamoDB reports.
#[derive(Debug, Default)]
pub struct DynamoMetrics {
    requests: AtomicU64,
    failed_requests: AtomicU64,
    conditional_failures: AtomicU64,
    read_milli_units: AtomicU64,
    write_milli_units: AtomicU64,
}

/// A point-in-time copy of [`DynamoMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Requests sent (successful or not, not counting the SDK's own retries).
    pub requests: u64,
    /// Requests that returned an error (conditional-check failures included).
    pub failed_requests: u64,
    /// Writes refused because their condition did not hold (lost races, CAS conflicts).
    pub conditional_failures: u64,
    /// Read capacity units consumed (GetItem, Query, Scan).
    pub read_capacity_units: f64,
    /// Write capacity units consumed (PutItem, UpdateItem, DeleteItem, transactions, batches).
    pub write_capacity_units: f64,
}

impl MetricsSnapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &MetricsSnapshot) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            failed_requests: self.failed_requests.saturating_sub(earlier.failed_requests),
            conditional_failures: self
                .conditional_failures
                .saturating_sub(earlier.conditional_failures),
            read_capacity_units: self.read_capacity_units - earlier.read_capacity_units,
            write_capacity_units: self.write_capacity_units - earlier.write_capacity_units,
        }
    }
}

/// Whether an operation reads or writes (DynamoDB reports one capacity figure per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Read,
    Write,
}

impl OpKind {
    /// `read` or `write`, the metrics label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
        }
    }
}

impl DynamoMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            failed_requests: self.failed_requests.load(Ordering::Relaxed),
            conditional_failures: self.conditional_failures.load(Ordering::Relaxed),
            read_capacity_units: self.read_milli_units.load(Ordering::Relaxed) as f64 / 1000.0,
            write_capacity_units: self.write_milli_units.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        for c in [
            &self.requests,
            &self.failed_requests,
            &self.conditional_failures,
            &self.read_milli_units,
            &self.write_milli_units,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, conditional: bool) {
        self.failed_requests.fetch_add(1, Ordering::Relaxed);
        if conditional {
            self.conditional_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn consumed<'a>(
        &self,
        kind: OpKind,
        capacity: impl IntoIterator<Item = &'a ConsumedCapacity>,
    ) {
        let milli: u64 = capacity
            .into_iter()
            .map(|c| {
                let units = c.capacity_units().unwrap_or_else(|| {
                    c.read_capacity_units().unwrap_or(0.0) + c.write_capacity_units().unwrap_or(0.0)
                });
                (units.max(0.0) * 1000.0).round() as u64
            })
            .sum();
        let label = kind.label();
        let counter = match kind {
            OpKind::Read => &self.read_milli_units,
            OpKind::Write => &self.write_milli_units,
        };
        counter.fetch_add(milli, Ordering::Relaxed);
        metrics::counter!("callcat_dynamo_requests_total", "kind" => label, "result" => "ok")
            .increment(1);
        metrics::counter!("callcat_dynamo_capacity_milli_units_total", "kind" => label)
            .increment(milli);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_capacity_by_kind_and_diffs_snapshots() {
        let m = DynamoMetrics::new();
        let before = m.snapshot();
        m.request();
        m.consumed(
            OpKind::Read,
            [&ConsumedCapacity::builder().capacity_units(0.5).build()],
        );
        m.request();
        m.failed(true);
        m.consumed(
            OpKind::Write,
            [
                &ConsumedCapacity::builder().capacity_units(2.0).build(),
                &ConsumedCapacity::builder()
                    .write_capacity_units(1.0)
                    .build(),
            ],
        );
        let d = m.snapshot().since(&before);
        assert_eq!(d.requests, 2);
        assert_eq!(d.failed_requests, 1);
        assert_eq!(d.conditional_failures, 1);
        assert_eq!(d.read_capacity_units, 0.5);
        assert_eq!(d.write_capacity_units, 3.0);
        m.reset();
        assert_eq!(m.snapshot(), MetricsSnapshot::default());
    }
}
