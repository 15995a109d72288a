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
//!
//! Wiring them up (the poller and sweeper also take a [`crate::TelephonyProvider`]):
//!
//! ```
//! use std::sync::Arc;
//!
//! use callcat_core::memory::in_memory_stores;
//! use callcat_core::{
//!     EventIngestor, LiveEvent, LiveScope, LiveTracker, SystemClock, TenantId, UpdateBus, Wakeup,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> callcat_core::Result<()> {
//! let stores = in_memory_stores();
//! let bus = UpdateBus::default();
//! let ingestor = Arc::new(
//!     EventIngestor::from_stores(&stores, bus.clone(), Arc::new(SystemClock))
//!         .with_wakeup(Wakeup::new()),
//! );
//! let tracker = LiveTracker::start(stores.calls.clone(), &bus, 256).await?;
//! let mut feed = tracker.subscribe(LiveScope::Tenant(TenantId::new("acme")));
//!
//! // In the webhook handler, for each verified and parsed event:
//! // let outcome = ingestor.ingest(&event).await?; // answer 2xx with outcome.label()
//! assert_eq!(tracker.count(&TenantId::new("acme")), 0);
//! assert_eq!(ingestor.metrics().applied, 0);
//!
//! // In a Server-Sent Events handler:
//! # drop(bus);
//! # drop(ingestor);
//! # drop(tracker);
//! while let Some(event) = feed.recv().await {
//!     match event {
//!         LiveEvent::Update { update, tenant_active, .. } => { /* send it */ }
//!         LiveEvent::Lagged { .. } | LiveEvent::Resynced => { /* resend tracker.active(..) */ }
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod analytics;
mod ingest;
mod poller;
mod sweeper;
mod tracker;
mod unknown;

#[cfg(test)]
mod tests;

pub use analytics::{
    CallAnalytics, DurationStats, MAX_ANALYTICS_DAYS, analyze_calls, check_analytics_range,
    tenant_analytics,
};
pub use ingest::{EventIngestor, IngestMetrics, IngestOutcome};
pub use poller::{MAX_UNKNOWN_CALL_GRACE, PollerConfig, PollerHandle, TranscriptPoller};
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
