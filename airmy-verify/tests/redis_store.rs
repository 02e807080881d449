//! The Redis store (feature `redis`) against a real `redis-server`: the same claim, extend,
//! commit and release rules as the memory store, one Lua script per call.
//!
//! `test_support::RedisServer` uses `AIRMY_REDIS_URL` when set, or starts a `redis-server` of
//! its own; every test uses keys under a prefix of its own, so they can share a server.
#![cfg(feature = "redis")]

use std::time::Duration;

use airmy_verify::idempotency::{
    Claim, Commit, Guarded, Idempotency, IdempotencyStore, MAX_DURATION, OnStoreError, RedisStore,
    RedisStoreOptions,
};
use airmy_verify::{Secret, Verifier};
use test_support::RedisServer;

const LONG: Duration = Duration::from_secs(60);
// Generous margins: a loaded CI machine may pause a task for tens of milliseconds.
const SHORT: Duration = Duration::from_millis(300);
const PAST_SHORT: Duration = Duration::from_millis(450);

/// A verifier with the default tolerance, for the guards' dedupe window.
fn verifier() -> Verifier {
    Verifier::new(Secret::new("whsec_test").expect("a secret"))
}

/// A store on `server` whose keys live under a prefix unique to `test`.
async fn store(server: &RedisServer, test: &str) -> RedisStore {
    let prefix = format!("airmy-verify-test:{}:{test}:", std::process::id());
    RedisStore::connect(server.url(), RedisStoreOptions::default().prefix(prefix))
        .await
        .expect("connects to the test redis-server")
}

/// Delivers `id` through `guard` to a handler that answers 200 at once: `None` when the handler
/// ran, or the status answered instead (200 duplicate, 409 in flight, 503 store unavailable).
async fn deliver(guard: &Idempotency, id: &str) -> Option<u16> {
    let ok = |()| std::future::ready(Ok::<u16, ()>(200));
    match guard.run(id, (), ok, |status| *status).await {
        Guarded::Ran(_) => None,
        Guarded::Answered { answer, .. } => Some(answer.status()),
    }
}

/// The remaining time to live of `id`'s key, in milliseconds (`PTTL`: -1 for no expiry,
/// -2 for no key).
async fn pttl(server: &RedisServer, test: &str, id: &str) -> i64 {
    let client = redis::Client::open(server.url()).expect("URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    redis::cmd("PTTL")
        .arg(format!(
            "airmy-verify-test:{}:{test}:{id}",
            std::process::id()
        ))
        .query_async(&mut connection)
        .await
        .expect("PTTL")
}

#[tokio::test]
async fn claim_in_flight_commit_done() {
    let server = RedisServer::start();
    let store = store(&server, "basic").await;
    assert_eq!(store.claim("e", "a", LONG).await.ok(), Some(Claim::Claimed));
    assert_eq!(
        store.claim("e", "b", LONG).await.ok(),
        Some(Claim::InFlight)
    );
    // Another token can neither release nor commit nor extend the claim.
    store.release("e", "b").await.expect("release");
    assert_eq!(store.commit("e", "b", LONG).await.ok(), Some(Commit::Lost));
    assert_eq!(store.extend("e", "b", LONG).await.ok(), Some(false));
    assert_eq!(
        store.claim("e", "c", LONG).await.ok(),
        Some(Claim::InFlight)
    );
    // Its own token can.
    assert_eq!(store.extend("e", "a", LONG).await.ok(), Some(true));
    assert_eq!(
        store.commit("e", "a", LONG).await.ok(),
        Some(Commit::Committed)
    );
    assert_eq!(store.claim("e", "d", LONG).await.ok(), Some(Claim::Done));
    assert_eq!(store.claim("e", "a", LONG).await.ok(), Some(Claim::Done));
    assert_eq!(
        store.commit("e", "x", LONG).await.ok(),
        Some(Commit::Lost),
        "a commit never overwrites another's"
    );
    assert_eq!(
        store.extend("e", "a", LONG).await.ok(),
        Some(false),
        "done is no claim"
    );
    // A release frees the claim for the next delivery.
    assert_eq!(store.claim("f", "a", LONG).await.ok(), Some(Claim::Claimed));
    store.release("f", "a").await.expect("release");
    assert_eq!(store.claim("f", "b", LONG).await.ok(), Some(Claim::Claimed));
    let ttl = pttl(&server, "basic", "e").await;
    assert!(
        ttl > 0 && ttl <= 60_000,
        "committed for the retention: {ttl} ms"
    );
}

#[tokio::test]
async fn a_claim_retried_with_the_same_token_is_claimed() {
    let server = RedisServer::start();
    let store = store(&server, "retry").await;
    assert_eq!(
        store.claim("e", "a", SHORT).await.ok(),
        Some(Claim::Claimed)
    );
    // The reply to the first claim was lost, say: the retry is the caller's claim again and
    // renews the lease.
    assert_eq!(store.claim("e", "a", LONG).await.ok(), Some(Claim::Claimed));
    assert_eq!(
        store.claim("e", "b", LONG).await.ok(),
        Some(Claim::InFlight)
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        store.claim("e", "b", LONG).await.ok(),
        Some(Claim::InFlight),
        "the retried claim set the longer lease"
    );
    assert_eq!(
        store.commit("e", "a", LONG).await.ok(),
        Some(Commit::Committed)
    );
}

#[tokio::test]
async fn extending_keeps_a_claim_past_its_first_lease() {
    let server = RedisServer::start();
    let store = store(&server, "extend").await;
    assert_eq!(
        store.claim("e", "a", SHORT).await.ok(),
        Some(Claim::Claimed)
    );
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(store.extend("e", "a", SHORT).await.ok(), Some(true));
    }
    // 450 ms after the claim, past its first lease: still held.
    assert_eq!(
        store.claim("e", "b", LONG).await.ok(),
        Some(Claim::InFlight)
    );
    tokio::time::sleep(PAST_SHORT).await;
    // Not extended any more: it expired.
    assert_eq!(store.extend("e", "a", SHORT).await.ok(), Some(false));
    assert_eq!(store.claim("e", "b", LONG).await.ok(), Some(Claim::Claimed));
}

#[tokio::test]
async fn a_late_commit_with_nobody_else_s_claim_is_recorded() {
    let server = RedisServer::start();
    let store = store(&server, "late").await;
    assert_eq!(
        store.claim("e", "a", SHORT).await.ok(),
        Some(Claim::Claimed)
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(pttl(&server, "late", "e").await, -2, "the claim expired");
    // The lease ran out and nobody claimed the id: the late commit is recorded.
    assert_eq!(
        store.commit("e", "a", LONG).await.ok(),
        Some(Commit::Committed)
    );
    assert_eq!(store.claim("e", "b", LONG).await.ok(), Some(Claim::Done));
}

#[tokio::test]
async fn a_late_commit_after_another_claim_is_lost() {
    let server = RedisServer::start();
    let store = store(&server, "lost").await;
    assert_eq!(
        store.claim("e", "a", SHORT).await.ok(),
        Some(Claim::Claimed)
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        store.extend("e", "a", LONG).await.ok(),
        Some(false),
        "expired"
    );
    assert_eq!(store.claim("e", "b", LONG).await.ok(), Some(Claim::Claimed));
    // Another delivery holds the id now: the late commit is reported lost, not recorded.
    assert_eq!(store.commit("e", "a", LONG).await.ok(), Some(Commit::Lost));
    assert_eq!(
        store.claim("e", "c", LONG).await.ok(),
        Some(Claim::InFlight),
        "b's claim stays"
    );
    assert_eq!(store.extend("e", "b", LONG).await.ok(), Some(true));
    // And its own commit goes through.
    assert_eq!(
        store.commit("e", "b", LONG).await.ok(),
        Some(Commit::Committed)
    );
    assert_eq!(store.claim("e", "c", LONG).await.ok(), Some(Claim::Done));
    // A late commit after another's commit is lost too, and leaves the id done.
    assert_eq!(store.commit("e", "a", LONG).await.ok(), Some(Commit::Lost));
    assert_eq!(store.claim("e", "c", LONG).await.ok(), Some(Claim::Done));
}

#[tokio::test]
async fn a_guard_retaining_ids_for_duration_max_commits() {
    let server = RedisServer::start();
    let guard = Idempotency::new(store(&server, "max").await, &verifier())
        .remember_for(Duration::MAX)
        .lease(Duration::MAX);
    assert_eq!(guard.retention(), MAX_DURATION);
    let (started, release) = (
        std::sync::Arc::new(tokio::sync::Notify::new()),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    let running = guard.clone();
    let (on_start, on_release) = (started.clone(), release.clone());
    let first = tokio::spawn(async move {
        let handler = |()| async move {
            on_start.notify_one();
            on_release.notified().await;
            Ok::<u16, ()>(200)
        };
        running.run("evt_1", (), handler, |status| *status).await
    });
    started.notified().await;
    assert_eq!(deliver(&guard, "evt_1").await, Some(409), "in flight");
    // This used to fail in Redis with "value is not an integer or out of range".
    release.notify_one();
    assert!(matches!(first.await.expect("joins"), Guarded::Ran(Ok(200))));
    assert_eq!(deliver(&guard, "evt_1").await, Some(200), "duplicate");
    let ttl = pttl(&server, "max", "evt_1").await;
    let max_ms = i64::try_from(MAX_DURATION.as_millis()).expect("fits");
    assert!(
        ttl > max_ms - 60_000 && ttl <= max_ms,
        "kept for MAX_DURATION, not forever: {ttl} ms"
    );

    // The store itself clamps every duration alike.
    let store = store(&server, "max-store").await;
    assert_eq!(
        store.claim("e", "a", Duration::MAX).await.ok(),
        Some(Claim::Claimed)
    );
    assert_eq!(store.extend("e", "a", Duration::MAX).await.ok(), Some(true));
    assert_eq!(
        store.commit("e", "a", Duration::MAX).await.ok(),
        Some(Commit::Committed)
    );
    assert_eq!(store.claim("e", "b", LONG).await.ok(), Some(Claim::Done));
}

#[tokio::test]
async fn a_guarded_handler_slower_than_the_lease_keeps_its_claim() {
    let server = RedisServer::start();
    let guard = Idempotency::new(store(&server, "slow").await, &verifier()).lease(SHORT);
    let running = guard.clone();
    let handler = tokio::spawn(async move {
        running
            .run(
                "evt_slow",
                (),
                |()| async {
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                    Ok::<u16, ()>(200)
                },
                |status| *status,
            )
            .await
    });
    while guard.running() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Well past the 300 ms lease, the claim is still held: the guard extends it.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(deliver(&guard, "evt_slow").await, Some(409), "in flight");
    }
    guard.wait_idle().await;
    assert_eq!(guard.running(), 0);
    assert!(matches!(
        handler.await.expect("joins"),
        Guarded::Ran(Ok(200))
    ));
    assert_eq!(deliver(&guard, "evt_slow").await, Some(200), "duplicate");
}

/// A Redis that stalls while a claim is made: the claim is stored once Redis resumes, but its
/// reply was lost. The guard's release, sent while Redis was frozen, runs right after it (the
/// scripts were loaded at connect), so a retry is not answered 409 for a whole lease.
#[tokio::test]
async fn a_claim_made_while_redis_stalls_does_not_block_the_retries() {
    let server = RedisServer::start_private();
    let options = RedisStoreOptions::default().timeout(Duration::from_millis(300));
    let store = RedisStore::connect(server.url(), options)
        .await
        .expect("connects");
    let guard = Idempotency::new(store, &verifier()).on_store_error(OnStoreError::Refuse);
    // A first delivery, so the connection is warm.
    assert_eq!(deliver(&guard, "evt_warm").await, None, "runs");

    server.pause();
    let stalled = deliver(&guard, "evt_stalled").await;
    server.resume();
    assert_eq!(stalled, Some(503));
    // What was queued while Redis was frozen runs now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut retry = deliver(&guard, "evt_stalled").await;
    for _ in 0..20 {
        if retry != Some(503) {
            break;
        }
        // The connection manager may still be reconnecting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        retry = deliver(&guard, "evt_stalled").await;
    }
    assert_eq!(retry, None, "the retry runs, not 409");
}

/// On a Redis Cluster (`RedisStoreOptions::cluster`), given a primary that does not own the
/// first event's key: claim, commit and duplicate work, for ids whose keys spread over every
/// primary (each script touches one key). Without the option, that node refuses the key.
#[tokio::test]
async fn the_store_works_on_a_redis_cluster_through_a_node_not_owning_the_key() {
    let cluster = test_support::RedisCluster::start();
    let prefix = format!("airmy-verify-test:{}:cluster:", std::process::id());
    let owner = cluster.primary_of(&format!("{prefix}evt_0"));
    let node = cluster
        .primaries()
        .into_iter()
        .find(|port| *port != owner)
        .expect("another primary");
    let url = format!("redis://127.0.0.1:{node}");
    let options = RedisStoreOptions::default().prefix(&prefix);
    let store = RedisStore::connect(&url, options.clone().cluster(true))
        .await
        .expect("connects to the cluster");

    assert_eq!(
        store.claim("evt_0", "a", LONG).await.ok(),
        Some(Claim::Claimed)
    );
    assert_eq!(
        store.claim("evt_0", "b", LONG).await.ok(),
        Some(Claim::InFlight)
    );
    assert_eq!(store.extend("evt_0", "a", LONG).await.ok(), Some(true));
    assert_eq!(
        store.commit("evt_0", "a", LONG).await.ok(),
        Some(Commit::Committed)
    );
    assert_eq!(
        store.claim("evt_0", "c", LONG).await.ok(),
        Some(Claim::Done)
    );

    // Through the guard, over ids on every primary: each runs once, then is a duplicate.
    let guard = Idempotency::new(store, &verifier());
    let ids: Vec<String> = (1..=30).map(|i| format!("evt_{i}")).collect();
    let mut owners: Vec<u16> = ids
        .iter()
        .map(|id| cluster.primary_of(&format!("{prefix}{id}")))
        .collect();
    owners.sort_unstable();
    owners.dedup();
    assert_eq!(owners.len(), 3, "the ids' keys are on every primary");
    for id in &ids {
        assert_eq!(deliver(&guard, id).await, None, "{id} runs");
    }
    for id in &ids {
        assert_eq!(deliver(&guard, id).await, Some(200), "{id} is a duplicate");
    }

    // One server's store given the same node: refused (`MOVED`) for a key it does not own.
    let single = RedisStore::connect(&url, options)
        .await
        .expect("connects to the node");
    assert!(single.claim("evt_0", "d", LONG).await.is_err());
}

/// Several seeds (`redis://[:password@]a,b,c` with `RedisStoreOptions::cluster`) on a cluster
/// whose nodes have `requirepass`: the store starts while the first seed is down; a wrong
/// password, or none, is `Authentication`, and nothing listening is `Refused`, the kinds one
/// server gives, never shown with the password.
#[tokio::test]
async fn on_a_cluster_several_seeds_start_the_store_and_errors_keep_their_kind() {
    use airmy_verify::idempotency::StoreErrorKind;
    let mut cluster = test_support::RedisCluster::start_with_password("store-s3cret");
    let prefix = format!("airmy-verify-test:{}:seeds:", std::process::id());
    let options = RedisStoreOptions::default().prefix(&prefix).cluster(true);
    // A replica down, first among the seeds.
    let down = cluster.replica_of(&format!("{prefix}evt_seeded"));
    cluster.kill(down);
    let others: Vec<String> = cluster
        .primaries()
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let seeds = format!(
        "redis://:store-s3cret@127.0.0.1:{down},{}",
        others.join(",")
    );
    let store = RedisStore::connect(&seeds, options.clone())
        .await
        .expect("starts from the seeds that answer");
    assert_eq!(
        store.claim("evt_seeded", "a", LONG).await.ok(),
        Some(Claim::Claimed)
    );
    let wrong = seeds.replace("store-s3cret", "not-the-password");
    let missing = seeds.replace(":store-s3cret@", "");
    for url in [&wrong, &missing] {
        let err = RedisStore::connect(url, options.clone())
            .await
            .expect_err("refused credentials");
        assert_eq!(err.kind(), StoreErrorKind::Authentication, "{err}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("not-the-password"), "{shown}");
    }
    drop(cluster);
    let closed = |_| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("address").port()
    };
    let (a, b) = (closed(0), closed(1));
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{a},127.0.0.1:{b}"), options)
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), StoreErrorKind::Refused, "{err}");
}
