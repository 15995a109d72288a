//! LISTEN/NOTIFY: the trigger notifies exactly when a call becomes due earlier,
//! and PostgresWakeupListener relays notifications written through another pool
//! (as another process would) into a core Wakeup, surviving a lost connection.

mod common;

use std::time::Duration;

use callcat_core::{CallStatus, CallStore, Wakeup, WorkerId};
use callcat_postgres::sqlx::postgres::PgListener;
use callcat_postgres::{NOTIFY_CHANNEL, PostgresOptions, PostgresStore};
use common::{call_at, owner, secs, t0};

/// Generous upper bound for something that happens at once; never a sleep.
const PATIENCE: Duration = Duration::from_secs(20);

/// A second store over its own pool, as another process would have.
async fn other_process(db: &common::TestDb) -> PostgresStore {
    PostgresStore::connect_with(
        &db.url,
        PostgresOptions::new().schema(&db.schema).max_connections(2),
    )
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_created_in_another_process_wakes_the_listener() {
    let db = db_or_skip!();
    let wakeup = Wakeup::new();
    let mut woken = wakeup.subscribe();
    let listener = db
        .store
        .wakeup_listener(wakeup.clone())
        .await
        .expect("listen");
    assert_eq!(listener.connects(), 1);

    let other = other_process(&db).await;
    other
        .calls()
        .create(&call_at(&owner("t", "u"), t0() + secs(60)))
        .await
        .expect("create");
    tokio::time::timeout(PATIENCE, woken.woken())
        .await
        .expect("woken by the other pool's insert");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trigger_notifies_only_when_a_call_becomes_due_earlier() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    let mut raw = PgListener::connect(&db.url).await.expect("listener");
    raw.listen(NOTIFY_CHANNEL).await.expect("listen");
    // Only this test's schema counts (other tests notify on the same channel).
    let mut next_id = async || loop {
        let n = tokio::time::timeout(PATIENCE, raw.recv())
            .await
            .expect("a notification")
            .expect("recv");
        let v: serde_json::Value = serde_json::from_str(n.payload()).expect("json payload");
        if v["schema"] == db.schema.as_str() {
            assert!(v["next_action_at"].is_string());
            return v["id"].as_str().expect("id").to_owned();
        }
    };

    let o = owner("t", "u");
    let a = call_at(&o, t0() + secs(60));
    calls.create(&a).await.expect("create");
    assert_eq!(next_id().await, a.id.to_string(), "insert notifies");

    // Moved later, claimed (the lease ends after the due time), or made not
    // claimable: silent. Proof: the next notification is the one for `c`.
    let mut later = a.clone();
    later.next_action_at = Some(t0() + secs(120));
    calls.update(&later).await.expect("update");
    let claimed = calls
        .claim_due(t0() + secs(200), 1, &WorkerId::new("w"), t0() + secs(300))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let mut ringing = claimed[0].clone();
    ringing.status = CallStatus::Ringing;
    ringing.next_action_at = None;
    let ringing = calls.update(&ringing).await.expect("update");
    let c = call_at(&o, t0() + secs(900));
    calls.create(&c).await.expect("create");
    assert_eq!(
        next_id().await,
        c.id.to_string(),
        "the writes to a were silent"
    );

    // Claimable again (a retry is planned): notifies.
    let mut retry = ringing.clone();
    retry.status = CallStatus::RetryPending;
    retry.next_action_at = Some(t0() + secs(400));
    let retry = calls.update(&retry).await.expect("update");
    assert_eq!(
        next_id().await,
        a.id.to_string(),
        "becoming claimable notifies"
    );

    // Moved earlier: notifies.
    let mut earlier = retry.clone();
    earlier.next_action_at = Some(t0() + secs(350));
    let earlier = calls.update(&earlier).await.expect("update");
    assert_eq!(next_id().await, a.id.to_string(), "moving earlier notifies");

    // An edit that leaves the due time alone is silent.
    let mut edited = earlier.clone();
    edited.subject = "Edited".into();
    calls.update(&edited).await.expect("update");
    let b = call_at(&o, t0() + secs(900));
    calls.create(&b).await.expect("create");
    assert_eq!(next_id().await, b.id.to_string(), "the edit was silent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_listener_connection_reconnects_and_wakes_once() {
    let db = db_or_skip!();
    let wakeup = Wakeup::new();
    let listener = db
        .store
        .wakeup_listener(wakeup.clone())
        .await
        .expect("listen");
    let mut woken = wakeup.subscribe();
    let pid = listener.backend_pid().expect("connected");

    let (terminated,): (bool,) =
        callcat_postgres::sqlx::query_as("SELECT pg_terminate_backend($1)")
            .bind(pid as i32)
            .fetch_one(db.store.pool())
            .await
            .expect("terminate");
    assert!(terminated);
    tokio::time::timeout(PATIENCE, woken.woken())
        .await
        .expect("woken after reconnecting");
    // The wake comes after the new subscription is active.
    assert_eq!(listener.connects(), 2);
    assert_ne!(listener.backend_pid(), Some(pid));

    // And it still relays.
    other_process(&db)
        .await
        .calls()
        .create(&call_at(&owner("t", "u"), t0()))
        .await
        .expect("create");
    tokio::time::timeout(PATIENCE, woken.woken())
        .await
        .expect("woken by an insert after reconnecting");
}
