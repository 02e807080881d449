//! The service on actix-web (binary `actix-service`); see the [module docs](super).
//!
//! The verifying middleware wraps the webhook's resource only: the application's routes and
//! its 404s never see it.

use std::future::Future;

use actix_web::dev::Service as _;
use actix_web::error::InternalError;
use actix_web::http::header;
use actix_web::{App, HttpResponse, HttpServer, web};
use airmy_verify::Verifier;
use airmy_verify_actix::AirmyVerify;
use airmy_verify_inbox::Inbox;
use airmy_verify_inbox::console::Console;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{AppState, CONSOLE_PATH, Config, Database, OpsToken, WEBHOOK_PATH};

/// The whole application, for `App::new().configure(…)`: its own routes and fallback, the
/// verified webhook resource accepting into `inbox`, and the console behind `ops_token`
/// (none without one).
pub fn configure(
    state: AppState,
    inbox: Inbox,
    verifier: &Verifier,
    ops_token: Option<OpsToken>,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    let state = web::Data::new(state);
    let verifier = verifier.clone();
    let console = ops_token.map(|token| (token, Console::new(inbox.clone())));
    let inbox = web::Data::new(inbox);
    move |app: &mut web::ServiceConfig| {
        app.app_data(state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/runs/{id}", web::get().to(run_by_id))
            // The webhook: verified before the inbox stores it; the middleware wraps this
            // resource only.
            .service(
                web::resource(WEBHOOK_PATH)
                    .app_data(inbox.clone())
                    .wrap(AirmyVerify::new(verifier.clone()))
                    .route(web::post().to(airmy_verify_actix::inbox::accept)),
            );
        if let Some((token, console)) = &console {
            let token = token.clone();
            app.service(
                airmy_verify_actix::console::scope(CONSOLE_PATH, console.clone())
                    // The application's own authentication (your session or SSO).
                    .wrap_fn(move |request, service| {
                        let given = request.headers().get(header::AUTHORIZATION);
                        let allowed = token.allows(given.map(|v| v.as_bytes()));
                        let call = allowed.then(|| service.call(request));
                        async move {
                            match call {
                                Some(call) => call.await,
                                None => Err(unauthorized()),
                            }
                        }
                    }),
            );
        }
        app.default_service(web::to(not_found));
    }
}

fn unauthorized() -> actix_web::Error {
    let response = HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .body("unauthorized");
    InternalError::from_response("unauthorized", response).into()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn run_by_id(app: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    match super::find_run(&app.pool, &id).await {
        Ok(Some(run)) => HttpResponse::Ok().json(run),
        Ok(None) => not_found().await,
        Err(err) => {
            tracing::error!(error = %err, "GET /runs/{{id}}: the database did not answer");
            HttpResponse::ServiceUnavailable().json(json!({ "error": "database_unavailable" }))
        }
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "not_found" }))
}

/// Runs the service on `listener` until `shutdown` resolves, then stops in the documented
/// order: the server (requests in flight are answered), the worker (running handlers finish
/// or are released), the backend, the pool. Call it inside actix's runtime
/// (`#[actix_web::main]`).
///
/// # Errors
///
/// When the server cannot start or fails.
pub async fn serve(
    config: Config,
    database: Database,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + 'static,
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
    let routes = configure(state, inbox, &verifier, ops_token);
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        // The shutdown future below decides when to stop (SIGTERM or Ctrl-C in the binary).
        .disable_signals()
        .listen(listener)?
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.await;
        handle.stop(true).await; // graceful: requests in flight are answered
    });
    let served = server.await;
    stop_worker.cancel();
    if let Err(err) = worker.await {
        tracing::error!(error = %err, "the inbox worker panicked");
    }
    database.close().await;
    served
}
