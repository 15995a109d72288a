use std::sync::Arc;

use super::*;
use crate::bus::CallUpdate;
use crate::call::CallOutcome;
use crate::ids::TenantId;
use crate::live::{ActivityChange, LiveEvent, LiveScope, LiveTracker};

fn ended(pid: &str) -> ProviderEvent {
    let mut e = snapshot(pid, ProviderCallState::Ended);
    e.outcome = Some(CallOutcome::Answered);
    event(ProviderEventKind::Ended, e)
}

fn started(pid: &str) -> ProviderEvent {
    event(
        ProviderEventKind::Started,
        snapshot(pid, ProviderCallState::InProgress),
    )
}

fn update_of(ev: &LiveEvent) -> (&CallUpdate, ActivityChange, usize) {
    match ev {
        LiveEvent::Update {
            update,
            activity,
            tenant_active,
        } => (update, *activity, *tenant_active),
        other => panic!("expected an update, got {other:?}"),
    }
}

#[tokio::test]
async fn seeds_from_the_store_and_follows_the_bus() {
    let h = Harness::new();
    let a1 = h
        .store_call("acme", CallStatus::InProgress, Some("pc-a1"))
        .await;
    h.store_call("beta", CallStatus::Ringing, Some("pc-b1"))
        .await;
    h.store_call("acme", CallStatus::Completed, Some("pc-a0"))
        .await;
    h.store_call("acme", CallStatus::Scheduled, None).await;

    let tracker = LiveTracker::start(h.calls.clone(), &h.bus, 64)
        .await
        .expect("started");
    let acme = TenantId::new("acme");
    let beta = TenantId::new("beta");
    assert_eq!(tracker.count(&acme), 1);
    assert_eq!(tracker.count(&beta), 1);
    assert_eq!(tracker.total(), 2);
    let acme_calls = tracker.active(&LiveScope::Tenant(acme.clone()));
    assert_eq!(acme_calls.len(), 1);
    assert_eq!(acme_calls[0].call_id, a1.id);
    assert_eq!(tracker.active(&LiveScope::All).len(), 2);

    let mut sub = tracker.subscribe(LiveScope::Tenant(acme.clone()));
    // A new acme call starts ringing, then the old one ends.
    let a2 = h
        .store_call("acme", CallStatus::Ringing, Some("pc-a2"))
        .await;
    h.bus.publish_call(&a2);
    h.ingestor.ingest(&ended("pc-a1")).await.expect("ended");

    let ev = sub.recv().await.expect("event");
    let (u, activity, n) = update_of(&ev);
    assert_eq!(u.call_id(), a2.id);
    assert_eq!(activity, ActivityChange::Started);
    assert_eq!(n, 2);
    let ev = sub.recv().await.expect("event");
    let (u, activity, n) = update_of(&ev);
    assert_eq!(u.call_id(), a1.id);
    assert_eq!(activity, ActivityChange::Ended);
    assert_eq!(n, 1);
    assert_eq!(tracker.count(&acme), 1);
    assert_eq!(
        tracker
            .get(&LiveScope::Tenant(acme.clone()), a2.id)
            .map(|a| a.status),
        Some(CallStatus::Ringing)
    );
    assert!(tracker.get(&LiveScope::Tenant(beta), a2.id).is_none());
}

#[tokio::test]
async fn subscribers_see_only_their_tenant_and_admins_see_all() {
    let h = Harness::new();
    let a = h
        .store_call("acme", CallStatus::Ringing, Some("pc-a"))
        .await;
    let b = h
        .store_call("beta", CallStatus::Ringing, Some("pc-b"))
        .await;
    let tracker = LiveTracker::start(h.calls.clone(), &h.bus, 64)
        .await
        .expect("started");
    let mut acme = tracker.subscribe(LiveScope::Tenant(TenantId::new("acme")));
    let mut admin = tracker.subscribe(LiveScope::All);

    // Beta's call changes first, then acme's.
    h.ingestor.ingest(&started("pc-b")).await.expect("b");
    h.ingestor.ingest(&started("pc-a")).await.expect("a");

    let ev = acme.recv().await.expect("acme event");
    assert_eq!(
        update_of(&ev).0.call_id(),
        a.id,
        "beta's update was filtered out"
    );
    let ev = admin.recv().await.expect("admin event");
    assert_eq!(update_of(&ev).0.call_id(), b.id);
    assert_eq!(update_of(&ev).1, ActivityChange::Changed);
    let ev = admin.recv().await.expect("admin event");
    assert_eq!(update_of(&ev).0.call_id(), a.id);
}

#[tokio::test]
async fn a_slow_subscriber_is_told_it_lagged_and_never_blocks_ingestion() {
    let h = Harness::new();
    let tracker = Arc::new(
        LiveTracker::start(h.calls.clone(), &h.bus, 4)
            .await
            .expect("started"),
    );
    let mut slow = tracker.subscribe(LiveScope::All);
    let mut ids = Vec::new();
    for i in 0..10 {
        let c = h
            .store_call("acme", CallStatus::Ringing, Some(&format!("pc-{i}")))
            .await;
        ids.push(c.id);
        // Ingestion completes although nobody reads the subscription.
        h.ingestor
            .ingest(&started(&format!("pc-{i}")))
            .await
            .expect("ingested");
        // Let the tracker take each update off the bus (the bus is roomy; the
        // subscriber's channel holds 4).
        let t = tracker.clone();
        until("tracker caught up", move || {
            t.count(&TenantId::new("acme")) == i + 1
        })
        .await;
    }
    match slow.recv().await.expect("event") {
        LiveEvent::Lagged { missed } => assert_eq!(missed, 6),
        other => panic!("expected a lag notice, got {other:?}"),
    }
    // Then the latest events, in order.
    for id in &ids[6..] {
        let ev = slow.recv().await.expect("event");
        assert_eq!(update_of(&ev).0.call_id(), *id);
    }
    assert_eq!(tracker.total(), 10);
}

#[tokio::test]
async fn a_tracker_that_lags_behind_the_bus_reloads_from_the_store() {
    let h = Harness::with_bus(crate::bus::UpdateBus::new(2));
    let tracker = LiveTracker::start(h.calls.clone(), &h.bus, 64)
        .await
        .expect("started");
    let mut sub = tracker.subscribe(LiveScope::All);
    // Ten calls become active without the tracker getting a chance to run.
    for i in 0..10 {
        let c = h
            .store_call("acme", CallStatus::Ringing, Some(&format!("pc-{i}")))
            .await;
        h.bus.publish_call(&c);
    }
    loop {
        match sub.recv().await.expect("event") {
            LiveEvent::Resynced => break,
            LiveEvent::Update { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(tracker.count(&TenantId::new("acme")), 10);
}

#[tokio::test]
async fn an_older_update_published_late_does_not_revive_an_ended_call() {
    let h = Harness::new();
    let call = h
        .store_call("acme", CallStatus::Ringing, Some("pc-1"))
        .await;
    let tracker = LiveTracker::start(h.calls.clone(), &h.bus, 64)
        .await
        .expect("started");
    let mut sub = tracker.subscribe(LiveScope::All);
    h.ingestor.ingest(&ended("pc-1")).await.expect("ended");
    h.bus.publish_call(&call); // the version-0 Ringing record, late
    let first = sub.recv().await.expect("event");
    assert_eq!(update_of(&first).1, ActivityChange::Ended);
    let second = sub.recv().await.expect("event");
    assert_eq!(update_of(&second).1, ActivityChange::None);
    assert_eq!(tracker.total(), 0);
}
