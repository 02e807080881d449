//! The PostgreSQL backend on a real server (a throwaway one started by the test from Debian's
//! `postgresql` package, or `AIRMY_POSTGRES_URL`): the conformance suite unchanged, the worker
//! scenarios, then what only a shared server shows (two replicas on one queue woken through
//! `NOTIFY`, the schema's version and owner, an outage with `pg_ctl stop -m immediate`).
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use airmy_verify::{Envelope, Event};
use airmy_verify_inbox::conformance::{self, delivery};
use airmy_verify_inbox::{
    Accepted, Backend, Context, HandlerError, Handlers, Inbox, InboxError, PgBackend, PgOptions,
};
use test_support::PostgresServer;
use test_support::postgres::unique_schema;
use tokio_util::sync::CancellationToken;

#[macro_use]
mod common;

async fn backend(url: &str, schema: &str) -> PgBackend {
    PgBackend::connect(url, PgOptions::default().schema(schema))
        .await
        .expect("connects")
}

type Pg = common::ServerClock<PgBackend, PostgresServer>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    let server = PostgresServer::start();
    let backend = backend(server.url(), &unique_schema("conformance")).await;
    conformance::run_all(&Pg { backend, server }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_postgres_inbox_refuses_new_entries_but_knows_stored_ones() {
    let server = PostgresServer::start();
    let backend = PgBackend::connect(
        server.url(),
        PgOptions::default()
            .schema(unique_schema("bounded"))
            .max_unfinished(3),
    )
    .await
    .expect("connects");
    conformance::a_full_inbox_refuses_new_entries_but_knows_stored_ones(&backend).await;
}

async fn fresh(name: &str) -> (Inbox, PostgresServer) {
    let server = PostgresServer::start();
    let inbox = Inbox::new(backend(server.url(), &unique_schema(name)).await);
    (inbox, server)
}

worker_scenarios!();

#[tokio::test]
async fn replay_makes_a_scheduled_retry_due_now_and_refuses_one_being_processed() {
    let server = PostgresServer::start();
    let backend = backend(server.url(), &unique_schema("replay_pending")).await;
    common::worker::replay_makes_a_scheduled_retry_due_now_and_refuses_one_being_processed(&Pg {
        backend,
        server,
    })
    .await;
}

/// `(id, when)` of every handling.
type Seen = Arc<std::sync::Mutex<Vec<(String, Instant)>>>;

/// Records the id of every handling.
fn recording() -> (Handlers, Seen) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let handlers = Handlers::new().fallback(move |e: Envelope<Event>, _ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push((e.id, Instant::now()));
            Ok::<(), HandlerError>(())
        }
    });
    (handlers, seen)
}

/// Two replicas on one schema: only B runs a worker, idle; a delivery accepted through A
/// reaches B's handler through `NOTIFY` well before B's one-second idle wait would end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_queue_and_an_idle_worker_wakes_through_notify() {
    let server = PostgresServer::start();
    let schema = unique_schema("replicas");
    let a = Inbox::new(backend(server.url(), &schema).await);
    let b = Inbox::new(backend(server.url(), &schema).await);
    let (handlers, seen) = recording();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(b.worker(handlers).run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut latencies = Vec::new();
    for i in 0..10 {
        let id = format!("evt_pg_wake_{i}");
        let sent = Instant::now();
        assert_eq!(a.accept(&delivery(&id, "test")).await, Ok(Accepted::Stored));
        let deadline = Instant::now() + Duration::from_secs(5);
        let handled = loop {
            if let Some((_, at)) = seen.lock().expect("lock").iter().find(|(s, _)| *s == id) {
                break *at;
            }
            assert!(Instant::now() < deadline, "{id} never handled");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(handled - sent);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort();
    // Without NOTIFY an idle worker would find these only at its next one-second wake-up:
    // the median would be about half a second.
    assert!(
        latencies[latencies.len() / 2] < Duration::from_millis(250),
        "median accept-to-handler on another replica: {latencies:?}"
    );
    shutdown.cancel();
    worker.await.expect("worker");
    let stats = a.backend().stats().await.expect("stats");
    assert_eq!(stats.done, 10, "{stats:?}");
}

/// A schema of another program, one of a newer version, and a name that is not a plain
/// identifier are refused at connect, naming why; the password never shows.
#[tokio::test]
async fn foreign_and_newer_schemas_are_refused() {
    let server = PostgresServer::start();
    let pool = sqlx::PgPool::connect(server.url()).await.expect("pool");
    sqlx::raw_sql(
        "CREATE SCHEMA foreign_app; CREATE TABLE foreign_app.users (id int);
         CREATE SCHEMA newer; CREATE TABLE newer.schema_version (program text, version int);
         INSERT INTO newer.schema_version VALUES ('airmy-verify-inbox', 99);",
    )
    .execute(&pool)
    .await
    .expect("setup");
    let refused = |schema: &'static str| {
        let url = server.url().to_owned();
        async move {
            PgBackend::connect(&url, PgOptions::default().schema(schema))
                .await
                .expect_err(schema)
                .to_string()
        }
    };
    let err = refused("foreign_app").await;
    assert!(err.contains("another program"), "{err}");
    let err = refused("newer").await;
    assert!(err.contains("version 99, newer"), "{err}");
    let err = refused("Bad-Name").await;
    assert!(err.contains("schema name"), "{err}");
    // The inbox's own schema opens again (a restart), entries kept.
    let schema = unique_schema("reopen");
    {
        let b = backend(server.url(), &schema).await;
        b.accept(&delivery("evt_pg_kept", "test"))
            .await
            .expect("accept");
    }
    let b = backend(server.url(), &schema).await;
    assert_eq!(b.stats().await.expect("stats").pending, 1);
    // A password is never shown.
    let err = PgBackend::connect(
        "postgres://airmy:hunter2@127.0.0.1:1/postgres",
        PgOptions::default(),
    )
    .await
    .expect_err("nothing listens on port 1")
    .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.contains("postgres://[redacted]@127.0.0.1:1/postgres"),
        "{err}"
    );
}

/// PostgreSQL stopped at once (`pg_ctl stop -m immediate`, as a crash) mid-load: accepts fail
/// with `Unavailable` (adapters answer 503), never `Stored`; once it is back, the same backend
/// accepts again, and every delivery that was `Stored` is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_accepts_and_loses_nothing_stored() {
    let server = PostgresServer::start_private();
    let b = PgBackend::connect(
        server.url(),
        PgOptions::default()
            .schema(unique_schema("outage"))
            .acquire_timeout(Duration::from_millis(500)),
    )
    .await
    .expect("connects");
    let mut stored = Vec::new();
    let mut refused = 0;
    for i in 0..240 {
        if i == 100 {
            server.stop_immediately();
        }
        if i == 120 {
            server.start_again();
        }
        let id = format!("evt_pg_outage_{i}");
        match b.accept(&delivery(&id, "test")).await {
            Ok(Accepted::Stored) => stored.push(id),
            Ok(Accepted::Duplicate) => panic!("{id}: a duplicate"),
            Err(InboxError::Unavailable(_)) => refused += 1,
            Err(other) => panic!("{id}: {other}"),
        }
    }
    assert!(refused >= 20, "refused while down: {refused}");
    assert!(stored.len() >= 180, "stored: {}", stored.len());
    let mut held = 0;
    for id in &stored {
        if matches!(
            b.accept(&delivery(id, "test")).await,
            Ok(Accepted::Duplicate)
        ) {
            held += 1;
        }
    }
    assert_eq!(
        held,
        stored.len(),
        "every stored delivery survived the crash"
    );
}
