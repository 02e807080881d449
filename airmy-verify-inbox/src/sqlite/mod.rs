//! The embedded SQLite backend: one file, no server, a 2xx that survives a power cut.
//!
//! - **Durable accepts, one sync per batch (group commit).** One writer thread owns the
//!   connection. It takes every request that is waiting, runs them in one transaction and
//!   commits once; a batch that stores a delivery commits with `synchronous=FULL`, so the 2xx
//!   sent after it means "on disk, in the WAL, synced". Concurrent accepts therefore share one
//!   transaction and one `fsync`. Worker bookkeeping (leases, completions) commits with
//!   `synchronous=NORMAL`: it survives a crash of the process, and a power cut at worst makes a
//!   processed entry run again (at-least-once, never lost).
//! - **A plain SQLite file** in WAL mode (`sqlite3 PATH` opens it; the `-wal` and `-shm` files
//!   beside it are part of it), created with mode 0600 since it holds payloads. Its schema has a
//!   version (`PRAGMA user_version`) and migrations from the first release on; a file of a
//!   newer version, or not a SQLite database, or corrupted, is refused at open.
//! - **Bounded**: at most [`SqliteOptions::max_unfinished`] pending and processing entries
//!   (default 1,000,000); past it, and when the disk (or [`SqliteOptions::max_pages`]) is
//!   full, accepts fail with [`ErrorKind::Full`](crate::ErrorKind::Full) and adapters answer 503, never a 2xx.
//!
//! # Example
//!
//! ```
//! use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("inbox-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let backend = SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default())?;
//! let inbox = Inbox::new(backend);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use airmy_verify::observe::metrics::{self, AcceptStage};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use airmy_verify::{Clock, SystemClock, Verified};
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use tokio::sync::{Notify, oneshot};

use crate::backend::{
    Accepted, Action, Admin, BackendFuture, Entry, InboxError, Leased, ListQuery, Page, Pause,
    PauseScope, Queue, RECENT_ACTIONS, Stats, Store,
};
use crate::clock::{duration_ms, from_unix_ms, unix_ms};
use crate::{OpenError, OpenErrorKind};

mod list;
mod schema;
mod writer;

pub use schema::SCHEMA_VERSION;
use schema::{create_private, migrate};
use writer::{
    DURABLE_STEP, DURABLE_STEPS, FileId, Finish, HELD, Job, Mode, STEP, STEPS, Work, Writer,
    accept_job, count_unfinished, decrement, leased_update, take_job,
};

/// How to open a [`SqliteBackend`].
#[derive(Clone)]
pub struct SqliteOptions {
    max_unfinished: u64,
    max_pages: Option<u64>,
    clock: Arc<dyn Clock>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_unfinished: 1_000_000,
            max_pages: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl SqliteOptions {
    /// The most pending and processing entries the inbox holds; accepts past it fail with
    /// [`ErrorKind::Full`](crate::ErrorKind::Full). Defaults to 1,000,000.
    #[must_use]
    pub fn max_unfinished(mut self, entries: u64) -> Self {
        self.max_unfinished = entries;
        self
    }

    /// Caps the database file at this many pages (`PRAGMA max_page_count`; a page is 4 KiB), a
    /// quota past which SQLite reports the disk full. Defaults to no cap.
    #[must_use]
    pub fn max_pages(mut self, pages: u64) -> Self {
        self.max_pages = Some(pages);
        self
    }

    /// Reads the time from `clock` (for tests that move time on). Defaults to the system clock.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

impl fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("max_unfinished", &self.max_unfinished)
            .field("max_pages", &self.max_pages)
            .finish_non_exhaustive()
    }
}

/// Why [`SqliteBackend::open`] failed: an [`OpenError`] (the backend's name for it) naming the
/// file, of kind [`Unavailable`](OpenErrorKind::Unavailable) (the directory is missing or not
/// writable, the file cannot be opened), [`Invalid`](OpenErrorKind::Invalid) (not a SQLite
/// database, corrupted) or [`Schema`](OpenErrorKind::Schema) (a newer version's).
pub type SqliteError = OpenError;

/// The SQLite backend; see the [module docs](self). Cheap to share (`Inbox` holds it in an
/// `Arc`); the writer thread stops when it is dropped.
pub struct SqliteBackend {
    sender: mpsc::Sender<Work>,
    notify: Arc<Notify>,
    path: PathBuf,
    max_unfinished: u64,
    /// Pending and processing entries, kept by the writer's jobs and recounted every few
    /// seconds (another process, such as the `inbox replay` command, may change the file).
    unfinished: Arc<AtomicU64>,
    /// The read-only connection of listings ([`Backend::list`], [`Backend::entry`]).
    reader: Arc<std::sync::Mutex<Connection>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(super) fn unavailable(err: rusqlite::Error) -> InboxError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => {
            InboxError::full("the disk is full").with_source(err)
        }
        _ => InboxError::unavailable(format!("SQLite: {err}")).with_source(err),
    }
}

impl SqliteBackend {
    /// Opens (creating it, mode 0600, if missing) the inbox database at `path`, checks it and
    /// brings its schema up to date, and starts its writer thread.
    ///
    /// # Errors
    ///
    /// A [`SqliteError`] naming the file: its directory does not exist or cannot be written,
    /// it is not a SQLite database, it is corrupted, or its schema is of a newer version.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, SqliteError> {
        let path = path.as_ref().to_path_buf();
        let what = format!("cannot open the inbox {}", path.display());
        let fail = |reason: String| {
            OpenError::new(OpenErrorKind::Unavailable, format!("{what}: {reason}"))
        };
        let failed = |err: rusqlite::Error| {
            let kind = match err.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                    OpenErrorKind::Invalid
                }
                _ => OpenErrorKind::Unavailable,
            };
            OpenError::new(kind, format!("{what}: {err}")).with_source(err)
        };
        create_private(&path).map_err(|e| fail(e.to_string()).with_source(e))?;
        let mut conn = Connection::open(&path).map_err(failed)?;
        let setup = || -> Result<(), OpenError> {
            conn.busy_timeout(Duration::from_secs(5)).map_err(failed)?;
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(failed)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(fail(format!("cannot use WAL mode (got {mode})")));
            }
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(failed)?;
            let check: String = conn
                .query_row("PRAGMA quick_check", [], |row| row.get(0))
                .map_err(failed)?;
            if check != "ok" {
                return Err(OpenError::new(
                    OpenErrorKind::Invalid,
                    format!("{what}: the database is corrupted ({check})"),
                ));
            }
            if let Some(pages) = options.max_pages {
                conn.pragma_update(
                    None,
                    "max_page_count",
                    i64::try_from(pages).unwrap_or(i64::MAX),
                )
                .map_err(failed)?;
            }
            Ok(())
        };
        setup()?;
        migrate(&mut conn)
            .map_err(|why| OpenError::new(OpenErrorKind::Schema, format!("{what}: {why}")))?;

        conn.set_prepared_statement_cache_capacity(64);
        let reader = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|reader| reader.busy_timeout(Duration::from_secs(5)).map(|()| reader))
        .map_err(failed)?;
        let unfinished = Arc::new(AtomicU64::new(count_unfinished(&conn).map_err(failed)?));
        let (sender, receiver) = mpsc::channel::<Work>();
        let writer = Writer {
            file: FileId::of(&path).map(|id| (path.clone(), id)),
            conn,
            clock: Arc::clone(&options.clock),
            durable: true,
            unfinished: Arc::clone(&unfinished),
            recounted: std::time::Instant::now(),
        };
        std::thread::Builder::new()
            .name("airmy-inbox-sqlite".into())
            .spawn(move || writer.run(&receiver))
            .map_err(|e| fail(format!("cannot start the writer thread: {e}")).with_source(e))?;
        Ok(Self {
            sender,
            notify: Arc::new(Notify::new()),
            path,
            max_unfinished: options.max_unfinished,
            unfinished,
            reader: Arc::new(std::sync::Mutex::new(reader)),
            clock: options.clock,
        })
    }

    /// Runs `f` on the read-only connection, on a blocking thread.
    fn read<T, F>(&self, f: F) -> BackendFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> Result<T, InboxError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        let now = unix_ms(self.clock.now());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = reader
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                f(&conn, now)
            })
            .await
            .unwrap_or_else(|_| Err(InboxError::unavailable("the inbox reader stopped")))
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer thread's next batch, answering once the batch is committed.
    fn submit<T, F>(&self, mode: Mode, f: F) -> BackendFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> Result<T, InboxError> + Send + 'static,
    {
        self.submit_work(mode, None, f)
    }

    /// [`submit`](Self::submit), for an accept handed over at `accept` (its stages measured).
    fn submit_work<T, F>(
        &self,
        mode: Mode,
        accept: Option<std::time::Instant>,
        f: F,
    ) -> BackendFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> Result<T, InboxError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn, now| {
            let result = f(conn, now);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |failed: Option<&InboxError>| {
                let _ = reply.send(match failed {
                    Some(err) => Err(err.clone()),
                    None => result,
                });
            });
            (ok, finish)
        });
        let sent = self.sender.send(Work { job, mode, accept }).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(InboxError::unavailable("the inbox writer stopped"));
            }
            answer
                .await
                .unwrap_or_else(|_| Err(InboxError::unavailable("the inbox writer stopped")))
        })
    }
}

impl Store for SqliteBackend {
    fn accept<'a>(&'a self, delivery: &'a Verified) -> BackendFuture<'a, Accepted> {
        let id = delivery.id().to_owned();
        let event_type = delivery.event_type().to_owned();
        let body = delivery.bytes().clone();
        let created_at = delivery
            .created_at()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let max = self.max_unfinished;
        let unfinished = Arc::clone(&self.unfinished);
        let started = std::time::Instant::now();
        let stored = self.submit_work(DURABLE_STEPS, Some(started), move |conn, now| {
            accept_job(
                conn,
                now,
                (max, &unfinished),
                &id,
                &event_type,
                &body,
                &created_at,
            )
        });
        let notify = Arc::clone(&self.notify);
        Box::pin(async move {
            let accepted = stored.await;
            let took = started.elapsed().as_secs_f64();
            metrics::inbox_accept_stage("sqlite", AcceptStage::Total, took);
            let accepted = accepted?;
            if accepted == Accepted::Stored {
                notify.notify_one();
            }
            Ok(accepted)
        })
    }
}

impl Queue for SqliteBackend {
    fn take(&self, max: usize, lease: Duration) -> BackendFuture<'_, Vec<Leased>> {
        let lease = duration_ms(lease);
        self.submit(STEPS, move |conn, now| take_job(conn, now, max, lease))
    }

    fn next_due(&self) -> BackendFuture<'_, Option<OffsetDateTime>> {
        self.submit(STEP, |conn, _| {
            let due: Option<i64> = conn
                .query_row(
                    "SELECT min(t) FROM (
                         SELECT min(due_at) AS t FROM entries WHERE state = 'pending'
                         UNION ALL
                         SELECT min(lease_until) AS t FROM entries WHERE state = 'processing')",
                    [],
                    |row| row.get(0),
                )
                .map_err(unavailable)?;
            Ok(due.map(from_unix_ms))
        })
    }

    fn extend<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFuture<'a, bool> {
        let (id, token, lease) = (id.to_owned(), token.to_owned(), duration_ms(lease));
        self.submit(STEP, move |conn, now| {
            leased_update(
                conn,
                "UPDATE entries SET lease_until = ?3
                 WHERE id = ?1 AND lease_token = ?2 AND state = 'processing'",
                &[&id, &token, &now.saturating_add(lease)],
            )
        })
    }

    fn complete<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        let (id, token) = (id.to_owned(), token.to_owned());
        let unfinished = Arc::clone(&self.unfinished);
        self.submit(STEP, move |conn, now| {
            let done = leased_update(
                conn,
                "UPDATE entries SET state = 'done', finished_at = ?3, lease_until = NULL,
                     lease_token = NULL, last_error = NULL
                 WHERE id = ?1 AND lease_token = ?2 AND state = 'processing'",
                &[&id, &token, &now],
            )?;
            if done {
                decrement(&unfinished);
            }
            Ok(done)
        })
    }

    fn retry<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        error: &'a str,
        at: OffsetDateTime,
    ) -> BackendFuture<'a, bool> {
        let (id, token, error, at) = (
            id.to_owned(),
            token.to_owned(),
            error.to_owned(),
            unix_ms(at),
        );
        self.submit(STEP, move |conn, _| {
            leased_update(
                conn,
                &format!(
                    "UPDATE entries SET state = CASE WHEN {HELD} THEN 'paused' ELSE 'pending' END,
                         due_at = ?3, last_error = ?4, lease_until = NULL, lease_token = NULL
                     WHERE id = ?1 AND lease_token = ?2 AND state = 'processing'"
                ),
                &[&id, &token, &at, &error],
            )
        })
    }

    fn bury<'a>(&'a self, id: &'a str, token: &'a str, error: &'a str) -> BackendFuture<'a, bool> {
        let (id, token, error) = (id.to_owned(), token.to_owned(), error.to_owned());
        let unfinished = Arc::clone(&self.unfinished);
        self.submit(STEP, move |conn, now| {
            let buried = leased_update(
                conn,
                "UPDATE entries SET state = 'dead', finished_at = ?3, last_error = ?4,
                     lease_until = NULL, lease_token = NULL
                 WHERE id = ?1 AND lease_token = ?2 AND state = 'processing'",
                &[&id, &token, &now, &error],
            )?;
            if buried {
                decrement(&unfinished);
            }
            Ok(buried)
        })
    }

    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        let (id, token) = (id.to_owned(), token.to_owned());
        let notify = Arc::clone(&self.notify);
        let released = self.submit(STEP, move |conn, now| {
            leased_update(
                conn,
                &format!(
                    "UPDATE entries SET state = CASE WHEN {HELD} THEN 'paused' ELSE 'pending' END,
                         due_at = ?3, attempts = max(attempts - 1, 0),
                         lease_until = NULL, lease_token = NULL
                     WHERE id = ?1 AND lease_token = ?2 AND state = 'processing'"
                ),
                &[&id, &token, &now],
            )
        });
        Box::pin(async move {
            let released = released.await?;
            if released {
                notify.notify_one();
            }
            Ok(released)
        })
    }

    fn wait(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
        })
    }
}

impl Admin for SqliteBackend {
    fn stats(&self) -> BackendFuture<'_, Stats> {
        self.submit(STEP, |conn, now| {
            let count = |sql: &str, arg: Option<i64>| -> Result<u64, InboxError> {
                let n: i64 = match arg {
                    Some(arg) => conn.query_row(sql, [arg], |row| row.get(0)),
                    None => conn.query_row(sql, [], |row| row.get(0)),
                }
                .map_err(unavailable)?;
                Ok(u64::try_from(n).unwrap_or(0))
            };
            let of = |state: &str| format!("SELECT count(*) FROM entries WHERE state = '{state}'");
            let scheduled = count(
                "SELECT count(*) FROM entries WHERE state = 'pending' AND due_at > ?1",
                Some(now),
            )?;
            let paused = count(&of("paused"), None)?;
            let oldest: Option<i64> = conn
                .query_row(
                    "SELECT min(due_at) FROM entries WHERE state = 'pending' AND due_at <= ?1",
                    [now],
                    |row| row.get(0),
                )
                .map_err(unavailable)?;
            Ok(Stats {
                pending: count(&of("pending"), None)?.saturating_sub(scheduled),
                scheduled,
                processing: count(&of("processing"), None)?,
                dead: count(&of("dead"), None)?,
                done: count(&of("done"), None)?,
                paused,
                oldest_pending_age_secs: oldest
                    .map(|due| u64::try_from(now.saturating_sub(due) / 1000).unwrap_or(0)),
            })
        })
    }

    fn list<'a>(&'a self, query: &'a ListQuery) -> BackendFuture<'a, Page> {
        let query = query.clone();
        self.read(move |conn, now| list::list(conn, now, &query))
    }

    fn entry<'a>(&'a self, id: &'a str) -> BackendFuture<'a, Option<Entry>> {
        let id = id.to_owned();
        self.read(move |conn, now| list::entry(conn, now, &id))
    }

    fn replay<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()> {
        let id = id.to_owned();
        let notify = Arc::clone(&self.notify);
        let unfinished = Arc::clone(&self.unfinished);
        let replayed = self.submit(DURABLE_STEP, move |conn, now| {
            let changed = conn
                .prepare_cached(&format!(
                    "UPDATE entries SET state = CASE WHEN {HELD} THEN 'paused' ELSE 'pending' END,
                         due_at = ?2, attempts = 0, last_error = NULL, finished_at = NULL
                     WHERE id = ?1 AND state IN ('dead', 'done')"
                ))
                .and_then(|mut s| s.execute(params![id, now]))
                .map_err(unavailable)?;
            if changed == 0 {
                // A pending entry (a retry scheduled later) becomes due now (a paused one
                // stays paused); one being processed is left alone.
                let state: Option<String> = conn
                    .prepare_cached("SELECT state FROM entries WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&id], |row| row.get(0)).optional())
                    .map_err(unavailable)?;
                return match state.as_deref() {
                    Some("pending" | "paused") => conn
                        .prepare_cached("UPDATE entries SET due_at = min(due_at, ?2) WHERE id = ?1")
                        .and_then(|mut s| s.execute(params![id, now]))
                        .map(drop)
                        .map_err(unavailable),
                    Some(_) => Err(InboxError::busy(id)),
                    None => Err(InboxError::not_found(id)),
                };
            }
            unfinished.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        Box::pin(async move {
            replayed.await?;
            notify.notify_one();
            Ok(())
        })
    }

    fn replay_dead(&self, since: Option<OffsetDateTime>) -> BackendFuture<'_, Vec<String>> {
        let since = since.map_or(i64::MIN, unix_ms);
        let notify = Arc::clone(&self.notify);
        let unfinished = Arc::clone(&self.unfinished);
        let replayed = self.submit(DURABLE_STEPS, move |conn, now| {
            let ids = {
                let mut statement = conn
                    .prepare_cached(
                        "SELECT id FROM entries WHERE state = 'dead' AND finished_at >= ?1
                         ORDER BY finished_at",
                    )
                    .map_err(unavailable)?;
                let rows = statement
                    .query_map([since], |row| row.get::<_, String>(0))
                    .map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)?
            };
            unfinished.fetch_add(ids.len() as u64, Ordering::Relaxed);
            conn.prepare_cached(&format!(
                "UPDATE entries SET state = CASE WHEN {HELD} THEN 'paused' ELSE 'pending' END,
                     due_at = ?2, attempts = 0, last_error = NULL, finished_at = NULL
                 WHERE state = 'dead' AND finished_at >= ?1"
            ))
            .and_then(|mut s| s.execute(params![since, now]))
            .map_err(unavailable)?;
            Ok(ids)
        });
        Box::pin(async move {
            let ids = replayed.await?;
            if !ids.is_empty() {
                notify.notify_one();
            }
            Ok(ids)
        })
    }

    fn purge_done(&self, before: OffsetDateTime) -> BackendFuture<'_, u64> {
        let before = unix_ms(before);
        self.submit(DURABLE_STEP, move |conn, _| {
            conn.prepare_cached("DELETE FROM entries WHERE state = 'done' AND finished_at < ?1")
                .and_then(|mut s| s.execute([before]))
                .map(|n| n as u64)
                .map_err(unavailable)
        })
    }

    fn pause<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64> {
        let key = scope.key();
        let event_type = match scope {
            PauseScope::All => None,
            PauseScope::EventType(t) => Some(t.clone()),
        };
        self.submit(DURABLE_STEPS, move |conn, now| {
            conn.prepare_cached(
                "INSERT INTO pauses (scope, since) VALUES (?1, ?2) ON CONFLICT (scope) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![key, now]))
            .map_err(unavailable)?;
            // One pass over the pending entries (their index), once: `take` never reads the
            // paused ones again.
            conn.prepare_cached(
                "UPDATE entries SET state = 'paused'
                 WHERE state = 'pending' AND (?1 IS NULL OR event_type = ?1)",
            )
            .and_then(|mut s| s.execute(params![event_type]))
            .map(|n| n as u64)
            .map_err(unavailable)
        })
    }

    fn resume<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64> {
        let key = scope.key();
        let notify = Arc::clone(&self.notify);
        let resumed = self.submit(DURABLE_STEPS, move |conn, _| {
            let ended = conn
                .prepare_cached("DELETE FROM pauses WHERE scope = ?1")
                .and_then(|mut s| s.execute([&key]))
                .map_err(unavailable)?;
            if ended == 0 {
                return Ok(0);
            }
            // Those no other pause holds: pending again, due when they were.
            conn.prepare_cached(&format!(
                "UPDATE entries SET state = 'pending' WHERE state = 'paused' AND NOT {HELD}"
            ))
            .and_then(|mut s| s.execute([]))
            .map(|n| n as u64)
            .map_err(unavailable)
        });
        Box::pin(async move {
            let released = resumed.await?;
            if released > 0 {
                notify.notify_one();
            }
            Ok(released)
        })
    }

    fn paused(&self) -> BackendFuture<'_, Vec<Pause>> {
        self.read(|conn, _| {
            let mut statement = conn
                .prepare_cached("SELECT scope, since FROM pauses ORDER BY since, scope")
                .map_err(unavailable)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(unavailable)?;
            let mut pauses = Vec::new();
            for row in rows {
                let (key, since) = row.map_err(unavailable)?;
                if let Some(scope) = PauseScope::from_key(&key) {
                    pauses.push(Pause::new(scope, from_unix_ms(since)));
                }
            }
            Ok(pauses)
        })
    }

    fn record_action<'a>(&'a self, action: &'a Action) -> BackendFuture<'a, ()> {
        let action = action.clone();
        self.submit(DURABLE_STEPS, move |conn, _| {
            let ids = serde_json::to_string(&action.ids).unwrap_or_else(|_| "[]".to_owned());
            conn.prepare_cached(
                "INSERT INTO actions (at, actor, action, subject, count, ids)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    unix_ms(action.at),
                    action.actor,
                    action.kind.as_str(),
                    action.subject,
                    i64::try_from(action.count).unwrap_or(i64::MAX),
                    ids,
                ])
            })
            .map_err(unavailable)?;
            conn.prepare_cached(
                "DELETE FROM actions WHERE seq <= (SELECT max(seq) FROM actions) - ?1",
            )
            .and_then(|mut s| s.execute([RECENT_ACTIONS as i64]))
            .map(drop)
            .map_err(unavailable)
        })
    }

    fn recent_actions(&self, limit: usize) -> BackendFuture<'_, Vec<Action>> {
        let limit = limit.min(RECENT_ACTIONS) as i64;
        self.read(move |conn, _| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT at, actor, action, subject, count, ids FROM actions
                     ORDER BY seq DESC LIMIT ?1",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map([limit], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                })
                .map_err(unavailable)?;
            let mut actions = Vec::new();
            for row in rows {
                let (at, actor, kind, subject, count, ids) = row.map_err(unavailable)?;
                // An action a newer version wrote, of a kind this one does not know: left out.
                let Ok(kind) = kind.parse() else { continue };
                let ids: Vec<String> = serde_json::from_str(&ids).unwrap_or_default();
                actions.push(
                    Action::new(actor, kind, subject)
                        .ids(ids)
                        .count(u64::try_from(count).unwrap_or(0))
                        .at(from_unix_ms(at)),
                );
            }
            Ok(actions)
        })
    }
}
