//! Exactly-once handling through the actix middleware, on the in-memory store and on a real
//! Redis shared by two app instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, HttpResponse, test, web};
use airmy_verify::idempotency::{Idempotency, MemoryStore, RedisStore, RedisStoreOptions};
use airmy_verify::testing::Delivery;
use airmy_verify_actix::{AirmyEvent, AirmyIdempotency, AirmyVerify};
use serde_json::{Value, json};
use test_support::RedisServer;
use test_support::fixtures::{
    PATH, fresh_delivery_with_id as delivery, unique_prefix, verifier_on_system_clock as verifier,
};

/// Answers `script[n]` on its n-th call (200 after the script).
#[derive(Clone)]
struct Handler {
    calls: Arc<AtomicUsize>,
    script: Arc<Vec<u16>>,
}

async fn handle(handler: web::Data<Handler>, AirmyEvent(event): AirmyEvent) -> HttpResponse {
    let n = handler.calls.fetch_add(1, Ordering::SeqCst);
    let status = handler.script.get(n).copied().unwrap_or(200);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
        .json(json!({ "handled": event.id }))
}

async fn send<S, B>(app: &S, d: &Delivery) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let request = test::TestRequest::post()
        .uri(PATH)
        .insert_header(("x-airmy-signature", d.signature.clone()))
        .set_payload(d.body.clone())
        .to_request();
    let response = test::call_service(app, request).await;
    let status = response.status().as_u16();
    let body = test::read_body(response).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn a_failed_attempt_is_retried_and_later_deliveries_are_duplicates() {
    let handler = Handler {
        calls: Arc::default(),
        script: Arc::new(vec![500]),
    };
    let guard = Idempotency::new(MemoryStore::new(100), &verifier());
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(handler.clone()))
            .wrap(AirmyIdempotency::new(guard))
            .wrap(AirmyVerify::new(verifier()))
            .route(PATH, web::post().to(handle)),
    )
    .await;
    let d = delivery("evt_actix_retry");
    assert_eq!(send(&app, &d).await.0, 500);
    assert_eq!(
        send(&app, &d).await.0,
        200,
        "the failed attempt released its claim"
    );
    assert_eq!(
        send(&app, &d).await,
        (
            200,
            json!({ "status": "duplicate", "id": "evt_actix_retry" })
        )
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn two_apps_sharing_redis_run_the_handler_once() {
    let server = RedisServer::start();
    let prefix = unique_prefix("airmy-test-actix");
    let handler = Handler {
        calls: Arc::default(),
        script: Arc::new(vec![]),
    };
    let mut apps = Vec::new();
    for _ in 0..2 {
        let options = RedisStoreOptions::default().prefix(prefix.clone());
        let store = RedisStore::connect(server.url(), options)
            .await
            .expect("Redis");
        let guard = Idempotency::new(store, &verifier());
        apps.push(
            test::init_service(
                App::new()
                    .app_data(web::Data::new(handler.clone()))
                    .wrap(AirmyIdempotency::new(guard))
                    .wrap(AirmyVerify::new(verifier()))
                    .route(PATH, web::post().to(handle)),
            )
            .await,
        );
    }
    let d = delivery("evt_actix_shared");
    let answers = futures_util::future::join_all((0..10).map(|i| send(&apps[i % 2], &d))).await;
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 409),
        "{answers:?}"
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1, "{answers:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(send(&apps[1], &d).await.1["status"], "duplicate");
}
