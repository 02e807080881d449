//! Mounting the middleware on part of an application, as the docs show it: `.wrap` on the
//! webhook scope of an application with its own state and routes. The application's unknown
//! paths keep their 404, its own routes answer without a signature, and the webhook routes
//! still refuse unsigned deliveries. `.wrap` on the `App`, by contrast, also wraps the default
//! service: every unknown path answers 401.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, test, web};
use airmy_verify::testing::{self, Delivery};
use airmy_verify_actix::{AirmyEvent, AirmyIdempotency, AirmyVerify};
use serde_json::json;
use test_support::fixtures::{PATH, json_of, memory_guard, valid};

const MISSING_SIGNATURE: &[u8] = br#"{"error":"missing_signature"}"#;

struct AppState {
    name: &'static str,
}

async fn home(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().body(state.name)
}

async fn on_event(state: web::Data<AppState>, AirmyEvent(event): AirmyEvent) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "app": state.name, "id": event.id }))
}

fn unsigned(method: &str, path: &str) -> actix_http::Request {
    let request = match method {
        "GET" => test::TestRequest::get(),
        _ => test::TestRequest::post(),
    };
    request.uri(path).to_request()
}

fn signed(path: &str, d: &Delivery) -> actix_http::Request {
    test::TestRequest::post()
        .uri(path)
        .insert_header((airmy_verify::SIGNATURE_HEADER, d.signature.clone()))
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

/// What the docs promise of an application with the middleware on its webhook scope.
async fn leaves_the_app_alone<S, B>(app: &S)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    for method in ["GET", "POST"] {
        assert_eq!(
            send(app, unsigned(method, "/nowhere")).await.0,
            StatusCode::NOT_FOUND,
            "{method} /nowhere"
        );
    }
    assert_eq!(
        send(app, unsigned("GET", "/")).await,
        (StatusCode::OK, web::Bytes::from_static(b"billing"))
    );
    assert_eq!(
        send(app, unsigned("POST", PATH)).await,
        (
            StatusCode::UNAUTHORIZED,
            web::Bytes::from_static(MISSING_SIGNATURE)
        )
    );
}

#[actix_web::test]
async fn wrap_on_the_webhook_scope_keeps_the_apps_404s() {
    let state = web::Data::new(AppState { name: "billing" });
    let app = test::init_service(
        App::new()
            .app_data(state)
            .route("/", web::get().to(home))
            .service(
                web::scope(PATH)
                    .wrap(AirmyVerify::new(testing::conformance_verifier()))
                    .route("", web::post().to(on_event)),
            ),
    )
    .await;
    leaves_the_app_alone(&app).await;
    let (status, body) = send(&app, signed(PATH, &valid())).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(
        json_of(&body),
        json!({ "app": "billing", "id": "evt_test_run_completed" })
    );
    // Inside the scope, its default service is behind the middleware too: an unknown path
    // under the webhook scope is refused as a delivery, not a 404.
    assert_eq!(
        send(&app, unsigned("POST", &format!("{PATH}/typo")))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn wrap_on_the_webhook_scope_with_the_idempotency_middleware() {
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(AppState { name: "billing" }))
            .route("/", web::get().to(home))
            .service(
                web::scope(PATH)
                    .wrap(AirmyIdempotency::new(memory_guard()))
                    .wrap(AirmyVerify::new(testing::conformance_verifier()))
                    .route("", web::post().to(on_event)),
            ),
    )
    .await;
    leaves_the_app_alone(&app).await;
    assert_eq!(send(&app, signed(PATH, &valid())).await.0, StatusCode::OK);
    let (status, body) = send(&app, signed(PATH, &valid())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["status"], "duplicate");
}

#[cfg(feature = "inbox")]
#[actix_web::test]
async fn wrap_on_the_webhook_resource_with_the_inbox() {
    use airmy_verify_inbox::{Inbox, MemoryBackend, MemoryOptions};

    let inbox = Inbox::new(MemoryBackend::new(MemoryOptions::default()));
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(AppState { name: "billing" }))
            .app_data(web::Data::new(inbox))
            .route("/", web::get().to(home))
            .service(
                web::resource(PATH)
                    .wrap(AirmyVerify::new(testing::conformance_verifier()))
                    .route(web::post().to(airmy_verify_actix::inbox::accept)),
            ),
    )
    .await;
    leaves_the_app_alone(&app).await;
    let (status, body) = send(&app, signed(PATH, &valid())).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(json_of(&body)["status"], "accepted");
}

#[actix_web::test]
async fn wrap_on_the_app_also_answers_its_unknown_paths() {
    // What the docs avoid: the middleware on the App wraps its default service too.
    let app = test::init_service(
        App::new()
            .wrap(AirmyVerify::new(testing::conformance_verifier()))
            .route(PATH, web::post().to(on_event)),
    )
    .await;
    assert_eq!(
        send(&app, unsigned("GET", "/nowhere")).await,
        (
            StatusCode::UNAUTHORIZED,
            web::Bytes::from_static(MISSING_SIGNATURE)
        )
    );
}
