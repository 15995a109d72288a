//! Live calls: provider events in, live views and post-call results out.
//!
//! - [`EventIngestor`] applies provider events (webhooks, poll results) to stored
//!   calls through the lifecycle, idempotently and in any order, and publishes every change.
//! - [`TranscriptPoller`] polls the provider for active calls' transcripts every 2 s,
//!   writes only changes, stops when a call ends and resumes active calls after a restart.
//! - [`LiveTracker`] keeps the active calls per tenant from the [`crate::UpdateBus`] and
//!   fans changes out to tenant-filtered subscribers that are told when they lag.
//! - [`StaleCallSweeper`] ends calls that stayed active too long (1 hour by default),
//!   asking the provider first.
//! - [`analytics`] aggregates a tenant's calls over a time range (counts, durations,
//!   hours of day, peak concurrency, cost).

pub mod analytics;
mod ingest;
mod poller;
mod sweeper;
mod tracker;

#[cfg(test)]
mod tests;

pub use analytics::{CallAnalytics, DurationStats, analyze_calls, tenant_analytics};
pub use ingest::{EventIngestor, IngestMetrics, IngestOutcome};
pub use poller::{PollerConfig, PollerHandle, TranscriptPoller};
pub use sweeper::{StaleCallSweeper, SweepReport, SweeperConfig, SweeperHandle};
pub use tracker::{
    ActiveCall, ActivityChange, LiveEvent, LiveScope, LiveSubscription, LiveTracker,
};

use std::time::Duration;

use crate::clock::Clock;

/// Runs `fut` with a timeout measured on `clock`; `None` if the time ran out first.
async fn with_timeout<T>(
    clock: &dyn Clock,
    timeout: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let deadline = clock.sleep(timeout);
    tokio::select! {
        v = fut => Some(v),
        () = deadline => None,
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
