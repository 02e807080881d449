//! The [`Backend`] trait every inbox store implements, and the types it speaks in.
//!
//! A backend keeps entries in five states: **pending** (due now or at a scheduled retry time),
//! **paused** (held by a [pause](Admin::pause) of its event type or of everything: never taken
//! until resumed), **processing** (leased to a worker until the lease runs out), **done** (kept
//! for the retention, for deduplication and replay) and **dead** (past the retry policy, kept
//! with the last error until replayed or purged). Every method is atomic; the conformance suite
//! (feature `conformance`) checks any backend against the same rules.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use airmy_verify::observe::Outcome;
use airmy_verify::{Answer, Verified};
use bytes::Bytes;
use time::OffsetDateTime;

pub(crate) use crate::audit::Action;
pub(crate) use crate::error::InboxError;

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

/// An entry leased to a worker by [`Queue::take`].
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
    /// Entries held by a pause ([`Admin::pause`]): pending or scheduled entries of a paused
    /// event type (or of any, while everything is paused), taken by no worker until resumed.
    /// Counted here and not in [`pending`](Self::pending) or [`scheduled`](Self::scheduled).
    pub paused: u64,
    /// How long the oldest entry due now has been waiting, in whole seconds (paused entries
    /// aside).
    pub oldest_pending_age_secs: Option<u64>,
}

/// The state of an entry as a listing sees it: [`Stats`]' six counts, one per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Due now, waiting for a worker (listed by due time).
    Pending,
    /// Waiting for a retry at a later time (listed by that time).
    Scheduled,
    /// Held by a pause of its event type or of everything ([`Admin::pause`]): taken by no
    /// worker, its attempts not counted, until resumed (listed by the time it is or was due).
    Paused,
    /// Leased to a worker (listed by the lease's expiry).
    Processing,
    /// A dead letter (listed by when it died).
    Dead,
    /// Processed, kept for the retention (listed by when it was processed).
    Done,
}

impl EntryState {
    /// Every state, in the order an operator reads them.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Scheduled,
        Self::Paused,
        Self::Processing,
        Self::Dead,
        Self::Done,
    ];

    /// The state's name: `pending`, `scheduled`, `paused`, `processing`, `dead` or `done`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Paused => "paused",
            Self::Processing => "processing",
            Self::Dead => "dead",
            Self::Done => "done",
        }
    }

    /// This state's count in `stats`.
    #[must_use]
    pub fn count(self, stats: &Stats) -> u64 {
        match self {
            Self::Pending => stats.pending,
            Self::Scheduled => stats.scheduled,
            Self::Paused => stats.paused,
            Self::Processing => stats.processing,
            Self::Dead => stats.dead,
            Self::Done => stats.done,
        }
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EntryState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                "a state is one of pending, scheduled, paused, processing, dead, done".to_owned()
            })
    }
}

/// Which end of a state's listing comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The earliest time first (for pending entries: the next a worker takes).
    #[default]
    Oldest,
    /// The latest time first (for dead letters: the one that died last).
    Newest,
}

/// The most entries one listing page holds: a larger [`ListQuery::limit`] is lowered to it.
pub const MAX_PAGE: usize = 500;

/// The most entries a backend examines for one page when filtering by type or id prefix: a
/// page may then hold fewer matches than asked, with a [`Page::next`] to go on from (so a
/// filter that matches nothing in a million entries answers in bounded time).
pub const LIST_SCAN: usize = 5_000;

/// A page of one state's entries, asked of [`Admin::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// The state listed.
    pub state: EntryState,
    /// Only entries of this event type.
    pub event_type: Option<String>,
    /// Only entries whose id starts with this.
    pub id_prefix: Option<String>,
    /// Which end first.
    pub order: Order,
    /// At most this many entries (1 to [`MAX_PAGE`]).
    pub limit: usize,
    /// Where the previous page stopped: its [`Page::next`].
    pub after: Option<String>,
}

impl ListQuery {
    /// The first 50 entries of `state`, oldest first, unfiltered.
    #[must_use]
    pub fn new(state: EntryState) -> Self {
        Self {
            state,
            event_type: None,
            id_prefix: None,
            order: Order::Oldest,
            limit: 50,
            after: None,
        }
    }

    /// Only entries of `event_type`.
    #[must_use]
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Only entries whose id starts with `prefix`.
    #[must_use]
    pub fn id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.id_prefix = Some(prefix.into());
        self
    }

    /// Which end first.
    #[must_use]
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// At most `limit` entries (kept between 1 and [`MAX_PAGE`]).
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The page after the one that returned this cursor.
    #[must_use]
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.after = Some(cursor.into());
        self
    }

    /// The limit a backend applies: [`limit`](Self::limit) within 1 to [`MAX_PAGE`].
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }

    /// Whether the filters keep an entry with this id and type.
    #[must_use]
    pub fn matches(&self, id: &str, event_type: &str) -> bool {
        self.event_type.as_deref().is_none_or(|t| t == event_type)
            && self.id_prefix.as_deref().is_none_or(|p| id.starts_with(p))
    }

    /// Whether any filter is set (a backend then examines at most [`LIST_SCAN`] entries).
    #[must_use]
    pub fn filtered(&self) -> bool {
        self.event_type.is_some() || self.id_prefix.is_some()
    }
}

/// One entry as a listing shows it (everything but the body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct EntrySummary {
    /// The event id.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// Its state.
    pub state: EntryState,
    /// Attempts made so far (reset by a replay).
    pub attempts: u32,
    /// When the inbox accepted the delivery.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Pending, scheduled or paused: when it is (or was) due; processing: when its lease runs
    /// out.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Dead: when it died; done: when it was processed (on PostgreSQL, for a handler that
    /// wrote in its transaction: when that transaction began, its completion being its first
    /// statement; it shows once the transaction commits).
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The last failed attempt's error, if any.
    pub last_error: Option<String>,
}

/// One entry in full: its summary and the body as received.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// Everything but the body.
    pub summary: EntrySummary,
    /// The verified body, as received.
    pub body: Bytes,
}

impl Entry {
    /// The body as indented JSON, its keys in the order AIRMY sent them (as text, invalid
    /// UTF-8 replaced, should it not be JSON). For people to read: the console and
    /// `airmy-webhook inbox show` print it.
    #[must_use]
    pub fn pretty_body(&self) -> String {
        let mut out = Vec::with_capacity(self.body.len() * 2);
        let mut from = serde_json::Deserializer::from_slice(&self.body);
        let mut to = serde_json::Serializer::pretty(&mut out);
        match serde_transcode::transcode(&mut from, &mut to).and_then(|()| from.end()) {
            Ok(()) => String::from_utf8(out).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("summary", &self.summary)
            .field("len", &self.body.len())
            .finish()
    }
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Page {
    /// The entries, in the order asked.
    pub entries: Vec<EntrySummary>,
    /// Where the next page starts (pass it as [`ListQuery::after`]); `None` at the end. A
    /// filtered page may hold fewer entries than asked and still have a next one.
    pub next: Option<String>,
}

impl Page {
    /// A page of `entries` followed by `next`.
    #[must_use]
    pub fn new(entries: Vec<EntrySummary>, next: Option<String>) -> Self {
        Self { entries, next }
    }
}

/// The cursor of a keyset listing (SQLite, PostgreSQL): the last examined entry's sort key and
/// sequence number, as `KEY.SEQ`.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "memory")),
    allow(dead_code)
)]
pub(crate) fn keyset_cursor(key: i64, seq: i64) -> String {
    format!("{key}.{seq}")
}

/// The key and sequence number of a [`keyset_cursor`]; for no cursor, the start of `order`.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "memory")),
    allow(dead_code)
)]
pub(crate) fn parse_keyset_cursor(query: &ListQuery) -> Result<(i64, i64), InboxError> {
    let Some(cursor) = query.after.as_deref() else {
        return Ok(match query.order {
            Order::Oldest => (i64::MIN, i64::MIN),
            Order::Newest => (i64::MAX, i64::MAX),
        });
    };
    cursor
        .split_once('.')
        .and_then(|(key, seq)| Some((key.parse().ok()?, seq.parse().ok()?)))
        .ok_or_else(|| InboxError::invalid("not a cursor of this inbox"))
}

/// What a pause holds back ([`Admin::pause`]): the entries of one event type, or every entry.
///
/// ```
/// use airmy_verify_inbox::PauseScope;
///
/// let billing = PauseScope::event_type("run.completed");
/// assert!(billing.covers("run.completed") && !billing.covers("run.failed"));
/// assert!(PauseScope::All.covers("run.failed"));
/// assert_eq!(billing.key(), "type:run.completed");
/// assert_eq!(PauseScope::from_key("*"), Some(PauseScope::All));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PauseScope {
    /// Every entry, whatever its event type.
    All,
    /// The entries of this event type (as sent, compared exactly).
    EventType(String),
}

impl PauseScope {
    /// The entries of `event_type`.
    #[must_use]
    pub fn event_type(event_type: impl Into<String>) -> Self {
        Self::EventType(event_type.into())
    }

    /// Whether this scope holds an entry of `event_type`.
    #[must_use]
    pub fn covers(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::EventType(t) => t == event_type,
        }
    }

    /// How a backend stores the scope: `*` for [`All`](Self::All), `type:` and the event type
    /// for one type (so no event type, `*` included, can read as everything). The SQL and the
    /// Lua of the backends build the same keys to check an entry (`'type:' || event_type`).
    #[must_use]
    pub fn key(&self) -> String {
        match self {
            Self::All => "*".to_owned(),
            Self::EventType(t) => format!("type:{t}"),
        }
    }

    /// The scope stored as `key` ([`key`](Self::key)); `None` for a key it never writes.
    #[must_use]
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "*" => Some(Self::All),
            other => other.strip_prefix("type:").map(Self::event_type),
        }
    }
}

impl fmt::Display for PauseScope {
    /// `every event type`, or `event type <T>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("every event type"),
            Self::EventType(t) => write!(f, "event type {t}"),
        }
    }
}

/// A pause in force ([`Admin::paused`]): what it holds back and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pause {
    /// What it holds back.
    pub scope: PauseScope,
    /// When it was made (the first [`Admin::pause`] of this scope since it was last resumed).
    pub since: OffsetDateTime,
}

impl Pause {
    /// A pause of `scope` made at `since` (for a backend of your own).
    #[must_use]
    pub fn new(scope: PauseScope, since: OffsetDateTime) -> Self {
        Self { scope, since }
    }
}

/// The most actions a backend keeps for [`Admin::recent_actions`]: recording one more forgets
/// the oldest.
pub const RECENT_ACTIONS: usize = 100;

/// Stores deliveries: the one method the webhook route needs. Implementations make
/// [`accept`](Self::accept) atomic and durable before it returns.
pub trait Store: Send + Sync + 'static {
    /// Stores a verified delivery as pending (due at once), unless its id is already held.
    fn accept<'a>(&'a self, delivery: &'a Verified) -> BackendFuture<'a, Accepted>;
}

/// The worker's protocol: lease due entries, keep the lease, record each attempt's end. Every
/// method is atomic; a method given a lease's `token` answers `false` when that token no longer
/// holds the entry (the lease ran out and another worker took it over), and changes nothing.
pub trait Queue: Send + Sync + 'static {
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

    /// Waits until an entry may have become due (a new delivery accepted through this
    /// backend), or `timeout` passed.
    fn wait(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// What an operator reads and does: counts, listings, one entry, replay and purge, pause and
/// resume, and the record of recent actions. The web console and `airmy-webhook inbox` speak
/// only this trait. Reads never change an entry.
pub trait Admin: Send + Sync + 'static {
    /// Counts of entries by state.
    fn stats(&self) -> BackendFuture<'_, Stats>;

    /// A page of one state's entries (see [`ListQuery`]): a keyset read, so each page costs
    /// the same however deep it is, and a filtered page examines at most [`LIST_SCAN`] entries.
    /// Dead letters are the listing of [`EntryState::Dead`] (newest first with
    /// [`Order::Newest`]).
    ///
    /// `Err` of kind [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) for a cursor this backend did not write.
    fn list<'a>(&'a self, query: &'a ListQuery) -> BackendFuture<'a, Page>;

    /// One entry in full, whatever its state; `None` when no entry has this id.
    fn entry<'a>(&'a self, id: &'a str) -> BackendFuture<'a, Option<Entry>>;

    /// Makes a dead or done entry pending again, due at once, its attempts reset (a new retry
    /// budget); a pending entry whose retry is scheduled later becomes due at once. An entry
    /// a pause covers becomes (or stays) paused instead, due at once when resumed.
    ///
    /// `Err` of kind [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when no entry has this id, [`ErrorKind::Busy`](crate::ErrorKind::Busy)
    /// when it is being processed ([`replay_check`] says which from an [`Entry`], without
    /// replaying).
    fn replay<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()>;

    /// Replays every dead letter that died at or after `since` (all when `None`), as
    /// [`replay`](Self::replay) does each; their ids. (To see them first, list the dead state.)
    fn replay_dead(&self, since: Option<OffsetDateTime>) -> BackendFuture<'_, Vec<String>>;

    /// Deletes done entries processed before `before` (and, with them, their dedupe record);
    /// how many. See [`purge_refusal`](crate::purge_refusal) for the window an operator's
    /// purge should keep.
    fn purge_done(&self, before: OffsetDateTime) -> BackendFuture<'_, u64>;

    /// Pauses the handling of `scope`'s entries, for every worker of every replica, until
    /// [`resume`](Self::resume); the pause is kept in the backend (it survives restarts).
    /// Accepts go on. Its pending and scheduled entries, and those it accepts, retries,
    /// releases or replays from now on, become [`EntryState::Paused`]: no worker takes them,
    /// no attempt is counted, none becomes a dead letter. Entries being processed finish
    /// their attempt; one whose lease runs out (its worker died) is held rather than taken
    /// over. An entry is held while any pause covers it (its type's, or everything's).
    ///
    /// Pausing a scope already paused changes nothing (its [`Pause::since`] stays). The
    /// number of entries this call held. It costs one pass over the pending entries (on
    /// Redis, in steps of a thousand, so a large backlog never blocks Redis for long);
    /// [`take`](Queue::take) never reads paused entries, so a paused backlog costs the
    /// workers nothing.
    fn pause<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64>;

    /// Ends the pause of `scope`: the entries it held, unless another pause still covers them
    /// (a paused type, while everything is resumed), are pending again, due when they were
    /// (a scheduled retry keeps its time), their attempts as they were. The number of entries
    /// released; 0 when `scope` was not paused.
    fn resume<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64>;

    /// The pauses in force, oldest first.
    fn paused(&self) -> BackendFuture<'_, Vec<Pause>>;

    /// Keeps an operator's action for [`recent_actions`](Self::recent_actions), forgetting the
    /// oldest past [`RECENT_ACTIONS`]. [`audit::record`](crate::audit::record) logs, counts and
    /// keeps one.
    fn record_action<'a>(&'a self, action: &'a Action) -> BackendFuture<'a, ()>;

    /// The last `limit` actions kept (at most [`RECENT_ACTIONS`]), newest first.
    fn recent_actions(&self, limit: usize) -> BackendFuture<'_, Vec<Action>>;
}

/// Every role at once: what [`Inbox`](crate::Inbox) holds. Implemented for any type that
/// implements [`Store`], [`Queue`] and [`Admin`]; the conformance suite (feature
/// `conformance`) checks a backend against the same rules.
pub trait Backend: Store + Queue + Admin {}

impl<T: Store + Queue + Admin> Backend for T {}

/// What [`Admin::replay`] would answer for `entry` (the result of [`Admin::entry`]), without
/// replaying: `Ok` for a dead, done, pending, scheduled or paused entry, [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for
/// none, [`ErrorKind::Busy`](crate::ErrorKind::Busy) for one being processed. The one rule behind
/// `airmy-webhook inbox replay --dry-run`.
///
/// # Errors
///
/// As above.
pub fn replay_check(id: &str, entry: Option<&Entry>) -> Result<EntryState, InboxError> {
    match entry.map(|e| e.summary.state) {
        None => Err(InboxError::not_found(id)),
        Some(EntryState::Processing) => Err(InboxError::busy(id)),
        Some(state) => Ok(state),
    }
}
