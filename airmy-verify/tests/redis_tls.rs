//! The Redis store over TLS (`rediss://`, feature `redis-tls`) against a real `redis-server`
//! listening only on a TLS port, with a certificate from a throwaway CA made by `openssl`.
#![cfg(feature = "redis-tls")]

use std::time::Duration;

use airmy_verify::idempotency::{
    Claim, Commit, IdempotencyStore, RedisStore, RedisStoreOptions, StoreErrorKind,
};

const TIMEOUT: Duration = Duration::from_secs(2);

use test_support::{TlsRedis, make_ca, temp_dir};

#[tokio::test]
async fn claims_and_commits_over_tls_with_a_private_ca() {
    let redis = TlsRedis::start();
    let options = RedisStoreOptions::default()
        .timeout(TIMEOUT)
        .root_ca_pem(redis.ca_pem.clone());
    let store = RedisStore::connect(&redis.url(), options)
        .await
        .expect("TLS connection trusting the test CA");
    let lease = Duration::from_secs(30);
    let id = "evt_tls_1";
    assert_eq!(
        store.claim(id, "t1", lease).await.expect("claim"),
        Claim::Claimed
    );
    assert_eq!(
        store.claim(id, "t2", lease).await.expect("claim"),
        Claim::InFlight
    );
    assert_eq!(
        store
            .commit(id, "t1", Duration::from_secs(60))
            .await
            .expect("commit"),
        Commit::Committed
    );
    assert_eq!(
        store.claim(id, "t3", lease).await.expect("claim"),
        Claim::Done
    );
}

#[tokio::test]
async fn refuses_a_certificate_the_system_does_not_trust() {
    let redis = TlsRedis::start();
    // `connect` verifies against the system's trust store, which does not hold the test CA.
    let err = RedisStore::connect(&redis.url(), RedisStoreOptions::default().timeout(TIMEOUT))
        .await
        .expect_err("an untrusted certificate must not connect");
    assert_eq!(err.kind(), StoreErrorKind::Tls, "{err}");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn refuses_another_ca() {
    let redis = TlsRedis::start();
    let other_dir = temp_dir();
    let other = make_ca(&other_dir.0);
    let options = RedisStoreOptions::default()
        .timeout(TIMEOUT)
        .root_ca_pem(other);
    let err = RedisStore::connect(&redis.url(), options)
        .await
        .expect_err("a certificate signed by another CA must not connect");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn plain_redis_url_to_a_tls_port_fails_cleanly() {
    let redis = TlsRedis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    assert!(
        RedisStore::connect(&url, RedisStoreOptions::default().timeout(TIMEOUT))
            .await
            .is_err()
    );
}
