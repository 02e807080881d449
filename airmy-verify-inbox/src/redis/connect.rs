//! Connecting a [`RedisBackend`]: its options, its own connections (to one server or to a
//! Redis Cluster) or the application's connection manager, the scripts loaded and the consumer
//! group created; the errors of connecting, by kind.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use airmy_verify::redis_connection::{RedisConnection, RedisConnectionOptions};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::batch::{Batches, run_batches};
use super::scripts::Scripts;
use super::{GROUP, RedisBackend, RedisError};
use crate::{OpenError, OpenErrorKind};

/// The options of a [`RedisBackend`].
#[derive(Clone)]
pub struct RedisOptions {
    pub(super) prefix: String,
    pub(super) max_unfinished: u64,
    pub(super) timeout: Duration,
    pub(super) cluster: bool,
    pub(super) replicas: u32,
    #[cfg(feature = "redis-tls")]
    pub(super) root_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("prefix", &self.prefix)
            .field("max_unfinished", &self.max_unfinished)
            .field("timeout", &self.timeout)
            .field("cluster", &self.cluster)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "airmy:inbox:".to_owned(),
            max_unfinished: 1_000_000,
            timeout: Duration::from_secs(2),
            cluster: false,
            replicas: 0,
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

    /// Whether the URL given to [`RedisBackend::connect`] names a Redis Cluster: any node (a
    /// primary, a replica, or a managed service's configuration endpoint), or several seed
    /// nodes separated by commas (`redis://node-a:6379,node-b:6379,node-c:6379`, so the inbox
    /// starts while one is down). The backend then speaks Redis Cluster: it learns which node
    /// owns the inbox's slot (`CLUSTER SLOTS`), sends every command there, and follows `MOVED`
    /// and `ASK` when the slot moves (a failover, a slot migration). One inbox still lives in
    /// one slot (its hash tag), so on one primary at a time. Defaults to `false`: one Redis
    /// server (a cluster node given without this option refuses the commands of slots it does
    /// not own; several hosts without it are refused as invalid).
    ///
    /// An option rather than a URL scheme or a second constructor: there is no standard URL for
    /// a cluster, and one node is enough to find the others, as a managed service's single
    /// configuration endpoint shows.
    #[must_use]
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// How many replicas must hold an accept before the inbox acknowledges it: each batch of
    /// accepts is sent with Redis `WAIT` behind it on the same connection (waiting at most half
    /// of [`timeout`](Self::timeout)) until that many replicas have received everything the
    /// connection wrote; fewer, and the accepts fail with
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) (the adapters answer 503,
    /// AIRMY retries). Replication is asynchronous otherwise: a primary lost before its replica
    /// got an accept loses it in the failover. A replica *received* the write; whether it is on
    /// its disk yet is its own `appendfsync`. Defaults to 0: acknowledged once the primary has
    /// it.
    ///
    /// - **A duplicate waits too.** An accept answered "duplicate" is acknowledged like a
    ///   stored one, so it waits for the replicas to hold the entry it found, even one another
    ///   process stored and could not get replicated (the script writes the entry again,
    ///   unchanged, so that the `WAIT` covers its first write).
    /// - **Checked at start-up.** [`RedisBackend::connect`] (and
    ///   [`with_connection`](RedisBackend::with_connection)) refuses to start, with an
    ///   [`OpenError`] of kind [`Unavailable`](OpenErrorKind::Unavailable), when the primary
    ///   holding the inbox has fewer than `n` replicas online (`ROLE`): every accept would be
    ///   refused, and a receiver that starts only to answer 503 to everything hides the cause.
    ///   Replicas lost later (the primary's replica promoted in a failover, until the old
    ///   primary returns as a replica) make accepts answer 503 while they are missing.
    #[must_use]
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
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
    /// feature `redis-tls`), loads the scripts and creates the consumer group if needed. On a
    /// Redis Cluster ([`RedisOptions::cluster`]), `url` is any node, or several separated by
    /// commas (`redis://[:password@]node-a:6379,node-b:6379,node-c:6379`), so the inbox starts
    /// while one of them is down. The URL forms and the connections are the core's
    /// [`RedisConnection`].
    ///
    /// # Errors
    ///
    /// A [`RedisError`] of kind [`Invalid`](OpenErrorKind::Invalid) (the URL or the prefix;
    /// several hosts without [`RedisOptions::cluster`]),
    /// [`Refused`](OpenErrorKind::Refused), [`Authentication`](OpenErrorKind::Authentication),
    /// [`Tls`](OpenErrorKind::Tls), [`Timeout`](OpenErrorKind::Timeout) (Redis did not answer
    /// within the options' timeout) or [`Unavailable`](OpenErrorKind::Unavailable) (among
    /// others: fewer replicas online than [`RedisOptions::replicas`] asks for); the same kinds
    /// on a cluster as on one server.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, RedisError> {
        check_prefix(&options)?;
        // Setting up (loading the scripts, creating the group) happens once, at start-up: it
        // gets at least 5 s, whatever the commands' timeout, so a busy machine does not fail it.
        let setup = options.timeout.max(Duration::from_secs(5));
        let connecting = connection_options(&options);
        let connect = |response_timeout: Option<Duration>| {
            let connecting = connecting.clone().response_timeout(response_timeout);
            async move {
                tokio::time::timeout(setup, RedisConnection::connect(url, &connecting))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(open_error)
            }
        };
        // Two connections (on a cluster, two cluster connections, both routed to the node
        // owning the inbox's slot): one for blocking reads (a blocked `XREAD` holds up its
        // connection; their own timeout is set per read), on which the set-up runs too, and
        // one for every other command, each bounded by the options' timeout (on a cluster,
        // redirections and retries included).
        let waiting = connect(None).await?;
        let (keys, scripts) = set_up(waiting.clone(), &options, setup).await?;
        let connection = connect(Some(options.timeout)).await?;
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
        let connection = RedisConnection::Server(connection);
        let (keys, scripts) = set_up(connection.clone(), &options, setup).await?;
        Ok(Self::start(connection, None, keys, scripts, &options))
    }

    /// The backend on its connections, its batches started.
    fn start(
        connection: RedisConnection,
        waiting: Option<RedisConnection>,
        keys: [String; 7],
        scripts: Scripts,
        options: &RedisOptions,
    ) -> Self {
        let entry_prefix = format!("{{{}}}e:", options.prefix);
        let actions = format!("{{{}}}actions", options.prefix);
        let (accepts, accept_queue) = mpsc::unbounded_channel();
        let (completions, completion_queue) = mpsc::unbounded_channel();
        tokio::spawn(run_batches(
            connection.clone(),
            scripts.accept.clone(),
            keys.clone(),
            vec![
                entry_prefix.clone(),
                options.max_unfinished.to_string(),
                // With replicas to wait for, a duplicate is written again (unchanged), so the
                // `WAIT` after it covers the entry's first write, whoever made it.
                if options.replicas > 0 { "1" } else { "0" }.to_owned(),
            ],
            (options.replicas > 0).then_some((options.replicas, options.timeout / 2)),
            crate::batch::Measured::Accepts("redis"),
            accept_queue,
        ));
        tokio::spawn(run_batches(
            connection.clone(),
            scripts.complete.clone(),
            keys.clone(),
            vec![entry_prefix.clone()],
            None,
            crate::batch::Measured::Other,
            completion_queue,
        ));
        Self {
            connection,
            waiting,
            entry_prefix,
            keys,
            actions,
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
) -> Result<([String; 7], Scripts), RedisError> {
    let tag = format!("{{{}}}", prefix);
    let keys = [
        "stream",
        "scheduled",
        "dead",
        "done",
        "leases",
        "paused",
        "pauses",
    ]
    .map(|name| format!("{tag}{name}"));
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

/// The core's connection options for the backend's options: one server or a cluster, each
/// connection attempt bounded by the options' timeout, the CA to trust.
fn connection_options(options: &RedisOptions) -> RedisConnectionOptions {
    let connecting = RedisConnectionOptions::default()
        .cluster(options.cluster)
        .connection_timeout(options.timeout);
    #[cfg(feature = "redis-tls")]
    if let Some(pem) = &options.root_ca_pem {
        return connecting.root_ca_pem(pem.clone());
    }
    connecting
}

/// The set-up on `connection`, within `setup`: [`prepare`], then, with
/// [`RedisOptions::replicas`], the replicas checked.
async fn set_up(
    mut connection: RedisConnection,
    options: &RedisOptions,
    setup: Duration,
) -> Result<([String; 7], Scripts), RedisError> {
    tokio::time::timeout(setup, async {
        let (keys, scripts) = prepare(&mut connection, &options.prefix).await?;
        if options.replicas > 0 {
            check_replicas(&mut connection, &keys[0], options.replicas).await?;
        }
        Ok((keys, scripts))
    })
    .await
    .map_err(|_| timed_out())?
}

/// With [`RedisOptions::replicas`]`(n)`, the primary holding the inbox (`key`'s slot) must have
/// `n` replicas online (`ROLE`): with fewer, every accept would be refused (503) until more
/// attach, so the inbox refuses to start instead, saying so.
async fn check_replicas(
    connection: &mut RedisConnection,
    key: &str,
    wanted: u32,
) -> Result<(), RedisError> {
    let role: Vec<redis::Value> = connection
        .query_primary_of(key, &redis::cmd("ROLE"))
        .await
        .map_err(open_error)?;
    let is_primary = role
        .first()
        .and_then(|name| redis::from_redis_value::<String>(name.clone()).ok())
        .is_some_and(|name| name == "master");
    let online = match role.get(2) {
        Some(redis::Value::Array(replicas)) if is_primary => replicas.len(),
        _ => {
            return Err(OpenError::new(
                OpenErrorKind::Unavailable,
                "cannot open the Redis inbox: RedisOptions::replicas needs the inbox's server to \
                 be a primary, and its ROLE is not `master`",
            ));
        }
    };
    if online < usize::try_from(wanted).unwrap_or(usize::MAX) {
        return Err(OpenError::new(
            OpenErrorKind::Unavailable,
            format!(
                "cannot open the Redis inbox: RedisOptions::replicas({wanted}) acknowledges an \
                 accept only once {wanted} replica(s) hold it, and the primary holding the \
                 inbox has {online} online: every accept would be refused (503)"
            ),
        ));
    }
    Ok(())
}
