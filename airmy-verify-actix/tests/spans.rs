//! The span tree of deliveries through the middleware, with a capturing subscriber: one
//! `airmy_delivery` span per request, its fields recorded once known, the guarded handler's
//! detached task and its log lines inside it, and never the secret, the signature or the body.

use actix_web::{App, HttpResponse, test, web};
use airmy_verify::idempotency::{Idempotency, MemoryStore};
use airmy_verify::testing;
use airmy_verify::time::OffsetDateTime;
use airmy_verify::{Secret, Verifier};
use airmy_verify_actix::{AirmyEvent, AirmyIdempotency, AirmyVerify};
use test_support::spans::{self, SpanCapture};

const EVENT_TYPE: &str = "pipeline.completed";

async fn handler(AirmyEvent(event): AirmyEvent) -> HttpResponse {
    tracing::info!(event_id = %event.id, "handler ran");
    HttpResponse::Ok().finish()
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
    let delivery = testing::sample_event(EVENT_TYPE)
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

    let body = String::from_utf8_lossy(&delivery.body).into_owned();
    spans::assert_accepted_duplicate_forged(
        &capture,
        ("evt_span_1", EVENT_TYPE, delivery.body.len()),
        &[testing::SECRET, &delivery.signature, &forged, &body],
    );
}
