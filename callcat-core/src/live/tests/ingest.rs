use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use super::*;
use crate::bus::CallUpdate;
use crate::call::{CallAnalysis, CallOutcome};
use crate::live::IngestOutcome;

fn answered_events(t0: DateTime<Utc>) -> Vec<ProviderEvent> {
    let started = t0 + TimeDelta::seconds(5);
    let ended = t0 + TimeDelta::seconds(65);
    let mut s = snapshot("pc-1", ProviderCallState::InProgress);
    s.started_at = Some(started);
    let mut pushed = s.clone();
    pushed.transcript = Some(vec![seg(SpeakerRole::Agent, "Hello Ada")]);
    let mut e = snapshot("pc-1", ProviderCallState::Ended);
    e.started_at = Some(started);
    e.ended_at = Some(ended);
    e.duration_ms = Some(60_000);
    e.outcome = Some(CallOutcome::Answered);
    e.disconnection_reason = Some("user_hangup".into());
    e.transcript = Some(vec![
        seg(SpeakerRole::Agent, "Hello Ada"),
        seg(SpeakerRole::User, "Hi, all good"),
    ]);
    let mut a = e.clone();
    a.analysis = Some(CallAnalysis {
        summary: Some("went well".into()),
        successful: Some(true),
        ..CallAnalysis::default()
    });
    vec![
        event(ProviderEventKind::Started, s),
        event(ProviderEventKind::TranscriptUpdated, pushed),
        event(ProviderEventKind::Ended, e),
        event(ProviderEventKind::Analyzed, a),
    ]
}

/// Runs `events` through a fresh ingestor; returns the stored call (version and
/// updated_at cleared) and the stored segments.
async fn run(events: &[ProviderEvent]) -> (Call, Vec<TranscriptSegment>) {
    let h = Harness::new();
    let mut call = dialed_call("acme", CallStatus::Ringing, Some("pc-1"), h.t0());
    call.id = fixed_id();
    h.calls.create(&call).await.expect("create");
    for e in events {
        h.ingestor.ingest(e).await.expect("ingest");
    }
    let mut stored = h.get(call.id).await;
    stored.version = 0;
    stored.updated_at = h.t0();
    let segments = h
        .transcript(call.id)
        .await
        .map(|t| t.segments)
        .unwrap_or_default();
    (stored, segments)
}

fn fixed_id() -> CallId {
    CallId::from_uuid(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0001,
    ))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn permuted(events: Vec<ProviderEvent>) -> impl Strategy<Value = Vec<ProviderEvent>> {
    let n = events.len();
    (proptest::collection::vec(0..n, 0..6), Just(events)).prop_flat_map(|(dups, events)| {
        let mut all = events.clone();
        all.extend(dups.into_iter().map(|i| events[i].clone()));
        Just(all).prop_shuffle()
    })
}

fn t0() -> DateTime<Utc> {
    ManualClock::at_fixed_start().now()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_order_with_duplicates_ends_in_the_same_stored_record(events in permuted(answered_events(t0()))) {
        let expected = block_on(run(&answered_events(t0())));
        let got = block_on(run(&events));
        prop_assert_eq!(&got.0, &expected.0);
        prop_assert_eq!(&got.1, &expected.1);
        prop_assert_eq!(got.0.status, CallStatus::Completed);
        prop_assert_eq!(got.1.len(), 2);
    }
}

#[tokio::test]
async fn each_result_is_reported_and_counted() {
    let h = Harness::new();
    let call = h
        .store_call("acme", CallStatus::Ringing, Some("pc-1"))
        .await;
    let events = answered_events(h.t0());
    let mut bus = h.bus.subscribe();

    let r = h.ingestor.ingest(&events[0]).await.expect("started");
    let IngestOutcome::Applied(c) = r else {
        panic!("expected applied, got {r:?}")
    };
    assert_eq!(c.status, CallStatus::InProgress);
    let published = bus.try_recv().expect("published");
    assert!(matches!(&*published, CallUpdate::Call(p) if p.status == CallStatus::InProgress));

    // A duplicate changes nothing and publishes nothing.
    let r = h.ingestor.ingest(&events[0]).await.expect("dup");
    assert!(
        matches!(
            r,
            IngestOutcome::Stale { .. } | IngestOutcome::Duplicate { .. }
        ),
        "{r:?}"
    );
    assert!(bus.try_recv().is_err());

    // A transcript push only writes the transcript.
    let r = h.ingestor.ingest(&events[1]).await.expect("push");
    assert!(matches!(r, IngestOutcome::TranscriptUpdated { call_id } if call_id == call.id));
    assert!(
        matches!(&*bus.try_recv().expect("transcript"), CallUpdate::Transcript { segments, .. } if segments.len() == 1)
    );
    assert_eq!(h.transcripts.puts(), 1);
    assert_eq!(h.ingestor.last_transcript_push(call.id), Some(h.t0()));
    // The same push again writes nothing.
    h.ingestor.ingest(&events[1]).await.expect("push again");
    assert_eq!(h.transcripts.puts(), 1);

    let r = h.ingestor.ingest(&events[2]).await.expect("ended");
    assert!(matches!(&r, IngestOutcome::Applied(c) if c.status == CallStatus::Completed));
    assert_eq!(
        h.transcripts.puts(),
        2,
        "the final transcript replaced the live one"
    );
    assert_eq!(h.ingestor.last_transcript_push(call.id), None);

    // A late push with the older, shorter transcript is ignored.
    let r = h.ingestor.ingest(&events[1]).await.expect("late push");
    assert!(
        matches!(
            r,
            IngestOutcome::Stale { .. } | IngestOutcome::Duplicate { .. }
        ),
        "{r:?}"
    );
    assert_eq!(h.transcripts.puts(), 2);
    assert_eq!(
        h.transcript(call.id).await.expect("stored").segments.len(),
        2
    );

    let m = h.ingestor.metrics();
    assert_eq!(m.applied, 3);
    assert_eq!(m.duplicate + m.stale, 3);
    assert_eq!(m.unknown_call, 0);
    assert_eq!(m.rejected, 0);
}

#[tokio::test]
async fn an_unknown_call_is_acknowledged_counted_and_not_stored() {
    let h = Harness::new();
    let mut s = snapshot("pc-nobody", ProviderCallState::Ended);
    s.transcript = Some(vec![seg(SpeakerRole::Agent, "hi")]);
    s.call_id = Some(CallId::new());
    let r = h
        .ingestor
        .ingest(&event(ProviderEventKind::Ended, s))
        .await
        .expect("acknowledged");
    assert!(
        matches!(r, IngestOutcome::UnknownCall { ref provider_call_id } if provider_call_id == "pc-nobody")
    );
    assert_eq!(r.label(), "unknown_call");
    assert!(h.calls.is_empty());
    assert_eq!(h.transcripts.puts(), 0);
    assert_eq!(h.ingestor.metrics().unknown_call, 1);
}

#[tokio::test]
async fn a_webhook_that_outruns_the_dial_response_is_matched_by_our_call_id() {
    let h = Harness::new();
    let mut call = dialed_call("acme", CallStatus::Dispatching, None, h.t0());
    call.attempts = 1;
    call.provider = Some(PROVIDER.into());
    h.calls.create(&call).await.expect("create");
    let mut s = snapshot("pc-9", ProviderCallState::InProgress);
    s.call_id = Some(call.id);
    s.started_at = Some(h.t0());
    let r = h
        .ingestor
        .ingest(&event(ProviderEventKind::Started, s))
        .await
        .expect("ingest");
    let IngestOutcome::Applied(c) = r else {
        panic!("expected applied, got {r:?}")
    };
    assert_eq!(c.status, CallStatus::InProgress);
    assert_eq!(c.provider_call_id.as_deref(), Some("pc-9"));
    assert_eq!(c.history[0].provider_call_id.as_deref(), Some("pc-9"));
}

#[tokio::test]
async fn events_the_lifecycle_forbids_are_rejected_without_a_write() {
    let h = Harness::new();
    let call = h.store_call("acme", CallStatus::Scheduled, None).await;
    let mut s = snapshot("pc-1", ProviderCallState::InProgress);
    s.call_id = Some(call.id);
    s.transcript = Some(vec![seg(SpeakerRole::Agent, "hi")]);
    let r = h
        .ingestor
        .ingest(&event(ProviderEventKind::Started, s))
        .await
        .expect("acknowledged");
    assert!(matches!(r, IngestOutcome::Rejected { call_id: Some(id), .. } if id == call.id));
    assert_eq!(h.get(call.id).await, call);
    assert_eq!(h.transcripts.puts(), 0);

    let empty = snapshot("  ", ProviderCallState::Ended);
    let r = h
        .ingestor
        .ingest(&event(ProviderEventKind::Ended, empty))
        .await
        .expect("acknowledged");
    assert!(matches!(r, IngestOutcome::Rejected { call_id: None, .. }));
    assert_eq!(h.ingestor.metrics().rejected, 2);
}

#[tokio::test]
async fn a_planned_retry_wakes_the_scheduler() {
    let h = Harness::new();
    let call = h
        .store_call("acme", CallStatus::Ringing, Some("pc-1"))
        .await;
    let mut listener = h.wakeup.subscribe();
    let mut s = snapshot("pc-1", ProviderCallState::Ended);
    s.outcome = Some(CallOutcome::NoAnswer);
    s.ended_at = Some(h.t0() + TimeDelta::seconds(30));
    let r = h
        .ingestor
        .ingest(&event(ProviderEventKind::Ended, s))
        .await
        .expect("ingest");
    assert!(matches!(&r, IngestOutcome::Applied(c) if c.status == CallStatus::RetryPending));
    assert!(h.get(call.id).await.next_action_at.is_some());
    tokio::time::timeout(std::time::Duration::from_secs(5), listener.woken())
        .await
        .expect("the scheduler was woken");
}

#[tokio::test]
async fn an_earlier_attempt_keeps_its_data_but_does_not_touch_the_transcript() {
    let h = Harness::new();
    let mut call = dialed_call("acme", CallStatus::Ringing, Some("pc-2"), h.t0());
    // Attempt 1 was pc-1 and ended with no answer.
    call.history[0].provider_call_id = Some("pc-1".into());
    call.history[0].outcome = Some(CallOutcome::NoAnswer);
    call.attempts = 2;
    call.current_attempt_mut().provider_call_id = Some("pc-2".into());
    h.calls.create(&call).await.expect("create");
    h.ingestor
        .store_transcript(
            call.id,
            &call.owner,
            "pc-2",
            &[seg(SpeakerRole::Agent, "attempt two")],
        )
        .await
        .expect("transcript");

    let mut late = snapshot("pc-1", ProviderCallState::Ended);
    late.call_id = Some(call.id);
    late.ended_at = Some(h.t0());
    late.disconnection_reason = Some("dial_no_answer".into());
    late.transcript = Some(vec![seg(SpeakerRole::Agent, "attempt one")]);
    let r = h
        .ingestor
        .ingest(&event(ProviderEventKind::Ended, late))
        .await
        .expect("ingest");
    let IngestOutcome::Applied(c) = r else {
        panic!("expected the history to change, got {r:?}")
    };
    assert_eq!(c.status, CallStatus::Ringing);
    assert_eq!(
        c.history[0].disconnection_reason.as_deref(),
        Some("dial_no_answer")
    );
    let t = h.transcript(call.id).await.expect("transcript");
    assert_eq!(t.segments, vec![seg(SpeakerRole::Agent, "attempt two")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingestion_of_duplicated_events_converges() {
    let h = Arc::new(Harness::new());
    let mut call = dialed_call("acme", CallStatus::Ringing, Some("pc-1"), h.t0());
    call.id = fixed_id();
    h.calls.create(&call).await.expect("create");
    let mut tasks = Vec::new();
    for e in answered_events(h.t0())
        .into_iter()
        .chain(answered_events(h.t0()))
    {
        let ing = h.ingestor.clone();
        tasks.push(tokio::spawn(async move { ing.ingest(&e).await }));
    }
    for t in tasks {
        t.await.expect("joined").expect("ingested");
    }
    let (expected, _) = run(&answered_events(h.t0())).await;
    let mut got = h.get(call.id).await;
    got.version = 0;
    got.updated_at = h.t0();
    assert_eq!(got, expected);
}
