//! Connecting a [`PgBackend`]: its options, its own pool or the application's, the schema
//! migrated, the listener and the waker started; the errors of connecting, by kind.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use airmy_verify::text::redact_url;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool, Row};
use tokio::sync::{Mutex, Notify};

use super::sql::Sql;
use super::{Db, PgBackend, PgContext, PgError, Shared, batch, schema, short, tx};
use crate::backend::Leased;
use crate::worker::{Finish, Worker};
use crate::{Handlers, OpenError, OpenErrorKind};

/// How long a connection of [`PgBackend::connect`]'s pool may have been idle and still be
/// handed out without a ping: longer than any statement's gap under load, shorter than a
/// server's restart.
const PING_AFTER_IDLE: Duration = Duration::from_millis(100);

/// The default of [`PgOptions::operation_timeout`]: 3 s, so that an accept is answered (503
/// when PostgreSQL does not answer) well within the 10 s AIRMY waits.
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

/// How to connect a [`PgBackend`]: consuming setters on the defaults.
#[derive(Clone)]
pub struct PgOptions {
    pub(super) schema: String,
    pub(super) max_unfinished: u64,
    pub(super) max_connections: u32,
    pub(super) acquire_timeout: Duration,
    pub(super) operation_timeout: Duration,
    pub(super) listen_url: Option<String>,
    pub(super) pooler: bool,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("schema", &self.schema)
            .field("max_unfinished", &self.max_unfinished)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("listen_url", &self.listen_url.as_deref().map(redact_url))
            .field("pooler", &self.pooler)
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
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            listen_url: None,
            pooler: false,
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

    /// How long [`connect`](PgBackend::connect)'s pool waits for a connection (a new one
    /// included) before it fails with [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)
    /// (an accept then answers 503, well within AIRMY's 10 s). Defaults to 3 s. Each operation
    /// as a whole, this wait included, is bounded by
    /// [`operation_timeout`](Self::operation_timeout) too.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The longest one operation of the inbox waits for PostgreSQL: an accept (its wait for a
    /// batch, for a connection of the pool and for the commit, together), a take, a
    /// completion, a lease's extension, the stats that `/healthz` reads, the opening of a
    /// handler's transaction. Past it the operation fails with
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) (an accept answers 503, and
    /// AIRMY sends the delivery again), and a connection whose statement did not answer is
    /// closed rather than given back to the pool. Defaults to 3 s, well within the 10 s AIRMY
    /// waits for an answer.
    ///
    /// This is what bounds an accept when the network path to the server drops packets (a
    /// partition, a security group changed, a server gone without a word): nothing refuses,
    /// nothing fails, and without a bound a statement waits for TCP to give up, a quarter of
    /// an hour. It applies on [`with_pool`](PgBackend::with_pool)'s pool as on
    /// [`connect`](PgBackend::connect)'s. An operator's bulk actions (listings,
    /// `replay_dead`, purges) are bounded at 60 s (or this, if longer). A handler's own
    /// statements in [`PgContext::transaction`] are the handler's, bounded by
    /// [`Worker::handler_timeout`](crate::Worker::handler_timeout). Keep it above the slowest
    /// commit the server makes under load: an accept past it is refused though it may be
    /// stored (AIRMY's retry then finds it).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use airmy_verify_inbox::{PgBackend, PgOptions};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// // Every accept answered within 2 s, whatever the network does.
    /// let options = PgOptions::default().operation_timeout(Duration::from_secs(2));
    /// let backend = PgBackend::connect("postgres://app@db.internal/billing", options).await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout.max(Duration::from_millis(1));
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

    /// Whether the URL reaches PostgreSQL through a transaction pooler: PgBouncer in
    /// transaction mode, RDS Proxy, the poolers of Supabase and Neon, anything that may hand
    /// each transaction of a client to another server connection. Defaults to false (a direct
    /// connection, or a pooler in session mode).
    ///
    /// Behind one, the backend keeps nothing on a server connection between transactions:
    /// - **No named prepared statements**: [`connect`](PgBackend::connect) sets sqlx's
    ///   statement cache to 0, and each of the backend's statements is PostgreSQL's unnamed
    ///   one, parsed and run inside a transaction of its own (an accept then takes four round
    ///   trips instead of two). With [`with_pool`](PgBackend::with_pool), build the
    ///   application's pool with `PgConnectOptions::statement_cache_capacity(0)`: its own
    ///   queries, and its handlers' in [`PgContext::transaction`], need it too.
    /// - **No `LISTEN` through the pooler** (it would hear nothing): wake-ups come from a
    ///   direct connection when [`listen_url`](Self::listen_url) is given (the server's own
    ///   address, past the pooler); otherwise idle workers poll every 500 ms, so an entry
    ///   another replica accepted waits up to half a second (one this process accepted wakes
    ///   its workers at once).
    /// - sqlx's `extra_float_digits` startup parameter, which PgBouncer refuses unless its
    ///   `ignore_startup_parameters` names it, is not sent (with `connect`).
    ///
    /// The schema's migration (one transaction, an advisory lock of that transaction) works
    /// through a transaction pooler as it does directly.
    #[must_use]
    pub fn pooler(mut self, behind_pooler: bool) -> Self {
        self.pooler = behind_pooler;
        self
    }
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
        let connect = if options.pooler {
            connect.statement_cache_capacity(0).extra_float_digits(None)
        } else {
            connect
        };
        let pool = match PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            // A connection the server closed while it sat idle in the pool (a restart, a
            // failover, `idle_session_timeout`, a proxy's idle timeout) is found by a ping
            // (one round trip) and replaced before it is handed out, not by the statement
            // that would then fail. Only one idle for a while: under load a connection comes
            // back within milliseconds and is not pinged every time (HikariCP skips its check
            // for one used in the last 500 ms the same way).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
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
    /// transaction one. Keep sqlx's default `test_before_acquire(true)` (or ping connections
    /// idle for a while in a `before_acquire`, as [`connect`](Self::connect)'s pool does): a
    /// connection the server closed while it sat idle in the pool (a restart,
    /// `idle_session_timeout`) is then replaced before use instead of failing the statement
    /// given it. At shutdown, drop the backend (every clone, and the [`Inbox`](crate::Inbox)
    /// holding it) before awaiting the pool's `close()`, which waits for the listener's
    /// connection.
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
        let what = "cannot use the application's PostgreSQL pool";
        // The listener holds one of the pool's connections for the backend's life: a pool of
        // one would leave none for accepts, the worker and the application.
        let size = pool.options().get_max_connections();
        if size < 2 && options.listen_url.is_none() && !options.pooler {
            return Err(OpenError::new(
                OpenErrorKind::Invalid,
                format!(
                    "{what}: it holds at most {size} connection, and the inbox's listener keeps \
                     one for the backend's life; give the pool at least 2 (more for the workers' \
                     transactions), or the listener its own connection (PgOptions::listen_url)"
                ),
            ));
        }
        // A pool that cannot connect says only that it timed out: one direct connection with
        // the pool's own options tells refused from authentication from TLS.
        if let Err(err) = pool.acquire().await {
            let timeout = pool.options().get_acquire_timeout();
            return Err(diagnose(&pool.connect_options(), err, timeout)
                .await
                .context(what));
        }
        Self::start(pool, options)
            .await
            .map_err(|e| e.context(what))
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
        let db = Db::new(pool.clone(), options.pooler, options.operation_timeout);
        {
            let mut conn = pool.acquire().await.map_err(open_error)?;
            schema::migrate(&mut conn, &options.schema, db.persistent()).await?;
        }
        let channel = format!("{}_wake", options.schema);
        let sql = Sql::new(&options.schema, &channel);
        let unfinished: i64 = db
            .fetch_one(sqlx::query(AssertSqlSafe(Arc::clone(&sql.unfinished))))
            .await
            .and_then(|row| row.try_get(0))
            .map_err(open_error)?;
        let notify = Arc::new(Notify::new());
        let listener = match &options.listen_url {
            Some(url) => {
                let shown = format!("cannot listen on {}", redact_url(url));
                let mut listener = listener_on(url, options.acquire_timeout)
                    .await
                    .map_err(|e| e.context(&shown))?;
                // Notifications stay in their database: a listener on another one would hear
                // no wake-up from the other replicas.
                let database = |row: sqlx::postgres::PgRow| row.try_get::<String, _>(0);
                let (ours, its) = (
                    db.fetch_one(sqlx::query("SELECT current_database()"))
                        .await
                        .and_then(database)
                        .map_err(open_error)?,
                    sqlx::query("SELECT current_database()")
                        .fetch_one(&mut listener)
                        .await
                        .and_then(database)
                        .map_err(|e| open_error(e).context(&shown))?,
                );
                if ours != its {
                    return Err(OpenError::new(
                        OpenErrorKind::Invalid,
                        format!(
                            "{shown}: it is the database {its:?}, the inbox's is {ours:?} \
                             (notifications do not cross databases)"
                        ),
                    ));
                }
                Some(listener)
            }
            // A pooler's connection would hear nothing: the workers poll instead.
            None if options.pooler => None,
            None => Some(PgListener::connect_with(&pool).await.map_err(open_error)?),
        };
        let listener = match listener {
            Some(mut listener) => {
                listener.listen(&channel).await.map_err(open_error)?;
                Some(tokio::spawn(listen(listener, Arc::clone(&notify))))
            }
            None => None,
        };
        let wake = Arc::new(Notify::new());
        let waker = tokio::spawn(waker(db.clone(), Arc::clone(&sql.wake), Arc::clone(&wake)));
        let (accepts, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch::accepts(
            db.clone(),
            Arc::clone(&sql.accept_batch),
            queue,
        ));
        let (completions, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch::completions(
            db.clone(),
            Arc::clone(&sql.complete_batch),
            Arc::clone(&sql.complete),
            queue,
        ));
        Ok(Self(Arc::new(Shared {
            accepts,
            completions,
            db,
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
        self.0.db.pool()
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
                    shared.db.clone(),
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
pub(super) fn open_error(err: sqlx::Error) -> OpenError {
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
async fn waker(db: Db, wake_sql: Arc<str>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        if let Err(err) = db
            .execute(sqlx::query(AssertSqlSafe(Arc::clone(&wake_sql))))
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
