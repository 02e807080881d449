//! Batching of the two commonest writes, accepts and completions: one statement (one
//! transaction, one WAL flush) per batch instead of one per entry, as the Redis backend sends
//! one script per batch. Each has a task of its own that sends whatever arrived while its
//! previous statements ran; at low load a batch is one entry and waits for nothing.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{mpsc, oneshot};

use super::{Db, PgQuery, unavailable};
use crate::backend::InboxError;
use crate::batch::{Measured, Queued};

/// Completion statements in flight at once: the next batch gathers while they commit.
const IN_FLIGHT: usize = 4;
/// Accept statements in flight at once: two, so that one batch's statement runs while the
/// other's commit waits for its WAL flush, and everything that arrives meanwhile goes out as
/// the next batch. PostgreSQL flushes the WAL one flush at a time, so more statements in flight
/// only split the same accepts into smaller batches, each with a flush of its own: measured
/// with `scripts/inbox-load.sh` (BENCHMARKS.md, 2026-12-08), 1 / 2 / 4 in flight gave batches of
/// 15 / 8 / 5 accepts on average and 0.20 / 0.27 / 0.24 of the no-inbox rate.
///
/// Each statement, of either kind, is bounded by
/// [`PgOptions::operation_timeout`](super::PgOptions::operation_timeout) (the backend's `Db`),
/// so a server that stops answering without closing the connection (a network path that drops
/// packets) holds a slot for that long at most, never for ever.
const ACCEPTS_IN_FLIGHT: usize = 2;

/// One accept waiting for its batch; the answer is whether it was stored (`false`: a
/// duplicate).
pub(super) struct AcceptJob {
    pub(super) id: String,
    pub(super) event_type: String,
    pub(super) body: Bytes,
    pub(super) created_at: String,
    pub(super) reply: oneshot::Sender<Result<bool, InboxError>>,
}

/// One completion waiting for its batch; the answer is whether the lease was still held.
pub(super) struct CompleteJob {
    pub(super) id: String,
    pub(super) token: String,
    pub(super) reply: oneshot::Sender<Result<bool, InboxError>>,
}

/// The answer to a job whose batch task is gone (the backend is being dropped).
pub(super) fn shutting_down() -> InboxError {
    InboxError::unavailable("the inbox is shutting down")
}

/// The rows of `query`, or why there are none: PostgreSQL's error, or no answer within the
/// backend's operation timeout.
async fn rows(db: &Db, query: PgQuery<'_>) -> Result<Vec<sqlx::postgres::PgRow>, InboxError> {
    db.fetch_all(query).await.map_err(unavailable)
}

/// The accept task: each batch is one `INSERT … SELECT FROM unnest(…) ON CONFLICT (id) DO
/// NOTHING RETURNING id`; a job whose id came back was stored. An id twice in one batch is
/// stored once: its later jobs are duplicates. A batch inserts its ids in sorted order, so
/// that two batches in flight (or two replicas' batches) waiting for each other's uncommitted
/// ids cannot deadlock. A job PostgreSQL could never store (a NUL in its id or type, which
/// `text` refuses) is answered on its own and kept out of the batch, so that it cannot fail
/// the others.
pub(super) async fn accepts(
    db: Db,
    sql: Arc<str>,
    queue: mpsc::UnboundedReceiver<Queued<AcceptJob>>,
) {
    crate::batch::batches(
        queue,
        Measured::Accepts("postgres"),
        |job| job.id.len() + job.body.len(),
        ACCEPTS_IN_FLIGHT,
        move |jobs: Vec<AcceptJob>| {
            let (db, sql) = (db.clone(), Arc::clone(&sql));
            async move {
                let mut seen = HashSet::with_capacity(jobs.len());
                let (mut first, mut again) = (Vec::with_capacity(jobs.len()), Vec::new());
                for job in jobs {
                    if job.reply.is_closed() {
                        // Its accept gave up waiting (answered 503 at its bound): nobody waits
                        // for this answer, and AIRMY sends the delivery again.
                        continue;
                    }
                    if job.id.contains('\0') || job.event_type.contains('\0') {
                        let _ = job.reply.send(Err(InboxError::unavailable(
                            "PostgreSQL cannot store an event id or type with a NUL character"
                                .to_owned(),
                        )));
                    } else if seen.insert(job.id.clone()) {
                        first.push(job);
                    } else {
                        again.push(job);
                    }
                }
                if first.is_empty() {
                    return;
                }
                first.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                let ids: Vec<&str> = first.iter().map(|j| j.id.as_str()).collect();
                let types: Vec<&str> = first.iter().map(|j| j.event_type.as_str()).collect();
                let bodies: Vec<&[u8]> = first.iter().map(|j| j.body.as_ref()).collect();
                let created: Vec<&str> = first.iter().map(|j| j.created_at.as_str()).collect();
                let insert = sqlx::query(AssertSqlSafe(sql))
                    .bind(ids)
                    .bind(types)
                    .bind(bodies)
                    .bind(created);
                let stored = rows(&db, insert).await.and_then(|rows| {
                    rows.iter()
                        .map(|row| row.try_get::<String, _>(0))
                        .collect::<Result<HashSet<String>, _>>()
                        .map_err(unavailable)
                });
                for job in first {
                    let answer = stored.as_ref().map(|ids| ids.contains(&job.id));
                    let _ = job.reply.send(answer.map_err(Clone::clone));
                }
                for job in again {
                    let answer = stored.as_ref().map(|_| false);
                    let _ = job.reply.send(answer.map_err(Clone::clone));
                }
            }
        },
    )
    .await;
}

/// The completion task: each batch is one `UPDATE … FROM unnest(…)` over the rows it can lock
/// at once (`SKIP LOCKED`); a job whose row was locked (its lease being extended at that
/// moment, or a takeover's transaction) is then completed on its own by `single`, which waits
/// for the lock, so that a locked row neither holds up the batch nor reads as a lost lease.
/// Rows come back with the token that completed them: a stale and a current token of one
/// entry in one batch are answered each for itself.
pub(super) async fn completions(
    db: Db,
    sql: Arc<str>,
    single: Arc<str>,
    queue: mpsc::UnboundedReceiver<Queued<CompleteJob>>,
) {
    crate::batch::batches(
        queue,
        Measured::Other,
        |job| job.id.len() + job.token.len(),
        IN_FLIGHT,
        move |jobs: Vec<CompleteJob>| {
            let (db, sql, single) = (db.clone(), Arc::clone(&sql), Arc::clone(&single));
            async move {
                let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
                let tokens: Vec<&str> = jobs.iter().map(|j| j.token.as_str()).collect();
                let update = sqlx::query(AssertSqlSafe(sql)).bind(ids).bind(tokens);
                let done = rows(&db, update).await.and_then(|rows| {
                    rows.iter()
                        .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)))
                        .collect::<Result<HashSet<(String, String)>, sqlx::Error>>()
                        .map_err(unavailable)
                });
                let done = match done {
                    Ok(done) => done,
                    Err(err) => {
                        for job in jobs {
                            let _ = job.reply.send(Err(err.clone()));
                        }
                        return;
                    }
                };
                // The completed ones are answered at once; the others (a row locked at that
                // moment, or a lease really lost) each by a statement of its own, together.
                let mut rest = Vec::new();
                for job in jobs {
                    if done.contains(&(job.id.clone(), job.token.clone())) {
                        let _ = job.reply.send(Ok(true));
                    } else {
                        rest.push(job);
                    }
                }
                futures_util::future::join_all(rest.into_iter().map(|job| {
                    let (db, single) = (db.clone(), Arc::clone(&single));
                    async move {
                        let answer = db
                            .execute(
                                sqlx::query(AssertSqlSafe(single))
                                    .bind(&job.id)
                                    .bind(&job.token),
                            )
                            .await
                            .map(|r| r.rows_affected() == 1)
                            .map_err(unavailable);
                        let _ = job.reply.send(answer);
                    }
                }))
                .await;
            }
        },
    )
    .await;
}
