//! [`CallStore`] contract cases. Each takes a fresh, empty store.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;

use super::fixtures::{at, fully_populated_call, owner, scheduled_call};
use crate::call::{Call, CallStatus, Lease};
use crate::error::ErrorKind;
use crate::ids::{CallId, Owner, WorkerId};
use crate::store::{ActiveScope, CallStore, Created, ListQuery, ListView, Page};

type Store = Arc<dyn CallStore>;

async fn create(store: &Store, call: &Call) -> Call {
    match store.create(call).await {
        Ok(Created::New(c)) => c,
        Ok(Created::Existing(_)) => panic!("create of {} returned an existing call", call.id),
        Err(e) => panic!("create of {} failed: {e}", call.id),
    }
}

async fn get(store: &Store, id: CallId) -> Call {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e}"))
        .unwrap_or_else(|| panic!("call {id} missing"))
}

/// Moves a stored call to `Completed`, finished at `finished`.
async fn complete(store: &Store, call: &Call, finished: chrono::DateTime<chrono::Utc>) -> Call {
    let mut c = call.clone();
    c.status = CallStatus::Completed;
    c.next_action_at = None;
    c.ended_at = Some(finished);
    c.finished_at = Some(finished);
    store
        .update(&c)
        .await
        .unwrap_or_else(|e| panic!("complete {}: {e}", c.id))
}

async fn collect_pages(store: &Store, owner: &Owner, mut q: ListQuery) -> (Vec<Call>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let Page { items, next_cursor } = store
            .list(owner, &q)
            .await
            .unwrap_or_else(|e| panic!("list: {e}"));
        pages += 1;
        assert!(
            items.len() <= q.limit as usize,
            "page larger than the limit"
        );
        all.extend(items);
        match next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return (all, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

fn assert_same_record(stored: &Call, expected: &Call) {
    assert_eq!(
        stored, expected,
        "stored record differs from what was written"
    );
}

/// Every field survives create and get exactly (timestamps at millisecond precision).
pub async fn create_get_round_trips_every_field(store: Store) {
    let o = owner("t1");
    let call = fully_populated_call(&o);
    let created = create(&store, &call).await;
    assert_same_record(&created, &call);
    assert_same_record(&get(&store, call.id).await, &call);
    assert!(
        store
            .get(CallId::new())
            .await
            .expect("get missing")
            .is_none()
    );
}

/// A second create with the same id is a `Conflict`, and the first call is intact.
pub async fn create_rejects_a_duplicate_id(store: Store) {
    let o = owner("t1");
    let call = scheduled_call(&o, at(10));
    create(&store, &call).await;
    let mut again = call.clone();
    again.subject = "changed".into();
    let err = store
        .create(&again)
        .await
        .expect_err("duplicate id must fail");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(get(&store, call.id).await.subject, call.subject);
}

/// Updates are compare-and-swap on `version`: a stale version is a `Conflict`, a
/// missing call is `NotFound`, and each write increments the version.
pub async fn update_is_compare_and_swap(store: Store) {
    let o = owner("t1");
    let call = create(&store, &scheduled_call(&o, at(10))).await;
    assert_eq!(call.version, 0);

    let mut a = call.clone();
    a.subject = "first writer".into();
    let stored = store.update(&a).await.expect("first update");
    assert_eq!(stored.version, 1);
    assert_eq!(stored.subject, "first writer");

    let mut b = call.clone();
    b.subject = "second writer, stale".into();
    let err = store.update(&b).await.expect_err("stale version must fail");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let now = get(&store, call.id).await;
    assert_eq!(now.subject, "first writer");
    assert_eq!(now.version, 1);

    let mut c = now.clone();
    c.scheduled_for = at(20);
    c.next_action_at = Some(at(20));
    assert_eq!(store.update(&c).await.expect("second update").version, 2);
    assert_eq!(get(&store, call.id).await.scheduled_for, at(20));

    let ghost = scheduled_call(&o, at(10));
    let err = store.update(&ghost).await.expect_err("missing call");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// 250 upcoming calls (with ties on `scheduled_for`) page soonest first by 20s with
/// no gap and no repeat.
pub async fn upcoming_pages_soonest_first_without_gaps(store: Store) {
    let o = owner("t1");
    let mut ids = Vec::new();
    // Created in a scrambled order so insertion order is not the answer.
    for i in 0..250i64 {
        let k = (i * 97) % 250;
        let c = create(&store, &scheduled_call(&o, at(1000 + k / 3))).await;
        ids.push(c.id);
    }
    // A finished call must not show up in the upcoming view.
    let done = create(&store, &scheduled_call(&o, at(5))).await;
    complete(&store, &done, at(6)).await;

    let (all, pages) = collect_pages(&store, &o, ListQuery::new(ListView::Upcoming, 20)).await;
    assert_eq!(pages, 13);
    assert_eq!(all.len(), 250);
    let seen: HashSet<CallId> = all.iter().map(|c| c.id).collect();
    assert_eq!(seen.len(), 250, "a call was repeated");
    assert_eq!(
        seen,
        ids.iter().copied().collect::<HashSet<_>>(),
        "a call was missed"
    );
    for w in all.windows(2) {
        assert!(
            w[0].scheduled_for <= w[1].scheduled_for,
            "not soonest first"
        );
    }
}

/// 250 finished calls (with ties) page latest first by 20s with no gap and no repeat.
pub async fn finished_pages_latest_first_without_gaps(store: Store) {
    let o = owner("t1");
    let mut ids = HashSet::new();
    for i in 0..250i64 {
        let k = (i * 89) % 250;
        let c = create(&store, &scheduled_call(&o, at(10))).await;
        complete(&store, &c, at(2000 + k / 4)).await;
        ids.insert(c.id);
    }
    create(&store, &scheduled_call(&o, at(10))).await; // upcoming, not listed

    let (all, pages) = collect_pages(&store, &o, ListQuery::new(ListView::Finished, 20)).await;
    assert_eq!(pages, 13);
    assert_eq!(all.len(), 250);
    let seen: HashSet<CallId> = all.iter().map(|c| c.id).collect();
    assert_eq!(seen.len(), 250, "a call was repeated");
    assert_eq!(seen, ids, "a call was missed");
    for w in all.windows(2) {
        assert!(
            w[0].finished_sort_key() >= w[1].finished_sort_key(),
            "not latest first"
        );
    }
}

/// A status filter returns exactly the calls in that status.
pub async fn status_filter_selects_one_status(store: Store) {
    let o = owner("t1");
    let mut retry_ids = HashSet::new();
    for i in 0..6 {
        let c = create(&store, &scheduled_call(&o, at(100 + i))).await;
        if i % 2 == 0 {
            let mut r = c.clone();
            r.status = CallStatus::RetryPending;
            r.attempts = 1;
            store.update(&r).await.expect("to retry pending");
            retry_ids.insert(c.id);
        }
    }
    let (all, _) = collect_pages(&store, &o, ListQuery::status(CallStatus::RetryPending, 2)).await;
    assert_eq!(all.iter().map(|c| c.id).collect::<HashSet<_>>(), retry_ids);
    assert!(all.iter().all(|c| c.status == CallStatus::RetryPending));
    let (sched, _) = collect_pages(&store, &o, ListQuery::status(CallStatus::Scheduled, 50)).await;
    assert_eq!(sched.len(), 3);
    let (none, _) = collect_pages(&store, &o, ListQuery::status(CallStatus::Failed, 50)).await;
    assert!(none.is_empty());
}

/// One owner never sees another's calls, even in the same tenant.
pub async fn owners_never_see_each_other(store: Store) {
    let a = owner("shared-tenant");
    let b = owner("shared-tenant");
    let ca = create(&store, &scheduled_call(&a, at(10))).await;
    let cb = create(&store, &scheduled_call(&b, at(10))).await;
    let (la, _) = collect_pages(&store, &a, ListQuery::new(ListView::Upcoming, 50)).await;
    let (lb, _) = collect_pages(&store, &b, ListQuery::new(ListView::Upcoming, 50)).await;
    assert_eq!(la.iter().map(|c| c.id).collect::<Vec<_>>(), vec![ca.id]);
    assert_eq!(lb.iter().map(|c| c.id).collect::<Vec<_>>(), vec![cb.id]);
    let err = store
        .delete_if_scheduled(&a, cb.id)
        .await
        .expect_err("not a's call");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(store.get(cb.id).await.expect("get").is_some());
}

/// Delete works only while `Scheduled` (else `Conflict`); a missing call is `NotFound`.
pub async fn delete_only_while_scheduled(store: Store) {
    let o = owner("t1");
    let c = create(&store, &scheduled_call(&o, at(10))).await;
    store
        .delete_if_scheduled(&o, c.id)
        .await
        .expect("delete scheduled");
    assert!(store.get(c.id).await.expect("get").is_none());
    let err = store
        .delete_if_scheduled(&o, c.id)
        .await
        .expect_err("already gone");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let d = create(&store, &scheduled_call(&o, at(10))).await;
    let mut ringing = d.clone();
    ringing.status = CallStatus::Ringing;
    ringing.next_action_at = None;
    store.update(&ringing).await.expect("to ringing");
    let err = store
        .delete_if_scheduled(&o, d.id)
        .await
        .expect_err("ringing");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(store.get(d.id).await.expect("get").is_some());
}

/// The call whose current attempt has a provider call id is found by it.
pub async fn find_by_provider_call_id(store: Store) {
    let o = owner("t1");
    let c = create(&store, &scheduled_call(&o, at(10))).await;
    create(&store, &scheduled_call(&o, at(10))).await;
    assert!(
        store
            .find_by_provider_call_id("pc-x")
            .await
            .expect("find")
            .is_none()
    );
    let mut r = c.clone();
    r.status = CallStatus::Ringing;
    r.next_action_at = None;
    r.provider = Some("sim".into());
    r.provider_call_id = Some("pc-x".into());
    store.update(&r).await.expect("to ringing");
    let found = store
        .find_by_provider_call_id("pc-x")
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found.id, c.id);
    assert_eq!(found.version, 1);
}

/// Creating twice with the same idempotency key for the same owner returns the
/// first call and stores no second one; another owner may use the same key.
pub async fn idempotent_create_returns_the_first_call(store: Store) {
    let o = owner("t1");
    let mut first = scheduled_call(&o, at(10));
    first.idempotency_key = Some("order-17".into());
    create(&store, &first).await;

    let mut second = scheduled_call(&o, at(99));
    second.idempotency_key = Some("order-17".into());
    match store.create(&second).await.expect("second create") {
        Created::Existing(c) => assert_eq!(c.id, first.id),
        Created::New(_) => panic!("a second call was created for the same key"),
    }
    assert!(store.get(second.id).await.expect("get").is_none());

    let other = owner("t1");
    let mut third = scheduled_call(&other, at(10));
    third.idempotency_key = Some("order-17".into());
    create(&store, &third).await;
    let (listed, _) = collect_pages(&store, &o, ListQuery::new(ListView::Upcoming, 50)).await;
    assert_eq!(listed.len(), 1);
}

/// `claim_due` takes only due, claimable calls, earliest first, up to the limit, and
/// sets status, lease, next action time, version and updated time.
pub async fn claim_takes_due_calls_in_order_and_sets_the_lease(store: Store) {
    let o = owner("t1");
    let late = create(&store, &scheduled_call(&o, at(30))).await;
    let early = create(&store, &scheduled_call(&o, at(10))).await;
    let middle = create(&store, &scheduled_call(&o, at(20))).await;
    let future = create(&store, &scheduled_call(&o, at(500))).await;
    let ringing = create(&store, &scheduled_call(&o, at(5))).await;
    let mut r = ringing.clone();
    r.status = CallStatus::Ringing;
    r.next_action_at = None;
    store.update(&r).await.expect("to ringing");

    let worker = WorkerId::new("w1");
    let lease_until = at(100 + 60);
    let claimed = store
        .claim_due(at(100), 2, &worker, lease_until)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![early.id, middle.id]
    );
    for c in &claimed {
        assert_eq!(c.status, CallStatus::Dispatching);
        assert_eq!(
            c.lease,
            Some(Lease {
                worker: worker.clone(),
                expires_at: lease_until
            })
        );
        assert_eq!(c.next_action_at, Some(lease_until));
        assert_eq!(c.version, 1);
        assert_eq!(c.updated_at, at(100));
        assert_same_record(&get(&store, c.id).await, c);
    }
    let rest = store
        .claim_due(at(100), 10, &worker, lease_until)
        .await
        .expect("claim rest");
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), vec![late.id]);
    assert!(
        store
            .claim_due(at(100), 10, &worker, lease_until)
            .await
            .expect("none")
            .is_empty()
    );
    assert_eq!(get(&store, future.id).await.status, CallStatus::Scheduled);
}

/// `claim_due_capped` skips the new calls of owners at their cap (so they cost
/// nothing while they wait), takes at most `cap - active` of an owner's calls at
/// once, always takes a lapsed Dispatching call, and `next_due_capped` says when
/// the next call it could take is due and whether earlier ones were left out.
pub async fn capped_claim_skips_owners_at_their_cap(store: Store) {
    let (a, b, c) = (owner("t1"), owner("t1"), owner("t2"));
    let ringing = create(&store, &scheduled_call(&a, at(1))).await;
    let mut r = ringing.clone();
    r.status = CallStatus::Ringing;
    r.next_action_at = None;
    let ringing = store.update(&r).await.expect("to ringing");
    let a10 = create(&store, &scheduled_call(&a, at(10))).await;
    let a11 = create(&store, &scheduled_call(&a, at(11))).await;
    let a12 = create(&store, &scheduled_call(&a, at(12))).await;
    let b20 = create(&store, &scheduled_call(&b, at(20))).await;
    let c30 = create(&store, &scheduled_call(&c, at(30))).await;
    let c31 = create(&store, &scheduled_call(&c, at(31))).await;
    let c32 = create(&store, &scheduled_call(&c, at(32))).await;
    let ids = |calls: &[Call]| calls.iter().map(|c| c.id).collect::<Vec<_>>();

    // a is at a cap of 1: its calls are left out, b's is next.
    let next = store.next_due_capped(1).await.expect("next due");
    assert_eq!((next.at, next.blocked), (Some(at(20)), true));

    let w = WorkerId::new("w1");
    let claimed = store
        .claim_due_capped(at(100), 10, &w, at(160), 1)
        .await
        .expect("capped claim");
    assert_eq!(
        ids(&claimed),
        vec![b20.id, c30.id],
        "one per owner below the cap"
    );
    for call in &claimed {
        assert_eq!(call.status, CallStatus::Dispatching);
        assert_same_record(&get(&store, call.id).await, call);
    }

    // With a cap of 2, a and c (one active each) may start one more each.
    let claimed = store
        .claim_due_capped(at(100), 10, &w, at(160), 2)
        .await
        .expect("capped claim, cap 2");
    assert_eq!(ids(&claimed), vec![a10.id, c31.id]);
    let next = store.next_due_capped(2).await.expect("next due");
    assert_eq!(
        (next.at, next.blocked),
        (Some(at(160)), true),
        "only the leased calls remain claimable; a's and c's waiting calls are left out"
    );

    // a's ringing call ends: its next call is due again, nothing before it waits.
    complete(&store, &ringing, at(120)).await;
    let next = store.next_due_capped(2).await.expect("next due");
    assert_eq!((next.at, next.blocked), (Some(at(11)), false));

    // After the leases lapse, every lapsed Dispatching call is claimable whatever
    // the cap; a's and c's waiting calls are not (each owner still has active calls).
    let w2 = WorkerId::new("w2");
    let claimed = store
        .claim_due_capped(at(200), 10, &w2, at(300), 1)
        .await
        .expect("claim lapsed");
    let got: HashSet<CallId> = ids(&claimed).into_iter().collect();
    let lapsed: HashSet<CallId> = [a10.id, b20.id, c30.id, c31.id].into_iter().collect();
    assert_eq!(got, lapsed);
    for id in [a11.id, a12.id, c32.id] {
        assert_eq!(get(&store, id).await.status, CallStatus::Scheduled);
    }
}

/// `count_by_status` counts one owner's calls per status, and nobody else's.
pub async fn count_by_status_counts_one_owners_calls(store: Store) {
    let (o, other) = (owner("t1"), owner("t1"));
    for i in 0..3 {
        create(&store, &scheduled_call(&o, at(10 + i))).await;
    }
    let done = create(&store, &scheduled_call(&o, at(20))).await;
    complete(&store, &done, at(30)).await;
    let ringing = create(&store, &scheduled_call(&o, at(40))).await;
    let mut r = ringing.clone();
    r.status = CallStatus::Ringing;
    r.next_action_at = None;
    store.update(&r).await.expect("to ringing");
    create(&store, &scheduled_call(&other, at(10))).await;

    let counts = store.count_by_status(&o).await.expect("counts");
    let expected: std::collections::BTreeMap<CallStatus, u64> = [
        (CallStatus::Scheduled, 3),
        (CallStatus::Ringing, 1),
        (CallStatus::Completed, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected);
    assert!(
        store
            .count_by_status(&owner("t9"))
            .await
            .expect("none")
            .is_empty()
    );
}

/// 8 concurrent claimers over 1,000 due calls: each call is claimed exactly once.
pub async fn claim_is_exclusive_under_concurrency(store: Store) {
    let o = owner("t1");
    let ids: HashSet<CallId> = futures::stream::iter(0..1000i64)
        .map(|i| {
            let store = store.clone();
            let call = scheduled_call(&o, at(i % 50));
            async move {
                create(&store, &call).await;
                call.id
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(ids.len(), 1000);

    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = WorkerId::new(format!("w{w}"));
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_due(at(100), 25, &worker, at(1000))
                    .await
                    .unwrap_or_else(|e| panic!("claim: {e}"));
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| {
                    assert_eq!(c.lease.as_ref().map(|l| &l.worker), Some(&worker));
                    c.id
                }));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("claimer task"));
    }
    let unique: HashSet<CallId> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a call was claimed twice");
    assert_eq!(unique, ids, "a due call was never claimed");
}

/// A `Dispatching` call whose lease has lapsed is claimable again (by anyone); one
/// whose lease holds is not.
pub async fn expired_lease_is_reclaimable(store: Store) {
    let o = owner("t1");
    let c = create(&store, &scheduled_call(&o, at(10))).await;
    let w1 = WorkerId::new("w1");
    let w2 = WorkerId::new("w2");
    let claimed = store
        .claim_due(at(10), 10, &w1, at(40))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(
        store
            .claim_due(at(39), 10, &w2, at(100))
            .await
            .expect("held")
            .is_empty()
    );
    assert_eq!(store.next_due_at().await.expect("next"), Some(at(40)));
    let again = store
        .claim_due(at(40), 10, &w2, at(100))
        .await
        .expect("reclaim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, c.id);
    assert_eq!(again[0].lease.as_ref().map(|l| l.worker.clone()), Some(w2));
    assert_eq!(again[0].version, 2);
}

/// `next_due_at` is the earliest `next_action_at` among claimable calls.
pub async fn next_due_at_is_the_earliest_claimable_time(store: Store) {
    assert_eq!(store.next_due_at().await.expect("empty"), None);
    let o = owner("t1");
    create(&store, &scheduled_call(&o, at(300))).await;
    let soon = create(&store, &scheduled_call(&o, at(200))).await;
    assert_eq!(store.next_due_at().await.expect("next"), Some(at(200)));

    // A Ringing call has no claimable time, even with an earlier timestamp around.
    let r = create(&store, &scheduled_call(&o, at(50))).await;
    let mut ringing = r.clone();
    ringing.status = CallStatus::Ringing;
    ringing.next_action_at = None;
    store.update(&ringing).await.expect("ringing");
    assert_eq!(store.next_due_at().await.expect("next"), Some(at(200)));

    // A retry planned earlier becomes the next due time.
    let mut retry = get(&store, soon.id).await;
    retry.status = CallStatus::RetryPending;
    retry.next_action_at = Some(at(150));
    store.update(&retry).await.expect("retry");
    assert_eq!(store.next_due_at().await.expect("next"), Some(at(150)));

    // Completed calls drop out.
    let done = get(&store, soon.id).await;
    complete(&store, &done, at(160)).await;
    assert_eq!(store.next_due_at().await.expect("next"), Some(at(300)));
}

/// Active calls are listed per scope: all, tenant, owner.
pub async fn list_active_by_scope(store: Store) {
    let a1 = owner("tenant-a");
    let a2 = owner("tenant-a");
    let b = owner("tenant-b");
    let mut active = Vec::new();
    for (o, status) in [
        (&a1, CallStatus::Ringing),
        (&a1, CallStatus::InProgress),
        (&a2, CallStatus::Dispatching),
        (&b, CallStatus::Canceling),
        (&b, CallStatus::Completed),
        (&a1, CallStatus::Scheduled),
    ] {
        let c = create(&store, &scheduled_call(o, at(10 + active.len() as i64))).await;
        let mut u = c.clone();
        u.status = status;
        u.next_action_at = (status == CallStatus::Scheduled || status == CallStatus::Dispatching)
            .then_some(at(900));
        if status.is_terminal() {
            u.finished_at = Some(at(20));
        }
        store.update(&u).await.expect("set status");
        active.push((c.id, status));
    }
    let ids = |page: Page<Call>| page.items.iter().map(|c| c.id).collect::<HashSet<_>>();
    let all = ids(store
        .list_active(&ActiveScope::All, 100, None)
        .await
        .expect("all"));
    assert_eq!(all.len(), 4);
    let ta = ids(store
        .list_active(&ActiveScope::Tenant("tenant-a".into()), 100, None)
        .await
        .expect("tenant"));
    assert_eq!(ta.len(), 3);
    let oa = ids(store
        .list_active(&ActiveScope::Owner(a1.clone()), 100, None)
        .await
        .expect("owner"));
    assert_eq!(oa, [active[0].0, active[1].0].into_iter().collect());

    // Paging through active calls one by one sees each once.
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let p = store
            .list_active(&ActiveScope::All, 1, cursor.as_deref())
            .await
            .expect("page");
        seen.extend(p.items.iter().map(|c| c.id));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), all);
}

/// A tenant's calls in a time range, soonest first, paged.
pub async fn list_tenant_range_pages_in_order(store: Store) {
    let a = owner("tenant-r");
    let a2 = owner("tenant-r");
    let b = owner("other");
    for i in 0..30 {
        create(
            &store,
            &scheduled_call(if i % 2 == 0 { &a } else { &a2 }, at(100 + i)),
        )
        .await;
        create(&store, &scheduled_call(&b, at(100 + i))).await;
    }
    let tenant = "tenant-r".into();
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let p = store
            .list_tenant_range(&tenant, at(105), at(125), 7, cursor.as_deref())
            .await
            .expect("range");
        seen.extend(p.items);
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 20);
    assert!(seen.iter().all(|c| c.owner.tenant.as_str() == "tenant-r"));
    assert!(
        seen.iter()
            .all(|c| c.scheduled_for >= at(105) && c.scheduled_for < at(125))
    );
    for w in seen.windows(2) {
        assert!(w[0].scheduled_for <= w[1].scheduled_for);
    }
}

/// A cursor that the store did not make is a `Validation` error, not a panic.
pub async fn invalid_cursor_is_a_validation_error(store: Store) {
    let o = owner("t1");
    create(&store, &scheduled_call(&o, at(10))).await;
    let mut q = ListQuery::new(ListView::Upcoming, 10);
    q.cursor = Some("not-a-cursor!".into());
    let err = store.list(&o, &q).await.expect_err("bad cursor");
    assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
}

/// `active_calls_to_number` counts the active calls to a number in scope, and
/// nothing else (other numbers, finished or scheduled calls, other scopes).
/// Also [`CallStore::count_active`] over the same calls.
pub async fn active_calls_to_number_counts_in_scope(store: Store) {
    let a = owner("tenant-n");
    let b = owner("tenant-other");
    let number = super::fixtures::phone();
    let other = crate::phone::PhoneNumber::parse("+442071838750").unwrap_or_else(|e| panic!("{e}"));
    for (o, n, status) in [
        (&a, &number, CallStatus::Ringing),
        (&a, &number, CallStatus::InProgress),
        (&a, &number, CallStatus::Completed),
        (&a, &number, CallStatus::Scheduled),
        (&a, &other, CallStatus::Ringing),
        (&b, &number, CallStatus::Dispatching),
    ] {
        let mut c = scheduled_call(o, at(10));
        c.phone_number = n.clone();
        let c = create(&store, &c).await;
        if status != CallStatus::Scheduled {
            let mut u = c.clone();
            u.status = status;
            u.next_action_at = (status == CallStatus::Dispatching).then_some(at(900));
            if status.is_terminal() {
                u.finished_at = Some(at(20));
            }
            store.update(&u).await.expect("set status");
        }
    }
    let count = |scope: ActiveScope, n: crate::phone::PhoneNumber| {
        let store = store.clone();
        async move {
            store
                .active_calls_to_number(&scope, &n)
                .await
                .expect("count")
        }
    };
    assert_eq!(count(ActiveScope::All, number.clone()).await, 3);
    assert_eq!(
        count(ActiveScope::Tenant("tenant-n".into()), number.clone()).await,
        2
    );
    assert_eq!(
        count(ActiveScope::Owner(b.clone()), number.clone()).await,
        1
    );
    assert_eq!(count(ActiveScope::All, other.clone()).await, 1);
    let nobody = crate::phone::PhoneNumber::parse("+4930901820").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count(ActiveScope::All, nobody).await, 0);

    // count_active: every active call in scope, whatever its number.
    let active = |scope: ActiveScope| {
        let store = store.clone();
        async move { store.count_active(&scope).await.expect("count_active") }
    };
    assert_eq!(active(ActiveScope::All).await, 4);
    assert_eq!(active(ActiveScope::Tenant("tenant-n".into())).await, 3);
    assert_eq!(active(ActiveScope::Owner(a.clone())).await, 3);
    assert_eq!(active(ActiveScope::Owner(b.clone())).await, 1);
    assert_eq!(active(ActiveScope::Tenant("tenant-none".into())).await, 0);
}
