//! The core's conformance table through the layer and through the extractors alone, with a
//! declared length and streamed, plus the axum-specific paths (typed routes, raw bytes,
//! misconfiguration, unreadable bodies, rejecting before reading).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use airmy_verify::event::RunCompleted;
use airmy_verify::testing::{self, Case};
use airmy_verify_axum::{
    AirmyEvent, AirmyRejection, AirmyVerifier, AirmyVerifyLayer, VerifiedBytes,
};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const PATH: &str = "/hooks/airmy";

#[derive(Clone, Default)]
struct Ran(Arc<AtomicUsize>);

impl Ran {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

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

fn extractor_only(ran: &Ran) -> Router {
    let ran = ran.clone();
    Router::new()
        .route(PATH, post(move |e| accept(ran.clone(), e)))
        .with_state(AirmyVerifier::new(testing::conformance_verifier()))
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
        let chunks: Vec<Result<Bytes, Infallible>> = case
            .body
            .chunks(7000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures_util::stream::iter(chunks))
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
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    if let Err(err) = case.check_response(status, &body, ran.count() - before) {
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
async fn every_conformance_case_through_the_extractor_alone() {
    let ran = Ran::default();
    let app = extractor_only(&ran);
    for case in testing::conformance_cases() {
        check(app.clone(), &ran, &case, false).await;
        check(app.clone(), &ran, &case, true).await;
    }
}

fn case(name: &str) -> Case {
    testing::case(name).expect("case exists")
}

/// The router verified by the layer (with no verifier in the state, which the layer does not
/// need), or by the extractor alone (with the verifier in the state).
fn verified_by(app: Router<AirmyVerifier>, layer: bool) -> Router {
    if layer {
        app.layer(AirmyVerifyLayer::new(testing::conformance_verifier()))
            .with_state(AirmyVerifier::none())
    } else {
        app.with_state(AirmyVerifier::new(testing::conformance_verifier()))
    }
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, Bytes) {
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    (
        status,
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
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
    for with_layer in [true, false] {
        let ran = Ran::default();
        let counter = ran.clone();
        let handler = move |AirmyEvent(run): AirmyEvent<RunCompleted>| async move {
            counter.0.fetch_add(1, Ordering::SeqCst);
            run.data.tokens_used.unwrap_or_default().to_string()
        };
        let app = Router::new().route(PATH, post(handler));
        let app = verified_by(app, with_layer);
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
}

#[tokio::test]
async fn the_result_form_lets_a_handler_decide_on_other_types() {
    let handler = |event: Result<AirmyEvent<RunCompleted>, AirmyRejection>| async move {
        match event {
            Ok(_) => StatusCode::OK,
            Err(AirmyRejection::Verify(airmy_verify::Error::UnexpectedEventType { .. })) => {
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
    for with_layer in [true, false] {
        let handler = |VerifiedBytes(payload): VerifiedBytes| async move {
            assert_eq!(payload.event_type(), "pipeline.completed");
            payload.into_bytes()
        };
        let app = Router::new().route(PATH, post(handler));
        let app = verified_by(app, with_layer);
        assert_eq!(
            send(app, request()).await,
            (StatusCode::OK, expected.clone())
        );
    }
}

#[tokio::test]
async fn an_extractor_with_no_layer_and_no_verifier_answers_500() {
    let ran = Ran::default();
    let counter = ran.clone();
    let app = Router::new().route(
        PATH,
        post(move |AirmyEvent(_): AirmyEvent| async move {
            counter.0.fetch_add(1, Ordering::SeqCst);
        }),
    );
    assert_eq!(
        send(app, delivery("run.completed")).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(br#"{"error":"verifier_not_configured"}"#)
        )
    );
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
        for app in [layered(&ran), extractor_only(&ran)] {
            let polled = Arc::new(AtomicBool::new(false));
            let mut builder = Request::post(PATH).header(header::CONTENT_LENGTH, declared);
            for value in &case.signatures {
                builder = builder.header("x-airmy-signature", &value[..]);
            }
            let request = builder
                .body(watched_body(case.body.clone(), polled.clone()))
                .expect("request");
            let (status, body) = send(app, request).await;
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
    }
    assert_eq!(ran.count(), 0);
}

#[tokio::test]
async fn a_body_that_fails_mid_stream_is_400_body_unreadable() {
    let ran = Ran::default();
    let d = testing::sample_event("run.completed").signed(testing::SECRET);
    for app in [layered(&ran), extractor_only(&ran)] {
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
            send(app, request).await,
            (
                StatusCode::BAD_REQUEST,
                Bytes::from_static(br#"{"error":"body_unreadable"}"#)
            )
        );
    }
    assert_eq!(ran.count(), 0);
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
    let d = testing::sample_event("run.completed").signed(testing::SECRET);
    let seen = Arc::new(AtomicUsize::new(0));
    let raw_view = {
        let seen = Arc::clone(&seen);
        post(move |VerifiedBytes(payload): VerifiedBytes| async move {
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
