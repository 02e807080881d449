//! The detached idempotent handler through a real server and a raw socket, as both adapters
//! test it: [`Slow`], a handler body that sleeps and counts, and the scenarios run against a
//! server of it behind the verifying and the idempotency middleware.
//!
//! Behind the `http` feature.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airmy_verify::idempotency::Idempotency;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::fixtures::{delivery_with_id, duplicate_of, idle_within};
use crate::http::{head, raw_post, write_all};

/// A handler that sleeps `delay`, counting its starts and its ends: the adapter's route calls
/// [`run`](Self::run), then answers `{"handled": <event id>}`.
#[derive(Debug, Clone)]
pub struct Slow {
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    delay: Duration,
}

impl Slow {
    /// A handler that sleeps `delay`.
    #[must_use]
    pub fn new(delay: Duration) -> Self {
        Self {
            started: Arc::default(),
            finished: Arc::default(),
            delay,
        }
    }

    /// How many times the handler started.
    #[must_use]
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// How many times the handler ran to its end.
    #[must_use]
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// The handler's work: counts a start, sleeps `delay`, counts an end.
    pub async fn run(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until the handler started `n` times, for at most 20 s.
    ///
    /// # Panics
    ///
    /// When it did not within 20 s.
    pub async fn wait_started(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.started() < n {
            assert!(Instant::now() < deadline, "the handler never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The client hangs up while the guarded handler runs: the handler still completes, a retry
/// meanwhile gets 409, a retry afterwards `200 duplicate`, and the handler ran once.
///
/// `serve` starts a server of the [`Slow`] handler (1.5 s) behind the verifier and the
/// given guard, and gives its address; the delivery has the event id `id`.
///
/// # Panics
///
/// When any of that does not hold.
pub async fn a_client_hanging_up_does_not_stop_the_guarded_handler<F>(
    guard: Idempotency,
    id: &str,
    serve: impl FnOnce(Slow, Idempotency) -> F,
) where
    F: Future<Output = SocketAddr>,
{
    let slow = Slow::new(Duration::from_millis(1500));
    let addr = serve(slow.clone(), guard.clone()).await;
    let d = delivery_with_id(id);
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect");
    write_all(&stream, &head(&d, d.body.len(), false)).await;
    write_all(&stream, &d.body).await;
    slow.wait_started(1).await;
    tokio::time::sleep_until(started + Duration::from_millis(200)).await;
    drop(stream);

    tokio::time::sleep_until(started + Duration::from_millis(500)).await;
    let retry = raw_post(addr, &d).await;
    // (On a machine so loaded that the handler finished first, a duplicate is right too.)
    if slow.finished() == 0 {
        assert_eq!(
            (retry.status, retry.json()),
            (409, json!({ "error": "delivery_in_flight" }))
        );
    } else {
        assert!(retry.status == 409 || retry.json() == duplicate_of(id));
    }

    tokio::time::sleep_until(started + Duration::from_secs(2)).await;
    idle_within(&guard, Duration::from_secs(20)).await;
    let retry = raw_post(addr, &d).await;
    assert_eq!((retry.status, retry.json()), (200, duplicate_of(id)));
    assert_eq!(slow.started(), 1);
    assert_eq!(slow.finished(), 1, "the handler ran to its end");
}

/// A lease (300 ms) shorter than the handler (1.2 s): the running handler extends its claim,
/// so retries during the run get 409, not a second run.
///
/// `serve` is as for [`a_client_hanging_up_does_not_stop_the_guarded_handler`].
///
/// # Panics
///
/// When any of that does not hold.
pub async fn a_lease_shorter_than_the_handler_is_extended<F>(
    guard: Idempotency,
    id: &str,
    serve: impl FnOnce(Slow, Idempotency) -> F,
) where
    F: Future<Output = SocketAddr>,
{
    let guard = guard.lease(Duration::from_millis(300));
    let slow = Slow::new(Duration::from_millis(1200));
    let addr = serve(slow.clone(), guard.clone()).await;
    let d = delivery_with_id(id);
    let started = Instant::now();
    let first = {
        let d = d.clone();
        tokio::spawn(async move { raw_post(addr, &d).await })
    };
    slow.wait_started(1).await;
    let mut during_the_run = 0;
    for at in [450, 750, 1000] {
        tokio::time::sleep_until(started + Duration::from_millis(at)).await;
        let retry = raw_post(addr, &d).await;
        if slow.finished() == 0 {
            during_the_run += 1;
            assert_eq!(
                (retry.status, retry.json()),
                (409, json!({ "error": "delivery_in_flight" })),
                "retry at {at} ms"
            );
        } else {
            assert!(
                retry.status == 409 || retry.json() == duplicate_of(id),
                "retry at {at} ms: {} {:?}",
                retry.status,
                retry.json()
            );
        }
    }
    assert!(during_the_run > 0, "no retry arrived while the handler ran");
    let first = first.await.expect("first attempt");
    assert_eq!(
        (first.status, first.json()),
        (200, json!({ "handled": id }))
    );
    idle_within(&guard, Duration::from_secs(20)).await;
    let retry = raw_post(addr, &d).await;
    assert_eq!((retry.status, retry.json()), (200, duplicate_of(id)));
    assert_eq!(slow.started(), 1, "the handler ran once");
}

/// Polls `response`, the future of a request to the [`Slow`] handler behind `guard`, until the
/// handler started, then 100 ms more, then drops it, no answer awaited; checks it did not
/// answer meanwhile, and that the handler still ran to its end.
///
/// # Panics
///
/// When the future answered, or the handler did not finish within 20 s.
pub async fn drop_once_started<F: Future>(slow: &Slow, guard: &Idempotency, response: F) {
    let mut response = Box::pin(response);
    // Poll the response future until the handler runs, then drop it: no answer was awaited.
    while slow.started() == 0 {
        let polled = tokio::time::timeout(Duration::from_millis(10), response.as_mut()).await;
        assert!(polled.is_err(), "answered before the handler started");
    }
    let polled = tokio::time::timeout(Duration::from_millis(100), response.as_mut()).await;
    assert!(polled.is_err(), "the handler answered within 100 ms");
    drop(response);
    idle_within(guard, Duration::from_secs(20)).await;
    assert_eq!(slow.finished(), 1, "the handler ran to its end");
}
