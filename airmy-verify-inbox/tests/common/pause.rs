//! A pause across a restart (the backend dropped and opened again on the same store), and the
//! cost of a take with a large paused backlog: shared by the backends' test files.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use airmy_verify_inbox::conformance::delivery;
use airmy_verify_inbox::{Accepted, Backend, EntryState, PauseScope};
use time::OffsetDateTime;

/// Accepts `n` entries of `event_type` named `{prefix}_{i}`, 200 at a time (so a backend that
/// batches commits them together).
pub async fn accept_many(b: &dyn Backend, prefix: &str, event_type: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}_{i}")).collect();
    for chunk in ids.chunks(200) {
        let deliveries: Vec<_> = chunk.iter().map(|id| delivery(id, event_type)).collect();
        for accepted in futures_util::future::join_all(deliveries.iter().map(|d| b.accept(d))).await
        {
            assert_eq!(accepted.expect("accept"), Accepted::Stored);
        }
    }
    ids
}

/// Before the restart: `pending` entries of a fresh type, and `scheduled` more whose retry is
/// due 300 ms later, then the type paused. The type and every id.
pub async fn pause_a_backlog(
    b: &dyn Backend,
    pending: usize,
    scheduled: usize,
) -> (String, Vec<String>) {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let event_type = format!("paused.{nanos}");
    let mut ids = accept_many(
        b,
        &format!("evt_held_{nanos}"),
        &event_type,
        pending + scheduled,
    )
    .await;
    // Some retries scheduled a little later (taken, then retried).
    let mut retried = 0;
    while retried < scheduled {
        let taken = b
            .take(scheduled - retried, Duration::from_secs(30))
            .await
            .expect("take");
        assert!(!taken.is_empty(), "entries to retry");
        let at = OffsetDateTime::now_utc() + Duration::from_millis(300);
        for entry in taken {
            assert!(
                b.retry(&entry.id, &entry.token, "later", at)
                    .await
                    .expect("retry")
            );
            retried += 1;
        }
    }
    let held = b
        .pause(&PauseScope::event_type(&event_type))
        .await
        .expect("pause");
    assert_eq!(held, (pending + scheduled) as u64, "every one held");
    ids.sort();
    (event_type, ids)
}

/// After the restart: the pause is in force, its entries paused and never taken, an accept of
/// the type held too; resumed, each is taken once (the retried ones as their second attempt).
pub async fn the_pause_held_across_the_restart(
    b: &dyn Backend,
    event_type: &str,
    ids: &[String],
    scheduled: usize,
) {
    let scope = PauseScope::event_type(event_type);
    let pauses = b.paused().await.expect("paused");
    assert!(pauses.iter().any(|p| p.scope == scope), "{pauses:?}");
    assert_eq!(b.stats().await.expect("stats").paused, ids.len() as u64);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..3 {
        for entry in b.take(512, Duration::from_secs(30)).await.expect("take") {
            assert_ne!(entry.event_type, event_type, "taken while paused");
            assert!(b.release(&entry.id, &entry.token).await.expect("release"));
        }
    }
    let late = format!("{}_late", ids[0]);
    assert_eq!(
        b.accept(&delivery(&late, event_type))
            .await
            .expect("accept"),
        Accepted::Stored
    );
    let state = b
        .entry(&late)
        .await
        .expect("entry")
        .expect("an entry")
        .summary
        .state;
    assert_eq!(state, EntryState::Paused);

    assert_eq!(
        b.resume(&scope).await.expect("resume"),
        ids.len() as u64 + 1
    );
    let mut wanted: HashSet<String> = ids.iter().cloned().collect();
    wanted.insert(late);
    let mut second_attempts = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wanted.is_empty() {
        assert!(Instant::now() < deadline, "{} never taken", wanted.len());
        let taken = b.take(512, Duration::from_secs(30)).await.expect("take");
        if taken.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for entry in taken {
            assert!(wanted.remove(&entry.id), "taken once: {}", entry.id);
            assert!(entry.attempt <= 2, "{entry:?}");
            if entry.attempt == 2 {
                second_attempts += 1;
            }
            assert!(b.complete(&entry.id, &entry.token).await.expect("complete"));
        }
    }
    assert_eq!(
        second_attempts, scheduled,
        "the retried ones, as their second attempt"
    );
}

/// Times `rounds` takes of an inbox with nothing due: empty; after `backlog` entries were
/// accepted and handled (the churn every entry leaves in a store, as a control); then beside
/// `backlog` entries of a paused type. Each twice: at once, then after `settle` (what the store
/// does by itself later: PostgreSQL's vacuum of the row versions a mass update left in the
/// index `take` reads; nothing for the others, whose second round shows SQLite's checkpoint
/// of the write-ahead log done). Printed, for BENCHMARKS.md and the report (no assertion of
/// speed).
pub async fn measure_take_with_a_paused_backlog(
    b: &dyn Backend,
    name: &str,
    backlog: usize,
    settle: impl AsyncFn(),
) {
    let rounds = 500;
    let time_takes = async || {
        let mut means = Vec::new();
        for round in 0..2 {
            if round == 1 {
                settle().await;
            }
            let started = Instant::now();
            for _ in 0..rounds {
                assert!(
                    b.take(16, Duration::from_secs(30))
                        .await
                        .expect("take")
                        .is_empty()
                );
            }
            means.push(started.elapsed() / rounds);
        }
        means
    };
    let empty = time_takes().await;
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    accept_many(b, &format!("evt_h_{nanos}"), "handled", backlog).await;
    let mut handled = 0;
    while handled < backlog {
        let taken = b.take(512, Duration::from_secs(60)).await.expect("take");
        assert!(!taken.is_empty(), "every entry is taken");
        let done = futures_util::future::join_all(
            taken
                .iter()
                .map(|entry| b.complete(&entry.id, &entry.token)),
        )
        .await;
        handled += done
            .into_iter()
            .filter(|d| *d.as_ref().expect("complete"))
            .count();
    }
    let after_handling = time_takes().await;
    let event_type = format!("paused.{nanos}");
    let started = Instant::now();
    accept_many(b, &format!("evt_p_{nanos}"), &event_type, backlog).await;
    let accepting = started.elapsed();
    let started = Instant::now();
    let held = b
        .pause(&PauseScope::event_type(&event_type))
        .await
        .expect("pause");
    let pausing = started.elapsed();
    assert_eq!(held, backlog as u64);
    let paused = time_takes().await;
    let started = Instant::now();
    let released = b
        .resume(&PauseScope::event_type(&event_type))
        .await
        .expect("resume");
    let resuming = started.elapsed();
    assert_eq!(released, backlog as u64);
    println!(
        "{name}, mean of {rounds} takes with nothing due (at once, settled): empty {empty:?}; after \
         {backlog} entries handled {after_handling:?}; beside {backlog} paused {paused:?}. \
         Accepting them {accepting:?}, pause {pausing:?}, resume {resuming:?}"
    );
}
