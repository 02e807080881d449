//! The PostgreSQL backend through PgBouncer in transaction pooling mode (Debian's 1.18, started
//! by the test in front of a throwaway server): the conformance suite and the worker scenarios
//! unchanged, with wake-ups from a direct `LISTEN` connection and by polling alone; replicas
//! woken either way; a handler's transaction committed once, on the application's own pool.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use airmy_verify::{Envelope, Event};
use airmy_verify_inbox::conformance::{self, delivery};
use airmy_verify_inbox::{
    Accepted, Context, HandlerError, Handlers, Inbox, PgBackend, PgContext, PgOptions,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use test_support::postgres::unique_schema;
use test_support::{PgBouncer, PostgresServer};
use tokio_util::sync::CancellationToken;

#[macro_use]
mod common;

/// The server and PgBouncer in front of it (dropped first).
type Servers = (PgBouncer, PostgresServer);

fn servers() -> Servers {
    let server = PostgresServer::start();
    (PgBouncer::start(&server), server)
}

/// A backend through PgBouncer; its `LISTEN` on the server's own URL when `listen`.
async fn backend(servers: &Servers, schema: &str, listen: bool) -> PgBackend {
    let (bouncer, server) = servers;
    let options = PgOptions::default().schema(schema).pooler(true);
    let options = if listen {
        options.listen_url(server.url())
    } else {
        options
    };
    PgBackend::connect(bouncer.url(), options)
        .await
        .expect("connects through PgBouncer")
}

type Pg = common::ServerClock<PgBackend, Servers>;

/// With a direct connection for `LISTEN`.
mod listening {
    use super::*;

    async fn fresh(name: &str) -> (Inbox, Servers) {
        let servers = servers();
        let inbox = Inbox::new(backend(&servers, &unique_schema(name), true).await);
        (inbox, servers)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite() {
        let server = servers();
        let backend = backend(&server, &unique_schema("pgb_conformance"), true).await;
        conformance::run_all(&Pg { backend, server }).await;
    }

    worker_scenarios!();
}

/// Without one: the workers poll.
mod polling {
    use super::*;

    async fn fresh(name: &str) -> (Inbox, Servers) {
        let servers = servers();
        let inbox = Inbox::new(backend(&servers, &unique_schema(name), false).await);
        (inbox, servers)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite() {
        let server = servers();
        let backend = backend(&server, &unique_schema("pgb_conformance"), false).await;
        conformance::run_all(&Pg { backend, server }).await;
    }

    worker_scenarios!();
}

/// The accept-to-handler times of 10 deliveries accepted through replica A and handled by an
/// idle worker of replica B, both through PgBouncer.
async fn cross_replica_latencies(listen: bool) -> Vec<Duration> {
    let servers = servers();
    let schema = unique_schema("pgb_replicas");
    let a = Inbox::new(backend(&servers, &schema, listen).await);
    let b = Inbox::new(backend(&servers, &schema, listen).await);
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, Instant)>::new()));
    let s = seen.clone();
    let handlers = Handlers::new().fallback(move |e: Envelope<Event>, _ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push((e.id, Instant::now()));
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(b.worker(handlers).run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut latencies = Vec::new();
    for i in 0..10 {
        let id = format!("evt_pgb_wake_{i}");
        let sent = Instant::now();
        assert_eq!(
            a.accept(&delivery(&id, "test")).await.expect("accepted"),
            Accepted::Stored
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let handled = loop {
            if let Some((_, at)) = seen.lock().expect("lock").iter().find(|(s, _)| *s == id) {
                break *at;
            }
            assert!(Instant::now() < deadline, "{id} never handled");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(handled - sent);
        tokio::time::sleep(Duration::from_millis(170)).await;
    }
    shutdown.cancel();
    worker.await.expect("worker");
    assert_eq!(a.admin().stats().await.expect("stats").done, 10);
    latencies.sort();
    latencies
}

/// Through PgBouncer, the `LISTEN` on the server's own URL wakes another replica's idle worker
/// at once (its one-second idle wait would give a median near half a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_listener_wakes_another_replica_through_notify() {
    let latencies = cross_replica_latencies(true).await;
    eprintln!("accept-to-handler on another replica, LISTEN direct: {latencies:?}");
    assert!(
        latencies[latencies.len() / 2] < Duration::from_millis(250),
        "{latencies:?}"
    );
}

/// Without a listener, another replica's idle worker finds each entry within its polling
/// interval (500 ms), plus a take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_listener_another_replica_finds_entries_by_polling() {
    let latencies = cross_replica_latencies(false).await;
    eprintln!("accept-to-handler on another replica, polling: {latencies:?}");
    assert!(
        latencies[latencies.len() - 1] < Duration::from_millis(800),
        "{latencies:?}"
    );
}

/// On the application's own pool through PgBouncer (statement cache off, as `PgOptions::pooler`
/// documents): a handler that writes in its entry's transaction then fails leaves nothing, its
/// retry leaves exactly one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_transaction_commits_its_effect_once_through_pgbouncer() {
    let servers = servers();
    let (bouncer, server) = &servers;
    let schema = unique_schema("pgb_effects");
    let app_schema = format!("app_{schema}");
    let direct = sqlx::PgPool::connect(server.url()).await.expect("pool");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {app_schema}; CREATE TABLE {app_schema}.effects (event_id text, attempt int);"
    )))
    .execute(&direct)
    .await
    .expect("effects table");
    let options: PgConnectOptions = bouncer.url().parse().expect("url");
    let app = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.statement_cache_capacity(0))
        .await
        .expect("the application's pool through PgBouncer");
    let pg = PgBackend::with_pool(
        app.clone(),
        PgOptions::default()
            .schema(&schema)
            .pooler(true)
            .listen_url(server.url()),
    )
    .await
    .expect("the inbox on the application's pool");
    let inbox = Inbox::new(pg.clone());
    let insert = Arc::<str>::from(format!(
        "INSERT INTO {app_schema}.effects (event_id, attempt) VALUES ($1, $2)"
    ));
    let handlers = Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
        let insert = Arc::clone(&insert);
        async move {
            {
                let mut tx = ctx.transaction().await?;
                sqlx::query(sqlx::AssertSqlSafe(insert))
                    .bind(&e.id)
                    .bind(i32::try_from(ctx.attempt).unwrap_or(i32::MAX))
                    .execute(&mut *tx)
                    .await?;
            }
            if ctx.attempt == 1 {
                return Err(HandlerError::from("failed after writing"));
            }
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        pg.worker(handlers)
            .retry_policy(common::worker::fast_policy())
            .run(shutdown.clone()),
    );
    let ids: Vec<String> = (0..6).map(|i| format!("evt_pgb_fx_{i}")).collect();
    for id in &ids {
        inbox.accept(&delivery(id, "test")).await.expect("accept");
    }
    common::worker::wait_until("every entry done", async || {
        inbox.admin().stats().await.expect("stats").done == 6
    })
    .await;
    shutdown.cancel();
    worker.await.expect("worker");
    let rows: Vec<(String, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT event_id, attempt FROM {app_schema}.effects ORDER BY event_id, attempt"
    )))
    .fetch_all(&direct)
    .await
    .expect("effects");
    let expected: Vec<(String, i32)> = ids.iter().map(|id| (id.clone(), 2)).collect();
    assert_eq!(rows, expected, "one row per entry, from its second attempt");
}
