//! Overhead of the idempotency guard per request: the same axum receiver (layer + `AirmyEvent`
//! handler, driven with `tower::ServiceExt::oneshot`) without a guard, with the in-memory store
//! and with the Redis store (a local `redis-server` started for the run, or `AIRMY_REDIS_URL`).
//! Every request carries a new event id, so each one takes the full claim + commit path.
//!
//! ```text
//! cargo bench -p airmy-verify-benches --bench idempotency
//! python3 scripts/bench-report.py
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airmy_verify::idempotency::{Idempotency, MemoryStore, RedisStore, RedisStoreOptions};
use airmy_verify::testing;
use airmy_verify::time::OffsetDateTime;
use airmy_verify::{Secret, Verifier};
use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use test_support::RedisServer;
use tower::ServiceExt;

fn verifier() -> Verifier {
    Verifier::new(Secret::new(testing::SECRET).expect("secret"))
}

fn app(guard: Option<Idempotency>) -> Router {
    let router = Router::new().route(
        "/hooks/airmy",
        post(|AirmyEvent(e): AirmyEvent| async move { e.id }),
    );
    match guard {
        Some(guard) => router.layer(AirmyVerifyLayer::new(verifier()).idempotency(guard)),
        None => router.layer(AirmyVerifyLayer::new(verifier())),
    }
}

/// A signed 1 KiB-class run.completed delivery with a new id each call.
fn request(counter: &AtomicU64) -> Request<Body> {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let d = testing::sample_event("run.completed")
        .id(format!("evt_bench_{n}_{}", std::process::id()))
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET);
    Request::post("/hooks/airmy")
        .header("x-airmy-signature", d.signature)
        .body(Body::from(d.body))
        .expect("request")
}

fn guards(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let redis = RedisServer::start();
    let redis_store = runtime
        .block_on(RedisStore::connect(
            redis.url(),
            RedisStoreOptions::default().prefix(format!("airmy-bench:{}:", std::process::id())),
        ))
        .expect("Redis reachable");
    let variants = [
        ("no_guard", app(None)),
        (
            "memory_guard",
            app(Some(Idempotency::new(
                MemoryStore::new(50_000_000),
                &verifier(),
            ))),
        ),
        (
            "redis_guard",
            app(Some(Idempotency::new(redis_store, &verifier()))),
        ),
    ];
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("idempotency");
    group.measurement_time(Duration::from_secs(6));
    for (name, app) in &variants {
        group.bench_function(*name, |b| {
            b.iter_batched(
                || request(&counter),
                |req| {
                    let response = runtime
                        .block_on(app.clone().oneshot(req))
                        .expect("infallible");
                    assert_eq!(response.status(), StatusCode::OK);
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, guards);
criterion_main!(benches);
