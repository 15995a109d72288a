//! [`WindowStore`] contract cases. Each takes a fresh, empty store.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{NaiveTime, Weekday};

use super::fixtures::{at, owner, t0, template};
use crate::error::ErrorKind;
use crate::ids::{Owner, WindowId};
use crate::store::WindowStore;
use crate::window::{CallWindow, RecurringWindow, WindowSchedule};

type Store = Arc<dyn WindowStore>;

fn recurring(o: &Owner) -> CallWindow {
    CallWindow {
        id: WindowId::new(),
        owner: o.clone(),
        schedule: WindowSchedule::Recurring(RecurringWindow {
            weekdays: vec![Weekday::Mon, Weekday::Wed],
            start: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default(),
            end: NaiveTime::from_hms_opt(10, 0, 0).unwrap_or_default(),
            timezone: chrono_tz::Europe::Berlin,
        }),
        template: template(),
        created_at: t0(),
    }
}

fn one_off(o: &Owner) -> CallWindow {
    CallWindow {
        id: WindowId::new(),
        owner: o.clone(),
        schedule: WindowSchedule::OneOff {
            start_at: at(3600),
            end_at: at(7200),
            timezone: chrono_tz::UTC,
        },
        template: template(),
        created_at: at(1),
    }
}

/// Create, get, list (own windows only, oldest first) and delete.
pub async fn create_get_list_delete(store: Store) {
    let a = owner("t1");
    let b = owner("t1");
    let w1 = recurring(&a);
    let w2 = one_off(&a);
    let wb = recurring(&b);
    for w in [&w1, &w2, &wb] {
        store.create(w).await.expect("create");
    }
    assert_eq!(store.get(&a, w1.id).await.expect("get"), Some(w1.clone()));
    assert_eq!(store.get(&b, w1.id).await.expect("get other"), None);
    let listed = store.list(&a).await.expect("list");
    assert_eq!(listed, vec![w1.clone(), w2.clone()]);

    let err = store.delete(&b, w1.id).await.expect_err("not b's");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    store.delete(&a, w1.id).await.expect("delete");
    assert_eq!(store.list(&a).await.expect("list"), vec![w2]);
    let err = store.delete(&a, w1.id).await.expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// `list_all` pages through every owner's windows without gaps or repeats.
pub async fn list_all_pages_every_window(store: Store) {
    let mut ids = HashSet::new();
    for i in 0..23 {
        let o = owner(if i % 3 == 0 { "t1" } else { "t2" });
        let w = if i % 2 == 0 {
            recurring(&o)
        } else {
            one_off(&o)
        };
        store.create(&w).await.expect("create");
        ids.insert(w.id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_all(5, cursor.as_deref()).await.expect("page");
        assert!(page.items.len() <= 5);
        seen.extend(page.items.iter().map(|w| w.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 23);
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);
}

/// `update` replaces the schedule and the template of an owner's window, keeps
/// its id, owner and creation time, and is `NotFound` for anyone else's window.
pub async fn update_replaces_schedule_and_template(store: Store) {
    let a = owner("t1");
    let w = recurring(&a);
    store.create(&w).await.expect("create");
    let mut edited = one_off(&a);
    edited.id = w.id;
    edited.created_at = w.created_at;
    edited.template.subject = "Edited".into();
    store.update(&edited).await.expect("update");
    let got = store.get(&a, w.id).await.expect("get").expect("present");
    assert_eq!(got, edited);
    assert_eq!(store.list(&a).await.expect("list"), vec![edited.clone()]);
    // Someone else's window, or none at all.
    let mut theirs = edited.clone();
    theirs.owner = owner("t2");
    let err = store.update(&theirs).await.expect_err("not theirs");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        store.get(&a, w.id).await.expect("get"),
        Some(edited.clone())
    );
    let mut missing = edited;
    missing.id = WindowId::new();
    let err = store.update(&missing).await.expect_err("absent");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}
