//! The PostgreSQL backend across a network partition: the server in a network namespace of the
//! test's own (`test_support::NetNamespace`), its path then dropping every packet (nothing
//! refuses, nothing resets) and later healed. The backend's own pool (`PgBackend::connect`)
//! with `PgOptions::operation_timeout(1 s)`; the receivers' test (examples/tests/pg_partition.rs)
//! covers an application's pool and the default.
//!
//! Needs root, `ip` and `iptables` (scripts/test installs them): without them it fails saying
//! so, it never skips.
#![cfg(feature = "postgres")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use airmy_verify::{Envelope, Event};
use airmy_verify_inbox::conformance::delivery;
use airmy_verify_inbox::{
    Accepted, ErrorKind, HandlerError, Handlers, Inbox, PgBackend, PgContext, PgOptions,
};
use test_support::spans::SpanCapture;
use test_support::{NetNamespace, PostgresServer};
use tokio_util::sync::CancellationToken;

/// The backend's bound in this test.
const BOUND: Duration = Duration::from_secs(1);

/// What the test allows past [`BOUND`] (scheduling on a loaded machine).
const MARGIN: Duration = Duration::from_millis(700);

/// How long the path drops packets.
const PARTITION: Duration = Duration::from_secs(12);

/// Events captured whose message starts with `message`, with their fields.
fn events(capture: &SpanCapture, message: &str) -> Vec<HashMap<String, String>> {
    capture
        .events()
        .into_iter()
        .filter(|e| e.message.starts_with(message))
        .map(|e| e.fields.into_iter().collect())
        .collect()
}

/// Rows of `partition_effects` per event id.
async fn effects(counter: &sqlx::PgPool) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT event_id, count(*) FROM partition_effects GROUP BY event_id",
    )
    .fetch_all(counter)
    .await
    .expect("effects")
    .into_iter()
    .collect()
}

/// The server's connections from the test's side of the pair, and this namespace's sockets
/// to the server: (server's, established here, other states here but `TIME_WAIT`).
async fn connections(counter: &sqlx::PgPool, net: &NetNamespace) -> (i64, usize, usize) {
    let server: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE client_addr = $1::inet")
            .bind(net.host_addr().to_string())
            .fetch_one(counter)
            .await
            .expect("pg_stat_activity");
    let (established, closing) = net.sockets_to(5432);
    (server, established, closing)
}

/// Accepts, stats and a worker across a 12 s partition: each accept and each stats read fails
/// `Unavailable` within the operation timeout (never waits for TCP); the idle worker warns once
/// and backs off (1 s, 2 s, 4 s, 5 s between takes) instead of failing once a second; after
/// the heal it takes again on its own and says so, accepts are stored again, every stored id
/// has exactly one effect row, and the connections on both sides match again (none left
/// half-open) at about their number before.
#[tokio::test(flavor = "current_thread")]
async fn a_partition_fails_operations_within_their_bound_and_the_worker_backs_off() {
    let (capture, _guard) = SpanCapture::install();
    let net = NetNamespace::new();
    let server = PostgresServer::start_in(&net);
    let counter = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&server.socket_url())
        .await
        .expect("the server's Unix socket");
    sqlx::query("CREATE TABLE partition_effects (event_id text NOT NULL)")
        .execute(&counter)
        .await
        .expect("effects table");
    let backend = PgBackend::connect(server.url(), PgOptions::default().operation_timeout(BOUND))
        .await
        .expect("connects");
    let inbox = Inbox::new(backend.clone());
    let handlers = Handlers::default().fallback(|e: Envelope<Event>, ctx: PgContext| async move {
        let mut tx = ctx.transaction().await?;
        sqlx::query("INSERT INTO partition_effects (event_id) VALUES ($1)")
            .bind(&e.id)
            .execute(&mut *tx)
            .await?;
        Ok::<(), HandlerError>(())
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(backend.worker(handlers).run(shutdown.clone()));

    let mut stored = Vec::new();
    for i in 0..20 {
        let id = format!("evt_part_before_{i}");
        let answer = inbox.accept(&delivery(&id, "test")).await.expect("accept");
        assert_eq!(answer, Accepted::Stored);
        stored.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while effects(&counter).await.len() < stored.len() {
        assert!(Instant::now() < deadline, "handled before the partition");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = connections(&counter, &net).await;

    net.drop_packets();
    let cut = Instant::now();
    let mut took = Vec::new();
    let mut i = 0;
    while cut.elapsed() + BOUND + MARGIN < PARTITION {
        let started = Instant::now();
        let err = inbox
            .accept(&delivery(&format!("evt_part_during_{i}"), "test"))
            .await
            .expect_err("nothing is stored while the path drops packets");
        took.push(started.elapsed());
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        i += 1;
        if i % 3 == 0 {
            let started = Instant::now();
            let err = inbox.admin().stats().await.expect_err("stats unreachable");
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
            took.push(started.elapsed());
        }
    }
    tokio::time::sleep(PARTITION.saturating_sub(cut.elapsed())).await;
    let handled_during = effects(&counter).await.len() - stored.len();
    net.heal();
    let healed = Instant::now();
    let slowest = took.iter().max().copied().unwrap_or_default();
    println!(
        "{} operations during the {PARTITION:?} partition, bound {BOUND:?}: slowest {slowest:?}",
        took.len()
    );
    assert!(
        slowest <= BOUND + MARGIN,
        "an operation took {slowest:?} (bound {BOUND:?})"
    );
    assert_eq!(handled_during, 0, "handled while the path was cut");
    let warned = events(&capture, "cannot take inbox entries");
    assert_eq!(warned.len(), 1, "one warning for the outage: {warned:?}");
    let again = events(&capture, "still cannot take inbox entries");
    assert!(again.is_empty(), "no repeat within 30 s: {again:?}");

    // After the heal: accepts stored again, the worker takes again on its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        let id = format!("evt_part_after_{n}");
        n += 1;
        if let Ok(answer) = inbox.accept(&delivery(&id, "test")).await {
            assert_eq!(answer, Accepted::Stored);
            stored.push(id);
            break;
        }
        assert!(Instant::now() < deadline, "accepts never stored again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("accepts stored again {:?} after the heal", healed.elapsed());
    for i in 0..10 {
        let id = format!("evt_part_later_{i}");
        inbox.accept(&delivery(&id, "test")).await.expect("accept");
        stored.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = effects(&counter).await;
        if stored.iter().all(|id| rows.contains_key(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} stored ids handled after the heal",
            stored.iter().filter(|id| rows.contains_key(*id)).count(),
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resumed = events(&capture, "taking inbox entries again");
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    let failures: u32 = resumed[0]["failures"].parse().expect("failures");
    // 1 s each, then 1, 2, 4, 5 s apart: about four in 12 s (failing once a second, twice
    // as many).
    assert!(
        (2..=5).contains(&failures),
        "{failures} failed takes during the partition"
    );
    // Exactly one effect each, none for what was refused.
    let rows = effects(&counter).await;
    let doubled: Vec<_> = rows.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "effects not exactly once: {doubled:?}");

    // No leak: every server connection has its socket here and the other way round.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = connections(&counter, &net).await;
        let (server_side, established, closing) = now;
        if i64::try_from(established) == Ok(server_side)
            && closing == 0
            && server_side <= before.0 + 2
        {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "connections before {before:?}, after {now:?} (server's, established, closing)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "connections (server's, established here, closing here): before {before:?}, after \
         {after:?}; {failures} failed takes"
    );
    shutdown.cancel();
    worker.await.expect("worker");
    drop((inbox, backend));
    drop(server);
}
