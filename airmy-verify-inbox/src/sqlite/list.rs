//! The listing and one entry in full: keyset reads on their own read-only connection (WAL lets
//! them run beside the writer thread, so a console never delays an accept).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::unavailable;
use crate::backend::{
    Entry, EntryState, EntrySummary, InboxError, LIST_SCAN, ListQuery, Order, Page, keyset_cursor,
    parse_keyset_cursor,
};
use crate::clock::from_unix_ms;

/// The columns of a summary, in the order [`summary`] reads them.
const COLUMNS: &str = "id, event_type, state, attempts, received_at, due_at, lease_until, \
                       finished_at, last_error";

/// Each state's rows, and the key it is listed by (served by the partial index of that state).
fn selection(state: EntryState) -> (&'static str, &'static str) {
    match state {
        EntryState::Pending => ("state = 'pending' AND due_at <= :now", "due_at"),
        EntryState::Scheduled => ("state = 'pending' AND due_at > :now", "due_at"),
        EntryState::Paused => ("state = 'paused'", "due_at"),
        EntryState::Processing => ("state = 'processing'", "lease_until"),
        EntryState::Dead => ("state = 'dead'", "finished_at"),
        EntryState::Done => ("state = 'done'", "finished_at"),
    }
}

fn summary(row: &Row<'_>, now: i64) -> rusqlite::Result<EntrySummary> {
    let stored: String = row.get(2)?;
    let due_at: i64 = row.get(5)?;
    let state = match stored.as_str() {
        "pending" if due_at > now => EntryState::Scheduled,
        "pending" => EntryState::Pending,
        "paused" => EntryState::Paused,
        "processing" => EntryState::Processing,
        "dead" => EntryState::Dead,
        _ => EntryState::Done,
    };
    let next_attempt_at = match state {
        EntryState::Pending | EntryState::Scheduled | EntryState::Paused => {
            Some(from_unix_ms(due_at))
        }
        EntryState::Processing => row.get::<_, Option<i64>>(6)?.map(from_unix_ms),
        EntryState::Dead | EntryState::Done => None,
    };
    Ok(EntrySummary {
        id: row.get(0)?,
        event_type: row.get(1)?,
        state,
        attempts: u32::try_from(row.get::<_, i64>(3)?).unwrap_or(u32::MAX),
        received_at: from_unix_ms(row.get(4)?),
        next_attempt_at,
        finished_at: row.get::<_, Option<i64>>(7)?.map(from_unix_ms),
        last_error: row.get(8)?,
    })
}

pub(super) fn list(conn: &Connection, now: i64, query: &ListQuery) -> Result<Page, InboxError> {
    let (rows, key) = selection(query.state);
    let (after_key, after_seq) = parse_keyset_cursor(query)?;
    let (cmp, dir) = match query.order {
        Order::Oldest => (">", "ASC"),
        Order::Newest => ("<", "DESC"),
    };
    let sql = format!(
        "SELECT {COLUMNS}, {key}, seq FROM entries
         WHERE {rows} AND ({key}, seq) {cmp} (:key, :seq)
         ORDER BY {key} {dir}, seq {dir} LIMIT :scan"
    );
    let limit = query.page_size();
    // Unfiltered, one row past the page tells whether there is a next one.
    let scan = if query.filtered() {
        LIST_SCAN
    } else {
        limit + 1
    };
    let mut statement = conn.prepare_cached(&sql).map_err(unavailable)?;
    let scan_rows = i64::try_from(scan).unwrap_or(i64::MAX);
    let mut named: Vec<(&str, &dyn rusqlite::ToSql)> = vec![
        (":key", &after_key),
        (":seq", &after_seq),
        (":scan", &scan_rows),
    ];
    if rows.contains(":now") {
        named.push((":now", &now));
    }
    let mut found = statement.query(named.as_slice()).map_err(unavailable)?;
    let mut entries = Vec::new();
    let mut last = None;
    let mut examined = 0;
    while let Some(row) = found.next().map_err(unavailable)? {
        if entries.len() == limit {
            // One more row exists: the page stops at the last one kept.
            return Ok(Page::new(entries, last));
        }
        examined += 1;
        let cursor = keyset_cursor(
            row.get(9).map_err(unavailable)?,
            row.get(10).map_err(unavailable)?,
        );
        let entry = summary(row, now).map_err(unavailable)?;
        if query.matches(&entry.id, &entry.event_type) {
            entries.push(entry);
        }
        last = Some(cursor);
    }
    // The scan ended: at the end of the state, unless it stopped at its bound.
    Ok(Page::new(
        entries,
        if examined == scan { last } else { None },
    ))
}

pub(super) fn entry(conn: &Connection, now: i64, id: &str) -> Result<Option<Entry>, InboxError> {
    let sql = format!("SELECT {COLUMNS}, body FROM entries WHERE id = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(params![id], |row| {
                Ok(Entry {
                    summary: summary(row, now)?,
                    body: bytes::Bytes::from(row.get::<_, Vec<u8>>(9)?),
                })
            })
            .optional()
        })
        .map_err(unavailable)
}
