//! The Redis store: claims and commits shared by every replica behind a load balancer.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Claim, IdempotencyStore, StoreError, StoreFuture};

/// Commits the claim when the caller's token still holds it.
const COMMIT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
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
/// A claim is `SET key token NX PX lease`; a commit sets the key to `done` for the retention
/// and a release deletes it, each in a small Lua script that first checks the token, so one
/// replica never commits or releases another's claim. Keys are `airmy:idempotency:<event id>`
/// unless [`RedisStore::prefix`] says otherwise. The connection is a `redis` connection manager
/// that reconnects by itself; every command times out after 1 s (by default) so an unreachable
/// Redis turns into a [`StoreError`] quickly and the guard's policy decides.
///
/// # Example
///
/// ```no_run
/// use airmy_verify::idempotency::{Idempotency, RedisStore};
/// # async fn example(verifier: airmy_verify::Verifier) -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let guard = Idempotency::new(store, &verifier)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    commit: redis::Script,
    release: redis::Script,
}

impl RedisStore {
    /// Connects to Redis at `url` (such as `redis://127.0.0.1:6379`), with 1 s timeouts.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the URL is invalid or Redis cannot be reached now.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_timeout(url, Duration::from_secs(1)).await
    }

    /// Connects to Redis at `url`; connecting and every command time out after `timeout`.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the URL is invalid or Redis cannot be reached now.
    pub async fn connect_with_timeout(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        install_tls_provider();
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::new(format!("invalid Redis URL: {e}")))?;
        Self::with_client(client, timeout).await
    }

    /// Connects over TLS (a `rediss://` URL) to a server whose certificate is signed by
    /// `root_ca_pem` (PEM), instead of the system's trust store, for a Redis behind a private
    /// CA; connecting and every command time out after `timeout`. Feature `redis-tls`.
    ///
    /// [`RedisStore::connect`] takes `rediss://` URLs too, verified against the system's trust
    /// store, when the feature is on. Without it, a `rediss://` URL is refused as invalid.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the URL or the certificate is invalid, or when Redis cannot be
    /// reached or its certificate is not signed by `root_ca_pem` (or not for its host).
    #[cfg(feature = "redis-tls")]
    pub async fn connect_tls(
        url: &str,
        root_ca_pem: &[u8],
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        install_tls_provider();
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_ca_pem.to_vec()),
        };
        let client = redis::Client::build_with_tls(url, certificates)
            .map_err(|e| StoreError::new(format!("invalid Redis TLS settings: {e}")))?;
        Self::with_client(client, timeout).await
    }

    async fn with_client(client: redis::Client, timeout: Duration) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(redis_error)?;
        Ok(Self {
            connection,
            prefix: "airmy:idempotency:".to_owned(),
            commit: redis::Script::new(COMMIT),
            release: redis::Script::new(RELEASE),
        })
    }

    /// Uses `prefix` in front of event ids for keys. Defaults to `airmy:idempotency:`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
}

/// Makes rustls's `ring` provider the process default, unless one is set already (by the
/// application, or by an earlier connection), so TLS works whatever else enabled rustls.
fn install_tls_provider() {
    #[cfg(feature = "redis-tls")]
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn redis_error(err: redis::RedisError) -> StoreError {
    StoreError::new(format!("Redis: {err}"))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl IdempotencyStore for RedisStore {
    fn claim<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            let key = self.key(id);
            let mut connection = self.connection.clone();
            // A claim that expires between SET and GET is simply tried once more.
            for _ in 0..2 {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(lease))
                    .query_async(&mut connection)
                    .await
                    .map_err(redis_error)?;
                if set.is_some() {
                    return Ok(Claim::Claimed);
                }
                let value: Option<String> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .map_err(redis_error)?;
                match value.as_deref() {
                    Some("done") => return Ok(Claim::Done),
                    Some(_) => return Ok(Claim::InFlight),
                    None => {}
                }
            }
            Ok(Claim::InFlight)
        })
    }

    fn commit<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        retention: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let _: i64 = self
                .commit
                .key(self.key(id))
                .arg(token)
                .arg(millis(retention))
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error)?;
            Ok(())
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
                .map_err(redis_error)?;
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
