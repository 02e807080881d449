//! The inbox's tables in a schema of their own (default `airmy_inbox`): the version record,
//! the tables of each version and the migrations between them.

use sqlx::{Connection, PgConnection, Row};

use crate::{OpenError, OpenErrorKind};

/// A schema this program cannot use.
fn schema_error(why: String) -> OpenError {
    OpenError::new(OpenErrorKind::Schema, why)
}

/// The schema version this crate writes (the row of `<schema>.schema_version`).
pub const SCHEMA_VERSION: i32 = 3;

/// The program a schema's version row names: a schema that holds tables but not this row is
/// someone else's and is refused.
const PROGRAM: &str = "airmy-verify-inbox";

/// Version 1. One row per entry; `due_at` is when the entry can next be taken: a pending
/// entry's due time, or a processing entry's lease expiry (a takeover), so one partial index
/// serves `take` and `next_due`. The others serve the dead-letter list and the purge.
fn v1(s: &str) -> String {
    format!(
        r#"
CREATE TABLE {s}.schema_version (
    program text NOT NULL,
    version integer NOT NULL
);
CREATE TABLE {s}.entries (
    seq          bigserial NOT NULL,
    id           text PRIMARY KEY,
    event_type   text NOT NULL,
    body         bytea NOT NULL,
    created_at   text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    state        text NOT NULL CHECK (state IN ('pending', 'processing', 'done', 'dead')),
    attempts     integer NOT NULL DEFAULT 0,
    due_at       timestamptz NOT NULL,
    lease_token  text,
    last_error   text,
    finished_at  timestamptz
);
CREATE INDEX entries_due ON {s}.entries (due_at) WHERE state IN ('pending', 'processing');
CREATE INDEX entries_dead ON {s}.entries (finished_at) WHERE state = 'dead';
CREATE INDEX entries_done ON {s}.entries (finished_at) WHERE state = 'done';
INSERT INTO {s}.schema_version (program, version) VALUES ('{PROGRAM}', 1);
"#
    )
}

/// Version 2: the three partial indexes carry the sequence number after their time, so that a
/// listing's keyset `(time, seq) > (…)` is an index range however many entries share a time
/// (10,000 retries scheduled for one instant sorted in memory at every page before), in the
/// same order `take` and the purge read. The same number of indexes: accepts and completions
/// write no more. (On a large existing table, the step builds three indexes while it holds the
/// migration's lock: run it at a quiet time.)
fn v2(s: &str) -> String {
    format!(
        r#"
CREATE INDEX entries_due_v2 ON {s}.entries (due_at, seq) WHERE state IN ('pending', 'processing');
CREATE INDEX entries_dead_v2 ON {s}.entries (finished_at, seq) WHERE state = 'dead';
CREATE INDEX entries_done_v2 ON {s}.entries (finished_at, seq) WHERE state = 'done';
DROP INDEX {s}.entries_due;
DROP INDEX {s}.entries_dead;
DROP INDEX {s}.entries_done;
ALTER INDEX {s}.entries_due_v2 RENAME TO entries_due;
ALTER INDEX {s}.entries_dead_v2 RENAME TO entries_dead;
ALTER INDEX {s}.entries_done_v2 RENAME TO entries_done;
UPDATE {s}.schema_version SET version = 2;
"#
    )
}

/// Version 3: the state `paused` (entries held by a pause: outside `entries_due`, so `take`
/// never reads them, in an index of their own), the pauses in force (`scope` is
/// [`PauseScope::key`](crate::PauseScope::key): `*`, or `type:` and the event type), and the
/// recent actions of operators (the last [`RECENT_ACTIONS`](crate::RECENT_ACTIONS)). The
/// state's check is replaced in place (a scan of the table to validate it, under the
/// migration's lock; no rewrite).
fn v3(s: &str) -> String {
    format!(
        r#"
ALTER TABLE {s}.entries DROP CONSTRAINT entries_state_check;
ALTER TABLE {s}.entries ADD CONSTRAINT entries_state_check
    CHECK (state IN ('pending', 'paused', 'processing', 'done', 'dead'));
CREATE INDEX entries_paused ON {s}.entries (due_at, seq) WHERE state = 'paused';
CREATE TABLE {s}.pauses (
    scope  text PRIMARY KEY,
    since  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE {s}.actions (
    seq      bigserial PRIMARY KEY,
    at       timestamptz NOT NULL,
    actor    text NOT NULL,
    action   text NOT NULL,
    subject  text NOT NULL,
    count    bigint NOT NULL,
    ids      text[] NOT NULL
);
UPDATE {s}.schema_version SET version = 3;
"#
    )
}

/// Whether `name` is a schema name the backend accepts: 1 to 63 lowercase ASCII letters,
/// digits and underscores, not starting with a digit (so it never needs quoting, and the SQL
/// built with it cannot be anything else).
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("pg_")
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, holding an advisory lock so
/// replicas starting at once migrate one after the other. `persistent`: whether its
/// statements may stay prepared on the connection (not behind a transaction pooler).
pub(super) async fn migrate(
    conn: &mut PgConnection,
    schema: &str,
    persistent: bool,
) -> Result<(), OpenError> {
    let mut tx = conn.begin().await.map_err(super::connect::open_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('airmy-verify-inbox:' || $1))")
        .persistent(persistent)
        .bind(schema)
        .execute(&mut *tx)
        .await
        .map_err(super::connect::open_error)?;
    let tables: i64 =
        sqlx::query("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1")
            .persistent(persistent)
            .bind(schema)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(super::connect::open_error)?;
    let has_version: bool = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                        WHERE table_schema = $1 AND table_name = 'schema_version')",
    )
    .persistent(persistent)
    .bind(schema)
    .fetch_one(&mut *tx)
    .await
    .and_then(|row| row.try_get(0))
    .map_err(super::connect::open_error)?;
    if !has_version {
        if tables > 0 {
            return Err(schema_error(format!(
                "the schema {schema} holds tables of another program (no inbox version row)"
            )));
        }
        let create = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};{}{}{}",
            v1(schema),
            v2(schema),
            v3(schema)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut *tx)
            .await
            .map_err(super::connect::open_error)?;
        return tx.commit().await.map_err(super::connect::open_error);
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT program, version FROM {schema}.schema_version LIMIT 1"
    )))
    .persistent(persistent)
    .fetch_optional(&mut *tx)
    .await
    .map_err(super::connect::open_error)?;
    let Some(row) = row else {
        return Err(schema_error(format!(
            "the schema {schema} has an empty version table"
        )));
    };
    let program: String = row.try_get(0).map_err(super::connect::open_error)?;
    let version: i32 = row.try_get(1).map_err(super::connect::open_error)?;
    if program != PROGRAM {
        return Err(schema_error(format!(
            "the schema {schema} belongs to another program ({program:?})"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(schema_error(format!(
            "the schema {schema} is at version {version}, newer than this program's {SCHEMA_VERSION}"
        )));
    }
    // One step per version, in order.
    if version < 2 {
        sqlx::raw_sql(sqlx::AssertSqlSafe(v2(schema)))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                super::connect::open_error(e)
                    .context(&format!("cannot bring the schema {schema} to version 2"))
            })?;
    }
    if version < 3 {
        sqlx::raw_sql(sqlx::AssertSqlSafe(v3(schema)))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                super::connect::open_error(e)
                    .context(&format!("cannot bring the schema {schema} to version 3"))
            })?;
    }
    tx.commit().await.map_err(super::connect::open_error)
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["airmy_inbox", "billing_inbox2", "_x"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "1inbox",
            "Inbox",
            "in-box",
            "a;drop",
            "a\"b",
            "pg_catalog",
            &"x".repeat(64),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
