//! Shared by the backends' test files.
pub mod worker;

/// One `#[tokio::test]` per worker scenario, each on an inbox from the test file's
/// `fresh(name) -> (Inbox, guard)`.
macro_rules! worker_scenarios {
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
