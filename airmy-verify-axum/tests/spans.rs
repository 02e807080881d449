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
    let guard = Idempotency::new(MemoryStore::new(100), &verifier).expect("guard");
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

/// A request dropped while its handler runs (its client hung up, or a timeout around the
/// layer fired) still closes its span with the outcome and a 499 status.
#[tokio::test]
async fn a_delivery_dropped_before_its_answer_records_499() {
    let (capture, _guard) = SpanCapture::install();
    let verifier = Verifier::new(Secret::new(testing::SECRET).expect("secret"));
    let app = Router::new()
        .route(
            "/hooks/airmy",
            post(|AirmyEvent(_): AirmyEvent| std::future::pending::<StatusCode>()),
        )
        .layer(AirmyVerifyLayer::new(verifier));
    let delivery = testing::sample_event(EVENT_TYPE)
        .id("evt_dropped")
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET);
    let request = Request::post("/hooks/airmy")
        .header("x-airmy-signature", &delivery.signature)
        .body(Body::from(delivery.body.clone()))
        .expect("request");
    let call = app.oneshot(request);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), call)
            .await
            .is_err(),
        "the handler never answers"
    );
    let found = capture.spans();
    let span = found
        .iter()
        .find(|s| s.name == "airmy_delivery")
        .expect("a delivery span");
    assert_eq!(spans::field(span, "event_id"), "evt_dropped");
    assert_eq!(spans::field(span, "outcome"), "accepted");
    assert_eq!(spans::field(span, "status"), "499");
}
