//! The service on axum (binary `axum-service`); see the [module docs](super).
//!
//! The verifying layer is on the webhook's route only (`Router::route_layer` on a router of
//! its own, merged): the application's routes and its 404s never see it. (A `.layer` on the
//! merged app would answer 401 to every unknown path.)

use std::future::Future;

use airmy_verify::Verifier;
use airmy_verify_axum::AirmyVerifyLayer;
use airmy_verify_axum::inbox::AirmyInbox;
use airmy_verify_inbox::Inbox;
use airmy_verify_inbox::console::Console;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post_service};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{AppState, CONSOLE_PATH, Config, Database, OpsToken, WEBHOOK_PATH};

/// The whole application: its own routes and fallback, the verified webhook route accepting
/// into `inbox`, and the console behind `ops_token` (none without one).
pub fn router(
    state: AppState,
    inbox: Inbox,
    verifier: &Verifier,
    ops_token: Option<OpsToken>,
) -> Router {
    // The webhook: verified before the inbox stores it; the layer covers this route only.
    let webhook = Router::new()
        .route(WEBHOOK_PATH, post_service(AirmyInbox::new(inbox.clone())))
        .route_layer(AirmyVerifyLayer::new(verifier.clone()));
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/runs/{id}", get(run_by_id))
        .merge(webhook);
    if let Some(token) = ops_token {
        let console = airmy_verify_axum::console::router(Console::new(inbox))
            .layer(middleware::from_fn_with_state(token, operators_only));
        app = app.nest(CONSOLE_PATH, console);
    }
    app.fallback(not_found).with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn run_by_id(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match super::find_run(&app.pool, &id).await {
        Ok(Some(run)) => Json(run).into_response(),
        Ok(None) => not_found().await.into_response(),
        Err(err) => {
            tracing::error!(error = %err, "GET /runs/{{id}}: the database did not answer");
            let body = Json(json!({ "error": "database_unavailable" }));
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

async fn not_found() -> (StatusCode, Json<serde_json::Value>) {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not_found" })))
}

/// The application's own authentication in front of the console (your session or SSO).
async fn operators_only(State(token): State<OpsToken>, request: Request, next: Next) -> Response {
    let given = request.headers().get(header::AUTHORIZATION);
    if token.allows(given.map(|v| v.as_bytes())) {
        next.run(request).await
    } else {
        let challenge = [(header::WWW_AUTHENTICATE, "Bearer")];
        (StatusCode::UNAUTHORIZED, challenge, "unauthorized").into_response()
    }
}

/// Runs the service on `listener` until `shutdown` resolves, then stops in the documented
/// order: the server (requests in flight are answered), the worker (running handlers finish
/// or are released), the backend, the pool.
///
/// # Errors
///
/// When the server fails.
pub async fn serve(
    config: Config,
    database: Database,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Config {
        verifier,
        ops_token,
        ..
    } = config;
    let inbox = Inbox::new(database.backend.clone()).dedupe_for(&verifier);
    let stop_worker = CancellationToken::new();
    let worker = database
        .backend
        .worker(super::handlers())
        .dedupe_for(&verifier);
    let worker = tokio::spawn(worker.run(stop_worker.clone()));
    let state = AppState {
        pool: database.pool.clone(),
    };
    let app = router(state, inbox, &verifier, ops_token);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    stop_worker.cancel();
    if let Err(err) = worker.await {
        tracing::error!(error = %err, "the inbox worker panicked");
    }
    database.close().await;
    served
}
