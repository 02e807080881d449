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
//! A claim whose process died expires after the lease (defaults to 30 s). Committed ids are
//! kept for twice the freshness tolerance plus a minute: an older delivery of the same event
//! is refused as stale before it reaches the guard, so the store stays bounded. With freshness
//! disabled the retention must be set.
//!
//! Stores: [`MemoryStore`] for one process; `RedisStore` (feature `redis`) for replicas sharing
//! state. Adapters wire the guard in (`AirmyVerifyLayer::idempotency`,
//! `AirmyVerify::idempotency`) through [`Idempotency::run`]; the statuses and bodies above come
//! from [`Begin::response`].
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

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;

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

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The id was free and is now claimed with the caller's token.
    Claimed,
    /// Another delivery holds an unexpired claim on the id.
    InFlight,
    /// The id was committed: the event was processed.
    Done,
}

/// Where claims and commits are kept. Implementations must make `claim` atomic: of two
/// concurrent claims of a free id, exactly one gets [`Claim::Claimed`].
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `id` with `token` for `lease`, unless it is in flight or done.
    fn claim<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, Claim>;

    /// Marks `id` done for `retention`, if `token` still holds its claim.
    fn commit<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        retention: Duration,
    ) -> StoreFuture<'a, ()>;

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

/// The guard: a store and its settings. Cheap to clone.
#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    lease: Duration,
    retention: Duration,
    on_error: OnStoreError,
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
    /// twice its tolerance plus a minute, claims lease for 30 s, and an unreachable store
    /// lets deliveries through with a warning.
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

    /// A guard keeping committed ids for `retention`.
    #[must_use]
    pub fn with_retention(store: impl IdempotencyStore, retention: Duration) -> Self {
        Self {
            store: Arc::new(store),
            lease: DEFAULT_LEASE,
            retention,
            on_error: OnStoreError::default(),
        }
    }

    /// How long an in-flight claim lasts if its process dies. Defaults to 30 seconds; make it
    /// longer than your slowest handler.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
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

    /// Decides whether the handler runs for a (verified) event id.
    pub async fn begin(&self, event_id: &str) -> Begin {
        let token = new_token();
        match self.store.claim(event_id, &token, self.lease).await {
            Ok(Claim::Claimed) => Begin::Run(Ticket {
                claim: Some((self.clone(), event_id.to_owned(), token)),
            }),
            Ok(Claim::InFlight) => {
                tracing::info!(
                    target: "airmy_verify",
                    event_id,
                    "delivery already in flight; answering 409"
                );
                Begin::InFlight {
                    id: event_id.to_owned(),
                }
            }
            Ok(Claim::Done) => Begin::Duplicate {
                id: event_id.to_owned(),
            },
            Err(err) => match self.on_error {
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
            },
        }
    }
}

impl Idempotency {
    /// Runs a handler under the guard, the way adapters do: decides with [`Idempotency::begin`]
    /// first (so nothing of the handler runs for a duplicate), then calls `handler(input)` and
    /// commits the id when `succeeded` says its output is a success (a 2xx), or releases it
    /// when the output is not, when the handler returns `Err`, or when it panics (the panic is
    /// then resumed). When the handler does not run, `input` (the request) is given back.
    pub async fn run<I, H, Fut, T, E>(
        &self,
        event_id: &str,
        input: I,
        handler: H,
        succeeded: impl FnOnce(&T) -> bool,
    ) -> Guarded<Result<T, E>, I>
    where
        H: FnOnce(I) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let ticket = match self.begin(event_id).await {
            Begin::Run(ticket) => ticket,
            other => {
                let (status, body) = other
                    .response()
                    .unwrap_or((500, r#"{"error":"internal"}"#.to_owned()));
                return Guarded::Answered {
                    status,
                    body,
                    input,
                };
            }
        };
        match AssertUnwindSafe(handler(input)).catch_unwind().await {
            Ok(Ok(output)) => {
                ticket.finish(succeeded(&output)).await;
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
    /// The handler did not run: answer this status and JSON body instead (a duplicate, a
    /// delivery in flight, or the store unavailable under [`OnStoreError::Refuse`]).
    Answered {
        /// The HTTP status.
        status: u16,
        /// The JSON body.
        body: String,
        /// The input the handler would have taken, given back.
        input: I,
    },
}

impl fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("lease", &self.lease)
            .field("retention", &self.retention)
            .field("on_error", &self.on_error)
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
    /// The status and JSON body to answer instead of running the handler, or `None` for
    /// [`Begin::Run`].
    #[must_use]
    pub fn response(&self) -> Option<(u16, String)> {
        match self {
            Self::Run(_) => None,
            Self::Duplicate { id } => Some((
                200,
                serde_json::json!({ "status": "duplicate", "id": id }).to_string(),
            )),
            Self::InFlight { .. } => Some((409, r#"{"error":"delivery_in_flight"}"#.to_owned())),
            Self::Unavailable => Some((
                503,
                r#"{"error":"idempotency_store_unavailable"}"#.to_owned(),
            )),
        }
    }
}

/// The claim of one delivery: finish it with the handler's outcome.
#[must_use = "finish the ticket, or the claim stays until its lease expires"]
pub struct Ticket {
    claim: Option<(Idempotency, String, String)>,
}

impl Ticket {
    /// Commits the id when `success` (the handler answered 2xx), releases it otherwise so the
    /// next delivery runs the handler again. Store errors are logged, never returned: the
    /// response is already decided.
    pub async fn finish(self, success: bool) {
        let Some((guard, id, token)) = self.claim else {
            return;
        };
        let result = if success {
            guard.store.commit(&id, &token, guard.retention).await
        } else {
            guard.store.release(&id, &token).await
        };
        if let Err(err) = result {
            tracing::warn!(
                target: "airmy_verify",
                event_id = %id,
                success,
                reason = %err,
                "could not record the outcome of a delivery; its claim expires with the lease"
            );
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

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: a process-unique value still tells this claim from others.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes[8..].copy_from_slice(&(nanos as u64).to_le_bytes());
        bytes[0] ^= std::process::id() as u8;
    }
    hex::encode(bytes)
}

/// `now + d`, or a point about a century away when `d` is too large to add (a lease or
/// retention of `Duration::MAX` means "never expires", not a panic).
fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// An in-memory store for one process: bounded, with expiry, and no background thread
/// (expired entries are dropped when the store is full).
#[derive(Debug)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
}

#[derive(Debug)]
struct Entry {
    token: Option<String>,
    expires: Instant,
}

impl MemoryStore {
    /// A store holding at most `capacity` ids (claimed or committed). A claim that would go
    /// past it once expired entries are dropped fails as a [`StoreError`] (and the guard's
    /// policy decides).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// How many ids the store holds now, expired ones included until they are dropped.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store holds no id.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves the map consistent (every update is one call).
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claim_now(&self, id: &str, token: &str, lease: Duration) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut entries = self.lock();
        if let Some(entry) = entries.get(id).filter(|e| e.expires > now) {
            return Ok(match entry.token {
                Some(_) => Claim::InFlight,
                None => Claim::Done,
            });
        }
        if entries.len() >= self.capacity && !entries.contains_key(id) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity {
                return Err(StoreError::new(format!(
                    "the in-memory store is full ({} unexpired ids)",
                    self.capacity
                )));
            }
        }
        entries.insert(
            id.to_owned(),
            Entry {
                token: Some(token.to_owned()),
                expires: deadline(now, lease),
            },
        );
        Ok(Claim::Claimed)
    }

    fn finish_now(&self, id: &str, token: &str, retention: Option<Duration>) {
        let mut entries = self.lock();
        let held = entries
            .get(id)
            .is_some_and(|e| e.token.as_deref() == Some(token));
        if !held {
            return;
        }
        match retention {
            Some(retention) => {
                entries.insert(
                    id.to_owned(),
                    Entry {
                        token: None,
                        expires: deadline(Instant::now(), retention),
                    },
                );
            }
            None => {
                entries.remove(id);
            }
        }
    }
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, Claim> {
        Box::pin(std::future::ready(self.claim_now(id, token, lease)))
    }

    fn commit<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        retention: Duration,
    ) -> StoreFuture<'a, ()> {
        self.finish_now(id, token, Some(retention));
        Box::pin(std::future::ready(Ok(())))
    }

    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> StoreFuture<'a, ()> {
        self.finish_now(id, token, None);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: impl Future<Output = T>) -> T {
        futures_executor_lite(f)
    }

    /// Polls a future that never waits (the memory store's are ready at once).
    fn futures_executor_lite<T>(f: impl Future<Output = T>) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory store never waits"),
        }
    }

    #[test]
    fn claim_commit_release_follow_the_tokens() {
        let store = MemoryStore::new(10);
        let lease = Duration::from_secs(30);
        assert_eq!(block(store.claim("e", "a", lease)), Ok(Claim::Claimed));
        assert_eq!(block(store.claim("e", "b", lease)), Ok(Claim::InFlight));
        // Another token can neither release nor commit the claim.
        block(store.release("e", "b")).expect("ok");
        block(store.commit("e", "b", lease)).expect("ok");
        assert_eq!(block(store.claim("e", "c", lease)), Ok(Claim::InFlight));
        block(store.release("e", "a")).expect("ok");
        assert_eq!(block(store.claim("e", "d", lease)), Ok(Claim::Claimed));
        block(store.commit("e", "d", lease)).expect("ok");
        assert_eq!(block(store.claim("e", "f", lease)), Ok(Claim::Done));
    }

    #[test]
    fn expired_claims_and_commits_free_the_id() {
        // Generous margins: a loaded CI machine may pause a thread for tens of milliseconds.
        let (short, wait, long) = (
            Duration::from_millis(300),
            Duration::from_millis(450),
            Duration::from_secs(60),
        );
        let store = MemoryStore::new(10);
        assert_eq!(block(store.claim("e", "a", short)), Ok(Claim::Claimed));
        std::thread::sleep(wait);
        assert_eq!(block(store.claim("e", "b", long)), Ok(Claim::Claimed));
        // The expired claim's owner can no longer commit.
        block(store.commit("e", "a", long)).expect("ok");
        assert_eq!(block(store.claim("e", "c", long)), Ok(Claim::InFlight));
        block(store.commit("e", "b", short)).expect("ok");
        assert_eq!(block(store.claim("e", "c", long)), Ok(Claim::Done));
        std::thread::sleep(wait);
        assert_eq!(block(store.claim("e", "c", long)), Ok(Claim::Claimed));
    }

    #[test]
    fn the_store_stays_within_its_capacity() {
        let store = MemoryStore::new(3);
        let short = Duration::from_millis(300);
        for id in ["a", "b", "c"] {
            assert_eq!(block(store.claim(id, "t", short)), Ok(Claim::Claimed));
        }
        assert!(block(store.claim("d", "t", short)).is_err());
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(block(store.claim("d", "t", short)), Ok(Claim::Claimed));
        assert_eq!(store.len(), 1, "expired entries were dropped");
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
        assert_eq!(
            in_flight.response(),
            Some((409, r#"{"error":"delivery_in_flight"}"#.to_owned()))
        );
        block(ticket.finish(true));
        assert_eq!(
            block(guard.begin("evt_1")).response(),
            Some((200, r#"{"id":"evt_1","status":"duplicate"}"#.to_owned()))
        );
        let full = Idempotency::new(MemoryStore::new(0), &verifier)
            .expect("guard")
            .on_store_error(OnStoreError::Refuse);
        assert_eq!(
            block(full.begin("evt_2")).response(),
            Some((
                503,
                r#"{"error":"idempotency_store_unavailable"}"#.to_owned()
            ))
        );
        let lenient = Idempotency::new(MemoryStore::new(0), &verifier).expect("guard");
        assert!(matches!(block(lenient.begin("evt_2")), Begin::Run(_)));
    }

    #[test]
    fn run_commits_successes_and_releases_failures_errors_and_panics() {
        let verifier = Verifier::new(crate::Secret::new("s").expect("s"));
        let guard = Idempotency::new(MemoryStore::new(10), &verifier).expect("guard");
        let ok = |status: u16| move |()| std::future::ready(Ok::<u16, ()>(status));
        let is_2xx = |s: &u16| (200..300).contains(s);
        assert!(matches!(
            block(guard.run("a", (), ok(500), is_2xx)),
            Guarded::Ran(Ok(500))
        ));
        let failed = block(guard.run("a", (), |()| std::future::ready(Err::<u16, ()>(())), is_2xx));
        assert!(matches!(failed, Guarded::Ran(Err(()))));
        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let handler = |()| async { panic!("handler panicked") };
            block(guard.run("a", (), handler, |_: &u16| true)) as Guarded<Result<u16, ()>, ()>
        }));
        assert!(panicked.is_err());
        assert!(matches!(
            block(guard.run("a", (), ok(200), is_2xx)),
            Guarded::Ran(Ok(200))
        ));
        let mut ran = false;
        let again = block(guard.run(
            "a",
            (),
            |()| {
                ran = true;
                std::future::ready(Ok::<u16, ()>(200))
            },
            is_2xx,
        ));
        assert!(!ran, "a duplicate never calls the handler");
        assert!(matches!(again, Guarded::Answered { status: 200, .. }));
    }

    #[test]
    fn huge_durations_do_not_panic() {
        let verifier = Verifier::builder(crate::Secret::new("s").expect("s"))
            .tolerance(Duration::MAX)
            .build();
        let guard = Idempotency::new(MemoryStore::new(10), &verifier)
            .expect("guard")
            .lease(Duration::MAX);
        assert_eq!(guard.retention(), Duration::MAX);
        let Begin::Run(ticket) = block(guard.begin("evt_1")) else {
            panic!("runs")
        };
        block(ticket.finish(true));
        assert!(matches!(
            block(guard.begin("evt_1")),
            Begin::Duplicate { .. }
        ));
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
