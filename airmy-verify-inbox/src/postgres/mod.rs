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
use airmy_verify::text::redact_url;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool, Row};
use time::OffsetDateTime;
use tokio::sync::{Mutex, Notify};

use crate::backend::{
    Accepted, Admin, BackendFuture, Entry, InboxError, Leased, ListQuery, Page, Queue, Stats, Store,
};
use crate::clock::duration_ms;
use crate::worker::{Finish, Worker};
use crate::{Handlers, OpenError, OpenErrorKind};

mod batch;
mod list;
mod schema;
pub(crate) mod tx;

pub use tx::{InboxTransaction, PgContext};

pub use schema::SCHEMA_VERSION;

/// How to connect a [`PgBackend`]: consuming setters on the defaults.
#[derive(Clone)]
pub struct PgOptions {
    schema: String,
    max_unfinished: u64,
    max_connections: u32,
    acquire_timeout: Duration,
    listen_url: Option<String>,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("schema", &self.schema)
            .field("max_unfinished", &self.max_unfinished)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("listen_url", &self.listen_url.as_deref().map(redact_url))
            .finish()
    }
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: "airmy_inbox".to_owned(),
            max_unfinished: 1_000_000,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            listen_url: None,
        }
    }
}

impl PgOptions {
    /// The schema holding the inbox's tables, created if missing. Defaults to `airmy_inbox`.
    /// Two services in one database need two schemas. Lowercase ASCII letters, digits and `_`
    /// only (checked at connect).
    #[must_use]
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = name.into();
        self
    }

    /// The most pending and processing entries the inbox holds; accepts past it fail with
    /// [`ErrorKind::Full`](crate::ErrorKind::Full). Defaults to 1,000,000.
    #[must_use]
    pub fn max_unfinished(mut self, entries: u64) -> Self {
        self.max_unfinished = entries;
        self
    }

    /// The most connections this backend opens (besides the one that listens for wake-ups).
    /// Defaults to 16.
    #[must_use]
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// How long an operation waits for a connection before it fails with
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) (an accept then answers 503, well within AIRMY's 10 s).
    /// Defaults to 3 s.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Where the backend's `LISTEN` connection (wake-ups of idle workers) goes, when not a
    /// connection of its pool: another URL of the same database. Unset by default: the
    /// listener is one of the pool's connections, held for the backend's life.
    #[must_use]
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.listen_url = Some(url.into());
        self
    }
}

/// Why [`PgBackend::connect`] or [`PgBackend::with_pool`] failed: an [`OpenError`] (the
/// backend's name for it), whose message never shows the URL's password.
pub type PgError = OpenError;

/// The statements, with the schema's name in them (checked to be a plain identifier).
struct Sql {
    accept_batch: Arc<str>,
    complete_batch: Arc<str>,
    wake: Arc<str>,
    held: Arc<str>,
    take_head: Arc<str>,
    take_tail: Arc<str>,
    next_due: Arc<str>,
    extend: Arc<str>,
    complete: Arc<str>,
    retry: Arc<str>,
    bury: Arc<str>,
    release: Arc<str>,
    stats: Arc<str>,
    unfinished: Arc<str>,
    replay: Arc<str>,
    replay_pending: Arc<str>,
    state_of: Arc<str>,
    held_by: Arc<str>,
    replay_dead: Arc<str>,
    purge: Arc<str>,
}

impl Sql {
    fn new(s: &str, channel: &str) -> Self {
        let held = "WHERE id = $1 AND lease_token = $2 AND state = 'processing'";
        let sql = |text: String| -> Arc<str> { Arc::from(text) };
        Self {
            // No NOTIFY in the accept itself: PostgreSQL serializes the commits of notifying
            // transactions (one global lock, held through the WAL flush), which would undo
            // group commit; the wake-up goes out right after, from the waker task.
            accept_batch: sql(format!(
                "INSERT INTO {s}.entries (id, event_type, body, created_at, state, due_at)
                 SELECT j.id, j.event_type, j.body, j.created_at, 'pending', clock_timestamp()
                 FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[])
                     AS j(id, event_type, body, created_at)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id"
            )),
            complete_batch: sql(format!(
                "UPDATE {s}.entries e SET state = 'done', finished_at = clock_timestamp(),
                     lease_token = NULL, last_error = NULL
                 FROM (SELECT x.id, j.token FROM {s}.entries x
                       JOIN unnest($1::text[], $2::text[]) AS j(id, token)
                         ON x.id = j.id AND x.lease_token = j.token
                       WHERE x.state = 'processing'
                       FOR UPDATE OF x SKIP LOCKED) AS held
                 WHERE e.id = held.id
                 RETURNING e.id, held.token"
            )),
            wake: sql(format!("SELECT pg_notify('{channel}', '')")),
            held: sql(format!("SELECT 1 FROM {s}.entries WHERE id = $1")),
            // The limit is written into the statement (`take_head`, the number, `take_tail`), one
            // prepared statement per limit: with `LIMIT $1` PostgreSQL cannot cost a generic
            // plan (it assumes a tenth of the table) and plans the take anew at every call.
            // `statement_timestamp()`, not the volatile `clock_timestamp()`, bounds the index
            // range, so the scan starts and stops at the due entries.
            take_head: sql(format!(
                "WITH due AS (
                     SELECT id FROM {s}.entries
                     WHERE state IN ('pending', 'processing') AND due_at <= statement_timestamp()
                     ORDER BY due_at
                     LIMIT "
            )),
            take_tail: sql(format!(
                "
                     FOR UPDATE SKIP LOCKED)
                 UPDATE {s}.entries e
                 SET state = 'processing', attempts = e.attempts + 1,
                     due_at = clock_timestamp() + $1 * interval '1 millisecond',
                     lease_token = $2 || e.seq::text
                 FROM due WHERE e.id = due.id
                 RETURNING e.id, e.event_type, e.body, e.received_at, e.attempts, e.lease_token"
            )),
            next_due: sql(format!(
                "SELECT min(due_at) FROM {s}.entries WHERE state IN ('pending', 'processing')"
            )),
            // A row locked by the attempt's own transaction (a handler writing in it) is not
            // waited for: the lock already keeps every other worker off the entry.
            extend: sql(format!(
                "UPDATE {s}.entries SET due_at = clock_timestamp() + $3 * interval '1 millisecond'
                 {held}
                 AND id IN (SELECT id FROM {s}.entries WHERE id = $1 FOR UPDATE SKIP LOCKED)"
            )),
            complete: sql(format!(
                "UPDATE {s}.entries SET state = 'done', finished_at = clock_timestamp(),
                     lease_token = NULL, last_error = NULL
                 {held}"
            )),
            retry: sql(format!(
                "UPDATE {s}.entries SET state = 'pending', due_at = $3, last_error = $4,
                     lease_token = NULL
                 {held}"
            )),
            bury: sql(format!(
                "UPDATE {s}.entries SET state = 'dead', finished_at = clock_timestamp(),
                     last_error = $3, lease_token = NULL
                 {held}"
            )),
            release: sql(format!(
                "WITH released AS (
                     UPDATE {s}.entries SET state = 'pending', due_at = clock_timestamp(),
                         attempts = greatest(attempts - 1, 0), lease_token = NULL
                     {held}
                     RETURNING 1)
                 SELECT pg_notify('{channel}', '') FROM released"
            )),
            // One count per state, each from the partial index of its rows (an index-only
            // scan where the visibility map allows), never a scan of the table and its bodies:
            // a million entries answer in milliseconds, not seconds.
            stats: sql(format!(
                "SELECT
                     (SELECT count(*) FROM {s}.entries
                      WHERE state = 'pending' AND due_at <= statement_timestamp()),
                     (SELECT count(*) FROM {s}.entries
                      WHERE state = 'pending' AND due_at > statement_timestamp()),
                     (SELECT count(*) FROM {s}.entries WHERE state = 'processing'),
                     (SELECT count(*) FROM {s}.entries WHERE state = 'dead'),
                     (SELECT count(*) FROM {s}.entries WHERE state = 'done'),
                     extract(epoch FROM statement_timestamp() - (
                         SELECT min(due_at) FROM {s}.entries
                         WHERE state = 'pending' AND due_at <= statement_timestamp()))::float8"
            )),
            unfinished: sql(format!(
                "SELECT count(*) FROM {s}.entries WHERE state IN ('pending', 'processing')"
            )),
            replay: sql(format!(
                "WITH replayed AS (
                     UPDATE {s}.entries SET state = 'pending', due_at = clock_timestamp(),
                         attempts = 0, last_error = NULL, finished_at = NULL
                     WHERE id = $1 AND state IN ('dead', 'done')
                     RETURNING 1)
                 SELECT pg_notify('{channel}', '') FROM replayed"
            )),
            replay_pending: sql(format!(
                "WITH due AS (
                     UPDATE {s}.entries SET due_at = least(due_at, clock_timestamp())
                     WHERE id = $1 AND state = 'pending'
                     RETURNING 1)
                 SELECT pg_notify('{channel}', '') FROM due"
            )),
            state_of: sql(format!("SELECT state FROM {s}.entries WHERE id = $1")),
            held_by: sql(format!("SELECT 1 FROM {s}.entries {held}")),
            replay_dead: sql(format!(
                "WITH replayed AS (
                     UPDATE {s}.entries SET state = 'pending', due_at = clock_timestamp(),
                         attempts = 0, last_error = NULL, finished_at = NULL
                     WHERE state = 'dead' AND ($1::timestamptz IS NULL OR finished_at >= $1)
                     RETURNING id, finished_at)
                 SELECT id, pg_notify('{channel}', '') FROM replayed ORDER BY finished_at"
            )),
            purge: sql(format!(
                "DELETE FROM {s}.entries WHERE state = 'done' AND finished_at < $1"
            )),
        }
    }
}

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

/// The PostgreSQL backend; see the [module docs](self). Cheap to clone (clones share one
/// backend: its pool, listener and batches).
#[derive(Clone)]
pub struct PgBackend(Arc<Shared>);

/// What clones of a [`PgBackend`] share.
struct Shared {
    pool: PgPool,
    sql: Sql,
    schema: Arc<str>,
    notify: Arc<Notify>,
    max_unfinished: u64,
    /// Pending and processing entries, kept by this process's operations and recounted from
    /// the database at most every second when the bound is near (other replicas change it).
    unfinished: AtomicU64,
    recounted: Mutex<Instant>,
    listener: tokio::task::JoinHandle<()>,
    /// Accepts tell the waker task, which sends one `NOTIFY` for every accept made while the
    /// previous one was in flight.
    wake: Arc<Notify>,
    waker: tokio::task::JoinHandle<()>,
    /// The batch tasks of accepts and completions (they end when these are dropped).
    accepts: tokio::sync::mpsc::UnboundedSender<batch::AcceptJob>,
    completions: tokio::sync::mpsc::UnboundedSender<batch::CompleteJob>,
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
        self.listener.abort();
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

impl PgBackend {
    /// Connects to PostgreSQL at `url` (`postgres://user[:password]@host[:port]/database`, or
    /// `postgresql://`; `?sslmode=require` and stricter with the `postgres-tls` feature) with a
    /// pool of its own ([`PgOptions::max_connections`], [`PgOptions::acquire_timeout`]),
    /// creates or migrates the schema, and starts listening for wake-ups. An application that
    /// has a pool already: [`with_pool`](Self::with_pool).
    ///
    /// # Errors
    ///
    /// A [`PgError`] (never showing the password) of kind [`Invalid`](OpenErrorKind::Invalid)
    /// (not a URL, a schema name that is not a plain identifier, a database that does not
    /// exist), [`Refused`](OpenErrorKind::Refused), [`Authentication`](OpenErrorKind::Authentication),
    /// [`Tls`](OpenErrorKind::Tls), [`Timeout`](OpenErrorKind::Timeout) or
    /// [`Schema`](OpenErrorKind::Schema) (a newer version, or another program's).
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, PgError> {
        let shown = redact_url(url);
        let what = format!("cannot use {shown}");
        let connect: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            OpenError::new(
                OpenErrorKind::Invalid,
                format!("not a PostgreSQL URL ({})", short(&e)),
            )
            .with_source(e)
            .context(&what)
        })?;
        let pool = match PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await
        {
            Ok(pool) => pool,
            Err(err) => {
                return Err(diagnose(&connect, err, options.acquire_timeout)
                    .await
                    .context(&what));
            }
        };
        Self::start(pool, options)
            .await
            .map_err(|e| e.context(&what))
    }

    /// The inbox on the application's own pool: one pool for the application's queries, its
    /// handlers' effects and the inbox (sqlx's pools are cheap to clone and meant to be
    /// shared). Creates or migrates the schema and starts listening for wake-ups on a
    /// connection of the pool, held for the backend's life (or of
    /// [`PgOptions::listen_url`], when given). [`PgOptions::max_connections`] and
    /// [`PgOptions::acquire_timeout`] are the pool's own here, not these options'. Size the
    /// pool for the inbox too: its listener holds one connection, and each running handler's
    /// transaction one. At shutdown, drop the backend (every clone, and the
    /// [`Inbox`](crate::Inbox) holding it) before awaiting the pool's `close()`, which waits
    /// for the listener's connection.
    ///
    /// ```no_run
    /// use airmy_verify_inbox::{Inbox, PgBackend, PgOptions};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::PgPool::connect("postgres://app@db.internal/billing").await?;
    /// let backend = PgBackend::with_pool(pool.clone(), PgOptions::default()).await?;
    /// let inbox = Inbox::new(backend.clone());
    /// // `pool` goes on serving the application's own queries.
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), once the pool is made.
    pub async fn with_pool(pool: PgPool, options: PgOptions) -> Result<Self, PgError> {
        Self::start(pool, options)
            .await
            .map_err(|e| e.context("cannot use the application's PostgreSQL pool"))
    }

    async fn start(pool: PgPool, options: PgOptions) -> Result<Self, PgError> {
        if !schema::valid_name(&options.schema) {
            return Err(OpenError::new(
                OpenErrorKind::Invalid,
                format!(
                    "the schema name {:?} must be lowercase letters, digits and _ (not starting \
                     with a digit or pg_)",
                    options.schema
                ),
            ));
        }
        {
            let mut conn = pool.acquire().await.map_err(open_error)?;
            schema::migrate(&mut conn, &options.schema).await?;
        }
        let channel = format!("{}_wake", options.schema);
        let sql = Sql::new(&options.schema, &channel);
        let unfinished: i64 = sqlx::query(AssertSqlSafe(Arc::clone(&sql.unfinished)))
            .fetch_one(&pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(open_error)?;
        let notify = Arc::new(Notify::new());
        let mut listener = match &options.listen_url {
            Some(url) => listener_on(url, options.acquire_timeout)
                .await
                .map_err(|e| e.context(&format!("cannot listen on {}", redact_url(url))))?,
            None => PgListener::connect_with(&pool).await.map_err(open_error)?,
        };
        listener.listen(&channel).await.map_err(open_error)?;
        let listener = tokio::spawn(listen(listener, Arc::clone(&notify)));
        let wake = Arc::new(Notify::new());
        let waker = tokio::spawn(waker(
            pool.clone(),
            Arc::clone(&sql.wake),
            Arc::clone(&wake),
        ));
        let (accepts, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch::accepts(
            pool.clone(),
            Arc::clone(&sql.accept_batch),
            queue,
        ));
        let (completions, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch::completions(
            pool.clone(),
            Arc::clone(&sql.complete_batch),
            Arc::clone(&sql.complete),
            queue,
        ));
        Ok(Self(Arc::new(Shared {
            accepts,
            completions,
            pool,
            sql,
            schema: Arc::from(options.schema),
            notify,
            max_unfinished: options.max_unfinished,
            unfinished: AtomicU64::new(u64::try_from(unfinished).unwrap_or(0)),
            recounted: Mutex::new(Instant::now()),
            listener,
            wake,
            waker,
        })))
    }

    /// The connection pool: the application's own (from [`with_pool`](Self::with_pool)) or the
    /// one [`connect`](Self::connect) made.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    /// The schema holding the inbox's tables.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.0.schema
    }

    /// A worker running `handlers` that take a [`PgContext`]: each attempt may write in its
    /// entry's transaction ([`PgContext::transaction`]), committed together with the entry's
    /// completion. The worker's settings are [`Worker`]'s.
    ///
    /// ```no_run
    /// use airmy_verify::{Envelope, event::RunCompleted};
    /// use airmy_verify_inbox::{HandlerError, Handlers, Inbox, PgBackend, PgContext, PgOptions};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let backend = PgBackend::with_pool(pool, PgOptions::default()).await?;
    /// let inbox = Inbox::new(backend.clone()); // for the webhook route
    /// let handlers = Handlers::default().on(|run: Envelope<RunCompleted>, ctx: PgContext| async move {
    ///     let mut tx = ctx.transaction().await?;
    ///     sqlx::query("UPDATE runs SET finished = true WHERE id = $1")
    ///         .bind(&run.data.id)
    ///         .execute(&mut *tx)
    ///         .await?;
    ///     Ok::<(), HandlerError>(())
    /// });
    /// tokio::spawn(backend.worker(handlers).run(CancellationToken::new()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A handler that asks for the transaction cannot be run on another backend: there its
    /// context is a [`Context`](crate::Context), which has none.
    ///
    /// ```compile_fail,E0599
    /// use airmy_verify::{Envelope, event::RunCompleted};
    /// use airmy_verify_inbox::{Context, HandlerError, Handlers};
    ///
    /// let handlers = Handlers::new().on(|run: Envelope<RunCompleted>, ctx: Context| async move {
    ///     let tx = ctx.transaction().await?; // no method `transaction` on `Context`
    ///     Ok::<(), HandlerError>(())
    /// });
    /// ```
    ///
    /// Nor can PostgreSQL handlers be given to a worker of any other inbox:
    ///
    /// ```compile_fail,E0308
    /// use airmy_verify::{Envelope, event::RunCompleted};
    /// use airmy_verify_inbox::{HandlerError, Handlers, Inbox, PgContext, SqliteBackend, SqliteOptions};
    ///
    /// # fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let inbox = Inbox::new(SqliteBackend::open("inbox.db", SqliteOptions::default())?);
    /// let handlers = Handlers::default().on(|run: Envelope<RunCompleted>, ctx: PgContext| async move {
    ///     let _tx = ctx.transaction().await?;
    ///     Ok::<(), HandlerError>(())
    /// });
    /// let worker = inbox.worker(handlers); // expected `Handlers`, found `Handlers<PgContext>`
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn worker(&self, handlers: Handlers<PgContext>) -> Worker<PgContext> {
        let shared = Arc::clone(&self.0);
        Worker::with_opener(
            Arc::new(self.clone()),
            handlers,
            Arc::new(move |ctx, entry: &Leased| {
                let slot = Arc::new(tx::TxSlot::new(
                    shared.pool.clone(),
                    Arc::clone(&shared.sql.complete),
                    &entry.id,
                    &entry.token,
                ));
                (
                    PgContext::new(ctx, Arc::clone(&slot)),
                    Finish::Transaction(slot),
                )
            }),
        )
    }
}

/// A listener on a connection of its own to `url`, waiting at most `timeout` for it.
async fn listener_on(url: &str, timeout: Duration) -> Result<PgListener, OpenError> {
    let connect: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
        OpenError::new(
            OpenErrorKind::Invalid,
            format!("not a PostgreSQL URL ({})", short(&e)),
        )
        .with_source(e)
    })?;
    // One connection, kept (as `PgListener::connect` does, with this timeout).
    let pool = match PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(timeout)
        .connect_with(connect.clone())
        .await
    {
        Ok(pool) => pool,
        Err(err) => return Err(diagnose(&connect, err, timeout).await),
    };
    PgListener::connect_with(&pool).await.map_err(open_error)
}

/// Why a pool could not connect: the pool says only that it timed out, whatever the cause,
/// so one direct connection tells refused from authentication from TLS from a real timeout.
async fn diagnose(connect: &PgConnectOptions, err: sqlx::Error, timeout: Duration) -> OpenError {
    if !matches!(err, sqlx::Error::PoolTimedOut) {
        return open_error(err);
    }
    match tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(connect)).await {
        Ok(Err(cause)) => open_error(cause),
        Ok(Ok(_)) | Err(_) => open_error(err),
    }
}

/// A PostgreSQL error while connecting, as an [`OpenError`] of the kind the driver tells.
fn open_error(err: sqlx::Error) -> OpenError {
    let kind = match &err {
        sqlx::Error::Configuration(_) => OpenErrorKind::Invalid,
        sqlx::Error::Tls(_) => OpenErrorKind::Tls,
        sqlx::Error::PoolTimedOut => OpenErrorKind::Timeout,
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::NotFound
            | std::io::ErrorKind::AddrNotAvailable => OpenErrorKind::Refused,
            std::io::ErrorKind::TimedOut => OpenErrorKind::Timeout,
            _ => OpenErrorKind::Unavailable,
        },
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // invalid_password, invalid_authorization_specification
            Some("28P01" | "28000") => OpenErrorKind::Authentication,
            // invalid_catalog_name: the database does not exist
            Some("3D000") => OpenErrorKind::Invalid,
            _ => OpenErrorKind::Unavailable,
        },
        _ => OpenErrorKind::Unavailable,
    };
    OpenError::new(kind, short(&err)).with_source(err)
}

impl Shared {
    fn query(
        &self,
        sql: &Arc<str>,
    ) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
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
                .query(&self.sql.unfinished)
                .fetch_one(&self.pool)
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

    async fn leased_update(
        &self,
        query: sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<bool, InboxError> {
        query
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected() == 1)
            .map_err(unavailable)
    }
}

/// The wake-up loop: every notification on the channel wakes a waiting worker of this process.
/// `PgListener` reconnects by itself; while it cannot, workers still wake at least once a
/// second (the pool's longest wait) and at their due times.
async fn listen(mut listener: PgListener, notify: Arc<Notify>) {
    loop {
        match listener.recv().await {
            Ok(_) => notify.notify_one(),
            Err(err) => {
                tracing::warn!(
                    target: "airmy_verify",
                    error = %short(&err),
                    "the inbox's PostgreSQL listener lost its connection; retrying"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The wake-up sender: one `NOTIFY` at a time on the inbox's channel, for every accept told
/// since the last one began (a permit of `wake` gathers them), so that idle workers of other
/// replicas wake within a round trip of an accept's commit. A lost wake-up (the server gone
/// for a moment, the process killed between commit and `NOTIFY`) costs at most the workers'
/// longest wait, a second.
async fn waker(pool: PgPool, wake_sql: Arc<str>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        if let Err(err) = sqlx::query(AssertSqlSafe(Arc::clone(&wake_sql)))
            .execute(&pool)
            .await
        {
            tracing::debug!(
                target: "airmy_verify",
                error = %short(&err),
                "the inbox could not send a wake-up to other replicas; retrying"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            wake.notify_one();
        }
    }
}

/// An error's message on one line, without any URL.
fn short(err: &sqlx::Error) -> String {
    err.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn to_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl Store for PgBackend {
    fn accept<'a>(&'a self, delivery: &'a Verified) -> BackendFuture<'a, Accepted> {
        Box::pin(async move {
            if !self.0.has_room().await? {
                // Full: a delivery already held is still a duplicate, a new one is refused.
                let held = self
                    .0
                    .query(&self.0.sql.held)
                    .bind(delivery.id())
                    .fetch_optional(&self.0.pool)
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
                .send(job)
                .map_err(|_| batch::shutting_down())?;
            let stored = answer.await.map_err(|_| batch::shutting_down())??;
            if !stored {
                return Ok(Accepted::Duplicate);
            }
            self.0.unfinished.fetch_add(1, Ordering::Relaxed);
            self.0.notify.notify_one();
            self.0.wake.notify_one();
            Ok(Accepted::Stored)
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
            let rows = self
                .0
                .query(&take)
                .bind(duration_ms(lease))
                .bind(token)
                .fetch_all(&self.0.pool)
                .await
                .map_err(unavailable)?;
            let mut leased = rows
                .iter()
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
                .query(&self.0.sql.next_due)
                .fetch_one(&self.0.pool)
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
                .query(&self.0.sql.held_by)
                .bind(id)
                .bind(token)
                .fetch_optional(&self.0.pool)
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
                .send(job)
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
                .query(&self.0.sql.release)
                .bind(id)
                .bind(token)
                .fetch_optional(&self.0.pool)
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
                .query(&self.0.sql.stats)
                .fetch_one(&self.0.pool)
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
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                oldest_pending_age_secs: oldest.map(|secs| secs.max(0.0) as u64),
            })
        })
    }

    fn list<'a>(&'a self, query: &'a ListQuery) -> BackendFuture<'a, Page> {
        Box::pin(list::list(&self.0.pool, &self.0.schema, query))
    }

    fn entry<'a>(&'a self, id: &'a str) -> BackendFuture<'a, Option<Entry>> {
        Box::pin(list::entry(&self.0.pool, &self.0.schema, id))
    }

    fn replay<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let replayed = self
                .0
                .query(&self.0.sql.replay)
                .bind(id)
                .fetch_optional(&self.0.pool)
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
                .query(&self.0.sql.replay_pending)
                .bind(id)
                .fetch_optional(&self.0.pool)
                .await
                .map_err(unavailable)?;
            if due.is_some() {
                self.0.notify.notify_one();
                return Ok(());
            }
            let state: Option<String> = self
                .0
                .query(&self.0.sql.state_of)
                .bind(id)
                .fetch_optional(&self.0.pool)
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
                .query(&self.0.sql.replay_dead)
                .bind(since)
                .fetch_all(&self.0.pool)
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
                .query(&self.0.sql.purge)
                .bind(before)
                .execute(&self.0.pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(unavailable)
        })
    }
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
