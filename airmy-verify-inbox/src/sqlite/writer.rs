//! The writer thread: it owns the connection, takes every request that is waiting, runs them
//! in one transaction and commits once (group commit), with `synchronous=FULL` for a batch that
//! stores deliveries; and the statements of the jobs that change entries.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use airmy_verify::Clock;
use airmy_verify::observe::metrics::{self, AcceptStage};
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::unavailable;
use crate::backend::{Accepted, InboxError, Leased};
use crate::clock::{from_unix_ms, unix_ms};

/// The most requests one transaction takes.
pub(super) const MAX_BATCH: usize = 1024;

/// A request for the writer thread: runs inside the batch's transaction and returns how to
/// answer once the batch is committed (or not).
pub(super) type Job = Box<dyn FnOnce(&Connection, i64) -> (bool, Finish) + Send>;
pub(super) type Finish = Box<dyn FnOnce(Option<&InboxError>) + Send>;

pub(super) struct Work {
    pub(super) job: Job,
    pub(super) mode: Mode,
    /// For an accept: when it was handed to the writer (its stages are recorded in
    /// `airmy_webhook_inbox_accept_seconds`).
    pub(super) accept: Option<std::time::Instant>,
}

/// How a request runs in its batch.
#[derive(Clone, Copy)]
pub(super) struct Mode {
    /// It stores deliveries (or changes what was stored): its batch commits with
    /// `synchronous=FULL`.
    pub(super) durable: bool,
    /// It runs several statements, so it runs in a savepoint of its own: a failure undoes all
    /// of its statements and none of the batch's others. A single statement is atomic anyway.
    pub(super) several: bool,
}

pub(super) const DURABLE_STEPS: Mode = Mode {
    durable: true,
    several: true,
};
pub(super) const DURABLE_STEP: Mode = Mode {
    durable: true,
    several: false,
};
pub(super) const STEPS: Mode = Mode {
    durable: false,
    several: true,
};
pub(super) const STEP: Mode = Mode {
    durable: false,
    several: false,
};

/// A file's identity (device and inode on Unix), to notice the database file being removed or
/// replaced under a running inbox: SQLite would go on writing to the unlinked file, and every
/// "durable" accept would be lost at the next start.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId(u64, u64);

impl FileId {
    pub(super) fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(Self(meta.dev(), meta.ino()))
        }
        #[cfg(not(unix))]
        {
            Some(Self(u64::from(meta.is_file()), 0))
        }
    }
}

pub(super) struct Writer {
    /// The database file and its identity when it was opened.
    pub(super) file: Option<(PathBuf, FileId)>,
    pub(super) conn: Connection,
    pub(super) clock: Arc<dyn Clock>,
    /// The `synchronous` setting in force: FULL for batches that accept deliveries.
    pub(super) durable: bool,
    pub(super) unfinished: Arc<AtomicU64>,
    pub(super) recounted: std::time::Instant,
}

/// How often the writer recounts unfinished entries.
pub(super) const RECOUNT: Duration = Duration::from_secs(5);

/// Whether a pause holds the entry of the row at hand: its `event_type` (or all) paused. The
/// keys are [`PauseScope::key`](crate::PauseScope::key)'s.
pub(super) const HELD: &str =
    "EXISTS (SELECT 1 FROM pauses WHERE scope IN ('*', 'type:' || event_type))";

pub(super) fn count_unfinished(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM entries WHERE state = 'pending')
              + (SELECT count(*) FROM entries WHERE state = 'paused')
              + (SELECT count(*) FROM entries WHERE state = 'processing')",
        [],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

impl Writer {
    pub(super) fn run(mut self, receiver: &mpsc::Receiver<Work>) {
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(work) => batch.push(work),
                    Err(_) => break,
                }
            }
            let started = std::time::Instant::now();
            let mut accepts = 0;
            for work in &batch {
                if let Some(at) = work.accept {
                    accepts += 1;
                    let waited = started.saturating_duration_since(at).as_secs_f64();
                    metrics::inbox_accept_stage("sqlite", AcceptStage::Queue, waited);
                }
            }
            let durable = batch.iter().any(|w| w.mode.durable);
            if durable != self.durable {
                let setting = if durable { "FULL" } else { "NORMAL" };
                if self
                    .conn
                    .pragma_update(None, "synchronous", setting)
                    .is_ok()
                {
                    self.durable = durable;
                }
            }
            let now = unix_ms(self.clock.now());
            let moved = self
                .file
                .as_ref()
                .is_some_and(|(path, id)| FileId::of(path) != Some(*id));
            let begun = if moved {
                Err(InboxError::unavailable(
                    "the database file was removed or replaced while the inbox was open".to_owned(),
                ))
            } else {
                self.conn
                    .execute_batch("BEGIN IMMEDIATE")
                    .map_err(unavailable)
            };
            if let Err(err) = begun {
                for work in batch {
                    let (_, finish) = (work.job)(&self.conn, now);
                    finish(Some(&err));
                }
                continue;
            }
            if self.recounted.elapsed() >= RECOUNT {
                self.recounted = std::time::Instant::now();
                if let Ok(n) = count_unfinished(&self.conn) {
                    self.unfinished.store(n, Ordering::Relaxed);
                }
            }
            let mut finishes = Vec::with_capacity(batch.len());
            for work in batch {
                let savepoint =
                    work.mode.several && self.conn.execute_batch("SAVEPOINT job").is_ok();
                let (ok, finish) = (work.job)(&self.conn, now);
                if savepoint && !self.conn.is_autocommit() {
                    if !ok {
                        let _ = self.conn.execute_batch("ROLLBACK TO job");
                    }
                    let _ = self.conn.execute_batch("RELEASE job");
                }
                finishes.push(finish);
            }
            let statements = started.elapsed();
            let committed = if self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back (the disk is full, say).
                Err(InboxError::full(
                    "the transaction was rolled back".to_owned(),
                ))
            } else {
                self.conn.execute_batch("COMMIT").map_err(|e| {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    unavailable(e)
                })
            };
            let failed = committed.err();
            if accepts > 0 {
                let commit = (started.elapsed() - statements).as_secs_f64();
                metrics::inbox_accept_batch("sqlite", accepts);
                for _ in 0..accepts {
                    let statements = statements.as_secs_f64();
                    metrics::inbox_accept_stage("sqlite", AcceptStage::Batch, statements);
                    metrics::inbox_accept_stage("sqlite", AcceptStage::Commit, commit);
                }
            }
            for finish in finishes {
                finish(failed.as_ref());
            }
        }
    }
}

pub(super) fn accept_job(
    conn: &Connection,
    now: i64,
    (max_unfinished, unfinished): (u64, &AtomicU64),
    id: &str,
    event_type: &str,
    body: &[u8],
    created_at: &str,
) -> Result<Accepted, InboxError> {
    let waiting = unfinished.load(Ordering::Relaxed);
    if waiting >= max_unfinished {
        // Full: a duplicate is still reported as one (it needs no room).
        let known: Option<i64> = conn
            .prepare_cached("SELECT 1 FROM entries WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |row| row.get(0)).optional())
            .map_err(unavailable)?;
        if known.is_some() {
            return Ok(Accepted::Duplicate);
        }
        return Err(InboxError::full(format!(
            "{waiting} entries wait to be processed (the limit is {max_unfinished})"
        )));
    }
    let inserted = conn
        .prepare_cached(
            "INSERT INTO entries (id, event_type, body, created_at, received_at, state, attempts, due_at)
             VALUES (?1, ?2, ?3, ?4, ?5,
                     CASE WHEN EXISTS (SELECT 1 FROM pauses WHERE scope IN ('*', 'type:' || ?2))
                          THEN 'paused' ELSE 'pending' END,
                     0, ?5)
             ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![id, event_type, body, created_at, now]))
        .map_err(unavailable)?;
    if inserted == 0 {
        return Ok(Accepted::Duplicate);
    }
    unfinished.fetch_add(1, Ordering::Relaxed);
    Ok(Accepted::Stored)
}

/// The keys of the pauses in force (a small table: usually empty).
fn pauses(conn: &Connection) -> Result<HashSet<String>, InboxError> {
    let mut statement = conn
        .prepare_cached("SELECT scope FROM pauses")
        .map_err(unavailable)?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}

/// The most rounds of one take: a round that meets entries a pause holds (an expired lease of
/// a paused type, or an entry pending from before the pause) holds them and looks again.
const TAKE_ROUNDS: usize = 8;

pub(super) fn take_job(
    conn: &Connection,
    now: i64,
    max: usize,
    lease: i64,
) -> Result<Vec<Leased>, InboxError> {
    let token = airmy_verify::token::random_hex(12);
    let pauses = pauses(conn)?;
    let held = |event_type: &str| {
        !pauses.is_empty()
            && (pauses.contains("*") || pauses.contains(&format!("type:{event_type}")))
    };
    let mut leased = Vec::with_capacity(max.min(1024));
    for _ in 0..TAKE_ROUNDS {
        let limit = i64::try_from(max - leased.len()).unwrap_or(i64::MAX);
        if limit == 0 {
            break;
        }
        let mut found: Vec<(String, String)> = Vec::new();
        {
            // Expired leases first (a worker died), then entries due, oldest due first; each
            // query walks its index in order, with no sort. Paused entries are in neither.
            let mut expired = conn
                .prepare_cached(
                    "SELECT id, event_type FROM entries
                     WHERE state = 'processing' AND lease_until <= ?1
                     ORDER BY lease_until LIMIT ?2",
                )
                .map_err(unavailable)?;
            let rows = expired
                .query_map(params![now, limit], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(unavailable)?;
            for row in rows {
                found.push(row.map_err(unavailable)?);
            }
            let left = limit - i64::try_from(found.len()).unwrap_or(0);
            if left > 0 {
                let mut due = conn
                    .prepare_cached(
                        "SELECT id, event_type FROM entries WHERE state = 'pending' AND due_at <= ?1
                         ORDER BY due_at LIMIT ?2",
                    )
                    .map_err(unavailable)?;
                let rows = due
                    .query_map(params![now, left], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(unavailable)?;
                for row in rows {
                    found.push(row.map_err(unavailable)?);
                }
            }
        }
        if found.is_empty() {
            break;
        }
        let (to_hold, to_lease): (Vec<_>, Vec<_>) = found
            .into_iter()
            .partition(|(_, event_type)| held(event_type));
        // Held, not taken: no attempt counted, due at once when resumed.
        let mut hold = conn
            .prepare_cached(
                "UPDATE entries SET state = 'paused',
                     due_at = CASE WHEN state = 'processing' THEN ?2 ELSE due_at END,
                     lease_until = NULL, lease_token = NULL
                 WHERE id = ?1",
            )
            .map_err(unavailable)?;
        for (id, _) in &to_hold {
            hold.execute(params![id, now]).map_err(unavailable)?;
        }
        let mut update = conn
            .prepare_cached(
                "UPDATE entries SET state = 'processing', attempts = attempts + 1,
                     lease_until = ?2, lease_token = ?3
                 WHERE id = ?1
                 RETURNING event_type, body, received_at, attempts",
            )
            .map_err(unavailable)?;
        for (id, _) in to_lease {
            let (event_type, body, received_at, attempts): (String, Vec<u8>, i64, i64) = update
                .query_row(params![id, now.saturating_add(lease), token], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(unavailable)?;
            leased.push(Leased {
                id,
                event_type,
                body: Bytes::from(body),
                received_at: from_unix_ms(received_at),
                attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
                token: token.clone(),
            });
        }
        if to_hold.is_empty() {
            break;
        }
    }
    Ok(leased)
}

pub(super) fn decrement(counter: &AtomicU64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// Runs an `UPDATE … WHERE id = ? AND lease_token = ? AND state = 'processing'`; whether it
/// applied.
pub(super) fn leased_update(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<bool, InboxError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map(|n| n > 0)
        .map_err(unavailable)
}
