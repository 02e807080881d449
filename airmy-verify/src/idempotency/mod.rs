//! Exactly-once handling of AIRMY's at-least-once deliveries.
//!
//! AIRMY retries a delivery (1 s, 5 s, 30 s) whenever it does not see a 2xx within 10 s, so a
//! receiver sees the same event `id` again after a slow handler, a lost response or a crash.
//! An [`Idempotency`] guard, keyed by the **verified** envelope id, makes the handler run once:
//!
//! | situation | answer | handler |
//! |---|---|---|
//! | first delivery of an id | the handler's | runs (the id is claimed, "in flight") |
//! | handler answered 2xx | — | the id is committed |
//! | handler answered non-2xx, failed or panicked | — | the claim is released: AIRMY's retry runs it again |
//! | a delivery of a committed id | 200 `{"status":"duplicate","id":"…"}` | does not run |
//! | a delivery while the id is in flight | 409 `{"error":"delivery_in_flight"}` | does not run (AIRMY retries later) |
//! | the store is unreachable | by default: processed anyway, with a `WARN`; or 503 | runs / does not run |
//!
//! While a handler runs, its claim is extended every third of the lease ([`crate::lease`];
//! defaults to 30 s), so a slow handler keeps it; a claim whose process died expires after the
//! lease. Committed ids are kept for the verifier's [dedupe window](crate::dedupe_window)
//! (twice the freshness tolerance plus a minute): an older delivery of the same event is
//! refused as stale before it reaches the guard, so the store stays bounded.
//! [`Idempotency::remember_for`] keeps them longer, never shorter. With freshness disabled no
//! redelivery is too old, and ids are kept for [`MAX_DURATION`]. Durations longer than
//! [`MAX_DURATION`] (100 years) are treated as 100 years by every store ("never expires", in
//! practice).
//!
//! A commit that finds another delivery's claim or commit on the id (its own claim had
//! expired, say because the store was unreachable for a whole lease) cannot be recorded: the
//! other delivery may run the handler again. Every store reports it the same way, as
//! [`Commit::Lost`], and the guard logs it as a warning.
//!
//! **The handler runs to completion.** Adapters run a guarded handler detached from the
//! connection (a task of its own): when AIRMY hangs up at its 10 s timeout, the server shuts
//! down, or a timeout layer drops the request, the handler still finishes and its outcome is
//! recorded, so AIRMY's next retry gets `200 duplicate` instead of a 409 for the rest of the
//! lease. [`Idempotency::wait_idle`] waits for such handlers at shutdown.
//!
//! Stores: [`MemoryStore`] for one process; `RedisStore` (feature `redis`) for replicas sharing
//! state; your own by implementing [`IdempotencyStore`]. Adapters wire the guard in as a
//! layer / middleware of its own behind the verifying one, through [`Idempotency::run`], the
//! one way to drive it; the statuses and bodies above are its [`Guarded::Answered`] answers.
//!
//! Where each part lives: the guard in `guard.rs`, the store trait and its answers in
//! `store.rs`, the stores in `memory.rs` and `redis_store.rs`.
//!
//! # Example
//!
//! ```
//! use airmy_verify::idempotency::{Guarded, Idempotency, MemoryStore};
//! use airmy_verify::{Secret, Verifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let guard = Idempotency::new(MemoryStore::new(100_000), &verifier);
//!
//! // The handler takes the request (here `()`) and answers an HTTP status.
//! let handler = |()| async { Ok::<u16, std::convert::Infallible>(200) };
//! let first = guard.run("evt_1", (), handler, |status| *status).await;
//! assert!(matches!(first, Guarded::Ran(Ok(200))));
//!
//! // AIRMY's retry of the same event: answered 200 duplicate, the handler does not run.
//! let retry = guard.run("evt_1", (), handler, |status| *status).await;
//! let Guarded::Answered { answer, .. } = retry else { unreachable!() };
//! assert_eq!(answer.status(), 200);
//! # Ok(())
//! # }
//! ```

mod guard;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;
mod store;

pub use guard::{Guarded, Idempotency, OnStoreError};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::{RedisStore, RedisStoreOptions};
pub use store::{
    Claim, Commit, IdempotencyStore, MAX_DURATION, StoreError, StoreErrorKind, StoreFuture,
};
