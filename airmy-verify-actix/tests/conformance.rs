//! The core's conformance table through the extractor alone and through the middleware, plus
//! the actix-specific paths (typed routes, raw bytes, web::Data, misconfiguration).

use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, test, web};
use airmy_verify::event::RunCompleted;
use airmy_verify::testing::{self, Case};
use airmy_verify_actix::{AirmyDelivery, AirmyError, AirmyEvent, AirmyVerify};
use serde_json::{Value, json};
use test_support::fixtures::{PATH, Ran, valid};

async fn accept(ran: web::Data<Ran>, AirmyEvent(event): AirmyEvent) -> HttpResponse {
    ran.0.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(json!({ "id": event.id, "type": event.event_type() }))
}

fn request(case: &Case) -> actix_http::Request {
    let mut builder = test::TestRequest::post().uri(PATH);
    for value in &case.signatures {
        builder = builder.append_header((
            "x-airmy-signature",
            actix_web::http::header::HeaderValue::from_bytes(value).expect("valid header value"),
        ));
    }
    builder.set_payload(case.body.clone()).to_request()
}

async fn check<S, B>(app: &S, ran: &Ran, case: &Case)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let before = ran.count();
    let response = test::call_service(app, request(case)).await;
    let status = response.status().as_u16();
    let body = test::read_body(response).await;
    if let Err(err) = case.check_response(status, &body, ran.count() - before) {
        panic!("{err}");
    }
}

#[actix_web::test]
async fn every_conformance_case_through_the_extractor_alone() {
    let ran = Ran::default();
    let app = test::init_service(
        App::new()
            .app_data(testing::conformance_verifier())
            .app_data(web::Data::new(ran.clone()))
            .route(PATH, web::post().to(accept)),
    )
    .await;
    for case in testing::conformance_cases() {
        check(&app, &ran, &case).await;
    }
}

#[actix_web::test]
async fn every_conformance_case_through_the_middleware() {
    let ran = Ran::default();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(ran.clone()))
            .wrap(AirmyVerify::new(testing::conformance_verifier()))
            .route(PATH, web::post().to(accept)),
    )
    .await;
    for case in testing::conformance_cases() {
        check(&app, &ran, &case).await;
    }
}

#[actix_web::test]
async fn the_verifier_may_be_registered_as_web_data() {
    let ran = Ran::default();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(testing::conformance_verifier()))
            .app_data(web::Data::new(ran.clone()))
            .route(PATH, web::post().to(accept)),
    )
    .await;
    for case in testing::conformance_cases()
        .iter()
        .filter(|c| c.body.len() < 65536)
    {
        check(&app, &ran, case).await;
    }
}

fn delivery(event_type: &str) -> actix_http::Request {
    let d = testing::sample_event(event_type).signed(testing::SECRET);
    test::TestRequest::post()
        .uri(PATH)
        .insert_header(("x-airmy-signature", d.signature))
        .set_payload(d.body)
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

#[actix_web::test]
async fn a_typed_route_takes_its_type_and_answers_422_to_others() {
    async fn on_run(
        ran: web::Data<Ran>,
        AirmyEvent(run): AirmyEvent<RunCompleted>,
    ) -> HttpResponse {
        ran.0.fetch_add(1, Ordering::SeqCst);
        HttpResponse::Ok().body(run.data.tokens_used.unwrap_or_default().to_string())
    }
    for with_middleware in [true, false] {
        let ran = Ran::default();
        let app = App::new()
            .app_data(web::Data::new(ran.clone()))
            .route(PATH, web::post().to(on_run));
        let (ok, other) = if with_middleware {
            let app =
                test::init_service(app.wrap(AirmyVerify::new(testing::conformance_verifier())))
                    .await;
            (
                send(&app, delivery("run.completed")).await,
                send(&app, delivery("alert.triggered")).await,
            )
        } else {
            let app = test::init_service(app.app_data(testing::conformance_verifier())).await;
            (
                send(&app, delivery("run.completed")).await,
                send(&app, delivery("alert.triggered")).await,
            )
        };
        assert_eq!(ok, (StatusCode::OK, web::Bytes::from_static(b"1247")));
        assert_eq!(
            other,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                web::Bytes::from_static(br#"{"error":"unexpected_event_type"}"#)
            )
        );
        assert_eq!(ran.count(), 1);
    }
}

#[actix_web::test]
async fn the_result_form_lets_a_handler_decide_on_other_types() {
    async fn decide(event: Result<AirmyEvent<RunCompleted>, AirmyError>) -> HttpResponse {
        match event {
            Ok(_) => HttpResponse::Ok().finish(),
            Err(AirmyError::Verify(airmy_verify::Error::UnexpectedEventType { .. })) => {
                HttpResponse::Accepted().finish()
            }
            Err(other) => actix_web::ResponseError::error_response(&other),
        }
    }
    let app = test::init_service(
        App::new()
            .wrap(AirmyVerify::new(testing::conformance_verifier()))
            .route(PATH, web::post().to(decide)),
    )
    .await;
    assert_eq!(
        send(&app, delivery("run.completed")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, delivery("agent.updated")).await.0,
        StatusCode::ACCEPTED
    );
}

#[actix_web::test]
async fn handlers_behind_the_middleware_see_the_same_bytes() {
    let d = testing::sample_event("pipeline.completed").signed(testing::SECRET);
    let request = || {
        test::TestRequest::post()
            .uri(PATH)
            .insert_header(("x-airmy-signature", d.signature.clone()))
            .insert_header(("content-type", "application/json"))
            .set_payload(d.body.clone())
            .to_request()
    };
    let raw = test::init_service(
        App::new()
            .wrap(AirmyVerify::new(testing::conformance_verifier()))
            .route(PATH, web::post().to(|body: web::Bytes| async move { body })),
    )
    .await;
    assert_eq!(
        send(&raw, request()).await,
        (StatusCode::OK, d.body.clone())
    );
    let json = test::init_service(
        App::new()
            .wrap(AirmyVerify::new(testing::conformance_verifier()))
            .route(
                PATH,
                web::post().to(|v: web::Json<Value>| async move { v["type"].to_string() }),
            ),
    )
    .await;
    assert_eq!(
        send(&json, request()).await,
        (
            StatusCode::OK,
            web::Bytes::from_static(b"\"pipeline.completed\"")
        )
    );
    async fn bytes(AirmyDelivery(payload): AirmyDelivery) -> web::Bytes {
        assert_eq!(payload.event_type(), "pipeline.completed");
        payload.into_bytes()
    }
    let layered = test::init_service(
        App::new()
            .wrap(AirmyVerify::new(testing::conformance_verifier()))
            .route(PATH, web::post().to(bytes)),
    )
    .await;
    assert_eq!(
        send(&layered, request()).await,
        (StatusCode::OK, d.body.clone())
    );
    let alone = test::init_service(
        App::new()
            .app_data(testing::conformance_verifier())
            .route(PATH, web::post().to(bytes)),
    )
    .await;
    assert_eq!(
        send(&alone, request()).await,
        (StatusCode::OK, d.body.clone())
    );
}

#[actix_web::test]
async fn an_extractor_with_no_verifier_and_no_middleware_answers_500() {
    let ran = Ran::default();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(ran.clone()))
            .route(PATH, web::post().to(accept)),
    )
    .await;
    assert_eq!(
        send(&app, delivery("run.completed")).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            web::Bytes::from_static(br#"{"error":"verifier_not_configured"}"#)
        )
    );
    assert_eq!(ran.count(), 0);
}

#[actix_web::test]
async fn rejections_are_json() {
    let app = test::init_service(
        App::new()
            .wrap(AirmyVerify::new(testing::conformance_verifier()))
            .route(
                PATH,
                web::post().to(|| async { HttpResponse::Ok().finish() }),
            ),
    )
    .await;
    let response = test::call_service(&app, test::TestRequest::post().uri(PATH).to_request()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
}

#[actix_web::test]
async fn a_body_of_one_chunk_reaches_the_raw_view_without_a_copy() {
    let d = valid();
    let seen = web::Data::new(AtomicUsize::new(0));
    async fn raw(
        seen: web::Data<AtomicUsize>,
        AirmyDelivery(payload): AirmyDelivery,
    ) -> HttpResponse {
        seen.store(payload.bytes().as_ptr() as usize, Ordering::SeqCst);
        HttpResponse::Ok().finish()
    }
    let request = || {
        test::TestRequest::post()
            .uri(PATH)
            .insert_header(("x-airmy-signature", d.signature.clone()))
            .set_payload(d.body.clone())
            .to_request()
    };
    let with_middleware = test::init_service(
        App::new()
            .app_data(seen.clone())
            .wrap(AirmyVerify::new(testing::conformance_verifier()))
            .route(PATH, web::post().to(raw)),
    )
    .await;
    let alone = test::init_service(
        App::new()
            .app_data(seen.clone())
            .app_data(testing::conformance_verifier())
            .route(PATH, web::post().to(raw)),
    )
    .await;
    seen.store(0, Ordering::SeqCst);
    assert_eq!(send(&with_middleware, request()).await.0, StatusCode::OK);
    assert_eq!(seen.load(Ordering::SeqCst), d.body.as_ptr() as usize);
    seen.store(0, Ordering::SeqCst);
    assert_eq!(send(&alone, request()).await.0, StatusCode::OK);
    assert_eq!(seen.load(Ordering::SeqCst), d.body.as_ptr() as usize);
}
