//! What only a socket shows: a real `HttpServer` on 127.0.0.1:0 and a real HTTP client, for the
//! extractor alone and for the middleware.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};
use airmy_verify::DEFAULT_MAX_BODY_SIZE;
use airmy_verify::testing;
use airmy_verify_actix::{AirmyEvent, AirmyVerify};
use bytes::Bytes;
use serde_json::{Value, json};
use test_support::fixtures::{PATH, case as find, small_cases_cycled};
use test_support::http::{assert_answers_case, chunked, client, post_case};

async fn accept(ran: web::Data<Arc<AtomicUsize>>, AirmyEvent(event): AirmyEvent) -> HttpResponse {
    ran.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(json!({ "id": event.id, "type": event.event_type() }))
}

/// Starts a server; `middleware` chooses the middleware or the extractor alone.
fn serve(middleware: bool, ran: Arc<AtomicUsize>) -> SocketAddr {
    let server = HttpServer::new(move || {
        let app = App::new().app_data(web::Data::new(ran.clone()));
        if middleware {
            app.service(
                web::scope("")
                    .wrap(AirmyVerify::new(testing::conformance_verifier()))
                    .route(PATH, web::post().to(accept)),
            )
        } else {
            app.service(
                web::scope("")
                    .app_data(testing::conformance_verifier())
                    .route(PATH, web::post().to(accept)),
            )
        }
    })
    .workers(2)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("bind loopback");
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    addr
}

#[actix_web::test]
async fn a_chunked_body_over_the_limit_gets_413() {
    for middleware in [true, false] {
        let ran = Arc::new(AtomicUsize::new(0));
        let addr = serve(middleware, ran.clone());
        let case = find("body_one_byte_over_limit");
        let (status, body) =
            post_case(&client(), addr, &case, chunked(&case.body, 64 * 1024)).await;
        assert_eq!(status, 413, "middleware: {middleware}");
        assert_eq!(body, Bytes::from_static(br#"{"error":"body_too_large"}"#));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}

#[actix_web::test]
async fn two_mib_is_accepted_and_one_byte_more_is_not() {
    for middleware in [true, false] {
        let ran = Arc::new(AtomicUsize::new(0));
        let addr = serve(middleware, ran.clone());
        let client = client();
        let at = find("body_exactly_at_limit");
        assert_eq!(at.body.len(), DEFAULT_MAX_BODY_SIZE);
        let (status, _) = post_case(&client, addr, &at, reqwest::Body::from(at.body.clone())).await;
        assert_eq!(status, 200, "middleware: {middleware}");
        let over = find("body_one_byte_over_limit");
        let (status, body) =
            post_case(&client, addr, &over, reqwest::Body::from(over.body.clone())).await;
        assert_eq!(status, 413, "middleware: {middleware}");
        assert_eq!(body, Bytes::from_static(br#"{"error":"body_too_large"}"#));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}

#[actix_web::test]
async fn a_body_sent_in_many_small_chunks_verifies() {
    for middleware in [true, false] {
        let ran = Arc::new(AtomicUsize::new(0));
        let addr = serve(middleware, ran.clone());
        let case = find("valid_deployment_rollback");
        for chunk in [1, 3, 64] {
            let (status, body) =
                post_case(&client(), addr, &case, chunked(&case.body, chunk)).await;
            assert_eq!(status, 200, "chunks of {chunk}: {body:?}");
            let got: Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(got["type"], "deployment.rollback");
        }
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }
}

#[actix_web::test]
async fn two_hundred_concurrent_mixed_requests_are_all_answered_correctly() {
    for middleware in [true, false] {
        let ran = Arc::new(AtomicUsize::new(0));
        let addr = serve(middleware, ran.clone());
        let client = client();
        let requests = small_cases_cycled(200);
        let expected_runs = requests.iter().filter(|c| c.handler_runs()).count();
        let answers = futures_util::future::join_all(requests.into_iter().map(|case| {
            let client = client.clone();
            async move {
                let body = reqwest::Body::from(case.body.clone());
                let (status, body) = post_case(&client, addr, &case, body).await;
                (case, status, body)
            }
        }))
        .await;
        assert_eq!(answers.len(), 200);
        for (case, status, body) in answers {
            assert_answers_case(&case, status, &body);
        }
        assert_eq!(
            ran.load(Ordering::SeqCst),
            expected_runs,
            "middleware: {middleware}"
        );
    }
}
