//! The shapes an application gives the middleware and the extractors: every pair of
//! extractors in one handler behind the middleware and without it, misconfigurations, the
//! body timeout and the detached idempotent handler through a real `HttpServer` and a raw
//! socket, and the idempotency middleware without the verifying one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::rt::net::TcpStream;
use actix_web::rt::time::Instant;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, test, web};
use airmy_verify::event::RunCompleted;
use airmy_verify::idempotency::{Idempotency, MemoryStore, RedisStore};
use airmy_verify::testing::{self, Delivery};
use airmy_verify::time::OffsetDateTime;
use airmy_verify::{Clock, Event, Secret, Verifier};
use airmy_verify_actix::{AirmyDelivery, AirmyEvent, AirmyIdempotency, AirmyVerify};
use serde_json::{Value, json};
use test_support::RedisServer;

const PATH: &str = "/hooks/airmy";

const NOT_CONFIGURED: &[u8] = br#"{"error":"verifier_not_configured"}"#;
const BODY_ALREADY_READ: &[u8] = br#"{"error":"body_already_read"}"#;
const INVALID_SIGNATURE: &[u8] = br#"{"error":"invalid_signature"}"#;

fn verifier() -> Verifier {
    testing::conformance_verifier()
}

/// A clock at the conformance instant that counts how often it is read: the core reads it
/// once per verification (the freshness check), so this counts verifications.
#[derive(Clone, Default)]
struct CountingClock(Arc<AtomicUsize>);

impl Clock for CountingClock {
    fn now(&self) -> OffsetDateTime {
        self.0.fetch_add(1, Ordering::SeqCst);
        testing::fixed_now()
    }
}

impl CountingClock {
    fn verifier(&self) -> Verifier {
        Verifier::builder(Secret::new(testing::SECRET).expect("secret"))
            .clock(self.clone())
            .build()
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Default)]
struct Ran(Arc<AtomicUsize>);

impl Ran {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

async fn accept(ran: web::Data<Ran>, AirmyEvent(event): AirmyEvent) -> HttpResponse {
    ran.0.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(json!({ "id": event.id, "type": event.event_type() }))
}

fn valid() -> Delivery {
    testing::sample_event("run.completed").signed(testing::SECRET)
}

fn forged() -> Delivery {
    testing::sample_event("run.completed").signed(testing::WRONG_SECRET)
}

fn delivery_with_id(id: &str) -> Delivery {
    testing::sample_event("run.completed")
        .id(id)
        .signed(testing::SECRET)
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

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
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

#[actix_web::test]
async fn behind_the_middleware_every_pair_of_extractors_works_in_one_handler() {
    let clock = CountingClock::default();
    let app = test::init_service(
        App::new().service(pairs(web::scope("")).wrap(AirmyVerify::new(clock.verifier()))),
    )
    .await;
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
        assert_eq!(
            send(&app, request(path, &forged())).await,
            (
                StatusCode::UNAUTHORIZED,
                web::Bytes::from_static(INVALID_SIGNATURE)
            ),
            "{path}"
        );
    }
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
        (
            "/request-event",
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
            "{path}: one verification for all our extractors"
        );
        assert_eq!(
            send(&app, request(path, &forged())).await,
            (
                StatusCode::UNAUTHORIZED,
                web::Bytes::from_static(INVALID_SIGNATURE)
            ),
            "{path}"
        );
    }
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

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        stream.writable().await.expect("writable");
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("write: {err}"),
        }
    }
}

/// Reads until the server closes the connection: `Ok` with everything read, or `Err` with
/// what was read when `limit` passed with the connection still open.
async fn read_to_close(stream: &TcpStream, limit: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut read = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Err(_) => return Err(read),
            Ok(ready) => ready.expect("readable"),
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return Ok(read),
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            // A reset closes the connection too.
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Ok(read),
            Err(err) => panic!("read: {err}"),
        }
    }
}

/// A response read off the wire: status, lowercase header lines, body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        json_of(&self.body)
    }
}

/// The request head of a delivery, declaring `content_length` bytes of body.
fn head(d: &Delivery, content_length: usize, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         X-AIRMY-Signature: {}\r\nContent-Length: {content_length}\r\n{connection}\r\n",
        d.signature
    )
    .into_bytes()
}

/// Posts a delivery on a fresh connection (`Connection: close`) and reads the whole answer.
async fn raw_post(addr: SocketAddr, d: &Delivery) -> RawResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    write_all(&stream, &head(d, d.body.len(), true)).await;
    write_all(&stream, &d.body).await;
    let raw = read_to_close(&stream, Duration::from_secs(20))
        .await
        .unwrap_or_else(|partial| {
            panic!(
                "no complete answer within 20 s: {:?}",
                String::from_utf8_lossy(&partial)
            )
        });
    RawResponse::parse(&raw)
}

/// Sends headers promising 500 bytes, 10 of them, then stalls with the connection open; checks
/// the 408 and that the server closes the connection.
async fn a_stalled_body_gets_408_and_the_connection_is_closed(addr: SocketAddr, timeout: Duration) {
    let d = valid();
    let stream = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    write_all(&stream, &head(&d, 500, false)).await;
    write_all(&stream, &d.body[..10]).await;
    let raw = read_to_close(&stream, Duration::from_secs(20))
        .await
        .unwrap_or_else(|partial| {
            panic!(
                "the server kept the connection open: {:?}",
                String::from_utf8_lossy(&partial)
            )
        });
    let waited = started.elapsed();
    let response = RawResponse::parse(&raw);
    assert_eq!(response.status, 408, "{:?}", String::from_utf8_lossy(&raw));
    assert_eq!(response.body, br#"{"error":"body_timeout"}"#);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    // Not before the configured timeout, and well before the default 5 s.
    assert!(waited >= timeout, "answered after {waited:?}");
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
}

fn verifier_with_body_timeout(timeout: Duration) -> Verifier {
    Verifier::builder(Secret::new(testing::SECRET).expect("secret"))
        .clock(testing::FixedClock::default())
        .body_timeout(timeout)
        .build()
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

/// A handler that sleeps `delay`, counting its starts and its ends.
#[derive(Clone)]
struct Slow {
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    delay: Duration,
}

impl Slow {
    fn new(delay: Duration) -> Self {
        Self {
            started: Arc::default(),
            finished: Arc::default(),
            delay,
        }
    }

    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// Waits until the handler started `n` times, for at most 20 s.
    async fn wait_started(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.started() < n {
            assert!(Instant::now() < deadline, "the handler never started");
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn slow_handler(slow: web::Data<Slow>, AirmyEvent(event): AirmyEvent) -> HttpResponse {
    slow.started.fetch_add(1, Ordering::SeqCst);
    actix_web::rt::time::sleep(slow.delay).await;
    slow.finished.fetch_add(1, Ordering::SeqCst);
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

fn memory_guard() -> Idempotency {
    Idempotency::new(MemoryStore::new(1000), &verifier()).expect("guard")
}

async fn redis_guard(server: &RedisServer) -> Idempotency {
    let store = RedisStore::connect(server.url())
        .await
        .expect("Redis reachable");
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    // A prefix per test keeps runs against a shared AIRMY_REDIS_URL apart.
    let store = store.prefix(format!(
        "airmy-test-actix-shapes:{}-{nanos}:",
        std::process::id()
    ));
    Idempotency::new(store, &verifier()).expect("guard")
}

fn duplicate_of(id: &str) -> Value {
    json!({ "status": "duplicate", "id": id })
}

/// Waits until `guard` runs no handler, for at most `limit`.
async fn idle_within(guard: &Idempotency, limit: Duration) {
    actix_web::rt::time::timeout(limit, guard.wait_idle())
        .await
        .expect("the guarded handler finished");
}

/// The client hangs up while the guarded handler runs: the handler still completes, a retry
/// meanwhile gets 409, a retry afterwards `200 duplicate`, and the handler ran once.
async fn a_client_hanging_up_does_not_stop_the_guarded_handler(guard: Idempotency) {
    let slow = Slow::new(Duration::from_millis(1500));
    let addr = serve_slow(&slow, &guard);
    let d = delivery_with_id("evt_actix_hang_up");
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect");
    write_all(&stream, &head(&d, d.body.len(), false)).await;
    write_all(&stream, &d.body).await;
    slow.wait_started(1).await;
    actix_web::rt::time::sleep_until(started + Duration::from_millis(200)).await;
    drop(stream);

    actix_web::rt::time::sleep_until(started + Duration::from_millis(500)).await;
    let retry = raw_post(addr, &d).await;
    // (On a machine so loaded that the handler finished first, a duplicate is right too.)
    if slow.finished() == 0 {
        assert_eq!(
            (retry.status, retry.json()),
            (409, json!({ "error": "delivery_in_flight" }))
        );
    } else {
        assert!(retry.status == 409 || retry.json() == duplicate_of("evt_actix_hang_up"));
    }

    actix_web::rt::time::sleep_until(started + Duration::from_secs(2)).await;
    idle_within(&guard, Duration::from_secs(20)).await;
    let retry = raw_post(addr, &d).await;
    assert_eq!(
        (retry.status, retry.json()),
        (200, duplicate_of("evt_actix_hang_up"))
    );
    assert_eq!(slow.started(), 1);
    assert_eq!(slow.finished(), 1, "the handler ran to its end");
}

/// A lease shorter than the handler: the running handler extends its claim, so retries
/// during the run get 409, not a second run.
async fn a_lease_shorter_than_the_handler_is_extended(guard: Idempotency) {
    let guard = guard.lease(Duration::from_millis(300));
    let slow = Slow::new(Duration::from_millis(1200));
    let addr = serve_slow(&slow, &guard);
    let d = delivery_with_id("evt_actix_short_lease");
    let started = Instant::now();
    let first = {
        let d = d.clone();
        actix_web::rt::spawn(async move { raw_post(addr, &d).await })
    };
    slow.wait_started(1).await;
    let mut during_the_run = 0;
    for at in [450, 750, 1000] {
        actix_web::rt::time::sleep_until(started + Duration::from_millis(at)).await;
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
                retry.status == 409 || retry.json() == duplicate_of("evt_actix_short_lease"),
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
        (200, json!({ "handled": "evt_actix_short_lease" }))
    );
    idle_within(&guard, Duration::from_secs(20)).await;
    let retry = raw_post(addr, &d).await;
    assert_eq!(
        (retry.status, retry.json()),
        (200, duplicate_of("evt_actix_short_lease"))
    );
    assert_eq!(slow.started(), 1, "the handler ran once");
}

#[actix_web::test]
async fn memory_a_client_hanging_up_does_not_stop_the_guarded_handler() {
    a_client_hanging_up_does_not_stop_the_guarded_handler(memory_guard()).await;
}

#[actix_web::test]
async fn redis_a_client_hanging_up_does_not_stop_the_guarded_handler() {
    let server = RedisServer::start();
    a_client_hanging_up_does_not_stop_the_guarded_handler(redis_guard(&server).await).await;
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
    let mut response = Box::pin(app.call(request(PATH, &d)));
    // Poll the response future until the handler runs, then drop it: no answer was awaited.
    while slow.started() == 0 {
        let polled =
            actix_web::rt::time::timeout(Duration::from_millis(10), response.as_mut()).await;
        assert!(polled.is_err(), "answered before the handler started");
    }
    let polled = actix_web::rt::time::timeout(Duration::from_millis(100), response.as_mut()).await;
    assert!(polled.is_err(), "the handler answered within 100 ms");
    drop(response);
    idle_within(&guard, Duration::from_secs(20)).await;
    assert_eq!(slow.finished(), 1, "the handler ran to its end");
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
