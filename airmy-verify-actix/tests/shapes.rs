//! The shapes an application gives the middleware and the extractors: every pair of
//! extractors in one handler behind the middleware and without it, misconfigurations, the
//! body timeout and the detached idempotent handler through a real `HttpServer` and a raw
//! socket, and the idempotency middleware without the verifying one.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, test, web};
use airmy_verify::event::RunCompleted;
use airmy_verify::idempotency::Idempotency;
use airmy_verify::testing::{self, Delivery};
use airmy_verify::{Event, Verifier};
use airmy_verify_actix::{AirmyDelivery, AirmyEvent, AirmyIdempotency, AirmyVerify};
use serde_json::{Value, json};
use test_support::RedisServer;
use test_support::detached::{self, Slow};
use test_support::fixtures::{
    CountingClock, PATH, Ran, delivery_with_id, duplicate_of, forged, json_of, memory_guard,
    redis_guard, text, valid, verifier_with_body_timeout,
};
use test_support::http::a_stalled_body_gets_408_and_the_connection_is_closed;

const NOT_CONFIGURED: &[u8] = br#"{"error":"verifier_not_configured"}"#;
const BODY_ALREADY_READ: &[u8] = br#"{"error":"body_already_read"}"#;
const INVALID_SIGNATURE: &[u8] = br#"{"error":"invalid_signature"}"#;

fn verifier() -> Verifier {
    testing::conformance_verifier()
}

async fn accept(ran: web::Data<Ran>, AirmyEvent(event): AirmyEvent) -> HttpResponse {
    ran.0.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(json!({ "id": event.id, "type": event.event_type() }))
}

fn request(path: &str, d: &Delivery) -> actix_http::Request {
    test::TestRequest::post()
        .uri(path)
        .insert_header(("x-airmy-signature", d.signature.clone()))
        .insert_header(("content-type", "application/json"))
        .set_payload(d.body.clone())
        .to_request()
}

async fn send<S, B>(app: &S, request: actix_http::Request) -> (StatusCode, web::Bytes)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = test::call_service(app, request).await;
    let status = response.status();
    (status, test::read_body(response).await)
}

/// Every pair of extractors, one route each, answering what each extractor saw.
fn pairs(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route(
            "/event-delivery",
            web::post().to(
                |AirmyEvent(event): AirmyEvent, AirmyDelivery(raw): AirmyDelivery| async move {
                    HttpResponse::Ok().json(json!({
                        "id": event.id, "type": event.event_type(),
                        "raw_id": raw.id(), "raw": text(raw.bytes()),
                    }))
                },
            ),
        )
        .route(
            "/delivery-typed",
            web::post().to(
                |AirmyDelivery(raw): AirmyDelivery, AirmyEvent(run): AirmyEvent<RunCompleted>| async move {
                    HttpResponse::Ok().json(json!({
                        "raw_id": raw.id(), "raw": text(raw.bytes()),
                        "id": run.id, "tokens": run.data.tokens_used,
                    }))
                },
            ),
        )
        .route(
            "/typed-event",
            web::post().to(
                |AirmyEvent(run): AirmyEvent<RunCompleted>, AirmyEvent(event): AirmyEvent| async move {
                    HttpResponse::Ok().json(json!({
                        "id": run.id, "tokens": run.data.tokens_used,
                        "second_id": event.id,
                        "second_is_run": matches!(event.data, Event::RunCompleted(_)),
                    }))
                },
            ),
        )
        .route(
            "/event-bytes",
            web::post().to(|AirmyEvent(event): AirmyEvent, body: web::Bytes| async move {
                HttpResponse::Ok().json(json!({ "id": event.id, "raw": text(&body) }))
            }),
        )
        .route(
            "/bytes-event",
            web::post().to(|body: web::Bytes, AirmyEvent(event): AirmyEvent| async move {
                HttpResponse::Ok().json(json!({ "id": event.id, "raw": text(&body) }))
            }),
        )
        .route(
            "/event-string",
            web::post().to(|AirmyEvent(event): AirmyEvent, body: String| async move {
                HttpResponse::Ok().json(json!({ "id": event.id, "raw": body }))
            }),
        )
        .route(
            "/request-event",
            web::post().to(|req: HttpRequest, AirmyEvent(event): AirmyEvent| async move {
                let signature = req
                    .headers()
                    .get("x-airmy-signature")
                    .expect("signature header")
                    .to_str()
                    .expect("ASCII")
                    .to_owned();
                HttpResponse::Ok().json(json!({ "id": event.id, "signature": signature }))
            }),
        )
        .route(
            "/event-json",
            web::post().to(
                |AirmyEvent(event): AirmyEvent, value: web::Json<Value>| async move {
                    HttpResponse::Ok().json(json!({
                        "id": event.id,
                        "json_type": value["type"], "tokens": value["data"]["tokens_used"],
                    }))
                },
            ),
        )
        .route(
            "/json-delivery",
            web::post().to(
                |value: web::Json<Value>, AirmyDelivery(raw): AirmyDelivery| async move {
                    HttpResponse::Ok().json(json!({
                        "raw_id": raw.id(), "raw": text(raw.bytes()),
                        "json_type": value["type"], "tokens": value["data"]["tokens_used"],
                    }))
                },
            ),
        )
}

/// What each route of [`pairs`] answers `d` (a `run.completed` delivery of [`valid`]'s id) with.
fn pair_answers(d: &Delivery) -> Vec<(&'static str, Value)> {
    let raw = text(&d.body);
    let id = "evt_test_run_completed";
    vec![
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
        ("/bytes-event", json!({ "id": id, "raw": raw })),
        ("/event-string", json!({ "id": id, "raw": raw })),
        (
            "/request-event",
            json!({ "id": id, "signature": d.signature }),
        ),
        (
            "/event-json",
            json!({ "id": id, "json_type": "run.completed", "tokens": 1247 }),
        ),
        (
            "/json-delivery",
            json!({ "raw_id": id, "raw": raw, "json_type": "run.completed", "tokens": 1247 }),
        ),
    ]
}

/// Posts `d` to each path, expecting 200 with the path's JSON and one verification (one read
/// of `clock`, else the message `once`), then a forged delivery, expecting 401.
async fn check_each_path<S, B>(
    app: &S,
    clock: &CountingClock,
    d: &Delivery,
    expected: impl IntoIterator<Item = (&str, Value)>,
    once: &str,
) where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    for (path, want) in expected {
        let before = clock.count();
        let (status, body) = send(app, request(path, d)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
        assert_eq!(json_of(&body), want, "{path}");
        assert_eq!(clock.count() - before, 1, "{path}: {once}");
        assert_eq!(
            send(app, request(path, &forged())).await,
            (
                StatusCode::UNAUTHORIZED,
                web::Bytes::from_static(INVALID_SIGNATURE)
            ),
            "{path}"
        );
    }
}

#[actix_web::test]
async fn behind_the_middleware_every_pair_of_extractors_works_in_one_handler() {
    let clock = CountingClock::default();
    let app = test::init_service(
        App::new().service(pairs(web::scope("")).wrap(AirmyVerify::new(clock.verifier()))),
    )
    .await;
    let d = valid();
    let expected = pair_answers(&d);
    check_each_path(&app, &clock, &d, expected, "verified once per request").await;
}

#[actix_web::test]
async fn without_the_middleware_our_extractors_share_one_verification() {
    let clock = CountingClock::default();
    let app = test::init_service(
        App::new()
            .app_data(clock.verifier())
            .service(pairs(web::scope(""))),
    )
    .await;
    let d = valid();
    let expected = pair_answers(&d).into_iter().filter(|(path, _)| {
        [
            "/event-delivery",
            "/delivery-typed",
            "/typed-event",
            "/request-event",
        ]
        .contains(path)
    });
    check_each_path(
        &app,
        &clock,
        &d,
        expected,
        "one verification for all our extractors",
    )
    .await;
}

#[actix_web::test]
async fn without_the_middleware_a_body_read_first_is_500_body_already_read() {
    let ran = Ran::default();
    let counted = |ran: &Ran| {
        let ran = ran.clone();
        move || ran.0.fetch_add(1, Ordering::SeqCst)
    };
    let (bytes, string, json) = (counted(&ran), counted(&ran), counted(&ran));
    let app = test::init_service(
        App::new()
            .app_data(verifier())
            .route(
                "/bytes-event",
                web::post().to(move |_: web::Bytes, _: AirmyEvent| {
                    bytes();
                    async { HttpResponse::Ok().finish() }
                }),
            )
            .route(
                "/string-event",
                web::post().to(move |_: String, _: AirmyEvent<RunCompleted>| {
                    string();
                    async { HttpResponse::Ok().finish() }
                }),
            )
            .route(
                "/json-delivery",
                web::post().to(move |_: web::Json<Value>, _: AirmyDelivery| {
                    json();
                    async { HttpResponse::Ok().finish() }
                }),
            ),
    )
    .await;
    for path in ["/bytes-event", "/string-event", "/json-delivery"] {
        for d in [valid(), forged()] {
            assert_eq!(
                send(&app, request(path, &d)).await,
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    web::Bytes::from_static(BODY_ALREADY_READ)
                ),
                "{path}"
            );
        }
    }
    assert_eq!(ran.count(), 0, "an unverified body never reached a handler");
}

#[actix_web::test]
async fn with_no_verifier_and_no_middleware_every_extractor_is_500() {
    let ran = Ran::default();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(ran.clone()))
            .service(pairs(web::scope("/pairs")))
            .route(PATH, web::post().to(accept)),
    )
    .await;
    let paths = [
        PATH,
        "/pairs/event-delivery",
        "/pairs/delivery-typed",
        "/pairs/event-bytes",
        "/pairs/request-event",
    ];
    for path in paths {
        for d in [valid(), forged()] {
            assert_eq!(
                send(&app, request(path, &d)).await,
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    web::Bytes::from_static(NOT_CONFIGURED)
                ),
                "{path}"
            );
        }
    }
    assert_eq!(ran.count(), 0);
}

// A real server and a raw socket.

/// Starts an `HttpServer` for an app factory on a free loopback port.
macro_rules! serve {
    ($factory:expr) => {{
        let server = HttpServer::new($factory)
            .workers(2)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .expect("bind loopback");
        let addr: SocketAddr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        addr
    }};
}

#[actix_web::test]
async fn a_stalled_body_gets_408_through_a_real_server_with_the_middleware() {
    let ran = Ran::default();
    let timeout = Duration::from_millis(300);
    let data = web::Data::new(ran.clone());
    let addr = serve!(move || {
        App::new()
            .app_data(data.clone())
            .wrap(AirmyVerify::new(verifier_with_body_timeout(timeout)))
            .route(PATH, web::post().to(accept))
    });
    a_stalled_body_gets_408_and_the_connection_is_closed(addr, timeout).await;
    assert_eq!(ran.count(), 0);
}

#[actix_web::test]
async fn a_stalled_body_gets_408_through_a_real_server_with_the_extractor_alone() {
    let ran = Ran::default();
    let timeout = Duration::from_millis(300);
    let data = web::Data::new(ran.clone());
    let addr = serve!(move || {
        App::new()
            .app_data(data.clone())
            .app_data(verifier_with_body_timeout(timeout))
            .route(PATH, web::post().to(accept))
    });
    a_stalled_body_gets_408_and_the_connection_is_closed(addr, timeout).await;
    assert_eq!(ran.count(), 0);
}

// The detached idempotent handler.

async fn slow_handler(slow: web::Data<Slow>, AirmyEvent(event): AirmyEvent) -> HttpResponse {
    slow.run().await;
    HttpResponse::Ok().json(json!({ "handled": event.id }))
}

/// Serves the slow handler behind both middlewares, in the documented order.
fn serve_slow(slow: &Slow, guard: &Idempotency) -> SocketAddr {
    let (slow, guard) = (web::Data::new(slow.clone()), guard.clone());
    serve!(move || {
        App::new()
            .app_data(slow.clone())
            .wrap(AirmyIdempotency::new(guard.clone()))
            .wrap(AirmyVerify::new(verifier()))
            .route(PATH, web::post().to(slow_handler))
    })
}

/// [`serve_slow`], for the scenarios.
async fn serve_slow_owned(slow: Slow, guard: Idempotency) -> SocketAddr {
    serve_slow(&slow, &guard)
}

async fn a_client_hanging_up_does_not_stop_the_guarded_handler(guard: Idempotency) {
    detached::a_client_hanging_up_does_not_stop_the_guarded_handler(
        guard,
        "evt_actix_hang_up",
        serve_slow_owned,
    )
    .await;
}

async fn a_lease_shorter_than_the_handler_is_extended(guard: Idempotency) {
    detached::a_lease_shorter_than_the_handler_is_extended(
        guard,
        "evt_actix_short_lease",
        serve_slow_owned,
    )
    .await;
}

#[actix_web::test]
async fn memory_a_client_hanging_up_does_not_stop_the_guarded_handler() {
    a_client_hanging_up_does_not_stop_the_guarded_handler(memory_guard()).await;
}

#[actix_web::test]
async fn redis_a_client_hanging_up_does_not_stop_the_guarded_handler() {
    let server = RedisServer::start();
    a_client_hanging_up_does_not_stop_the_guarded_handler(
        redis_guard(&server, "airmy-test-actix-shapes", &verifier()).await,
    )
    .await;
}

#[actix_web::test]
async fn memory_a_lease_shorter_than_the_handler_is_extended() {
    a_lease_shorter_than_the_handler_is_extended(memory_guard()).await;
}

#[actix_web::test]
async fn a_dropped_response_future_does_not_stop_the_guarded_handler() {
    let guard = memory_guard();
    let slow = Slow::new(Duration::from_millis(800));
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(slow.clone()))
            .wrap(AirmyIdempotency::new(guard.clone()))
            .wrap(AirmyVerify::new(verifier()))
            .route(PATH, web::post().to(slow_handler)),
    )
    .await;
    let d = delivery_with_id("evt_actix_dropped");
    detached::drop_once_started(&slow, &guard, app.call(request(PATH, &d))).await;
    let (status, body) = send(&app, request(PATH, &d)).await;
    assert_eq!(
        (status, json_of(&body)),
        (StatusCode::OK, duplicate_of("evt_actix_dropped"))
    );
    assert_eq!(slow.started(), 1);
}

// The idempotency middleware needs the verifying one in front.

#[actix_web::test]
async fn the_idempotency_middleware_without_the_verifying_one_answers_500() {
    let ran = Ran::default();
    let data = web::Data::new(ran.clone());
    let alone = test::init_service(
        App::new()
            .app_data(data.clone())
            .wrap(AirmyIdempotency::new(memory_guard()))
            .route(PATH, web::post().to(accept)),
    )
    .await;
    // A verifier in app_data verifies for the extractors only, after the middleware ran.
    let app_data_only = test::init_service(
        App::new()
            .app_data(data.clone())
            .app_data(verifier())
            .wrap(AirmyIdempotency::new(memory_guard()))
            .route(PATH, web::post().to(accept)),
    )
    .await;
    // The wrong order: actix runs the last `wrap` first, so this guard runs before AirmyVerify.
    let wrong_order = test::init_service(
        App::new()
            .app_data(data.clone())
            .wrap(AirmyVerify::new(verifier()))
            .wrap(AirmyIdempotency::new(memory_guard()))
            .route(PATH, web::post().to(accept)),
    )
    .await;
    let expected = (
        StatusCode::INTERNAL_SERVER_ERROR,
        web::Bytes::from_static(NOT_CONFIGURED),
    );
    for d in [valid(), valid(), forged()] {
        assert_eq!(send(&alone, request(PATH, &d)).await, expected);
        assert_eq!(send(&app_data_only, request(PATH, &d)).await, expected);
        assert_eq!(send(&wrong_order, request(PATH, &d)).await, expected);
    }
    assert_eq!(ran.count(), 0, "the handler never ran");

    // The documented order: runs once, then duplicates.
    let right_order = test::init_service(
        App::new()
            .app_data(data.clone())
            .wrap(AirmyIdempotency::new(memory_guard()))
            .wrap(AirmyVerify::new(verifier()))
            .route(PATH, web::post().to(accept)),
    )
    .await;
    let (status, body) = send(&right_order, request(PATH, &valid())).await;
    assert_eq!(
        (status, json_of(&body)),
        (
            StatusCode::OK,
            json!({ "id": "evt_test_run_completed", "type": "run.completed" })
        )
    );
    assert_eq!(
        send(&right_order, request(PATH, &forged())).await,
        (
            StatusCode::UNAUTHORIZED,
            web::Bytes::from_static(INVALID_SIGNATURE)
        )
    );
    let (status, body) = send(&right_order, request(PATH, &valid())).await;
    assert_eq!(
        (status, json_of(&body)),
        (StatusCode::OK, duplicate_of("evt_test_run_completed"))
    );
    assert_eq!(ran.count(), 1);
}

/// actix's `web::Bytes` and `String` stop at 256 KiB by default; behind the middleware they
/// take whatever the verifier accepted (2 MiB here), so a large authentic delivery is not
/// refused with actix's own 413 after it was verified.
#[actix_web::test]
async fn behind_the_middleware_body_extractors_take_bodies_up_to_the_verifier_limit() {
    async fn bytes(AirmyEvent(e): AirmyEvent, body: web::Bytes) -> HttpResponse {
        HttpResponse::Ok().body(format!("{} {}", e.id, body.len()))
    }
    async fn string(body: String, AirmyDelivery(d): AirmyDelivery) -> HttpResponse {
        HttpResponse::Ok().body(format!("{} {}", d.id(), body.len()))
    }
    let app = test::init_service(
        App::new().service(
            web::scope("/hooks")
                .wrap(AirmyVerify::new(verifier()))
                .route("/bytes", web::post().to(bytes))
                .route("/string", web::post().to(string)),
        ),
    )
    .await;
    for len in [
        256 * 1024 + 1,
        1024 * 1024,
        airmy_verify::DEFAULT_MAX_BODY_SIZE,
    ] {
        let d = testing::sample_event("run.completed")
            .padded_to(len)
            .signed(testing::SECRET);
        for path in ["/hooks/bytes", "/hooks/string"] {
            let (status, body) = send(&app, request(path, &d)).await;
            assert_eq!(status, StatusCode::OK, "{path} {len}: {}", text(&body));
            assert!(
                text(&body).ends_with(&format!(" {len}")),
                "{path} {len}: {}",
                text(&body)
            );
        }
    }
}
