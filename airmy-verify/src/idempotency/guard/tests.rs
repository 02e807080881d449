//! The guard's tests (a file of their own, so that `guard.rs` stays readable).

use std::pin::pin;
use std::sync::Arc;

use futures_util::FutureExt;

use super::*;
use crate::idempotency::{MemoryStore, StoreError, StoreFuture};

/// Polls a future that never waits (the memory store's are ready at once).
fn block<T>(f: impl Future<Output = T>) -> T {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the memory store never waits"),
    }
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn retention_defaults_to_the_dedupe_window_or_max_without_freshness() {
    let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
    let guard = Idempotency::new(MemoryStore::new(1), &verifier);
    assert_eq!(guard.retention(), Duration::from_secs(660));
    let off = Verifier::builder(crate::Secret::new("s").expect("s"))
        .without_freshness_check()
        .build();
    let guard = Idempotency::new(MemoryStore::new(1), &off);
    assert_eq!(guard.retention(), MAX_DURATION);
    // No window without freshness: a shorter retention is the user's call.
    assert_eq!(guard.remember_for(LONG).retention(), LONG);
}

#[test]
fn remember_for_below_the_window_is_raised_to_it_with_a_warning() {
    let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
    let window = verifier.dedupe_window().expect("freshness on");
    let (capture, _default) = test_support::spans::SpanCapture::install();
    let guard = Idempotency::new(MemoryStore::new(1), &verifier).remember_for(LONG);
    assert_eq!(guard.retention(), window);
    let events = capture.events();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("raised to the window")),
        "a warning says the retention was raised: {events:?}"
    );
}

#[test]
fn remember_for_above_the_window_is_kept() {
    let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
    let window = verifier.dedupe_window().expect("freshness on");
    let (capture, _default) = test_support::spans::SpanCapture::install();
    let day = Duration::from_secs(24 * 3600);
    let guard = Idempotency::new(MemoryStore::new(1), &verifier).remember_for(day);
    assert_eq!(guard.retention(), day);
    assert_eq!(
        Idempotency::new(MemoryStore::new(1), &verifier)
            .remember_for(window)
            .retention(),
        window
    );
    assert_eq!(
        Idempotency::new(MemoryStore::new(1), &verifier)
            .remember_for(Duration::MAX)
            .retention(),
        MAX_DURATION
    );
    assert!(capture.events().is_empty(), "no warning");
}

#[test]
fn decisions_map_to_the_documented_responses() {
    let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
    let guard = Idempotency::new(MemoryStore::new(10), &verifier);
    let Begin::Run(ticket) = block(guard.begin("evt_1")) else {
        panic!("first delivery runs")
    };
    let in_flight = block(guard.begin("evt_1"));
    let answer = |begin: Begin| {
        let Err(answer) = begin.into_ticket() else {
            panic!("an answer")
        };
        let body = String::from_utf8(answer.body().to_vec()).expect("UTF-8");
        (answer.status(), body, answer.outcome())
    };
    assert_eq!(
        answer(in_flight),
        (
            409,
            r#"{"error":"delivery_in_flight"}"#.to_owned(),
            Some(Outcome::InFlight)
        )
    );
    block(ticket.finish(true));
    assert_eq!(
        answer(block(guard.begin("evt_1"))),
        (
            200,
            r#"{"id":"evt_1","status":"duplicate"}"#.to_owned(),
            Some(Outcome::Duplicate)
        )
    );
    let full =
        Idempotency::new(MemoryStore::new(0), &verifier).on_store_error(OnStoreError::Refuse);
    assert_eq!(
        answer(block(full.begin("evt_2"))),
        (
            503,
            r#"{"error":"idempotency_store_unavailable"}"#.to_owned(),
            Some(Outcome::Rejected)
        )
    );
    let lenient = Idempotency::new(MemoryStore::new(0), &verifier);
    assert!(matches!(block(lenient.begin("evt_2")), Begin::Run(_)));
}

#[tokio::test]
async fn run_commits_successes_and_releases_failures_errors_and_panics() {
    let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
    let guard = Idempotency::new(MemoryStore::new(10), &verifier);
    let ok = |status: u16| move |()| std::future::ready(Ok::<u16, ()>(status));
    let status = |s: &u16| *s;
    assert!(matches!(
        guard.run("a", (), ok(500), status).await,
        Guarded::Ran(Ok(500))
    ));
    let failed = guard
        .run("a", (), |()| std::future::ready(Err::<u16, ()>(())), status)
        .await;
    assert!(matches!(failed, Guarded::Ran(Err(()))));
    let panicked = AssertUnwindSafe(async {
        let handler = |()| async { panic!("handler panicked") };
        guard.run("a", (), handler, |s: &u16| *s).await as Guarded<Result<u16, ()>, ()>
    })
    .catch_unwind()
    .await;
    assert!(panicked.is_err());
    assert_eq!(
        guard.running(),
        0,
        "a panicked handler is not counted as running"
    );
    assert!(matches!(
        guard.run("a", (), ok(200), status).await,
        Guarded::Ran(Ok(200))
    ));
    let mut ran = false;
    let again = guard
        .run(
            "a",
            (),
            |()| {
                ran = true;
                std::future::ready(Ok::<u16, ()>(200))
            },
            status,
        )
        .await;
    assert!(!ran, "a duplicate never calls the handler");
    assert!(matches!(again, Guarded::Answered { answer, .. } if answer.status() == 200));
}

#[tokio::test(start_paused = true)]
async fn a_handler_slower_than_the_lease_keeps_its_claim() {
    let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
    let guard = Idempotency::new(MemoryStore::new(10), &verifier).lease(Duration::from_millis(300));
    let slow = guard.run(
        "evt",
        (),
        |()| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<u16, ()>(200)
        },
        |s| *s,
    );
    let mut slow = pin!(slow);
    // Advance the paused clock in steps, with the handler running, and retry meanwhile.
    for _ in 0..10 {
        tokio::select! {
            _ = slow.as_mut() => panic!("finished early"),
            () = tokio::time::sleep(Duration::from_millis(150)) => {}
        }
        assert!(matches!(guard.begin("evt").await, Begin::InFlight));
    }
    assert!(matches!(slow.await, Guarded::Ran(Ok(200))));
    assert!(matches!(guard.begin("evt").await, Begin::Duplicate { .. }));
}

#[tokio::test]
async fn wait_idle_returns_once_running_handlers_finish() {
    let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
    let guard = Idempotency::new(MemoryStore::new(10), &verifier);
    guard.wait_idle().await;
    let running = guard.clone();
    let task = tokio::spawn(async move {
        running
            .run(
                "evt",
                (),
                |()| async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<u16, ()>(200)
                },
                |s| *s,
            )
            .await
    });
    while guard.running() == 0 {
        tokio::task::yield_now().await;
    }
    guard.wait_idle().await;
    assert!(task.is_finished() || guard.running() == 0);
    assert!(matches!(guard.begin("evt").await, Begin::Duplicate { .. }));
}

#[test]
fn huge_durations_are_clamped_alike() {
    let verifier = Verifier::builder(crate::Secret::new("s").expect("s"))
        .tolerance(Duration::MAX)
        .build();
    let guard = Idempotency::new(MemoryStore::new(10), &verifier).lease(Duration::MAX);
    assert_eq!(guard.retention(), MAX_DURATION);
    let Begin::Run(ticket) = block(guard.begin("evt_1")) else {
        panic!("runs")
    };
    block(ticket.finish(true));
    assert!(matches!(
        block(guard.begin("evt_1")),
        Begin::Duplicate { .. }
    ));
}

/// A store whose claims are recorded but whose replies are lost (a Redis `SET` that
/// succeeded and then timed out): the claim exists, the caller sees an error.
struct LostReplies(Arc<MemoryStore>);

impl IdempotencyStore for LostReplies {
    fn claim<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, Claim> {
        let _ = self.0.claim_now(id, token, lease);
        Box::pin(std::future::ready(Err(StoreError::new("reply timed out"))))
    }
    fn extend<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, bool> {
        self.0.extend(id, token, lease)
    }
    fn commit<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        retention: Duration,
    ) -> StoreFuture<'a, Commit> {
        self.0.commit(id, token, retention)
    }
    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> StoreFuture<'a, ()> {
        self.0.release(id, token)
    }
}

#[test]
fn a_claim_whose_reply_was_lost_is_released() {
    let store = Arc::new(MemoryStore::new(10));
    let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
    let guard = Idempotency::new(LostReplies(store.clone()), &verifier)
        .on_store_error(OnStoreError::Refuse);
    assert!(matches!(block(guard.begin("evt")), Begin::Unavailable));
    // The claim the store did record was freed: a retry is not "in flight" for a lease.
    assert!(store.is_empty());
    assert_eq!(
        block(store.claim("evt", "retry", LONG)).ok(),
        Some(Claim::Claimed)
    );
}

#[test]
fn a_failed_handler_releases_the_claim() {
    let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
    let guard = Idempotency::new(MemoryStore::new(10), &verifier);
    let Begin::Run(ticket) = block(guard.begin("evt_1")) else {
        panic!("runs")
    };
    block(ticket.finish(false));
    assert!(matches!(block(guard.begin("evt_1")), Begin::Run(_)));
}
