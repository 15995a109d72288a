//! The backend conformance suite (feature `testing`).
//!
//! Async functions that assert the store contracts of [`crate::store`]; every
//! backend runs the same ones. Each takes a fresh, empty store. The macros
//! [`call_store_conformance_tests!`](crate::call_store_conformance_tests),
//! [`transcript_store_conformance_tests!`](crate::transcript_store_conformance_tests)
//! and [`window_store_conformance_tests!`](crate::window_store_conformance_tests)
//! expand to one `#[tokio::test]` per case, given a path to an
//! `async fn() -> Arc<dyn CallStore>` (resp. the other stores):
//!
//! ```ignore
//! async fn make() -> std::sync::Arc<dyn callcat_core::CallStore> { /* fresh empty store */ }
//! callcat_core::call_store_conformance_tests!(make);
//! ```
//!
//! A backend whose service may be absent returns `Option<Arc<dyn CallStore>>`
//! instead ([`TestStore`]); `None` skips the case. In CI it must never return `None`.

pub mod calls;
pub mod do_not_call;
pub mod fixtures;
mod keep_alive;
pub mod transcripts;
pub mod windows;

pub use keep_alive::KeepAlive;

/// Expands to one `#[tokio::test]` per [`calls`] case over the store `$make().await`.
#[macro_export]
macro_rules! call_store_conformance_tests {
    ($make:path) => {
        $crate::__conformance_cases!($make, calls;
            create_get_round_trips_every_field,
            create_rejects_a_duplicate_id,
            update_is_compare_and_swap,
            upcoming_pages_soonest_first_without_gaps,
            finished_pages_latest_first_without_gaps,
            status_filter_selects_one_status,
            owners_never_see_each_other,
            delete_only_while_scheduled,
            find_by_provider_call_id,
            idempotent_create_returns_the_first_call,
            claim_takes_due_calls_in_order_and_sets_the_lease,
            claim_is_exclusive_under_concurrency,
            capped_claim_skips_owners_at_their_cap,
            count_by_status_counts_one_owners_calls,
            expired_lease_is_reclaimable,
            next_due_at_is_the_earliest_claimable_time,
            list_active_by_scope,
            list_tenant_range_pages_in_order,
            invalid_cursor_is_a_validation_error,
            active_calls_to_number_counts_in_scope
        );
    };
}

/// Expands to one `#[tokio::test]` per [`transcripts`] case.
#[macro_export]
macro_rules! transcript_store_conformance_tests {
    ($make:path) => {
        $crate::__conformance_cases!($make, transcripts;
            put_replaces_and_get_reads_back,
            append_creates_then_extends,
            expired_transcripts_are_hidden_and_deleted,
            get_by_provider_call_id
        );
    };
}

/// Expands to one `#[tokio::test]` per [`windows`] case.
#[macro_export]
macro_rules! window_store_conformance_tests {
    ($make:path) => {
        $crate::__conformance_cases!($make, windows;
            create_get_list_delete,
            list_all_pages_every_window,
            update_replaces_schedule_and_template
        );
    };
}

/// Expands to one `#[tokio::test]` per [`do_not_call`] case.
#[macro_export]
macro_rules! do_not_call_store_conformance_tests {
    ($make:path) => {
        $crate::__conformance_cases!($make, do_not_call;
            add_contains_remove,
            lists_are_per_tenant,
            list_pages_oldest_first_without_gaps,
            do_not_call_invalid_cursor_is_a_validation_error
        );
    };
}

/// What a conformance `make` function may return: a store, or `Option` of one
/// where `None` means "this backend's service is not configured here: skip" (a
/// backend should only return `None` outside CI).
pub trait TestStore<T> {
    /// The store, or `None` to skip.
    fn into_test_store(self) -> Option<T>;
}

impl<T> TestStore<T> for T {
    fn into_test_store(self) -> Option<T> {
        Some(self)
    }
}

impl<T> TestStore<T> for Option<T> {
    fn into_test_store(self) -> Option<T> {
        self
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($make:path, $module:ident; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some(store) = $crate::testing::TestStore::into_test_store($make().await) else {
                    return;
                };
                $crate::testing::$module::$case(store).await;
            }
        )+
    };
}
