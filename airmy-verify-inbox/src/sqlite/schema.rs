//! The database's schema: its version (`PRAGMA user_version`), the tables of each version and
//! the migrations between them, and the private file it lives in.

use std::path::Path;

use rusqlite::Connection;

/// The schema version this crate writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// Version 1. A rowid table (its rows hold the body, so a `WITHOUT ROWID` table would be slow),
/// the event id unique, and partial indexes for what is due, leased, dead and done (each row is
/// in one index besides the id's, so an insert or a change of state touches few pages).
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE entries (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    event_type  TEXT NOT NULL,
    body        BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'processing', 'done', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_at      INTEGER NOT NULL,
    lease_until INTEGER,
    lease_token TEXT,
    last_error  TEXT,
    finished_at INTEGER
);
CREATE INDEX entries_due ON entries (due_at) WHERE state = 'pending';
CREATE INDEX entries_lease ON entries (lease_until) WHERE state = 'processing';
CREATE INDEX entries_dead ON entries (finished_at) WHERE state = 'dead';
CREATE INDEX entries_done ON entries (finished_at) WHERE state = 'done';
";

/// Version 2: the state `paused` (entries held by a pause, outside the index `take` reads, in
/// one of their own), the pauses in force (`scope` is [`PauseScope::key`]: `*`, or `type:` and
/// the event type; `since` in Unix milliseconds), and the recent actions of operators (the
/// last [`RECENT_ACTIONS`], `ids` a JSON array). SQLite cannot widen a `CHECK` in place, so
/// the entries move to a new table of the same columns (the procedure of SQLite's
/// "ALTER TABLE" page): on a large file the step copies every row once, at the first open by
/// this version.
///
/// [`PauseScope::key`]: crate::PauseScope::key
/// [`RECENT_ACTIONS`]: crate::RECENT_ACTIONS
pub(super) const MIGRATE_V2: &str = "
CREATE TABLE entries_v2 (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    event_type  TEXT NOT NULL,
    body        BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'paused', 'processing', 'done', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_at      INTEGER NOT NULL,
    lease_until INTEGER,
    lease_token TEXT,
    last_error  TEXT,
    finished_at INTEGER
);
INSERT INTO entries_v2 (seq, id, event_type, body, created_at, received_at, state, attempts,
                        due_at, lease_until, lease_token, last_error, finished_at)
    SELECT seq, id, event_type, body, created_at, received_at, state, attempts,
           due_at, lease_until, lease_token, last_error, finished_at
    FROM entries;
DROP TABLE entries;
ALTER TABLE entries_v2 RENAME TO entries;
CREATE INDEX entries_due ON entries (due_at) WHERE state = 'pending';
CREATE INDEX entries_paused ON entries (due_at) WHERE state = 'paused';
CREATE INDEX entries_lease ON entries (lease_until) WHERE state = 'processing';
CREATE INDEX entries_dead ON entries (finished_at) WHERE state = 'dead';
CREATE INDEX entries_done ON entries (finished_at) WHERE state = 'done';
CREATE TABLE pauses (
    scope TEXT PRIMARY KEY,
    since INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE actions (
    seq     INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    count   INTEGER NOT NULL,
    ids     TEXT NOT NULL
);
";

/// Brings a database to [`SCHEMA_VERSION`], one step per version, each in a transaction (a
/// new file too: version 1, then each step).
pub(super) fn migrate(conn: &mut Connection) -> Result<(), String> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| e.to_string())?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "its schema version is {version}, newer than this program's {SCHEMA_VERSION}"
        ));
    }
    if version < 1 {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(|e| e.to_string())?;
        if tables > 0 {
            return Err("it is a SQLite database of another program (no inbox schema)".into());
        }
        tx.execute_batch(SCHEMA_V1).map_err(|e| e.to_string())?;
        tx.pragma_update(None, "user_version", 1)
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    if version < 2 {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(MIGRATE_V2)
            .map_err(|e| format!("cannot bring the schema to version 2: {e}"))?;
        tx.pragma_update(None, "user_version", 2)
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Creates the file with mode 0600 if it does not exist (SQLite gives its `-wal` and `-shm`
/// files the same mode).
pub(super) fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{SCHEMA_V1, SCHEMA_VERSION, migrate};

    #[test]
    fn a_version_1_file_keeps_its_entries_and_takes_the_paused_state() {
        let mut conn = Connection::open_in_memory().expect("opens");
        conn.execute_batch(SCHEMA_V1).expect("version 1");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
        conn.execute_batch(
            "INSERT INTO entries (seq, id, event_type, body, created_at, received_at, state,
                                  attempts, due_at, lease_until, lease_token, last_error,
                                  finished_at)
             VALUES (7, 'evt_old', 'run.failed', x'7b7d', '2026-01-01T00:00:00Z', 5, 'dead',
                     3, 6, NULL, NULL, 'boom', 9),
                    (8, 'evt_leased', 'test', x'7b7d', '2026-01-01T00:00:00Z', 5, 'processing',
                     1, 6, 100, 'tok', NULL, NULL)",
        )
        .expect("rows");
        migrate(&mut conn).expect("migrates");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let rows: Vec<String> = conn
            .prepare(
                "SELECT seq || ' ' || id || ' ' || state || ' ' || attempts || ' '
                        || coalesce(last_error, '-') || ' ' || coalesce(lease_until, '-') || ' '
                        || coalesce(lease_token, '-')
                 FROM entries ORDER BY seq",
            )
            .expect("select")
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            rows,
            [
                "7 evt_old dead 3 boom - -",
                "8 evt_leased processing 1 - 100 tok"
            ]
        );
        conn.execute("UPDATE entries SET state = 'paused' WHERE seq = 7", [])
            .expect("the new state is allowed");
        assert!(
            conn.execute("UPDATE entries SET state = 'lost' WHERE seq = 7", [])
                .is_err(),
            "the check holds"
        );
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'entries' AND sql IS NOT NULL ORDER BY name")
            .expect("select")
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            indexes,
            [
                "entries_dead",
                "entries_done",
                "entries_due",
                "entries_lease",
                "entries_paused"
            ]
        );
        migrate(&mut conn).expect("a second open changes nothing");
    }
}
