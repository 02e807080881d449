//! What only a socket shows: real servers on 127.0.0.1:0 (axum, and plain hyper with a non-axum
//! body type) and a real HTTP client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use airmy_verify::DEFAULT_MAX_BODY_SIZE;
use airmy_verify::testing;
use airmy_verify_axum::{AirmyEvent, AirmyVerify, AirmyVerifyLayer};
use axum::body::Bytes;
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use test_support::fixtures::{PATH, case as find, small_cases_cycled};
use test_support::http::{assert_answers_case, body_bytes, chunked, client, loopback, post_case};

async fn serve(app: Router) -> SocketAddr {
    let (listener, addr) = loopback().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn app(ran: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            PATH,
            post(move |AirmyEvent(e): AirmyEvent| {
                let ran = ran.clone();
                async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Json(json!({ "id": e.id, "type": e.event_type() }))
                }
            }),
        )
        .layer(AirmyVerifyLayer::new(testing::conformance_verifier()))
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413() {
    let ran = Arc::new(AtomicUsize::new(0));
    let addr = serve(app(ran.clone())).await;
    let case = find("body_one_byte_over_limit");
    let (status, body) = post_case(&client(), addr, &case, chunked(&case.body, 64 * 1024)).await;
    assert_eq!(status, 413);
    assert_eq!(body, Bytes::from_static(br#"{"error":"body_too_large"}"#));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn two_mib_is_accepted_and_one_byte_more_is_not() {
    let ran = Arc::new(AtomicUsize::new(0));
    let addr = serve(app(ran.clone())).await;
    let client = client();
    let at = find("body_exactly_at_limit");
    assert_eq!(at.body.len(), DEFAULT_MAX_BODY_SIZE);
    let (status, _) = post_case(&client, addr, &at, reqwest::Body::from(at.body.clone())).await;
    assert_eq!(status, 200);
    let over = find("body_one_byte_over_limit");
    assert_eq!(over.body.len(), DEFAULT_MAX_BODY_SIZE + 1);
    let (status, body) =
        post_case(&client, addr, &over, reqwest::Body::from(over.body.clone())).await;
    assert_eq!(status, 413);
    assert_eq!(body, Bytes::from_static(br#"{"error":"body_too_large"}"#));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_sent_in_many_small_chunks_verifies() {
    let ran = Arc::new(AtomicUsize::new(0));
    let addr = serve(app(ran.clone())).await;
    let case = find("valid_alert_triggered");
    for chunk in [1, 3, 64] {
        let (status, body) = post_case(&client(), addr, &case, chunked(&case.body, chunk)).await;
        assert_eq!(status, 200, "chunks of {chunk}: {body:?}");
        let got: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(got["type"], "alert.triggered");
    }
    assert_eq!(ran.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_mixed_requests_are_all_answered_correctly() {
    let ran = Arc::new(AtomicUsize::new(0));
    let addr = serve(app(ran.clone())).await;
    let client = client();
    // Every small case of the table, repeated to 200 requests, all in flight at once.
    let requests = small_cases_cycled(200);
    let expected_runs = requests.iter().filter(|c| c.handler_runs()).count();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|case| {
            let client = client.clone();
            tokio::spawn(async move {
                let body = reqwest::Body::from(case.body.clone());
                let (status, body) = post_case(&client, addr, &case, body).await;
                (case, status, body)
            })
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        let (case, status, body) = task.await.expect("task");
        assert_answers_case(&case, status, &body);
        answered += 1;
    }
    assert_eq!(answered, 200);
    assert_eq!(ran.load(Ordering::SeqCst), expected_runs);
}

/// A plain hyper service (no axum) behind the layer, fed hyper's own body type.
#[tokio::test]
async fn the_layer_serves_plain_hyper() {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    let inner = tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
        let verified = request
            .extensions()
            .get::<airmy_verify::Verified>()
            .map(|v| v.id().to_owned())
            .unwrap_or_default();
        let body = request
            .into_body()
            .collect()
            .await
            .expect("full")
            .to_bytes();
        let text = format!("{verified} {}", body.len());
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
    });
    let service = AirmyVerify::new(inner, testing::conformance_verifier());
    let (listener, addr) = loopback().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    let client = client();
    let good = find("valid_run_completed");
    let (status, body) =
        post_case(&client, addr, &good, reqwest::Body::from(good.body.clone())).await;
    assert_eq!(
        (status, body),
        (
            200,
            Bytes::from(format!("evt_test_run_completed {}", good.body.len()))
        )
    );
    let bad = find("wrong_secret");
    let (status, body) =
        post_case(&client, addr, &bad, reqwest::Body::from(bad.body.clone())).await;
    assert_eq!(
        (status, body),
        (401, Bytes::from_static(br#"{"error":"invalid_signature"}"#))
    );
}

/// The layer with request bodies that are not axum's: `String` and `Full<Bytes>`.
#[tokio::test]
async fn the_layer_takes_any_body_type() {
    use tower::{Layer, ServiceExt};

    let inner = tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
        let n = request
            .into_body()
            .collect()
            .await
            .expect("full")
            .to_bytes()
            .len();
        Ok::<_, Infallible>(http::Response::new(n.to_string()))
    });
    let service = AirmyVerifyLayer::new(testing::conformance_verifier()).layer(inner);
    let d = testing::sample_event("test").signed(testing::SECRET);
    let text = String::from_utf8(d.body.to_vec()).expect("UTF-8");
    let request = http::Request::post(PATH)
        .header("x-airmy-signature", &d.signature)
        .body(text)
        .expect("request");
    let response = service.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 200);
    let body = body_bytes(response.into_body()).await;
    assert_eq!(body, d.body.len().to_string());

    let request = http::Request::post(PATH)
        .header("x-airmy-signature", "00".repeat(32))
        .body(Full::new(d.body.clone()))
        .expect("request");
    let response = service.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 401);

    // A Verifier as the whole state does not verify anything: without the layer the
    // extractor refuses.
    let app: Router = Router::new()
        .route(PATH, post(|AirmyEvent(e): AirmyEvent| async move { e.id }))
        .with_state(testing::conformance_verifier());
    let request = http::Request::post(PATH)
        .header("x-airmy-signature", &d.signature)
        .body(axum::body::Body::from(d.body.clone()))
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 500);
    let body = body_bytes(response.into_body()).await;
    assert_eq!(
        body,
        Bytes::from_static(br#"{"error":"verifier_not_configured"}"#)
    );
}
