//! The [`Worker`]: runs a handler on the inbox's entries, with retries, dead letters, leases
//! and a graceful shutdown.
//!
//! - `N` entries are handled at once ([`Worker::concurrency`], default 4); each is **leased**
//!   (default 30 s, [`airmy_verify::lease::DEFAULT_LEASE`], kept alive every third of it by
//!   [`airmy_verify::lease::keep_alive`] while its handler runs), so two workers never
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

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use airmy_verify::observe;
use futures_util::FutureExt;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use airmy_verify::lease::DEFAULT_LEASE;

use crate::backend::{Backend, Leased};
use crate::handlers::{Context, Handlers};
use crate::trace::Propagator;

mod pool;
mod retry;

pub use retry::RetryPolicy;

/// How a worker makes each attempt's handler context, and what it ends after the handler.
pub(crate) type Opener<C> = Arc<dyn Fn(Context, &Leased) -> (C, Finish) + Send + Sync>;

/// What an attempt ends after its handler, besides recording its outcome.
pub(crate) enum Finish {
    /// Nothing: the outcome is recorded on its own.
    Plain,
    /// The attempt's PostgreSQL transaction: committed with the completion, or rolled back.
    #[cfg(feature = "postgres")]
    Transaction(Arc<crate::postgres::tx::TxSlot>),
}

/// Runs [`Handlers`] on an [`Inbox`](crate::Inbox)'s entries; see the [module docs](self).
///
/// `C` is the handlers' context: [`Context`] (from [`Inbox::worker`](crate::Inbox::worker)) or,
/// on PostgreSQL, `PgContext` (from `PgBackend::worker`).
pub struct Worker<C = Context> {
    backend: Arc<dyn Backend>,
    handlers: Handlers<C>,
    open: Opener<C>,
    concurrency: usize,
    lease: Duration,
    handler_timeout: Duration,
    shutdown_deadline: Duration,
    policy: RetryPolicy,
    retention: Duration,
    dedupe: Option<Duration>,
    propagator: Option<Arc<dyn Propagator>>,
}

impl<C> fmt::Debug for Worker<C> {
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
    pub(crate) fn new(backend: Arc<dyn Backend>, handlers: Handlers) -> Self {
        Self::with_opener(backend, handlers, Arc::new(|ctx, _| (ctx, Finish::Plain)))
    }
}

impl<C: AsRef<Context> + Send + 'static> Worker<C> {
    pub(crate) fn with_opener(
        backend: Arc<dyn Backend>,
        handlers: Handlers<C>,
        open: Opener<C>,
    ) -> Self {
        Self {
            backend,
            handlers,
            open,
            concurrency: 4,
            lease: DEFAULT_LEASE,
            handler_timeout: Duration::from_secs(300),
            shutdown_deadline: Duration::from_secs(20),
            policy: RetryPolicy::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
            dedupe: Some(airmy_verify::dedupe_window(airmy_verify::DEFAULT_TOLERANCE)),
            propagator: None,
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
    /// another takes it. Defaults to [`DEFAULT_LEASE`] (30 seconds); at least 30 ms.
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
    /// the worker purges them. Defaults to 7 days. Never less than the dedupe window
    /// ([`dedupe_for`](Self::dedupe_for)): a shorter retention is raised to it, with a warning
    /// when the worker starts, since a late retry of a purged event would be stored and handled
    /// again.
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The worker of an inbox behind `verifier`: its retention is at least the verifier's
    /// [dedupe window](airmy_verify::dedupe_window) (2 × tolerance + 1 minute). A worker from
    /// [`Inbox::worker`](crate::Inbox::worker) has its inbox's
    /// ([`Inbox::dedupe_for`](crate::Inbox::dedupe_for)); the default is the window of the
    /// default tolerance (11 minutes).
    #[must_use]
    pub fn dedupe_for(self, verifier: &airmy_verify::Verifier) -> Self {
        self.dedupe_window(verifier.dedupe_window())
    }

    /// Makes each attempt's span continue the trace of its entry's delivery, as stored at the
    /// accept ([`crate::trace`]). A worker from [`Inbox::worker`](crate::Inbox::worker) has
    /// its inbox's ([`Inbox::propagate`](crate::Inbox::propagate)); set it here on a worker of
    /// `PgBackend::worker`. Defaults to none: each attempt's span starts a trace of its own.
    #[must_use]
    pub fn propagate(self, propagator: impl Propagator) -> Self {
        self.propagator(Some(Arc::new(propagator)))
    }

    pub(crate) fn propagator(mut self, propagator: Option<Arc<dyn Propagator>>) -> Self {
        self.propagator = propagator;
        self
    }

    pub(crate) fn dedupe_window(mut self, window: Option<Duration>) -> Self {
        self.dedupe = window;
        self
    }

    /// The retention the worker applies: the one asked, raised to the dedupe window (logged).
    fn effective_retention(&self) -> Duration {
        let retention = retention_at_least_the_window(self.retention, self.dedupe);
        match self.dedupe {
            Some(window) if self.retention < window => {
                tracing::warn!(
                    target: "airmy_verify",
                    retention_secs = self.retention.as_secs(),
                    dedupe_window_secs = window.as_secs(),
                    "the inbox retention is shorter than the dedupe window (twice the verifier's \
                     tolerance plus a minute); raised to it"
                );
            }
            Some(_) => {}
            None => {
                tracing::warn!(
                    target: "airmy_verify",
                    retention_secs = self.retention.as_secs(),
                    "the verifier checks no freshness: a redelivery of an event purged after the \
                     retention would be handled again"
                );
            }
        }
        retention
    }

    /// Runs until `shutdown` is cancelled, then finishes or releases what is running.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.retention = self.effective_retention();
        pool::run(Arc::new(self), shutdown).await;
    }

    /// Records an attempt's result (`success`, `retry`, `dead`) on its span and in
    /// `airmy_webhook_handler_attempts_total`.
    fn attempted(span: &tracing::Span, event_type: &str, result: &'static str) {
        span.record("result", result);
        observe::metrics::handler_attempt(event_type, result);
    }

    /// One attempt of one entry: the handler (within its timeout, panics caught) while the
    /// lease is extended, then complete, retry or bury.
    async fn handle(
        &self,
        entry: Leased,
        queued_at: tokio::time::Instant,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let backend = &self.backend;
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
        if let Some(propagator) = &self.propagator
            && !entry.trace.is_empty()
        {
            propagator.attach(&span, &entry.trace);
        }
        let ctx = Context::new(entry.id.clone(), entry.attempt, entry.received_at);
        let after_commit = ctx.after_commit_hooks();
        #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
        let (ctx, finish) = (self.open)(ctx, &entry);
        let run = AssertUnwindSafe(tokio::time::timeout(
            self.handler_timeout,
            self.handlers
                .handle(&entry.event_type, entry.body.clone(), ctx)
                .instrument(span.clone()),
        ))
        .catch_unwind();
        let keep_alive = airmy_verify::lease::keep_alive(
            self.lease,
            || backend.extend(&entry.id, &entry.token, self.lease),
            || tracing::warn!(target: "airmy_verify", event_id = ?entry.id, "the lease of a running handler was taken over"),
            |err| tracing::warn!(target: "airmy_verify", event_id = ?entry.id, error = %err, "could not extend the lease of a running handler"),
        );
        let outcome = tokio::select! {
            outcome = run => outcome,
            never = keep_alive => match never {},
        };
        // The handler is done: its slot is free for the next entry while the outcome is
        // recorded (a round trip to the backend, which need not hold up a handler).
        drop(slot);
        #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
        let mut error = match outcome {
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
        // On PostgreSQL, a handler that wrote in the attempt's transaction: its writes and the
        // completion commit together, or neither (then the attempt failed).
        #[cfg(feature = "postgres")]
        if let Finish::Transaction(slot) = &finish {
            use crate::postgres::tx::Ended;
            if error.is_some() {
                slot.roll_back().await;
            } else {
                match slot.commit().await {
                    Ended::NotOpened => {}
                    Ended::Committed => {
                        Self::attempted(&span, &entry.event_type, "success");
                        after_commit.run();
                        return;
                    }
                    Ended::Failed(err) => {
                        error = Some(format!("the handler's transaction did not commit: {err}"));
                    }
                }
            }
        }
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
        if self.record(&entry, &outcome, &span).await && matches!(outcome, Outcome::Complete) {
            after_commit.run();
        }
    }

    /// Records an attempt's outcome. A backend that fails (Redis unreachable for a moment, a
    /// reply lost) is asked again, for up to half the lease, which still holds: otherwise the
    /// entry would be handled again when its lease runs out.
    async fn record(&self, entry: &Leased, outcome: &Outcome<'_>, span: &tracing::Span) -> bool {
        let backend = &self.backend;
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
                Ok(true) => return true,
                Ok(false) if failed_before => {
                    tracing::info!(target: "airmy_verify", parent: span, event_id = ?entry.id, attempt = entry.attempt, "the entry's outcome was recorded by an earlier attempt whose reply was lost, or its lease was taken over");
                    return false;
                }
                Ok(false) => {
                    tracing::warn!(target: "airmy_verify", parent: span, event_id = ?entry.id, attempt = entry.attempt, "the entry's lease was taken over before its outcome was recorded");
                    return false;
                }
                Err(err) if tokio::time::Instant::now() + pause < give_up => {
                    tracing::warn!(target: "airmy_verify", parent: span, event_id = ?entry.id, attempt = entry.attempt, error = %err, "could not record an inbox entry's outcome; trying again");
                    failed_before = true;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(err) => {
                    tracing::warn!(target: "airmy_verify", parent: span, event_id = ?entry.id, attempt = entry.attempt, error = %err, "could not record an inbox entry's outcome; it is taken again when its lease runs out");
                    return false;
                }
            }
        }
    }
}

/// The rule of [`Worker::retention`]: never less than the dedupe window, when there is one.
fn retention_at_least_the_window(retention: Duration, window: Option<Duration>) -> Duration {
    window.map_or(retention, |window| retention.max(window))
}

/// What an attempt's end asks the backend to record.
enum Outcome<'e> {
    Complete,
    Retry(&'e str, OffsetDateTime),
    Bury(&'e str),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::retention_at_least_the_window;

    #[test]
    fn the_retention_is_never_shorter_than_the_dedupe_window() {
        let window = airmy_verify::dedupe_window(Duration::from_secs(600));
        assert_eq!(window, Duration::from_secs(1260));
        let minute = Duration::from_secs(60);
        assert_eq!(retention_at_least_the_window(minute, Some(window)), window);
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(retention_at_least_the_window(week, Some(window)), week);
        assert_eq!(retention_at_least_the_window(minute, None), minute);
    }
}
