//! The guard: [`Idempotency`] decides, per verified event id, whether a handler runs, and
//! records its outcome; [`Guarded`] is what [`Idempotency::run`] did. See the
//! [module docs](super) for the rules.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{Either, select};

use super::store::{Claim, Commit, IdempotencyStore, MAX_DURATION};
use crate::answer::Answer;
use crate::lease::{self, DEFAULT_LEASE};
use crate::observe::{Outcome, metrics};
use crate::verifier::Verifier;

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
    /// The verifier's dedupe window: the least `retention` may be.
    window: Option<Duration>,
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

impl Idempotency {
    /// A guard on `store` for deliveries checked by `verifier`.
    ///
    /// Committed ids are kept for the verifier's [dedupe window](Verifier::dedupe_window)
    /// (twice its tolerance plus a minute), or, when the verifier checks no freshness, for
    /// [`MAX_DURATION`] (no redelivery is then too old to be accepted, so ids are remembered as
    /// long as the store allows); see [`Idempotency::remember_for`]. Claims lease for
    /// [`DEFAULT_LEASE`] (30 s), and an unreachable store lets deliveries through with a
    /// warning.
    #[must_use]
    pub fn new(store: impl IdempotencyStore, verifier: &Verifier) -> Self {
        let window = verifier.dedupe_window();
        Self {
            store: Arc::new(store),
            lease: DEFAULT_LEASE,
            retention: window.unwrap_or(MAX_DURATION),
            window,
            on_error: OnStoreError::default(),
            running: Arc::default(),
        }
    }

    /// How long committed ids are remembered (their retention), for keeping them longer than
    /// the verifier's [dedupe window](Verifier::dedupe_window). Defaults to that window, or to
    /// [`MAX_DURATION`] when the verifier checks no freshness; at most [`MAX_DURATION`].
    ///
    /// A value below the window is raised to the window, with a warning: a shorter retention
    /// would forget an id while a redelivery of it can still be accepted, and run its handler
    /// twice. Without a freshness check there is no window, and the value is kept as given.
    #[must_use]
    pub fn remember_for(mut self, retention: Duration) -> Self {
        let retention = retention.min(MAX_DURATION);
        self.retention = match self.window {
            Some(window) if retention < window => {
                tracing::warn!(
                    target: "airmy_verify",
                    requested_secs = retention.as_secs_f64(),
                    window_secs = window.as_secs_f64(),
                    "idempotency retention below the verifier's dedupe window; raised to the window"
                );
                window
            }
            _ => retention,
        };
        self
    }

    /// How long a claim lasts without being extended: a running handler extends it every
    /// third of the lease ([`lease::keep_alive`]), so this is how long a claim outlives a
    /// process that died. Defaults to [`DEFAULT_LEASE`] (30 seconds); at least 1 ms and at
    /// most [`MAX_DURATION`].
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

    /// How long committed ids are kept: the verifier's dedupe window unless
    /// [`Idempotency::remember_for`] says longer.
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

    /// Decides whether the handler runs for a (verified) event id: claims it, or says why not.
    async fn begin(&self, event_id: &str) -> Begin {
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
                Begin::InFlight
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

    /// Runs a handler under the guard, the way adapters do: claims the id
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
        let ticket = match self.begin(event_id).await.into_ticket() {
            Ok(ticket) => ticket,
            Err(answer) => return Guarded::Answered { answer, input },
        };
        let _running = RunningGuard::new(&self.running);
        let handler = AssertUnwindSafe(handler(input)).catch_unwind();
        let outcome = match select(pin!(handler), pin!(ticket.keep_alive())).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right((never, _)) => match never {},
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

impl fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("lease", &self.lease)
            .field("retention", &self.retention)
            .field("window", &self.window)
            .field("on_error", &self.on_error)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

/// The guard's decision for one delivery.
#[derive(Debug)]
#[must_use]
enum Begin {
    /// Run the handler, then [`Ticket::finish`].
    Run(Ticket),
    /// Already processed: answer 200 `{"status":"duplicate","id":"…"}` without the handler.
    Duplicate { id: String },
    /// Another delivery of the id is being handled: answer 409.
    InFlight,
    /// The store is unreachable and the policy is [`OnStoreError::Refuse`]: answer 503.
    Unavailable,
}

impl Begin {
    /// The ticket to run the handler with, or the answer to give instead (status, JSON body,
    /// outcome).
    fn into_ticket(self) -> Result<Ticket, Answer> {
        Err(match self {
            Self::Run(ticket) => return Ok(ticket),
            Self::Duplicate { id } => Answer::with_id(200, "duplicate", &id, Outcome::Duplicate),
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
        })
    }
}

/// The claim of one delivery: finish it with the handler's outcome.
#[must_use = "finish the ticket, or the claim stays until its lease expires"]
struct Ticket {
    claim: Option<(Idempotency, String, String)>,
}

impl Ticket {
    /// Extends the claim every third of the lease, for as long as it is polled (never ends).
    /// A claim that could not be extended is logged; the handler goes on.
    async fn keep_alive(&self) -> Infallible {
        let Some((guard, id, token)) = &self.claim else {
            return std::future::pending().await;
        };
        lease::keep_alive(
            guard.lease,
            || guard.store.extend(id, token, guard.lease),
            || {
                tracing::warn!(
                    target: "airmy_verify",
                    event_id = ?id,
                    "the claim of a running handler expired and was taken; another delivery \
                     of this event may run the handler again"
                );
            },
            |err| {
                metrics::store_error("extend");
                tracing::warn!(
                    target: "airmy_verify",
                    event_id = ?id,
                    reason = %err,
                    "could not extend the claim of a running handler"
                );
            },
        )
        .await
    }

    /// Commits the id when `success` (the handler answered 2xx), releases it otherwise so the
    /// next delivery runs the handler again. Store errors and lost commits are logged, never
    /// returned: the response is already decided.
    async fn finish(self, success: bool) {
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

#[cfg(test)]
mod tests;
