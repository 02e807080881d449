//! The shapes an application gives the layer and the extractors: its own state (with and
//! without `FromRef`), nested routers, `route_layer` and `MethodRouter::layer`, every pair of
//! extractors in one handler, a production `ServiceBuilder` stack, the body timeout and the
//! detached idempotent handler through a real server and a raw socket, and the idempotency
//! layer without a verify layer in front.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airmy_verify::event::RunCompleted;
use airmy_verify::idempotency::{Idempotency, MemoryStore};
use airmy_verify::testing::Delivery;
use airmy_verify::{Event, Verifier};
use airmy_verify_axum::{
    AirmyDelivery, AirmyEvent, AirmyIdempotency, AirmyIdempotencyLayer, AirmyVerify,
    AirmyVerifyLayer, ResponseBody,
};
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use test_support::RedisServer;
use test_support::detached::{self, Slow};
use test_support::fixtures::{
    CountingClock, PATH, Ran, delivery_with_id, duplicate_of, forged, idle_within, json_of,
    memory_guard, redis_guard, text, valid, verifier_with_body_timeout,
};
use test_support::http::{
    a_stalled_body_gets_408_and_the_connection_is_closed, loopback, status_and_body,
};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

const NOT_CONFIGURED: &[u8] = br#"{"error":"verifier_not_configured"}"#;
const INVALID_SIGNATURE: &[u8] = br#"{"error":"invalid_signature"}"#;

fn verifier() -> Verifier {
    airmy_verify::testing::conformance_verifier()
}

/// A route answering `{"id", "type"}` of the verified event and counting its runs.
fn echo<S: Clone + Send + Sync + 'static>(ran: &Ran) -> MethodRouter<S> {
    let ran = ran.clone();
    post(move |AirmyEvent(event): AirmyEvent| async move {
        ran.0.fetch_add(1, Ordering::SeqCst);
        Json(json!({ "id": event.id, "type": event.event_type() }))
    })
}

fn request(path: &str, d: &Delivery) -> Request<Body> {
    Request::post(path)
        .header("x-airmy-signature", &d.signature)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(d.body.clone()))
        .expect("request")
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Bytes) {
    status_and_body(app.clone().oneshot(request).await.expect("infallible")).await
}

/// Checks that `path` answers the valid delivery 200 with `{"id", "type"}` and the forged one
/// 401 `invalid_signature`.
async fn valid_200_forged_401(app: &Router, path: &str) {
    let (status, body) = send(app, request(path, &valid())).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
    assert_eq!(
        json_of(&body),
        json!({ "id": "evt_test_run_completed", "type": "run.completed" }),
        "{path}"
    );
    assert_eq!(
        send(app, request(path, &forged())).await,
        (
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(INVALID_SIGNATURE)
        ),
        "{path}"
    );
}

// 1. Application state.

#[derive(Clone)]
struct AppState {
    region: &'static str,
    hits: Arc<AtomicUsize>,
}

async fn with_app_state(
    State(state): State<AppState>,
    AirmyEvent(event): AirmyEvent,
) -> Json<Value> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "region": state.region, "id": event.id }))
}

#[tokio::test]
async fn an_app_state_of_its_own_without_from_ref() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app: Router = Router::new()
        .route(PATH, post(with_app_state))
        .layer(AirmyVerifyLayer::new(verifier()))
        .with_state(AppState {
            region: "eu-west-1",
            hits: hits.clone(),
        });
    let (status, body) = send(&app, request(PATH, &valid())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body),
        json!({ "region": "eu-west-1", "id": "evt_test_run_completed" })
    );
    assert_eq!(
        send(&app, request(PATH, &forged())).await,
        (
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(INVALID_SIGNATURE)
        )
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[derive(Clone)]
struct Hits(Arc<AtomicUsize>);

#[derive(Clone)]
struct Region(&'static str);

#[derive(Clone, FromRef)]
struct SharedState {
    hits: Hits,
    region: Region,
}

async fn with_sub_states(
    State(Hits(hits)): State<Hits>,
    AirmyEvent(run): AirmyEvent<RunCompleted>,
    State(Region(region)): State<Region>,
) -> Json<Value> {
    hits.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "region": region, "tokens": run.data.tokens_used }))
}

#[tokio::test]
async fn an_app_state_with_from_ref() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app: Router = Router::new()
        .route(PATH, post(with_sub_states))
        .layer(AirmyVerifyLayer::new(verifier()))
        .with_state(SharedState {
            hits: Hits(hits.clone()),
            region: Region("us-east-2"),
        });
    let (status, body) = send(&app, request(PATH, &valid())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body),
        json!({ "region": "us-east-2", "tokens": 1247 })
    );
    assert_eq!(
        send(&app, request(PATH, &forged())).await,
        (
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(INVALID_SIGNATURE)
        )
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

// 2. Where the layer goes.

#[tokio::test]
async fn the_layer_on_a_nested_router() {
    let ran = Ran::default();
    let inner: Router<AppState> = Router::new()
        .route("/airmy", echo(&ran))
        .route("/airmy/state", post(with_app_state))
        .layer(AirmyVerifyLayer::new(verifier()));
    let hits = Arc::new(AtomicUsize::new(0));
    let app: Router = Router::new()
        .nest("/hooks", inner)
        .route("/health", get(|| async { "ok" }))
        .with_state(AppState {
            region: "eu-west-1",
            hits: hits.clone(),
        });
    valid_200_forged_401(&app, "/hooks/airmy").await;
    let (status, body) = send(&app, request("/hooks/airmy/state", &valid())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["region"], "eu-west-1");
    // Routes outside the nested router are not verified.
    let health = Request::get("/health")
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        send(&app, health).await,
        (StatusCode::OK, Bytes::from_static(b"ok"))
    );
    assert_eq!(ran.count(), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn route_layer_covers_only_the_routes_before_it() {
    let (verified, unverified) = (Ran::default(), Ran::default());
    let app: Router = Router::new()
        .route("/verified", echo(&verified))
        .route_layer(AirmyVerifyLayer::new(verifier()))
        .route("/unverified", echo(&unverified));
    valid_200_forged_401(&app, "/verified").await;
    // The route added after route_layer has no verifier: its extractor refuses, whatever the
    // delivery, and never answers 200.
    for d in [valid(), forged()] {
        assert_eq!(
            send(&app, request("/unverified", &d)).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(NOT_CONFIGURED)
            )
        );
    }
    // route_layer does not touch unmatched paths.
    assert_eq!(
        send(&app, request("/nowhere", &valid())).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(verified.count(), 1);
    assert_eq!(unverified.count(), 0);
}

#[tokio::test]
async fn the_layer_on_one_method_router() {
    let ran = Ran::default();
    let app: Router = Router::new()
        .route(PATH, echo(&ran).layer(AirmyVerifyLayer::new(verifier())))
        .route("/other", echo(&Ran::default()));
    valid_200_forged_401(&app, PATH).await;
    assert_eq!(
        send(&app, request("/other", &valid())).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(NOT_CONFIGURED)
        )
    );
    assert_eq!(ran.count(), 1);
}

// 3. Pairs of extractors in one handler.

#[tokio::test]
async fn every_pair_of_extractors_in_one_handler() {
    let routes: Router = Router::new()
        .route(
            "/event-delivery",
            post(
                |AirmyEvent(event): AirmyEvent, AirmyDelivery(raw): AirmyDelivery| async move {
                    Json(json!({
                        "id": event.id, "type": event.event_type(),
                        "raw_id": raw.id(), "raw": text(raw.bytes()),
                    }))
                },
            ),
        )
        .route(
            "/delivery-typed",
            post(
                |AirmyDelivery(raw): AirmyDelivery, AirmyEvent(run): AirmyEvent<RunCompleted>| async move {
                    Json(json!({
                        "raw_id": raw.id(), "raw": text(raw.bytes()),
                        "id": run.id, "tokens": run.data.tokens_used,
                    }))
                },
            ),
        )
        .route(
            "/typed-event",
            post(
                |AirmyEvent(run): AirmyEvent<RunCompleted>, AirmyEvent(event): AirmyEvent| async move {
                    Json(json!({
                        "id": run.id, "tokens": run.data.tokens_used,
                        "second_id": event.id,
                        "second_is_run": matches!(event.data, Event::RunCompleted(_)),
                    }))
                },
            ),
        )
        .route(
            "/event-bytes",
            post(|AirmyEvent(event): AirmyEvent, body: Bytes| async move {
                Json(json!({ "id": event.id, "raw": text(&body) }))
            }),
        )
        .route(
            "/event-string",
            post(|AirmyEvent(event): AirmyEvent, body: String| async move {
                Json(json!({ "id": event.id, "raw": body }))
            }),
        )
        .route(
            "/delivery-json",
            post(
                |AirmyDelivery(raw): AirmyDelivery, Json(value): Json<Value>| async move {
                    Json(json!({
                        "raw_id": raw.id(), "raw": text(raw.bytes()),
                        "json_type": value["type"], "tokens": value["data"]["tokens_used"],
                    }))
                },
            ),
        )
        .route(
            "/headers-event",
            post(|headers: HeaderMap, AirmyEvent(event): AirmyEvent| async move {
                let signature = headers["x-airmy-signature"].to_str().expect("ASCII");
                Json(json!({ "id": event.id, "signature": signature }))
            }),
        );
    let clock = CountingClock::default();
    let app = routes.layer(AirmyVerifyLayer::new(clock.verifier()));
    let d = valid();
    let raw = text(&d.body);
    let id = "evt_test_run_completed";
    let expected = [
        (
            "/event-delivery",
            json!({ "id": id, "type": "run.completed", "raw_id": id, "raw": raw }),
        ),
        (
            "/delivery-typed",
            json!({ "raw_id": id, "raw": raw, "id": id, "tokens": 1247 }),
        ),
        (
            "/typed-event",
            json!({ "id": id, "tokens": 1247, "second_id": id, "second_is_run": true }),
        ),
        ("/event-bytes", json!({ "id": id, "raw": raw })),
        ("/event-string", json!({ "id": id, "raw": raw })),
        (
            "/delivery-json",
            json!({ "raw_id": id, "raw": raw, "json_type": "run.completed", "tokens": 1247 }),
        ),
        (
            "/headers-event",
            json!({ "id": id, "signature": d.signature }),
        ),
    ];
    for (path, want) in expected {
        let before = clock.count();
        let (status, body) = send(&app, request(path, &d)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
        assert_eq!(json_of(&body), want, "{path}");
        assert_eq!(
            clock.count() - before,
            1,
            "{path}: verified once per request"
        );
        // And each pair refuses a forged delivery before the handler.
        assert_eq!(
            send(&app, request(path, &forged())).await,
            (
                StatusCode::UNAUTHORIZED,
                Bytes::from_static(INVALID_SIGNATURE)
            ),
            "{path}"
        );
    }
}

// 4. A production stack.

/// A router with a route that answers `{"id", "type", "padding"}` (long enough to be
/// compressed), one that panics, and one that sleeps `slow` first.
fn production_routes(ran: &Ran, slow: Duration) -> Router {
    let (echo_ran, panic_ran, slow_ran) = (ran.clone(), ran.clone(), ran.clone());
    Router::new()
        .route(
            PATH,
            post(move |AirmyEvent(event): AirmyEvent| async move {
                echo_ran.0.fetch_add(1, Ordering::SeqCst);
                Json(json!({
                    "id": event.id, "type": event.event_type(), "padding": "x".repeat(256),
                }))
            }),
        )
        .route(
            "/panics",
            post(move |AirmyEvent(event): AirmyEvent| async move {
                panic_ran.0.fetch_add(1, Ordering::SeqCst);
                if !event.id.is_empty() {
                    panic!("the handler panicked on {}", event.id);
                }
                StatusCode::OK
            }),
        )
        .route(
            "/slow",
            post(move |AirmyEvent(event): AirmyEvent| async move {
                tokio::time::sleep(slow).await;
                slow_ran.0.fetch_add(1, Ordering::SeqCst);
                event.id
            }),
        )
}

fn production(ran: &Ran, timeout: Duration, slow: Duration) -> Router {
    production_routes(ran, slow).layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(CorsLayer::permissive())
            // `TimeoutLayer::new` is deprecated in tower-http 0.6.7+; this is the same layer.
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            ))
            .layer(CatchPanicLayer::new())
            .layer(CompressionLayer::new())
            .layer(AirmyVerifyLayer::new(verifier())),
    )
}

fn production_idempotent(
    ran: &Ran,
    timeout: Duration,
    slow: Duration,
    guard: Idempotency,
) -> Router {
    production_routes(ran, slow).layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(CorsLayer::permissive())
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            ))
            .layer(CatchPanicLayer::new())
            .layer(CompressionLayer::new())
            .layer(AirmyVerifyLayer::new(verifier()).idempotency(guard)),
    )
}

/// Checks the production stack: valid 200, forged 401, gzip when asked, CORS preflight, a
/// panicking handler 500 from CatchPanic (its body, not one of ours).
async fn check_production(app: &Router, ran: &Ran, idempotent: bool) {
    let d = delivery_with_id("evt_prod_valid");
    let (status, body) = send(app, request(PATH, &d)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let got = json_of(&body);
    assert_eq!(
        (got["id"].as_str(), got["type"].as_str()),
        (Some("evt_prod_valid"), Some("run.completed"))
    );
    assert_eq!(
        send(app, request(PATH, &forged())).await,
        (
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(INVALID_SIGNATURE)
        )
    );
    assert_eq!(ran.count(), 1);

    // The compression layer still compresses what the handler answers.
    let gzip = delivery_with_id("evt_prod_gzip");
    let mut gzipped = request(PATH, &gzip);
    gzipped
        .headers_mut()
        .insert(header::ACCEPT_ENCODING, "gzip".parse().expect("value"));
    let response = app.clone().oneshot(gzipped).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(ran.count(), 2);

    // A CORS preflight is answered by the CORS layer, before verification.
    let preflight = Request::options(PATH)
        .header(header::ORIGIN, "https://example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(preflight).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");

    // A panicking handler: CatchPanic answers 500 with its own body.
    let panics = delivery_with_id("evt_prod_panic");
    for attempt in 1..=2 {
        assert_eq!(
            send(app, request("/panics", &panics)).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(b"Service panicked")
            ),
            "attempt {attempt}"
        );
    }
    // Each attempt ran the handler: behind the guard, the panic released the claim.
    assert_eq!(ran.count(), 4);
    if idempotent {
        assert_eq!(
            send(app, request(PATH, &d)).await,
            (
                StatusCode::OK,
                Bytes::from_static(br#"{"id":"evt_prod_valid","status":"duplicate"}"#)
            )
        );
        assert_eq!(ran.count(), 4);
    }
}

#[tokio::test]
async fn a_production_stack_in_one_service_builder() {
    let ran = Ran::default();
    let app = production(&ran, Duration::from_secs(30), Duration::ZERO);
    check_production(&app, &ran, false).await;
}

#[tokio::test]
async fn a_production_stack_with_the_idempotency_layer() {
    let ran = Ran::default();
    let guard = Idempotency::new(MemoryStore::new(100), &verifier());
    let app = production_idempotent(&ran, Duration::from_secs(30), Duration::ZERO, guard);
    check_production(&app, &ran, true).await;
}

#[tokio::test]
async fn a_timeout_layer_dropping_the_response_does_not_stop_the_guarded_handler() {
    let ran = Ran::default();
    let guard = Idempotency::new(MemoryStore::new(100), &verifier());
    // The handler outlives the timeout layer, which drops the response future at 500 ms.
    let app = production_idempotent(
        &ran,
        Duration::from_millis(500),
        Duration::from_millis(2000),
        guard.clone(),
    );
    let d = delivery_with_id("evt_prod_slow");
    let started = Instant::now();
    assert_eq!(
        send(&app, request("/slow", &d)).await.0,
        StatusCode::REQUEST_TIMEOUT
    );
    // AIRMY retries while the detached handler still runs: in flight.
    let (status, body) = send(&app, request("/slow", &d)).await;
    if started.elapsed() < Duration::from_millis(2000) {
        assert_eq!(
            (status, body),
            (
                StatusCode::CONFLICT,
                Bytes::from_static(br#"{"error":"delivery_in_flight"}"#)
            )
        );
    }
    // The handler finished though nobody waited for it, and its success was recorded.
    idle_within(&guard, Duration::from_secs(20)).await;
    assert_eq!(ran.count(), 1, "the handler ran to its end once");
    assert_eq!(
        send(&app, request("/slow", &d)).await,
        (
            StatusCode::OK,
            Bytes::from_static(br#"{"id":"evt_prod_slow","status":"duplicate"}"#)
        )
    );
    assert_eq!(ran.count(), 1);
}

// 5 and 6: a real server and a raw socket.

async fn serve(app: Router) -> SocketAddr {
    let (listener, addr) = loopback().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_stalled_body_gets_408_through_a_real_server_and_the_connection_is_closed() {
    let ran = Ran::default();
    let timeout = Duration::from_millis(300);
    let app = Router::new()
        .route(PATH, echo(&ran))
        .layer(AirmyVerifyLayer::new(verifier_with_body_timeout(timeout)));
    let addr = serve(app).await;
    a_stalled_body_gets_408_and_the_connection_is_closed(addr, timeout).await;
    assert_eq!(ran.count(), 0);
}

/// The slow handler behind the verify layer with `guard`.
fn slow_app(slow: Slow, guard: Idempotency) -> Router {
    let route = move |AirmyEvent(event): AirmyEvent| {
        let slow = slow.clone();
        async move {
            slow.run().await;
            Json(json!({ "handled": event.id }))
        }
    };
    Router::new()
        .route(PATH, post(route))
        .layer(AirmyVerifyLayer::new(verifier()).idempotency(guard))
}

/// Serves [`slow_app`] on a real server.
async fn serve_slow(slow: Slow, guard: Idempotency) -> SocketAddr {
    serve(slow_app(slow, guard)).await
}

async fn a_client_hanging_up_does_not_stop_the_guarded_handler(guard: Idempotency) {
    detached::a_client_hanging_up_does_not_stop_the_guarded_handler(
        guard,
        "evt_hang_up",
        serve_slow,
    )
    .await;
}

async fn a_lease_shorter_than_the_handler_is_extended(guard: Idempotency) {
    detached::a_lease_shorter_than_the_handler_is_extended(guard, "evt_short_lease", serve_slow)
        .await;
}

async fn shapes_redis_guard(server: &RedisServer) -> Idempotency {
    redis_guard(server, "airmy-test-shapes", &verifier()).await
}

#[tokio::test]
async fn memory_a_client_hanging_up_does_not_stop_the_guarded_handler() {
    a_client_hanging_up_does_not_stop_the_guarded_handler(memory_guard()).await;
}

#[tokio::test]
async fn redis_a_client_hanging_up_does_not_stop_the_guarded_handler() {
    let server = RedisServer::start();
    a_client_hanging_up_does_not_stop_the_guarded_handler(shapes_redis_guard(&server).await).await;
}

#[tokio::test]
async fn memory_a_lease_shorter_than_the_handler_is_extended() {
    a_lease_shorter_than_the_handler_is_extended(memory_guard()).await;
}

#[tokio::test]
async fn redis_a_lease_shorter_than_the_handler_is_extended() {
    let server = RedisServer::start();
    a_lease_shorter_than_the_handler_is_extended(shapes_redis_guard(&server).await).await;
}

#[tokio::test]
async fn a_dropped_response_future_does_not_stop_the_guarded_handler() {
    let guard = memory_guard();
    let slow = Slow::new(Duration::from_millis(800));
    let app = slow_app(slow.clone(), guard.clone());
    let d = delivery_with_id("evt_dropped");
    detached::drop_once_started(&slow, &guard, app.clone().oneshot(request(PATH, &d))).await;
    let (status, body) = send(&app, request(PATH, &d)).await;
    assert_eq!(
        (status, json_of(&body)),
        (StatusCode::OK, duplicate_of("evt_dropped"))
    );
    assert_eq!(slow.started(), 1);
}

// 7. The idempotency layer needs the verify layer in front.

#[tokio::test]
async fn the_idempotency_layer_without_the_verify_layer_in_front_answers_500() {
    let ran = Ran::default();
    let alone: Router = Router::new()
        .route(PATH, echo(&ran))
        .layer(AirmyIdempotencyLayer::new(memory_guard()));
    // Outside the verify layer is not in front of it either.
    let outside: Router = Router::new().route(PATH, echo(&ran)).layer(
        ServiceBuilder::new()
            .layer(AirmyIdempotencyLayer::new(memory_guard()))
            .layer(AirmyVerifyLayer::new(verifier())),
    );
    for app in [&alone, &outside] {
        for d in [valid(), valid(), forged()] {
            let (status, body) = send(app, request(PATH, &d)).await;
            assert_eq!(
                (status, body),
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from_static(NOT_CONFIGURED)
                )
            );
        }
    }
    assert_eq!(ran.count(), 0, "the handler never ran");

    // In the right order, in one ServiceBuilder: runs once, then duplicates.
    let inside: Router = Router::new().route(PATH, echo(&ran)).layer(
        ServiceBuilder::new()
            .layer(AirmyVerifyLayer::new(verifier()))
            .layer(AirmyIdempotencyLayer::new(memory_guard())),
    );
    valid_200_forged_401(&inside, PATH).await;
    let (status, body) = send(&inside, request(PATH, &valid())).await;
    assert_eq!(
        (status, json_of(&body)),
        (StatusCode::OK, duplicate_of("evt_test_run_completed"))
    );
    assert_eq!(ran.count(), 1);
}

// The services' own API.

/// The id of the verified delivery in the request extensions, or nothing.
async fn verified_id(
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let id = request
        .extensions()
        .get::<airmy_verify::Verified>()
        .map(|v| v.id().to_owned())
        .unwrap_or_default();
    Ok(http::Response::new(Full::new(Bytes::from(id))))
}

fn full_request(d: &Delivery) -> http::Request<Full<Bytes>> {
    http::Request::post(PATH)
        .header("x-airmy-signature", &d.signature)
        .body(Full::new(d.body.clone()))
        .expect("request")
}

async fn call<S, B>(service: S, d: &Delivery) -> (StatusCode, Bytes)
where
    S: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    status_and_body(service.oneshot(full_request(d)).await.expect("infallible")).await
}

#[tokio::test]
async fn the_services_wrap_any_service_and_give_it_back() {
    let d = valid();
    let id = Bytes::from_static(b"evt_test_run_completed");
    let mut verify = AirmyVerify::new(tower::service_fn(verified_id), verifier());
    let _: &_ = verify.get_ref();
    let _: &mut _ = verify.get_mut();
    assert_eq!(call(verify.clone(), &d).await, (StatusCode::OK, id.clone()));
    assert_eq!(
        call(verify.clone(), &forged()).await,
        (
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(INVALID_SIGNATURE)
        )
    );
    // The inner service, unwrapped, sees no verified delivery.
    assert_eq!(
        call(verify.into_inner(), &d).await,
        (StatusCode::OK, Bytes::new())
    );
    // AirmyVerify::layer is AirmyVerifyLayer::new.
    let layered = AirmyVerify::<()>::layer(verifier()).layer(tower::service_fn(verified_id));
    assert_eq!(call(layered, &d).await, (StatusCode::OK, id.clone()));

    // The idempotency service, alone: refuses; behind AirmyVerify: runs once, then duplicates.
    let mut guarded = AirmyIdempotency::new(tower::service_fn(verified_id), memory_guard());
    let _: &_ = guarded.get_ref();
    let _: &mut _ = guarded.get_mut();
    assert_eq!(
        call(guarded.clone(), &d).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(NOT_CONFIGURED)
        )
    );
    let stacked = AirmyVerify::new(guarded, verifier());
    assert_eq!(
        call(stacked.clone(), &d).await,
        (StatusCode::OK, id.clone())
    );
    assert_eq!(
        call(stacked.clone(), &d).await,
        (
            StatusCode::OK,
            Bytes::from_static(br#"{"id":"evt_test_run_completed","status":"duplicate"}"#)
        )
    );
    let inner = stacked.into_inner().into_inner();
    assert_eq!(call(inner, &d).await, (StatusCode::OK, Bytes::new()));
    let relayered =
        AirmyIdempotency::<()>::layer(memory_guard()).layer(tower::service_fn(verified_id));
    assert_eq!(
        call(AirmyVerify::new(relayered, verifier()), &d).await,
        (StatusCode::OK, id)
    );
}

#[tokio::test]
async fn the_response_body_defaults_to_the_inner_default() {
    let body = ResponseBody::<Body>::default();
    assert!(body.collect().await.expect("body").to_bytes().is_empty());
}
