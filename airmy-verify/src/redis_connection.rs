//! One connection to Redis, to one server or to a Redis Cluster (feature `redis`): what the
//! suite's Redis users send their commands through (the idempotency
//! [`RedisStore`](crate::idempotency::RedisStore) here, the inbox's Redis backend in
//! `airmy-verify-inbox`), so that connecting, the URL forms and the errors of connecting are
//! one rule.
//!
//! A URL names one server, `redis://[user:password@]host:port[/db]` (`rediss://` with feature
//! `redis-tls`), or, in cluster mode ([`RedisConnectionOptions::cluster`]), one or several seed
//! nodes of a Redis Cluster, their hosts separated by commas:
//! `redis://[user:password@]host1:port1,host2:port2,host3:port3`. Every seed shares the URL's
//! user information, database and query; the connection starts from any seed that answers (so
//! it starts while one is down) and learns the other nodes from it. Several hosts without
//! cluster mode are refused: they name a cluster's seeds, not one server.
//!
//! # Example
//!
//! ```no_run
//! use airmy_verify::redis_connection::{RedisConnection, RedisConnectionOptions};
//!
//! # async fn example() -> Result<(), redis::RedisError> {
//! let options = RedisConnectionOptions::default().cluster(true);
//! let mut connection =
//!     RedisConnection::connect("redis://node-a:6379,node-b:6379,node-c:6379", &options).await?;
//! let pong: String = redis::cmd("PING").query_async(&mut connection).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, RedisResult};

/// A connection to Redis: a connection manager to one server, or a cluster connection that
/// routes each command to the node owning its keys' slot and follows `MOVED` and `ASK`. Both
/// reconnect by themselves (the cluster's also refreshes its map of slots). Cheap to clone:
/// clones share the same connections. Commands go through it as through any `redis`
/// connection ([`redis::aio::ConnectionLike`]).
#[derive(Clone)]
pub enum RedisConnection {
    /// One server.
    Server(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Server(_) => "RedisConnection::Server",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(connection: ConnectionManager) -> Self {
        Self::Server(connection)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(connection: ClusterConnection) -> Self {
        Self::Cluster(connection)
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
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

/// How [`RedisConnection::connect`] connects: built with `RedisConnectionOptions::default()`
/// and its setters.
///
/// ```
/// use std::time::Duration;
/// use airmy_verify::redis_connection::RedisConnectionOptions;
///
/// let options = RedisConnectionOptions::default()
///     .cluster(true)
///     .connection_timeout(Duration::from_secs(2))
///     .response_timeout(None);
/// ```
#[derive(Clone)]
pub struct RedisConnectionOptions {
    cluster: bool,
    connection_timeout: Duration,
    response_timeout: Option<Duration>,
    #[cfg(feature = "redis-tls")]
    root_ca_pem: Option<Vec<u8>>,
}

impl Default for RedisConnectionOptions {
    fn default() -> Self {
        Self {
            cluster: false,
            connection_timeout: Duration::from_secs(1),
            response_timeout: Some(Duration::from_secs(1)),
            #[cfg(feature = "redis-tls")]
            root_ca_pem: None,
        }
    }
}

impl fmt::Debug for RedisConnectionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RedisConnectionOptions");
        debug
            .field("cluster", &self.cluster)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout);
        #[cfg(feature = "redis-tls")]
        debug.field("root_ca_pem", &self.root_ca_pem.as_ref().map(|_| "[set]"));
        debug.finish()
    }
}

impl RedisConnectionOptions {
    /// Whether the URL names a Redis Cluster's seed nodes (any node: a primary, a replica, a
    /// managed service's configuration endpoint; or several, separated by commas) rather than
    /// one server. Defaults to `false`.
    #[must_use]
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// How long opening one connection (to the server, or to one node) may take. Defaults to
    /// 1 second.
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long each command may take, on a cluster redirections and retries included; `None`:
    /// as long as it takes (for blocking reads, bounded by their own timeout). Defaults to
    /// 1 second.
    #[must_use]
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Trusts only servers whose certificate is signed by `root_ca_pem` (PEM), on a
    /// `rediss://` URL. Feature `redis-tls`. Defaults to the system's trust store.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    #[must_use]
    pub fn root_ca_pem(mut self, root_ca_pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca_pem = Some(root_ca_pem.into());
        self
    }
}

impl RedisConnection {
    /// Connects to the server at `url`, or, in cluster mode, to the cluster whose seed nodes
    /// `url` names (see the [module docs](self) for the forms). One server gets a connection
    /// manager that retries a failed connection once (after up to 500 ms); a cluster, a cluster
    /// connection started from whichever seeds answer.
    ///
    /// # Errors
    ///
    /// The driver's error, as precise as connecting to one server gives it: refused, an
    /// authentication failure (`WRONGPASS`, `NOAUTH`), TLS, a timeout. When no seed of a
    /// cluster can be connected, the error is a seed's own (one that answered first: a wrong
    /// password says so, rather than the cluster client's "failed to create initial
    /// connections"). Several hosts without cluster mode, or an empty one, are an error of
    /// kind [`InvalidClientConfig`](redis::ErrorKind::InvalidClientConfig).
    pub async fn connect(url: &str, options: &RedisConnectionOptions) -> RedisResult<Self> {
        install_tls_provider();
        let nodes = node_urls(url)?;
        if !options.cluster {
            if nodes.len() > 1 {
                return Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "several hosts name the seed nodes of a Redis Cluster",
                    "they need cluster mode (`cluster(true)`, or `?cluster=true` in a URL with \
                     parameters)"
                        .to_owned(),
                )));
            }
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.connection_timeout))
                .set_response_timeout(options.response_timeout)
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let manager = ConnectionManager::new_with_config(server_client(url, options)?, config);
            return Ok(Self::Server(manager.await?));
        }
        let mut builder = redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(options.connection_timeout);
        if let Some(timeout) = options.response_timeout {
            builder = builder.response_timeout(timeout);
        }
        #[cfg(feature = "redis-tls")]
        if let Some(pem) = &options.root_ca_pem {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            });
        }
        match builder.build()?.get_async_connection().await {
            Ok(connection) => Ok(Self::Cluster(connection)),
            Err(err) => Err(seeds_error(&nodes, options).await.unwrap_or(err)),
        }
    }

    /// Sends `cmd` (a command without keys, such as `ROLE` or `INFO`) to the primary that owns
    /// `key`'s slot; on one server, to the server.
    ///
    /// # Errors
    ///
    /// The driver's error, or the reply not being a `T`.
    pub async fn query_primary_of<T: redis::FromRedisValue>(
        &mut self,
        key: &str,
        cmd: &redis::Cmd,
    ) -> RedisResult<T> {
        match self {
            Self::Server(connection) => cmd.query_async(connection).await,
            Self::Cluster(connection) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                let value = connection.route_command(cmd.clone(), node).await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }
}

/// A client of the one server at `url`, trusting the options' CA if any.
fn server_client(url: &str, options: &RedisConnectionOptions) -> RedisResult<redis::Client> {
    #[cfg(feature = "redis-tls")]
    if let Some(pem) = &options.root_ca_pem {
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        };
        return redis::Client::build_with_tls(url, certificates);
    }
    let _ = options;
    redis::Client::open(url)
}

/// When no seed of a cluster could be connected: why, as each seed says it on a connection of
/// its own (the cluster client keeps only a message). The error of a seed that answered (a
/// wrong password, TLS) before one that did not (refused, timed out); `None` when a seed
/// connects, so the cluster's own error stands.
async fn seeds_error(nodes: &[String], options: &RedisConnectionOptions) -> Option<RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connection_timeout))
        .set_response_timeout(Some(options.connection_timeout));
    let config = &config;
    // A `PING` too: without a password, connecting succeeds and the first command says NOAUTH.
    let attempts = nodes.iter().map(|node| async move {
        let mut connection = server_client(node, options)?
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut connection).await
    });
    let mut errors = Vec::with_capacity(nodes.len());
    for result in futures_util::future::join_all(attempts).await {
        match result {
            Ok(()) => return None,
            Err(err) => errors.push(err),
        }
    }
    let answered = errors
        .iter()
        .position(|e| !e.is_connection_refusal() && !e.is_timeout())
        .unwrap_or(0);
    (!errors.is_empty()).then(|| errors.swap_remove(answered))
}

/// The URLs of the nodes `url` names: itself, or, when its host part lists several hosts
/// separated by commas, one URL per host with the same scheme, user information, path, query
/// and fragment. The user information ends at the last `@` before the path (a password may
/// hold a comma).
fn node_urls(url: &str) -> RedisResult<Vec<String>> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return Ok(vec![url.to_owned()]);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let hosts_start = authority.rfind('@').map_or(0, |at| at + 1);
    let hosts = &authority[hosts_start..];
    if !hosts.contains(',') {
        return Ok(vec![url.to_owned()]);
    }
    let (head, tail) = (&url[..scheme_end + hosts_start], &rest[authority_end..]);
    hosts
        .split(',')
        .map(|host| {
            if host.is_empty() {
                Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "an empty host in a list of seed nodes",
                )))
            } else {
                Ok(format!("{head}{host}{tail}"))
            }
        })
        .collect()
}

/// Makes rustls's `ring` provider the process default, unless one is set already (by the
/// application, or by an earlier connection), so TLS works whatever else enabled rustls.
fn install_tls_provider() {
    #[cfg(feature = "redis-tls")]
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_is_the_url_itself() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:pa,ss@127.0.0.1:6379/2?protocol=resp3",
            "rediss://user:p@ss@host",
            "redis://[::1]:6379",
        ] {
            assert_eq!(node_urls(url).expect("one node"), [url]);
        }
    }

    #[test]
    fn several_hosts_are_one_url_each_with_the_same_credentials_and_query() {
        assert_eq!(
            node_urls("redis://:pa,ss@a:1,b:2,[::1]:3/0?protocol=resp3").expect("three nodes"),
            [
                "redis://:pa,ss@a:1/0?protocol=resp3",
                "redis://:pa,ss@b:2/0?protocol=resp3",
                "redis://:pa,ss@[::1]:3/0?protocol=resp3",
            ]
        );
        assert_eq!(
            node_urls("rediss://a:1,b:2").expect("two nodes"),
            ["rediss://a:1", "rediss://b:2"]
        );
    }

    #[test]
    fn an_empty_host_is_invalid() {
        for url in ["redis://a:1,", "redis://,a:1", "redis://a:1,,b:2"] {
            let err = node_urls(url).expect_err(url);
            assert_eq!(err.kind(), redis::ErrorKind::InvalidClientConfig);
        }
    }

    #[tokio::test]
    async fn several_hosts_need_cluster_mode() {
        let err = RedisConnection::connect(
            "redis://:hunter2@127.0.0.1:1,127.0.0.1:2",
            &RedisConnectionOptions::default(),
        )
        .await
        .expect_err("several hosts, one server");
        assert_eq!(err.kind(), redis::ErrorKind::InvalidClientConfig);
        assert!(err.to_string().contains("cluster"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
