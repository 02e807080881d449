//! The span tree of deliveries through the layer, with a capturing subscriber: one
//! `airmy_delivery` span per request, its fields recorded once known, the guarded handler's
//! detached task and its log lines inside it, and never the secret, the signature or the body.

use airmy_verify::idempotency::{Idempotency, MemoryStore};
use airmy_verify::testing;
use airmy_verify::time::OffsetDateTime;
use airmy_verify::{Secret, Verifier};
use airmy_verify_axum::{AirmyEvent, AirmyIdempotencyLayer, AirmyVerifyLayer};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use test_support::spans::{self, SpanCapture};
use tower::ServiceExt;

const EVENT_TYPE: &str = "alert.triggered";

async fn handler(AirmyEvent(event): AirmyEvent) -> StatusCode {
    tracing::info!(event_id = %event.id, "handler ran");
    StatusCode::OK
}

async fn send(app: &Router, body: &[u8], signature: &str) -> StatusCode {
    let request = Request::post("/hooks/airmy")
        .header("x-airmy-signature", signature)
        .body(Body::from(body.to_vec()))
        .expect("request");
    app.clone()
        .oneshot(request)
        .await
        .expect("infallible")
        .status()
}

#[tokio::test]
async fn each_delivery_is_one_span_tree_with_its_fields() {
    let (capture, _guard) = SpanCapture::install();
    let verifier = Verifier::new(Secret::new(testing::SECRET).expect("secret"));
    let guard = Idempotency::new(MemoryStore::new(100), &verifier);
    let app = Router::new()
        .route("/hooks/airmy", post(handler))
        .layer(AirmyIdempotencyLayer::new(guard))
        .layer(AirmyVerifyLayer::new(verifier));
    let delivery = testing::sample_event(EVENT_TYPE)
        .id("evt_span_1")
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET);

    assert_eq!(
        send(&app, &delivery.body, &delivery.signature).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, &delivery.body, &delivery.signature).await,
        StatusCode::OK
    );
    let forged = airmy_verify::sign(&delivery.body, "whsec_wrong");
    assert_eq!(
        send(&app, &delivery.body, &forged).await,
        StatusCode::UNAUTHORIZED
    );

    let body = String::from_utf8_lossy(&delivery.body).into_owned();
    spans::assert_accepted_duplicate_forged(
        &capture,
        ("evt_span_1", EVENT_TYPE, delivery.body.len()),
        &[testing::SECRET, &delivery.signature, &forged, &body],
    );
}

/// The delivery span's fields after `request` went through `app` (its answer, if any, given
/// back), with a capturing subscriber.
fn delivery(id: &str) -> (Request<Body>, String) {
    let delivery = testing::sample_event(EVENT_TYPE)
        .id(id)
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET);
    let request = Request::post("/hooks/airmy")
        .header("x-airmy-signature", &delivery.signature)
        .body(Body::from(delivery.body.clone()))
        .expect("request");
    (request, id.to_owned())
}

fn verifier() -> Verifier {
    Verifier::new(Secret::new(testing::SECRET).expect("secret"))
}

/// A request dropped while its handler runs (its client hung up, or a timeout around the
/// layer fired) still closes its span with the outcome and a 499 status.
#[tokio::test]
async fn a_delivery_dropped_before_its_answer_records_499() {
    let (capture, _guard) = SpanCapture::install();
    let app = Router::new()
        .route(
            "/hooks/airmy",
            post(|AirmyEvent(_): AirmyEvent| std::future::pending::<StatusCode>()),
        )
        .layer(AirmyVerifyLayer::new(verifier()));
    let (request, id) = delivery("evt_dropped");
    let call = app.oneshot(request);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), call)
            .await
            .is_err(),
        "the handler never answers"
    );
    assert_eq!(
        spans::one_delivery(&capture),
        (id, "accepted".into(), "499".into())
    );
}

/// An inner service that fails instead of answering (a `tower::timeout` inside the layer,
/// turned into a response by an outer `HandleErrorLayer`): counted, status 500.
#[tokio::test]
async fn an_inner_service_error_records_500() {
    use tower::Layer;
    let (capture, _guard) = SpanCapture::install();
    let failing = tower::service_fn(|_: Request<http_body_util::Full<bytes::Bytes>>| async {
        Err::<axum::response::Response, Box<dyn std::error::Error + Send + Sync>>("boom".into())
    });
    let service = AirmyVerifyLayer::new(verifier()).layer(failing);
    let (request, id) = delivery("evt_failed");
    assert!(service.oneshot(request).await.is_err());
    assert_eq!(
        spans::one_delivery(&capture),
        (id, "accepted".into(), "500".into())
    );
}

/// A handler's panic, caught by tower-http's `CatchPanicLayer` outside ours: status 500, not
/// the 499 of a client that left.
#[tokio::test]
async fn a_handler_panic_records_500() {
    let (capture, _guard) = SpanCapture::install();
    let app = Router::new()
        .route(
            "/hooks/airmy",
            post(|AirmyEvent(_): AirmyEvent| async move {
                if true {
                    panic!("the handler panics");
                }
                StatusCode::OK
            }),
        )
        .layer(AirmyVerifyLayer::new(verifier()))
        .layer(tower_http::catch_panic::CatchPanicLayer::new());
    let (request, id) = delivery("evt_panicked");
    let response = app.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        spans::one_delivery(&capture),
        (id, "accepted".into(), "500".into())
    );
}

/// A layer inside ours that panics in `call` itself (tower's `map_request` checking a header),
/// before any future exists: counted once, status 500.
#[tokio::test]
async fn a_panic_in_an_inner_call_records_500() {
    use tower::Layer;
    let (capture, _guard) = SpanCapture::install();
    let inner = tower::ServiceBuilder::new()
        .map_request(|request: Request<http_body_util::Full<bytes::Bytes>>| {
            assert!(
                request.headers().contains_key("x-tenant"),
                "no tenant header: a layer panics in call"
            );
            request
        })
        .service(tower::service_fn(
            |_: Request<http_body_util::Full<bytes::Bytes>>| async {
                Ok::<_, std::convert::Infallible>(axum::response::Response::new(Body::empty()))
            },
        ));
    let service = AirmyVerifyLayer::new(verifier()).layer(inner);
    let (request, id) = delivery("evt_call_panic");
    let joined = tokio::spawn(service.oneshot(request)).await;
    assert!(joined.expect_err("panicked").is_panic());
    assert_eq!(
        spans::one_delivery(&capture),
        (id, "accepted".into(), "500".into())
    );
}
