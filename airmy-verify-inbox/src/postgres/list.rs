//! The listing and one entry in full: keyset reads served by the partial index of each state
//! (`entries_due` for pending, scheduled and processing, `entries_paused`, `entries_dead`,
//! `entries_done`).

use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Connection, Row};
use time::OffsetDateTime;

use super::{Db, to_u32, unavailable};
use crate::backend::{
    Entry, EntryState, EntrySummary, InboxError, LIST_SCAN, ListQuery, Order, Page, keyset_cursor,
    parse_keyset_cursor,
};

/// The columns of a summary, in the order [`summary`] reads them.
const COLUMNS: &str = "id, event_type, state, attempts, received_at, due_at, finished_at, \
                       last_error, (state = 'pending' AND due_at > statement_timestamp())";

/// A cursor's key is microseconds since the epoch, kept within about 300 years of it (so the
/// timestamp built from it never leaves PostgreSQL's range).
const KEY_BOUND: i64 = 10_000_000_000_000_000;

/// Each state's rows and the key it is listed by. The time is `statement_timestamp()`, not
/// the volatile `clock_timestamp()`: a stable bound the index scan starts from (with the
/// volatile one, the scheduled listing walked every pending entry first).
fn selection(state: EntryState) -> (&'static str, &'static str) {
    match state {
        EntryState::Pending => (
            "state = 'pending' AND due_at <= statement_timestamp()",
            "due_at",
        ),
        EntryState::Scheduled => (
            "state = 'pending' AND due_at > statement_timestamp()",
            "due_at",
        ),
        EntryState::Paused => ("state = 'paused'", "due_at"),
        EntryState::Processing => ("state = 'processing'", "due_at"),
        EntryState::Dead => ("state = 'dead'", "finished_at"),
        EntryState::Done => ("state = 'done'", "finished_at"),
    }
}

fn summary(row: &PgRow) -> Result<EntrySummary, sqlx::Error> {
    let stored: String = row.try_get(2)?;
    let later: bool = row.try_get(8)?;
    let state = match stored.as_str() {
        "pending" if later => EntryState::Scheduled,
        "pending" => EntryState::Pending,
        "paused" => EntryState::Paused,
        "processing" => EntryState::Processing,
        "dead" => EntryState::Dead,
        _ => EntryState::Done,
    };
    let due_at: OffsetDateTime = row.try_get(5)?;
    Ok(EntrySummary {
        id: row.try_get(0)?,
        event_type: row.try_get(1)?,
        state,
        attempts: to_u32(row.try_get(3)?),
        received_at: row.try_get(4)?,
        next_attempt_at: matches!(
            state,
            EntryState::Pending
                | EntryState::Scheduled
                | EntryState::Paused
                | EntryState::Processing
        )
        .then_some(due_at),
        finished_at: row.try_get(6)?,
        last_error: row.try_get(7)?,
    })
}

pub(super) async fn list(db: &Db, schema: &str, query: &ListQuery) -> Result<Page, InboxError> {
    let (rows, key) = selection(query.state);
    let (after_key, after_seq) = parse_keyset_cursor(query)?;
    let (cmp, bound, dir) = match query.order {
        Order::Oldest => (">", ">=", "ASC"),
        Order::Newest => ("<", "<=", "DESC"),
    };
    // After a cursor, the row comparison is the index range (time, seq) to start from, and
    // the plain one on the time alone a second bound the planner can use. Without a cursor
    // there is neither: a sentinel range would make the scan start at the index's first
    // entry rather than where the state's own bound (`due_at > now`) puts it.
    let keyset = if query.after.is_some() {
        format!(
            "AND {key} {bound} timestamptz 'epoch' + $1 * interval '1 microsecond'
             AND ({key}, seq) {cmp} (timestamptz 'epoch' + $1 * interval '1 microsecond', $2)"
        )
    } else {
        "AND $1::bigint IS NOT NULL AND $2::bigint IS NOT NULL".to_owned()
    };
    let sql = format!(
        "SELECT {COLUMNS}, (extract(epoch FROM {key}) * 1000000)::bigint, seq
         FROM {schema}.entries
         WHERE {rows} {keyset}
         ORDER BY {key} {dir}, seq {dir} LIMIT $3"
    );
    let limit = query.page_size();
    let scan = if query.filtered() {
        LIST_SCAN
    } else {
        limit + 1
    };
    // In a transaction of its own, planned with its cursor's values (not a prepared statement
    // kept for reuse, whose generic plan is blind to where the cursor is) and without bitmap
    // scans: the planner would otherwise read a whole state's rows to sort them when many
    // share a time, where the index (time, seq) gives the page in order at once.
    let persistent = db.persistent();
    let read = db.bounded(async move |conn| {
        let mut tx = conn.begin().await?;
        sqlx::query("SET LOCAL enable_bitmapscan = off")
            .persistent(persistent)
            .execute(&mut *tx)
            .await?;
        let found = sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .bind(after_key.clamp(-KEY_BOUND, KEY_BOUND))
            .bind(after_seq)
            .bind(i64::try_from(scan).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(found)
    });
    let found = read.await.map_err(unavailable)?;
    let mut entries = Vec::new();
    let mut last = None;
    for row in &found {
        if entries.len() == limit {
            return Ok(Page::new(entries, last));
        }
        let read = || -> Result<_, sqlx::Error> {
            Ok((
                summary(row)?,
                keyset_cursor(row.try_get(9)?, row.try_get(10)?),
            ))
        };
        let (entry, cursor) = read().map_err(unavailable)?;
        if query.matches(&entry.id, &entry.event_type) {
            entries.push(entry);
        }
        last = Some(cursor);
    }
    Ok(Page::new(
        entries,
        if found.len() == scan { last } else { None },
    ))
}

pub(super) async fn entry(db: &Db, schema: &str, id: &str) -> Result<Option<Entry>, InboxError> {
    if id.contains('\0') {
        // PostgreSQL text holds no NUL: no entry can have this id.
        return Ok(None);
    }
    let sql = format!("SELECT {COLUMNS}, body FROM {schema}.entries WHERE id = $1");
    let row = db
        .fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(id))
        .await
        .map_err(unavailable)?;
    row.map(|row| {
        Ok(Entry {
            summary: summary(&row)?,
            body: bytes::Bytes::from(row.try_get::<Vec<u8>, _>(9)?),
        })
    })
    .transpose()
    .map_err(unavailable)
}
