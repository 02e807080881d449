//! The application's side of the PostgreSQL tests with transactional handlers: a table
//! `app_<schema>.effects` with one row per committed attempt (no unique constraint, so that a
//! doubled effect shows as two rows), written in the entry's transaction, counted per id.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;

use sqlx::PgConnection;

/// Creates the schema `app_<schema>` and its `effects` table, on `pool`.
pub async fn create(pool: &sqlx::PgPool, schema: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA app_{schema}; \
         CREATE TABLE app_{schema}.effects (event_id text NOT NULL, attempt int NOT NULL);"
    )))
    .execute(pool)
    .await
    .expect("effects table");
}

/// The statement writing one effect (`$1` the event id, `$2` the attempt).
pub fn insert(schema: &str) -> std::sync::Arc<str> {
    format!("INSERT INTO app_{schema}.effects (event_id, attempt) VALUES ($1, $2)").into()
}

/// Writes one effect of attempt `attempt` of `id` with `insert`, in `tx`.
pub async fn write(
    tx: &mut PgConnection,
    insert: std::sync::Arc<str>,
    id: &str,
    attempt: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(insert))
        .bind(id)
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .execute(tx)
        .await
        .map(drop)
}

/// Effect rows per event id: (how many, the highest attempt among them).
pub async fn count(pool: &sqlx::PgPool, schema: &str) -> HashMap<String, (i64, i32)> {
    let rows: Vec<(String, i64, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT event_id, count(*), max(attempt) FROM app_{schema}.effects GROUP BY event_id"
    )))
    .fetch_all(pool)
    .await
    .expect("effects");
    rows.into_iter()
        .map(|(id, n, attempt)| (id, (n, attempt)))
        .collect()
}
