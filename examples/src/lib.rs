//! The runnable side of the suite: the example receivers (`axum-receiver`, `actix-receiver`),
//! the services users write (`axum-service`, `actix-service`: [`service`]), the `demo` and the
//! load-benchmark servers, with what they share:
//! the receiver apps ([`apps`]), configuration from the environment, logging, and the address
//! line the black-box tests wait for.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `AIRMY_WEBHOOK_SECRET` | the signing secret, exactly as configured in AIRMY | required |
//! | `AIRMY_WEBHOOK_SECRET_PREVIOUS` | a previous secret, accepted during a rotation | none |
//! | `AIRMY_LISTEN` | the address to bind (port 0 picks a free port) | `127.0.0.1:3000` |
//! | `AIRMY_TOLERANCE_SECS` | freshness tolerance in seconds | `300` |
//! | `AIRMY_IDEMPOTENCY` | `memory`, or a Redis URL such as `redis://127.0.0.1:6379`, in the forms of a Redis `AIRMY_INBOX` (keys under `airmy:idempotency:`, or `?prefix=…`; `?cluster=true` when it names a Redis Cluster, by any node or by several seeds separated by commas): run the handler once per event id | unset: off |
//! | `AIRMY_HANDLER_DELAY_MS` | every handling sleeps this long before answering (a slow handler, to try timeouts and retries) | `0` |
//! | `AIRMY_HANDLER_FAIL_FOR_SECS` | every handling attempt fails during the first N seconds after start (a simulated outage): 500 `{"error":"handler_failed"}` without an inbox, a retry later with one | `0` |
//! | `AIRMY_INBOX` | `sqlite:PATH` (absolute, or relative to the working directory; created if missing), a Redis URL (`redis://…`, `rediss://…`; keys under `airmy:inbox:`, or `?prefix=…`; `?cluster=true` when it names a Redis Cluster, by any node or by several seeds separated by commas: `redis://[:PASSWORD@]node-a:6379,node-b:6379?cluster=true`) or a PostgreSQL URL (`postgres://…`, `postgresql://…`; tables in the schema `airmy_inbox`, or `?schema=…`; `?pooler=true` when it goes through a transaction pooler such as PgBouncer in transaction mode), both shared by every replica: store deliveries durably, answer at once, handle them in background workers | unset: handle in the request |
//! | `AIRMY_INBOX_LISTEN_URL` | with a PostgreSQL `AIRMY_INBOX` behind a transaction pooler (`?pooler=true`): the database's direct URL (past the pooler, same database), for the one `LISTEN` connection that wakes idle workers at once | unset: behind a pooler, idle workers poll every 500 ms; otherwise the listener is one of the pool's connections |
//! | `AIRMY_INBOX_WORKERS` | how many entries the inbox workers handle at once | `4` |
//! | `AIRMY_INBOX_MAX_ATTEMPTS` | at most this many attempts per entry, then it is a dead letter (the retries wait 1 s, 2 s, 4 s, … as before) | unset: retries for up to 24 hours |
//! | `AIRMY_INBOX_LEASE_SECS` | how long an entry stays leased to a worker that stopped extending it (a crashed process): how long before another takes it over | `60` |
//! | `AIRMY_WEBHOOK_SECRET_FILE` | a secret file instead of `AIRMY_WEBHOOK_SECRET`/`_PREVIOUS` ([`secret_file`]): first secret line current, the others previous; read at start, on `SIGHUP` and when it changes | unset |
//! | `AIRMY_METRICS_LISTEN` | `HOST:PORT` serving `GET /metrics` (Prometheus text); with it, `metrics on http://HOST:PORT/metrics` follows the `listening on` line | unset: off |
//! | `AIRMY_CONSOLE_LISTEN` | `HOST:PORT` serving the inbox's web console ([`console`]; needs `AIRMY_INBOX`); with it, `console on http://HOST:PORT/` follows the `listening on` line | unset: off |
//! | `AIRMY_CONSOLE_TOKEN` | the console's login token for operators (at least 16 characters), required when `AIRMY_CONSOLE_LISTEN` is not a loopback address | unset: no login (loopback only) |
//! | `AIRMY_CONSOLE_READONLY_TOKEN` | a second login token (at least 16 characters, not the operators'; needs `AIRMY_CONSOLE_TOKEN`): its sessions see every page and may not act | unset: none |
//! | `AIRMY_LOG_FORMAT` | `text` or `json` | `text` |
//! | `RUST_LOG` | log filter (`EnvFilter` syntax) | `info` |
//!
//! A missing or empty secret, a tolerance or delay that is not a whole number, an
//! `AIRMY_IDEMPOTENCY` that is neither, or has a parameter neither it (`prefix`, `cluster`) nor
//! the Redis client reads, or several hosts without `?cluster=true`, or a Redis that cannot be
//! reached at start-up, an
//! `AIRMY_INBOX` that is not `sqlite:PATH`, a Redis or a PostgreSQL URL, or that has a query parameter neither the inbox (`prefix`, `cluster`, `schema`, `pooler`) nor its driver reads, an `AIRMY_INBOX_LISTEN_URL` without a PostgreSQL `AIRMY_INBOX` or that is not a `postgres://` URL, or whose listener cannot connect, whose file cannot be created or is
//! not a sound inbox database, or whose Redis cannot be reached at start-up, or `AIRMY_INBOX` together with `AIRMY_IDEMPOTENCY` (the inbox deduplicates
//! by itself) exits with code 2 and one line on standard error, before anything listens.
//!
//! With an inbox, each completed handling prints `handled <id> <type> attempt=<n>` (n counts
//! every attempt, a takeover after a crash included), when the handler succeeded and before
//! the completion is recorded. `GET /healthz` answers 200 `{"status":"ok"}`, or 503
//! `{"error":"inbox_unavailable"}` when the inbox does not answer (a Redis that went away: a
//! delivery then gets the same 503, never a 2xx).
//!
//! Standard output carries exactly one `listening on http://HOST:PORT` line when the receiver
//! is ready, then one `handled <id> <type>` line per completed handling, and nothing else; logs
//! go to standard error. SIGTERM and Ctrl-C stop the receiver cleanly: it stops accepting,
//! lets handlers that are running finish (up to 30 s), and exits 0.
//!
//! Timeouts: a request's headers must arrive within 5 s and its body within 5 s more (the
//! verifier's body timeout: 408 `{"error":"body_timeout"}` and the connection closed), well
//! under AIRMY's own 10 s.

pub mod apps;
pub mod bench;
pub mod console;
pub mod hosts;
pub mod observe;
pub mod secret_file;
pub mod service;

/// The workspace README, whose Rust snippets are compiled (and the test one run) as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Each published crate's README (shown on crates.io), compiled here, where every crate and
/// feature its snippets use is a dependency.
#[cfg(doctest)]
pub mod crate_readmes {
    /// `airmy-verify`'s README.
    #[doc = include_str!("../../airmy-verify/README.md")]
    pub struct Core;
    /// `airmy-verify-axum`'s README.
    #[doc = include_str!("../../airmy-verify-axum/README.md")]
    pub struct Axum;
    /// `airmy-verify-actix`'s README.
    #[doc = include_str!("../../airmy-verify-actix/README.md")]
    pub struct Actix;
    /// `airmy-verify-inbox`'s README.
    #[doc = include_str!("../../airmy-verify-inbox/README.md")]
    pub struct Inbox;
    /// This crate's README (the receivers' contract).
    #[doc = include_str!("../README.md")]
    pub struct Examples;
}

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a request's headers may take to arrive (hyper's and actix's header read timeout).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a receiver waits, at shutdown, for handlers that are still running.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

use airmy_verify::Verifier;
use airmy_verify::idempotency::{Idempotency, MemoryStore, RedisStore, RedisStoreOptions};
use airmy_verify::text::redact_url;
use airmy_verify_inbox::{Inbox, InboxUrl, PgBackend, PgOptions};

/// The exit code for a configuration error.
pub const EXIT_CONFIG: i32 = 2;

/// What a receiver needs to start.
#[derive(Debug)]
pub struct ReceiverConfig {
    /// The verifier built from the secrets and tolerance.
    pub verifier: Verifier,
    /// The address to bind, as given (a host name is resolved when binding).
    pub listen: String,
    /// The idempotency store to use, if any.
    pub idempotency: Option<IdempotencySetting>,
    /// How long each handling takes (`AIRMY_HANDLER_DELAY_MS`).
    pub handler_delay: Duration,
    /// How long after start every handling fails (`AIRMY_HANDLER_FAIL_FOR_SECS`).
    pub handler_fail_for: Duration,
    /// The durable inbox, if any (`AIRMY_INBOX`).
    pub inbox: Option<InboxUrl>,
    /// The direct URL of a PostgreSQL inbox's listener (`AIRMY_INBOX_LISTEN_URL`), if any.
    pub inbox_listen_url: Option<ListenUrl>,
    /// How many entries the inbox workers handle at once (`AIRMY_INBOX_WORKERS`).
    pub inbox_workers: usize,
    /// The inbox workers' lease (`AIRMY_INBOX_LEASE_SECS`).
    pub inbox_lease: Duration,
    /// At most this many attempts per entry before it is a dead letter
    /// (`AIRMY_INBOX_MAX_ATTEMPTS`); `None`: the default policy (24 hours of retries).
    pub inbox_max_attempts: Option<u32>,
    /// The secret file to watch (`AIRMY_WEBHOOK_SECRET_FILE`), when the secrets come from one.
    pub secret_file: Option<std::path::PathBuf>,
    /// Where to serve `GET /metrics` (`AIRMY_METRICS_LISTEN`), if anywhere.
    pub metrics_listen: Option<String>,
    /// The log format (`AIRMY_LOG_FORMAT`).
    pub log_format: observe::LogFormat,
    /// The console listener (`AIRMY_CONSOLE_LISTEN`, `AIRMY_CONSOLE_TOKEN`,
    /// `AIRMY_CONSOLE_READONLY_TOKEN`), if any.
    pub console: Option<console::ConsoleSetting>,
}

/// The direct URL a PostgreSQL inbox listens for wake-ups on (`AIRMY_INBOX_LISTEN_URL`;
/// [`PgOptions::listen_url`]); shown without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct ListenUrl(String);

impl ListenUrl {
    /// The URL, password included.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ListenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ListenUrl")
            .field(&redact_url(&self.0))
            .finish()
    }
}

/// Where `AIRMY_IDEMPOTENCY` keeps claimed and processed event ids.
#[derive(Clone, PartialEq, Eq)]
pub enum IdempotencySetting {
    /// In this process (`memory`): up to 100,000 ids.
    Memory,
    /// On Redis, shared by every receiver using it: the URL's forms and parameters are those
    /// of a Redis `AIRMY_INBOX` (read by [`InboxUrl`]): `?prefix=…`
    /// ([`RedisStoreOptions::prefix`]), `?cluster=true` for a Redis Cluster, given any node or
    /// several separated by commas ([`RedisStoreOptions::cluster`]).
    Redis {
        /// The URL as the Redis client takes it, without the store's parameters.
        url: String,
        /// The prefix of the store's keys; `None`: the default, `airmy:idempotency:`.
        prefix: Option<String>,
        /// Whether the URL names a Redis Cluster.
        cluster: bool,
    },
}

impl fmt::Debug for IdempotencySetting {
    /// Shows a Redis URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Redis {
                url,
                prefix,
                cluster,
            } => f
                .debug_struct("Redis")
                .field("url", &redact_url(url))
                .field("prefix", prefix)
                .field("cluster", cluster)
                .finish(),
        }
    }
}

impl ReceiverConfig {
    /// The idempotency guard, connected (for Redis) and ready.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when Redis cannot be reached.
    pub async fn idempotency_guard(&self) -> Result<Option<Idempotency>, ConfigError> {
        let guard = match &self.idempotency {
            None => return Ok(None),
            Some(IdempotencySetting::Memory) => {
                Idempotency::new(MemoryStore::new(100_000), &self.verifier)
            }
            Some(IdempotencySetting::Redis {
                url,
                prefix,
                cluster,
            }) => {
                let mut options = RedisStoreOptions::default().cluster(*cluster);
                if let Some(prefix) = prefix {
                    options = options.prefix(prefix);
                }
                let store = RedisStore::connect(url, options).await.map_err(|e| {
                    let shown = redact_url(url);
                    ConfigError(format!("AIRMY_IDEMPOTENCY: cannot use {shown}: {e}"))
                })?;
                Idempotency::new(store, &self.verifier)
            }
        };
        Ok(Some(guard))
    }
}

/// A configuration problem, said in one line.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ReceiverConfig {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the variable that is missing or wrong.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (for tests).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the variable that is missing or wrong.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let log_format = observe::LogFormat::from_setting(lookup("AIRMY_LOG_FORMAT").as_deref())?;
        let metrics_listen =
            observe::metrics_listen_from_setting(lookup("AIRMY_METRICS_LISTEN").as_deref())?;
        let (mut builder, secret_file) = secret_file::builder_from_lookup(&lookup)?;
        if let Some(text) = lookup("AIRMY_TOLERANCE_SECS") {
            let secs: u64 = text.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "AIRMY_TOLERANCE_SECS must be a whole number of seconds, got {text:?}"
                ))
            })?;
            builder = builder.tolerance(Duration::from_secs(secs));
        }
        let handler_delay = match lookup("AIRMY_HANDLER_DELAY_MS") {
            None => Duration::ZERO,
            Some(text) => Duration::from_millis(text.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "AIRMY_HANDLER_DELAY_MS must be a whole number of milliseconds, got {text:?}"
                ))
            })?),
        };
        let whole = |name: &str, default: u64| -> Result<u64, ConfigError> {
            match lookup(name) {
                None => Ok(default),
                Some(text) => text.trim().parse().map_err(|_| {
                    ConfigError(format!("{name} must be a whole number, got {text:?}"))
                }),
            }
        };
        let handler_fail_for = Duration::from_secs(whole("AIRMY_HANDLER_FAIL_FOR_SECS", 0)?);
        let inbox_workers = usize::try_from(whole("AIRMY_INBOX_WORKERS", 4)?)
            .ok()
            .filter(|n| (1..=1024).contains(n))
            .ok_or_else(|| {
                ConfigError("AIRMY_INBOX_WORKERS must be between 1 and 1024".to_owned())
            })?;
        let inbox_lease = match whole("AIRMY_INBOX_LEASE_SECS", 60)? {
            0 => {
                return Err(ConfigError(
                    "AIRMY_INBOX_LEASE_SECS must be at least 1".to_owned(),
                ));
            }
            secs => Duration::from_secs(secs),
        };
        let inbox_max_attempts = match lookup("AIRMY_INBOX_MAX_ATTEMPTS") {
            None => None,
            Some(text) => Some(
                text.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        ConfigError(format!(
                            "AIRMY_INBOX_MAX_ATTEMPTS must be a whole number of at least 1, got {text:?}"
                        ))
                    })?,
            ),
        };
        let inbox = match lookup("AIRMY_INBOX").as_deref().map(str::trim) {
            None | Some("") => None,
            Some(setting) => Some(
                setting
                    .parse::<InboxUrl>()
                    .map_err(|e| ConfigError(format!("AIRMY_INBOX {e}")))?,
            ),
        };
        let inbox_listen_url = match lookup("AIRMY_INBOX_LISTEN_URL").as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if !matches!(inbox, Some(InboxUrl::Postgres { .. })) => {
                return Err(ConfigError(format!(
                    "AIRMY_INBOX_LISTEN_URL ({}) needs a PostgreSQL AIRMY_INBOX: it is where that \
                     inbox listens for wake-ups",
                    redact_url(url)
                )));
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(ListenUrl(url.to_owned()))
            }
            Some(url) => {
                return Err(ConfigError(format!(
                    "AIRMY_INBOX_LISTEN_URL must be a postgres:// URL, got {:?}",
                    redact_url(url)
                )));
            }
        };
        let listen = lookup("AIRMY_LISTEN")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
        let idempotency = match lookup("AIRMY_IDEMPOTENCY").as_deref().map(str::trim) {
            None | Some("") => None,
            Some("memory") => Some(IdempotencySetting::Memory),
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                match url.parse::<InboxUrl>() {
                    Ok(InboxUrl::Redis {
                        url,
                        prefix,
                        cluster,
                        ..
                    }) => Some(IdempotencySetting::Redis {
                        url,
                        prefix,
                        cluster,
                    }),
                    Ok(_) => unreachable!("a redis:// URL reads as a Redis InboxUrl"),
                    Err(e) => return Err(ConfigError(format!("AIRMY_IDEMPOTENCY {e}"))),
                }
            }
            Some(other) => {
                return Err(ConfigError(format!(
                    "AIRMY_IDEMPOTENCY must be `memory` or a redis:// URL, got {other:?}"
                )));
            }
        };
        let console = console::ConsoleSetting::from_lookup(&lookup)?;
        if console.is_some() && inbox.is_none() {
            return Err(ConfigError(
                "AIRMY_CONSOLE_LISTEN needs AIRMY_INBOX: the console shows the inbox".to_owned(),
            ));
        }
        if inbox.is_some() && idempotency.is_some() {
            return Err(ConfigError(
                "AIRMY_INBOX and AIRMY_IDEMPOTENCY cannot both be set: the inbox deduplicates \
                 deliveries by itself"
                    .to_owned(),
            ));
        }
        Ok(Self {
            verifier: builder.build(),
            listen,
            idempotency,
            handler_delay,
            handler_fail_for,
            inbox,
            inbox_listen_url,
            inbox_workers,
            inbox_lease,
            inbox_max_attempts,
            secret_file,
            metrics_listen,
            log_format,
            console,
        })
    }
}

/// Resolves when the process gets SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Waits, until `deadline`, for guarded handlers that are still running: they run detached
/// from their connections, so stopping the server does not stop them. Whether none is left.
pub async fn drain(guard: Option<&Idempotency>, deadline: tokio::time::Instant) -> bool {
    let Some(guard) = guard else {
        return true;
    };
    if guard.running() > 0 {
        tracing::info!(target: "airmy_receiver", running = guard.running(), "waiting for running handlers");
    }
    if tokio::time::timeout_at(deadline, guard.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!(target: "airmy_receiver", running = guard.running(), "handlers still running at the shutdown deadline");
        return false;
    }
    true
}

/// Serves an axum app on `listener` with hyper directly, so that a request's headers must
/// arrive within [`HEADER_TIMEOUT`] (`axum::serve` has no such setting), until `shutdown`
/// resolves; then stops accepting, lets open connections finish their requests (until
/// [`SHUTDOWN_GRACE`] after the signal), and returns that deadline, for what else must finish.
///
/// # Errors
///
/// Only when accepting fails for good (the listener is closed).
pub async fn serve_axum(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<tokio::time::Instant> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait a little, keep serving.
                Err(err) => {
                    tracing::warn!(target: "airmy_receiver", error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that hangs up or times out is not the server's failure.
            let _ = connection.await;
        });
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    drop(listener);
    let _ = tokio::time::timeout_at(deadline, graceful.shutdown()).await;
    Ok(deadline)
}

/// Prints the line the tests and the demo wait for, exactly `listening on http://HOST:PORT`,
/// then, when metrics are served (at `metrics`), `metrics on http://HOST:PORT/metrics`.
pub fn announce(addr: SocketAddr, metrics: Option<SocketAddr>) {
    announce_all(addr, None, metrics);
}

/// [`announce`], with `console on http://HOST:PORT/` right after the `listening on` line when
/// the console is served (at `console`).
pub fn announce_all(addr: SocketAddr, console: Option<SocketAddr>, metrics: Option<SocketAddr>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the receiver.
    let _ = writeln!(out, "listening on http://{addr}");
    if let Some(console) = console {
        let _ = writeln!(out, "console on http://{console}/");
    }
    if let Some(metrics) = metrics {
        let _ = writeln!(out, "metrics on http://{metrics}/metrics");
    }
    let _ = out.flush();
}

/// Reads the configuration, or exits with code 2 and the reason.
#[must_use]
pub fn config_or_exit() -> ReceiverConfig {
    ReceiverConfig::from_env().unwrap_or_else(|err| exit_config(&err))
}

/// What both receivers do first: read the configuration, start logging, connect the
/// idempotency store and open the inbox, if any. Exits with code 2 and a message on a
/// configuration error.
pub async fn start_or_exit() -> (ReceiverConfig, Option<Idempotency>, Option<ReceiverInbox>) {
    let config = config_or_exit();
    observe::init_logging(config.log_format);
    let guard = match config.idempotency_guard().await {
        Ok(guard) => guard,
        Err(err) => exit_config(&err),
    };
    let inbox = match &config.inbox {
        None => None,
        // On PostgreSQL the receiver's own pool serves the inbox and the handlers' effects.
        Some(InboxUrl::Postgres {
            url,
            schema,
            pooler,
        }) => {
            let listen = config.inbox_listen_url.as_ref().map(ListenUrl::as_str);
            match open_postgres(url, schema.as_deref(), *pooler, listen).await {
                Ok(pg) => Some(ReceiverInbox {
                    inbox: Inbox::new(pg.clone()).dedupe_for(&config.verifier),
                    postgres: Some(pg),
                }),
                Err(err) => exit_config(&err),
            }
        }
        Some(setting) => match setting
            .open(false)
            .await
            .map_err(|e| ConfigError(format!("AIRMY_INBOX: {e}")))
        {
            Ok(inbox) => Some(ReceiverInbox {
                inbox: inbox.dedupe_for(&config.verifier),
                postgres: None,
            }),
            Err(err) => exit_config(&err),
        },
    };
    if let Some(console) = &config.console
        && let Err(err) = console.check().await
    {
        exit_config(&err);
    }
    (config, guard, inbox)
}

/// The table a receiver on a PostgreSQL inbox writes its handler's effect into, in the
/// entry's transaction: one row per committed handling, **no unique constraint**, so that a
/// doubled effect would show as two rows.
pub const EFFECTS_TABLE: &str = "airmy_receiver_effects";

/// A receiver's inbox: the handle its route accepts into, and, on PostgreSQL, the backend its
/// transactional workers run on.
#[derive(Debug, Clone)]
pub struct ReceiverInbox {
    /// What the route accepts into, and the console reads.
    pub inbox: Inbox,
    /// The PostgreSQL backend, when `AIRMY_INBOX` is a PostgreSQL URL.
    pub postgres: Option<PgBackend>,
}

/// The PostgreSQL inbox on the receiver's own pool (the one its handlers write their effects
/// through), its tables in `schema` (`None`: the default), with [`EFFECTS_TABLE`] created if
/// it is missing. `url` is without the inbox's parameters, as [`InboxUrl`] gives it. Behind a
/// transaction pooler (`pooler`), the pool keeps no prepared statements (the handlers' own
/// statements included) and sends no `extra_float_digits`, which PgBouncer refuses by default;
/// `listen`: the direct URL of the inbox's `LISTEN` connection.
async fn open_postgres(
    url: &str,
    schema: Option<&str>,
    pooler: bool,
    listen: Option<&str>,
) -> Result<PgBackend, ConfigError> {
    let shown = redact_url(url);
    let connect: sqlx::postgres::PgConnectOptions = url.parse().map_err(|e| {
        ConfigError(format!(
            "AIRMY_INBOX: cannot use {shown}: {}",
            pg_message(&e)
        ))
    })?;
    let connect = if pooler {
        connect.statement_cache_capacity(0).extra_float_digits(None)
    } else {
        connect
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(connect)
        .await
        .map_err(|e| {
            ConfigError(format!(
                "AIRMY_INBOX: cannot use {shown}: {}",
                pg_message(&e)
            ))
        })?;
    let mut options = PgOptions::default().pooler(pooler);
    if let Some(schema) = schema {
        options = options.schema(schema);
    }
    if let Some(listen) = listen {
        options = options.listen_url(listen);
    }
    let pg = PgBackend::with_pool(pool.clone(), options)
        .await
        .map_err(|e| ConfigError(format!("AIRMY_INBOX: cannot use {shown}: {e}")))?;
    // One simple-protocol message: nothing prepared, whatever pooler is in between.
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS airmy_receiver_effects (
             event_id text NOT NULL, event_type text NOT NULL, attempt integer NOT NULL)",
    )
    .execute(&pool)
    .await
    .map_err(|e| {
        ConfigError(format!(
            "AIRMY_INBOX: cannot create {EFFECTS_TABLE} in {shown}: {}",
            pg_message(&e)
        ))
    })?;
    Ok(pg)
}

/// A sqlx error as one line: a server's error is its message alone, without the line of
/// PostgreSQL's own source that sqlx's `Display` adds ("… does not exist at line 948").
fn pg_message(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// What both receivers do next, before they announce: serve `GET /metrics` when
/// `AIRMY_METRICS_LISTEN` is set (the bound address is returned, for [`announce`]), and watch
/// the secret file when the secrets come from one. Exits with code 2 and a message when the
/// metrics address cannot be bound.
pub async fn observe_or_exit(config: &ReceiverConfig) -> Option<SocketAddr> {
    let metrics = match &config.metrics_listen {
        None => None,
        Some(listen) => match observe::serve_metrics(listen).await {
            Ok(addr) => Some(addr),
            Err(err) => exit_config(&err),
        },
    };
    let hangups = match &config.secret_file {
        Some(path) => secret_file::watch(path.clone(), config.verifier.clone()).map(drop),
        None => secret_file::ignore_hangups(),
    };
    if let Err(err) = hangups {
        exit_config(&ConfigError(format!("cannot handle SIGHUP: {err}")));
    }
    metrics
}

/// Starts the inbox workers (when there is an inbox) with the receiver's handling; cancel the
/// token to stop them (they finish or release what runs), then await the handle.
#[must_use]
pub fn start_workers(
    inbox: Option<&ReceiverInbox>,
    verifier: &Verifier,
    handling: &apps::Handling,
    (workers, lease, max_attempts): (usize, Duration, Option<u32>),
    receiver: &'static str,
) -> (
    tokio_util::sync::CancellationToken,
    Option<tokio::task::JoinHandle<()>>,
) {
    fn configured<C: AsRef<airmy_verify_inbox::Context> + Send + 'static>(
        worker: airmy_verify_inbox::Worker<C>,
        (workers, lease, max_attempts): (usize, Duration, Option<u32>),
    ) -> airmy_verify_inbox::Worker<C> {
        let mut worker = worker.concurrency(workers).lease(lease);
        if let Some(max_attempts) = max_attempts {
            worker = worker.retry_policy(
                airmy_verify_inbox::RetryPolicy::default().max_attempts(Some(max_attempts)),
            );
        }
        worker
    }
    let token = tokio_util::sync::CancellationToken::new();
    let settings = (workers, lease, max_attempts);
    let handle = inbox.map(|opened| match &opened.postgres {
        Some(pg) => tokio::spawn(
            configured(
                pg.worker(handling.transactional_handlers(receiver)),
                settings,
            )
            .dedupe_for(verifier)
            .run(token.clone()),
        ),
        None => tokio::spawn(
            configured(opened.inbox.worker(handling.handlers(receiver)), settings)
                .run(token.clone()),
        ),
    });
    (token, handle)
}

/// Prints a configuration error, on one line, and exits with code 2.
pub fn exit_config(err: &ConfigError) -> ! {
    let line: String = err
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("error: {line}");
    std::process::exit(EXIT_CONFIG);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_apply_when_only_the_secret_is_set() {
        let config = ReceiverConfig::from_lookup(lookup(&[("AIRMY_WEBHOOK_SECRET", "whsec_x")]))
            .expect("valid");
        assert_eq!(config.listen, "127.0.0.1:3000");
        assert_eq!(config.verifier.tolerance(), Some(Duration::from_secs(300)));
    }

    #[test]
    fn a_missing_or_empty_secret_is_refused() {
        for vars in [&[][..], &[("AIRMY_WEBHOOK_SECRET", "")][..]] {
            let err = ReceiverConfig::from_lookup(lookup(vars)).expect_err("refused");
            assert!(
                err.to_string()
                    .contains("AIRMY_WEBHOOK_SECRET is missing or empty")
            );
        }
    }

    #[test]
    fn redis_passwords_are_never_shown() {
        let config = ReceiverConfig::from_lookup(lookup(&[
            ("AIRMY_WEBHOOK_SECRET", "whsec_topsecret"),
            ("AIRMY_IDEMPOTENCY", "redis://user:hunter2@127.0.0.1:6379/0"),
        ]))
        .expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("[redacted]@127.0.0.1:6379"), "{shown}");
    }

    #[test]
    fn the_inbox_is_sqlite_a_path_and_excludes_idempotency() {
        let with = |vars: &[(&str, &str)]| {
            let mut all = vec![("AIRMY_WEBHOOK_SECRET", "s")];
            all.extend_from_slice(vars);
            ReceiverConfig::from_lookup(lookup(&all))
        };
        let config = with(&[("AIRMY_INBOX", "sqlite:data/inbox.db")]).expect("valid");
        assert_eq!(
            config.inbox,
            Some(InboxUrl::Sqlite(std::path::PathBuf::from("data/inbox.db")))
        );
        assert_eq!(config.inbox_workers, 4);
        let config = with(&[("AIRMY_INBOX", "redis://:hunter2@127.0.0.1:6379/1")]).expect("valid");
        assert_eq!(
            config.inbox,
            Some(InboxUrl::Redis {
                url: "redis://:hunter2@127.0.0.1:6379/1".into(),
                prefix: None,
                cluster: false,
            })
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        let config =
            with(&[("AIRMY_INBOX", "postgresql://app:hunter2@127.0.0.1/app")]).expect("valid");
        assert!(matches!(config.inbox, Some(InboxUrl::Postgres { .. })));
        assert!(!format!("{config:?}").contains("hunter2"));
        for bad in [
            "inbox.db",
            "sqlite:",
            "mysql://x",
            "sqlite://inbox.db",
            "redis:x",
            "http://h:hunter2@x",
        ] {
            let err = with(&[("AIRMY_INBOX", bad)]).expect_err(bad);
            assert!(
                err.to_string()
                    .contains("AIRMY_INBOX must be sqlite:PATH, a redis:// or a postgres:// URL"),
                "{err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let err = with(&[
            ("AIRMY_INBOX", "sqlite:x.db"),
            ("AIRMY_IDEMPOTENCY", "memory"),
        ])
        .expect_err("both");
        assert!(err.to_string().contains("cannot both be set"), "{err}");
        for bad in ["0", "-1", "x", "5000"] {
            assert!(with(&[("AIRMY_INBOX_WORKERS", bad)]).is_err(), "{bad}");
        }
        assert_eq!(
            with(&[("AIRMY_HANDLER_FAIL_FOR_SECS", "45")])
                .expect("ok")
                .handler_fail_for,
            Duration::from_secs(45)
        );
        assert!(with(&[("AIRMY_HANDLER_FAIL_FOR_SECS", "1.5")]).is_err());
    }

    #[test]
    fn handler_delay_is_whole_milliseconds() {
        let with = |v: &str| {
            ReceiverConfig::from_lookup(lookup(&[
                ("AIRMY_WEBHOOK_SECRET", "s"),
                ("AIRMY_HANDLER_DELAY_MS", v),
            ]))
        };
        assert_eq!(
            with("1500").expect("ok").handler_delay,
            Duration::from_millis(1500)
        );
        assert!(with("1.5").is_err());
        assert!(with("-1").is_err());
    }

    #[test]
    fn idempotency_is_off_memory_or_a_redis_url() {
        let with = |v: &str| {
            ReceiverConfig::from_lookup(lookup(&[
                ("AIRMY_WEBHOOK_SECRET", "s"),
                ("AIRMY_IDEMPOTENCY", v),
            ]))
        };
        assert_eq!(with("").expect("off").idempotency, None);
        assert_eq!(
            with("memory").expect("memory").idempotency,
            Some(IdempotencySetting::Memory)
        );
        assert_eq!(
            with("redis://127.0.0.1:6379").expect("redis").idempotency,
            Some(IdempotencySetting::Redis {
                url: "redis://127.0.0.1:6379".into(),
                prefix: None,
                cluster: false,
            })
        );
        // The forms of a Redis AIRMY_INBOX: several nodes of a cluster, the prefix.
        assert_eq!(
            with("redis://:pw@a:7000,b:7001?cluster=true&prefix=billing:ids:")
                .expect("a cluster")
                .idempotency,
            Some(IdempotencySetting::Redis {
                url: "redis://:pw@a:7000,b:7001".into(),
                prefix: Some("billing:ids:".into()),
                cluster: true,
            })
        );
        let err = with("postgres://x").expect_err("refused");
        assert!(err.to_string().contains("AIRMY_IDEMPOTENCY"), "{err}");
        for bad in [
            "redis://a:7000?cluster=yes",
            "redis://:hunter2@a:7000?clustr=true",
        ] {
            let err = with(bad).expect_err(bad).to_string();
            assert!(err.starts_with("AIRMY_IDEMPOTENCY "), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_bad_tolerance_is_refused_and_a_good_one_used() {
        let err = ReceiverConfig::from_lookup(lookup(&[
            ("AIRMY_WEBHOOK_SECRET", "s"),
            ("AIRMY_TOLERANCE_SECS", "5m"),
        ]))
        .expect_err("refused");
        assert!(err.to_string().contains("AIRMY_TOLERANCE_SECS"));
        let config = ReceiverConfig::from_lookup(lookup(&[
            ("AIRMY_WEBHOOK_SECRET", "s"),
            ("AIRMY_TOLERANCE_SECS", "60"),
            ("AIRMY_LISTEN", "127.0.0.1:0"),
        ]))
        .expect("valid");
        assert_eq!(config.verifier.tolerance(), Some(Duration::from_secs(60)));
        assert_eq!(config.listen, "127.0.0.1:0");
    }
}
