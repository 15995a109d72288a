//! DynamoDB-specific behaviour beyond the conformance suite: claim races, large
//! transcripts, provider-id uniqueness, counters, errors, table layout.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use callcat_core::testing::fixtures::{at, owner, scheduled_call, t0};
use callcat_core::{
    CallId, CallStatus, CallStore, Created, ErrorKind, SpeakerRole, Transcript, TranscriptSegment,
    TranscriptStore, WorkerId,
};
use callcat_dynamo::DynamoStores;
use common::test_stores;

/// 8 claimers race over 300 due calls (and 20 not yet due): each due call is
/// claimed exactly once, nothing early is taken, and the due index ends empty up
/// to the leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_take_each_due_call_exactly_once() {
    let Some(s) = test_stores().await else { return };
    let store: Arc<dyn CallStore> = s.calls.clone();
    let o = owner("race");
    let mut due = HashSet::new();
    for i in 0..300i64 {
        let c = scheduled_call(&o, at(i % 40));
        store.create(&c).await.expect("create");
        due.insert(c.id);
    }
    for i in 0..20i64 {
        store
            .create(&scheduled_call(&o, at(10_000 + i)))
            .await
            .expect("create later");
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = WorkerId::new(format!("w{w}"));
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_due(at(100), 7, &worker, at(5_000))
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                for c in got {
                    assert_eq!(c.status, CallStatus::Dispatching);
                    assert_eq!(c.lease.as_ref().map(|l| &l.worker), Some(&worker));
                    mine.push(c.id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("claimer"));
    }
    let unique: HashSet<CallId> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a call was claimed twice");
    assert_eq!(unique, due, "a due call was missed or an early one taken");
    // What is left claimable: the 20 later calls and the leases, due at 5_000.
    assert_eq!(store.next_due_at().await.expect("next"), Some(at(5_000)));
    let stats = s.calls.metrics_snapshot();
    assert!(stats.conditional_failures <= stats.failed_requests);
}

fn long_segments(n: usize) -> Vec<TranscriptSegment> {
    (0..n)
        .map(|i| TranscriptSegment {
            role: if i % 2 == 0 {
                SpeakerRole::Agent
            } else {
                SpeakerRole::User
            },
            // Multi-byte text so chunk boundaries must respect characters.
            text: format!("{i}: ça marche — {}", "è".repeat(400)),
            start_ms: Some(i as u64 * 1000),
            end_ms: Some(i as u64 * 1000 + 900),
        })
        .collect()
}

/// A transcript far over DynamoDB's 400 KB item limit is stored in chunks and read
/// back exactly; appending and replacing keep it whole; expiry removes every piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_over_400_kb_round_trip_in_chunks() {
    let Some(s) = test_stores().await else { return };
    let store: Arc<dyn TranscriptStore> = s.transcripts.clone();
    let o = owner("big");
    let id = CallId::new();
    let mut t = Transcript::new(id, o.clone(), t0());
    t.provider_call_id = Some("pc-big".into());
    t.segments = long_segments(1200); // ~1 MB of JSON
    let json_len = serde_json::to_string(&t).expect("json").len();
    assert!(json_len > 2 * callcat_dynamo::CHUNK_MAX, "{json_len}");
    store.put(&t).await.expect("put big");
    assert_eq!(store.get(id, t0()).await.expect("get"), Some(t.clone()));

    let extra = long_segments(300);
    let appended = store
        .append(id, &o, None, &extra, at(5))
        .await
        .expect("append to big");
    assert_eq!(appended.segments.len(), 1500);
    assert_eq!(
        store.get(id, at(6)).await.expect("get"),
        Some(appended.clone())
    );
    assert_eq!(
        store
            .get_by_provider_call_id("pc-big", at(6))
            .await
            .expect("by provider"),
        Some(appended)
    );

    // Replacing it with a small one leaves no stale pieces behind.
    let mut small = Transcript::new(id, o.clone(), t0());
    small.segments = long_segments(2);
    store.put(&small).await.expect("put small");
    assert_eq!(store.get(id, t0()).await.expect("get"), Some(small));
    assert_eq!(count_items(&s, &s.tables().transcripts).await, 1);

    // Expired big transcripts vanish with all their pieces.
    let mut doomed = Transcript::new(CallId::new(), o.clone(), t0());
    doomed.segments = long_segments(900);
    doomed.expires_at = at(50);
    store.put(&doomed).await.expect("put doomed");
    assert!(count_items(&s, &s.tables().transcripts).await > 2);
    assert_eq!(store.delete_expired(at(50)).await.expect("delete"), 1);
    assert_eq!(count_items(&s, &s.tables().transcripts).await, 1);
}

async fn count_items(s: &DynamoStores, table: &str) -> usize {
    let mut n = 0;
    let mut start = None;
    loop {
        let out = s
            .client()
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        n += out.items().len();
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return n,
        }
    }
}

/// A provider call id belongs to one call: a second call cannot take it, and a
/// transcript's owner cannot change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_call_ids_are_unique_and_owners_fixed() {
    let Some(s) = test_stores().await else { return };
    let store: Arc<dyn CallStore> = s.calls.clone();
    let o = owner("t");
    let a = store
        .create(&scheduled_call(&o, at(1)))
        .await
        .expect("a")
        .into_call();
    let b = store
        .create(&scheduled_call(&o, at(1)))
        .await
        .expect("b")
        .into_call();
    let mut ra = a.clone();
    ra.status = CallStatus::Ringing;
    ra.next_action_at = None;
    ra.provider_call_id = Some("pc-1".into());
    let ra = store.update(&ra).await.expect("a rings");
    // Same id again on the same call: the fast path.
    let mut again = ra.clone();
    again.status = CallStatus::InProgress;
    store.update(&again).await.expect("same provider id");

    let mut rb = b.clone();
    rb.status = CallStatus::Ringing;
    rb.next_action_at = None;
    rb.provider_call_id = Some("pc-1".into());
    let err = store.update(&rb).await.expect_err("taken");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(err.source_name(), Some("dynamo"));
    assert_eq!(store.get(b.id).await.expect("get").expect("b").version, 0);

    let mut moved = a.clone();
    moved.version = 2;
    moved.owner = owner("t");
    let err = store.update(&moved).await.expect_err("owner change");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");

    let mut nonzero = scheduled_call(&o, at(1));
    nonzero.version = 3;
    let err = store.create(&nonzero).await.expect_err("version 3");
    assert_eq!(err.kind(), ErrorKind::Validation, "{err}");

    // Deleting a scheduled call frees its idempotency key.
    let mut keyed = scheduled_call(&o, at(1));
    keyed.idempotency_key = Some("k-1".into());
    store.create(&keyed).await.expect("keyed");
    store
        .delete_if_scheduled(&o, keyed.id)
        .await
        .expect("delete");
    let mut again = scheduled_call(&o, at(2));
    again.idempotency_key = Some("k-1".into());
    assert!(matches!(
        store.create(&again).await.expect("reuse key"),
        Created::New(_)
    ));

    let t_store: Arc<dyn TranscriptStore> = s.transcripts.clone();
    let t = Transcript::new(a.id, o.clone(), t0());
    t_store.put(&t).await.expect("put");
    let mut other = t.clone();
    other.owner = owner("t");
    let err = t_store.put(&other).await.expect_err("other owner");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
}

/// Every request is counted with the capacity DynamoDB reports for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_report_requests_and_capacity() {
    let Some(s) = test_stores().await else { return };
    let before = s.calls.metrics_snapshot();
    let o = owner("m");
    let c = s
        .calls
        .create(&scheduled_call(&o, at(1)))
        .await
        .expect("create");
    s.calls.get(c.call().id).await.expect("get");
    let claimed = s
        .calls
        .claim_due(at(2), 10, &WorkerId::new("w"), at(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let d = s.calls.metrics_snapshot().since(&before);
    // create (1) + get (1) + one due query per shard (4) + the claim (1).
    assert_eq!(d.requests, 7, "{d:?}");
    assert_eq!(d.failed_requests, 0);
    assert!(d.read_capacity_units > 0.0, "{d:?}");
    assert!(d.write_capacity_units > 0.0, "{d:?}");

    let mut stale = c.into_call();
    stale.subject = "stale".into();
    s.calls.update(&stale).await.expect_err("stale version");
    let d2 = s.calls.metrics_snapshot().since(&before);
    assert_eq!(d2.conditional_failures, 1, "{d2:?}");
}

/// A missing table is `Unavailable` (not retryable) and names the backend; a wrong
/// endpoint is `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_and_dead_endpoint_are_typed_errors() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let s = common::fresh(&endpoint);
    let err = s.calls.get(CallId::new()).await.expect_err("no table");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.source_name(), Some("dynamo"));

    let dead = DynamoStores::builder()
        .region("us-east-1")
        .endpoint_url("http://127.0.0.1:9")
        .credentials("testing", "testing", None)
        .operation_timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("config");
    let err = dead
        .calls
        .get(CallId::new())
        .await
        .expect_err("nobody listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}
