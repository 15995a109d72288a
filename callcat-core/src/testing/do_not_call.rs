//! [`DoNotCallStore`] contract cases. Each takes a fresh, empty store.

use std::sync::Arc;

use super::fixtures::at;
use crate::error::ErrorKind;
use crate::ids::{TenantId, UserId};
use crate::phone::PhoneNumber;
use crate::store::{DoNotCallEntry, DoNotCallStore};

type Store = Arc<dyn DoNotCallStore>;

fn number(i: u32) -> PhoneNumber {
    PhoneNumber::parse(&format!("+1415555{:04}", 1000 + i)).unwrap_or_else(|e| panic!("{e}"))
}

fn entry(tenant: &str, n: PhoneNumber, secs: i64) -> DoNotCallEntry {
    DoNotCallEntry {
        tenant: TenantId::new(tenant),
        phone_number: n,
        added_by: UserId::new("admin-1"),
        added_at: at(secs),
    }
}

/// Adding is idempotent (the first entry stays), `contains` sees it, removing
/// takes it off, and removing an unlisted number is `NotFound`.
pub async fn add_contains_remove(store: Store) {
    let t = TenantId::new("acme");
    let n = number(1);
    assert!(!store.contains(&t, &n).await.expect("contains"));
    assert_eq!(store.get(&t, &n).await.expect("get"), None);
    assert!(store.add(&entry("acme", n.clone(), 10)).await.expect("add"));
    assert!(store.contains(&t, &n).await.expect("contains"));
    assert_eq!(
        store.get(&t, &n).await.expect("get"),
        Some(entry("acme", n.clone(), 10))
    );
    assert_eq!(
        store.get(&TenantId::new("globex"), &n).await.expect("get"),
        None,
        "another tenant's list"
    );
    let again = entry("acme", n.clone(), 20);
    assert!(!store.add(&again).await.expect("add again"));
    let page = store.list(&t, 10, None).await.expect("list");
    assert_eq!(
        page.items,
        vec![entry("acme", n.clone(), 10)],
        "first entry kept"
    );
    store.remove(&t, &n).await.expect("remove");
    assert!(!store.contains(&t, &n).await.expect("contains"));
    assert_eq!(store.get(&t, &n).await.expect("get"), None);
    let err = store.remove(&t, &n).await.expect_err("not listed");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        store
            .list(&t, 10, None)
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

/// One tenant's list never shows, matches or removes another's.
pub async fn lists_are_per_tenant(store: Store) {
    let (a, b) = (TenantId::new("acme"), TenantId::new("globex"));
    let n = number(2);
    store.add(&entry("acme", n.clone(), 10)).await.expect("add");
    assert!(!store.contains(&b, &n).await.expect("contains"));
    assert!(
        store
            .list(&b, 10, None)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    let err = store.remove(&b, &n).await.expect_err("other tenant");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(store.contains(&a, &n).await.expect("still listed"));
    // The same number on both lists is two entries.
    assert!(
        store
            .add(&entry("globex", n.clone(), 11))
            .await
            .expect("add")
    );
    store.remove(&a, &n).await.expect("remove");
    assert!(store.contains(&b, &n).await.expect("b keeps it"));
}

/// 45 entries listed 20 at a time come back each once, oldest first.
pub async fn list_pages_oldest_first_without_gaps(store: Store) {
    let t = TenantId::new("acme");
    // Added in shuffled order, each at its own instant.
    let mut expected = Vec::new();
    for i in (0..45u32).map(|i| (i * 17) % 45) {
        let e = entry("acme", number(100 + i), 1_000 + i64::from(i));
        store.add(&e).await.expect("add");
        expected.push(e);
    }
    store
        .add(&entry("other", number(500), 5))
        .await
        .expect("add other");
    expected.sort_by_key(|e| e.added_at);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.list(&t, 20, cursor.as_deref()).await.expect("page");
        assert!(page.items.len() <= 20);
        seen.extend(page.items);
        pages += 1;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
}

/// A cursor the store did not make is a `Validation` error on `nextToken`; a
/// limit of 0 is a `Validation` error too.
pub async fn do_not_call_invalid_cursor_is_a_validation_error(store: Store) {
    let t = TenantId::new("acme");
    let err = store
        .list(&t, 10, Some("not-a-cursor"))
        .await
        .expect_err("bad cursor");
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert_eq!(err.field(), Some("nextToken"));
    let err = store.list(&t, 0, None).await.expect_err("limit 0");
    assert_eq!(err.kind(), ErrorKind::Validation);
}
