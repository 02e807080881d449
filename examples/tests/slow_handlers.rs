//! Black-box tests of the receivers with slow handlers (`AIRMY_HANDLER_DELAY_MS`): a client
//! that gives up before the handler finishes, AIRMY's retries, SIGTERM in the middle of a
//! handling, the stdout contract, and a bounded soak test counting `handled` lines.
//!
//! The full soak (10,000 ids per receiver and store) is `#[ignore]`d; run it with
//! `cargo test --release -p examples --test slow_handlers -- --ignored soak_full`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airmy_verify::testing::{self, Delivery};
use airmy_verify::time::OffsetDateTime;
use test_support::RedisServer;

mod common;

use common::{ACTIX, AXUM, Receiver, client, delivery};

/// How many `handled <id> <type>` lines each id got so far.
fn handled(r: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in r.lines() {
        let mut words = line.split(' ');
        assert_eq!(
            words.next(),
            Some("handled"),
            "unexpected stdout line {line:?}"
        );
        let id = words.next().expect("an id").to_owned();
        assert!(words.next().is_some(), "a type: {line:?}");
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// One attempt: the status, or `None` when the client gave up after `timeout`.
async fn attempt(
    client: &reqwest::Client,
    url: &str,
    d: &Delivery,
    timeout: Duration,
) -> Option<(u16, String)> {
    let response = client
        .post(url)
        .header("x-airmy-signature", &d.signature)
        .body(d.body.clone())
        .timeout(timeout)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

fn unique(prefix: &str) -> String {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!("{prefix}_{nanos}_{}", std::process::id())
}

/// A client that hangs up before the 1.5 s handler finishes: a retry while it runs gets 409,
/// a retry after its time gets 200 duplicate, and the handler completed exactly once.
async fn client_gives_up_then_retry_is_duplicate(bin: &str, store: &str) {
    let r = Receiver::start(
        bin,
        &[
            ("AIRMY_HANDLER_DELAY_MS", "1500"),
            ("AIRMY_IDEMPOTENCY", store),
        ],
    )
    .await;
    let client = client();
    let id = unique("evt_slow");
    let d = delivery(&id);
    let started = Instant::now();
    assert_eq!(
        attempt(&client, &r.url, &d, Duration::from_millis(300)).await,
        None,
        "{bin} {store}: the first attempt times out on the client"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = attempt(&client, &r.url, &d, Duration::from_secs(10)).await;
    if started.elapsed() < Duration::from_millis(1400) {
        assert_eq!(during.map(|a| a.0), Some(409), "{bin} {store}: in flight");
    }
    tokio::time::sleep(
        Duration::from_millis(1500).saturating_sub(started.elapsed()) + Duration::from_millis(700),
    )
    .await;
    let (status, body) = attempt(&client, &r.url, &d, Duration::from_secs(10))
        .await
        .expect("answered");
    assert_eq!(status, 200, "{bin} {store}: {body}");
    assert!(body.contains("duplicate"), "{bin} {store}: {body}");
    assert_eq!(
        handled(&r).get(&id),
        Some(&1),
        "{bin} {store}: {:?}",
        r.lines()
    );
}

#[tokio::test]
async fn axum_memory_a_client_that_gives_up_is_answered_duplicate_later() {
    client_gives_up_then_retry_is_duplicate(AXUM, "memory").await;
}

#[tokio::test]
async fn actix_memory_a_client_that_gives_up_is_answered_duplicate_later() {
    client_gives_up_then_retry_is_duplicate(ACTIX, "memory").await;
}

#[tokio::test]
async fn axum_redis_a_client_that_gives_up_is_answered_duplicate_later() {
    let redis = RedisServer::start();
    client_gives_up_then_retry_is_duplicate(AXUM, redis.url()).await;
}

#[tokio::test]
async fn actix_redis_a_client_that_gives_up_is_answered_duplicate_later() {
    let redis = RedisServer::start();
    client_gives_up_then_retry_is_duplicate(ACTIX, redis.url()).await;
}

#[tokio::test]
async fn stdout_has_one_listening_line_then_only_handled_lines() {
    for bin in [AXUM, ACTIX] {
        // `localhost` may resolve to two addresses: still one line.
        let r = Receiver::start(bin, &[("AIRMY_LISTEN", "localhost:0")]).await;
        let d = delivery(&unique("evt_line"));
        assert_eq!(
            attempt(&client(), &r.url, &d, Duration::from_secs(10))
                .await
                .map(|a| a.0),
            Some(200)
        );
        let forged = Delivery::sign(d.body.clone(), testing::WRONG_SECRET);
        assert_eq!(
            attempt(&client(), &r.url, &forged, Duration::from_secs(10))
                .await
                .map(|a| a.0),
            Some(401)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lines = r.lines();
        assert!(
            r.first.starts_with("listening on http://"),
            "{bin}: {}",
            r.first
        );
        assert_eq!(
            lines,
            [format!("handled {} run.completed", d.body_id())],
            "{bin}"
        );
    }
}

trait BodyId {
    fn body_id(&self) -> String;
}

impl BodyId for Delivery {
    fn body_id(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).expect("JSON");
        v["id"].as_str().expect("id").to_owned()
    }
}

#[tokio::test]
async fn sigterm_lets_a_running_handler_finish_and_exits_0() {
    for bin in [AXUM, ACTIX] {
        let mut r = Receiver::start(
            bin,
            &[
                ("AIRMY_HANDLER_DELAY_MS", "1000"),
                ("AIRMY_IDEMPOTENCY", "memory"),
            ],
        )
        .await;
        let id = unique("evt_term");
        let d = delivery(&id);
        let url = r.url.clone();
        let pending =
            tokio::spawn(
                async move { attempt(&client(), &url, &d, Duration::from_secs(10)).await },
            );
        tokio::time::sleep(Duration::from_millis(300)).await;
        r.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(20), r.child.wait())
            .await
            .expect("exits within 20 s")
            .expect("waited");
        assert_eq!(status.code(), Some(0), "{bin}");
        let _ = pending.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            handled(&r).get(&id),
            Some(&1),
            "{bin}: the running handler finished: {:?}",
            r.lines()
        );
    }
}

/// AIRMY's schedule (attempts at 0, +1 s, +5 s, +30 s) divided by `scale`.
fn schedule(scale: u32) -> [Duration; 4] {
    [0, 1_000, 5_000, 30_000].map(|ms| Duration::from_millis(ms / u64::from(scale)))
}

/// Sends `n` ids with AIRMY's retry schedule (scaled down 20 times) and client timeouts that
/// are sometimes shorter than the 250 ms handler, at most `concurrency` at a time; every id
/// must be acknowledged and handled exactly once.
async fn soak(bin: &str, store: &str, n: usize, concurrency: usize) {
    let r = Receiver::start(
        bin,
        &[
            ("AIRMY_HANDLER_DELAY_MS", "250"),
            ("AIRMY_IDEMPOTENCY", store),
        ],
    )
    .await;
    let client = client();
    let prefix = unique("evt_soak");
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, url, limit) = (client.clone(), r.url.clone(), limit.clone());
        let id = format!("{prefix}_{i}");
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore");
            let d = delivery(&id);
            let start = tokio::time::Instant::now();
            for (n, at) in schedule(20).into_iter().enumerate() {
                tokio::time::sleep_until(start + at).await;
                // Every third id's first attempt gives up before the handler finishes.
                let timeout = if n == 0 && i % 3 == 0 {
                    Duration::from_millis(100)
                } else {
                    Duration::from_millis(500)
                };
                let answer = attempt(&client, &url, &d, timeout).await;
                if answer.is_some_and(|(status, _)| (200..300).contains(&status)) {
                    return (id, true);
                }
            }
            (id, false)
        });
    }
    let mut unacknowledged = Vec::new();
    let mut ids = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (id, acknowledged) = result.expect("task");
        if !acknowledged {
            unacknowledged.push(id.clone());
        }
        ids.push(id);
    }
    // Handlers still running (their client gave up) finish within their 250 ms.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let handled = handled(&r);
    let wrong: Vec<_> = ids
        .iter()
        .filter(|id| handled.get(*id) != Some(&1))
        .map(|id| (id.clone(), handled.get(id).copied().unwrap_or(0)))
        .collect();
    assert!(
        unacknowledged.is_empty(),
        "{bin} {store}: not acknowledged: {unacknowledged:?}"
    );
    assert!(
        wrong.is_empty(),
        "{bin} {store}: handled other than once: {:?}",
        &wrong[..wrong.len().min(20)]
    );
    assert_eq!(handled.len(), n, "{bin} {store}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_every_id_is_handled_exactly_once() {
    let redis = RedisServer::start();
    for bin in [AXUM, ACTIX] {
        for store in ["memory", redis.url()] {
            soak(bin, store, 60, 16).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the full soak: 10,000 ids per receiver and store (several minutes)"]
async fn soak_full() {
    let redis = RedisServer::start();
    for bin in [AXUM, ACTIX] {
        for store in ["memory", redis.url()] {
            let started = Instant::now();
            soak(bin, store, 10_000, 64).await;
            eprintln!(
                "soak {bin} {store}: 10000 ids handled exactly once in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}
