//! The [`Worker`]: runs a handler on the inbox's entries, with retries, dead letters, leases
//! and a graceful shutdown.
//!
//! - `N` entries are handled at once ([`Worker::concurrency`], default 4); each is **leased**
//!   (default 60 s, extended every third of it while its handler runs), so two workers never
//!   run the same entry. A worker that dies mid-handler hands its entry to another when the
//!   lease runs out: that, and only that, can run a handler twice for one event id.
//! - Success completes the entry. Failure (an `Err`, a panic, or the handler timeout, 5 minutes
//!   by default) schedules a retry with exponential backoff and jitter ([`RetryPolicy`]: 1 s
//!   doubling to 10 minutes, for up to 24 hours after the delivery was received); past the
//!   policy the entry becomes a **dead letter** with its last error and attempt count.
//! - New entries reach an idle worker at once (the backend notifies it); scheduled retries are
//!   taken when due. The worker also looks once a second, for entries another process (the
//!   `airmy-webhook inbox replay` command) made due.
//! - **Shutdown** ([`Worker::run`] until its `CancellationToken` is cancelled): it stops
//!   taking entries, lets running handlers finish within the shutdown deadline (default 20 s),
//!   then releases the leases of those still running so another worker takes them at once.
//! - **No ordering** between events is promised (AIRMY promises none either): retries and
//!   concurrency reorder them. Order by the envelope's `created_at` where it matters.
//!
//! # Example
//!
//! ```no_run
//! use airmy_verify::event::RunCompleted;
//! use airmy_verify::Envelope;
//! use airmy_verify_inbox::{Context, HandlerError, Handlers, Inbox, SqliteBackend, SqliteOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let inbox = Inbox::new(SqliteBackend::open("inbox.db", SqliteOptions::default())?);
//! let handlers = Handlers::new().on(|run: Envelope<RunCompleted>, _ctx: Context| async move {
//!     println!("{:?}", run.data.tokens_used);
//!     Ok::<(), HandlerError>(())
//! });
//! let shutdown = CancellationToken::new();
//! let worker = inbox.worker(handlers).concurrency(8);
//! tokio::spawn(worker.run(shutdown.clone()));
//! // ... on SIGTERM:
//! shutdown.cancel();
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use airmy_verify::observe;
use futures_util::FutureExt;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Inbox;
#[cfg(feature = "metrics")]
use crate::backend::Backend;
use crate::backend::{DEFAULT_LEASE, Leased};
use crate::handlers::{Context, Handlers};

/// When failed entries are tried again, and when they become dead letters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The wait before the second attempt. Defaults to 1 second.
    pub initial: Duration,
    /// Each wait is this many times the one before. Defaults to 2.
    pub multiplier: f64,
    /// The longest wait. Defaults to 10 minutes.
    pub max_delay: Duration,
    /// No attempt later than this after the delivery was received: past it the entry is a dead
    /// letter. Defaults to 24 hours.
    pub max_age: Duration,
    /// At most this many attempts, if set. Defaults to none (the age decides).
    pub max_attempts: Option<u32>,
    /// Each wait is moved at random by up to this fraction, either way. Defaults to 0.2.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(600),
            max_age: Duration::from_secs(24 * 3600),
            max_attempts: None,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// When to try an entry again after its `attempt`-th attempt failed at `now`, or `None` when
    /// it is past the policy (a dead letter).
    #[must_use]
    pub fn next_attempt(
        &self,
        attempt: u32,
        received_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        if self.max_attempts.is_some_and(|max| attempt >= max) {
            return None;
        }
        let exponent = i32::try_from(attempt.saturating_sub(1))
            .unwrap_or(i32::MAX)
            .min(64);
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let base = base.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * (2.0 * random_unit() - 1.0);
        let delay =
            Duration::try_from_secs_f64((base * (1.0 + jitter)).max(0.0)).unwrap_or(self.max_delay);
        let at = now + delay;
        let deadline = received_at + self.max_age;
        (at <= deadline).then_some(at)
    }
}

/// How long an entry taken ahead may wait for a slot before it is given back.
const HOLD: Duration = Duration::from_secs(1);

/// Gives back entries taken ahead that waited for a slot for [`HOLD`] (or a third of their
/// lease, if shorter): behind slow handlers, another worker (another replica, on a shared
/// backend) may take them now, and their lease never runs out in the queue (which would count
/// a new attempt). Giving back does not count an attempt.
async fn give_back_waiting(
    queue: &mut VecDeque<(Leased, tokio::time::Instant)>,
    backend: &dyn crate::Backend,
    lease: Duration,
) {
    let now = tokio::time::Instant::now();
    let hold = HOLD.min(lease / 3);
    let mut kept = VecDeque::with_capacity(queue.len());
    for (entry, queued_at) in queue.drain(..) {
        if now.duration_since(queued_at) < hold {
            kept.push_back((entry, queued_at));
            continue;
        }
        match backend.release(&entry.id, &entry.token).await {
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(target: "airmy_verify", event_id = ?entry.id, error = %err, "cannot give back a queued entry; it is taken again when its lease runs out");
            }
        }
    }
    *queue = kept;
}

/// Sets the inbox gauges of [`observe`] from the backend's stats once a second, until
/// `shutdown`.
#[cfg(feature = "metrics")]
async fn refresh_gauges(backend: Arc<dyn Backend>, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        match backend.stats().await {
            Ok(stats) => {
                failing = false;
                observe::record::inbox_gauges(
                    stats.pending,
                    stats.scheduled,
                    stats.processing,
                    stats.dead,
                    stats.oldest_pending_age_secs.unwrap_or(0),
                );
            }
            Err(err) if !failing => {
                // Once per outage: the gauges keep their last values meanwhile.
                failing = true;
                tracing::warn!(target: "airmy_verify", error = %err, "cannot read the inbox stats; its gauges are stale until it answers")
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A number in [0, 1) from the OS's randomness (a fixed 0.5 if there is none).
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs [`Handlers`] on an [`Inbox`]'s entries; see the [module docs](self).
pub struct Worker {
    inbox: Inbox,
    handlers: Handlers,
    concurrency: usize,
    lease: Duration,
    handler_timeout: Duration,
    shutdown_deadline: Duration,
    policy: RetryPolicy,
    retention: Duration,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("handlers", &self.handlers)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("handler_timeout", &self.handler_timeout)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Worker {
    pub(crate) fn new(inbox: Inbox, handlers: Handlers) -> Self {
        Self {
            inbox,
            handlers,
            concurrency: 4,
            lease: DEFAULT_LEASE,
            handler_timeout: Duration::from_secs(300),
            shutdown_deadline: Duration::from_secs(20),
            policy: RetryPolicy::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// How many entries are handled at once. Defaults to 4; at least 1.
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long an entry is leased to this worker without being extended (it is extended every
    /// third of it while its handler runs): how long a crashed worker's entry waits before
    /// another takes it. Defaults to 60 seconds; at least 30 ms.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// How long a handler may run before the attempt counts as failed. Defaults to 5 minutes.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// How long [`run`](Self::run) lets running handlers finish after shutdown is asked for,
    /// before it releases their entries. Defaults to 20 seconds.
    #[must_use]
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// The retry policy. Defaults to [`RetryPolicy::default`].
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long processed entries are kept (for deduplication, inspection and replay) before
    /// the worker purges them. Defaults to 7 days; keep it longer than twice the verifier's
    /// tolerance plus a minute, or a late retry of a purged event is stored again.
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Runs until `shutdown` is cancelled, then finishes or releases what is running.
    pub async fn run(self, shutdown: CancellationToken) {
        let backend = Arc::clone(&self.inbox.backend);
        let shared = Arc::new(self);
        let slots = Arc::new(Semaphore::new(shared.concurrency));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
        let mut queue: VecDeque<(Leased, tokio::time::Instant)> = VecDeque::new();
        let mut next_purge = tokio::time::Instant::now();
        #[cfg(feature = "metrics")]
        let gauges = tokio::spawn(refresh_gauges(Arc::clone(&backend), shutdown.clone()));
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Reap finished handlings.
            while let Some(done) = tasks.try_join_next_with_id() {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                running.remove(&id);
            }
            if tokio::time::Instant::now() >= next_purge {
                next_purge = tokio::time::Instant::now() + Duration::from_secs(3600);
                let before = OffsetDateTime::now_utc() - shared.retention;
                match backend.purge_done(before).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(target: "airmy_verify", purged = n, "purged processed inbox entries past their retention")
                    }
                    Err(err) => {
                        tracing::warn!(target: "airmy_verify", error = %err, "could not purge processed inbox entries")
                    }
                }
            }
            // Start queued entries on free slots.
            while !queue.is_empty() {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    break;
                };
                let Some((entry, queued_at)) = queue.pop_front() else {
                    break;
                };
                let key = (entry.id.clone(), entry.token.clone());
                let worker = Arc::clone(&shared);
                let handle = tasks.spawn(async move {
                    worker.handle(entry, queued_at, permit).await;
                });
                running.insert(handle.id(), key);
            }
            // Keep up to `concurrency` entries taken ahead, so that slots that free up start at
            // once and one `take` serves many entries. But nothing while every slot is busy and
            // the queue is empty (slow handlers: what waited was given back, for other workers,
            // on other replicas too, to take).
            let free = slots.available_permits();
            let want = (shared.concurrency + free).saturating_sub(queue.len());
            if queue.len() > shared.concurrency / 2 || want == 0 || (free == 0 && queue.is_empty())
            {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    Some(done) = tasks.join_next_with_id() => {
                        let id = match done { Ok((id, ())) => id, Err(e) => e.id() };
                        running.remove(&id);
                    }
                    () = tokio::time::sleep(HOLD.min(shared.lease / 3)) => {}
                }
                give_back_waiting(&mut queue, backend.as_ref(), shared.lease).await;
                continue;
            }
            let leased = match backend.take(want, shared.lease).await {
                Ok(leased) => leased,
                Err(err) => {
                    tracing::warn!(target: "airmy_verify", error = %err, "cannot take inbox entries; trying again in 1 s");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if !leased.is_empty() {
                let now = tokio::time::Instant::now();
                queue.extend(leased.into_iter().map(|entry| (entry, now)));
                continue;
            }
            if !queue.is_empty() {
                // Nothing more to take; the queue waits for a slot.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    Some(done) = tasks.join_next_with_id() => {
                        let id = match done { Ok((id, ())) => id, Err(e) => e.id() };
                        running.remove(&id);
                    }
                    () = tokio::time::sleep(HOLD.min(shared.lease / 3)) => {}
                }
                give_back_waiting(&mut queue, backend.as_ref(), shared.lease).await;
                continue;
            }
            let wait = match backend.next_due().await {
                Ok(Some(at)) => {
                    let until = at - OffsetDateTime::now_utc();
                    Duration::try_from(until).unwrap_or(Duration::ZERO)
                }
                _ => Duration::from_secs(1),
            }
            // Due already, yet nothing was taken: another worker took it, or this machine's clock
            // is ahead of the backend's (Redis keeps its own): a short wait, not a busy loop.
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = backend.wait(wait) => {}
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let id = match done { Ok((id, ())) => id, Err(e) => e.id() };
                    running.remove(&id);
                }
            }
        }
        #[cfg(feature = "metrics")]
        gauges.abort();

        // Entries taken ahead that never started go back at once.
        for (entry, _) in queue.drain(..) {
            let _ = backend.release(&entry.id, &entry.token).await;
        }
        // Shutdown: no more taking; let running handlers finish within the deadline.
        let deadline = tokio::time::sleep(shared.shutdown_deadline);
        tokio::pin!(deadline);
        while !tasks.is_empty() {
            tokio::select! {
                () = &mut deadline => break,
                Some(done) = tasks.join_next_with_id() => {
                    let id = match done { Ok((id, ())) => id, Err(e) => e.id() };
                    running.remove(&id);
                }
            }
        }
        tasks.abort_all();
        while let Some(done) = tasks.join_next_with_id().await {
            if let Ok((id, ())) = done {
                running.remove(&id);
            }
        }
        for (id, token) in running.into_values() {
            match backend.release(&id, &token).await {
                Ok(_) => {
                    tracing::info!(target: "airmy_verify", event_id = ?id, "released an unfinished inbox entry at shutdown")
                }
                Err(err) => {
                    tracing::warn!(target: "airmy_verify", event_id = ?id, error = %err, "could not release an inbox entry at shutdown; it is taken again when its lease runs out")
                }
            }
        }
    }

    /// Records an attempt's result (`success`, `retry`, `dead`) on its span and in
    /// `airmy_webhook_handler_attempts_total`.
    fn attempted(span: &tracing::Span, event_type: &str, result: &'static str) {
        span.record("result", result);
        observe::record::handler_attempt(event_type, result);
    }

    /// One attempt of one entry: the handler (within its timeout, panics caught) while the
    /// lease is extended, then complete, retry or bury.
    async fn handle(
        &self,
        entry: Leased,
        queued_at: tokio::time::Instant,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let backend = &self.inbox.backend;
        // Taken ahead and queued for a while: make sure the lease is still ours.
        if queued_at.elapsed() > self.lease / 3 {
            match backend.extend(&entry.id, &entry.token, self.lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(target: "airmy_verify", event_id = ?entry.id, "a queued entry's lease was taken over; skipping it");
                    return;
                }
                Err(err) => {
                    tracing::warn!(target: "airmy_verify", event_id = ?entry.id, error = %err, "cannot extend a queued entry's lease; skipping it");
                    return;
                }
            }
        }
        let span = observe::inbox_entry_span(&entry.id, &entry.event_type, entry.attempt);
        let ctx = Context {
            id: entry.id.clone(),
            attempt: entry.attempt,
            received_at: entry.received_at,
        };
        let run = AssertUnwindSafe(tokio::time::timeout(
            self.handler_timeout,
            self.handlers
                .handle(&entry.event_type, entry.body.clone(), ctx)
                .instrument(span.clone()),
        ))
        .catch_unwind();
        let keep_alive = async {
            let every = self.lease / 3;
            loop {
                tokio::time::sleep(every).await;
                match backend.extend(&entry.id, &entry.token, self.lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(target: "airmy_verify", event_id = ?entry.id, "the lease of a running handler was taken over")
                    }
                    Err(err) => {
                        tracing::warn!(target: "airmy_verify", event_id = ?entry.id, error = %err, "could not extend the lease of a running handler")
                    }
                }
            }
        };
        let outcome = tokio::select! {
            outcome = run => outcome,
            () = keep_alive => unreachable!("keep_alive never ends"),
        };
        // The handler is done: its slot is free for the next entry while the outcome is
        // recorded (a round trip to the backend, which need not hold up a handler).
        drop(slot);
        let error = match outcome {
            Ok(Ok(Ok(_))) => None,
            Ok(Ok(Err(err))) => Some(err.to_string()),
            Ok(Err(_)) => Some(format!(
                "the handler did not finish within {} s",
                self.handler_timeout.as_secs_f64()
            )),
            Err(panic) => Some(format!(
                "the handler panicked: {}",
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_owned())
            )),
        };
        let outcome = match &error {
            None => {
                Self::attempted(&span, &entry.event_type, "success");
                Outcome::Complete
            }
            Some(error) => {
                let now = OffsetDateTime::now_utc();
                match self
                    .policy
                    .next_attempt(entry.attempt, entry.received_at, now)
                {
                    Some(at) => {
                        Self::attempted(&span, &entry.event_type, "retry");
                        tracing::warn!(target: "airmy_verify", parent: &span, event_id = ?entry.id, attempt = entry.attempt, error = %error, retry_at = %at, "inbox handler failed; retrying later");
                        Outcome::Retry(error, at)
                    }
                    None => {
                        Self::attempted(&span, &entry.event_type, "dead");
                        tracing::error!(target: "airmy_verify", parent: &span, event_id = ?entry.id, attempt = entry.attempt, error = %error, "inbox handler failed past the retry policy; dead letter");
                        Outcome::Bury(error)
                    }
                }
            }
        };
        self.record(&entry, &outcome, &span).await;
    }

    /// Records an attempt's outcome. A backend that fails (Redis unreachable for a moment, a
    /// reply lost) is asked again, for up to half the lease, which still holds: otherwise the
    /// entry would be handled again when its lease runs out.
    async fn record(&self, entry: &Leased, outcome: &Outcome<'_>, span: &tracing::Span) {
        let backend = &self.inbox.backend;
        let give_up = tokio::time::Instant::now() + self.lease / 2;
        let mut pause = Duration::from_millis(50);
        let mut failed_before = false;
        loop {
            let recorded = match outcome {
                Outcome::Complete => backend.complete(&entry.id, &entry.token).await,
                Outcome::Retry(error, at) => {
                    backend.retry(&entry.id, &entry.token, error, *at).await
                }
                Outcome::Bury(error) => backend.bury(&entry.id, &entry.token, error).await,
            };
            match recorded {
                Ok(true) => return,
                Ok(false) if failed_before => {
                    tracing::info!(target: "airmy_verify", parent: span, event_id = ?entry.id, attempt = entry.attempt, "the entry's outcome was recorded by an earlier attempt whose reply was lost, or its lease was taken over");
                    return;
                }
                Ok(false) => {
                    tracing::warn!(target: "airmy_verify", parent: span, event_id = ?entry.id, attempt = entry.attempt, "the entry's lease was taken over before its outcome was recorded");
                    return;
                }
                Err(err) if tokio::time::Instant::now() + pause < give_up => {
                    tracing::warn!(target: "airmy_verify", parent: span, event_id = ?entry.id, attempt = entry.attempt, error = %err, "could not record an inbox entry's outcome; trying again");
                    failed_before = true;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(err) => {
                    tracing::warn!(target: "airmy_verify", parent: span, event_id = ?entry.id, attempt = entry.attempt, error = %err, "could not record an inbox entry's outcome; it is taken again when its lease runs out");
                    return;
                }
            }
        }
    }
}

/// What an attempt's end asks the backend to record.
enum Outcome<'e> {
    Complete,
    Retry(&'e str, OffsetDateTime),
    Bury(&'e str),
}
