//! PostgresCallStore against a real PostgreSQL: CAS, idempotency, deletes,
//! paging, active/range lists, claims (including concurrent claimers).

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use callcat_core::{
    ActiveScope, CallStatus, CallStore, Created, ErrorKind, Lease, ListQuery, ListView, TenantId,
    WorkerId,
};
use common::{call_at, owner, secs, t0};

#[tokio::test(flavor = "multi_thread")]
async fn create_get_round_trips_exactly() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    let mut c = call_at(&owner("t", "u"), t0() + secs(60));
    c.metadata.insert("n".into(), serde_json::json!(0.1));
    c.variables.insert("name".into(), "Ada ✓".into());
    assert_eq!(
        calls.create(&c).await.expect("create"),
        Created::New(c.clone())
    );
    assert_eq!(calls.get(c.id).await.expect("get"), Some(c.clone()));
    assert_eq!(
        calls.get(callcat_core::CallId::new()).await.expect("get"),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_is_idempotent_per_owner_and_rejects_duplicates() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    let o = owner("t", "u");
    let mut first = call_at(&o, t0() + secs(60));
    first.idempotency_key = Some("k1".into());
    assert!(matches!(
        calls.create(&first).await.expect("create"),
        Created::New(_)
    ));

    let mut again = call_at(&o, t0() + secs(120));
    again.idempotency_key = Some("k1".into());
    assert_eq!(
        calls.create(&again).await.expect("create"),
        Created::Existing(first.clone())
    );
    assert_eq!(
        calls.get(again.id).await.expect("get"),
        None,
        "nothing written"
    );

    // The same key for another owner is a different call.
    let mut other = call_at(&owner("t", "v"), t0() + secs(60));
    other.idempotency_key = Some("k1".into());
    assert!(matches!(
        calls.create(&other).await.expect("create"),
        Created::New(_)
    ));

    // The same id again (no key) is a conflict.
    let plain = call_at(&o, t0());
    calls.create(&plain).await.expect("create");
    let err = calls.create(&plain).await.expect_err("duplicate id");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.source_name(), Some("postgres"));

    let mut versioned = call_at(&o, t0());
    versioned.version = 3;
    assert_eq!(
        calls.create(&versioned).await.expect_err("version").kind(),
        ErrorKind::Validation
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn update_is_compare_and_swap_on_version() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    let c = call_at(&owner("t", "u"), t0() + secs(60));
    calls.create(&c).await.expect("create");

    let mut edit = c.clone();
    edit.subject = "Changed".into();
    edit.next_action_at = Some(t0() + secs(30));
    let stored = calls.update(&edit).await.expect("update");
    assert_eq!(stored.version, 1);
    assert_eq!(stored.subject, "Changed");
    assert_eq!(calls.get(c.id).await.expect("get"), Some(stored.clone()));
    assert_eq!(
        calls.next_due_at().await.expect("due"),
        Some(t0() + secs(30))
    );

    // The old version loses.
    let err = calls.update(&edit).await.expect_err("stale");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // The owner cannot change.
    let mut moved = stored.clone();
    moved.owner = owner("t", "someone-else");
    assert_eq!(
        calls.update(&moved).await.expect_err("owner").kind(),
        ErrorKind::Conflict
    );
    // Gone is NotFound.
    let ghost = call_at(&owner("t", "u"), t0());
    assert_eq!(
        calls.update(&ghost).await.expect_err("missing").kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_call_ids_are_unique_and_found() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    let o = owner("t", "u");
    let a = call_at(&o, t0());
    let b = call_at(&o, t0());
    calls.create(&a).await.expect("create");
    calls.create(&b).await.expect("create");
    let mut a1 = a.clone();
    a1.status = CallStatus::Ringing;
    a1.provider_call_id = Some("prov-1".into());
    let a1 = calls.update(&a1).await.expect("update");
    assert_eq!(
        calls
            .find_by_provider_call_id("prov-1")
            .await
            .expect("find"),
        Some(a1)
    );
    assert_eq!(
        calls.find_by_provider_call_id("nope").await.expect("find"),
        None
    );
    let mut b1 = b.clone();
    b1.provider_call_id = Some("prov-1".into());
    let err = calls.update(&b1).await.expect_err("taken");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains("provider call id"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_only_while_scheduled_and_only_by_the_owner() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    let o = owner("t", "u");
    let c = call_at(&o, t0());
    calls.create(&c).await.expect("create");
    assert_eq!(
        calls
            .delete_if_scheduled(&owner("t", "x"), c.id)
            .await
            .expect_err("other owner")
            .kind(),
        ErrorKind::NotFound
    );
    let mut ringing = c.clone();
    ringing.status = CallStatus::Ringing;
    let ringing = calls.update(&ringing).await.expect("update");
    assert_eq!(
        calls
            .delete_if_scheduled(&o, c.id)
            .await
            .expect_err("ringing")
            .kind(),
        ErrorKind::Conflict
    );
    let mut back = ringing.clone();
    back.status = CallStatus::Scheduled;
    calls.update(&back).await.expect("update");
    calls.delete_if_scheduled(&o, c.id).await.expect("delete");
    assert_eq!(calls.get(c.id).await.expect("get"), None);
    assert_eq!(
        calls
            .delete_if_scheduled(&o, c.id)
            .await
            .expect_err("gone")
            .kind(),
        ErrorKind::NotFound
    );
}

/// Collects every page of a view.
async fn all_pages(
    calls: &dyn CallStore,
    o: &callcat_core::Owner,
    mut q: ListQuery,
) -> Vec<callcat_core::Call> {
    let mut out = Vec::new();
    loop {
        let page = calls.list(o, &q).await.expect("list");
        assert!(page.items.len() <= q.limit as usize);
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_page_in_order_with_ties() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    let o = owner("t", "u");
    let mut upcoming = Vec::new();
    for i in 0..11 {
        // Pairs share a scheduled_for: ties are broken by id.
        let c = call_at(&o, t0() + secs(i / 2));
        calls.create(&c).await.expect("create");
        upcoming.push(c);
    }
    let mut finished = Vec::new();
    for i in 0..7 {
        let c = call_at(&o, t0());
        calls.create(&c).await.expect("create");
        let mut done = c.clone();
        done.status = if i % 2 == 0 {
            CallStatus::Completed
        } else {
            CallStatus::Failed
        };
        done.next_action_at = None;
        done.finished_at = Some(t0() + secs(100 + i / 3));
        finished.push(calls.update(&done).await.expect("finish"));
    }
    // Someone else's calls never show.
    calls
        .create(&call_at(&owner("t", "other"), t0()))
        .await
        .expect("create");

    upcoming.sort_by_key(|c| (c.scheduled_for, c.id));
    let got = all_pages(&calls, &o, ListQuery::new(ListView::Upcoming, 3)).await;
    assert_eq!(got, upcoming);

    finished.sort_by_key(|c| std::cmp::Reverse((c.finished_sort_key(), c.id)));
    let got = all_pages(&calls, &o, ListQuery::new(ListView::Finished, 2)).await;
    assert_eq!(got, finished);

    let failed: Vec<_> = finished
        .iter()
        .filter(|c| c.status == CallStatus::Failed)
        .cloned()
        .collect();
    let got = all_pages(&calls, &o, ListQuery::status(CallStatus::Failed, 1)).await;
    assert_eq!(got, failed);

    let mut wrong = ListQuery::new(ListView::Upcoming, 10);
    wrong.status = Some(CallStatus::Completed);
    assert_eq!(
        calls.list(&o, &wrong).await.expect_err("view").kind(),
        ErrorKind::Validation
    );
    let mut bad = ListQuery::new(ListView::Upcoming, 10);
    bad.cursor = Some("not a cursor".into());
    assert_eq!(
        calls.list(&o, &bad).await.expect_err("cursor").field(),
        Some("nextToken")
    );
    assert_eq!(
        calls
            .list(&o, &ListQuery::new(ListView::Upcoming, 0))
            .await
            .expect_err("limit")
            .field(),
        Some("limit")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn active_calls_by_scope_and_tenant_ranges() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    let (a, b, c) = (owner("t1", "a"), owner("t1", "b"), owner("t2", "c"));
    let mut active = Vec::new();
    for (i, o) in [&a, &b, &c, &a].into_iter().enumerate() {
        let call = call_at(o, t0() + secs(i as i64));
        calls.create(&call).await.expect("create");
        let mut ringing = call.clone();
        ringing.status = CallStatus::InProgress;
        ringing.next_action_at = None;
        active.push(calls.update(&ringing).await.expect("update"));
    }
    // Scheduled calls are not active.
    calls
        .create(&call_at(&a, t0() + secs(10)))
        .await
        .expect("create");

    let ids = |v: &[callcat_core::Call]| v.iter().map(|c| c.id).collect::<Vec<_>>();
    let mut cursor = None;
    let mut all = Vec::new();
    loop {
        let page = calls
            .list_active(&ActiveScope::All, 3, cursor.as_deref())
            .await
            .expect("active");
        all.extend(page.items);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(ids(&all), ids(&active));
    let t1 = calls
        .list_active(&ActiveScope::Tenant(TenantId::new("t1")), 10, None)
        .await
        .expect("tenant");
    assert_eq!(
        ids(&t1.items),
        vec![active[0].id, active[1].id, active[3].id]
    );
    let only_a = calls
        .list_active(&ActiveScope::Owner(a.clone()), 10, None)
        .await
        .expect("owner");
    assert_eq!(ids(&only_a.items), vec![active[0].id, active[3].id]);

    // [t0+1, t0+10) for t1: b's call at +1 and a's at +3 (a's at +10 is excluded).
    let range = calls
        .list_tenant_range(
            &TenantId::new("t1"),
            t0() + secs(1),
            t0() + secs(10),
            1,
            None,
        )
        .await
        .expect("range");
    assert_eq!(ids(&range.items), vec![active[1].id]);
    let rest = calls
        .list_tenant_range(
            &TenantId::new("t1"),
            t0() + secs(1),
            t0() + secs(10),
            10,
            range.next_cursor.as_deref(),
        )
        .await
        .expect("range");
    assert_eq!(ids(&rest.items), vec![active[3].id]);
    assert_eq!(rest.next_cursor, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_due_leases_the_earliest_due_calls() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    let o = owner("t", "u");
    assert_eq!(calls.next_due_at().await.expect("due"), None);
    let late = call_at(&o, t0() + secs(30));
    let early = call_at(&o, t0() + secs(5));
    let middle = call_at(&o, t0() + secs(10));
    let future = call_at(&o, t0() + secs(500));
    for c in [&late, &early, &middle, &future] {
        calls.create(c).await.expect("create");
    }
    assert_eq!(
        calls.next_due_at().await.expect("due"),
        Some(t0() + secs(5))
    );

    let now = t0() + secs(60);
    let lease_until = now + secs(120);
    let w = WorkerId::new("w1");
    let got = calls
        .claim_due(now, 2, &w, lease_until)
        .await
        .expect("claim");
    assert_eq!(
        got.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![early.id, middle.id]
    );
    for (claimed, before) in got.iter().zip([&early, &middle]) {
        let mut expected = before.clone();
        expected.status = CallStatus::Dispatching;
        expected.lease = Some(Lease {
            worker: w.clone(),
            expires_at: lease_until,
        });
        expected.next_action_at = Some(lease_until);
        expected.version = 1;
        expected.updated_at = now;
        assert_eq!(claimed, &expected);
        // The JSONB record agrees with what was returned.
        assert_eq!(
            calls.get(claimed.id).await.expect("get").as_ref(),
            Some(&expected)
        );
    }
    let got = calls
        .claim_due(now, 10, &w, lease_until)
        .await
        .expect("claim");
    assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), vec![late.id]);
    assert!(
        calls
            .claim_due(now, 10, &w, lease_until)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        calls
            .claim_due(now, 0, &w, lease_until)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(calls.next_due_at().await.expect("due"), Some(lease_until));

    // A call moved to a state that is not claimable is never claimed.
    let mut ringing = calls.get(late.id).await.expect("get").expect("some");
    ringing.status = CallStatus::Ringing;
    calls.update(&ringing).await.expect("update");

    // Once the leases lapse, the dispatching calls are claimable again.
    let later = lease_until + secs(1);
    let w2 = WorkerId::new("w2");
    let again = calls
        .claim_due(later, 10, &w2, later + secs(60))
        .await
        .expect("claim");
    assert_eq!(
        again.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![early.id, middle.id]
    );
    assert!(
        again
            .iter()
            .all(|c| c.version == 2 && c.lease.as_ref().is_some_and(|l| l.worker == w2))
    );
    assert_eq!(
        calls.next_due_at().await.expect("due"),
        Some(later + secs(60))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claimers_never_share_a_call() {
    let db = db_or_skip!();
    let calls: Arc<dyn CallStore> = Arc::new(db.store.calls());
    let o = owner("t", "u");
    let mut ids = HashSet::new();
    for i in 0..120 {
        let c = call_at(&o, t0() + secs(i % 7));
        calls.create(&c).await.expect("create");
        ids.insert(c.id);
    }
    let now = t0() + secs(60);
    let mut tasks = Vec::new();
    for w in 0..6 {
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let worker = WorkerId::new(format!("w{w}"));
            let mut mine = Vec::new();
            loop {
                let got = calls
                    .claim_due(now, 7, &worker, now + secs(300))
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                assert!(
                    got.iter()
                        .all(|c| c.lease.as_ref().is_some_and(|l| l.worker == worker))
                );
                mine.extend(got.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.expect("task") {
            assert!(seen.insert(id), "call {id} claimed twice");
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_typed_error_and_writes_nothing() {
    let db = db_or_skip!();
    let calls = db.store.calls();
    // PostgreSQL text and JSONB cannot hold NUL characters.
    let mut nul_json = call_at(&owner("t", "u"), t0());
    nul_json.instructions = "say \u{0}hi".into();
    let err = calls.create(&nul_json).await.expect_err("NUL in JSONB");
    assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
    assert_eq!(err.source_name(), Some("postgres"));
    assert_eq!(calls.get(nul_json.id).await.expect("get"), None);

    let nul_owner = call_at(&owner("t\u{0}", "u"), t0());
    let err = calls.create(&nul_owner).await.expect_err("NUL in text");
    assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
    assert_eq!(calls.get(nul_owner.id).await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmigrated_schema_says_so() {
    let Some(url) = common::test_url() else {
        return;
    };
    let store = callcat_postgres::PostgresStore::connect_with(
        &url,
        callcat_postgres::PostgresOptions::new().schema("callcat_never_migrated"),
    )
    .await
    .expect("connect");
    let err = store
        .calls()
        .get(callcat_core::CallId::new())
        .await
        .expect_err("no table");
    assert!(err.message().contains("migrate"), "{err}");
    assert_eq!(err.source_name(), Some("postgres"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_unavailable() {
    // Needs no database. Nothing listens on port 1; the error must be retryable, not a panic.
    let err = callcat_postgres::PostgresStore::connect_with(
        "postgres://postgres@127.0.0.1:1/test",
        callcat_postgres::PostgresOptions::new().acquire_timeout(std::time::Duration::from_secs(1)),
    )
    .await
    .expect_err("unreachable");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    let err = callcat_postgres::PostgresStore::connect_with(
        "postgres://postgres@127.0.0.1:1/test",
        callcat_postgres::PostgresOptions::new().schema("bad-name"),
    )
    .await
    .expect_err("invalid schema");
    assert_eq!(
        err.kind(),
        ErrorKind::Validation,
        "options are checked before connecting"
    );
    assert_eq!(err.field(), Some("schema"));
}
