//! The Redis store: claims and commits shared by every replica behind a load balancer.

use std::fmt;
use std::time::Duration;

use super::store::{
    Claim, Commit, IdempotencyStore, MAX_DURATION, StoreError, StoreErrorKind, StoreFuture,
};
use crate::redis_connection::{RedisConnection, RedisConnectionOptions};
use crate::text::redact_url;

/// Claims a free id (or one already claimed with the caller's token, whose reply was lost),
/// in one round trip: 1 claimed, 2 done, 0 in flight.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'done' then return 2 end
return 0";

/// Extends the claim when the caller's token still holds it: 1 extended, 0 not held.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Commits unless another token claimed or committed the id since the caller's claim
/// expired: 1 committed, 0 lost. The same rule as the memory store's.
const COMMIT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or v == ARGV[1] then
  redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
  return 1
end
return 0";

/// Releases the claim when the caller's token still holds it, never another's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// An [`IdempotencyStore`] on Redis (feature `redis`; `rediss://` with feature `redis-tls`),
/// for several replicas sharing state.
///
/// A claim sets the key to a random token for the lease, an extension renews it, a commit sets
/// it to `done` for the retention and a release deletes it, each in one small Lua script (one
/// round trip) that first checks the token, so one replica never commits, extends or releases
/// another's claim. Keys are `airmy:idempotency:<event id>`
/// unless [`RedisStoreOptions::prefix`] says otherwise: each script touches one key, so on a
/// Redis Cluster ([`RedisStoreOptions::cluster`]) ids spread over every slot. The connection is
/// a `redis` connection manager (or, on a cluster, a cluster connection) that reconnects by
/// itself; every command times out after 1 s (by default,
/// [`RedisStoreOptions::timeout`]) so an unreachable Redis turns into a [`StoreError`] quickly
/// and the guard's policy decides.
///
/// # Example
///
/// ```no_run
/// use airmy_verify::idempotency::{Idempotency, RedisStore, RedisStoreOptions};
/// # async fn example(verifier: airmy_verify::Verifier) -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379", RedisStoreOptions::default()).await?;
/// let guard = Idempotency::new(store, &verifier);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: RedisConnection,
    prefix: String,
    claim: redis::Script,
    extend: redis::Script,
    commit: redis::Script,
    release: redis::Script,
}

/// How to connect a [`RedisStore`]: built with `RedisStoreOptions::default()` and its
/// setters, given to [`RedisStore::connect`].
///
/// ```
/// use std::time::Duration;
/// use airmy_verify::idempotency::RedisStoreOptions;
///
/// let options = RedisStoreOptions::default()
///     .timeout(Duration::from_millis(500))
///     .prefix("billing:idempotency:");
/// ```
#[derive(Clone)]
pub struct RedisStoreOptions {
    timeout: Duration,
    prefix: String,
    cluster: bool,
    #[cfg(feature = "redis-tls")]
    root_ca_pem: Option<Vec<u8>>,
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            prefix: "airmy:idempotency:".to_owned(),
            cluster: false,
            #[cfg(feature = "redis-tls")]
            root_ca_pem: None,
        }
    }
}

impl RedisStoreOptions {
    /// How long connecting, and then every command, may take before it fails as a
    /// [`StoreErrorKind::Timeout`]. Defaults to 1 second.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What goes in front of event ids to make keys. Defaults to `airmy:idempotency:`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether the URL given to [`RedisStore::connect`] is a node of a Redis Cluster (any
    /// node, or a managed service's configuration endpoint). The store then speaks Redis
    /// Cluster: it learns which node owns each slot, sends each event id's script to the node
    /// owning that id's key, and follows `MOVED` and `ASK` when slots move. Defaults to
    /// `false`: one Redis server (a cluster node given without this option refuses the keys of
    /// slots it does not own).
    #[must_use]
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// Trusts only servers whose certificate is signed by `root_ca_pem` (PEM), for a Redis
    /// behind a private CA, on a `rediss://` URL. Feature `redis-tls`. Defaults to the system's
    /// trust store.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    #[must_use]
    pub fn root_ca_pem(mut self, root_ca_pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca_pem = Some(root_ca_pem.into());
        self
    }
}

impl fmt::Debug for RedisStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RedisStoreOptions");
        debug
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .field("cluster", &self.cluster);
        #[cfg(feature = "redis-tls")]
        debug.field("root_ca_pem", &self.root_ca_pem.as_ref().map(|_| "[set]"));
        debug.finish()
    }
}

impl RedisStore {
    /// Connects to Redis at `url` (such as `redis://127.0.0.1:6379`, or `rediss://…` with the
    /// feature `redis-tls`, verified against the system's trust store unless
    /// [`RedisStoreOptions::root_ca_pem`] says otherwise; without the feature a `rediss://`
    /// URL is refused as invalid). On a Redis Cluster ([`RedisStoreOptions::cluster`]), `url`
    /// is any node, or several separated by commas
    /// (`redis://[:password@]node-a:6379,node-b:6379`): the store starts while one is down.
    /// The URL forms and the connection are the core's
    /// [`RedisConnection`](crate::redis_connection::RedisConnection).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the URL or the certificate is invalid, or several hosts are given
    /// without cluster mode ([`StoreErrorKind::Invalid`]), when Redis cannot be reached now
    /// (its [kind](StoreError::kind) says why, on a cluster as on one server:
    /// [`Refused`](StoreErrorKind::Refused), [`Authentication`](StoreErrorKind::Authentication),
    /// [`Timeout`](StoreErrorKind::Timeout), …), or when its certificate is not trusted
    /// ([`StoreErrorKind::Tls`]).
    pub async fn connect(url: &str, options: RedisStoreOptions) -> Result<Self, StoreError> {
        let connecting = RedisConnectionOptions::default()
            .cluster(options.cluster)
            .connection_timeout(options.timeout)
            .response_timeout(Some(options.timeout));
        #[cfg(feature = "redis-tls")]
        let connecting = match &options.root_ca_pem {
            Some(pem) => connecting.root_ca_pem(pem.clone()),
            None => connecting,
        };
        let connected = RedisConnection::connect(url, &connecting);
        let mut connection = if options.cluster {
            // A cluster's start (every node's connection, the map of slots) in the timeout too.
            tokio::time::timeout(options.timeout, connected)
                .await
                .map_err(|_| {
                    StoreError::new(format!(
                        "Redis at {}: could not connect: no answer in time",
                        redact_url(url)
                    ))
                    .with_kind(StoreErrorKind::Timeout)
                })?
        } else {
            connected.await
        }
        .map_err(|e| redis_error(url, "could not connect", e))?;
        let store = Self {
            connection: connection.clone(),
            prefix: options.prefix,
            claim: redis::Script::new(CLAIM),
            extend: redis::Script::new(EXTEND),
            commit: redis::Script::new(COMMIT),
            release: redis::Script::new(RELEASE),
        };
        // Loaded now (on a cluster, on every primary), so that a command sent while Redis
        // stalls (a release after a claim whose reply timed out) runs when Redis resumes,
        // instead of failing as an unknown script with nobody left to load it and retry.
        for script in [&store.claim, &store.extend, &store.commit, &store.release] {
            script
                .load_async(&mut connection)
                .await
                .map_err(|e| redis_error(url, "could not load the scripts", e))?;
        }
        Ok(store)
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
}

/// A Redis error as a [`StoreError`]: its kind as the driver tells it, a message naming the
/// step and the server (its URL without the password), the driver's error as the source.
fn redis_error(url: &str, doing: &str, err: redis::RedisError) -> StoreError {
    let message = format!("Redis at {}: {doing}: {err}", redact_url(url));
    StoreError::new(message)
        .with_kind(kind(&err))
        .with_source(err)
}

/// A failed command: the same, without a URL (the store does not keep it).
fn command_error(err: redis::RedisError) -> StoreError {
    StoreError::new(format!("Redis: {err}"))
        .with_kind(kind(&err))
        .with_source(err)
}

/// How the `redis` driver tells failures apart, as a [`StoreErrorKind`].
fn kind(err: &redis::RedisError) -> StoreErrorKind {
    use redis::{ErrorKind, ServerErrorKind};
    if is_tls(err) {
        return StoreErrorKind::Tls;
    }
    if err.is_timeout() {
        return StoreErrorKind::Timeout;
    }
    if err.is_connection_refusal() {
        return StoreErrorKind::Refused;
    }
    if matches!(err.code(), Some("NOAUTH" | "WRONGPASS")) {
        return StoreErrorKind::Authentication;
    }
    match err.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
            StoreErrorKind::Authentication
        }
        ErrorKind::InvalidClientConfig => StoreErrorKind::Invalid,
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreErrorKind::Other,
        _ => StoreErrorKind::Unavailable,
    }
}

/// Whether a TLS error is somewhere in `err`'s causes: rustls's error, inside an I/O error,
/// possibly behind the `Arc` the driver keeps its causes in.
fn is_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(feature = "redis-tls")]
    {
        type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
        let is_rustls = |e: &(dyn std::error::Error + 'static)| {
            e.is::<rustls::Error>()
                || e.downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::get_ref)
                    .is_some_and(|inner| inner.is::<rustls::Error>())
        };
        let mut cause = Some(err);
        while let Some(e) = cause {
            let shared = e.downcast_ref::<Shared>().map(|arc| &**arc as _);
            if is_rustls(e) || shared.is_some_and(is_rustls) {
                return true;
            }
            cause = e.source();
        }
    }
    let _ = err;
    false
}

/// Milliseconds for `PX`/`PEXPIRE`: at least 1, at most [`MAX_DURATION`] (Redis refuses an
/// expiry that overflows its clock, which `Duration::MAX` would).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.min(MAX_DURATION).as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl IdempotencyStore for RedisStore {
    fn claim<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let found: i64 = self
                .claim
                .key(self.key(id))
                .arg(token)
                .arg(millis(lease))
                .invoke_async(&mut connection)
                .await
                .map_err(command_error)?;
            Ok(match found {
                1 => Claim::Claimed,
                2 => Claim::Done,
                _ => Claim::InFlight,
            })
        })
    }

    fn extend<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let extended: i64 = self
                .extend
                .key(self.key(id))
                .arg(token)
                .arg(millis(lease))
                .invoke_async(&mut connection)
                .await
                .map_err(command_error)?;
            Ok(extended == 1)
        })
    }

    fn commit<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        retention: Duration,
    ) -> StoreFuture<'a, Commit> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let committed: i64 = self
                .commit
                .key(self.key(id))
                .arg(token)
                .arg(millis(retention))
                .invoke_async(&mut connection)
                .await
                .map_err(command_error)?;
            Ok(if committed == 1 {
                Commit::Committed
            } else {
                Commit::Lost
            })
        })
    }

    fn release<'a>(&'a self, id: &'a str, token: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let _: i64 = self
                .release
                .key(self.key(id))
                .arg(token)
                .invoke_async(&mut connection)
                .await
                .map_err(command_error)?;
            Ok(())
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A loopback port nobody listens on (bound, then freed).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("address").port()
    }

    #[tokio::test]
    async fn a_refused_connection_is_typed_keeps_its_cause_and_hides_the_password() {
        let url = format!("redis://:hunter2@127.0.0.1:{}/0", closed_port());
        let options = RedisStoreOptions::default().timeout(Duration::from_millis(500));
        let err = RedisStore::connect(&url, options)
            .await
            .expect_err("nothing listens there");
        assert_eq!(err.kind(), StoreErrorKind::Refused, "{err}");
        let source = err.source().expect("the driver's error is kept");
        assert!(source.downcast_ref::<redis::RedisError>().is_some());
        let (shown, debug) = (err.to_string(), format!("{err:?}"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(shown.contains("redis://[redacted]@127.0.0.1:"), "{shown}");
    }

    #[tokio::test]
    async fn an_invalid_url_is_invalid() {
        let err = RedisStore::connect(
            "redis://:hunter2@127.0.0.1:notaport",
            RedisStoreOptions::default(),
        )
        .await
        .expect_err("does not parse");
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "{err}");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }
}
