use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::call::CallOutcome;
use crate::live::{PollerConfig, PollerHandle, TranscriptPoller};
use crate::store::CallStoreExt;

fn in_progress(pid: &str, lines: &[&str]) -> ProviderCall {
    let mut s = snapshot(pid, ProviderCallState::InProgress);
    s.transcript = Some(lines.iter().map(|l| seg(SpeakerRole::User, l)).collect());
    s
}

async fn start(
    h: &Harness,
    provider: &Arc<ScriptedProvider>,
    config: PollerConfig,
) -> PollerHandle {
    TranscriptPoller::new(h.ingestor.clone(), provider.clone(), config)
        .expect("valid config")
        .start()
        .await
        .expect("started")
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn config_is_validated() {
    let bad = [
        PollerConfig {
            interval: Duration::ZERO,
            ..PollerConfig::default()
        },
        PollerConfig {
            max_concurrent_fetches: 0,
            ..PollerConfig::default()
        },
        PollerConfig {
            max_backoff: Duration::from_millis(1),
            ..PollerConfig::default()
        },
    ];
    for c in bad {
        assert_eq!(
            c.validate().expect_err("invalid").kind(),
            ErrorKind::Validation
        );
    }
    assert_eq!(PollerConfig::default().interval, 2 * SEC);
}

#[tokio::test]
async fn polls_at_the_interval_and_writes_only_changes() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h
        .store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    provider.set(in_progress("pc-1", &["hello"]));
    let poller = start(&h, &provider, PollerConfig::default()).await;
    assert_eq!(poller.tracked(), vec![call.id]);

    until("first poll", || {
        provider.fetches("pc-1") == 1 && h.clock.sleepers() == 1
    })
    .await;
    assert_eq!(h.transcripts.puts(), 1);
    let t = h.transcript(call.id).await.expect("written");
    assert_eq!(t.segments, vec![seg(SpeakerRole::User, "hello")]);
    assert_eq!(t.provider_call_id.as_deref(), Some("pc-1"));

    // Not before the interval.
    h.clock.advance(SEC);
    settle().await;
    assert_eq!(provider.fetches("pc-1"), 1);

    // At the interval; unchanged transcript: no write.
    h.clock.advance(SEC);
    until("second poll", || {
        provider.fetches("pc-1") == 2 && h.clock.sleepers() == 1
    })
    .await;
    assert_eq!(h.transcripts.puts(), 1);

    // Changed transcript: one write.
    provider.set(in_progress("pc-1", &["hello", "how are you"]));
    h.clock.advance(2 * SEC);
    until("third poll", || {
        provider.fetches("pc-1") == 3 && h.clock.sleepers() == 1
    })
    .await;
    assert_eq!(h.transcripts.puts(), 2);
    assert_eq!(h.transcript(call.id).await.expect("t").segments.len(), 2);
    poller.shutdown().await;
}

#[tokio::test]
async fn stops_when_the_provider_says_the_call_ended_and_ends_the_record() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h
        .store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    provider.set(in_progress("pc-1", &["hello"]));
    let poller = start(&h, &provider, PollerConfig::default()).await;
    until("first poll", || {
        provider.fetches("pc-1") == 1 && h.clock.sleepers() == 1
    })
    .await;

    let mut ended = in_progress("pc-1", &["hello", "bye"]);
    ended.state = ProviderCallState::Ended;
    ended.outcome = Some(CallOutcome::Answered);
    ended.ended_at = Some(h.t0() + TimeDelta::seconds(2));
    provider.set(ended);
    h.clock.advance(2 * SEC);
    until("tracking stopped", || poller.tracked().is_empty()).await;
    let stored = h.get(call.id).await;
    assert_eq!(stored.status, CallStatus::Completed);
    assert_eq!(stored.outcome, Some(CallOutcome::Answered));
    assert_eq!(h.transcript(call.id).await.expect("t").segments.len(), 2);

    h.clock.advance(10 * SEC);
    settle().await;
    assert_eq!(provider.fetches("pc-1"), 2);
    poller.shutdown().await;
}

#[tokio::test]
async fn stops_when_the_bus_shows_the_call_ended() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h
        .store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    provider.set(in_progress("pc-1", &["hello"]));
    let poller = start(&h, &provider, PollerConfig::default()).await;
    until("first poll", || {
        provider.fetches("pc-1") == 1 && h.clock.sleepers() == 1
    })
    .await;

    // The call_ended webhook arrives.
    let mut e = snapshot("pc-1", ProviderCallState::Ended);
    e.outcome = Some(CallOutcome::Answered);
    h.ingestor
        .ingest(&event(ProviderEventKind::Ended, e))
        .await
        .expect("ingest");
    until("tracking stopped", || poller.tracked().is_empty()).await;
    h.clock.advance(10 * SEC);
    settle().await;
    assert_eq!(provider.fetches("pc-1"), 1);
    assert_eq!(h.get(call.id).await.status, CallStatus::Completed);
    poller.shutdown().await;
}

#[tokio::test]
async fn starts_polling_a_call_that_becomes_ringing_and_records_the_answer() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h.store_call("acme", CallStatus::Dispatching, None).await;
    let poller = start(&h, &provider, PollerConfig::default()).await;
    assert!(poller.tracked().is_empty());

    provider.set(snapshot("pc-1", ProviderCallState::Ringing));
    // The scheduler's dial was accepted.
    let ringing = h
        .calls
        .update_with(call.id, 3, |c| {
            let mut c = c.clone();
            c.status = CallStatus::Ringing;
            c.attempts = 1;
            c.provider = Some(PROVIDER.into());
            c.provider_call_id = Some("pc-1".into());
            Ok(Some(c))
        })
        .await
        .expect("update");
    h.bus.publish_call(&ringing);
    until("first poll", || {
        provider.fetches("pc-1") == 1 && h.clock.sleepers() == 1
    })
    .await;
    assert_eq!(poller.tracked(), vec![call.id]);

    // The provider reports the call answered; the record follows.
    let mut answered = in_progress("pc-1", &["hi"]);
    answered.started_at = Some(h.t0() + TimeDelta::seconds(2));
    provider.set(answered);
    h.clock.advance(2 * SEC);
    until("second poll", || {
        provider.fetches("pc-1") == 2 && h.clock.sleepers() == 1
    })
    .await;
    let stored = h.get(call.id).await;
    assert_eq!(stored.status, CallStatus::InProgress);
    assert_eq!(stored.started_at, Some(h.t0() + TimeDelta::seconds(2)));
    assert_eq!(h.transcripts.puts(), 1);
    poller.shutdown().await;
}

#[tokio::test]
async fn resumes_active_calls_after_a_restart_without_rewriting() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let a = h
        .store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    let b = h
        .store_call("beta", CallStatus::Ringing, Some("pc-2"))
        .await;
    h.store_call("acme", CallStatus::Completed, Some("pc-3"))
        .await;
    provider.set(in_progress("pc-1", &["hello"]));
    provider.set(snapshot("pc-2", ProviderCallState::Ringing));

    let first = start(&h, &provider, PollerConfig::default()).await;
    until("first polls", || {
        provider.fetches("pc-1") == 1 && provider.fetches("pc-2") == 1 && h.clock.sleepers() == 2
    })
    .await;
    assert_eq!(h.transcripts.puts(), 1);
    first.shutdown().await;
    assert_eq!(h.clock.sleepers(), 0);

    // A new process starts later.
    h.clock.advance(30 * SEC);
    let second = start(&h, &provider, PollerConfig::default()).await;
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(second.tracked(), expected);
    until("resumed", || {
        provider.fetches("pc-1") == 2 && provider.fetches("pc-2") == 2 && h.clock.sleepers() == 2
    })
    .await;
    assert_eq!(provider.fetches("pc-3"), 0);
    assert_eq!(
        h.transcripts.puts(),
        1,
        "the unchanged transcript is not rewritten"
    );
    second.shutdown().await;
}

#[tokio::test]
async fn a_resumed_herd_is_spread_over_one_interval() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let pids = ["pc-1", "pc-2", "pc-3", "pc-4"];
    for pid in pids {
        h.store_call("acme", CallStatus::InProgress, Some(pid))
            .await;
        provider.set(in_progress(pid, &["hello"]));
    }
    // More calls than may be fetched at once: first polls at 0, 0.5, 1 and 1.5 s.
    let config = PollerConfig {
        max_concurrent_fetches: 2,
        ..PollerConfig::default()
    };
    let poller = start(&h, &provider, config).await;
    let polled = || pids.iter().map(|p| provider.fetches(p)).sum::<usize>();
    until("the first poll", || {
        polled() == 1 && h.clock.sleepers() == 4
    })
    .await;
    for expected in 2..=4 {
        h.clock.advance(Duration::from_millis(500));
        until("the next first poll", || {
            polled() == expected && h.clock.sleepers() == 4
        })
        .await;
        settle().await;
        assert_eq!(polled(), expected);
    }
    // Then each at its own 2 s interval.
    h.clock.advance(Duration::from_millis(500));
    until("the second round begins", || polled() == 5).await;
    poller.shutdown().await;
}

#[tokio::test]
async fn a_hanging_fetch_delays_no_other_call_and_times_out() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    h.store_call("acme", CallStatus::InProgress, Some("pc-slow"))
        .await;
    h.store_call("acme", CallStatus::InProgress, Some("pc-fast"))
        .await;
    provider.hang("pc-slow");
    provider.set(in_progress("pc-slow", &["a"]));
    provider.set(in_progress("pc-fast", &["b"]));
    let config = PollerConfig {
        fetch_timeout: 5 * SEC,
        ..PollerConfig::default()
    };
    let poller = start(&h, &provider, config).await;
    // The slow fetch waits on its timeout; the fast call sleeps until its next poll.
    until("both fetched", || {
        provider.fetches("pc-slow") == 1
            && provider.fetches("pc-fast") == 1
            && h.clock.sleepers() == 2
    })
    .await;
    for n in 2..=3 {
        h.clock.advance(2 * SEC);
        until("fast call polled on time", || {
            provider.fetches("pc-fast") == n && h.clock.sleepers() == 2
        })
        .await;
        assert_eq!(provider.fetches("pc-slow"), 1);
    }
    // t = 4 s. At 5 s the slow fetch times out; it backs off (2 s * 2 = 4 s).
    h.clock.advance(SEC);
    assert_eq!(h.clock.sleepers(), 1, "the timeout fired");
    until("slow call backed off", || h.clock.sleepers() == 2).await;
    assert_eq!(provider.fetches("pc-slow"), 1);
    h.clock.advance(SEC);
    until("fast at 6 s", || provider.fetches("pc-fast") == 4).await;
    h.clock.advance(3 * SEC);
    until("slow retried at 9 s", || provider.fetches("pc-slow") == 2).await;
    poller.shutdown().await;
}

#[tokio::test]
async fn errors_back_off_per_call() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    h.store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    provider.fail("pc-1", ErrorKind::Unavailable);
    let poller = start(&h, &provider, PollerConfig::default()).await;
    until("first poll", || {
        provider.fetches("pc-1") == 1 && h.clock.sleepers() == 1
    })
    .await;
    // 1 failure: 4 s; 2 failures: 8 s.
    h.clock.advance(2 * SEC);
    settle().await;
    assert_eq!(provider.fetches("pc-1"), 1);
    h.clock.advance(2 * SEC);
    until("second poll at 4 s", || {
        provider.fetches("pc-1") == 2 && h.clock.sleepers() == 1
    })
    .await;
    assert_eq!(
        h.clock.next_deadline(),
        Some(h.t0() + TimeDelta::seconds(12))
    );
    poller.shutdown().await;
}

#[tokio::test]
async fn pushed_transcripts_suppress_polling_for_a_while() {
    let h = Harness::new();
    let provider = Arc::new(ScriptedProvider::default());
    let call = h
        .store_call("acme", CallStatus::InProgress, Some("pc-1"))
        .await;
    provider.set(in_progress("pc-1", &["hello"]));
    let config = PollerConfig {
        push_quiet_period: 10 * SEC,
        ..PollerConfig::default()
    };
    let poller = start(&h, &provider, config).await;
    until("first poll", || {
        provider.fetches("pc-1") == 1 && h.clock.sleepers() == 1
    })
    .await;

    // At 1 s the provider pushes a longer transcript; it is applied directly.
    h.clock.advance(SEC);
    let pushed = in_progress("pc-1", &["hello", "pushed"]);
    h.ingestor
        .ingest(&event(ProviderEventKind::TranscriptUpdated, pushed))
        .await
        .expect("push");
    assert_eq!(h.transcript(call.id).await.expect("t").segments.len(), 2);

    // No polls until 10 s after the push.
    for _ in 0..9 {
        h.clock.advance(SEC);
        settle().await;
    }
    assert_eq!(provider.fetches("pc-1"), 1);
    h.clock.advance(SEC);
    until("polling resumed at 11 s", || provider.fetches("pc-1") == 2).await;
    poller.shutdown().await;
}
