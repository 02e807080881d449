//! The in-memory backend (feature `memory`), **for tests and development only**: the same
//! rules as the other backends (it passes the conformance suite unchanged), with no file and
//! no server, so a router test of an inbox route needs no database. **Nothing survives the
//! process**: a restart loses every entry, acknowledged or not. Never use it in production.
//!
//! Every operation holds one lock and scans the entries (listings sort them): fine for the
//! thousands of entries a test makes, not for millions.
//!
//! # Example
//!
//! ```
//! use airmy_verify_inbox::{Inbox, MemoryBackend, MemoryOptions};
//!
//! let inbox = Inbox::new(MemoryBackend::new(MemoryOptions::default()));
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use airmy_verify::{Clock, SystemClock, Verified};
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::backend::{
    Accepted, Action, Admin, BackendFuture, Entry, EntryState, EntrySummary, InboxError, LIST_SCAN,
    Leased, ListQuery, Order, Page, Pause, PauseScope, Queue, RECENT_ACTIONS, Stats, Store,
    keyset_cursor, parse_keyset_cursor,
};
use crate::clock::{duration_ms, from_unix_ms, unix_ms};

/// How to make a [`MemoryBackend`]: consuming setters on the defaults.
#[derive(Clone)]
pub struct MemoryOptions {
    max_unfinished: u64,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            max_unfinished: 100_000,
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for MemoryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryOptions")
            .field("max_unfinished", &self.max_unfinished)
            .finish_non_exhaustive()
    }
}

impl MemoryOptions {
    /// The most pending and processing entries it holds; accepts past it fail with an
    /// [`InboxError`] of kind [`Full`](crate::ErrorKind::Full). Defaults to 100,000.
    #[must_use]
    pub fn max_unfinished(mut self, entries: u64) -> Self {
        self.max_unfinished = entries;
        self
    }

    /// Reads the time from `clock` (for tests that move time on). Defaults to the system clock.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

/// The in-memory backend; see the [module docs](self). **Nothing survives the process: for
/// tests and development only.** Cheap to clone (clones share the entries).
#[derive(Clone)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

struct Shared {
    entries: Mutex<Entries>,
    notify: Notify,
    max_unfinished: u64,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, Row>,
    next_seq: i64,
    /// The pauses in force, by [`PauseScope::key`], with when each was made.
    pauses: BTreeMap<String, (PauseScope, i64)>,
    /// The recent actions, newest first.
    actions: VecDeque<Action>,
}

impl Entries {
    /// Whether a pause holds entries of `event_type`.
    fn held(&self, event_type: &str) -> bool {
        self.pauses
            .values()
            .any(|(scope, _)| scope.covers(event_type))
    }
}

/// Where an entry is: as the other backends store it (scheduled is pending, due later).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    Pending,
    Paused,
    Processing,
    Dead,
    Done,
}

struct Row {
    seq: i64,
    event_type: String,
    body: Bytes,
    received_at: i64,
    stored: Stored,
    attempts: u32,
    due_at: i64,
    lease_until: i64,
    lease_token: Option<String>,
    finished_at: Option<i64>,
    last_error: Option<String>,
}

impl Row {
    /// Its state as a listing sees it at `now`.
    fn state(&self, now: i64) -> EntryState {
        match self.stored {
            Stored::Pending if self.due_at > now => EntryState::Scheduled,
            Stored::Pending => EntryState::Pending,
            Stored::Paused => EntryState::Paused,
            Stored::Processing => EntryState::Processing,
            Stored::Dead => EntryState::Dead,
            Stored::Done => EntryState::Done,
        }
    }

    /// The time it is listed by in its state.
    fn key(&self) -> i64 {
        match self.stored {
            Stored::Pending | Stored::Paused => self.due_at,
            Stored::Processing => self.lease_until,
            Stored::Dead | Stored::Done => self.finished_at.unwrap_or(0),
        }
    }

    fn summary(&self, id: &str, now: i64) -> EntrySummary {
        let state = self.state(now);
        EntrySummary {
            id: id.to_owned(),
            event_type: self.event_type.clone(),
            state,
            attempts: self.attempts,
            received_at: from_unix_ms(self.received_at),
            next_attempt_at: match state {
                EntryState::Pending | EntryState::Scheduled | EntryState::Paused => {
                    Some(from_unix_ms(self.due_at))
                }
                EntryState::Processing => Some(from_unix_ms(self.lease_until)),
                EntryState::Dead | EntryState::Done => None,
            },
            finished_at: self.finished_at.map(from_unix_ms),
            last_error: self.last_error.clone(),
        }
    }

    /// Whether `token` holds its lease.
    fn held_by(&self, token: &str) -> bool {
        self.stored == Stored::Processing && self.lease_token.as_deref() == Some(token)
    }

    fn unfinished(&self) -> bool {
        matches!(
            self.stored,
            Stored::Pending | Stored::Paused | Stored::Processing
        )
    }

    /// Made pending again (paused when `held`), due at `at`.
    fn due(&mut self, at: i64, held: bool) {
        self.stored = if held {
            Stored::Paused
        } else {
            Stored::Pending
        };
        self.due_at = at;
        self.lease_token = None;
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.lock().by_id.len())
            .finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// An empty in-memory inbox. **Nothing it holds survives the process.**
    #[must_use]
    pub fn new(options: MemoryOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                entries: Mutex::new(Entries::default()),
                notify: Notify::new(),
                max_unfinished: options.max_unfinished,
                clock: options.clock,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.shared
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> i64 {
        unix_ms(self.shared.clock.now())
    }

    /// Runs `f` on the entries at the current time, as a ready future.
    fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Entries, i64) -> Result<T, InboxError>,
    ) -> BackendFuture<'_, T> {
        let now = self.now();
        let answer = f(&mut self.lock(), now);
        Box::pin(std::future::ready(answer))
    }

    /// Changes the entry `id` if `token` holds it (told whether a pause covers it); `false`
    /// when it does not.
    fn leased(
        &self,
        id: &str,
        token: &str,
        change: impl FnOnce(&mut Row, i64, bool),
    ) -> BackendFuture<'_, bool> {
        self.with(|entries, now| {
            let held = entries
                .by_id
                .get(id)
                .is_some_and(|row| entries.held(&row.event_type));
            Ok(match entries.by_id.get_mut(id) {
                Some(row) if row.held_by(token) => {
                    change(row, now, held);
                    true
                }
                _ => false,
            })
        })
    }
}

impl Store for MemoryBackend {
    fn accept<'a>(&'a self, delivery: &'a Verified) -> BackendFuture<'a, Accepted> {
        let stored = self.with(|entries, now| {
            if entries.by_id.contains_key(delivery.id()) {
                return Ok(Accepted::Duplicate);
            }
            let unfinished = entries.by_id.values().filter(|r| r.unfinished()).count();
            if unfinished as u64 >= self.shared.max_unfinished {
                return Err(InboxError::full(format!(
                    "{unfinished} entries wait to be processed (the limit is {})",
                    self.shared.max_unfinished
                )));
            }
            entries.next_seq += 1;
            let held = entries.held(delivery.event_type());
            let row = Row {
                seq: entries.next_seq,
                event_type: delivery.event_type().to_owned(),
                body: delivery.bytes().clone(),
                received_at: now,
                stored: if held {
                    Stored::Paused
                } else {
                    Stored::Pending
                },
                attempts: 0,
                due_at: now,
                lease_until: 0,
                lease_token: None,
                finished_at: None,
                last_error: None,
            };
            entries.by_id.insert(delivery.id().to_owned(), row);
            Ok(Accepted::Stored)
        });
        Box::pin(async move {
            let stored = stored.await?;
            if stored == Accepted::Stored {
                self.shared.notify.notify_one();
            }
            Ok(stored)
        })
    }
}

impl Queue for MemoryBackend {
    fn take(&self, max: usize, lease: Duration) -> BackendFuture<'_, Vec<Leased>> {
        self.with(|entries, now| {
            // Expired leases first (a worker died), then entries due, oldest due first.
            let mut due: Vec<(bool, i64, i64, &String)> = entries
                .by_id
                .iter()
                .filter_map(|(id, row)| match row.stored {
                    Stored::Processing if row.lease_until <= now => {
                        Some((false, row.lease_until, row.seq, id))
                    }
                    Stored::Pending if row.due_at <= now => Some((true, row.due_at, row.seq, id)),
                    _ => None,
                })
                .collect();
            due.sort_unstable();
            // An entry a pause covers (a lease that ran out, its worker dead) is held, not
            // taken, and not counted against `max`.
            let (held, ids): (Vec<String>, Vec<String>) = due
                .into_iter()
                .map(|d| d.3.clone())
                .partition(|id| entries.held(&entries.by_id[id].event_type));
            let ids: Vec<String> = ids.into_iter().take(max).collect();
            for id in held {
                if let Some(row) = entries.by_id.get_mut(&id) {
                    row.due(now, true);
                }
            }
            let token = airmy_verify::token::random_hex(12);
            let until = now.saturating_add(duration_ms(lease));
            let mut leased = Vec::with_capacity(ids.len());
            for id in ids {
                let Some(row) = entries.by_id.get_mut(&id) else {
                    continue;
                };
                row.stored = Stored::Processing;
                row.attempts = row.attempts.saturating_add(1);
                row.lease_until = until;
                row.lease_token = Some(token.clone());
                leased.push(Leased {
                    event_type: row.event_type.clone(),
                    body: row.body.clone(),
                    received_at: from_unix_ms(row.received_at),
                    attempt: row.attempts,
                    token: token.clone(),
                    id,
                });
            }
            Ok(leased)
        })
    }

    fn next_due(&self) -> BackendFuture<'_, Option<OffsetDateTime>> {
        self.with(|entries, _| {
            Ok(entries
                .by_id
                .values()
                .filter_map(|row| match row.stored {
                    Stored::Pending => Some(row.due_at),
                    Stored::Processing => Some(row.lease_until),
                    Stored::Paused | Stored::Dead | Stored::Done => None,
                })
                .min()
                .map(from_unix_ms))
        })
    }

    fn extend<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFuture<'a, bool> {
        self.leased(id, token, |row, now, _| {
            row.lease_until = now.saturating_add(duration_ms(lease));
        })
    }

    fn complete<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        self.leased(id, token, |row, now, _| {
            row.stored = Stored::Done;
            row.finished_at = Some(now);
            row.lease_token = None;
            row.last_error = None;
        })
    }

    fn retry<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        error: &'a str,
        at: OffsetDateTime,
    ) -> BackendFuture<'a, bool> {
        self.leased(id, token, |row, _, held| {
            row.due(unix_ms(at), held);
            row.last_error = Some(error.to_owned());
        })
    }

    fn bury<'a>(&'a self, id: &'a str, token: &'a str, error: &'a str) -> BackendFuture<'a, bool> {
        self.leased(id, token, |row, now, _| {
            row.stored = Stored::Dead;
            row.finished_at = Some(now);
            row.lease_token = None;
            row.last_error = Some(error.to_owned());
        })
    }

    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        let released = self.leased(id, token, |row, now, held| {
            row.due(now, held);
            row.attempts = row.attempts.saturating_sub(1);
        });
        Box::pin(async move {
            let released = released.await?;
            if released {
                self.shared.notify.notify_one();
            }
            Ok(released)
        })
    }

    fn wait(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, self.shared.notify.notified()).await;
        })
    }
}

impl Admin for MemoryBackend {
    fn stats(&self) -> BackendFuture<'_, Stats> {
        self.with(|entries, now| {
            let mut stats = Stats::default();
            let mut oldest: Option<i64> = None;
            for row in entries.by_id.values() {
                match row.state(now) {
                    EntryState::Pending => {
                        stats.pending += 1;
                        oldest = Some(oldest.map_or(row.due_at, |o| o.min(row.due_at)));
                    }
                    EntryState::Scheduled => stats.scheduled += 1,
                    EntryState::Paused => stats.paused += 1,
                    EntryState::Processing => stats.processing += 1,
                    EntryState::Dead => stats.dead += 1,
                    EntryState::Done => stats.done += 1,
                }
            }
            stats.oldest_pending_age_secs =
                oldest.map(|due| u64::try_from(now.saturating_sub(due) / 1000).unwrap_or(0));
            Ok(stats)
        })
    }

    fn list<'a>(&'a self, query: &'a ListQuery) -> BackendFuture<'a, Page> {
        self.with(|entries, now| {
            let (after_key, after_seq) = parse_keyset_cursor(query)?;
            let after = |key: i64, seq: i64| match query.order {
                Order::Oldest => (key, seq) > (after_key, after_seq),
                Order::Newest => (key, seq) < (after_key, after_seq),
            };
            let mut rows: Vec<(i64, i64, &String, &Row)> = entries
                .by_id
                .iter()
                .filter(|(_, row)| row.state(now) == query.state && after(row.key(), row.seq))
                .map(|(id, row)| (row.key(), row.seq, id, row))
                .collect();
            rows.sort_unstable_by_key(|&(key, seq, _, _)| (key, seq));
            if query.order == Order::Newest {
                rows.reverse();
            }
            // As the other backends: a filtered page examines at most LIST_SCAN entries, an
            // unfiltered one looks one past the page to know whether there is a next one.
            let limit = query.page_size();
            let scan = if query.filtered() {
                LIST_SCAN
            } else {
                limit + 1
            };
            let mut page = Vec::new();
            let mut last = None;
            let mut examined = 0;
            for (key, seq, id, row) in rows.into_iter().take(scan) {
                if page.len() == limit {
                    return Ok(Page::new(page, last));
                }
                examined += 1;
                if query.matches(id, &row.event_type) {
                    page.push(row.summary(id, now));
                }
                last = Some(keyset_cursor(key, seq));
            }
            Ok(Page::new(page, if examined == scan { last } else { None }))
        })
    }

    fn entry<'a>(&'a self, id: &'a str) -> BackendFuture<'a, Option<Entry>> {
        self.with(|entries, now| {
            Ok(entries.by_id.get(id).map(|row| Entry {
                summary: row.summary(id, now),
                body: row.body.clone(),
            }))
        })
    }

    fn replay<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()> {
        let replayed = self.with(|entries, now| {
            let held = entries
                .by_id
                .get(id)
                .is_some_and(|row| entries.held(&row.event_type));
            replay_row(entries.by_id.get_mut(id), id, now, held)
        });
        Box::pin(async move {
            replayed.await?;
            self.shared.notify.notify_one();
            Ok(())
        })
    }

    fn replay_dead(&self, since: Option<OffsetDateTime>) -> BackendFuture<'_, Vec<String>> {
        let since = since.map_or(i64::MIN, unix_ms);
        let replayed = self.with(|entries, now| {
            let mut dead: Vec<(i64, i64, String)> = entries
                .by_id
                .iter()
                .filter(|(_, row)| {
                    row.stored == Stored::Dead && row.finished_at.is_some_and(|t| t >= since)
                })
                .map(|(id, row)| (row.finished_at.unwrap_or(0), row.seq, id.clone()))
                .collect();
            dead.sort_unstable();
            for (_, _, id) in &dead {
                let held = entries
                    .by_id
                    .get(id)
                    .is_some_and(|row| entries.held(&row.event_type));
                if let Some(row) = entries.by_id.get_mut(id) {
                    row.due(now, held);
                    row.attempts = 0;
                    row.last_error = None;
                    row.finished_at = None;
                }
            }
            Ok(dead.into_iter().map(|(_, _, id)| id).collect::<Vec<_>>())
        });
        Box::pin(async move {
            let ids = replayed.await?;
            if !ids.is_empty() {
                self.shared.notify.notify_one();
            }
            Ok(ids)
        })
    }

    fn purge_done(&self, before: OffsetDateTime) -> BackendFuture<'_, u64> {
        let before = unix_ms(before);
        self.with(|entries, _| {
            let count = entries.by_id.len();
            entries.by_id.retain(|_, row| {
                !(row.stored == Stored::Done && row.finished_at.is_some_and(|t| t < before))
            });
            Ok((count - entries.by_id.len()) as u64)
        })
    }

    fn pause<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64> {
        self.with(|entries, now| {
            entries
                .pauses
                .entry(scope.key())
                .or_insert_with(|| (scope.clone(), now));
            let mut held = 0;
            for row in entries.by_id.values_mut() {
                if row.stored == Stored::Pending && scope.covers(&row.event_type) {
                    row.stored = Stored::Paused;
                    held += 1;
                }
            }
            Ok(held)
        })
    }

    fn resume<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64> {
        let resumed = self.with(|entries, _| {
            if entries.pauses.remove(&scope.key()).is_none() {
                return Ok(0);
            }
            let pauses: Vec<PauseScope> = entries.pauses.values().map(|p| p.0.clone()).collect();
            let mut released = 0;
            for row in entries.by_id.values_mut() {
                if row.stored == Stored::Paused && !pauses.iter().any(|p| p.covers(&row.event_type))
                {
                    row.stored = Stored::Pending;
                    released += 1;
                }
            }
            Ok(released)
        });
        Box::pin(async move {
            let released = resumed.await?;
            if released > 0 {
                self.shared.notify.notify_one();
            }
            Ok(released)
        })
    }

    fn paused(&self) -> BackendFuture<'_, Vec<Pause>> {
        self.with(|entries, _| {
            let mut pauses: Vec<Pause> = entries
                .pauses
                .values()
                .map(|(scope, since)| Pause::new(scope.clone(), from_unix_ms(*since)))
                .collect();
            pauses.sort_by(|a, b| (a.since, &a.scope).cmp(&(b.since, &b.scope)));
            Ok(pauses)
        })
    }

    fn record_action<'a>(&'a self, action: &'a Action) -> BackendFuture<'a, ()> {
        self.with(|entries, _| {
            entries.actions.push_front(action.clone());
            entries.actions.truncate(RECENT_ACTIONS);
            Ok(())
        })
    }

    fn recent_actions(&self, limit: usize) -> BackendFuture<'_, Vec<Action>> {
        self.with(|entries, _| Ok(entries.actions.iter().take(limit).cloned().collect()))
    }
}

/// [`Admin::replay`] of `row` at `now` (`held`: a pause covers it).
fn replay_row(row: Option<&mut Row>, id: &str, now: i64, held: bool) -> Result<(), InboxError> {
    let Some(row) = row else {
        return Err(InboxError::not_found(id));
    };
    match row.stored {
        Stored::Processing => Err(InboxError::busy(id)),
        Stored::Pending | Stored::Paused => {
            // A retry scheduled later becomes due now (a paused entry stays paused).
            row.due_at = row.due_at.min(now);
            Ok(())
        }
        Stored::Dead | Stored::Done => {
            row.due(now, held);
            row.attempts = 0;
            row.last_error = None;
            row.finished_at = None;
            Ok(())
        }
    }
}
