//! The PostgreSQL backend: the inbox in your own database, one queue shared by every replica.
//!
//! - **Accept is one statement**: `INSERT … ON CONFLICT (id) DO NOTHING`, committed (with
//!   `synchronous_commit` on, as PostgreSQL has it by default, the 2xx means "in the WAL, on
//!   disk"). Accepts that arrive together share one statement (`INSERT … SELECT FROM
//!   unnest(…)`, up to 256) and so one commit and one WAL flush; completions are batched the
//!   same way. At low load a batch is one accept and waits for nothing.
//! - **Takes** lease the oldest due entries with `FOR UPDATE SKIP LOCKED`, so workers on every
//!   replica take distinct entries without waiting for each other. A lease is per entry (a
//!   token and an expiry): an entry whose worker died is taken over when its lease runs out.
//! - **Wake-ups** go through `LISTEN`/`NOTIFY`: an accept (or replay) on one replica wakes an
//!   idle worker on another within milliseconds; retries wake their worker at their due time.
//!   The accept's `NOTIFY` is sent right after its commit, one for all the accepts made while
//!   the previous one was on its way: a `NOTIFY` inside each accept would serialize their
//!   commits (PostgreSQL holds one lock through a notifying transaction's WAL flush).
//! - **Times** are the server's (`clock_timestamp()`; a take's due bound is its
//!   `statement_timestamp()`), so replicas with skewed clocks agree on leases.
//! - **A schema of its own** (default `airmy_inbox`; [`PgOptions::schema`]): a version row,
//!   migrations from the first release on, a schema of a newer version or of another program
//!   refused at [`PgBackend::connect`].
//! - **Bounded**: at most [`PgOptions::max_unfinished`] pending and processing entries
//!   (default 1,000,000); past it, and when the server's disk is full, accepts fail with
//!   [`ErrorKind::Full`](crate::ErrorKind::Full) and adapters answer 503, never a 2xx.
//! - **Behind a transaction pooler** (PgBouncer in transaction mode, RDS Proxy, the poolers of
//!   Supabase and Neon): [`PgOptions::pooler`] keeps nothing on a server connection between
//!   transactions (no named prepared statements, each statement in a transaction of its own)
//!   and listens for wake-ups on a direct connection ([`PgOptions::listen_url`]) or, without
//!   one, has idle workers poll every 500 ms.
//!
//! # Example
//!
//! ```no_run
//! use airmy_verify_inbox::{Inbox, PgBackend, PgOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = PgBackend::connect("postgres://app@db.internal/billing", PgOptions::default()).await?;
//! let inbox = Inbox::new(backend);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use airmy_verify::Verified;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};
use time::OffsetDateTime;
use tokio::sync::{Mutex, Notify};

use crate::OpenError;
use crate::backend::{
    Accepted, Action, Admin, BackendFuture, Entry, InboxError, Leased, ListQuery, Page, Pause,
    PauseScope, Queue, RECENT_ACTIONS, Stats, Store,
};
use crate::clock::duration_ms;

mod batch;
mod connect;
mod list;
mod schema;
mod sql;

use sql::Sql;
pub(crate) mod tx;

pub use connect::PgOptions;
pub use tx::{InboxTransaction, PgContext};

pub use schema::SCHEMA_VERSION;

/// Why [`PgBackend::connect`] or [`PgBackend::with_pool`] failed: an [`OpenError`] (the
/// backend's name for it), whose message never shows the URL's password.
pub type PgError = OpenError;

/// How often idle workers look for new entries when nothing tells them: behind a pooler
/// without [`PgOptions::listen_url`] (no `LISTEN` there), an entry accepted by another
/// replica is taken within this (one this process accepted wakes its workers at once).
const POLL: Duration = Duration::from_millis(500);

/// The bound of an operator's bulk action (a listing, `replay_dead`, a purge of processed
/// entries): longer than [`PgOptions::operation_timeout`], since on a large table it may take
/// seconds, yet bounded on a network path that drops packets.
const BULK_TIMEOUT: Duration = Duration::from_secs(60);

/// The most entries one `take` leases (a larger request gets this many).
const MAX_TAKE: usize = 512;

/// The limit written into a take of at most `max` entries: `max` up to 16, else the power of
/// two at or below it (at most [`MAX_TAKE`]), so that the takes' prepared statements stay few
/// (at most 21 per connection, whatever the workers' concurrency) in sqlx's statement cache,
/// each used often enough for its generic plan. A take may lease fewer than asked.
fn take_limit(max: usize) -> usize {
    let max = max.min(MAX_TAKE);
    if max <= 16 { max } else { 1 << max.ilog2() }
}

/// A statement of the backend, its arguments bound.
pub(super) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Where the backend's statements run: its pool, each statement on its own, or, behind a
/// transaction pooler ([`PgOptions::pooler`]), each in a transaction of its own and as
/// PostgreSQL's unnamed statement. A pooler hands a client's next transaction to any server
/// connection: a named prepared statement made in one is missing (or another's) in the next,
/// and outside a transaction even the unnamed one could be parsed on one server connection
/// and bound on another (sqlx parses and binds in two round trips).
///
/// Every operation is bounded ([`PgOptions::operation_timeout`]): the wait for a connection
/// and its statements together. A connection whose statement did not answer in time is
/// closed, not given back: on a network path that drops packets it would stay stuck (its
/// pool slot with it) until TCP gave up, a quarter of an hour later.
#[derive(Clone)]
pub(super) struct Db {
    pool: PgPool,
    pooler: bool,
    timeout: Duration,
}

impl Db {
    pub(super) fn new(pool: PgPool, pooler: bool, timeout: Duration) -> Self {
        Self {
            pool,
            pooler,
            timeout,
        }
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether statements may be kept prepared on the connection (false behind a pooler).
    pub(super) fn persistent(&self) -> bool {
        !self.pooler
    }

    /// The bound of one operation ([`PgOptions::operation_timeout`]).
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same pool for an operator's bulk action (a listing, `replay_dead`, a purge), which
    /// may take long on a large table: bounded by [`BULK_TIMEOUT`] (or the operation timeout,
    /// if longer).
    pub(super) fn bulk(&self) -> Self {
        Self {
            timeout: self.timeout.max(BULK_TIMEOUT),
            ..self.clone()
        }
    }

    /// The error of an operation past its bound: an I/O timeout, as the driver reports one.
    pub(super) fn timed_out(&self) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no answer from PostgreSQL within {} ms (unreachable, or no connection of the \
                 pool free)",
                self.timeout.as_millis()
            ),
        ))
    }

    /// A transaction on the pool (the wait for its connection and its `BEGIN` bounded).
    pub(super) async fn begin(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        tokio::time::timeout(self.timeout, self.pool.begin())
            .await
            .map_err(|_| self.timed_out())?
    }

    /// Runs `work` on a connection of the pool, the wait for the connection included, within
    /// the bound; past it the connection is closed (its `Terminate` and FIN wait in the
    /// kernel for the path to come back), so that its pool slot is free at once.
    pub(super) async fn bounded<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut conn = tokio::time::timeout_at(deadline, self.pool.acquire())
            .await
            .map_err(|_| self.timed_out())??;
        let done = tokio::time::timeout_at(deadline, work(&mut conn)).await;
        done.unwrap_or_else(|_| {
            conn.close_on_drop();
            Err(self.timed_out())
        })
    }

    pub(super) async fn fetch_all(
        &self,
        query: PgQuery<'_>,
    ) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
        let pooler = self.pooler;
        self.bounded(async move |conn| {
            if !pooler {
                return query.fetch_all(&mut *conn).await;
            }
            let mut tx = conn.begin().await?;
            let rows = query.persistent(false).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(rows)
        })
        .await
    }

    /// The rows of `query` run in a transaction of its own, committed only once they have
    /// arrived: a statement whose answer is lost changes nothing (its transaction ends with
    /// the connection), whenever it reaches the server.
    pub(super) async fn fetch_all_committed(
        &self,
        query: PgQuery<'_>,
    ) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
        let persistent = self.persistent();
        self.bounded(async move |conn| {
            let mut tx = conn.begin().await?;
            let rows = query.persistent(persistent).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(rows)
        })
        .await
    }

    pub(super) async fn fetch_optional(
        &self,
        query: PgQuery<'_>,
    ) -> Result<Option<sqlx::postgres::PgRow>, sqlx::Error> {
        let pooler = self.pooler;
        self.bounded(async move |conn| {
            if !pooler {
                return query.fetch_optional(&mut *conn).await;
            }
            let mut tx = conn.begin().await?;
            let row = query.persistent(false).fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            Ok(row)
        })
        .await
    }

    pub(super) async fn fetch_one(
        &self,
        query: PgQuery<'_>,
    ) -> Result<sqlx::postgres::PgRow, sqlx::Error> {
        self.fetch_optional(query)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    pub(super) async fn execute(
        &self,
        query: PgQuery<'_>,
    ) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
        let pooler = self.pooler;
        self.bounded(async move |conn| {
            if !pooler {
                return query.execute(&mut *conn).await;
            }
            let mut tx = conn.begin().await?;
            let done = query.persistent(false).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done)
        })
        .await
    }
}

/// The PostgreSQL backend; see the [module docs](self). Cheap to clone (clones share one
/// backend: its pool, listener and batches).
#[derive(Clone)]
pub struct PgBackend(Arc<Shared>);

/// What clones of a [`PgBackend`] share.
struct Shared {
    db: Db,
    sql: Sql,
    schema: Arc<str>,
    notify: Arc<Notify>,
    max_unfinished: u64,
    /// Pending and processing entries, kept by this process's operations and recounted from
    /// the database at most every second when the bound is near (other replicas change it).
    unfinished: AtomicU64,
    recounted: Mutex<Instant>,
    /// The wake-up listener's task; none behind a pooler without [`PgOptions::listen_url`]
    /// (workers then poll every [`POLL`]).
    listener: Option<tokio::task::JoinHandle<()>>,
    /// Accepts tell the waker task, which sends one `NOTIFY` for every accept made while the
    /// previous one was in flight.
    wake: Arc<Notify>,
    waker: tokio::task::JoinHandle<()>,
    /// The batch tasks of accepts and completions (they end when these are dropped).
    accepts: tokio::sync::mpsc::UnboundedSender<crate::batch::Queued<batch::AcceptJob>>,
    completions: tokio::sync::mpsc::UnboundedSender<crate::batch::Queued<batch::CompleteJob>>,
}

impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend")
            .field("schema", &self.0.schema)
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
        self.waker.abort();
    }
}

/// An error of PostgreSQL as the inbox reports it: a full disk (`53100`) or out of memory
/// (`53200`) is [`ErrorKind::Full`](crate::ErrorKind::Full), anything else [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable).
pub(crate) fn unavailable(err: sqlx::Error) -> InboxError {
    if let sqlx::Error::Database(db) = &err
        && matches!(db.code().as_deref(), Some("53100" | "53200"))
    {
        return InboxError::full(format!("PostgreSQL: {}", db.message())).with_source(err);
    }
    InboxError::unavailable(format!("PostgreSQL: {}", short(&err))).with_source(err)
}

impl Shared {
    fn query(&self, sql: &Arc<str>) -> PgQuery<'static> {
        sqlx::query(AssertSqlSafe(Arc::clone(sql)))
    }

    /// Whether the bound leaves room: the local count, recounted from the database (at most
    /// once a second) when it says no.
    async fn has_room(&self) -> Result<bool, InboxError> {
        if self.unfinished.load(Ordering::Relaxed) < self.max_unfinished {
            return Ok(true);
        }
        let mut recounted = self.recounted.lock().await;
        if recounted.elapsed() >= Duration::from_secs(1) {
            let n: i64 = self
                .db
                .fetch_one(self.query(&self.sql.unfinished))
                .await
                .and_then(|row| row.try_get(0))
                .map_err(unavailable)?;
            self.unfinished
                .store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
            *recounted = Instant::now();
        }
        Ok(self.unfinished.load(Ordering::Relaxed) < self.max_unfinished)
    }

    fn finished(&self) {
        let _ = self
            .unfinished
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    async fn leased_update(&self, query: PgQuery<'static>) -> Result<bool, InboxError> {
        self.db
            .execute(query)
            .await
            .map(|done| done.rows_affected() == 1)
            .map_err(unavailable)
    }
}

/// An error's message on one line, without any URL. A server's error is its message alone:
/// sqlx's `Display` adds "error returned from database:" and the line of PostgreSQL's own
/// source that raised it ("database \"x\" does not exist at line 948").
fn short(err: &sqlx::Error) -> String {
    let text = match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn to_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl PgBackend {
    /// One accept (its whole time is recorded by [`Store::accept`]).
    async fn accept_now(&self, delivery: &Verified) -> Result<Accepted, InboxError> {
        if !self.0.has_room().await? {
            // Full: a delivery already held is still a duplicate, a new one is refused.
            let held = self
                .0
                .db
                .fetch_optional(self.0.query(&self.0.sql.held).bind(delivery.id()))
                .await
                .map_err(unavailable)?;
            return match held {
                Some(_) => Ok(Accepted::Duplicate),
                None => Err(InboxError::full(format!(
                    "{} unfinished entries (the most it holds)",
                    self.0.max_unfinished
                ))),
            };
        }
        let created_at = delivery
            .created_at()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        // Concurrent accepts go together in one statement (one commit, one WAL flush).
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = batch::AcceptJob {
            id: delivery.id().to_owned(),
            event_type: delivery.event_type().to_owned(),
            body: delivery.bytes().clone(),
            created_at,
            reply,
        };
        self.0
            .accepts
            .send(crate::batch::Queued::new(job))
            .map_err(|_| batch::shutting_down())?;
        let stored = answer.await.map_err(|_| batch::shutting_down())??;
        if !stored {
            return Ok(Accepted::Duplicate);
        }
        self.0.unfinished.fetch_add(1, Ordering::Relaxed);
        self.0.notify.notify_one();
        self.0.wake.notify_one();
        Ok(Accepted::Stored)
    }
}

impl Store for PgBackend {
    fn accept<'a>(&'a self, delivery: &'a Verified) -> BackendFuture<'a, Accepted> {
        // The whole accept within the bound: its wait for a batch slot too, which a batch stuck
        // on an unreachable server holds until its own bound.
        Box::pin(async move {
            let started = std::time::Instant::now();
            let accepted = tokio::time::timeout(self.0.db.timeout(), self.accept_now(delivery))
                .await
                .unwrap_or_else(|_| Err(unavailable(self.0.db.timed_out())));
            let took = started.elapsed().as_secs_f64();
            airmy_verify::observe::metrics::inbox_accept_stage(
                "postgres",
                airmy_verify::observe::metrics::AcceptStage::Total,
                took,
            );
            accepted
        })
    }
}

impl Queue for PgBackend {
    fn take(&self, max: usize, lease: Duration) -> BackendFuture<'_, Vec<Leased>> {
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let token = format!("{}-", airmy_verify::token::random_hex(12));
            let take: Arc<str> = Arc::from(format!(
                "{}{}{}",
                self.0.sql.take_head,
                take_limit(max),
                self.0.sql.take_tail
            ));
            // In a transaction committed once the rows are here: a take whose answer never
            // came (the path dropped it, the operation timed out) leases nothing, even when
            // the statement reaches the server later (TCP retransmits it after a partition
            // heals) — otherwise its entries would wait a whole lease for nobody.
            let rows = self
                .0
                .db
                .fetch_all_committed(self.0.query(&take).bind(duration_ms(lease)).bind(token))
                .await
                .map_err(unavailable)?;
            let mut leased = rows
                .iter()
                // An entry a pause holds came back held (paused), not leased.
                .filter(|row| row.try_get::<bool, _>(6).unwrap_or(false))
                .map(|row| {
                    Ok(Leased {
                        id: row.try_get(0)?,
                        event_type: row.try_get(1)?,
                        body: bytes::Bytes::from(row.try_get::<Vec<u8>, _>(2)?),
                        received_at: row.try_get(3)?,
                        attempt: to_u32(row.try_get(4)?),
                        token: row.try_get(5)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(unavailable)?;
            leased.sort_by_key(|entry| entry.received_at);
            Ok(leased)
        })
    }

    fn next_due(&self) -> BackendFuture<'_, Option<OffsetDateTime>> {
        Box::pin(async move {
            self.0
                .db
                .fetch_one(self.0.query(&self.0.sql.next_due))
                .await
                .and_then(|row| row.try_get::<Option<OffsetDateTime>, _>(0))
                .map_err(unavailable)
        })
    }

    fn extend<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let extended = self
                .0
                .leased_update(
                    self.0
                        .query(&self.0.sql.extend)
                        .bind(id.to_owned())
                        .bind(token.to_owned())
                        .bind(duration_ms(lease)),
                )
                .await?;
            if extended {
                return Ok(true);
            }
            // Not extended: either the lease is gone, or the row is locked by this attempt's
            // transaction (which holds the entry as long as it is open).
            self.0
                .db
                .fetch_optional(self.0.query(&self.0.sql.held_by).bind(id).bind(token))
                .await
                .map(|row| row.is_some())
                .map_err(unavailable)
        })
    }

    fn complete<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            // Concurrent completions go together in one statement, as accepts do.
            let (reply, answer) = tokio::sync::oneshot::channel();
            let job = batch::CompleteJob {
                id: id.to_owned(),
                token: token.to_owned(),
                reply,
            };
            self.0
                .completions
                .send(crate::batch::Queued::new(job))
                .map_err(|_| batch::shutting_down())?;
            let done = answer.await.map_err(|_| batch::shutting_down())??;
            if done {
                self.0.finished();
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
        Box::pin(
            self.0.leased_update(
                self.0
                    .query(&self.0.sql.retry)
                    .bind(id.to_owned())
                    .bind(token.to_owned())
                    .bind(at)
                    .bind(error.to_owned()),
            ),
        )
    }

    fn bury<'a>(&'a self, id: &'a str, token: &'a str, error: &'a str) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let buried = self
                .0
                .leased_update(
                    self.0
                        .query(&self.0.sql.bury)
                        .bind(id.to_owned())
                        .bind(token.to_owned())
                        .bind(error.to_owned()),
                )
                .await?;
            if buried {
                self.0.finished();
            }
            Ok(buried)
        })
    }

    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let released = self
                .0
                .db
                .fetch_optional(self.0.query(&self.0.sql.release).bind(id).bind(token))
                .await
                .map_err(unavailable)?
                .is_some();
            if released {
                self.0.notify.notify_one();
            }
            Ok(released)
        })
    }

    fn wait(&self, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        // Without a listener, what other replicas accept is found by polling.
        let timeout = match self.0.listener {
            Some(_) => timeout,
            None => timeout.min(POLL),
        };
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, self.0.notify.notified()).await;
        })
    }
}

impl Admin for PgBackend {
    fn stats(&self) -> BackendFuture<'_, Stats> {
        Box::pin(async move {
            let row = self
                .0
                .db
                .fetch_one(self.0.query(&self.0.sql.stats))
                .await
                .map_err(unavailable)?;
            let count = |i: usize| -> Result<u64, InboxError> {
                row.try_get::<i64, _>(i)
                    .map(|n| u64::try_from(n).unwrap_or(0))
                    .map_err(unavailable)
            };
            let oldest: Option<f64> = row.try_get(5).map_err(unavailable)?;
            Ok(Stats {
                pending: count(0)?,
                scheduled: count(1)?,
                processing: count(2)?,
                dead: count(3)?,
                done: count(4)?,
                paused: count(6)?,
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                oldest_pending_age_secs: oldest.map(|secs| secs.max(0.0) as u64),
            })
        })
    }

    fn list<'a>(&'a self, query: &'a ListQuery) -> BackendFuture<'a, Page> {
        Box::pin(async move { list::list(&self.0.db.bulk(), &self.0.schema, query).await })
    }

    fn entry<'a>(&'a self, id: &'a str) -> BackendFuture<'a, Option<Entry>> {
        Box::pin(list::entry(&self.0.db, &self.0.schema, id))
    }

    fn replay<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let replayed = self
                .0
                .db
                .fetch_optional(self.0.query(&self.0.sql.replay).bind(id))
                .await
                .map_err(unavailable)?;
            if replayed.is_some() {
                self.0.unfinished.fetch_add(1, Ordering::Relaxed);
                self.0.notify.notify_one();
                return Ok(());
            }
            // A pending entry (a retry scheduled later) becomes due now; one being processed
            // is left alone.
            let due = self
                .0
                .db
                .fetch_optional(self.0.query(&self.0.sql.replay_pending).bind(id))
                .await
                .map_err(unavailable)?;
            if due.is_some() {
                self.0.notify.notify_one();
                return Ok(());
            }
            let state: Option<String> = self
                .0
                .db
                .fetch_optional(self.0.query(&self.0.sql.state_of).bind(id))
                .await
                .and_then(|row| row.map(|r| r.try_get(0)).transpose())
                .map_err(unavailable)?;
            match state {
                Some(_) => Err(InboxError::busy(id.to_owned())),
                None => Err(InboxError::not_found(id.to_owned())),
            }
        })
    }

    fn replay_dead(&self, since: Option<OffsetDateTime>) -> BackendFuture<'_, Vec<String>> {
        Box::pin(async move {
            let rows = self
                .0
                .db
                .bulk()
                .fetch_all(self.0.query(&self.0.sql.replay_dead).bind(since))
                .await
                .map_err(unavailable)?;
            let ids = rows
                .iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            if !ids.is_empty() {
                self.0
                    .unfinished
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                self.0.notify.notify_one();
            }
            Ok(ids)
        })
    }

    fn purge_done(&self, before: OffsetDateTime) -> BackendFuture<'_, u64> {
        Box::pin(async move {
            self.0
                .db
                .bulk()
                .execute(self.0.query(&self.0.sql.purge).bind(before))
                .await
                .map(|done| done.rows_affected())
                .map_err(unavailable)
        })
    }

    fn pause<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let event_type = match scope {
                PauseScope::All => None,
                PauseScope::EventType(t) => Some(no_nul(t)),
            };
            let held: i64 = self
                .0
                .db
                .fetch_one(
                    self.0
                        .query(&self.0.sql.pause)
                        .bind(no_nul(&scope.key()))
                        .bind(event_type),
                )
                .await
                .and_then(|row| row.try_get(0))
                .map_err(unavailable)?;
            Ok(u64::try_from(held).unwrap_or(0))
        })
    }

    fn resume<'a>(&'a self, scope: &'a PauseScope) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let released: i64 = self
                .0
                .db
                .fetch_one(self.0.query(&self.0.sql.resume).bind(no_nul(&scope.key())))
                .await
                .and_then(|row| row.try_get(0))
                .map_err(unavailable)?;
            if released > 0 {
                // As after an accept: this process's workers at once, the others' by NOTIFY.
                self.0.notify.notify_one();
                self.0.wake.notify_one();
            }
            Ok(u64::try_from(released).unwrap_or(0))
        })
    }

    fn paused(&self) -> BackendFuture<'_, Vec<Pause>> {
        Box::pin(async move {
            let rows = self
                .0
                .db
                .fetch_all(self.0.query(&self.0.sql.paused))
                .await
                .map_err(unavailable)?;
            let mut pauses = Vec::with_capacity(rows.len());
            for row in &rows {
                let key: String = row.try_get(0).map_err(unavailable)?;
                let since: OffsetDateTime = row.try_get(1).map_err(unavailable)?;
                if let Some(scope) = PauseScope::from_key(&key) {
                    pauses.push(Pause::new(scope, since));
                }
            }
            Ok(pauses)
        })
    }

    fn record_action<'a>(&'a self, action: &'a Action) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let ids: Vec<String> = action.ids.iter().map(|id| no_nul(id)).collect();
            self.0
                .db
                .execute(
                    self.0
                        .query(&self.0.sql.record_action)
                        .bind(action.at)
                        .bind(no_nul(&action.actor))
                        .bind(action.kind.as_str())
                        .bind(no_nul(&action.subject))
                        .bind(i64::try_from(action.count).unwrap_or(i64::MAX))
                        .bind(ids)
                        .bind(RECENT_ACTIONS as i64),
                )
                .await
                .map(drop)
                .map_err(unavailable)
        })
    }

    fn recent_actions(&self, limit: usize) -> BackendFuture<'_, Vec<Action>> {
        Box::pin(async move {
            let limit = limit.min(RECENT_ACTIONS) as i64;
            let rows = self
                .0
                .db
                .fetch_all(self.0.query(&self.0.sql.recent_actions).bind(limit))
                .await
                .map_err(unavailable)?;
            let mut actions = Vec::with_capacity(rows.len());
            for row in &rows {
                let read = || -> Result<_, sqlx::Error> {
                    Ok((
                        row.try_get::<OffsetDateTime, _>(0)?,
                        row.try_get::<String, _>(1)?,
                        row.try_get::<String, _>(2)?,
                        row.try_get::<String, _>(3)?,
                        row.try_get::<i64, _>(4)?,
                        row.try_get::<Vec<String>, _>(5)?,
                    ))
                };
                let (at, actor, kind, subject, count, ids) = read().map_err(unavailable)?;
                // An action a newer version wrote, of a kind this one does not know: left out.
                let Ok(kind) = kind.parse() else { continue };
                actions.push(
                    Action::new(actor, kind, subject)
                        .ids(ids)
                        .count(u64::try_from(count).unwrap_or(0))
                        .at(at),
                );
            }
            Ok(actions)
        })
    }
}

/// `text` as PostgreSQL's `text` can hold it: a NUL (which it refuses) shown as U+FFFD.
fn no_nul(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::take_limit;

    #[test]
    fn take_limits_are_few_and_never_above_the_request() {
        assert_eq!(take_limit(1), 1);
        assert_eq!(take_limit(16), 16);
        assert_eq!(take_limit(17), 16);
        assert_eq!(take_limit(64), 64);
        assert_eq!(take_limit(100), 64);
        assert_eq!(take_limit(100_000), 512);
        let distinct: std::collections::BTreeSet<_> = (1..=10_000).map(take_limit).collect();
        assert_eq!(distinct.len(), 21);
        assert!((1..=10_000).all(|n| take_limit(n) <= n));
    }
}
