//! Exactly-once handling through the layer, on the in-memory store and on a real Redis
//! (`test_support::RedisServer`: `AIRMY_REDIS_URL`, or a `redis-server` started here).
//!
//! Deliveries follow AIRMY's retry schedule with the waits scaled down to milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airmy_verify::idempotency::{
    Idempotency, MemoryStore, OnStoreError, RedisStore, RedisStoreOptions,
};
use airmy_verify::testing::Delivery;
use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use test_support::RedisServer;
use test_support::fixtures::{
    PATH, fresh_delivery_with_id as delivery, redis_guard, unique_prefix,
    verifier_on_system_clock as verifier,
};
use test_support::http::body_bytes;
use tower::ServiceExt;

/// AIRMY's waits between attempts (1 s, 5 s, 30 s), scaled down a thousand times.
const RETRY_WAITS: [Duration; 3] = [
    Duration::from_millis(1),
    Duration::from_millis(5),
    Duration::from_millis(30),
];

/// A handler that answers `script[n]` on its n-th call (200 after the script), after `delay`,
/// and panics where the script says 0.
#[derive(Clone)]
struct Handler {
    calls: Arc<AtomicUsize>,
    script: Arc<Vec<u16>>,
    delay: Duration,
}

impl Handler {
    fn new(script: Vec<u16>, delay: Duration) -> Self {
        Self {
            calls: Arc::default(),
            script: Arc::new(script),
            delay,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn app(&self, guard: Idempotency) -> Router {
        let handler = self.clone();
        let route = move |AirmyEvent(event): AirmyEvent| {
            let handler = handler.clone();
            async move {
                let n = handler.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(handler.delay).await;
                match handler.script.get(n).copied().unwrap_or(200) {
                    0 => panic!("the handler panicked on {}", event.id),
                    status => (
                        StatusCode::from_u16(status).expect("status"),
                        axum::Json(json!({ "handled": event.id })),
                    ),
                }
            }
        };
        Router::new()
            .route(PATH, post(route))
            .layer(AirmyVerifyLayer::new(verifier()).idempotency(guard))
    }
}

/// Sends a delivery; a handler panic comes back as status 0.
async fn send(app: &Router, d: &Delivery) -> (u16, Value) {
    let request = Request::post(PATH)
        .header("x-airmy-signature", &d.signature)
        .body(Body::from(d.body.clone()))
        .expect("request");
    let app = app.clone();
    match tokio::spawn(async move { app.oneshot(request).await }).await {
        Ok(response) => {
            let response = response.expect("infallible");
            let status = response.status().as_u16();
            let body = body_bytes(response.into_body()).await;
            (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
        }
        Err(join) => {
            assert!(join.is_panic(), "{join}");
            (0, Value::Null)
        }
    }
}

/// Delivers like AIRMY: the first attempt, then retries after the (scaled) waits until a 2xx.
async fn deliver_like_airmy(app: &Router, d: &Delivery) -> Vec<u16> {
    let mut statuses = Vec::new();
    for attempt in 0..=RETRY_WAITS.len() {
        let (status, _) = send(app, d).await;
        statuses.push(status);
        if (200..300).contains(&status) {
            break;
        }
        if let Some(wait) = RETRY_WAITS.get(attempt) {
            tokio::time::sleep(*wait).await;
        }
    }
    statuses
}

fn memory() -> Idempotency {
    Idempotency::new(MemoryStore::new(10_000), &verifier())
}

async fn redis(server: &RedisServer) -> Idempotency {
    redis_guard(server, "airmy-test", &verifier()).await
}

async fn failed_first_attempt_is_retried_and_processed_once(guard: Idempotency) {
    let handler = Handler::new(vec![500, 503], Duration::ZERO);
    let app = handler.app(guard);
    let d = delivery("evt_fail_then_ok");
    assert_eq!(deliver_like_airmy(&app, &d).await, [500, 503, 200]);
    assert_eq!(handler.calls(), 3, "each failed attempt released its claim");
    // Any later delivery of the event is a duplicate: one successful run in all.
    assert_eq!(
        send(&app, &d).await,
        (
            200,
            json!({ "status": "duplicate", "id": "evt_fail_then_ok" })
        )
    );
    assert_eq!(handler.calls(), 3);
}

async fn a_retry_while_in_flight_gets_409_then_duplicate(guard: Idempotency) {
    // Generous margins: the first attempt must still be running when the retry arrives, even
    // on a loaded CI machine.
    let handler = Handler::new(vec![], Duration::from_millis(1500));
    let app = handler.app(guard);
    let d = delivery("evt_slow");
    let first = {
        let (app, d) = (app.clone(), d.clone());
        tokio::spawn(async move { send(&app, &d).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        send(&app, &d).await,
        (409, json!({ "error": "delivery_in_flight" }))
    );
    assert_eq!(first.await.expect("first").0, 200);
    assert_eq!(send(&app, &d).await.1["status"], "duplicate");
    assert_eq!(handler.calls(), 1);
}

async fn a_lost_response_is_answered_as_duplicate(guard: Idempotency) {
    let handler = Handler::new(vec![], Duration::ZERO);
    let app = handler.app(guard);
    let d = delivery("evt_lost_response");
    // The handler succeeds but AIRMY never sees the answer, so it retries.
    assert_eq!(send(&app, &d).await.0, 200);
    tokio::time::sleep(RETRY_WAITS[0]).await;
    assert_eq!(
        send(&app, &d).await,
        (
            200,
            json!({ "status": "duplicate", "id": "evt_lost_response" })
        )
    );
    assert_eq!(handler.calls(), 1);
}

async fn a_panicking_handler_releases_its_claim(guard: Idempotency) {
    let handler = Handler::new(vec![0], Duration::ZERO);
    let app = handler.app(guard);
    let d = delivery("evt_panic");
    assert_eq!(send(&app, &d).await.0, 0, "the panic reached the server");
    assert_eq!(
        send(&app, &d).await.0,
        200,
        "the retry ran the handler again"
    );
    assert_eq!(handler.calls(), 2);
}

#[tokio::test]
async fn memory_failed_first_attempt_is_retried_and_processed_once() {
    failed_first_attempt_is_retried_and_processed_once(memory()).await;
}

#[tokio::test]
async fn memory_a_retry_while_in_flight_gets_409_then_duplicate() {
    a_retry_while_in_flight_gets_409_then_duplicate(memory()).await;
}

#[tokio::test]
async fn memory_a_lost_response_is_answered_as_duplicate() {
    a_lost_response_is_answered_as_duplicate(memory()).await;
}

#[tokio::test]
async fn memory_a_panicking_handler_releases_its_claim() {
    a_panicking_handler_releases_its_claim(memory()).await;
}

#[tokio::test]
async fn redis_failed_first_attempt_is_retried_and_processed_once() {
    let server = RedisServer::start();
    failed_first_attempt_is_retried_and_processed_once(redis(&server).await).await;
}

#[tokio::test]
async fn redis_a_retry_while_in_flight_gets_409_then_duplicate() {
    let server = RedisServer::start();
    a_retry_while_in_flight_gets_409_then_duplicate(redis(&server).await).await;
}

#[tokio::test]
async fn redis_a_lost_response_is_answered_as_duplicate() {
    let server = RedisServer::start();
    a_lost_response_is_answered_as_duplicate(redis(&server).await).await;
}

#[tokio::test]
async fn redis_a_panicking_handler_releases_its_claim() {
    let server = RedisServer::start();
    a_panicking_handler_releases_its_claim(redis(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_run_the_handler_once() {
    let server = RedisServer::start();
    let prefix = unique_prefix("airmy-test");
    let instance = |handler: &Handler| {
        let handler = handler.clone();
        let (url, prefix) = (server.url().to_owned(), prefix.clone());
        async move {
            let store = RedisStore::connect(&url, RedisStoreOptions::default().prefix(prefix))
                .await
                .expect("Redis");
            handler.app(Idempotency::new(store, &verifier()))
        }
    };
    let handler = Handler::new(vec![], Duration::from_millis(50));
    let (a, b) = (instance(&handler).await, instance(&handler).await);
    let d = delivery("evt_shared");
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            let d = d.clone();
            tokio::spawn(async move { send(&app, &d).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.expect("task"));
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    assert_eq!(handler.calls(), 1, "{statuses:?}");
    assert_eq!(send(&a, &d).await.1["status"], "duplicate");
    assert_eq!(send(&b, &d).await.1["status"], "duplicate");
}

#[tokio::test]
async fn redis_outage_processes_by_default_refuses_with_503_and_recovers() {
    // This test stops and restarts Redis, so it always runs a redis-server of its own.
    let mut server = RedisServer::start_private();
    let lenient_handler = Handler::new(vec![], Duration::ZERO);
    let strict_handler = Handler::new(vec![], Duration::ZERO);
    let options = RedisStoreOptions::default().timeout(Duration::from_millis(300));
    let store = RedisStore::connect(server.url(), options)
        .await
        .expect("Redis");
    let lenient = lenient_handler.app(Idempotency::new(store.clone(), &verifier()));
    let strict = strict_handler
        .app(Idempotency::new(store, &verifier()).on_store_error(OnStoreError::Refuse));

    server.stop();
    let d1 = delivery("evt_outage_1");
    assert_eq!(send(&lenient, &d1).await.0, 200, "default policy processes");
    assert_eq!(lenient_handler.calls(), 1);
    assert_eq!(
        send(&strict, &d1).await,
        (503, json!({ "error": "idempotency_store_unavailable" }))
    );
    assert_eq!(strict_handler.calls(), 0);

    server.restart();
    // The connection manager reconnects by itself; allow it a few seconds.
    let d2 = delivery("evt_outage_2");
    let mut status = 0;
    for _ in 0..50 {
        status = send(&strict, &d2).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the guard works again once Redis is back");
    assert_eq!(send(&strict, &d2).await.1["status"], "duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_a_few_ids_run_the_handler_once_per_id() {
    let calls_per_id: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
        Arc::default();
    let counter = calls_per_id.clone();
    let route = move |AirmyEvent(event): AirmyEvent| {
        let counter = counter.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            *counter.lock().expect("lock").entry(event.id).or_default() += 1;
            StatusCode::OK
        }
    };
    let app = Router::new()
        .route(PATH, post(route))
        .layer(AirmyVerifyLayer::new(verifier()).idempotency(memory()));
    let ids: Vec<String> = (0..5).map(|i| format!("evt_stress_{i}")).collect();
    let deliveries: Vec<Delivery> = ids.iter().map(|id| delivery(id)).collect();
    // 400 deliveries, each retried like AIRMY until acknowledged.
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let (app, d) = (app.clone(), deliveries[i % deliveries.len()].clone());
            tokio::spawn(async move {
                for _ in 0..500 {
                    let (status, _) = send(&app, &d).await;
                    if status == 200 {
                        return;
                    }
                    assert_eq!(status, 409);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                panic!("never acknowledged");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("acknowledged");
    }
    let calls = calls_per_id.lock().expect("lock").clone();
    assert_eq!(calls.len(), 5);
    assert!(calls.values().all(|&n| n == 1), "{calls:?}");
}
