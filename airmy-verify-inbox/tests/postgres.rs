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
    Accepted, Admin, Context, EntryState, HandlerError, Handlers, Inbox, PgBackend, PgContext,
    PgOptions, Queue, Store,
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
    let stats = a.admin().stats().await.expect("stats");
    assert_eq!(stats.done, 10, "{stats:?}");
}

/// A schema written by version 1 of the crate (its entries included) is brought to the current
/// version at connect: the indexes carry the sequence number (2), the state `paused` and the
/// tables of pauses and actions exist (3), the entries are kept and listed.
#[tokio::test]
async fn a_version_1_schema_is_migrated_with_its_entries() {
    let server = PostgresServer::start_private();
    let pool = sqlx::PgPool::connect(server.url()).await.expect("pool");
    // Version 1's tables and indexes, as 0.1 created them, with one dead letter.
    sqlx::raw_sql(
        "CREATE SCHEMA old_inbox;
         CREATE TABLE old_inbox.schema_version (program text NOT NULL, version integer NOT NULL);
         CREATE TABLE old_inbox.entries (
             seq bigserial NOT NULL, id text PRIMARY KEY, event_type text NOT NULL,
             body bytea NOT NULL, created_at text NOT NULL,
             received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
             state text NOT NULL CHECK (state IN ('pending', 'processing', 'done', 'dead')),
             attempts integer NOT NULL DEFAULT 0, due_at timestamptz NOT NULL,
             lease_token text, last_error text, finished_at timestamptz);
         CREATE INDEX entries_due ON old_inbox.entries (due_at) WHERE state IN ('pending', 'processing');
         CREATE INDEX entries_dead ON old_inbox.entries (finished_at) WHERE state = 'dead';
         CREATE INDEX entries_done ON old_inbox.entries (finished_at) WHERE state = 'done';
         INSERT INTO old_inbox.schema_version VALUES ('airmy-verify-inbox', 1);
         INSERT INTO old_inbox.entries (id, event_type, body, created_at, state, attempts, due_at,
             last_error, finished_at)
         VALUES ('evt_v1_dead', 'run.failed', convert_to('{\"id\":\"evt_v1_dead\"}', 'UTF8'), '',
             'dead', 3, clock_timestamp(), 'downstream 500', clock_timestamp());",
    )
    .execute(&pool)
    .await
    .expect("a version 1 schema");
    let b = backend(server.url(), "old_inbox").await;
    let version: i32 = sqlx::query_scalar("SELECT version FROM old_inbox.schema_version")
        .fetch_one(&pool)
        .await
        .expect("version");
    assert_eq!(version, airmy_verify_inbox::postgres::SCHEMA_VERSION);
    assert_eq!(version, 3);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'old_inbox' AND indexname LIKE 'entries_d%'
         ORDER BY indexname",
    )
    .fetch_all(&pool)
    .await
    .expect("indexes");
    assert_eq!(indexes.len(), 3, "{indexes:?}");
    assert!(indexes.iter().all(|d| d.contains(", seq)")), "{indexes:?}");
    let dead = b
        .list(&airmy_verify_inbox::ListQuery::new(
            airmy_verify_inbox::EntryState::Dead,
        ))
        .await
        .expect("list");
    assert_eq!(dead.entries.len(), 1);
    assert_eq!(dead.entries[0].id, "evt_v1_dead");
    assert_eq!(
        dead.entries[0].last_error.as_deref(),
        Some("downstream 500")
    );
    // The dead letter replayed while its type is paused: paused (the widened check allows it).
    let scope = airmy_verify_inbox::PauseScope::event_type("run.failed");
    assert_eq!(b.pause(&scope).await.expect("pause"), 0);
    b.replay("evt_v1_dead").await.expect("replay");
    assert_eq!(b.stats().await.expect("stats").paused, 1);
    // And it opens again as the current version, nothing to do.
    drop(b);
    let again = backend(server.url(), "old_inbox").await;
    assert_eq!(again.stats().await.expect("stats").paused, 1);
    assert_eq!(again.resume(&scope).await.expect("resume"), 1);
}

/// A schema of another program, one of a newer version, and a name that is not a plain
/// identifier are refused at connect, naming why; the password never shows.
#[tokio::test]
async fn foreign_and_newer_schemas_are_refused() {
    // A server of its own: the test creates fixed schema names.
    let server = PostgresServer::start_private();
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
            Err(e) if e.kind() == airmy_verify_inbox::ErrorKind::Unavailable => refused += 1,
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

/// Handlers writing one row per attempt into `effects` in the entry's transaction, with the
/// attempt number; `fail_first` attempts fail after writing (an `Err` for odd ids, a panic for
/// even ones); each takes `time` inside the transaction; after each commit, the id is pushed
/// to `committed`.
fn effect_handlers(
    fail_first: u32,
    time: Duration,
    committed: Arc<std::sync::Mutex<Vec<String>>>,
) -> Handlers<PgContext> {
    Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
        let committed = committed.clone();
        async move {
            {
                let mut tx = ctx.transaction().await?;
                sqlx::query("INSERT INTO effects (event_id, attempt) VALUES ($1, $2)")
                    .bind(&e.id)
                    .bind(i32::try_from(ctx.attempt).unwrap_or(i32::MAX))
                    .execute(&mut *tx)
                    .await?;
            }
            tokio::time::sleep(time).await;
            if ctx.attempt <= fail_first {
                if e.id.ends_with(['0', '2', '4', '6', '8']) {
                    panic!("the handler panicked after writing");
                }
                return Err(HandlerError::from("failed after writing"));
            }
            let id = e.id.clone();
            ctx.after_commit(move || committed.lock().expect("lock").push(id));
            Ok::<(), HandlerError>(())
        }
    })
}

/// The application's side of a test: a schema `app_<schema>` with its `effects` table, a URL
/// whose connections find it first (the handlers' unqualified `effects`), and a pool on it;
/// with a pool on the server's own URL.
async fn app_database(
    server: &PostgresServer,
    schema: &str,
) -> (sqlx::PgPool, String, sqlx::PgPool) {
    let pool = sqlx::PgPool::connect(server.url()).await.expect("pool");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA app_{schema}; CREATE TABLE app_{schema}.effects (event_id text, attempt int);"
    )))
    .execute(&pool)
    .await
    .expect("effects table");
    let url = format!("{}?options=-c%20search_path%3Dapp_{schema}", server.url());
    let app = sqlx::PgPool::connect(&url).await.expect("app pool");
    (pool, url, app)
}

/// A worker running `handlers` on `pg`, and one delivery `id` accepted for it through `inbox`.
async fn work_on_one(
    pg: &PgBackend,
    inbox: &Inbox,
    handlers: Handlers<PgContext>,
    id: &str,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(pg.worker(handlers).run(shutdown.clone()));
    inbox.accept(&delivery(id, "test")).await.expect("accept");
    (shutdown, worker)
}

/// The state `inbox` lists entry `id` in.
async fn state_of(inbox: &Inbox, id: &str) -> EntryState {
    inbox
        .admin()
        .entry(id)
        .await
        .expect("entry")
        .expect("stored")
        .summary
        .state
}

async fn effects(pool: &sqlx::PgPool) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT event_id, attempt FROM effects ORDER BY event_id, attempt")
        .fetch_all(pool)
        .await
        .expect("effects")
}

/// A handler's writes commit with its entry's completion: a handler that writes then fails
/// (an `Err` or a panic) leaves no row, and its retry, which succeeds, leaves exactly one;
/// `after_commit` runs once per entry, after the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_writes_commit_with_its_completion_or_not_at_all() {
    let server = PostgresServer::start();
    let schema = unique_schema("effects");
    // The handlers' unqualified `effects` is the application's table.
    let (_pool, url, app) = app_database(&server, &schema).await;
    let pg = backend(&url, &schema).await;
    let inbox = Inbox::new(pg.clone());
    let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        pg.worker(effect_handlers(2, Duration::ZERO, committed.clone()))
            .retry_policy(common::worker::fast_policy())
            .run(shutdown.clone()),
    );
    let ids: Vec<String> = (0..6).map(|i| format!("evt_pg_fx_{i}")).collect();
    for id in &ids {
        inbox.accept(&delivery(id, "test")).await.expect("accept");
    }
    common::worker::wait_until("every entry done", async || {
        inbox.admin().stats().await.expect("stats").done == 6
    })
    .await;
    shutdown.cancel();
    worker.await.expect("worker");
    let rows = effects(&app).await;
    let expected: Vec<(String, i32)> = ids.iter().map(|id| (id.clone(), 3)).collect();
    assert_eq!(
        rows, expected,
        "one row per entry, from its successful third attempt"
    );
    let mut after = committed.lock().expect("lock").clone();
    after.sort();
    assert_eq!(after, ids, "after_commit once per entry");
}

/// A handler slower than its lease holds the entry's row locked in its transaction: a second
/// worker (another replica) never takes it over, and the effect is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_longer_than_the_lease_is_never_taken_over() {
    let server = PostgresServer::start();
    let schema = unique_schema("slow_tx");
    let (_pool, url, app) = app_database(&server, &schema).await;
    let (pa, pb) = (backend(&url, &schema).await, backend(&url, &schema).await);
    let (a, b) = (Inbox::new(pa.clone()), Inbox::new(pb.clone()));
    let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let lease = Duration::from_millis(300);
    let _ = &b;
    let workers = [&pa, &pb].map(|pg| {
        tokio::spawn(
            pg.worker(effect_handlers(
                0,
                Duration::from_millis(1500),
                committed.clone(),
            ))
            .lease(lease)
            .run(shutdown.clone()),
        )
    });
    for i in 0..4 {
        a.accept(&delivery(&format!("evt_pg_slow_{i}"), "test"))
            .await
            .expect("accept");
    }
    common::worker::wait_until("every entry done", async || {
        a.admin().stats().await.expect("stats").done == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    for worker in workers {
        worker.await.expect("worker");
    }
    let rows = effects(&app).await;
    assert_eq!(rows.len(), 4, "one effect per entry: {rows:?}");
    assert!(rows.iter().all(|(_, attempt)| *attempt == 1), "{rows:?}");
}

/// Accepts and completions go to PostgreSQL in batches (one statement for all that arrive
/// together): 300 concurrent accepts of 100 ids, each three times, store each id once (one
/// `Stored` per id, whichever batch its copies land in) and every body intact; 100
/// concurrent completions each answer for their own entry, and a stale token completes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_accepts_and_completions_answer_each_delivery_for_itself() {
    let server = PostgresServer::start();
    let backend = Arc::new(backend(server.url(), &unique_schema("batches")).await);
    let deliveries: Vec<_> = (0..300)
        .map(|i| delivery(&format!("evt_batch_{}", i % 100), "run.completed"))
        .collect();
    let answers =
        futures_util::future::join_all(deliveries.iter().map(|d| backend.accept(d))).await;
    let mut stored = std::collections::HashMap::<String, usize>::new();
    for (d, answer) in deliveries.iter().zip(&answers) {
        match answer {
            Ok(Accepted::Stored) => *stored.entry(d.id().to_owned()).or_default() += 1,
            Ok(Accepted::Duplicate) => {}
            other => panic!("accept of {}: {other:?}", d.id()),
        }
    }
    assert_eq!(stored.len(), 100, "every id stored");
    assert!(
        stored.values().all(|&n| n == 1),
        "each id stored once: {stored:?}"
    );
    let leased = backend
        .take(200, Duration::from_secs(60))
        .await
        .expect("take");
    assert_eq!(leased.len(), 100);
    for entry in &leased {
        let original = deliveries
            .iter()
            .find(|d| d.id() == entry.id)
            .expect("known");
        assert_eq!(entry.body, *original.bytes(), "body of {}", entry.id);
    }
    let stale = backend
        .complete(&leased[0].id, "not-the-token")
        .await
        .expect("complete");
    assert!(!stale, "a stale token completes nothing");
    let done =
        futures_util::future::join_all(leased.iter().map(|e| backend.complete(&e.id, &e.token)))
            .await;
    assert!(done.iter().all(|d| matches!(d, Ok(true))), "{done:?}");
    let again = backend
        .complete(&leased[1].id, &leased[1].token)
        .await
        .expect("complete");
    assert!(!again, "a completed entry completes once");
    let stats = backend.stats().await.expect("stats");
    assert_eq!((stats.done, stats.pending, stats.processing), (100, 0, 0));
}

/// An event id PostgreSQL's `text` cannot hold (a NUL character) is refused on its own: the
/// accepts that share its batch are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_postgres_cannot_store_fails_alone() {
    let server = PostgresServer::start();
    let backend = backend(server.url(), &unique_schema("nul")).await;
    let mut deliveries: Vec<_> = (0..40)
        .map(|i| delivery(&format!("evt_nul_{i}"), "run.completed"))
        .collect();
    deliveries.insert(20, delivery("evt_\u{0}_nul", "run.completed"));
    let answers =
        futures_util::future::join_all(deliveries.iter().map(|d| backend.accept(d))).await;
    for (d, answer) in deliveries.iter().zip(&answers) {
        if d.id().contains('\0') {
            assert!(
                matches!(&answer, Err(e) if e.kind() == airmy_verify_inbox::ErrorKind::Unavailable),
                "{answer:?}"
            );
        } else {
            assert!(
                matches!(answer, Ok(Accepted::Stored)),
                "{}: {answer:?}",
                d.id()
            );
        }
    }
    assert_eq!(backend.stats().await.expect("stats").pending, 40);
}

/// The completion is the first statement of the attempt's transaction, but nobody sees it
/// before the commit: while the handler is inside its transaction (its row written), the
/// entry reads as processing and the stats count no done entry; after the commit, done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_shows_its_entry_as_processing_until_it_commits() {
    let server = PostgresServer::start();
    let schema = unique_schema("open_tx");
    let (_pool, url, app) = app_database(&server, &schema).await;
    let pg = backend(&url, &schema).await;
    let inbox = Inbox::new(pg.clone());
    let (inside, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let go_on = Arc::new(tokio::sync::Notify::new());
    let release = Arc::clone(&go_on);
    let handlers = Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
        let (inside, release) = (inside.clone(), Arc::clone(&release));
        async move {
            let mut tx = ctx.transaction().await?;
            sqlx::query("INSERT INTO effects (event_id, attempt) VALUES ($1, 1)")
                .bind(&e.id)
                .execute(&mut *tx)
                .await?;
            drop(tx);
            let _ = inside.send(());
            release.notified().await;
            Ok::<(), HandlerError>(())
        }
    });
    let (shutdown, worker) = work_on_one(&pg, &inbox, handlers, "evt_pg_open_tx").await;
    entered.recv().await.expect("the handler is inside");
    assert_eq!(
        state_of(&inbox, "evt_pg_open_tx").await,
        EntryState::Processing
    );
    let stats = inbox.admin().stats().await.expect("stats");
    assert_eq!((stats.processing, stats.done), (1, 0), "{stats:?}");
    assert!(
        effects(&app).await.is_empty(),
        "the write is not committed yet"
    );
    go_on.notify_one();
    common::worker::wait_until("the entry done", async || {
        inbox.admin().stats().await.expect("stats").done == 1
    })
    .await;
    shutdown.cancel();
    worker.await.expect("worker");
    assert_eq!(effects(&app).await, vec![("evt_pg_open_tx".to_owned(), 1)]);
}

/// A handler whose lease was taken over before it opened its transaction (here: another
/// replica's token written over it) gets an error from `PgContext::transaction` and writes
/// nothing; the entry is left to its new holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_refused_once_the_lease_is_lost() {
    let server = PostgresServer::start();
    let schema = unique_schema("lost_tx");
    let (pool, url, app) = app_database(&server, &schema).await;
    let pg = backend(&url, &schema).await;
    let inbox = Inbox::new(pg.clone());
    let (started, mut running) = tokio::sync::mpsc::unbounded_channel();
    let (refused, mut answer) = tokio::sync::mpsc::unbounded_channel();
    let go_on = Arc::new(tokio::sync::Notify::new());
    let release = Arc::clone(&go_on);
    let handlers = Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
        let (started, refused, release) = (started.clone(), refused.clone(), Arc::clone(&release));
        async move {
            let _ = started.send(());
            release.notified().await;
            let opened = ctx.transaction().await;
            let _ = refused.send(opened.as_ref().err().map(ToString::to_string));
            let mut tx = opened?;
            sqlx::query("INSERT INTO effects (event_id, attempt) VALUES ($1, 1)")
                .bind(&e.id)
                .execute(&mut *tx)
                .await?;
            Ok::<(), HandlerError>(())
        }
    });
    let (shutdown, worker) = work_on_one(&pg, &inbox, handlers, "evt_pg_lost_tx").await;
    running.recv().await.expect("the handler runs");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {schema}.entries SET lease_token = 'another-replica' WHERE id = 'evt_pg_lost_tx'"
    )))
    .execute(&pool)
    .await
    .expect("takeover");
    go_on.notify_one();
    let error = answer.recv().await.expect("the handler asked");
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("lease was taken over")),
        "{error:?}"
    );
    shutdown.cancel();
    worker.await.expect("worker");
    assert!(effects(&app).await.is_empty(), "nothing written");
    assert_eq!(
        state_of(&inbox, "evt_pg_lost_tx").await,
        EntryState::Processing,
        "left to its holder"
    );
}

/// A handler that ignores an error inside its transaction (PostgreSQL then aborts it, and
/// answers its `COMMIT` with a rollback) and returns `Ok` has not succeeded: the attempt is
/// retried, and the retry's write is the one effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_ignored_inside_the_transaction_fails_the_attempt() {
    let server = PostgresServer::start();
    let schema = unique_schema("aborted_tx");
    let (_pool, url, app) = app_database(&server, &schema).await;
    let pg = backend(&url, &schema).await;
    let inbox = Inbox::new(pg.clone());
    let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let after = Arc::clone(&committed);
    let handlers = Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
        let after = Arc::clone(&after);
        async move {
            let mut tx = ctx.transaction().await?;
            sqlx::query("INSERT INTO effects (event_id, attempt) VALUES ($1, $2)")
                .bind(&e.id)
                .bind(i32::try_from(ctx.attempt).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await?;
            if ctx.attempt == 1 {
                // A failing statement whose error the handler swallows.
                let ignored = sqlx::query("SELECT 1 / 0").execute(&mut *tx).await;
                assert!(ignored.is_err());
            }
            let attempt = ctx.attempt;
            ctx.after_commit(move || after.lock().expect("lock").push(attempt));
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        pg.worker(handlers)
            .retry_policy(common::worker::fast_policy())
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_pg_aborted_tx", "test"))
        .await
        .expect("accept");
    common::worker::wait_until("the entry done", async || {
        inbox.admin().stats().await.expect("stats").done == 1
    })
    .await;
    shutdown.cancel();
    worker.await.expect("worker");
    assert_eq!(
        effects(&app).await,
        vec![("evt_pg_aborted_tx".to_owned(), 2)],
        "the first attempt's write was rolled back, the second's committed"
    );
    assert_eq!(
        *committed.lock().expect("lock"),
        vec![2],
        "after_commit once, for the commit"
    );
}

/// One pool for everything: the application's own `PgPool` serves its own query, the
/// handler's effect (in the entry's transaction) and the inbox. A failed attempt rolls the
/// effect and the completion back together (the entry is scheduled again, no row); the retry
/// commits both together. Closing the application's pool closes the inbox's: there is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_pool_serves_its_queries_the_effects_and_the_inbox() {
    let server = PostgresServer::start();
    let schema = unique_schema("app_pool");
    let (_admin, _url, app) = app_database(&server, &schema).await;
    let pg = PgBackend::with_pool(app.clone(), PgOptions::default().schema(&schema))
        .await
        .expect("the inbox on the application's pool");
    let inbox = Inbox::new(pg.clone());
    // The application's own query, on the same pool.
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM effects")
        .fetch_one(&app)
        .await
        .expect("the application's query");
    assert_eq!(rows, 0);

    let (inside, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let go_on = Arc::new(tokio::sync::Notify::new());
    let release = Arc::clone(&go_on);
    let handlers = Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
        let (inside, release) = (inside.clone(), Arc::clone(&release));
        async move {
            {
                let mut tx = ctx.transaction().await?;
                sqlx::query("INSERT INTO effects (event_id, attempt) VALUES ($1, $2)")
                    .bind(&e.id)
                    .bind(i32::try_from(ctx.attempt).unwrap_or(i32::MAX))
                    .execute(&mut *tx)
                    .await?;
            }
            let _ = inside.send(ctx.attempt);
            release.notified().await;
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
    inbox
        .accept(&delivery("evt_pg_app_pool", "test"))
        .await
        .expect("accept");

    assert_eq!(entered.recv().await, Some(1), "the first attempt is inside");
    go_on.notify_one();
    assert_eq!(entered.recv().await, Some(2), "the retry is inside");
    // Between the two: the first attempt's effect and completion were both rolled back.
    let entry = inbox
        .admin()
        .entry("evt_pg_app_pool")
        .await
        .expect("entry")
        .expect("stored");
    assert_eq!(entry.summary.state, EntryState::Processing);
    assert_eq!(entry.summary.attempts, 2);
    assert_eq!(
        entry.summary.last_error.as_deref(),
        Some("failed after writing")
    );
    assert!(
        effects(&app).await.is_empty(),
        "the failed attempt wrote nothing"
    );
    go_on.notify_one();
    common::worker::wait_until("the entry done", async || {
        inbox.admin().stats().await.expect("stats").done == 1
    })
    .await;
    shutdown.cancel();
    worker.await.expect("worker");
    assert_eq!(
        effects(&app).await,
        vec![("evt_pg_app_pool".to_owned(), 2)],
        "the retry's effect committed with the completion"
    );

    // One pool: closing the application's closes the inbox's. (The close waits for the
    // connection the backend's listener holds until the backend is dropped.)
    let closing = tokio::time::timeout(Duration::from_millis(200), app.close()).await;
    assert!(closing.is_err(), "the listener still holds its connection");
    assert!(app.is_closed());
    assert!(
        inbox.admin().stats().await.is_err(),
        "the inbox's pool is closed"
    );
    drop((inbox, pg));
    tokio::time::timeout(Duration::from_secs(10), app.close())
        .await
        .expect("closed once the backend is dropped");
}

/// A listener URL that nothing answers is refused at start, with its kind and without its
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_url_is_where_wake_ups_are_listened_for() {
    let server = PostgresServer::start();
    let pool = sqlx::PgPool::connect(server.url()).await.expect("pool");
    let schema = unique_schema("listen_url");
    let err = PgBackend::with_pool(
        pool.clone(),
        PgOptions::default()
            .schema(&schema)
            .listen_url("postgres://app:hunter2@127.0.0.1:1/none"),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert_eq!(
        err.kind(),
        airmy_verify_inbox::OpenErrorKind::Refused,
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    // Given the server's own URL, the listener wakes a worker of this backend on an accept
    // made through another backend (another replica) at once.
    let listening = PgBackend::with_pool(
        pool.clone(),
        PgOptions::default()
            .schema(&schema)
            .listen_url(server.url()),
    )
    .await
    .expect("listens");
    let other = backend(server.url(), &schema).await;
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        listening.wait(Duration::from_secs(30)).await;
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    other
        .accept(&delivery("evt_pg_listen_url", "test"))
        .await
        .expect("accept");
    let waited = waiting.await.expect("waited");
    assert!(
        waited < Duration::from_secs(10),
        "woken by the accept: {waited:?}"
    );
}

/// What `with_pool` refuses, by kind and without a password: a pool of one connection (the
/// listener would keep it), a pool that cannot connect (diagnosed: refused, not a timeout), a
/// listener on another database (no wake-up would reach it), a password given in the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pool_refuses_what_cannot_work() {
    use airmy_verify_inbox::OpenErrorKind;
    let server = PostgresServer::start();
    let schema = unique_schema("with_pool");
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(server.url())
        .await
        .expect("pool");
    let err = PgBackend::with_pool(one.clone(), PgOptions::default().schema(&schema))
        .await
        .expect_err("a pool of one");
    assert_eq!(err.kind(), OpenErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("at least 2"), "{err}");
    // With a listener of its own, a pool of one serves.
    let pg = PgBackend::with_pool(
        one,
        PgOptions::default()
            .schema(&schema)
            .listen_url(server.url()),
    )
    .await
    .expect("the listener on its own connection");
    drop(pg);

    let nowhere = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy("postgres://app:hunter2@127.0.0.1:1/app")
        .expect("a lazy pool");
    let err = PgBackend::with_pool(nowhere, PgOptions::default())
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), OpenErrorKind::Refused, "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");

    let pool = sqlx::PgPool::connect(server.url()).await.expect("pool");
    let other = format!("other_{schema}");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {other}")))
        .execute(&pool)
        .await
        .expect("another database");
    let elsewhere = server.url().replace("/postgres", &format!("/{other}"));
    let err = PgBackend::with_pool(
        pool,
        PgOptions::default().schema(&schema).listen_url(elsewhere),
    )
    .await
    .expect_err("a listener on another database");
    assert_eq!(err.kind(), OpenErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("do not cross databases"), "{err}");

    let query_password = "postgres://127.0.0.1:1/app?user=app&password=hunter2";
    let err = PgBackend::connect(
        query_password,
        PgOptions::default().acquire_timeout(Duration::from_secs(1)),
    )
    .await
    .expect_err("nothing listens");
    assert_eq!(err.kind(), OpenErrorKind::Refused, "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

/// A shutdown is bounded even when a cancelled handler's transaction holds its entry's row
/// (a statement of it blocked on a lock the test holds for a minute): the worker stops within
/// its deadline plus the release bound, and the entry, not released, is taken again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_is_bounded_by_a_handler_stuck_in_its_transaction() {
    let server = PostgresServer::start();
    let schema = unique_schema("stuck_tx");
    let (pool, url, _app) = app_database(&server, &schema).await;
    let pg = backend(&url, &schema).await;
    let inbox = Inbox::new(pg.clone());
    // Another session locks the effects table for a minute.
    let mut locker = pool.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE app_{schema}.effects IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *locker)
    .await
    .expect("lock");
    let (inside, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let handlers = Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
        let inside = inside.clone();
        async move {
            let mut tx = ctx.transaction().await?;
            let _ = inside.send(());
            // Blocks on the test's lock.
            sqlx::query("INSERT INTO effects (event_id, attempt) VALUES ($1, 1)")
                .bind(&e.id)
                .execute(&mut *tx)
                .await?;
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        pg.worker(handlers)
            .shutdown_deadline(Duration::from_millis(500))
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_pg_stuck_tx", "test"))
        .await
        .expect("accept");
    entered
        .recv()
        .await
        .expect("the handler is inside its transaction");
    let asked = std::time::Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the shutdown ends, the lock notwithstanding")
        .expect("worker");
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");
    locker.rollback().await.expect("unlock");
    // Not released (its row was held) or released late: either way it is not lost.
    let entry = inbox
        .admin()
        .entry("evt_pg_stuck_tx")
        .await
        .expect("entry")
        .expect("stored");
    assert!(
        matches!(
            entry.summary.state,
            EntryState::Processing | EntryState::Pending
        ),
        "{entry:?}"
    );
}

/// A pause is kept in the database: a new backend (a restart) finds the paused type's entries
/// still held and never takes them; resumed, each is taken once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_new_connection() {
    let server = PostgresServer::start();
    let schema = unique_schema("pause_restart");
    let first = backend(server.url(), &schema).await;
    let (event_type, ids) = common::pause::pause_a_backlog(&first, 40, 10).await;
    drop(first);
    let again = backend(server.url(), &schema).await;
    common::pause::the_pause_held_across_the_restart(&again, &event_type, &ids, 10).await;
}

/// The cost of a take beside a large paused backlog (printed; run on purpose:
/// `cargo test -p airmy-verify-inbox --all-features --release --test postgres -- --ignored
/// --nocapture take_beside`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it on purpose"]
async fn take_beside_a_large_paused_backlog() {
    let server = PostgresServer::start();
    let schema = unique_schema("pause_measure");
    let b = backend(server.url(), &schema).await;
    let pool = sqlx::PgPool::connect(server.url()).await.expect("pool");
    let vacuum = async || {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM {schema}.entries")))
            .execute(&pool)
            .await
            .expect("vacuum");
    };
    common::pause::measure_take_with_a_paused_backlog(&b, "PostgreSQL", 100_000, vacuum).await;
}
