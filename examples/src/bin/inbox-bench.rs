//! Measurements of the durable inbox, for `BENCHMARKS.md` (release build):
//!
//! ```text
//! inbox-bench fsync [N]                      # this disk's fsync latency (N synced 4 KiB writes)
//! inbox-bench sqlite-floor [N] [BATCH]       # SQLite's own floor: N accept-sized rows inserted
//!                                            # BATCH per synced transaction, as the inbox's file
//! inbox-bench latency [N]                    # accept → handler start, one delivery at a time
//! inbox-bench drain [N] [WORKERS] [tx]       # N queued entries drained by a no-op handler
//!                                            # (tx, PostgreSQL: one INSERT in the entry's transaction,
//!                                            # then its floor: pgbench running one attempt's statements)
//! inbox-bench load URL [N] [CONCURRENCY]     # N unique signed deliveries, CONCURRENCY at a time
//! inbox-bench roundtrips [N]                 # Redis commands per accepted delivery (AIRMY_INBOX)
//! inbox-bench list [N]                       # the console's listing on an inbox of N entries
//!                                            # (90 % done, 1 % dead, 1 % scheduled, 8 % pending)
//! ```
//!
//! `load` signs every delivery with `AIRMY_WEBHOOK_SECRET` (or the bench secret), each with a
//! new id (so an inbox stores every one), and prints requests per second, p50/p99 latency and
//! the statuses. Every loop is bounded by N. Files go to a fresh directory under the system's
//! temporary directory (`TMPDIR`), removed at the end.
//!
//! `latency`, `drain` and `rawdrain` measure the SQLite backend, the Redis backend when
//! `AIRMY_INBOX` is a Redis URL (each run under a fresh key prefix, deleted at the end), or the
//! PostgreSQL backend when it is a `postgres://` URL (each run in a fresh schema, dropped at the
//! end; `?pooler=true` through a transaction pooler such as PgBouncer, with the listener on
//! `AIRMY_INBOX_LISTEN_URL` when set, as the receivers take them).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airmy_verify::time::OffsetDateTime;
use airmy_verify::{Envelope, Event, Secret, Verifier, testing};
use airmy_verify_inbox::{
    Accepted, Context, HandlerError, Handlers, Inbox, InboxUrl, PgBackend, PgContext, PgOptions,
    RedisBackend, RedisOptions, SqliteBackend, SqliteOptions,
};
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let dir =
        std::env::temp_dir().join(format!("inbox-bench-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn verifier() -> Verifier {
    Verifier::new(Secret::new(testing::SECRET).expect("secret"))
}

fn verified(id: &str) -> airmy_verify::Verified {
    let d = testing::sample_event("run.completed")
        .id(id)
        .created_at(OffsetDateTime::now_utc())
        .padded_to(1024)
        .signed(testing::SECRET);
    verifier().verify(&d.signature, d.body).expect("verifies")
}

fn fsync(n: usize) {
    let dir = temp_dir("fsync");
    let path = dir.join("fsync.bin");
    let mut file = std::fs::File::create(&path).expect("create");
    let block = vec![7u8; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        file.write_all(&block).expect("write");
        file.sync_data().expect("fsync");
        times.push(started.elapsed());
    }
    times.sort();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "fsync: {n} synced 4 KiB appends on {}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
        std::env::temp_dir().display(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.9).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );
}

/// SQLite's own batched insert rate in this process: the floor of the SQLite inbox's accepts.
/// The inbox's schema and settings (WAL, `synchronous=FULL`), made by opening a
/// `SqliteBackend` on a fresh file, then `n` rows of an accept's size (1 KiB bodies), `batch`
/// per transaction with the accept's own statement, on one connection: no channel, no task,
/// no HTTP. Prints rows per second.
fn sqlite_floor(n: usize, batch: usize) {
    let dir = temp_dir("sqlite-floor");
    let path = dir.join("floor.db");
    drop(SqliteBackend::open(&path, SqliteOptions::default()).expect("open the inbox's file"));
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("full");
    let body = vec![b'x'; 1024];
    let batch = batch.max(1);
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO entries (id, event_type, body, created_at, received_at, state, attempts, due_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?5)
                     ON CONFLICT (id) DO NOTHING",
                )
                .expect("prepare");
            for _ in 0..batch.min(n - done) {
                let id = format!("evt_floor_{done}");
                insert
                    .execute(rusqlite::params![
                        id,
                        "run.completed",
                        body,
                        "2026-12-08T00:00:00Z",
                        1_765_000_000_000_i64
                    ])
                    .expect("insert");
                done += 1;
            }
        }
        tx.commit().expect("commit");
    }
    let took = started.elapsed();
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "sqlite-floor: {n} rows, {batch} per synced transaction: {:.0} rows/s",
        n as f64 / took.as_secs_f64()
    );
}

/// Where a measurement's entries live, removed by [`Place::remove`].
enum Place {
    Dir(std::path::PathBuf),
    Redis {
        url: String,
        prefix: String,
    },
    Postgres {
        url: String,
        schema: String,
        backend: PgBackend,
    },
}

impl Place {
    fn name(&self) -> String {
        match self {
            Self::Dir(_) => "sqlite".to_owned(),
            Self::Redis { .. } => "redis".to_owned(),
            Self::Postgres { .. } => "postgres".to_owned(),
        }
    }

    async fn remove(&self) {
        match self {
            Self::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Self::Redis { url, prefix } => {
                let client = redis::Client::open(url.as_str()).expect("url");
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connects");
                // SCAN in steps (a million keys would time a single KEYS out).
                let mut cursor = 0_u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{{{prefix}}}*"))
                        .arg("COUNT")
                        .arg(10_000)
                        .query_async(&mut conn)
                        .await
                        .expect("scan");
                    if !keys.is_empty() {
                        let _: redis::RedisResult<()> =
                            redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Self::Postgres {
                schema, backend, ..
            } => {
                // One simple-protocol message on the backend's own pool: nothing prepared,
                // whatever pooler is in between.
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP TABLE IF EXISTS {schema}_effects"
                )))
                .execute(backend.pool())
                .await;
            }
        }
    }
}

/// A fresh inbox: on the Redis server of `AIRMY_INBOX` (a `redis://` URL) under a new prefix,
/// or in a new SQLite file.
async fn open(name: &str) -> (Inbox, Place) {
    if let Ok(url) = std::env::var("AIRMY_INBOX")
        && (url.starts_with("redis://") || url.starts_with("rediss://"))
    {
        let prefix = format!(
            "bench:{name}:{}:",
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let backend = RedisBackend::connect(&url, RedisOptions::default().prefix(&prefix))
            .await
            .expect("connects");
        return (Inbox::new(backend), Place::Redis { url, prefix });
    }
    if let Ok(inbox) = std::env::var("AIRMY_INBOX")
        && let Ok(InboxUrl::Postgres { url, pooler, .. }) = inbox.parse::<InboxUrl>()
    {
        let schema = format!(
            "bench_{name}_{}",
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        // Behind a transaction pooler (`?pooler=true`), as the receivers take it, with the
        // listener on `AIRMY_INBOX_LISTEN_URL` when set.
        let mut options = PgOptions::default()
            .schema(&schema)
            .pooler(pooler)
            .max_connections(
                std::env::var("PG_CONNECTIONS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(16),
            );
        if let Ok(listen) = std::env::var("AIRMY_INBOX_LISTEN_URL") {
            options = options.listen_url(listen);
        }
        let backend = PgBackend::connect(&url, options).await.expect("connects");
        return (
            Inbox::new(backend.clone()),
            Place::Postgres {
                url,
                schema,
                backend,
            },
        );
    }
    let dir = temp_dir(name);
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    (inbox, Place::Dir(dir))
}

async fn latency(n: usize) {
    let (inbox, dir) = open("latency").await;
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let delays: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (s, d) = (started.clone(), delays.clone());
    let handlers = Handlers::new().fallback(move |e: Envelope<Event>, _ctx: Context| {
        let now = Instant::now();
        if let Some(at) = s.lock().expect("lock").get(&e.id) {
            d.lock().expect("lock").push(now - *at);
        }
        async { Ok::<(), HandlerError>(()) }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(inbox.worker(handlers).run(shutdown.clone()));
    let mut accepts = Vec::with_capacity(n);
    for i in 0..n {
        let v = verified(&format!("evt_latency_{i}"));
        let at = Instant::now();
        started.lock().expect("lock").insert(v.id().to_owned(), at);
        assert_eq!(inbox.accept(&v).await.expect("accepted"), Accepted::Stored);
        accepts.push(at.elapsed());
        // One at a time: wait until it was handled.
        while delays.lock().expect("lock").len() <= i {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    shutdown.cancel();
    let _ = worker.await;
    let mut delays = delays.lock().expect("lock").clone();
    delays.sort();
    accepts.sort();
    dir.remove().await;
    println!(
        "latency ({}): {n} deliveries one at a time: accept (durable) p50 {:.2} ms, p99 {:.2} ms; \
         accept -> handler start p50 {:.2} ms, p99 {:.2} ms",
        dir.name(),
        percentile(&accepts, 0.5).as_secs_f64() * 1e3,
        percentile(&accepts, 0.99).as_secs_f64() * 1e3,
        percentile(&delays, 0.5).as_secs_f64() * 1e3,
        percentile(&delays, 0.99).as_secs_f64() * 1e3,
    );
}

async fn drain(n: usize, workers: usize, transactional: bool) {
    let (inbox, dir) = open("drain").await;
    // With `tx` on PostgreSQL: a table for the handler's one row, in the run's own name.
    let effects = match &dir {
        Place::Postgres { url, schema, .. } if transactional => {
            let table = format!("{schema}_effects");
            let pool = sqlx::PgPool::connect(url).await.expect("connects");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {table} (event_id text, event_type text, attempt int)"
            )))
            .execute(&pool)
            .await
            .expect("effects table");
            Some(Arc::<str>::from(format!(
                "INSERT INTO {table} (event_id, event_type, attempt) VALUES ($1, $2, $3)"
            )))
        }
        _ if transactional => {
            eprintln!("drain … tx needs AIRMY_INBOX=postgres://…");
            std::process::exit(2);
        }
        _ => None,
    };
    // Fill: 64 accepts at a time (they share transactions).
    let fill = Instant::now();
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + 64).min(n))
            .map(|i| verified(&format!("evt_drain_{i}")))
            .collect();
        let accepts = batch.iter().map(|v| inbox.accept(v));
        for result in futures_util::future::join_all(accepts).await {
            assert_eq!(result.expect("accepted"), Accepted::Stored);
        }
        next += batch.len();
    }
    let filled = fill.elapsed();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let d = done.clone();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = match (&dir, effects) {
        (Place::Postgres { backend, .. }, Some(insert)) => {
            let handlers =
                Handlers::default().fallback(move |e: Envelope<Event>, ctx: PgContext| {
                    let (d, insert) = (d.clone(), insert.clone());
                    async move {
                        let mut tx = ctx.transaction().await?;
                        sqlx::query(sqlx::AssertSqlSafe(insert))
                            .bind(&e.id)
                            .bind(e.event_type())
                            .bind(i32::try_from(ctx.attempt).unwrap_or(i32::MAX))
                            .execute(&mut *tx)
                            .await?;
                        // Counted once its transaction (and the entry's completion) committed.
                        ctx.after_commit(move || {
                            d.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        });
                        Ok::<(), HandlerError>(())
                    }
                });
            tokio::spawn(
                backend
                    .worker(handlers)
                    .concurrency(workers)
                    .run(shutdown.clone()),
            )
        }
        _ => {
            let handlers = Handlers::new().fallback(move |_: Envelope<Event>, _: Context| {
                d.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::future::ready(Ok::<(), HandlerError>(()))
            });
            tokio::spawn(
                inbox
                    .worker(handlers)
                    .concurrency(workers)
                    .run(shutdown.clone()),
            )
        }
    };
    // Every handler ran (polling the inbox's stats would compete with the worker for it).
    while done.load(std::sync::atomic::Ordering::Relaxed) < n {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "drain took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And every completion was recorded (a transactional handling counts after its commit;
    // the others' completions are read from the stats, a costly count on a large table, so
    // not often).
    while !transactional && (inbox.admin().stats().await.expect("stats").done as usize) < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    let _ = worker.await;
    if let Place::Postgres { url, schema, .. } = &dir
        && transactional
    {
        // Exactly one effect row per entry: the measurement counts only what committed.
        let pool = sqlx::PgPool::connect(url).await.expect("connects");
        let (rows, ids): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(DISTINCT event_id) FROM {schema}_effects"
        )))
        .fetch_one(&pool)
        .await
        .expect("count");
        assert_eq!(
            (rows, ids),
            (n as i64, n as i64),
            "one effect row per entry"
        );
    }
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "drain ({}): {n} entries ({:.0} accepts/s to fill, 64 concurrent), {workers} workers, {}: {:.2} s, {:.0} events/s",
        dir.name(),
        n as f64 / filled.as_secs_f64(),
        if transactional {
            "one-row transactional handler"
        } else {
            "no-op handler"
        },
        took.as_secs_f64(),
        rate
    );
    if let Place::Postgres { url, schema, .. } = &dir
        && transactional
    {
        let floor = drain_floor(url, schema, n, workers).await;
        println!(
            "drain floor (pgbench, the statements of one attempt, {workers} clients): {floor:.0} events/s; the worker's drain {:.2}x of it",
            rate / floor
        );
    }
    dir.remove().await;
}

/// The transactional drain's floor, on the drained schema refilled with `n` entries: pgbench
/// running exactly the statements one attempt runs (the take of one entry; `BEGIN`, the
/// completion that opens the handler's transaction, its one effect row, `COMMIT`) from
/// `clients` connections (the worker's concurrency), with nothing of ours in between. Events
/// per second.
async fn drain_floor(url: &str, schema: &str, n: usize, clients: usize) -> f64 {
    let pool = sqlx::PgPool::connect(url).await.expect("connects");
    for sql in [
        format!("DELETE FROM {schema}.entries"),
        format!("TRUNCATE {schema}_effects"),
        format!(
            "INSERT INTO {schema}.entries (id, event_type, body, created_at, state, due_at)
             SELECT 'evt_floor_' || g, 'run.completed', convert_to(repeat('x', 1024), 'UTF8'),
                 '2026-12-08T00:00:00Z', 'pending', clock_timestamp()
             FROM generate_series(1, {n}) g"
        ),
        format!("VACUUM ANALYZE {schema}.entries"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect("refill");
    }
    let script = [
        format!(
            "WITH due AS (SELECT id FROM {schema}.entries \
             WHERE state IN ('pending', 'processing') AND due_at <= statement_timestamp() \
             ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
             UPDATE {schema}.entries e SET state = 'processing', attempts = e.attempts + 1, \
             due_at = clock_timestamp() + 30000 * interval '1 millisecond', \
             lease_token = 'floor' || e.seq::text \
             FROM due WHERE e.id = due.id RETURNING e.id AS eid, e.lease_token AS tok \\gset"
        ),
        "BEGIN;".to_owned(),
        format!(
            "UPDATE {schema}.entries SET state = 'done', finished_at = clock_timestamp(), \
             lease_token = NULL, last_error = NULL \
             WHERE id = :eid AND lease_token = :tok AND state = 'processing';"
        ),
        format!(
            "INSERT INTO {schema}_effects (event_id, event_type, attempt) \
             VALUES (:eid, 'run.completed', 1);"
        ),
        "COMMIT;".to_owned(),
    ]
    .join("\n")
        + "\n";
    let dir = temp_dir("drain-floor");
    let path = dir.join("attempt.sql");
    std::fs::write(&path, script).expect("script");
    let pgbin = std::env::var("PGBIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned());
    let per_client = n / clients.max(1);
    let out = std::process::Command::new(format!("{pgbin}/pgbench"))
        .args(["-n", "-M", "prepared", "-j", "1", "-c"])
        .arg(clients.to_string())
        .arg("-t")
        .arg(per_client.to_string())
        .arg("-f")
        .arg(&path)
        .arg(url)
        .output()
        .expect("pgbench runs");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse::<f64>().ok());
    let effects: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}_effects"
    )))
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(
        effects,
        i64::try_from(per_client * clients).unwrap_or(i64::MAX),
        "pgbench ran every attempt: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tps.unwrap_or_else(|| panic!("pgbench printed no tps: {text}"))
}

/// The backend alone, no worker: take `batch` entries, complete them all, until empty.
async fn rawdrain(n: usize, batch: usize) {
    let (inbox, dir) = open("rawdrain").await;
    let mut next = 0;
    while next < n {
        let vs: Vec<_> = (next..(next + 64).min(n))
            .map(|i| verified(&format!("evt_raw_{i}")))
            .collect();
        futures_util::future::join_all(vs.iter().map(|v| inbox.accept(v))).await;
        next += vs.len();
    }
    let b = inbox.backend();
    let started = Instant::now();
    let (mut takes, mut took, mut completing) = (0, Duration::ZERO, Duration::ZERO);
    loop {
        let t = Instant::now();
        let leased = b.take(batch, Duration::from_secs(60)).await.expect("take");
        took += t.elapsed();
        takes += 1;
        if leased.is_empty() {
            break;
        }
        let t = Instant::now();
        futures_util::future::join_all(leased.iter().map(|e| b.complete(&e.id, &e.token))).await;
        completing += t.elapsed();
    }
    let all = started.elapsed();
    dir.remove().await;
    println!(
        "rawdrain ({}): {n} entries, take {batch} then complete them: {:.0} events/s ({takes} takes: {:.2} s taking, {:.2} s completing)",
        dir.name(),
        n as f64 / all.as_secs_f64(),
        took.as_secs_f64(),
        completing.as_secs_f64()
    );
}

/// Redis commands per accepted delivery: `INFO commandstats` before and after N accepts (no
/// worker running), by command; then the same server's plain round trip rate for comparison.
async fn roundtrips(n: usize) {
    let Ok(url) = std::env::var("AIRMY_INBOX") else {
        eprintln!("roundtrips needs AIRMY_INBOX=redis://…");
        std::process::exit(2);
    };
    let (inbox, place) = open("roundtrips").await;
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let stats = async |conn: &mut redis::aio::MultiplexedConnection| -> HashMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(conn)
            .await
            .expect("info");
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .split(',')
                    .next()?
                    .strip_prefix("calls=")?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    };
    let vs: Vec<_> = (0..n).map(|i| verified(&format!("evt_rt_{i}"))).collect();
    let before = stats(&mut conn).await;
    let started = Instant::now();
    for v in &vs {
        assert_eq!(inbox.accept(v).await.expect("accepted"), Accepted::Stored);
    }
    let took = started.elapsed();
    let after = stats(&mut conn).await;
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0)) as f64))
        .filter(|(k, d)| *d > 0.0 && k != "info")
        .map(|(k, d)| (k, d / n as f64))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    place.remove().await;
    println!(
        "roundtrips (redis): {n} accepts one at a time, {:.3} ms each; commands per delivery: {}",
        took.as_secs_f64() * 1e3 / n as f64,
        rows.iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

async fn load(url: &str, n: usize, concurrency: usize) {
    let secret =
        std::env::var("AIRMY_WEBHOOK_SECRET").unwrap_or_else(|_| testing::SECRET.to_owned());
    let run = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let deliveries: Vec<_> = (0..n)
        .map(|i| {
            testing::sample_event("run.completed")
                .id(format!("evt_load_{run}_{i}"))
                .created_at(OffsetDateTime::now_utc())
                .padded_to(1024)
                .signed(&secret)
        })
        .collect();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let queue = Arc::new(Mutex::new(deliveries.into_iter()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, queue) = (client.clone(), url.to_owned(), queue.clone());
        tasks.spawn(async move {
            let mut times = Vec::new();
            let mut statuses: HashMap<u16, usize> = HashMap::new();
            loop {
                let Some(d) = queue.lock().expect("queue").next() else {
                    break;
                };
                let at = Instant::now();
                let status = client
                    .post(&url)
                    .header("x-airmy-signature", &d.signature)
                    .body(d.body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                times.push(at.elapsed());
                *statuses.entry(status).or_default() += 1;
            }
            (times, statuses)
        });
    }
    let mut times = Vec::with_capacity(n);
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    while let Some(result) = tasks.join_next().await {
        let (t, s) = result.expect("task");
        times.extend(t);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    let took = started.elapsed();
    times.sort();
    let mut statuses: Vec<_> = statuses.into_iter().collect();
    statuses.sort();
    println!(
        "load {url}: {n} unique deliveries, {concurrency} concurrent: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, statuses {statuses:?}",
        n as f64 / took.as_secs_f64(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );
}

/// Median and slowest of `runs` calls of `f`.
async fn timed<F, Fut, T>(runs: usize, mut f: F) -> (Duration, Duration, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(f().await);
        times.push(started.elapsed());
    }
    times.sort();
    (
        percentile(&times, 0.5),
        times[times.len() - 1],
        last.expect("runs > 0"),
    )
}

async fn list(n: usize) {
    let (inbox, dir) = open("list").await;
    let b = inbox.backend();
    let fill = Instant::now();
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + 256).min(n))
            .map(|i| {
                let event_type = if i % 50 == 0 {
                    "alert.triggered"
                } else {
                    "run.completed"
                };
                let d = testing::sample_event(event_type)
                    .id(format!("evt_list_{i:08}"))
                    .created_at(OffsetDateTime::now_utc())
                    .padded_to(1024)
                    .signed(testing::SECRET);
                verifier().verify(&d.signature, d.body).expect("verifies")
            })
            .collect();
        for result in futures_util::future::join_all(batch.iter().map(|v| inbox.accept(v))).await {
            assert_eq!(result.expect("accepted"), Accepted::Stored);
        }
        next += batch.len();
    }
    let filled = fill.elapsed();
    // 90 % done, 1 % dead, 1 % scheduled an hour ahead; the rest pending.
    let settle = Instant::now();
    let (done, dead, scheduled) = (n * 90 / 100, n / 100, n / 100);
    let mut settled = 0;
    let later = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    while settled < done + dead + scheduled {
        let want = (done + dead + scheduled - settled).min(1000);
        let taken = b
            .take(want, airmy_verify::lease::DEFAULT_LEASE)
            .await
            .expect("take");
        assert!(!taken.is_empty(), "entries to take");
        let outcomes = taken.iter().enumerate().map(|(k, e)| {
            let k = settled + k;
            async move {
                if k < done {
                    b.complete(&e.id, &e.token).await
                } else if k < done + dead {
                    b.bury(&e.id, &e.token, "downstream returned 500").await
                } else {
                    b.retry(&e.id, &e.token, "downstream timed out", later)
                        .await
                }
            }
        });
        for result in futures_util::future::join_all(outcomes).await {
            assert!(result.expect("recorded"));
        }
        settled += taken.len();
    }
    let settled_in = settle.elapsed();
    let stats = b.stats().await.expect("stats");
    println!(
        "list ({}): {n} entries (filled in {:.0} s, settled in {:.0} s): {stats:?}",
        dir.name(),
        filled.as_secs_f64(),
        settled_in.as_secs_f64()
    );
    list_table(&inbox, n, "right after the fill").await;
    if let Place::Postgres { url, schema, .. } = &dir {
        // What autovacuum would have done by then: the index entries of the 920,000 rows that
        // changed state, dead since, are gone.
        let pool = sqlx::PgPool::connect(url).await.expect("connects");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "VACUUM ANALYZE {schema}.entries"
        )))
        .execute(&pool)
        .await
        .expect("vacuum");
        list_table(&inbox, n, "after VACUUM ANALYZE").await;
    }
    dir.remove().await;
}

/// One table of listing times on `inbox`, with its console's overview.
async fn list_table(inbox: &Inbox, n: usize, when: &str) {
    use airmy_verify_inbox::console::{Console, ConsoleRequest};
    use airmy_verify_inbox::{EntryState, ListQuery, Order};
    let b = inbox.backend();
    println!("\n{when}:\n");
    println!("| state | query | median ms | slowest ms | entries |");
    println!("|---|---|---:|---:|---:|");
    let runs = 21;
    for state in [
        EntryState::Pending,
        EntryState::Scheduled,
        EntryState::Dead,
        EntryState::Done,
    ] {
        let first = ListQuery::new(state);
        // A page deep in the listing: after following 20 pages.
        let mut deep = first.clone();
        for _ in 0..20 {
            match b.list(&deep).await.expect("list").next {
                Some(cursor) => deep.after = Some(cursor),
                None => break,
            }
        }
        let queries = [
            ("first page of 50", first.clone()),
            ("page 21 (cursor)", deep),
            ("newest first", first.clone().order(Order::Newest)),
            (
                "type alert.triggered (2 %)",
                first.clone().event_type("alert.triggered"),
            ),
            (
                "id prefix matching nothing",
                first.clone().id_prefix("evt_none_"),
            ),
        ];
        for (name, query) in queries {
            let (median, slowest, page) = timed(runs, || b.list(&query)).await;
            let page = page.expect("list");
            println!(
                "| {state} | {name} | {:.2} | {:.2} | {} |",
                median.as_secs_f64() * 1e3,
                slowest.as_secs_f64() * 1e3,
                page.entries.len()
            );
        }
    }
    let id = format!("evt_list_{:08}", n / 2);
    let (median, slowest, entry) = timed(runs, || b.entry(&id)).await;
    assert!(entry.expect("entry").is_some());
    println!(
        "| any | one entry in full | {:.2} | {:.2} | 1 |",
        median.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    let (median, slowest, _) = timed(runs, || b.stats()).await;
    println!(
        "| any | stats (the overview) | {:.2} | {:.2} | - |",
        median.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    let (median, slowest, activity) = timed(runs, || b.activity()).await;
    let (accepted, handled, failed) = activity.expect("activity").totals();
    println!(
        "| any | activity (the overview's chart: {accepted} accepted, {handled} handled, {failed} failed this hour) | {:.2} | {:.2} | 60 |",
        median.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    let console = Console::new(inbox.clone());
    let (median, slowest, page) = timed(runs, || async {
        console.handle(ConsoleRequest::new("GET", "/")).await
    })
    .await;
    assert_eq!(page.status, 200, "the overview");
    println!(
        "| any | the console's overview page (stats, pauses, recent actions, chart) | {:.2} | {:.2} | - |",
        median.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("fsync") => fsync(num(1, 500)),
        Some("sqlite-floor") => sqlite_floor(num(1, 50_000), num(2, 16)),
        Some("latency") => latency(num(1, 500)).await,
        Some("drain") => {
            let tx = args.get(3).is_some_and(|a| a == "tx");
            drain(num(1, 100_000), num(2, 16), tx).await;
        }
        Some("rawdrain") => rawdrain(num(1, 20_000), num(2, 64)).await,
        Some("roundtrips") => roundtrips(num(1, 2_000)).await,
        Some("list") => list(num(1, 1_000_000)).await,
        Some("load") => {
            let url = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "http://127.0.0.1:3000/hooks/airmy".to_owned());
            load(&url, num(2, 20_000), num(3, 32)).await;
        }
        _ => {
            eprintln!(
                "usage: inbox-bench fsync [N] | sqlite-floor [N] [BATCH] | latency [N] | drain [N] [WORKERS] [tx] | rawdrain [N] [BATCH] | roundtrips [N] | list [N] | load URL [N] [CONCURRENCY]"
            );
            std::process::exit(2);
        }
    }
}
