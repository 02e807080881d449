//! The [`Backend`] trait every inbox store implements, and the types it speaks in.
//!
//! A backend keeps entries in four states: **pending** (due now or at a scheduled retry time),
//! **processing** (leased to a worker until the lease runs out), **done** (kept for the
//! retention, for deduplication and replay) and **dead** (past the retry policy, kept with the
//! last error until replayed or purged). Every method is atomic; the conformance suite
//! (feature `conformance`) checks any backend against the same rules.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use airmy_verify::observe::Outcome;
use airmy_verify::{Answer, Verified};
use bytes::Bytes;
use time::OffsetDateTime;

/// A boxed future returned by [`Backend`] methods.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, InboxError>> + Send + 'a>>;

/// What [`Inbox::accept`](crate::Inbox::accept) did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored durably: it will be handled.
    Stored,
    /// The inbox already holds this event id (pending, processing, done or dead): not stored
    /// again.
    Duplicate,
}

impl Accepted {
    /// The answer adapters give for the delivery `id`: 200 `{"id":"…","status":"accepted"}`
    /// (outcome `accepted`) or 200 `{"id":"…","status":"duplicate"}` (outcome `duplicate`).
    pub fn answer(&self, id: &str) -> Answer {
        match self {
            Self::Stored => Answer::with_id(200, "accepted", id, Outcome::Accepted),
            Self::Duplicate => Answer::with_id(200, "duplicate", id, Outcome::Duplicate),
        }
    }
}

/// Why an inbox could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboxError {
    /// The inbox holds as many unfinished entries as it may, or its disk is full: the
    /// delivery was not stored (adapters answer 503, AIRMY retries).
    Full(String),
    /// The inbox could not be reached or written (adapters answer 503).
    Unavailable(String),
    /// No entry with this id (or none in a state the operation applies to).
    NotFound(String),
    /// The entry with this id is being processed right now (replay refuses it: replay it once
    /// it is done or dead).
    Busy(String),
}

impl InboxError {
    /// The answer adapters give for a delivery that could not be accepted: 503
    /// `{"error":"inbox_unavailable"}`, outcome `rejected` (AIRMY retries). The same for every
    /// variant: the reason is logged, never sent.
    pub fn answer(&self) -> Answer {
        Answer::new(
            503,
            Bytes::from_static(br#"{"error":"inbox_unavailable"}"#),
            Some(Outcome::Rejected),
        )
    }
}

impl fmt::Display for InboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(why) => write!(f, "the inbox is full: {why}"),
            Self::Unavailable(why) => write!(f, "the inbox is unavailable: {why}"),
            Self::NotFound(id) => write!(f, "no such entry: {id}"),
            Self::Busy(id) => write!(
                f,
                "entry {id} is being processed right now: replay it once it is done or dead"
            ),
        }
    }
}

impl std::error::Error for InboxError {}

/// An entry leased to a worker by [`Backend::take`].
#[derive(Clone)]
#[non_exhaustive]
pub struct Leased {
    /// The event id.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// The verified body, as received.
    pub body: Bytes,
    /// When the inbox accepted the delivery.
    pub received_at: OffsetDateTime,
    /// This attempt's number, from 1; every attempt counts, a takeover after a crash included.
    pub attempt: u32,
    /// The lease's token: only its holder may complete, retry, bury, extend or release it.
    pub token: String,
}

impl fmt::Debug for Leased {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leased")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("len", &self.body.len())
            .field("received_at", &self.received_at)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// Counts of an inbox's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Entries due now, waiting for a worker.
    pub pending: u64,
    /// Entries waiting for a retry at a later time.
    pub scheduled: u64,
    /// Entries leased to a worker.
    pub processing: u64,
    /// Dead letters.
    pub dead: u64,
    /// Processed entries still kept.
    pub done: u64,
    /// How long the oldest entry due now has been waiting, in whole seconds.
    pub oldest_pending_age_secs: Option<u64>,
}

/// A dead letter: an entry past the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DeadEntry {
    /// The event id.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: String,
    /// When the inbox accepted the delivery.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When it became a dead letter.
    #[serde(with = "time::serde::rfc3339")]
    pub died_at: OffsetDateTime,
}

/// Where an inbox keeps its entries. Implementations must make every method atomic, and
/// [`accept`](Self::accept) durable before it returns.
pub trait Backend: Send + Sync + 'static {
    /// Stores a verified delivery as pending (due at once), unless its id is already held.
    fn accept<'a>(&'a self, delivery: &'a Verified) -> BackendFuture<'a, Accepted>;

    /// Leases up to `max` entries that are due (pending and due, or processing with an expired
    /// lease: a takeover) for `lease`, counting one attempt on each, oldest due first.
    fn take(&self, max: usize, lease: Duration) -> BackendFuture<'_, Vec<Leased>>;

    /// When the next entry becomes due (a scheduled retry or a lease that runs out), if any.
    fn next_due(&self) -> BackendFuture<'_, Option<OffsetDateTime>>;

    /// Extends a lease; `false` when `token` no longer holds it.
    fn extend<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFuture<'a, bool>;

    /// Marks a leased entry done; `false` when `token` no longer holds it.
    fn complete<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool>;

    /// Schedules a leased entry's next attempt at `at`, keeping `error`; `false` when `token`
    /// no longer holds it.
    fn retry<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        error: &'a str,
        at: OffsetDateTime,
    ) -> BackendFuture<'a, bool>;

    /// Makes a leased entry a dead letter with `error`; `false` when `token` no longer holds
    /// it.
    fn bury<'a>(&'a self, id: &'a str, token: &'a str, error: &'a str) -> BackendFuture<'a, bool>;

    /// Gives a leased entry back, due at once, without counting the interrupted attempt (a
    /// worker shutting down); `false` when `token` no longer holds it.
    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool>;

    /// Counts of entries by state.
    fn stats(&self) -> BackendFuture<'_, Stats>;

    /// Dead letters, most recent first, at most `limit`.
    fn dead(&self, limit: usize) -> BackendFuture<'_, Vec<DeadEntry>>;

    /// Makes a dead or done entry pending again, due at once, its attempts reset (a new retry
    /// budget); a pending entry whose retry is scheduled later becomes due at once.
    ///
    /// `Err(InboxError::NotFound)` when no entry has this id, `Err(InboxError::Busy)` when it
    /// is being processed.
    fn replay<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()>;

    /// The ids of dead letters that died at or after `since` (all when `None`); replayed
    /// unless `dry_run`.
    fn replay_dead(
        &self,
        since: Option<OffsetDateTime>,
        dry_run: bool,
    ) -> BackendFuture<'_, Vec<String>>;

    /// Deletes done entries processed before `before` (and, with them, their dedupe record);
    /// how many.
    fn purge_done(&self, before: OffsetDateTime) -> BackendFuture<'_, u64>;

    /// Waits until an entry may have become due (a new delivery accepted through this
    /// backend), or `timeout` passed.
    fn wait(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// The transaction an attempt's handler may write in (PostgreSQL only); `None` elsewhere.
    #[cfg(feature = "postgres")]
    #[doc(hidden)]
    fn transaction_slot(
        &self,
        _id: &str,
        _token: &str,
    ) -> Option<std::sync::Arc<crate::postgres::tx::TxSlot>> {
        None
    }
}

/// The default lease of an entry taken by a worker: 60 seconds (extended while its handler
/// runs).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
