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
//! While a handler runs, its claim is extended every third of the lease (defaults to 30 s), so
//! a slow handler keeps it; a claim whose process died expires after the lease. Committed ids
//! are kept for twice the freshness tolerance plus a minute: an older delivery of the same
//! event is refused as stale before it reaches the guard, so the store stays bounded. With
//! freshness disabled the retention must be set. Durations longer than [`MAX_DURATION`]
//! (100 years) are treated as 100 years by every store ("never expires", in practice).
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
//! state. Adapters wire the guard in as a layer / middleware of its own behind the verifying
//! one, through [`Idempotency::run`]; the statuses and bodies above come from
//! [`Begin::answer`].
//!
//! # Example
//!
//! ```
//! use airmy_verify::idempotency::{Begin, Idempotency, MemoryStore};
//! use airmy_verify::{Secret, Verifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let guard = Idempotency::new(MemoryStore::new(100_000), &verifier)?;
//!
//! let Begin::Run(ticket) = guard.begin("evt_1").await else { unreachable!() };
//! // ... the handler runs and answers 200 ...
//! ticket.finish(true).await;
//! assert!(matches!(guard.begin("evt_1").await, Begin::Duplicate { .. }));
//! # Ok(())
//! # }
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{Either, select};

use crate::answer::Answer;
use crate::observe::{Outcome, metrics};
use crate::verifier::Verifier;

#[cfg(feature = "redis")]
mod redis_store;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::RedisStore;

/// A boxed future returned by [`IdempotencyStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The default lease of an in-flight claim: 30 seconds.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The longest lease or retention a store is asked for: 100 years. Longer durations (up to
/// `Duration::MAX`) are clamped to it, so every store treats them alike, as "never expires".
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The id was free (or already claimed with the caller's own token) and is now claimed
    /// with the caller's token.
    Claimed,
    /// Another delivery holds an unexpired claim on the id.
    InFlight,
    /// The id was committed: the event was processed.
    Done,
}

/// What [`IdempotencyStore::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The id is committed: the caller's claim held, or had expired with nobody else's in its
    /// place.
    Committed,
    /// Another delivery claimed or committed the id after the caller's claim expired; the
    /// commit was not recorded (that delivery's outcome decides).
    Lost,
}

/// Where claims and commits are kept. Implementations must make each method atomic: of two
/// concurrent claims of a free id, exactly one gets [`Claim::Claimed`]. Durations are at most
/// [`MAX_DURATION`].
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `id` with `token` for `lease`, unless it is done or claimed with another token.
    fn claim<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, Claim>;

    /// Extends `token`'s claim of `id` to `lease` from now; `false` when the claim is no longer
    /// `token`'s.
    fn extend<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, bool>;

    /// Marks `id` done for `retention`, unless another token claimed or committed it
    /// ([`Commit::Lost`]).
    fn commit<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        retention: Duration,
    ) -> StoreFuture<'a, Commit>;

    /// Frees `id`, if `token` still holds its claim (another's claim is never released).
    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> StoreFuture<'a, ()>;
}

/// A store that could not answer: unreachable, timed out, or full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(String);

impl StoreError {
    /// A store error with a message (no event data or secrets in it).
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "idempotency store unavailable: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// What to do with a delivery when the store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Run the handler anyway and log a warning: a possible duplicate is better than a lost
    /// event. The default.
    #[default]
    Process,
    /// Answer 503 `{"error":"idempotency_store_unavailable"}`; AIRMY retries later.
    Refuse,
}

/// The guard: a store and its settings. Cheap to clone; clones share the store and the count
/// of running handlers.
#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    lease: Duration,
    retention: Duration,
    on_error: OnStoreError,
    running: Arc<Running>,
}

/// How many guarded handlers are running, and a way to wait for none.
#[derive(Default)]
struct Running {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts one running handler for as long as it lives.
struct RunningGuard(Arc<Running>);

impl RunningGuard {
    fn new(running: &Arc<Running>) -> Self {
        running.count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(running))
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A guard that cannot be built as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyConfigError {
    /// Freshness is disabled, so how long to keep committed ids cannot be derived from the
    /// tolerance: set it with [`Idempotency::with_retention`].
    RetentionRequired,
}

impl fmt::Display for IdempotencyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "freshness is disabled, so the retention of committed event ids must be set \
             (Idempotency::with_retention)",
        )
    }
}

impl std::error::Error for IdempotencyConfigError {}

impl Idempotency {
    /// A guard on `store` for deliveries checked by `verifier`: committed ids are kept for
    /// twice its tolerance plus a minute (at most [`MAX_DURATION`]), claims lease for 30 s,
    /// and an unreachable store lets deliveries through with a warning.
    ///
    /// # Errors
    ///
    /// [`IdempotencyConfigError::RetentionRequired`] when the verifier's freshness check is
    /// disabled; use [`Idempotency::with_retention`] then.
    pub fn new(
        store: impl IdempotencyStore,
        verifier: &Verifier,
    ) -> Result<Self, IdempotencyConfigError> {
        let tolerance = verifier
            .tolerance()
            .ok_or(IdempotencyConfigError::RetentionRequired)?;
        Ok(Self::with_retention(
            store,
            tolerance
                .saturating_mul(2)
                .saturating_add(Duration::from_secs(60)),
        ))
    }

    /// A guard keeping committed ids for `retention` (at most [`MAX_DURATION`]).
    #[must_use]
    pub fn with_retention(store: impl IdempotencyStore, retention: Duration) -> Self {
        Self {
            store: Arc::new(store),
            lease: DEFAULT_LEASE,
            retention: retention.min(MAX_DURATION),
            on_error: OnStoreError::default(),
            running: Arc::default(),
        }
    }

    /// How long a claim lasts without being extended: a running handler extends it every
    /// third of the lease, so this is how long a claim outlives a process that died. Defaults
    /// to 30 seconds; at least 1 ms and at most [`MAX_DURATION`].
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.clamp(Duration::from_millis(1), MAX_DURATION);
        self
    }

    /// What to do when the store cannot be reached. Defaults to [`OnStoreError::Process`].
    #[must_use]
    pub fn on_store_error(mut self, policy: OnStoreError) -> Self {
        self.on_error = policy;
        self
    }

    /// How long committed ids are kept.
    #[must_use]
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// How many guarded handlers are running now.
    #[must_use]
    pub fn running(&self) -> usize {
        self.running.count.load(Ordering::SeqCst)
    }

    /// Waits until no guarded handler is running (for a graceful shutdown: adapters run
    /// handlers detached from their connections, so stopping the server does not stop them).
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.running.idle.notified();
            let mut idle = pin!(idle);
            idle.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Decides whether the handler runs for a (verified) event id.
    pub async fn begin(&self, event_id: &str) -> Begin {
        let token = crate::token::random_hex(16);
        match self.store.claim(event_id, &token, self.lease).await {
            Ok(Claim::Claimed) => {
                metrics::claim("claimed");
                Begin::Run(Ticket {
                    claim: Some((self.clone(), event_id.to_owned(), token)),
                })
            }
            Ok(Claim::InFlight) => {
                metrics::claim("in_flight");
                tracing::info!(
                    target: "airmy_verify",
                    event_id,
                    "delivery already in flight; answering 409"
                );
                Begin::InFlight {
                    id: event_id.to_owned(),
                }
            }
            Ok(Claim::Done) => {
                metrics::claim("duplicate");
                Begin::Duplicate {
                    id: event_id.to_owned(),
                }
            }
            Err(err) => {
                metrics::claim("store_error");
                metrics::store_error("claim");
                // The claim may have been stored with only its reply lost (a timeout): free it,
                // or this delivery's retries would meet it as "in flight" for a whole lease.
                let _ = self.store.release(event_id, &token).await;
                match self.on_error {
                    OnStoreError::Process => {
                        tracing::warn!(
                            target: "airmy_verify",
                            event_id,
                            reason = %err,
                            "idempotency store unavailable; processing the delivery anyway"
                        );
                        Begin::Run(Ticket { claim: None })
                    }
                    OnStoreError::Refuse => {
                        tracing::warn!(
                            target: "airmy_verify",
                            event_id,
                            reason = %err,
                            "idempotency store unavailable; refusing the delivery with 503"
                        );
                        Begin::Unavailable
                    }
                }
            }
        }
    }

    /// Runs a handler under the guard, the way adapters do: decides with [`Idempotency::begin`]
    /// first (so nothing of the handler runs for a duplicate), then calls `handler(input)`,
    /// extending the claim every third of the lease while it runs, and commits the id when
    /// the HTTP status of its output (`status`) is a 2xx, or releases it when it is not, when
    /// the handler returns `Err`, or when it panics (the panic is then resumed). This is the
    /// one place the "a 2xx commits" rule lives; adapters only say where the status is.
    /// When the handler does not run, `input` (the request) is given back.
    ///
    /// Adapters run this future as a task of its own, so that it completes even when the
    /// request that started it is dropped.
    pub async fn run<I, H, Fut, T, E>(
        &self,
        event_id: &str,
        input: I,
        handler: H,
        status: impl FnOnce(&T) -> u16,
    ) -> Guarded<Result<T, E>, I>
    where
        H: FnOnce(I) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let ticket = match self.begin(event_id).await {
            Begin::Run(ticket) => ticket,
            Begin::Duplicate { id } => return Guarded::answered(Decision::Duplicate { id }, input),
            Begin::InFlight { .. } => return Guarded::answered(Decision::InFlight, input),
            Begin::Unavailable => return Guarded::answered(Decision::Unavailable, input),
        };
        let _running = RunningGuard::new(&self.running);
        let handler = AssertUnwindSafe(handler(input)).catch_unwind();
        let outcome = match select(pin!(handler), pin!(ticket.keep_alive())).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right(((), _)) => unreachable!("keep_alive never ends"),
        };
        match outcome {
            Ok(Ok(output)) => {
                ticket.finish((200..300).contains(&status(&output))).await;
                Guarded::Ran(Ok(output))
            }
            Ok(Err(err)) => {
                ticket.finish(false).await;
                Guarded::Ran(Err(err))
            }
            Err(panic) => {
                ticket.finish(false).await;
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// What [`Idempotency::run`] did.
#[derive(Debug)]
pub enum Guarded<T, I> {
    /// The handler ran; its output.
    Ran(T),
    /// The handler did not run: give this answer instead (a duplicate, a delivery in flight,
    /// or the store unavailable under [`OnStoreError::Refuse`]); its outcome is `duplicate`,
    /// `in_flight` or `rejected` (store unavailable).
    Answered {
        /// The status, JSON body and outcome to answer.
        answer: Answer,
        /// The input the handler would have taken, given back.
        input: I,
    },
}

/// The decisions that answer without running the handler (a [`Begin`] other than `Run`).
enum Decision {
    Duplicate { id: String },
    InFlight,
    Unavailable,
}

impl<T, I> Guarded<T, I> {
    fn answered(decision: Decision, input: I) -> Self {
        Self::Answered {
            answer: decision.answer(),
            input,
        }
    }
}

impl Decision {
    fn answer(&self) -> Answer {
        match self {
            Self::Duplicate { id } => Answer::with_id(200, "duplicate", id, Outcome::Duplicate),
            Self::InFlight => Answer::new(
                409,
                Bytes::from_static(br#"{"error":"delivery_in_flight"}"#),
                Some(Outcome::InFlight),
            ),
            Self::Unavailable => Answer::new(
                503,
                Bytes::from_static(br#"{"error":"idempotency_store_unavailable"}"#),
                Some(Outcome::Rejected),
            ),
        }
    }
}

impl fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("lease", &self.lease)
            .field("retention", &self.retention)
            .field("on_error", &self.on_error)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

/// The guard's decision for one delivery.
#[derive(Debug)]
#[must_use]
pub enum Begin {
    /// Run the handler, then [`Ticket::finish`].
    Run(Ticket),
    /// Already processed: answer 200 `{"status":"duplicate","id":"…"}` without the handler.
    Duplicate {
        /// The event id.
        id: String,
    },
    /// Another delivery of the id is being handled: answer 409.
    InFlight {
        /// The event id.
        id: String,
    },
    /// The store is unreachable and the policy is [`OnStoreError::Refuse`]: answer 503.
    Unavailable,
}

impl Begin {
    /// The answer to give instead of running the handler (status, JSON body, outcome), or
    /// `None` for [`Begin::Run`].
    #[must_use]
    pub fn answer(&self) -> Option<Answer> {
        let decision = match self {
            Self::Run(_) => return None,
            Self::Duplicate { id } => Decision::Duplicate { id: id.clone() },
            Self::InFlight { .. } => Decision::InFlight,
            Self::Unavailable => Decision::Unavailable,
        };
        Some(decision.answer())
    }
}

/// The claim of one delivery: finish it with the handler's outcome.
#[must_use = "finish the ticket, or the claim stays until its lease expires"]
pub struct Ticket {
    claim: Option<(Idempotency, String, String)>,
}

impl Ticket {
    /// Extends the claim every third of the lease, for as long as it is polled (never ends).
    /// A claim that could not be extended is logged; the handler goes on.
    pub async fn keep_alive(&self) {
        let Some((guard, id, token)) = &self.claim else {
            return std::future::pending().await;
        };
        let every = guard.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match guard.store.extend(id, token, guard.lease).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    target: "airmy_verify",
                    event_id = ?id,
                    "the claim of a running handler expired and was taken; another delivery \
                     of this event may run the handler again"
                ),
                Err(err) => {
                    metrics::store_error("extend");
                    tracing::warn!(
                        target: "airmy_verify",
                        event_id = ?id,
                        reason = %err,
                        "could not extend the claim of a running handler"
                    );
                }
            }
        }
    }

    /// Commits the id when `success` (the handler answered 2xx), releases it otherwise so the
    /// next delivery runs the handler again. Store errors and lost commits are logged, never
    /// returned: the response is already decided.
    pub async fn finish(self, success: bool) {
        let Some((guard, id, token)) = self.claim else {
            return;
        };
        let result = if success {
            guard.store.commit(&id, &token, guard.retention).await
        } else {
            guard
                .store
                .release(&id, &token)
                .await
                .map(|()| Commit::Committed)
        };
        match result {
            Ok(Commit::Committed) => {}
            Ok(Commit::Lost) => tracing::warn!(
                target: "airmy_verify",
                event_id = ?id,
                "the handler succeeded after its claim had expired and another delivery had \
                 claimed the event; that delivery may run the handler again"
            ),
            Err(err) => {
                metrics::store_error("finish");
                tracing::warn!(
                target: "airmy_verify",
                event_id = ?id,
                success,
                reason = %err,
                "could not record the outcome of a delivery; its claim expires with the lease"
                );
            }
        }
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("event_id", &self.claim.as_ref().map(|(_, id, _)| id))
            .finish()
    }
}

/// An in-memory store for one process: bounded, with expiry, and no background thread.
///
/// Expired ids are dropped in expiry order as new claims arrive (a heap of deadlines, so each
/// claim does O(log n) work under the lock, never a scan of the whole map). When the store is
/// full of unexpired ids, the oldest committed ids are dropped before their retention ends
/// (with a warning: deduplication of those events gets shorter); only a store full of claims
/// in flight refuses a claim.
///
/// **Sizing:** ids stay for the guard's retention (by default 2 × tolerance + 60 s = 660 s),
/// so a capacity of at least your peak deliveries per second × the retention keeps every id
/// for its whole window; 100,000 covers about 150 deliveries per second. Each id costs about
/// 150 bytes plus its length.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: HashMap<String, Entry>,
    /// Every deadline ever set, earliest first; stale ones are skipped when popped.
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
    /// Committed ids in commit order, to drop the oldest first when full.
    committed: VecDeque<(Instant, String)>,
    /// When the store last warned that it was full (at most one warning a minute).
    warned_full: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    token: Option<String>,
    expires: Instant,
}

impl MemoryStore {
    /// A store holding at most `capacity` ids (claimed or committed).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(MemoryInner::default()),
            capacity,
        }
    }

    /// How many ids the store holds now, expired ones included until they are dropped.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store holds no id.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock leaves the maps consistent (every update is one call).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claim_now(&self, id: &str, token: &str, lease: Duration) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.drop_expired(now);
        if let Some(entry) = inner.entries.get(id) {
            return Ok(match entry.token.as_deref() {
                Some(held) if held == token => Claim::Claimed,
                Some(_) => Claim::InFlight,
                None => Claim::Done,
            });
        }
        if inner.entries.len() >= self.capacity && !inner.drop_oldest_committed() {
            return Err(StoreError::new(format!(
                "the in-memory store is full ({} claims in flight)",
                self.capacity
            )));
        }
        inner.set(id, Some(token), deadline(now, lease));
        Ok(Claim::Claimed)
    }

    fn extend_now(&self, id: &str, token: &str, lease: Duration) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let held = inner
            .entries
            .get(id)
            .is_some_and(|e| e.expires > now && e.token.as_deref() == Some(token));
        if held {
            inner.set(id, Some(token), deadline(now, lease));
        }
        held
    }

    fn commit_now(&self, id: &str, token: &str, retention: Duration) -> Commit {
        let now = Instant::now();
        let mut inner = self.lock();
        let taken = inner
            .entries
            .get(id)
            .is_some_and(|e| e.expires > now && e.token.as_deref() != Some(token));
        if taken {
            return Commit::Lost;
        }
        let expires = deadline(now, retention);
        inner.set(id, None, expires);
        inner.committed.push_back((expires, id.to_owned()));
        Commit::Committed
    }

    fn release_now(&self, id: &str, token: &str) {
        let mut inner = self.lock();
        if inner
            .entries
            .get(id)
            .is_some_and(|e| e.token.as_deref() == Some(token))
        {
            inner.entries.remove(id);
        }
    }
}

impl MemoryInner {
    fn set(&mut self, id: &str, token: Option<&str>, expires: Instant) {
        self.entries.insert(
            id.to_owned(),
            Entry {
                token: token.map(str::to_owned),
                expires,
            },
        );
        self.deadlines.push(Reverse((expires, id.to_owned())));
    }

    /// Drops the ids whose deadline passed, earliest first (amortized O(log n) per deadline).
    fn drop_expired(&mut self, now: Instant) {
        while let Some(Reverse((expires, _))) = self.deadlines.peek() {
            if *expires > now {
                break;
            }
            let Some(Reverse((expires, id))) = self.deadlines.pop() else {
                break;
            };
            // Only if this deadline is still the entry's (a later extend or commit moved it).
            if self.entries.get(&id).is_some_and(|e| e.expires == expires) {
                self.entries.remove(&id);
            }
        }
        while self
            .committed
            .front()
            .is_some_and(|(expires, _)| *expires <= now)
        {
            self.committed.pop_front();
        }
    }

    /// Drops the oldest committed id still held; `false` when there is none.
    fn drop_oldest_committed(&mut self) -> bool {
        while let Some((expires, id)) = self.committed.pop_front() {
            let current = self
                .entries
                .get(&id)
                .is_some_and(|e| e.token.is_none() && e.expires == expires);
            if current {
                self.entries.remove(&id);
                let now = Instant::now();
                if self
                    .warned_full
                    .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
                {
                    self.warned_full = Some(now);
                    tracing::warn!(
                        target: "airmy_verify",
                        "the in-memory idempotency store is full: dropping the oldest processed \
                         ids before their retention ends (raise its capacity)"
                    );
                }
                return true;
            }
        }
        false
    }
}

/// `now + d`, or a point about a century away when `d` is too large to add.
fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_DURATION))
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, Claim> {
        Box::pin(std::future::ready(self.claim_now(id, token, lease)))
    }

    fn extend<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.extend_now(id, token, lease))))
    }

    fn commit<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        retention: Duration,
    ) -> StoreFuture<'a, Commit> {
        Box::pin(std::future::ready(
            Ok(self.commit_now(id, token, retention)),
        ))
    }

    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> StoreFuture<'a, ()> {
        self.release_now(id, token);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn claim_commit_release_follow_the_tokens() {
        let store = MemoryStore::new(10);
        assert_eq!(block(store.claim("e", "a", LONG)), Ok(Claim::Claimed));
        assert_eq!(block(store.claim("e", "b", LONG)), Ok(Claim::InFlight));
        assert_eq!(
            block(store.claim("e", "a", LONG)),
            Ok(Claim::Claimed),
            "a claim is its own token's again (a retried claim whose reply was lost)"
        );
        // Another token can neither release nor commit nor extend the claim.
        block(store.release("e", "b")).expect("ok");
        assert_eq!(block(store.commit("e", "b", LONG)), Ok(Commit::Lost));
        assert_eq!(block(store.extend("e", "b", LONG)), Ok(false));
        assert_eq!(block(store.claim("e", "c", LONG)), Ok(Claim::InFlight));
        block(store.release("e", "a")).expect("ok");
        assert_eq!(block(store.claim("e", "d", LONG)), Ok(Claim::Claimed));
        assert_eq!(block(store.commit("e", "d", LONG)), Ok(Commit::Committed));
        assert_eq!(block(store.claim("e", "f", LONG)), Ok(Claim::Done));
        assert_eq!(
            block(store.commit("e", "x", LONG)),
            Ok(Commit::Lost),
            "a commit never overwrites another's"
        );
    }

    #[test]
    fn late_commits_are_kept_unless_another_claim_took_the_id() {
        // Generous margins: a loaded CI machine may pause a thread for tens of milliseconds.
        let (short, wait) = (Duration::from_millis(300), Duration::from_millis(450));
        let store = MemoryStore::new(10);
        assert_eq!(block(store.claim("e", "a", short)), Ok(Claim::Claimed));
        std::thread::sleep(wait);
        // The lease ran out and nobody claimed the id: the late commit is recorded.
        assert_eq!(block(store.commit("e", "a", LONG)), Ok(Commit::Committed));
        assert_eq!(block(store.claim("e", "b", LONG)), Ok(Claim::Done));

        assert_eq!(block(store.claim("f", "a", short)), Ok(Claim::Claimed));
        std::thread::sleep(wait);
        assert_eq!(block(store.extend("f", "a", LONG)), Ok(false), "expired");
        assert_eq!(block(store.claim("f", "b", LONG)), Ok(Claim::Claimed));
        // Another delivery holds the id now: the late commit is reported lost, not recorded.
        assert_eq!(block(store.commit("f", "a", LONG)), Ok(Commit::Lost));
        assert_eq!(block(store.claim("f", "c", LONG)), Ok(Claim::InFlight));
    }

    #[test]
    fn extending_keeps_a_claim_past_its_first_lease() {
        let store = MemoryStore::new(10);
        let short = Duration::from_millis(300);
        assert_eq!(block(store.claim("e", "a", short)), Ok(Claim::Claimed));
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(block(store.extend("e", "a", short)), Ok(true));
        }
        assert_eq!(block(store.claim("e", "b", LONG)), Ok(Claim::InFlight));
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(block(store.claim("e", "b", LONG)), Ok(Claim::Claimed));
    }

    #[test]
    fn expired_ids_are_dropped_in_order_without_a_scan() {
        let store = MemoryStore::new(1000);
        let short = Duration::from_millis(200);
        for i in 0..500 {
            assert_eq!(
                block(store.claim(&format!("s{i}"), "t", short)),
                Ok(Claim::Claimed)
            );
        }
        for i in 0..100 {
            assert_eq!(
                block(store.claim(&format!("l{i}"), "t", LONG)),
                Ok(Claim::Claimed)
            );
        }
        assert_eq!(store.len(), 600);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(block(store.claim("new", "t", LONG)), Ok(Claim::Claimed));
        assert_eq!(
            store.len(),
            101,
            "the 500 expired claims went on the next claim"
        );
    }

    #[test]
    fn a_full_store_drops_the_oldest_committed_ids_and_refuses_only_when_all_are_in_flight() {
        let store = MemoryStore::new(3);
        for id in ["a", "b"] {
            assert_eq!(block(store.claim(id, "t", LONG)), Ok(Claim::Claimed));
            assert_eq!(block(store.commit(id, "t", LONG)), Ok(Commit::Committed));
        }
        assert_eq!(block(store.claim("c", "t", LONG)), Ok(Claim::Claimed));
        // Full: "a", the oldest committed id, makes room.
        assert_eq!(block(store.claim("d", "t", LONG)), Ok(Claim::Claimed));
        assert_eq!(store.len(), 3);
        assert_eq!(block(store.claim("b", "u", LONG)), Ok(Claim::Done));
        assert_eq!(
            block(store.claim("e", "t", LONG)),
            Ok(Claim::Claimed),
            "b made room"
        );
        // Now c, d and e are all in flight: nothing may be dropped.
        assert!(block(store.claim("f", "t", LONG)).is_err());
        assert_eq!(block(store.claim("c", "u", LONG)), Ok(Claim::InFlight));
    }

    #[test]
    fn retention_follows_the_tolerance_unless_freshness_is_off() {
        let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
        let guard = Idempotency::new(MemoryStore::new(1), &verifier).expect("tolerance set");
        assert_eq!(guard.retention(), Duration::from_secs(660));
        let off = Verifier::builder(crate::Secret::new("s").expect("s"))
            .without_freshness_check()
            .build();
        assert_eq!(
            Idempotency::new(MemoryStore::new(1), &off).unwrap_err(),
            IdempotencyConfigError::RetentionRequired
        );
    }

    #[test]
    fn decisions_map_to_the_documented_responses() {
        let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
        let guard = Idempotency::new(MemoryStore::new(10), &verifier).expect("guard");
        let Begin::Run(ticket) = block(guard.begin("evt_1")) else {
            panic!("first delivery runs")
        };
        let in_flight = block(guard.begin("evt_1"));
        let answer = |begin: Begin| {
            let answer = begin.answer().expect("an answer");
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
        let full = Idempotency::new(MemoryStore::new(0), &verifier)
            .expect("guard")
            .on_store_error(OnStoreError::Refuse);
        assert_eq!(
            answer(block(full.begin("evt_2"))),
            (
                503,
                r#"{"error":"idempotency_store_unavailable"}"#.to_owned(),
                Some(Outcome::Rejected)
            )
        );
        let lenient = Idempotency::new(MemoryStore::new(0), &verifier).expect("guard");
        assert!(matches!(block(lenient.begin("evt_2")), Begin::Run(_)));
    }

    #[tokio::test]
    async fn run_commits_successes_and_releases_failures_errors_and_panics() {
        let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
        let guard = Idempotency::new(MemoryStore::new(10), &verifier).expect("guard");
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
        let guard = Idempotency::new(MemoryStore::new(10), &verifier)
            .expect("guard")
            .lease(Duration::from_millis(300));
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
            assert!(matches!(guard.begin("evt").await, Begin::InFlight { .. }));
        }
        assert!(matches!(slow.await, Guarded::Ran(Ok(200))));
        assert!(matches!(guard.begin("evt").await, Begin::Duplicate { .. }));
    }

    #[tokio::test]
    async fn wait_idle_returns_once_running_handlers_finish() {
        let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
        let guard = Idempotency::new(MemoryStore::new(10), &verifier).expect("guard");
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
        let guard = Idempotency::new(MemoryStore::new(10), &verifier)
            .expect("guard")
            .lease(Duration::MAX);
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
        fn claim<'a>(
            &'a self,
            id: &'a str,
            token: &'a str,
            lease: Duration,
        ) -> StoreFuture<'a, Claim> {
            let _ = self.0.claim_now(id, token, lease);
            Box::pin(std::future::ready(Err(StoreError::new("reply timed out"))))
        }
        fn extend<'a>(
            &'a self,
            id: &'a str,
            token: &'a str,
            lease: Duration,
        ) -> StoreFuture<'a, bool> {
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
        let guard = Idempotency::with_retention(LostReplies(store.clone()), LONG)
            .on_store_error(OnStoreError::Refuse);
        assert!(matches!(block(guard.begin("evt")), Begin::Unavailable));
        // The claim the store did record was freed: a retry is not "in flight" for a lease.
        assert!(store.is_empty());
        assert_eq!(block(store.claim("evt", "retry", LONG)), Ok(Claim::Claimed));
    }

    #[test]
    fn a_failed_handler_releases_the_claim() {
        let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
        let guard = Idempotency::new(MemoryStore::new(10), &verifier).expect("guard");
        let Begin::Run(ticket) = block(guard.begin("evt_1")) else {
            panic!("runs")
        };
        block(ticket.finish(false));
        assert!(matches!(block(guard.begin("evt_1")), Begin::Run(_)));
    }
}
