//! Shared by the backends' test files.
pub mod worker;

/// One `#[tokio::test]` per worker scenario of [`worker`], each on an inbox from the test
/// file's `fresh(name) -> (Inbox, guard)`: the list lives here once, for every backend.
macro_rules! worker_scenarios {
    () => {
        worker_scenarios!(
            an_outage_longer_than_airmys_retries_loses_nothing,
            a_permanent_failure_becomes_a_dead_letter_and_replay_brings_it_back,
            panics_and_timeouts_are_failures_retried_and_unhandled_types_complete,
            shutdown_releases_unfinished_entries_and_another_worker_finishes_them,
            an_entry_whose_worker_died_is_taken_over_after_the_lease,
            a_handler_slower_than_the_lease_is_not_run_twice,
            entries_taken_ahead_behind_slow_handlers_keep_their_lease,
        );
    };
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (inbox, _guard) = fresh(stringify!($name)).await;
                common::worker::$name(inbox).await;
            }
        )*
    };
}
