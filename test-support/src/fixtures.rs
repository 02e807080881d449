//! Fixtures the adapters' tests share, built on [`airmy_verify::testing`] (its secrets, sample
//! events, conformance table and fixed clock are used as they are, not copied): the deliveries
//! the tests send, the verifiers they configure, counters, and idempotency guards.
//!
//! Behind the `fixtures` feature ([`redis_guard`] behind `redis`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airmy_verify::idempotency::{Idempotency, MemoryStore};
use airmy_verify::testing::{self, Case, Delivery};
use airmy_verify::time::OffsetDateTime;
use airmy_verify::{Clock, Secret, Verifier};
use serde_json::{Value, json};

/// The path the adapters' tests serve their webhook route on.
pub const PATH: &str = "/hooks/airmy";

/// [`testing::SECRET`] as a [`Secret`].
///
/// # Panics
///
/// Never: the testing secret is not empty.
#[must_use]
pub fn secret() -> Secret {
    Secret::new(testing::SECRET).expect("secret")
}

/// A `run.completed` sample event (id `evt_test_run_completed`, created at
/// [`testing::fixed_now`]) signed with [`testing::SECRET`].
#[must_use]
pub fn valid() -> Delivery {
    testing::sample_event("run.completed").signed(testing::SECRET)
}

/// The same event as [`valid`], signed with [`testing::WRONG_SECRET`].
#[must_use]
pub fn forged() -> Delivery {
    testing::sample_event("run.completed").signed(testing::WRONG_SECRET)
}

/// A `run.completed` sample event with `id`, created at [`testing::fixed_now`], signed with
/// [`testing::SECRET`]: for verifiers on the fixed clock.
#[must_use]
pub fn delivery_with_id(id: &str) -> Delivery {
    testing::sample_event("run.completed")
        .id(id)
        .signed(testing::SECRET)
}

/// A `run.completed` sample event with `id`, created now, signed with [`testing::SECRET`]:
/// for verifiers on the system clock ([`verifier_on_system_clock`]).
#[must_use]
pub fn fresh_delivery_with_id(id: &str) -> Delivery {
    testing::sample_event("run.completed")
        .id(id)
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET)
}

/// The conformance case named `name`.
///
/// # Panics
///
/// When the table has no such case.
#[must_use]
pub fn case(name: &str) -> Case {
    testing::case(name).expect("case exists")
}

/// The conformance cases with bodies under 64 KiB, repeated in order to `n` requests.
#[must_use]
pub fn small_cases_cycled(n: usize) -> Vec<Case> {
    let cases: Vec<Case> = testing::conformance_cases()
        .into_iter()
        .filter(|c| c.body.len() < 64 * 1024)
        .collect();
    cases.iter().cycle().take(n).cloned().collect()
}

/// A verifier of [`testing::SECRET`] with the default settings, on the system clock.
#[must_use]
pub fn verifier_on_system_clock() -> Verifier {
    Verifier::new(secret())
}

/// A verifier of [`testing::SECRET`] on [`testing::FixedClock`] with a body timeout of
/// `timeout`.
#[must_use]
pub fn verifier_with_body_timeout(timeout: Duration) -> Verifier {
    Verifier::builder(secret())
        .clock(testing::FixedClock::default())
        .body_timeout(timeout)
        .build()
}

/// A clock at the conformance instant that counts how often it is read: the core reads it
/// once per verification (the freshness check), so this counts verifications.
#[derive(Debug, Clone, Default)]
pub struct CountingClock(Arc<AtomicUsize>);

impl Clock for CountingClock {
    fn now(&self) -> OffsetDateTime {
        self.0.fetch_add(1, Ordering::SeqCst);
        testing::fixed_now()
    }
}

impl CountingClock {
    /// A verifier of [`testing::SECRET`] on this clock.
    #[must_use]
    pub fn verifier(&self) -> Verifier {
        Verifier::builder(secret()).clock(self.clone()).build()
    }

    /// How often the clock was read.
    #[must_use]
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Counts a handler's runs: the handler adds one to the shared counter, the test reads
/// [`count`](Self::count).
#[derive(Debug, Clone, Default)]
pub struct Ran(pub Arc<AtomicUsize>);

impl Ran {
    /// How many runs were counted.
    #[must_use]
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// `body` parsed as JSON.
///
/// # Panics
///
/// When it is not JSON, showing it.
#[must_use]
pub fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

/// `bytes` as a `String`.
///
/// # Panics
///
/// When they are not UTF-8.
#[must_use]
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// The answer the idempotency guard gives a duplicate of event `id`.
#[must_use]
pub fn duplicate_of(id: &str) -> Value {
    json!({ "status": "duplicate", "id": id })
}

/// A guard on an in-memory store of 1000 entries, for [`testing::conformance_verifier`].
#[must_use]
pub fn memory_guard() -> Idempotency {
    Idempotency::new(MemoryStore::new(1000), &testing::conformance_verifier())
}

/// A Redis key prefix `{name}:{process id}-{nanoseconds}:`, which keeps runs (and tests)
/// against a shared `AIRMY_REDIS_URL` apart.
#[must_use]
pub fn unique_prefix(name: &str) -> String {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!("{name}:{}-{nanos}:", std::process::id())
}

/// A guard on `server` with keys under [`unique_prefix`]`(name)`, for `verifier`.
///
/// # Panics
///
/// When Redis cannot be reached.
#[cfg(feature = "redis")]
pub async fn redis_guard(
    server: &crate::RedisServer,
    name: &str,
    verifier: &Verifier,
) -> Idempotency {
    use airmy_verify::idempotency::{RedisStore, RedisStoreOptions};
    let options = RedisStoreOptions::default().prefix(unique_prefix(name));
    let store = RedisStore::connect(server.url(), options)
        .await
        .expect("Redis reachable");
    Idempotency::new(store, verifier)
}

/// Waits until `guard` runs no handler, for at most `limit`.
///
/// # Panics
///
/// When a guarded handler still runs after `limit`.
pub async fn idle_within(guard: &Idempotency, limit: Duration) {
    tokio::time::timeout(limit, guard.wait_idle())
        .await
        .expect("the guarded handler finished");
}
