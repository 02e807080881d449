//! The Redis backend on a real `redis-server` (started by the test, or `AIRMY_REDIS_URL`): the
//! conformance suite unchanged, the worker scenarios, then what only a shared server shows
//! (two replicas on one queue, takeovers across replicas, an outage, a restart with AOF, the
//! key layout).
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airmy_verify::{Envelope, Event};
use airmy_verify_inbox::conformance::{self, delivery};
use airmy_verify_inbox::{
    Accepted, Admin, Context, HandlerError, Handlers, Inbox, Queue, RedisBackend, RedisOptions,
    Store,
};
use test_support::RedisServer;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[macro_use]
mod common;

/// A prefix no other test (or earlier run on a shared server) uses.
fn prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!(
        "test:{name}:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn backend(url: &str, prefix: &str) -> RedisBackend {
    RedisBackend::connect(url, RedisOptions::default().prefix(prefix))
        .await
        .expect("connects")
}

type Redis = common::ServerClock<RedisBackend, RedisServer>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let backend = backend(server.url(), &prefix("conformance")).await;
    conformance::run_all(&Redis { backend, server }).await;
}

/// The application's own connection manager serves the inbox (the conformance suite passes on
/// it unchanged) and, while an idle worker waits for entries, the application's own commands
/// (the wait polls: it never blocks the shared connection); a new entry still wakes the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_connection_serves_the_inbox_and_its_own_commands() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("client");
    let app = redis::aio::ConnectionManager::new(client)
        .await
        .expect("the application's connection");
    let backend = RedisBackend::with_connection(
        app.clone(),
        RedisOptions::default().prefix(prefix("app_connection")),
    )
    .await
    .expect("the inbox on the application's connection");
    let waiting = backend.clone();
    let idle = tokio::spawn(async move {
        let started = Instant::now();
        waiting.wait(Duration::from_secs(3)).await;
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut own = app.clone();
    let started = Instant::now();
    let _: () = redis::cmd("SET")
        .arg("app:key")
        .arg("value")
        .query_async(&mut own)
        .await
        .expect("the application's command");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "not held up by the waiting worker: {:?}",
        started.elapsed()
    );
    backend
        .accept(&delivery("evt_app_connection", "test"))
        .await
        .expect("accept");
    let waited = idle.await.expect("waited");
    assert!(
        waited < Duration::from_secs(2),
        "woken by the entry: {waited:?}"
    );
    let taken = backend
        .take(1, Duration::from_secs(30))
        .await
        .expect("take");
    assert!(
        backend
            .complete(&taken[0].id, &taken[0].token)
            .await
            .expect("complete")
    );
    conformance::run_all(&Redis { backend, server }).await;
}

async fn fresh(name: &str) -> (Inbox, RedisServer) {
    let server = RedisServer::start();
    let inbox = Inbox::new(backend(server.url(), &prefix(name)).await);
    (inbox, server)
}

worker_scenarios!();

#[tokio::test]
async fn replay_makes_a_scheduled_retry_due_now_and_refuses_one_being_processed() {
    let server = RedisServer::start();
    let backend = backend(server.url(), &prefix("replay_pending")).await;
    common::worker::replay_makes_a_scheduled_retry_due_now_and_refuses_one_being_processed(
        &Redis { backend, server },
    )
    .await;
}

/// `(id, attempt)` of every handling.
type Seen = Arc<std::sync::Mutex<Vec<(String, u32)>>>;

/// Records `(id, attempt)` for every handling.
fn recording() -> (Handlers, Seen) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let handlers = Handlers::new().fallback(move |e: Envelope<Event>, ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push((e.id, ctx.attempt));
            Ok::<(), HandlerError>(())
        }
    });
    (handlers, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_queue_and_an_idle_worker_wakes_at_once() {
    let server = RedisServer::start();
    let prefix = prefix("replicas");
    let a = Inbox::new(backend(server.url(), &prefix).await);
    let b = Inbox::new(backend(server.url(), &prefix).await);
    let (handlers, seen) = recording();
    let shutdown = CancellationToken::new();
    // Only replica B runs a worker; it is idle, blocked on the stream.
    let worker = tokio::spawn(b.worker(handlers).run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    for i in 0..20 {
        let id = format!("evt_replica_{i}");
        let sent = Instant::now();
        assert_eq!(
            a.accept(&delivery(&id, "run.completed"))
                .await
                .expect("accepted"),
            Accepted::Stored
        );
        // Replica B already holds it: a duplicate, whichever replica AIRMY's retry reaches.
        assert_eq!(
            b.accept(&delivery(&id, "run.completed"))
                .await
                .expect("accepted"),
            Accepted::Duplicate
        );
        while !seen.lock().expect("lock").iter().any(|(s, _)| *s == id) {
            assert!(sent.elapsed() < Duration::from_secs(10), "never handled");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    // The worker polls at most once a second without the blocking read: the median shows
    // which woke it (generous for a loaded CI machine).
    assert!(
        latencies[latencies.len() / 2] < Duration::from_millis(250),
        "accept on A → handler on B: {latencies:?}"
    );
    shutdown.cancel();
    worker.await.expect("worker");
    assert_eq!(seen.lock().expect("lock").len(), 20, "each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_entries_are_taken_over_by_another() {
    let server = RedisServer::start();
    let prefix = prefix("takeover");
    let dead = backend(server.url(), &prefix).await;
    let survivor = Inbox::new(backend(server.url(), &prefix).await);
    for i in 0..5 {
        dead.accept(&delivery(&format!("evt_orphan_{i}"), "test"))
            .await
            .expect("accept");
    }
    // Replica A takes everything, then dies (no complete, no release).
    let taken = dead
        .take(10, Duration::from_millis(400))
        .await
        .expect("take");
    assert_eq!(taken.len(), 5);
    drop(dead);
    let (handlers, seen) = recording();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(
        survivor
            .worker(handlers)
            .lease(Duration::from_millis(400))
            .run(shutdown.clone()),
    );
    while seen.lock().expect("lock").len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not taken over"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the lease ran out"
    );
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.iter().all(|(_, attempt)| *attempt == 2), "{seen:?}");
    shutdown.cancel();
    worker.await.expect("worker");
    let stats = survivor.admin().stats().await.expect("stats");
    assert_eq!((stats.done, stats.processing, stats.pending), (5, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_never_reports_a_delivery_stored() {
    let mut server = RedisServer::start_private();
    let backend = RedisBackend::connect(
        server.url(),
        RedisOptions::default()
            .prefix(prefix("outage"))
            .timeout(Duration::from_millis(300)),
    )
    .await
    .expect("connects");
    assert_eq!(
        backend
            .accept(&delivery("evt_before", "test"))
            .await
            .expect("accepted"),
        Accepted::Stored
    );
    server.stop();
    for i in 0..3 {
        let outcome = backend
            .accept(&delivery(&format!("evt_during_{i}"), "test"))
            .await;
        assert!(
            matches!(&outcome, Err(e) if e.kind() == airmy_verify_inbox::ErrorKind::Unavailable),
            "{outcome:?}"
        );
    }
    assert!(backend.stats().await.is_err());
    // A wait with Redis down returns after its timeout, not at once (no busy loop).
    let started = Instant::now();
    backend.wait(Duration::from_millis(200)).await;
    assert!(started.elapsed() >= Duration::from_millis(150));

    // Without persistence, a restarted Redis is empty; the backend reconnects and recreates
    // its consumer group when it takes.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match backend.accept(&delivery("evt_after", "test")).await {
            Ok(accepted) => {
                assert_eq!(accepted, Accepted::Stored);
                break;
            }
            Err(err) => {
                assert!(Instant::now() < deadline, "never reconnected: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let taken = backend
        .take(10, Duration::from_secs(5))
        .await
        .expect("take");
    assert_eq!(
        taken.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        ["evt_after"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_aof_always_nothing_acknowledged_is_lost_when_redis_is_killed() {
    let mut server = RedisServer::start_durable();
    let prefix = prefix("aof");
    let accepting = Arc::new(
        RedisBackend::connect(
            server.url(),
            RedisOptions::default()
                .prefix(&prefix)
                .timeout(Duration::from_millis(500)),
        )
        .await
        .expect("connects"),
    );
    // Accept from 8 tasks while Redis is killed (SIGKILL) part-way through.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (backend, acknowledged, stop) = (accepting.clone(), acknowledged.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..2000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("evt_aof_{t}_{i}");
                if matches!(
                    backend.accept(&delivery(&id, "run.completed")).await,
                    Ok(Accepted::Stored)
                ) {
                    acknowledged.lock().expect("lock").push(id);
                }
            }
        }));
    }
    while acknowledged.lock().expect("lock").len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("task");
    }
    server.restart();
    let reopened = backend(server.url(), &prefix).await;
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let stats = reopened.stats().await.expect("stats");
    assert!(
        stats.pending >= acknowledged.len() as u64,
        "{} acknowledged, {} pending after the restart",
        acknowledged.len(),
        stats.pending
    );
    for id in &acknowledged {
        assert_eq!(
            reopened
                .accept(&delivery(id, "run.completed"))
                .await
                .expect("accepted"),
            Accepted::Duplicate,
            "{id} was acknowledged, then lost"
        );
    }
}

#[tokio::test]
async fn a_full_inbox_refuses_accepts() {
    let server = RedisServer::start();
    let backend = RedisBackend::connect(
        server.url(),
        RedisOptions::default()
            .prefix(prefix("full"))
            .max_unfinished(3),
    )
    .await
    .expect("connects");
    conformance::a_full_inbox_refuses_new_entries_but_knows_stored_ones(&backend).await;
}

#[tokio::test]
async fn every_key_lives_under_one_hash_tag() {
    let server = RedisServer::start();
    let prefix = prefix("layout");
    let backend = backend(server.url(), &prefix).await;
    for id in ["evt_k1", "evt_k2", "evt_k3"] {
        backend.accept(&delivery(id, "test")).await.expect("accept");
    }
    let taken = backend.take(3, Duration::from_secs(5)).await.expect("take");
    assert!(
        backend
            .complete(&taken[0].id, &taken[0].token)
            .await
            .expect("complete")
    );
    assert!(
        backend
            .bury(&taken[1].id, &taken[1].token, "e")
            .await
            .expect("bury")
    );
    let at = OffsetDateTime::now_utc() + Duration::from_secs(60);
    assert!(
        backend
            .retry(&taken[2].id, &taken[2].token, "e", at)
            .await
            .expect("retry")
    );
    // The pauses, a paused entry, the recent actions: under the tag too.
    let scope = airmy_verify_inbox::PauseScope::event_type("run.failed");
    backend.pause(&scope).await.expect("pause");
    backend
        .accept(&delivery("evt_k4", "run.failed"))
        .await
        .expect("accept");
    let action = airmy_verify_inbox::audit::Action::new(
        "ops",
        airmy_verify_inbox::audit::ActionKind::Pause,
        scope.to_string(),
    );
    backend.record_action(&action).await.expect("record");

    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let pattern = format!("*{prefix}*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(keys.len() >= 11, "{keys:?}");
    for name in ["paused", "pauses", "actions"] {
        assert!(
            keys.contains(&format!("{{{prefix}}}{name}")),
            "{name}: {keys:?}"
        );
    }
    let tag = format!("{{{prefix}}}");
    assert!(keys.iter().all(|k| k.starts_with(&tag)), "{keys:?}");
    // Redis Cluster hashes only what is inside the first `{…}`: the same for every key.

    let empty = RedisBackend::connect(server.url(), RedisOptions::default().prefix(""))
        .await
        .expect_err("an empty prefix would spread the keys over slots");
    assert!(empty.to_string().contains("prefix"), "{empty}");
}

#[tokio::test]
async fn credentials_never_appear_in_errors_or_debug() {
    let err = RedisBackend::connect(
        "redis://:hunter2-secret@127.0.0.1:1",
        RedisOptions::default().timeout(Duration::from_millis(200)),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    let options = format!("{:?}", RedisOptions::default());
    assert!(!options.contains("hunter2"));

    let server = RedisServer::start();
    let backend = backend(server.url(), &prefix("debug")).await;
    assert!(format!("{backend:?}").contains("RedisBackend"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_whose_reply_was_lost_is_handed_back_by_the_next_take() {
    let server = RedisServer::start_private();
    let backend = RedisBackend::connect(
        server.url(),
        RedisOptions::default()
            .prefix(prefix("lost_take"))
            .timeout(Duration::from_millis(500)),
    )
    .await
    .expect("connects");
    for i in 0..3 {
        backend
            .accept(&delivery(&format!("evt_lost_{i}"), "test"))
            .await
            .expect("accept");
    }
    // Redis stalls: the take is sent, times out here, and runs when Redis resumes.
    server.pause();
    let lost = backend.take(10, Duration::from_secs(60)).await;
    assert!(lost.is_err(), "{lost:?}");
    server.resume();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backend.stats().await.expect("stats").processing,
        3,
        "it ran"
    );
    let back = backend
        .take(10, Duration::from_secs(60))
        .await
        .expect("take");
    let mut ids: Vec<_> = back.iter().map(|l| (l.id.as_str(), l.attempt)).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [("evt_lost_0", 1), ("evt_lost_1", 1), ("evt_lost_2", 1)],
        "handed back at once, not after the 60 s lease"
    );
    for entry in &back {
        assert!(
            backend
                .complete(&entry.id, &entry.token)
                .await
                .expect("complete")
        );
    }
}

/// Redis killed while a handler runs, back (AOF) before half the lease passed: the worker
/// records the outcome once Redis answers, so the entry is not handled a second time when its
/// lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_is_recorded_once_redis_is_back() {
    let mut server = RedisServer::start_durable();
    let inbox = Inbox::new(
        RedisBackend::connect(
            server.url(),
            RedisOptions::default()
                .prefix(prefix("record"))
                .timeout(Duration::from_secs(1)),
        )
        .await
        .expect("connects"),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let handlers = common::worker::counting(calls.clone(), Duration::from_millis(600));
    let shutdown = CancellationToken::new();
    let lease = Duration::from_secs(4);
    let worker = tokio::spawn(inbox.worker(handlers).lease(lease).run(shutdown.clone()));
    inbox
        .accept(&delivery("evt_record", "test"))
        .await
        .expect("accept");
    let started = Instant::now();
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never handled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop();
    // The handler ends while Redis is down; its completion fails, then is asked again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.restart();
    tokio::time::sleep(lease + Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "handled once");
    let stats = inbox.admin().stats().await.expect("stats");
    assert_eq!((stats.done, stats.processing, stats.pending), (1, 0, 0));
    shutdown.cancel();
    worker.await.expect("worker");
}

/// Redis restarted empty (no persistence) after a take failed: the workers start the group
/// again and handle what is accepted from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_recover_when_redis_comes_back_empty() {
    let mut server = RedisServer::start_private();
    let inbox = Inbox::new(
        RedisBackend::connect(
            server.url(),
            RedisOptions::default()
                .prefix(prefix("empty"))
                .timeout(Duration::from_millis(500)),
        )
        .await
        .expect("connects"),
    );
    let (handlers, seen) = recording();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(inbox.worker(handlers).run(shutdown.clone()));
    server.stop();
    // Long enough for the worker's takes to fail (and one to be left to recover).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..5 {
        let d = delivery(&format!("evt_empty_{i}"), "test");
        while !matches!(inbox.accept(&d).await, Ok(Accepted::Stored)) {
            assert!(Instant::now() < deadline, "never accepted again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    while seen.lock().expect("lock").len() < 5 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "never handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    worker.await.expect("worker");
}

/// The stream deleted under a running inbox (an operator's mistake, or eviction): new entries
/// are handled, and `replay` brings back one whose message was lost.
#[tokio::test]
async fn replay_repairs_an_entry_whose_stream_message_was_lost() {
    let server = RedisServer::start();
    let prefix = prefix("lost_stream");
    let backend = backend(server.url(), &prefix).await;
    backend
        .accept(&delivery("evt_orphaned", "test"))
        .await
        .expect("accept");
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let _: () = redis::cmd("DEL")
        .arg(format!("{{{prefix}}}stream"))
        .query_async(&mut conn)
        .await
        .expect("del");
    assert!(
        backend
            .take(10, Duration::from_secs(5))
            .await
            .expect("take")
            .is_empty()
    );
    backend
        .accept(&delivery("evt_after_loss", "test"))
        .await
        .expect("accept");
    backend.replay("evt_orphaned").await.expect("replay");
    let mut ids: Vec<String> = backend
        .take(10, Duration::from_secs(5))
        .await
        .expect("take")
        .into_iter()
        .map(|l| l.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["evt_after_loss", "evt_orphaned"]);
}

/// Redis out of memory (`noeviction`): accepts are refused as full, and a backend still
/// connects (to purge, or a replica restarting).
#[tokio::test]
async fn a_redis_out_of_memory_refuses_accepts_but_still_connects() {
    let server =
        RedisServer::start_with(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    let prefix = prefix("oom");
    let backend = backend(server.url(), &prefix).await;
    let mut full = false;
    for i in 0..20_000 {
        match backend
            .accept(&delivery(&format!("evt_oom_{i}"), "test"))
            .await
        {
            Ok(Accepted::Stored) => {}
            Err(e) if e.kind() == airmy_verify_inbox::ErrorKind::Full => {
                full = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(full, "Redis never filled up");
    let again = RedisBackend::connect(server.url(), RedisOptions::default().prefix(&prefix))
        .await
        .expect("connects while Redis is out of memory");
    assert!(again.stats().await.expect("stats").pending > 0);
}

/// Retries already due but not yet taken (every worker down) count as pending, with their age.
/// One take hands out no more than about 8 MiB of bodies (it stops once 8 MiB is reached), so
/// a worker taking ahead never pulls hundreds of 2 MiB deliveries into memory at once.
#[tokio::test]
async fn a_take_stops_at_8_mib_of_bodies() {
    let server = RedisServer::start();
    let backend = backend(server.url(), &prefix("big")).await;
    let verifier = airmy_verify::Verifier::new(
        airmy_verify::Secret::new(airmy_verify::testing::SECRET).expect("secret"),
    );
    let filler = "x".repeat(2_000_000);
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("now");
    for n in 0..7 {
        let body = format!(
            r#"{{"id":"evt_big_{n}","type":"test","created_at":"{now}","data":{{"filler":"{filler}"}}}}"#
        );
        let signature = airmy_verify::sign(body.as_bytes(), airmy_verify::testing::SECRET);
        let verified = verifier.verify(signature, body).expect("verifies");
        assert_eq!(
            backend.accept(&verified).await.expect("accept"),
            Accepted::Stored
        );
    }
    let lease = Duration::from_secs(30);
    let first = backend.take(100, lease).await.expect("take");
    let bytes = |taken: &[airmy_verify_inbox::Leased]| -> usize {
        taken.iter().map(|l| l.body.len()).sum()
    };
    let all_but_last: usize = bytes(&first[..first.len() - 1]);
    assert!(
        all_but_last < 8 << 20 && bytes(&first) >= 8 << 20,
        "stops right after 8 MiB: {} entries, {} bytes",
        first.len(),
        bytes(&first)
    );
    assert_eq!(first.len(), 5);
    let rest = backend.take(100, lease).await.expect("take");
    assert_eq!(rest.len(), 2, "the rest on the next take");
}

#[tokio::test]
async fn overdue_retries_count_as_pending() {
    let server = RedisServer::start();
    let backend = backend(server.url(), &prefix("overdue")).await;
    backend
        .accept(&delivery("evt_overdue", "test"))
        .await
        .expect("accept");
    let leased = backend.take(1, Duration::from_secs(5)).await.expect("take");
    let at = OffsetDateTime::now_utc() + Duration::from_millis(100);
    assert!(
        backend
            .retry("evt_overdue", &leased[0].token, "e", at)
            .await
            .expect("retry")
    );
    let stats = backend.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.scheduled), (0, 1));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stats = backend.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.scheduled), (1, 0));
    assert_eq!(stats.oldest_pending_age_secs, Some(1));
}

#[tokio::test]
async fn odd_limits_and_prefixes() {
    let server = RedisServer::start();
    let backend = backend(server.url(), &prefix("limits")).await;
    let dead = backend
        .list(
            &airmy_verify_inbox::ListQuery::new(airmy_verify_inbox::EntryState::Dead)
                .limit(usize::MAX),
        )
        .await
        .expect("dead");
    assert!(dead.entries.is_empty());
    for bad in ["", "}x", "a{b", "{a}"] {
        let err = RedisBackend::connect(server.url(), RedisOptions::default().prefix(bad))
            .await
            .expect_err(bad);
        assert!(err.to_string().contains("prefix"), "{err}");
        assert_eq!(err.kind(), airmy_verify_inbox::OpenErrorKind::Invalid);
    }
}

/// Two replicas, two slots each, handlers of 1.5 s, a burst of 4: both replicas handle some
/// (one replica does not hold entries it cannot start while the other is idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replica_does_not_hoard_entries() {
    let server = RedisServer::start();
    let prefix = prefix("hoard");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    let mut inboxes = Vec::new();
    for replica in 0..2 {
        let inbox = Inbox::new(backend(server.url(), &prefix).await);
        let s = seen.clone();
        let handlers = Handlers::new().fallback(move |e: Envelope<Event>, _ctx: Context| {
            let s = s.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                s.lock().expect("lock").push((e.id, replica));
                Ok::<(), HandlerError>(())
            }
        });
        workers.push(tokio::spawn(
            inbox.worker(handlers).concurrency(2).run(shutdown.clone()),
        ));
        inboxes.push(inbox);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..4 {
        inboxes[0]
            .accept(&delivery(&format!("evt_hoard_{i}"), "test"))
            .await
            .expect("accept");
    }
    let started = Instant::now();
    while seen.lock().expect("lock").len() < 4 {
        assert!(started.elapsed() < Duration::from_secs(20), "never handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().expect("lock").clone();
    let by_first = seen.iter().filter(|(_, r)| *r == 0).count();
    assert!(
        by_first > 0 && by_first < 4,
        "one replica handled everything: {seen:?}"
    );
    shutdown.cancel();
    for worker in workers {
        worker.await.expect("worker");
    }
}

/// Entries that share a score (completed in one batch, in the same millisecond): a page's
/// cursor names the member it stopped at, so an earlier one leaving the state does not make
/// the next page skip one that stayed; and a page of pending entries is full although leased
/// entries' messages sit in the stream before them.
#[tokio::test]
async fn cursors_hold_across_ties_and_leased_messages() {
    use airmy_verify_inbox::{EntryState, ListQuery};
    let server = RedisServer::start();
    let prefix = prefix("ties");
    let b = backend(server.url(), &prefix).await;
    let ids: Vec<String> = (0..6).map(|i| format!("evt_tie_{i}")).collect();
    for id in &ids {
        b.accept(&delivery(id, "test")).await.expect("accept");
    }
    for e in b.take(6, Duration::from_secs(30)).await.expect("take") {
        assert!(b.complete(&e.id, &e.token).await.expect("complete"));
    }
    // Every one of them done at the same instant.
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    for id in &ids {
        let _: () = redis::cmd("ZADD")
            .arg(format!("{{{prefix}}}done"))
            .arg(1_764_000_000_000_i64)
            .arg(id)
            .query_async(&mut conn)
            .await
            .expect("zadd");
    }
    let query = ListQuery::new(EntryState::Done).limit(2);
    let first = b.list(&query).await.expect("list");
    assert_eq!(
        first
            .entries
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["evt_tie_0", "evt_tie_1"]
    );
    b.replay("evt_tie_0").await.expect("replay");
    let mut rest = Vec::new();
    let mut next = first.next;
    while let Some(cursor) = next {
        let page = b.list(&query.clone().after(cursor)).await.expect("list");
        rest.extend(page.entries.into_iter().map(|e| e.id));
        next = page.next;
    }
    assert_eq!(
        rest,
        ["evt_tie_2", "evt_tie_3", "evt_tie_4", "evt_tie_5"],
        "none skipped"
    );
    assert!(matches!(
        b.list(&ListQuery::new(EntryState::Dead).after("z::")).await,
        Err(e) if e.kind() == airmy_verify_inbox::ErrorKind::Invalid
    ));

    // 300 leased entries' messages come first in the stream, then 10 pending ones.
    let leased: Vec<String> = (0..300).map(|i| format!("evt_leased_{i:03}")).collect();
    for id in &leased {
        b.accept(&delivery(id, "test")).await.expect("accept");
    }
    let mut held = Vec::new();
    while held.len() < 300 {
        held.extend(
            b.take(300 - held.len(), Duration::from_secs(30))
                .await
                .expect("take"),
        );
    }
    // evt_tie_0 (replayed) was taken with them: 299 of ours plus it.
    for i in 0..10 {
        b.accept(&delivery(&format!("evt_waiting_{i}"), "test"))
            .await
            .expect("accept");
    }
    let page = b
        .list(&ListQuery::new(EntryState::Pending).limit(10))
        .await
        .expect("list");
    assert_eq!(
        page.entries.len(),
        10,
        "a full page, not an empty one: {page:?}"
    );
    // (The replayed evt_tie_0 was taken with the leased ones: one of those 300 is pending.)
    let waiting = page
        .entries
        .iter()
        .filter(|e| e.id.starts_with("evt_waiting_"))
        .count();
    assert!(waiting >= 9, "{page:?}");
}

/// Connects with `options` once the replica of `url` is online (its first sync takes a
/// moment; until then `RedisOptions::replicas` refuses to start).
async fn connect_when_replicated(url: &str, options: RedisOptions) -> RedisBackend {
    let started = Instant::now();
    loop {
        match RedisBackend::connect(url, options.clone()).await {
            Ok(backend) => return backend,
            Err(err) => assert!(
                started.elapsed() < Duration::from_secs(15),
                "the replica never came online: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `RedisOptions::replicas` on one server: with its replica online, accepts are acknowledged
/// once the replica holds them; asking for more replicas than it has refuses to start, saying
/// how many are online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_wait_for_the_replicas_asked_for() {
    let primary = RedisServer::start_private();
    let port = primary.url().rsplit(':').next().expect("a port").to_owned();
    let _replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let prefix = prefix("replicas_wait");
    let options = RedisOptions::default()
        .prefix(&prefix)
        .timeout(Duration::from_secs(2));
    let waiting = connect_when_replicated(primary.url(), options.clone().replicas(1)).await;
    assert_eq!(
        waiting
            .accept(&delivery("evt_replicated", "test"))
            .await
            .expect("the replica holds it"),
        Accepted::Stored
    );
    let err = RedisBackend::connect(primary.url(), options.replicas(2))
        .await
        .expect_err("two replicas asked for, one online");
    assert_eq!(
        err.kind(),
        airmy_verify_inbox::OpenErrorKind::Unavailable,
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("replicas(2)") && message.contains("has 1 online"),
        "{message}"
    );
}

/// `RedisOptions::replicas` on the duplicate path: an accept answered "duplicate" is
/// acknowledged only once the replicas hold the entry it found, even one another process
/// stored. The replica is frozen (`SIGSTOP`) but still attached, so its primary counts it; one
/// process stores an id without waiting; another, asking for one replica, is refused for that
/// id, because the replica does not hold it; once the replica runs again and catches up, the
/// same accept is a duplicate.
///
/// What `WAIT` waits for depends on the server: Redis up to 7.0 (Debian 12's 7.0.15) moves a
/// connection's replication offset after every command, reads included, so the duplicate's
/// script alone covers the entry; Redis 7.2 and later, and Valkey, move it only after a write
/// that is replicated, so without the accept script writing the duplicate again the second
/// process would answer "duplicate" at once (its connection had written nothing the replica
/// lacked). Checked once with Valkey 9.1.2 first in `PATH` as `redis-server`: without that
/// write this test fails, with it it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_waits_for_the_replicas_to_hold_the_entry_it_found() {
    let primary = RedisServer::start_private();
    let port = primary.url().rsplit(':').next().expect("a port").to_owned();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let prefix = prefix("replicas_duplicate");
    let waiting = connect_when_replicated(
        primary.url(),
        RedisOptions::default()
            .prefix(&prefix)
            .replicas(1)
            .timeout(Duration::from_millis(800)),
    )
    .await;
    let storing = backend(primary.url(), &prefix).await;
    replica.pause();
    let id = "evt_stored_elsewhere";
    assert_eq!(
        storing.accept(&delivery(id, "test")).await.expect("stored"),
        Accepted::Stored
    );
    let refused = waiting.accept(&delivery(id, "test")).await;
    replica.resume();
    let err = refused.expect_err("the replica does not hold the entry: refused, not a duplicate");
    assert_eq!(
        err.kind(),
        airmy_verify_inbox::ErrorKind::Unavailable,
        "{err}"
    );
    let started = Instant::now();
    loop {
        match waiting.accept(&delivery(id, "test")).await {
            Ok(answer) => {
                assert_eq!(answer, Accepted::Duplicate);
                break;
            }
            Err(err) => assert!(
                started.elapsed() < Duration::from_secs(15),
                "the replica never caught up: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pause is kept in Redis: a new backend (a restart) finds the paused type's entries still
/// held and never takes them; resumed, each is taken once. Over a thousand pending and a
/// thousand scheduled entries: the pause and the resume move them in several steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_new_connection_and_moves_a_backlog_in_steps() {
    let server = RedisServer::start();
    let prefix = prefix("pause_restart");
    let first = backend(server.url(), &prefix).await;
    let (event_type, ids) = common::pause::pause_a_backlog(&first, 1_500, 1_100).await;
    drop(first);
    let again = backend(server.url(), &prefix).await;
    common::pause::the_pause_held_across_the_restart(&again, &event_type, &ids, 1_100).await;
}

/// A replica of an older version stores a delivery the way it always did (in the stream), its
/// type paused meanwhile: the next take holds it, paused, rather than handling it.
#[tokio::test]
async fn a_take_holds_an_entry_of_a_paused_type_it_meets() {
    let server = RedisServer::start();
    let prefix = prefix("pause_belt");
    let b = backend(server.url(), &prefix).await;
    let scope = airmy_verify_inbox::PauseScope::event_type("run.failed");
    assert_eq!(b.pause(&scope).await.expect("pause"), 0);
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let tag = format!("{{{prefix}}}");
    let message: String = redis::cmd("XADD")
        .arg(format!("{tag}stream"))
        .arg("*")
        .arg("i")
        .arg("evt_old_replica")
        .query_async(&mut conn)
        .await
        .expect("xadd");
    let () = redis::cmd("HSET")
        .arg(format!("{tag}e:evt_old_replica"))
        .arg(&[
            ("t", "run.failed"),
            ("b", "{}"),
            ("r", "1"),
            ("a", "0"),
            ("s", "p"),
        ])
        .arg("m")
        .arg(&message)
        .query_async(&mut conn)
        .await
        .expect("hset");
    assert!(
        b.take(10, Duration::from_secs(5))
            .await
            .expect("take")
            .is_empty()
    );
    let entry = b
        .entry("evt_old_replica")
        .await
        .expect("entry")
        .expect("an entry");
    assert_eq!(entry.summary.state, airmy_verify_inbox::EntryState::Paused);
    assert_eq!(entry.summary.attempts, 0);
    assert_eq!(b.stats().await.expect("stats").paused, 1);
    assert_eq!(b.resume(&scope).await.expect("resume"), 1);
    let taken = b.take(10, Duration::from_secs(5)).await.expect("take");
    assert_eq!(taken.len(), 1);
    assert_eq!(
        (taken[0].id.as_str(), taken[0].attempt),
        ("evt_old_replica", 1)
    );
}

/// The cost of a take beside a large paused backlog (printed; run on purpose:
/// `cargo test -p airmy-verify-inbox --all-features --release --test redis -- --ignored
/// --nocapture take_beside`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it on purpose"]
async fn take_beside_a_large_paused_backlog() {
    let server = RedisServer::start();
    let b = backend(server.url(), &prefix("pause_measure")).await;
    common::pause::measure_take_with_a_paused_backlog(&b, "Redis", 100_000, async || {}).await;
}
