//! Timeouts an operator sets on the database role (`ALTER ROLE … SET statement_timeout`,
//! `idle_in_transaction_session_timeout`, `idle_session_timeout`), with transactional
//! handlers that exceed them: the attempt fails and is retried at once (never a lease left to
//! run out, never a completion without its effect); past the retry policy the entry is a dead
//! letter whose last error names the timeout; connections the server closed while idle in the
//! pool are never handed out.
#![cfg(feature = "postgres")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use airmy_verify::{Envelope, Event};
use airmy_verify_inbox::conformance::delivery;
use airmy_verify_inbox::{
    Accepted, EntryState, HandlerError, Handlers, Inbox, PgBackend, PgContext, PgOptions,
};
use test_support::PostgresServer;
use test_support::postgres::unique_schema;
use tokio_util::sync::CancellationToken;

#[macro_use]
mod common;

/// A private server (the test sets a role's settings) with a role `app` whose sessions get
/// `settings`, the inbox's schema, the application's `effects` table (the role's own), and
/// a direct pool as the server's superuser, for counting.
struct Setup {
    _server: PostgresServer,
    url: String,
    schema: String,
    direct: sqlx::PgPool,
}

async fn setup(name: &str, settings: &[(&str, &str)]) -> Setup {
    let server = PostgresServer::start_private();
    let schema = unique_schema(name);
    let direct = sqlx::PgPool::connect(server.url()).await.expect("pool");
    let mut sql = "CREATE ROLE app LOGIN; GRANT CREATE ON DATABASE postgres TO app;".to_owned();
    for (setting, value) in settings {
        sql.push_str(&format!(" ALTER ROLE app SET {setting} = '{value}';"));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&direct)
        .await
        .expect("the role");
    let url = server.url().replace("airmy@", "app@");
    let app = sqlx::PgPool::connect(&url).await.expect("as app");
    common::effects::create(&app, &schema).await;
    app.close().await;
    Setup {
        _server: server,
        url,
        schema,
        direct,
    }
}

impl Setup {
    async fn backend(&self) -> PgBackend {
        PgBackend::connect(&self.url, PgOptions::default().schema(&self.schema))
            .await
            .expect("connects as app")
    }

    /// Effect rows per event id, as (count, attempt of the last).
    async fn effects(&self) -> HashMap<String, (i64, i32)> {
        common::effects::count(&self.direct, &self.schema).await
    }
}

/// What the test's handler does on an attempt, by the event id's prefix: a statement slower
/// than `statement_timeout`, its error returned (`slow_`) or ignored (`swallow_`), or staying
/// idle inside the transaction past `idle_in_transaction_session_timeout` (`idle_`); on the
/// first attempt only, or on every one (`always_` ids).
fn handlers(schema: &str) -> Handlers<PgContext> {
    let insert = common::effects::insert(schema);
    Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
        let insert = Arc::clone(&insert);
        async move {
            let misbehave = ctx.attempt == 1 || e.id.contains("always_");
            let mut tx = ctx.transaction().await?;
            common::effects::write(&mut tx, insert, &e.id, ctx.attempt).await?;
            if misbehave && e.id.contains("slow_") {
                sqlx::query("SELECT pg_sleep(2)").execute(&mut *tx).await?;
            }
            if misbehave && e.id.contains("swallow_") {
                let _ = sqlx::query("SELECT pg_sleep(2)").execute(&mut *tx).await;
            }
            drop(tx);
            if misbehave && e.id.contains("idle_") {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            Ok::<(), HandlerError>(())
        }
    })
}

/// `statement_timeout` and `idle_in_transaction_session_timeout` on the role (300 ms, 500 ms):
/// a handler's slow statement fails its attempt (whether the handler returns the error or
/// ignores it), so does a handler that stays idle in its transaction past the limit (the
/// server ends its session: the commit fails). Each is retried at once, not after its lease
/// (60 s, longer than the test waits), and its second attempt's effect is the only one
/// committed. Handlers that always exceed the limits end as dead letters after 3 attempts,
/// with no effect, their last error naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_past_the_roles_timeouts_fail_their_attempt_and_are_retried() {
    let setup = setup(
        "role_timeouts",
        &[
            ("statement_timeout", "300ms"),
            ("idle_in_transaction_session_timeout", "500ms"),
        ],
    )
    .await;
    let pg = setup.backend().await;
    let inbox = Inbox::new(pg.clone());
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        pg.worker(handlers(&setup.schema))
            .concurrency(8)
            .lease(Duration::from_secs(60))
            .retry_policy(common::worker::fast_policy().max_attempts(Some(3)))
            .run(shutdown.clone()),
    );
    let recovering: Vec<String> = ["slow", "swallow", "idle"]
        .iter()
        .flat_map(|kind| (0..3).map(move |i| format!("evt_{kind}_{i}")))
        .collect();
    let dead = ["evt_always_slow_0", "evt_always_idle_0"];
    for id in recovering.iter().map(String::as_str).chain(dead) {
        assert_eq!(
            inbox.accept(&delivery(id, "test")).await.expect("accept"),
            Accepted::Stored
        );
    }
    common::worker::wait_until_finished(&inbox).await;
    shutdown.cancel();
    worker.await.expect("worker");
    let stats = inbox.admin().stats().await.expect("stats");
    assert_eq!((stats.done, stats.dead), (9, 2), "{stats:?}");
    let effects = setup.effects().await;
    // One effect each, from a later attempt than the first (which always exceeds the role's
    // timeouts); on a loaded machine the second may run out of time too, and the third commits.
    for id in &recovering {
        let effect = effects.get(id);
        assert!(
            matches!(effect, Some(&(1, attempt)) if attempt >= 2),
            "{id}: one effect, from a retried attempt: {effect:?}"
        );
    }
    for (id, cause) in [
        (
            "evt_always_slow_0",
            "canceling statement due to statement timeout",
        ),
        ("evt_always_idle_0", "idle-in-transaction timeout"),
    ] {
        assert_eq!(effects.get(id), None, "{id}: no effect");
        let entry = inbox.admin().entry(id).await.expect("entry").expect("held");
        assert_eq!(entry.summary.state, EntryState::Dead);
        assert_eq!(entry.summary.attempts, 3);
        let error = entry.summary.last_error.unwrap_or_default();
        eprintln!("{id}: {error}");
        assert!(error.contains(cause), "{id}: {error}");
    }
}

/// `idle_session_timeout` on the role (400 ms): the server closes the pool's connections while
/// they sit idle; the next accepts, all at once, get live connections (each answered
/// `Stored`), and an idle worker, whose connections the server closed too, handles them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_closed_while_idle_are_not_handed_out() {
    let setup = setup("idle_session", &[("idle_session_timeout", "400ms")]).await;
    let pg = setup.backend().await;
    let inbox = Inbox::new(pg.clone());
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(pg.worker(handlers(&setup.schema)).run(shutdown.clone()));
    for round in 0..3 {
        // Eight connections open at once, then idle in the pool past the server's limit.
        let held = futures_util::future::join_all((0..8).map(|_| pg.pool().acquire())).await;
        assert!(held.iter().all(Result::is_ok));
        drop(held);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let accepts = (0..32).map(|i| {
            let inbox = inbox.clone();
            async move {
                inbox
                    .accept(&delivery(&format!("evt_session_{round}_{i}"), "test"))
                    .await
            }
        });
        let answers = futures_util::future::join_all(accepts).await;
        let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
        assert!(failed.is_empty(), "round {round}: {failed:?}");
    }
    common::worker::wait_until("every entry done", async || {
        inbox.admin().stats().await.expect("stats").done == 96
    })
    .await;
    shutdown.cancel();
    worker.await.expect("worker");
    let effects = setup.effects().await;
    assert_eq!(effects.len(), 96);
    assert!(effects.values().all(|(n, _)| *n == 1), "{effects:?}");
}
