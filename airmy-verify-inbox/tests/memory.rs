//! The in-memory backend: the conformance suite and the worker scenarios, unchanged, as every
//! backend runs them; then what it promises of its own (a bound, a clone that shares).
#![cfg(feature = "memory")]

use std::time::Duration;

use airmy_verify_inbox::conformance::{self, Harness, ManualClock, delivery};
use airmy_verify_inbox::{
    Accepted, Admin, Backend, ErrorKind, Inbox, MemoryBackend, MemoryOptions, Store,
};
use time::OffsetDateTime;

#[macro_use]
mod common;

struct Memory {
    backend: MemoryBackend,
    clock: ManualClock,
}

impl Harness for Memory {
    fn backend(&self) -> &dyn Backend {
        &self.backend
    }

    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn now(&self) -> OffsetDateTime {
        airmy_verify::Clock::now(&self.clock)
    }
}

fn memory() -> Memory {
    let clock = ManualClock::new();
    Memory {
        backend: MemoryBackend::new(MemoryOptions::default().clock(clock.clone())),
        clock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_passes_the_conformance_suite() {
    conformance::run_all(&memory()).await;
}

#[tokio::test]
async fn a_full_memory_inbox_refuses_new_entries_but_knows_stored_ones() {
    let backend = MemoryBackend::new(MemoryOptions::default().max_unfinished(3));
    conformance::a_full_inbox_refuses_new_entries_but_knows_stored_ones(&backend).await;
}

#[allow(clippy::unused_async)] // the scenarios' `fresh` is async for the backends that connect
async fn fresh(_name: &str) -> (Inbox, ()) {
    (Inbox::new(MemoryBackend::new(MemoryOptions::default())), ())
}

worker_scenarios!();

#[tokio::test]
async fn replay_makes_a_scheduled_retry_due_now_and_refuses_one_being_processed() {
    common::worker::replay_makes_a_scheduled_retry_due_now_and_refuses_one_being_processed(
        &memory(),
    )
    .await;
}

/// Clones share the entries (an inbox for the route, the same one for the test's checks); a
/// new backend starts empty: nothing survives.
#[tokio::test]
async fn clones_share_and_a_new_backend_is_empty() {
    let backend = MemoryBackend::new(MemoryOptions::default());
    let inbox = Inbox::new(backend.clone());
    assert_eq!(
        inbox
            .accept(&delivery("evt_mem_1", "run.completed"))
            .await
            .expect("accepted"),
        Accepted::Stored
    );
    assert_eq!(backend.stats().await.expect("stats").pending, 1);
    assert_eq!(
        backend
            .accept(&delivery("evt_mem_1", "run.completed"))
            .await
            .expect("accepted"),
        Accepted::Duplicate
    );
    let fresh = MemoryBackend::new(MemoryOptions::default());
    assert_eq!(fresh.stats().await.expect("stats").pending, 0);
    let full = MemoryBackend::new(MemoryOptions::default().max_unfinished(0));
    let refused = full
        .accept(&delivery("evt_mem_2", "test"))
        .await
        .expect_err("no room");
    assert_eq!(refused.kind(), ErrorKind::Full);
}
