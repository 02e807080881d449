//! The core's conformance table through the layer (the one way to verify), with a declared
//! length and streamed, plus the axum-specific paths (typed routes, raw bytes,
//! misconfiguration, unreadable and stalled bodies, rejecting before reading).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use airmy_verify::event::RunCompleted;
use airmy_verify::testing::{self, Case, Delivery};
use airmy_verify_axum::{AirmyDelivery, AirmyEvent, AirmyRejection, AirmyVerifyLayer};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use test_support::fixtures::{PATH, Ran, case, valid, verifier_with_body_timeout};
use test_support::http::{body_bytes, chunks, status_and_body};
use tower::ServiceExt;

async fn accept(ran: Ran, AirmyEvent(event): AirmyEvent) -> Json<Value> {
    ran.0.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "id": event.id, "type": event.event_type() }))
}

fn layered(ran: &Ran) -> Router {
    let ran = ran.clone();
    Router::new()
        .route(PATH, post(move |e| accept(ran.clone(), e)))
        .layer(AirmyVerifyLayer::new(testing::conformance_verifier()))
}

/// The same route with no layer in front: the extractor has nothing verified to read.
fn without_layer(ran: &Ran) -> Router {
    let ran = ran.clone();
    Router::new().route(PATH, post(move |e| accept(ran.clone(), e)))
}

/// A request for a case: with Content-Length, or streamed in 7,000-byte chunks with none.
fn request(case: &Case, streamed: bool) -> Request<Body> {
    let mut builder = Request::post(PATH);
    for value in &case.signatures {
        builder = builder.header(
            "x-airmy-signature",
            HeaderValue::from_bytes(value).expect("the table's values are valid header values"),
        );
    }
    let body = if streamed {
        Body::from_stream(chunks(&case.body, 7000))
    } else {
        builder = builder.header(header::CONTENT_LENGTH, case.body.len());
        Body::from(case.body.clone())
    };
    builder.body(body).expect("request")
}

async fn check(app: Router, ran: &Ran, case: &Case, streamed: bool) {
    let before = ran.count();
    let response = app
        .oneshot(request(case, streamed))
        .await
        .expect("infallible");
    let (status, body) = status_and_body(response).await;
    if let Err(err) = case.check_response(status.as_u16(), &body, ran.count() - before) {
        panic!("streamed: {streamed}: {err}");
    }
}

#[tokio::test]
async fn every_conformance_case_through_the_layer() {
    let ran = Ran::default();
    let app = layered(&ran);
    for case in testing::conformance_cases() {
        check(app.clone(), &ran, &case, false).await;
        check(app.clone(), &ran, &case, true).await;
    }
}

#[tokio::test]
async fn every_conformance_case_without_the_layer_is_500_verifier_not_configured() {
    // Fail closed: with no layer, no case (valid or not) ever reaches the handler.
    let ran = Ran::default();
    let app = without_layer(&ran);
    for case in testing::conformance_cases() {
        for streamed in [false, true] {
            let (status, body) = send(app.clone(), request(&case, streamed)).await;
            assert_eq!(
                (status, body),
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from_static(br#"{"error":"verifier_not_configured"}"#)
                ),
                "{} (streamed: {streamed})",
                case.name
            );
        }
    }
    assert_eq!(ran.count(), 0);
}

/// The router behind the layer.
fn verified(app: Router) -> Router {
    app.layer(AirmyVerifyLayer::new(testing::conformance_verifier()))
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, Bytes) {
    status_and_body(app.oneshot(request).await.expect("infallible")).await
}

fn delivery(event_type: &str) -> Request<Body> {
    let d = testing::sample_event(event_type).signed(testing::SECRET);
    Request::post(PATH)
        .header("x-airmy-signature", d.signature)
        .body(Body::from(d.body))
        .expect("request")
}

#[tokio::test]
async fn a_typed_route_takes_its_type_and_answers_422_to_others() {
    let ran = Ran::default();
    let counter = ran.clone();
    let handler = move |AirmyEvent(run): AirmyEvent<RunCompleted>| async move {
        counter.0.fetch_add(1, Ordering::SeqCst);
        run.data.tokens_used.unwrap_or_default().to_string()
    };
    let app = verified(Router::new().route(PATH, post(handler)));
    assert_eq!(
        send(app.clone(), delivery("run.completed")).await,
        (StatusCode::OK, Bytes::from_static(b"1247"))
    );
    assert_eq!(
        send(app, delivery("alert.triggered")).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Bytes::from_static(br#"{"error":"unexpected_event_type"}"#)
        )
    );
    assert_eq!(ran.count(), 1);
}

#[tokio::test]
async fn the_result_form_lets_a_handler_decide_on_other_types() {
    let handler = |event: Result<AirmyEvent<RunCompleted>, AirmyRejection>| async move {
        match event {
            Ok(_) => StatusCode::OK,
            Err(AirmyRejection(airmy_verify::Error::UnexpectedEventType { .. })) => {
                StatusCode::ACCEPTED
            }
            Err(other) => other.status(),
        }
    };
    let app = Router::new()
        .route(PATH, post(handler))
        .layer(AirmyVerifyLayer::new(testing::conformance_verifier()));
    assert_eq!(
        send(app.clone(), delivery("run.completed")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(app, delivery("agent.updated")).await.0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn handlers_behind_the_layer_see_the_same_bytes() {
    let d = testing::sample_event("pipeline.completed").signed(testing::SECRET);
    let expected = d.body.clone();
    let raw = Router::new()
        .route(PATH, post(|body: Bytes| async move { body }))
        .layer(AirmyVerifyLayer::new(testing::conformance_verifier()));
    let request = || {
        Request::post(PATH)
            .header("x-airmy-signature", d.signature.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(d.body.clone()))
            .expect("request")
    };
    assert_eq!(
        send(raw, request()).await,
        (StatusCode::OK, expected.clone())
    );
    let json = Router::new()
        .route(
            PATH,
            post(|Json(v): Json<Value>| async move { v["type"].to_string() }),
        )
        .layer(AirmyVerifyLayer::new(testing::conformance_verifier()));
    assert_eq!(
        send(json, request()).await,
        (
            StatusCode::OK,
            Bytes::from_static(b"\"pipeline.completed\"")
        )
    );
    let handler = |AirmyDelivery(payload): AirmyDelivery| async move {
        assert_eq!(payload.event_type(), "pipeline.completed");
        payload.into_bytes()
    };
    let app = verified(Router::new().route(PATH, post(handler)));
    assert_eq!(send(app, request()).await, (StatusCode::OK, expected));
}

#[tokio::test]
async fn an_extractor_without_the_layer_answers_500_verifier_not_configured() {
    let ran = Ran::default();
    let (event, delivery_only) = (ran.clone(), ran.clone());
    let app = Router::new()
        .route(
            PATH,
            post(move |AirmyEvent(_): AirmyEvent| async move {
                event.0.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .route(
            "/raw",
            post(move |AirmyDelivery(_): AirmyDelivery| async move {
                delivery_only.0.fetch_add(1, Ordering::SeqCst);
            }),
        )
        // A verifier in the state is not a verifier: only the layer verifies.
        .with_state(testing::conformance_verifier());
    let raw = || {
        let d = valid();
        Request::post("/raw")
            .header("x-airmy-signature", d.signature)
            .body(Body::from(d.body))
            .expect("request")
    };
    for request in [delivery("run.completed"), raw()] {
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_bytes(response.into_body()).await,
            Bytes::from_static(br#"{"error":"verifier_not_configured"}"#)
        );
    }
    assert_eq!(ran.count(), 0);
}

/// A body that records whether anything read it.
fn watched_body(bytes: Bytes, polled: Arc<AtomicBool>) -> Body {
    let stream = futures_util::stream::once(async move {
        polled.store(true, Ordering::SeqCst);
        Ok::<_, Infallible>(bytes)
    });
    Body::from_stream(stream)
}

#[tokio::test]
async fn header_and_length_failures_are_refused_before_reading_the_body() {
    let ran = Ran::default();
    let over = case("body_one_byte_over_limit");
    let missing = case("missing_signature");
    for (case, declared) in [(&over, over.body.len()), (&missing, missing.body.len())] {
        let polled = Arc::new(AtomicBool::new(false));
        let mut builder = Request::post(PATH).header(header::CONTENT_LENGTH, declared);
        for value in &case.signatures {
            builder = builder.header("x-airmy-signature", &value[..]);
        }
        let request = builder
            .body(watched_body(case.body.clone(), polled.clone()))
            .expect("request");
        let (status, body) = send(layered(&ran), request).await;
        assert_eq!(status.as_u16(), case.status, "{}", case.name);
        assert_eq!(
            Some(String::from_utf8_lossy(&body).into_owned()),
            case.error_body()
        );
        assert!(
            !polled.load(Ordering::SeqCst),
            "{}: the body was read",
            case.name
        );
    }
    assert_eq!(ran.count(), 0);
}

#[tokio::test]
async fn a_body_that_fails_mid_stream_is_400_body_unreadable() {
    let ran = Ran::default();
    let d = valid();
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(d.body.slice(..10)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "peer went away",
        )),
    ];
    let request = Request::post(PATH)
        .header("x-airmy-signature", d.signature.clone())
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    assert_eq!(
        send(layered(&ran), request).await,
        (
            StatusCode::BAD_REQUEST,
            Bytes::from_static(br#"{"error":"body_unreadable"}"#)
        )
    );
    assert_eq!(ran.count(), 0);
}

/// A body whose first chunk arrives at once, then one more every `every`, for `chunks` chunks
/// in all, then never ends (`None`: it stalls for good).
fn trickling_body(body: Bytes, chunk: usize, every: Duration, stall: bool) -> Body {
    let parts: Vec<Bytes> = body.chunks(chunk).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::unfold((parts, 0usize), move |(parts, i)| async move {
        if i > 0 {
            tokio::time::sleep(every).await;
        }
        match parts.get(i).cloned() {
            Some(part) => Some((Ok::<_, Infallible>(part), (parts, i + 1))),
            None if stall => std::future::pending().await,
            None => None,
        }
    });
    Body::from_stream(stream)
}

/// `d` with a body trickling in, `chunk` bytes every `every` (the first at once), and no
/// Content-Length.
fn trickling_request(d: &Delivery, chunk: usize, every: Duration) -> Request<Body> {
    Request::post(PATH)
        .header("x-airmy-signature", d.signature.clone())
        .body(trickling_body(d.body.clone(), chunk, every, false))
        .expect("request")
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_gets_408_body_timeout_and_connection_close() {
    let ran = Ran::default();
    let counter = ran.clone();
    let app = Router::new()
        .route(PATH, post(move |e| accept(counter.clone(), e)))
        .layer(AirmyVerifyLayer::new(verifier_with_body_timeout(
            Duration::from_millis(300),
        )));
    let d = valid();
    // Ten bytes, then nothing more, with a Content-Length promising the whole body.
    let request = Request::post(PATH)
        .header("x-airmy-signature", d.signature.clone())
        .header(header::CONTENT_LENGTH, d.body.len())
        .body(trickling_body(d.body.slice(..10), 10, Duration::ZERO, true))
        .expect("request");
    let started = tokio::time::Instant::now();
    let response = app.clone().oneshot(request).await.expect("infallible");
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.headers()[header::CONNECTION], "close");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        body_bytes(response.into_body()).await,
        Bytes::from_static(br#"{"error":"body_timeout"}"#)
    );
    // The paused clock makes these exact: the configured timeout, not the default 5 s.
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(1),
        "{waited:?}"
    );

    // The timeout counts from the headers, not between chunks: a body trickling in slower
    // than that, though every gap is short, is refused too.
    let request = trickling_request(&d, d.body.len() / 10 + 1, Duration::from_millis(100));
    assert_eq!(
        send(app.clone(), request).await,
        (
            StatusCode::REQUEST_TIMEOUT,
            Bytes::from_static(br#"{"error":"body_timeout"}"#)
        )
    );

    // The same trickle within the timeout is accepted.
    let request = trickling_request(&d, d.body.len() / 2 + 1, Duration::from_millis(100));
    assert_eq!(send(app, request).await.0, StatusCode::OK);
    assert_eq!(ran.count(), 1);
}

#[tokio::test]
async fn rejections_are_json() {
    let response = layered(&Ran::default())
        .oneshot(request(&case("tampered_body"), false))
        .await
        .expect("infallible");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
}

#[tokio::test]
async fn a_body_of_one_chunk_reaches_the_handler_without_a_copy() {
    let d = valid();
    let seen = Arc::new(AtomicUsize::new(0));
    let raw_view = {
        let seen = Arc::clone(&seen);
        post(move |AirmyDelivery(payload): AirmyDelivery| async move {
            seen.store(payload.bytes().as_ptr() as usize, Ordering::SeqCst);
        })
    };
    let body = {
        let seen = Arc::clone(&seen);
        post(move |body: Bytes| async move {
            seen.store(body.as_ptr() as usize, Ordering::SeqCst);
        })
    };
    for route in [raw_view, body] {
        seen.store(0, Ordering::SeqCst);
        let app = Router::new()
            .route(PATH, route)
            .layer(AirmyVerifyLayer::new(testing::conformance_verifier()));
        let request = Request::post(PATH)
            .header("x-airmy-signature", d.signature.clone())
            .body(Body::from(d.body.clone()))
            .expect("request");
        let (status, _) = send(app, request).await;
        assert_eq!(status, StatusCode::OK);
        // The handler saw the very allocation the client's body was sent in.
        assert_eq!(seen.load(Ordering::SeqCst), d.body.as_ptr() as usize);
    }
}
