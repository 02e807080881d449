//! The span tree of deliveries through the middleware, with a capturing subscriber: one
//! `airmy_delivery` span per request, its fields recorded once known, the guarded handler's
//! detached task and its log lines inside it, and never the secret, the signature or the body.

use actix_web::{App, HttpResponse, test, web};
use airmy_verify::idempotency::{Idempotency, MemoryStore};
use airmy_verify::testing;
use airmy_verify::time::OffsetDateTime;
use airmy_verify::{Secret, Verifier};
use airmy_verify_actix::{AirmyEvent, AirmyIdempotency, AirmyVerify};
use test_support::spans::{CapturedSpan, SpanCapture};

async fn handler(AirmyEvent(event): AirmyEvent) -> HttpResponse {
    tracing::info!(event_id = %event.id, "handler ran");
    HttpResponse::Ok().finish()
}

fn field<'a>(span: &'a CapturedSpan, name: &str) -> &'a str {
    span.fields.get(name).map_or("", String::as_str)
}

#[actix_web::test]
async fn each_delivery_is_one_span_tree_with_its_fields() {
    let (capture, _guard) = SpanCapture::install();
    let verifier = Verifier::new(Secret::new(testing::SECRET).expect("secret"));
    let guard = Idempotency::new(MemoryStore::new(100), &verifier).expect("guard");
    let app = test::init_service(
        App::new().service(
            web::scope("/hooks")
                .wrap(AirmyIdempotency::new(guard))
                .wrap(AirmyVerify::new(verifier))
                .route("/airmy", web::post().to(handler)),
        ),
    )
    .await;
    let delivery = testing::sample_event("pipeline.completed")
        .id("evt_span_1")
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET);
    let forged = airmy_verify::sign(&delivery.body, "whsec_wrong");
    for (signature, status) in [
        (&delivery.signature, 200),
        (&delivery.signature, 200),
        (&forged, 401),
    ] {
        let request = test::TestRequest::post()
            .uri("/hooks/airmy")
            .insert_header(("x-airmy-signature", signature.as_str()))
            .set_payload(delivery.body.clone())
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status().as_u16(), status);
    }

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
    assert_eq!(field(accepted, "event_type"), "pipeline.completed");
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

    let events = capture.events();
    let ran: Vec<_> = events
        .iter()
        .filter(|e| e.message == "handler ran")
        .collect();
    assert_eq!(ran.len(), 1, "{events:#?}");
    assert_eq!(ran[0].span, Some(first));
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.message == "AIRMY webhook delivery rejected")
        .collect();
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0].span, Some(third));

    let body = String::from_utf8_lossy(&delivery.body).into_owned();
    let shown = format!("{spans:?} {events:?}");
    for secret in [testing::SECRET, &delivery.signature, &forged, &body] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}
