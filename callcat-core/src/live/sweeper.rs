//! [`StaleCallSweeper`]: ends calls that stayed active too long (seed 004: 1 hour),
//! after asking the provider whether they are really still going.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ingest::{DEFAULT_CAS_ATTEMPTS, EventIngestor};
use super::{stopped, with_timeout};
use crate::apply::{enter, sync_attempt};
use crate::call::{Call, CallOutcome, CallStatus};
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::{LifecycleEvent, Transition, transition};
use crate::provider::{ProviderEvent, ProviderEventKind, TelephonyProvider};
use crate::store::{ActiveScope, CallStoreExt};

/// How the [`StaleCallSweeper`] decides and paces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweeperConfig {
    /// A call active longer than this (since it was answered, or dialed if never
    /// answered) is stale. Seed 004: 1 hour.
    pub max_active: Duration,
    /// Time between sweeps when running in the background.
    pub interval: Duration,
    /// How long to wait for the provider's answer about one call.
    pub fetch_timeout: Duration,
}

impl Default for SweeperConfig {
    fn default() -> Self {
        SweeperConfig {
            max_active: Duration::from_secs(60 * 60),
            interval: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

impl SweeperConfig {
    /// Checks that every duration is positive.
    pub fn validate(&self) -> Result<()> {
        for (field, d) in [
            ("max_active", self.max_active),
            ("interval", self.interval),
            ("fetch_timeout", self.fetch_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::validation(
                    field,
                    format!("{field} must be positive"),
                ));
            }
        }
        Ok(())
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Active calls looked at.
    pub checked: usize,
    /// Of those, active longer than the maximum.
    pub stale: usize,
    /// Stale calls the provider said had ended; that was applied.
    pub ended_by_provider: usize,
    /// Stale calls failed with outcome `stale`.
    pub failed_stale: usize,
    /// Stale calls left for the next sweep because the provider could not be asked.
    pub unreachable: usize,
    /// Stale calls placed with another provider, left alone.
    pub other_provider: usize,
    /// Stale calls whose handling failed (a store error); logged, retried next sweep.
    pub errors: usize,
    /// Transcripts past their time to live, deleted.
    pub expired_transcripts: u64,
}

/// Finds calls that stayed active longer than [`SweeperConfig::max_active`] and
/// ends them.
///
/// Each stale call (Ringing, InProgress or Canceling; Dispatching calls belong to
/// the scheduler's lease recovery) is checked with the provider. If the provider
/// says it ended, that is applied through the [`EventIngestor`]. Otherwise the call
/// is failed with outcome [`CallOutcome::Stale`] and `last_error` "stale: ...", and
/// the provider is asked to hang up (best effort). If the provider cannot be
/// reached, the call is left for the next sweep.
pub struct StaleCallSweeper {
    ingestor: Arc<EventIngestor>,
    provider: Arc<dyn TelephonyProvider>,
    config: SweeperConfig,
}

impl std::fmt::Debug for StaleCallSweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleCallSweeper")
            .field("provider", &self.provider.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// When a call became active, for staleness.
fn active_since(call: &Call) -> DateTime<Utc> {
    call.started_at
        .or(call.dial_started_at)
        .unwrap_or(call.updated_at)
}

impl StaleCallSweeper {
    /// A sweeper for calls placed with `provider`. Fails with `Validation` if the
    /// config is invalid.
    pub fn new(
        ingestor: Arc<EventIngestor>,
        provider: Arc<dyn TelephonyProvider>,
        config: SweeperConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(StaleCallSweeper {
            ingestor,
            provider,
            config,
        })
    }

    /// Whether `call` is stale at `now`.
    pub fn is_stale(&self, call: &Call, now: DateTime<Utc>) -> bool {
        matches!(
            call.status,
            CallStatus::Ringing | CallStatus::InProgress | CallStatus::Canceling
        ) && crate::time::saturating_add(active_since(call), self.config.max_active) <= now
    }

    /// Sweeps once. Fails only if the store fails.
    pub async fn sweep_once(&self) -> Result<SweepReport> {
        let now = self.ingestor.clock().now();
        let active = self.ingestor.calls().all_active(&ActiveScope::All).await?;
        let mut report = SweepReport {
            checked: active.len(),
            ..SweepReport::default()
        };
        for call in active.iter().filter(|c| self.is_stale(c, now)) {
            report.stale += 1;
            if call
                .provider
                .as_deref()
                .is_some_and(|p| p != self.provider.name())
            {
                report.other_provider += 1;
                continue;
            }
            // One call that cannot be handled never stops the sweep for the others.
            if let Err(e) = self.sweep_call(call, &mut report).await {
                tracing::warn!(call_id = %call.id, error = %e, "a stale call could not be handled; retried next sweep");
                report.errors += 1;
            }
        }
        match self.ingestor.transcripts().delete_expired(now).await {
            Ok(n) => report.expired_transcripts = n,
            Err(e) => tracing::warn!(error = %e, "expired transcripts could not be deleted"),
        }
        Ok(report)
    }

    async fn sweep_call(&self, call: &Call, report: &mut SweepReport) -> Result<()> {
        let clock = self.ingestor.clock().clone();
        let Some(pid) = call.provider_call_id.as_deref() else {
            self.fail_stale(call, "no provider call id to check")
                .await?;
            report.failed_stale += 1;
            return Ok(());
        };
        let fetched = with_timeout(
            clock.as_ref(),
            self.config.fetch_timeout,
            self.provider.fetch_call(pid),
        )
        .await;
        let state = match fetched {
            Some(Ok(mut snap)) if snap.state.is_over() => {
                if snap.call_id.is_none() {
                    snap.call_id = Some(call.id);
                }
                let event = ProviderEvent {
                    provider: self.provider.name().to_owned(),
                    kind: ProviderEventKind::Ended,
                    call: snap,
                    sequence: None,
                    occurred_at: None,
                };
                let outcome = self.ingestor.ingest(&event).await?;
                tracing::info!(call_id = %call.id, result = outcome.label(), "stale call had ended at the provider");
                report.ended_by_provider += 1;
                return Ok(());
            }
            Some(Ok(snap)) => format!("provider still reports {:?}", snap.state),
            Some(Err(e)) if e.kind() == ErrorKind::NotFound => {
                "the provider does not know the call".to_owned()
            }
            Some(Err(e)) => {
                tracing::warn!(call_id = %call.id, error = %e, "could not check a stale call with the provider");
                report.unreachable += 1;
                return Ok(());
            }
            None => {
                tracing::warn!(call_id = %call.id, "checking a stale call with the provider timed out");
                report.unreachable += 1;
                return Ok(());
            }
        };
        if self.fail_stale(call, &state).await? {
            report.failed_stale += 1;
            if let Some(Err(e)) = with_timeout(
                clock.as_ref(),
                self.config.fetch_timeout,
                self.provider.end_call(pid),
            )
            .await
            {
                tracing::warn!(call_id = %call.id, error = %e, "could not hang up a stale call");
            }
        }
        Ok(())
    }

    /// Fails the call as stale unless it moved on meanwhile. Returns whether it did.
    async fn fail_stale(&self, seen: &Call, detail: &str) -> Result<bool> {
        let now = self.ingestor.clock().now();
        let active_for = (now - active_since(seen)).num_minutes();
        let reason = format!("stale: no terminal event after {active_for} min; {detail}");
        let mut changed = false;
        let stored = self
            .ingestor
            .calls()
            .update_with(seen.id, DEFAULT_CAS_ATTEMPTS, |cur| {
                changed = false;
                if cur.provider_call_id != seen.provider_call_id || !self.is_stale(cur, now) {
                    return Ok(None);
                }
                let to = match transition(cur.status, &LifecycleEvent::Fail)? {
                    Transition::To(to) => to,
                    Transition::Ignore(_) => return Ok(None),
                };
                let mut next = cur.clone();
                next.outcome = Some(CallOutcome::Stale);
                next.last_error = Some(reason.clone());
                enter(&mut next, to, now);
                sync_attempt(&mut next);
                if next.attempts > 0 {
                    next.current_attempt_mut().error = Some(reason.clone());
                }
                next.updated_at = now;
                changed = true;
                Ok(Some(next))
            })
            .await?;
        if changed {
            tracing::info!(call_id = %stored.id, "stale call failed");
            self.ingestor.bus().publish_call(&stored);
        }
        Ok(changed)
    }

    /// Sweeps every [`SweeperConfig::interval`] in the background until the handle
    /// is shut down or dropped.
    pub fn spawn(self) -> SweeperHandle {
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let clock = self.ingestor.clock().clone();
            loop {
                match self.sweep_once().await {
                    Ok(r) if r.stale > 0 || r.expired_transcripts > 0 => {
                        tracing::info!(?r, "stale call sweep")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "stale call sweep failed"),
                }
                tokio::select! {
                    () = clock.sleep(self.config.interval) => {}
                    () = stopped(&mut rx) => break,
                }
            }
        });
        SweeperHandle {
            stop: tx,
            task: Some(task),
        }
    }
}

/// A background [`StaleCallSweeper`]. Dropping it stops the sweeps.
#[derive(Debug)]
pub struct SweeperHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SweeperHandle {
    /// Stops sweeping and waits for a running sweep to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SweeperHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
