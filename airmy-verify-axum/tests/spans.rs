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
use test_support::spans::{CapturedSpan, SpanCapture};
use tower::ServiceExt;

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

fn field<'a>(span: &'a CapturedSpan, name: &str) -> &'a str {
    span.fields.get(name).map_or("", String::as_str)
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
    let delivery = testing::sample_event("alert.triggered")
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

    let spans = capture.spans();
    let deliveries: Vec<(usize, &CapturedSpan)> = spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == "airmy_delivery")
        .collect();
    assert_eq!(deliveries.len(), 3, "{spans:#?}");
    for (_, span) in &deliveries {
        assert_eq!(span.parent, None, "a delivery span is a root: {span:?}");
    }
    let (first, accepted) = deliveries[0];
    assert_eq!(field(accepted, "event_id"), "evt_span_1");
    assert_eq!(field(accepted, "event_type"), "alert.triggered");
    assert_eq!(field(accepted, "outcome"), "accepted");
    assert_eq!(field(accepted, "status"), "200");
    assert_eq!(
        field(accepted, "body_bytes"),
        delivery.body.len().to_string()
    );
    let duplicate = deliveries[1].1;
    assert_eq!(field(duplicate, "outcome"), "duplicate");
    assert_eq!(field(duplicate, "status"), "200");
    let (third, rejected) = deliveries[2];
    assert_eq!(field(rejected, "outcome"), "rejected");
    assert_eq!(field(rejected, "status"), "401");
    assert_eq!(field(rejected, "code"), "invalid_signature");
    assert_eq!(
        field(rejected, "event_id"),
        "",
        "not verified: no id recorded"
    );

    // The handler ran once, in the first delivery's span (through the detached task).
    let events = capture.events();
    let ran: Vec<_> = events
        .iter()
        .filter(|e| e.message == "handler ran")
        .collect();
    assert_eq!(ran.len(), 1, "{events:#?}");
    assert_eq!(ran[0].span, Some(first));
    // The rejection's log line is in the third delivery's span.
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.message == "AIRMY webhook delivery rejected")
        .collect();
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0].span, Some(third));

    // Never the secret, the signature or the body.
    let body = String::from_utf8_lossy(&delivery.body).into_owned();
    let shown = format!("{spans:?} {events:?}");
    for secret in [testing::SECRET, &delivery.signature, &forged, &body] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}
