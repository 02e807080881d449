//! Handlers' own writes in the entry's transaction: [`PgContext::transaction`] opens it with the entry's completion as its first statement (which locks the entry's row),
//! the handler writes in it, the worker commits it: both or neither.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgConnection, Postgres, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::{Context, HandlerError};

use super::{Db, unavailable};

/// One attempt's transaction, opened when the handler first asks for it.
pub(crate) struct TxSlot {
    db: Db,
    complete: Arc<str>,
    id: String,
    token: String,
    tx: Mutex<Option<Transaction<'static, Postgres>>>,
}

impl fmt::Debug for TxSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxSlot")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How an attempt's transaction ended.
pub(crate) enum Ended {
    /// The handler never opened one: record the outcome as usual.
    NotOpened,
    /// The completion and the handler's writes are committed.
    Committed,
    /// The commit failed: nothing was committed.
    Failed(String),
}

impl TxSlot {
    pub(crate) fn new(db: Db, complete: Arc<str>, id: &str, token: &str) -> Self {
        Self {
            db,
            complete,
            id: id.to_owned(),
            token: token.to_owned(),
            tx: Mutex::new(None),
        }
    }

    /// The open transaction, begun on the first call with the entry's completion as its first
    /// statement: the `UPDATE` checks the lease is still ours and locks the row (no other
    /// worker takes the entry over while the transaction is open), and it is undone with the
    /// handler's writes if they roll back. Nobody else sees it before the commit. (The row
    /// lock and the completion in one statement; putting the `BEGIN` in the same round trip,
    /// through a function, was measured and gained nothing: BENCHMARKS.md.)
    pub(crate) async fn get(&self) -> Result<InboxTransaction<'_>, HandlerError> {
        let mut guard = self.tx.lock().await;
        if guard.is_none() {
            let mut tx = self
                .db
                .begin()
                .await
                .map_err(|e| HandlerError::from(unavailable(e)))?;
            let complete = sqlx::query(AssertSqlSafe(Arc::clone(&self.complete)))
                .persistent(self.db.persistent())
                .bind(&self.id)
                .bind(&self.token)
                .execute(&mut *tx);
            let done = tokio::time::timeout(self.db.timeout(), complete)
                .await
                .unwrap_or_else(|_| Err(self.db.timed_out()))
                .map_err(|e| HandlerError::from(unavailable(e)))?;
            if done.rows_affected() != 1 {
                let _ = tokio::time::timeout(self.db.timeout(), tx.rollback()).await;
                return Err(HandlerError::from(
                    "the entry's lease was taken over: no transaction for this attempt",
                ));
            }
            *guard = Some(tx);
        }
        Ok(InboxTransaction(guard))
    }

    /// After a successful handler: the commit of its writes and of the completion recorded
    /// when the transaction was opened. First a trivial statement, because PostgreSQL answers
    /// the `COMMIT` of a transaction aborted by an error (one the handler caught and ignored,
    /// say a unique violation) with a rollback, not an error: the statement fails there
    /// (`25P02`), and the attempt is a failure, retried, rather than a success that committed
    /// nothing.
    pub(crate) async fn commit(&self) -> Ended {
        let Some(mut tx) = self.tx.lock().await.take() else {
            return Ended::NotOpened;
        };
        let bound = self.db.timeout();
        let check = sqlx::query("SELECT 1")
            .persistent(self.db.persistent())
            .execute(&mut *tx);
        let check = tokio::time::timeout(bound, check)
            .await
            .unwrap_or_else(|_| Err(self.db.timed_out()));
        if let Err(e) = check {
            let _ = tokio::time::timeout(bound, tx.rollback()).await;
            let aborted =
                matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("25P02"));
            return Ended::Failed(if aborted {
                "a statement in it failed (an error the handler ignored): PostgreSQL aborted the \
                 transaction"
                    .to_owned()
            } else {
                unavailable(e).to_string()
            });
        }
        // Past the bound the outcome is unknown (the `COMMIT` may arrive when the path comes
        // back): the attempt counts as failed, and its retry finds the entry completed if it
        // was, the completion and the writes being one transaction.
        match tokio::time::timeout(bound, tx.commit()).await {
            Ok(Ok(())) => Ended::Committed,
            Ok(Err(e)) => Ended::Failed(unavailable(e).to_string()),
            Err(_) => Ended::Failed(unavailable(self.db.timed_out()).to_string()),
        }
    }

    /// After a failed handler (an error, a panic, a timeout): the handler's writes and the
    /// completion undone, the row's lock released, before the retry is recorded on its own.
    pub(crate) async fn roll_back(&self) {
        if let Some(tx) = self.tx.lock().await.take() {
            // Unanswered within the bound, it is dropped: the server rolls back when the
            // rollback sqlx then queues, or the connection's end, reaches it.
            let _ = tokio::time::timeout(self.db.timeout(), tx.rollback()).await;
        }
    }
}

/// The open transaction of an inbox entry's attempt, from [`PgContext::transaction`]: use it as a `&mut PgConnection`
/// (`sqlx::query(…).execute(&mut *tx)`). Your writes in it commit together with the entry's
/// completion when the handler returns `Ok`; an `Err`, a panic or a timeout rolls them back.
/// Hold it only while you use it (another call for the same attempt waits for it).
pub struct InboxTransaction<'a>(MutexGuard<'a, Option<Transaction<'static, Postgres>>>);

impl fmt::Debug for InboxTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InboxTransaction")
    }
}

impl Deref for InboxTransaction<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.0.as_ref().expect("opened before it is handed out")
    }
}

impl DerefMut for InboxTransaction<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.0.as_mut().expect("opened before it is handed out")
    }
}

/// What a handler run by [`PgBackend::worker`](crate::PgBackend::worker) gets besides its
/// event: the [`Context`] (its fields through `Deref`: `ctx.id`, `ctx.attempt`,
/// `ctx.after_commit(…)`) and the entry's transaction. Only a PostgreSQL worker makes one, so a
/// handler that takes it cannot be run on another backend.
#[derive(Clone)]
pub struct PgContext {
    context: Context,
    slot: Arc<TxSlot>,
}

impl PgContext {
    pub(crate) fn new(context: Context, slot: Arc<TxSlot>) -> Self {
        Self { context, slot }
    }

    /// The attempt's database transaction: begun on the first call with the entry's
    /// completion as its first statement, which locks the entry's row (no other worker can
    /// take the entry over while it is open, however long the handler takes; nobody sees the
    /// completion before the commit). Write your effects in it: they commit **together with
    /// the entry's completion** when the handler returns `Ok`, and an `Err`, a panic or a
    /// timeout rolls both back (the retry is then recorded on its own). A statement that
    /// failed inside it fails the attempt even if the handler ignored the error (PostgreSQL
    /// aborted the transaction; its commit would store nothing). Effects outside it (HTTP
    /// calls, e-mails) stay at-least-once. See [`PgBackend::worker`](crate::PgBackend::worker).
    ///
    /// Unlike a `sqlx::Transaction`, dropping the [`InboxTransaction`] does **not** roll back:
    /// it is a lock on the attempt's one transaction, which the worker commits or rolls back
    /// after the handler. Another call in the same attempt gives the same transaction, with the
    /// writes made so far; to undo them, return an `Err`.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached, or when the entry's lease was taken over (another
    /// worker has it): return the error, and the attempt is retried.
    pub async fn transaction(&self) -> Result<InboxTransaction<'_>, HandlerError> {
        self.slot.get().await
    }

    /// The context every backend gives.
    #[must_use]
    pub fn context(&self) -> &Context {
        &self.context
    }
}

impl Deref for PgContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.context
    }
}

impl AsRef<Context> for PgContext {
    fn as_ref(&self) -> &Context {
        &self.context
    }
}

impl fmt::Debug for PgContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgContext")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}
