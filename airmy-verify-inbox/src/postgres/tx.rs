//! Handlers' own writes in the entry's transaction: [`Context::transaction`](crate::Context::transaction)
//! opens it (locking the entry's row), the worker records the completion in it and commits:
//! both or neither.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::HandlerError;
use crate::backend::InboxError;

use super::unavailable;

/// One attempt's transaction, opened when the handler first asks for it.
#[doc(hidden)]
pub struct TxSlot {
    pool: PgPool,
    lock: Arc<str>,
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
    /// The entry's lease was no longer ours: nothing was committed.
    LeaseLost,
    /// The commit (or the completion in it) failed: nothing was committed.
    Failed(InboxError),
}

impl TxSlot {
    pub(crate) fn new(
        pool: PgPool,
        lock: Arc<str>,
        complete: Arc<str>,
        id: &str,
        token: &str,
    ) -> Self {
        Self {
            pool,
            lock,
            complete,
            id: id.to_owned(),
            token: token.to_owned(),
            tx: Mutex::new(None),
        }
    }

    /// The open transaction, begun (and the entry's row locked with `FOR UPDATE`, checking the
    /// lease is still ours) on the first call.
    pub(crate) async fn get(&self) -> Result<InboxTransaction<'_>, HandlerError> {
        let mut guard = self.tx.lock().await;
        if guard.is_none() {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| HandlerError::from(unavailable(&e).to_string()))?;
            let held = sqlx::query(AssertSqlSafe(Arc::clone(&self.lock)))
                .bind(&self.id)
                .bind(&self.token)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| HandlerError::from(unavailable(&e).to_string()))?;
            if held.is_none() {
                return Err(HandlerError::from(
                    "the entry's lease was taken over: no transaction for this attempt",
                ));
            }
            *guard = Some(tx);
        }
        Ok(InboxTransaction(guard))
    }

    /// After a successful handler: the completion in the transaction, then the commit.
    pub(crate) async fn commit(&self) -> Ended {
        let Some(mut tx) = self.tx.lock().await.take() else {
            return Ended::NotOpened;
        };
        let done = sqlx::query(AssertSqlSafe(Arc::clone(&self.complete)))
            .bind(&self.id)
            .bind(&self.token)
            .execute(&mut *tx)
            .await;
        match done {
            Ok(done) if done.rows_affected() == 1 => match tx.commit().await {
                Ok(()) => Ended::Committed,
                Err(e) => Ended::Failed(unavailable(&e)),
            },
            Ok(_) => {
                let _ = tx.rollback().await;
                Ended::LeaseLost
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Ended::Failed(unavailable(&e))
            }
        }
    }

    /// After a failed handler (an error, a panic, a timeout): the handler's writes undone, the
    /// row's lock released, before the retry is recorded on its own.
    pub(crate) async fn roll_back(&self) {
        if let Some(tx) = self.tx.lock().await.take() {
            let _ = tx.rollback().await;
        }
    }
}

/// The open transaction of an inbox entry's attempt, from
/// [`Context::transaction`](crate::Context::transaction): use it as a `&mut PgConnection`
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
