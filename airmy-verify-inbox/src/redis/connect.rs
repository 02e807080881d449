//! Connecting a [`RedisBackend`]: its options, its own connections (to one server or to a
//! Redis Cluster) or the application's connection manager, the scripts loaded and the consumer
//! group created; the errors of connecting, by kind.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
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

    /// Whether the URL given to [`RedisBackend::connect`] is a node of a Redis Cluster (any
    /// node: a primary, a replica, or a managed service's configuration endpoint). The backend
    /// then speaks Redis Cluster: it learns which node owns the inbox's slot (`CLUSTER SLOTS`),
    /// sends every command there, and follows `MOVED` and `ASK` when the slot moves (a
    /// failover, a slot migration). One inbox still lives in one slot (its hash tag), so on one
    /// primary at a time. Defaults to `false`: one Redis server (a cluster node given without
    /// this option refuses the commands of slots it does not own).
    ///
    /// An option rather than a URL scheme or a second constructor: there is no standard URL for
    /// a cluster, and one node is enough to find the others, as a managed service's single
    /// configuration endpoint shows.
    #[must_use]
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// How many replicas must hold an accept before the inbox acknowledges it: after each batch
    /// of accepts, Redis `WAIT`s (at most half of [`timeout`](Self::timeout)) until that many
    /// replicas have received everything this connection wrote; fewer, and the accepts fail
    /// with [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) (the adapters answer 503,
    /// AIRMY retries). Replication is asynchronous otherwise: a primary lost before its replica
    /// got an accept loses it in the failover. A replica *received* the write; whether it is on
    /// its disk yet is its own `appendfsync`. Defaults to 0: acknowledged once the primary has it.
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

/// What the backend sends its commands through: a connection manager to one server, or a
/// cluster connection that routes each command to the node owning its keys' slot and follows
/// redirections. One type, so the scripts, the batches and the operator's commands have one
/// path whatever the topology.
#[derive(Clone)]
pub(super) enum Connection {
    /// One server (reconnects by itself).
    Server(ConnectionManager),
    /// A Redis Cluster (reconnects and refreshes its slot map by itself).
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Server(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Server(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connection {
    /// Redis `WAIT replicas timeout` on the connection to the node owning `key` (the one that
    /// ran this connection's writes to it): how many replicas hold them.
    pub(super) async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u64> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        match self {
            Self::Server(connection) => wait.query_async(connection).await,
            Self::Cluster(connection) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                let value = connection.route_command(wait, node).await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
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
        // Setting up (loading the scripts, creating the group) happens once, at start-up: it
        // gets at least 5 s, whatever the commands' timeout, so a busy machine does not fail it.
        let setup = options.timeout.max(Duration::from_secs(5));
        if options.cluster {
            return Self::connect_cluster(url, options, setup).await;
        }
        let client = client(url, &options)?;
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
            Connection::Server(connection),
            Some(Connection::Server(waiting)),
            keys,
            scripts,
            &options,
        ))
    }

    /// [`connect`](Self::connect) to a Redis Cluster ([`RedisOptions::cluster`]): two cluster
    /// connections, one for commands (each bounded by the options' timeout, redirections and
    /// retries included) and one for blocking reads (a blocked `XREAD` holds up the node's
    /// connection it runs on), both routed to the node owning the inbox's slot.
    async fn connect_cluster(
        url: &str,
        options: RedisOptions,
        setup: Duration,
    ) -> Result<Self, RedisError> {
        let connect = |response_timeout: Option<Duration>| {
            let client = cluster_client(url, &options, response_timeout);
            async move {
                let client = client?;
                tokio::time::timeout(setup, client.get_async_connection())
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(open_error)
            }
        };
        // Blocking reads last up to a second; their own timeout is set per read.
        let waiting = connect(None).await?;
        let mut setting_up = waiting.clone();
        let (keys, scripts) =
            tokio::time::timeout(setup, prepare(&mut setting_up, &options.prefix))
                .await
                .map_err(|_| timed_out())??;
        let connection = connect(Some(options.timeout)).await?;
        Ok(Self::start(
            Connection::Cluster(connection),
            Some(Connection::Cluster(waiting)),
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
        Ok(Self::start(
            Connection::Server(connection),
            None,
            keys,
            scripts,
            &options,
        ))
    }

    /// The backend on its connections, its batches started.
    fn start(
        connection: Connection,
        waiting: Option<Connection>,
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

/// A cluster client starting from the node at `url`: connecting bounded by the options'
/// timeout, each command (redirections and retries included) by `response_timeout` (`None`:
/// unbounded, for blocking reads).
fn cluster_client(
    url: &str,
    options: &RedisOptions,
    response_timeout: Option<Duration>,
) -> Result<redis::cluster::ClusterClient, RedisError> {
    let mut builder =
        redis::cluster::ClusterClient::builder([url]).connection_timeout(options.timeout);
    if let Some(timeout) = response_timeout {
        builder = builder.response_timeout(timeout);
    }
    #[cfg(feature = "redis-tls")]
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(pem) = &options.root_ca_pem {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            });
        }
    }
    builder.build().map_err(|e| {
        OpenError::new(
            OpenErrorKind::Invalid,
            format!("cannot open the Redis inbox: invalid Redis Cluster URL: {e}"),
        )
        .with_source(e)
    })
}
