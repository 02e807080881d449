//! Mounting the layer on part of an application, as the docs show it: `route_layer` on the
//! webhook routes, merged into an application with its own state and routes. The
//! application's unknown paths keep their 404, its own routes answer without a signature, and
//! the webhook routes still refuse unsigned deliveries. `Router::layer` on the merged router,
//! by contrast, also wraps the fallback: every unknown path answers 401.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use airmy_verify::testing::{self, Delivery};
use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use test_support::fixtures::{PATH, json_of, memory_guard, valid};
use test_support::http::{client, loopback, status_and_body};
use tower::ServiceExt;

const MISSING_SIGNATURE: &[u8] = br#"{"error":"missing_signature"}"#;

#[derive(Clone, Default)]
struct AppState {
    visits: Arc<AtomicUsize>,
}

async fn home(State(state): State<AppState>) -> String {
    let n = state.visits.fetch_add(1, Ordering::SeqCst) + 1;
    format!("visit {n}")
}

async fn on_event(State(state): State<AppState>, AirmyEvent(event): AirmyEvent) -> Json<Value> {
    state.visits.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "id": event.id }))
}

/// The application as the docs now show it: the webhook routes with `route_layer`, merged.
fn app(state: AppState) -> Router {
    let webhooks = Router::new()
        .route(PATH, post(on_event))
        .route_layer(AirmyVerifyLayer::new(testing::conformance_verifier()));
    Router::new()
        .route("/", get(home))
        .merge(webhooks)
        .with_state(state)
}

fn unsigned(method: &str, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .expect("request")
}

fn signed(path: &str, d: &Delivery) -> Request<Body> {
    Request::post(path)
        .header(airmy_verify::SIGNATURE_HEADER, &d.signature)
        .body(Body::from(d.body.clone()))
        .expect("request")
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Bytes) {
    status_and_body(app.clone().oneshot(request).await.expect("infallible")).await
}

/// What the docs promise of an application with our layer mounted on its webhook routes.
async fn leaves_the_app_alone(app: &Router) {
    for method in ["GET", "POST"] {
        assert_eq!(
            send(app, unsigned(method, "/nowhere")).await.0,
            StatusCode::NOT_FOUND,
            "{method} /nowhere"
        );
    }
    let (status, _) = send(app, unsigned("GET", "/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        send(app, unsigned("POST", PATH)).await,
        (
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(MISSING_SIGNATURE)
        )
    );
    // The webhook path itself is the layer's, whatever the method: unsigned, it is refused.
    assert_eq!(
        send(app, unsigned("GET", PATH)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn route_layer_on_merged_webhook_routes_keeps_the_apps_404s() {
    let state = AppState::default();
    let app = app(state.clone());
    leaves_the_app_alone(&app).await;
    let (status, body) = send(&app, signed(PATH, &valid())).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(json_of(&body), json!({ "id": "evt_test_run_completed" }));
    // One visit of `/`, one verified delivery.
    assert_eq!(state.visits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn route_layer_on_merged_webhook_routes_through_a_real_server() {
    let (listener, addr) = loopback().await;
    tokio::spawn(async move { axum::serve(listener, app(AppState::default())).await });
    let client = client();
    let base = format!("http://{addr}");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            client
                .get(format!("{base}/nowhere"))
                .send()
                .await
                .expect("get")
        ),
        404
    );
    assert_eq!(status(client.get(&base).send().await.expect("get")), 200);
    assert_eq!(
        status(
            client
                .post(format!("{base}{PATH}"))
                .send()
                .await
                .expect("post")
        ),
        401
    );
    let d = valid();
    let response = client
        .post(format!("{base}{PATH}"))
        .header(airmy_verify::SIGNATURE_HEADER, &d.signature)
        .body(d.body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn route_layer_with_the_idempotency_layer() {
    let webhooks = Router::new().route(PATH, post(on_event)).route_layer(
        AirmyVerifyLayer::new(testing::conformance_verifier()).idempotency(memory_guard()),
    );
    let app = Router::new()
        .route("/", get(home))
        .merge(webhooks)
        .with_state(AppState::default());
    leaves_the_app_alone(&app).await;
    assert_eq!(send(&app, signed(PATH, &valid())).await.0, StatusCode::OK);
    let (status, body) = send(&app, signed(PATH, &valid())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["status"], "duplicate");
}

#[cfg(feature = "inbox")]
#[tokio::test]
async fn route_layer_with_the_inbox_route_service() {
    use airmy_verify_axum::inbox::AirmyInbox;
    use airmy_verify_inbox::{Inbox, MemoryBackend, MemoryOptions};

    let inbox = Inbox::new(MemoryBackend::new(MemoryOptions::default()));
    let webhooks = Router::new()
        .route_service(PATH, AirmyInbox::new(inbox))
        .route_layer(AirmyVerifyLayer::new(testing::conformance_verifier()));
    let app = Router::new()
        .route("/", get(home))
        .merge(webhooks)
        .with_state(AppState::default());
    for method in ["GET", "POST"] {
        assert_eq!(
            send(&app, unsigned(method, "/nowhere")).await.0,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(send(&app, unsigned("GET", "/")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, unsigned("POST", PATH)).await,
        (
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(MISSING_SIGNATURE)
        )
    );
    let (status, body) = send(&app, signed(PATH, &valid())).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(json_of(&body)["status"], "accepted");
}

#[tokio::test]
async fn the_layer_on_a_merged_router_also_answers_the_apps_unknown_paths() {
    // The trap the docs warn of: `Router::layer` wraps the router's fallback too, and the
    // merged application takes it over.
    let webhooks = Router::new()
        .route(PATH, post(on_event))
        .layer(AirmyVerifyLayer::new(testing::conformance_verifier()));
    let app = Router::new()
        .route("/", get(home))
        .merge(webhooks)
        .with_state(AppState::default());
    assert_eq!(send(&app, unsigned("GET", "/")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, unsigned("GET", "/nowhere")).await,
        (
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(MISSING_SIGNATURE)
        )
    );
}
