//! The SQLite backend: the conformance suite on a real file, then what only a file shows
//! (permissions, corruption, schema versions, a full disk) and the worker on top of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airmy_verify::event::{AlertTriggered, RunCompleted};
use airmy_verify::{Envelope, Event};
use airmy_verify_inbox::conformance::{self, Harness, ManualClock, delivery};
use airmy_verify_inbox::{
    Accepted, Backend, Context, HandlerError, Handlers, Inbox, InboxError, RetryPolicy,
    SqliteBackend, SqliteOptions,
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let dir =
            std::env::temp_dir().join(format!("airmy-inbox-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Sqlite {
    backend: SqliteBackend,
    clock: ManualClock,
    _dir: TempDir,
}

impl Harness for Sqlite {
    fn backend(&self) -> &dyn Backend {
        &self.backend
    }

    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn now(&self) -> OffsetDateTime {
        airmy_verify::Clock::now(&self.clock)
    }
}

fn sqlite(name: &str) -> Sqlite {
    let dir = TempDir::new(name);
    let clock = ManualClock::new();
    let backend = SqliteBackend::open(
        dir.file("inbox.db"),
        SqliteOptions::default().clock(clock.clone()),
    )
    .expect("opens");
    Sqlite {
        backend,
        clock,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    conformance::run_all(&sqlite("conformance")).await;
}

#[tokio::test]
async fn entries_survive_closing_and_reopening_the_file() {
    let dir = TempDir::new("reopen");
    let path = dir.file("inbox.db");
    {
        let backend = SqliteBackend::open(&path, SqliteOptions::default()).expect("opens");
        for i in 0..10 {
            let d = delivery(&format!("evt_reopen_{i}"), "run.completed");
            assert_eq!(backend.accept(&d).await, Ok(Accepted::Stored));
        }
    }
    let backend = SqliteBackend::open(&path, SqliteOptions::default()).expect("reopens");
    assert_eq!(backend.stats().await.expect("stats").pending, 10);
    assert_eq!(
        backend
            .accept(&delivery("evt_reopen_3", "run.completed"))
            .await,
        Ok(Accepted::Duplicate)
    );
    // A plain SQLite file: the schema version is readable by any SQLite client.
    let conn = rusqlite_free_check(&path);
    assert!(conn.contains("entries"), "{conn}");
}

/// Reads the table names through the `sqlite3` shell when it is installed, else through the
/// file header (the test's point is that the file is plain SQLite).
fn rusqlite_free_check(path: &std::path::Path) -> String {
    let shell = std::process::Command::new("sqlite3")
        .arg(path)
        .arg(".tables")
        .output();
    if let Ok(out) = shell
        && out.status.success()
    {
        return String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let header = std::fs::read(path).expect("readable");
    assert!(header.starts_with(b"SQLite format 3\0"));
    "entries (header checked)".to_owned()
}

#[cfg(unix)]
#[test]
fn the_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    let path = dir.file("inbox.db");
    let _backend = SqliteBackend::open(&path, SqliteOptions::default()).expect("opens");
    let mode = std::fs::metadata(&path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

#[test]
fn a_file_that_is_not_an_inbox_is_refused_naming_it() {
    let dir = TempDir::new("bad");
    let garbage = dir.file("garbage.db");
    std::fs::write(&garbage, b"this is not a database, just some bytes that go on for a while ........................................................................................").expect("write");
    let err = SqliteBackend::open(&garbage, SqliteOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("garbage.db"), "{err}");

    let missing_dir = dir.file("no/such/dir/inbox.db");
    let err = SqliteBackend::open(&missing_dir, SqliteOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("no/such/dir/inbox.db"), "{err}");

    // A database whose pages were damaged.
    let damaged = dir.file("damaged.db");
    {
        let b = SqliteBackend::open(&damaged, SqliteOptions::default()).expect("opens");
        drop(b);
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut bytes = std::fs::read(&damaged).expect("read");
    for b in bytes.iter_mut().skip(100).take(3000) {
        *b = 0xA5;
    }
    std::fs::write(&damaged, &bytes).expect("write");
    let _ = std::fs::remove_file(dir.file("damaged.db-wal"));
    let err = SqliteBackend::open(&damaged, SqliteOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("damaged.db"), "{err}");
}

#[tokio::test]
async fn a_full_inbox_refuses_accepts_and_never_reports_them_stored() {
    let dir = TempDir::new("full");
    // A real SQLITE_FULL: the file may not grow past a few pages.
    let backend = SqliteBackend::open(dir.file("tiny.db"), SqliteOptions::default().max_pages(40))
        .expect("opens");
    let mut stored = 0;
    let mut full = 0;
    for i in 0..400 {
        match backend
            .accept(&delivery(&format!("evt_full_{i}"), "run.completed"))
            .await
        {
            Ok(Accepted::Stored) => stored += 1,
            Err(InboxError::Full(_)) => full += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(full > 0 && stored > 0, "stored {stored}, full {full}");
    // What was reported stored is really there.
    assert_eq!(backend.stats().await.expect("stats").pending, stored);

    let bounded = SqliteBackend::open(
        dir.file("bounded.db"),
        SqliteOptions::default().max_unfinished(3),
    )
    .expect("opens");
    for i in 0..3 {
        assert_eq!(
            bounded
                .accept(&delivery(&format!("evt_b{i}"), "test"))
                .await,
            Ok(Accepted::Stored)
        );
    }
    assert!(matches!(
        bounded.accept(&delivery("evt_b3", "test")).await,
        Err(InboxError::Full(_))
    ));
    assert_eq!(
        bounded.accept(&delivery("evt_b0", "test")).await,
        Ok(Accepted::Duplicate)
    );
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(20),
        multiplier: 2.0,
        max_delay: Duration::from_millis(200),
        max_age: Duration::from_secs(60),
        max_attempts: None,
        jitter: 0.2,
    }
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_airmys_retries_loses_nothing() {
    let dir = TempDir::new("outage");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.file("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    // The handler's database is down for 1.5 s (AIRMY's whole schedule, scaled down 30 times).
    let started = Instant::now();
    let handled = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (h, f) = (handled.clone(), failures.clone());
    let handlers = Handlers::new().fallback(move |_event: Envelope<Event>, _ctx: Context| {
        let (h, f) = (h.clone(), f.clone());
        async move {
            if started.elapsed() < Duration::from_millis(1500) {
                f.fetch_add(1, Ordering::SeqCst);
                return Err::<(), HandlerError>("database unreachable".into());
            }
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .retry_policy(fast_policy())
            .concurrency(4)
            .run(shutdown.clone()),
    );
    for i in 0..50 {
        let d = delivery(&format!("evt_outage_{i}"), "run.completed");
        assert_eq!(inbox.accept(&d).await, Ok(Accepted::Stored));
    }
    wait_until("every event handled", async || {
        handled.load(Ordering::SeqCst) == 50
    })
    .await;
    let stats = inbox.backend().stats().await.expect("stats");
    assert_eq!(
        (stats.done, stats.dead, stats.pending, stats.scheduled),
        (50, 0, 0, 0)
    );
    assert!(
        failures.load(Ordering::SeqCst) >= 50,
        "each failed at least once"
    );
    shutdown.cancel();
    worker.await.expect("worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_becomes_a_dead_letter_and_replay_brings_it_back() {
    let dir = TempDir::new("dead");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.file("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let (fx, at) = (fixed.clone(), attempts.clone());
    let handlers = Handlers::new().on(move |_alert: Envelope<AlertTriggered>, ctx: Context| {
        let (fx, at) = (fx.clone(), at.clone());
        async move {
            at.fetch_add(1, Ordering::SeqCst);
            assert!(ctx.attempt >= 1);
            if fx.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err::<(), HandlerError>("the pager rejects this alert".into())
            }
        }
    });
    let policy = RetryPolicy {
        max_attempts: Some(3),
        ..fast_policy()
    };
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .retry_policy(policy)
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_doomed", "alert.triggered"))
        .await
        .expect("accept");
    wait_until("a dead letter", async || {
        inbox.backend().stats().await.expect("stats").dead == 1
    })
    .await;
    let dead = inbox.backend().dead(10).await.expect("dead");
    assert_eq!(dead[0].id, "evt_doomed");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].last_error, "the pager rejects this alert");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    fixed.store(true, Ordering::SeqCst);
    inbox.backend().replay("evt_doomed").await.expect("replay");
    wait_until("the replay handled", async || {
        inbox.backend().stats().await.expect("stats").done == 1
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    shutdown.cancel();
    worker.await.expect("worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_timeouts_are_failures_retried_and_unhandled_types_complete() {
    let dir = TempDir::new("panic");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.file("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handlers = Handlers::new().on(move |_run: Envelope<RunCompleted>, ctx: Context| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            match ctx.attempt {
                1 => panic!("handler bug"),
                2 => tokio::time::sleep(Duration::from_secs(60)).await, // past the timeout
                _ => {}
            }
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .retry_policy(fast_policy())
            .handler_timeout(Duration::from_millis(200))
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_flaky", "run.completed"))
        .await
        .expect("accept");
    // No handler and no fallback for this type: completed, not retried forever.
    inbox
        .accept(&delivery("evt_nobody", "deployment.created"))
        .await
        .expect("accept");
    wait_until("both done", async || {
        inbox.backend().stats().await.expect("stats").done == 2
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "panic, timeout, success");
    shutdown.cancel();
    worker.await.expect("worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_unfinished_entries_and_another_worker_finishes_them() {
    let dir = TempDir::new("shutdown");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.file("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let slow = Handlers::new().fallback(|_e: Envelope<Event>, _ctx: Context| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<(), HandlerError>(())
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        inbox
            .worker(slow)
            .shutdown_deadline(Duration::from_millis(200))
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_interrupted", "test"))
        .await
        .expect("accept");
    wait_until("processing", async || {
        inbox.backend().stats().await.expect("stats").processing == 1
    })
    .await;
    let asked = Instant::now();
    shutdown.cancel();
    worker.await.expect("worker");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the deadline holds"
    );
    let stats = inbox.backend().stats().await.expect("stats");
    assert_eq!(
        (stats.processing, stats.pending),
        (0, 1),
        "released, due at once"
    );

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let quick = Handlers::new().fallback(move |e: Envelope<Event>, ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push((e.id, ctx.attempt));
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(inbox.worker(quick).run(shutdown.clone()));
    wait_until("handled by the next worker", async || {
        seen.lock().expect("lock").len() == 1
    })
    .await;
    assert_eq!(
        seen.lock().expect("lock")[0],
        ("evt_interrupted".to_owned(), 1)
    );
    shutdown.cancel();
    worker.await.expect("worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_worker_died_is_taken_over_after_the_lease() {
    let dir = TempDir::new("takeover");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.file("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    inbox
        .accept(&delivery("evt_orphan", "test"))
        .await
        .expect("accept");
    // A worker that takes the entry and dies (never completes it).
    let taken = inbox
        .backend()
        .take(1, Duration::from_millis(300))
        .await
        .expect("take");
    assert_eq!(taken.len(), 1);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let handlers = Handlers::new().fallback(move |e: Envelope<Event>, ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push((e.id, ctx.attempt));
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(inbox.worker(handlers).run(shutdown.clone()));
    wait_until("taken over", async || seen.lock().expect("lock").len() == 1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the lease ran out"
    );
    assert_eq!(seen.lock().expect("lock")[0], ("evt_orphan".to_owned(), 2));
    shutdown.cancel();
    worker.await.expect("worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_lease_is_not_run_twice() {
    let dir = TempDir::new("slowlease");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.file("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let handlers = |calls: Arc<AtomicUsize>| {
        Handlers::new().fallback(move |_e: Envelope<Event>, _ctx: Context| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1200)).await;
                Ok::<(), HandlerError>(())
            }
        })
    };
    let shutdown = CancellationToken::new();
    let lease = Duration::from_millis(300);
    let one = tokio::spawn(
        inbox
            .worker(handlers(calls.clone()))
            .lease(lease)
            .run(shutdown.clone()),
    );
    let two = tokio::spawn(
        inbox
            .worker(handlers(calls.clone()))
            .lease(lease)
            .run(shutdown.clone()),
    );
    inbox
        .accept(&delivery("evt_slow", "test"))
        .await
        .expect("accept");
    wait_until("done", async || {
        inbox.backend().stats().await.expect("stats").done == 1
    })
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the lease was extended, never taken over"
    );
    shutdown.cancel();
    one.await.expect("worker");
    two.await.expect("worker");
}

#[tokio::test]
async fn replay_makes_a_scheduled_retry_due_now_and_refuses_one_being_processed() {
    let h = sqlite("replay_pending");
    let b = h.backend();
    b.accept(&delivery("evt_sched", "test"))
        .await
        .expect("accept");
    let leased = b.take(1, Duration::from_secs(60)).await.expect("take");
    let entry = &leased[0];
    let later = h.now() + Duration::from_secs(3600);
    assert!(
        b.retry(&entry.id, &entry.token, "down", later)
            .await
            .expect("retry")
    );
    assert!(
        b.take(1, Duration::from_secs(60))
            .await
            .expect("take")
            .is_empty()
    );
    b.replay("evt_sched")
        .await
        .expect("a scheduled retry is made due now");
    let again = b.take(1, Duration::from_secs(60)).await.expect("take");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2, "its attempts are kept");
    let err = b.replay("evt_sched").await.expect_err("being processed");
    assert!(err.to_string().contains("being processed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_taken_ahead_behind_slow_handlers_keep_their_lease() {
    let dir = TempDir::new("ahead");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.file("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let handlers = Handlers::new().fallback(move |e: Envelope<Event>, ctx: Context| {
        let s = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            s.lock().expect("lock").push((e.id, ctx.attempt));
            Ok::<(), HandlerError>(())
        }
    });
    let shutdown = CancellationToken::new();
    // One slot, a 300 ms lease, 700 ms handlers: entries wait in the take-ahead queue for
    // longer than their lease.
    let worker = tokio::spawn(
        inbox
            .worker(handlers)
            .concurrency(2)
            .lease(Duration::from_millis(300))
            .run(shutdown.clone()),
    );
    for i in 0..6 {
        inbox
            .accept(&delivery(&format!("evt_ahead_{i}"), "test"))
            .await
            .expect("accept");
    }
    wait_until("all handled", async || {
        seen.lock().expect("lock").len() >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 6, "each once: {seen:?}");
    assert!(
        seen.iter().all(|(_, attempt)| *attempt == 1),
        "no lease ran out in the queue: {seen:?}"
    );
    shutdown.cancel();
    worker.await.expect("worker");
}
