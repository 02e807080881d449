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
    let guard = Idempotency::new(MemoryStore::new(100), &verifier);
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

fn signed_request(id: &str) -> actix_http::Request {
    let delivery = testing::sample_event(EVENT_TYPE)
        .id(id)
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET);
    test::TestRequest::post()
        .uri("/hooks/airmy")
        .insert_header(("x-airmy-signature", delivery.signature.as_str()))
        .set_payload(delivery.body)
        .to_request()
}

/// A request dropped while its handler runs (a pipelined request whose connection closed):
/// counted once, status 499.
#[actix_web::test]
async fn a_delivery_dropped_before_its_answer_records_499() {
    use actix_web::dev::Service;
    let (capture, _guard) = SpanCapture::install();
    let verifier = Verifier::new(Secret::new(testing::SECRET).expect("secret"));
    let app = test::init_service(App::new().service(
        web::scope("/hooks").wrap(AirmyVerify::new(verifier)).route(
            "/airmy",
            web::post().to(std::future::pending::<HttpResponse>),
        ),
    ))
    .await;
    let call = app.call(signed_request("evt_dropped"));
    let waited = tokio::time::timeout(std::time::Duration::from_millis(100), call).await;
    assert!(waited.is_err(), "the handler never answers");
    assert_eq!(
        spans::one_delivery(&capture),
        ("evt_dropped".into(), "accepted".into(), "499".into())
    );
}

/// A middleware inside ours that fails: counted with the status of the response actix sends
/// for the error (an error type that only overrides `error_response` included).
#[actix_web::test]
async fn an_inner_error_records_its_status() {
    use actix_web::body::BoxBody;
    use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
    use actix_web::middleware::{Next, from_fn};
    #[derive(Debug)]
    struct Teapot;
    impl std::fmt::Display for Teapot {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a teapot")
        }
    }
    impl actix_web::ResponseError for Teapot {
        fn error_response(&self) -> HttpResponse {
            HttpResponse::ImATeapot().finish()
        }
    }
    async fn deny(
        _: ServiceRequest,
        _: Next<BoxBody>,
    ) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
        Err(Teapot.into())
    }
    let (capture, _guard) = SpanCapture::install();
    let verifier = Verifier::new(Secret::new(testing::SECRET).expect("secret"));
    let app = test::init_service(
        App::new().service(
            web::scope("/hooks")
                .wrap(from_fn(deny))
                .wrap(AirmyVerify::new(verifier))
                .route("/airmy", web::post().to(handler)),
        ),
    )
    .await;
    assert!(app.call(signed_request("evt_denied")).await.is_err());
    assert_eq!(
        spans::one_delivery(&capture),
        ("evt_denied".into(), "accepted".into(), "418".into())
    );
}

/// A middleware inside ours that panics in `call` itself (before any future exists): counted
/// once, status 500.
#[actix_web::test]
async fn a_panic_in_an_inner_call_records_500() {
    use actix_web::dev::Service;
    let (capture, _guard) = SpanCapture::install();
    let verifier = Verifier::new(Secret::new(testing::SECRET).expect("secret"));
    let app = test::init_service(
        App::new().service(
            web::scope("/hooks")
                .wrap_fn(|req, srv| {
                    assert!(
                        req.headers().contains_key("x-tenant"),
                        "no tenant header: a middleware panics in call"
                    );
                    srv.call(req)
                })
                .wrap(AirmyVerify::new(verifier))
                .route("/airmy", web::post().to(handler)),
        ),
    )
    .await;
    let call = app.call(signed_request("evt_call_panic"));
    let joined = actix_web::rt::spawn(call).await;
    assert!(joined.expect_err("panicked").is_panic());
    assert_eq!(
        spans::one_delivery(&capture),
        ("evt_call_panic".into(), "accepted".into(), "500".into())
    );
}
