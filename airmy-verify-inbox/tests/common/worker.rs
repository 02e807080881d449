//! Worker scenarios every backend must survive, run by each backend's test file on a fresh
//! inbox (the conformance suite checks the backend's operations; these check the worker on
//! top of it).
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airmy_verify::event::{AlertTriggered, RunCompleted};
use airmy_verify::{Envelope, Event};
use airmy_verify_inbox::conformance::{Harness, delivery};
use airmy_verify_inbox::{
    Accepted, Context, EntryState, HandlerError, Handlers, Inbox, ListQuery, Order, RetryPolicy,
};
use tokio_util::sync::CancellationToken;

pub fn fast_policy() -> RetryPolicy {
    RetryPolicy::default()
        .initial(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
        .max_age(Duration::from_secs(60))
}

pub async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `inbox` holds no pending, scheduled or processing entry (30 s at most).
pub async fn wait_until_finished(inbox: &Inbox) {
    wait_until("every entry finished", async || {
        let stats = inbox.admin().stats().await.expect("stats");
        stats.pending + stats.scheduled + stats.processing == 0
    })
    .await;
}

/// Handlers for any event that count each call in `calls`, then take `time` and succeed.
pub fn counting(calls: Arc<AtomicUsize>, time: Duration) -> Handlers {
    Handlers::new().fallback(move |_e: Envelope<Event>, _ctx: Context| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(time).await;
            Ok::<(), HandlerError>(())
        }
    })
}

pub async fn an_outage_longer_than_airmys_retries_loses_nothing(inbox: Inbox) {
    // The handler's database is down for 1.5 s (AIRMY's whole schedule, scaled down 30 times).
    let started = Instant::now();
    let handled = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (h, f) = (handled.clone(), failures.clone());
    let handlers = Handlers::new().fallback(move |_event: Envelope<Event>, _ctx: Context| {
        let (h, f) = (h.clone(), f.clone());
        async move {
            if started.elapsed() < Duration::from_millis(1500) {
                f.fetch_add(1, Ordering::SeqCst);
                return Err::<(), HandlerError>("database unreachable".into());
            }
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .retry_policy(fast_policy())
            .concurrency(4)
            .run(shutdown.clone()),
    );
    for i in 0..50 {
        let d = delivery(&format!("evt_outage_{i}"), "run.completed");
        assert_eq!(inbox.accept(&d).await.expect("accepted"), Accepted::Stored);
    }
    wait_until("every event handled", async || {
        handled.load(Ordering::SeqCst) == 50
    })
    .await;
    // The handler's success is recorded just after it returns.
    wait_until("every completion recorded", async || {
        inbox.admin().stats().await.expect("stats").done == 50
    })
    .await;
    let stats = inbox.admin().stats().await.expect("stats");
    assert_eq!(
        (stats.done, stats.dead, stats.pending, stats.scheduled),
        (50, 0, 0, 0)
    );
    assert!(
        failures.load(Ordering::SeqCst) >= 50,
        "each failed at least once"
    );
    shutdown.cancel();
    worker.await.expect("worker");
}

pub async fn a_permanent_failure_becomes_a_dead_letter_and_replay_brings_it_back(inbox: Inbox) {
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let (fx, at) = (fixed.clone(), attempts.clone());
    let handlers = Handlers::new().on(move |_alert: Envelope<AlertTriggered>, ctx: Context| {
        let (fx, at) = (fx.clone(), at.clone());
        async move {
            at.fetch_add(1, Ordering::SeqCst);
            assert!(ctx.attempt >= 1);
            if fx.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err::<(), HandlerError>("the pager rejects this alert".into())
            }
        }
    });
    let policy = fast_policy().max_attempts(Some(3));
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .retry_policy(policy)
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_doomed", "alert.triggered"))
        .await
        .expect("accept");
    wait_until("a dead letter", async || {
        inbox.admin().stats().await.expect("stats").dead == 1
    })
    .await;
    let dead = inbox
        .admin()
        .list(&ListQuery::new(EntryState::Dead).order(Order::Newest))
        .await
        .expect("dead")
        .entries;
    assert_eq!(dead[0].id, "evt_doomed");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("the pager rejects this alert")
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    fixed.store(true, Ordering::SeqCst);
    inbox.admin().replay("evt_doomed").await.expect("replay");
    wait_until("the replay handled", async || {
        inbox.admin().stats().await.expect("stats").done == 1
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    shutdown.cancel();
    worker.await.expect("worker");
}

pub async fn panics_and_timeouts_are_failures_retried_and_unhandled_types_complete(inbox: Inbox) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handlers = Handlers::new().on(move |_run: Envelope<RunCompleted>, ctx: Context| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            match ctx.attempt {
                1 => panic!("handler bug"),
                2 => tokio::time::sleep(Duration::from_secs(60)).await, // past the timeout
                _ => {}
            }
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .retry_policy(fast_policy())
            .handler_timeout(Duration::from_millis(200))
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_flaky", "run.completed"))
        .await
        .expect("accept");
    // No handler and no fallback for this type: completed, not retried forever.
    inbox
        .accept(&delivery("evt_nobody", "deployment.created"))
        .await
        .expect("accept");
    wait_until("both done", async || {
        inbox.admin().stats().await.expect("stats").done == 2
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "panic, timeout, success");
    shutdown.cancel();
    worker.await.expect("worker");
}

pub async fn shutdown_releases_unfinished_entries_and_another_worker_finishes_them(inbox: Inbox) {
    let slow = Handlers::new().fallback(|_e: Envelope<Event>, _ctx: Context| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<(), HandlerError>(())
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        inbox
            .worker(slow)
            .shutdown_deadline(Duration::from_millis(200))
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_interrupted", "test"))
        .await
        .expect("accept");
    wait_until("processing", async || {
        inbox.admin().stats().await.expect("stats").processing == 1
    })
    .await;
    let asked = Instant::now();
    shutdown.cancel();
    worker.await.expect("worker");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the deadline holds"
    );
    let stats = inbox.admin().stats().await.expect("stats");
    assert_eq!(
        (stats.processing, stats.pending),
        (0, 1),
        "released, due at once"
    );

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let quick = Handlers::new().fallback(move |e: Envelope<Event>, ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push((e.id, ctx.attempt));
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(inbox.worker(quick).run(shutdown.clone()));
    wait_until("handled by the next worker", async || {
        seen.lock().expect("lock").len() == 1
    })
    .await;
    assert_eq!(
        seen.lock().expect("lock")[0],
        ("evt_interrupted".to_owned(), 1)
    );
    shutdown.cancel();
    worker.await.expect("worker");
}

pub async fn an_entry_whose_worker_died_is_taken_over_after_the_lease(inbox: Inbox) {
    inbox
        .accept(&delivery("evt_orphan", "test"))
        .await
        .expect("accept");
    // A worker that takes the entry and dies (never completes it).
    let taken = inbox
        .queue()
        .take(1, Duration::from_millis(300))
        .await
        .expect("take");
    assert_eq!(taken.len(), 1);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let handlers = Handlers::new().fallback(move |e: Envelope<Event>, ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push((e.id, ctx.attempt));
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(inbox.worker(handlers).run(shutdown.clone()));
    wait_until("taken over", async || seen.lock().expect("lock").len() == 1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the lease ran out"
    );
    assert_eq!(seen.lock().expect("lock")[0], ("evt_orphan".to_owned(), 2));
    shutdown.cancel();
    worker.await.expect("worker");
}

pub async fn a_handler_slower_than_the_lease_is_not_run_twice(inbox: Inbox) {
    let calls = Arc::new(AtomicUsize::new(0));
    let handlers = |calls| counting(calls, Duration::from_millis(1200));
    let shutdown = CancellationToken::new();
    let lease = Duration::from_millis(300);
    let one = tokio::spawn(
        inbox
            .worker(handlers(calls.clone()))
            .lease(lease)
            .run(shutdown.clone()),
    );
    let two = tokio::spawn(
        inbox
            .worker(handlers(calls.clone()))
            .lease(lease)
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_slow", "test"))
        .await
        .expect("accept");
    wait_until("done", async || {
        inbox.admin().stats().await.expect("stats").done == 1
    })
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the lease was extended, never taken over"
    );
    shutdown.cancel();
    one.await.expect("worker");
    two.await.expect("worker");
}

pub async fn replay_makes_a_scheduled_retry_due_now_and_refuses_one_being_processed(
    h: &impl Harness,
) {
    let b = h.backend();
    b.accept(&delivery("evt_sched", "test"))
        .await
        .expect("accept");
    let leased = b.take(1, Duration::from_secs(60)).await.expect("take");
    let entry = &leased[0];
    let later = h.now() + Duration::from_secs(3600);
    assert!(
        b.retry(&entry.id, &entry.token, "down", later)
            .await
            .expect("retry")
    );
    assert!(
        b.take(1, Duration::from_secs(60))
            .await
            .expect("take")
            .is_empty()
    );
    b.replay("evt_sched")
        .await
        .expect("a scheduled retry is made due now");
    let again = b.take(1, Duration::from_secs(60)).await.expect("take");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2, "its attempts are kept");
    let err = b.replay("evt_sched").await.expect_err("being processed");
    assert_eq!(err.kind(), airmy_verify_inbox::ErrorKind::Busy);
    assert!(err.to_string().contains("is being processed"), "{err}");
}

pub async fn entries_taken_ahead_behind_slow_handlers_keep_their_lease(inbox: Inbox) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let handlers = Handlers::new().fallback(move |e: Envelope<Event>, ctx: Context| {
        let s = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            s.lock().expect("lock").push((e.id, ctx.attempt));
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    // One slot, a 300 ms lease, 700 ms handlers: entries wait in the take-ahead queue for
    // longer than their lease.
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .concurrency(2)
            .lease(Duration::from_millis(300))
            .run(shutdown.clone()),
    );
    for i in 0..6 {
        inbox
            .accept(&delivery(&format!("evt_ahead_{i}"), "test"))
            .await
            .expect("accept");
    }
    wait_until("all handled", async || {
        seen.lock().expect("lock").len() >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 6, "each once: {seen:?}");
    assert!(
        seen.iter().all(|(_, attempt)| *attempt == 1),
        "no lease ran out in the queue: {seen:?}"
    );
    shutdown.cancel();
    worker.await.expect("worker");
}
