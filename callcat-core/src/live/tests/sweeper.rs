use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::bus::CallUpdate;
use crate::call::CallOutcome;
use crate::live::{StaleCallSweeper, SweeperConfig};

const HOUR: Duration = Duration::from_secs(3600);

fn sweeper(h: &Harness, provider: &Arc<ScriptedProvider>) -> StaleCallSweeper {
    StaleCallSweeper::new(
        h.ingestor.clone(),
        provider.clone(),
        SweeperConfig::default(),
    )
    .expect("valid config")
}

#[tokio::test]
async fn a_stale_call_the_provider_still_runs_is_failed_and_hung_up() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h
        .store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    provider.set(snapshot("pc-1", ProviderCallState::InProgress));
    let mut bus = h.bus.subscribe();
    h.clock.advance(HOUR + Duration::from_secs(60));

    let report = sweeper(&h, &provider).sweep_once().await.expect("sweep");
    assert_eq!(report.checked, 1);
    assert_eq!(report.stale, 1);
    assert_eq!(report.failed_stale, 1);
    let stored = h.get(call.id).await;
    assert_eq!(stored.status, CallStatus::Failed);
    assert_eq!(stored.outcome, Some(CallOutcome::Stale));
    let err = stored.last_error.clone().expect("reason");
    assert!(err.starts_with("stale: "), "{err}");
    assert_eq!(stored.finished_at, Some(h.clock_now()));
    assert_eq!(stored.history[0].outcome, Some(CallOutcome::Stale));
    assert_eq!(provider.ended(), vec!["pc-1".to_owned()]);
    assert!(
        matches!(&*bus.try_recv().expect("published"), CallUpdate::Call(c) if c.status == CallStatus::Failed)
    );

    // A second sweep has nothing to do.
    let report = sweeper(&h, &provider).sweep_once().await.expect("sweep");
    assert_eq!(report.checked, 0);
}

#[tokio::test]
async fn a_stale_call_that_ended_at_the_provider_is_ended_through_the_ingestor() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h
        .store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    let mut e = snapshot("pc-1", ProviderCallState::Ended);
    e.outcome = Some(CallOutcome::Answered);
    e.ended_at = Some(h.t0() + TimeDelta::minutes(3));
    e.transcript = Some(vec![seg(SpeakerRole::Agent, "bye")]);
    provider.set(e);
    h.clock.advance(2 * HOUR);

    let report = sweeper(&h, &provider).sweep_once().await.expect("sweep");
    assert_eq!(report.ended_by_provider, 1);
    assert_eq!(report.failed_stale, 0);
    let stored = h.get(call.id).await;
    assert_eq!(stored.status, CallStatus::Completed);
    assert_eq!(stored.ended_at, Some(h.t0() + TimeDelta::minutes(3)));
    assert_eq!(stored.duration_ms, Some(180_000));
    assert!(h.transcript(call.id).await.is_some());
    assert!(provider.ended().is_empty());
    assert_eq!(h.ingestor.metrics().applied, 1);
}

#[tokio::test]
async fn fresh_calls_are_left_alone_and_unreachable_providers_retry_later() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let stale = h
        .store_call("acme", CallStatus::Ringing, Some("pc-old"))
        .await;
    h.clock.advance(HOUR - Duration::from_secs(60));
    let fresh = dialed_call(
        "acme",
        CallStatus::InProgress,
        Some("pc-new"),
        h.clock_now(),
    );
    h.calls.create(&fresh).await.expect("create");
    h.clock.advance(Duration::from_secs(60));
    provider.fail("pc-old", ErrorKind::Unavailable);

    let report = sweeper(&h, &provider).sweep_once().await.expect("sweep");
    assert_eq!(report.checked, 2);
    assert_eq!(report.stale, 1);
    assert_eq!(report.unreachable, 1);
    assert_eq!(h.get(stale.id).await.status, CallStatus::Ringing);
    assert_eq!(h.get(fresh.id).await.status, CallStatus::InProgress);
    assert_eq!(provider.fetches("pc-new"), 0);
}

#[tokio::test]
async fn a_call_the_provider_does_not_know_is_failed_as_stale() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h
        .store_call("acme", CallStatus::Ringing, Some("pc-gone"))
        .await;
    h.clock.advance(2 * HOUR);
    let report = sweeper(&h, &provider).sweep_once().await.expect("sweep");
    assert_eq!(report.failed_stale, 1);
    let stored = h.get(call.id).await;
    assert_eq!(stored.outcome, Some(CallOutcome::Stale));
    assert!(
        stored
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("does not know")),
        "{:?}",
        stored.last_error
    );
}

#[tokio::test]
async fn a_hanging_provider_check_times_out() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h
        .store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    provider.hang("pc-1");
    h.clock.advance(2 * HOUR);
    let s = sweeper(&h, &provider);
    let sweep = tokio::spawn(async move { s.sweep_once().await });
    until("the check is waiting", || h.clock.sleepers() == 1).await;
    h.clock.advance(Duration::from_secs(10));
    let report = sweep.await.expect("joined").expect("sweep");
    assert_eq!(report.unreachable, 1);
    assert_eq!(h.get(call.id).await.status, CallStatus::InProgress);
}

#[tokio::test]
async fn the_background_sweeper_runs_at_its_interval() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h
        .store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    provider.set(snapshot("pc-1", ProviderCallState::InProgress));
    let handle = sweeper(&h, &provider).spawn();
    until("first sweep done", || h.clock.sleepers() == 1).await;
    assert_eq!(provider.fetches("pc-1"), 0, "not stale yet");
    // After an hour the call is stale; the next sweep fails it and hangs up.
    h.clock.advance(HOUR);
    until("hung up", || !provider.ended().is_empty()).await;
    assert_eq!(provider.fetches("pc-1"), 1);
    assert_eq!(h.get(call.id).await.status, CallStatus::Failed);
    handle.shutdown().await;
    assert_eq!(provider.ended(), vec!["pc-1".to_owned()]);
}
