//! Measurements of the durable inbox, for `BENCHMARKS.md` (release build):
//!
//! ```text
//! inbox-bench fsync [N]                      # this disk's fsync latency (N synced 4 KiB writes)
//! inbox-bench latency [N]                    # accept → handler start, one delivery at a time
//! inbox-bench drain [N] [WORKERS]            # N queued entries drained by a no-op handler
//! inbox-bench load URL [N] [CONCURRENCY]     # N unique signed deliveries, CONCURRENCY at a time
//! ```
//!
//! `load` signs every delivery with `AIRMY_WEBHOOK_SECRET` (or the bench secret), each with a
//! new id (so an inbox stores every one), and prints requests per second, p50/p99 latency and
//! the statuses. Every loop is bounded by N. Files go to a fresh directory under the system's
//! temporary directory (`TMPDIR`), removed at the end.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airmy_verify::time::OffsetDateTime;
use airmy_verify::{Envelope, Event, Secret, Verifier, testing};
use airmy_verify_inbox::{
    Accepted, Context, HandlerError, Handlers, Inbox, SqliteBackend, SqliteOptions,
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

async fn latency(n: usize) {
    let dir = temp_dir("latency");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
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
        assert_eq!(inbox.accept(&v).await, Ok(Accepted::Stored));
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
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "latency: {n} deliveries one at a time: accept (durable) p50 {:.2} ms, p99 {:.2} ms; \
         accept -> handler start p50 {:.2} ms, p99 {:.2} ms",
        percentile(&accepts, 0.5).as_secs_f64() * 1e3,
        percentile(&accepts, 0.99).as_secs_f64() * 1e3,
        percentile(&delays, 0.5).as_secs_f64() * 1e3,
        percentile(&delays, 0.99).as_secs_f64() * 1e3,
    );
}

async fn drain(n: usize, workers: usize) {
    let dir = temp_dir("drain");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    // Fill: 64 accepts at a time (they share transactions).
    let fill = Instant::now();
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + 64).min(n))
            .map(|i| verified(&format!("evt_drain_{i}")))
            .collect();
        let accepts = batch.iter().map(|v| inbox.accept(v));
        for result in futures_util::future::join_all(accepts).await {
            assert_eq!(result, Ok(Accepted::Stored));
        }
        next += batch.len();
    }
    let filled = fill.elapsed();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let d = done.clone();
    let handlers = Handlers::new().fallback(move |_e: Envelope<Event>, _ctx: Context| {
        d.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async { Ok::<(), HandlerError>(()) }
    });
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .concurrency(workers)
            .run(shutdown.clone()),
    );
    // Every handler ran (polling the inbox's stats would compete with the worker for it).
    while done.load(std::sync::atomic::Ordering::Relaxed) < n {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "drain took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And every completion was recorded.
    while (inbox.backend().stats().await.expect("stats").done as usize) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    let _ = worker.await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "drain: {n} entries ({:.0} accepts/s to fill, 64 concurrent), {workers} workers, no-op handler: {:.2} s, {:.0} events/s",
        n as f64 / filled.as_secs_f64(),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

/// The backend alone, no worker: take `batch` entries, complete them all, until empty.
async fn rawdrain(n: usize, batch: usize) {
    let dir = temp_dir("rawdrain");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
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
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "rawdrain: {n} entries, take {batch} then complete them: {:.0} events/s ({takes} takes: {:.2} s taking, {:.2} s completing)",
        n as f64 / all.as_secs_f64(),
        took.as_secs_f64(),
        completing.as_secs_f64()
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("fsync") => fsync(num(1, 500)),
        Some("latency") => latency(num(1, 500)).await,
        Some("drain") => drain(num(1, 100_000), num(2, 16)).await,
        Some("rawdrain") => rawdrain(num(1, 20_000), num(2, 64)).await,
        Some("load") => {
            let url = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "http://127.0.0.1:3000/hooks/airmy".to_owned());
            load(&url, num(2, 20_000), num(3, 32)).await;
        }
        _ => {
            eprintln!(
                "usage: inbox-bench fsync [N] | latency [N] | drain [N] [WORKERS] | load URL [N] [CONCURRENCY]"
            );
            std::process::exit(2);
        }
    }
}
