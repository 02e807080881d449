//! The Redis backend (feature `redis`): one queue shared by every replica, on Redis Streams.
//!
//! # Layout
//!
//! Every key of one inbox carries the hash tag `{prefix}` (the prefix defaults to
//! `airmy:inbox:`), so one inbox lives in one Redis Cluster slot and every script touches one
//! slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}stream` | stream, consumer group `workers` | one message per entry that is due or leased |
//! | `{prefix}e:<event id>` | hash | the entry: type, body, received time, attempts, state, lease token and expiry, last error |
//! | `{prefix}scheduled` | sorted set | retries waiting for their due time (score: due time, ms) |
//! | `{prefix}leases` | sorted set | leased entries (score: lease expiry, ms), for [`next_due`](crate::Queue::next_due) |
//! | `{prefix}dead` | stream | one message per dead letter, in the order they died |
//! | `{prefix}done` | sorted set | processed entries kept for deduplication (score: when, ms) |
//!
//! # How the operations map onto Redis
//!
//! Every operation is one Lua script (one round trip, atomic), with the server's clock:
//!
//! - **accept**: `EXISTS` on the entry (the dedupe), then `HSET` and `XADD` together. Accepts
//!   that arrive while one is in flight go together in the next script.
//! - **take**: moves due retries from `scheduled` back into the stream, takes over entries
//!   whose lease ran out (their worker died) by `XCLAIM`ing their messages into the taking
//!   consumer's pending list, then reads new messages with `XREADGROUP`, and stamps each with a
//!   fresh lease token and one more attempt. Leases are per entry (each take and extension
//!   names its own), so the `leases` sorted set, not the group's idle times, says which ran
//!   out: `XAUTOCLAIM`'s single idle threshold would take over an entry leased for longer
//!   than the taker's own lease, or wait past a shorter one.
//! - **wait**: a blocking `XREAD` on the stream from the group's last delivered id, on a
//!   connection of its own, so an idle worker on any replica sees a new entry within
//!   milliseconds of its `XADD` (a blocking read cannot run inside a script, and reading with
//!   `XREADGROUP` outside one would split a take into two steps).
//! - **complete / retry / bury / release**: check the token, then `XACK` and `XDEL` the message
//!   (the stream holds only unfinished entries: that is its retention) and record the new state;
//!   a dead letter is `XADD`ed to the dead-letter stream. Completions that arrive while one is
//!   in flight go together in the next script (one round trip for a batch).
//! - **purge**: deletes processed entries older than a time (and idle consumers of the group).
//!
//! # What a 2xx means
//!
//! `accept` returns once Redis has answered the script. Whether that survives a crash depends on
//! Redis's persistence and topology, not on this crate: see the crate README's table ("The Redis
//! inbox: what a 2xx means").

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airmy_verify::Verified;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{
    Accepted, Admin, BackendFuture, Entry, EntryState, EntrySummary, InboxError, LIST_SCAN, Leased,
    ListQuery, Order, Page, Queue, Stats, Store,
};
use crate::clock::{duration_ms, from_unix_ms, unix_ms};
use crate::{OpenError, OpenErrorKind};

mod batch;
mod scripts;

use batch::{Batches, Job, run_batches, shutting_down};
use scripts::Scripts;

/// The consumer group every worker reads with.
const GROUP: &str = "workers";

/// The options of a [`RedisBackend`].
#[derive(Clone)]
pub struct RedisOptions {
    prefix: String,
    max_unfinished: u64,
    timeout: Duration,
    #[cfg(feature = "redis-tls")]
    root_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("prefix", &self.prefix)
            .field("max_unfinished", &self.max_unfinished)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "airmy:inbox:".to_owned(),
            max_unfinished: 1_000_000,
            timeout: Duration::from_secs(2),
            #[cfg(feature = "redis-tls")]
            root_ca_pem: None,
        }
    }
}

impl RedisOptions {
    /// The prefix of every key, inside a hash tag (`{airmy:inbox:}stream`, …). Defaults to
    /// `airmy:inbox:`. Two inboxes on one Redis need two prefixes; every replica of one
    /// service uses the same.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most due, leased and scheduled entries the inbox holds; accepts past it fail with
    /// [`ErrorKind::Full`](crate::ErrorKind::Full). Defaults to 1,000,000. (A Redis out of memory under its
    /// `maxmemory` refuses writes: also [`ErrorKind::Full`](crate::ErrorKind::Full).)
    #[must_use]
    pub fn max_unfinished(mut self, entries: u64) -> Self {
        self.max_unfinished = entries;
        self
    }

    /// How long connecting and every command may take before the operation fails with
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) (the adapters answer 503). Defaults to 2 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Verifies a `rediss://` server's certificate against this CA (PEM) instead of the
    /// system's trust store. Feature `redis-tls`.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    #[must_use]
    pub fn root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca_pem = Some(pem.into());
        self
    }
}

/// An inbox [`Backend`](crate::Backend) on Redis Streams, shared by every replica that connects to the same
/// Redis with the same prefix. See the [module docs](self) for the layout.
///
/// # Example
///
/// ```no_run
/// use airmy_verify_inbox::{Inbox, RedisBackend, RedisOptions};
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = Inbox::new(RedisBackend::connect("redis://127.0.0.1:6379", RedisOptions::default()).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    connection: ConnectionManager,
    /// For blocking reads only: a blocked read holds up its connection. `None` on the
    /// application's connection ([`RedisBackend::with_connection`]): waits poll instead.
    waiting: Option<ConnectionManager>,
    keys: [String; 5],
    entry_prefix: String,
    consumer: String,
    max_unfinished: u64,
    timeout: Duration,
    scripts: Scripts,
    /// The token seed of a take that failed: its script may have run with only its reply lost
    /// (a timeout), leaving entries leased to tokens nobody knows until their lease runs out.
    /// The next take asks for them back first.
    lost_take: Arc<Mutex<Option<String>>>,
    /// Accepts and completions, sent in batches.
    batches: Batches,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("stream", &self.keys[0])
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// Why [`RedisBackend::connect`] failed: an [`OpenError`] (the backend's name for it), whose
/// message never shows the URL's password.
pub type RedisError = OpenError;

/// A Redis error while connecting, as an [`OpenError`] of the kind the driver tells.
fn open_error(err: redis::RedisError) -> OpenError {
    let kind = if err.is_connection_refusal() {
        OpenErrorKind::Refused
    } else if err.is_timeout() {
        OpenErrorKind::Timeout
    } else {
        match (err.kind(), err.code()) {
            (redis::ErrorKind::AuthenticationFailed, _)
            | (_, Some("NOAUTH" | "WRONGPASS" | "NOPERM")) => OpenErrorKind::Authentication,
            (redis::ErrorKind::InvalidClientConfig, _) => OpenErrorKind::Invalid,
            _ if is_tls(&err) => OpenErrorKind::Tls,
            _ => OpenErrorKind::Unavailable,
        }
    };
    OpenError::new(kind, format!("cannot open the Redis inbox: {err}")).with_source(err)
}

/// Whether a connection failed in its TLS handshake (the driver reports it as I/O).
fn is_tls(err: &redis::RedisError) -> bool {
    let text = err.to_string().to_ascii_lowercase();
    err.is_io_error() && (text.contains("tls") || text.contains("certificate"))
}

fn timed_out() -> OpenError {
    OpenError::new(
        OpenErrorKind::Timeout,
        "cannot open the Redis inbox: Redis did not answer in time",
    )
}

impl RedisBackend {
    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`, or `rediss://` with
    /// feature `redis-tls`), loads the scripts and creates the consumer group if needed.
    ///
    /// # Errors
    ///
    /// A [`RedisError`] of kind [`Invalid`](OpenErrorKind::Invalid) (the URL or the prefix),
    /// [`Refused`](OpenErrorKind::Refused), [`Authentication`](OpenErrorKind::Authentication),
    /// [`Tls`](OpenErrorKind::Tls), [`Timeout`](OpenErrorKind::Timeout) (Redis did not answer
    /// within the options' timeout) or [`Unavailable`](OpenErrorKind::Unavailable).
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, RedisError> {
        check_prefix(&options)?;
        let client = client(url, &options)?;
        // Setting up (loading the scripts, creating the group) happens once, at start-up: it
        // gets at least 5 s, whatever the commands' timeout, so a busy machine does not fail it.
        let setup = options.timeout.max(Duration::from_secs(5));
        let mut connection = tokio::time::timeout(
            setup,
            client.get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(setup))
                    .set_response_timeout(Some(setup)),
            ),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(open_error)?;
        let (keys, scripts) = prepare(&mut connection, &options.prefix).await?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = |config| {
            let client = client.clone();
            async move {
                tokio::time::timeout(setup, ConnectionManager::new_with_config(client, config))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(open_error)
            }
        };
        let connection = manager(config.clone()).await?;
        // Blocking reads last up to a second; their own timeout is set per read.
        let waiting = manager(config.set_response_timeout(None)).await?;
        Ok(Self::start(
            connection,
            Some(waiting),
            keys,
            scripts,
            &options,
        ))
    }

    /// The inbox on a connection manager the application already holds (one connection to
    /// Redis for the application and the inbox): loads the scripts and creates the consumer
    /// group if needed. Its commands go through `connection`, with its own timeouts and
    /// retries ([`RedisOptions::timeout`] bounds only the set-up here). An idle worker then
    /// looks for new entries every 100 ms instead of blocking in a read, which would hold up
    /// every command behind it on the shared connection: a new delivery waits up to 100 ms
    /// more before a worker takes it.
    ///
    /// ```no_run
    /// use airmy_verify_inbox::{Inbox, RedisBackend, RedisOptions};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let connection = redis::aio::ConnectionManager::new(client).await?;
    /// let inbox = Inbox::new(RedisBackend::with_connection(connection.clone(), RedisOptions::default()).await?);
    /// // `connection` goes on serving the application's own commands.
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), for the set-up's commands.
    pub async fn with_connection(
        connection: ConnectionManager,
        options: RedisOptions,
    ) -> Result<Self, RedisError> {
        check_prefix(&options)?;
        let setup = options.timeout.max(Duration::from_secs(5));
        let mut setting_up = connection.clone();
        let (keys, scripts) =
            tokio::time::timeout(setup, prepare(&mut setting_up, &options.prefix))
                .await
                .map_err(|_| timed_out())??;
        Ok(Self::start(connection, None, keys, scripts, &options))
    }

    /// The backend on its connections, its batches started.
    fn start(
        connection: ConnectionManager,
        waiting: Option<ConnectionManager>,
        keys: [String; 5],
        scripts: Scripts,
        options: &RedisOptions,
    ) -> Self {
        let entry_prefix = format!("{{{}}}e:", options.prefix);
        let (accepts, accept_queue) = mpsc::unbounded_channel();
        let (completions, completion_queue) = mpsc::unbounded_channel();
        tokio::spawn(run_batches(
            connection.clone(),
            scripts.accept.clone(),
            keys.clone(),
            vec![entry_prefix.clone(), options.max_unfinished.to_string()],
            accept_queue,
        ));
        tokio::spawn(run_batches(
            connection.clone(),
            scripts.complete.clone(),
            keys.clone(),
            vec![entry_prefix.clone()],
            completion_queue,
        ));
        Self {
            connection,
            waiting,
            entry_prefix,
            keys,
            consumer: format!(
                "{}-{}",
                std::process::id(),
                airmy_verify::token::random_hex(6)
            ),
            max_unfinished: options.max_unfinished,
            timeout: options.timeout,
            scripts,
            lost_take: Arc::default(),
            batches: Batches {
                accepts,
                completions,
            },
        }
    }

    /// This backend's consumer name in the group (the process id and a random suffix).
    #[must_use]
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    fn invocation<'s>(&self, script: &'s redis::Script) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation
    }

    fn entry_invocation<'s>(
        &self,
        script: &'s redis::Script,
        id: &str,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = self.invocation(script);
        invocation.key(format!("{}{id}", self.entry_prefix));
        invocation.arg(id);
        invocation
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, InboxError> {
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)
    }

    async fn replay_ids(&self, ids: &[String]) -> Result<Vec<i64>, InboxError> {
        let mut codes = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut invocation = self.invocation(&self.scripts.replay);
            invocation.arg(&self.entry_prefix);
            for id in chunk {
                invocation.arg(id);
            }
            codes.extend(self.run::<Vec<i64>>(invocation).await?);
        }
        Ok(codes)
    }
}

/// An eviction policy other than `noeviction` lets Redis delete entries that were answered 2xx
/// (and their stream messages) when it fills up: said once, at start-up. Managed services that
/// hide `CONFIG` say nothing here.
async fn warn_unless_noeviction(connection: &mut (impl redis::aio::ConnectionLike + Send)) {
    let policy: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(connection)
        .await;
    if let Ok(policy) = policy
        && let Some(value) = policy.get(1)
        && value != "noeviction"
    {
        tracing::warn!(
            target: "airmy_verify",
            maxmemory_policy = %value,
            "Redis may evict keys (maxmemory-policy is not noeviction): inbox entries answered 2xx can be lost when it fills up; set maxmemory-policy noeviction"
        );
    }
}

/// The key prefix as the backend needs it: one hash tag, so one Redis Cluster slot.
fn check_prefix(options: &RedisOptions) -> Result<(), RedisError> {
    if options.prefix.is_empty() || options.prefix.contains(['{', '}']) {
        return Err(OpenError::new(
            OpenErrorKind::Invalid,
            "cannot open the Redis inbox: the key prefix is empty or holds `{` or `}` (its \
             hash tag would not keep one inbox in one Redis Cluster slot)",
        ));
    }
    Ok(())
}

/// The set-up on `connection`: the scripts loaded, the consumer group created if missing, a
/// warning for an eviction policy that could drop entries; the inbox's keys and scripts.
async fn prepare(
    connection: &mut (impl redis::aio::ConnectionLike + Send),
    prefix: &str,
) -> Result<([String; 5], Scripts), RedisError> {
    let tag = format!("{{{}}}", prefix);
    let keys = ["stream", "scheduled", "dead", "done", "leases"].map(|name| format!("{tag}{name}"));
    let scripts = Scripts::new();
    scripts.load(connection).await.map_err(open_error)?;
    // Created only when missing: Redis refuses `XGROUP CREATE` when it is out of memory even
    // for a group that exists, and operators must still be able to connect then (to purge).
    let has_group: i64 = scripts
        .has_group
        .key(&keys[0])
        .invoke_async(connection)
        .await
        .map_err(open_error)?;
    if has_group == 0 {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&keys[0])
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(connection)
            .await;
        if let Err(err) = created
            && err.code() != Some("BUSYGROUP")
        {
            return Err(open_error(err));
        }
    }
    warn_unless_noeviction(connection).await;
    Ok((keys, scripts))
}

fn client(url: &str, options: &RedisOptions) -> Result<redis::Client, RedisError> {
    #[cfg(feature = "redis-tls")]
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(pem) = &options.root_ca_pem {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            return redis::Client::build_with_tls(url, certificates).map_err(|e| {
                OpenError::new(
                    OpenErrorKind::Tls,
                    format!("cannot open the Redis inbox: invalid TLS settings: {e}"),
                )
                .with_source(e)
            });
        }
    }
    #[cfg(not(feature = "redis-tls"))]
    let _ = options;
    redis::Client::open(url).map_err(|e| {
        OpenError::new(
            OpenErrorKind::Invalid,
            format!("cannot open the Redis inbox: invalid Redis URL: {e}"),
        )
        .with_source(e)
    })
}

fn redis_error(err: redis::RedisError) -> InboxError {
    if err.code() == Some("OOM") {
        InboxError::full(format!("Redis is out of memory: {err}")).with_source(err)
    } else {
        InboxError::unavailable(format!("Redis: {err}")).with_source(err)
    }
}

/// `d` in milliseconds for a Redis argument, at least 1: a lease or a block of 0 ms would mean
/// "none" or "forever" to Redis.
fn positive_ms(d: Duration) -> i64 {
    duration_ms(d).max(1)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn number<T: std::str::FromStr + Default>(bytes: &[u8]) -> T {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

/// Whether `cursor` is one `list.lua` writes: `s:` and a stream message id (or nothing), or
/// `z:`, a score (or nothing), `:` and the member it stopped at.
fn valid_cursor(cursor: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.parse::<u64>().is_ok();
    if let Some(message) = cursor.strip_prefix("s:") {
        return message.is_empty()
            || message
                .split_once('-')
                .is_some_and(|(ms, seq)| number(ms) && number(seq));
    }
    cursor
        .strip_prefix("z:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(score, _member)| {
            score.is_empty()
                || (score.len() <= 24 && score.parse::<f64>().is_ok_and(f64::is_finite))
        })
}

impl Store for RedisBackend {
    fn accept<'a>(&'a self, delivery: &'a Verified) -> BackendFuture<'a, Accepted> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let job = Job::Accept {
                id: delivery.id().to_owned(),
                event_type: delivery.event_type().to_owned(),
                body: delivery.bytes().clone(),
                reply,
            };
            self.batches
                .accepts
                .send(job)
                .map_err(|_| shutting_down())?;
            match answer.await.unwrap_or_else(|_| Err(shutting_down()))? {
                1 => Ok(Accepted::Stored),
                0 => Ok(Accepted::Duplicate),
                _ => Err(InboxError::full(format!(
                    "{} unfinished entries",
                    self.max_unfinished
                ))),
            }
        })
    }
}

impl Queue for RedisBackend {
    fn take(&self, max: usize, lease: Duration) -> BackendFuture<'_, Vec<Leased>> {
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let lost = self
                .lost_take
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let recovering = lost.is_some();
            let seed = lost.unwrap_or_else(|| airmy_verify::token::random_hex(12));
            let mut invocation = self.invocation(&self.scripts.take);
            invocation
                .arg(&self.entry_prefix)
                .arg(&self.consumer)
                .arg(max)
                .arg(positive_ms(lease))
                .arg(&seed)
                .arg(if recovering { "1" } else { "0" });
            let flat: Vec<Vec<u8>> = match self.run(invocation).await {
                Ok(flat) => flat,
                Err(err) => {
                    *self
                        .lost_take
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(seed);
                    return Err(err);
                }
            };
            Ok(flat
                .chunks_exact(6)
                .map(|f| Leased {
                    id: text(&f[0]),
                    event_type: text(&f[1]),
                    body: Bytes::copy_from_slice(&f[2]),
                    received_at: from_unix_ms(number(&f[3])),
                    attempt: number(&f[4]),
                    token: text(&f[5]),
                })
                .collect())
        })
    }

    fn next_due(&self) -> BackendFuture<'_, Option<OffsetDateTime>> {
        Box::pin(async move {
            let asked = OffsetDateTime::now_utc();
            let [due, now]: [i64; 2] = self.run(self.invocation(&self.scripts.next_due)).await?;
            // Redis's clock decides when an entry is due; this machine's may differ (replicas
            // on other hosts): answer on this machine's clock, so a worker waits the right time
            // instead of finding nothing due and asking again at once. From when it asked, less
            // the millisecond Redis's time was rounded down by: never later than due.
            Ok((due >= 0).then(|| {
                let wait = u64::try_from(due - now - 1).unwrap_or(0);
                asked + Duration::from_millis(wait)
            }))
        })
    }

    fn extend<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.entry_invocation(&self.scripts.extend, id);
            invocation
                .arg(token)
                .arg(positive_ms(lease))
                .arg(&self.consumer);
            Ok(self.run::<i64>(invocation).await? == 1)
        })
    }

    fn complete<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let job = Job::Complete {
                id: id.to_owned(),
                token: token.to_owned(),
                reply,
            };
            self.batches
                .completions
                .send(job)
                .map_err(|_| shutting_down())?;
            Ok(answer.await.unwrap_or_else(|_| Err(shutting_down()))? == 1)
        })
    }

    fn retry<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        error: &'a str,
        at: OffsetDateTime,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.entry_invocation(&self.scripts.retry, id);
            invocation.arg(token).arg(error).arg(unix_ms(at));
            Ok(self.run::<i64>(invocation).await? == 1)
        })
    }

    fn bury<'a>(&'a self, id: &'a str, token: &'a str, error: &'a str) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.entry_invocation(&self.scripts.bury, id);
            invocation.arg(token).arg(error);
            Ok(self.run::<i64>(invocation).await? == 1)
        })
    }

    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.entry_invocation(&self.scripts.release, id);
            invocation.arg(token);
            Ok(self.run::<i64>(invocation).await? == 1)
        })
    }

    fn wait(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let Some(waiting) = &self.waiting else {
                // On the application's connection: look every 100 ms, never block it.
                while started.elapsed() < timeout {
                    if self
                        .has_new_entry(self.connection.clone(), None)
                        .await
                        .unwrap_or(false)
                    {
                        return;
                    }
                    tokio::time::sleep(POLL.min(timeout.saturating_sub(started.elapsed()))).await;
                }
                return;
            };
            let blocked = self.has_new_entry(waiting.clone(), Some(timeout));
            match tokio::time::timeout(timeout + self.timeout, blocked).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => {
                    // Redis unreachable: wait out the timeout rather than spin.
                    tokio::time::sleep_until(started + timeout).await;
                }
            }
        })
    }
}

/// How often an idle worker on the application's connection looks for new entries.
const POLL: Duration = Duration::from_millis(100);

impl RedisBackend {
    /// Whether the stream holds an entry after the group's last delivered id (a new entry, or
    /// one no worker has read yet, whoever added it): at once, or blocking up to `block`.
    async fn has_new_entry(
        &self,
        mut connection: ConnectionManager,
        block: Option<Duration>,
    ) -> redis::RedisResult<bool> {
        let last: String = self
            .invocation(&self.scripts.last_delivered)
            .invoke_async(&mut connection)
            .await?;
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(1);
        if let Some(block) = block {
            read.arg("BLOCK").arg(positive_ms(block));
        }
        let found: redis::Value = read
            .arg("STREAMS")
            .arg(&self.keys[0])
            .arg(last)
            .query_async(&mut connection)
            .await?;
        Ok(!matches!(found, redis::Value::Nil))
    }
}

impl Admin for RedisBackend {
    fn stats(&self) -> BackendFuture<'_, Stats> {
        Box::pin(async move {
            let [len, leased, scheduled, overdue, dead, done, oldest, now]: [i64; 8] =
                self.run(self.invocation(&self.scripts.stats)).await?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(Stats {
                pending: count(len - leased + overdue),
                scheduled: count(scheduled - overdue),
                processing: count(leased),
                dead: count(dead),
                done: count(done),
                oldest_pending_age_secs: (oldest >= 0).then(|| count(now - oldest) / 1000),
            })
        })
    }

    fn list<'a>(&'a self, query: &'a ListQuery) -> BackendFuture<'a, Page> {
        Box::pin(async move {
            let limit = query.page_size();
            let mut invocation = self.invocation(&self.scripts.list);
            invocation
                .arg(&self.entry_prefix)
                .arg(query.state.as_str())
                .arg(match query.order {
                    Order::Oldest => "asc",
                    Order::Newest => "desc",
                })
                .arg(query.after.as_deref().unwrap_or(""))
                .arg(limit)
                // Unfiltered too: the stream of pending entries holds the leased ones' messages,
                // passed over; the page stops as soon as it is full.
                .arg(LIST_SCAN)
                .arg(query.event_type.as_deref().unwrap_or(""))
                .arg(query.id_prefix.as_deref().unwrap_or(""))
                .arg(if query.event_type.is_some() { "1" } else { "0" })
                .arg(if query.id_prefix.is_some() { "1" } else { "0" });
            if let Some(cursor) = query.after.as_deref()
                && !valid_cursor(cursor)
            {
                return Err(InboxError::invalid("not a cursor of this inbox"));
            }
            let flat: Vec<Vec<u8>> = self.run(invocation).await?;
            let Some((next, rest)) = flat.split_first() else {
                return Ok(Page::default());
            };
            if next.as_slice() == b"!bad" {
                return Err(InboxError::invalid(
                    "not a cursor of this listing".to_owned(),
                ));
            }
            let optional_ms = |f: &[u8]| (!f.is_empty()).then(|| from_unix_ms(number(f)));
            let entries = rest
                .chunks_exact(8)
                .map(|f| EntrySummary {
                    id: text(&f[0]),
                    event_type: text(&f[1]),
                    state: query.state,
                    attempts: number(&f[2]),
                    received_at: from_unix_ms(number(&f[3])),
                    next_attempt_at: optional_ms(&f[4]),
                    finished_at: optional_ms(&f[5]),
                    last_error: (!f[6].is_empty()).then(|| text(&f[6])),
                })
                .collect();
            Ok(Page::new(entries, (!next.is_empty()).then(|| text(next))))
        })
    }

    fn entry<'a>(&'a self, id: &'a str) -> BackendFuture<'a, Option<Entry>> {
        Box::pin(async move {
            let mut invocation = self.invocation(&self.scripts.entry);
            invocation.arg(&self.entry_prefix).arg(id);
            let f: Vec<Vec<u8>> = self.run(invocation).await?;
            if f.len() < 11 {
                return Ok(None);
            }
            let optional_ms = |f: &[u8]| (!f.is_empty()).then(|| from_unix_ms(number(f)));
            let now: i64 = number(&f[10]);
            let scheduled: Option<i64> = (!f[9].is_empty()).then(|| number(&f[9]));
            // A pending entry is due since its stream message was added.
            let message_ms = f[8]
                .split(|b| *b == b'-')
                .next()
                .filter(|ms| !ms.is_empty())
                .map(|ms| from_unix_ms(number(ms)));
            let (state, next_attempt_at) = match f[4].as_slice() {
                b"q" => (EntryState::Processing, optional_ms(&f[7])),
                b"x" => (EntryState::Dead, None),
                b"d" => (EntryState::Done, None),
                b"s" => match scheduled {
                    Some(due) if due > now => (EntryState::Scheduled, Some(from_unix_ms(due))),
                    due => (EntryState::Pending, due.map(from_unix_ms)),
                },
                _ => (EntryState::Pending, message_ms),
            };
            let finished_at = matches!(state, EntryState::Dead | EntryState::Done)
                .then(|| optional_ms(&f[6]))
                .flatten();
            Ok(Some(Entry {
                summary: EntrySummary {
                    id: id.to_owned(),
                    event_type: text(&f[0]),
                    state,
                    attempts: number(&f[3]),
                    received_at: from_unix_ms(number(&f[2])),
                    next_attempt_at,
                    finished_at,
                    last_error: (!f[5].is_empty()).then(|| text(&f[5])),
                },
                body: Bytes::from(f[1].clone()),
            }))
        })
    }

    fn replay<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            match self.replay_ids(&[id.to_owned()]).await?.first() {
                Some(1) => Ok(()),
                Some(2) => Err(InboxError::busy(id.to_owned())),
                _ => Err(InboxError::not_found(id.to_owned())),
            }
        })
    }

    fn replay_dead(&self, since: Option<OffsetDateTime>) -> BackendFuture<'_, Vec<String>> {
        Box::pin(async move {
            // The dead-letter stream's message ids carry the time each entry died.
            let mut start = since.map_or_else(|| "-".to_owned(), |t| unix_ms(t).to_string());
            let mut ids = Vec::new();
            loop {
                let mut connection = self.connection.clone();
                let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(&self.keys[2])
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await
                    .map_err(redis_error)?;
                let Some((last, _)) = page.last() else { break };
                start = format!("({last}");
                let full = page.len() == 1000;
                ids.extend(
                    page.into_iter()
                        .filter_map(|(_, fields)| fields.into_iter().next().map(|(_, id)| id)),
                );
                if !full {
                    break;
                }
            }
            let codes = self.replay_ids(&ids).await?;
            Ok(ids
                .into_iter()
                .zip(codes)
                .filter(|(_, code)| *code == 1)
                .map(|(id, _)| id)
                .collect())
        })
    }

    fn purge_done(&self, before: OffsetDateTime) -> BackendFuture<'_, u64> {
        Box::pin(async move {
            const BATCH: u64 = 1000;
            let mut purged = 0;
            loop {
                let mut invocation = self.invocation(&self.scripts.purge);
                invocation
                    .arg(&self.entry_prefix)
                    .arg(unix_ms(before))
                    .arg(BATCH);
                let n: u64 = self.run(invocation).await?;
                purged += n;
                if n < BATCH {
                    return Ok(purged);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::valid_cursor;

    #[test]
    fn only_cursors_the_listing_writes_are_valid() {
        for good in [
            "s:",
            "s:1764000000000-3",
            "z::",
            "z:1764000000123:evt_1",
            "z:1764000000123:evt:with:colons",
            "z:-5:",
        ] {
            assert!(valid_cursor(good), "{good}");
        }
        for bad in [
            "",
            "x",
            "s:1-",
            "s:-1",
            "s:abc",
            "s:99999999999999999999-1",
            "z:",
            "z:1",
            "z:inf:a",
            "z:a:1",
            "1.2",
        ] {
            assert!(!valid_cursor(bad), "{bad}");
        }
    }
}
