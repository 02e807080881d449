//! The Redis backend over TLS (`rediss://`, feature `redis-tls`) against a real `redis-server`
//! listening only on a TLS port, with a certificate from a throwaway CA.
#![cfg(feature = "redis-tls")]

use std::time::Duration;

use airmy_verify_inbox::conformance::delivery;
use airmy_verify_inbox::{Accepted, Queue, RedisBackend, RedisOptions, Store};
use test_support::{TlsRedis, make_ca, temp_dir};

#[tokio::test]
async fn the_inbox_works_over_tls_with_a_private_ca() {
    let redis = TlsRedis::start();
    let backend = RedisBackend::connect(
        &redis.url(),
        RedisOptions::default().root_ca_pem(redis.ca_pem.clone()),
    )
    .await
    .expect("TLS connection trusting the test CA");
    let d = delivery("evt_tls", "run.completed");
    assert_eq!(
        backend.accept(&d).await.expect("accepted"),
        Accepted::Stored
    );
    assert_eq!(
        backend.accept(&d).await.expect("accepted"),
        Accepted::Duplicate
    );
    let taken = backend
        .take(1, Duration::from_secs(30))
        .await
        .expect("take");
    assert_eq!(taken[0].body, *d.bytes());
    assert!(
        backend
            .complete(&taken[0].id, &taken[0].token)
            .await
            .expect("complete")
    );
}

#[tokio::test]
async fn another_ca_the_system_store_or_plain_redis_are_refused() {
    let redis = TlsRedis::start();
    let quick = || RedisOptions::default().timeout(Duration::from_secs(1));
    let err = RedisBackend::connect(&redis.url(), quick())
        .await
        .expect_err("the system's trust store does not hold the test CA");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    let other_dir = temp_dir();
    let other = make_ca(&other_dir.0);
    let err = RedisBackend::connect(&redis.url(), quick().root_ca_pem(other))
        .await
        .expect_err("signed by another CA");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    let plain = format!("redis://127.0.0.1:{}", redis.port);
    assert!(RedisBackend::connect(&plain, quick()).await.is_err());
}
