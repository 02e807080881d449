//! Shared by the backends' test files.
#[cfg(feature = "postgres")]
pub mod effects;
pub mod pause;
pub mod worker;

/// One `#[tokio::test]` per worker scenario of [`worker`], each on an inbox from the test
/// file's `fresh(name) -> (Inbox, guard)`: the list lives here once, for every backend.
#[allow(unused_macros)] // not every test file runs the scenarios
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

/// The conformance harness of a backend on a server that keeps time itself (Redis,
/// PostgreSQL): time passes by sleeping; `server` is kept alive as long as the backend.
#[allow(dead_code)] // not every test file uses it
pub(crate) struct ServerClock<B, S> {
    pub(crate) backend: B,
    pub(crate) server: S,
}

impl<B: airmy_verify_inbox::Backend, S: Sync> airmy_verify_inbox::conformance::Harness
    for ServerClock<B, S>
{
    fn backend(&self) -> &dyn airmy_verify_inbox::Backend {
        &self.backend
    }

    async fn advance(&self, by: std::time::Duration) {
        tokio::time::sleep(by).await;
    }

    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }
}
