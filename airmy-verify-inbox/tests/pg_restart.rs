//! The PostgreSQL server restarted under the inbox (`pg_ctl restart -m fast`, which terminates
//! every session, and `-m immediate`, a crash recovered from the WAL) while accepts are in
//! flight and transactional handlers are inside their transactions: accepts answer
//! `Unavailable` (503 at the HTTP level) or `Stored` only once stored; the worker resumes by
//! itself; every acknowledged id ends with exactly one effect row (counted in the database);
//! a burst right after the restart finds no dead connection in the pool; the `LISTEN`
//! connection comes back.
#![cfg(feature = "postgres")]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use airmy_verify::{Envelope, Event};
use airmy_verify_inbox::conformance::delivery;
use airmy_verify_inbox::{
    Accepted, ErrorKind, HandlerError, Handlers, Inbox, PgBackend, PgContext, PgOptions,
};
use test_support::postgres::{Stop, unique_schema};
use test_support::{PgBouncer, PostgresServer};
use tokio_util::sync::CancellationToken;

#[macro_use]
mod common;

/// A private server (the test restarts it), the inbox's schema, the application's `effects`
/// table in `app_<schema>`, and a direct pool for counting.
struct Setup {
    server: Arc<PostgresServer>,
    schema: String,
    direct: sqlx::PgPool,
}

async fn setup(name: &str) -> Setup {
    let server = Arc::new(PostgresServer::start_private());
    let schema = unique_schema(name);
    let direct = sqlx::PgPool::connect(server.url()).await.expect("pool");
    common::effects::create(&direct, &schema).await;
    Setup {
        server,
        schema,
        direct,
    }
}

impl Setup {
    /// A backend with a pool of its own (`PgBackend::connect`), as a service deploys it; an
    /// operation waits at most `acquire` for a connection (while the server is down).
    async fn backend(&self, acquire: Duration) -> PgBackend {
        PgBackend::connect(
            self.server.url(),
            PgOptions::default()
                .schema(&self.schema)
                .acquire_timeout(acquire),
        )
        .await
        .expect("connects")
    }

    /// Restarts the server in `mode` on a blocking thread (the test's load goes on meanwhile);
    /// returns once it accepts connections again.
    async fn restart(&self, mode: Stop) {
        let server = Arc::clone(&self.server);
        tokio::task::spawn_blocking(move || server.restart(mode))
            .await
            .expect("restart");
    }

    /// Effect rows per event id, and the highest attempt that committed one.
    async fn effects(&self) -> (HashMap<String, i64>, i32) {
        let rows = common::effects::count(&self.direct, &self.schema).await;
        let highest = rows.values().map(|(_, a)| *a).max().unwrap_or(0);
        (
            rows.into_iter().map(|(id, (n, _))| (id, n)).collect(),
            highest,
        )
    }

    /// Sessions whose last statement was the inbox's `LISTEN`.
    async fn listening(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE starts_with(query, 'LISTEN \"' || $1 || '_wake\"')",
        )
        .bind(&self.schema)
        .fetch_one(&self.direct)
        .await
        .expect("pg_stat_activity")
    }
}

/// Handlers writing one row into the application's `effects` in the entry's transaction, then
/// staying `inside` it; `in_tx` counts the handlers inside their transactions.
fn effect_handlers(schema: &str, inside: Duration, in_tx: Arc<AtomicUsize>) -> Handlers<PgContext> {
    let insert = common::effects::insert(schema);
    Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
        let (insert, in_tx) = (Arc::clone(&insert), Arc::clone(&in_tx));
        async move {
            let mut tx = ctx.transaction().await?;
            common::effects::write(&mut tx, insert, &e.id, ctx.attempt).await?;
            in_tx.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(inside).await;
            in_tx.fetch_sub(1, Ordering::SeqCst);
            Ok::<(), HandlerError>(())
        }
    })
}

/// `n` accepts of new ids `{prefix}_{i}` at once; how many were `Stored`.
async fn burst(inbox: &Inbox, prefix: &str, n: usize) -> Vec<Result<Accepted, String>> {
    let accepts = (0..n).map(|i| {
        let inbox = inbox.clone();
        let id = format!("{prefix}_{i}");
        async move {
            inbox
                .accept(&delivery(&id, "test"))
                .await
                .map_err(|e| format!("{:?}: {e}", e.kind()))
        }
    });
    futures_util::future::join_all(accepts).await
}

/// Accepts `id` until it is stored, as AIRMY retries: an accept answered `Unavailable` is tried
/// again after `pause`, at most 400 times; `Duplicate` after such an error means the failed
/// attempt stored it. Any other error, or a first answer `Duplicate`, fails the test. Returns
/// the number of `Unavailable` answers.
async fn accept_until_stored(inbox: &Inbox, id: &str, pause: Duration) -> usize {
    let mut refused = 0;
    for _ in 0..400 {
        match inbox.accept(&delivery(id, "test")).await {
            Ok(Accepted::Stored) => return refused,
            Ok(Accepted::Duplicate) => {
                assert!(refused > 0, "{id}: a new id answered Duplicate");
                return refused;
            }
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                refused += 1;
                tokio::time::sleep(pause).await;
            }
            Err(e) => panic!("{id}: {:?} {e}", e.kind()),
        }
    }
    panic!("{id} never accepted in 400 tries");
}

/// What the load lanes saw: ids acknowledged (`Stored`, or `Duplicate` on a retry after an
/// error: stored by the attempt whose answer was the error), and errors answered.
#[derive(Default)]
struct Seen {
    acknowledged: HashSet<String>,
    refused: usize,
}

/// Four lanes accepting new ids (`{prefix}_{lane}_{i}`, one every 40 ms) until `stop`, each
/// until stored ([`accept_until_stored`], 50 ms apart).
fn load(inbox: &Inbox, prefix: &str, stop: &Arc<AtomicBool>) -> tokio::task::JoinSet<Seen> {
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..4 {
        let (inbox, stop, prefix) = (inbox.clone(), Arc::clone(stop), prefix.to_owned());
        lanes.spawn(async move {
            let mut seen = Seen::default();
            for i in 0..2_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("{prefix}_{lane}_{i}");
                seen.refused += accept_until_stored(&inbox, &id, Duration::from_millis(50)).await;
                seen.acknowledged.insert(id);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            seen
        });
    }
    lanes
}

/// The server restarted in `mode` under load, handlers inside their transactions.
async fn restart_mid_load(mode: Stop) {
    let setup = setup(&format!("restart_{mode:?}")).await;
    // Shorter than any restart: an accept meanwhile answers Unavailable rather than waiting
    // for the server to be back (which it does within the default 3 s).
    let pg = setup.backend(Duration::from_millis(200)).await;
    let inbox = Inbox::new(pg.clone());
    let in_tx = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        pg.worker(effect_handlers(
            &setup.schema,
            Duration::from_millis(60),
            Arc::clone(&in_tx),
        ))
        .concurrency(8)
        .retry_policy(common::worker::fast_policy())
        .run(shutdown.clone()),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut lanes = load(&inbox, &format!("evt_rs_{mode:?}"), &stop);
    common::worker::wait_until("effects committed before the restart", async || {
        setup.effects().await.0.len() >= 20
    })
    .await;
    common::worker::wait_until("handlers inside their transactions", async || {
        in_tx.load(Ordering::SeqCst) > 0
    })
    .await;
    setup.restart(mode).await;
    // Right after the restart: a burst of accepts finds no dead connection in the pool.
    let after = burst(&inbox, &format!("evt_rs_{mode:?}_burst"), 64).await;
    let failed: Vec<_> = after.iter().filter(|a| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "a burst right after the restart: {failed:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged: HashSet<String> = (0..64)
        .map(|i| format!("evt_rs_{mode:?}_burst_{i}"))
        .collect();
    let mut refused = 0;
    while let Some(lane) = lanes.join_next().await {
        let seen = lane.expect("a load lane");
        acknowledged.extend(seen.acknowledged);
        refused += seen.refused;
    }
    // The worker was never touched: it resumes on its own.
    common::worker::wait_until_finished(&inbox).await;
    shutdown.cancel();
    worker.await.expect("worker");
    let stats = inbox.admin().stats().await.expect("stats");
    assert_eq!(stats.dead, 0);
    let (effects, highest) = setup.effects().await;
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !effects.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged without effect: {missing:?}"
    );
    let doubled: Vec<_> = effects.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "effects not exactly once: {doubled:?}");
    assert_eq!(
        stats.done,
        effects.len() as u64,
        "one effect for every processed entry"
    );
    assert!(
        refused > 0,
        "no accept answered Unavailable during the restart"
    );
    // The restart cut transactions open at that moment: their attempts failed and were
    // retried (only a later attempt committed their effect).
    assert!(
        highest >= 2,
        "no handler's transaction was cut by the restart"
    );
    eprintln!(
        "{mode:?}: {} acknowledged, {refused} accepts answered Unavailable, {} done",
        acknowledged.len(),
        stats.done
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_restart_mid_load_keeps_every_effect_exactly_once() {
    restart_mid_load(Stop::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_restart_mid_load_keeps_every_effect_exactly_once() {
    restart_mid_load(Stop::Immediate).await;
}

/// A worker running on `pg`'s inbox, 64 deliveries accepted and handled (exactly once each),
/// and eight connections left idle in the pool (opened at once).
async fn warmed_up(
    setup: &Setup,
    pg: &PgBackend,
    name: &str,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let inbox = Inbox::new(pg.clone());
    let warm = burst(&inbox, &format!("evt_{name}_warm"), 64).await;
    assert!(warm.iter().all(Result::is_ok), "{warm:?}");
    let held = futures_util::future::join_all((0..8).map(|_| pg.pool().acquire())).await;
    drop(held);
    common::worker::wait_until("eight idle connections", async || pg.pool().num_idle() >= 8).await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        pg.worker(effect_handlers(
            &setup.schema,
            Duration::ZERO,
            Arc::new(AtomicUsize::new(0)),
        ))
        .run(shutdown.clone()),
    );
    common::worker::wait_until("the warm-up handled", async || {
        inbox.admin().stats().await.expect("stats").done == 64
    })
    .await;
    assert_eq!(setup.listening().await, 1, "one LISTEN session");
    (shutdown, worker)
}

/// After the restart: the idle worker handles the 64 new deliveries without being touched,
/// the `LISTEN` connection is back, and each of the 128 has exactly one effect.
async fn resumed(
    setup: &Setup,
    pg: &PgBackend,
    (shutdown, worker): (CancellationToken, tokio::task::JoinHandle<()>),
) {
    let inbox = Inbox::new(pg.clone());
    common::worker::wait_until("the new deliveries handled", async || {
        inbox.admin().stats().await.expect("stats").done == 128
    })
    .await;
    common::worker::wait_until("the LISTEN connection back", async || {
        setup.listening().await == 1
    })
    .await;
    shutdown.cancel();
    worker.await.expect("worker");
    let (effects, _) = setup.effects().await;
    assert_eq!(effects.len(), 128);
    assert!(effects.values().all(|n| *n == 1), "{effects:?}");
}

/// The pool filled with idle connections, the server restarted while nothing ran: the first
/// burst of accepts after it gets no dead connection (each answered `Stored`), then
/// [`resumed`].
async fn idle_pool_across_a_restart(mode: Stop) {
    let setup = setup(&format!("idle_{mode:?}")).await;
    let pg = setup.backend(Duration::from_secs(3)).await;
    let running = warmed_up(&setup, &pg, &format!("idle_{mode:?}")).await;
    setup.restart(mode).await;
    let inbox = Inbox::new(pg.clone());
    let after = burst(&inbox, &format!("evt_idle_{mode:?}_after"), 64).await;
    let failed: Vec<_> = after.iter().filter(|a| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "a burst right after the restart: {failed:?}"
    );
    resumed(&setup, &pg, running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_a_fast_restart_gets_no_dead_connection() {
    idle_pool_across_a_restart(Stop::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_an_immediate_restart_gets_no_dead_connection() {
    idle_pool_across_a_restart(Stop::Immediate).await;
}

/// The same through PgBouncer in transaction mode (Debian's defaults; `pooler`, the `LISTEN` on
/// the server's own URL): PgBouncer keeps the backend's connections, and after a server login
/// that failed while the server was down it answers every client with an error for
/// `server_login_retry` (15 s by default) before it tries again. Accepts meanwhile answer
/// `Unavailable`, never `Stored`; retried, each is stored once PgBouncer logs in again; then
/// [`resumed`].
async fn through_pgbouncer_across_a_restart(mode: Stop) {
    let setup = setup(&format!("pgb_{mode:?}")).await;
    let bouncer = PgBouncer::start(&setup.server);
    let pg = PgBackend::connect(
        bouncer.url(),
        PgOptions::default()
            .schema(&setup.schema)
            .pooler(true)
            .listen_url(setup.server.url()),
    )
    .await
    .expect("connects through PgBouncer");
    let running = warmed_up(&setup, &pg, &format!("pgb_{mode:?}")).await;
    setup.restart(mode).await;
    let back = std::time::Instant::now();
    let inbox = Inbox::new(pg.clone());
    let accepts = (0..64).map(|i| {
        let (inbox, id) = (inbox.clone(), format!("evt_pgb_{mode:?}_after_{i}"));
        async move { accept_until_stored(&inbox, &id, Duration::from_millis(100)).await }
    });
    let refused: usize = futures_util::future::join_all(accepts)
        .await
        .into_iter()
        .sum();
    eprintln!(
        "through PgBouncer, {mode:?}: {refused} accepts answered Unavailable; all 64 stored {:?} \
         after the server was back",
        back.elapsed()
    );
    resumed(&setup, &pg, running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_a_fast_restart_answers_unavailable_until_it_logs_in_again() {
    through_pgbouncer_across_a_restart(Stop::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_an_immediate_restart_answers_unavailable_until_it_logs_in_again() {
    through_pgbouncer_across_a_restart(Stop::Immediate).await;
}
