//! A durable inbox for verified AIRMY webhook deliveries: **accept in milliseconds, process
//! with retries for hours, lose nothing.**
//!
//! AIRMY retries a delivery for about a minute (attempts at 0, +1 s, +5 s, +30 s, each needing
//! a 2xx within 10 s). When a handler's own dependency is down for longer, or a handler needs
//! more than 10 s, the event is gone. An [`Inbox`] closes that gap: behind the verifying layer
//! or middleware, [`Inbox::accept`] writes the verified delivery durably and the route answers
//! 2xx at once; a [`Worker`] then runs your [`Handlers`] on it with its own retries
//! (exponential backoff for up to 24 hours), dead letters and replay.
//!
//! - [`Backend`]: where entries live: [`Store`] (accept), [`Queue`] (the worker's protocol) and
//!   [`Admin`] (the operator's reads and actions), one conformance suite (feature
//!   `conformance`) for all. [`SqliteBackend`] keeps entries in an embedded SQLite file (no
//!   server); `RedisBackend` (feature `redis`) in Redis Streams shared by every replica of a
//!   service; `PgBackend` (feature `postgres`) in your PostgreSQL, with handlers writing in
//!   their entry's transaction; `MemoryBackend` (feature `memory`) in memory, for tests only.
//! - [`Inbox`]: the handle the adapters use to accept deliveries
//!   (`airmy_verify_axum::inbox`, `airmy_verify_actix::inbox`, feature `inbox`): 200
//!   `{"status":"accepted","id":"…"}`, 200 `{"status":"duplicate","id":"…"}` for an id it already
//!   holds, and 503 `{"error":"inbox_unavailable"}` when it cannot store (never a 2xx for a
//!   delivery that is not stored).
//! - [`Worker`] and [`RetryPolicy`]: concurrency, leases, timeouts, graceful shutdown.
//! - [`Admin::pause`] / [`Admin::resume`]: hold the handling of one event type (or of
//!   everything) on every replica while accepts go on; [`audit`]: every operator's action
//!   logged, counted and kept.
//! - [`Handlers`]: handlers by event type, typed, with a fallback; they also run synchronously.
//! - [`InboxUrl`]: an inbox written as one string (`sqlite:PATH`, `redis://…?prefix=…`,
//!   `postgres://…?schema=…`), as the example receivers' `AIRMY_INBOX` and
//!   `airmy-webhook inbox --inbox` take it.
//!
//! **Guarantees.** A delivery answered 2xx by `accept` is on disk (SQLite: committed and synced
//! with `synchronous=FULL`; Redis: as durable as Redis's persistence makes it, on disk with AOF
//! `appendfsync always`). Each is handled until a handler succeeds or the policy makes it a
//! dead letter. A handler runs more than once for one event id only when a worker died (or was
//! killed) while running it: its entry is taken over when its lease runs out. No ordering
//! between events is promised; use the envelope's `created_at`.
//!
//! # Example
//!
//! ```
//! use airmy_verify::{Envelope, Secret, Verifier, event::RunCompleted};
//! use airmy_verify_inbox::{Accepted, Context, HandlerError, Handlers, Inbox, SqliteBackend, SqliteOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("inbox-lib-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let inbox = Inbox::new(SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default())?);
//!
//! // In the webhook route, behind the verifying layer (the adapters do this for you):
//! # let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
//! # let body = format!(r#"{{"id":"evt_1","type":"run.completed","created_at":"{now}","data":{{"id":"run_1"}}}}"#);
//! # let verifier = Verifier::new(Secret::new("whsec_doc")?);
//! let verified = verifier.verify(airmy_verify::sign(body.as_bytes(), "whsec_doc"), body)?;
//! assert_eq!(inbox.accept(&verified).await?, Accepted::Stored);
//! assert_eq!(inbox.accept(&verified).await?, Accepted::Duplicate);
//!
//! // In the background:
//! let handlers = Handlers::new().on(|run: Envelope<RunCompleted>, ctx: Context| async move {
//!     println!("{} (attempt {})", run.id, ctx.attempt);
//!     Ok::<(), HandlerError>(())
//! });
//! let shutdown = CancellationToken::new();
//! let worker = tokio::spawn(inbox.worker(handlers).run(shutdown.clone()));
//! # while inbox.admin().stats().await?.done == 0 { tokio::time::sleep(std::time::Duration::from_millis(10)).await; }
//! shutdown.cancel();
//! worker.await?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod audit;
mod backend;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod batch;
#[cfg(any(
    feature = "sqlite",
    feature = "redis",
    feature = "postgres",
    feature = "memory"
))]
mod clock;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
#[cfg(feature = "console")]
pub mod console;
mod error;
pub mod handlers;
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
mod url;
pub mod worker;

use std::fmt;
use std::sync::Arc;

use std::time::Duration;

use airmy_verify::{Answer, Verified, Verifier};

pub use backend::{
    Accepted, Admin, Backend, BackendFuture, Entry, EntryState, EntrySummary, LIST_SCAN, Leased,
    ListQuery, MAX_PAGE, Order, Page, Pause, PauseScope, Queue, RECENT_ACTIONS, Stats, Store,
    replay_check,
};
pub use error::{ErrorKind, InboxError, OpenError, OpenErrorKind};
pub use handlers::{Context, Dispatched, HandlerError, Handlers};

/// Why a purge of entries processed before `before` should be refused unless forced: `before`
/// is inside the dedupe window (`window`, from [`airmy_verify::dedupe_window`] of the
/// verifier's tolerance: [`Inbox::dedupe_window`]), so a retry of a purged event would be stored
/// and handled again; with no window (a verifier that checks no freshness) every purge is.
/// The one rule the `airmy-webhook inbox purge` command and the console apply
/// ([`Inbox::purge_refusal`]).
///
/// ```
/// use std::time::Duration;
/// use airmy_verify::{DEFAULT_TOLERANCE, dedupe_window, time::OffsetDateTime};
///
/// let window = Some(dedupe_window(DEFAULT_TOLERANCE)); // 11 minutes
/// let now = OffsetDateTime::now_utc();
/// assert!(airmy_verify_inbox::purge_refusal(now - Duration::from_secs(60), window).is_some());
/// assert!(airmy_verify_inbox::purge_refusal(now - Duration::from_secs(3600), window).is_none());
/// ```
#[must_use]
pub fn purge_refusal(before: time::OffsetDateTime, window: Option<Duration>) -> Option<String> {
    match window {
        None => Some(
            "the verifier checks no freshness, so any redelivery is accepted however old: a \
             retry of a purged event would be handled again"
                .to_owned(),
        ),
        Some(window) => (before > time::OffsetDateTime::now_utc() - window).then(|| {
            format!(
                "the time is inside the deduplication window (later than {} ago): a retry of a \
                 purged event would be handled again",
                shown_duration(window)
            )
        }),
    }
}

/// A window for people: whole minutes when it is some, else seconds.
pub(crate) fn shown_duration(d: Duration) -> String {
    match d.as_secs() {
        60 => "1 minute".to_owned(),
        secs if secs >= 60 && secs.is_multiple_of(60) => format!("{} minutes", secs / 60),
        secs => format!("{secs} s"),
    }
}

#[cfg(feature = "memory")]
pub use memory::{MemoryBackend, MemoryOptions};
#[cfg(feature = "postgres")]
pub use postgres::{InboxTransaction, PgBackend, PgContext, PgError, PgOptions};
#[cfg(feature = "redis")]
pub use redis::{RedisBackend, RedisError, RedisOptions};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteBackend, SqliteError, SqliteOptions};
/// The `sqlx` the PostgreSQL backend is built on (0.9): name your pool through it
/// (`airmy_verify_inbox::sqlx::PgPool`) and an application on another sqlx version still gets
/// the type [`PgBackend::with_pool`] takes.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use sqlx;
pub use url::InboxUrl;
pub use worker::{RetryPolicy, Worker};

/// The inbox: a [`Backend`] behind a cheap, clonable handle. See the [crate docs](crate).
#[derive(Clone)]
pub struct Inbox {
    backend: Arc<dyn Backend>,
    dedupe: Option<Duration>,
}

impl Inbox {
    /// An inbox on `backend`, for a verifier with the default tolerance (see
    /// [`dedupe_for`](Self::dedupe_for)).
    #[must_use]
    pub fn new(backend: impl Backend) -> Self {
        Self {
            backend: Arc::new(backend),
            dedupe: Some(airmy_verify::dedupe_window(airmy_verify::DEFAULT_TOLERANCE)),
        }
    }

    /// This inbox behind `verifier`: how long a processed event must be remembered (the
    /// [dedupe window](airmy_verify::dedupe_window) of the verifier's tolerance) follows it. Its
    /// workers keep processed entries at least that long ([`Worker::retention`] is raised to
    /// it), and [`purge_refusal`](Self::purge_refusal) refuses purges inside it. Defaults to the
    /// window of [`DEFAULT_TOLERANCE`](airmy_verify::DEFAULT_TOLERANCE) (11 minutes).
    #[must_use]
    pub fn dedupe_for(mut self, verifier: &Verifier) -> Self {
        self.dedupe = verifier.dedupe_window();
        self
    }

    /// How long a processed event must be remembered, from [`dedupe_for`](Self::dedupe_for);
    /// `None` for a verifier that checks no freshness (no redelivery is too old).
    #[must_use]
    pub fn dedupe_window(&self) -> Option<Duration> {
        self.dedupe
    }

    /// Why an operator's purge of entries processed before `before` should be refused unless
    /// forced: [`purge_refusal`] with this inbox's [`dedupe_window`](Self::dedupe_window).
    #[must_use]
    pub fn purge_refusal(&self, before: time::OffsetDateTime) -> Option<String> {
        purge_refusal(before, self.dedupe)
    }

    /// Stores a verified delivery durably, or reports it as a duplicate; returns only once it
    /// is durable.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Full`] or [`ErrorKind::Unavailable`]: the delivery is **not** stored, and
    /// the route must not answer 2xx (the adapters answer 503).
    pub async fn accept(&self, delivery: &Verified) -> Result<Accepted, InboxError> {
        let accepted = self.backend.accept(delivery).await;
        airmy_verify::observe::metrics::inbox_accept(match &accepted {
            Ok(Accepted::Stored) => "stored",
            Ok(Accepted::Duplicate) => "duplicate",
            Err(_) => "error",
        });
        match &accepted {
            Ok(Accepted::Stored) => tracing::debug!(
                target: "airmy_verify",
                event_id = delivery.id(),
                event_type = delivery.event_type(),
                "delivery stored in the inbox"
            ),
            Ok(Accepted::Duplicate) => tracing::info!(
                target: "airmy_verify",
                event_id = delivery.id(),
                "delivery already in the inbox; not stored again"
            ),
            Err(err) => tracing::error!(
                target: "airmy_verify",
                event_id = delivery.id(),
                error = %err,
                "delivery could not be stored in the inbox; answering 503"
            ),
        }
        accepted
    }

    /// Stores a verified delivery and gives the answer every adapter sends for it: 200
    /// `{"id":"…","status":"accepted"}` (outcome `accepted`), 200
    /// `{"id":"…","status":"duplicate"}` (outcome `duplicate`), or 503
    /// `{"error":"inbox_unavailable"}` (outcome `rejected`) when it was not stored.
    pub async fn respond(&self, delivery: &Verified) -> Answer {
        match self.accept(delivery).await {
            Ok(accepted) => accepted.answer(delivery.id()),
            Err(err) => err.answer(),
        }
    }

    /// The operator's side of the backend: counts, listings, one entry, replay, purge.
    #[must_use]
    pub fn admin(&self) -> &dyn Admin {
        self.backend.as_ref()
    }

    /// The worker's side of the backend (its protocol: take, extend, complete, …), for tools
    /// and tests that drive entries by hand.
    #[must_use]
    pub fn queue(&self) -> &dyn Queue {
        self.backend.as_ref()
    }

    /// The backend in every role at once (a test that accepts, takes and lists).
    #[must_use]
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// A worker running `handlers` on this inbox's entries, with the defaults of [`Worker`].
    /// Handlers take a [`Context`]; on PostgreSQL, handlers that write in their entry's
    /// transaction take a `PgContext` and run on `PgBackend::worker` instead.
    #[must_use]
    pub fn worker(&self, handlers: Handlers) -> Worker {
        Worker::new(Arc::clone(&self.backend), handlers).dedupe_window(self.dedupe)
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}
